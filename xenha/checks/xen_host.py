"""check_xen_host - is this dom0's Xen toolstack healthy, and how much room is left?

Lists the domains and the host's memory with `xl`/`xm` (locally, or on -H
over SSH), reports the domains by state as perfdata, alerts on crashed,
dying or paused guests, checks free memory against -w/-c (the room a
failover needs), and records the listing in the state cache so that
check_xen_domu and the failover engine know where every domU was last seen.

  check_xen_host -H dom0-1 -l root -i /etc/xenha/id_ed25519 \\
      --known-hosts /etc/xenha/known_hosts -w 4G: -c 2G:
"""

import logging
import time

import nagiosplugin

from xenha import plugin

_log = logging.getLogger('nagiosplugin')
SEVERITY = {'ok': nagiosplugin.Ok, 'warning': nagiosplugin.Warn,
            'critical': nagiosplugin.Critical}


# --- acquisition ---------------------------------------------------------------
class XenHost(nagiosplugin.Resource):
    def __init__(self, args):
        self.args = args
        self.domains = []
        self.info = None
        self.cache_note = ''

    @property
    def name(self):
        return 'XEN_HOST'

    def probe(self):
        from xenha.runner import RunnerError
        from xenha.xen import State, ToolstackError
        runner = plugin.make_runner(self.args)
        try:
            with runner:
                ts = plugin.toolstack(runner, self.args)
                # the state cache is opened while the toolstack works
                self.domains, self.info = ts.list_and_info(meanwhile=self.open_cache)
        except (RunnerError, ToolstackError) as exc:
            self.close_cache()
            raise nagiosplugin.CheckError(plugin.describe(exc)) from None
        _log.info('%s: %s, %d domains', self.where, ts.dialect, len(self.domains))
        for d in self.domains:
            _log.debug('%s id=%s %s %s', d.name, d.domid, d.flags, d.state.value)
        self.record()
        guests = [d for d in self.domains if not d.is_dom0]
        for state in State:
            if state is State.INACTIVE:
                continue
            yield nagiosplugin.Metric(
                f'domains_{state.value}', sum(d.state is state for d in guests),
                min=0, context=f'domains_{state.value}')
        yield nagiosplugin.Metric('free_memory', self.info.free_memory, 'B', min=0,
                                  max=self.info.total_memory, context='free_memory')
        yield nagiosplugin.Metric('total_memory', self.info.total_memory, 'B', min=0,
                                  context='default')

    @property
    def where(self):
        return self.args.hostname or (self.info.host if self.info else 'localhost')

    def open_cache(self):
        """Open the state cache (imports sqlite3); trouble is kept for record()."""
        self.db = self.cache_error = None
        if self.args.no_cache:
            return
        try:
            from xenha.state import StateDB
            self.db = StateDB(self.args.state_db)
        except Exception as exc:  # noqa: BLE001 - any cache trouble is reported, not fatal
            self.cache_error = exc

    def close_cache(self):
        if getattr(self, 'db', None) is not None:
            self.db.close()
            self.db = None

    def record(self):
        """Write the listing to the state cache; a failure here is not the host's."""
        if self.args.no_cache:
            return
        try:
            if self.cache_error is not None:
                raise self.cache_error
            # a locked cache may take what -t leaves, not its own 10 s: the
            # verdict about the host must still be printed
            from xenha import timing
            self.db.set_busy_timeout(timing.bound(10.0, margin=0.3))
            self.db.record_listing(self.args.hostname or self.info.host, self.domains,
                                   self.info, taken_at=time.time())
        except Exception as exc:  # noqa: BLE001 - any cache trouble is reported, not fatal
            self.cache_note = f' (state cache not written: {plugin.describe(exc)})'
            _log.warning('state cache %s: %s', self.args.state_db, exc)
        finally:
            self.close_cache()


