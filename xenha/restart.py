"""A domU that died while its dom0 is healthy: restart it in place, or move it.

At most `max_restart` restarts in `restart_window` seconds, then it is
relocated to a spare (Proxmox's max_restart / max_relocate idea).  Never while
its storage is known down: a guest started on a dead disk only crashes again,
so the job says so once instead.  Never when it runs somewhere (healthy, or on
two hosts), and never while a dom0 that does not answer may still run it: the
same accounting as a failover (xenha.accounting: every dom0 looked at twice, a
silent unfenced one may run what it last ran and any guest not seen since).

It restarts the guest where it last ran when that dom0 answers, so that xl's
own check of the name backs the guard (a guest in a long reboot gap there
comes back under that name or not at all); at its home only when it was last
seen on a dom0 that is fenced or never saw it; on a spare when its home is
gone too.
"""

from __future__ import annotations

import time
import uuid

from xenha import accounting
from xenha.failover import Engine, Plan, Report
from xenha.runner import RunnerError
from xenha.xen import ToolstackError

REMAINS = ('crashed', 'dying', 'shutdown')


def restart(engine: Engine, name: str, why: str = '') -> Report:
    c = engine.cluster
    engine.job = f'{time.strftime("%Y%m%dT%H%M%S")}-restart-{name}-{uuid.uuid4().hex[:6]}'
    report = Report(engine.job, name)
    lease = engine.db.take_lease(f'domu-{name}', engine.job)
    if lease is None:
        report.result = 'noop'
        report.message = f'a restart of {name} is already running: nothing more to do'
        engine.log('lease', report.message, domu=name)
        return report
    try:
        with lease:
            _restart(engine, c.domus[name], report, why)
    finally:
        engine.close()
    engine.tell_nagios(report)
    return report


def _end(engine, report, result, message, level=None):
    report.result, report.message = result, message
    engine.log('end', message, level or ('info' if result in ('ok', 'noop') else 'error'),
               domu=report.subject)


def _restart(engine: Engine, u, report: Report, why: str) -> None:
    c, d = engine.cluster, engine.cluster.defaults
    engine.log('start', f'restart of {u.name} requested' + (f' ({why})' if why else ''),
               domu=u.name)
    looks = engine.look_again(list(c.dom0s.values()))
    where_present = {}
    for host, lk in looks.items():
        for dom in lk.domains or ():
            if dom.name == u.name and dom.state.present:
                where_present[host] = dom
    # a failover of its home, of where it was last seen, or of where it is now
    # (being created: paused for a moment) handles it: acting now is in the way
    by_addr = {h.address: h.name for h in c.dom0s.values()}
    sightings = engine.db.sightings(u.name)
    involved = {u.home, *where_present, *(by_addr.get(s.host, s.host) for s in sightings)}
    busy = sorted(h for h in involved if h in c.dom0s and engine.db.lease_held(h))
    if busy:
        return _end(engine, report, 'noop', f'a failover of {busy[0]} is running: '
                    f'it handles {u.name}')
    if len(where_present) > 1:
        return _end(engine, report, 'failed', f'{u.name} is on {" and ".join(where_present)}: '
                    'split brain, not touching it')
    healthy = [h for h, dom in where_present.items() if dom.state.healthy]
    if healthy:
        engine.db.clear_pending(u.name)      # a lost create that did finish
        engine.db.clear_doubt(u.name)
        return _end(engine, report, 'noop', f'{u.name} already runs on {healthy[0]} '
                    f'({where_present[healthy[0]].state.value}): nothing to do')
    if where_present:
        engine.db.clear_pending(u.name)
        host, dom = next(iter(where_present.items()))
        if dom.state.value == 'paused':
            return _end(engine, report, 'refused', f'{u.name} is paused on {host}: '
                        'someone paused it; not restarting (xl unpause to resume)')
        if not looks[host].answered:
            return _end(engine, report, 'refused', f'{u.name} is {dom.state.value} on '
                        f'{host}, which answered only one of two looks: not touching it')
    else:
        facts = engine.facts(looks)
        v = engine.verdicts([u.name], facts)[u.name]
        if v.kind == accounting.DOUBT:
            return _in_doubt(engine, report, u, v, facts[v.host], looks[v.host].error)
        if (pending := engine.pending_elsewhere(u.name)):
            return _end(engine, report, 'refused', pending)
        # where it last ran, when that dom0 answers (xl's own name check then
        # backs the guard: a guest in a reboot gap there comes back or not at all)
        last = next((by_addr.get(s.host) for s in sightings
                     if by_addr.get(s.host) in c.dom0s), None)
        host = last if last and facts[last].answered else u.home
        if not facts[host].answered:
            engine.log('relocate', f'{u.name} last ran on {last or "no dom0"} and its home '
                       f'{u.home} does not answer: placing it on a spare', 'warning',
                       domu=u.name)
            return _relocate(engine, u, host, report,
                             f'(its home {u.home} does not answer either)' if last and
                             last != u.home else f'(its home {u.home} does not answer)')
    dom0 = c.dom0s[host]
    # storage first: a guest on a dead disk only crashes again
    ready = engine.attach(dom0, c.targets_of(u))
    down = {t: w for t, w in ready.items() if w}
    if down:
        return _end(engine, report, 'refused', f'not restarting {u.name}: its storage is '
                    'down (' + '; '.join(f'{t}: {w}' for t, w in down.items()) + ')')
    since = time.time() - d.restart_window
    count = engine.db.restarts_since(u.name, since)
    if where_present:
        r = engine.toolstack(dom0).destroy(u.name)   # clear the crashed remains first
        engine.log('destroy', f'{u.name} remains on {host} '
                   f'({where_present[host].state.value}) destroyed: '
                   + ('ok' if r.exit == 0 else r.reason()), domu=u.name, dom0=host)
        if r.exit != 0:
            return _end(engine, report, 'failed', f'cannot clear {u.name} on {host}: {r.reason()}')
    if count >= d.max_restart:
        engine.log('relocate', f'{u.name} restarted {count} times in '
                   f'{d.restart_window:g}s (max_restart {d.max_restart}): relocating',
                   'warning', domu=u.name)
        return _relocate(engine, u, host, report, f'after {d.max_restart} restarts')
    try:
        result = engine.start_on(dom0, [u])
    except (RunnerError, ToolstackError) as exc:    # the host stopped answering
        result = {u.name: f'{host} failed during the restart: {exc}'}
    engine.db.add_restart(u.name)
    if result[u.name] is None:
        engine.db.clear_doubt(u.name)
        report.moved[u.name] = host
        return _end(engine, report, 'ok', f'{u.name} restarted on {host} '
                    f'(restart {count + 1} of {d.max_restart} in {d.restart_window:g}s)')
    report.failed[u.name] = result[u.name]
    return _end(engine, report, 'failed', f'{u.name} did not restart on {host}: {result[u.name]}')


