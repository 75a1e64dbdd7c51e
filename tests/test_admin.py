"""The cluster-wide views: check_xen_domu --cluster (split brain), check_xen_capacity
(N+1), and the admin commands xenha failover --dry-run / status / journal."""

import re

import pytest

from conftest import cluster_lab, run, ssh_args
from xenha_lab import cluster, dom0, xensim


@pytest.fixture(scope='module')
def lab():
    yield from cluster_lab(storage=False, bmc=False, fencing='ssh')


@pytest.fixture
def inv(lab):
    return str(cluster.inventory_path(lab))


def test_domu_cluster_mode_ok_missing_and_split_brain(lab, inv):
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1')
    assert (r.rc, r.status) == (0, 'XEN_DOMU OK - web1 is blocked on dom0-1')
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'ghost')
    assert (r.rc, r.first) == (2, 'XEN_DOMU CRITICAL - ghost is not running on any '
                                  'reachable dom0 | hosts=0;;;0')
    sd2 = dom0.state_dir(lab, 'dom0-2')
    xensim.add_domain(sd2, 'web1', 512)
    try:
        r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1')
        assert (r.rc, r.first) == (2, 'XEN_DOMU CRITICAL - split brain: web1 runs on '
                                      'dom0-1 and dom0-2 | hosts=2;;;0')
    finally:
        with xensim._locked(sd2, write=True) as state:   # undo for the next tests
            state['domains'] = [d for d in state['domains'] if d['name'] != 'web1']


def test_a_fenced_dom0s_cached_listing_is_no_split_brain(lab, inv):
    """While a failover starts web1 on the spare, the fenced dom0's cached
    listing still shows it: that is not a split brain."""
    from xenha.state import StateDB
    sd3 = dom0.state_dir(lab, 'dom0-3')
    xensim.add_domain(sd3, 'web1', 512)
    try:
        for h in ('dom0-1', 'dom0-2', 'dom0-3'):
            assert run('check_xen_host', *ssh_args(lab, h)).rc == 0   # the cache
        args = ('check_xen_domu', '--cluster', inv, '--domain', 'web1', '--max-age', '60')
        r = run(*args)
        assert (r.rc, r.first) == (2, 'XEN_DOMU CRITICAL - split brain: web1 runs on '
                                      'dom0-1 and dom0-3 | hosts=2;;;0')
        with StateDB(lab.dir / 'state.db') as db:
            db.record_fenced(lab.info['hosts']['dom0-1']['address'])
        r = run(*args)
        assert (r.rc, r.status.split(' (cached')[0]) == (
            0, 'XEN_DOMU OK - web1 is blocked on dom0-3')
    finally:
        with StateDB(lab.dir / 'state.db') as db:
            db.execute('DELETE FROM fenced')
        with xensim._locked(sd3, write=True) as state:
            state['domains'] = [d for d in state['domains'] if d['name'] != 'web1']


def test_domu_cluster_mode_with_a_host_down(lab, inv):
    dom0.hang(lab, 'dom0-3')
    try:
        r = run('check_xen_domu', '--cluster', inv, '--domain', 'mail1', '-t', '4')
        assert (r.rc, r.status) == (0, 'XEN_DOMU OK - mail1 is blocked on dom0-2')
        r = run('check_xen_domu', '--cluster', inv, '--domain', 'ghost', '-t', '4')
        assert r.rc == 2 and r.first.startswith(
            'XEN_DOMU CRITICAL - ghost is not running on any reachable dom0 (dom0-3: SSH to ')
    finally:
        dom0.resume(lab, 'dom0-3')


def test_capacity_ok_then_critical_naming_host_and_shortfall(lab, inv):
    r = run('check_xen_capacity', '--inventory', inv, '--max-age', '0')
    assert (r.rc, r.first) == (
        0, "XEN_CAPACITY OK - every active dom0 can fail: dom0-1 (1536 MiB) fits, dom0-2 "
           "(768 MiB) fits | 'dom0-1_shortfall'=0B;;;0 'dom0-2_shortfall'=0B;;;0")
    sd3 = dom0.state_dir(lab, 'dom0-3')
    xensim.add_domain(sd3, 'filler', 6000)
    try:
        r = run('check_xen_capacity', '--inventory', inv, '--max-age', '0')
        assert (r.rc, r.status) == (
            2, 'XEN_CAPACITY CRITICAL - losing dom0-1 cannot be absorbed: 1024 MiB short '
               '(db1 would not fit)')
    finally:
        with xensim._locked(sd3, write=True) as state:
            state['domains'] = [d for d in state['domains'] if d['name'] != 'filler']


