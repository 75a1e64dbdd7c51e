"""The lab's bookkeeping: its own address block, directory, processes and namespaces.

Every lab instance claims a block number (an atomic mkdir under
``/run/xenha-labs``), which gives it

* loopback addresses ``127.<20+N//256>.<N%256>.<host>``,
* a network-namespace / interface prefix ``xh<N>``,
* a private tgtd control port and other small integers derived from N,

and records in ``<dir>/lab.json`` every process it spawned, every namespace it
made and every teardown command it owes.  ``down()`` (or ``xenha lab down``
from another process) replays that record, so nothing outlives the lab, even
when the process that brought it up died.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLAIMS = Path(os.environ.get('XENHA_LAB_CLAIMS', '/run/xenha-labs'))
MAX_BLOCKS = 2000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    pid: int
    argv: list
    netns: str | None = None
    log: str | None = None


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _exit_cleanly_on_termination() -> None:
    """SIGTERM/SIGHUP (timeout(1), a closed terminal, kill) become SystemExit, so
    the owner's `finally: lab.down()` runs instead of leaving the lab's daemons
    behind.  Only where nobody set a handler, and only from the main thread."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)


class Lab:
    """One lab instance.  Use as a context manager, or call `down()`."""

    def __init__(self, directory: str | os.PathLike | None = None,
                 block: int | None = None):
        CLAIMS.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[str] = []
        self.teardown: list[list[str]] = []   # argv lists, run in reverse order
        self.files: list[str] = []            # paths outside dir to remove
        self.info: dict = {}                  # component data (hosts, storage, …)
        # claim, stale check and the first lab.json happen under one lock, so a
        # claim being made is never mistaken for a stale one by another lab
        with open(CLAIMS / '.lock', 'a+') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.block = self._claim(block)
            if directory is None:
                directory = tempfile.mkdtemp(prefix=f'xenha-lab{self.block}-')
            self.dir = Path(directory).resolve()
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / 'procs').mkdir(exist_ok=True)
            self.save()
            (CLAIMS / str(self.block) / 'dir').write_text(str(self.dir))
        _exit_cleanly_on_termination()


    # -- identity ------------------------------------------------------------
    @staticmethod
    def _claim(block: int | None) -> int:
        candidates = [block] if block is not None else range(1, MAX_BLOCKS)
        for n in candidates:
            path = CLAIMS / str(n)
            try:
                path.mkdir()
                return n
            except FileExistsError:
                if Lab._stale(path):
                    try:
                        old = (path / 'dir').read_text()
                    except OSError:
                        old = None
                    shutil.rmtree(path, ignore_errors=True)
                    try:
                        path.mkdir()
                    except FileExistsError:
                        continue
                    _sweep(n, old)
                    return n
        raise RuntimeError(f'no free lab block under {CLAIMS}')

    @staticmethod
    def _stale(claim: Path) -> bool:
        """A claim whose lab directory is gone (or that was never finished) is stale.

        Called under the claims lock, so no claim is half-made right now.
        """
        try:
            d = Path((claim / 'dir').read_text())
        except (FileNotFoundError, NotADirectoryError):
            return True
        return not d.is_absolute() or not (d / 'lab.json').exists()

    def addr(self, host: int) -> str:
        """Loopback address number `host` (1..254) of this lab."""
        if not 1 <= host <= 254:
            raise ValueError(host)
        return f'127.{20 + self.block // 256}.{self.block % 256}.{host}'

    @property
    def prefix(self) -> str:
        """Prefix for namespace and interface names (kept short: IFNAMSIZ 15)."""
        return f'xh{self.block}'

    def port(self, offset: int) -> int:
        """A small per-lab integer (e.g. tgtd control port), unique across labs."""
        return 100 + self.block * 10 + offset

    # -- persistence ---------------------------------------------------------
    def save(self) -> None:
        data = {
            'block': self.block, 'dir': str(self.dir),
            'namespaces': self.namespaces, 'teardown': self.teardown,
            'files': self.files, 'info': self.info,
        }
        tmp = self.dir / 'lab.json.tmp'
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.dir / 'lab.json')

    @classmethod
    def load(cls, directory: str | os.PathLike) -> 'Lab':
        data = json.loads((Path(directory) / 'lab.json').read_text())
        lab = cls.__new__(cls)
        lab.block = data['block']
        lab.dir = Path(data['dir'])
        lab.namespaces = data['namespaces']
        lab.teardown = data['teardown']
        lab.files = data['files']
        lab.info = data['info']
        return lab

    # -- namespaces and processes -------------------------------------------
    # Each tracked process is one file under procs/, so that several processes
    # (the test, a BMC's power program, `xenha lab heal`) can start and stop
    # processes of the same lab without overwriting each other's records.
    @property
    def procs(self) -> dict[str, Proc]:
        out = {}
        for f in sorted((self.dir / 'procs').glob('*.json')):
            try:
                out[f.stem] = Proc(**json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _record(self, proc: Proc) -> None:
        tmp = self.dir / 'procs' / f'.{proc.name}.tmp'
        tmp.write_text(json.dumps(vars(proc)))
        tmp.replace(self.dir / 'procs' / f'{proc.name}.json')

    def _forget(self, name: str) -> Proc | None:
        proc = self.procs.get(name)
        _unlink(str(self.dir / 'procs' / f'{name}.json'))
        return proc

    def netns(self, short: str) -> str:
        name = f'{self.prefix}-{short}'
        if name not in self.namespaces:
            subprocess.run(['ip', 'netns', 'add', name], check=True)
            self.namespaces.append(name)
            self.save()
        return name

    def spawn(self, name: str, argv: list[str], *, netns: str | None = None,
              env: dict | None = None, cwd: str | None = None) -> Proc:
        """Start a tracked process in its own session; output goes to a log."""
        if self.alive(name):
            raise RuntimeError(f'{name} already runs (pid {self.procs[name].pid})')
        log = self.dir / 'logs' / f'{name}.log'
        log.parent.mkdir(exist_ok=True)
        full = list(argv)
        if netns:
            full = ['ip', 'netns', 'exec', netns, *full]
        with open(log, 'ab') as fh:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=env, cwd=cwd)
        proc = Proc(name, p.pid, list(argv), netns, str(log))
        self._record(proc)
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return bool(proc) and _alive(proc.pid)

    def stopped(self, name: str) -> bool:
        """The tracked process is stopped (SIGSTOP: a hung host)."""
        proc = self.procs.get(name)
        try:
            with open(f'/proc/{proc.pid}/stat') as fh:
                return fh.read().rsplit(')', 1)[1].split()[0] == 'T'
        except (AttributeError, OSError, IndexError):
            return False

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is None:       # not running: nothing to signal
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, name: str, timeout: float = 3.0) -> None:
        """SIGCONT (a hung process cannot die otherwise), SIGTERM, then SIGKILL."""
        proc = self._forget(name)
        if proc is not None:
            _kill_group(proc.pid, timeout)

    def wait_port(self, host: str, port: int, timeout: float = 5.0) -> None:
        import socket
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'nothing listens on {host}:{port} '
                                       f'after {timeout:g}s') from None
                time.sleep(0.02)

    # -- teardown ------------------------------------------------------------
    def down(self) -> list[str]:
        """Undo everything; returns the problems met (never raises)."""
        problems = []
        for argv in reversed(self.teardown):
            try:
                subprocess.run(argv, capture_output=True, timeout=10)
            except Exception as exc:  # noqa: BLE001
                problems.append(f'{argv[0]}: {exc}')
        for name in self.procs:
            self.stop(name)
        for ns in reversed(self.namespaces):
            r = subprocess.run(['ip', 'netns', 'delete', ns], capture_output=True)
            if r.returncode and b'No such file' not in r.stderr:
                problems.append(f'netns {ns}: {r.stderr.decode().strip()}')
        self.namespaces = []
        for f in self.files:
            shutil.rmtree(f, ignore_errors=True) if os.path.isdir(f) \
                else _unlink(f)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(CLAIMS / str(self.block), ignore_errors=True)
        return problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()


