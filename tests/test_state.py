"""The state database under concurrent writers; leases across processes; the
append-only journal."""

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from xenha.state import StateDB
from xenha.xen import Domain, HostInfo, State

MiB = 1024 * 1024


def _writer(path, host, n):
    dom = [Domain('Domain-0', 0, 512 * MiB, 2, State.RUNNING, 'r-----', 1.0),
           Domain(f'g-{host}', 1, 256 * MiB, 1, State.BLOCKED, '-b----', 2.0)]
    info = HostInfo(host, 8192 * MiB, 4096 * MiB, 4, '4.17.7')
    with StateDB(path) as db:
        for i in range(n):
            db.record_listing(host, dom, info)
            db.journal('check', f'{host} {i}')


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / 'state.db'
    procs = [multiprocessing.Process(target=_writer, args=(path, f'h{i}', 50)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    with StateDB(path) as db:
        assert sorted(l.host for l in db.listings()) == [f'h{i}' for i in range(8)]
        assert len(db.journal_rows()) == 8 * 50
        assert db.listing('h3').domains[0]['name'] == 'g-h3'


def test_journal_is_append_only(tmp_path):
    import sqlite3
    with StateDB(tmp_path / 's.db') as db:
        db.journal('x', 'kept')
        for sql in ('DELETE FROM journal', "UPDATE journal SET message = 'changed'"):
            with pytest.raises(sqlite3.IntegrityError, match='the journal is append-only'):
                db.execute(sql)
        assert [r['message'] for r in db.journal_rows()] == ['kept']


def test_lease_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    path = tmp_path / 's.db'
    holder = subprocess.Popen([sys.executable, '-c', f'''
import sys, time
from xenha.state import StateDB
db = StateDB({str(path)!r})
lease = db.take_lease('dom0-1', 'job-a')
print('held' if lease else 'refused', flush=True)
time.sleep(60)
'''], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    with StateDB(path) as db:
        assert db.take_lease('dom0-1', 'job-b') is None
        assert db.lease_holder('dom0-1') == 'job-a'
        holder.kill()            # a job killed halfway: its lease goes with it
        holder.wait()
        lease = db.take_lease('dom0-1', 'job-b', wait=5)
        assert lease is not None and db.lease_holder('dom0-1') == 'job-b'
        lease.release()
        assert db.lease_holder('dom0-1') is None
