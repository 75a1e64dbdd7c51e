"""Stand-ins for a dom0's storage initiators: `iscsiadm`, `aoe-discover`, `aoe-stat`.

The kernel initiators (iscsi_tcp, aoe) cannot load here, so each lab dom0
gets these instead (wrappers made by `xenha.lab.dom0`).  They print what the
real tools print and exit with their exit codes, and every answer comes from
the real lab daemons:

* `iscsiadm -m discovery` runs a real SendTargets discovery with the dom0's
  initiator name (tgt hides ACL'd targets from other initiators);
* `iscsiadm -m node --login` starts a *session holder*, a small process that
  keeps a real iSCSI session open (tgtd lists it as an I_T nexus), answers
  and sends NOP pings, and records LOGGED IN / FAILED as the kernel would;
  a revoked ACL fails the login for real;
* `aoe-discover` broadcasts a real AoE Query Config from the dom0's network
  namespace; `aoe-stat` re-queries each known device (the one deviation: the
  kernel keeps a device "up" until I/O fails; we ask the target right away).

State (node records, sessions, AoE devices) lives in the host's state dir;
attached block devices go through `xensim.attach_device`, so `xl create`
finds its `phy:` disk only after a login.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from xenha.lab import storage, xensim
from xenha.lab.core import Lab
from xenha.storage import aoe, iscsi

PING_INTERVAL = 1.0      # open-iscsi: noop_out_interval 5 s; faster for the lab
PING_TIMEOUT = 2.0      # open-iscsi: noop_out_timeout 5 s
LOGIN_TIMEOUT = 5.0

# open-iscsi exit codes (usr/iscsi_err.h) and their messages
ERR_TRANS, ERR_LOGIN, ERR_INVAL, ERR_TRANS_TIMEOUT = 4, 5, 7, 8
ERR_SESS_EXISTS, ERR_FATAL_LOGIN, ERR_NO_OBJS, ERR_AUTH = 15, 19, 21, 24
MESSAGES = {ERR_TRANS: 'encountered connection failure',
            ERR_LOGIN: 'encountered iSCSI login failure',
            ERR_TRANS_TIMEOUT: 'connection timed out',
            ERR_FATAL_LOGIN: 'encountered non-retryable iSCSI login failure',
            ERR_AUTH: 'iSCSI login failed due to authorization failure'}


class Host:
    """The dom0 this stand-in runs on, from the environment its sshd set."""

    def __init__(self):
        try:
            self.name = os.environ['XENSIM_HOST']
            self.state = Path(os.environ['XENSIM_STATE'])
            self.lab = Lab.load(os.environ['XENHA_LAB_DIR'])
        except KeyError as exc:
            raise SystemExit(f'{exc.args[0]} is not set: not on a lab dom0') from None
        self.dir = self.state / 'initiators'
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str | None:
        """The dom0's own loopback address: its sessions come from there."""
        return self.lab.info.get('hosts', {}).get(self.name, {}).get('address')

    @property
    def storage(self) -> dict:
        return self.lab.info.get('storage', {})

    @property
    def initiator(self) -> str:
        f = self.state / 'initiatorname.iscsi'     # like /etc/iscsi/initiatorname.iscsi
        if f.exists():
            for line in f.read_text().splitlines():
                if line.startswith('InitiatorName='):
                    return line.split('=', 1)[1].strip()
        return storage.initiator_name(self.name)

    def chap(self, target: str | None) -> iscsi.Chap | None:
        """CHAP settings of a node record (iscsid.conf on a real host)."""
        st = self.storage
        for t in st.get('targets', []):
            if t['name'] == target and t['chap']:
                return iscsi.Chap.from_file(st['chap']['user'], st['chap']['secret_file'])
        return None

    @contextmanager
    def records(self):
        """The host's iSCSI records, read-modify-written under a lock."""
        with open(self.dir / 'iscsi.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.dir / 'iscsi.json'
            data = json.loads(path.read_text()) if path.exists() else \
                {'nodes': [], 'sessions': {}, 'next_sid': 1}
            yield data
            tmp = path.with_suffix('.tmp')
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)

    @contextmanager
    def aoe_records(self):
        """The AoE devices the "driver" knows, read-modify-written under a lock."""
        with open(self.dir / 'aoe.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.dir / 'aoe.json'
            data = json.loads(path.read_text()) if path.exists() else {}
            yield data
            tmp = path.with_suffix('.tmp')
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)

    def status_file(self, sid) -> Path:
        return self.dir / f'session-{sid}.json'

    def holder(self, sid) -> str:
        return f'iscsi-{self.name}-{sid}'

    def control(self, sid) -> Path:
        """The session holder's socket: block-layer requests on its session
        (under the lab's claim: a socket path must stay short)."""
        return control_path(self.lab, self.name, sid)


