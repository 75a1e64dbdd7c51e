"""`--perf` for check_iscsi_target and check_aoe_target: how fast does the
target serve a real read right now?

iSCSI: after the login, READ(10) of --bytes (default 16 MiB) at queue depth 1
in --record commands.  AoE: READ SECTORS EXT of --bytes, frames windowed by
the target's buffer count, the adaptive retransmit policy; any retransmit is
a WARNING (the target or the segment drops frames).  Perfdata: throughput
in B/s, latency p50 and p99 in s (per request).

-w / -c are throughput ranges (`-w 100M: -c 20M:`: WARNING below 100 MiB/s),
--latency-warning / --latency-critical ranges on the p99 latency in seconds.

Read-only, unless --write: then the same region is written first and read
back (and compared), which destroys what was there, so --write needs the
target to be in --inventory with `scratch = true`; anything else is refused
(UNKNOWN) before a byte is sent.
"""

from __future__ import annotations

import logging

import nagiosplugin

from xenha import plugin
from xenha.checks import status

_log = logging.getLogger('nagiosplugin')
DEFAULT_BYTES = 16 * 1024 * 1024


def add_arguments(p) -> None:
    g = p.add_argument_group('performance (--perf)')
    g.add_argument('--perf', action='store_true',
                   help='read --bytes from the target and judge throughput (-w/-c as '
                        'B/s ranges, e.g. -w 100M: -c 20M:) and p99 latency')
    g.add_argument('--bytes', default='16M', metavar='SIZE',
                   help='--perf: how much to read (default 16M)')
    g.add_argument('--record', default='64K', metavar='SIZE',
                   help='--perf: bytes per request (default 64K)')
    g.add_argument('--offset', default='0', metavar='SIZE',
                   help='--perf: where on the disk to start (default 0)')
    g.add_argument('--latency-warning', metavar='RANGE', default='',
                   type=plugin.range_arg(), help='--perf: p99 latency range in seconds, e.g. 0.05')
    g.add_argument('--latency-critical', metavar='RANGE', default='',
                   type=plugin.range_arg(), help='--perf: p99 latency range in seconds, e.g. 0.5')
    g.add_argument('--write', action='store_true',
                   help='--perf: write the region first, then read it back: only for a '
                        'target marked scratch = true in --inventory')
    plugin.add_inventory_argument(g)


def threshold_arg(text: str) -> str:
    """-w/-c of the storage checks: a range of seconds, or with --perf of B/s
    with size suffixes; checked here as the wider of the two, and again by
    `check_arguments` once --perf is known."""
    import argparse
    try:
        plugin.parse_range(text)                     # seconds: the checks' own
    except ValueError as exc:
        try:
            plugin.parse_range(text, sizes=True)     # B/s, for --perf
        except ValueError:
            raise argparse.ArgumentTypeError(str(exc)) from None   # the first's words
    return text


def check_arguments(p, args) -> None:
    """Option checks (usage errors are UNKNOWN with a status line)."""
    for opt, flag in (('warning', '-w'), ('critical', '-c')):   # s, or B/s with --perf
        try:
            setattr(args, opt, plugin.parse_range(getattr(args, opt), sizes=args.perf))
        except ValueError as exc:
            p.error(f'argument {flag}/--{opt}: {exc}'
                    + ('' if args.perf else ' (size suffixes only with --perf)'))
    if not args.perf:
        for opt in ('write', 'latency_warning', 'latency_critical'):
            if getattr(args, opt):
                p.error(f'--{opt.replace("_", "-")} needs --perf')
        return
    try:
        args.bytes = plugin.parse_size(args.bytes)
        args.record = plugin.parse_size(args.record)
        args.offset = plugin.parse_size(args.offset)
    except ValueError as exc:
        p.error(str(exc))
    if args.bytes <= 0 or args.record <= 0 or args.bytes % 512 or args.record % 512 \
            or args.offset % 512:
        p.error('--bytes, --record and --offset must be multiples of 512 bytes '
                '(and --bytes, --record more than 0)')


