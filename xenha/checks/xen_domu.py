"""check_xen_domu - does this domU run, and on one host only?

Looks for the domain on one dom0 (-H, or locally), or on every dom0 of the
cluster (--cluster INVENTORY, scanned in parallel).  OK when it runs or is
blocked (idle); WARNING when paused or shutting down; CRITICAL when missing,
crashed, dying, or running on two hosts at once ("split brain": two guests
writing one disk).  A dom0 that does not answer and is not fenced may still
run what its last cached listing showed: a domU seen only there is WARNING
("maybe on ..."), one that runs elsewhere too is CRITICAL ("maybe running
twice"); a fenced dom0's listing never counts.  With --max-age the listing cached by check_xen_host is
used when fresh enough, so a cluster of many domUs does not pay one SSH per
domU per check.

  check_xen_domu --cluster /etc/xenha/cluster.toml --domain web1 --max-age 60
"""

import logging

import nagiosplugin

from xenha import plugin

_log = logging.getLogger('nagiosplugin')


# --- acquisition ---------------------------------------------------------------
class Place:
    """Where a look at one dom0 found the domain (or why it could not look).
    `maybe`: the host did not answer, and its last cached listing (taken at
    that Unix time, no fence since) shows the domain."""

    def __init__(self, host, domain=None, error=None, age=None, maybe=None):
        self.host, self.domain, self.error, self.age = host, domain, error, age
        self.maybe = maybe


class XenDomU(nagiosplugin.Resource):
    def __init__(self, args):
        self.args = args
        self.places = []
        self.fenced = {}      # dom0 address -> when it was fenced (state cache)
        self._cache = None
        import threading
        self._cache_lock = threading.Lock()

    @property
    def name(self):
        return 'XEN_DOMU'

    def targets(self):
        """(label, cache key, runner factory, toolstack options) for each dom0."""
        a = self.args
        if not a.cluster:
            host = a.hostname or None
            return [(host or 'localhost', host, lambda: plugin.make_runner(a),
                     (a.toolstack, a.toolstack_command))]
        from xenha import inventory
        from xenha.runner import SSHOptions, make_runner
        try:
            cluster = inventory.load(a.cluster)
        except (OSError, inventory.InventoryError) as exc:
            raise nagiosplugin.CheckError(
                f'cannot load inventory: {plugin.describe(exc)}') from None
        d = cluster.defaults
        self.state_db = a.state_db or d.state_db
        out = []
        for h in cluster.dom0s.values():
            opts = SSHOptions(user=h.ssh_user, port=h.port, identity=h.ssh_key,
                              known_hosts=h.known_hosts, sudo=d.sudo)
            out.append((h.name, h.address,
                        lambda opts=opts, h=h: make_runner(h.address, opts, a.timeout),
                        (a.toolstack if a.toolstack != 'auto' else d.toolstack,
                         a.toolstack_command or d.toolstack_command)))
        return out

    def look(self, label, key, runner_factory, ts_opts, cache):
        if cache is not None and key is not None:
            listing = cache.get(key)
            if listing is not None and self.fenced.get(key, 0) > listing.taken_at:
                # fenced since: whatever the listing says, nothing runs there now
                _log.info('%s: fenced after its cached listing', label)
                return Place(label, age=listing.age())
            if listing is not None and listing.age() <= self.args.max_age:
                _log.info('%s: cached listing, %.0fs old', label, listing.age())
                for d in listing.domains:
                    if d['name'] == self.args.domain:
                        return Place(label, _from_cache(d), age=listing.age())
                return Place(label, age=listing.age())
        from xenha.runner import RunnerError
        from xenha.xen import Toolstack, ToolstackError
        try:
            with runner_factory() as runner:
                ts = Toolstack(runner, ts_opts[0], ts_opts[1],
                               timeout=max(self.args.timeout - 0.5, 0.5))
                for d in ts.list():
                    if d.name == self.args.domain:
                        return Place(label, d)
                return Place(label)
        except (RunnerError, ToolstackError) as exc:
            _log.info('%s: %s', label, exc)
            return Place(label, error=plugin.describe(exc), maybe=self.maybe(label, key))

    def maybe(self, label, key):
        """When a silent dom0's last listing (not fenced since) shows the domain:
        its time, else None (cluster mode only: the cache is read on demand)."""
        if not self.args.cluster or key is None:
            return None
        with self._cache_lock:
            if self._cache is None:
                self._cache = self.load_cache()
        listing = self._cache.get(key)
        if listing is None or self.fenced.get(key, 0) >= listing.taken_at:
            return None
        if any(d['name'] == self.args.domain and d['state'] != 'inactive'
               for d in listing.domains):
            _log.info('%s: its last listing (%.0fs old) shows %s', label, listing.age(),
                      self.args.domain)
            return listing.taken_at
        return None

    def probe(self):
        self.state_db = self.args.state_db
        targets = self.targets()
        cache = self._cache = self.load_cache() if self.args.max_age is not None else None
        if len(targets) == 1:
            self.places = [self.look(*targets[0], cache)]
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
                self.places = list(pool.map(lambda t: self.look(*t, cache), targets))
        found = [p for p in self.places if p.domain is not None
                 and p.domain.state.present]
        if not self.args.cluster and self.places[0].error:
            raise nagiosplugin.CheckError(self.places[0].error)
        if not found and all(p.error for p in self.places) and not self.doubts:
            raise nagiosplugin.CheckError(
                'no dom0 answered: ' + '; '.join(f'{p.host}: {p.error}' for p in self.places))
        yield nagiosplugin.Metric('hosts', len(found), min=0, context='hosts')
        if len(found) == 1:
            d = found[0].domain
            yield nagiosplugin.Metric('state', d.state, context='state')
            yield nagiosplugin.Metric('cpu_time', round(d.cpu_time, 1), 'c', min=0,
                                      context='default')
            yield nagiosplugin.Metric('memory', d.memory, 'B', min=0, context='default')
            yield nagiosplugin.Metric('vcpus', d.vcpus, min=0, context='default')

    def load_cache(self):
        from xenha.state import StateDB
        try:
            with StateDB(self.state_db) as db:
                self.fenced = db.fenced_hosts()
                return {l.host: l for l in db.listings()}
        except Exception as exc:  # noqa: BLE001 - no cache: fall back to SSH
            _log.warning('state cache unreadable (%s): asking the dom0s', exc)
            return {}

    @property
    def found(self):
        return [p for p in self.places if p.domain is not None and p.domain.state.present]

    @property
    def doubts(self):
        return [p for p in self.places if p.maybe is not None]

    def doubt_text(self):
        import time
        return ' and '.join(
            f'maybe on {p.host} (unreachable since '
            f'{time.strftime("%H:%M:%S", time.localtime(p.maybe))}, not fenced: {p.error})'
            for p in self.doubts)


