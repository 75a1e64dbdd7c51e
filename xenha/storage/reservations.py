"""Storage fencing: the target itself refuses a fenced dom0's writes.

Two kinds, one small API for the failover engine and check_fence:

``revoke(target, victim, as_initiator=...)``
    take the victim dom0's write access away on one target and confirm it by
    reading the target's state back: an `Outcome` (``confirmed``, ``message``).
``register(target, who, as_initiator=...)``
    give `who` write access (iSCSI: the session we open registers its key;
    AoE: its SAN MAC joins the reserve list).
``readiness(target, dom0s, as_initiator=...)``
    the facts check_fence judges: registered keys and who they belong to, the
    reservation's type and holder, the AoE reserve and mask lists.
``revoke_all(targets, victim, ...)``
    `revoke` on every target at once (threads); what the fence method runs.

iSCSI (SCSI-3 persistent reservations, SPC-4 5.9).  Every dom0 registers a
key of its own on each LUN it uses, and the LUN carries a Write Exclusive –
Registrants Only reservation, so only registered I_T nexuses may write.
Revoking dom0 X from the monitoring node (or a spare): log in with our own
initiator name, register our key (REGISTER AND IGNORE EXISTING KEY), make sure
the reservation exists (RESERVE, when nobody holds one), PREEMPT AND ABORT
X's key, then READ KEYS (X's key gone) and READ RESERVATION (a type that
keeps non-registrants from writing, not held by X).  Seen with the real tgtd
1.0.85 (Debian 12), and handled here:

* it refuses PREEMPT AND ABORT (ILLEGAL REQUEST, invalid field in CDB: the
  service action is not wired up in tgt's spc.c); PREEMPT does the same
  removal without aborting X's queued commands, so it is used then, and the
  outcome says so;
* a PREEMPT of a key nobody holds is a RESERVATION CONFLICT, so the keys are
  read first: X not registered is already revoked (given the reservation);
* a registration belongs to one session: it stays listed after that session
  logs out, and a new session of the same initiator is not registered.  So
  each revoke would leave one more copy of the monitoring node's key; a
  PREEMPT of that key removes the stale copies first (and takes over the
  reservation when a stale copy held it).  A spare acting with its own key
  never does that: the other copies are its live sessions.  We stay
  registered: when X held the reservation, we hold it now, and a holder that
  unregisters releases a Registrants Only reservation, which would let X
  write again;
* X's session gets UNIT ATTENTION 2A/03 (reservations preempted) once, then
  RESERVATION CONFLICT on every write.

Keys.  ``key_for(name)`` is stable and needs no state: 0x7868 ("xh", so
sg_persist listings show whose keys are xenha's) followed by the first six
bytes of SHA-256 of ``b"xenha dom0 " + name`` (UTF-8); the monitoring node's
key hashes ``b"xenha initiator " + its initiator name`` instead, so it cannot
equal a dom0's.  fence_scsi makes its keys from the cluster name and a
corosync node id (which changes when nodes are renumbered) or a hash of the
node name in 4 hex digits; a dom0 name is what xenha has that never changes,
and 48 bits of hash make a collision among a cluster's dom0s negligible.

AoE (vblade's reserve list).  The list holds the MACs allowed to do I/O (any
ATA command but IDENTIFY from another MAC gets error 6, "reserved"); an
empty list lets everyone.  Revoking X = force set the list without X's SAN MAC
(from a list that was empty: the MACs of `keep`, the dom0s that may still
write; never an empty list, which would let X back in: our own MAC then),
confirmed by reading it back.  Each answering export of shelf.slot (a
duplicate export too) is revoked and confirmed on its own.  A read-modify-
write of the list is not atomic on the target: the engine calls revoke /
register for one target one at a time.  The Mac Mask List is only read
(vblade 25's mask edit corrupts the list beyond two entries and dies on a
delete of the first entry: see tests/test_storage_aoe.py).

Every call is bounded by the `timeout` it is given (login, each command,
each frame), and the CHAP secret of a target is read from its file and
never appears in a message.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from xenha.storage import aoe, iscsi

KEY_PREFIX = 0x7868                       # "xh"
MONITOR = 'monitor'
# reservation types under which a nexus that is not registered cannot write
FENCING_TYPES = (iscsi.PR_WE_REGISTRANTS_ONLY, iscsi.PR_EA_REGISTRANTS_ONLY,
                 iscsi.PR_WE_ALL_REGISTRANTS, iscsi.PR_EA_ALL_REGISTRANTS)
ALL_REGISTRANTS = (iscsi.PR_WE_ALL_REGISTRANTS, iscsi.PR_EA_ALL_REGISTRANTS)


def key_for(name: str, kind: str = 'dom0') -> int:
    """The 8-byte reservation key of a dom0 (kind 'dom0') or of an initiator
    that is not a dom0, by its initiator name (kind 'initiator')."""
    if kind not in ('dom0', 'initiator'):
        raise ValueError(kind)
    digest = hashlib.sha256(f'xenha {kind} {name}'.encode()).digest()
    return (KEY_PREFIX << 48) | int.from_bytes(digest[:6], 'big')


@dataclass(frozen=True)
class Identity:
    """One party on the SAN: a dom0, or the node that acts (monitoring node,
    spare).  `interface`: where *we* send AoE frames from when acting as it."""
    name: str
    initiator: str | None = None      # iSCSI initiator name of its sessions
    san_mac: str | None = None        # AoE: MAC of its interface on the SAN
    interface: str | None = None
    key: int | None = None            # default: key_for(name)

    @property
    def pr_key(self) -> int:
        return self.key if self.key is not None else key_for(self.name)


def monitor(initiator: str = iscsi.DEFAULT_INITIATOR, interface: str | None = None,
            san_mac: str | None = None) -> Identity:
    """The monitoring node as the actor (its key from its initiator name)."""
    return Identity(MONITOR, initiator, san_mac, interface,
                    key_for(initiator, 'initiator'))


def dom0(d, initiator: str | None = None) -> Identity:
    """An Identity from an inventory Dom0 (its optional san_mac /
    initiator_name keys)."""
    return Identity(d.name, initiator or getattr(d, 'initiator_name', None),
                    getattr(d, 'san_mac', None))


@dataclass(frozen=True)
class Outcome:
    """One target's answer to revoke / register."""
    target: str
    kind: str
    confirmed: bool
    message: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Facts:
    """What a target says about storage fencing (check_fence judges it)."""
    target: str
    kind: str
    error: str = ''                              # could not ask: why
    keys: tuple[int, ...] = ()                   # iSCSI: registered keys
    registered: tuple[tuple[str, bool], ...] = ()   # (dom0, its key is listed)
    reservation: str = ''                        # type name, 'none'
    holder: str = ''                             # whose key holds it
    reserve_list: tuple[str, ...] = ()           # AoE
    mask_list: tuple[str, ...] = ()
    allowed: tuple[tuple[str, bool], ...] = ()   # AoE: (dom0, may do I/O)
    problems: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.error and not self.problems


