"""check_xen_capacity - N+1: could the cluster absorb the loss of any one dom0?

For each active dom0, takes the domUs it runs (or is home to), and places
them, as the failover engine would, on the spares' free memory minus the
dom0 reserve (and on the other active dom0s when allow_active_as_target is
set).  CRITICAL names the dom0 whose loss could not be absorbed and by how
much memory.  Memory figures come from check_xen_host's cache when younger
than --max-age, else from `xl info` over SSH.

  check_xen_capacity --inventory /etc/xenha/cluster.toml --max-age 300
"""

import logging

import nagiosplugin

from xenha import plugin
from xenha.units import MiB

_log = logging.getLogger('nagiosplugin')


# --- acquisition ---------------------------------------------------------------
class XenCapacity(nagiosplugin.Resource):
    def __init__(self, args):
        self.args = args
        self.verdicts = {}     # dom0 -> (needed bytes, shortfall bytes, unplaced names)

    @property
    def name(self):
        return 'XEN_CAPACITY'

    def memory(self, cluster):
        """dom0 -> (free bytes, domU names it runs), from the cache or live."""
        from xenha.state import StateDB
        out, stale = {}, []
        try:
            with StateDB(self.args.state_db or cluster.defaults.state_db) as db:
                cached = {l.host: l for l in db.listings()}
        except Exception as exc:  # noqa: BLE001 - no cache: ask the hosts
            _log.warning('state cache unreadable: %s', exc)
            cached = {}
        for h in cluster.dom0s.values():
            l = cached.get(h.address)
            if l and l.free_memory is not None and l.age() <= self.args.max_age:
                out[h.name] = (l.free_memory, [d['name'] for d in l.domains])
            else:
                stale.append(h)
        if stale:
            from xenha.failover import Engine
            engine = Engine(cluster)
            try:
                lists, infos = engine.scan(stale, info_for=stale)
            finally:
                engine.close()
            for h in stale:
                info, doms = infos[h.name], lists[h.name]
                if isinstance(info, Exception) or isinstance(doms, Exception):
                    _log.info('%s: %s', h.name, info if isinstance(info, Exception) else doms)
                    continue
                out[h.name] = (info.free_memory, [d.name for d in doms if not d.is_dom0])
        return out

    def probe(self):
        from xenha import inventory
        from xenha.failover import place
        try:
            cluster = inventory.load(self.args.inventory)
        except (OSError, inventory.InventoryError) as exc:
            raise nagiosplugin.CheckError(f'cannot load inventory: {plugin.describe(exc)}')
        mem = self.memory(cluster)
        reserve = cluster.defaults.dom0_reserve
        self.unknown_hosts = [h for h in cluster.dom0s if h not in mem]
        for failed in cluster.active():
            runs = set(mem.get(failed.name, (0, []))[1])
            elsewhere = {n for h, (_, names) in mem.items() if h != failed.name for n in names}
            domus = [u for u in cluster.domus.values() if u.ha and (
                u.name in runs or (u.home == failed.name and u.name not in elsewhere))]
            targets = [h for h in cluster.dom0s.values() if h.name != failed.name and (
                h.role == 'spare' or cluster.defaults.allow_active_as_target)]
            free = {h.name: mem[h.name][0] - reserve for h in targets if h.name in mem}
            placement, unplaced = place(domus, free)
            needed = sum(u.memory for u in domus)
            short = sum(cluster.domus[n].memory for n in unplaced)
            self.verdicts[failed.name] = (needed, short, sorted(unplaced), free)
            _log.info('%s: needs %d MiB, places %s, cannot place %s', failed.name,
                      needed // MiB, placement, unplaced)
            yield nagiosplugin.Metric(f'{failed.name}_shortfall', short, 'B', min=0,
                                      context='shortfall')
        if not self.verdicts:
            raise nagiosplugin.CheckError('no active dom0 in the inventory')


# --- evaluation ------------------------------------------------------------------
class Shortfall(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        host = metric.name[:-len('_shortfall')]
        needed, short, unplaced, free = resource.verdicts[host]
        if short:
            return self.result_cls(
                nagiosplugin.Critical,
                f'losing {host} cannot be absorbed: {short // MiB} MiB short '
                f'({", ".join(unplaced)} would not fit)', metric)
        return self.result_cls(nagiosplugin.Ok, f'{host} ({needed // MiB} MiB) fits', metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, 'B', min=0)


# --- presentation --------------------------------------------------------------------
class CapacitySummary(nagiosplugin.Summary):
    def ok(self, results):
        res = results[0].resource
        text = 'every active dom0 can fail: ' + ', '.join(r.hint for r in results)
        if res.unknown_hosts:
            text += f' (no figures from {", ".join(res.unknown_hosts)})'
        return text

    def problem(self, results):
        return '; '.join(r.hint for r in results.most_significant)


def parse_args(argv=None):
    p = plugin.ArgumentParser('XEN_CAPACITY', __doc__)
    plugin.add_inventory_argument(p)
    p.add_argument('--max-age', type=plugin.seconds_arg(0, 86400 * 30, low_ok=True),
                   default=300, metavar='S',
                   help='use cached figures younger than S seconds (default 300)')
    p.add_argument('--state-db', metavar='FILE', help="state cache (default: the inventory's)")
    plugin.add_common_arguments(p, timeout=20)
    return p.parse_args(argv)


@nagiosplugin.guarded      # under plugin.run in the installed command
def main():
    args = parse_args()
    check = nagiosplugin.Check(XenCapacity(args), Shortfall('shortfall'), CapacitySummary())
    check.name = 'XEN_CAPACITY'
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == '__main__':
    main()
