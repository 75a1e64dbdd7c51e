"""Randomized fault injection against the lab, checking the two invariants:

* no domU ever runs on two hosts, at any moment (the hypervisors are polled
  while the jobs run, a guest in a reboot gap counting on its host);
* no domU of the inventory is left unaccounted for: it runs somewhere, or a
  job's report says why not.

Besides dom0 and guest faults, some guests live away from home (moved to
another active dom0 earlier, as an operator does), and the faults include a
partition or hang of a dom0 that is *not* failed over, reboot gaps of 0-40 s
of roaming guests, restart events during a gap, a dom0 whose BMC died with
it; half of the seeds run with `fence_unreachable = true`, half with the
chain [agent, storage] (every guest has a disk on the lab's real tgtd or
vblade; a copy left on a dom0 fenced at the storage counts only if the target
still lets that dom0 write).  `reboot_grace` is 45 s, longer than any gap
injected: a gap longer than the grace is, by definition, a guest that stopped.

One lab serves many seeds: `reset` puts every host, BMC and guest back.
Used by tests/test_random_faults.py (a handful of seeds) and bench/soak.py
(a thousand).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from xenha_lab import bmc, cluster, dom0, xensim
from xenha_lab import storage as storage_lab
from xenha_lab.core import Lab

HOSTS = (('dom0-1', 'active'), ('dom0-2', 'active'), ('dom0-3', 'active'),
         ('spare-1', 'spare'), ('spare-2', 'spare'))
GUESTS = (
    cluster.GuestSpec('db1', 'dom0-1', 1024, 'iscsi', priority=20),
    cluster.GuestSpec('web1', 'dom0-1', 512, 'iscsi', priority=10),
    cluster.GuestSpec('web2', 'dom0-1', 512, 'aoe'),
    cluster.GuestSpec('mail1', 'dom0-2', 768, 'aoe', priority=10),
    cluster.GuestSpec('build1', 'dom0-2', 2048, 'iscsi'),
    cluster.GuestSpec('dns1', 'dom0-3', 256, 'aoe', priority=30),
    cluster.GuestSpec('ci1', 'dom0-3', 3072, 'iscsi'),
)
HOST_MB = 6144
REBOOT_GRACE = 45
MAX_GAP = 40.0
FAULTS = ('power', 'hang', 'toolstack', 'crash', 'pause', 'bmc-password', 'bmc-down',
          'bmc-ignores-off', 'spare-full', 'spare-broken', 'duplicate-event',
          'partition', 'hang-other', 'partition-failed', 'reboot-gap', 'restart-in-gap',
          'bmc-dead-with-host')
JOB_FAULTS = ('power', 'hang', 'toolstack', 'crash', 'pause', 'duplicate-event',
              'partition-failed', 'restart-in-gap', 'bmc-dead-with-host')
FAILED = ('power', 'hang', 'toolstack', 'partition-failed',     # a failover job follows
          'bmc-dead-with-host')


@dataclass
class Outcome:
    seed: int
    faults: list
    reports: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    roaming: dict = field(default_factory=dict)     # guest -> the dom0 it lives on
    polls: int = 0
    fence_unreachable: bool = False
    storage_fencing: bool = False


def up(directory=None) -> Lab:
    return cluster.up(directory, hosts=HOSTS, guests=GUESTS, storage=True,
                      host_memory_mb=HOST_MB, dedupe_window=0.001, max_restart=1,
                      reboot_grace=REBOOT_GRACE)


def reset(lab: Lab, seed: int, rng: random.Random | None = None) -> tuple[dict, bool, bool]:
    """Every host on, no fault, no reservation on any disk, guests back home
    (some roaming to another active dom0, as the checks then recorded), a fresh
    state database.  Returns (guest -> where it roams, fence_unreachable,
    storage fencing in the chains)."""
    for host in lab.info['hosts']:
        dom0.resume(lab, host)
        xensim.power_off(dom0.state_dir(lab, host))   # clears guests and faults
        dom0.power(lab, host, on=True)
        bmc.set_fault(lab, host, None)
        if not lab.alive(f'bmc-{host}'):
            bmc.start(lab, host)
    for host, h in lab.info['hosts'].items():
        # every sshd answers before the guests go home (twice in a soak of 1000
        # seeds one did not, and the seed died in its setup; the cause is not
        # pinned down: a previous seed's late chassis power-off is suspected)
        try:
            lab.wait_port(h['address'], h['port'], timeout=2)
        except RuntimeError:
            lab.stop(f'sshd-{host}')
            dom0.start(lab, host)
    for host, info in lab.info.get('bmc', {}).items():
        pw = lab.dir / 'bmc' / host / 'password.good'
        if pw.exists():
            pw.replace(info['password_file'])
    fence_unreachable = bool(rng and rng.random() < 0.5)
    # half the seeds: the chain [agent, storage] (a dead BMC leaves the disks)
    storage_fencing = bool(rng and rng.random() < 0.5)
    cluster.write_inventory(lab, state_db=str(lab.dir / f'state-{seed}.db'),
                            fencing='agent+storage' if storage_fencing else None,
                            dedupe_window=0.001, max_restart=1, reboot_grace=REBOOT_GRACE,
                            fence_unreachable=fence_unreachable)
    storage_lab.clear_reservations(lab, cluster.cluster(lab))
    for attempt in range(3):
        # the setup, not the seed: on a loaded machine a login may miss the
        # inventory's 5 s (5 of 450 seeds died here at load 16); again, then
        try:
            cluster.start_homes(lab)
            break
        except RuntimeError:
            if attempt == 2:
                raise
            time.sleep(1)
    roaming = roam(lab, rng) if rng else {}
    return roaming, fence_unreachable, storage_fencing


def roam(lab: Lab, rng: random.Random) -> dict:
    """Move 0-2 guests (that fit) to another active dom0, then record every
    dom0's listing as check_xen_host would: the cache knows where they are."""
    from xenha.failover import Engine
    c = cluster.cluster(lab)
    actives = [h for h, r in HOSTS if r == 'active']
    used = {h: sum(g.memory_mb for g in GUESTS if g.home == h) for h in actives}
    out = {}
    for g in rng.sample(GUESTS, rng.randint(0, 2)):
        fits = [h for h in actives if h != g.home
                and used[h] + g.memory_mb <= HOST_MB - 1024 - 256]
        if not fits:
            continue
        to = rng.choice(fits)
        e = Engine(c)
        e.job = 'lab-roam'
        u = c.domus[g.name]
        try:
            # the new host logs in to the guest's disks first, as a migration would
            if any(e.attach(c.dom0s[to], c.targets_of(u)).values()):
                continue
            xensim.destroy(dom0.state_dir(lab, g.home), g.name)
            if _started(e, c.dom0s[to], u):
                out[g.name] = to
                used[to] += g.memory_mb
                used[g.home] -= g.memory_mb
            elif not _started(e, c.dom0s[g.home], u):
                raise RuntimeError(f'lab: {g.name} could neither roam to {to} nor go back home')
        finally:
            e.close()
            e.db.close()
    e = Engine(c)
    try:
        e.views(list(c.dom0s.values()))    # what check_xen_host records
    finally:
        e.close()
        e.db.close()
    return out


