"""The cluster description: exact values from a good file, exact messages for
each kind of mistake, and every mistake of a bad file reported at once."""

import dataclasses
import textwrap
from pathlib import Path

import pytest

from xenha.inventory import (Cluster, Defaults, Dom0, DomU, FenceMethod, InventoryError,
                             StorageNode, Target, Timing, load, loads, parse_size)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'inventory'
GiB, MiB = 1024 ** 3, 1024 ** 2


def test_good_file_loads_to_exact_values():
    path = FIXTURES / 'good.toml'
    c = load(path)
    assert c.source == str(path)
    assert c.defaults == Defaults(
        toolstack='xm', toolstack_command='sudo -n /usr/sbin/xm', ssh_user='xenha',
        ssh_port=2200, ssh_key='/etc/xenha/id_ed25519',
        known_hosts='/etc/xenha/known_hosts', sudo=True, dom0_reserve=1536 * MiB,
        timeout=7.0, state_db='/tmp/xenha-test/state.db', max_restart=2,
        restart_window=1800.0, dedupe_window=300.5, create_parallel=8,
        split_brain_recheck=2.5,
        nagios_command_file='/tmp/xenha-test/nagios.cmd', cluster_host='cluster',
        failover_service='xen failover', allow_active_as_target=True)
    ipmi = FenceMethod('agent', 'fence_ipmilan',
                       (('ip', '127.0.10.11'), ('ipport', '6230'), ('username', 'admin'),
                        ('lanplus', '1'), ('cipher', '3')),
                       '/tmp/xenha-test/bmc-dom0-1', 12.5)
    assert c.dom0s == {
        # Unset per-host keys come from [defaults].
        'dom0-1': Dom0('dom0-1', '127.0.10.11', 'active', 2200, 'xenha',
                       '/etc/xenha/id_ed25519', '/etc/xenha/known_hosts',
                       (ipmi, FenceMethod('ssh')), 'xm', 'sudo -n /usr/sbin/xm'),
        'dom0-2.example.org': Dom0('dom0-2.example.org', 'dom0-2.example.org', 'active',
                                   22, 'root', '/root/.ssh/id_rsa',
                                   '/root/.ssh/known_hosts', (FenceMethod('none'),),
                                   'xl', '/usr/sbin/xl'),
        'spare-1': Dom0('spare-1', '127.0.10.13', 'spare', 2200, 'xenha',
                        '/etc/xenha/id_ed25519', '/etc/xenha/known_hosts',
                        (FenceMethod('ssh'),), 'xm', 'sudo -n /usr/sbin/xm'),
    }
    assert c.storage == {'san-1': StorageNode('san-1', '127.0.10.5')}
    assert c.targets == {
        'disk1': Target('disk1', 'iscsi', portal='127.0.10.5:3261',
                        iqn='iqn.2026-01.lab:disk1', lun=1, chap_user='xenha',
                        chap_secret_file='/tmp/xenha-test/chap', storage='san-1'),
        'disk2': Target('disk2', 'iscsi', portal='127.0.10.5', iqn='iqn.2026-01.lab:disk2',
                        lun=0, storage='san-1', device_path='/dev/mapper/disk2'),
        'vol1': Target('vol1', 'aoe', shelf=1, slot=2, interface='aoe1', storage='san-1'),
    }
    assert c.domus == {
        'web1': DomU('web1', '/etc/xen/web1.cfg', GiB, 2, 'dom0-1', ('disk1', 'vol1'), 5,
                     True, 'pv', '/boot/vmlinuz', '/boot/initrd.img', 'root=/dev/xvda ro',
                     None, ('bridge=xenbr0', 'bridge=xenbr1'), 'restart'),
        'db1': DomU('db1', '/etc/xen/db1.cfg', 2 * GiB, 1, 'dom0-1', ('disk2',), 9),
        'scratch': DomU('scratch', '/etc/xen/scratch.cfg', 256 * MiB, 1,
                        'dom0-2.example.org', (), 0, False, 'hvm'),
    }
    assert list(c.domus) == ['web1', 'db1', 'scratch']      # file order is kept
    # No [timing]: the defaults, with the checks' -t from `timeout = 7`.
    assert c.timing == Timing(check_timeout=7, dom0_check_timeout=4)


