"""ATA over Ethernet: frame codec, a raw-socket probe, the `aoe-stat` parser,
and the commands a spare dom0 runs to find its AoE disks.

AoE is plain layer 2 (ethertype 0x88A2), so a probe needs a raw AF_PACKET
socket, i.e. root or CAP_NET_RAW.  A Query Config for shelf.slot is
broadcast on one interface; every target exporting that address answers
with its MAC, buffer count and firmware; an ATA IDENTIFY sent to one of
them tells the model and size.  More than one answer for the same
shelf.slot is two exports of the same address: a data-corruption risk.

Storage fencing uses two more commands of vblade (25, Debian's; frame layout
as its aoe.c/dat.h read them): Reserve/Release (3: read, set, force set of
the list of MACs allowed to do I/O; an empty list lets everyone; any ATA
command but IDENTIFY from a MAC outside a non-empty list gets error 6,
"target reserved"; a "set" from outside the list is refused the same way,
a "force set" never) and the Mac Mask List (2: read, or edit with add/delete
directives, the MACs vblade answers at all; a frame from a MAC outside a
non-empty mask gets no answer whatsoever).  `ata_write` / `ata_read` are
what a test needs to see the target refuse or accept I/O.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
ETH_P_AOE = 0x88A2
BROADCAST = b'\xff' * 6
SHELF_ANY, SLOT_ANY = 0xffff, 0xff
CMD_ATA, CMD_QUERY, CMD_MASK, CMD_RESERVE = 0, 1, 2, 3
FLAG_RESPONSE, FLAG_ERROR = 0x08, 0x04
ATA_IDENTIFY = 0xec
ATA_READ_EXT, ATA_WRITE_EXT = 0x24, 0x34
AFLAG_WRITE, AFLAG_EXTEND = 0x01, 0x40
ATA_STATUS_ERR = 0x01
SECTOR = 512
ERROR_RESERVED = 6
# Reserve/Release: read the list, set it (only from a MAC in it, or when it is
# empty), force set it (from anyone)
RR_READ, RR_SET, RR_FORCE_SET = 0, 1, 2
# Mac Mask List: read, edit; an edit carries directives
MASK_READ, MASK_EDIT = 0, 1
MD_NOP, MD_ADD, MD_DELETE = 0, 1, 2
MASK_ERRORS = {1: 'unspecified error', 2: 'bad directive', 3: 'mask list full'}
MIN_FRAME = 60          # Ethernet minimum without FCS; veth does not pad

ERRORS = {1: 'unrecognized command', 2: 'bad argument', 3: 'device unavailable',
          4: 'config string present', 5: 'unsupported version',
          6: 'target reserved'}


class AoeError(Exception):
    """The probe could not run (no interface, no permission, bad frame)."""


class NeedRawSocket(AoeError):
    """No CAP_NET_RAW: say how to grant it."""


class BadFrame(AoeError):
    """A frame that is not a well-formed AoE frame."""


class NoAnswer(AoeError):
    """The target did not answer in time (down, or a MAC mask leaves us out)."""


class Refused(AoeError):
    """The target answered with the AoE error flag; `.error` is its code
    (6: target reserved, i.e. the reserve list leaves the sender out)."""

    def __init__(self, message: str, error: int):
        super().__init__(message)
        self.error = error

    @property
    def reserved(self) -> bool:
        return self.error == ERROR_RESERVED


# -- codec ------------------------------------------------------------------------
@dataclass
class Frame:
    dst: bytes
    src: bytes
    shelf: int
    slot: int
    command: int
    tag: int
    flags: int = 0
    error: int = 0
    version: int = 1
    arg: bytes = b''

    @property
    def response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    def encode(self) -> bytes:
        head = struct.pack('>6s6sHBBHBBI', self.dst, self.src, ETH_P_AOE,
                           (self.version << 4) | self.flags, self.error,
                           self.shelf, self.slot, self.command, self.tag)
        frame = head + self.arg
        return frame + b'\0' * (MIN_FRAME - len(frame))

    @classmethod
    def decode(cls, raw: bytes) -> 'Frame':
        if len(raw) < 24:
            raise BadFrame(f'AoE frame too short ({len(raw)} bytes)')
        dst, src, etype, vf, err, shelf, slot, cmd, tag = struct.unpack(
            '>6s6sHBBHBBI', raw[:24])
        if etype != ETH_P_AOE:
            raise BadFrame(f'ethertype 0x{etype:04x} is not AoE')
        return cls(dst, src, shelf, slot, cmd, tag, vf & 0x0f, err, vf >> 4,
                   raw[24:])


def query_config(src: bytes, shelf: int, slot: int, tag: int,
                 dst: bytes = BROADCAST) -> Frame:
    """Query Config 'read' (ccmd 0): every target for shelf.slot answers."""
    arg = struct.pack('>HHBBH', 0, 0, 0, 0, 0)
    return Frame(dst, src, shelf, slot, CMD_QUERY, tag, arg=arg)


def ata_identify(src: bytes, dst: bytes, shelf: int, slot: int, tag: int) -> Frame:
    # aflags 0, feature 0, sector count 1, command IDENTIFY, lba 0, reserved
    arg = struct.pack('>BBBB6sH', 0, 0, 1, ATA_IDENTIFY, b'\0' * 6, 0)
    return Frame(dst, src, shelf, slot, CMD_ATA, tag, arg=arg)


def mac_bytes(text: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff', 'AA-BB-…' or 'aabbccddeeff' -> 6 bytes; ValueError."""
    digits = text.replace(':', '').replace('-', '')
    if len(digits) != 12:
        raise ValueError(f'not a MAC address: {text!r}')
    return bytes.fromhex(digits)