def _started(engine, host, u, attempts: int = 3) -> bool:
    """The setup's create (a loaded machine may miss a command's timeout)."""
    from xenha.runner import RunnerError
    from xenha.xen import ToolstackError
    for _ in range(attempts):
        try:
            return engine.start_on(host, [u]) == {u.name: None}
        except (RunnerError, ToolstackError):
            time.sleep(1)
    return False


def inject(lab: Lab, rng: random.Random, roaming: dict) -> list[tuple[str, str]]:
    actives = [h for h, r in HOSTS if r == 'active']
    spares = [h for h, r in HOSTS if r == 'spare']
    faults = []
    kinds = [rng.choice(FAULTS if i else JOB_FAULTS) for i in range(rng.randint(1, 4))]
    if rng.random() < 0.4:      # often: another dom0 cut off or hung meanwhile
        kinds.insert(rng.randint(0, len(kinds)), rng.choice(('partition', 'hang-other')))
    for kind in kinds:
        # the first fault always needs a job, so every seed exercises the engine
        if kind in ('power', 'hang', 'toolstack', 'duplicate-event', 'partition',
                    'hang-other', 'partition-failed', 'bmc-password', 'bmc-down',
                    'bmc-ignores-off', 'bmc-dead-with-host'):
            target = rng.choice(actives)
        elif kind in ('spare-full', 'spare-broken'):
            target = rng.choice(spares)
        elif kind in ('reboot-gap', 'restart-in-gap'):
            target = rng.choice(sorted(roaming) or [g.name for g in GUESTS])
        else:
            target = rng.choice([g.name for g in GUESTS])
        sd = dom0.state_dir(lab, target) if target in lab.info['hosts'] else None
        if kind == 'power':
            dom0.power(lab, target, on=False)
        elif kind == 'bmc-dead-with-host':      # the chassis lost power, BMC and all
            bmc.stop(lab, target)
            dom0.power(lab, target, on=False)
        elif kind in ('hang', 'hang-other'):
            dom0.hang(lab, target)
        elif kind in ('partition', 'partition-failed'):
            if dom0.reachable(lab, target):
                dom0.partition(lab, target)
        elif kind == 'toolstack':
            xensim.set_fault(sd, 'fail')
        elif kind in ('crash', 'pause'):
            for host in lab.info['hosts']:
                try:
                    xensim.set_domain_state(dom0.state_dir(lab, host), target,
                                            'crashed' if kind == 'crash' else 'paused')
                except LookupError:
                    pass
        elif kind in ('reboot-gap', 'restart-in-gap'):
            gap = round(rng.uniform(0, MAX_GAP), 1)
            kind = f'{kind}:{gap:g}'
            for host in lab.info['hosts']:
                try:
                    xensim.reboot(dom0.state_dir(lab, host), target, gap)
                except (LookupError, OSError):
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
        faults.append((kind, target))
    return faults


