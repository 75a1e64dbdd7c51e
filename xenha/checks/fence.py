"""check_fence - is this dom0's fencing ready before a failover needs it?

Asks each fence agent of the dom0's chain (from the inventory) for the power
state, one after another, as Pacemaker monitors its stonith devices: a wrong
password, an unreachable BMC or a missing agent shows up now, not when the
failover refuses to start anything.  Only the agents' read-only `status`
action is used, run from here as a failover would run it; the password never
goes on a command line or into the output.  The agents share -t, each given
at most its own `timeout` from the inventory.  A `storage` method reads the
reservation of each disk of the dom0's guests from here (iSCSI keys and
reservation, AoE reserve list), as a revoke would, and says whether the dom0
may write them now.

  OK        an agent answers and says the dom0 is on
  WARNING   the first agent fails but a later one answers (storage fencing
            counts: a dead BMC then still lets a failover through); an agent
            says the dom0 is off; the dom0 is revoked at the storage (fenced
            there until `xenha unfence`); storage fencing cannot read a disk's
            reservation; only ssh fencing; fencing = "none"; a configuration
            smell (e.g. a password file readable by everyone)
  CRITICAL  no agent of the chain answers: a failover would refuse
  UNKNOWN   bad inventory or dom0 name; -t ran out before an agent answered

  check_fence --inventory /etc/xenha/cluster.toml --dom0 dom0-1 -t 10
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import nagiosplugin

from xenha import plugin

_log = logging.getLogger('nagiosplugin')
MARGIN = 0.5     # seconds of -t kept for start-up and the answer


# --- acquisition -------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """What one method of the chain said."""
    label: str           # 'agent fence_ipmilan' (numbered when the chain repeats one)
    method: str          # 'agent' | 'ssh' | 'none'
    state: str           # 'on' | 'off' | 'broken' | 'hung' | 'unprobed'
    message: str
    seconds: float = 0.0
    problems: tuple[str, ...] = ()

    @property
    def works(self) -> bool:
        return self.state in ('on', 'off')


def labels(methods) -> list[str]:
    """label() of each method, numbered where the chain has it twice.

    >>> from xenha.inventory import FenceMethod as M
    >>> labels([M('agent', 'fence_ipmilan'), M('agent', 'fence_ipmilan'), M('ssh')])
    ['agent fence_ipmilan #1', 'agent fence_ipmilan #2', 'ssh']
    """
    from xenha.fencing import label
    names = [label(m) for m in methods]
    return [f'{n} #{i}' if names.count(n) > 1 else n for i, n in enumerate(names, 1)]


class Fence(nagiosplugin.Resource):
    def __init__(self, args):
        self.args = args
        self.dom0 = args.dom0
        self.probes: list[Probe] = []
        self.doing = 'loading the inventory'     # what hung, when -t fires

    @property
    def name(self):
        return 'FENCE'

    def chain(self):
        from xenha import inventory
        try:
            cluster = inventory.load(self.args.inventory)
        except inventory.InventoryError as exc:
            raise nagiosplugin.CheckError(f'cannot load inventory: {plugin.describe(exc)}')
        self.cluster = cluster
        host = cluster.dom0s.get(self.dom0)
        if host is None:
            raise nagiosplugin.CheckError(
                f'no dom0 {self.dom0!r} in {self.args.inventory} '
                f'(dom0s: {", ".join(cluster.dom0s) or "none"})')
        return host.fencing

    def storage(self, name: str, budget: float, problems) -> Probe:
        """Storage fencing's readiness: can the monitoring node read (and so
        revoke) each disk of the dom0's guests, may the dom0 write them now?"""
        from concurrent.futures import ThreadPoolExecutor

        from xenha.storage import aoe, reservations
        c = self.cluster
        d = c.dom0s[self.dom0]
        targets = {t.name: t for u in c.domus_homed_on(self.dom0) for t in c.targets_of(u)}
        if not targets:
            return Probe(name, 'storage', 'broken', f'no guest of {self.dom0} has a disk: '
                         'storage fencing protects nothing here', 0.0, problems)
        opener = ((lambda i: aoe.open_socket(i, c.defaults.san_netns))
                  if c.defaults.san_netns else None)
        me = reservations.dom0(d)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(len(targets), 8)) as pool:
            facts = list(pool.map(lambda t: reservations.readiness(
                t, [me], timeout=budget, opener=opener), targets.values()))
        took = time.monotonic() - started
        broken = [f'{f.target}: {f.error}' for f in facts if f.error]
        revoked = [f.target for f in facts if not f.error and not may_write(f, self.dom0)]
        for f in facts:
            _log.info('%s: %s', f.target, f)
        if broken:
            return Probe(name, 'storage', 'broken', 'cannot read ' + '; '.join(broken),
                         took, problems)
        if revoked:
            return Probe(name, 'storage', 'revoked', f'{self.dom0} is revoked on '
                         f'{", ".join(revoked)} (fenced at the storage: `xenha unfence '
                         f'{self.dom0}` once it is repaired)', took, problems)
        return Probe(name, 'storage', 'ready', f'storage ready on {len(facts)} '
                     f'target{"s" if len(facts) != 1 else ""} (each reservation readable '
                     f'from here, {self.dom0} may write)', took, problems)

    def probe(self):
        from xenha import fencing, timing
        # nagiosplugin's alarm fires after int(-t) seconds; the agents end before it
        # (and before the run's budget, counted from the start of the process)
        deadline = time.monotonic() + timing.bound(int(self.args.timeout) - MARGIN,
                                                   margin=MARGIN)
        methods = self.chain()
        agents_left = sum(m.method == 'agent' for m in methods)
        for m, name in zip(methods, labels(methods)):
            problems = tuple(fencing.problems(m))
            if m.method == 'storage':
                self.doing = f'{name}: reading the reservations'
                budget = min(m.timeout, max(deadline - time.monotonic(), 0.5))
                self.probes.append(self.storage(name, budget, problems))
                continue
            if m.method != 'agent':
                self.probes.append(Probe(name, m.method, 'unprobed', '', 0.0, problems))
                continue
            # the rest of -t, shared by the agents still to ask; never more than
            # the method's own timeout (what a failover would give it)
            budget = min(m.timeout, (deadline - time.monotonic()) / agents_left)
            agents_left -= 1
            self.doing = f'{name} status'
            started = time.monotonic()
            if budget < 0.5:                # -t too short to ask it at all
                state, message = 'hung', 'not asked: no time left'
            else:
                state, message = fencing.power_state(m, budget)
            took = time.monotonic() - started
            if state == 'unknown':
                # our timer, not the agent, ended it, and -t made that timer short
                hung = budget < m.timeout and took >= 0.9 * budget
                state = 'hung' if hung else 'broken'
            agent = name.split()[1]
            message = message.removeprefix(f'{agent} status: ')
            _log.info('%s: %s: %s (%.2fs)', self.dom0, name, message, took)
            self.probes.append(Probe(name, 'agent', state, message, took, problems))
            perf = name.split(' ', 1)[1].replace(' #', '_')      # fence_ipmilan_2
            yield nagiosplugin.Metric(perf, round(took, 3), 's', min=0, context='seconds')
        self.doing = 'evaluating'
        yield nagiosplugin.Metric('working_agents', sum(p.works for p in self.probes),
                                  min=0, max=sum(p.method == 'agent' for p in self.probes),
                                  context='chain')


