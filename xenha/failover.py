"""The failover engine: the only place that changes a cluster.

`Engine.failover(dom0)` follows the architecture page, step by step:

1. lease on the dom0 (a second event is a no-op; a finished failover is not
   repeated inside the dedupe window);
2. confirm the dom0 is gone (short re-probes); alive → stop, say why;
3. fence it; no confirmed fence → stop: "fencing failed: not starting anything";
4. victims = domUs last seen there ∪ homed there and seen nowhere ∪ those an
   earlier job left in doubt because of it; each is accounted for
   (xenha.accounting): one running on a dom0 that answered both looks is left
   alone, one that a silent, unfenced dom0 may run is not started (the result
   says which dom0 and what to run; `fence_unreachable` fences it instead), one
   that may be rebooting where it last ran waits out `reboot_grace`;
5. place them on spares by priority, then memory, on live free memory minus
   the dom0 reserve; what does not fit is reported;
6. log each chosen spare in to the storage its domUs need, wait for the device;
7. `create` in parallel (bounded per host), poll until running;
8. journal everything, tell Nagios.

Every step is idempotent: a job killed halfway and run again finds the
domUs it already started running on the spare and counts them as recovered,
never starting anything twice.  `Engine.restart(domu)` handles a guest that
died while its dom0 is healthy.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from xenha import accounting, fencing
from xenha.inventory import Cluster, Dom0, DomU, Target
from xenha.nagios import CommandFile
from xenha.runner import HostTimeout, RunnerError, SSHOptions, SSHRunner
from xenha.state import StateDB
from xenha.units import MiB
from xenha.xen import Domain, HostInfo, Toolstack, ToolstackError, failure_reason

DOMU_SERVICE = 'xen domain'     # the service every rendered domU host carries
# A create whose answer was lost and whose domain never showed: for this long
# no job starts that domU anywhere else (a queued or hung xl may still build it)
PENDING_WINDOW = 600.0
# The fast path asks the BMC at the first failed host check: about a second
FAST_STATUS_TIMEOUT = 2.0


class HostView(namedtuple('HostView', 'name domains info error at')):
    """One live look at a dom0: its domains (and `xl info`, when asked) as
    listed at Unix time `at`, or the error that stopped the look."""
    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class Looks(namedtuple('Looks', 'name answered domains present error info')):
    """A dom0 after the guard's looks: `answered` both; `domains` of the newest
    look that answered (None: none did); `present`: domU names holding memory
    there in any look; `error` of the last look that failed; `info` if asked."""
    __slots__ = ()


@dataclass
class Report:
    """What a job did; `code` is the Nagios state of the passive result."""
    job: str
    subject: str
    result: str = 'ok'            # ok | partial | refused | failed | noop | plan
    message: str = ''
    moved: dict = field(default_factory=dict)      # domU -> host it now runs on
    failed: dict = field(default_factory=dict)     # domU -> why it is not running
    skipped: dict = field(default_factory=dict)    # domU -> why it was left alone
    steps: list = field(default_factory=list)      # (step, seconds)
    plan: 'Plan | None' = None
    followups: list = field(default_factory=list)  # Reports of dom0s this job fenced
    path: str = 'hard'            # hard (Nagios HARD DOWN) | fast (BMC said off)
    storage_only: bool = False    # fenced at the storage only (not powered off)

    @property
    def code(self) -> int:
        return {'ok': 0, 'noop': 0, 'plan': 0, 'refused': 1}.get(self.result, 2)


@dataclass
class Plan:
    dom0: str
    fencing: list                                  # labels of the fence chain
    victims: list = field(default_factory=list)    # DomU: to be started now
    placement: dict = field(default_factory=dict)  # domU name -> host name
    unplaced: dict = field(default_factory=dict)   # domU name -> why
    skipped: dict = field(default_factory=dict)    # domU name -> why
    already: dict = field(default_factory=dict)    # domU -> host it already runs on
    doubtful: dict = field(default_factory=dict)   # domU -> Verdict (a silent dom0 may run it)
    waiting: dict = field(default_factory=dict)    # domU -> Verdict (maybe rebooting)
    free: dict = field(default_factory=dict)       # host -> bytes usable before placing
    listings: dict = field(default_factory=dict)   # host -> its domains at the last look
    fence_problems: list = field(default_factory=list)  # configuration smells, said aloud

    def describe(self, cluster: Cluster) -> list[str]:
        lines = [f'failover plan for {self.dom0}',
                 f'  fence: {" -> ".join(self.fencing) or "(none configured)"}']
        lines += [f'  fence WARNING: {p}' for p in self.fence_problems]
        for host, free in self.free.items():
            lines.append(f'  spare {host}: {free // MiB} MiB usable')
        for u in sorted(self.victims, key=lambda u: (-u.priority, -u.memory, u.name)):
            if u.name in self.placement:
                lines.append(f'  {u.name} ({u.memory_mib} MiB, priority {u.priority}) '
                             f'-> {self.placement[u.name]}')
        for name, host in self.already.items():
            lines.append(f'  {name}: already runs on {host}, left alone')
        for name, v in self.waiting.items():
            lines.append(f'  {name}: waits: {v.why}; looking again at '
                         f'{accounting.clock(v.until)}')
        for name, v in self.doubtful.items():
            lines.append(f'  {name}: NOT restarted: {v.why}: '
                         f'{accounting.way_out(v, self.dom0)}')
        for name, why in {**self.skipped, **self.unplaced}.items():
            lines.append(f'  {name}: NOT restarted: {why}')
        if not (self.victims or self.skipped or self.already or self.doubtful
                or self.waiting):
            lines.append('  no domU to move')
        return lines


class Engine:
    def __init__(self, cluster: Cluster, db: StateDB | None = None, *,
                 say=None, confirm_probes: int = 2, probe_interval: float = 0.25,
                 recheck_delay: float | None = None, create_timeout: float = 60.0,
                 one_at_a_time: bool = False):
        self.cluster = cluster
        self.d = cluster.defaults
        self.db = db or StateDB(self.d.state_db)
        self.nagios = CommandFile(self.d.nagios_command_file)
        self.say = say or (lambda text: None)
        self.confirm_probes = confirm_probes
        self.probe_interval = probe_interval
        # the guard's two looks (inventory: split_brain_recheck)
        self.recheck_delay = self.d.split_brain_recheck if recheck_delay is None \
            else recheck_delay
        self.create_timeout = create_timeout
        # the benchmark's baseline: one host, one domU at a time, each verified
        # before the next (what a shell-script failover does)
        self.one_at_a_time = one_at_a_time
        self._runners: dict[str, SSHRunner] = {}
        self._lock = threading.Lock()
        self.job = ''
        self._not_fast = ''
        self.storage_only: set[str] = set()    # dom0s this job revoked, not powered off

    # -- reaching dom0s ------------------------------------------------------------
    def runner(self, host: Dom0 | str, timeout: float | None = None) -> SSHRunner:
        """One SSH connection per host and job (thread-safe, reused)."""
        h = self.cluster.dom0s[host] if isinstance(host, str) else host
        with self._lock:
            r = self._runners.get(h.name)
            if r is None or timeout is not None:
                opts = SSHOptions(user=h.ssh_user, port=h.port, identity=h.ssh_key,
                                  known_hosts=h.known_hosts, sudo=self.d.sudo)
                r = SSHRunner(h.address, opts, timeout or self.d.timeout)
                if timeout is None:
                    self._runners[h.name] = r
            return r

    def toolstack(self, host: Dom0, runner=None, timeout: float | None = None) -> Toolstack:
        return Toolstack(runner or self.runner(host), host.toolstack,
                         host.toolstack_command, timeout=timeout or self.d.timeout)

    def close(self) -> None:
        with self._lock:
            for r in self._runners.values():
                r.close()
            self._runners.clear()

    def views(self, hosts: list[Dom0], info_for=()) -> dict[str, HostView]:
        """A live `list` of each host (and `info` of those in `info_for`, in the
        same round trip), in parallel; each listing is recorded in the state
        database (what it says of every domU: seen there, or missing since)."""
        want_info = {h.name for h in info_for}

        def one(h):
            try:
                ts = self.toolstack(h)
                if h.name in want_info:
                    doms, info = ts.list_and_info()
                else:
                    doms, info = ts.list(), None
            except (RunnerError, ToolstackError) as exc:
                self._drop(h.name)
                return HostView(h.name, None, None, exc, time.time())
            at = time.time()
            self.db.record_listing(h.address, doms, info, hostname=h.name, taken_at=at)
            return HostView(h.name, doms, info, None, at)
        if not hosts:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
            return {v.name: v for v in pool.map(one, hosts)}

    def scan(self, hosts: list[Dom0], info_for: list[Dom0] | None = None):
        """`views` as listings (domain list, or the error): for the checks and
        `xenha status`.  With `info_for`: (listings, infos)."""
        views = self.views(hosts, info_for or ())
        listings = {n: v.domains if v.ok else v.error for n, v in views.items()}
        if info_for is None:
            return listings
        return listings, {h.name: (views[h.name].info or views[h.name].error
                                   or ToolstackError('no info'))
                          for h in info_for if h.name in views}

    def _drop(self, name: str) -> None:
        with self._lock:
            r = self._runners.pop(name, None)
        if r:
            r.close()

    # -- journal -------------------------------------------------------------------------
    def log(self, step: str, message: str, level: str = 'info',
            dom0: str | None = None, domu: str | None = None) -> None:
        self.db.journal(step, message, level, job=self.job, dom0=dom0, domu=domu)
        self.say(f'{step}: {message}')

    # -- the guard: looks and accounting (reads, changes nothing but the cache) -----
    def look(self, dom0: str | None) -> tuple[float, dict[str, HostView]]:
        """A first look at every dom0 but `dom0`: (when, views)."""
        others = [h for h in self.cluster.dom0s.values() if h.name != dom0]
        return time.monotonic(), self.views(others)

    def look_again(self, hosts: list[Dom0], first: tuple[float, dict] | None = None,
                   info_for=()) -> dict[str, Looks]:
        """The guard's looks: a second one at least recheck_delay after the first
        (a rebooting guest is missing from `xl list` for a moment), and a third
        at a host that answered only one of them.  A host answers when its last
        two looks did."""
        looked_at, first_views = first or (time.monotonic(), self.views(hosts))
        wait = self.recheck_delay - (time.monotonic() - looked_at)
        if wait > 0:
            time.sleep(wait)
        rounds = [first_views, self.views(hosts, info_for)]
        flaky = [h for h in hosts if h.name in first_views
                 and first_views[h.name].ok != rounds[1][h.name].ok]
        if flaky:
            time.sleep(self.recheck_delay)
            rounds.append(self.views(flaky))
        out = {}
        for h in hosts:
            seen = [r[h.name] for r in rounds if h.name in r]
            answered = len(seen) >= 2 and seen[-1].ok and seen[-2].ok
            good = [v for v in seen if v.ok]
            present = frozenset(d.name for v in good for d in v.domains
                                if not d.is_dom0 and d.state.present)
            info = next((v.info for v in reversed(good) if v.info is not None), None)
            out[h.name] = Looks(h.name, answered, good[-1].domains if good else None,
                                present, next((v.error for v in reversed(seen)
                                               if not v.ok), None), info)
        return out

    def facts(self, looks: dict[str, Looks], failed: Dom0 | None = None
              ) -> dict[str, accounting.Host]:
        """Each dom0 as the accounting sees it: the looks, its newest listing
        (the looks recorded theirs) and any fence recorded since."""
        fenced = self.db.fenced_hosts()
        revoked = self.db.revoked()
        out = {}
        for h in self.cluster.dom0s.values():
            lk = looks.get(h.name)
            last = self.db.listing(h.address)
            at = last.taken_at if last else None
            fenced_at = fenced.get(h.address)
            if fenced_at is not None and at is not None and fenced_at < at:
                fenced_at = None              # it answered after that fence
            out[h.name] = accounting.Host(
                h.name, bool(lk and lk.answered) and h is not failed,
                lk.present if lk and lk.answered else frozenset(), at,
                frozenset(d['name'] for d in last.domains if d['state'] != 'inactive')
                if last else frozenset(), fenced_at, h.address,
                revoked.get(h.address, frozenset()))
        return out

    def verdicts(self, names, facts: dict[str, accounting.Host],
                 failed: Dom0 | None = None) -> dict[str, accounting.Verdict]:
        """The accounting's verdict for each domU of `names`."""
        by_addr = {h.address: h.name for h in self.cluster.dom0s.values()}
        failed_listing = facts[failed.name].last_listing if failed else frozenset()
        now = time.time()
        out = {}
        for name in names:
            seen = [accounting.Sighting(by_addr.get(s.host, s.host), s.seen_at,
                                        s.missing_since) for s in self.db.sightings(name)]
            u = self.cluster.domus.get(name)
            out[name] = accounting.account(
                name, facts, seen, now=now, reboot_grace=self.d.reboot_grace,
                failed=failed.name if failed else None, failed_listing=failed_listing,
                targets=frozenset(u.targets) if u else frozenset())
        return out

    # -- planning ------------------------------------------------------------------------
    def victims(self, failed: Dom0, looks: dict[str, Looks]) -> tuple[list[DomU], dict]:
        """DomUs last seen on `failed` ∪ homed there and seen running on no dom0
        that answered ∪ those an earlier job left in doubt because of it."""
        skipped = {}
        names = []
        last = self.db.listing(failed.address)
        for row in (last.domains if last else []):
            if row['name'] in self.cluster.domus:
                names.append(row['name'])
            else:
                skipped[row['name']] = (f'last seen on {failed.name} but not in the '
                                        'inventory: no config to start it from')
        seen_elsewhere = {n for lk in looks.values() if lk.answered for n in lk.present}
        for u in self.cluster.domus_homed_on(failed.name):
            if u.name not in names and u.name not in seen_elsewhere:
                names.append(u.name)
        for name, (host, _why, _at) in self.db.doubts().items():
            if host == failed.name and name in self.cluster.domus and name not in names:
                names.append(name)
        victims = []
        for name in names:
            u = self.cluster.domus[name]
            if not u.ha:
                skipped[name] = 'ha = false in the inventory'
            else:
                victims.append(u)
        return victims, skipped

    def plan(self, dom0: str, first_look: tuple[float, dict] | None = None,
             only: set[str] | None = None) -> Plan:
        """Who moves where; reads the cluster, changes nothing.

        Every victim is accounted for (xenha.accounting): one that runs on a
        dom0 that answered is left alone; one that a silent, unfenced dom0
        may run is in doubt; one that may be rebooting where it last ran
        waits.  The first look is taken while the job confirms and fences, so
        the guard's wait is usually over by now.  `only`: plan these domUs
        (a later round for those that waited).
        """
        failed = self.cluster.dom0s[dom0]
        plan = Plan(dom0, [fencing.label(m) for m in failed.fencing],
                    fence_problems=[f'{fencing.label(m)}: {p}' for m in failed.fencing
                                    for p in fencing.problems(m)])
        others = [h for h in self.cluster.dom0s.values() if h.name != dom0]
        looks = self.look_again(others, first_look, info_for=self.candidates(others, {}))
        plan.listings = {n: lk.domains if lk.domains is not None else lk.error
                         for n, lk in looks.items()}
        if only is None:
            victims, plan.skipped = self.victims(failed, looks)
        else:       # victims of an earlier round (one back where it ran is `already`)
            victims = [self.cluster.domus[n] for n in sorted(only)]
        # a dom0 fenced at the storage only may still run its guests, cut off
        # from the disks it was revoked on: it is accounted like a silent one
        fenced = None if dom0 in self.storage_only else failed
        verdicts = self.verdicts([u.name for u in victims], self.facts(looks, fenced),
                                 fenced)
        for u in victims:
            v = verdicts[u.name]
            if v.kind == accounting.RUNS:
                plan.already[u.name] = v.host
            elif v.kind == accounting.DOUBT:
                plan.doubtful[u.name] = v
            elif v.kind == accounting.REBOOTING:
                plan.waiting[u.name] = v
            elif (why := self.pending_elsewhere(u.name)):
                plan.skipped[u.name] = why
            else:
                plan.victims.append(u)
        self._place(plan, others, plan.listings,
                    {n: lk.info or lk.error or ToolstackError('no info')
                     for n, lk in looks.items()})
        return plan

    def pending_elsewhere(self, name: str) -> str | None:
        """Why `name` must not be started now: a lost create that may still finish."""
        pending = self.db.pending(name, PENDING_WINDOW)
        if pending is None:
            return None
        host, at = pending
        return (f'a create of {name} on {host} lost its answer {time.time() - at:.0f}s ago '
                f'and xl may still finish it: not starting it elsewhere for '
                f'{PENDING_WINDOW:g}s (check `xl list` on {host})')

    def candidates(self, others: list[Dom0], listings: dict) -> list[Dom0]:
        hosts = [h for h in others if h.role == 'spare']
        if self.d.allow_active_as_target:
            hosts += [h for h in others if h.role == 'active']
        return [h for h in hosts if not isinstance(listings.get(h.name), Exception)]

    def _place(self, plan: Plan, others: list[Dom0], listings: dict,
               infos: dict | None = None) -> None:
        """Fill plan.free from the candidates' live `info`, then `place`."""
        hosts = {h.name for h in self.candidates(others, listings)}
        if infos is None:
            infos = self._infos([h for h in others if h.name in hosts])
        for name, info in infos.items():
            if name not in hosts:
                continue
            if isinstance(info, Exception):
                self.log('plan', f'spare {name} gives no memory figure: {info}', 'warning',
                         dom0=plan.dom0)
                continue
            plan.free[name] = info.free_memory - self.d.dom0_reserve
        plan.placement, plan.unplaced = place(plan.victims, plan.free)

    def _infos(self, hosts: list[Dom0]) -> dict[str, HostInfo | Exception]:
        return self.scan(hosts, info_for=hosts)[1]

    # -- the steps ---------------------------------------------------------------------
    def confirm_gone(self, failed: Dom0) -> str | None:
        """None when the dom0 does not answer; else what it answered.

        More patient than the host check that declared it down: a dom0 that
        only answers slowly (a banner up to the check's -t, an overloaded or
        emulated host) answers here and is not fenced.  A probe that waited
        that long and got nothing is the last; a refused one is tried again a
        moment later (a restarting sshd)."""
        patience = max(1.5 * self.cluster.timing.dom0_check_timeout, 2.0)
        for attempt in range(self.confirm_probes):
            if attempt:
                time.sleep(self.probe_interval)
            # the runner gives 40% of its budget to connecting: that is `patience`
            probe = self.runner(failed, timeout=patience / 0.4 + 0.5)
            try:
                self.toolstack(failed, probe, timeout=self.d.timeout).list()
                return f'{failed.name} answers SSH and its toolstack lists domains'
            except ToolstackError as exc:
                return f'{failed.name} answers SSH (toolstack trouble: {exc})'
            except RunnerError as exc:
                self.log('confirm', f'probe {attempt + 1}/{self.confirm_probes}: {exc}',
                         dom0=failed.name)
                if isinstance(exc, HostTimeout):
                    break
            finally:
                probe.close()
        return None

    def fence(self, failed: Dom0, elsewhere=frozenset()) -> fencing.FenceOutcome:
        """The dom0's fence chain; a storage method revokes it on the targets of
        every guest it may run (recorded, so the accounting knows) but those in
        `elsewhere` (running on a dom0 that answers: their disks are not
        touched, nothing ever takes a running guest's writer away)."""
        storage = (self.storage_fence(failed, elsewhere)
                   if any(m.method == 'storage' for m in failed.fencing) else None)
        outcome = fencing.fence(
            failed.name, failed.fencing,
            runner_factory=lambda name: self.runner(name, timeout=self.d.timeout),
            timeout=max(sum(m.timeout for m in failed.fencing), 10.0),
            toolstack=failed.toolstack, toolstack_command=failed.toolstack_command,
            storage=storage)
        for a in outcome.attempts:
            self.log('fence', f'{a.method}: {"confirmed" if a.ok else "failed"}: '
                     f'{a.message} ({a.seconds:.1f}s)', 'info' if a.ok else 'error',
                     dom0=failed.name)
        if outcome.skipped:
            self.log('fence', outcome.message, 'warning', dom0=failed.name)
        if outcome.revoked:
            self.db.record_revoked(failed.address, *outcome.revoked)
        return outcome

    def exposed(self, host: Dom0) -> list[DomU]:
        """The domUs `host` may run: its last listing, homed there, or left in
        doubt because of it."""
        last = self.db.listing(host.address)
        names = {d['name'] for d in (last.domains if last else [])}
        names |= {u.name for u in self.cluster.domus_homed_on(host.name)}
        names |= {n for n, (h, _w, _a) in self.db.doubts().items() if h == host.name}
        return [u for n, u in self.cluster.domus.items() if n in names]

    def storage_fence(self, host: Dom0, elsewhere=frozenset()) -> fencing.StorageFence:
        """What the storage method revokes `host` on: the disks of every guest
        it may run but those running elsewhere; the other dom0s keep their
        access (AoE reserve lists)."""
        from xenha.storage import reservations
        targets = {t.name: t for u in self.exposed(host) if u.name not in elsewhere
                   for t in self.cluster.targets_of(u)}
        keep = tuple(reservations.dom0(h) for h in self.cluster.dom0s.values() if h is not host)
        return fencing.StorageFence(tuple(targets.values()), reservations.dom0(host),
                                    keep=keep, opener=self.aoe_opener())

    def aoe_opener(self):
        """Raw AoE sockets on our SAN interface (in `san_netns` when set)."""
        if not self.d.san_netns:
            return None
        from xenha.storage import aoe
        return lambda interface: aoe.open_socket(interface, self.d.san_netns)

    @property
    def storage_fencing(self) -> bool:
        """Is storage fencing in any dom0's chain (then every attach registers)?"""
        return any(m.method == 'storage' for h in self.cluster.dom0s.values()
                   for m in h.fencing)

    def make_writer(self, host: Dom0, runner, target: Target) -> str | None:
        """Storage fencing: `host` may write `target` (None), or why not."""
        from xenha.storage import reservations
        who = reservations.dom0(host)
        if target.kind == 'iscsi':
            r = runner.run(reservations.sg_persist_register(target.device, who.pr_key),
                           self.d.timeout)
            return None if r.exit == 0 else \
                f'cannot register {host.name} on {target.name}: {r.reason()}'
        out = reservations.register(target, who, timeout=self.d.timeout,
                                    opener=self.aoe_opener(), open_ok=True)
        return None if out.confirmed else out.message

    def _fenced_by(self, failed: Dom0, attempt: fencing.Attempt) -> fencing.FenceOutcome:
        """The fast path's power status was the fence's confirmation."""
        self.log('fence', f'{attempt.method}: confirmed: {attempt.message} (the fast '
                 f'path\'s status, {attempt.seconds:.1f}s)', dom0=failed.name)
        return fencing.FenceOutcome(True, attempt.method, f'{failed.name} fenced by '
                                    f'{attempt.method}: {attempt.message}', attempt.seconds,
                                    (attempt,))

    def attach(self, host: Dom0, targets: list[Target]) -> dict[str, str | None]:
        """Log `host` in to each target (in parallel); target -> None (ok) or why not.

        With storage fencing in the inventory, `host` is then made a writer:
        registered on the LUN from its own session (iSCSI), in the reserve
        list when the target keeps one (AoE) — a revoke elsewhere leaves the
        LUN to registrants only."""
        from xenha.storage import attach
        runner = self.runner(host)

        def one(t: Target):
            try:
                why = attach.attach(runner, t, timeout=self.d.timeout)
                if why is None and self.storage_fencing:
                    why = self.make_writer(host, runner, t)
            except RunnerError as exc:
                why = str(exc)
            self.log('storage', f'{host.name}: {t.name} ({t.device}): '
                     + ('ready' if why is None else f'FAILED: {why}'),
                     'info' if why is None else 'error', dom0=host.name)
            return t.name, why
        if not targets:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(targets), 8)) as pool:
            return dict(pool.map(one, targets))

    def start_on(self, host: Dom0, domus: list[DomU],
                 listed: list[Domain] | None = None) -> dict[str, str | None]:
        """Create `domus` on `host` (bounded parallel), then poll until they run.

        Returns domU -> None (runs) or why not.  A domU already on the host is
        not created again.  `listed`: the host's domains from a look a moment
        ago (the plan's), which saves a round trip; xl itself refuses a name
        that appeared on the host since.
        """
        ts = self.toolstack(host)
        present = {d.name: d for d in (listed if listed is not None else ts.list())}
        # a guest that just shut down lingers a moment (--ps--), and creating
        # its name fails until xl's monitor has destroyed it: wait for that
        going = ('shutdown', 'dying')
        deadline = time.monotonic() + 10
        while any(u.name in present and present[u.name].state.value in going
                  for u in domus) and time.monotonic() < deadline:
            time.sleep(0.2)
            present = {d.name: d for d in ts.list()}
        result: dict[str, str | None] = {}
        todo = []
        for u in domus:
            if u.name in present and present[u.name].state.value in going:
                result[u.name] = f'still {present[u.name].state.value} on {host.name} after 10s'
                self.log('create', f'{u.name}: {result[u.name]}', 'error',
                         dom0=host.name, domu=u.name)
            elif u.name in present and present[u.name].state.present:
                self.log('create', f'{u.name} already on {host.name} '
                         f'({present[u.name].state.value}): not created again',
                         dom0=host.name, domu=u.name)
            else:
                todo.append(u)

        # a create may wait for every other one in flight: with autoballoon on,
        # xl builds one domain at a time under /var/lock/xl
        parallel = max(1, min(self.d.create_parallel, len(todo)))
        creating = self.toolstack(host, timeout=self.d.timeout * parallel)
        unsure: dict[str, str] = {}     # lost track of the create: the poll decides

        def create(u: DomU):
            try:
                r = creating.create(u.config)
            except RunnerError as exc:
                unsure[u.name] = f'{host.name} failed during create: {exc}'
                return u.name, unsure[u.name]
            if r.exit != 0:
                return u.name, f'create failed: {failure_reason(r)}'
            return u.name, None

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for name, why in pool.map(create, todo):
                result[name] = why
                self.log('create', f'{name} on {host.name}: '
                         + ('created' if why is None else why)
                         + (' (looking whether it came up all the same)' if name in unsure
                            else ''),
                         'info' if why is None else 'error', dom0=host.name, domu=name)
        waiting = {u.name for u in domus if u.name not in result or result[u.name] is None
                   or u.name in unsure}
        deadline = time.monotonic() + self.create_timeout
        unsure_deadline = time.monotonic() + min(self.create_timeout, self.d.timeout)
        doms = present
        while waiting:
            doms = {d.name: d for d in ts.list()}
            for name in list(waiting):
                d = doms.get(name)
                if d is not None and d.state.healthy:
                    waiting.discard(name)
                    result[name] = None
                    if unsure.pop(name, None):
                        self.log('create', f'{name} runs on {host.name} after all',
                                 dom0=host.name, domu=name)
                elif name in unsure and d is None:
                    # answer lost, domain not there: stop waiting after a moment
                    # (an xl still queued may build it later: recorded pending below)
                    if time.monotonic() > unsure_deadline:
                        waiting.discard(name)
                elif d is not None and d.state.value in ('crashed', 'dying', 'shutdown'):
                    waiting.discard(name)
                    result[name] = f'{d.state.value} right after create'
            if not waiting:
                break
            if time.monotonic() > deadline:
                for name in waiting:
                    result[name] = f'not running {self.create_timeout:g}s after create'
                break
            time.sleep(0.1)
        self.db.record_listing(host.address, list(doms.values()), hostname=host.name)
        for name in unsure:
            if name in doms:
                continue
            # never seen: xl may still be queued there; no job starts it elsewhere
            self.db.record_pending(name, host.name)
            result[name] += (f'; it may still appear on {host.name}: not started anywhere '
                             f'else for {PENDING_WINDOW:g}s')
        self.db.clear_pending(*(name for name, why in result.items() if why is None))
        return result

    def relocate(self, placement: dict[str, str], report: Report,
                 listings: dict | None = None) -> None:
        """Steps 6 and 7 for a placement: storage, then create, per host in parallel.

        Work is keyed "host" (or "host/domU" one at a time): one_host() gets a key.
        `listings`: the plan's last look at the hosts (see start_on).
        """
        listings = listings or {}
        by_host: dict[str, list[DomU]] = {}
        for name, host in placement.items():
            by_host.setdefault(host, []).append(self.cluster.domus[name])

        def one_host(key: str) -> dict[str, str | None]:
            host_name = key.split('/')[0]
            host = self.cluster.dom0s[host_name]
            domus = by_host[key]
            needed = {t.name: t for u in domus for t in self.cluster.targets_of(u)}
            try:
                attached = self.attach(host, list(needed.values()))
                ready, out = [], {}
                for u in domus:
                    bad = [f'{t}: {attached[t]}' for t in u.targets if attached.get(t)]
                    if bad:
                        out[u.name] = 'storage not ready: ' + '; '.join(bad)
                    else:
                        ready.append(u)
                listed = listings.get(host_name)
                out.update(self.start_on(
                    host, ready, None if isinstance(listed, Exception) else listed))
                return out
            except (RunnerError, ToolstackError) as exc:
                self._drop(host_name)
                return {u.name: f'{host_name} failed: {exc}' for u in domus}

        if self.one_at_a_time:
            by_host = {f'{h}/{u.name}': [u] for h, us in by_host.items() for u in us}
            results = [one_host(key) for key in by_host]
        else:
            with ThreadPoolExecutor(max_workers=max(1, len(by_host))) as pool:
                results = list(pool.map(one_host, by_host))
        for key, out in zip(by_host, results):
            for name, why in out.items():
                if why is None:
                    report.moved[name] = key.split('/')[0]
                else:
                    report.failed[name] = why

    # -- the job --------------------------------------------------------------------------
    def failover(self, dom0: str, dry_run: bool = False, why: str = '',
                 if_off: bool = False) -> Report:
        """Fail `dom0` over (see the module's docstring).

        `if_off`: the fast path, at the first failed host check: only when the
        dom0's BMC says its power is off (a power loss is a fact, and the fence
        is confirmed by that answer); on, or no answer, changes nothing and the
        HARD state decides, as acting then could fence a healthy host."""
        if dom0 not in self.cluster.dom0s:
            raise KeyError(f'no dom0 {dom0!r} in {self.cluster.source}')
        self.job = f'{time.strftime("%Y%m%dT%H%M%S")}-{dom0}-{uuid.uuid4().hex[:6]}'
        report = Report(self.job, dom0)
        if dry_run:
            report.plan = self.plan(dom0)
            report.result, report.message = 'plan', '\n'.join(
                report.plan.describe(self.cluster))
            return report
        power_off = early_look = None
        if if_off:
            # the guard's first look while the BMC answers (it records, changes
            # nothing); the BMC before the lease: a HARD event meanwhile finds it free
            looking = ThreadPoolExecutor(max_workers=1)
            early_look = looking.submit(self.look, dom0)
            looking.shutdown(wait=False)
            power_off = self.power_lost(self.cluster.dom0s[dom0])
            if power_off is None:
                early_look.result()
                report.result = 'noop'
                report.message = self._not_fast
                return report
            report.path = 'fast'
        lease = self.db.take_lease(dom0, self.job)
        if lease is None:
            if early_look is not None:
                early_look.result()         # its thread records listings: not left behind
            report.result = 'noop'
            holder = self.db.lease_holder(dom0)
            report.message = (f'a failover of {dom0} is already running'
                              + (f' (job {holder})' if holder else '')
                              + ': nothing more to do')
            self.log('lease', report.message, dom0=dom0)
            return report
        started = time.monotonic()
        fenced_too: list[str] = []
        try:
            with lease:
                self._failover(dom0, report, why, fenced_too, power_off, early_look)
        except Exception as exc:  # noqa: BLE001 - a crash is journaled, then re-raised
            report.result, report.message = 'failed', f'engine error: {exc!r}'
            self.log('end', report.message, 'error', dom0=dom0)
            self.db.finish_failover(self.job, 'failed')
            raise
        finally:
            self.close()
            report.steps.append(('total', time.monotonic() - started))
        self.tell_nagios(report)
        # the dom0s this job fenced (or tried to) because they might run its
        # guests: their own guests may have died with them, so each is failed
        # over now, a job of its own (it confirms and fences again, or refuses)
        for host in fenced_too:
            job = self.job
            report.followups.append(self.failover(
                host, why=f'fenced by the failover of {dom0} (job {job}, fence_unreachable)'))
        return report

    def power_lost(self, host: Dom0) -> fencing.Attempt | None:
        """The fast path's question to the first fence agent of the chain: is the
        power off?  Bounded to FAST_STATUS_TIMEOUT; an Attempt (the confirmed
        fence) when it says off, else None and `_not_fast` says why."""
        method = next((m for m in host.fencing if m.method == 'agent'), None)
        if method is None:
            self._not_fast = (f'fast path: {host.name} has no fence agent to ask for its '
                              'power state: the HARD state decides')
            self.log('fast', self._not_fast, dom0=host.name)
            return None
        t = time.monotonic()
        state, message = fencing.power_state(method, min(method.timeout, FAST_STATUS_TIMEOUT))
        took = time.monotonic() - t
        if state != 'off':
            self._not_fast = (f'fast path: {host.name} is down for Nagios, but '
                              + (f'its BMC says on ({message}, {took:.1f}s): hung, cut off '
                                 'or a blip, not a power loss' if state == 'on' else
                                 f'its BMC gives no power state ({message})')
                              + ': nothing done, the HARD state decides')
            self.log('fast', self._not_fast, dom0=host.name)
            return None
        return fencing.Attempt(fencing.label(method), True,
                               f'{message}: powered off, fenced', took)

    def _failover(self, dom0: str, report: Report, why: str, fenced_too: list,
                  power_off: fencing.Attempt | None = None, first_look=None) -> None:
        failed = self.cluster.dom0s[dom0]
        last = self.db.last_failover(dom0)
        if last and last['result'] == 'ok' and \
                time.time() - last['finished'] < self.d.dedupe_window:
            report.result = 'noop'
            report.message = (f'{dom0} was failed over {time.time() - last["finished"]:.0f}s '
                              f'ago (job {last["job"]}), inside the dedupe window of '
                              f'{self.d.dedupe_window:g}s: nothing to do')
            self.log('dedupe', report.message, dom0=dom0)
            if first_look is not None:
                first_look.result()
            return
        self.db.start_failover(self.job, dom0)
        self.log('start', f'failover of {dom0} begins' + (f' ({why})' if why else '')
                 + (f'; fast path: its BMC says off ({power_off.method} status: off, '
                    f'{power_off.seconds:.1f}s): a power loss, not waiting for the HARD '
                    'state' if power_off else ''), dom0=dom0)
        t = time.monotonic()
        if first_look is None:
            # the split-brain guard's first look runs while we confirm and fence
            looking = ThreadPoolExecutor(max_workers=1)
            first_look = looking.submit(self.look, dom0)
            looking.shutdown(wait=False)
        alive = self.confirm_gone(failed)
        report.steps.append(('confirm', time.monotonic() - t))
        if alive:
            first_look.result()     # its thread records listings: not left behind
            return self._end(report, 'refused', f'{alive}: not failing over')
        self.log('confirm', f'{dom0} does not answer: gone', dom0=dom0)
        t = time.monotonic()
        if power_off is not None:
            outcome = self._fenced_by(failed, power_off)
        else:
            elsewhere = frozenset()
            if any(m.method == 'storage' for m in failed.fencing):
                _, views = first_look.result()
                elsewhere = frozenset(d.name for v in views.values() if v.ok
                                      for d in v.domains if d.state.present)
            outcome = self.fence(failed, elsewhere)
        report.steps.append(('fence', time.monotonic() - t))
        if not outcome.ok and not outcome.revoked:
            first_look.result()
            return self._end(report, 'failed', outcome.message)
        if outcome.ok and outcome.method != 'storage' and not outcome.skipped:
            # the checks stop trusting its cached listing (no false split brain
            # while its guests start elsewhere); victims still come from it
            self.db.record_fenced(failed.address)
        elif not outcome.skipped:
            # revoked at the storage, not powered off: only a guest whose every
            # disk refuses it may start elsewhere (the accounting decides)
            self.storage_only.add(dom0)
            report.storage_only = True
            self.log('fence', f'{dom0} is fenced at the storage only (revoked on '
                     f'{", ".join(outcome.revoked)}'
                     + (f'; NOT on {", ".join(outcome.unrevoked)}' if outcome.unrevoked
                        else '') + '): it may still run, cut off from those disks; a '
                     'guest whose disks are not all revoked is not started',
                     'warning', dom0=dom0)
        waiting = self._place_and_start(dom0, report, first_look.result(), fenced_too)
        # guests that may be rebooting where they last ran: planned again once
        # their grace is over (the others did not wait for them); bounded, for a
        # guest that keeps coming and going
        t = time.monotonic()
        give_up = time.time() + 3 * self.d.reboot_grace + 10
        while waiting and time.time() < give_up:
            self._wait_for_reboots(dom0, waiting)
            waiting = self._place_and_start(dom0, report, None, fenced_too, set(waiting))
        for name, v in waiting.items():
            report.failed[name] = f'{v.why}; it keeps going missing there: not started'
        if time.monotonic() - t > 0.01:
            report.steps.append(('reboot waits', time.monotonic() - t))
        for name in report.moved:
            self.db.forget_domain(failed.address, name)
        self.db.clear_doubt(*report.moved)
        if report.failed:
            return self._end(report, 'partial', _summary(dom0, report))
        return self._end(report, 'ok', _summary(dom0, report))

    def _place_and_start(self, dom0: str, report: Report, first_look, fenced_too: list,
                         only: set[str] | None = None) -> dict:
        """Plan, fence the silent dom0s the policy lets us, start what is free;
        returns the guests that wait for a reboot grace (domU -> Verdict)."""
        # one placement at a time across jobs: two failovers must not both
        # count the same spare memory, and a job's doubts are written before
        # the failover of the dom0 they name plans
        placement_lease = self.db.take_lease('placement', self.job, wait=300)
        if placement_lease is None:
            report.failed.update({n: 'could not get the placement lock in 300s'
                                  for n in only or ()})
            self.log('plan', 'could not get the placement lock in 300s', 'error', dom0=dom0)
            return {}
        with placement_lease:
            t = time.monotonic()
            plan = self.plan(dom0, first_look, only)
            if plan.doubtful and self.d.fence_unreachable:
                running = frozenset(d.name for doms in plan.listings.values()
                                    if not isinstance(doms, Exception) for d in doms
                                    if d.state.present)
                fenced, tried = self.fence_silent({v.host for v in plan.doubtful.values()},
                                                  dom0, running)
                # each gets a failover of its own: confirmed or not, its power
                # may be off now, and it does not answer anyway
                fenced_too.extend(h for h in tried if h not in fenced_too)
                if fenced:
                    plan = self.plan(dom0, None, only)
            first = report.plan is None
            if first:
                report.plan = plan
                report.steps.append(('plan', time.monotonic() - t))
            for line in plan.describe(self.cluster)[1:]:
                # a later round says only what it decided about those guests
                if only is None or not line.startswith(('  fence', '  spare ', '  no domU')):
                    self.log('plan', line.strip(), dom0=dom0)
            for name, v in plan.doubtful.items():
                report.failed[name] = f'{v.why}: not started; {accounting.way_out(v, dom0)}'
                self.db.record_doubt(name, v.host, v.why, self.job)
            report.skipped.update(plan.skipped)
            report.failed.update(plan.unplaced)
            for name, host in plan.already.items():
                report.moved[name] = host
            t = time.monotonic()
            self.relocate(plan.placement, report, plan.listings)
            if first:
                report.steps.append(('relocate', time.monotonic() - t))
        return plan.waiting

    def _wait_for_reboots(self, dom0: str, waiting: dict) -> None:
        """Sleep until the first of their graces is over, looking at those dom0s
        each second meanwhile: when every waiting guest is back, stop early."""
        hosts = [self.cluster.dom0s[h] for h in {v.host for v in waiting.values()}]
        until = min(v.until for v in waiting.values())
        self.log('wait', f'{", ".join(sorted(waiting))}: may be rebooting where '
                 f'{"they" if len(waiting) > 1 else "it"} last ran; looking again at '
                 f'{accounting.clock(until)}', dom0=dom0)
        while time.time() < until:
            time.sleep(min(1.0, max(until - time.time(), 0.0)))
            views = self.views(hosts)
            if all(views[v.host].ok and name in {d.name for d in views[v.host].domains
                                                 if d.state.present}
                   for name, v in waiting.items()):
                return

    def fence_silent(self, hosts: set[str], why_for: str,
                     elsewhere=frozenset()) -> tuple[list[str], list[str]]:
        """fence_unreachable: fence each of `hosts` (silent dom0s that may run a
        guest of `why_for`) through its own chain.  Returns (confirmed: recorded
        as fenced, tried: every dom0 a fence was sent to, whose guests may have
        died with it).  A dom0 whose own failover runs is left to it."""
        done, tried = [], []
        for name in sorted(hosts):
            host = self.cluster.dom0s[name]
            lease = self.db.take_lease(name, self.job)
            if lease is None:
                self.log('fence', f'{name} may run guests of {why_for}, but a failover of '
                         f'{name} is running: it fences {name}', 'warning', dom0=name)
                continue
            with lease:
                self.log('fence', f'{name} does not answer and may run guests of '
                         f'{why_for}: fencing it (fence_unreachable = true)', 'warning',
                         dom0=name)
                tried.append(name)
                outcome = self.fence(host, elsewhere)
                if outcome.ok and outcome.method != 'storage' and not outcome.skipped:
                    self.db.record_fenced(host.address)
                    done.append(name)
                elif outcome.revoked:       # recorded: the accounting counts it
                    done.append(name)
                else:
                    self.log('fence', f'{name} not fenced: {outcome.message}', 'error',
                             dom0=name)
        return done, tried

    def _end(self, report: Report, result: str, message: str) -> None:
        report.result, report.message = result, message
        level = {'ok': 'info', 'refused': 'warning'}.get(result, 'error')
        self.log('end', message, level, dom0=report.subject)
        self.db.finish_failover(self.job, result)

    def tell_nagios(self, report: Report) -> None:
        if report.result in ('noop', 'plan') or not self.nagios.path:
            return
        state = {0: 'OK', 1: 'WARNING', 2: 'CRITICAL'}[report.code]
        sent = self.nagios.service_result(self.d.cluster_host, self.d.failover_service,
                                          report.code, f'FAILOVER {state} - {report.message}')
        for name in report.moved:
            self.nagios.force_service_check(name, DOMU_SERVICE)
        self.log('nagios', 'result sent to Nagios' if sent else
                 f'Nagios command file {self.nagios.path} not writable: result not sent',
                 'info' if sent else 'warning', dom0=report.subject)


