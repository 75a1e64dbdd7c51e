"""Block I/O over ATA over Ethernet from userspace: READ/WRITE SECTORS EXT
on raw frames, a window bounded by the target's buffer count, and two
retransmit policies, for the storage study and `check_aoe_target --perf`.

An AoE target answers each ATA frame with one frame (its data for a read,
its status for a write) and promises to hold `bufcnt` outstanding requests
(Query Config); what it cannot hold it drops, and the initiator must
retransmit.  How an initiator times that is most of AoE's behaviour under
load, so both timings are here, side by side:

* `Adaptive`: what initiators do today — a retransmit timeout from the
  smoothed round trip and its variation (RFC 6298's gains; today's Linux
  driver's 2 x average + 8 x deviation, with a 20 ms floor), Karn's rule,
  exponential backoff per frame, and a window that halves on loss and grows
  back by one per window of answers (AIMD);
* `Linux2007`: the Linux aoe driver of 2006-2007 (drivers/block/aoe,
  kernels 2.6.18-2.6.23), which the thesis' dom0s ran: a 100 ms timer; a
  frame older than 1.5 x the average round trip is resent; that average
  starts at 2 s, follows answers with gain 1/4 but never below a 200 ms
  floor; every tick that resends anything doubles it (up to 2 s); the window
  is the target's buffer count (at most 16) and never shrinks.

Data per frame: as many 512-byte sectors as the interface MTU carries after
the 36 header bytes (2 at MTU 1500, 17 at 9000), at most what the target
said.  The socket is a raw AF_PACKET socket (CAP_NET_RAW) bound to one
interface: in the lab, only inside the lab's own network namespaces.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field

from xenha.storage import aoe
from xenha.storage.iscsi_io import percentile  # noqa: F401  (one percentile rule)

ATA_READ_EXT, ATA_WRITE_EXT = 0x24, 0x34
AFLAG_EXT, AFLAG_WRITE = 0x40, 0x01
HEADER = 36                     # Ethernet 14 + AoE 10 + ATA 12
SECTOR = 512
SOL_PACKET, PACKET_STATISTICS = 263, 6
SIOCGIFMTU = 0x8921


class AoeIoError(aoe.AoeError):
    """The target refused a request, or never answered it."""


# -- retransmit policies ------------------------------------------------------------
class Adaptive:
    """RTO = 2 SRTT + 8 RTTVAR (RFC 6298's gains 1/8 and 1/4; the factors of
    today's Linux aoe driver), at least `min_rto` (20 ms: a loaded host's
    scheduling jitter, not loss), at most 2 s; a frame's own timeout doubles
    at each resend; AIMD window <= bufcnt."""

    name = 'adaptive'

    def __init__(self, bufcnt: int, min_rto: float = 0.02, max_rto: float = 2.0):
        self.limit = max(1, bufcnt)
        self.cwnd = float(self.limit)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rto, self.max_rto = min_rto, max_rto
        self.last_cut = 0.0

    @property
    def window(self) -> int:
        return max(1, int(self.cwnd))

    def rto(self) -> float:
        if self.srtt is None:
            return 0.2
        return min(self.max_rto, max(self.min_rto, 2 * self.srtt + 8 * self.rttvar))

    def timeout(self, tries: int) -> float:
        return min(self.max_rto, self.rto() * (2 ** tries))

    def answered(self, rtt: float, retransmitted: bool, now: float) -> None:
        if not retransmitted:                # Karn: no sample from a resent frame
            if self.srtt is None:
                self.srtt, self.rttvar = rtt, rtt / 2
            else:
                self.rttvar += (abs(self.srtt - rtt) - self.rttvar) / 4
                self.srtt += (rtt - self.srtt) / 8
        if self.cwnd < self.limit:
            self.cwnd = min(self.limit, self.cwnd + 1 / self.cwnd)

    def late(self, age: float) -> None:
        """An answer to a tag already resent."""

    def lost(self, now: float) -> None:
        if now - self.last_cut > (self.srtt or 0.0):   # once per round trip
            self.cwnd = max(1.0, self.cwnd / 2)
            self.last_cut = now

    # the 2007 driver resends only at its timer ticks; this one any time
    tick = None

    def resent_this_tick(self) -> None:
        pass


class Linux2007:
    """The 2.6.18-2.6.23 aoe driver's timing (see the module docstring)."""

    name = 'linux-2007'
    TICK, MINTIMER, MAXTIMER, MAXFRAMES = 0.1, 0.2, 2.0, 16

    def __init__(self, bufcnt: int):
        self.limit = max(1, min(bufcnt, self.MAXFRAMES))
        self.rttavg = self.MAXTIMER          # set so by the driver's IDENTIFY
        self.mintimer = self.MINTIMER
        self.tick = self.TICK

    @property
    def window(self) -> int:
        return self.limit

    def timeout(self, tries: int) -> float:
        return 1.5 * self.rttavg             # "~150% of the moving average"

    def _sample(self, n: float) -> float:
        return min(max(n, self.mintimer), self.MAXTIMER)

    def answered(self, rtt: float, retransmitted: bool, now: float) -> None:
        self.rttavg += (self._sample(rtt) - self.rttavg) / 4

    def late(self, age: float) -> None:
        n = min(max(age, self.MINTIMER), self.MAXTIMER)
        self.mintimer += (n - self.mintimer) / 2

    def lost(self, now: float) -> None:
        pass

    def resent_this_tick(self) -> None:
        self.rttavg = min(self.rttavg * 2, self.MAXTIMER)


