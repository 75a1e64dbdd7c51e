"""Restart in place, relocation after max_restart, storage guard; the event
handlers as Nagios calls them (installed commands, real lab)."""

import time

import pytest

from conftest import cluster_lab, engine, journal, placement, run
from xenha.lab import cluster, dom0, xensim
from xenha.restart import restart


@pytest.fixture
def clab():
    yield from cluster_lab(storage=False, max_restart=2)


@pytest.fixture
def slab():
    yield from cluster_lab()


def crash(lab, host, name):
    xensim.set_domain_state(dom0.state_dir(lab, host), name, 'crashed')


def test_crashed_domu_restarts_in_place(clab):
    crash(clab, 'dom0-2', 'mail1')
    r = restart(engine(clab), 'mail1')
    assert (r.result, r.message) == ('ok', 'mail1 restarted on dom0-2 (restart 1 of 2 in 3600s)')
    assert placement(clab)['mail1'] == ['dom0-2']
    states = {d['name']: d['state'] for d in xensim.read(dom0.state_dir(clab, 'dom0-2'))['domains']}
    assert states['mail1'] == 'blocked'
    assert [s for s, _ in journal(clab, r.job)] == ['start', 'destroy', 'create', 'end']


def test_after_max_restart_it_is_relocated(clab):
    for n in (1, 2):
        crash(clab, 'dom0-2', 'mail1')
        assert restart(engine(clab), 'mail1').message == \
            f'mail1 restarted on dom0-2 (restart {n} of 2 in 3600s)'
    crash(clab, 'dom0-2', 'mail1')
    r = restart(engine(clab), 'mail1')
    assert (r.result, r.message) == ('ok', 'mail1 relocated from dom0-2 to dom0-3 after 2 restarts')
    assert placement(clab)['mail1'] == ['dom0-3']


def test_no_restart_in_place_while_its_dom0_is_being_failed_over(clab):
    crash(clab, 'dom0-2', 'mail1')
    e = engine(clab)
    lease = e.db.take_lease('dom0-2', 'a-failover-job')
    with lease:
        r = restart(engine(clab), 'mail1')
    assert (r.result, r.message) == (
        'noop', 'a failover of dom0-2 is running: it handles mail1')
    states = {d['name']: d['state'] for d in xensim.read(dom0.state_dir(clab, 'dom0-2'))['domains']}
    assert states['mail1'] == 'crashed'                 # untouched
    r = restart(engine(clab), 'mail1')                   # the lease is gone: it may act
    assert (r.result, r.message) == ('ok', 'mail1 restarted on dom0-2 (restart 1 of 2 in 3600s)')


def test_running_domu_is_not_restarted(clab):
    r = restart(engine(clab), 'web1')
    assert (r.result, r.message) == ('noop', 'web1 already runs on dom0-1 (blocked): nothing to do')


def test_paused_domu_is_left_to_its_operator(clab):
    xensim.set_domain_state(dom0.state_dir(clab, 'dom0-1'), 'web1', 'paused')
    r = restart(engine(clab), 'web1')
    assert (r.result, r.message) == (
        'refused', 'web1 is paused on dom0-1: someone paused it; not restarting '
                   '(xl unpause to resume)')


def test_dom0_down_is_left_to_the_host_failover(clab):
    dom0.power(clab, 'dom0-1', on=False)
    r = restart(engine(clab), 'web1')
    assert r.result == 'noop'
    assert r.message.startswith('dom0-1, where web1 ran, does not answer (')
    assert r.message.endswith('): its failover handles web1')
    assert 'web1' not in placement(clab)


def test_storage_down_no_restart_one_clear_reason(slab):
    from xenha.lab import storage
    crash(slab, 'dom0-2', 'mail1')
    storage.vblade_stop(slab, 1, 1)
    r = restart(engine(slab), 'mail1')
    assert (r.result, r.code) == ('refused', 1)
    assert r.message == ('not restarting mail1: its storage is down (mail1-disk: '
                         'e1.1 is not up in aoe-stat)')
    assert placement(slab)['mail1'] == ['dom0-2']   # the crashed remains, untouched


