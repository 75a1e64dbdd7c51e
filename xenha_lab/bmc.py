"""Lab BMCs: one real `ipmi_sim` per lab dom0, whose power button is that host.

Fencing is tested with the real `fence_ipmilan` against these, so a power-off
must really take the lab host down.  ipmi_sim asks a chassis-control program
for every power get/set; ours is this module's command line (run through a
small wrapper, <lab>/bmc/<host>/chassis, that fills in LABDIR and HOST)::

    python -m xenha_lab.bmc chassis LABDIR HOST 0x20 get power    # power:0|1
    python -m xenha_lab.bmc chassis LABDIR HOST 0x20 set power 0|1

which calls `dom0.powered` / `dom0.power` (off = the host's sshd stops and its
guests are gone; on = the sshd starts again).

Addresses: the dom0 at 127.A.B.n has its BMC at 127.A.B.(n+100), UDP 623
(dom0 i sits at lab.addr(11+i), so its BMC at lab.addr(111+i)); two labs never
share a 127.A.B block, so their BMCs never collide.

Files, in <lab>/bmc/<host>/: lan.conf and password (both mode 600: they hold
the password), sim.emu, state/ (ipmi_sim's persistent state), fault.

Faults: `stop` (the BMC is gone: no answer), `hang` (SIGSTOP), and
`set_fault(lab, host, F)` where F is
  'ignore-off'  power-off is accepted but does nothing (the agent waits, fails);
  'fake-off'    power-off does nothing and the next status lies "off" once,
                then tells the truth (catches an agent that trusts one status).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from xenha_lab import dom0
from xenha_lab.core import Lab

if TYPE_CHECKING:
    from xenha.fencing import Attempt

PORT = 623
USER = 'admin'
FAULTS = ('ignore-off', 'fake-off')
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])   # the chassis wrapper's path

LAN_CONF = '''\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis}"
user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
'''
SIM_EMU = '''\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
'''
CHASSIS = '''#!{python} -IS
import sys
sys.path.insert(0, {root!r})
from xenha_lab.bmc import main
sys.exit(main(['chassis', {labdir!r}, {host!r}, *sys.argv[1:]]))
'''


def _dir(lab: Lab, host: str) -> Path:
    return lab.dir / 'bmc' / host


def address_for(host_address: str) -> str:
    """127.A.B.n → 127.A.B.(n+100): the BMC sits 100 above its host."""
    a, b, c, n = host_address.split('.')
    if int(n) + 100 > 254:
        raise ValueError(f'no BMC address for host {host_address} (n > 154)')
    return f'{a}.{b}.{c}.{int(n) + 100}'


def _write_private(path: Path, text: str) -> None:
    """Create `path` with mode 600 from the start (no world-readable window)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as fh:
        fh.write(text)


def up(lab: Lab, host: str) -> dict:
    """Create and start the BMC of lab host `host`; returns lab.info['bmc'][host]."""
    if host not in lab.info.get('hosts', {}):
        raise KeyError(f'no lab host {host!r}: add it (dom0.add_host) before its BMC')
    d = _dir(lab, host)
    (d / 'state').mkdir(parents=True, exist_ok=True)
    address = address_for(lab.info['hosts'][host]['address'])
    password = secrets.token_hex(8)          # IPMI 1.5 passwords stop at 16 bytes
    _write_private(d / 'password', password + '\n')
    # ipmi_sim runs "PROG 0x20 get power" for every status: a wrapper with
    # -IS (no site, no environment) halves the Python start-up of each request
    prog = d / 'chassis'
    prog.write_text(CHASSIS.format(python=sys.executable, root=PACKAGE_ROOT,
                                   labdir=str(lab.dir), host=host))
    prog.chmod(0o755)
    chassis = f'{prog} 0x20'
    _write_private(d / 'lan.conf', LAN_CONF.format(
        name=f'bmc-{host}', address=address, port=PORT, guid=secrets.token_hex(16),
        chassis=chassis, user=USER, password=password))
    (d / 'sim.emu').write_text(SIM_EMU)
    (d / 'fault').unlink(missing_ok=True)
    info = {'address': address, 'port': PORT, 'username': USER,
            'password_file': str(d / 'password'), 'agent': 'fence_ipmilan',
            'params': fence_params(address)}
    lab.info.setdefault('bmc', {})[host] = info
    lab.save()
    start(lab, host)
    return info


def fence_params(address: str) -> list[list[str]]:
    """The fence_ipmilan key=value pairs (without the password) for a lab BMC."""
    # lanplus + cipher suite 3: without -C 3 every ipmitool call takes 10 s
    return [['ip', address], ['ipport', str(PORT)], ['username', USER],
            ['lanplus', '1'], ['cipher', '3']]


