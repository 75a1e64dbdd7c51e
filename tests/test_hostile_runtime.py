"""Hostile input, issue 12, classes 4-7: files, time, tracebacks, wrong answers.

4. writes through symlinks (the state database, its -wal, its lock files, the
   handlers' job log), and the modes of what xenha creates;
5. -t as a bound: validated; a locked state database, hung dom0s, /dev/zero
   as a secret or an inventory, a flooding agent, and no process left behind;
6. never a traceback: bad ranges, an unusable state database, a corrupt cache
   row, non-UTF-8 output, a garbage known_hosts, a hostile iSCSI target, an SSH
   reset, and what nobody expected (the traceback only at -vvv);
7. wrong states and messages: -t 0, --wait -1, negative free memory, a garbage
   banner, an encrypted key, accept-new without known_hosts, terminal escapes,
   forged journal lines.

Every case runs the installed command and asserts its exact first line and
exit code.  Fake toolstacks and fence agents are small shell scripts run by
the real local runner; the SSH and iSCSI misbehaviours are real sockets on the
lab's own loopback addresses.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import cluster_lab, run, ssh_args, ssh_where
from xenha.lab import cluster, dom0, xensim
from xenha.lab.core import Lab

HOST_OK = 'XEN_HOST OK - '


def script(path: Path, body: str) -> Path:
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(0o755)
    return path


def leftovers(marker: str) -> list[str]:
    """Processes whose command line holds `marker` (a sleep we started)."""
    r = subprocess.run(['pgrep', '-af', marker], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if 'pgrep' not in line]


XL_LIST = ('Name ID Mem VCPUs State Time(s)\\nDomain-0 0 1024 2 r----- 10.0\\n'
           'web1 1 512 1 -b---- 1.0\\n')


def fake_xl(tmp: Path, *, info: str = '4096', free: str = '2048', list_extra: str = '',
            list_body: str | None = None) -> str:
    """A local toolstack: `list` and `info` in xl's formats."""
    body = list_body if list_body is not None else f"printf '{XL_LIST}'{list_extra}"
    return str(script(tmp / 'fake-xl', f'''case "$1" in
  list) {body} ;;
  info) printf 'host : fake\\ntotal_memory : {info}\\nfree_memory : {free}\\n' ;;
esac
'''))


def local_host(tmp: Path, xl: str, *args, timeout: int = 5):
    return run('check_xen_host', '--toolstack-command', xl, '--no-cache', '-t', timeout,
               *args)


# ======================================================================== 4. files
@pytest.fixture
def victim(tmp_path):
    """Someone else's file, which no command may write."""
    v = tmp_path / 'victim'
    v.write_text('precious\n')
    return v


def test_check_xen_host_refuses_a_symlinked_state_db_and_still_answers(dom0s, tmp_path,
                                                                       victim):
    db = tmp_path / 'state.db'
    db.symlink_to(victim)
    args = ssh_args(dom0s, 'dom0-1')
    args[args.index('--state-db') + 1] = db
    r = run('check_xen_host', *args)
    a = dom0s.info['hosts']['dom0-1']['address']
    assert (r.rc, r.status) == (0, f'{HOST_OK}{a}: 0 domUs, 7.0GiB of 8.0GiB free (state '
                                   f'cache not written: the state database {db} is a '
                                   'symbolic link: refusing to open it (it could point at '
                                   "someone else's file))")
    assert victim.read_text() == 'precious\n'


def inventory_with_state_db(tmp_path, state_db) -> Path:
    inv = tmp_path / 'cluster.toml'
    inv.write_text(f'''[defaults]
state_db = {json.dumps(str(state_db))}
[dom0.dom0-1]
address = "127.0.0.1"
role = "active"
fencing = "none"
[domu.web1]
config = "/etc/xen/web1.cfg"
memory = 512
home = "dom0-1"
targets = []
''')
    return inv


@pytest.mark.parametrize('link', ['state.db', 'state.db-wal', 'state.db-shm'])
def test_a_symlink_at_the_state_db_is_refused_by_every_command(tmp_path, victim, link):
    db = tmp_path / 'db' / 'state.db'
    db.parent.mkdir()
    if link != 'state.db':
        sqlite3.connect(db).close()
    (db.parent / link).symlink_to(victim)
    inv = inventory_with_state_db(tmp_path, db)
    why = (f'the state database {db.parent / link} is a symbolic link: refusing to open it '
           "(it could point at someone else's file)")
    r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARD', '3')
    assert (r.rc, r.first) == (3, f'xenha: refused: {why}')
    for cmd in (('status',), ('journal',), ('restart', 'web1')):
        r = run('xenha', *cmd, '--inventory', inv)
        assert (r.rc, r.err.splitlines()[0]) == (2, f'xenha: refused: {why}'), cmd
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1', '--max-age', '60',
            '-t', '3')
    assert victim.read_text() == 'precious\n'