def _sweep(block: int, old_dir: str | None) -> None:
    """What a lab of `block` left when its directory was deleted under it
    (so no `down()` could replay its record): the processes still writing to
    logs in that directory, and the namespaces named with the block's prefix
    (with what runs in them).  A new lab then starts on a clean block."""
    pids = []
    logs = f'{old_dir}/logs/' if old_dir else None
    for entry in os.listdir('/proc'):
        if logs and entry.isdigit():
            try:
                if os.readlink(f'/proc/{entry}/fd/1').startswith(logs):
                    pids.append(int(entry))
            except OSError:
                pass
    r = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True)
    namespaces = [line.split()[0] for line in r.stdout.splitlines()
                  if line.startswith(f'xh{block}-')]
    for ns in namespaces:
        r = subprocess.run(['ip', 'netns', 'pids', ns], capture_output=True, text=True)
        pids += [int(p) for p in r.stdout.split() if p.isdigit()]
    for pid in pids:
        _kill_group(pid, 1.0)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for ns in namespaces:
        subprocess.run(['ip', 'netns', 'delete', ns], capture_output=True)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd's per-connection children call setsid,
    so they leave its process group: a host's power-off must find them too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as fh:
                ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_group(pid: int, timeout: float) -> None:
    for child in descendants(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(100):
        _reap(pid)
        if not _alive(pid):
            break
        time.sleep(0.01)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
