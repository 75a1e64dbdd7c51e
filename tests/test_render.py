"""`xenha render`, checked by the real consumers: `nagios4 -v` on the Nagios
objects inside a complete throwaway nagios.cfg, `icinga2 daemon -C` on the Icinga 2
rendering, Python on the xm/xl domU files; a bad inventory writes nothing; and
nagios-objects/ is exactly the rendering of examples/cluster.toml."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xenha.inventory import load
from xenha_lab.nagios import SITE_CFG   # the lab's timeperiod, contact and group
from xenha.render import MARKER, MARKER_TEXT, Options, RenderError, render, write_tree

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / 'examples' / 'cluster.toml'
GOOD = ROOT / 'tests' / 'fixtures' / 'inventory' / 'good.toml'


def run_render(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'xenha.render', *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def nagios_verify(tmp: Path, objects: Path, interval_length: int):
    """A complete nagios.cfg with every path inside `tmp`; run `nagios4 -v`."""
    (tmp / 'spool').mkdir()
    (tmp / 'site.cfg').write_text(SITE_CFG)
    (tmp / 'resource.cfg').write_text(f'$USER1$={tmp}/plugins\n'
                                      f'$USER2$={tmp}/cluster.toml\n')
    (tmp / 'nagios.cfg').write_text('\n'.join([
        f'cfg_file={tmp}/site.cfg', f'cfg_dir={objects}',
        f'resource_file={tmp}/resource.cfg', f'log_file={tmp}/nagios.log',
        f'query_socket={tmp}/nagios.qh', f'check_result_path={tmp}/spool',
        f'command_file={tmp}/nagios.cmd', f'lock_file={tmp}/nagios.lock',
        f'temp_path={tmp}', f'temp_file={tmp}/nagios.tmp',
        f'status_file={tmp}/status.dat', f'object_cache_file={tmp}/objects.cache',
        f'precached_object_file={tmp}/objects.precache',
        f'state_retention_file={tmp}/retention.dat', 'nagios_user=root',
        'nagios_group=root', f'interval_length={interval_length}',
        'enable_event_handlers=1', 'check_external_commands=1',
        "illegal_macro_output_chars=`~$&|'\"<>", '']))
    return subprocess.run(['nagios4', '-v', str(tmp / 'nagios.cfg')],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('inventory', [EXAMPLE, GOOD], ids=['example', 'good'])
@pytest.mark.parametrize('fast', [False, True], ids=['site', 'fast'])
def test_nagios_accepts_the_rendering(tmp_path, inventory, fast):
    out = tmp_path / 'objects'
    r = run_render('--inventory', inventory, '--format', 'nagios', '--output', out,
                   *(['--fast'] if fast else []))
    assert r.returncode == 0, r.stderr
    v = nagios_verify(tmp_path, out, 1 if fast else 60)
    assert v.returncode == 0, v.stdout
    assert 'Things look okay' in v.stdout
    assert 'Total Warnings: 0' in v.stdout
    c = load(inventory)
    hosts = len(c.dom0s) + len(c.storage) + len(c.domus) + 1
    # per dom0 "xen host" and "fencing", per target, per domU, capacity, failover
    services = 2 * len(c.dom0s) + len(c.targets) + len(c.domus) + 2
    assert f'Checked {hosts} hosts.' in v.stdout
    assert f'Checked {services} services.' in v.stdout
    # Nagios splits each servicedependency into an execution and a notification one.
    deps = sum(len(u.targets) for u in c.domus.values())
    assert f'Checked {2 * deps} service dependencies' in v.stdout


def test_nagios_check_can_fail(tmp_path):
    """The harness above really rejects a broken rendering."""
    out = tmp_path / 'objects'
    assert run_render('--inventory', EXAMPLE, '--output', out).returncode == 0
    (out / 'commands.cfg').unlink()
    v = nagios_verify(tmp_path, out, 60)
    assert v.returncode != 0
    assert "Error: Service check command 'check_xen_domu' specified in service " \
        "'xen domain' for host 'web1' not defined anywhere!" in v.stdout


def test_timing_in_interval_length_units():
    c = load(EXAMPLE)
    site = render(c, 'nagios')['templates.cfg']
    fast = render(c, 'nagios', Options(interval_length=1))['templates.cfg']
    # The dom0 template: 10 s checks, 5 s retries, 3 attempts in both renderings.
    dom0 = lambda text: text.split('name                            xenha-dom0')[1][:600]
    assert 'check_interval                  0.166667' in dom0(site)
    assert 'retry_interval                  0.0833333' in dom0(site)
    assert 'check_interval                  10\n' in dom0(fast)
    assert 'retry_interval                  5\n' in dom0(fast)
    assert 'max_check_attempts              3' in dom0(fast)


SLOW = {'dom0_check': 20, 'dom0_retry': 7, 'dom0_attempts': 4, 'dom0_check_timeout': 40,
        'domu_check': 30, 'domu_retry': 15, 'domu_attempts': 3, 'domu_max_age': 90,
        'target_check': 45, 'capacity_timeout': 50, 'check_timeout': 70,
        'fence_check': 600, 'fence_retry': 120, 'fence_attempts': 4}


def slow_example(tmp: Path) -> Path:
    """The example site with slow hosts: its [timing] table changed."""
    text = EXAMPLE.read_text()
    for key, value in SLOW.items():
        text, n = re.subn(rf'^{key} = \d+$', f'{key} = {value}', text, flags=re.M)
        assert n == 1, key
    path = tmp / 'slow.toml'
    path.write_text(text)
    return path


def test_timing_from_the_inventory(tmp_path):
    """Every [timing] value lands where it belongs, in both formats; -t beyond
    the daemons' own limits raises them (else Nagios / Icinga kill the check
    first and its message is lost).  The default rendering has none of that."""
    c = load(slow_example(tmp_path))
    nagios = render(c, 'nagios', Options(interval_length=1))
    dom0 = nagios['templates.cfg'].split('name                            xenha-dom0')[1][:600]
    for line in ('max_check_attempts              4', 'check_interval                  20\n',
                 'retry_interval                  7\n'):
        assert line in dom0
    domain = nagios['templates.cfg'].split('xenha-domain\n')[1][:700]
    for line in ('max_check_attempts              3', 'check_interval                  30\n',
                 'retry_interval                  15\n'):
        assert line in domain
    assert 'check_interval                  45\n' in \
        nagios['templates.cfg'].split('xenha-target\n')[1]
    fence = nagios['templates.cfg'].split('xenha-fence\n')[1][:400]
    for line in ('max_check_attempts              4', 'check_interval                  600\n',
                 'retry_interval                  120\n'):
        assert line in fence
    assert '--toolstack-command /usr/sbin/xl --sudo!40\n' in nagios['dom0s.cfg']   # host
    assert '--toolstack-command /usr/sbin/xl --sudo!70\n' in nagios['dom0s.cfg']   # service
    cmds = nagios['commands.cfg']
    assert '--domain $HOSTNAME$ --max-age 90 -t 70\n' in cmds
    assert '/check_iscsi_target $ARG1$ -t 70\n' in cmds
    assert '/check_xen_capacity --inventory $USER2$ -t 50\n' in cmds
    assert '/check_fence --inventory $USER2$ --dom0 $HOSTNAME$ -t 70\n' in cmds
    assert nagios['nagios.cfg.example'].endswith(
        'host_check_timeout=45\nservice_check_timeout=75\n')
    icinga = render(c, 'icinga2')
    assert ('  max_check_attempts = 4\n  check_interval = 20s\n  retry_interval = 7s\n'
            '  event_command = "xenha-dom0-event"\n  vars.xenha_timeout = 40 '
            in icinga['templates.conf'])
    assert '  vars.xenha_timeout = 70\n' in icinga['services.conf']
    assert icinga['commands.conf'].count('  timeout = 75s') == 6
    # the dom0 host's own xenha_timeout (40, the host check's) must not win
    assert ('  check_command = "xenha-fence"\n  vars.xenha_timeout = 70 '
            in icinga['services.conf'])
    assert ('  max_check_attempts = 4\n  check_interval = 600s\n  retry_interval = 120s\n'
            '  assign where host.vars.xenha_kind == "dom0"' in icinga['services.conf'])
    assert '  vars.xenha_max_age = 90\n' in icinga['commands.conf']

    default = render(load(EXAMPLE), 'all')
    assert not any('check_timeout=' in text or 'timeout = 75s' in text or
                   re.search(r'^  timeout = ', text, re.M) for text in default.values())
    assert '--toolstack-command /usr/sbin/xl --sudo!4\n' in default['nagios/dom0s.cfg']


def test_slow_host_timing_is_accepted_by_nagios_and_icinga2(tmp_path):
    inventory = slow_example(tmp_path)
    out = tmp_path / 'objects'
    assert run_render('--inventory', inventory, '--format', 'all', '--output', out,
                      '--fast').returncode == 0
    (tmp_path / 'n').mkdir()
    v = nagios_verify(tmp_path / 'n', out / 'nagios', 1)
    assert v.returncode == 0 and 'Total Warnings: 0' in v.stdout, v.stdout
    (tmp_path / 'i').mkdir()
    v = icinga_verify(tmp_path / 'i', out / 'icinga2')
    assert v.returncode == 0, v.stdout + v.stderr


def test_nagios_objects_for_the_example():
    files = render(load(EXAMPLE), 'nagios')
    cmds = files['commands.cfg']
    assert ('command_line    $USER1$/handle_dom0_event --inventory $USER2$ $HOSTNAME$ '
            '$HOSTSTATE$ $HOSTSTATETYPE$ $HOSTATTEMPT$') in cmds
    assert ('command_line    $USER1$/handle_domu_event --inventory $USER2$ $HOSTNAME$ '
            '$SERVICESTATE$ $SERVICESTATETYPE$ $SERVICEATTEMPT$') in cmds
    assert ('$USER1$/check_xen_domu --cluster $USER2$ --domain $HOSTNAME$ --max-age 60'
            in cmds)
    assert ('check_command                   check_xen_host!-p 22 -l xenha -i '
            '/etc/xenha/id_ed25519 --known-hosts /etc/xenha/known_hosts --toolstack xl '
            '--toolstack-command /usr/sbin/xl --sudo!4\n') in files['dom0s.cfg']
    # A toolstack command with spaces stays one shell word.
    assert ("--toolstack xm --toolstack-command 'sudo -n /usr/sbin/xm' --sudo!7\n"
            in render(load(GOOD), 'nagios')['dom0s.cfg'])
    assert ('check_command                   check_iscsi_target!-H 127.0.10.5 -p 3260 '
            '--target iqn.2026-01.org.example.san-1:xen --lun 1 --chap-user xenha '
            '--chap-secret-file /etc/xenha/chap-san-1.secret\n') in files['storage.cfg']
    # one "fencing" service per dom0, checked from here with the dom0's name
    fencing = [block for block in files['dom0s.cfg'].split('define service {')
               if 'service_description             fencing\n' in block]
    assert [re.search(r'host_name +(\S+)', b)[1] for b in fencing] == [
        'dom0-1', 'dom0-2', 'spare-1']
    assert all('check_command                   check_fence\n' in b for b in fencing)
    assert ('command_line    $USER1$/check_fence --inventory $USER2$ --dom0 $HOSTNAME$ '
            '-t 10\n') in cmds
    cluster = files['cluster.cfg']
    failover = cluster.split('service_description             failover')[1]
    for line in ('active_checks_enabled           0', 'passive_checks_enabled          1',
                 'check_freshness                 0'):
        assert line in failover
    # No secret anywhere: only the names of the files that hold them.
    assert not any('hunter' in t or 'password =' in t for t in files.values())


def test_plugin_dir_and_inventory_options():
    files = render(load(EXAMPLE), 'nagios', Options(
        plugin_dir='/opt/xen ha/bin', handler_dir='$USER5$',
        inventory_path='/etc/xenha/site.toml'))
    cmds = files['commands.cfg']
    assert "'/opt/xen ha/bin'/check_xen_host -H $HOSTADDRESS$" in cmds
    assert '$USER5$/handle_dom0_event --inventory /etc/xenha/site.toml $HOSTNAME$' in cmds


ICINGA_MAIN = '''\
const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "lab"
const ZoneName = "lab"
include <itl>
include <plugins>
include "{objects}/*.conf"
'''


def icinga_verify(tmp: Path, objects: Path):
    (tmp / 'cache').mkdir()
    (tmp / 'icinga2.conf').write_text(ICINGA_MAIN.format(objects=objects))
    return subprocess.run(
        ['icinga2', 'daemon', '-C', '-c', str(tmp / 'icinga2.conf'),
         f'-DConfiguration.CacheDir={tmp}/cache', '-DConfiguration.RunAsUser=root',
         '-DConfiguration.RunAsGroup=root'],
        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('inventory', [EXAMPLE, GOOD], ids=['example', 'good'])
def test_icinga2_accepts_the_rendering(tmp_path, inventory):
    out = tmp_path / 'objects'
    r = run_render('--inventory', inventory, '--format', 'icinga2', '--output', out)
    assert r.returncode == 0, r.stderr
    v = icinga_verify(tmp_path, out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert 'Finished validating the configuration file(s).' in v.stdout
    c = load(inventory)
    hosts = len(c.dom0s) + len(c.storage) + len(c.domus) + 1
    assert f'Instantiated {hosts} Hosts.' in v.stdout
    deps = sum(len(u.targets) for u in c.domus.values())
    assert f'Instantiated {deps} Dependencies.' in v.stdout
    # per dom0 "xen host" and "fencing", per domU "xen domain", per target, capacity,
    # failover
    services = 2 * len(c.dom0s) + len(c.domus) + len(c.targets) + 2
    assert f'Instantiated {services} Services.' in v.stdout


def test_icinga2_check_can_fail(tmp_path):
    out = tmp_path / 'objects'
    assert run_render('--inventory', EXAMPLE, '--format', 'icinga2',
                      '--output', out).returncode == 0
    (out / 'templates.conf').unlink()
    v = icinga_verify(tmp_path, out)
    assert v.returncode == 1
    assert "Import references unknown template: 'xenha-dom0'" in v.stdout


def read_xen(text: str) -> dict:
    """xm reads its domU files as Python; our xl files stay inside that subset."""
    values: dict = {}
    exec(compile(text, 'domU config', 'exec'), {}, values)
    return values


def test_xl_domu_configs():
    files = render(load(EXAMPLE), 'xen')
    assert sorted(files) == ['build1.cfg', 'db1.cfg', 'mail1.cfg', 'web1.cfg']
    assert read_xen(files['web1.cfg']) == {
        'name': 'web1', 'type': 'pv', 'memory': 1024, 'vcpus': 2,
        'kernel': '/boot/vmlinuz-xen-guest', 'ramdisk': '/boot/initrd.img-xen-guest',
        'extra': 'root=/dev/xvda ro console=hvc0',
        'disk': ['phy:/dev/disk/by-path/ip-127.0.10.5:3260-iscsi-'
                 'iqn.2026-01.org.example.san-1:xen-lun-1,xvda,w'],
        'vif': ['bridge=xenbr0'],
        'on_poweroff': 'destroy', 'on_reboot': 'restart', 'on_crash': 'destroy'}
    assert read_xen(files['build1.cfg'])['disk'] == ['phy:/dev/etherd/e1.2,xvda,w']
    assert read_xen(files['build1.cfg'])['on_crash'] == 'preserve'
    assert 'Install as /etc/xen/mail1.cfg on every dom0' in files['mail1.cfg']


def test_xm_domu_configs():
    c = load(GOOD)                                  # [defaults] toolstack = "xm"
    # Without db1, a PV domU with no kernel (see the next test).
    c = dataclasses.replace(c, domus={n: u for n, u in c.domus.items() if n != 'db1'})
    files = render(c, 'xen')
    assert sorted(files) == ['scratch.cfg', 'web1.cfg']
    assert "# xm (xend) syntax: the file is Python" in files['web1.cfg']
    web1 = read_xen(files['web1.cfg'])
    assert 'type' not in web1 and 'builder' not in web1
    assert web1['disk'] == ['phy:/dev/disk/by-path/ip-127.0.10.5:3261-iscsi-'
                            'iqn.2026-01.lab:disk1-lun-1,xvda,w',
                            'phy:/dev/etherd/e1.2,xvdb,w']
    assert web1['vif'] == ['bridge=xenbr0', 'bridge=xenbr1']
    assert web1['on_crash'] == 'restart'
    scratch = read_xen(files['scratch.cfg'])
    assert scratch['builder'] == 'hvm' and scratch['disk'] == []
    assert scratch['memory'] == 256


def test_a_pv_domu_without_kernel_does_not_render(tmp_path):
    # db1 in good.toml is PV with neither kernel nor bootloader.
    r = run_render('--inventory', GOOD, '--format', 'xen', '--output', tmp_path / 'x')
    assert r.returncode == 2
    assert (f'{GOOD}: [domu.db1]: a PV domU needs kernel or bootloader to render its '
            'Xen config') in r.stderr
    assert not (tmp_path / 'x').exists()


def test_broken_inventory_renders_nothing(tmp_path):
    bad = tmp_path / 'cluster.toml'
    bad.write_text(EXAMPLE.read_text().replace('home = "dom0-2"', 'home = "dom0-9"', 1)
                   .replace('role = "spare"', 'role = "standby"'))
    out = tmp_path / 'out'
    r = run_render('--inventory', bad, '--format', 'all', '--output', out)
    assert r.returncode == 2
    assert r.stdout == ''
    lines = r.stderr.splitlines()
    assert lines[0] == f'xenha render: {bad}: 2 error(s), nothing written:'
    assert "[dom0.spare-1] role = 'standby': must be one of 'active', 'spare'" in lines[1]
    assert "[domu.mail1] home = 'dom0-9': no such dom0" in lines[2]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]       # no temporary directory left


def test_broken_inventory_leaves_the_previous_rendering(tmp_path):
    out = tmp_path / 'out'
    assert run_render('--inventory', EXAMPLE, '--output', out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / 'bad.toml'
    bad.write_text('[dom0.x]\naddress = "127.0.10.11"\nrole = "active"\n')
    assert run_render('--inventory', bad, '--output', out).returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_nagios_objects_dir_matches_the_example():
    """nagios-objects/ is committed; re-render and compare byte for byte."""
    committed = ROOT / 'nagios-objects'
    files = render(load(EXAMPLE), 'nagios') | {MARKER: MARKER_TEXT}
    on_disk = {p.name: p.read_bytes() for p in committed.iterdir()}
    assert sorted(on_disk) == sorted(files), 'regenerate: python -m xenha.render ' \
        '--inventory examples/cluster.toml --format nagios --output nagios-objects'
    for name, text in files.items():
        assert on_disk[name] == text.encode(), f'nagios-objects/{name} drifted'


def test_write_tree_replaces_its_own_output_whole(tmp_path):
    out = tmp_path / 'out'
    write_tree({'a.cfg': 'one\n', 'sub/b.cfg': 'two\n'}, out)
    assert (out / 'sub' / 'b.cfg').read_text() == 'two\n'
    write_tree({'c.cfg': 'three\n'}, out)
    assert sorted(p.name for p in out.rglob('*')) == [MARKER, 'c.cfg']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
    assert oct(out.stat().st_mode & 0o777) == '0o755'


def test_write_tree_refuses_someone_elses_directory(tmp_path):
    out = tmp_path / 'conf.d'
    out.mkdir()
    (out / 'site.cfg').write_text('mine\n')
    with pytest.raises(RenderError, match='not written by xenha render'):
        write_tree({'a.cfg': 'x\n'}, out)
    assert [p.name for p in out.iterdir()] == ['site.cfg']


def test_write_tree_failure_keeps_the_old_tree(tmp_path):
    out = tmp_path / 'out'
    write_tree({'a.cfg': 'old\n'}, out)
    with pytest.raises(RenderError, match='not a relative path'):
        write_tree({'b.cfg': 'new\n', '../escape.cfg': 'x\n'}, out)
    assert (out / 'a.cfg').read_text() == 'old\n' and not (out / 'b.cfg').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


STUB = '''#!/bin/sh
# Stand-in for the xenha {name}: records its argv, one [word] at a time, in one
# write (checks run in parallel).
line={name}; for a in "$@"; do line="$line [$a]"; done
printf '%s\\n' "$line" >> {calls}
case " $* " in
  *" {failing} "*) echo "{name} CRITICAL - stub"; exit 2 ;;
esac
echo "{name} OK - stub"
'''


def test_a_real_nagios_runs_the_rendering(tmp_path):
    """A real Nagios 4 daemon with the --fast rendering, the settings of the rendered
    nagios.cfg.example, and stand-in plugins that record their argv (dom0-1 and
    mail1 fail): every word arrives intact (spaces, `$`, `;` in paths), the
    handlers get the macros in order, a failing domU gets its retry (5 s) before its
    handler sees HARD, and dom0-1 is HARD DOWN at most 10 s after its first failed
    check (check 10 s, retry 5 s, 3 attempts)."""
    out, plugins, calls = tmp_path / 'objects', tmp_path / 'plugins', tmp_path / 'calls'
    inventory = tmp_path / 'site.toml'
    inventory.write_text(EXAMPLE.read_text()
                         .replace('state_db = "/var/lib/xenha/state.db"',
                                  'state_db = "/var/lib/xen ha/$tate;1.db"')
                         .replace('ssh_key = "/etc/xenha/id_ed25519"',
                                  'ssh_key = "/etc/xenha/my key"'))
    assert run_render('--inventory', inventory, '--output', out, '--fast',
                      '--plugin-dir', plugins).returncode == 0
    plugins.mkdir()
    failing = {'check_xen_host': 'dom0-1.example.org', 'check_xen_domu': 'mail1'}
    for name in ('check_xen_host', 'check_xen_domu', 'check_iscsi_target',
                 'check_aoe_target', 'check_xen_capacity', 'check_fence',
                 'handle_dom0_event', 'handle_domu_event'):
        p = plugins / name
        p.write_text(STUB.format(name=name, calls=calls,
                                 failing=failing.get(name, '-no-such-')))
        p.chmod(0o755)
    v = nagios_verify(tmp_path, out, 1)
    assert v.returncode == 0 and 'Total Warnings: 0' in v.stdout, v.stdout
    main = (tmp_path / 'nagios.cfg').read_text()
    example = [line for line in (out / 'nagios.cfg.example').read_text().splitlines()
               if line and not line.startswith(('#', 'command_file='))]
    (tmp_path / 'nagios.cfg').write_text(main + '\n'.join(example + [
        'service_inter_check_delay_method=n', 'host_inter_check_delay_method=n',
        'max_service_check_spread=1', 'max_host_check_spread=1',
        'check_result_reaper_frequency=1', 'retain_state_information=0',
        'enable_notifications=0', '']))
    daemon = subprocess.run(['nagios4', '-d', str(tmp_path / 'nagios.cfg')], timeout=30)
    assert daemon.returncode == 0
    inv = f'[--inventory] [{tmp_path}/cluster.toml]'     # $USER2$ in resource.cfg
    hard = f'handle_dom0_event {inv} [dom0-1] [DOWN] [HARD] [3]'
    # both HARD events, whichever Nagios schedules last (one fencing service per
    # dom0 gives it more checks to spread)
    hards = (hard, f'handle_domu_event {inv} [mail1] [CRITICAL] [HARD] [2]')
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            if calls.exists() and set(hards) <= set(calls.read_text().splitlines()):
                break
            time.sleep(0.2)
        log = (tmp_path / 'nagios.log').read_text()
    finally:
        os.kill(int((tmp_path / 'nagios.lock').read_text()), signal.SIGTERM)
    seen = calls.read_text().splitlines()
    assert f'handle_dom0_event {inv} [dom0-1] [DOWN] [SOFT] [1]' in seen
    assert hard in seen
    assert f'handle_domu_event {inv} [mail1] [CRITICAL] [SOFT] [1]' in seen
    assert f'handle_domu_event {inv} [mail1] [CRITICAL] [HARD] [2]' in seen
    assert not any(line.startswith('handle_') and '[dom0-1]' not in line
                   and '[mail1]' not in line for line in seen)
    # The host check (up or down) gets 4 s, the "xen host" service the inventory's 10.
    for timeout in (4, 10):
        assert ('check_xen_host [-H] [spare-1.example.org] [-p] [2222] [-l] [xenha] [-i] '
                '[/etc/xenha/my key] [--known-hosts] [/etc/xenha/known_hosts] '
                '[--toolstack] [xl] [--toolstack-command] [/usr/sbin/xl] [--sudo] '
                f'[--state-db] [/var/lib/xen ha/$tate;1.db] [-t] [{timeout}]') in seen
    assert (f'check_xen_domu [--cluster] [{tmp_path}/cluster.toml] [--domain] [db1] '
            '[--max-age] [60] [-t] [10]') in seen
    assert ('check_iscsi_target [-H] [127.0.10.5] [-p] [3260] [--target] '
            '[iqn.2026-01.org.example.san-1:xen] [--lun] [2] [--chap-user] [xenha] '
            '[--chap-secret-file] [/etc/xenha/chap-san-1.secret] [-t] [10]') in seen
    assert ('check_aoe_target [--interface] [eth1] [--shelf] [1] [--slot] [2] [-t] [10]'
            in seen)
    assert f'check_xen_capacity [--inventory] [{tmp_path}/cluster.toml] [-t] [20]' in seen
    for dom0 in ('dom0-1', 'dom0-2', 'spare-1'):
        assert (f'check_fence [--inventory] [{tmp_path}/cluster.toml] [--dom0] [{dom0}] '
                '[-t] [10]') in seen
    # From the first failed check to HARD DOWN: at most two 5 s retries (sooner when
    # the failing "xen host" service triggers an on-demand host check).
    times = {m.group(2): int(m.group(1)) for m in re.finditer(
        r'^\[(\d+)\] HOST ALERT: dom0-1;DOWN;(SOFT;1|HARD;3);', log, re.M)}
    assert 0 <= times['HARD;3'] - times['SOFT;1'] <= 11


ICINGA_RUN = '''\
const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "lab"
const ZoneName = "lab"
include <itl>
include <plugins>
object CheckerComponent "checker" {{ }}
object Endpoint NodeName {{ }}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
include "{objects}/*.conf"
'''


def test_a_real_icinga2_runs_the_rendering(tmp_path):
    """A real Icinga 2 daemon with the rendering of good.toml and stand-in plugins
    (dom0-1 and web1 fail): the CheckCommand arguments arrive as whole words
    (Icinga passes argv, no shell: 'sudo -n /usr/sbin/xm' stays one word), and the
    event commands get name, state, state type and attempt, in that order."""
    out, plugins, calls = tmp_path / 'objects', tmp_path / 'plugins', tmp_path / 'calls'
    # Icinga spreads first checks over the interval: the fencing services' 300 s
    # would outlast the test
    inventory = tmp_path / 'good.toml'
    inventory.write_text(GOOD.read_text() + '\n[timing]\nfence_check = 5\n')
    assert run_render('--inventory', inventory, '--format', 'icinga2', '--output', out,
                      '--plugin-dir', plugins,
                      '--config-inventory', '/etc/xenha/cluster.toml').returncode == 0
    plugins.mkdir()
    failing = {'check_xen_host': '127.0.10.11', 'check_xen_domu': 'web1'}
    for name in ('check_xen_host', 'check_xen_domu', 'check_iscsi_target',
                 'check_aoe_target', 'check_xen_capacity', 'check_fence',
                 'handle_dom0_event', 'handle_domu_event'):
        p = plugins / name
        p.write_text(STUB.format(name=name, calls=calls,
                                 failing=failing.get(name, '-no-such-')))
        p.chmod(0o755)
    (tmp_path / 'icinga2.conf').write_text(ICINGA_RUN.format(objects=out))
    dirs = {d: tmp_path / d for d in ('cache', 'data', 'log', 'run', 'spool')}
    for d in dirs.values():
        d.mkdir()
    (dirs['run'] / 'icinga2').mkdir()
    daemon = subprocess.Popen(
        ['icinga2', 'daemon', '-c', str(tmp_path / 'icinga2.conf'),
         *(f'-DConfiguration.{key}={dirs[d]}' for key, d in (
             ('CacheDir', 'cache'), ('DataDir', 'data'), ('LogDir', 'log'),
             ('InitRunDir', 'run'), ('SpoolDir', 'spool'))),
         '-DConfiguration.RunAsUser=root', '-DConfiguration.RunAsGroup=root'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = ('check_xen_host [--known-hosts] [/etc/xenha/known_hosts] [--state-db] '
            '[/tmp/xenha-test/state.db] [--sudo] [--toolstack] [xm] [--toolstack-command] '
            '[sudo -n /usr/sbin/xm] [-H] [127.0.10.11] [-i] [/etc/xenha/id_ed25519] [-l] '
            '[xenha] [-p] [2200] [-t] [4]')      # the host check: 4 s
    domu = ('check_xen_domu [--cluster] [/etc/xenha/cluster.toml] [--domain] [web1] '
            '[--max-age] [60] [-t] [7]')
    fence = 'check_fence [--dom0] [dom0-1] [--inventory] [/etc/xenha/cluster.toml] [-t] [7]'
    dom0_event = re.compile(r'handle_dom0_event \[--inventory\] \[/etc/xenha/cluster.toml\]'
                            r' \[dom0-1\] \[DOWN\] \[(SOFT|HARD)\] \[\d\]$')
    domu_event = re.compile(r'handle_domu_event \[--inventory\] \[/etc/xenha/cluster.toml\]'
                            r' \[web1\] \[CRITICAL\] \[(SOFT|HARD)\] \[\d\]$')

    def seen() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    try:
        deadline = time.monotonic() + 40       # first checks are splayed over 10 s
        while time.monotonic() < deadline:
            lines = seen()
            if (host in lines and domu in lines and fence in lines
                    and any(map(dom0_event.match, lines))
                    and any(map(domu_event.match, lines))):
                break
            time.sleep(0.2)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    lines = seen()
    assert host in lines
    assert domu in lines
    assert fence in lines, [line for line in lines if line.startswith('check_fence')]
    assert any(map(dom0_event.match, lines)), lines
    assert any(map(domu_event.match, lines)), lines
    # scratch has ha = false: its service runs no event handler.
    assert not any(line.startswith('handle_domu_event') and '[scratch]' in line
                   for line in lines)


def test_format_all_and_bad_options(tmp_path):
    out = tmp_path / 'all'
    r = run_render('--inventory', EXAMPLE, '--format', 'all', '--output', out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f'xenha render: 20 all file(s) in {out}\n'   # 10 + 6 + 4
    assert sorted(p.name for p in out.iterdir()) == [MARKER, 'icinga2', 'nagios', 'xen']
    assert sorted(p.name for p in (out / 'xen').iterdir()) == [
        'build1.cfg', 'db1.cfg', 'mail1.cfg', 'web1.cfg']
    r = run_render('--inventory', EXAMPLE, '--output', tmp_path / 'x',
                   '--interval-length', '0')
    assert (r.returncode, r.stderr) == (2, 'xenha render: --interval-length must be at '
                                            'least 1\n')
    assert not (tmp_path / 'x').exists()