def test_lock_files_are_never_followed(tmp_path, victim):
    from xenha.state import StateDB, StateDBError
    db = tmp_path / 'state.db'
    with StateDB(db) as s:
        with s.take_lease('dom0-1', 'job-a'):
            pass
        (tmp_path / 'state.db.locks' / 'dom0-2.lock').symlink_to(victim)
        with pytest.raises(StateDBError) as e:
            s.take_lease('dom0-2', 'job-b')
        assert str(e.value) == (f'the lock file {tmp_path}/state.db.locks/dom0-2.lock is a '
                                'symbolic link: refusing to follow it')
        with pytest.raises(StateDBError):
            s.lease_held('dom0-2')
    other = tmp_path / 'other.db'
    with StateDB(other) as s:
        (tmp_path / 'elsewhere').mkdir()
        (tmp_path / 'other.db.locks').symlink_to(tmp_path / 'elsewhere')
        with pytest.raises(StateDBError) as e:
            s.take_lease('dom0-1', 'job')
        assert str(e.value) == (f'the lock directory {tmp_path}/other.db.locks is a '
                                'symbolic link: refusing to follow it')
    assert victim.read_text() == 'precious\n'
    assert not list((tmp_path / 'elsewhere').iterdir())


def test_what_xenha_creates_is_for_its_owner_only(tmp_path):
    from xenha.state import StateDB
    db = tmp_path / 'new' / 'dir' / 'state.db'
    mode = lambda p: oct(stat.S_IMODE(os.stat(p).st_mode))
    with StateDB(db) as s:
        s.journal('event', 'x')
        with s.take_lease('dom0-1', 'job'):
            pass
        assert (mode(f'{db}-wal'), mode(f'{db}-shm')) == ('0o600', '0o600')
    assert (mode(db), mode(db.parent), mode(f'{db}.locks'),
            mode(f'{db}.locks/dom0-1.lock')) == ('0o600', '0o700', '0o700', '0o600')


@pytest.fixture
def clab():
    yield from cluster_lab(storage=False, bmc=False)


def wait_gone(pid: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f'job {pid} still runs')


def started_pid(first: str) -> int:
    return int(first.split('(pid ')[1].split(',')[0])


@pytest.mark.parametrize('kind', ['symlink', 'directory', 'device full'])
def test_a_bad_job_log_does_not_stop_the_failover_and_is_said(clab, tmp_path, victim, kind):
    log = {'symlink': tmp_path / 'jobs.log', 'directory': tmp_path,
           'device full': Path('/dev/full')}[kind]
    if kind == 'symlink':
        log.symlink_to(victim)
    why = {'symlink': "is a symbolic link: refusing to write through it (it could point "
                      "at someone else's file)",
           'directory': 'Is a directory', 'device full': 'No space left on device'}[kind]
    inv = cluster.inventory_path(clab)
    r = run('handle_dom0_event', '--inventory', inv, '--log', log, 'dom0-1', 'DOWN', 'HARD',
            '3')
    assert r.rc == 0, r
    assert r.first.startswith('xenha: dom0-1 is DOWN (HARD): job started (pid ')
    assert r.first.endswith(f', no log: cannot write {log}: {why})')
    wait_gone(started_pid(r.first))       # dom0-1 answers: the job refuses, and ends
    assert victim.read_text() == 'precious\n'


def test_the_job_log_is_created_for_its_owner_only(clab, tmp_path):
    log = tmp_path / 'jobs.log'
    r = run('handle_dom0_event', '--inventory', cluster.inventory_path(clab), '--log', log,
            'dom0-1', 'DOWN', 'HARD', '3')
    assert r.first.endswith(f', log {log})'), r
    wait_gone(started_pid(r.first))
    assert oct(stat.S_IMODE(log.stat().st_mode)) == '0o600'
    assert 'dom0-1 answers SSH' in log.read_text()


# ======================================================================== 5. -t is a bound
T_WHY = 'must be a whole number of seconds from 1 to 3600, not'
BAD_T = {'-1': f"{T_WHY} '-1'", '0': f"{T_WHY} '0'", '0.5': f"{T_WHY} '0.5'",
         '2.5': f"{T_WHY} '2.5'", 'nan': f"{T_WHY} 'nan'", 'inf': f"{T_WHY} 'inf'",
         '1e20': f"{T_WHY} '1e20'", '3601': f"{T_WHY} '3601'",
         'abc': "not a number of seconds: 'abc'"}