def _err(msg: str, code: int) -> int:
    print(f'iscsiadm: {msg}', file=sys.stderr)
    return code


def _error_code(exc: iscsi.IscsiError) -> int:
    if isinstance(exc, iscsi.PortalTimeout):
        return ERR_TRANS_TIMEOUT
    if isinstance(exc, iscsi.PortalUnreachable):
        return ERR_TRANS
    if isinstance(exc, iscsi.LoginRefused) and exc.auth:
        return ERR_AUTH
    if isinstance(exc, (iscsi.TargetMissing, iscsi.LoginRefused)):
        return ERR_FATAL_LOGIN
    return ERR_LOGIN


def _portal_text(p: iscsi.Portal) -> str:
    return f'{p.host},{p.port}'


# -- iscsiadm ------------------------------------------------------------------------
def iscsiadm_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog='iscsiadm', add_help=False, exit_on_error=False)
    ap.add_argument('-m', '--mode')
    ap.add_argument('-t', '--type')
    ap.add_argument('-p', '--portal')
    ap.add_argument('-T', '--targetname')
    ap.add_argument('-I', '--interface', default='default')
    ap.add_argument('-o', '--op')
    ap.add_argument('-P', '--print', type=int, default=0)
    ap.add_argument('-l', '--login', action='store_true')
    ap.add_argument('-u', '--logout', action='store_true')
    try:
        args = ap.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        return _err(f'{exc}', ERR_INVAL)
    host = Host()
    if args.mode in ('discovery', 'discoverydb'):
        if args.type not in ('sendtargets', 'st') or not args.portal:
            return _err('discovery needs -t sendtargets -p PORTAL', ERR_INVAL)
        return _discovery(host, iscsi.Portal.parse(args.portal), args.op)
    if args.mode == 'node':
        if not (args.login or args.logout):
            return _err('only --login / --logout are simulated', ERR_INVAL)
        portal = iscsi.Portal.parse(args.portal) if args.portal else None
        if args.login:
            return _login(host, args.targetname, portal, args.interface)
        return _logout(host, args.targetname, portal)
    if args.mode == 'session':
        return _sessions(host, args.print)
    return _err(f'mode {args.mode!r} is not simulated', ERR_INVAL)


def _discovery(host: Host, portal: iscsi.Portal, op: str | None) -> int:
    try:
        found = iscsi.discover(portal, host.initiator, timeout=LOGIN_TIMEOUT)
    except iscsi.IscsiError as exc:
        if 'connection refused' in str(exc):
            print(f'iscsiadm: cannot make connection to {portal.host}: '
                  f'Connection refused', file=sys.stderr)
        code = _error_code(exc)
        return _err(f'Could not perform SendTargets discovery: {MESSAGES[code]}', code)
    if not found:
        return _err('No portals found', ERR_NO_OBJS)
    lines = []
    with host.records() as rec:
        for target, addresses in found.items():
            for address in addresses or [f'{portal},1']:
                lines.append(f'{address} {target}')
                node = {'target': target, 'portal': str(iscsi.Portal.parse(address))}
                if op != 'nonpersistent' and node not in rec['nodes']:
                    rec['nodes'].append(node)
    print('\n'.join(lines))
    return 0


