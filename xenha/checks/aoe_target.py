"""check_aoe_target - does exactly one AoE target answer for shelf.slot?

Local mode (on a node of the SAN segment) broadcasts a real AoE Query Config
for --shelf/--slot on --interface and waits for the answers: none is
CRITICAL, more than one is WARNING (two exports of one address corrupt
data), one is OK with its MAC, buffer count and firmware; --identify adds an
ATA IDENTIFY (model, size).  --list asks every shelf and slot (wildcards).

The probe needs a raw socket (CAP_NET_RAW): run it as root, through sudo
(`nagios ALL=(root) NOPASSWD: /usr/lib/nagios/plugins/check_aoe_target`), or
under an interpreter copy with the capability (`setcap cap_net_raw+ep`).

Initiator mode (-H a dom0 over SSH, or --initiator locally on it) asks the
dom0's aoe driver: the device is known and `up` in `aoe-stat`.

  check_aoe_target --interface eth1 --shelf 1 --slot 2 --identify -w 0.01 -c 0.1
  check_aoe_target --interface eth1 --list
  check_aoe_target -H dom0-1 -i KEY --known-hosts FILE --shelf 1 --slot 2
"""

import logging

import nagiosplugin

from xenha import plugin, timing
from xenha.checks import status
from xenha.storage import aoe

_log = logging.getLogger('nagiosplugin')


# --- acquisition ------------------------------------------------------------------
class AoeTarget(nagiosplugin.Resource):
    """`self.state` / `self.text`: the verdict the status context reports."""

    state = nagiosplugin.Ok
    text = ''

    def __init__(self, args):
        self.args = args

    @property
    def name(self):
        return 'AOE_TARGET'

    @property
    def verdict(self):
        return self.state, self.text

    @property
    def device(self):
        return aoe.device_name(self.args.shelf, self.args.slot)

    def probe(self):
        # measure first: the status metric is evaluated as soon as it is yielded
        metrics = list(self.measure())
        yield nagiosplugin.Metric('status', 0, context='status')
        yield from metrics


class Segment(AoeTarget):
    """A real Query Config on the L2 segment."""

    def measure(self):
        a = self.args
        shelf, slot = (aoe.SHELF_ANY, aoe.SLOT_ANY) if a.list else (a.shelf, a.slot)
        try:
            found = aoe.probe(a.interface, shelf, slot, timeout=wait(a),
                              settle=a.settle, identify=a.identify)
        except aoe.AoeError as exc:   # no permission, no interface: cannot decide
            raise nagiosplugin.CheckError(str(exc)) from None
        for r in found:
            _log.info('%s from %s: bufcnt %d, firmware 0x%04x, %.6fs%s', r.name, r.mac,
                      r.config.bufcnt, r.config.firmware, r.rtt,
                      f', {r.identity.model}, {r.identity.size} B' if r.identity else '')
        if a.list:
            yield from self.listing(found)
            return
        if a.verbose > 0:
            log_lists(a, found)
        if not found:
            self.state = nagiosplugin.Critical
            self.text = (f'no AoE target answers for {self.device} on {a.interface} '
                         f'within {wait(a):g}s')
            return
        # count answers, not MACs: two vblades on one interface share a MAC
        macs = sorted(r.mac for r in found)
        first = found[0]
        if len(macs) > 1:
            self.state = nagiosplugin.Warn
            self.text = (f'{len(macs)} targets answer for {self.device} on '
                         f'{a.interface}: {", ".join(macs)} (duplicate export: '
                         f'data corruption risk)')
        elif first.error:
            self.state = nagiosplugin.Critical
            self.text = f'{self.device} on {a.interface} answers with an error: {first.error}'
        else:
            ident = first.identity
            model = f'{ident.model}, {ident.size / 1024 ** 2:.1f}MiB, ' if ident else ''
            self.text = (f'{self.device} on {a.interface} answered by {first.mac} '
                         f'({model}{first.config.bufcnt} buffers, firmware '
                         f'0x{first.config.firmware:04x})')
        yield nagiosplugin.Metric('rtt', round(first.rtt, 6), 's', min=0, context='rtt')
        yield nagiosplugin.Metric('buffers', first.config.bufcnt, min=0,
                                  context='default')
        yield nagiosplugin.Metric('responders', len(macs), min=0, context='default')
        if first.identity:
            yield nagiosplugin.Metric('size', first.identity.size, 'B', min=0,
                                      context='default')

    def listing(self, found):
        a = self.args
        by_name = {}
        for r in found:
            by_name.setdefault(r.name, []).append(r.mac)
        dups = sorted(n for n, macs in by_name.items() if len(macs) > 1)
        if not found:
            self.state = nagiosplugin.Critical
            self.text = f'no AoE target answers on {a.interface} within {wait(a):g}s'
            return
        names = sorted(by_name, key=lambda n: tuple(map(int, n[1:].split('.'))))
        self.text = (f'{len(names)} AoE target{"s" if len(names) != 1 else ""} on '
                     f'{a.interface}: {", ".join(names)}')
        if dups:
            self.state = nagiosplugin.Warn
            self.text += f'; answered more than once: {", ".join(dups)}'
        yield nagiosplugin.Metric('targets', len(names), min=0, context='default')
        yield nagiosplugin.Metric('rtt', round(min(r.rtt for r in found), 6), 's',
                                  min=0, context='rtt')