@pytest.mark.parametrize('value', list(BAD_T))
def test_bad_timeouts_are_usage_errors(value):
    r = run('check_xen_host', '-H', '127.0.0.1', '-t', value)
    assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - argument -t/--timeout: {BAD_T[value]}')


@pytest.mark.parametrize('check, args', [
    ('XEN_DOMU', ('--domain', 'web1')),
    ('ISCSI_TARGET', ('-H', '127.0.0.1')),
    ('AOE_TARGET', ('--interface', 'lo', '--shelf', '1', '--slot', '1')),
    ('XEN_CAPACITY', ()),
    ('FENCE', ('--dom0', 'x')),
])
def test_every_check_validates_its_timeout(check, args):
    r = run(f'check_{check.lower()}', *args, '-t', 'nan')
    assert (r.rc, r.first) == (3, f"{check} UNKNOWN - argument -t/--timeout: {T_WHY} 'nan'")


@pytest.fixture
def locked(dom0s):
    """The lab's state database with a writer holding it (BEGIN IMMEDIATE)."""
    from xenha.state import StateDB
    StateDB(dom0s.dir / 'state.db').close()
    holder = sqlite3.connect(dom0s.dir / 'state.db', isolation_level=None)
    holder.execute('BEGIN IMMEDIATE')
    try:
        yield dom0s
    finally:
        holder.rollback()
        holder.close()


def test_a_locked_state_db_costs_the_check_nothing_but_its_cache(locked):
    r = run('check_xen_host', *ssh_args(locked, 'dom0-1'), '-t', '3')
    a = locked.info['hosts']['dom0-1']['address']
    assert (r.rc, r.status) == (0, f'{HOST_OK}{a}: 0 domUs, 7.0GiB of 8.0GiB free (state '
                                   'cache not written: database is locked)')
    assert r.seconds < 4.5, r.seconds        # was 10 s (sqlite's busy timeout), -t 3


def test_a_locked_state_db_does_not_hold_a_handler(clab):
    from xenha.state import StateDB
    inv = cluster.inventory_path(clab)
    StateDB(clab.dir / 'state.db').close()
    holder = sqlite3.connect(clab.dir / 'state.db', isolation_level=None)
    holder.execute('BEGIN IMMEDIATE')
    try:
        r = run('handle_dom0_event', '--inventory', inv, 'dom0-1', 'DOWN', 'HARD', '3')
    finally:
        holder.rollback()
        holder.close()
    assert r.rc == 0 and r.seconds < 4.5, r
    assert r.first.startswith('xenha: dom0-1 is DOWN (HARD): job started (pid ')
    assert r.first.endswith(') (not journaled: database is locked)')
    wait_gone(started_pid(r.first))


def test_check_xen_capacity_with_hung_dom0s_answers_within_its_timeout(dom0s, tmp_path):
    inv = tmp_path / 'cluster.toml'
    opts = dom0.ssh_options(dom0s)
    inv.write_text(f'[defaults]\nssh_user = "root"\nssh_key = "{opts.identity}"\n'
                   f'known_hosts = "{opts.known_hosts}"\nssh_port = {opts.port}\n'
                   f'state_db = "{tmp_path}/state.db"\ntimeout = 30\n' + ''.join(
                       f'[dom0.{n}]\naddress = "{dom0s.info["hosts"][n]["address"]}"\n'
                       f'role = "{role}"\nfencing = "none"\n'
                       for n, role in (('dom0-1', 'active'), ('dom0-2', 'active'),
                                       ('dom0-3', 'spare'))))
    for name in ('dom0-1', 'dom0-2', 'dom0-3'):
        dom0.hang(dom0s, name)
    try:
        r = run('check_xen_capacity', '--inventory', inv, '-t', '4')
    finally:
        for name in ('dom0-1', 'dom0-2', 'dom0-3'):
            dom0.resume(dom0s, name)
    assert r.seconds < 5.5, r.seconds         # the dom0s' own timeout is 30 s
    assert (r.rc, r.status) == (0, 'XEN_CAPACITY OK - every active dom0 can fail: dom0-1 '
                                   '(0 MiB) fits, dom0-2 (0 MiB) fits (no figures from '
                                   'dom0-1, dom0-2, dom0-3)')


