"""Log a dom0 in to a storage target and wait for the block device.

What a spare runs before `xl create`, with the real initiator tools:
iSCSI `iscsiadm` discovery + node login (a session already LOGGED IN is
kept), AoE `aoe-discover` until `aoe-stat` says the device is up; then
`blockdev --getsize64 DEVICE` until the device answers.  An existing session
that is not logged in (the target went away) is a reason to refuse, never to
start a guest on a disk that does not answer.

CHAP credentials are never sent from here: on a real dom0 they live in
/etc/iscsi/iscsid.conf (node.session.auth.*), which discovery copies into
each new node record; putting them on a command line would show them in
`ps` on the dom0.
"""

from __future__ import annotations

import time

from xenha.storage import aoe, iscsi

ISCSI_SESSION_EXISTS = 15      # iscsiadm: ISCSI_ERR_SESS_EXISTS
ISCSI_NO_OBJECTS = 21          # iscsiadm: no records / no active sessions


def _portal(target) -> str:
    return f'{target.host}:{target.port}'


def iscsi_session(runner, target, timeout: float) -> str | None:
    """'' when no session; None when LOGGED IN; else what state it is in."""
    r = runner.run(['iscsiadm', '-m', 'session', '-P', '1'], timeout)
    if r.exit == ISCSI_NO_OBJECTS:
        return ''
    if r.exit != 0:
        return f'iscsiadm -m session failed: {r.reason()}'
    try:
        sessions = iscsi.parse_session_tree(r.out)
    except ValueError as exc:
        return f'cannot read iscsiadm -m session: {exc}'
    for s in sessions:
        if s.target == target.iqn and str(s.portal) == _portal(target):
            return None if s.logged_in else \
                f'session to {target.iqn} is {s.connection} / {s.session}'
    return ''


def login(runner, target, timeout: float) -> str | None:
    """Run the initiator's login; None when logged in, else the reason."""
    if target.kind == 'aoe':
        for argv in aoe.discover_commands():
            r = runner.run(argv, timeout)
            if r.exit != 0:
                return f'{argv[0]} failed: {r.reason()}'
        if not aoe.wait_device(runner, target.shelf, target.slot, timeout, interval=0.1,
                               command_timeout=timeout):
            return f'{aoe.device_name(target.shelf, target.slot)} is not up in aoe-stat'
        return None
    state = iscsi_session(runner, target, timeout)
    if state is None:
        return None
    if state:
        return state
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
