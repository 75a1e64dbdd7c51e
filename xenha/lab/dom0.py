"""Lab dom0s: one real sshd per host on its own loopback address.

Each host gets its own host key, key-only root login, and a `SetEnv` that
tells the toolstack simulator which host it is.  A small `bin/` directory on
the session's PATH holds the commands a dom0 has: `xl`, `xm` and the storage
initiators' stand-ins.

Power off = the sshd stops (connection refused) and every guest is gone;
hang = SIGSTOP on the sshd (connections are accepted but no banner comes);
partition = the sshd stops but the host and its guests go on (cut off from
the monitoring node, not dead: its BMC still says on).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from xenha.lab import xensim
from xenha.lab.core import Lab
from xenha.runner import SSHOptions

SSHD = '/usr/sbin/sshd'
# command name -> "module:function(argv) -> int"
COMMANDS = {
    'xl': 'xenha.lab.xensim:main_xl',
    'xm': 'xenha.lab.xensim:main_xm',
    'iscsiadm': 'xenha.lab.initiators:iscsiadm_main',
    'aoe-discover': 'xenha.lab.initiators:aoe_discover_main',
    'aoe-stat': 'xenha.lab.initiators:aoe_stat_main',
    'blockdev': 'xenha.lab.xensim:main_blockdev',
    'sg_persist': 'xenha.lab.initiators:sg_persist_main',
    'dd': 'xenha.lab.initiators:dd_main',
}
# -IS: no site processing, no environment: the stand-ins start in ~10 ms
# instead of ~25 (a real xl is a C program; the lab should not be much slower)
WRAPPER = '''#!{python} -IS
import sys
sys.path.insert(0, {root!r})
from {module} import {func}
sys.exit({func}(sys.argv[1:]))
'''
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _keygen(path: Path) -> str:
    """Make an ed25519 key pair at `path` (once); return the public line."""
    if not path.exists():
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
                        path.name, '-f', str(path)], check=True)
    return Path(f'{path}.pub').read_text().strip()


def client_key(lab: Lab) -> Path:
    """The monitoring node's key pair; its public half is authorized everywhere."""
    d = lab.dir / 'ssh'
    d.mkdir(mode=0o700, exist_ok=True)
    key = d / 'id_ed25519'
    _keygen(key)
    return key


def known_hosts(lab: Lab) -> Path:
    return lab.dir / 'ssh' / 'known_hosts'


def ssh_options(lab: Lab, **overrides) -> SSHOptions:
    opts = dict(user='root', port=lab.info['ssh_port'], identity=str(client_key(lab)),
                known_hosts=str(known_hosts(lab)))
    opts.update(overrides)
    return SSHOptions(**opts)


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f'[{address}]:{port}'


def add_host(lab: Lab, name: str, *, total_mb: int = 8192, dom0_mb: int = 1024,
             cpus: int = 4) -> dict:
    """Create host `name` (files, host key, simulator state) and start its sshd."""
    hosts = lab.info.setdefault('hosts', {})
    index = len(hosts)
    address = lab.addr(11 + index)
    if 'ssh_port' not in lab.info:
        # port 22 on our own address is the realistic choice; a machine whose
        # sshd listens on 0.0.0.0:22 forces another port for the whole lab
        lab.info['ssh_port'] = 22 if _port_free(address, 22) else 2222
    port = lab.info['ssh_port']
    hdir = lab.dir / 'hosts' / name
    (hdir / 'bin').mkdir(parents=True, exist_ok=True)
    state_dir = hdir / 'state'
    xensim.init_host(state_dir, name, total_mb=total_mb, dom0_mb=dom0_mb, cpus=cpus)
    for cmd, target in COMMANDS.items():
        module, func = target.split(':')
        path = hdir / 'bin' / cmd
        path.write_text(WRAPPER.format(python=sys.executable, module=module, func=func,
                                       root=PACKAGE_ROOT))
        path.chmod(0o755)
    hostkey = hdir / 'ssh_host_ed25519_key'
    pub = _keygen(hostkey)
    (hdir / 'authorized_keys').write_text(
        Path(f'{client_key(lab)}.pub').read_text())
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
    with open(known_hosts(lab), 'a') as fh:
        keytype, keydata = pub.split()[:2]
        fh.write(f'{known_hosts_name(address, port)} {keytype} {keydata}\n')
    hosts[name] = {'address': address, 'port': port, 'dir': str(hdir),
                   'state_dir': str(state_dir), 'bin': str(hdir / 'bin'),
                   'host_key': str(hostkey)}
    lab.save()
    Path('/run/sshd').mkdir(exist_ok=True)
    check = subprocess.run([SSHD, '-t', '-f', str(hdir / 'sshd_config')],
                           capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f'sshd config of {name} is invalid: {check.stderr.strip()}')
    start(lab, name)
    return hosts[name]


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


def _qemu(lab: Lab, name: str):
    """The real-Xen machine module when this host is a QEMU dom0, else None."""
    if lab.info['hosts'][name].get('kind') == 'qemu':
        from xenha.lab import qemu
        return qemu
    return None


def power(lab: Lab, name: str, on: bool) -> None:
    """Power the host on or off (what a BMC's chassis control does)."""
    if _qemu(lab, name):
        return _qemu(lab, name).power(lab, name, on)
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
            from xenha.lab import initiators
            initiators.host_down(lab, name)


def powered(lab: Lab, name: str) -> bool:
    """What its BMC says: the host has power (its sshd may still be cut off)."""
    if _qemu(lab, name):
        return _qemu(lab, name).powered(lab, name)
    return xensim.read(lab.info['hosts'][name]['state_dir']).get('power') != 'off'


def partition(lab: Lab, name: str) -> None:
    """Cut the host off from the monitoring node: no SSH answer (refused), while
    it keeps power and its guests keep running."""
    if _qemu(lab, name):
        raise NotImplementedError('partition: simulated dom0s only')
    lab.stop(f'sshd-{name}')


def reachable(lab: Lab, name: str) -> bool:
    """Its sshd runs and is not hung."""
    return lab.alive(f'sshd-{name}')


def hang(lab: Lab, name: str) -> None:
    if _qemu(lab, name):
        return _qemu(lab, name).hang(lab, name)
    lab.signal(f'sshd-{name}', signal.SIGSTOP)


def resume(lab: Lab, name: str) -> None:
    """Undo a hang or a partition (a host without power stays off)."""
    if _qemu(lab, name):
        return _qemu(lab, name).resume(lab, name)
    lab.signal(f'sshd-{name}', signal.SIGCONT)
    if powered(lab, name) and not lab.alive(f'sshd-{name}'):
        start(lab, name)


def state_dir(lab: Lab, name: str) -> str:
    return lab.info['hosts'][name]['state_dir']


def env_for(lab: Lab, name: str) -> dict:
    """The environment a command on that host sees (for local-mode runs)."""
    host = lab.info['hosts'][name]
    env = dict(os.environ)
    env.update(XENSIM_HOST=name, XENSIM_STATE=host['state_dir'],
               XENHA_LAB_DIR=str(lab.dir),
               PATH=f"{host['bin']}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return env