def reserve_frame(src: bytes, dst: bytes, shelf: int, slot: int, tag: int,
                  rcmd: int = RR_READ, macs=()) -> Frame:
    """Reserve/Release: rcmd u8, nmacs u8, then nmacs MACs of 6 bytes."""
    macs = [m if isinstance(m, bytes) else mac_bytes(m) for m in macs]
    if len(macs) > 255:
        raise ValueError('a reserve list holds at most 255 MACs')
    arg = struct.pack('>BB', rcmd, len(macs)) + b''.join(macs)
    return Frame(dst, src, shelf, slot, CMD_RESERVE, tag, arg=arg)


def decode_reserve(arg: bytes) -> tuple[int, list[str]]:
    """(rcmd, MACs of the list the target holds now) from a reply."""
    if len(arg) < 2:
        raise BadFrame('Reserve/Release argument too short')
    rcmd, n = arg[0], arg[1]
    if len(arg) < 2 + 6 * n:
        raise BadFrame(f'Reserve/Release reply announces {n} MACs, carries '
                       f'{(len(arg) - 2) // 6}')
    return rcmd, [mac_text(arg[2 + 6 * i:8 + 6 * i]) for i in range(n)]


def mask_frame(src: bytes, dst: bytes, shelf: int, slot: int, tag: int,
               cmd: int = MASK_READ, directives=()) -> Frame:
    """Mac Mask List: reserved u8, cmd u8, merror u8, nmacs u8, then one
    8-byte directive per MAC (reserved u8, directive u8, MAC)."""
    body = b''.join(struct.pack('>BB6s', 0, d, m if isinstance(m, bytes) else mac_bytes(m))
                    for d, m in directives)
    arg = struct.pack('>BBBB', 0, cmd, 0, len(directives)) + body
    return Frame(dst, src, shelf, slot, CMD_MASK, tag, arg=arg)


def decode_mask(arg: bytes) -> tuple[int, int, list[str]]:
    """(cmd, mask error, MACs) from a reply; on a mask error nmacs is the
    index of the directive that failed and no list follows."""
    if len(arg) < 4:
        raise BadFrame('Mac Mask argument too short')
    cmd, merror, n = arg[1], arg[2], arg[3]
    if merror:
        return cmd, merror, []
    if len(arg) < 4 + 8 * n:
        raise BadFrame(f'Mac Mask reply announces {n} MACs, carries {(len(arg) - 4) // 8}')
    return cmd, 0, [mac_text(arg[4 + 8 * i + 2:4 + 8 * i + 8]) for i in range(n)]


def _lba48(lba: int) -> bytes:
    # vblade reads the 6 LBA bytes least significant first
    return lba.to_bytes(6, 'little')


def ata_write(src: bytes, dst: bytes, shelf: int, slot: int, tag: int, lba: int,
              data: bytes) -> Frame:
    """WRITE SECTORS EXT of whole sectors (at most what the target's MTU takes)."""
    if not data or len(data) % SECTOR:
        raise ValueError(f'{len(data)} bytes is not a whole number of sectors')
    arg = struct.pack('>BBBB6sH', AFLAG_EXTEND | AFLAG_WRITE, 0, len(data) // SECTOR,
                      ATA_WRITE_EXT, _lba48(lba), 0) + data
    return Frame(dst, src, shelf, slot, CMD_ATA, tag, arg=arg)