class _Deadline:
    def __init__(self, timeout: float):
        self.end = time.monotonic() + timeout
        self.timeout = timeout

    def left(self, floor: float = 0.05) -> float:
        """What is left, in tenths (a message says "within 1s", not 0.99998s)."""
        left = self.end - time.monotonic()
        if left <= floor:
            raise TimeoutError(f'the budget of {self.timeout:g}s is used up')
        return max(round(left, 1), 0.1)


def _whose(key: int, parties) -> str:
    for p in parties:
        if p.pr_key == key:
            return p.name
    return iscsi.key_text(key)


# -- iSCSI ------------------------------------------------------------------------
def _session(target, actor: Identity, timeout: float) -> iscsi.Session:
    chap = (iscsi.Chap.from_file(target.chap_user, target.chap_secret_file)
            if target.chap_user and target.chap_secret_file else None)
    s = iscsi.Session(iscsi.Portal(target.host, target.port),
                      actor.initiator or iscsi.DEFAULT_INITIATOR, target.iqn, chap,
                      timeout=timeout)
    try:
        s.login()
        iscsi.test_unit_ready(s, target.lun)      # takes the new nexus's UNIT ATTENTION
    except BaseException:
        s.close()
        raise
    return s


def _enrol(s: iscsi.Session, lun: int, key: int, tidy: bool) -> None:
    """Register `key` on this session; with `tidy` (a key only xenha's own
    short sessions use: the monitoring node's), clear its stale copies.  A
    dom0's key is never tidied: its other copies are its live sessions."""
    iscsi.pr_register(s, lun, key, ignore_existing=True)
    if not tidy:
        return
    _, keys = iscsi.pr_read_keys(s, lun)
    if keys.count(key) > 1:
        # our earlier sessions' copies: PREEMPT of our own key removes every
        # other registration holding it (and hands us their reservation)
        iscsi.pr_preempt(s, lun, key, key, iscsi.PR_WE_REGISTRANTS_ONLY, abort=False)


