"""Hostile input, issue 12, classes 1-3: what the inventory lets through.

1. shell command execution through the inventory (a dom0 `address` with $(…),
   backticks or `;` reaches Nagios' /bin/sh as $HOSTADDRESS$);
2. configuration injection by newline or quote into Nagios objects, Icinga 2,
   nagios.cfg.example or xl domU configs (state_db, nagios_command_file,
   failover_service, ssh_user, toolstack_command, a domU's config path, the
   inventory's own file name, the render options);
3. inline secrets under any spelling, at any depth, never echoed.

Each case: the exact error (file:line) from the loader, and the installed
commands (`xenha render`, the handlers, the checks that read the inventory)
refusing with their exact first line and exit code.  The property-based half
(random strings into every field, the real nagios4 / icinga2 / libxlutil reading
the rendering back) is tests/test_hostile_render.py.
"""

import dataclasses
from pathlib import Path

import pytest

from conftest import run
from test_inventory import BASE
from xenha import render as render_mod
from xenha.inventory import InventoryError, loads

HOSTNAME_WHY = ('not a host name or address (RFC 1123: letters, digits and "-" in '
                'dot-separated labels; or an IPv4 or IPv6 address)')
SECRET = ('secrets are not written inline: put it in a file readable only by the '
          'monitoring user and set ')
FENCE_SECRET = SECRET + 'password_file'
CHAP_SECRET = SECRET + 'chap_secret_file'
VALID_DEFAULTS = ('allow_active_as_target, cluster_host, create_parallel, dedupe_window, '
                  'dom0_reserve, failover_service, fence_unreachable, known_hosts, '
                  'max_restart, nagios_command_file, reboot_grace, restart_window, '
                  'san_netns, split_brain_recheck, ssh_key, ssh_port, ssh_user, state_db, '
                  'sudo, timeout, toolstack, toolstack_command')
ANY_SECRET = SECRET + 'password_file (fence methods) or chap_secret_file (iSCSI targets)'
PASSWORD_FILE = 'password_file = "/etc/xenha/bmc"'


def errors_of(old: str, new: str) -> list[str]:
    assert old in BASE, old
    with pytest.raises(InventoryError) as e:
        loads(BASE.replace(old, new, 1), 'cluster.toml')
    return e.value.errors


# -- 1. shell command execution through the inventory ------------------------------------
SHELL = {
    '$(…) in a dom0 address':
        ('address = "127.0.10.11"', 'address = "$(touch /tmp/pwned)"',
         [f"cluster.toml:5: [dom0.dom0-1] address = '$(touch /tmp/pwned)': {HOSTNAME_WHY}"]),
    'backticks in a dom0 address':
        ('address = "127.0.10.11"', 'address = "`reboot`"',
         [f"cluster.toml:5: [dom0.dom0-1] address = '`reboot`': {HOSTNAME_WHY}"]),
    '; in a dom0 address':
        ('address = "127.0.10.11"', 'address = "127.0.10.11;reboot"',
         [f"cluster.toml:5: [dom0.dom0-1] address = '127.0.10.11;reboot': {HOSTNAME_WHY}"]),
    'a blank in a dom0 address':
        ('address = "127.0.10.11"', 'address = "dom0 1"',
         [f"cluster.toml:5: [dom0.dom0-1] address = 'dom0 1': {HOSTNAME_WHY}"]),
    'an option for ssh as a dom0 address':
        ('address = "127.0.10.11"', 'address = "-oProxyCommand=x"',
         [f"cluster.toml:5: [dom0.dom0-1] address = '-oProxyCommand=x': {HOSTNAME_WHY}"]),
    'not an IPv4 address':
        ('address = "127.0.10.11"', 'address = "300.1.1.1"',
         ["cluster.toml:5: [dom0.dom0-1] address = '300.1.1.1': not an IPv4 address (four "
          "numbers 0-255, no leading zeros)"]),
    '$(…) in a storage node address':
        ('address = "127.0.10.5"', 'address = "$(id)"',
         [f"cluster.toml:15: [storage.san-1] address = '$(id)': {HOSTNAME_WHY}"]),
    '$(…) in a portal':
        ('portal = "127.0.10.5"', 'portal = "$(id):3260"',
         [f"cluster.toml:20: [target.disk1] portal = '$(id):3260': its host is "
          f"{HOSTNAME_WHY}"]),
    'a command as the ssh user':
        ('toolstack = "xl"', 'ssh_user = "root -oProxyCommand=x"',
         ["cluster.toml:2: [defaults] ssh_user = 'root -oProxyCommand=x': not a user name "
          "(letters, digits, '_', '.', '-'; at most 32, not starting with a digit, '.' or "
          "'-')"]),
    'an option as the toolstack program':
        ('toolstack = "xl"', 'toolstack_command = "-x xl"',
         ["cluster.toml:2: [defaults] toolstack_command = '-x xl': its first word is not a "
          "program (an absolute path, or a name of letters, digits, . _ + -)"]),
    'a shell command as the bootloader':
        ('memory = "1G"', 'memory = "1G"\nbootloader = "pygrub; reboot"',
         ["cluster.toml:34: [domu.web1] bootloader = 'pygrub; reboot': not a program (an "
          "absolute path, or a name of letters, digits, . _ + -)"]),
}