# --- the handlers, as Nagios runs them -------------------------------------------
def test_dom0_handler_ignores_soft_and_recovery(clab):
    inv = cluster.inventory_path(clab)
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'SOFT', '2')
    assert (r.rc, r.first) == (0, 'xenha: dom0-1 is DOWN SOFT attempt 2: waiting for the HARD state')
    r = run('handle_dom0_event', '--inventory', inv, '--fast-attempt', '0', 'dom0-1', 'DOWN',
            'SOFT', '1')
    assert (r.rc, r.first) == (0, 'xenha: dom0-1 is DOWN SOFT attempt 1: waiting for the HARD state')
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'UP', 'HARD', '1')
    assert (r.rc, r.first) == (0, 'xenha: dom0-1 is UP: nothing to do')
    r = run('handle_dom0_event', '--inventory', inv, 'nohost', 'DOWN', 'HARD', '3')
    assert (r.rc, r.first) == (0, f'xenha: nohost is not a dom0 of {inv}: ignored')
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARDLY', '3')
    assert (r.rc, r.first) == (3, "xenha: refused: state type must be HARD or SOFT, not 'HARDLY'")


def test_handler_without_a_usable_state_database_refuses_saying_why(clab, tmp_path):
    blocker = tmp_path / 'not-a-dir'
    blocker.write_text('')
    text = cluster.inventory_path(clab).read_text()
    old = next(l for l in text.splitlines() if l.startswith('state_db'))
    inv = tmp_path / 'cluster.toml'
    inv.write_text(text.replace(old, f'state_db = "{blocker}/state.db"'))
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARD', '3')
    assert (r.rc, r.first) == (3, f'xenha: refused: cannot open the state database '
                                  f'{blocker}/state.db: not a directory: {blocker}')


def test_dom0_handler_returns_at_once_and_the_job_fails_over(clab):
    inv = cluster.inventory_path(clab)
    dom0.power(clab, 'dom0-1', on=False)
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARD', '3')
    assert r.rc == 0 and r.seconds < 1.0, r
    assert r.first.startswith('xenha: dom0-1 is DOWN (HARD): job started (pid ')
    deadline = time.monotonic() + 60
    while not ('end' in [s for s, _ in journal(clab)] and placement(clab).get('web1')):
        assert time.monotonic() < deadline, journal(clab)
        time.sleep(0.2)
    assert placement(clab)['db1'] == ['dom0-3'] and placement(clab)['web1'] == ['dom0-3']
    assert ('event', 'Nagios: dom0-1 is DOWN (HARD)') in journal(clab)


def test_dom0_handler_at_a_chosen_soft_attempt(clab):
    inv = cluster.inventory_path(clab)
    r = run('handle_dom0_event', '--inventory', inv, '--soft-attempt', '2', '--foreground',
            'dom0-1', 'DOWN', 'SOFT', '2')
    # dom0-1 is alive: the job refuses, loudly
    assert r.rc == 1
    assert 'dom0-1 answers SSH and its toolstack lists domains: not failing over' in r.out


def test_domu_handler_restarts_a_crashed_guest(clab):
    inv = cluster.inventory_path(clab)
    crash(clab, 'dom0-1', 'web1')
    r = run('handle_domu_event', '--inventory', inv, '--foreground', 'web1', 'CRITICAL',
            'HARD', '3')
    assert (r.rc, r.out.splitlines()[-1]) == (0, 'web1 restarted on dom0-1 (restart 1 of 2 in 3600s)')
    r = run('handle_domu_event', '--inventory', inv, 'web1', 'OK', 'HARD', '1')
    assert (r.rc, r.first) == (0, 'xenha: web1 is OK: nothing to do')


def test_a_guest_still_shutting_down_is_waited_for_not_counted_as_running(clab):
    """Real xl lists a guest that just shut down as --ps-- for a moment, and a
    create of its name fails until it is gone (seen on Xen 4.17.7)."""
    from xenha.lab import xensim
    sd = dom0.state_dir(clab, 'dom0-2')
    with xensim._locked(sd, write=True) as state:
        for d in state['domains']:
            if d['name'] == 'mail1':
                d['state'], d['gone_at'] = 'shutdown', time.time() + 1.0
    e = engine(clab)
    c = e.cluster
    try:
        out = e.start_on(c.dom0s['dom0-2'], [c.domus['mail1']])
    finally:
        e.close()
    assert out == {'mail1': None}
    states = {d['name']: d['state'] for d in xensim.read(sd)['domains']}
    assert states['mail1'] == 'blocked'