def scratch_guard(args, matches) -> None:
    """--write only on a target the inventory marks scratch; else CheckError."""
    if not args.write:
        return
    from xenha import inventory
    try:
        cluster = inventory.load(args.inventory)
    except inventory.InventoryError as exc:
        raise nagiosplugin.CheckError(f'--write: cannot read the inventory: '
                                      f'{exc.errors[0]}') from None
    except OSError as exc:
        raise nagiosplugin.CheckError(f'--write: cannot read the inventory '
                                      f'{args.inventory}: {exc.strerror}') from None
    found = [t for t in cluster.targets.values() if matches(t)]
    if not found:
        raise nagiosplugin.CheckError(
            f'refusing to write: this target is not in {args.inventory} (only a '
            f'target marked scratch = true there may be written)')
    if not all(t.scratch for t in found):
        names = ', '.join(t.name for t in found)
        raise nagiosplugin.CheckError(
            f'refusing to write: target {names} is not marked scratch = true in '
            f'{args.inventory} (a guest may use it)')
    users = sorted(u.name for u in cluster.domus.values()
                   for t in found if t.name in u.targets)
    if users:
        raise nagiosplugin.CheckError(
            f'refusing to write: target {found[0].name} is a disk of '
            f'{", ".join(users)} in {args.inventory}, scratch or not')


# --- acquisition ---------------------------------------------------------------------
class Perf(nagiosplugin.Resource):
    problem = None
    text = ''
    check_name = ''

    def __init__(self, args):
        self.args = args

    @property
    def name(self):
        return self.check_name

    @property
    def verdict(self):
        if self.problem is None:
            return nagiosplugin.Ok, self.text
        return nagiosplugin.Critical, self.problem

    def probe(self):
        metrics = list(self.measure())
        yield nagiosplugin.Metric('status', 0, context='status')
        yield from metrics

    def report(self, what, phases, extra=''):
        from xenha.storage.iscsi_io import percentile
        a = self.args
        words = []
        for st in phases:
            p50, p99 = percentile(st.latencies, 50), percentile(st.latencies, 99)
            words.append(f'{st.op} {_mib(st.nbytes)} in {st.seconds:.2f}s: '
                         f'{st.rate / 1e6:.1f}MB/s, latency p50 {p50 * 1000:.2f}ms '
                         f'p99 {p99 * 1000:.2f}ms')
            _log.info('%s: %d requests, longest stall %.6fs', st.op, st.commands,
                      st.longest_stall)
        self.text = f'{what}: ' + '; '.join(words) + extra
        for st in phases:
            # the read is what -w/-c judge; a --write's figures are shown too
            ctx = 'throughput' if st.op == 'read' else 'default'
            yield nagiosplugin.Metric(f'{st.op}_throughput', round(st.rate, 1), 'B/s',
                                      min=0, context=ctx)
            yield nagiosplugin.Metric(f'{st.op}_latency_p50',
                                      round(percentile(st.latencies, 50), 6), 's', min=0,
                                      context='default')
            yield nagiosplugin.Metric(f'{st.op}_latency_p99',
                                      round(percentile(st.latencies, 99), 6), 's', min=0,
                                      context='latency' if st.op == 'read' else 'default')
        if any(st.mismatches for st in phases):
            self.problem = (f'{self.text}; {sum(st.mismatches for st in phases)} requests '
                            f'read back other bytes than were written')


def _mib(n):
    return f'{n / 1024 ** 2:.1f}MiB'


def _pattern(record):
    from xenha.storage.iscsi_io import pattern
    return pattern(0x5eed, record)