@pytest.mark.parametrize('old, new, expected', SHELL.values(), ids=list(SHELL))
def test_shell_metacharacters_are_refused_at_load(old, new, expected):
    assert errors_of(old, new) == expected


# -- 2. configuration injection by newline or quote --------------------------------------
INJECTION = {
    'state_db with a line break (a nagios.cfg line)':
        ('toolstack = "xl"', 'state_db = "/var/lib/x\\nservice_check_timeout=1"',
         ["cluster.toml:2: [defaults] state_db = '/var/lib/x\\nservice_check_timeout=1': "
          "contains a line break"]),
    'nagios_command_file with a line break':
        ('toolstack = "xl"', 'nagios_command_file = "/n.cmd\\ncheck_external_commands=0"',
         ["cluster.toml:2: [defaults] nagios_command_file = '/n.cmd\\ncheck_external_"
          "commands=0': contains a line break"]),
    'failover_service closing its object':
        ('toolstack = "xl"', 'failover_service = "failover\\n}\\ndefine host {"',
         ["cluster.toml:2: [defaults] failover_service = 'failover\\n}\\ndefine host {': bad "
          "service name: letters, digits, single spaces, '.', '_' and '-' (at most 64, no "
          "space at either end)"]),
    'failover_service with a Nagios comment':
        ('toolstack = "xl"', 'failover_service = "fail;over"',
         ["cluster.toml:2: [defaults] failover_service = 'fail;over': bad service name: "
          "letters, digits, single spaces, '.', '_' and '-' (at most 64, no space at either "
          "end)"]),
    'toolstack_command with a line break':
        ('toolstack = "xl"', 'toolstack_command = "/usr/sbin/xl\\nfoo"',
         ["cluster.toml:2: [defaults] toolstack_command = '/usr/sbin/xl\\nfoo': contains a "
          "line break"]),
    'a domU config path adding a bootloader line':
        ('config = "/etc/xen/web1.cfg"',
         'config = "/etc/xen/web1.cfg\\nbootloader = \\"/bin/sh\\""',
         ["cluster.toml:32: [domu.web1] config = '/etc/xen/web1.cfg\\nbootloader = "
          "\"/bin/sh\"': contains a line break"]),
    'a domU config path ending in a blank':
        ('config = "/etc/xen/web1.cfg"', 'config = "/etc/xen/web1.cfg "',
         ["cluster.toml:32: [domu.web1] config = '/etc/xen/web1.cfg ': ends with a blank "
          "(Nagios, TOML editors and shells drop it)"]),
    'extra closing its xl string':
        ('memory = "1G"', 'memory = "1G"\nextra = "ro\\"\\nbootloader=\\"/bin/sh"',
         ["cluster.toml:34: [domu.web1] extra = 'ro\"\\nbootloader=\"/bin/sh': contains a "
          "line break"]),
    'a vif closing its xl list':
        ('memory = "1G"', 'memory = "1G"\nvif = ["bridge=xenbr0\\"]\\nbootloader=\\"x"]',
         ["cluster.toml:34: [domu.web1] vif[0] = 'bridge=xenbr0\"]\\nbootloader=\"x': "
          "contains a line break"]),
    'a multicast MAC for a guest NIC':
        ('memory = "1G"', 'memory = "1G"\nvif = ["mac=01:16:3e:00:00:01"]',
         ["cluster.toml:34: [domu.web1] vif[0] = 'mac=01:16:3e:00:00:01': mac: a multicast "
          "MAC address (a guest NIC needs a unicast one)"]),
    'a terminal escape in a kernel path':
        ('memory = "1G"', 'memory = "1G"\nkernel = "/boot/vmlinuz\\u001b[2J"',
         ["cluster.toml:34: [domu.web1] kernel = '/boot/vmlinuz\\x1b[2J': contains an escape "
          "character (terminal control)"]),
    'a bidi override in a key path':
        ('toolstack = "xl"', 'ssh_key = "/k\\u202e"',
         ["cluster.toml:2: [defaults] ssh_key = '/k\\u202e': contains a control character "
          "(U+202E)"]),
    'a quote in an IQN':
        ('iqn = "iqn.2026-01.lab:disk1"', 'iqn = "iqn.2026-01.lab:disk1\\"; x"',
         ["cluster.toml:21: [target.disk1] iqn = 'iqn.2026-01.lab:disk1\"; x': not an iSCSI "
          "name (iqn.YYYY-MM.reversed.domain[:id] of letters, digits and . - : _, or "
          "eui./naa. with hex digits)"]),
    'a line break in a CHAP user':
        ('lun = 1', 'lun = 1\nchap_user = "u\\nx"\nchap_secret_file = "/etc/c"',
         ["cluster.toml:23: [target.disk1] chap_user = 'u\\nx': not a CHAP user name "
          "(letters, digits and _ . @ : + -, at most 64)"]),
    'a line break in an interface':
        ('interface = "aoe1"', 'interface = "aoe1\\n"',
         ["cluster.toml:29: [target.vol1] interface = 'aoe1\\n': not a network interface "
          "name"]),
    'a domU named like a domain id':
        ('[domu.db1]', '[domu.123]',
         ['cluster.toml:37: [domu.123]: all digits: xl would take it for a domain id']),
    'a domU named like dom0':
        ('[domu.db1]', '[domu.Domain-0]',
         ["cluster.toml:37: [domu.Domain-0]: 'Domain-0' is the name of dom0 itself"]),
    'a name with a trailing line break':
        ('[domu.db1]', '[domu."db1\\n"]',
         ["cluster.toml: [domu.\"db1\\n\"]: bad name: use letters, digits, '.', '_' and '-' "
          "(at most 64, starting with a letter or digit)"]),
    'a timeout past any sane bound':
        ('toolstack = "xl"', 'timeout = 1e20',
         ['cluster.toml:2: [defaults] timeout = 1e+20: must be at most 3600 seconds']),
    'deeply nested values':
        ('toolstack = "xl"', 'x = ' + '[' * 50 + ']' * 50,
         ['cluster.toml: [defaults] x[0][0][0][0][0][0][0]: nested too deeply (at most 8 '
          'tables or lists inside each other)']),
    'nesting deeper than the TOML parser goes':
        ('toolstack = "xl"', 'x = ' + '[' * 5000 + ']' * 5000,
         ['cluster.toml: nested too deeply (at most 8 tables or lists inside each other)']),
}