def _reserve_if_free(s: iscsi.Session, lun: int, key: int) -> str:
    r = iscsi.pr_read_reservation(s, lun)
    if r.held:
        return ''
    iscsi.pr_reserve(s, lun, key, iscsi.PR_WE_REGISTRANTS_ONLY)
    return '; reserved it (Write Exclusive - Registrants Only: nobody held a reservation)'


def _iscsi_revoke(target, victim: Identity, actor: Identity, dl: _Deadline) -> tuple[bool, str]:
    vkey, key = victim.pr_key, actor.pr_key
    if vkey == key:
        return False, f'{actor.name} cannot revoke its own key'
    s = _session(target, actor, dl.left())
    try:
        _enrol(s, target.lun, key, tidy=actor.name == MONITOR)
        notes = _reserve_if_free(s, target.lun, key)
        _, keys = iscsi.pr_read_keys(s, target.lun)
        how = f'{victim.name} ({iscsi.key_text(vkey)}) was not registered'
        if vkey in keys:
            try:
                how = _preempt(s, target.lun, key, victim)
            except iscsi.ReservationConflict:
                # tgtd's answer to a PREEMPT of a key nobody holds: it went meanwhile
                how = f'{victim.name} ({iscsi.key_text(vkey)}) was unregistered meanwhile'
        # confirm from what the target says now, not from what we sent
        _, keys = iscsi.pr_read_keys(s, target.lun)
        r = iscsi.pr_read_reservation(s, target.lun)
        s.logout()
    finally:
        s.close()
    holder = 'every registrant' if r.type in ALL_REGISTRANTS else \
        _whose(r.key, (victim, actor))
    state = f'reservation {r.type_name} held by {holder}'
    if vkey in keys:
        return False, f'{how}, but READ KEYS still lists it ({state})'
    if r.type not in FENCING_TYPES or (r.type not in ALL_REGISTRANTS and r.key == vkey):
        return False, (f'{how}, READ KEYS confirms it is gone, but the {state} does not '
                       f'keep it from writing')
    return True, f'{how}{notes}; READ KEYS confirms it is gone, {state}'


def _preempt(s: iscsi.Session, lun: int, key: int, victim: Identity) -> str:
    vkey = victim.pr_key
    try:
        iscsi.pr_preempt(s, lun, key, vkey, abort=True)
        return f'PREEMPT AND ABORT removed {victim.name} ({iscsi.key_text(vkey)})'
    except iscsi.PrRefused as exc:
        if (exc.key, exc.asc) != (5, 0x24):      # not "invalid field in CDB"
            raise
    iscsi.pr_preempt(s, lun, key, vkey, abort=False)
    return (f'PREEMPT removed {victim.name} ({iscsi.key_text(vkey)}) (the target '
            f'refuses PREEMPT AND ABORT: its queued commands were not aborted)')


def _iscsi_register(target, who: Identity, dl: _Deadline) -> tuple[bool, str]:
    s = _session(target, who, dl.left())
    try:
        _enrol(s, target.lun, who.pr_key, tidy=who.name == MONITOR)
        notes = _reserve_if_free(s, target.lun, who.pr_key)
        _, keys = iscsi.pr_read_keys(s, target.lun)
        r = iscsi.pr_read_reservation(s, target.lun)
        s.logout()
    finally:
        s.close()
    if who.pr_key not in keys:
        return False, f'{who.name} registered, but READ KEYS does not list its key'
    return True, (f'{who.name} registered ({iscsi.key_text(who.pr_key)}) as '
                  f'{who.initiator}{notes}; reservation {r.type_name}')


def register_session(session: iscsi.Session, lun: int, key: int,
                     reserve: bool = True) -> str:
    """Register `key` on a session someone else holds open (the session
    that will write: tgtd binds a registration to its session), and reserve
    the LUN when nobody holds a reservation.  Returns what was done."""
    _enrol(session, lun, key, tidy=False)
    return _reserve_if_free(session, lun, key) if reserve else ''


