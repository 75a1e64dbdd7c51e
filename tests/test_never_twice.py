"""Never twice (issue 11): a guest starts only where nothing else can still run it.

roam-a's home is dom0-1, but it runs on dom0-2 (moved there earlier); db1 runs
at home on dom0-1, mail1 on dom0-2; dom0-3 is the spare.  Each scenario polls
the lab's hypervisors during the job (`GroundTruth`), not only at its end.
"""

import re
import time

import pytest

from conftest import GroundTruth, engine, journal, placement, run, ssh_args
from xenha_lab import bmc, cluster, dom0, xensim
from xenha.restart import restart

GUESTS = (cluster.GuestSpec('db1', 'dom0-1', 1024, 'none', priority=20),
          cluster.GuestSpec('roam-a', 'dom0-1', 512, 'none', priority=10),
          cluster.GuestSpec('mail1', 'dom0-2', 512, 'none'))
WHERE = {'db1': 'dom0-1', 'roam-a': 'dom0-2', 'mail1': 'dom0-2'}
CLOCK = r'\d\d:\d\d:\d\d'


def roaming_lab(**defaults):
    """The lab above, with each dom0's listing recorded by check_xen_host (as
    Nagios' checks keep it): the cache saw roam-a on dom0-2."""
    lab = cluster.up(storage=False, guests=GUESTS, start_guests=False, **defaults)
    try:
        c = cluster.cluster(lab)
        e = engine(lab)
        for name, host in WHERE.items():
            assert e.start_on(c.dom0s[host], [c.domus[name]]) == {name: None}
        e.close()
        for host in lab.info['hosts']:
            r = run('check_xen_host', *ssh_args(lab, host))
            assert r.rc == 0, r
    except BaseException:
        lab.down()
        raise
    return lab


@pytest.fixture
def rlab():
    lab = roaming_lab()
    yield lab
    assert lab.down() == []


def test_a_partitioned_dom0s_guest_is_not_started_elsewhere(rlab):
    """Scenario 1: dom0-2 is cut off (its sshd gone, its guests go on), then
    dom0-1 loses power.  roam-a may run on dom0-2: not started; db1 moves."""
    dom0.partition(rlab, 'dom0-2')
    dom0.power(rlab, 'dom0-1', on=False)
    with GroundTruth(rlab) as truth:
        r = engine(rlab).failover('dom0-1')
    assert truth.doubles == [] and truth.polls > 5
    assert (r.result, r.code, r.moved) == ('partial', 2, {'db1': 'dom0-3'})
    assert re.fullmatch(
        rf'roam-a may run on dom0-2, which does not answer since {CLOCK} and is not fenced '
        r'\(its last listing shows roam-a\): not started; run `xenha failover dom0-2` '
        r'\(fences it and moves its guests\) or fix what cuts dom0-2 off', r.failed['roam-a'])
    assert r.message.startswith('dom0-1 failed over: 1 domU running: db1 on dom0-3; '
                                '1 NOT running: roam-a: roam-a may run on dom0-2, ')
    plan = [m for s, m in journal(rlab, r.job) if s == 'plan']
    assert any(m.startswith('roam-a: NOT restarted: roam-a may run on dom0-2, which does '
                            'not answer since ') for m in plan), plan
    assert placement(rlab) == {'db1': ['dom0-3'], 'roam-a': ['dom0-2'], 'mail1': ['dom0-2']}
    # the operator sees it, and the way out the message gives does the rest
    st = run('xenha', 'status', '--inventory', cluster.inventory_path(rlab))
    line = next(x for x in st.out.splitlines() if x.startswith('roam-a'))
    assert 'may run on dom0-2' in line and 'run `xenha failover dom0-2`' in line, line
    assert st.rc == 1
    with GroundTruth(rlab) as truth:
        out = engine(rlab).failover('dom0-2')
    assert truth.doubles == []
    assert (out.result, out.moved) == ('ok', {'roam-a': 'dom0-3', 'mail1': 'dom0-3'}), \
        out.message
    assert placement(rlab) == {n: ['dom0-3'] for n in WHERE}