def _login(host: Host, target: str | None, portal, iface: str) -> int:
    with host.records() as rec:
        nodes = [n for n in rec['nodes']
                 if (target is None or n['target'] == target)
                 and (portal is None or n['portal'] == str(portal))]
        if not nodes:
            return _err('No records found', ERR_NO_OBJS)
        todo = []
        for node in nodes:
            if any(s['target'] == node['target'] and s['portal'] == node['portal']
                   for s in rec['sessions'].values()):
                print(f'iscsiadm: {iface}: 1 session requested, but 1 already '
                      f'present.', file=sys.stderr)
                continue
            sid = rec['next_sid']
            rec['next_sid'] += 1
            rec['sessions'][str(sid)] = dict(node, iface=iface,
                                             initiator=host.initiator)
            todo.append((sid, node))
    if not todo:
        return _err('Could not log into all portals', ERR_SESS_EXISTS)
    failed = 0
    for sid, node in todo:
        where = (f'[iface: {iface}, target: {node["target"]}, portal: '
                 f'{_portal_text(iscsi.Portal.parse(node["portal"]))}]')
        print(f'Logging in to {where}', flush=True)
        status = _start_holder(host, sid)
        if status.get('result') == 'ok':
            for path in status['devices']:
                xensim.attach_device(host.state, path)
            print(f'Login to {where} successful.')
            continue
        with host.records() as rec:
            rec['sessions'].pop(str(sid), None)
        host.lab.stop(host.holder(sid), timeout=0.5)     # forget the dead holder
        host.status_file(sid).unlink(missing_ok=True)
        code = status.get('code', ERR_LOGIN)
        failed = failed or code
        print(f'iscsiadm: Could not login to {where}.', file=sys.stderr)
        print(f'iscsiadm: initiator reported error ({code} - {MESSAGES[code]})',
              file=sys.stderr)
    if failed:
        return _err('Could not log into all portals', failed)
    return 0


def _start_holder(host: Host, sid: int) -> dict:
    status = host.status_file(sid)
    status.unlink(missing_ok=True)
    host.lab.spawn(host.holder(sid), [sys.executable, '-m', 'xenha.lab.initiators',
                                      'hold', str(host.state), host.name, str(sid)],
                   env=dict(os.environ))
    deadline = time.monotonic() + LOGIN_TIMEOUT + 2
    while time.monotonic() < deadline:
        if status.exists():
            data = json.loads(status.read_text())
            if data.get('result'):
                return data
        time.sleep(0.005)
    host.lab.stop(host.holder(sid), timeout=0.5)
    return {'result': 'error', 'code': ERR_TRANS_TIMEOUT}


def _logout(host: Host, target: str | None, portal) -> int:
    with host.records() as rec:
        mine = {sid: s for sid, s in rec['sessions'].items()
                if (target is None or s['target'] == target)
                and (portal is None or s['portal'] == str(portal))}
        for sid in mine:
            rec['sessions'].pop(sid)
    if not mine:
        return _err('No matching sessions found', ERR_NO_OBJS)
    for sid, s in mine.items():
        where = (f'[sid: {sid}, target: {s["target"]}, portal: '
                 f'{_portal_text(iscsi.Portal.parse(s["portal"]))}]')
        print(f'Logging out of session {where}')
        try:
            status = json.loads(host.status_file(sid).read_text())
        except (OSError, ValueError):
            status = {}
        host.lab.stop(host.holder(sid), timeout=2.0)   # SIGTERM: it logs out
        for path in status.get('devices', []):
            xensim.detach_device(host.state, path)
        host.status_file(sid).unlink(missing_ok=True)
        print(f'Logout of {where} successful.')
    return 0


def _sessions(host: Host, level: int) -> int:
    with host.records() as rec:
        sessions = sorted(rec['sessions'].items(), key=lambda kv: int(kv[0]))
    if not sessions:
        return _err('No active sessions.', ERR_NO_OBJS)
    out, previous = [], None
    for sid, s in sessions:
        portal = iscsi.Portal.parse(s['portal'])
        try:
            status = json.loads(host.status_file(sid).read_text())
        except (OSError, ValueError):
            status = {}
        if not host.lab.alive(host.holder(sid)):
            status = dict(status, connection='FREE', session='FAILED',
                          internal='NO CHANGE')
        if level == 0:
            out.append(f'tcp: [{sid}] {portal},1 {s["target"]} (non-flash)')
            continue
        if previous is None or previous['target'] != s['target']:
            out.append(f'Target: {s["target"]} (non-flash)')
        if previous is None or previous['target'] != s['target'] \
                or previous['portal'] != s['portal']:
            out += [f'\tCurrent Portal: {portal},1', f'\tPersistent Portal: {portal},1']
        else:
            out.append('')
        out += ['\t\t**********', '\t\tInterface:', '\t\t**********',
                f'\t\tIface Name: {s["iface"]}', '\t\tIface Transport: tcp',
                f'\t\tIface Initiatorname: {s["initiator"]}',
                f'\t\tIface IPaddress: {status.get("local", "<empty>")}',
                '\t\tIface HWaddress: <empty>', '\t\tIface Netdev: <empty>',
                f'\t\tSID: {sid}',
                f'\t\tiSCSI Connection State: {status.get("connection", "Unknown")}',
                f'\t\tiSCSI Session State: {status.get("session", "Unknown")}',
                f'\t\tInternal iscsid Session State: {status.get("internal", "Unknown")}']
        previous = s
    print('\n'.join(out))
    return 0


