"""The lab's monitoring node: a real Nagios 4 daemon running `xenha render --fast`.

Every path of its nagios.cfg lies inside the lab directory (query socket,
spool, command file, lock, retention), it runs as root with fast intervals
(interval_length=1: host check every 10 s, retry every 5 s, 3 attempts, as a
real site could run them), and its plugin directory holds the installed
xenha commands.  One lab-only twist: the monitoring node sits on the SAN
segment inside the lab's monitor namespace, so `check_aoe_target` is a
wrapper that enters it (AoE never touches the root namespace).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from xenha_lab.core import Lab

SITE_CFG = '''\
define timeperiod {
    timeperiod_name 24x7
    alias           always
    sunday          00:00-24:00
    monday          00:00-24:00
    tuesday         00:00-24:00
    wednesday       00:00-24:00
    thursday        00:00-24:00
    friday          00:00-24:00
    saturday        00:00-24:00
}
define command {
    command_name    notify-nobody
    command_line    /bin/true
}
define contact {
    contact_name                    nobody
    host_notifications_enabled      0
    service_notifications_enabled   0
    host_notification_period        24x7
    service_notification_period     24x7
    host_notification_options       n
    service_notification_options    n
    host_notification_commands      notify-nobody
    service_notification_commands   notify-nobody
}
define contactgroup {
    contactgroup_name   admins
    alias               admins
    members             nobody
}
'''
COMMANDS = ('check_xen_host', 'check_xen_domu', 'check_iscsi_target', 'check_aoe_target',
            'check_xen_capacity', 'check_fence', 'handle_dom0_event', 'handle_domu_event')
FAST = ['service_inter_check_delay_method=n', 'host_inter_check_delay_method=n',
        'max_service_check_spread=1', 'max_host_check_spread=1',
        'check_result_reaper_frequency=1', 'retain_state_information=0',
        'enable_notifications=0', 'enable_flap_detection=0']


def main_cfg(ndir: Path, objects: Path, example: Path) -> str:
    """A complete nagios.cfg, every path inside `ndir`, plus the rendered settings."""
    settings = [line for line in example.read_text().splitlines()
                if line and not line.startswith(('#', 'command_file=', 'interval_length='))]
    return '\n'.join([
        f'cfg_file={ndir}/site.cfg', f'cfg_dir={objects}',
        f'resource_file={ndir}/resource.cfg', f'log_file={ndir}/nagios.log',
        f'query_socket={ndir}/nagios.qh', f'check_result_path={ndir}/spool',
        f'command_file={ndir}/nagios.cmd', f'lock_file={ndir}/nagios.lock',
        f'temp_path={ndir}', f'temp_file={ndir}/nagios.tmp',
        f'status_file={ndir}/status.dat', f'object_cache_file={ndir}/objects.cache',
        f'precached_object_file={ndir}/objects.precache',
        f'state_retention_file={ndir}/retention.dat', f'debug_file={ndir}/debug.log',
        'nagios_user=root', 'nagios_group=root', 'interval_length=1',
        'status_update_interval=1', 'event_handler_timeout=30',
        "illegal_macro_output_chars=`~$&|'\"<>", *settings, *FAST, ''])


def up(lab: Lab, say=None) -> dict:
    from xenha import render
    from xenha_lab import inventory
    say = say or (lambda text: None)
    t = time.monotonic()
    ndir = lab.dir / 'nagios'
    (ndir / 'spool').mkdir(parents=True, exist_ok=True)
    plugins = ndir / 'plugins'
    plugins.mkdir(exist_ok=True)
    bindir = Path(sys.executable).parent
    for name in COMMANDS:
        target = bindir / name
        if name == 'check_aoe_target' and 'storage' in lab.info:
            from xenha_lab.storage import netns_of, MONITOR
            wrapper = plugins / name
            wrapper.write_text('#!/bin/sh\n# lab: the monitoring node is on the SAN '
                               'segment inside its namespace\nexec ip netns exec '
                               f'{shlex.quote(netns_of(lab, MONITOR))} '
                               f'{shlex.quote(str(target))} "$@"\n')
            wrapper.chmod(0o755)
        else:
            (plugins / name).unlink(missing_ok=True)
            (plugins / name).symlink_to(target)
    info = {'dir': str(ndir), 'command_file': str(ndir / 'nagios.cmd'),
            'status_file': str(ndir / 'status.dat'), 'log_file': str(ndir / 'nagios.log')}
    lab.info['nagios'] = info
    lab.save()
    inv = inventory.write_inventory(lab, **lab.info.get('inventory_defaults', {}))
    options = render.Options(plugin_dir=str(plugins), inventory_path=str(inv),
                             interval_length=1)
    files = render.render(inventory.cluster(lab), 'nagios', options)
    render.write_tree(files, ndir / 'objects')
    example = ndir / 'objects' / 'nagios.cfg.example'
    (ndir / 'site.cfg').write_text(SITE_CFG)
    (ndir / 'resource.cfg').write_text(f'$USER1$={plugins}\n$USER2$={inv}\n')
    (ndir / 'nagios.cfg').write_text(main_cfg(ndir, ndir / 'objects', example))
    import subprocess
    v = subprocess.run(['nagios4', '-v', str(ndir / 'nagios.cfg')], capture_output=True,
                       text=True, timeout=60)
    if v.returncode:
        raise RuntimeError(f'nagios4 -v refuses the lab configuration:\n{v.stdout[-2000:]}')
    lab.spawn('nagios', ['nagios4', str(ndir / 'nagios.cfg')])
    deadline = time.monotonic() + 20
    while not Path(info['status_file']).exists():
        if not lab.alive('nagios') or time.monotonic() > deadline:
            raise RuntimeError('Nagios did not start: ' +
                               Path(lab.procs.get('nagios').log).read_text()[-1000:])
        time.sleep(0.05)
    say(f'Nagios 4 up ({len(files)} object files, every check via the installed '
        f'plugins) in {time.monotonic() - t:.1f}s')
    return info


# -- reading Nagios' own view --------------------------------------------------------
def status(lab: Lab) -> dict:
    """Parse status.dat: {('host', name) | ('service', host, desc): {field: value}}."""
    path = Path(lab.info['nagios']['status_file'])
    out, block, kind = {}, None, None
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    for line in text.splitlines():
        line = line.strip()
        if line.endswith('{'):
            kind, block = line[:-1].strip(), {}
        elif line == '}' and block is not None:
            if kind == 'hoststatus':
                out[('host', block.get('host_name'))] = block
            elif kind == 'servicestatus':
                out[('service', block.get('host_name'), block.get('service_description'))] = block
            block = None
        elif block is not None and '=' in line:
            k, _, v = line.partition('=')
            block[k] = v
    return out


def log_lines(lab: Lab) -> list[str]:
    try:
        return Path(lab.info['nagios']['log_file']).read_text().splitlines()
    except FileNotFoundError:
        return []


def command(lab: Lab, *fields: str) -> None:
    from xenha.nagios import CommandFile
    CommandFile(lab.info['nagios']['command_file']).send(*fields)