def log_lists(a, found):
    """-v: each export's reserve list and MAC mask list (what storage fencing
    uses; -v is nagiosplugin's WARNING level); reads only, a second at most."""
    if not found:
        return
    try:
        sock = aoe.open_socket(a.interface)
    except (aoe.AoeError, OSError) as exc:
        _log.warning('reserve list: not readable (%s)', exc)
        return
    try:
        for r in found:
            if timing.RUN.expired(margin=0.5):
                _log.warning('reserve lists: not read (-t %gs is nearly used up)',
                             a.timeout)
                return
            dst = aoe.mac_bytes(r.mac)
            try:
                rlist = aoe.reserve_list(sock, dst, a.shelf, a.slot, timing.bound(1.0))
                masks = aoe.mask_list(sock, dst, a.shelf, a.slot, timing.bound(1.0))
            except (aoe.AoeError, OSError, ValueError) as exc:
                _log.warning('%s from %s: reserve list not readable (%s)', r.name, r.mac, exc)
                continue
            _log.warning('%s from %s: reserve list %s; mac mask %s', r.name, r.mac,
                      ', '.join(rlist) or 'empty (every MAC may do I/O)',
                      ', '.join(masks) or 'empty (every MAC is served)')
    finally:
        sock.close()


class Initiator(AoeTarget):
    """The dom0's aoe driver view, from `aoe-stat`."""

    def measure(self):
        from xenha.runner import RunnerError
        a = self.args
        where = a.hostname or 'localhost'
        try:
            with plugin.make_runner(a) as runner:
                # the whole remote command may take what -t leaves, not just
                # the time we would wait for an AoE answer
                r = runner.run(aoe.stat_command(),
                               timeout=max(a.timeout - 0.5, a.timeout * 0.8))
        except RunnerError as exc:
            raise nagiosplugin.CheckError(plugin.describe(exc)) from None
        if r.exit:
            raise nagiosplugin.CheckError(f'aoe-stat on {where} failed: {r.reason()}')
        try:
            devices = {d.name: d for d in aoe.parse_aoe_stat(r.out)}
        except ValueError as exc:
            raise nagiosplugin.CheckError(f'cannot parse aoe-stat output: {exc}')
        d = devices.get(self.device)
        if d is None:
            self.state = nagiosplugin.Critical
            self.text = (f'{self.device} is unknown to the aoe driver on {where} '
                         f'(run aoe-discover; known: {", ".join(devices) or "none"})')
        elif not d.up:
            self.state = nagiosplugin.Critical
            self.text = f'{self.device} is {d.state} on {where} ({d.netif})'
        else:
            self.text = f'{self.device} is up on {where} via {d.netif}, {d.size}'
        yield nagiosplugin.Metric('devices_up', sum(x.up for x in devices.values()),
                                  min=0, context='default')
        if d is not None and d.size_bytes is not None:
            yield nagiosplugin.Metric('size', d.size_bytes, 'B', min=0,
                                      context='default')