POLICIES = {'adaptive': Adaptive, 'linux-2007': Linux2007}


# -- results -------------------------------------------------------------------------
@dataclass
class AoeStats:
    op: str
    nbytes: int = 0
    commands: int = 0             # application requests (records)
    frames: int = 0
    seconds: float = 0.0
    started: float = 0.0
    latencies: list = field(default_factory=list)   # per record, seconds
    longest_stall: float = 0.0    # longest time without any answer
    retransmits: int = 0
    late_answers: int = 0         # answers to a tag already resent
    mismatches: int = 0
    completed: bool = True        # False: stopped at the deadline
    socket_drops: int = 0         # frames our own socket dropped

    @property
    def rate(self) -> float:
        return self.nbytes / self.seconds if self.seconds > 0 else 0.0


class _Frame:
    __slots__ = ('tag', 'record', 'offset', 'size', 'sent', 'first_sent', 'tries')


class _Record:
    __slots__ = ('offset', 'size', 'buf', 'left', 'started', 'next')


# -- the target ------------------------------------------------------------------------
class Export:
    """One AoE export (eSHELF.SLOT) as an initiator sees it."""

    def __init__(self, interface: str, shelf: int, slot: int, timeout: float = 2.0,
                 rcvbuf: int = 4 << 20):
        self.interface, self.shelf, self.slot = interface, shelf, slot
        self.sock = aoe.open_socket(interface)
        try:
            for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
                try:                                      # *BUFFORCE: root only
                    self.sock.setsockopt(socket.SOL_SOCKET, force, rcvbuf)
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
            self.src = self.sock.getsockname()[4]
            found = aoe.probe(interface, shelf, slot, timeout=timeout, settle=0.0,
                              identify=True, sock=self.sock)
            if not found:
                raise AoeIoError(f'no AoE target answers for e{shelf}.{slot} on '
                                 f'{interface} within {timeout:g}s')
            first = found[0]
            if first.identity is None:
                raise AoeIoError(f'e{shelf}.{slot} on {interface} did not answer '
                                 f'ATA IDENTIFY')
            self.responders = len(found)
            self.mac = first.mac
            self.dst = bytes.fromhex(first.mac.replace(':', ''))
            self.bufcnt = first.config.bufcnt or 1
            self.firmware = first.config.firmware
            self.capacity = first.identity.size
            self.model = first.identity.model
            self.mtu = interface_mtu(self.sock, interface)
            by_mtu = max(1, (self.mtu - HEADER) // SECTOR)
            self.sectors = min(by_mtu, first.config.sectors or 2)
        except BaseException:
            self.sock.close()
            raise
        self._tag = int.from_bytes(os.urandom(2), 'big') << 8
        self._resent: dict[int, float] = {}            # old tag -> when it was sent
        self._head = struct.pack('>6s6sHBBHBB', self.dst, self.src, aoe.ETH_P_AOE,
                                 0x10, 0, shelf, slot, aoe.CMD_ATA)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def drops(self) -> int:
        """Frames our socket dropped since the last call (the kernel resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return struct.unpack('II', raw)[1]

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0x7fffffff
        return self._tag

    def _packet(self, tag: int, write: bool, lba: int, count: int, data) -> bytes:
        arg = struct.pack('<BBBB', AFLAG_EXT | (AFLAG_WRITE if write else 0), 0, count,
                          ATA_WRITE_EXT if write else ATA_READ_EXT) \
            + lba.to_bytes(6, 'little') + b'\0\0'
        frame = self._head + struct.pack('>I', tag) + arg
        if write:
            frame += data
        return frame + b'\0' * (aoe.MIN_FRAME - len(frame)) if len(frame) < aoe.MIN_FRAME \
            else frame

    # -- the data path ----------------------------------------------------------------
    def transfer(self, op: str, offset: int, nbytes: int, record: int = 65536,
                 depth: int = 1, policy: str = 'adaptive', data=None, expect=None,
                 progress=None, deadline: float | None = None,
                 give_up: float = 30.0) -> AoeStats:
        """READ or WRITE `nbytes` at byte `offset`, `record` bytes per
        application request, `depth` requests open at once, frames in flight
        bounded by the policy's window.

        data/expect/progress as in `iscsi_io.Disk.transfer`.  `deadline`
        (time.monotonic()) ends the transfer unfinished (stats.completed False);
        a frame unanswered for `give_up` seconds raises AoeIoError.
        """
        if op not in ('read', 'write'):
            raise ValueError(op)
        if offset % SECTOR or nbytes % SECTOR or record % SECTOR:
            raise ValueError('offset, size and record must be multiples of 512 bytes')
        if offset + nbytes > self.capacity:
            raise ValueError(f'{offset + nbytes} B is past the end of '
                             f'e{self.shelf}.{self.slot} ({self.capacity} B)')
        write = op == 'write'
        if write and data is None:
            raise ValueError('a write needs data')
        pol = POLICIES[policy](self.bufcnt)
        stats = AoeStats(op)
        self.drops()                                    # reset the counter
        frame_bytes = self.sectors * SECTOR
        sock = self.sock
        inflight: dict[int, _Frame] = {}
        records: list[_Record] = []                     # open, in order
        todo: deque[_Frame] = deque()                   # frames not sent yet
        pos, end = offset, offset + nbytes
        started = time.monotonic()
        stats.started = time.time()
        last_answer = started
        next_tick = started + pol.tick if pol.tick else None
        sock.setblocking(False)
        try:
            while pos < end or records:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stats.completed = False
                    break
                # open records up to `depth`, cut into frames
                while pos < end and len(records) < depth:
                    rec = _Record()
                    rec.offset, rec.size = pos, min(record, end - pos)
                    rec.buf = data(pos, rec.size) if write else bytearray(rec.size)
                    rec.left = 0
                    rec.started = now
                    for off in range(0, rec.size, frame_bytes):
                        f = _Frame()
                        f.record, f.offset = rec, off
                        f.size = min(frame_bytes, rec.size - off)
                        f.tries, f.first_sent, f.tag = 0, 0.0, 0
                        rec.left += 1
                        todo.append(f)
                    records.append(rec)
                    pos += rec.size
                # send what the window allows
                sent = 0
                while todo and len(inflight) < pol.window:
                    f = todo.popleft()
                    self._send(f, write, now)
                    inflight[f.tag] = f
                    sent += 1
                stats.frames += sent
                # wait for answers, a timeout or the next timer tick
                wake = self._wakeup(pol, inflight, next_tick, now)
                if deadline is not None:
                    wake = min(wake, deadline)
                ready, _, _ = select.select([sock], [], [], max(0.0, wake - now))
                now = time.monotonic()
                answered = False
                if ready:
                    for raw in self._drain():
                        f = self._answer(raw, inflight, pol, stats, now)
                        if f is None:
                            continue
                        answered = True
                        rec = f.record
                        if not write:
                            rec.buf[f.offset:f.offset + f.size] = \
                                raw[HEADER:HEADER + f.size]
                        rec.left -= 1
                    # records end in order (an application reads sequentially)
                    while records and records[0].left == 0:
                        rec = records.pop(0)
                        stats.latencies.append(now - rec.started)
                        stats.nbytes += rec.size
                        stats.commands += 1
                        if expect is not None and not write and \
                                bytes(rec.buf) != expect(rec.offset, rec.size):
                            stats.mismatches += 1
                        if progress is not None:
                            progress(stats.nbytes)
                stats.longest_stall = max(stats.longest_stall, now - last_answer)
                if answered:
                    last_answer = now
                # retransmit what timed out
                if pol.tick is None:
                    self._expire(pol, inflight, write, stats, now, give_up)
                elif now >= next_tick:
                    self._expire(pol, inflight, write, stats, now, give_up)
                    next_tick = now + pol.tick
        finally:
            sock.setblocking(True)
        stats.seconds = time.monotonic() - started
        stats.socket_drops = self.drops()
        return stats

    def _send(self, f: _Frame, write: bool, now: float) -> None:
        f.tag = self._next_tag()
        rec = f.record
        chunk = rec.buf[f.offset:f.offset + f.size] if write else None
        packet = self._packet(f.tag, write, (rec.offset + f.offset) // SECTOR,
                              f.size // SECTOR, chunk)
        f.sent = now
        if not f.first_sent:
            f.first_sent = now
        try:
            self.sock.send(packet)
        except BlockingIOError:
            pass                           # a full send queue is a lost frame

    def _drain(self):
        while True:
            try:
                yield self.sock.recv(65536)
            except BlockingIOError:
                return

    def _answer(self, raw: bytes, inflight, pol, stats, now) -> _Frame | None:
        if len(raw) < HEADER or raw[12:14] != b'\x88\xa2':
            return None
        flags = raw[14] & 0x0f
        if not flags & aoe.FLAG_RESPONSE or raw[19] != aoe.CMD_ATA:
            return None
        if struct.unpack('>HB', raw[16:19]) != (self.shelf, self.slot):
            return None
        if raw[0:6] != self.src:
            return None
        tag = struct.unpack('>I', raw[20:24])[0]
        f = inflight.pop(tag, None)
        if f is None:
            sent = self._resent.pop(tag, None)
            if sent is not None:                        # the answer to a resent tag
                stats.late_answers += 1
                pol.late(now - sent)
            return None
        if flags & aoe.FLAG_ERROR:
            code = raw[15]
            raise AoeIoError(f'e{self.shelf}.{self.slot} refused an ATA request: '
                             f'{aoe.ERRORS.get(code, f"error {code}")}')
        status = raw[27]                     # the ATA argument's cmd/status byte
        if status & 0xa9:                    # BSY, DF, DRQ or ERR: the 2007 test
            raise AoeIoError(f'e{self.shelf}.{self.slot}: ATA error (status '
                             f'0x{status:02x}) at byte {f.record.offset + f.offset}')
        pol.answered(now - f.sent, f.tries > 0, now)
        return f

    def _wakeup(self, pol, inflight, next_tick, now) -> float:
        if pol.tick is not None:
            return next_tick
        if not inflight:
            return now + 0.05
        return min(f.sent + pol.timeout(f.tries) for f in inflight.values())

    def _expire(self, pol, inflight, write, stats, now, give_up) -> None:
        expired = [f for f in inflight.values()
                   if now - f.sent >= pol.timeout(f.tries)]
        if not expired:
            return
        if len(self._resent) > 65536:
            self._resent.clear()
        for f in expired:
            del inflight[f.tag]
            self._resent[f.tag] = f.sent
            if now - f.first_sent > give_up:
                raise AoeIoError(f'e{self.shelf}.{self.slot} on {self.interface}: no '
                                 f'answer for {give_up:g}s (byte '
                                 f'{f.record.offset + f.offset}, {f.tries} resends)')
            f.tries += 1
            stats.retransmits += 1
            pol.lost(now)
        pol.resent_this_tick()
        # resent frames go first, and bypass the window, as the 2007 driver did
        for f in expired:
            self._send(f, write, now)
            inflight[f.tag] = f


def interface_mtu(sock: socket.socket, interface: str) -> int:
    req = struct.pack('16si', interface.encode()[:15], 0)
    try:
        return struct.unpack('16si', fcntl.ioctl(sock.fileno(), SIOCGIFMTU, req))[1]
    except OSError:
        return 1500