@pytest.mark.parametrize('old, new, expected', INJECTION.values(), ids=list(INJECTION))
def test_line_breaks_quotes_and_controls_are_refused_at_load(old, new, expected):
    assert errors_of(old, new) == expected


# -- 3. inline secrets: any spelling, any depth, never echoed -----------------------------
SECRETS = {
    'Password': (PASSWORD_FILE, 'Password = "hunter2"',
                 [f'cluster.toml:12: [dom0.spare-1] fencing[0] Password: {FENCE_SECRET}']),
    'PASSWORD': (PASSWORD_FILE, 'PASSWORD = "hunter2"',
                 [f'cluster.toml:12: [dom0.spare-1] fencing[0] PASSWORD: {FENCE_SECRET}']),
    '"password " (a blank)': (PASSWORD_FILE, '"password " = "hunter2"',
                              ['cluster.toml:12: [dom0.spare-1] fencing[0] password : '
                               + FENCE_SECRET]),
    'passwd': (PASSWORD_FILE, 'passwd = "hunter2"',
               [f'cluster.toml:12: [dom0.spare-1] fencing[0] passwd: {FENCE_SECRET}']),
    'bmc_password': (PASSWORD_FILE, 'bmc_password = "hunter2"',
                     [f'cluster.toml:12: [dom0.spare-1] fencing[0] bmc_password: '
                      f'{FENCE_SECRET}']),
    'BMC-Password': (PASSWORD_FILE, '"BMC-Password" = "hunter2"',
                     [f'cluster.toml:12: [dom0.spare-1] fencing[0] BMC-Password: '
                      f'{FENCE_SECRET}']),
    'snmp_priv_passwd': (PASSWORD_FILE, 'snmp_priv_passwd = "hunter2"',
                         [f'cluster.toml:12: [dom0.spare-1] fencing[0] snmp_priv_passwd: '
                          f'{FENCE_SECRET}']),
    'community (SNMP)': (PASSWORD_FILE, 'community = "hunter2"',
                         [f'cluster.toml:12: [dom0.spare-1] fencing[0] community: '
                          f'{FENCE_SECRET}']),
    'hexadecimal_kg (IPMI Kg)': (PASSWORD_FILE, 'hexadecimal_kg = "hunter2"',
                                 [f'cluster.toml:12: [dom0.spare-1] fencing[0] hexadecimal_kg: '
                                  f'{FENCE_SECRET}']),
    'passwd_script (may hold the password)': (PASSWORD_FILE,
                                              'Passwd_Script = "/bin/echo hunter2"',
                                              ['cluster.toml:12: [dom0.spare-1] fencing[0] '
                                               f'Passwd_Script: {FENCE_SECRET}']),
    'a nested table in a fence method': (PASSWORD_FILE, 'opts = { password = "hunter2" }',
                                         [f'cluster.toml:12: [dom0.spare-1] fencing[0].opts '
                                          f'password: {FENCE_SECRET}',
                                          "cluster.toml:12: [dom0.spare-1] fencing[0] opts = "
                                          "{'password': <secret, not shown>}: expected a "
                                          "string, number or true/false"]),
    'chap_secret': ('lun = 1', 'lun = 1\nchap_secret = "hunter2"',
                    [f'cluster.toml:23: [target.disk1] chap_secret: {CHAP_SECRET}']),
    'Chap_Password': ('lun = 1', 'lun = 1\nChap_Password = "hunter2"',
                      [f'cluster.toml:23: [target.disk1] Chap_Password: {CHAP_SECRET}']),
    'secret in [defaults]': ('toolstack = "xl"', 'secret = "hunter2"',
                             [f'cluster.toml:2: [defaults] secret: {ANY_SECRET}']),
    'a token three tables deep': ('toolstack = "xl"',
                                  'toolstack = "xl"\n[defaults.extra]\n'
                                  'deep = { deeper = { api_token = "hunter2" } }',
                                  [f'cluster.toml:1: [defaults] extra.deep.deeper api_token: '
                                   f'{ANY_SECRET}',
                                   'cluster.toml:1: [defaults] extra: unknown key (valid: '
                                   + VALID_DEFAULTS + ')']),
    'in a list of tables': ('toolstack = "xl"', 'x = [ { password = "hunter2" } ]',
                            [f'cluster.toml:2: [defaults] x[0] password: {ANY_SECRET}',
                             'cluster.toml:2: [defaults] x: unknown key (valid: '
                             + VALID_DEFAULTS + ')']),
    'at the top of the file': ('[defaults]', 'password = "hunter2"\n[defaults]',
                               [f'cluster.toml:1: password: {ANY_SECRET}']),
    'in [timing]': ('toolstack = "xl"', 'toolstack = "xl"\n[timing]\npasswd = "hunter2"',
                    [f'cluster.toml:4: [timing] passwd: {ANY_SECRET}']),
    'inside a malformed chain (the chain is printed, the secret is not)':
        ('fencing = "none"',
         'fencing = [{ method = "agent", agent = "fence_ipmilan", password = "hunter2" }, "x"]',
         [f'cluster.toml:7: [dom0.dom0-1] fencing[0] password: {FENCE_SECRET}',
          "cluster.toml:7: [dom0.dom0-1] fencing = [{'method': 'agent', 'agent': "
          "'fence_ipmilan', 'password': <secret, not shown>}, 'x']: expected a list of "
          'methods (e.g. [{ method = "agent", agent = "fence_ipmilan", ... }]) or "none"']),
}