def _iscsi_facts(target, dom0s, actor: Identity, dl: _Deadline) -> Facts:
    s = _session(target, actor, dl.left())
    try:
        _, keys = iscsi.pr_read_keys(s, target.lun)
        r = iscsi.pr_read_reservation(s, target.lun)
        s.logout()
    finally:
        s.close()
    parties = (*dom0s, actor)
    registered = tuple((d.name, d.pr_key in keys) for d in dom0s)
    holder = ('every registrant' if r.type in ALL_REGISTRANTS else
              _whose(r.key, parties) if r.held else '')
    problems = []
    missing = [name for name, ok in registered if not ok]
    if missing:
        problems.append(f'not registered: {", ".join(missing)}')
    if not r.held:
        problems.append('no reservation (every initiator may write)')
    elif r.type not in FENCING_TYPES:
        problems.append(f'reservation {r.type_name} (not a Registrants type)')
    known = {p.pr_key for p in parties}
    strangers = sorted({iscsi.key_text(k) for k in keys if k not in known})
    if strangers:
        problems.append(f'keys of no dom0: {", ".join(strangers)}')
    return Facts(target.name, 'iscsi', keys=tuple(keys), registered=registered,
                 reservation=r.type_name, holder=holder, problems=tuple(problems))


# -- AoE --------------------------------------------------------------------------
def _aoe_socket(target, actor: Identity, opener):
    interface = actor.interface or target.interface
    if not interface:
        raise aoe.AoeError(f'no interface to reach e{target.shelf}.{target.slot} on')
    return (opener or aoe.open_socket)(interface), interface


def _exports(sock, target, interface: str, dl: _Deadline) -> list[bytes]:
    """MACs of every export of shelf.slot on the segment (a duplicate too)."""
    found = aoe.probe(interface, target.shelf, target.slot,
                      timeout=min(dl.left(), 1.0), settle=0.05, sock=sock)
    if not found:
        raise aoe.NoAnswer(f'e{target.shelf}.{target.slot}: no export answers on '
                           f'{interface}')
    return [aoe.mac_bytes(r.mac) for r in found]


def _norm(mac: str) -> str:
    return aoe.mac_text(aoe.mac_bytes(mac))


def _aoe_revoke(target, victim: Identity, actor: Identity, keep, opener,
                dl: _Deadline) -> tuple[bool, str]:
    if not victim.san_mac:
        return False, f'{victim.name} has no san_mac in the inventory: cannot tell ' \
                      f'which MAC to take out of the reserve list'
    gone = _norm(victim.san_mac)
    sock, interface = _aoe_socket(target, actor, opener)
    try:
        own = aoe.mac_text(sock.getsockname()[4])
        parts = []
        for dst in _exports(sock, target, interface, dl):
            where = f'{aoe.mac_text(dst)}'
            now = aoe.reserve_list(sock, dst, target.shelf, target.slot, dl.left())
            if now:
                wanted = [m for m in now if m != gone]
            else:
                wanted = [m for m in dict.fromkeys(_norm(k.san_mac) for k in keep
                                                   if k.san_mac) if m != gone]
            note = ''
            if not wanted:
                wanted, note = [own], ' (only ours: an empty list would let everyone in)'
            if now and gone not in now:
                how = f'{victim.name} ({gone}) was not in the reserve list'
            else:
                aoe.set_reserve_list(sock, dst, target.shelf, target.slot, wanted,
                                     dl.left(), force=True)
                how = (f'force set the reserve list to {", ".join(wanted)}{note}'
                       + ('' if now else ' (it was empty: anyone could write)'))
            back = aoe.reserve_list(sock, dst, target.shelf, target.slot, dl.left())
            if gone in back or not back:
                return False, (f'{where}: {how}, but it reads back as '
                               f'{", ".join(back) or "empty (anyone may write)"}')
            parts.append(f'{where}: {how}; reads back without {gone}')
        return True, '; '.join(parts)
    finally:
        sock.close()