def _from_cache(row):
    from xenha.xen import Domain, State
    return Domain(row['name'], row['domid'], row['memory'], row['vcpus'],
                  State(row['state']), row['flags'], row['cpu_time'])


# --- evaluation ------------------------------------------------------------------
class HostsContext(nagiosplugin.Context):
    """0 hosts = missing, 2+ hosts = split brain: both CRITICAL."""

    def evaluate(self, metric, resource):
        name = resource.args.domain
        if metric.value > 1:
            hosts = [p.host for p in resource.found]
            return self.result_cls(
                nagiosplugin.Critical,
                f'split brain: {name} runs on {" and ".join(hosts)}', metric)
        if resource.doubts:
            # a silent, unfenced dom0's last listing shows it: it may run there
            if metric.value == 0:
                return self.result_cls(nagiosplugin.Warn, f'{name} is not running on any '
                                       f'reachable dom0, {resource.doubt_text()}', metric)
            hosts = ' and '.join(p.host for p in resource.found)
            return self.result_cls(nagiosplugin.Critical, f'maybe running twice: {name} '
                                   f'runs on {hosts}, {resource.doubt_text()}', metric)
        if metric.value == 0:
            unreachable = [f'{p.host}: {p.error}' for p in resource.places if p.error]
            where = 'on any reachable dom0' if resource.args.cluster else \
                f'on {resource.places[0].host}'
            return self.result_cls(
                nagiosplugin.Critical,
                f'{name} is not running {where}'
                + (f' ({"; ".join(unreachable)})' if unreachable else ''), metric)
        return self.result_cls(nagiosplugin.Ok, metric=metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance('hosts', metric.value, min=0)


class StateContext(nagiosplugin.Context):
    WARN = ('paused', 'shutdown')
    CRIT = ('crashed', 'dying')

    def evaluate(self, metric, resource):
        state = metric.value.value
        place = resource.found[0]
        text = f'{resource.args.domain} is {state} on {place.host}'
        if state in self.CRIT:
            return self.result_cls(nagiosplugin.Critical, text, metric)
        if state in self.WARN:
            return self.result_cls(nagiosplugin.Warn, text, metric)
        return self.result_cls(nagiosplugin.Ok, text, metric)


# --- presentation --------------------------------------------------------------------
class DomUSummary(nagiosplugin.Summary):
    def ok(self, results):
        res = results[0].resource
        place = res.found[0]
        age = f' (cached {place.age:.0f}s ago)' if place.age is not None else ''
        return f'{res.args.domain} is {place.domain.state.value} on {place.host}{age}'

    def problem(self, results):
        return results.first_significant.hint


# --- main ------------------------------------------------------------------------------
def parse_args(argv=None):
    p = plugin.ArgumentParser('XEN_DOMU', __doc__)
    p.add_argument('-d', '--domain', required=True, metavar='NAME', help='domU name')
    p.add_argument('--cluster', metavar='INVENTORY',
                   help='look on every dom0 of this cluster TOML (instead of -H)')
    p.add_argument('--max-age', type=plugin.seconds_arg(0, 86400 * 30, low_ok=True), metavar='S',
                   help="answer from check_xen_host's cached listing when younger than S seconds")
    p.add_argument('--state-db', metavar='FILE', default=None,
                   help='state cache (default: the inventory\'s, /var/lib/xenha/state.db '
                        'or $XENHA_STATE_DB)')
    plugin.add_ssh_arguments(p)
    plugin.add_toolstack_arguments(p)
    plugin.add_common_arguments(p)
    args = p.parse_args(argv)
    if args.cluster and args.hostname:
        p.error('use either -H or --cluster')
    return args


@nagiosplugin.guarded
def main():
    args = parse_args()
    check = nagiosplugin.Check(XenDomU(args), HostsContext('hosts'),
                               StateContext('state'), DomUSummary())
    check.name = 'XEN_DOMU'
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == '__main__':
    main()