def where(lab: Lab) -> dict[str, list[str]]:
    """The ground truth: guest -> hosts holding it (a reboot gap counts)."""
    out: dict[str, list[str]] = {}
    for host in lab.info['hosts']:
        for d in xensim.read(dom0.state_dir(lab, host))['domains']:
            if d['id'] and not d['name'].startswith('filler-'):
                out.setdefault(d['name'], []).append(host)
    return out


class Writers:
    """Of the hosts holding a guest, those that may write its disks, as the
    targets themselves say (tgtd's registrations, vblade's reserve list): a
    copy left on a dom0 fenced at the storage is cut off, not running twice.
    A host once refused stays refused for the seed (nothing unfences it)."""

    def __init__(self, lab: Lab):
        self.lab, self.c = lab, cluster.cluster(lab)
        self.refused: set[tuple[str, str]] = set()

    def __call__(self, guest: str, hosts: list[str]) -> list[str]:
        u = self.c.domus.get(guest)
        if u is None or not u.targets:
            return hosts
        out = []
        for h in hosts:
            if (guest, h) in self.refused:
                continue
            if all(storage_lab.may_write(self.lab, self.c, h, t) for t in u.targets):
                out.append(h)
            else:
                self.refused.add((guest, h))
        return out


def kind_of(fault: str) -> str:
    return fault.split(':')[0]


def run_seed(lab: Lab, seed: int) -> Outcome:
    from xenha.failover import Engine
    from xenha.restart import restart
    rng = random.Random(seed)
    roaming, fence_unreachable, storage_fencing = reset(lab, seed, rng)
    out = Outcome(seed, inject(lab, rng, roaming), roaming=roaming,
                  fence_unreachable=fence_unreachable, storage_fencing=storage_fencing)
    c = cluster.cluster(lab)
    jobs = []
    failed_hosts = sorted({t for k, t in out.faults if kind_of(k) in FAILED})
    for host in failed_hosts:
        jobs.append(('failover', host))
    if any(k == 'duplicate-event' for k, _ in out.faults):
        jobs += [('failover', t) for k, t in out.faults if k == 'duplicate-event']
        jobs += [('failover', h) for h in failed_hosts]     # the same event twice
    for kind, name in out.faults:
        if kind_of(kind) in ('crash', 'pause', 'restart-in-gap'):
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
            out.reports += [('failover', f.subject, f) for f in r.followups]

    stop = threading.Event()

    writers = Writers(lab)

    def watch():
        while not stop.is_set():
            for name, hosts in where(lab).items():
                if len(hosts) > 1 and len(live := writers(name, hosts)) > 1:
                    with lock:
                        out.violations.append(f'{name} ran on {" and ".join(live)} '
                                              f'at {time.strftime("%T")}')
            out.polls += 1
            stop.wait(0.1)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=one, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    placed = where(lab)
    for name, hosts in placed.items():
        if len(hosts) > 1 and len(live := writers(name, hosts)) > 1:
            out.violations.append(f'{name} runs on {" and ".join(live)} at the end')
    out.violations = sorted(set(out.violations))
    for g in GUESTS:
        if g.name in placed:
            continue
        explained = [r for _, subject, r in out.reports if g.name in r.failed
                     or g.name in r.skipped or (r.result in ('failed', 'refused', 'noop')
                                                and subject in (g.name, g.home,
                                                                out.roaming.get(g.name)))]
        if not explained:
            out.violations.append(f'{g.name} runs nowhere and no report says why')
    return out