@pytest.mark.parametrize('old, new, expected', SECRETS.values(), ids=list(SECRETS))
def test_inline_secrets_are_refused_by_key_never_by_value(old, new, expected):
    errors = errors_of(old, new)
    assert errors == expected
    assert 'hunter2' not in '\n'.join(errors)


# -- the installed commands refuse them too, each in its own words ------------------------
def hostile_inventory(tmp_path, old, new, name='cluster.toml') -> Path:
    path = tmp_path / name
    path.write_text(BASE.replace(old, new, 1))
    return path


def test_render_refuses_an_injected_address_and_writes_nothing(tmp_path):
    inv = hostile_inventory(tmp_path, 'address = "127.0.10.11"',
                            'address = "$(touch /tmp/pwned)"')
    out = tmp_path / 'objects'
    r = run('xenha', 'render', '--inventory', inv, '--format', 'all', '--output', out)
    assert (r.rc, r.err.splitlines()[:2]) == (2, [
        f'xenha render: {inv}: 1 error(s), nothing written:',
        f"  {inv}:5: [dom0.dom0-1] address = '$(touch /tmp/pwned)': {HOSTNAME_WHY}"])
    assert not out.exists()


def test_the_handlers_and_checks_refuse_an_injected_inventory(tmp_path):
    inv = hostile_inventory(tmp_path, 'address = "127.0.10.11"', 'address = "`reboot`"')
    err = f"{inv}:5: [dom0.dom0-1] address = '`reboot`': {HOSTNAME_WHY}"
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARD', '3')
    assert (r.rc, r.first) == (3, f'xenha: refused: inventory unusable: {err}')
    r = run('check_fence', '--inventory', inv, '--dom0', 'dom0-1')
    assert (r.rc, r.first) == (3, f'FENCE UNKNOWN - cannot load inventory: {err}')
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1')
    assert (r.rc, r.first) == (3, f'XEN_DOMU UNKNOWN - cannot load inventory: {err}')
    r = run('check_xen_capacity', '--inventory', inv)
    assert (r.rc, r.first) == (3, f'XEN_CAPACITY UNKNOWN - cannot load inventory: {err}')
    r = run('xenha', 'status', '--inventory', inv)
    assert (r.rc, r.err.splitlines()[0]) == (2, f'xenha: {err}')