def ata_read(src: bytes, dst: bytes, shelf: int, slot: int, tag: int, lba: int,
             sectors: int = 1) -> Frame:
    arg = struct.pack('>BBBB6sH', AFLAG_EXTEND, 0, sectors, ATA_READ_EXT, _lba48(lba), 0)
    return Frame(dst, src, shelf, slot, CMD_ATA, tag, arg=arg)


@dataclass
class Config:
    bufcnt: int
    firmware: int
    sectors: int         # max sectors per ATA command (0 = 2)
    aoe_version: int
    config: bytes


def decode_config(arg: bytes) -> Config:
    if len(arg) < 8:
        raise BadFrame('Query Config argument too short')
    bufcnt, fw, sc, verccmd, cslen = struct.unpack('>HHBBH', arg[:8])
    return Config(bufcnt, fw, sc, verccmd >> 4, arg[8:8 + cslen])


@dataclass
class Identity:
    model: str
    serial: str
    firmware: str
    sectors: int

    @property
    def size(self) -> int:
        return self.sectors * 512


def _ata_string(words: bytes) -> str:
    # ATA strings are big-endian within each 16-bit word
    swapped = b''.join(words[i + 1:i + 2] + words[i:i + 1]
                       for i in range(0, len(words), 2))
    return swapped.decode('ascii', 'replace').strip(' \0')


def decode_identify(arg: bytes) -> Identity:
    """ATA arg (12 bytes) + 512 IDENTIFY DEVICE bytes -> model, size."""
    data = arg[12:12 + 512]
    if len(data) < 512:
        raise BadFrame(f'IDENTIFY data is {len(data)} bytes, not 512')
    status = arg[3]
    if status & 0x01:                        # ERR bit in the ATA status
        raise BadFrame(f'IDENTIFY failed (ATA status 0x{status:02x})')
    words = struct.unpack('<256H', data)
    if words[83] & (1 << 10):                # LBA48 supported
        sectors = words[100] | words[101] << 16 | words[102] << 32 | words[103] << 48
    else:
        sectors = words[60] | words[61] << 16
    return Identity(_ata_string(data[54:94]), _ata_string(data[20:40]),
                    _ata_string(data[46:54]), sectors)


# -- probe ------------------------------------------------------------------------
@dataclass
class Responder:
    mac: str
    shelf: int
    slot: int
    rtt: float
    config: Config
    identity: Identity | None = None
    error: str = ''

    @property
    def name(self) -> str:
        return f'e{self.shelf}.{self.slot}'


def mac_text(raw: bytes) -> str:
    return ':'.join(f'{b:02x}' for b in raw)


@contextmanager
def netns(name: str):
    """Run the block in network namespace `name` (this thread only): for a
    monitoring node whose SAN interface lives in a namespace of its own.

    setns(2) moves only the calling thread; sockets made inside keep that
    namespace after we switch back.  Python 3.11 has no os.setns, so ctypes.
    """
    import ctypes    # only AoE from a namespace needs it
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    try:
        target = os.open(f'/var/run/netns/{name}', os.O_RDONLY)
    except OSError as exc:
        os.close(home)
        raise AoeError(f'network namespace {name}: {exc.strerror}') from None
    try:
        if libc.setns(target, CLONE_NEWNET):
            raise AoeError(f'cannot enter network namespace {name}: '
                           f'{os.strerror(ctypes.get_errno())}')
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), 'setns back')
    finally:
        os.close(home)
        os.close(target)


def open_socket(interface: str, netns_name: str | None = None) -> socket.socket:
    """A raw AoE socket bound to `interface` (in `netns_name` when given)."""
    if netns_name:
        with netns(netns_name):
            return open_socket(interface)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                             socket.htons(ETH_P_AOE))
    except PermissionError:
        raise NeedRawSocket(
            'AoE needs a raw socket (CAP_NET_RAW): run as root, through sudo '
            '(e.g. "nagios ALL=(root) NOPASSWD: /usr/lib/nagios/plugins/'
            'check_aoe_target"), or grant the capability to a copy of the '
            'interpreter: setcap cap_net_raw+ep /usr/local/lib/xenha-python3'
        ) from None
    try:
        sock.bind((interface, ETH_P_AOE))
    except OSError as exc:
        sock.close()
        raise AoeError(f'interface {interface}: {exc.strerror or exc}') from None
    return sock