def start(lab: Lab, host: str, timeout: float = 5.0) -> None:
    """Start (or restart after `stop`) the BMC's ipmi_sim and wait until it listens."""
    d = _dir(lab, host)
    info = lab.info['bmc'][host]
    lab.spawn(f'bmc-{host}', ['ipmi_sim', '-c', str(d / 'lan.conf'), '-f',
                              str(d / 'sim.emu'), '-s', str(d / 'state'), '-n'],
              cwd=str(d))
    deadline = time.monotonic() + timeout
    while not _listening(info['address'], info['port']):
        if not lab.alive(f'bmc-{host}') or time.monotonic() > deadline:
            log = Path(lab.procs[f'bmc-{host}'].log).read_text()[-500:]
            lab.stop(f'bmc-{host}')
            raise RuntimeError(f'BMC of {host} did not start listening on '
                               f'{info["address"]}:{info["port"]}/udp: {log}')
        time.sleep(0.02)


def _listening(address: str, port: int) -> bool:
    """Is a UDP socket bound to address:port?  (/proc/net/udp, little-endian hex)"""
    want = f'{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}'
    with open('/proc/net/udp') as fh:
        return any(line.split()[1] == want for line in list(fh)[1:])


def stop(lab: Lab, host: str) -> None:
    """Fault: the BMC is gone (no answer at all); `start` brings it back."""
    lab.stop(f'bmc-{host}')


def hang(lab: Lab, host: str) -> None:
    """Fault: the BMC freezes (SIGSTOP); packets are queued but never answered."""
    lab.signal(f'bmc-{host}', signal.SIGSTOP)


def resume(lab: Lab, host: str) -> None:
    lab.signal(f'bmc-{host}', signal.SIGCONT)


def set_fault(lab: Lab, host: str, fault: str | None) -> None:
    """Make power-off not take effect ('ignore-off', 'fake-off'), or heal (None)."""
    if fault not in (None, *FAULTS):
        raise ValueError(f'unknown BMC fault {fault!r}; choose from {FAULTS}')
    d = _dir(lab, host)
    (d / 'lie').unlink(missing_ok=True)
    if fault is None:
        (d / 'fault').unlink(missing_ok=True)
    else:
        (d / 'fault').write_text(fault)


def down(lab: Lab, host: str) -> None:
    """Stop the BMC and forget it (its files go with the lab directory)."""
    lab.stop(f'bmc-{host}')
    lab.info.get('bmc', {}).pop(host, None)
    lab.save()


# -- a fence method's power, as the lab's heal and the tests use it ---------------
def power_status(method, timeout: float | None = None) -> str:
    """'on' | 'off' | 'unknown': the fence agent's status action."""
    from xenha import fencing
    return fencing.power_state(method, timeout)[0]


def power_on(method, timeout: float | None = None) -> Attempt:
    """Power the dom0 on again through its fence agent (the lab's heal; what
    an operator does after a repair)."""
    from xenha import fencing
    started = time.monotonic()
    if method.method != 'agent':
        return fencing.Attempt(fencing.label(method), False,
                               f'{fencing.label(method)} cannot power on', 0.0)
    agent = os.path.basename(method.agent)
    try:
        result, password = fencing.call_agent(method, 'on', timeout or method.timeout)
        ok = result.exit == 0
        message = f'{agent} on: powered on' if ok else \
            fencing.explain(agent, 'on', result, password)
    except fencing.FenceError as exc:
        ok, message = False, str(exc)
    return fencing.Attempt(fencing.label(method), ok, message, time.monotonic() - started)


# -- the chassis-control program (run by ipmi_sim, one process per request) ------
def chassis(labdir: str, host: str, argv: list[str]) -> int:
    """`0x20 get power` → print power:0|1; `0x20 set power 0|1`.  Else exit 1."""
    lab = Lab.load(labdir)   # read-only use of lab.json: never lab.save() here
    d = _dir(lab, host)
    fault = (d / 'fault').read_text().strip() if (d / 'fault').exists() else None
    if argv[1:3] == ['get', 'power']:
        on = dom0.powered(lab, host)
        if fault == 'fake-off' and (d / 'lie').exists():
            (d / 'lie').unlink(missing_ok=True)
            on = False
        print(f'power:{int(on)}')
        return 0
    if argv[1:3] == ['set', 'power'] and argv[3:4] in (['0'], ['1']):
        on = argv[3] == '1'
        if not on and fault == 'fake-off':
            (d / 'lie').touch()
            return 0
        if not on and fault == 'ignore-off':
            return 0
        dom0.power(lab, host, on)
        return 0
    print(f'unsupported chassis request: {" ".join(argv)}', file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == 'chassis':
        return chassis(argv[1], argv[2], argv[3:])
    print('usage: python -m xenha_lab.bmc chassis LABDIR HOST 0x20 get power|'
          'set power 0|1', file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