def place(domus: list[DomU], free: dict[str, int]) -> tuple[dict, dict]:
    """Priority first, then the biggest; each onto the host with most room left.

    Most-room-first (rather than first fit) spreads the guests over the spares,
    so their creates run in parallel and one spare's loss hurts less.
    Returns (domU -> host, domU -> why it does not fit).
    """
    room = dict(free)
    placement, unplaced = {}, {}
    for u in sorted(domus, key=lambda u: (-u.priority, -u.memory, u.name)):
        best = max(room, key=lambda h: room[h], default=None)
        if best is None:
            unplaced[u.name] = 'no spare dom0 answers'
        elif room[best] < u.memory:
            unplaced[u.name] = (f'needs {u.memory // MiB} MiB; the most any spare has '
                                f'left is {max(room[best], 0) // MiB} MiB ({best})')
        else:
            placement[u.name] = best
            room[best] -= u.memory
    return placement, unplaced


def _summary(dom0: str, report: Report) -> str:
    parts = []
    if report.moved:
        parts.append(f'{len(report.moved)} domU{"s" if len(report.moved) != 1 else ""} '
                     'running: ' + ', '.join(f'{n} on {h}' for n, h in sorted(report.moved.items())))
    if report.failed:
        parts.append(f'{len(report.failed)} NOT running: '
                     + '; '.join(f'{n}: {w}' for n, w in sorted(report.failed.items())))
    if report.skipped:
        parts.append('left alone: ' + '; '.join(f'{n}: {w}' for n, w in
                                                sorted(report.skipped.items())))
    path = (' (fast path: its BMC said off at the first failed check)'
            if report.path == 'fast' else
            f' (fenced at the storage only: {dom0} may still run, its old copies cannot '
            'write their disks)' if report.storage_only else '')
    return f'{dom0} failed over{path}: ' + ('; '.join(parts) if parts else 'no domU to move')
