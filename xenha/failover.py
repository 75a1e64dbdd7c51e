"""The failover engine: the only place that changes a cluster.

`Engine.failover(dom0)` follows the architecture page, step by step:

1. lease on the dom0 (a second event is a no-op; a finished failover is not
   repeated inside the dedupe window);
2. confirm the dom0 is gone (short re-probes); alive → stop, say why;
3. fence it; no confirmed fence → stop: "fencing failed: not starting anything";
4. victims = domUs last seen there ∪ homed there and seen nowhere; a victim
   running on any reachable host is left alone (split-brain guard, checked
   twice a moment apart: a rebooting guest vanishes from `xl list` briefly);
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from xenha import fencing
from xenha.inventory import Cluster, Dom0, DomU, Target
from xenha.nagios import CommandFile
from xenha.runner import RunnerError, SSHOptions, SSHRunner
from xenha.state import StateDB
from xenha.xen import Domain, HostInfo, Toolstack, ToolstackError, failure_reason

MiB = 1024 * 1024
DOMU_SERVICE = 'xen domain'     # the service every rendered domU host carries
# A create whose answer was lost and whose domain never showed: for this long
# no job starts that domU anywhere else (a queued or hung xl may still build it)
PENDING_WINDOW = 600.0


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

    @property
    def code(self) -> int:
        return {'ok': 0, 'noop': 0, 'plan': 0, 'refused': 1}.get(self.result, 2)


@dataclass
class Plan:
    dom0: str
    fencing: list                                  # labels of the fence chain
    victims: list = field(default_factory=list)    # DomU
    placement: dict = field(default_factory=dict)  # domU name -> host name
    unplaced: dict = field(default_factory=dict)   # domU name -> why
    skipped: dict = field(default_factory=dict)    # domU name -> why
    already: dict = field(default_factory=dict)    # domU -> host it already runs on
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
        for name, why in {**self.skipped, **self.unplaced}.items():
            lines.append(f'  {name}: NOT restarted: {why}')
        if not self.victims and not self.skipped and not self.already:
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

    def scan(self, hosts: list[Dom0], info_for: list[Dom0] | None = None):
        """Live `list` of each host, in parallel; an error is kept, not raised.

        With `info_for`: also `info` of those hosts, run beside their `list`
        (one round trip), and the result is (listings, infos)."""
        want_info = {h.name for h in info_for or ()}

        def one(h):
            try:
                ts = self.toolstack(h)
                if h.name in want_info:
                    return h.name, ts.list_and_info()
                return h.name, (ts.list(), None)
            except (RunnerError, ToolstackError) as exc:
                self._drop(h.name)
                return h.name, (exc, exc)
        done = {}
        if hosts:
            with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
                done = dict(pool.map(one, hosts))
        listings = {name: listed for name, (listed, _) in done.items()}
        if info_for is None:
            return listings
        return listings, {name: done[name][1] for name in want_info if name in done}

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

    # -- planning ------------------------------------------------------------------------
    def victims(self, failed: Dom0, listings: dict) -> tuple[list[DomU], dict]:
        """DomUs last seen on `failed` ∪ homed there and seen running nowhere."""
        skipped = {}
        names = []
        last = self.db.listing(failed.address)
        for row in (last.domains if last else []):
            if row['name'] in self.cluster.domus:
                names.append(row['name'])
            else:
                skipped[row['name']] = (f'last seen on {failed.name} but not in the '
                                        'inventory: no config to start it from')
        seen_elsewhere = {d.name for doms in listings.values()
                          if not isinstance(doms, Exception) for d in doms}
        for u in self.cluster.domus_homed_on(failed.name):
            if u.name not in names and u.name not in seen_elsewhere:
                names.append(u.name)
        victims = []
        for name in names:
            u = self.cluster.domus[name]
            if not u.ha:
                skipped[name] = 'ha = false in the inventory'
            else:
                victims.append(u)
        return victims, skipped

    def look(self, dom0: str) -> tuple[float, dict]:
        """A first look at every other dom0: (when, listings)."""
        others = [h for h in self.cluster.dom0s.values() if h.name != dom0]
        listings = self.scan(others)
        return time.monotonic(), listings

    def plan(self, dom0: str, first_look: tuple[float, dict] | None = None) -> Plan:
        """Who moves where; reads the cluster, changes nothing.

        The split-brain guard looks twice, at least recheck_delay apart, because a
        rebooting guest is missing from `xl list` for a moment.  The failover
        takes its first look while it confirms and fences, so the wait is
        usually already over.
        """
        failed = self.cluster.dom0s[dom0]
        plan = Plan(dom0, [fencing.label(m) for m in failed.fencing],
                    fence_problems=[f'{fencing.label(m)}: {p}' for m in failed.fencing
                                    for p in fencing.problems(m)])
        others = [h for h in self.cluster.dom0s.values() if h.name != dom0]
        looked_at, listings = first_look or self.look(dom0)
        wait = self.recheck_delay - (time.monotonic() - looked_at)
        if wait > 0:
            time.sleep(wait)
        # the second look, and the candidates' memory in the same round trip
        again, infos = self.scan(others, info_for=self.candidates(others, {}))
        running = _present(listings)
        for name, hosts in _present(again).items():
            running.setdefault(name, hosts)
        listings = {k: (again[k] if not isinstance(again[k], Exception) else v)
                    for k, v in listings.items()}
        plan.listings = listings
        victims, plan.skipped = self.victims(failed, listings)
        for u in victims:
            if u.name in running:
                plan.already[u.name] = running[u.name][0]
            elif (why := self.pending_elsewhere(u.name)):
                plan.skipped[u.name] = why
            else:
                plan.victims.append(u)
        self._place(plan, others, listings, infos)
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
        """None when the dom0 does not answer; else what it answered."""
        for attempt in range(self.confirm_probes):
            if attempt:
                time.sleep(self.probe_interval)
            probe = self.runner(failed, timeout=min(self.d.timeout, 3.0))
            try:
                self.toolstack(failed, probe).list()
                return f'{failed.name} answers SSH and its toolstack lists domains'
            except ToolstackError as exc:
                return f'{failed.name} answers SSH (toolstack trouble: {exc})'
            except RunnerError as exc:
                self.log('confirm', f'probe {attempt + 1}/{self.confirm_probes}: {exc}',
                         dom0=failed.name)
            finally:
                probe.close()
        return None

    def fence(self, failed: Dom0) -> fencing.FenceOutcome:
        outcome = fencing.fence(
            failed.name, failed.fencing,
            runner_factory=lambda name: self.runner(name, timeout=self.d.timeout),
            timeout=max(sum(m.timeout for m in failed.fencing), 10.0),
            toolstack=failed.toolstack, toolstack_command=failed.toolstack_command)
        for a in outcome.attempts:
            self.log('fence', f'{a.method}: {"confirmed" if a.ok else "failed"}: '
                     f'{a.message} ({a.seconds:.1f}s)', 'info' if a.ok else 'error',
                     dom0=failed.name)
        if outcome.skipped:
            self.log('fence', outcome.message, 'warning', dom0=failed.name)
        return outcome

    def attach(self, host: Dom0, targets: list[Target]) -> dict[str, str | None]:
        """Log `host` in to each target (in parallel); target -> None (ok) or why not."""
        from xenha.storage import attach
        runner = self.runner(host)

        def one(t: Target):
            try:
                why = attach.attach(runner, t, timeout=self.d.timeout)
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
    def failover(self, dom0: str, dry_run: bool = False, why: str = '') -> Report:
        if dom0 not in self.cluster.dom0s:
            raise KeyError(f'no dom0 {dom0!r} in {self.cluster.source}')
        self.job = f'{time.strftime("%Y%m%dT%H%M%S")}-{dom0}-{uuid.uuid4().hex[:6]}'
        report = Report(self.job, dom0)
        if dry_run:
            report.plan = self.plan(dom0)
            report.result, report.message = 'plan', '\n'.join(
                report.plan.describe(self.cluster))
            return report
        lease = self.db.take_lease(dom0, self.job)
        if lease is None:
            report.result = 'noop'
            holder = self.db.lease_holder(dom0)
            report.message = (f'a failover of {dom0} is already running'
                              + (f' (job {holder})' if holder else '')
                              + ': nothing more to do')
            self.log('lease', report.message, dom0=dom0)
            return report
        started = time.monotonic()
        try:
            with lease:
                self._failover(dom0, report, why)
        except Exception as exc:  # noqa: BLE001 - a crash is journaled, then re-raised
            report.result, report.message = 'failed', f'engine error: {exc!r}'
            self.log('end', report.message, 'error', dom0=dom0)
            self.db.finish_failover(self.job, 'failed')
            raise
        finally:
            self.close()
            report.steps.append(('total', time.monotonic() - started))
        self.tell_nagios(report)
        return report

    def _failover(self, dom0: str, report: Report, why: str) -> None:
        failed = self.cluster.dom0s[dom0]
        last = self.db.last_failover(dom0)
        if last and last['result'] == 'ok' and \
                time.time() - last['finished'] < self.d.dedupe_window:
            report.result = 'noop'
            report.message = (f'{dom0} was failed over {time.time() - last["finished"]:.0f}s '
                              f'ago (job {last["job"]}), inside the dedupe window of '
                              f'{self.d.dedupe_window:g}s: nothing to do')
            self.log('dedupe', report.message, dom0=dom0)
            return
        self.db.start_failover(self.job, dom0)
        self.log('start', f'failover of {dom0} begins' + (f' ({why})' if why else ''),
                 dom0=dom0)
        t = time.monotonic()
        # the split-brain guard's first look runs while we confirm and fence
        looking = ThreadPoolExecutor(max_workers=1)
        first_look = looking.submit(self.look, dom0)
        looking.shutdown(wait=False)
        alive = self.confirm_gone(failed)
        report.steps.append(('confirm', time.monotonic() - t))
        if alive:
            return self._end(report, 'refused', f'{alive}: not failing over')
        self.log('confirm', f'{dom0} does not answer: gone', dom0=dom0)
        t = time.monotonic()
        outcome = self.fence(failed)
        report.steps.append(('fence', time.monotonic() - t))
        if not outcome.ok:
            return self._end(report, 'failed', outcome.message)
        if not outcome.skipped:
            # the checks stop trusting its cached listing (no false split brain
            # while its guests start elsewhere); victims still come from it
            self.db.record_fenced(failed.address)
        # one placement at a time across jobs: two failovers must not both
        # count the same spare memory
        placement_lease = self.db.take_lease('placement', self.job, wait=300)
        if placement_lease is None:
            return self._end(report, 'failed', 'could not get the placement lock in 300s')
        with placement_lease:
            t = time.monotonic()
            plan = report.plan = self.plan(dom0, first_look.result())
            report.steps.append(('plan', time.monotonic() - t))
            for line in plan.describe(self.cluster)[1:]:
                self.log('plan', line.strip(), dom0=dom0)
            report.skipped.update(plan.skipped)
            report.failed.update(plan.unplaced)
            for name, host in plan.already.items():
                report.moved[name] = host
            t = time.monotonic()
            self.relocate(plan.placement, report, plan.listings)
            report.steps.append(('relocate', time.monotonic() - t))
        for name in report.moved:
            self.db.forget_domain(failed.address, name)
        if report.failed:
            return self._end(report, 'partial', _summary(dom0, report))
        return self._end(report, 'ok', _summary(dom0, report))

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


def _present(listings: dict) -> dict[str, list[str]]:
    """domU name -> hosts where it holds memory (any state but inactive)."""
    out: dict[str, list[str]] = {}
    for host, doms in listings.items():
        if isinstance(doms, Exception):
            continue
        for d in doms:
            if not d.is_dom0 and d.state.present:
                out.setdefault(d.name, []).append(host)
    return out


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
    return f'{dom0} failed over: ' + ('; '.join(parts) if parts else 'no domU to move')