def _aoe_register(target, who: Identity, actor: Identity, opener,
                  dl: _Deadline, open_ok: bool = False) -> tuple[bool, str]:
    if not who.san_mac:
        return False, f'{who.name} has no san_mac in the inventory'
    mac = _norm(who.san_mac)
    sock, interface = _aoe_socket(target, actor, opener)
    try:
        parts = []
        for dst in _exports(sock, target, interface, dl):
            now = aoe.reserve_list(sock, dst, target.shelf, target.slot, dl.left())
            if not now and open_ok:
                parts.append(f'{aoe.mac_text(dst)}: reserve list empty (anyone may write)')
                continue
            if mac not in now:
                aoe.set_reserve_list(sock, dst, target.shelf, target.slot, [*now, mac],
                                     dl.left(), force=True)
            back = aoe.reserve_list(sock, dst, target.shelf, target.slot, dl.left())
            if mac not in back:
                return False, f'{aoe.mac_text(dst)}: {mac} is not in the list read back'
            parts.append(f'{aoe.mac_text(dst)}: reserve list {", ".join(back)}')
        return True, f'{who.name} ({mac}) may do I/O: ' + '; '.join(parts)
    finally:
        sock.close()


def _aoe_facts(target, dom0s, actor: Identity, opener, dl: _Deadline) -> Facts:
    sock, interface = _aoe_socket(target, actor, opener)
    try:
        exports = _exports(sock, target, interface, dl)
        dst = exports[0]
        rlist = aoe.reserve_list(sock, dst, target.shelf, target.slot, dl.left())
        masks = aoe.mask_list(sock, dst, target.shelf, target.slot, dl.left())
    finally:
        sock.close()
    problems = []
    if len(exports) > 1:
        problems.append(f'{len(exports)} exports answer for e{target.shelf}.{target.slot}')
    no_mac = [d.name for d in dom0s if not d.san_mac]
    if no_mac:
        problems.append(f'no san_mac in the inventory: {", ".join(no_mac)}')
    allowed = tuple((d.name, not rlist or _norm(d.san_mac) in rlist)
                    for d in dom0s if d.san_mac)
    if not rlist:
        problems.append('reserve list empty (every MAC may write)')
    else:
        out = [name for name, ok in allowed if not ok]
        if out:
            problems.append(f'not in the reserve list: {", ".join(out)}')
    return Facts(target.name, 'aoe', reserve_list=tuple(rlist), mask_list=tuple(masks),
                 allowed=allowed, problems=tuple(problems))


# -- the API ----------------------------------------------------------------------
def _errors():
    return (iscsi.IscsiError, aoe.AoeError, OSError, TimeoutError)


def revoke(target, victim: Identity, as_initiator: Identity | None = None, *,
           keep=(), timeout: float = 10.0, opener=None) -> Outcome:
    """Take `victim`'s write access to `target` away and confirm it.

    `as_initiator`: who acts (default: the monitoring node with xenha's
    default initiator name).  `keep` (AoE): the dom0s that may still write,
    used when the reserve list was empty.  `opener(interface)` -> raw socket
    (AoE; default aoe.open_socket): the lab opens it in its SAN namespace.
    Never raises for a target that fails: the Outcome says why.
    """
    actor = as_initiator or monitor()
    started = time.monotonic()
    dl = _Deadline(timeout)
    try:
        if target.kind == 'iscsi':
            ok, message = _iscsi_revoke(target, victim, actor, dl)
        elif target.kind == 'aoe':
            ok, message = _aoe_revoke(target, victim, actor, keep, opener, dl)
        else:
            ok, message = False, f'unknown target kind {target.kind!r}'
    except _errors() as exc:
        ok, message = False, f'could not revoke {victim.name}: {exc}'
    return Outcome(target.name, target.kind, ok, f'{target.name}: {message}',
                   time.monotonic() - started)


