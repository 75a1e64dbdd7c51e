"""The fast path (issue 15): at the first failed host check the dom0's BMC is
asked for its power state; off is a power loss, a fact, and the failover starts
at once; on or no answer changes nothing.  And a dom0 that only answers slowly
is never fenced."""

import re
import signal
import threading
import time

import pytest

from conftest import cluster_lab, engine, journal, placement, run
from xenha.lab import bmc, cluster, dom0


@pytest.fixture
def clab():
    yield from cluster_lab(storage=False)


def test_a_power_loss_fails_over_at_once_the_status_confirms_the_fence(clab):
    dom0.power(clab, 'dom0-1', on=False)
    r = engine(clab).failover('dom0-1', if_off=True)
    assert (r.result, r.path) == ('ok', 'fast'), r.message
    assert r.message == ('dom0-1 failed over (fast path: its BMC said off at the first '
                         'failed check): 2 domUs running: db1 on dom0-3, web1 on dom0-3')
    steps = journal(clab, r.job)
    assert re.fullmatch(r'failover of dom0-1 begins; fast path: its BMC says off '
                        r'\(agent fence_ipmilan status: off, \d+\.\ds\): a power loss, not '
                        r'waiting for the HARD state', steps[0][1]), steps[0]
    fence = [m for s, m in steps if s == 'fence']
    assert fence == [fence[0]] and re.fullmatch(
        r"agent fence_ipmilan: confirmed: fence_ipmilan status: off: powered off, fenced "
        r"\(the fast path's status, \d+\.\ds\)", fence[0]), fence
    assert placement(clab)['db1'] == ['dom0-3']
    # the HARD event that follows finds it done
    again = engine(clab).failover('dom0-1')
    assert again.result == 'noop' and 'inside the dedupe window' in again.message


def test_a_hung_dom0_stays_on_the_hard_path(clab):
    dom0.hang(clab, 'dom0-1')
    t = time.monotonic()
    r = engine(clab).failover('dom0-1', if_off=True)
    assert time.monotonic() - t < 3
    assert (r.result, r.code) == ('noop', 0)
    assert re.fullmatch(r'fast path: dom0-1 is down for Nagios, but its BMC says on '
                        r'\(fence_ipmilan status: on, \d+\.\ds\): hung, cut off or a blip, '
                        r'not a power loss: nothing done, the HARD state decides', r.message)
    assert dom0.powered(clab, 'dom0-1') and placement(clab)['db1'] == ['dom0-1']
    assert ('fast', r.message) in journal(clab)
    assert engine(clab).db.last_failover('dom0-1') is None     # no failover was recorded
    r = engine(clab).failover('dom0-1')                        # the HARD state
    assert r.result == 'ok' and not dom0.powered(clab, 'dom0-1')


def test_a_silent_bmc_changes_nothing(clab):
    bmc.stop(clab, 'dom0-1')
    dom0.power(clab, 'dom0-1', on=False)
    r = engine(clab).failover('dom0-1', if_off=True)
    assert r.result == 'noop'
    assert r.message.startswith('fast path: dom0-1 is down for Nagios, but its BMC gives no '
                                'power state (')
    assert r.message.endswith('): nothing done, the HARD state decides')
    assert 'dom0-3' not in str(placement(clab))


def test_the_handler_takes_the_fast_path_at_the_first_failed_check(clab):
    inv = cluster.inventory_path(clab)
    dom0.power(clab, 'dom0-1', on=False)
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'SOFT', '1')
    assert r.rc == 0 and r.seconds < 1.0, r
    assert r.first.startswith('xenha: dom0-1 is DOWN SOFT attempt 1: asking its BMC whether '
                              'the power is off (fast path): job started (pid ')
    deadline = time.monotonic() + 60
    while 'end' not in [s for s, _ in journal(clab)]:
        assert time.monotonic() < deadline, journal(clab)
        time.sleep(0.2)
    end = [m for s, m in journal(clab) if s == 'end']
    assert end == ['dom0-1 failed over (fast path: its BMC said off at the first failed '
                   'check): 2 domUs running: db1 on dom0-3, web1 on dom0-3']


def test_a_dom0_that_only_answers_slowly_is_never_fenced(clab):
    """dom0-1's sshd stalls (its banner comes 4 s late: the host check's -t):
    Nagios may call it DOWN, but the failover's confirm waits longer than
    that check and finds it alive."""
    sshd = clab.procs['sshd-dom0-1'].pid

    def stall():
        import os
        os.killpg(sshd, signal.SIGSTOP)
        time.sleep(4)
        os.killpg(sshd, signal.SIGCONT)
    t = threading.Thread(target=stall)
    t.start()
    time.sleep(0.2)
    r = engine(clab).failover('dom0-1')
    t.join()
    assert (r.result, r.message) == ('refused', 'dom0-1 answers SSH and its toolstack lists '
                                                'domains: not failing over')
    assert dom0.powered(clab, 'dom0-1') and placement(clab)['db1'] == ['dom0-1']
