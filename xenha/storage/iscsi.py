"""iSCSI: a small initiator, the parsers of tgt/open-iscsi output, and the
commands a spare dom0 runs to log in to a target.

Why our own initiator instead of libiscsi's `iscsi-ls` / `iscsi-inq`:

* CHAP: libiscsi 1.19 (Debian 12) takes the secret only in the URL
  (`iscsi://user%secret@...`), which puts it in argv for every `ps` to see;
* one login answers everything (discovery, inquiry, capacity, unit ready),
  where the tools need one fork + one login each (3-4x the time);
* the login status class/detail tells *why* a login failed (authentication,
  authorization, target missing, target unavailable) as data, not as text
  scraped from stderr.

Only what a probe and storage fencing need is implemented (RFC 7143): Login
(security and operational stages, CHAP with MD5), Text (SendTargets), SCSI
Command with Data-In (INQUIRY, READ CAPACITY(16), TEST UNIT READY, REPORT
LUNS, READ(10), PERSISTENT RESERVE IN) and with Data-Out, as immediate data
and after R2T (PERSISTENT RESERVE OUT, WRITE(10)), NOP-Out ping, Logout.  No
digests, one connection per session.

SCSI-3 persistent reservations (SPC-4 5.9, 6.15, 6.16) are the helpers at the
end of the SCSI section (`pr_register`, `pr_reserve`, `pr_read_keys`, ...);
`xenha.storage.reservations` builds storage fencing on them.  A registration
belongs to one I_T nexus (for tgtd: one session), so a session registers its
key before it writes; a command refused by a reservation raises
`ReservationConflict` (status 0x18); the UNIT ATTENTION a preempt leaves for
the other nexuses (2A/03 reservations preempted, 2A/04 released, 2A/05
registrations preempted) is a notice, and the command is repeated.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import time
from dataclasses import dataclass, field

DEFAULT_PORT = 3260
DEFAULT_INITIATOR = 'iqn.2026-01.org.xenha:monitor'

# opcodes (initiator -> target, target -> initiator)
OP_NOP_OUT, OP_SCSI_CMD, OP_LOGIN, OP_TEXT, OP_LOGOUT = 0x00, 0x01, 0x03, 0x04, 0x06
OP_NOP_IN, OP_SCSI_RSP, OP_LOGIN_RSP, OP_TEXT_RSP = 0x20, 0x21, 0x23, 0x24
OP_DATA_IN, OP_LOGOUT_RSP, OP_ASYNC, OP_REJECT = 0x25, 0x26, 0x32, 0x3f
OP_DATA_OUT, OP_R2T = 0x05, 0x31
IMMEDIATE = 0x40
STAGE_SECURITY, STAGE_OPERATIONAL, STAGE_FULL = 0, 1, 3

SENSE_KEYS = {0: 'NO SENSE', 1: 'RECOVERED ERROR', 2: 'NOT READY',
              3: 'MEDIUM ERROR', 4: 'HARDWARE ERROR', 5: 'ILLEGAL REQUEST',
              6: 'UNIT ATTENTION', 7: 'DATA PROTECT', 0xb: 'ABORTED COMMAND'}

# RFC 7143 11.13.5: login status class/detail
LOGIN_STATUS = {
    0x0101: 'target moved temporarily', 0x0102: 'target moved permanently',
    0x0200: 'initiator error', 0x0201: 'authentication failed',
    0x0202: 'authorization failure (initiator not allowed)',
    0x0203: 'target not found', 0x0204: 'target removed',
    0x0205: 'unsupported version', 0x0206: 'too many connections',
    0x0207: 'missing parameter', 0x0208: 'cannot include in session',
    0x0209: 'session type not supported', 0x020a: 'session does not exist',
    0x020b: 'invalid during login',
    0x0300: 'target error (target offline?)', 0x0301: 'service unavailable',
    0x0302: 'out of resources',
}


# -- errors: one class per thing an operator does something different about --
class IscsiError(Exception):
    """Base: a probe could not complete; the message says why."""


class PortalUnreachable(IscsiError):
    """TCP connect refused / no route: nothing serves iSCSI there."""


class PortalTimeout(IscsiError):
    """Connected (or not) but no answer in time: the target daemon hangs."""


class LoginRefused(IscsiError):
    """The target answered the login with an error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def auth(self) -> bool:
        return self.status in (0x0201, 0x0202)


class TargetMissing(IscsiError):
    """The portal does not offer the target (to this initiator)."""


class TargetUnavailable(IscsiError):
    """The target exists but does not serve (offline, out of resources)."""


class LunNotReady(IscsiError):
    """The LUN exists but is not ready (offline, no medium)."""


class LunMissing(IscsiError):
    """The target has no such LUN."""


class ProtocolError(IscsiError):
    """The peer said something we do not understand: could not decide."""


class ReservationConflict(IscsiError):
    """SCSI status RESERVATION CONFLICT (0x18): a persistent reservation (or
    the PR rules of the command itself) refused this I_T nexus."""


class PrRefused(IscsiError):
    """A PERSISTENT RESERVE command the target refused with CHECK CONDITION
    (e.g. ILLEGAL REQUEST: a service action or type it does not implement)."""

    def __init__(self, message: str, key: int, asc: int, ascq: int):
        super().__init__(message)
        self.key, self.asc, self.ascq = key, asc, ascq


class _UnitAttention(IscsiError):
    """Internal: retry the command."""

    def __init__(self, message: str, asc: int = 0, ascq: int = 0):
        super().__init__(message)
        self.asc, self.ascq = asc, ascq