def test_a_hung_dom0s_guest_is_not_started_elsewhere(rlab):
    """The same with dom0-2 hung (SIGSTOP: connections accepted, no banner)."""
    dom0.hang(rlab, 'dom0-2')
    dom0.power(rlab, 'dom0-1', on=False)
    dry = engine(rlab).failover('dom0-1', dry_run=True).message.splitlines()
    assert any(re.fullmatch(
        rf'  roam-a: NOT restarted: roam-a may run on dom0-2, which does not answer since '
        rf'{CLOCK} and is not fenced \(its last listing shows roam-a\): run `xenha failover '
        r'dom0-2` \(fences it and moves its guests\) or fix what cuts dom0-2 off', line)
        for line in dry), dry
    with GroundTruth(rlab) as truth:
        r = engine(rlab).failover('dom0-1')
    assert truth.doubles == []
    assert (r.result, r.moved, list(r.failed)) == ('partial', {'db1': 'dom0-3'}, ['roam-a'])
    dom0.resume(rlab, 'dom0-2')
    assert placement(rlab) == {'db1': ['dom0-3'], 'roam-a': ['dom0-2'], 'mail1': ['dom0-2']}


def test_a_guest_never_seen_is_in_doubt_while_a_dom0_is_silent(rlab):
    """roam-a is nowhere (stopped since the last listings); dom0-2 goes silent,
    dom0-1 dies: dom0-2 may have started roam-a since, so it waits too."""
    xl_destroy(rlab, 'dom0-2', 'roam-a')
    run('check_xen_host', *ssh_args(rlab, 'dom0-2'))
    time.sleep(0.1)
    dom0.partition(rlab, 'dom0-2')
    dom0.power(rlab, 'dom0-1', on=False)
    r = engine(rlab).failover('dom0-1')
    assert (r.result, r.moved) == ('partial', {'db1': 'dom0-3'})
    assert re.fullmatch(rf'roam-a may run on dom0-2, which does not answer since {CLOCK} '
                        rf'and is not fenced \(roam-a was last seen at {CLOCK}, before that, '
                        r'and nowhere since\): not started; .*', r.failed['roam-a'])


@pytest.mark.parametrize('gap', [0.5, 2, 5, 30])
def test_a_reboot_gap_is_waited_out_never_started_twice(rlab, gap):
    """Scenario 2: roam-a reboots on dom0-2 (missing from its `xl list` for `gap`
    seconds) just as dom0-1 is failed over: it waits, comes back on dom0-2,
    and is left there; db1 does not wait for it."""
    xensim.reboot(dom0.state_dir(rlab, 'dom0-2'), 'roam-a', gap)
    back_at = time.monotonic() + gap
    dom0.power(rlab, 'dom0-1', on=False)
    with GroundTruth(rlab) as truth:
        r = engine(rlab).failover('dom0-1')
    assert truth.doubles == []
    # (a gap over before the first look: roam-a is no victim at all)
    assert (r.result, r.moved) == ('ok', {'db1': 'dom0-3', **(
        {'roam-a': 'dom0-2'} if 'roam-a' in r.moved else {})}), r.message
    assert gap < 1 or 'roam-a' in r.moved
    created = [(s, m) for s, m in journal(rlab, r.job) if s in ('create', 'wait')]
    assert created[0] == ('create', 'db1 on dom0-3: created')    # not held up
    if gap >= 2:
        assert re.fullmatch(rf'roam-a: may be rebooting where it last ran; looking again '
                            rf'at {CLOCK}', created[1][1]), created
    time.sleep(max(back_at - time.monotonic(), 0) + 0.2)
    assert placement(rlab) == {'db1': ['dom0-3'], 'roam-a': ['dom0-2'], 'mail1': ['dom0-2']}


def test_a_restart_during_a_reboot_gap_goes_where_the_guest_last_ran(rlab):
    """Scenario 3: roam-a (home dom0-1, healthy) reboots on dom0-2 with a long
    gap and its service goes CRITICAL: the restart goes to dom0-2, where xl's
    own name check leaves one copy, not to its home."""
    xensim.reboot(dom0.state_dir(rlab, 'dom0-2'), 'roam-a', 6)
    back_at = time.monotonic() + 6
    with GroundTruth(rlab) as truth:
        r = restart(engine(rlab), 'roam-a')
        time.sleep(max(back_at - time.monotonic(), 0) + 0.3)
    assert truth.doubles == []
    assert (r.result, r.message) == ('ok', 'roam-a restarted on dom0-2 (restart 1 of 3 in '
                                           '3600s)')
    assert placement(rlab)['roam-a'] == ['dom0-2']