def fence_inventory(tmp_path, agent: str, password_file: str | None = None,
                    timeout: int = 30) -> Path:
    inv = tmp_path / 'fence.toml'
    pw = f'password_file = "{password_file}"\n' if password_file else ''
    inv.write_text(f'[dom0.h1]\naddress = "127.0.0.1"\nrole = "active"\n'
                   f'[[dom0.h1.fencing]]\nmethod = "agent"\nagent = "{agent}"\n'
                   f'ip = "127.0.0.1"\n{pw}timeout = {timeout}\n')
    return inv


def test_dev_zero_as_a_secret_or_an_inventory_is_refused_at_once(tmp_path):
    r = run('check_iscsi_target', '-H', '127.0.0.1', '--target', 'iqn.2026-01.lab:x',
            '--chap-user', 'u', '--chap-secret-file', '/dev/zero', '-t', '3')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - cannot read CHAP secret file '
                                  '/dev/zero: not a regular file (a character device)')
    for inv in ('/dev/zero', '/dev/stdin'):
        why = f'{inv}: cannot read: not a regular file (a character device)' \
            if inv == '/dev/zero' else None
        r = run('check_fence', '--inventory', inv, '--dom0', 'h1', '-t', '3')
        if why:
            assert (r.rc, r.first) == (3, f'FENCE UNKNOWN - cannot load inventory: {why}')
            r = run('handle_dom0_event', '--inventory', inv, 'h1', 'DOWN', 'HARD', '3')
            assert (r.rc, r.first) == (3, f'xenha: refused: inventory unusable: {why}')
            r = run('xenha', 'status', '--inventory', inv)
            assert (r.rc, r.err.splitlines()[0]) == (2, f'xenha: {why}')
        assert r.seconds < 3
    fifo = tmp_path / 'fifo.toml'
    os.mkfifo(fifo)
    r = run('check_fence', '--inventory', fifo, '--dom0', 'h1', '-t', '3')
    assert (r.rc, r.first) == (3, f'FENCE UNKNOWN - cannot load inventory: {fifo}: cannot '
                                  'read: not a regular file (a FIFO)')
    agent = script(tmp_path / 'fence_quiet', 'cat >/dev/null; exit 0\n')
    r = run('check_fence', '--inventory', fence_inventory(tmp_path, str(agent), '/dev/zero'),
            '--dom0', 'h1', '-t', '5')
    assert (r.rc, r.status) == (2, 'FENCE CRITICAL - h1: agent fence_quiet: cannot read '
                                   'password file /dev/zero: not a regular file (a '
                                   'character device); password file /dev/zero is readable '
                                   'by everyone (chmod 600 or 640): a failover of h1 would '
                                   'refuse to start anything')
    assert r.seconds < 5


def test_a_flooding_agent_gives_a_bounded_status_line(tmp_path):
    agent = script(tmp_path / 'fence_flood',
                   "cat >/dev/null; head -c 20000000 /dev/zero | tr '\\0' 'x' >&2; exit 1\n")
    r = run('check_fence', '--inventory', fence_inventory(tmp_path, str(agent)), '--dom0',
            'h1', '-t', '20')
    assert r.rc == 2, r
    assert r.first.startswith('FENCE CRITICAL - h1: agent fence_flood: failed: xxxxxxxx')
    assert len(r.first) <= 4096 and len(r.out) <= 16384 + 100


def test_a_local_toolstack_that_leaves_a_daemon_on_its_output_is_not_waited_for(tmp_path):
    xl = fake_xl(tmp_path, list_extra='; sleep 371 &')
    r = local_host(tmp_path, xl, timeout=10)
    assert (r.rc, r.status) == (0, f'{HOST_OK}fake: 1 domU (1 blocked), 2.0GiB of 4.0GiB '
                                   'free')
    assert r.seconds < 5
    assert leftovers('sleep 371') == []


def test_a_hung_local_toolstack_is_killed_with_what_it_started(tmp_path):
    xl = fake_xl(tmp_path, list_body='sleep 372 & sleep 373')
    r = local_host(tmp_path, xl, timeout=3)
    assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - {xl} list did not finish within '
                                  '2.5s')
    assert leftovers('sleep 37[23]') == []


