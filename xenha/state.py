"""The state database (SQLite): listing cache, sightings, fences, leases,
pending creates, doubts, restart counts, journal.

Many checks write at once (Nagios runs them in parallel), so the database is
in WAL mode with a busy timeout, and each write is one short transaction.
"Where was web1 last seen, and since when is it missing there?" comes from
the sightings, which every recorded listing keeps up to date.

The schema is versioned (``PRAGMA user_version``): each entry of MIGRATIONS
brings a database one version further, so an older database is upgraded in
place the first time a newer xenha opens it.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading
import time
from collections import namedtuple

DEFAULT_PATH = '/var/lib/xenha/state.db'
JOURNAL_FIELDS = ('id', 'at', 'job', 'dom0', 'domu', 'step', 'level', 'message')

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS listing (
    host      TEXT PRIMARY KEY,   -- as the checks reach it (-H value or inventory address)
    hostname  TEXT,               -- what the toolstack calls itself
    taken_at  REAL NOT NULL,
    domains   TEXT NOT NULL,      -- JSON list of domains (without Domain-0)
    free_memory  INTEGER,
    total_memory INTEGER
);
CREATE TABLE IF NOT EXISTS lease (
    dom0      TEXT PRIMARY KEY,
    job       TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    taken_at  REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failover (
    job       TEXT PRIMARY KEY,
    dom0      TEXT NOT NULL,
    started   REAL NOT NULL,
    finished  REAL,
    result    TEXT               -- ok | partial | refused | failed
);
CREATE TABLE IF NOT EXISTS fenced (
    host      TEXT PRIMARY KEY,   -- as in listing.host: the dom0's address
    at        REAL NOT NULL       -- fencing confirmed: nothing runs there since
);
CREATE TABLE IF NOT EXISTS pending (
    domu      TEXT PRIMARY KEY,   -- a create whose answer was lost, never seen since:
    host      TEXT NOT NULL,      -- the dom0 (name) where xl may still finish it
    at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS restart (
    domu      TEXT NOT NULL,
    at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    job       TEXT,
    dom0      TEXT,
    domu      TEXT,
    step      TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS journal_append_only_u BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_append_only_d BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""

# Version 2: where each domU was last seen on each host, and since when it is
# missing there (the never-twice accounting and the reboot grace); the domUs a
# failover left alone because a dom0 that does not answer may still run them.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS sighting (
    domu      TEXT NOT NULL,
    host      TEXT NOT NULL,      -- as in listing.host
    seen_at   REAL NOT NULL,      -- the newest listing of host that showed domu
    missing_since REAL,           -- the first listing of host after that without it
    PRIMARY KEY (domu, host)
);
CREATE TABLE IF NOT EXISTS doubt (
    domu      TEXT PRIMARY KEY,   -- not started by a job, because
    host      TEXT NOT NULL,      -- this dom0 (name) may still run it
    why       TEXT NOT NULL,
    job       TEXT,
    at        REAL NOT NULL
);
"""