def may_write(facts, dom0: str) -> bool:
    """May `dom0` write the disk now?  iSCSI: no reservation held, or its key
    registered; AoE: an empty reserve list, or its MAC in it."""
    if facts.kind == 'iscsi':
        return facts.reservation in ('', 'none') or dict(facts.registered).get(dom0, False)
    return dict(facts.allowed).get(dom0, True)


# --- evaluation ------------------------------------------------------------------------
def fragment(p: Probe, dom0: str, timeout: float) -> str:
    """One method's part of the status line."""
    if p.state == 'on':
        return f'{p.label} answers (power on)'
    if p.state == 'off':
        return f'{p.label.split()[1]} says {dom0} is powered off'
    if p.state == 'hung':
        return (f'{p.label}: status did not answer within -t {timeout:g} '
                f'(agent or fence device hung?)')
    if p.state == 'broken':
        return f'{p.label}: {p.message}'
    if p.method == 'ssh':
        return f'ssh (not probed: it works only while {dom0} answers SSH)'
    if p.method == 'storage':
        return p.message if p.state in ('ready', 'revoked') else f'{p.label}: {p.message}'
    return p.label


def verdict(dom0: str, probes: list[Probe], timeout: float) -> tuple:
    """(nagiosplugin state, text) for the whole chain."""
    parts = [x for p in probes for x in (fragment(p, dom0, timeout), *p.problems)]
    agents = [p for p in probes if p.method == 'agent']
    if [p.method for p in probes] == ['none']:
        return nagiosplugin.Warn, (f'{dom0}: fencing = none: a failover of {dom0} would '
                                   'start its guests unfenced')
    methods = {p.method for p in probes}
    stores = [p for p in probes if p.method == 'storage']
    storage_works = any(p.state in ('ready', 'revoked') for p in stores)
    if not agents and stores:
        worry = not storage_works or any(p.problems for p in probes)
        return (nagiosplugin.Warn if worry else nagiosplugin.Ok), f'{dom0}: ' + '; '.join(parts)
    if not agents:
        return nagiosplugin.Warn, (f'{dom0}: only ssh fencing: not enough for production '
                                   f'(not probed: it works only while {dom0} answers SSH)')
    if not any(p.works for p in agents):
        if storage_works:       # a dead BMC: the disks still refuse the dom0
            return nagiosplugin.Warn, f'{dom0}: ' + '; '.join(parts)
        if any(p.state == 'hung' for p in agents):
            return nagiosplugin.Unknown, f'{dom0}: ' + '; '.join(parts)
        tail = f'{dom0} still answers SSH' if 'ssh' in methods else ''
        tail = f' unless {tail}' if tail else ''
        return nagiosplugin.Critical, (
            f'{dom0}: ' + '; '.join(parts) + f': a failover of {dom0} would refuse to '
            f'start anything{tail}')
    # a broken first agent, a host that is off, a configuration smell
    worry = any(p.state != 'on' for p in agents) or any(p.problems for p in probes) \
        or any(p.state != 'ready' for p in stores)
    return (nagiosplugin.Warn if worry else nagiosplugin.Ok), f'{dom0}: ' + '; '.join(parts)


