"""The never-twice accounting on its own: facts in, verdicts out (no lab, no root)."""

import pytest

from xenha.accounting import DOUBT, FREE, REBOOTING, RUNS, Host, Sighting, account

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


def host(name, answered=True, present=(), last_answer=NOW - 5, last_listing=None,
         fenced_at=None):
    return Host(name, answered, frozenset(present if answered else ()), last_answer,
                frozenset(present if last_listing is None else last_listing), fenced_at)


def cluster(*hosts):
    return {h.name: h for h in hosts}


def verdict(name, hosts, sightings=(), failed='dom0-a', failed_listing=(), grace=30):
    return account(name, hosts, list(sightings), now=NOW, reboot_grace=grace,
                   failed=failed, failed_listing=frozenset(failed_listing))


def test_a_guest_running_on_a_host_that_answered_runs_there():
    hosts = cluster(host('dom0-a', answered=False), host('dom0-b', present={'web1'}),
                    host('spare', present=()))
    assert verdict('web1', hosts)[:2] == (RUNS, 'dom0-b')


def test_every_host_answered_and_the_guest_died_with_the_failed_dom0_is_free():
    hosts = cluster(host('dom0-a', answered=False, last_listing={'web1'}),
                    host('dom0-b'), host('spare'))
    seen = [Sighting('dom0-a', NOW - 20, None)]
    assert verdict('web1', hosts, seen, failed_listing={'web1'}).kind == FREE


def test_a_silent_unfenced_host_whose_last_listing_shows_the_guest_keeps_it_in_doubt():
    """Scenario 1 of issue 11: roam-a (home dom0-a) ran on dom0-b, which stops
    answering; dom0-a dies: its failover must not start roam-a."""
    hosts = cluster(host('dom0-a', answered=False, last_listing=set()),
                    host('dom0-b', answered=False, last_answer=NOW - 4,
                         last_listing={'roam-a', 'web2'}),
                    host('spare'))
    v = verdict('roam-a', hosts, [Sighting('dom0-b', NOW - 4, None)])
    assert (v.kind, v.host) == (DOUBT, 'dom0-b')
    assert v.why.startswith('roam-a may run on dom0-b, which does not answer since ')
    assert v.why.endswith(' and is not fenced (its last listing shows roam-a)')


def test_in_a_double_fault_the_failed_dom0s_own_guests_still_move():
    hosts = cluster(host('dom0-a', answered=False, last_listing={'db1'}),
                    host('dom0-b', answered=False, last_listing={'roam-a'}), host('spare'))
    seen = [Sighting('dom0-a', NOW - 10, None)]
    assert verdict('db1', hosts, seen, failed_listing={'db1'}).kind == FREE


def test_a_guest_never_seen_anywhere_is_in_doubt_while_any_host_is_silent():
    hosts = cluster(host('dom0-a', answered=False), host('dom0-b', answered=False),
                    host('spare'))
    v = verdict('new1', hosts)
    assert (v.kind, v.host) == (DOUBT, 'dom0-b')
    assert v.why.endswith('(new1 was never seen running)')


def test_last_seen_before_the_silent_hosts_last_listing_is_unknown_after_it_is_not():
    silent = host('dom0-b', answered=False, last_answer=NOW - 60, last_listing=set())
    hosts = cluster(host('dom0-a', answered=False), silent, host('spare'))
    before = [Sighting('spare', NOW - 100, NOW - 90)]
    after = [Sighting('spare', NOW - 45, NOW - 40)]
    assert verdict('g', hosts, before).kind == DOUBT
    assert verdict('g', hosts, after).kind == FREE


def test_a_host_that_never_answered_may_run_anything_not_of_the_failed_dom0():
    hosts = cluster(host('dom0-a', answered=False, last_listing={'db1'}),
                    host('new', answered=False, last_answer=None, last_listing=set()),
                    host('spare'))
    v = verdict('g', hosts, [Sighting('spare', NOW - 30, NOW - 20)])
    assert (v.kind, v.host) == (DOUBT, 'new')
    assert 'which has never answered' in v.why
    assert verdict('db1', hosts, failed_listing={'db1'}).kind == FREE


def test_a_fenced_host_silent_since_is_accounted_for_one_that_answered_since_is_not():
    fenced = host('dom0-b', answered=False, last_answer=NOW - 60,
                  last_listing={'roam-a'}, fenced_at=NOW - 50)
    assert verdict('roam-a', cluster(host('dom0-a', answered=False), fenced,
                                     host('spare'))).kind == FREE
    # the engine passes fenced_at only when the fence is newer than the last
    # answer; a host that answered after its fence is silent and unfenced again
    back = fenced._replace(fenced_at=None)
    assert verdict('roam-a', cluster(host('dom0-a', answered=False), back,
                                     host('spare'))).kind == DOUBT


def test_a_guest_missing_where_it_last_ran_is_rebooting_until_the_grace_is_over():
    """Scenario 2: roam-a vanished from dom0-b's `xl list` (a reboot gap)."""
    hosts = cluster(host('dom0-a', answered=False), host('dom0-b'), host('spare'))
    seen = [Sighting('dom0-b', NOW - 3, NOW - 2), Sighting('dom0-a', NOW - 600, NOW - 590)]
    v = verdict('roam-a', hosts, seen)
    assert (v.kind, v.host, v.until) == (REBOOTING, 'dom0-b', NOW - 2 + 30)
    assert v.why.endswith('it may be rebooting there (reboot_grace 30s)')
    # once it has been missing there for longer than the grace, it is gone
    long_ago = [Sighting('dom0-b', NOW - 60, NOW - 31)]
    assert verdict('roam-a', hosts, long_ago).kind == FREE


def test_a_guest_that_last_ran_on_the_failed_dom0_is_not_rebooting_elsewhere():
    hosts = cluster(host('dom0-a', answered=False, last_listing={'roam-a'}),
                    host('dom0-b'), host('spare'))
    seen = [Sighting('dom0-a', NOW - 5, None), Sighting('dom0-b', NOW - 50, NOW - 10)]
    assert verdict('roam-a', hosts, seen, failed_listing={'roam-a'}).kind == FREE


def test_doubt_comes_before_the_reboot_grace_and_the_restart_path_has_no_failed_dom0():
    hosts = cluster(host('dom0-a'), host('dom0-b', answered=False, last_listing={'g'}),
                    host('spare'))
    seen = [Sighting('dom0-a', NOW - 3, NOW - 1)]
    assert verdict('g', hosts, seen, failed=None).kind == DOUBT
    hosts = cluster(host('dom0-a'), host('dom0-b'), host('spare'))
    assert verdict('g', hosts, seen, failed=None)[:2] == (REBOOTING, 'dom0-a')