# -- data ---------------------------------------------------------------------
@dataclass(frozen=True)
class Chap:
    user: str
    secret: str = field(repr=False)   # never in repr, logs or messages

    @classmethod
    def from_file(cls, user: str, path: str) -> 'Chap':
        """The secret from a small regular file (a device or a FIFO is refused
        at once: /dev/zero must not hang the check)."""
        from xenha import files
        return cls(user, files.read_bytes(path, files.SECRET_LIMIT).decode('utf-8').strip())


@dataclass(frozen=True)
class Portal:
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> 'Portal':
        """'h', 'h:p', 'h,tpgt', 'h:p,tpgt' (iscsiadm's forms) -> Portal."""
        text = text.split(',')[0]
        host, _, port = text.rpartition(':') if ':' in text else (text, '', '')
        return cls(host, int(port) if port else DEFAULT_PORT)

    def __str__(self) -> str:
        return f'{self.host}:{self.port}'


@dataclass
class LunInfo:
    lun: int
    vendor: str = ''
    product: str = ''
    device_type: int = 0
    block_size: int = 0
    capacity: int = 0          # bytes


@dataclass
class ProbeResult:
    portal: Portal
    connect_time: float = 0.0
    login_time: float = 0.0    # connect + login of the normal session
    targets: dict = field(default_factory=dict)   # iqn -> [addresses]
    luns: list = field(default_factory=list)       # LUN numbers reported
    lun: LunInfo | None = None
    keys: list | None = None             # with pr=True: registered PR keys
    reservation: 'Reservation | None' = None
    pr_error: str = ''                   # with pr=True: why they could not be read


# -- PDU codec ----------------------------------------------------------------
def encode_keys(pairs: dict | list) -> bytes:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b''.join(f'{k}={v}'.encode() + b'\0' for k, v in items)


def decode_keys(data: bytes) -> list[tuple[str, str]]:
    out = []
    for item in data.split(b'\0'):
        if item:
            key, _, value = item.decode('utf-8', 'replace').partition('=')
            out.append((key, value))
    return out


def pdu(opcode: int, flags: int, rest: bytes = b'', data: bytes = b'') -> bytes:
    """Basic header segment (48 bytes) + data padded to 4 bytes.

    `rest` holds header bytes 2-3 followed by bytes 8-47 (42 bytes): the
    caller packs the opcode-specific fields; AHS is never used.
    """
    if len(rest) != 42:
        raise ValueError(f'header rest must be 42 bytes, not {len(rest)}')
    head = bytes([opcode, flags]) + rest[:2] + b'\0' + len(data).to_bytes(3, 'big') \
        + rest[2:]
    return head + data + b'\0' * (-len(data) % 4)


def lun_field(lun: int) -> bytes:
    """SAM LUN encoding: peripheral (<256) or flat addressing."""
    if lun < 256:
        return bytes([0, lun, 0, 0, 0, 0, 0, 0])
    return bytes([0x40 | (lun >> 8), lun & 0xff, 0, 0, 0, 0, 0, 0])


def decode_lun(raw: bytes) -> int:
    method = raw[0] >> 6
    if method == 1:
        return ((raw[0] & 0x3f) << 8) | raw[1]
    return raw[1]


def chap_response(ident: int, secret: str, challenge: bytes) -> bytes:
    """RFC 1994: MD5(identifier || secret || challenge)."""
    return hashlib.md5(bytes([ident]) + secret.encode() + challenge).digest()


def parse_sense(data: bytes) -> tuple[int, int, int]:
    """(key, asc, ascq) from fixed (0x70/71) or descriptor (0x72/73) sense."""
    if len(data) < 3:
        return 0, 0, 0
    if data[0] & 0x7f in (0x72, 0x73):
        return data[1] & 0xf, data[2], data[3] if len(data) > 3 else 0
    asc = data[12] if len(data) > 12 else 0
    ascq = data[13] if len(data) > 13 else 0
    return data[2] & 0xf, asc, ascq