class IscsiPerf(Perf):
    """`chap(args)` and `io_timeout(args)`: check_iscsi_target's own (it builds
    this resource: the perf module never imports a check)."""
    check_name = 'ISCSI_TARGET'

    def __init__(self, args, chap, io_timeout):
        super().__init__(args)
        self.chap, self.io_timeout = chap, io_timeout

    def measure(self):
        from xenha.storage import iscsi, iscsi_io
        chap, io_timeout = self.chap, self.io_timeout
        a = self.args
        if not a.target:
            raise nagiosplugin.CheckError('--perf needs --target IQN')
        scratch_guard(a, lambda t: t.kind == 'iscsi' and t.iqn == a.target
                      and t.lun == a.lun)
        portal = iscsi.Portal(a.hostname, a.port)
        try:
            with iscsi_io.Disk.open(portal, a.target, a.lun, a.initiator_name, chap(a),
                                    io_timeout(a)) as disk:
                if a.offset + a.bytes > disk.capacity:
                    raise nagiosplugin.CheckError(
                        f'--offset + --bytes is past the end of LUN {a.lun} '
                        f'({_mib(disk.capacity)})')
                phases = []
                data = _pattern(a.record) if a.write else None
                if a.write:
                    phases.append(disk.transfer('write', a.offset, a.bytes, a.record, 1,
                                                data=data))
                phases.append(disk.transfer('read', a.offset, a.bytes, a.record, 1,
                                            expect=data))
        except iscsi.ProtocolError as exc:
            raise nagiosplugin.CheckError(str(exc)) from None
        except iscsi.IscsiError as exc:
            self.problem = str(exc)
            return
        except ValueError as exc:
            raise nagiosplugin.CheckError(str(exc)) from None
        yield from self.report(f'{a.target} LUN {a.lun} at {portal}', phases)


class AoePerf(Perf):
    """`wait(args)`: check_aoe_target's own (it builds this resource)."""
    check_name = 'AOE_TARGET'

    def __init__(self, args, wait):
        super().__init__(args)
        self.wait = wait

    def measure(self):
        from xenha.storage import aoe, aoe_io
        wait = self.wait
        a = self.args
        if a.initiator or a.list:
            raise nagiosplugin.CheckError('--perf is a local-mode (raw socket) check of '
                                          'one --shelf/--slot')
        scratch_guard(a, lambda t: t.kind == 'aoe' and (t.shelf, t.slot) == (a.shelf,
                                                                              a.slot))
        name = aoe.device_name(a.shelf, a.slot)
        try:
            with aoe_io.Export(a.interface, a.shelf, a.slot, timeout=wait(a)) as ex:
                if a.offset + a.bytes > ex.capacity:
                    raise nagiosplugin.CheckError(
                        f'--offset + --bytes is past the end of {name} '
                        f'({_mib(ex.capacity)})')
                give_up = max(a.timeout - 0.5, a.timeout * 0.8)
                data = _pattern(a.record) if a.write else None
                phases = []
                if a.write:
                    phases.append(ex.transfer('write', a.offset, a.bytes, a.record,
                                              data=data, give_up=give_up))
                phases.append(ex.transfer('read', a.offset, a.bytes, a.record,
                                          expect=data, give_up=give_up))
                where = (f'{name} on {a.interface} from {ex.mac} ({ex.bufcnt} buffers, '
                         f'{ex.sectors * 512} B frames)')
        except aoe_io.AoeIoError as exc:
            self.problem = str(exc)
            return
        except aoe.AoeError as exc:
            raise nagiosplugin.CheckError(str(exc)) from None
        except ValueError as exc:
            raise nagiosplugin.CheckError(str(exc)) from None
        yield from self.report(where, phases)
        yield nagiosplugin.Metric('retransmits', sum(st.retransmits for st in phases), 'c',
                                  min=0, context='retransmits')


# --- evaluation ----------------------------------------------------------------------
def check(resource, args) -> nagiosplugin.Check:
    c = nagiosplugin.Check(
        resource, status.Status('status'),
        nagiosplugin.ScalarContext('throughput', args.warning, args.critical,
                                   fmt_metric='read throughput {valueunit}'),
        nagiosplugin.ScalarContext('latency', args.latency_warning,
                                   args.latency_critical,
                                   fmt_metric='read latency p99 {valueunit}'),
        nagiosplugin.ScalarContext('retransmits', '0', None,
                                   fmt_metric='{value} frames retransmitted'),
        status.StatusSummary())
    c.name = resource.check_name
    return c
