"""Simulated lab dom0s: one real sshd per host on its own loopback address.

Each host gets its own host key, key-only root login, and a `SetEnv` that
tells the toolstack simulator which host it is.  A small `bin/` directory on
the session's PATH holds the commands a dom0 has: `xl`, `xm` and the storage
initiators' stand-ins.

Power off = the sshd stops (connection refused) and every guest is gone;
hang = SIGSTOP on the sshd (connections are accepted but no banner comes);
partition = the sshd stops but the host and its guests go on (cut off from
the monitoring node, not dead: its BMC still says on).

One of the two kinds of xenha_lab.dom0.HostKind (the other: xenha_lab.qemu).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

from xenha_lab import keys, xensim
from xenha_lab.core import Lab

NAME = 'sim'
WHAT = 'is simulated'
FAULTS = ('power', 'hang', 'partition', 'toolstack', 'garbage')
SSHD = '/usr/sbin/sshd'
# command name -> "module:function(argv) -> int"
COMMANDS = {
    'xl': 'xenha_lab.xensim:main_xl',
    'xm': 'xenha_lab.xensim:main_xm',
    'iscsiadm': 'xenha_lab.initiators:iscsiadm_main',
    'aoe-discover': 'xenha_lab.initiators:aoe_discover_main',
    'aoe-stat': 'xenha_lab.initiators:aoe_stat_main',
    'blockdev': 'xenha_lab.xensim:main_blockdev',
    'sg_persist': 'xenha_lab.initiators:sg_persist_main',
    'dd': 'xenha_lab.initiators:dd_main',
}
# -IS: no site processing, no environment: the stand-ins start in ~10 ms
# instead of ~25 (a real xl is a C program; the lab should not be much slower)
WRAPPER = '''#!{python} -IS
import sys
sys.path.insert(0, {root!r})
from {module} import {func}
sys.exit({func}(sys.argv[1:]))
'''
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def add_host(lab: Lab, name: str, *, total_mb: int = 8192, dom0_mb: int = 1024,
             cpus: int = 4) -> dict:
    """Create host `name` (files, host key, simulator state) and start its sshd."""
    address, port, hdir, hostkey = keys.place_host(lab, name)
    (hdir / 'bin').mkdir(parents=True, exist_ok=True)
    state_dir = hdir / 'state'
    xensim.init_host(state_dir, name, total_mb=total_mb, dom0_mb=dom0_mb, cpus=cpus)
    for cmd, target in COMMANDS.items():
        module, func = target.split(':')
        path = hdir / 'bin' / cmd
        path.write_text(WRAPPER.format(python=sys.executable, module=module, func=func,
                                       root=PACKAGE_ROOT))
        path.chmod(0o755)
    (hdir / 'authorized_keys').write_text(
        Path(f'{keys.client_key(lab)}.pub').read_text())
    path_env = f'{hdir / "bin"}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    # HOME: each dom0 has its own (empty) home, so a login shell does not run
    # this machine's ~/.bashrc (a pyenv init there costs seconds per command)
    setenv = {'XENSIM_HOST': name, 'XENSIM_STATE': str(state_dir),
              'XENHA_LAB_DIR': str(lab.dir), 'PATH': path_env, 'HOME': str(hdir)}
    (hdir / 'sshd_config').write_text('\n'.join([
        f'ListenAddress {address}:{port}',
        f'HostKey {hostkey}',
        f'PidFile {hdir / "sshd.pid"}',
        f'AuthorizedKeysFile {hdir / "authorized_keys"}',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'UseDNS no',
        'MaxStartups 100:30:200',
        'LogLevel ERROR',
        'SetEnv ' + ' '.join(f'{k}={shlex.quote(v)}' for k, v in setenv.items()),
        '',
    ]))
    lab.info['hosts'][name] = {'address': address, 'port': port, 'dir': str(hdir),
                               'state_dir': str(state_dir), 'bin': str(hdir / 'bin'),
                               'host_key': str(hostkey)}
    lab.save()
    Path('/run/sshd').mkdir(exist_ok=True)
    check = subprocess.run([SSHD, '-t', '-f', str(hdir / 'sshd_config')],
                           capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f'sshd config of {name} is invalid: {check.stderr.strip()}')
    start(lab, name)
    return lab.info['hosts'][name]


def start(lab: Lab, name: str) -> None:
    host = lab.info['hosts'][name]
    cfg = Path(host['dir']) / 'sshd_config'
    lab.spawn(f'sshd-{name}', [SSHD, '-D', '-e', '-f', str(cfg)])
    lab.wait_port(host['address'], host['port'])


def sshd_setting(lab: Lab, name: str, line: str) -> None:
    """Add an sshd_config line to a simulated dom0 (say 'MaxSessions 2', as a
    hardened host has) and restart its sshd."""
    cfg = Path(lab.info['hosts'][name]['dir']) / 'sshd_config'
    cfg.write_text(cfg.read_text() + line + '\n')
    lab.stop(f'sshd-{name}')
    start(lab, name)


# -- the HostKind interface ------------------------------------------------------
def power(lab: Lab, name: str, on: bool) -> None:
    host = lab.info['hosts'][name]
    if on:
        xensim.power_on(host['state_dir'])
        if not lab.alive(f'sshd-{name}'):
            start(lab, name)
    else:
        # the toolstack goes dark first: a session sshd forks while dying must
        # find nothing to run
        xensim.power_off(host['state_dir'])
        lab.stop(f'sshd-{name}')
        if 'storage' in lab.info:     # its iSCSI sessions drop, without a logout
            from xenha_lab import initiators
            initiators.host_down(lab, name)


def powered(lab: Lab, name: str) -> bool:
    return xensim.read(lab.info['hosts'][name]['state_dir']).get('power') != 'off'


def partition(lab: Lab, name: str) -> None:
    lab.stop(f'sshd-{name}')


def reachable(lab: Lab, name: str) -> bool:
    return lab.alive(f'sshd-{name}')


def hang(lab: Lab, name: str) -> None:
    lab.signal(f'sshd-{name}', signal.SIGSTOP)


def resume(lab: Lab, name: str) -> None:
    lab.signal(f'sshd-{name}', signal.SIGCONT)
    if powered(lab, name) and not lab.alive(f'sshd-{name}'):
        start(lab, name)


def domains(lab: Lab, name: str) -> list[tuple[str, str]]:
    """(name, state) of its guests, from the simulator's state."""
    return [(d['name'], d['state']) for d in
            xensim.read(lab.info['hosts'][name]['state_dir'])['domains'] if d['id']]


def fault(lab: Lab, name: str) -> str | None:
    """The toolstack fault set on it (`xenha lab fail --how toolstack|garbage`)."""
    fault = xensim.read(lab.info['hosts'][name]['state_dir']).get('fault')
    return f'fault={fault}' if fault else None


def wait_ready(lab: Lab, name: str) -> None:
    """`power(on)` already waited for its sshd."""
