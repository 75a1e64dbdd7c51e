"""Block I/O over xenha's own iSCSI session: READ(10) and WRITE(10) with a
window of commands in flight, for the storage study and `check_iscsi_target
--perf`.

The login, CHAP, UNIT ATTENTION handling and error classes are those of
`xenha.storage.iscsi`; this module adds only the data path (RFC 7143):

* a WRITE(10) carries what the login allowed as immediate data
  (ImmediateData=Yes: up to FirstBurstLength and the target's
  MaxRecvDataSegmentLength), the rest goes in Data-Out PDUs when the target
  asks with an R2T (InitialR2T=Yes, as we offer it and tgtd keeps it);
* a READ(10) is answered by Data-In PDUs (status in the last one, or a SCSI
  Response);
* up to `window` commands are in flight, never past the target's MaxCmdSN;
  each one's latency is the time from its command PDU to its status.

Nothing here writes unless asked to: `Disk.transfer('read', ...)` is what a
check runs on a guest's LUN.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from xenha.storage import iscsi
from xenha.storage.iscsi import (OP_ASYNC, OP_DATA_IN, OP_NOP_IN, OP_REJECT,
                                 OP_SCSI_CMD, OP_SCSI_RSP, pdu, lun_field)

OP_DATA_OUT, OP_R2T = 0x05, 0x31
READ10, WRITE10 = 0x28, 0x2a
MAX_BLOCKS10 = 0xffff           # READ(10)/WRITE(10) transfer length field


class IoSession(iscsi.Session):
    """A Session that keeps the operational keys the target answered."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.negotiated: dict[str, str] = {}

    def _login_step(self, csg, nsg, transit, keys):
        got, answer = super()._login_step(csg, nsg, transit, keys)
        if csg == iscsi.STAGE_OPERATIONAL:
            self.negotiated.update(answer)
        return got, answer

    def limit(self, key: str, default: int) -> int:
        try:
            return int(self.negotiated.get(key, default))
        except ValueError:
            return default


@dataclass
class IoStats:
    """What one transfer did, as the study and the perf check report it."""
    op: str
    nbytes: int = 0
    commands: int = 0
    seconds: float = 0.0
    started: float = 0.0          # time.time() of the first command
    latencies: list = field(default_factory=list)   # seconds, one per command
    longest_stall: float = 0.0    # longest time without a completion
    mismatches: int = 0           # reads that did not return what `expect` said
    r2t: int = 0                  # R2Ts the target sent (writes)

    @property
    def rate(self) -> float:
        return self.nbytes / self.seconds if self.seconds > 0 else 0.0


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a list; 0.0 when empty.

    >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4], 99), percentile([], 50)
    (2, 4, 0.0)
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def pattern(seed: int, record: int):
    """data(offset, size): bytes to write at `offset` (and to expect back there),
    unique per offset and seed, cheap to make: one random record stamped with
    the offset and the seed."""
    import random
    body = random.Random(seed).randbytes(max(record, 16))

    def data(offset: int, size: int) -> bytes:
        stamp = offset.to_bytes(8, 'big') + seed.to_bytes(8, 'big')
        return (stamp + body[16:])[:size] if size <= len(body) else \
            b''.join(data(offset + o, min(len(body), size - o))
                     for o in range(0, size, len(body)))
    return data