def _in_doubt(engine: Engine, report: Report, u, v: accounting.Verdict,
              silent: accounting.Host, error) -> None:
    """A silent, unfenced dom0 may run it: who will act, or what the operator runs.

    The doubt is recorded, so that the failover of that dom0 takes this guest
    with its own (it is then fenced, and the guest can only be down)."""
    db = engine.db
    db.record_doubt(u.name, v.host, v.why, engine.job)
    where = (f'{v.host}, where {u.name} ran, does not answer'
             + (f' ({error})' if error else '')
             if u.name in silent.last_listing else v.why)
    last = db.last_failover(v.host)
    if last and (silent.last_answer is None or last['finished'] > silent.last_answer):
        # its failover ran since it went silent, and Nagios will not call it
        # again while the dom0 stays DOWN: nobody retries but the operator
        return _end(engine, report, 'refused', f'{where}: not starting {u.name}; the '
                    f'failover of {v.host} (job {last["job"]}) ended {last["result"]} and '
                    f'no job will retry: {accounting.way_out(v)}')
    return _end(engine, report, 'noop', f'{where}: its failover handles {u.name}')


def _relocate(engine: Engine, u, old_host: str, report: Report, because: str) -> None:
    """Place `u` on a spare (not `old_host`) and start it there."""
    c = engine.cluster
    plan = Plan(old_host, [])
    plan.victims = [u]
    others = [h for h in c.dom0s.values() if h.name != old_host]
    engine._place(plan, others, {})
    if u.name not in plan.placement:
        report.failed[u.name] = plan.unplaced.get(u.name, 'no room')
        return _end(engine, report, 'failed', f'{u.name} cannot be relocated: '
                    f'{report.failed[u.name]}')
    engine.relocate(plan.placement, report)
    if u.name in report.moved:
        engine.db.clear_doubt(u.name)
        return _end(engine, report, 'ok', f'{u.name} relocated from {old_host} to '
                    f'{report.moved[u.name]} {because}')
    return _end(engine, report, 'failed', f'{u.name} relocation failed: {report.failed[u.name]}')