def test_a_fence_agent_whose_metadata_hangs_leaves_nothing_behind(tmp_path):
    pw = tmp_path / 'pw'
    pw.write_text('secret\n')
    pw.chmod(0o600)
    agent = script(tmp_path / 'fence_hang',
                   'case "$*" in *metadata*) sleep 374 & sleep 375 ;; esac\n'
                   'cat >/dev/null; exit 0\n')
    r = run('check_fence', '--inventory', fence_inventory(tmp_path, str(agent), str(pw)),
            '--dom0', 'h1', '-t', '4')
    assert (r.rc, r.status) == (3, 'FENCE UNKNOWN - h1: agent fence_hang: status did not '
                                   'answer within -t 4 (agent or fence device hung?)')
    assert leftovers('sleep 37[45]') == []


# ======================================================================== 6. no traceback
RANGE = {
    ('check_xen_host', '-w', '10:5'): "argument -w/--warning: not a range: '10:5': its "
                                      "start (10) is above its end (5)",
    ('check_xen_host', '-c', '5G:1G'): "argument -c/--critical: not a range: '5G:1G': its "
                                       "start (5G) is above its end (1G)",
    ('check_xen_host', '-w', '~:~'): "argument -w/--warning: not a range: '~:~' (use "
                                     "[@][start:][end], e.g. 10, 10:, ~:10, 10:20, @10:20)",
    ('check_xen_host', '-w', '1:2:3'): "argument -w/--warning: not a range: '1:2:3' (use "
                                       "[@][start:][end], e.g. 10, 10:, ~:10, 10:20, @10:20)",
    ('check_iscsi_target', '-w', 'abc'): "argument -w/--warning: not a range: 'abc': its "
                                         "end 'abc' is not a number (use [@][start:][end], "
                                         "e.g. 10, 10:, ~:10, 10:20, @10:20)",
    ('check_iscsi_target', '-c', 'nan'): "argument -c/--critical: not a range: 'nan': its "
                                         "end 'nan' is not a number (use [@][start:][end], "
                                         "e.g. 10, 10:, ~:10, 10:20, @10:20)",
    ('check_aoe_target', '-w', '0.5:0.1'): "argument -w/--warning: not a range: '0.5:0.1': "
                                           "its start (0.5) is above its end (0.1)",
    ('check_aoe_target', '-c', 'x:'): "argument -c/--critical: not a range: 'x:': its "
                                      "start 'x' is not a number (use [@][start:][end], e.g. "
                                      "10, 10:, ~:10, 10:20, @10:20)",
}
NAMES = {'check_xen_host': 'XEN_HOST', 'check_iscsi_target': 'ISCSI_TARGET',
         'check_aoe_target': 'AOE_TARGET'}
BASE_ARGS = {'check_xen_host': ('-H', '127.0.0.1'), 'check_iscsi_target': ('-H', '127.0.0.1'),
             'check_aoe_target': ('--interface', 'lo', '--shelf', '1', '--slot', '1')}


@pytest.mark.parametrize('case', list(RANGE), ids=lambda c: ' '.join(c))
def test_bad_ranges_are_usage_errors(case):
    name, flag, value = case
    for verbose in ((), ('-vv',)):
        r = run(name, *BASE_ARGS[name], flag, value, *verbose)
        assert (r.rc, r.first) == (3, f'{NAMES[name]} UNKNOWN - {RANGE[case]}')
        assert 'Traceback' not in r.out + r.err


def test_an_unusable_state_db_is_one_line_everywhere(tmp_path):
    db = tmp_path / 'state.db'
    db.write_bytes(b'this is not a database\n' * 100)
    inv = inventory_with_state_db(tmp_path, db)
    why = f'cannot use the state database {db}: file is not a database'
    for cmd in (('status',), ('journal',), ('failover', 'dom0-1', '--dry-run'),
                ('restart', 'web1')):
        r = run('xenha', *cmd, '--inventory', inv)
        assert (r.rc, r.err.splitlines()[0]) == (2, f'xenha: refused: {why}'), cmd
        assert 'Traceback' not in r.err
    r = run('handle_domu_event', '--inventory', inv, 'web1', 'CRITICAL', 'HARD', '3')
    assert (r.rc, r.first) == (3, f'xenha: refused: {why}')
    r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1', '--max-age', '60',
            '-t', '3')
    assert r.rc == 3 and 'Traceback' not in r.out + r.err