# -- the session holder ---------------------------------------------------------------
class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def hold(state_dir: str, host_name: str, sid: str) -> int:
    """Keep one real session open until SIGTERM; record its state."""
    signal.signal(signal.SIGTERM, _raise_stop)
    host = Host()
    with host.records() as rec:
        s = rec['sessions'][sid]
    portal = iscsi.Portal.parse(s['portal'])
    status_path = host.status_file(sid)

    def write(**data):
        tmp = status_path.with_suffix('.tmp')
        tmp.write_text(json.dumps(data))
        tmp.replace(status_path)

    def connect() -> tuple[iscsi.Session, list[str]]:
        session = iscsi.Session(portal, s['initiator'], s['target'],
                                host.chap(s['target']), timeout=LOGIN_TIMEOUT,
                                source=host.address)
        try:
            session.login()
            devices = []
            for lun in iscsi.report_luns(session):
                if iscsi.inquiry(session, lun).device_type == 0:    # disks only
                    devices.append(iscsi.device_path(portal, s['target'], lun))
        except BaseException:
            session.close()
            raise
        session.timeout = PING_TIMEOUT
        session.sock.settimeout(PING_TIMEOUT)
        return session, devices

    try:
        session, devices = connect()
    except iscsi.IscsiError as exc:
        write(result='error', code=_error_code(exc))
        return 1
    local = session.sock.getsockname()[0]
    live = dict(result='ok', devices=devices, local=local)
    # the kernel's block layer, for this session: what sg_persist and dd send
    # through the dom0's device (one request a connection, a JSON line each way)
    import select
    import socket
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.control(sid).unlink(missing_ok=True)     # a holder killed with its host
    control.bind(str(host.control(sid)))
    control.listen(4)
    write(connection='LOGGED IN', session='LOGGED_IN', internal='NO CHANGE', **live)
    next_ping = time.monotonic() + PING_INTERVAL
    try:
        while True:
            ready, _, _ = select.select([control], [], [],
                                        max(next_ping - time.monotonic(), 0))
            if ready:
                conn, _ = control.accept()
                with conn:
                    conn.settimeout(PING_TIMEOUT)
                    conn.sendall(json.dumps(_serve(session, conn)).encode() + b'\n')
                continue
            next_ping = time.monotonic() + PING_INTERVAL
            try:
                if session is None:
                    session, _ = connect()
                    write(connection='LOGGED IN', session='LOGGED_IN',
                          internal='NO CHANGE', **live)
                else:
                    session.ping()
            except iscsi.IscsiError:
                if session is not None:
                    session.close()
                    session = None
                write(connection='TRANSPORT WAIT', session='FAILED',
                      internal='REOPEN', **live)
    except _Stop:
        if session is not None:
            session.logout()
            session.close()
    finally:
        control.close()
        host.control(sid).unlink(missing_ok=True)
    return 0