# -- the session --------------------------------------------------------------
class Session:
    """One iSCSI connection: discovery or normal.  Use as a context manager."""

    def __init__(self, portal: Portal, initiator: str = DEFAULT_INITIATOR,
                 target: str | None = None, chap: Chap | None = None,
                 timeout: float = 5.0, source: str | None = None):
        self.portal = portal
        self.source = source          # local address to connect from
        self.initiator = initiator
        self.target = target          # None = discovery session
        self.chap = chap
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.itt = 0
        self.cmdsn = 1
        self.exp_statsn = 0
        self.tsih = 0
        self.isid = b'\x80' + os.urandom(3) + b'\0\0'   # "random" ISID format
        self.connect_time = 0.0
        self.negotiated: dict[str, str] = {}    # the target's operational answers
        self.unit_attentions: list[tuple[int, int]] = []   # (asc, ascq) seen, in order

    # -- transport --
    def connect(self) -> None:
        started = time.monotonic()
        try:
            self.sock = socket.create_connection(
                (self.portal.host, self.portal.port), timeout=self.timeout,
                source_address=(self.source, 0) if self.source else None)
        except socket.timeout:
            raise PortalTimeout(f'portal {self.portal}: TCP connect timed out '
                                f'after {self.timeout:g}s') from None
        except ConnectionRefusedError:
            raise PortalUnreachable(f'portal {self.portal}: connection refused '
                                    f'(no iSCSI target daemon listening)') from None
        except OSError as exc:
            raise PortalUnreachable(
                f'portal {self.portal}: {exc.strerror or exc}') from None
        self.connect_time = time.monotonic() - started

    def _recv_exact(self, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise PortalTimeout(
                    f'portal {self.portal} accepted the connection but gave no '
                    f'{what} answer within {self.timeout:g}s (target daemon hung?)'
                ) from None
            except ConnectionResetError:
                chunk = b''
            if not chunk:
                raise PortalUnreachable(
                    f'portal {self.portal} closed the connection during {what}')
            buf += chunk
        return bytes(buf)

    def recv(self, what: str) -> tuple[bytes, bytes]:
        """Next PDU as (header, data); answers target NOP-In pings itself."""
        while True:
            head = self._recv_exact(48, what)
            ahs = head[4] * 4
            dlen = int.from_bytes(head[5:8], 'big')
            body = self._recv_exact(ahs + dlen + (-dlen % 4), what)
            data = body[ahs:ahs + dlen]
            op = head[0] & 0x3f
            statsn = struct.unpack('>I', head[24:28])[0]
            if op in (OP_LOGIN_RSP, OP_TEXT_RSP, OP_SCSI_RSP, OP_LOGOUT_RSP,
                      OP_NOP_IN) or (op == OP_DATA_IN and head[1] & 0x01):
                self.exp_statsn = (statsn + 1) & 0xffffffff
            if op == OP_NOP_IN and head[20:24] != b'\xff\xff\xff\xff':
                self._nop_out(ttt=head[20:24], itt=0xffffffff)
                continue
            if op == OP_ASYNC:
                continue
            if op == OP_REJECT:
                raise ProtocolError(f'portal {self.portal} rejected our '
                                    f'{what} PDU (reason 0x{head[2]:02x})')
            return head, data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise PortalTimeout(f'portal {self.portal}: send timed out') from None
        except OSError as exc:
            raise PortalUnreachable(
                f'portal {self.portal}: {exc.strerror or exc}') from None

    def _next_itt(self) -> int:
        self.itt = (self.itt + 1) & 0x7fffffff
        return self.itt

    # -- login --
    def _login_pdu(self, csg: int, nsg: int, transit: bool, keys) -> bytes:
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        rest = b'\0\0' + self.isid + struct.pack(
            '>HIHHII', self.tsih, self._next_itt(), 1, 0, self.cmdsn,
            self.exp_statsn) + b'\0' * 16
        return pdu(OP_LOGIN | IMMEDIATE, flags, rest, encode_keys(keys))

    def _login_step(self, csg, nsg, transit, keys) -> tuple[int, dict]:
        self.send(self._login_pdu(csg, nsg, transit, keys))
        head, data = self.recv('login')
        if head[0] & 0x3f != OP_LOGIN_RSP:
            raise ProtocolError(f'expected a login response, got opcode '
                                f'0x{head[0]:02x}')
        status = (head[36] << 8) | head[37]
        if status:
            raise self._refusal(status)
        self.tsih = struct.unpack('>H', head[14:16])[0]
        flags = head[1]
        nsg_got = flags & 3 if flags & 0x80 else -1
        return nsg_got, dict(decode_keys(data))

    def _refusal(self, status: int) -> IscsiError:
        reason = LOGIN_STATUS.get(status, f'status 0x{status:04x}')
        who = f'target {self.target}' if self.target else 'discovery'
        msg = f'login to {who} at {self.portal} refused: {reason}'
        if status in (0x0203, 0x0204):
            return TargetMissing(f'{msg} (missing, or not offered to initiator '
                                 f'{self.initiator})')
        if status in (0x0300, 0x0301, 0x0302):
            return TargetUnavailable(msg)
        if status == 0x0201:
            msg += ' (CHAP user/secret wrong or required)' if self.chap \
                else ' (target requires CHAP: pass --chap-user and a secret)'
        elif status == 0x0202:
            msg += f' ({self.initiator} not in the target ACL)'
        return LoginRefused(msg, status)

    def login(self) -> None:
        if self.sock is None:
            self.connect()
        first = {'InitiatorName': self.initiator,
                 'SessionType': 'Normal' if self.target else 'Discovery'}
        if self.target:
            first['TargetName'] = self.target
        first['AuthMethod'] = 'CHAP,None' if self.chap else 'None'
        nsg, keys = self._login_step(STAGE_SECURITY, STAGE_OPERATIONAL,
                                     not self.chap, first)
        if self.chap and keys.get('AuthMethod') == 'CHAP':
            self._chap()
        elif self.chap and nsg < 0:
            # target picked None but wants us to continue the stage
            nsg, keys = self._login_step(STAGE_SECURITY, STAGE_OPERATIONAL,
                                         True, {})
        ops = {'HeaderDigest': 'None', 'DataDigest': 'None',
               'MaxRecvDataSegmentLength': 262144}
        if self.target:
            ops.update({'InitialR2T': 'Yes', 'ImmediateData': 'Yes',
                        'MaxBurstLength': 262144, 'FirstBurstLength': 65536,
                        'DefaultTime2Wait': 2, 'DefaultTime2Retain': 0,
                        'MaxOutstandingR2T': 1, 'DataPDUInOrder': 'Yes',
                        'DataSequenceInOrder': 'Yes', 'ErrorRecoveryLevel': 0,
                        'MaxConnections': 1})
        for _ in range(4):   # the target may need more than one round
            nsg, keys = self._login_step(STAGE_OPERATIONAL, STAGE_FULL, True, ops)
            self.negotiated.update(keys)
            if nsg == STAGE_FULL:
                return
            ops = {}
        raise ProtocolError(f'portal {self.portal}: login did not reach '
                            f'full feature phase')

    def _chap(self) -> None:
        _, keys = self._login_step(STAGE_SECURITY, STAGE_OPERATIONAL, False,
                                   {'CHAP_A': '5'})
        try:
            ident = int(keys['CHAP_I'])
            challenge = _hexbytes(keys['CHAP_C'])
        except (KeyError, ValueError):
            raise ProtocolError('target sent no usable CHAP challenge') from None
        answer = chap_response(ident, self.chap.secret, challenge)
        self._login_step(STAGE_SECURITY, STAGE_OPERATIONAL, True,
                         {'CHAP_N': self.chap.user,
                          'CHAP_R': '0x' + answer.hex()})

    # -- full feature phase --
    def send_targets(self) -> dict[str, list[str]]:
        """SendTargets=All: {iqn: ['addr:port,tpgt', ...]} in offer order."""
        found: dict[str, list[str]] = {}
        ttt, text, current = b'\xff\xff\xff\xff', b'SendTargets=All\0', None
        for _ in range(64):
            rest = b'\0\0' + b'\0' * 8 + struct.pack('>I', self._next_itt()) \
                + ttt + struct.pack('>II', self.cmdsn, self.exp_statsn) + b'\0' * 16
            self.send(pdu(OP_TEXT | IMMEDIATE, 0x80, rest, text))
            head, data = self.recv('SendTargets')
            for key, value in decode_keys(data):
                if key == 'TargetName':
                    current = value
                    found.setdefault(value, [])
                elif key == 'TargetAddress' and current:
                    found[current].append(value)
            if not head[1] & 0x40:       # no Continue bit: complete
                return found
            ttt, text = head[20:24], b''
        raise ProtocolError('SendTargets answer never ended')

    def scsi(self, lun: int, cdb: bytes, length: int, data_out: bytes = b'') -> bytes:
        """Run one command; returns its Data-In, raises on CHECK CONDITION.

        `data_out` goes to the target as immediate data (what the login
        allowed) and the rest in Data-Out PDUs when the target asks (R2T).
        A new I_T nexus first gets UNIT ATTENTION (power on / reset), and a
        preempt or clear leaves one for the other nexuses: that is a notice,
        not a fault, so the command is repeated (as sd.c does); each one seen
        is kept in `unit_attentions`.
        """
        for _ in range(3):
            try:
                return self._scsi_once(lun, cdb, length, data_out)
            except _UnitAttention as ua:
                self.unit_attentions.append((ua.asc, ua.ascq))
                continue
        raise LunNotReady(f'LUN {lun} of {self.target}: UNIT ATTENTION '
                          f'three times in a row')

    def _limit(self, key: str, default: int) -> int:
        try:
            return int(self.negotiated.get(key, default))
        except ValueError:
            return default

    def _scsi_once(self, lun: int, cdb: bytes, length: int, data_out: bytes = b'') -> bytes:
        itt = self._next_itt()
        # the target's MaxRecvDataSegmentLength bounds every PDU we send it
        segment = self._limit('MaxRecvDataSegmentLength', 8192)
        immediate = b''
        if data_out and self.negotiated.get('ImmediateData', 'Yes') == 'Yes':
            immediate = data_out[:min(segment, self._limit('FirstBurstLength', 65536))]
        flags = 0x80 | (0x40 if length else 0) | (0x20 if data_out else 0) | 0x01
        rest = b'\0\0' + lun_field(lun) + struct.pack(
            '>IIII', itt, length or len(data_out), self.cmdsn, self.exp_statsn) \
            + cdb.ljust(16, b'\0')
        self.send(pdu(OP_SCSI_CMD, flags, rest, immediate))
        self.cmdsn = (self.cmdsn + 1) & 0xffffffff
        data = bytearray()
        while True:
            head, seg = self.recv(f'SCSI 0x{cdb[0]:02x}')
            op = head[0] & 0x3f
            if op == OP_DATA_IN:
                offset = struct.unpack('>I', head[40:44])[0]
                if offset + len(seg) > max(length, 0) + 65536:
                    raise ProtocolError(f'target {self.target} sent more data than '
                                        f'asked for ({offset + len(seg)} > {length})')
                data[offset:offset + len(seg)] = seg
                if head[1] & 0x01:          # status carried in the Data-In
                    return self._status(lun, cdb, head[3], b'', bytes(data))
            elif op == OP_R2T:
                ttt = head[20:24]
                offset, wanted = struct.unpack('>II', head[40:48])
                self._data_out(lun, itt, ttt, data_out[offset:offset + wanted], offset,
                               segment)
            elif op == OP_SCSI_RSP:
                if head[2]:                 # iSCSI response: target failure
                    raise TargetUnavailable(
                        f'target {self.target}: command failed at the iSCSI '
                        f'level (response 0x{head[2]:02x})')
                sense = seg[2:2 + int.from_bytes(seg[:2], 'big')] if seg else b''
                return self._status(lun, cdb, head[3], sense, bytes(data))
            else:
                raise ProtocolError(f'unexpected opcode 0x{op:02x} during SCSI')

    def _data_out(self, lun: int, itt: int, ttt: bytes, chunk: bytes, offset: int,
                  segment: int) -> None:
        """The data an R2T asked for, in PDUs the target can take (RFC 7143 11.7)."""
        if not chunk:
            raise ProtocolError(f'target {self.target} asked for data past the end '
                                f'of the command (R2T at offset {offset})')
        pieces = range(0, len(chunk), segment)
        for datasn, start in enumerate(pieces):
            part = chunk[start:start + segment]
            final = 0x80 if start + segment >= len(chunk) else 0
            rest = b'\0\0' + lun_field(lun) + struct.pack('>I', itt) + ttt + struct.pack(
                '>IIIIII', 0, self.exp_statsn, 0, datasn, offset + start, 0)
            self.send(pdu(OP_DATA_OUT, final, rest, part))

    def _status(self, lun, cdb, status, sense, data) -> bytes:
        if status == 0:
            return data
        where = f'LUN {lun} of {self.target}'
        if status == 0x02:
            key, asc, ascq = parse_sense(sense)
            name = SENSE_KEYS.get(key, f'sense key 0x{key:x}')
            detail = f'{name}, ASC/ASCQ 0x{asc:02x}/0x{ascq:02x}'
            if key == 6:
                raise _UnitAttention(detail, asc, ascq)
            if key == 5 and asc == 0x25:
                raise LunMissing(f'{where} does not exist ({detail})')
            if key == 2:
                raise LunNotReady(f'{where} is not ready ({detail})')
            if cdb[0] in (PR_IN, PR_OUT):
                raise PrRefused(f'{where}: {_pr_name(cdb)} refused ({detail})',
                                key, asc, ascq)
            raise LunNotReady(f'{where}: command 0x{cdb[0]:02x} failed ({detail})')
        if status == 0x18:
            raise ReservationConflict(
                f'{where}: {_command_name(cdb)} from {self.initiator}: RESERVATION '
                f'CONFLICT')
        if status in (0x08, 0x28):
            raise TargetUnavailable(f'{where} is busy (SCSI status 0x{status:02x})')
        raise LunNotReady(f'{where}: SCSI status 0x{status:02x}')

    def ping(self) -> None:
        """NOP-Out with a reply wanted: is the connection still served?"""
        self._nop_out(ttt=b'\xff\xff\xff\xff', itt=self._next_itt())
        self.recv('NOP-Out ping')

    def _nop_out(self, ttt: bytes, itt: int) -> None:
        rest = b'\0\0' + b'\0' * 8 + struct.pack('>I', itt) + ttt + struct.pack(
            '>II', self.cmdsn, self.exp_statsn) + b'\0' * 16
        self.send(pdu(OP_NOP_OUT | IMMEDIATE, 0x80, rest))

    def logout(self) -> None:
        rest = b'\0\0' + b'\0' * 8 + struct.pack(
            '>IHHII', self._next_itt(), 1, 0, self.cmdsn, self.exp_statsn) + b'\0' * 16
        try:
            self.send(pdu(OP_LOGOUT | IMMEDIATE, 0x80, rest))
            self.recv('logout')
        except IscsiError:
            pass    # the session ends either way

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hexbytes(text: str) -> bytes:
    if text[:2].lower() == '0x':
        return bytes.fromhex(text[2:])
    if text[:2].lower() == '0b':
        import base64
        return base64.b64decode(text[2:])
    raise ValueError(text)


# -- SCSI helpers --------------------------------------------------------------
def inquiry(s: Session, lun: int) -> LunInfo:
    data = s.scsi(lun, bytes([0x12, 0, 0, 0, 96, 0]), 96)
    if len(data) < 36:
        raise ProtocolError(f'INQUIRY of LUN {lun} answered {len(data)} bytes')
    if data[0] >> 5 == 3:
        raise LunMissing(f'LUN {lun} of {s.target} does not exist '
                         f'(peripheral qualifier 3)')
    return LunInfo(lun, data[8:16].decode('ascii', 'replace').strip(),
                   data[16:32].decode('ascii', 'replace').strip(), data[0] & 0x1f)


def read_capacity(s: Session, lun: int) -> tuple[int, int]:
    """(capacity bytes, block size) by READ CAPACITY(16)."""
    cdb = bytes([0x9e, 0x10]) + b'\0' * 8 + struct.pack('>I', 32) + b'\0\0'
    data = s.scsi(lun, cdb, 32)
    if len(data) < 12:
        raise ProtocolError(f'READ CAPACITY(16) of LUN {lun} answered {len(data)} bytes '
                            '(at least 12 expected)')
    last, block = struct.unpack('>QI', data[:12])
    return (last + 1) * block, block


def report_luns(s: Session) -> list[int]:
    cdb = bytes([0xa0, 0, 0, 0, 0, 0]) + struct.pack('>I', 4096) + b'\0\0'
    data = s.scsi(0, cdb, 4096)
    if len(data) < 8:
        raise ProtocolError(f'REPORT LUNS answered {len(data)} bytes (at least 8 expected)')
    n = struct.unpack('>I', data[:4])[0] // 8
    return [decode_lun(data[8 + 8 * i:16 + 8 * i]) for i in range(n)
            if len(data) >= 16 + 8 * i]


def test_unit_ready(s: Session, lun: int) -> None:
    s.scsi(lun, b'\0' * 6, 0)


def read10(s: Session, lun: int, lba: int, blocks: int, block_size: int) -> bytes:
    cdb = struct.pack('>BBIBHB', 0x28, 0, lba, 0, blocks, 0)
    return s.scsi(lun, cdb, blocks * block_size)


def write10(s: Session, lun: int, lba: int, data: bytes, block_size: int) -> None:
    """WRITE(10) of whole blocks at `lba`; ReservationConflict when refused."""
    if not data or len(data) % block_size:
        raise ValueError(f'{len(data)} bytes is not a whole number of '
                         f'{block_size}-byte blocks')
    cdb = struct.pack('>BBIBHB', 0x2a, 0, lba, 0, len(data) // block_size, 0)
    s.scsi(lun, cdb, 0, data_out=data)


# -- SCSI-3 persistent reservations (SPC-4 6.15, 6.16) ---------------------------
PR_IN, PR_OUT = 0x5e, 0x5f
# PERSISTENT RESERVE IN service actions
PR_READ_KEYS, PR_READ_RESERVATION = 0, 1
# PERSISTENT RESERVE OUT service actions
PR_REGISTER, PR_RESERVE, PR_RELEASE, PR_CLEAR = 0, 1, 2, 3
PR_PREEMPT, PR_PREEMPT_AND_ABORT, PR_REGISTER_IGNORE = 4, 5, 6
PR_OUT_NAMES = {PR_REGISTER: 'REGISTER', PR_RESERVE: 'RESERVE', PR_RELEASE: 'RELEASE',
                PR_CLEAR: 'CLEAR', PR_PREEMPT: 'PREEMPT',
                PR_PREEMPT_AND_ABORT: 'PREEMPT AND ABORT',
                PR_REGISTER_IGNORE: 'REGISTER AND IGNORE EXISTING KEY'}
# reservation types (the scope is always the logical unit: 0)
PR_WRITE_EXCLUSIVE, PR_EXCLUSIVE_ACCESS = 1, 3
PR_WE_REGISTRANTS_ONLY, PR_EA_REGISTRANTS_ONLY = 5, 6
PR_WE_ALL_REGISTRANTS, PR_EA_ALL_REGISTRANTS = 7, 8
PR_TYPES = {0: 'none', PR_WRITE_EXCLUSIVE: 'Write Exclusive',
            PR_EXCLUSIVE_ACCESS: 'Exclusive Access',
            PR_WE_REGISTRANTS_ONLY: 'Write Exclusive - Registrants Only',
            PR_EA_REGISTRANTS_ONLY: 'Exclusive Access - Registrants Only',
            PR_WE_ALL_REGISTRANTS: 'Write Exclusive - All Registrants',
            PR_EA_ALL_REGISTRANTS: 'Exclusive Access - All Registrants'}
PR_IN_LENGTH = 8192        # room for 1022 keys


def _pr_name(cdb: bytes) -> str:
    if cdb[0] == PR_IN:
        return {PR_READ_KEYS: 'PERSISTENT RESERVE IN READ KEYS',
                PR_READ_RESERVATION: 'PERSISTENT RESERVE IN READ RESERVATION'}.get(
                    cdb[1] & 0x1f, f'PERSISTENT RESERVE IN 0x{cdb[1] & 0x1f:02x}')
    return 'PERSISTENT RESERVE OUT ' + PR_OUT_NAMES.get(cdb[1] & 0x1f,
                                                        f'0x{cdb[1] & 0x1f:02x}')


def _command_name(cdb: bytes) -> str:
    if cdb[0] in (PR_IN, PR_OUT):
        return _pr_name(cdb)
    return {0x2a: 'WRITE(10)', 0x28: 'READ(10)', 0x8a: 'WRITE(16)'}.get(
        cdb[0], f'command 0x{cdb[0]:02x}')


def key_text(key: int) -> str:
    """A reservation key as sg_persist prints it: 0x + hex, no leading zeros."""
    return f'0x{key:x}'


@dataclass(frozen=True)
class Reservation:
    """READ RESERVATION: who holds which reservation (key 0, type 0: none)."""
    generation: int
    key: int = 0
    type: int = 0

    @property
    def held(self) -> bool:
        return self.type != 0

    @property
    def type_name(self) -> str:
        return PR_TYPES.get(self.type, f'type 0x{self.type:x}')


def pr_out_cdb(action: int, type_: int = 0, length: int = 24) -> bytes:
    """PERSISTENT RESERVE OUT (10 bytes): service action, scope 0 (LU) | type,
    parameter list length."""
    return struct.pack('>BBBHIB', PR_OUT, action & 0x1f, type_ & 0x0f, 0, length, 0)


def pr_out_parameters(key: int, sa_key: int = 0, aptpl: bool = False) -> bytes:
    """The 24-byte basic parameter list: reservation key, service action
    reservation key, (obsolete) scope address, flags (APTPL only; no SPEC_I_PT,
    no ALL_TG_PT), reserved, obsolete."""
    return struct.pack('>QQIBBH', key, sa_key, 0, 0x01 if aptpl else 0, 0, 0)


def pr_in_cdb(action: int, length: int = PR_IN_LENGTH) -> bytes:
    return struct.pack('>BB5sHB', PR_IN, action & 0x1f, b'', length, 0)


def pr_out(s: Session, lun: int, action: int, key: int = 0, sa_key: int = 0,
           type_: int = 0) -> None:
    s.scsi(lun, pr_out_cdb(action, type_), 0, data_out=pr_out_parameters(key, sa_key))


def parse_read_keys(data: bytes) -> tuple[int, list[int]]:
    """(PR generation, registered keys in the target's order)."""
    if len(data) < 8:
        raise ProtocolError(f'READ KEYS answered {len(data)} bytes')
    generation, length = struct.unpack('>II', data[:8])
    body = data[8:8 + length]
    return generation, [struct.unpack('>Q', body[i:i + 8])[0]
                        for i in range(0, len(body) - 7, 8)]


def parse_read_reservation(data: bytes) -> Reservation:
    if len(data) < 8:
        raise ProtocolError(f'READ RESERVATION answered {len(data)} bytes')
    generation, length = struct.unpack('>II', data[:8])
    if length < 16 or len(data) < 24:
        return Reservation(generation)
    return Reservation(generation, struct.unpack('>Q', data[8:16])[0], data[21] & 0x0f)


def pr_read_keys(s: Session, lun: int) -> tuple[int, list[int]]:
    return parse_read_keys(s.scsi(lun, pr_in_cdb(PR_READ_KEYS), PR_IN_LENGTH))


def pr_read_reservation(s: Session, lun: int) -> Reservation:
    return parse_read_reservation(s.scsi(lun, pr_in_cdb(PR_READ_RESERVATION),
                                         PR_IN_LENGTH))


def pr_register(s: Session, lun: int, key: int, ignore_existing: bool = True) -> None:
    """Register `key` for this I_T nexus.  REGISTER AND IGNORE EXISTING KEY
    (the default) also replaces whatever this nexus had; plain REGISTER
    works only for a nexus not yet registered (else RESERVATION CONFLICT)."""
    if ignore_existing:
        pr_out(s, lun, PR_REGISTER_IGNORE, 0, key)
    else:
        pr_out(s, lun, PR_REGISTER, 0, key)


def pr_unregister(s: Session, lun: int, key: int) -> None:
    """REGISTER with service action key 0: this nexus's registration goes."""
    pr_out(s, lun, PR_REGISTER, key, 0)


def pr_reserve(s: Session, lun: int, key: int,
               type_: int = PR_WE_REGISTRANTS_ONLY) -> None:
    pr_out(s, lun, PR_RESERVE, key, 0, type_)


def pr_release(s: Session, lun: int, key: int,
               type_: int = PR_WE_REGISTRANTS_ONLY) -> None:
    pr_out(s, lun, PR_RELEASE, key, 0, type_)


def pr_clear(s: Session, lun: int, key: int) -> None:
    """Every registration and the reservation go (the caller must be registered)."""
    pr_out(s, lun, PR_CLEAR, key)


def pr_preempt(s: Session, lun: int, key: int, victim: int,
               type_: int = PR_WE_REGISTRANTS_ONLY, abort: bool = True) -> None:
    """Remove every registration of `victim` (and take over its reservation,
    as `type_`, when it held it); with `abort`, PREEMPT AND ABORT: the
    victim's queued commands are aborted too."""
    pr_out(s, lun, PR_PREEMPT_AND_ABORT if abort else PR_PREEMPT, key, victim, type_)


# -- the probe a check runs -------------------------------------------------------
def probe(portal: Portal, target: str | None, lun: int = 1,
          initiator: str = DEFAULT_INITIATOR, chap: Chap | None = None,
          timeout: float = 5.0, discovery_chap: Chap | None = None,
          pr: bool = False) -> ProbeResult:
    """Discovery, then (with a target) login + TUR + INQUIRY + READ CAPACITY;
    with `pr`, also PERSISTENT RESERVE IN (READ KEYS, READ RESERVATION) on the
    same session: only reads, never a registration.

    Raises one IscsiError subclass per distinct failure: a target that sends
    what no target should (short or garbled PDUs, text that is not UTF-8) is a
    ProtocolError, a connection that breaks is PortalUnreachable.
    """
    try:
        return _probe(portal, target, lun, initiator, chap, timeout, discovery_chap, pr)
    except IscsiError:
        raise
    except (struct.error, IndexError, KeyError, ValueError, OverflowError,
            MemoryError) as exc:
        raise ProtocolError(f'portal {portal} sent a malformed answer '
                            f'({type(exc).__name__}: {exc})') from None
    except OSError as exc:
        raise PortalUnreachable(f'portal {portal}: connection broken '
                                f'({exc.strerror or exc})') from None


def _probe(portal, target, lun, initiator, chap, timeout, discovery_chap,
           pr=False) -> ProbeResult:
    result = ProbeResult(portal)
    with Session(portal, initiator, None, discovery_chap, timeout) as s:
        s.connect()
        result.connect_time = s.connect_time
        s.login()
        result.targets = s.send_targets()
        s.logout()
    if target is None:
        return result
    if target not in result.targets:
        offered = ', '.join(result.targets) or 'none'
        raise TargetMissing(f'target {target} not offered by {portal} to '
                            f'{initiator} (offered: {offered})')
    started = time.monotonic()
    with Session(portal, initiator, target, chap, timeout) as s:
        s.login()
        result.login_time = time.monotonic() - started
        result.luns = report_luns(s)
        if lun not in result.luns:
            raise LunMissing(f'target {target} has no LUN {lun} '
                             f'(LUNs: {", ".join(map(str, result.luns)) or "none"})')
        test_unit_ready(s, lun)
        info = inquiry(s, lun)
        info.capacity, info.block_size = read_capacity(s, lun)
        result.lun = info
        if pr:
            try:
                _, result.keys = pr_read_keys(s, lun)
                result.reservation = pr_read_reservation(s, lun)
            except (PrRefused, ReservationConflict) as exc:   # no PR support: said
                result.pr_error = str(exc)
        s.logout()
    return result


# -- parsers of real tool output --------------------------------------------------
@dataclass
class SessionState:
    """One session of `iscsiadm -m session -P 1`."""
    target: str
    portal: Portal
    sid: int = 0
    iface: str = ''
    initiator: str = ''
    connection: str = 'Unknown'     # 'LOGGED IN', 'TRANSPORT WAIT', ...
    session: str = 'Unknown'        # 'LOGGED_IN', 'FAILED', 'FREE'

    @property
    def logged_in(self) -> bool:
        return self.connection == 'LOGGED IN' and self.session == 'LOGGED_IN'


def parse_session_tree(text: str) -> list[SessionState]:
    """Parse `iscsiadm -m session -P 1` (open-iscsi 2.0.87x .. 2.1.x).

    Each session prints an Interface block; a second session to the same
    target and portal does not repeat the Target/Portal lines, so a session
    starts at its "Iface Name" (or at a second "SID" without one).
    """
    sessions: list[SessionState] = []
    target = portal = None
    for raw in text.splitlines():
        key, _, value = raw.strip().partition(':')
        value = value.strip()
        if raw.startswith('Target:'):
            target = value.split()[0]           # newer: 'IQN (non-flash)'
            continue
        if key == 'Current Portal':
            portal = Portal.parse(value)
            continue
        starts = key == 'Iface Name' or (key == 'SID' and (
            not sessions or sessions[-1].sid))
        if starts:
            if target is None or portal is None:
                raise ValueError(f'session data before Target/Portal: {raw!r}')
            sessions.append(SessionState(target, portal))
        if not sessions:
            continue
        s = sessions[-1]
        if key == 'Iface Name':
            s.iface = value
        elif key == 'SID':
            s.sid = int(value)
        elif key == 'Iface Initiatorname':
            s.initiator = value
        elif key == 'iSCSI Connection State':
            s.connection = value
        elif key == 'iSCSI Session State':
            s.session = value
    return sessions


@dataclass
class TgtLun:
    lun: int
    type: str = ''
    size_mb: int = 0
    online: bool = True
    backing_type: str = ''
    backing_path: str = ''


@dataclass
class TgtTarget:
    tid: int
    name: str
    state: str = ''
    luns: list = field(default_factory=list)
    accounts: list = field(default_factory=list)
    acls: list = field(default_factory=list)
    initiators: list = field(default_factory=list)   # connected (I_T nexus)

    @property
    def disks(self) -> list[TgtLun]:
        return [lun for lun in self.luns if lun.type != 'controller']


_TARGET_RE = re.compile(r'^Target (\d+): (\S+)$')


def parse_tgtadm_show(text: str) -> list[TgtTarget]:
    """Parse `tgtadm --lld iscsi --mode target --op show` (tgt 1.0.x)."""
    targets: list[TgtTarget] = []
    section = None
    for raw in text.splitlines():
        m = _TARGET_RE.match(raw)
        if m:
            targets.append(TgtTarget(int(m.group(1)), m.group(2)))
            section = None
            continue
        if not raw.strip():
            continue
        if not targets:
            raise ValueError(f'unexpected line before any target: {raw!r}')
        t = targets[-1]
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if indent == 4 and line.endswith(':'):
            section = line[:-1]
            continue
        key, _, value = line.partition(':')
        value = value.strip()
        if section == 'System information' and key == 'State':
            t.state = value
        elif section == 'I_T nexus information' and key == 'Initiator':
            t.initiators.append(value.split()[0])
        elif section == 'LUN information':
            if key == 'LUN':
                t.luns.append(TgtLun(int(value)))
            elif t.luns:
                lun = t.luns[-1]
                if key == 'Type':
                    lun.type = value
                elif key == 'Size':
                    lun.size_mb = int(value.split()[0])
                elif key == 'Online':
                    lun.online = value == 'Yes'
                elif key == 'Backing store type':
                    lun.backing_type = value
                elif key == 'Backing store path':
                    lun.backing_path = value
        elif section == 'Account information' and indent == 8:
            t.accounts.append(line.split()[0])
        elif section == 'ACL information' and indent == 8:
            t.acls.append(line)
    return targets


# -- what a spare dom0 runs (the failover engine's API) --------------------------
def device_path(portal: Portal, target: str, lun: int = 1) -> str:
    """The udev by-path name open-iscsi gives the LUN's block device."""
    from xenha.devices import iscsi_device
    return iscsi_device(portal.host, portal.port, target, lun)


def discovery_command(portal: Portal) -> list[str]:
    return ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', str(portal)]


def login_commands(portal: Portal, target: str) -> list[list[str]]:
    """argv lists to run (in order) on the spare; CHAP comes from the node
    record / iscsid.conf on that host, never from argv.  A login to a target
    the host is already logged in to exits 15 (ISCSI_ERR_SESS_EXISTS): treat
    that as success (see `login_ok`)."""
    return [discovery_command(portal),
            ['iscsiadm', '-m', 'node', '-T', target, '-p', str(portal), '--login']]


def logout_command(portal: Portal, target: str) -> list[str]:
    return ['iscsiadm', '-m', 'node', '-T', target, '-p', str(portal), '--logout']


def login_ok(exit_code: int) -> bool:
    """0 = logged in, 15 = session already exists (idempotent login)."""
    return exit_code in (0, 15)


def session_command() -> list[str]:
    return ['iscsiadm', '-m', 'session', '-P', '1']


def device_ready(session_output: str, portal: Portal, target: str) -> bool:
    """True when `iscsiadm -m session -P 1` shows that target logged in."""
    try:
        sessions = parse_session_tree(session_output)
    except ValueError:
        return False
    return any(s.target == target and s.portal.host == portal.host
               and s.portal.port == portal.port and s.logged_in
               for s in sessions)


def wait_device(runner, portal: Portal, target: str, timeout: float = 30.0,
                interval: float = 0.5, command_timeout: float = 10.0) -> bool:
    """Poll the session list on the host behind `runner` until logged in."""
    from xenha.storage import poll
    return poll(runner, session_command(), lambda out: device_ready(out, portal, target),
                timeout, interval, command_timeout)