def test_a_corrupt_cache_row_is_one_line_everywhere(tmp_path):
    lab = Lab()
    try:
        db = tmp_path / 'state.db'
        inv = inventory_with_state_db(tmp_path, db)
        inv.write_text(inv.read_text().replace('127.0.0.1', lab.addr(40)))
        from xenha.state import StateDB
        StateDB(db).close()
        with sqlite3.connect(db) as c:
            c.execute("INSERT INTO listing VALUES (?, 'h', 1.0, '[{\"name\": 5}]', 1, 2)",
                      (lab.addr(40),))
        why = (f'the state database holds a corrupt cached listing of {lab.addr(40)} (a '
               'domain entry is malformed); check_xen_host rewrites it at its next run of '
               'that host')
        for cmd in (('status',), ('failover', 'dom0-1', '--dry-run'), ('restart', 'web1')):
            r = run('xenha', *cmd, '--inventory', inv)
            assert (r.rc, r.err.splitlines()[0]) == (2, f'xenha: refused: {why}'), (cmd, r)
        # the checks do without the cache: they ask the dom0 (nobody listens there)
        r = run('check_xen_domu', '--cluster', inv, '--domain', 'web1', '--max-age', '600',
                '-t', '3')
        assert (r.rc, r.first) == (3, f'XEN_DOMU UNKNOWN - no dom0 answered: dom0-1: SSH to '
                                      f'{lab.addr(40)}: connection refused (host down?)')
    finally:
        lab.down()


def test_non_utf8_toolstack_output_is_garbage_not_a_traceback(tmp_path):
    xl = fake_xl(tmp_path, list_body="printf '\\377\\376 not a listing\\n'")
    r = local_host(tmp_path, xl)
    assert (r.rc, r.first) == (3, "XEN_HOST UNKNOWN - no domain list header in toolstack "
                                  "output (first line: '\ufffd\ufffd not a listing')")


@pytest.mark.parametrize('content, why', [
    (b'\xff\xfe\x00garbage\n', 'not text (not UTF-8)'),
    (b'host ssh-ed25519 !!!notbase64\n', "a line is not a host key ('host ssh-ed25519 "
                                         "!!!notbase64')"),
])
def test_a_garbage_known_hosts_is_said(tmp_path, content, why):
    kh = tmp_path / 'known_hosts'
    kh.write_bytes(content)
    lab = Lab()
    try:
        r = run('check_xen_host', '-H', lab.addr(41), '--known-hosts', kh, '--no-cache')
    finally:
        lab.down()
    assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - cannot read known_hosts {kh}: {why}')


class Server:
    """A TCP server on a lab address, one thread per connection, `handler(conn)`."""

    def __init__(self, address: str, port: int, handler):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(8)
        self.handler = handler
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)     # wakes the accept() up
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def net():
    lab = Lab()
    servers = []

    def serve(host: int, port: int, handler) -> str:
        servers.append(Server(lab.addr(host), port, handler))
        return lab.addr(host)
    try:
        yield serve
    finally:
        for s in servers:
            s.close()
        lab.down()


def ssh_reset(conn):
    conn.sendall(b'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')
    conn.recv(4096)
    time.sleep(0.2)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))


def garbage_banner(conn):
    conn.sendall(b'HTTP/1.0 400 Bad Request\r\n\x1b[2J<html>\r\n')
    time.sleep(0.5)


def closes(conn):
    pass


@pytest.mark.parametrize('handler, why', [
    (ssh_reset, 'Connection reset by peer'),
    (garbage_banner, "not an SSH server (its banner is 'HTTP/1.0 400 Bad Request\\r\\n"
                     "\\x1b[2J<html>')"),
    (closes, 'the server closed the connection before its SSH banner'),
], ids=['reset', 'garbage banner', 'closed'])
def test_ssh_servers_that_misbehave_are_said_as_what_they_do(net, tmp_path, handler, why):
    address = net(42, 2222, handler)
    kh = tmp_path / 'known_hosts'
    kh.write_text('')
    r = run('check_xen_host', '-H', address, '-p', '2222', '--known-hosts', kh,
            '--no-cache', '-t', '5')
    assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - SSH to {address}:2222: {why}')


def iscsi_pdu(opcode: int, flags: int, data: bytes = b'', **fields) -> bytes:
    head = bytearray(48)
    head[0], head[1] = opcode, flags
    head[5:8] = len(data).to_bytes(3, 'big')
    for offset, value in fields.values():
        head[offset:offset + len(value)] = value
    return bytes(head) + data + b'\0' * (-len(data) % 4)