# Version 3: storage fencing: the targets on which a dom0's write access was
# revoked (confirmed by reading the target back), until `xenha unfence`.
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS revoked (
    host      TEXT NOT NULL,      -- as in listing.host: the dom0's address
    target    TEXT NOT NULL,      -- inventory target name
    at        REAL NOT NULL,
    PRIMARY KEY (host, target)
);
"""

# Each brings the database from version i to i + 1; every statement is
# idempotent (IF NOT EXISTS), so two processes upgrading at once both succeed.
MIGRATIONS = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3)


class StateDBError(Exception):
    """The state database cannot be opened; the message says which and why."""


def default_path() -> str:
    return os.environ.get('XENHA_STATE_DB', DEFAULT_PATH)


# (collections.namedtuple, not typing.NamedTuple: `typing` costs a check ~2 ms to import)
class Listing(namedtuple('Listing', 'host hostname taken_at domains free_memory total_memory')):
    """A host's cached listing; `domains` are dicts (name, domid, memory, vcpus,
    state, flags, cpu_time), `taken_at` is a Unix time."""
    __slots__ = ()

    def age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.taken_at


class Sighting(namedtuple('Sighting', 'domu host seen_at missing_since')):
    """`domu` was in `host`'s listing at `seen_at` (Unix time); `missing_since`:
    the first listing of that host after it that did not show it (or None)."""
    __slots__ = ()


class StateDB:
    def __init__(self, path: str | os.PathLike | None = None,
                 timeout: float | None = None):
        self.path = str(path or default_path())
        # the busy timeout: 10 s, or what the run's -t budget leaves (a check
        # must answer before Nagios kills it, locked database or not)
        from xenha import timing
        timeout = timing.bound(10.0 if timeout is None else timeout)
        try:
            _safe_db_path(self.path)
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                      check_same_thread=False)
        except StateDBError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise StateDBError(f'cannot open the state database {_show(self.path)}: '
                               f'{_why(exc)}') from None
        try:
            self.db.execute('PRAGMA busy_timeout = %d' % int(timeout * 1000))
            if self.db.execute('PRAGMA journal_mode').fetchone()[0] != 'wal':
                self.db.execute('PRAGMA journal_mode = WAL')
            self.db.execute('PRAGMA synchronous = NORMAL')
            version = self.db.execute('PRAGMA user_version').fetchone()[0]
            if version < len(MIGRATIONS):
                self._migrate(version)
            _safe_db_path(self.path, created=False)   # still no symlink (-wal, -shm too)
        except (StateDBError, OSError, sqlite3.Error) as exc:
            self.db.close()
            if isinstance(exc, StateDBError):
                raise
            raise StateDBError(f'cannot use the state database {_show(self.path)}: '
                               f'{_why(exc)}') from None
        self._lock = threading.Lock()   # the engine's threads share one connection

    def _migrate(self, version: int) -> None:
        """Bring the schema from `version` to the newest, one step at a time."""
        # A database from before versioning (user_version 0) may hold some of
        # version 1's tables already: its statements are all IF NOT EXISTS.
        for n in range(version, len(MIGRATIONS)):
            try:
                self.db.executescript(f'BEGIN IMMEDIATE;\n{MIGRATIONS[n]}\n'
                                      f'PRAGMA user_version = {n + 1};\nCOMMIT;')
            except sqlite3.Error:
                if self.db.in_transaction:
                    self.db.execute('ROLLBACK')
                raise

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement waits for a lock held by another process."""
        self.db.execute('PRAGMA busy_timeout = %d' % max(int(seconds * 1000), 1))

    def execute(self, sql: str, params=()):
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params=()):
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:        # never under a thread's statement
            self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- listing cache (written by check_xen_host) ------------------------------
    def record_listing(self, host: str, domains, info=None, hostname: str | None = None,
                       taken_at: float | None = None) -> None:
        """The host's listing now (or at `taken_at`), and what it says of each
        domU: seen there at that time, or missing there since then.  A listing
        older than the one recorded (a slow look finishing late) changes nothing."""
        at = taken_at or time.time()
        rows = [{'name': d.name, 'domid': d.domid, 'memory': d.memory, 'vcpus': d.vcpus,
                 'state': d.state.value, 'flags': d.flags, 'cpu_time': d.cpu_time}
                for d in domains if not d.is_dom0]
        seen = [(r['name'], host, at) for r in rows if r['state'] != 'inactive']
        with self._lock:
            db = self.db
            db.execute('BEGIN IMMEDIATE')
            try:
                newer = db.execute('SELECT 1 FROM listing WHERE host = ? AND taken_at > ?',
                                   (host, at)).fetchone()
                if not newer:
                    db.execute('INSERT OR REPLACE INTO listing VALUES (?,?,?,?,?,?)',
                               (host, hostname or (info.host if info else None), at,
                                json.dumps(rows), info.free_memory if info else None,
                                info.total_memory if info else None))
                    db.executemany(
                        'INSERT INTO sighting VALUES (?,?,?,NULL) ON CONFLICT (domu, host) '
                        'DO UPDATE SET seen_at = excluded.seen_at, missing_since = NULL '
                        'WHERE excluded.seen_at >= sighting.seen_at', seen)
                    db.execute('UPDATE sighting SET missing_since = ? WHERE host = ? AND '
                               'seen_at < ? AND missing_since IS NULL', (at, host, at))
                db.execute('COMMIT')
            except BaseException:
                db.execute('ROLLBACK')
                raise

    def sightings(self, domu: str | None = None) -> list[Sighting]:
        """Where each domU (or `domu`) was seen, newest first."""
        sql = 'SELECT domu, host, seen_at, missing_since FROM sighting'
        rows = self.execute(sql + (' WHERE domu = ?' if domu else '')
                            + ' ORDER BY seen_at DESC', (domu,) if domu else ())
        return [Sighting(*r) for r in rows]

    def note_missing(self, domu: str, host: str, at: float) -> float:
        """A live look at `host` at `at` did not show `domu`, which its listing
        did: it is missing there since then (or since earlier).  Returns since when."""
        self.execute('UPDATE sighting SET missing_since = ? WHERE domu = ? AND host = ? '
                     'AND missing_since IS NULL AND seen_at < ?', (at, domu, host, at))
        row = self.one('SELECT missing_since FROM sighting WHERE domu = ? AND host = ?',
                       (domu, host))
        return row[0] if row and row[0] is not None else at

    # -- storage fencing: where a dom0 may no longer write ---------------------------
    def record_revoked(self, host: str, *targets: str) -> None:
        now = time.time()
        for t in targets:
            self.execute('INSERT OR REPLACE INTO revoked VALUES (?,?,?)', (host, t, now))

    def revoked(self) -> dict[str, frozenset]:
        """dom0 address -> the targets it is revoked on."""
        out: dict[str, set] = {}
        for host, target in self.execute('SELECT host, target FROM revoked'):
            out.setdefault(host, set()).add(target)
        return {h: frozenset(t) for h, t in out.items()}

    def clear_revoked(self, host: str, *targets: str) -> None:
        if targets:
            self.execute(f'DELETE FROM revoked WHERE host = ? AND target IN '
                         f'({",".join("?" * len(targets))})', (host, *targets))

    # -- doubts: domUs a job left alone because a silent dom0 may run them ---------
    def record_doubt(self, domu: str, host: str, why: str, job: str | None = None) -> None:
        self.execute('INSERT OR REPLACE INTO doubt VALUES (?,?,?,?,?)',
                     (domu, host, why, job, time.time()))

    def doubts(self) -> dict[str, tuple[str, str, float]]:
        """domU -> (dom0 that may run it, why, since when)."""
        return {r[0]: (r[1], r[2], r[3]) for r in
                self.execute('SELECT domu, host, why, at FROM doubt')}

    def clear_doubt(self, *domus: str) -> None:
        if domus:
            self.execute(f'DELETE FROM doubt WHERE domu IN ({",".join("?" * len(domus))})',
                         domus)

    def listing(self, host: str) -> Listing | None:
        row = self.one('SELECT * FROM listing WHERE host = ?', (host,))
        return _listing(row) if row else None

    def record_fenced(self, host: str, at: float | None = None) -> None:
        """`host` (its address) was fenced: what its listing says no longer runs."""
        self.execute('INSERT OR REPLACE INTO fenced VALUES (?,?)', (host, at or time.time()))

    def fenced_hosts(self) -> dict[str, float]:
        return dict(self.execute('SELECT host, at FROM fenced'))

    # -- creates that may still finish ------------------------------------------------
    def record_pending(self, domu: str, host: str, at: float | None = None) -> None:
        """`xl create` of `domu` on `host` lost its answer and the domain never
        showed: a queued or hung xl there may still build it."""
        self.execute('INSERT OR REPLACE INTO pending VALUES (?,?,?)',
                     (domu, host, at or time.time()))

    def pending(self, domu: str, window: float) -> tuple[str, float] | None:
        """(host, when) of a create of `domu` that may still finish, within `window` s."""
        row = self.one('SELECT host, at FROM pending WHERE domu = ? AND at > ?',
                       (domu, time.time() - window))
        return (row[0], row[1]) if row else None

    def clear_pending(self, *domus: str) -> None:
        if domus:
            self.execute(f'DELETE FROM pending WHERE domu IN ({",".join("?" * len(domus))})',
                         domus)

    def listings(self) -> list[Listing]:
        return [_listing(r) for r in
                self.execute('SELECT * FROM listing ORDER BY host')]

    def forget_domain(self, host: str, name: str) -> None:
        """Drop one domain from a host's cached listing (it was moved away)."""
        listing = self.listing(host)
        if listing is None:
            return
        rows = [d for d in listing.domains if d['name'] != name]
        self.execute('UPDATE listing SET domains = ? WHERE host = ?',
                        (json.dumps(rows), host))


    # -- leases, failover records, restart counts, journal --------------------
    def take_lease(self, name: str, job: str, wait: float = 0.0) -> Lease | None:
        import fcntl
        fd = _open_lock(_lease_path(self.path, name), create=True)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.05)
        now = time.time()
        self.execute('INSERT OR REPLACE INTO lease VALUES (?,?,?,?,?)',
                        (name, job, os.getpid(), now, now + 3600))
        return Lease(self, name, job, fd)


    def lease_held(self, name: str) -> bool:
        """Is the lease taken right now (by any process or thread)?"""
        import fcntl
        try:
            fd = _open_lock(_lease_path(self.path, name), create=False)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def lease_holder(self, name: str) -> str | None:
        row = self.one('SELECT job FROM lease WHERE dom0 = ?', (name,))
        return row[0] if row else None


    def start_failover(self, job: str, dom0: str) -> None:
        self.execute('INSERT OR REPLACE INTO failover VALUES (?,?,?,NULL,NULL)',
                        (job, dom0, time.time()))


    def finish_failover(self, job: str, result: str) -> None:
        self.execute('UPDATE failover SET finished = ?, result = ? WHERE job = ?',
                        (time.time(), result, job))


    def last_failover(self, dom0: str) -> dict | None:
        row = self.one(
            'SELECT job, dom0, started, finished, result FROM failover WHERE dom0 = ? '
            'AND finished IS NOT NULL ORDER BY finished DESC LIMIT 1', (dom0,))
        return dict(zip(('job', 'dom0', 'started', 'finished', 'result'), row)) if row else None


    def add_restart(self, domu: str) -> None:
        self.execute('INSERT INTO restart VALUES (?,?)', (domu, time.time()))


    def restarts_since(self, domu: str, since: float) -> int:
        return self.one('SELECT count(*) FROM restart WHERE domu = ? AND at >= ?',
                        (domu, since))[0]


    def journal(self, step: str, message: str, level: str = 'info', job: str | None = None,
                 dom0: str | None = None, domu: str | None = None) -> None:
        self.execute('INSERT INTO journal (at, job, dom0, domu, step, level, message) '
                        'VALUES (?,?,?,?,?,?,?)',
                        (time.time(), job, dom0, domu, step, level, message))




    def journal_rows(self, job: str | None = None, since: float | None = None,
                      dom0: str | None = None) -> list[dict]:
        where, params = [], []
        for col, val, op in (('job', job, '='), ('at', since, '>='), ('dom0', dom0, '=')):
            if val is not None:
                where.append(f'{col} {op} ?')
                params.append(val)
        sql = 'SELECT * FROM journal' + (' WHERE ' + ' AND '.join(where) if where else '') \
            + ' ORDER BY id'
        return [dict(zip(JOURNAL_FIELDS, r)) for r in self.execute(sql, params)]

