"""`xenha status`: where each domU runs, from the state cache or live."""

from __future__ import annotations

import time


def status(cluster, live: bool = False) -> int:
    from xenha.state import StateDB
    rows = {}
    ages = {}
    problems = 0
    if live:
        from xenha.failover import Engine
        engine = Engine(cluster)
        try:
            for host, doms in engine.scan(list(cluster.dom0s.values())).items():
                if isinstance(doms, Exception):
                    ages[host] = f'unreachable: {doms}'
                    continue
                ages[host] = 'live'
                for d in doms:
                    if not d.is_dom0:
                        rows.setdefault(d.name, []).append((host, d.state.value))
        finally:
            engine.close()
    else:
        by_addr = {h.address: h.name for h in cluster.dom0s.values()}
        with StateDB(cluster.defaults.state_db) as db:
            for listing in db.listings():
                host = by_addr.get(listing.host, listing.host)
                ages[host] = f'seen {listing.age():.0f}s ago'
                for d in listing.domains:
                    rows.setdefault(d['name'], []).append((host, d['state']))
    print(f'{"DOM0":<12} {"ROLE":<7} LAST LOOK')
    for h in cluster.dom0s.values():
        print(f'{h.name:<12} {h.role:<7} {ages.get(h.name, "never seen")}')
    print()
    from xenha.failover import PENDING_WINDOW
    with StateDB(cluster.defaults.state_db) as db:
        pending = {name: db.pending(name, PENDING_WINDOW) for name in cluster.domus}
        doubts = db.doubts()
    print(f'{"DOMU":<12} {"HOME":<10} {"RUNS ON":<24} STATE')
    for name in sorted(set(cluster.domus) | set(rows)):
        u = cluster.domus.get(name)
        places = rows.get(name, [])
        where = ', '.join(h for h, _ in places) or '-'
        state = ', '.join(s for _, s in places) or 'NOT RUNNING'
        if len(places) > 1:
            state += '  SPLIT BRAIN'
        if not places and pending.get(name):
            host, at = pending[name]
            state += (f'  (a lost create on {host} may still finish: not started elsewhere '
                      f'for {PENDING_WINDOW - (time.time() - at):.0f}s more)')
        doubt = doubts.get(name)
        if doubt and all(h == doubt[0] for h, _ in places):
            # a failover left it alone: the dom0 it may run on did not answer
            state += (f'  ({doubt[1]}: a failover did not start it; run `xenha failover '
                      f'{doubt[0]}` or reconnect {doubt[0]})')
        if not places or len(places) > 1 or (doubt and all(h == doubt[0] for h, _ in places)):
            problems += 1
        print(f'{name:<12} {(u.home if u else "?"):<10} {where:<24} {state}'
              + ('' if u else '  (not in the inventory)'))
    return 1 if problems else 0