@pytest.mark.parametrize('command', [
    ('handle_dom0_event', 'dom0-1', 'DOWN', 'HARD', '3'),
    ('handle_domu_event', 'web1', 'CRITICAL', 'HARD', '3'),
    ('check_fence', '--dom0', 'spare-1'),
    ('check_xen_domu', '--domain', 'web1'),
    ('check_xen_capacity',),
    ('xenha', 'status'),
    ('xenha', 'journal'),
    ('xenha', 'failover', 'dom0-1', '--dry-run'),
    ('xenha', 'render', '--format', 'all', '--output', 'OUT'),
], ids=lambda c: c[0] if c[0] != 'xenha' else f'xenha {c[1]}')
def test_no_command_prints_an_inline_secret(tmp_path, command):
    inv = hostile_inventory(tmp_path, PASSWORD_FILE, 'bmc_password = "hunter2"')
    name, *args = command
    args = [str(tmp_path / 'out') if a == 'OUT' else a for a in args]
    flag = '--cluster' if name == 'check_xen_domu' else '--inventory'
    r = run(name, *args, flag, inv)
    err = f'{inv}:12: [dom0.spare-1] fencing[0] bmc_password: {FENCE_SECRET}'
    first = (r.err or r.out).splitlines()[0 if name != 'xenha' or args[0] != 'render' else 1]
    assert err in first and r.rc in (2, 3), r
    assert 'hunter2' not in r.out + r.err


def test_render_options_are_checked_like_inventory_values(tmp_path):
    good = hostile_inventory(tmp_path, 'toolstack = "xl"', 'toolstack = "xl"')
    cases = [
        (('--plugin-dir', '/opt/x\nbin'),
         "xenha render: --plugin-dir '/opt/x\\nbin': contains a line break (or a $USERn$ "
         "macro)"),
        (('--handler-dir', 'handlers'),
         "xenha render: --handler-dir 'handlers': must be an absolute path (starting with /) "
         "(or a $USERn$ macro)"),
        (('--config-inventory', '/etc/x.toml\r'),
         "xenha render: --config-inventory '/etc/x.toml\\r': ends with a blank (Nagios, "
         "TOML editors and shells drop it) (or a $USERn$ macro)"),
        (('--contact-group', 'admins;x'),
         "xenha render: --contact-group 'admins;x': bad name: use letters, digits, '.', "
         "'_' and '-' (at most 64, starting with a letter or digit)"),
        (('--timeperiod', '24x7\n}'),
         "xenha render: --timeperiod '24x7\\n}': bad name: use letters, digits, '.', '_' "
         "and '-' (at most 64, starting with a letter or digit)"),
        (('--format', 'icinga2', '--plugin-dir', '$USER1$'),
         "xenha render: --plugin-dir '$USER1$': a $USERn$ macro is for Nagios only: "
         "Icinga 2 needs a path"),
    ]
    for args, line in cases:
        out = tmp_path / 'out'
        r = run('xenha', 'render', '--inventory', good, '--output', out, *args)
        assert (r.rc, r.err.splitlines()[0]) == (2, line)
        assert not out.exists()


