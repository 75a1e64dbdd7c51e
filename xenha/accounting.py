"""Never twice: may this domU be started now, or could something still run it?

A guest is started only when every dom0 that could be running it is
accounted for (Pacemaker's rule: a node whose state is unknown is fenced
before its resources are recovered, never assumed empty):

* it **answered** both of the job's live looks (and the guest is not there);
* or it is **fenced**: confirmed now, or recorded and not answering since;
* or it is the **failed** dom0 itself, fenced by this job: a guest of its
  last listing died with it.

A dom0 that does not answer and is not fenced *may run* whatever its last
listing showed, however old, and any guest whose whereabouts are unknown
(never seen, or last seen only before that dom0's last listing and nowhere
since).  Such a guest is in **doubt**: not started, and the operator is told
which dom0 and why.

A guest missing from a dom0 that answers, where it was last seen and where
it went missing less than ``reboot_grace`` ago, is **rebooting** there (xl's
monitor destroys the old domain and builds the new one; autoballoon or a slow
teardown stretch that gap): not started elsewhere before the grace is over.

Everything here is pure: facts in, verdicts out.  The engine gathers the
facts (`Facts`) from its live looks and the state database.
"""

from __future__ import annotations

import time
from collections import namedtuple

RUNS, DOUBT, REBOOTING, FREE = 'runs', 'doubt', 'rebooting', 'free'


class Host(namedtuple('Host', 'name answered present last_answer last_listing fenced_at '
                              'address revoked', defaults=(None, frozenset()))):
    """One dom0 as a job sees it.

    answered      it answered the job's two live looks
    present       domU names holding memory there in either look (answered only)
    last_answer   Unix time of its newest listing, live or cached (None: never)
    last_listing  domU names of that listing
    fenced_at     a confirmed fence recorded at or after its last answer (None: none)
    revoked       targets on which its write access is revoked (storage fencing)
    """
    __slots__ = ()

    @property
    def accounted(self) -> bool:
        """Answered, or fenced and silent since."""
        return self.answered or self.fenced_at is not None

    def silent_since(self) -> str:
        if self.last_answer is None:
            return 'which has never answered'
        return f'which does not answer since {clock(self.last_answer)}'


class Sighting(namedtuple('Sighting', 'host seen_at missing_since')):
    """A domU was listed on dom0 `host` at `seen_at`; missing there since
    `missing_since` (the first listing after that without it), or None."""
    __slots__ = ()


class Verdict(namedtuple('Verdict', 'kind host why until', defaults=(None, '', None))):
    """kind: RUNS (on host), DOUBT (host may run it: why), REBOOTING (on host,
    not before `until`), FREE (may be started)."""
    __slots__ = ()


def clock(at: float) -> str:
    return time.strftime('%H:%M:%S', time.localtime(at))


def account(name: str, hosts: dict[str, Host], sightings: list[Sighting], *,
            now: float, reboot_grace: float, failed: str | None = None,
            failed_listing=frozenset(), targets=frozenset()) -> Verdict:
    """Where `name` may be running, from the facts; see the module's docstring.

    `failed`: the dom0 being failed over (fenced by this job, or "none" by the
    inventory's explicit choice): its guests died with it.  `failed_listing`:
    the domU names of its last listing.  `targets`: the guest's disks; a
    silent dom0 revoked on all of them (storage fencing) cannot write them,
    so it is accounted for as far as this guest goes.
    """
    on = sorted(h.name for h in hosts.values() if h.answered and name in h.present)
    if on:
        return Verdict(RUNS, on[0])
    last_seen = max((s.seen_at for s in sightings), default=None)
    for h in hosts.values():
        if h.name == failed or h.accounted or (targets and targets <= h.revoked):
            continue
        if h.revoked:
            missing = ', '.join(sorted(targets - h.revoked)) or 'none: it has no disk'
            return Verdict(DOUBT, h.name, f'{name} may run on {h.name}, {h.silent_since()}, '
                           f'is not power-fenced and not revoked on all of {name}\'s disks '
                           f'(not revoked: {missing})')
        if name in h.last_listing:
            return Verdict(DOUBT, h.name, f'{name} may run on {h.name}, {h.silent_since()} '
                           f'and is not fenced (its last listing shows {name})')
        if name in failed_listing:
            continue     # it ran on the failed dom0 and died with it
        if last_seen is None:
            return Verdict(DOUBT, h.name, f'{name} may run on {h.name}, {h.silent_since()} '
                           f'and is not fenced ({name} was never seen running)')
        if h.last_answer is None or last_seen < h.last_answer:
            return Verdict(DOUBT, h.name, f'{name} may run on {h.name}, {h.silent_since()} '
                           f'and is not fenced ({name} was last seen at {clock(last_seen)}, '
                           'before that, and nowhere since)')
    for s in sightings:
        h = hosts.get(s.host)
        if (h is None or not h.answered or h.fenced_at is not None or s.host == failed
                or s.seen_at != last_seen or s.missing_since is None):
            continue
        until = s.missing_since + reboot_grace
        if now < until:
            return Verdict(REBOOTING, h.name, f'{name} went missing on {h.name} at '
                           f'{clock(s.missing_since)}, where it last ran: it may be '
                           f'rebooting there (reboot_grace {reboot_grace:g}s)', until)
    return Verdict(FREE)


def way_out(verdict: Verdict, failing: str | None = None) -> str:
    """What the operator runs about a guest in doubt (`failing`: the dom0 the
    job fails over, when it is the one in question: fenced at the storage only)."""
    if verdict.host == failing:
        return (f'power {failing} off (its BMC, or by hand), or give the guest a disk '
                f'storage fencing can revoke, then run `xenha failover {failing}` again')
    return (f'run `xenha failover {verdict.host}` (fences it and moves its guests) '
            f'or fix what cuts {verdict.host} off')