def _sn_lte(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982, 32 bits): a <= b."""
    return a == b or 0 < ((b - a) & 0xffffffff) < 0x80000000


class _Command:
    __slots__ = ('itt', 'lba', 'blocks', 'data', 'sent', 'buf', 'received')

    def __init__(self, itt, lba, blocks, data, nbytes):
        self.itt, self.lba, self.blocks, self.data = itt, lba, blocks, data
        self.sent = 0.0
        self.buf = bytearray(nbytes) if data is None else None
        self.received = 0


class Disk:
    """One logged-in LUN.  `Disk.open(...)` logs in and reads the capacity."""

    def __init__(self, session: IoSession, lun: int, capacity: int, block_size: int):
        self.s = session
        self.lun = lun
        self.capacity = capacity
        self.block_size = block_size
        self._rfile = None
        self.max_cmdsn = session.cmdsn      # learnt from every answer

    @classmethod
    def open(cls, portal: iscsi.Portal, target: str, lun: int = 1,
             initiator: str = iscsi.DEFAULT_INITIATOR, chap: iscsi.Chap | None = None,
             timeout: float = 10.0, source: str | None = None) -> 'Disk':
        s = IoSession(portal, initiator, target, chap, timeout, source=source)
        try:
            s.login()
            iscsi.test_unit_ready(s, lun)      # takes the new nexus' UNIT ATTENTION
            capacity, block = iscsi.read_capacity(s, lun)
        except BaseException:
            s.close()
            raise
        return cls(s, lun, capacity, block)

    def close(self, logout: bool = True) -> None:
        if logout and self.s.sock is not None:
            self.s.logout()
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(logout=exc[0] is None)

    # -- the data path ------------------------------------------------------------
    def transfer(self, op: str, offset: int, nbytes: int, record: int = 65536,
                 window: int = 1, data=None, expect=None, progress=None) -> IoStats:
        """READ or WRITE `nbytes` from byte `offset` in `record`-byte commands,
        up to `window` in flight.

        data(offset, size) -> bytes: what a write sends at that offset;
        expect(offset, size) -> bytes: what a read must return (mismatches are
        counted, not raised); progress(done_bytes): called as commands end.
        """
        if op not in ('read', 'write'):
            raise ValueError(op)
        bs = self.block_size
        if offset % bs or nbytes % bs or record % bs:
            raise ValueError(f'offset, size and record must be multiples of {bs} bytes')
        if record // bs > MAX_BLOCKS10:
            raise ValueError(f'record {record} B is more than READ(10) can carry')
        if offset + nbytes > self.capacity:
            raise ValueError(f'{offset + nbytes} B is past the end of the LUN '
                             f'({self.capacity} B)')
        if op == 'write' and data is None:
            raise ValueError('a write needs data')
        s = self.s
        if self._rfile is None:
            self._rfile = s.sock.makefile('rb', buffering=1 << 18)
        segment = s.limit('MaxRecvDataSegmentLength', 8192)
        immediate_ok = s.negotiated.get('ImmediateData', 'Yes') == 'Yes'
        first_burst = s.limit('FirstBurstLength', 65536)
        stats = IoStats(op)
        inflight: dict[int, _Command] = {}
        pos, end = offset, offset + nbytes
        started = time.monotonic()
        stats.started = time.time()
        last_done = started
        while pos < end or inflight:
            while (pos < end and len(inflight) < window
                   and _sn_lte(s.cmdsn, self.max_cmdsn)):
                size = min(record, end - pos)
                itt = s._next_itt()
                cmd = _Command(itt, pos // bs, size // bs,
                               data(pos, size) if op == 'write' else None, size)
                self._send_command(cmd, size, immediate_ok, first_burst, segment)
                inflight[itt] = cmd
                pos += size
            if not inflight:
                # the target's command window is closed: a NOP-Out ping's
                # answer carries its MaxCmdSN
                s._nop_out(ttt=b'\xff\xff\xff\xff', itt=s._next_itt())
                self._pump(inflight, stats, segment)
                continue
            done = self._pump(inflight, stats, segment)
            if done is None:
                continue
            now = time.monotonic()
            stats.latencies.append(now - done.sent)
            stats.longest_stall = max(stats.longest_stall, now - last_done)
            last_done = now
            size = done.blocks * bs
            stats.nbytes += size
            stats.commands += 1
            if expect is not None and done.buf is not None:
                if bytes(done.buf) != expect(done.lba * bs, size):
                    stats.mismatches += 1
            if progress is not None:
                progress(stats.nbytes)
        stats.seconds = time.monotonic() - started
        return stats

    def _send_command(self, cmd: _Command, size: int, immediate_ok: bool,
                      first_burst: int, segment: int) -> None:
        s = self.s
        write = cmd.data is not None
        opcode = WRITE10 if write else READ10
        cdb = struct.pack('>BBIBHB', opcode, 0, cmd.lba, 0, cmd.blocks, 0)
        immediate = b''
        if write and immediate_ok:
            immediate = cmd.data[:min(first_burst, segment)]
        flags = 0x80 | (0x20 if write else 0x40) | 0x01          # F, W or R, SIMPLE
        rest = b'\0\0' + lun_field(self.lun) + struct.pack(
            '>IIII', cmd.itt, size, s.cmdsn, s.exp_statsn) + cdb.ljust(16, b'\0')
        cmd.sent = time.monotonic()
        s.send(pdu(OP_SCSI_CMD, flags, rest, immediate))
        s.cmdsn = (s.cmdsn + 1) & 0xffffffff

    def _read_pdu(self) -> tuple[bytes, bytes]:
        s = self.s
        try:
            head = self._rfile.read(48)
            if len(head) < 48:
                raise iscsi.PortalUnreachable(
                    f'portal {s.portal} closed the connection during I/O')
            ahs = head[4] * 4
            dlen = int.from_bytes(head[5:8], 'big')
            body = self._rfile.read(ahs + dlen + (-dlen % 4)) if ahs + dlen else b''
        except TimeoutError:
            raise iscsi.PortalTimeout(
                f'portal {s.portal}: no answer to I/O within {s.timeout:g}s '
                f'(target hung?)') from None
        except OSError as exc:
            raise iscsi.PortalUnreachable(
                f'portal {s.portal}: {exc.strerror or exc} during I/O') from None
        return head, body[ahs:ahs + dlen]

    def _pump(self, inflight: dict, stats: IoStats, segment: int) -> _Command | None:
        """Handle one PDU from the target; the command it ended, if any."""
        s = self.s
        head, seg = self._read_pdu()
        op = head[0] & 0x3f
        if op in (OP_SCSI_RSP, OP_DATA_IN, OP_R2T, OP_NOP_IN):
            max_cmdsn = struct.unpack('>I', head[32:36])[0]
            if _sn_lte(self.max_cmdsn, max_cmdsn):
                self.max_cmdsn = max_cmdsn
        if op == OP_NOP_IN:
            if head[1] & 0x80 and head[20:24] != b'\xff\xff\xff\xff':
                s._nop_out(ttt=head[20:24], itt=0xffffffff)
            return None
        if op == OP_ASYNC:
            return None
        if op == OP_REJECT:
            raise iscsi.ProtocolError(f'portal {s.portal} rejected a PDU during I/O '
                                      f'(reason 0x{head[2]:02x})')
        itt = struct.unpack('>I', head[16:20])[0]
        cmd = inflight.get(itt)
        if cmd is None:
            raise iscsi.ProtocolError(f'portal {s.portal} answered task 0x{itt:08x}, '
                                      f'which is not ours')
        if op == OP_DATA_IN:
            if cmd.buf is None:
                raise iscsi.ProtocolError('Data-In for a write')
            offset = struct.unpack('>I', head[40:44])[0]
            cmd.buf[offset:offset + len(seg)] = seg
            cmd.received += len(seg)
            if head[1] & 0x01:                        # status in the Data-In
                s.exp_statsn = (struct.unpack('>I', head[24:28])[0] + 1) & 0xffffffff
                self._check(cmd, head[3], b'')
                return inflight.pop(itt)
            return None
        if op == OP_R2T:
            stats.r2t += 1
            ttt = head[20:24]
            offset, wanted = struct.unpack('>II', head[40:48])
            self._data_out(cmd, ttt, offset, wanted, segment)
            return None
        if op == OP_SCSI_RSP:
            s.exp_statsn = (struct.unpack('>I', head[24:28])[0] + 1) & 0xffffffff
            if head[2]:
                raise iscsi.TargetUnavailable(
                    f'target {s.target}: command failed at the iSCSI level '
                    f'(response 0x{head[2]:02x})')
            sense = seg[2:2 + int.from_bytes(seg[:2], 'big')] if len(seg) >= 2 else b''
            self._check(cmd, head[3], sense)
            return inflight.pop(itt)
        raise iscsi.ProtocolError(f'unexpected opcode 0x{op:02x} during I/O')

    def _data_out(self, cmd: _Command, ttt: bytes, offset: int, wanted: int,
                  segment: int) -> None:
        """The burst an R2T asked for, in PDUs of at most `segment` bytes."""
        s = self.s
        pdus, datasn, done = [], 0, 0
        while done < wanted:
            n = min(segment, wanted - done)
            last = done + n >= wanted
            rest = b'\0\0' + lun_field(self.lun) + struct.pack(
                '>I4sIIIII', cmd.itt, ttt, 0, s.exp_statsn, 0, datasn,
                offset + done) + b'\0' * 4
            pdus.append(pdu(OP_DATA_OUT, 0x80 if last else 0, rest,
                            cmd.data[offset + done:offset + done + n]))
            datasn += 1
            done += n
        s.send(b''.join(pdus))

    def _check(self, cmd: _Command, status: int, sense: bytes) -> None:
        if status == 0:
            return
        where = f'LUN {self.lun} of {self.s.target}'
        what = 'WRITE(10)' if cmd.data is not None else 'READ(10)'
        if status == 0x02:
            key, asc, ascq = iscsi.parse_sense(sense)
            name = iscsi.SENSE_KEYS.get(key, f'sense key 0x{key:x}')
            raise iscsi.LunNotReady(f'{where}: {what} at block {cmd.lba} failed '
                                    f'({name}, ASC/ASCQ 0x{asc:02x}/0x{ascq:02x})')
        if status == 0x18:
            raise iscsi.LunNotReady(f'{where}: {what} refused (RESERVATION CONFLICT)')
        raise iscsi.LunNotReady(f'{where}: {what} got SCSI status 0x{status:02x}')
