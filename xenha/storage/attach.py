"""Log a dom0 in to a storage target and wait for the block device.

What a spare runs before `xl create`, with the real initiator tools:
iSCSI `iscsiadm` discovery + node login (a session that already exists is
fine), AoE `aoe-discover`; then `blockdev --getsize64 DEVICE` until the
device answers.  CHAP credentials are never sent from here: on a real dom0
they live in /etc/iscsi/iscsid.conf (node.session.auth.*), which discovery
copies into each new node record; putting them on a command line would show
them in `ps` on the dom0.
"""

from __future__ import annotations

import time

ISCSI_SESSION_EXISTS = 15      # iscsiadm: ISCSI_ERR_SESS_EXISTS
ISCSI_NO_OBJECTS = 21          # iscsiadm: no records / no active sessions


def _portal(target) -> str:
    return f'{target.host}:{target.port}'


def iscsi_logged_in(runner, target, timeout: float) -> bool:
    r = runner.run(['iscsiadm', '-m', 'session'], timeout)
    if r.exit not in (0, ISCSI_NO_OBJECTS):
        return False
    return any(target.iqn in line.split() and _portal(target) in line
               for line in r.out.splitlines())


def login(runner, target, timeout: float) -> str | None:
    """Run the initiator's login; None when logged in, else the reason."""
    if target.kind == 'aoe':
        r = runner.run(['aoe-discover'], timeout)
        return None if r.exit == 0 else f'aoe-discover failed: {r.reason()}'
    if iscsi_logged_in(runner, target, timeout):
        return None
    portal = _portal(target)
    r = runner.run(['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', portal],
                   timeout)
    if r.exit != 0:
        return f'discovery on {portal} failed: {r.reason()}'
    if target.iqn not in r.out.split():
        return f'{portal} does not offer {target.iqn}'
    r = runner.run(['iscsiadm', '-m', 'node', '-T', target.iqn, '-p', portal, '--login'],
                   timeout)
    if r.exit not in (0, ISCSI_SESSION_EXISTS):
        return f'login to {target.iqn} failed: {r.reason()}'
    return None


def wait_device(runner, device: str, timeout: float, interval: float = 0.1) -> str | None:
    """Poll until the device answers `blockdev --getsize64`; None or the reason."""
    deadline = time.monotonic() + timeout
    while True:
        r = runner.run(['blockdev', '--getsize64', device], timeout)
        if r.exit == 0 and r.out.strip().isdigit() and int(r.out.strip()) > 0:
            return None
        if time.monotonic() > deadline:
            return f'{device} did not appear within {timeout:g}s ({r.reason()})'
        time.sleep(interval)


def attach(runner, target, timeout: float) -> str | None:
    """Login + wait for the device; None when the disk is ready."""
    return login(runner, target, timeout) or wait_device(runner, target.device, timeout)
