"""Randomized fault injection against the lab, checking the two invariants:

* no domU ever runs on two hosts;
* no domU of the inventory is left unaccounted for: it runs somewhere, or a
  job's report says why not.

One lab serves many seeds: `reset` puts every host, BMC and guest back.
Used by tests/test_random_faults.py (a handful of seeds) and bench/soak.py
(hundreds).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from xenha.lab import bmc, cluster, dom0, xensim
from xenha.lab.core import Lab

HOSTS = (('dom0-1', 'active'), ('dom0-2', 'active'), ('dom0-3', 'active'),
         ('spare-1', 'spare'), ('spare-2', 'spare'))
GUESTS = (
    cluster.GuestSpec('db1', 'dom0-1', 1024, 'none', priority=20),
    cluster.GuestSpec('web1', 'dom0-1', 512, 'none', priority=10),
    cluster.GuestSpec('web2', 'dom0-1', 512, 'none'),
    cluster.GuestSpec('mail1', 'dom0-2', 768, 'none', priority=10),
    cluster.GuestSpec('build1', 'dom0-2', 2048, 'none'),
    cluster.GuestSpec('dns1', 'dom0-3', 256, 'none', priority=30),
    cluster.GuestSpec('ci1', 'dom0-3', 3072, 'none'),
)
FAULTS = ('power', 'hang', 'toolstack', 'crash', 'pause', 'bmc-password', 'bmc-down',
          'bmc-ignores-off', 'spare-full', 'spare-broken', 'duplicate-event')
JOB_FAULTS = ('power', 'hang', 'toolstack', 'crash', 'pause', 'duplicate-event')


@dataclass
class Outcome:
    seed: int
    faults: list
    reports: list = field(default_factory=list)
    violations: list = field(default_factory=list)


def up(directory=None) -> Lab:
    return cluster.up(directory, hosts=HOSTS, guests=GUESTS, storage=False,
                      host_memory_mb=6144, dedupe_window=0.001, max_restart=1)


def reset(lab: Lab, seed: int) -> None:
    """Every host on, no fault, guests back home, a fresh state database."""
    for host in lab.info['hosts']:
        dom0.resume(lab, host)
        xensim.power_off(dom0.state_dir(lab, host))   # clears guests and faults
        dom0.power(lab, host, on=True)
        bmc.set_fault(lab, host, None)
        if not lab.alive(f'bmc-{host}'):
            bmc.start(lab, host)
    for host, info in lab.info.get('bmc', {}).items():
        pw = lab.dir / 'bmc' / host / 'password.good'
        if pw.exists():
            pw.replace(info['password_file'])
    cluster.write_inventory(lab, state_db=str(lab.dir / f'state-{seed}.db'),
                            dedupe_window=0.001, max_restart=1)
    cluster.start_homes(lab)


def inject(lab: Lab, rng: random.Random) -> list[tuple[str, str]]:
    actives = [h for h, r in HOSTS if r == 'active']
    spares = [h for h, r in HOSTS if r == 'spare']
    faults = []
    for i in range(rng.randint(1, 4)):
        # the first fault always needs a job, so every seed exercises the engine
        kind = rng.choice(FAULTS if i else JOB_FAULTS)
        if kind in ('power', 'hang', 'toolstack', 'duplicate-event'):
            target = rng.choice(actives)
        elif kind in ('bmc-password', 'bmc-down', 'bmc-ignores-off'):
            target = rng.choice(actives)
        elif kind in ('spare-full', 'spare-broken'):
            target = rng.choice(spares)
        else:
            target = rng.choice([g.name for g in GUESTS])
        faults.append((kind, target))
        sd = dom0.state_dir(lab, target) if target in lab.info['hosts'] else None
        if kind == 'power':
            dom0.power(lab, target, on=False)
        elif kind == 'hang':
            dom0.hang(lab, target)
        elif kind == 'toolstack':
            xensim.set_fault(sd, 'fail')
        elif kind in ('crash', 'pause'):
            for host in lab.info['hosts']:
                try:
                    xensim.set_domain_state(dom0.state_dir(lab, host), target,
                                            'crashed' if kind == 'crash' else 'paused')
                except LookupError:
                    pass
        elif kind == 'bmc-password':
            info = lab.info['bmc'][target]
            good = lab.dir / 'bmc' / target / 'password.good'
            if not good.exists():
                good.write_text(open(info['password_file']).read())
            with open(info['password_file'], 'w') as fh:
                fh.write('not-the-password\n')
        elif kind == 'bmc-down':
            bmc.stop(lab, target)
        elif kind == 'bmc-ignores-off':
            bmc.set_fault(lab, target, 'ignore-off')
        elif kind == 'spare-full':
            xensim.add_domain(sd, f'filler-{rng.randint(0, 999)}', rng.choice((2048, 4096)))
        elif kind == 'spare-broken':
            xensim.set_fault(sd, 'fail')
    return faults


def where(lab: Lab) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for host in lab.info['hosts']:
        for d in xensim.read(dom0.state_dir(lab, host))['domains']:
            if d['id'] and not d['name'].startswith('filler-'):
                out.setdefault(d['name'], []).append(host)
    return out


def run_seed(lab: Lab, seed: int) -> Outcome:
    from xenha.failover import Engine
    from xenha.restart import restart
    rng = random.Random(seed)
    reset(lab, seed)
    out = Outcome(seed, inject(lab, rng))
    c = cluster.cluster(lab)
    jobs = []
    failed_hosts = sorted({t for k, t in out.faults if k in ('power', 'hang', 'toolstack')})
    for host in failed_hosts:
        jobs.append(('failover', host))
    if any(k == 'duplicate-event' for k, _ in out.faults):
        jobs += [('failover', t) for k, t in out.faults if k == 'duplicate-event']
        jobs += [('failover', h) for h in failed_hosts]     # the same event twice
    for kind, name in out.faults:
        if kind in ('crash', 'pause'):
            jobs.append(('restart', name))
    rng.shuffle(jobs)
    lock = threading.Lock()

    def one(job):
        kind, name = job
        engine = Engine(c, recheck_delay=0.1, confirm_probes=1)
        try:
            r = engine.failover(name) if kind == 'failover' else restart(engine, name)
        except Exception as exc:  # noqa: BLE001 - an engine crash is a finding
            with lock:
                out.violations.append(f'{kind} {name} raised {exc!r}')
            return
        finally:
            engine.db.close()
        with lock:
            out.reports.append((kind, name, r))

    threads = [threading.Thread(target=one, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = where(lab)
    for name, hosts in placed.items():
        if len(hosts) > 1:
            out.violations.append(f'{name} runs on {" and ".join(hosts)}')
    for g in GUESTS:
        if g.name in placed:
            continue
        explained = [r for _, subject, r in out.reports if g.name in r.failed
                     or g.name in r.skipped or (r.result in ('failed', 'refused', 'noop')
                                                and subject in (g.name, g.home))]
        if not explained:
            out.violations.append(f'{g.name} runs nowhere and no report says why')
    return out