# --- evaluation ------------------------------------------------------------------
class StateCount(nagiosplugin.Context):
    """Non-zero count of guests in a bad state → the configured severity."""

    def __init__(self, name, state_name, severity):
        super().__init__(name)
        self.state_name = state_name
        self.severity = severity

    def evaluate(self, metric, resource):
        if metric.value == 0:
            return self.result_cls(nagiosplugin.Ok, metric=metric)
        names = ', '.join(d.name for d in resource.domains
                          if not d.is_dom0 and d.state.value == self.state_name)
        return self.result_cls(self.severity, f'{self.state_name}: {names}', metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, min=0)


# --- presentation ------------------------------------------------------------------
def _gib(n):
    return f'{n / 1024 ** 3:.1f}GiB'


class HostSummary(nagiosplugin.Summary):
    def ok(self, results):
        res = results.first_significant.resource if results.first_significant \
            else results[0].resource
        guests = [d for d in res.domains if not d.is_dom0]
        states = {}
        for d in guests:
            states[d.state.value] = states.get(d.state.value, 0) + 1
        detail = ', '.join(f'{n} {s}' for s, n in sorted(states.items()))
        return (f'{res.where}: {len(guests)} domU{"s" if len(guests) != 1 else ""}'
                f'{f" ({detail})" if detail else ""}, {_gib(res.info.free_memory)} of '
                f'{_gib(res.info.total_memory)} free{res.cache_note}')

    def problem(self, results):
        res = results.first_significant.resource
        if res is None or res.info is None:   # CheckError: the hint is the reason
            return results.first_significant.hint
        hints = []
        for r in results.most_significant:
            if r.metric and r.metric.name == 'free_memory':
                hints.append(f'{_gib(r.metric.value)} free of {_gib(res.info.total_memory)} '
                             f'({r.hint})')
            elif r.hint:
                hints.append(r.hint)
        return f'{res.where}: ' + '; '.join(hints) + res.cache_note


# --- main ----------------------------------------------------------------------------
def parse_args(argv=None):
    p = plugin.ArgumentParser('XEN_HOST', __doc__)
    plugin.add_ssh_arguments(p)
    plugin.add_toolstack_arguments(p)
    p.add_argument('-w', '--warning', metavar='RANGE', default='',
                   type=plugin.range_arg(sizes=True),
                   help='free-memory range (bytes, suffixes K M G T), e.g. 4G:')
    p.add_argument('-c', '--critical', metavar='RANGE', default='',
                   type=plugin.range_arg(sizes=True),
                   help='free-memory range, e.g. 2G:')
    p.add_argument('--crashed', choices=SEVERITY, default='critical',
                   help='state for crashed or dying guests (default critical)')
    p.add_argument('--paused', choices=SEVERITY, default='warning',
                   help='state for paused guests (default warning)')
    p.add_argument('--state-db', metavar='FILE', default=None,
                   help='state cache (default /var/lib/xenha/state.db or $XENHA_STATE_DB)')
    p.add_argument('--no-cache', action='store_true', help='do not record the listing')
    plugin.add_common_arguments(p)
    return p.parse_args(argv)


@nagiosplugin.guarded      # under plugin.run in the installed command
def main():
    args = parse_args()
    crashed, paused = SEVERITY[args.crashed], SEVERITY[args.paused]
    check = nagiosplugin.Check(
        XenHost(args),
        nagiosplugin.ScalarContext('free_memory', args.warning, args.critical),
        StateCount('domains_running', 'running', nagiosplugin.Ok),
        StateCount('domains_blocked', 'blocked', nagiosplugin.Ok),
        StateCount('domains_paused', 'paused', paused),
        StateCount('domains_shutdown', 'shutdown', nagiosplugin.Ok),
        StateCount('domains_crashed', 'crashed', crashed),
        StateCount('domains_dying', 'dying', crashed),
        HostSummary())
    check.name = 'XEN_HOST'
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == '__main__':
    main()