def test_cluster_helpers_and_devices():
    c = load(FIXTURES / 'good.toml')
    assert [d.name for d in c.active()] == ['dom0-1', 'dom0-2.example.org']
    assert [d.name for d in c.spares()] == ['spare-1']
    assert [u.name for u in c.domus_homed_on('dom0-1')] == ['db1', 'web1']  # priority
    assert c.domus_homed_on('spare-1') == []
    assert c.targets['disk1'].device == \
        '/dev/disk/by-path/ip-127.0.10.5:3261-iscsi-iqn.2026-01.lab:disk1-lun-1'
    assert (c.targets['disk1'].host, c.targets['disk1'].port) == ('127.0.10.5', 3261)
    assert c.targets['disk2'].port == 3260
    assert c.targets['disk2'].device == '/dev/mapper/disk2'
    assert c.targets['vol1'].device == '/dev/etherd/e1.2'
    assert [t.name for t in c.targets_of('web1')] == ['disk1', 'vol1']
    assert c.domus['web1'].memory_mib == 1024
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.domus['web1'].home = 'spare-1'


def test_example_site_loads():
    c = load(ROOT / 'examples' / 'cluster.toml')
    assert [d.name for d in c.active()] == ['dom0-1', 'dom0-2']
    assert [d.name for d in c.spares()] == ['spare-1']
    assert {t.kind for t in c.targets.values()} == {'iscsi', 'aoe'}
    assert len(c.domus) == 4 and list(c.storage) == ['san-1']
    # No secret in the parsed model: only the files that hold them.
    assert all('password' not in k for d in c.dom0s.values() for f in d.fencing
               for k, _ in f.params)