# --- main ---------------------------------------------------------------------------
def wait(args):
    """How long to wait for answers: below -t, so we report, not nagiosplugin."""
    return args.wait if args.wait is not None else max(min(args.timeout - 0.5, 2.0), 0.1)



def parse_args(argv=None):
    from xenha.checks import storage_perf
    p = plugin.ArgumentParser('AOE_TARGET', __doc__)
    p.add_argument('--interface', metavar='IF', help='local mode: the SAN interface')
    p.add_argument('--shelf', type=int, help='AoE shelf (major) number')
    p.add_argument('--slot', type=int, help='AoE slot (minor) number')
    p.add_argument('--list', action='store_true',
                   help='local mode: list every target on the segment (wildcards)')
    p.add_argument('--identify', action='store_true',
                   help='local mode: also send ATA IDENTIFY (model, size)')
    p.add_argument('--wait', type=plugin.seconds_arg(0, 3600), metavar='SECONDS',
                   help='how long to wait for the first answer (default min(-t - 0.5, 2))')
    p.add_argument('--settle', type=plugin.seconds_arg(0, 60, low_ok=True), default=0.1,
                   metavar='SECONDS',
                   help='after the first answer, wait this long for duplicates '
                        '(default 0.1)')
    p.add_argument('--initiator', action='store_true',
                   help='initiator mode on this dom0 (implied by -H)')
    p.add_argument('-w', '--warning', metavar='RANGE', default='',
                   type=storage_perf.threshold_arg,
                   help='round-trip time range in seconds, e.g. 0.01; --perf: read throughput in B/s, e.g. 100M:')
    p.add_argument('-c', '--critical', metavar='RANGE', default='',
                   type=storage_perf.threshold_arg,
                   help='round-trip time range in seconds, e.g. 0.1; --perf: read throughput in B/s, e.g. 20M:')
    plugin.add_ssh_arguments(p)
    p.add_argument('--sudo', action='store_true', help="prefix aoe-stat with 'sudo -n'")
    plugin.add_common_arguments(p)
    storage_perf.add_arguments(p)
    args = p.parse_args(argv)
    args.initiator = args.initiator or bool(args.hostname)
    if args.perf and (args.initiator or args.list):
        p.error('--perf is a local-mode (raw socket) check of one --shelf/--slot')
    if not args.list and (args.shelf is None or args.slot is None):
        p.error('--shelf and --slot are required (or --list)')
    if args.list and args.initiator:
        p.error('--list is a local-mode (raw socket) listing')
    if not args.initiator and not args.interface:
        p.error('local mode needs --interface (or -H DOM0 for initiator mode)')
    if args.interface is not None:
        from xenha import grammar
        if grammar.interface(args.interface):
            p.error(f'--interface: {grammar.interface(args.interface)}')
    if args.wait is not None and args.wait >= args.timeout:
        p.error(f'--wait {args.wait:g} leaves nothing of -t {args.timeout:g}')
    for name, top in (('shelf', 0xfffe), ('slot', 0xfe)):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= top:
            p.error(f'--{name} must be 0..{top}')
    storage_perf.check_arguments(p, args)
    return args


@nagiosplugin.guarded      # under plugin.run in the installed command
def main():
    args = parse_args()
    if args.perf:
        from xenha.checks import storage_perf
        storage_perf.check(storage_perf.AoePerf(args, wait), args).main(
            verbose=args.verbose, timeout=args.timeout)
        return
    resource = Initiator(args) if args.initiator else Segment(args)
    check = nagiosplugin.Check(
        resource, status.Status('status'),
        nagiosplugin.ScalarContext('rtt', args.warning, args.critical,
                                   fmt_metric='round trip {valueunit}'),
        status.StatusSummary())
    check.name = 'AOE_TARGET'
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == '__main__':
    main()