def _serve(session, conn) -> dict:
    """One block-layer request on this session: register a key, read the
    keys, write a block.  The answer says what the target said."""
    try:
        req = json.loads(conn.makefile().readline())
        if session is None:
            return {'ok': False, 'error': 'no session (the connection is down)'}
        lun = int(req['lun'])
        if req['op'] == 'register':
            iscsi.pr_register(session, lun, int(req['key']), ignore_existing=True)
            return {'ok': True}
        if req['op'] == 'read_keys':
            generation, keys = iscsi.pr_read_keys(session, lun)
            return {'ok': True, 'generation': generation, 'keys': keys}
        if req['op'] == 'read_reservation':
            r = iscsi.pr_read_reservation(session, lun)
            return {'ok': True, 'generation': r.generation, 'key': r.key, 'type': r.type,
                    'held': r.held}
        if req['op'] == 'write':
            _, block = iscsi.read_capacity(session, lun)
            iscsi.write10(session, lun, int(req.get('lba', 0)),
                          bytes([0x5a]) * block * int(req.get('blocks', 1)), block)
            return {'ok': True, 'bytes': block * int(req.get('blocks', 1))}
        return {'ok': False, 'error': f'unknown request {req.get("op")!r}'}
    except iscsi.ReservationConflict as exc:
        return {'ok': False, 'error': 'RESERVATION CONFLICT', 'detail': str(exc)}
    except (iscsi.IscsiError, OSError, ValueError, KeyError) as exc:
        return {'ok': False, 'error': f'{type(exc).__name__}: {exc}'}


def control_path(lab: Lab, host: str, sid) -> Path:
    from xenha.lab.core import CLAIMS
    return CLAIMS / str(lab.block) / f'{host}-{sid}.sock'


def request(host: 'Host | None', device: str, op: str, lab: Lab | None = None,
            host_name: str | None = None, **fields) -> dict:
    """Send `op` to the session holder behind `device` on a lab dom0 (from a
    stand-in on that dom0, or from the lab itself with lab + host_name)."""
    import socket
    if host is None:
        state = Path(lab.info['hosts'][host_name]['state_dir'])
        d = state / 'initiators'
    else:
        d, lab, host_name = host.dir, host.lab, host.name
    path = d / 'iscsi.json'
    rec = json.loads(path.read_text()) if path.exists() else {'sessions': {}}
    for sid in rec['sessions']:
        try:
            status = json.loads((d / f'session-{sid}.json').read_text())
        except (OSError, ValueError):
            continue
        if device in status.get('devices', []):
            lun = int(device.rsplit('-lun-', 1)[1])
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(LOGIN_TIMEOUT)
                c.connect(str(control_path(lab, host_name, sid)))
                c.sendall(json.dumps(dict(fields, op=op, lun=lun)).encode() + b'\n')
                return json.loads(c.makefile().readline())
    return {'ok': False, 'error': f'{device}: No such device'}


def sg_persist_main(argv: list[str]) -> int:
    """`sg_persist` (sg3-utils) on a lab dom0: --out --register-ignore and
    --in --read-keys, sent through the session behind the device."""
    host = Host()
    device = next((a for a in argv if a.startswith('/')), None)
    if device is None:
        print('sg_persist: no device given', file=sys.stderr)
        return 1
    if '--register-ignore' in argv:
        key = next(a.split('=', 1)[1] for a in argv if a.startswith('--param-sark='))
        out = request(host, device, 'register', key=int(key, 16))
        if not out['ok']:
            print(f'PR out (Register and ignore existing key): {out["error"]}',
                  file=sys.stderr)
            return 24 if out['error'] == 'RESERVATION CONFLICT' else 1
        return 0
    if '--read-keys' in argv:
        out = request(host, device, 'read_keys')
        if not out['ok']:
            print(f'PR in (Read keys): {out["error"]}', file=sys.stderr)
            return 1
        print(f'  PR generation=0x{out["generation"]:x}, ', end='')
        if not out['keys']:
            print('there are NO registered reservation keys')
        else:
            print(f'{len(out["keys"])} registered reservation keys follow:')
            for k in out['keys']:
                print(f'    0x{k:x}')
        return 0
    if '--read-reservation' in argv:
        out = request(host, device, 'read_reservation')
        if not out['ok']:
            print(f'PR in (Read reservation): {out["error"]}', file=sys.stderr)
            return 1
        if not out['held']:
            print(f'  PR generation=0x{out["generation"]:x}, there is NO reservation held')
        else:
            kind = {5: 'Write Exclusive, registrants only',
                    6: 'Exclusive Access, registrants only',
                    1: 'Write Exclusive', 3: 'Exclusive Access'}.get(out['type'],
                                                                     str(out['type']))
            print(f'  PR generation=0x{out["generation"]:x}, Reservation follows:\n'
                  f'    Key=0x{out["key"]:x}\n    scope: LU_SCOPE,  type: {kind}')
        return 0
    print('sg_persist: only --out --register-ignore, --in --read-keys and '
          '--read-reservation here (lab stand-in)', file=sys.stderr)
    return 1