@pytest.mark.parametrize('text, size', [
    ('512M', 512 * MiB), ('4G', 4 * GiB), ('1.5G', 1536 * MiB), ('2048', 2 * GiB),
    (2048, 2 * GiB), ('1T', 1024 * GiB), ('64K', 65536), ('4GiB', 4 * GiB),
    ('4 GB', 4 * GiB), ('512m', 512 * MiB), (0.5, 512 * 1024)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize('text', ['lots', '4 gigs', '', '-1G', '1.5.2G', 'G', '4P',
                                  True, -5])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


# A valid inventory; each case below changes one line and expects one exact error.
BASE = textwrap.dedent('''\
    [defaults]
    toolstack = "xl"

    [dom0.dom0-1]
    address = "127.0.10.11"
    role = "active"
    fencing = "none"

    [dom0.spare-1]
    address = "127.0.10.13"
    role = "spare"
    fencing = [{ method = "agent", agent = "fence_ipmilan", ip = "127.0.10.13", password_file = "/etc/xenha/bmc" }]

    [storage.san-1]
    address = "127.0.10.5"

    [target.disk1]
    kind = "iscsi"
    storage = "san-1"
    portal = "127.0.10.5"
    iqn = "iqn.2026-01.lab:disk1"
    lun = 1

    [target.vol1]
    kind = "aoe"
    storage = "san-1"
    shelf = 1
    slot = 2
    interface = "aoe1"

    [domu.web1]
    config = "/etc/xen/web1.cfg"
    memory = "1G"
    home = "dom0-1"
    targets = ["disk1"]

    [domu.db1]
    config = "/etc/xen/db1.cfg"
    memory = 512
    home = "dom0-1"
    targets = ["vol1"]
    ''')


def test_base_is_valid():
    c = loads(BASE, 'cluster.toml')
    assert isinstance(c, Cluster) and c.source == 'cluster.toml'


def test_diskless_ha_domu_is_allowed():
    # NFS-root or netboot guests fail over without any shared block device.
    c = loads(BASE.replace('targets = ["vol1"]', 'targets = []'), 'cluster.toml')
    assert c.domus['db1'].targets == () and c.domus['db1'].ha is True


def errors_of(old: str, new: str) -> list[str]:
    assert old in BASE, old
    with pytest.raises(InventoryError) as e:
        loads(BASE.replace(old, new, 1), 'cluster.toml')
    assert str(e.value) == '\n'.join(e.value.errors)
    return e.value.errors


CASES = {
    'unknown key, nearest valid key':
        ('memory = "1G"', 'memroy = "1G"',
         ["cluster.toml:31: [domu.web1] memory: missing (required)",
          "cluster.toml:33: [domu.web1] memroy: unknown key (did you mean 'memory'?)"]),
    'unknown key, nothing close':
        ('toolstack = "xl"', 'colour = "blue"',
         ["cluster.toml:2: [defaults] colour: unknown key (valid: allow_active_as_target, "
          "cluster_host, create_parallel, dedupe_window, dom0_reserve, failover_service, "
          "fence_unreachable, known_hosts, max_restart, nagios_command_file, "
          "reboot_grace, restart_window, san_netns, split_brain_recheck, ssh_key, "
          "ssh_port, ssh_user, state_db, sudo, timeout, toolstack, toolstack_command)"]),
    'unknown section':
        ('[storage.san-1]', '[storages.x]\n[storage.san-1]',
         ["cluster.toml:14: [storages]: unknown section (did you mean 'storage'?)"]),
    'wrong type':
        ('lun = 1', 'lun = "1"',
         ["cluster.toml:22: [target.disk1] lun = '1': expected an integer"]),
    'wrong type, bool':
        ('home = "dom0-1"\ntargets = ["disk1"]', 'home = "dom0-1"\ntargets = ["disk1"]\n'
         'ha = "yes"', ["cluster.toml:36: [domu.web1] ha = 'yes': expected true or false"]),
    'missing required key':
        ('address = "127.0.10.5"', '',
         ["cluster.toml:14: [storage.san-1] address: missing (required)"]),
    'missing home dom0':
        ('home = "dom0-1"', 'home = "dom0-9"',
         ["cluster.toml:34: [domu.web1] home = 'dom0-9': no such dom0 "
          "(did you mean 'dom0-1'?)"]),
    'missing target':
        ('targets = ["disk1"]', 'targets = ["disk1", "nope"]',
         ["cluster.toml:35: [domu.web1] targets[1] = 'nope': no such target "
          "(valid: disk1, vol1)"]),
    'home is a spare':
        ('home = "dom0-1"', 'home = "spare-1"',
         ["cluster.toml:34: [domu.web1] home = 'spare-1': is a spare: a domU's home must "
          "be an active dom0 (spares keep their memory free for failover)"]),
    'name clash domU / dom0':
        ('[domu.db1]', '[domu.dom0-1]',
         ["cluster.toml:37: [domu.dom0-1]: name already used by [dom0.dom0-1] (dom0s, "
          "storage nodes, domUs and the cluster host are all Nagios hosts: names must "
          "be unique)"]),
    'name clash with the cluster host':
        ('toolstack = "xl"', 'cluster_host = "db1"',
         ["cluster.toml:37: [domu.db1]: name already used by [defaults] cluster_host "
          "(dom0s, storage nodes, domUs and the cluster host are all Nagios hosts: "
          "names must be unique)"]),
    'bad name':
        ('[domu.db1]', '[domu."db 1"]',
         ["cluster.toml:37: [domu.\"db 1\"]: bad name: use letters, digits, '.', '_' and "
          "'-' (at most 64, starting with a letter or digit)"]),
    'bad role':
        ('role = "active"', 'role = "primary"',
         ["cluster.toml:6: [dom0.dom0-1] role = 'primary': must be one of 'active', "
          "'spare'"]),
    'bad toolstack':
        ('toolstack = "xl"', 'toolstack = "xen"',
         ["cluster.toml:2: [defaults] toolstack = 'xen': must be one of 'xl', 'xm', "
          "'auto'"]),
    'bad toolstack_command':
        ('toolstack = "xl"', 'toolstack_command = "sudo \'xl"',
         ["cluster.toml:2: [defaults] toolstack_command = \"sudo 'xl\": not a "
          "shell-quoted command: No closing quotation"]),
    'bad size':
        ('memory = "1G"', 'memory = "4 gigs"',
         ["cluster.toml:33: [domu.web1] memory = '4 gigs': not a size (a number of MiB, "
          "or a number with K, M, G or T, e.g. '512M', '1.5G')"]),
    'memory not whole MiB':
        ('memory = "1G"', 'memory = "1000K"',
         ["cluster.toml:33: [domu.web1] memory = 1024000: must be a whole number of MiB "
          "(Xen counts domU memory in MiB)"]),
    'fencing missing':
        ('fencing = "none"', '',
         ['cluster.toml:4: [dom0.dom0-1] fencing: missing (required: a list of methods, '
          'or "none" written explicitly to run without fencing)']),
    'fencing empty':
        ('fencing = "none"', 'fencing = []',
         ['cluster.toml:7: [dom0.dom0-1] fencing = []: empty: write fencing = "none" to '
          'run without fencing']),
    'none inside a chain':
        ('fencing = "none"', 'fencing = [{ method = "ssh" }, { method = "none" }]',
         ["cluster.toml:7: [dom0.dom0-1] fencing[1] method = 'none': 'none' cannot be "
          'part of a chain: write fencing = "none"']),
    'password inline':
        ('password_file = "/etc/xenha/bmc"', 'password = "hunter2"',
         ['cluster.toml:12: [dom0.spare-1] fencing[0] password: secrets are not written '
          'inline: put it in a file readable only by the monitoring user and set '
          'password_file']),
    'CHAP secret inline':
        ('lun = 1', 'lun = 1\nchap_user = "u"\nchap_secret = "s3cret"',
         ['cluster.toml:24: [target.disk1] chap_secret: secrets are not written inline: '
          'put it in a file readable only by the monitoring user and set '
          'chap_secret_file']),
    'fence action set by hand':
        ('ip = "127.0.10.13"', 'ip = "127.0.10.13", action = "reboot"',
         ["cluster.toml:12: [dom0.spare-1] fencing[0] action = 'reboot': set by xenha at "
          "fencing time (off, then status): remove it"]),
    'split-brain re-check too short to see a reboot':
        ('toolstack = "xl"', 'toolstack = "xl"\nsplit_brain_recheck = 0.1',
         ["cluster.toml:3: [defaults] split_brain_recheck = 0.1: must be between 0.5 and 60"]),
    'fence option that would leak the password':
        ('ip = "127.0.10.13"', 'ip = "127.0.10.13", verbose = true',
         ["cluster.toml:12: [dom0.spare-1] fencing[0] verbose = True: refused (agents log "
          "the password at this level): fencing would fail with it when this dom0 dies"]),
    'fence option with a line break':
        ('ip = "127.0.10.13"', 'ip = "127.0.10.13\\naction=reboot"',
         ["cluster.toml:12: [dom0.spare-1] fencing[0] ip = '127.0.10.13\\naction=reboot': "
          "a fence agent option may not contain a line break"]),
    'key of the other target kind':
        ('lun = 1', 'lun = 1\nshelf = 4',
         ["cluster.toml:23: [target.disk1] shelf = 4: not used by an 'iscsi' target"]),
    'AoE slot out of range':
        ('slot = 2', 'slot = 255',
         ["cluster.toml:28: [target.vol1] slot = 255: must be between 0 and 254"]),
    'bad portal':
        ('portal = "127.0.10.5"', 'portal = "127.0.10.5:99999"',
         ["cluster.toml:20: [target.disk1] portal = '127.0.10.5:99999': expected 'host' "
          "or 'host:port'"]),
    'missing storage node':
        ('storage = "san-1"', 'storage = "san-9"',
         ["cluster.toml:19: [target.disk1] storage = 'san-9': no such storage node "
          "(did you mean 'san-1'?)"]),
    'a disk shared by two domUs':
        ('targets = ["vol1"]', 'targets = ["disk1"]',
         ["cluster.toml:41: [domu.db1] targets[0] = 'disk1': also used by [domu.web1] "
          "(a disk written by two domUs is corrupted)"]),
    'no active dom0':
        ('role = "active"', 'role = "spare"',
         ["cluster.toml: no active dom0: a cluster needs at least one [dom0.NAME] with "
          'role = "active"',
          "cluster.toml:34: [domu.web1] home = 'dom0-1': is a spare: a domU's home must "
          "be an active dom0 (spares keep their memory free for failover)",
          "cluster.toml:40: [domu.db1] home = 'dom0-1': is a spare: a domU's home must "
          "be an active dom0 (spares keep their memory free for failover)"]),
    'not a finite number':
        ('toolstack = "xl"', 'timeout = nan',
         ["cluster.toml:2: [defaults] timeout = nan: must be a number greater than 0"]),
    'infinite size':
        ('memory = 512', 'memory = inf',
         ["cluster.toml:39: [domu.db1] memory = inf: not a size (a number of MiB, or a "
          "number with K, M, G or T, e.g. '512M', '1.5G')"]),
    'one disk under two names':
        ('interface = "aoe1"', 'interface = "aoe1"\n\n[target.vol2]\nkind = "aoe"\n'
         'storage = "san-1"\nshelf = 1\nslot = 2\ninterface = "aoe1"',
         ["cluster.toml:31: [target.vol2]: the same disk as [target.vol1]"]),
    'bad interface name':
        ('interface = "aoe1"', 'interface = "aoe 1"',
         ["cluster.toml:29: [target.vol1] interface = 'aoe 1': not a network interface "
          "name"]),
    'two dom0s at one address':
        ('address = "127.0.10.13"', 'address = "127.0.10.11"',
         ["cluster.toml:10: [dom0.spare-1] address = '127.0.10.11': also the address of "
          "[dom0.dom0-1]"]),
    'timing: a value out of range':
        ('toolstack = "xl"', 'toolstack = "xl"\n\n[timing]\ndom0_retry = 0',
         ["cluster.toml:5: [timing] dom0_retry = 0: must be between 1 and 86400"]),
    'timing: not whole seconds':
        ('toolstack = "xl"', 'toolstack = "xl"\n[timing]\ncheck_timeout = 12.5',
         ["cluster.toml:4: [timing] check_timeout = 12.5: expected an integer"]),
    'timing: no attempts':
        ('toolstack = "xl"', 'toolstack = "xl"\n[timing]\ndom0_attempts = 0',
         ["cluster.toml:4: [timing] dom0_attempts = 0: must be between 1 and 100"]),
    'timing: fencing service never checked':
        ('toolstack = "xl"', 'toolstack = "xl"\n[timing]\nfence_check = 0',
         ["cluster.toml:4: [timing] fence_check = 0: must be between 1 and 86400"]),
    'timing: unknown key':
        ('toolstack = "xl"', 'toolstack = "xl"\n[timing]\ndom0_retries = 3',
         ["cluster.toml:4: [timing] dom0_retries: unknown key (did you mean "
          "'dom0_retry'?)"]),
    'timing: not a table':
        ('[defaults]', 'timing = 30\n[defaults]',
         ["cluster.toml:1: [timing] = 30: expected a table"]),
    'TOML syntax error':
        ('lun = 1', 'lun = = 1',
         ["cluster.toml:22: TOML syntax error: Invalid value (at line 22, column 7)"]),
}


@pytest.mark.parametrize('old, new, expected', CASES.values(), ids=list(CASES))
def test_each_error_has_its_exact_message(old, new, expected):
    assert errors_of(old, new) == expected


def test_timing_table_and_its_defaults():
    # Every key written: taken as is, whatever [defaults] timeout says.
    keys = {k: i + 1 for i, k in enumerate(Timing.__dataclass_fields__)}
    table = '\n'.join(f'{k} = {v}' for k, v in keys.items())
    c = loads(BASE.replace('toolstack = "xl"', f'timeout = 30\n\n[timing]\n{table}'))
    assert c.timing == Timing(**keys)
    # None written: the checks' -t is [defaults] timeout rounded up, and the host
    # check's at most 4 s.
    assert loads(BASE).timing == Timing()
    assert loads(BASE.replace('toolstack = "xl"', 'timeout = 2.5')).timing == Timing(
        check_timeout=3, dom0_check_timeout=3)
    slow = loads(BASE.replace('toolstack = "xl"', 'timeout = 60\n[timing]\n'
                              'dom0_check_timeout = 20'))
    assert (slow.timing.check_timeout, slow.timing.dom0_check_timeout) == (60, 20)
    # 0 is "none" for the notification delays, not for intervals.
    quiet = loads(BASE.replace('toolstack = "xl"', 'toolstack = "xl"\n[timing]\n'
                               'notification_interval = 0\n'
                               'domu_first_notification_delay = 0')).timing
    assert (quiet.notification_interval, quiet.domu_first_notification_delay) == (0, 0)


def test_several_errors_are_all_reported_in_file_order():
    path = FIXTURES / 'many-errors.toml'
    with pytest.raises(InventoryError) as e:
        load(path)
    f = str(path)
    assert e.value.errors == [
        f"{f}:3: [defaults] toolstack = 'xen': must be one of 'xl', 'xm', 'auto'",
        f"{f}:4: [defaults] timeout = '10s': expected a number",
        f"{f}:6: [dom0.dom0-1] address: missing (required)",
        f'{f}:6: [dom0.dom0-1] fencing: missing (required: a list of methods, or "none" '
        'written explicitly to run without fencing)',
        f"{f}:7: [dom0.dom0-1] adress: unknown key (did you mean 'address'?)",
        f"{f}:13: [dom0.spare-1] fencing[0] password: secrets are not written inline: "
        "put it in a file readable only by the monitoring user and set password_file",
        f"{f}:16: [target.disk1] kind = 'nbd': must be one of 'iscsi', 'aoe'",
        f"{f}:17: [target.disk1] storage = 'san-1': no such storage node",
        f"{f}:21: [domu.web1] memory = '4 gigs': not a size (a number of MiB, or a number "
        "with K, M, G or T, e.g. '512M', '1.5G')",
        f"{f}:22: [domu.web1] home = 'spare-1': is a spare: a domU's home must be an "
        "active dom0 (spares keep their memory free for failover)",
        f"{f}:23: [domu.web1] targets[0] = 'disk9': no such target (did you mean "
        "'disk1'?)",
        f"{f}:25: [domu.spare-1]: name already used by [dom0.spare-1] (dom0s, storage "
        "nodes, domUs and the cluster host are all Nagios hosts: names must be unique)",
        f"{f}:26: [domu.spare-1] config = '/etc/xen/web1.cfg': also used by [domu.web1]",
        f"{f}:29: [domu.spare-1] targets = 'disk1': expected a list of strings",
    ]


def test_unreadable_file(tmp_path):
    with pytest.raises(InventoryError) as e:
        load(tmp_path / 'nope.toml')
    assert e.value.errors == [f'{tmp_path}/nope.toml: cannot read: No such file or '
                              'directory']


def test_no_line_when_the_place_cannot_be_found():
    # An inline table: there is no [dom0.d1] header to point at.
    with pytest.raises(InventoryError) as e:
        loads('dom0 = { d1 = { address = "127.0.10.11", role = "active" } }\n',
              'cluster.toml')
    assert e.value.errors == ['cluster.toml: [dom0.d1] fencing: missing (required: a '
                              'list of methods, or "none" written explicitly to run '
                              'without fencing)']


def test_engine_takes_the_split_brain_recheck_from_the_inventory(tmp_path):
    from xenha.failover import Engine
    from xenha.state import StateDB
    c = load(FIXTURES / 'good.toml')
    with StateDB(tmp_path / 's.db') as db:
        assert Engine(c, db).recheck_delay == 2.5
        assert Engine(c, db, recheck_delay=0.1).recheck_delay == 0.1   # tests, chaos


# -- storage fencing: the method, and the per-dom0 identities it needs ---------------
STORAGE_BASE = BASE.replace(
    'fencing = "none"',
    'fencing = [{ method = "agent", agent = "fence_ipmilan", ip = "127.0.10.11", '
    'password_file = "/etc/xenha/bmc" }, { method = "storage", timeout = 15, '
    'initiator_name = "iqn.2026-01.org.example:monitor" }]\n'
    'san_mac = "52:54:00:AA:00:01"\ninitiator_name = "iqn.2026-01.org.example:dom0-1"'
).replace('role = "spare"', 'role = "spare"\nsan_mac = "52:54:00:aa:00:03"')


def test_storage_method_and_identities_load():
    c = loads(STORAGE_BASE, 'cluster.toml')
    d = c.dom0s['dom0-1']
    assert d.fencing[1] == FenceMethod(
        'storage', params=(('initiator_name', 'iqn.2026-01.org.example:monitor'),),
        timeout=15.0)
    assert (d.san_mac, d.initiator_name) == ('52:54:00:aa:00:01',
                                             'iqn.2026-01.org.example:dom0-1')
    assert c.dom0s['spare-1'].initiator_name is None
    # alone, with iSCSI guests only (no MACs needed)
    alone = loads(BASE.replace('fencing = "none"', 'fencing = "storage"').replace(
        'targets = ["vol1"]', 'targets = []'), 'cluster.toml')
    assert alone.dom0s['dom0-1'].fencing == (FenceMethod('storage'),)


STORAGE_CASES = {
    'san_mac: not a MAC':
        ('san_mac = "52:54:00:AA:00:01"', 'san_mac = "52:54:00:aa:00"',
         ["cluster.toml:8: [dom0.dom0-1] san_mac = '52:54:00:aa:00': not a MAC address "
          "(six hex pairs with ':', e.g. '52:54:00:12:34:56')"]),
    'san_mac: a shell and a newline in it':
        ('san_mac = "52:54:00:AA:00:01"', 'san_mac = "52:54:00:aa:00:01\\n; rm -rf /"',
         ["cluster.toml:8: [dom0.dom0-1] san_mac = '52:54:00:aa:00:01\\n; rm -rf /': not "
          "a MAC address (six hex pairs with ':', e.g. '52:54:00:12:34:56')"]),
    'san_mac: broadcast':
        ('san_mac = "52:54:00:AA:00:01"', 'san_mac = "ff:ff:ff:ff:ff:ff"',
         ["cluster.toml:8: [dom0.dom0-1] san_mac = 'ff:ff:ff:ff:ff:ff': a multicast or "
          "broadcast address, not an interface's own MAC"]),
    'san_mac: all zero':
        ('san_mac = "52:54:00:AA:00:01"', 'san_mac = "00:00:00:00:00:00"',
         ["cluster.toml:8: [dom0.dom0-1] san_mac = '00:00:00:00:00:00': the all-zero MAC "
          "is no interface's address"]),
    'san_mac: not a string':
        ('san_mac = "52:54:00:AA:00:01"', 'san_mac = 5',
         ["cluster.toml:8: [dom0.dom0-1] san_mac = 5: expected a string"]),
    'san_mac: two dom0s share one':
        ('san_mac = "52:54:00:aa:00:03"', 'san_mac = "52:54:00:aa:00:01"',
         ["cluster.toml:14: [dom0.spare-1] san_mac = '52:54:00:aa:00:01': also the "
          "san_mac of [dom0.dom0-1]"]),
    'san_mac: missing with an AoE guest and storage fencing':
        ('san_mac = "52:54:00:aa:00:03"', '',
         ['cluster.toml:11: [dom0.spare-1]: san_mac missing: storage fencing (in the '
          "chain of dom0-1) keeps or takes out each dom0's MAC in the AoE reserve lists"]),
    'initiator_name: not an iSCSI name':
        ('initiator_name = "iqn.2026-01.org.example:dom0-1"',
         'initiator_name = "iqn.2026-13.org.example:dom0-1"',
         ["cluster.toml:9: [dom0.dom0-1] initiator_name = 'iqn.2026-13.org.example:dom0-1':"
          " not an iSCSI initiator name (iqn.YYYY-MM.reversed.domain[:name], eui.<16 hex> "
          "or naa.<16 or 32 hex>, at most 223 bytes)"]),
    'initiator_name: a space and an option':
        ('initiator_name = "iqn.2026-01.org.example:dom0-1"',
         'initiator_name = "iqn.2026-01.org.example:x --login"',
         ["cluster.toml:9: [dom0.dom0-1] initiator_name = 'iqn.2026-01.org.example:x "
          "--login': not an iSCSI initiator name (iqn.YYYY-MM.reversed.domain[:name], "
          "eui.<16 hex> or naa.<16 or 32 hex>, at most 223 bytes)"]),
    'initiator_name: too long':
        ('initiator_name = "iqn.2026-01.org.example:dom0-1"',
         f'initiator_name = "iqn.2026-01.org.example:{"x" * 200}"',
         [f"cluster.toml:9: [dom0.dom0-1] initiator_name = 'iqn.2026-01.org.example:"
          f"{'x' * 92}…: not an iSCSI initiator name (iqn.YYYY-MM.reversed.domain[:name], "
          f"eui.<16 hex> or naa.<16 or 32 hex>, at most 223 bytes)"]),
    'storage method: a bad initiator_name':
        ('initiator_name = "iqn.2026-01.org.example:monitor"',
         'initiator_name = "monitor"',
         ["cluster.toml:7: [dom0.dom0-1] fencing[1] initiator_name = 'monitor': not an "
          "iSCSI initiator name (iqn.YYYY-MM.reversed.domain[:name], eui.<16 hex> or "
          "naa.<16 or 32 hex>, at most 223 bytes)"]),
    'storage method: an agent option':
        ('timeout = 15,', 'timeout = 15, agent = "fence_scsi",',
         ["cluster.toml:7: [dom0.dom0-1] fencing[1] agent: unknown key (valid: "
          "initiator_name, method, timeout)"]),
    'storage method: timeout not a number':
        ('timeout = 15,', 'timeout = "15s",',
         ["cluster.toml:7: [dom0.dom0-1] fencing[1] timeout = '15s': expected a number"]),
}


@pytest.mark.parametrize('old, new, expected', STORAGE_CASES.values(),
                         ids=list(STORAGE_CASES))
def test_storage_fencing_errors_have_exact_messages(old, new, expected):
    assert old in STORAGE_BASE, old
    with pytest.raises(InventoryError) as exc:
        loads(STORAGE_BASE.replace(old, new, 1), 'cluster.toml')
    assert exc.value.errors == expected


def test_san_mac_not_needed_without_storage_fencing_or_aoe_guests():
    # an agent-only cluster does not need MACs
    loads(BASE, 'cluster.toml')
    # storage fencing with iSCSI guests only: no MAC needed either
    text = STORAGE_BASE.replace('san_mac = "52:54:00:aa:00:03"', '').replace(
        'targets = ["vol1"]', 'targets = []')
    assert loads(text, 'cluster.toml').dom0s['spare-1'].san_mac is None