def test_the_inventory_file_name_cannot_leave_its_comment(tmp_path):
    """A file name is not checked (it is the operator's file system), but it is
    written into comments: it can end neither the line nor the comment."""
    inv = hostile_inventory(tmp_path, 'kernel = "/boot/vmlinuz-guest"',
                            'kernel = "/boot/vmlinuz-guest"',
                            name='site\ndefine command{\x1b[2J.toml')
    from xenha.inventory import load
    c = load(inv)
    c = dataclasses.replace(c, domus={n: dataclasses.replace(u, kernel='/boot/k')
                                      for n, u in c.domus.items()})
    files = {**render_mod.render(c, 'nagios'), **render_mod.render(c, 'xen'),
             **render_mod.render(c, 'icinga2', render_mod.Options(
                 inventory_path='/etc/xenha/cluster.toml'))}
    for path, text in files.items():
        assert 'site?define command{?[2J.toml' in text, path
        assert '\ndefine command{' not in text and '\x1b' not in text, path
    # Icinga 2 is given the path itself when no --config-inventory says otherwise:
    # a string cannot hold the escape character, so nothing is rendered
    with pytest.raises(render_mod.RenderError) as e:
        render_mod.render(c, 'icinga2')
    assert str(e.value).endswith(': contains an escape character (terminal control), '
                                 'which an Icinga 2 string cannot hold: not rendered')


def test_render_checks_every_value_again(tmp_path):
    """Defence in depth: a Cluster that did not come through the loader (or a
    grammar loosened one day) is refused by render, not written."""
    c = loads(BASE, 'cluster.toml')
    bad = [
        ('dom0s', 'dom0-1', 'address', '$(touch /tmp/pwned)',
         f"[dom0.dom0-1] address = '$(touch /tmp/pwned)': {HOSTNAME_WHY}"),
        ('dom0s', 'dom0-1', 'toolstack_command', 'xl\nfoo',
         "[dom0.dom0-1] toolstack_command = 'xl\\nfoo': contains a line break"),
        ('domus', 'web1', 'config', '/etc/xen/w.cfg\nbootloader="/bin/sh"',
         "[domu.web1] config = '/etc/xen/w.cfg\\nbootloader=\"/bin/sh\"': contains a line "
         "break"),
        ('storage', 'san-1', 'address', 'a;b', f"[storage.san-1] address = 'a;b': "
                                                f"{HOSTNAME_WHY}"),
    ]
    for table, name, field, value, message in bad:
        objs = dict(getattr(c, table))
        objs[name] = dataclasses.replace(objs[name], **{field: value})
        hostile = dataclasses.replace(c, **{table: objs})
        for fmt in ('nagios', 'icinga2'):
            with pytest.raises(render_mod.RenderError) as e:
                render_mod.render(hostile, fmt)
            assert str(e.value) == message
    with pytest.raises(render_mod.RenderError) as e:
        render_mod.write_tree(render_mod.render(dataclasses.replace(
            c, defaults=dataclasses.replace(c.defaults, state_db='/x\ny')), 'nagios'),
            tmp_path / 'o')
    assert str(e.value) == "[defaults] state_db = '/x\\ny': contains a line break"
    assert not (tmp_path / 'o').exists()


def test_a_domu_with_many_disks_renders(tmp_path):
    """More than 8 disks used to be an IndexError: xvdi, xvdj … follow."""
    text = BASE + ''.join(
        f'\n[target.d{i}]\nkind = "aoe"\nstorage = "san-1"\nshelf = 2\nslot = {i}\n'
        f'interface = "aoe1"\n' for i in range(30))
    text = text.replace('targets = ["disk1"]', 'targets = ["disk1", '
                        + ', '.join(f'"d{i}"' for i in range(30)) + ']\n'
                        'kernel = "/boot/vmlinuz"')
    c = loads(text.replace('targets = ["vol1"]', 'targets = ["vol1"]\nkernel = "/k"'))
    xl = render_mod.render(c, 'xen')['web1.cfg']
    assert '"phy:/dev/etherd/e2.29,xvdae,w",' in xl
    assert '"phy:/dev/etherd/e2.7,xvdi,w",' in xl
