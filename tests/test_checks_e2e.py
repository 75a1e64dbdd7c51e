"""check_xen_host and check_xen_domu, installed, against lab dom0s over real SSH.

Every case asserts the exact first line (without perfdata where it holds
changing numbers) and the exit code.
"""

import shutil
import subprocess

import pytest

from conftest import run, ssh_args, ssh_where
from xenha.lab import dom0, xensim

GiB = 1024 ** 3


def addr(lab, host='dom0-1'):
    return lab.info['hosts'][host]['address']


@pytest.fixture
def web(dom0s):
    """dom0-1 runs web1 (512 MiB, blocked) and db1 (1 GiB, running)."""
    sd = dom0.state_dir(dom0s, 'dom0-1')
    xensim.add_domain(sd, 'web1', 512)
    xensim.add_domain(sd, 'db1', 1024, state_name='running')
    return dom0s


# --- check_xen_host ----------------------------------------------------------
def test_host_ok_with_perfdata(web):
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-w', '4G:', '-c', '2G:')
    assert r.rc == 0, r
    a = addr(web)
    assert r.first == (
        f'XEN_HOST OK - {a}: 2 domUs (1 blocked, 1 running), 5.5GiB of 8.0GiB free | '
        'domains_blocked=1;;;0 domains_crashed=0;;;0 domains_dying=0;;;0 '
        'domains_paused=0;;;0 domains_running=1;;;0 domains_shutdown=0;;;0 '
        f'free_memory={(8192 - 1024 - 1536 - 1) * 1024 ** 2}B;4294967296:;2147483648:;0;'
        f'{8 * GiB} total_memory={8 * GiB}B;;;0')


def test_host_free_memory_warning_and_critical(web):
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-w', '6G:', '-c', '2G:')
    assert (r.rc, r.status) == (1, f'XEN_HOST WARNING - {addr(web)}: 5.5GiB free of '
                                   '8.0GiB (outside range 6442450944:)')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-w', '7G:', '-c', '6G:')
    assert (r.rc, r.status) == (2, f'XEN_HOST CRITICAL - {addr(web)}: 5.5GiB free of '
                                   '8.0GiB (outside range 6442450944:)')


def test_host_crashed_guest_is_critical(web):
    xensim.set_domain_state(dom0.state_dir(web, 'dom0-1'), 'db1', 'crashed')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'))
    assert (r.rc, r.status) == (2, f'XEN_HOST CRITICAL - {addr(web)}: crashed: db1')


def test_host_paused_guest_is_warning_or_as_configured(web):
    xensim.set_domain_state(dom0.state_dir(web, 'dom0-1'), 'web1', 'paused')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'))
    assert (r.rc, r.status) == (1, f'XEN_HOST WARNING - {addr(web)}: paused: web1')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '--paused', 'critical')
    assert (r.rc, r.status) == (2, f'XEN_HOST CRITICAL - {addr(web)}: paused: web1')


def test_host_down_is_unknown_connection_refused(web):
    dom0.power(web, 'dom0-1', on=False)
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'))
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - SSH to {ssh_where(web)}: connection refused (host down?)')


def test_host_hung_is_unknown_within_timeout(web):
    dom0.hang(web, 'dom0-1')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-t', '3')
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - SSH to {ssh_where(web)} timed out after 1s waiting for '
           'the server (host hung?)')
    assert r.seconds < 3


def test_toolstack_hang_is_unknown_naming_the_command(web):
    xensim.set_fault(dom0.state_dir(web, 'dom0-1'), 'hang')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-t', '3')
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - xl list on {addr(web)} did not finish within 2.5s')
    assert r.seconds < 3


def test_wrong_key_is_auth_failure(web, tmp_path):
    key = tmp_path / 'other'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key], check=True)
    r = run('check_xen_host', *ssh_args(web, 'dom0-1', identity=str(key)))
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - SSH authentication as root@{addr(web)} failed '
           f'(key {key} refused)')


def test_unknown_host_key_names_the_fix(web, tmp_path):
    empty = tmp_path / 'known_hosts'
    empty.write_text('')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1', known_hosts=str(empty)))
    a = addr(web)
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - host key for {a} is unknown: add it to {empty} '
           f'(ssh-keyscan -p 22 {a} >> {empty}) or pass --ssh-accept-new-host-key')


def test_accept_new_host_key_records_it_then_verifies(web, tmp_path):
    kh = tmp_path / 'known_hosts'
    kh.write_text('')
    args = ssh_args(web, 'dom0-1', known_hosts=str(kh))
    r = run('check_xen_host', *args, '--ssh-accept-new-host-key')
    assert r.rc == 0, r
    assert kh.read_text().startswith(f'{addr(web)} ssh-ed25519 ')
    assert run('check_xen_host', *args).rc == 0


def test_changed_host_key_is_refused_even_with_accept_new(web, tmp_path):
    other = tmp_path / 'k'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', other], check=True)
    kh = tmp_path / 'known_hosts'
    kh.write_text(f'{addr(web)} ' + ' '.join(
        (tmp_path / 'k.pub').read_text().split()[:2]) + '\n')
    for extra in ([], ['--ssh-accept-new-host-key']):
        r = run('check_xen_host', *ssh_args(web, 'dom0-1', known_hosts=str(kh)), *extra)
        assert r.rc == 3, r
        assert r.first.startswith(f'XEN_HOST UNKNOWN - host key for {addr(web)} has '
                                  'CHANGED (got ssh-ed25519 '), r.first
        assert r.first.endswith(f'possible man-in-the-middle; if the host was '
                                f'reinstalled, remove its old entry from {kh}')