def short_capacity_target(conn):
    """Logs in, offers one target with LUN 1, answers READ CAPACITY with 4 bytes."""
    conn.settimeout(5)

    def recv_exact(n):
        buf = b''
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise OSError('closed')
            buf += chunk
        return buf
    while True:
        head = recv_exact(48)
        dlen = int.from_bytes(head[5:8], 'big')
        recv_exact(head[4] * 4 + dlen + (-dlen % 4))
        op, itt = head[0] & 0x3f, head[16:20]
        if op == 0x03:                                      # login: straight to full
            conn.sendall(iscsi_pdu(0x23, 0x87, itt=(16, itt)))
        elif op == 0x04:                                    # SendTargets
            conn.sendall(iscsi_pdu(0x24, 0x80, b'TargetName=iqn.2026-01.lab:hostile\0',
                                   itt=(16, itt)))
        elif op == 0x06:                                    # logout
            conn.sendall(iscsi_pdu(0x26, 0x80, itt=(16, itt)))
            return
        elif op == 0x01:                                    # SCSI
            cdb = head[32:48]
            if cdb[0] == 0xa0:      # REPORT LUNS: LUN 1
                data = struct.pack('>II', 8, 0) + bytes([0, 1, 0, 0, 0, 0, 0, 0])
            elif cdb[0] == 0x12:    # INQUIRY
                data = bytes(8) + b'HOSTILE ' + b'TARGET'.ljust(16) + b'0001'
            elif cdb[0] == 0x9e:    # READ CAPACITY(16): far too short
                data = b'\0\0\0\1'
            else:                   # TEST UNIT READY
                conn.sendall(iscsi_pdu(0x21, 0x80, itt=(16, itt)))
                continue
            conn.sendall(iscsi_pdu(0x25, 0x81, data, itt=(16, itt)))


def test_a_hostile_iscsi_target_is_a_protocol_error(net):
    address = net(43, 3260, short_capacity_target)
    r = run('check_iscsi_target', '-H', address, '--target', 'iqn.2026-01.lab:hostile',
            '--lun', '1', '-t', '5')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - READ CAPACITY(16) of LUN 1 answered '
                                  '4 bytes (at least 12 expected)')


BOOM = Path(__file__).parent / 'fixtures' / 'boom'


def boom_env(target: str) -> dict:
    """Run a command with `target` (module:function) raising ZeroDivisionError: the
    one way to test what happens when something nobody expected happens."""
    return dict(os.environ, PYTHONPATH=str(BOOM), XENHA_TEST_BOOM=target)


def test_the_unexpected_is_one_line_and_a_traceback_only_at_vvv(tmp_path):
    xl = fake_xl(tmp_path)
    env = boom_env('xenha.xen:parse_info')
    for verbose, traceback in (((), False), (('-v',), False), (('-vv',), False),
                               (('-vvv',), True)):
        r = run('check_xen_host', '--toolstack-command', xl, '--no-cache', *verbose,
                env=env)
        assert (r.rc, r.first) == (3, 'XEN_HOST UNKNOWN - unexpected ZeroDivisionError in '
                                      'xen.list_and_info: division by zero'), verbose
        assert ('Traceback (most recent call last)' in r.out) is traceback, verbose
    inv = inventory_with_state_db(tmp_path, tmp_path / 'state.db')
    for verbose, traceback in (((), False), (('-vvv',), True)):
        r = run('handle_dom0_event', '--inventory', inv, *verbose, 'dom0-1', 'DOWN', 'HARD',
                '3', env=boom_env('xenha.nagios:parse_event'))
        assert (r.rc, r.first) == (3, 'xenha: refused: unexpected ZeroDivisionError in '
                                      'handler._handle: division by zero')
        assert ('Traceback (most recent call last)' in r.out) is traceback
        r = run('xenha', *verbose, 'status', '--inventory', inv,
                env=boom_env('xenha.status:status'))
        assert (r.rc, r.err.splitlines()[0]) == (1, 'xenha: status: unexpected '
                                                    'ZeroDivisionError in cli.cmd_status: '
                                                    'division by zero')
        assert ('Traceback (most recent call last)' in r.err) is traceback


# ======================================================================== 7. wrong answers
def test_iscsi_t_0_and_aoe_wait_minus_1_are_unknown():
    r = run('check_iscsi_target', '-H', '127.0.0.1', '-t', '0')
    assert (r.rc, r.first) == (3, f"ISCSI_TARGET UNKNOWN - argument -t/--timeout: {T_WHY} '0'")
    r = run('check_aoe_target', '--interface', 'lo', '--shelf', '1', '--slot', '1',
            '--wait', '-1')
    assert (r.rc, r.first) == (3, "AOE_TARGET UNKNOWN - argument --wait: must be a number of "
                                  "seconds above 0 to 3600, not '-1'")
    r = run('check_aoe_target', '--interface', 'lo', '--shelf', '1', '--slot', '1',
            '--wait', '12', '-t', '10')
    assert (r.rc, r.first) == (3, 'AOE_TARGET UNKNOWN - --wait 12 leaves nothing of -t 10')


