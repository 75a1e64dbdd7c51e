"""The lab's SSH identity: the monitoring node's key pair, each dom0's host key
in one known_hosts file, the address and port of the next dom0, and the
`SSHOptions` the checks and the engine reach a lab dom0 with.  Both kinds of
dom0 (xenha_lab.simhost, xenha_lab.qemu) take their places from here."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from xenha.runner import SSHOptions
from xenha_lab.core import Lab


def keygen(path: Path) -> str:
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
    keygen(key)
    return key


def known_hosts(lab: Lab) -> Path:
    return lab.dir / 'ssh' / 'known_hosts'


def ssh_options(lab: Lab, **overrides) -> SSHOptions:
    opts = dict(user='root', port=lab.info['ssh_port'], identity=str(client_key(lab)),
                known_hosts=str(known_hosts(lab)))
    opts.update(overrides)
    return SSHOptions(**opts)


def port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f'[{address}]:{port}'


def place_host(lab: Lab, name: str) -> tuple[str, int, Path, Path]:
    """The next dom0's place: (address, SSH port, its directory, its host key),
    the key made and recorded in the lab's known_hosts."""
    address = lab.addr(11 + len(lab.info.setdefault('hosts', {})))
    if 'ssh_port' not in lab.info:
        # port 22 on our own address is the realistic choice; a machine whose
        # sshd listens on 0.0.0.0:22 forces another port for the whole lab
        lab.info['ssh_port'] = 22 if port_free(address, 22) else 2222
    port = lab.info['ssh_port']
    hdir = lab.dir / 'hosts' / name
    hdir.mkdir(parents=True, exist_ok=True)
    hostkey = hdir / 'ssh_host_ed25519_key'
    pub = keygen(hostkey)
    client_key(lab)                          # the lab's ssh/ dir and key pair
    with open(known_hosts(lab), 'a') as fh:
        keytype, keydata = pub.split()[:2]
        fh.write(f'{known_hosts_name(address, port)} {keytype} {keydata}\n')
    return address, port, hdir, hostkey