def dd_main(argv: list[str]) -> int:
    """`dd if=/dev/zero of=DEVICE bs=4k count=1 oflag=direct` on a lab dom0: one
    block written through the session behind the device (a guest's write)."""
    args = dict(a.split('=', 1) for a in argv if '=' in a)
    device = args.get('of', '')
    out = request(Host(), device, 'write', lba=int(args.get('seek', 0)))
    if not out['ok']:
        why = 'Input/output error' if out['error'] == 'RESERVATION CONFLICT' else out['error']
        print(f"dd: error writing '{device}': {why}", file=sys.stderr)
        return 1
    print(f'1+0 records in\n1+0 records out\n{out["bytes"]} bytes copied', file=sys.stderr)
    return 0


def host_down(lab: Lab, host: str) -> None:
    """The dom0 lost power: its sessions drop without a logout (the holders
    are killed, tgtd sees the connections reset), its devices are gone, and
    after power-on it knows no sessions or AoE devices (node.startup=manual).
    """
    state = Path(lab.info['hosts'][host]['state_dir'])
    d = state / 'initiators'
    for name in list(lab.procs):
        if name.startswith(f'iscsi-{host}-'):
            lab.signal(name, signal.SIGKILL)
            lab.stop(name, timeout=0.5)
    for f in ('iscsi.json', 'aoe.json'):
        (d / f).unlink(missing_ok=True)
    for f in d.glob('session-*.json'):
        f.unlink()
    for dev in xensim.devices(state):
        xensim.detach_device(state, dev)


# -- AoE -------------------------------------------------------------------------------


netns = aoe.netns      # the product's (a monitoring node may keep its SAN in one)


def _aoe_link(host: Host):
    """(namespace, interface) of this dom0 on the SAN, or None."""
    a = host.storage.get('aoe', {})
    link = a.get('links', {}).get(host.name)
    return (link['netns'], a['interface']) if link else None


def aoe_discover_main(argv: list[str]) -> int:
    host = Host()
    link = _aoe_link(host)
    if link is None:
        print('aoe-discover: /dev/etherd/discover does not exist or is not '
              'writeable.', file=sys.stderr)
        return 1
    ns, iface = link
    with netns(ns):
        sock = aoe.open_socket(iface)
    with sock:
        found = aoe.probe(iface, timeout=0.5, settle=0.2, identify=True, sock=sock)
    with host.aoe_records() as known:
        for r in found:
            sectors = r.identity.sectors if r.identity else None
            known[r.name] = {'shelf': r.shelf, 'slot': r.slot, 'netif': iface,
                             'mac': r.mac, 'sectors': sectors,
                             'payload': (r.config.sectors or 2) * 512}
            xensim.attach_device(host.state, aoe.device_path(r.shelf, r.slot))
    return 0          # the real one is silent: the driver discovers in the background


def aoe_stat_main(argv: list[str]) -> int:
    host = Host()
    with host.aoe_records() as known:
        pass
    link = _aoe_link(host)
    devices = []
    sock = None
    if link and known:
        with netns(link[0]):
            sock = aoe.open_socket(link[1])
    try:
        for name, d in known.items():
            answers = aoe.probe(d['netif'], d['shelf'], d['slot'], timeout=1.0,
                                settle=None, sock=sock) if sock else []
            size = aoe.gb_text(d['sectors'] * 512) if d['sectors'] is not None \
                else '(NA)'
            devices.append(aoe.AoeDevice(name, size, d['netif'],
                                         'up' if answers else 'down',
                                         str(d['payload'])))
    finally:
        if sock:
            sock.close()
    pattern = argv[0] if argv else ''
    sys.stdout.write(''.join(line + '\n' for line in
                             aoe.format_aoe_stat(devices).splitlines()
                             if pattern in line))
    return 0


if __name__ == '__main__':
    if sys.argv[1:2] == ['hold']:
        sys.exit(hold(*sys.argv[2:5]))
    sys.exit(f'usage: {sys.argv[0]} hold STATE_DIR HOST SID')