def _collect(sock, tag: int, deadline: float, settle: float | None,
             started: float) -> list[tuple[Frame, float]]:
    """Answers carrying `tag` until `deadline`; once one arrived, wait only
    `settle` seconds more for others (None: wait for just one)."""
    got: list[tuple[Frame, float]] = []
    while True:
        now = time.monotonic()
        if got and settle is None:
            return got
        end = min(deadline, got[0][1] + started + settle) if got else deadline
        if now >= end:
            return got
        ready, _, _ = select.select([sock], [], [], end - now)
        if not ready:
            continue
        raw = sock.recv(9000)
        try:
            frame = Frame.decode(raw)
        except BadFrame:
            continue
        if frame.response and frame.tag == tag:
            got.append((frame, time.monotonic() - started))


def probe(interface: str, shelf: int = SHELF_ANY, slot: int = SLOT_ANY,
          timeout: float = 2.0, settle: float = 0.1,
          identify: bool = False, sock: socket.socket | None = None) -> list[Responder]:
    """Broadcast Query Config; one Responder per answer (maybe none).

    Waits up to `timeout` for the first answer, then `settle` seconds for
    duplicates (or, for wildcards, the rest of the segment).
    """
    own = sock is None
    sock = sock or open_socket(interface)
    try:
        src = sock.getsockname()[4]
        tag = int.from_bytes(os.urandom(4), 'big') & 0x7fffffff
        started = time.monotonic()
        sock.send(query_config(src, shelf, slot, tag).encode())
        answers = _collect(sock, tag, started + timeout, settle, started)
        out = []
        for frame, rtt in answers:
            r = Responder(mac_text(frame.src), frame.shelf, frame.slot, rtt,
                          decode_config(frame.arg))
            if frame.flags & FLAG_ERROR:
                r.error = ERRORS.get(frame.error, f'error {frame.error}')
            out.append(r)
        if identify:
            for r, (frame, _) in zip(out, answers):
                r.identity = _identify(sock, src, frame, timeout)
        return out
    finally:
        if own:
            sock.close()


def _identify(sock, src: bytes, answer: Frame, timeout: float) -> Identity | None:
    tag = int.from_bytes(os.urandom(4), 'big') & 0x7fffffff
    started = time.monotonic()
    sock.send(ata_identify(src, answer.src, answer.shelf, answer.slot, tag).encode())
    got = _collect(sock, tag, started + timeout, None, started)
    if not got:
        return None
    frame = got[0][0]
    if frame.flags & FLAG_ERROR:
        raise BadFrame(f'e{answer.shelf}.{answer.slot} refused IDENTIFY: '
                       f'{ERRORS.get(frame.error, frame.error)}')
    return decode_identify(frame.arg)


def request(sock, frame: Frame, timeout: float) -> Frame:
    """Send one frame (its tag replaced by a fresh one), return the answer.

    Raises NoAnswer after `timeout`, Refused when the answer has the error flag.
    """
    frame.tag = int.from_bytes(os.urandom(4), 'big') & 0x7fffffff
    started = time.monotonic()
    sock.send(frame.encode())
    got = _collect(sock, frame.tag, started + timeout, None, started)
    where = f'e{frame.shelf}.{frame.slot}'
    if not got:
        raise NoAnswer(f'{where} did not answer within {timeout:g}s (target down, or '
                       f'its MAC mask list leaves out {mac_text(frame.src)})')
    answer = got[0][0]
    if answer.flags & FLAG_ERROR:
        raise Refused(f'{where} refused {COMMANDS.get(frame.command, frame.command)} '
                      f'from {mac_text(frame.src)}: '
                      f'{ERRORS.get(answer.error, f"error {answer.error}")}', answer.error)
    return answer


COMMANDS = {CMD_ATA: 'the ATA command', CMD_QUERY: 'Query Config',
            CMD_MASK: 'the Mac Mask command', CMD_RESERVE: 'Reserve/Release'}


def _src(sock) -> bytes:
    return sock.getsockname()[4]


def reserve_list(sock, dst: bytes, shelf: int, slot: int, timeout: float) -> list[str]:
    """The target's reserve list (empty: every MAC may do I/O)."""
    answer = request(sock, reserve_frame(_src(sock), dst, shelf, slot, 0, RR_READ),
                     timeout)
    return decode_reserve(answer.arg)[1]


def set_reserve_list(sock, dst: bytes, shelf: int, slot: int, macs, timeout: float,
                     force: bool = True) -> list[str]:
    """Set (force: even from a MAC outside the list) the reserve list; returns
    the list the target answered with."""
    frame = reserve_frame(_src(sock), dst, shelf, slot, 0,
                          RR_FORCE_SET if force else RR_SET, macs)
    return decode_reserve(request(sock, frame, timeout).arg)[1]