def register(target, who: Identity, as_initiator: Identity | None = None, *,
             timeout: float = 10.0, opener=None, open_ok: bool = False) -> Outcome:
    """Give `who` write access to `target`.

    iSCSI: a session with who's initiator name registers who's key (and
    reserves the LUN when nobody does) — the registration belongs to that
    session, so this enrols an actor (the monitoring node) or a session-less
    party; a dom0's own sessions register themselves (sg_persist, or
    `register_session`).  AoE: who's SAN MAC joins the reserve list, sent
    from `as_initiator`'s interface; with `open_ok` an empty list (anyone may
    write) is left as it is (a spare's attach: it must not shut others out).
    """
    started = time.monotonic()
    dl = _Deadline(timeout)
    try:
        if target.kind == 'iscsi':
            ok, message = _iscsi_register(target, who, dl)
        elif target.kind == 'aoe':
            ok, message = _aoe_register(target, who, as_initiator or monitor(), opener, dl,
                                        open_ok)
        else:
            ok, message = False, f'unknown target kind {target.kind!r}'
    except _errors() as exc:
        ok, message = False, f'could not register {who.name}: {exc}'
    return Outcome(target.name, target.kind, ok, f'{target.name}: {message}',
                   time.monotonic() - started)


def readiness(target, dom0s, as_initiator: Identity | None = None, *,
              timeout: float = 10.0, opener=None) -> Facts:
    """Registered keys / reserve list of `target`, judged for `dom0s` (the
    ones that may use it).  Reads only."""
    actor = as_initiator or monitor()
    dom0s = tuple(dom0s)
    dl = _Deadline(timeout)
    try:
        if target.kind == 'iscsi':
            return _iscsi_facts(target, dom0s, actor, dl)
        if target.kind == 'aoe':
            return _aoe_facts(target, dom0s, actor, opener, dl)
        return Facts(target.name, target.kind, error=f'unknown target kind {target.kind!r}')
    except _errors() as exc:
        return Facts(target.name, target.kind, error=str(exc))


def revoke_all(targets, victim: Identity, as_initiator: Identity | None = None, *,
               keep=(), timeout: float = 10.0, opener=None) -> list[Outcome]:
    """`revoke` on every target in parallel; Outcomes in the targets' order."""
    targets = list(targets)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
        return list(pool.map(lambda t: revoke(t, victim, as_initiator, keep=keep,
                                              timeout=timeout, opener=opener), targets))


# -- sg_persist (sg3-utils): what a real dom0 runs over its kernel initiator ---------
# Its own sessions must hold the registration (tgtd binds it to the session),
# so a dom0 registers on each LUN it logs in to, at attach and at boot.
def _device(device: str) -> str:
    if not device.startswith('/'):
        raise ValueError(f'not a device path: {device!r}')
    return device


def _key(key: int) -> str:
    if not 0 < key < 1 << 64:
        raise ValueError(f'not a reservation key: {key!r} (0 unregisters)')
    return f'{key:x}'


def sg_persist_register(device: str, key: int) -> list[str]:
    """REGISTER AND IGNORE EXISTING KEY: works whatever this nexus had."""
    return ['sg_persist', '--no-inquiry', '--out', '--register-ignore',
            f'--param-sark={_key(key)}', _device(device)]


def sg_persist_reserve(device: str, key: int,
                       type_: int = iscsi.PR_WE_REGISTRANTS_ONLY) -> list[str]:
    return ['sg_persist', '--no-inquiry', '--out', '--reserve', f'--param-rk={_key(key)}',
            f'--prout-type={type_}', _device(device)]


def sg_persist_read_keys(device: str) -> list[str]:
    return ['sg_persist', '--no-inquiry', '--in', '--read-keys', _device(device)]


def sg_persist_read_reservation(device: str) -> list[str]:
    return ['sg_persist', '--no-inquiry', '--in', '--read-reservation', _device(device)]


def parse_sg_read_keys(text: str) -> list[int]:
    """Keys from `sg_persist --in --read-keys` (sg3-utils 1.4x)."""
    if 'there are NO registered reservation keys' in text:
        return []
    if 'registered reservation key' not in text:
        raise ValueError(f'not sg_persist --read-keys output: {text.strip()[:80]!r}')
    return [int(line.strip(), 16) for line in text.splitlines()
            if line.strip().startswith('0x')]


def parse_sg_read_reservation(text: str) -> tuple[int, str]:
    """(holder key, type text) from `sg_persist --in --read-reservation`;
    (0, '') when no reservation is held."""
    if 'there is NO reservation held' in text:
        return 0, ''
    key = kind = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('Key='):
            key = int(line[4:], 16)
        elif 'type:' in line:
            kind = line.split('type:', 1)[1].strip()
    if key is None or kind is None:
        raise ValueError(f'not sg_persist --read-reservation output: {text.strip()[:80]!r}')
    return key, kind