def test_failover_dry_run_status_and_journal_commands(lab, inv):
    r = run('xenha', 'failover', 'dom0-2', '--dry-run', '--inventory', inv)
    assert r.rc == 0
    assert r.out.splitlines() == [
        'failover plan for dom0-2', '  fence: ssh', '  spare dom0-3: 6911 MiB usable',
        '  mail1 (512 MiB, priority 10) -> dom0-3', '  build1 (256 MiB, priority 0) -> dom0-3']
    r = run('xenha', 'status', '--live', '--inventory', inv)
    assert r.rc == 0
    assert 'mail1        dom0-2     dom0-2                   blocked' in r.out.splitlines()
    r = run('xenha', 'failover', 'nope', '--inventory', inv)
    assert (r.rc, r.err.strip()) == (2, f"xenha: no dom0 'nope' in {inv}")
    # --last 1 is the entry this test writes last, whatever the tests before wrote
    from xenha.state import StateDB
    with StateDB(lab.dir / 'state.db') as db:
        db.journal('note', 'test_admin: the last entry', job='test-admin')
    full = run('xenha', 'journal', '--inventory', inv)
    r = run('xenha', 'journal', '--inventory', inv, '--last', '1')
    assert (full.rc, r.rc) == (0, 0) and '[lab-setup]' in full.out
    assert r.out.splitlines() == full.out.splitlines()[-1:]
    assert r.out.rstrip().endswith('test_admin: the last entry  [test-admin]')


def test_bad_inventory_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.toml'
    bad.write_text('[defaults]\ntoolstack = "xq"\n')
    r = run('xenha', 'status', '--inventory', bad)
    assert r.rc == 2
    assert f"xenha: {bad}:2: [defaults] toolstack = 'xq': must be one of 'xl', 'xm', 'auto'" \
        in r.err.splitlines()
    assert f'xenha: {bad}: no active dom0' in r.err     # every error, not just the first
    r = run('check_xen_capacity', '--inventory', bad)
    assert r.rc == 3 and r.first.startswith(f'XEN_CAPACITY UNKNOWN - cannot load inventory: {bad}:')


def test_a_pending_create_shows_in_status_and_an_operator_can_forget_it(lab, inv):
    """build1's create on dom0-3 lost its answer (recorded pending): it is not
    restarted anywhere until it shows or 10 minutes pass; `xenha status` says
    so, and `xenha restart --forget-pending` is the operator's way out."""
    import subprocess
    from pathlib import Path
    from xenha.state import StateDB
    xl = str(Path(lab.info['hosts']['dom0-2']['bin']) / 'xl')
    subprocess.run([xl, 'destroy', 'build1'], env=dom0.env_for(lab, 'dom0-2'), check=True)
    with StateDB(lab.dir / 'state.db') as db:
        db.record_pending('build1', 'dom0-3')
    r = run('xenha', 'status', '--live', '--inventory', inv)
    line = next(x for x in r.out.splitlines() if x.startswith('build1 '))
    assert r.rc == 1 and re.fullmatch(
        r'build1       dom0-2     -                        NOT RUNNING  \(a lost create on '
        r'dom0-3 may still finish: not started elsewhere for (5\d\d|600)s more\)', line), line
    r = run('xenha', 'restart', 'build1', '-q', '--inventory', inv)
    assert r.rc == 1 and r.out.startswith('a create of build1 on dom0-3 lost its answer '), r
    r = run('xenha', 'restart', 'build1', '-q', '--forget-pending', '--inventory', inv)
    assert (r.rc, r.out.splitlines()[0]) == (
        0, 'build1 restarted on dom0-2 (restart 1 of 3 in 3600s)'), r
    r = run('xenha', 'journal', '--inventory', inv, '--last', '6')
    assert 'the lost create of build1 on dom0-3 is forgotten' in r.out