def test_toolstack_error_is_unknown_with_its_reason(web):
    xensim.set_fault(dom0.state_dir(web, 'dom0-1'), 'fail')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'))
    assert (r.rc, r.first) == (
        3, 'XEN_HOST UNKNOWN - xl list failed: libxl: error: libxl.c:102:'
           'libxl_ctx_alloc: cannot open libxc handle: Permission denied')


def test_garbage_output_is_unknown_never_ok(web):
    xensim.set_fault(dom0.state_dir(web, 'dom0-1'), 'garbage')
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'))
    assert (r.rc, r.first) == (
        3, "XEN_HOST UNKNOWN - no domain list header in toolstack output "
           "(first line: '\\x1b[2J#### segfault in libxenlight ####')")


def test_xm_dialect_and_toolstack_command(web):
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '--toolstack', 'xm')
    assert (r.rc, r.status.split(':')[0]) == (0, f'XEN_HOST OK - {addr(web)}')
    bindir = web.info['hosts']['dom0-1']['bin']
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'),
            '--toolstack-command', f'env XENSIM_X=1 {bindir}/xm')
    assert r.rc == 0, r
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'),
            '--toolstack-command', '/nonexistent/xl')
    assert (r.rc, r.first) == (
        3, f'XEN_HOST UNKNOWN - /nonexistent/xl: command not found on {addr(web)}')


def test_auto_falls_back_to_xm_when_there_is_no_xl(web):
    import os
    os.unlink(f"{web.info['hosts']['dom0-1']['bin']}/xl")
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-vv')
    assert r.rc == 0, r
    assert f'{addr(web)}: xm, 3 domains' in r.out


def test_local_mode_without_paramiko(web, tmp_path):
    env = dom0.env_for(web, 'dom0-2')
    env['PYTHONVERBOSE'] = '1'   # every import is logged on stderr
    r = run('check_xen_host', '--state-db', tmp_path / 's.db', env=env)
    assert (r.rc, r.status) == (0, 'XEN_HOST OK - dom0-2: 0 domUs, 7.0GiB of 8.0GiB free')
    assert "import 'paramiko'" not in r.err and "import 'nagiosplugin'" in r.err
    # and the same probe does see paramiko when SSH is used
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), env=dict(env, PYTHONVERBOSE='1'))
    assert "import 'paramiko'" in r.err


def test_listing_recorded_in_state_cache(web):
    from xenha.state import StateDB
    assert run('check_xen_host', *ssh_args(web, 'dom0-1')).rc == 0
    with StateDB(web.dir / 'state.db') as db:
        listing = db.listing(addr(web))
    assert listing.hostname == 'dom0-1' and listing.age() < 5
    assert sorted((d['name'], d['state']) for d in listing.domains) == [
        ('db1', 'running'), ('web1', 'blocked')]


def test_state_cache_trouble_is_a_note_not_the_hosts_fault(web, tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    args = ssh_args(web, 'dom0-1')
    args[args.index('--state-db') + 1] = str(blocker / 'state.db')
    r = run('check_xen_host', *args)
    assert (r.rc, r.status) == (
        0, f'XEN_HOST OK - {addr(web)}: 2 domUs (1 blocked, 1 running), 5.5GiB of 8.0GiB '
           f'free (state cache not written: cannot open the state database '
           f'{blocker}/state.db: not a directory: {blocker})')


def test_size_suffix_errors_are_usage_errors(web):
    r = run('check_xen_host', *ssh_args(web, 'dom0-1'), '-w', 'lots:')
    assert (r.rc, r.first) == (3, "XEN_HOST UNKNOWN - argument -w/--warning: not a range: "
                                  "'lots:': its start 'lots' is not a size (try 512M, 4G)")
    r = run('check_xen_domu', '--cluster', 'x', '-H', 'y', '--domain', 'z')
    assert (r.rc, r.first) == (3, 'XEN_DOMU UNKNOWN - use either -H or --cluster')


# --- check_xen_domu -------------------------------------------------------------
def test_domu_ok_paused_crashed_missing(web):
    a = addr(web)
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'web1')
    assert (r.rc, r.status) == (0, f'XEN_DOMU OK - web1 is blocked on {a}')
    assert ' memory=536870912B;;;0 vcpus=1;;;0' in r.first and 'cpu_time=' in r.first
    sd = dom0.state_dir(web, 'dom0-1')
    xensim.set_domain_state(sd, 'web1', 'paused')
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'web1')
    assert (r.rc, r.status) == (1, f'XEN_DOMU WARNING - web1 is paused on {a}')
    xensim.set_domain_state(sd, 'web1', 'crashed')
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'web1')
    assert (r.rc, r.status) == (2, f'XEN_DOMU CRITICAL - web1 is crashed on {a}')
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'nope')
    assert (r.rc, r.first) == (2, f'XEN_DOMU CRITICAL - nope is not running on {a} | hosts=0;;;0')


def test_domu_host_down_is_unknown(web):
    dom0.power(web, 'dom0-1', on=False)
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'web1')
    assert (r.rc, r.first) == (
        3, f'XEN_DOMU UNKNOWN - SSH to {ssh_where(web)}: connection refused (host down?)')


def test_domu_cached_answer_needs_no_ssh(web):
    assert run('check_xen_host', *ssh_args(web, 'dom0-1')).rc == 0
    dom0.power(web, 'dom0-1', on=False)   # the cache answers, not the host
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'db1',
            '--max-age', '60', '-v')
    assert (r.rc, r.status) == (0, f'XEN_DOMU OK - db1 is running on {addr(web)} '
                                   '(cached 0s ago)')
    r = run('check_xen_domu', *ssh_args(web, 'dom0-1'), '--domain', 'db1',
            '--max-age', '0')
    assert r.rc == 3, r    # too old: asks the host, which is down