def mask_list(sock, dst: bytes, shelf: int, slot: int, timeout: float) -> list[str]:
    """The MACs the target serves at all (empty: everyone)."""
    answer = request(sock, mask_frame(_src(sock), dst, shelf, slot, 0, MASK_READ), timeout)
    return decode_mask(answer.arg)[2]


def edit_mask_list(sock, dst: bytes, shelf: int, slot: int, add=(), delete=(),
                   timeout: float = 1.0) -> list[str]:
    directives = [(MD_ADD, m) for m in add] + [(MD_DELETE, m) for m in delete]
    frame = mask_frame(_src(sock), dst, shelf, slot, 0, MASK_EDIT, directives)
    cmd, merror, macs = decode_mask(request(sock, frame, timeout).arg)
    if merror:
        raise Refused(f'e{shelf}.{slot} refused the mask edit: '
                      f'{MASK_ERRORS.get(merror, f"mask error {merror}")}', merror)
    return macs


def write_sectors(sock, dst: bytes, shelf: int, slot: int, lba: int, data: bytes,
                  timeout: float) -> None:
    """ATA WRITE SECTORS EXT; Refused (error 6 = reserved) when the target says no."""
    answer = request(sock, ata_write(_src(sock), dst, shelf, slot, 0, lba, data), timeout)
    if len(answer.arg) >= 4 and answer.arg[3] & ATA_STATUS_ERR:
        raise Refused(f'e{shelf}.{slot}: ATA write failed (status '
                      f'0x{answer.arg[3]:02x}, error 0x{answer.arg[1]:02x})', 0)


def read_sectors(sock, dst: bytes, shelf: int, slot: int, lba: int, sectors: int,
                 timeout: float) -> bytes:
    answer = request(sock, ata_read(_src(sock), dst, shelf, slot, 0, lba, sectors), timeout)
    if len(answer.arg) >= 4 and answer.arg[3] & ATA_STATUS_ERR:
        raise Refused(f'e{shelf}.{slot}: ATA read failed (status '
                      f'0x{answer.arg[3]:02x}, error 0x{answer.arg[1]:02x})', 0)
    return answer.arg[12:12 + sectors * SECTOR]


# -- aoe-stat -----------------------------------------------------------------------
@dataclass
class AoeDevice:
    name: str             # 'e1.2'
    size: str             # '0.067GB' or '(NA)'
    netif: str
    state: str            # 'up', 'down', 'down,closewait', '(NA)'
    payload: str = ''

    @property
    def up(self) -> bool:
        return self.state.split(',')[0] == 'up'

    @property
    def size_bytes(self) -> int | None:
        if not self.size.endswith('GB'):
            return None
        return int(round(float(self.size[:-2]) * 1e9))


def parse_aoe_stat(text: str) -> list[AoeDevice]:
    """Parse aoe-stat (aoetools 30..37): name size netif [payload] state."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith('e') or 'Warning' in line:
            continue
        if len(parts) == 5:
            out.append(AoeDevice(parts[0], parts[1], parts[2], parts[4], parts[3]))
        elif len(parts) == 4:
            out.append(AoeDevice(parts[0], parts[1], parts[2], parts[3]))
        else:
            raise ValueError(f'unexpected aoe-stat line: {line!r}')
    return out


# -- what a spare dom0 runs (the failover engine's API) ------------------------------
def device_name(shelf: int, slot: int) -> str:
    return f'e{shelf}.{slot}'


def device_path(shelf: int, slot: int) -> str:
    from xenha.devices import aoe_device
    return aoe_device(shelf, slot)


def discover_commands() -> list[list[str]]:
    """argv lists to run on the spare: make the aoe driver probe the SAN."""
    return [['aoe-discover']]


def stat_command() -> list[str]:
    return ['aoe-stat']


def device_ready(stat_output: str, shelf: int, slot: int) -> bool:
    name = device_name(shelf, slot)
    try:
        return any(d.name == name and d.up for d in parse_aoe_stat(stat_output))
    except ValueError:
        return False


def wait_device(runner, shelf: int, slot: int, timeout: float = 30.0,
                interval: float = 0.5, command_timeout: float = 10.0) -> bool:
    """Poll aoe-stat on the host behind `runner` until eX.Y is up."""
    from xenha.storage import poll
    return poll(runner, stat_command(), lambda out: device_ready(out, shelf, slot),
                timeout, interval, command_timeout)