def test_fence_unreachable_fences_the_silent_dom0_then_starts_the_guest_once(tmp_path):
    lab = roaming_lab(fence_unreachable=True)
    try:
        dom0.partition(lab, 'dom0-2')
        dom0.power(lab, 'dom0-1', on=False)
        with GroundTruth(lab) as truth:
            r = engine(lab).failover('dom0-1')
        assert truth.doubles == []
        assert (r.result, r.moved) == ('ok', {'db1': 'dom0-3', 'roam-a': 'dom0-3'}), r.message
        assert not dom0.powered(lab, 'dom0-2')
        fence = [m for s, m in journal(lab, r.job) if s == 'fence']
        assert fence[1] == ('dom0-2 does not answer and may run guests of dom0-1: fencing '
                            'it (fence_unreachable = true)')
        assert fence[2].startswith('agent fence_ipmilan: confirmed: fence_ipmilan: powered '
                                   'off, status confirms off')
        # dom0-2's own guests died with it: its failover follows at once
        [then] = r.followups
        assert (then.subject, then.result, then.moved) == (
            'dom0-2', 'ok', {'mail1': 'dom0-3', 'roam-a': 'dom0-3'}), then.message
        assert placement(lab) == {n: ['dom0-3'] for n in WHERE}
    finally:
        assert lab.down() == []


def test_check_xen_domu_shows_the_doubt(rlab):
    inv = cluster.inventory_path(rlab)
    dom0.partition(rlab, 'dom0-2')
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'roam-a')
    assert r.rc == 1, r
    assert re.fullmatch(rf'XEN_DOMU WARNING - roam-a is not running on any reachable dom0, '
                        rf'maybe on dom0-2 \(unreachable since {CLOCK}, not fenced: .+\)',
                        r.status), r
    xensim.add_domain(dom0.state_dir(rlab, 'dom0-3'), 'roam-a', 512)
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'roam-a')
    assert r.rc == 2, r
    assert re.fullmatch(rf'XEN_DOMU CRITICAL - maybe running twice: roam-a runs on dom0-3, '
                        rf'maybe on dom0-2 \(unreachable since {CLOCK}, not fenced: .+\)',
                        r.status), r
    # a fenced dom0's listing never counts
    with engine(rlab).db as db:
        db.record_fenced(rlab.info['hosts']['dom0-2']['address'])
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'roam-a')
    assert (r.rc, r.status) == (0, 'XEN_DOMU OK - roam-a is blocked on dom0-3'), r


def test_when_no_job_will_retry_the_restart_says_what_to_run(rlab):
    """dom0-2 is cut off and its BMC is gone: its failover cannot fence it and
    ends failed; Nagios will not call it again.  The guest's restart must not
    say "its failover handles it"."""
    dom0.partition(rlab, 'dom0-2')
    r = restart(engine(rlab), 'roam-a')
    assert r.result == 'noop' and re.fullmatch(
        r'dom0-2, where roam-a ran, does not answer \(SSH to .+: connection refused '
        r'\(host down\?\)\): its failover handles roam-a', r.message), r.message
    bmc.stop(rlab, 'dom0-2')
    assert engine(rlab).failover('dom0-2').result == 'failed'
    r = restart(engine(rlab), 'roam-a')
    assert (r.result, r.code) == ('refused', 1)
    assert re.fullmatch(r'dom0-2, where roam-a ran, does not answer \(.+\): not starting '
                        r'roam-a; the failover of dom0-2 \(job \S+\) ended failed and no job '
                        r'will retry: run `xenha failover dom0-2` \(fences it and moves its '
                        r'guests\) or fix what cuts dom0-2 off', r.message), r.message
    assert placement(rlab)['roam-a'] == ['dom0-2']


def xl_destroy(lab, host, name):
    import subprocess
    from pathlib import Path
    xl = str(Path(lab.info['hosts'][host]['bin']) / 'xl')
    subprocess.run([xl, 'destroy', name], env=dom0.env_for(lab, host), check=True)