_ROW_STATES = ('running', 'blocked', 'paused', 'shutdown', 'crashed', 'dying', 'inactive')


def _listing(row) -> Listing:
    """A cached listing, checked: a corrupt row (not JSON, wrong types, an unknown
    state) is a StateDBError naming its host, never a traceback in whatever
    reads it.  check_xen_host rewrites the row at its next run."""
    host = row[0]
    try:
        domains = json.loads(row[3])
        if not isinstance(domains, list):
            raise ValueError('the domains are not a list')
        for d in domains:
            if not (isinstance(d, dict) and isinstance(d.get('name'), str)
                    and d.get('state') in _ROW_STATES
                    and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool)
                            for k in ('memory', 'vcpus'))
                    and (d.get('domid') is None or isinstance(d.get('domid'), int))
                    and isinstance(d.get('flags'), str)
                    and isinstance(d.get('cpu_time'), (int, float))):
                raise ValueError('a domain entry is malformed')
        taken_at = row[2]
        if not isinstance(taken_at, (int, float)) or taken_at != taken_at:
            raise ValueError('its time is not a number')
        for memory in row[4:6]:
            if memory is not None and not isinstance(memory, int):
                raise ValueError('its memory figures are not numbers')
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateDBError(f'the state database holds a corrupt cached listing of '
                           f'{_show(host)} ({exc}); check_xen_host rewrites it at its '
                           'next run of that host') from None
    return Listing(host, row[1], taken_at, domains, row[4], row[5])


