"""A domU that died while its dom0 is healthy: restart it in place, or move it.

At most `max_restart` restarts in `restart_window` seconds, then it is
relocated to a spare (Proxmox's max_restart / max_relocate idea).  Never while
its storage is known down: a guest started on a dead disk only crashes again,
so the job says so once instead.  Never when it runs somewhere (healthy, or on
two hosts), and never when its dom0 does not answer: that is the host event
handler's failover.
"""

from __future__ import annotations

import time
import uuid

from xenha.failover import Engine, Report

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
    listings = engine.scan(list(c.dom0s.values()))
    where_present = {}
    for host, doms in listings.items():
        if isinstance(doms, Exception):
            continue
        for dom in doms:
            if dom.name == u.name and dom.state.present:
                where_present[host] = dom
    # a failover of its home, of where it was last seen, or of where it is now
    # (being created: paused for a moment) handles it: acting now is in the way
    by_addr = {h.address: h.name for h in c.dom0s.values()}
    involved = {u.home, *where_present, *(
        by_addr.get(l.host, l.host) for l in engine.db.listings()
        if any(r['name'] == u.name for r in l.domains))}
    busy = sorted(h for h in involved if h in c.dom0s and engine.db.lease_held(h))
    if busy:
        return _end(engine, report, 'noop', f'a failover of {busy[0]} is running: '
                    f'it handles {u.name}')
    if where_present:
        engine.db.clear_pending(u.name)      # a lost create that did finish
    elif (pending := engine.pending_elsewhere(u.name)):
        return _end(engine, report, 'refused', pending)
    healthy = [h for h, dom in where_present.items() if dom.state.healthy]
    if len(where_present) > 1:
        return _end(engine, report, 'failed', f'{u.name} is on {" and ".join(where_present)}: '
                    'split brain, not touching it')
    if healthy:
        return _end(engine, report, 'noop', f'{u.name} already runs on {healthy[0]} '
                    f'({where_present[healthy[0]].state.value}): nothing to do')
    if where_present:
        host, dom = next(iter(where_present.items()))
        if dom.state.value == 'paused':
            return _end(engine, report, 'refused', f'{u.name} is paused on {host}: '
                        'someone paused it; not restarting (xl unpause to resume)')
    else:
        last = [l.hostname or l.host for l in engine.db.listings()
                if any(r['name'] == u.name for r in l.domains)]
        by_addr = {h.address: h.name for h in c.dom0s.values()}
        host = next((by_addr.get(h, h) for h in last if by_addr.get(h, h) in c.dom0s), u.home)
    if isinstance(listings.get(host), Exception):
        return _end(engine, report, 'noop', f'{host}, where {u.name} ran, does not answer '
                    f'({listings[host]}): its failover handles {u.name}')
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
        return _relocate(engine, u, host, listings, report)
    result = engine.start_on(dom0, [u])
    engine.db.add_restart(u.name)
    if result[u.name] is None:
        report.moved[u.name] = host
        return _end(engine, report, 'ok', f'{u.name} restarted on {host} '
                    f'(restart {count + 1} of {d.max_restart} in {d.restart_window:g}s)')
    report.failed[u.name] = result[u.name]
    return _end(engine, report, 'failed', f'{u.name} did not restart on {host}: {result[u.name]}')


def _relocate(engine: Engine, u, old_host: str, listings: dict, report: Report) -> None:
    c, d = engine.cluster, engine.cluster.defaults
    from xenha.failover import Plan
    plan = Plan(old_host, [])
    plan.victims = [u]
    others = [h for h in c.dom0s.values() if h.name != old_host]
    engine._place(plan, others, listings)
    if u.name not in plan.placement:
        report.failed[u.name] = plan.unplaced.get(u.name, 'no room')
        return _end(engine, report, 'failed', f'{u.name} cannot be relocated: '
                    f'{report.failed[u.name]}')
    engine.relocate(plan.placement, report)
    if u.name in report.moved:
        return _end(engine, report, 'ok', f'{u.name} relocated from {old_host} to '
                    f'{report.moved[u.name]} after {d.max_restart} restarts')
    return _end(engine, report, 'failed', f'{u.name} relocation failed: {report.failed[u.name]}')