class Chain(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        state, text = verdict(resource.dom0, resource.probes, resource.args.timeout)
        return self.result_cls(state, text, metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, '', min=0,
                                        max=metric.max)


# --- presentation ------------------------------------------------------------------------
class FenceSummary(nagiosplugin.Summary):
    def ok(self, results):
        return results['working_agents'].hint

    def problem(self, results):
        return '; '.join(r.hint for r in results.most_significant)


def parse_args(argv=None):
    p = plugin.ArgumentParser('FENCE', __doc__)
    plugin.add_inventory_argument(p)
    p.add_argument('--dom0', required=True, metavar='NAME',
                   help='the dom0 whose fence chain to check (its [dom0.NAME])')
    plugin.add_common_arguments(p, timeout=10)
    return p.parse_args(argv)     # -t: whole seconds from 1 (plugin.timeout_arg)


@nagiosplugin.guarded      # under plugin.run in the installed command
def main():
    args = parse_args()
    resource = Fence(args)
    check = nagiosplugin.Check(resource, Chain('chain'), nagiosplugin.ScalarContext('seconds'),
                               FenceSummary())
    check.name = 'FENCE'
    try:
        check.main(verbose=args.verbose, timeout=args.timeout)
    except nagiosplugin.Timeout:
        # the agents get less than -t; this is what is left (e.g. `-o metadata` hung)
        print(f'FENCE UNKNOWN - {args.dom0}: -t {args.timeout:g} ran out during '
              f'{resource.doing}')
        sys.exit(3)


if __name__ == '__main__':
    main()