class Lease:
    """A held lease on one dom0 (or "placement"): an flock plus a visible row.

    The flock is what excludes: the kernel drops it when the job dies, so a
    job killed halfway never blocks the next one.  The row says who holds it.
    """

    def __init__(self, db: 'StateDB', name: str, job: str, fd: int):
        self.db, self.name, self.job, self._fd = db, name, job, fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.db.execute('DELETE FROM lease WHERE dom0 = ? AND job = ?',
                           (self.name, self.job))
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _lease_path(db_path: str, name: str) -> str:
    """<db>.locks/<name>.lock; the directory made for its owner only and never
    followed through a symlink."""
    if not name or '/' in name or name.startswith('.') or '\0' in name:
        raise StateDBError(f'not a lease name: {_show(name)}')
    d = f'{db_path}.locks'
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDBError(f'cannot make the lock directory {_show(d)}: {_why(exc)}') from None
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StateDBError(f'the lock directory {_show(d)} is '
                           + ('a symbolic link: refusing to follow it' if stat.S_ISLNK(
                               st.st_mode) else 'not a directory'))
    return os.path.join(d, f'{name}.lock')


def _open_lock(path: str, create: bool) -> int:
    """An fd on a lock file: created 0600, never through a symlink."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDBError(f'the lock file {_show(path)} is a symbolic link: '
                               'refusing to follow it') from None
        raise StateDBError(f'cannot open the lock file {_show(path)}: {_why(exc)}') from None


def _safe_db_path(path: str, created: bool = True) -> None:
    """The database file (and SQLite's -wal, -shm and -journal beside it) is a
    regular file, not a symlink: SQLite would follow one and write someone
    else's file.  A new database is created here first, for its owner only
    (SQLite gives its -wal and -shm files the database's mode)."""
    directory = os.path.dirname(os.path.abspath(path))
    if created:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            why = (f'not a directory: {_show(directory)}' if os.path.exists(directory)
                   and not os.path.isdir(directory) else _why(exc))
            raise StateDBError(f'cannot open the state database {_show(path)}: {why}') \
                from None
    for p in (path, path + '-wal', path + '-shm', path + '-journal'):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StateDBError(f'cannot open the state database {_show(path)}: '
                               f'{_why(exc)}') from None
        if stat.S_ISLNK(st.st_mode):
            raise StateDBError(f'the state database {_show(p)} is a symbolic link: '
                               "refusing to open it (it could point at someone else's "
                               'file)')
        if not stat.S_ISREG(st.st_mode):
            raise StateDBError(f'the state database {_show(p)} is not a regular file')
    if created and not os.path.lexists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            _safe_db_path(path, created=False)      # made meanwhile: check it again
        except OSError as exc:
            raise StateDBError(f'cannot create the state database {_show(path)}: '
                               f'{_why(exc)}') from None


def _why(exc) -> str:
    return getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__


def _show(text: str) -> str:
    """A path for a one-line message (control characters escaped)."""
    text = str(text)
    return text if text.isprintable() else json.dumps(text)