@pytest.mark.parametrize('free, why', [
    ('-512', "toolstack info: free_memory is not a number of MiB ('-512')"),
    ('8192', 'toolstack info: free_memory (8192 MiB) is more than total_memory (4096 MiB)'),
])
def test_impossible_free_memory_is_unknown_not_critical(tmp_path, free, why):
    r = local_host(tmp_path, fake_xl(tmp_path, free=free), '-c', '1G:')
    assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - {why}')


def test_unusable_keys_are_said_as_what_they_are(dom0s, tmp_path):
    enc = tmp_path / 'encrypted'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', 'pass phrase', '-f', enc],
                   check=True)
    garbage = tmp_path / 'garbage'
    garbage.write_text('not a key\n')
    for key, why in ((enc, f'SSH key {enc} is encrypted: xenha needs a key without a '
                           'passphrase'),
                     (garbage, f'SSH key {garbage} is not a private key xenha can use '
                               '(ValueError)'),
                     ('/dev/zero', 'cannot read SSH key /dev/zero: not a regular file (a '
                                   'character device)')):
        r = run('check_xen_host', *ssh_args(dom0s, 'dom0-1', identity=str(key)))
        assert (r.rc, r.first) == (3, f'XEN_HOST UNKNOWN - {why}')


def test_accept_new_host_key_creates_a_missing_known_hosts(dom0s, tmp_path):
    kh = tmp_path / 'new' / 'known_hosts'
    args = ssh_args(dom0s, 'dom0-1', known_hosts=str(kh))
    r = run('check_xen_host', *args, '--ssh-accept-new-host-key')
    assert r.rc == 0, r
    assert kh.read_text().startswith(f"{ssh_where(dom0s).split(':')[0]} ssh-ed25519 ") or \
        kh.read_text().startswith(f"[{dom0s.info['hosts']['dom0-1']['address']}]")
    assert oct(stat.S_IMODE(kh.stat().st_mode)) == '0o600'
    assert run('check_xen_host', *args).rc == 0


def test_terminal_escapes_from_a_host_never_reach_the_status_line(dom0s):
    sd = dom0.state_dir(dom0s, 'dom0-1')
    xensim.add_domain(sd, '\x1b[2Jevil\x1b]0;owned\x07', 256, state_name='paused')
    r = run('check_xen_host', *ssh_args(dom0s, 'dom0-1'))
    a = dom0s.info['hosts']['dom0-1']['address']
    assert (r.rc, r.status) == (1, f'XEN_HOST WARNING - {a}: paused: evil')
    assert '\x1b' not in r.out and '\x07' not in r.out


def test_the_journal_never_prints_forged_lines(tmp_path):
    from xenha.state import StateDB
    db = tmp_path / 'state.db'
    inv = inventory_with_state_db(tmp_path, db)
    forged = ('dom0-1\n2026-01-01 00:00:00.000 info    end      dom0-1 dom0-1 failed over: '
              '1 domUs running')
    r = run('handle_dom0_event', '--inventory', inv, forged, 'DOWN', 'HARD', '3')
    assert (r.rc, r.first) == (3, "xenha: refused: 'dom0-1\\n2026-01-01 00:00:00.000 info    "
                                  "end      dom0-1 dom0-1 failed over: 1 do…' is not a host "
                                  "name of xenha (bad name: use letters, digits, '.', '_' and "
                                  "'-' (at most 64, starting with a letter or digit))")
    with StateDB(db) as s:        # a row written by something else (an older version)
        s.journal('event', 'one\nforged line\x1b[2J', 'warning', dom0='x\ny')
    r = run('xenha', 'journal', '--inventory', inv)
    assert r.rc == 0 and len(r.out.splitlines()) == 1, r
    assert r.out.split(' ', 2)[2] == ('warning event    x\\ny               one\\nforged '
                                      'line\\x1b[2J  [-]\n')


def test_the_local_runner_bounds_output_and_feeds_all_its_input():
    from xenha.runner import MAX_OUTPUT, LocalRunner
    r = LocalRunner().run(['sh', '-c', 'head -c 50000000 /dev/zero; echo done >&2'], 20)
    assert (r.exit, len(r.out), r.err) == (0, MAX_OUTPUT, 'done\n')
    r = LocalRunner().run(['sh', '-c', 'sleep 0.2; wc -c'], 10, input='x' * 1000000)
    assert r.out.strip() == '1000000'
