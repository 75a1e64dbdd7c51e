"""Run an argv on this machine (subprocess) or on a dom0 (SSH, paramiko).

One interface, two implementations, one `Result`.  Every call has a timeout.
Failures that mean "could not run it" raise a `RunnerError` subclass whose
message an operator can act on; a command that ran and failed is a `Result`
with a non-zero exit.

paramiko costs ~140 ms to import, and a local-mode check runs thousands of
times a day: it is imported only inside `SSHRunner.connect`.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections import namedtuple
from collections.abc import Sequence


# collections.namedtuple rather than typing.NamedTuple: importing `typing` costs
# every check about 2 ms, and a check runs thousands of times a day.
class Result(namedtuple('Result', 'exit out err')):
    """What a command did: exit status (int), stdout and stderr (str)."""
    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.exit == 0

    def reason(self) -> str:
        """The first non-empty line of stderr (or stdout), for a message."""
        for text in (self.err, self.out):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f'exit status {self.exit}'


class RunnerError(Exception):
    """Could not run the command at all; the message says why."""


class HostUnreachable(RunnerError):
    """Connection refused, no route, name does not resolve."""


class HostTimeout(RunnerError):
    """Connect, banner or authentication did not finish in time (host hung)."""


class AuthFailed(RunnerError):
    """The host refused our key."""


class HostKeyUnknown(RunnerError):
    """The host is not in known_hosts."""


class HostKeyChanged(RunnerError):
    """The host presented another key than known_hosts holds."""


class CommandTimeout(RunnerError):
    """The command started but did not finish in time."""


class CommandNotFound(RunnerError):
    """The executable does not exist (locally) or the shell said 127."""


class SSHOptions(namedtuple('SSHOptions',
                            'user port identity known_hosts accept_new_host_key sudo',
                            defaults=('root', 22, None, None, False, False))):
    """How to reach a dom0; parsed once from the command line or the inventory.
    identity and known_hosts are file paths (None: the SSH defaults)."""
    __slots__ = ()


class LocalRunner:
    """Runs argv lists with subprocess; never through a shell.

    Each command runs in its own session (process group).  Its output is read
    up to MAX_OUTPUT bytes a stream (the rest is drained and dropped), and the
    command is done at its exit plus at most EOF_GRACE seconds for the output:
    a daemon it left holding our pipes, a command still running at the end of
    its time, or at the end of the run's -t budget, is killed with its whole
    process group; nothing it started is left behind."""

    host = 'localhost'

    def __init__(self, sudo: bool = False, env: dict | None = None,
                 kill_group: bool = False):
        self.sudo = sudo
        self.env = env
        # kill the whole group at the end even after a clean exit (fence agents:
        # an ipmitool they left behind could power a host off later)
        self.kill_group = kill_group

    def run(self, argv: Sequence[str], timeout: float,
            input: str | None = None) -> Result:
        return self.run_many([argv], timeout, input)[0]

    def run_many(self, argvs: Sequence[Sequence[str]], timeout: float,
                 input: str | None = None, meanwhile=None) -> list[Result]:
        """Run several commands at once (e.g. `xl list` and `xl info`: a check
        then waits for the slower one, not for both); Results in order.  All
        must finish within `timeout` (and the run's -t budget); the first that
        cannot run raises.  `meanwhile()` is called once they have started: the
        caller's own work overlaps theirs."""
        from xenha import timing
        timeout = timing.bound(timeout)
        deadline = time.monotonic() + timeout
        started = []
        try:
            for argv in argvs:
                argv = ['sudo', '-n', *argv] if self.sudo else list(argv)
                started.append(_Local(argv, self._start(argv, input), input))
            if meanwhile:
                meanwhile()
            _collect_local(started, deadline, timeout)
            return [c.result() for c in started]
        finally:
            for c in started:
                c.end(always=self.kill_group)

    def _start(self, argv: list[str], input: str | None):
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                start_new_session=True)
        except FileNotFoundError:
            raise CommandNotFound(f'{argv[0]}: command not found') from None
        except PermissionError:
            raise CommandNotFound(f'{argv[0]}: permission denied') from None
        except OSError as exc:
            raise CommandNotFound(f'{argv[0]}: cannot run: {exc.strerror}') from None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


MAX_OUTPUT = 1024 * 1024   # bytes kept of a command's stdout (and of its stderr)


def _keep(buf: bytearray, data: bytes) -> None:
    """Append `data` to `buf` up to MAX_OUTPUT bytes; the rest is dropped."""
    if len(buf) < MAX_OUTPUT:
        buf += data[:MAX_OUTPUT - len(buf)]


def _decode(data: bytes) -> str:
    """Output as text: not UTF-8 is not a reason to fail, a parser says what it
    cannot read (U+FFFD where a byte was wrong)."""
    return data.decode('utf-8', errors='replace')


class _Local:
    """One started command: its pipes, what it said, when it exited."""

    def __init__(self, argv, proc, input: str | None):
        self.argv, self.proc = argv, proc
        self.out, self.err = bytearray(), bytearray()
        self.exited_at = None
        self.lingering = False     # something still held the pipes after the exit
        self.timed_out = False
        self.stdin = (input or '').encode() if input is not None else None

    def result(self) -> Result:
        return Result(self.proc.returncode, _decode(self.out), _decode(self.err))

    def end(self, always: bool = False) -> None:
        """Kill the process group if anything of it may still run; reap."""
        p = self.proc
        if always or p.poll() is None or self.lingering or self.timed_out:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _collect_local(cmds: list, deadline: float, timeout: float) -> None:
    import selectors
    sel = selectors.DefaultSelector()
    try:
        for c in cmds:
            for f, buf in ((c.proc.stdout, c.out), (c.proc.stderr, c.err)):
                os.set_blocking(f.fileno(), False)
                sel.register(f, selectors.EVENT_READ, (c, buf))
            if c.stdin is not None:
                os.set_blocking(c.proc.stdin.fileno(), False)
                sel.register(c.proc.stdin, selectors.EVENT_WRITE, (c, None))
        while True:
            now = time.monotonic()
            reading = {key.data[0] for key in sel.get_map().values()
                       if key.data[1] is not None}
            unfinished = []
            for c in cmds:
                if c.exited_at is None and c.proc.poll() is not None:
                    c.exited_at = now
                if c.exited_at is None:
                    unfinished.append(c)
                elif c in reading and now - c.exited_at > EOF_GRACE:
                    # exited, its output still open: what it started holds it
                    c.lingering = True
                    for key in list(sel.get_map().values()):
                        if key.data[0] is c:
                            sel.unregister(key.fileobj)
                elif c in reading:
                    unfinished.append(c)
            if not unfinished:
                return
            if now > deadline:
                for c in unfinished:
                    c.timed_out = True
                raise CommandTimeout(f'{shlex.join(unfinished[0].argv)} did not finish '
                                     f'within {timeout:g}s')
            if not sel.get_map():
                # every pipe closed: only the exits are left to wait for
                try:
                    unfinished[0].proc.wait(timeout=max(deadline - now, 0.001))
                except subprocess.TimeoutExpired:
                    pass
                continue
            for key, events in sel.select(min(0.05, max(deadline - now, 0.001))):
                c, buf = key.data
                if buf is None:                     # stdin: write what is left
                    try:
                        n = os.write(key.fileobj.fileno(), c.stdin)
                        c.stdin = c.stdin[n:]
                    except BlockingIOError:
                        continue                # the pipe is full: write the rest later
                    except OSError:             # it exited, or closed its stdin
                        c.stdin = b''
                    if not c.stdin:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    continue
                try:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                _keep(buf, chunk)
    finally:
        sel.close()


def _split_timeouts(total: float) -> tuple[float, float]:
    """Connect/banner/auth timeout and command timeout, each below `total`.

    The plugin's -t fires SIGALRM at `total`; our own timeouts must fire
    first so the message names what hung.  Connecting gets 40% of the budget
    however large: a slow sshd (an emulated dom0's banner took 16 s) is
    given time by a larger -t, not cut off at a fixed ceiling.
    """
    budget = max(total - 0.5, 0.5) if total > 1 else total * 0.8
    connect = max(budget * 0.4, 0.2)
    return connect, budget


EOF_GRACE = 1.0     # seconds a finished command's output may trail its exit status
SESSIONS = 10       # sessions at once on one connection: OpenSSH's MaxSessions default


class SSHRunner:
    """Runs argv lists on a host over SSH with key auth and verified host keys."""

    def __init__(self, host: str, opts: SSHOptions = SSHOptions(),
                 timeout: float = 10.0):
        self.host = host
        self.opts = opts
        self.timeout = timeout
        self._client = None
        import threading
        self._connecting = threading.Lock()
        # sessions open at once on the connection: sshd refuses more than its
        # MaxSessions (10 by default, fewer on hardened hosts); the limit drops
        # to what the server took when it refuses one
        self._slots = threading.Condition()
        self._opening = threading.Lock()
        self._in_use = 0
        self.max_sessions = SESSIONS

    # -- connection ------------------------------------------------------
    def _where(self) -> str:
        return self.host if self.opts.port == 22 else f'{self.host}:{self.opts.port}'

    def connect(self) -> None:
        with self._connecting:   # one connection, shared by the job's threads
            if self._client is None:
                self._connect()

    def _connect(self) -> None:
        import logging
        import socket

        import paramiko  # lazy: local mode never pays for it

        from xenha import timing
        client = paramiko.SSHClient()
        known = self.opts.known_hosts or os.path.expanduser('~/.ssh/known_hosts')
        self._load_known_hosts(client, known)
        if self.opts.accept_new_host_key:
            client.set_missing_host_key_policy(_AcceptNewPolicy(known))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connect_t, _ = _split_timeouts(self.timeout)
        connect_t = timing.bound(connect_t)          # never past the run's -t
        where = self._where()
        # paramiko logs transport errors through logging; without a handler
        # Python prints them on stderr next to our one-line answer
        logging.getLogger('paramiko').addHandler(logging.NullHandler())
        logging.getLogger('paramiko').propagate = False
        if self.opts.identity:
            _check_key(self.opts.identity)
        started = time.monotonic()
        banner = b''
        try:
            # our own socket, for TCP_NODELAY: without it each command's small
            # packets wait out the peer's delayed ACK (~40 ms a command; OpenSSH
            # sets it too)
            sock = socket.create_connection((self.host, self.opts.port), timeout=connect_t)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            banner = _peek_banner(sock, max(connect_t - (time.monotonic() - started), 0.05))
            if banner == b'':
                sock.close()
                raise HostUnreachable(f'SSH to {where}: the server closed the connection '
                                      'before its SSH banner')
            if banner is not None and not _ssh_banner(banner):
                sock.close()
                raise HostUnreachable(f'SSH to {where}: not an SSH server (its banner is '
                                      f'{_printable(banner)})')
            left = max(connect_t - (time.monotonic() - started), 0.05)
            client.connect(
                self.host, port=self.opts.port, username=self.opts.user,
                key_filename=self.opts.identity, look_for_keys=self.opts.identity is None,
                allow_agent=False, timeout=left, banner_timeout=left,
                auth_timeout=left, channel_timeout=left, sock=sock)
        except RunnerError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(
                f'host key for {where} has CHANGED (got {exc.key.get_name()} '
                f'{exc.key.get_fingerprint().hex()}): possible man-in-the-middle; '
                f'if the host was reinstalled, remove its old entry from {known}'
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthFailed(f'SSH key {self.opts.identity or "(default)"} is encrypted: '
                             'xenha needs a key without a passphrase') from None
        except paramiko.AuthenticationException:
            client.close()
            raise AuthFailed(
                f'SSH authentication as {self.opts.user}@{where} failed '
                f'(key {self.opts.identity or "default"} refused)') from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise HostUnreachable(
                f'SSH to {where}: connection refused (host down?)') from None
        except paramiko.SSHException as exc:
            client.close()
            msg = str(exc)
            if time.monotonic() - started >= connect_t * 0.9:
                raise HostTimeout(
                    f'SSH to {where} timed out after {connect_t:g}s '
                    f'waiting for the server (host hung?)') from None
            if 'not found in known_hosts' in msg:
                raise HostKeyUnknown(
                    f'host key for {where} is unknown: add it to {known} '
                    f'(ssh-keyscan -p {self.opts.port} {self.host} >> {known}) '
                    f'or pass --ssh-accept-new-host-key') from None
            if 'Error reading SSH protocol banner' in msg or 'Indecipherable' in msg:
                raise HostUnreachable(
                    f'SSH to {where}: garbage instead of an SSH banner'
                    + (f' ({_printable(banner)})' if banner else '')) from None
            if 'banner' in msg.lower() or 'timed out' in msg.lower():
                raise HostTimeout(
                    f'SSH to {where} timed out after {connect_t:g}s '
                    f'waiting for the server ({msg})') from None
            raise HostUnreachable(f'SSH to {where} failed: {msg}') from None
        except socket.timeout:
            client.close()
            raise HostTimeout(
                f'SSH to {where} timed out after {connect_t:g}s (host hung?)'
            ) from None
        except ConnectionRefusedError:
            client.close()
            raise HostUnreachable(
                f'SSH to {where}: connection refused (host down?)') from None
        except (OSError, EOFError) as exc:
            client.close()
            if isinstance(exc, socket.gaierror):
                raise HostUnreachable(f'cannot resolve {self.host}: {exc}') from None
            raise HostUnreachable(f'SSH to {where}: {getattr(exc, "strerror", None) or exc or type(exc).__name__}') from None
        except Exception as exc:  # noqa: BLE001 - paramiko and cryptography raise many kinds
            client.close()
            raise HostUnreachable(f'SSH to {where} failed: {type(exc).__name__}: '
                                  f'{exc}') from None
        self._client = client

    def _load_known_hosts(self, client, known: str) -> None:
        """known_hosts, read with bounds: a missing file is an error unless new
        keys may be recorded (then it starts empty); garbage is an error."""
        from xenha import files
        try:
            files.read_bytes(known, files.TEXT_LIMIT)   # a regular file, not huge
        except FileNotFoundError:
            if self.opts.accept_new_host_key:
                return                                  # the first key makes it
            if not self.opts.known_hosts:
                client.load_system_host_keys()
                return
            raise HostKeyUnknown(f'known_hosts file {known} does not exist') from None
        except OSError as exc:
            raise HostKeyUnknown(f'cannot read known_hosts {known}: '
                                 f'{exc.strerror or exc}') from None
        try:
            client.load_host_keys(known)
        except UnicodeDecodeError:
            raise HostKeyUnknown(f'cannot read known_hosts {known}: not text '
                                 '(not UTF-8)') from None
        except Exception as exc:  # noqa: BLE001 - InvalidHostKey, SSHException, ...
            line = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ''
            raise HostKeyUnknown(f'cannot read known_hosts {known}: a line is not a host '
                                 f'key ({_printable(line.encode()[:60]) if line else exc})'
                                 ) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- commands --------------------------------------------------------
    def command_line(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        if self.opts.sudo:
            argv = ['sudo', '-n', *argv]
        return shlex.join(argv)

    def run(self, argv: Sequence[str], timeout: float | None = None,
            input: str | None = None) -> Result:
        return self.run_many([argv], timeout, input)[0]

    def run_many(self, argvs: Sequence[Sequence[str]], timeout: float | None = None,
                 input: str | None = None, meanwhile=None) -> list[Result]:
        """Several commands at once, one session each on the one connection;
        Results in order, all within `timeout`; `meanwhile()` as LocalRunner's.
        More commands than the server's sessions allow run in turns.  The
        run's -t budget bounds `timeout` too."""
        from xenha import timing
        requested = self.timeout if timeout is None else timeout
        timeout = timing.bound(requested)
        if timeout < 0.9 * requested:       # said as cut: the budget decided
            requested = round(timeout, 1)
        started = time.monotonic()
        self.connect()
        deadline = started + max(timeout, 0.1)
        todo = list(argvs)
        results: list[Result] = []
        while todo:
            batch = []
            try:
                for argv in todo:
                    # the first of a turn waits for a session; the others only
                    # take free ones (never wait on our own sessions)
                    item = self._open(argv, deadline, requested, wait=not batch)
                    if item is None:
                        break
                    batch.append(item)
                    if input is not None:
                        item[2].sendall(input.encode())
                    item[2].shutdown_write()
                todo = todo[len(batch):]
                if meanwhile:
                    meanwhile()
                    meanwhile = None
                self._collect(batch, deadline, requested)
                results += [self._result(*item) for item in batch]
            except RunnerError:
                raise
            except (EOFError, OSError) as exc:
                self.close()
                raise HostUnreachable(f'connection to {self._where()} lost: '
                                      f'{getattr(exc, "strerror", None) or exc or type(exc).__name__}'
                                      ) from None
            except Exception as exc:  # noqa: BLE001 - paramiko.SSHException and kin
                self.close()
                raise HostUnreachable(f'connection to {self._where()} failed: '
                                      f'{type(exc).__name__}: {exc}') from None
            finally:
                self._release(len(batch))
        return results

    def _open(self, argv, deadline: float, timeout: float, wait: bool):
        """A session running `argv`: (argv, line, channel, out, err); None when
        `wait` is false and no session is free."""
        import paramiko     # imported by connect() already: a dict lookup
        line = self.command_line(argv)
        refused = 0
        while True:
            with self._slots:
                while self._in_use >= self.max_sessions:
                    if not wait:
                        return None
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise CommandTimeout(f'{line} on {self._where()}: no free SSH '
                                             f'session within {timeout:g}s')
                    self._slots.wait(left)
                self._in_use += 1
            client = self._client
            if client is None:      # closed by another thread's failure
                self._release(1)
                raise HostUnreachable(f'connection to {self._where()} lost before {line}')
            try:
                # one open at a time: paramiko hands a refusal to whichever
                # thread asks first, so concurrent opens lose its reason
                with self._opening:
                    chan = client.get_transport().open_session(
                        timeout=max(deadline - time.monotonic(), 0.1))
                chan.exec_command(line)
                return argv, line, chan, bytearray(), bytearray()
            except paramiko.ChannelException as exc:
                with self._slots:
                    self._in_use -= 1
                    self._slots.notify_all()
                    # a refused session while others of ours run (or have just
                    # ended: sshd frees a session a moment after we close it) is
                    # sshd's MaxSessions (OpenSSH says "connect failed", others
                    # "administratively prohibited"): wait for one of ours to end
                    if exc.code in (1, 2) and (self._in_use > 0 or refused < 20):
                        refused += 1
                        self.max_sessions = max(min(self.max_sessions, self._in_use), 1)
                        if not self._in_use:
                            self._slots.wait(0.05)
                        continue
                raise HostUnreachable(f'{self._where()}: cannot open a session: '
                                      f'{exc.text or exc}') from None
            except Exception as exc:  # noqa: BLE001 - paramiko raises many kinds
                self._release(1)
                self.close()
                raise HostTimeout(
                    f'{self._where()}: cannot open a session: {exc}') from None

    def _release(self, n: int) -> None:
        if n:
            with self._slots:
                self._in_use -= n
                self._slots.notify_all()

    def _collect(self, running: list, deadline: float, timeout: float) -> None:
        """Read every session of `running` to its end (or raise at `deadline`)."""
        pending = list(running)
        status_at: dict[int, float] = {}
        while pending:
            progressed = False
            for item in list(pending):
                _, line, chan, out, err = item
                while chan.recv_ready():
                    _keep(out, chan.recv(65536))
                    progressed = True
                while chan.recv_stderr_ready():
                    _keep(err, chan.recv_stderr(65536))
                    progressed = True
                # done at EOF, not at the exit status: sshd may send the status
                # before the last of the output (seen with real xl info); but a
                # daemon the command left holding its stdout must not keep us:
                # EOF is awaited for at most EOF_GRACE seconds after the status
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    status_at.setdefault(id(chan), time.monotonic())
                    if chan.eof_received or chan.closed or \
                            time.monotonic() - status_at[id(chan)] > EOF_GRACE:
                        pending.remove(item)
            if not pending:
                break
            if time.monotonic() > deadline:
                # only these sessions: other threads' commands share the connection
                for item in running:
                    item[2].close()
                raise CommandTimeout(f'{pending[0][1]} on {self._where()} '
                                     f'did not finish within {timeout:g}s')
            if not progressed:
                # woken at once by an exit status; output and EOF polled every few ms
                event = pending[0][2].status_event
                event.wait(0.005) if not event.is_set() else time.sleep(0.002)

    def _result(self, argv, line, chan, out, err) -> Result:
        status = chan.recv_exit_status()
        chan.close()
        if status == -1:   # the channel closed without an exit status
            self.close()
            raise HostUnreachable(f'connection to {self._where()} lost during {line}')
        if status == 127 and not out:
            raise CommandNotFound(
                f'{argv[0]}: command not found on {self._where()}')
        return Result(status, _decode(out), _decode(err))


def _peek_banner(sock, timeout: float) -> bytes | None:
    """The first bytes the server sends, left in the socket for paramiko:
    b'' if it closed the connection, None if it sent nothing in `timeout`."""
    import socket
    sock.settimeout(timeout)
    try:
        return sock.recv(256, socket.MSG_PEEK)
    except socket.timeout:
        return None
    finally:
        sock.settimeout(None)


def _ssh_banner(data: bytes) -> bool:
    """Could this be the start of an SSH server's identification?"""
    return data.startswith(b'SSH-') or b'SSH-'.startswith(data) or b'\nSSH-' in data


def _printable(data: bytes, limit: int = 60) -> str:
    text = data[:limit].decode('ascii', errors='replace').rstrip('\r\n')
    return repr(text + ('…' if len(data) > limit else ''))


def _check_key(path: str) -> None:
    """The SSH private key is readable, small, and one paramiko can use without a
    passphrase: else AuthFailed saying which (not "refused" by the host)."""
    import paramiko
    from xenha import files
    try:
        files.read_bytes(path, files.SECRET_LIMIT)
    except OSError as exc:
        raise AuthFailed(f'cannot read SSH key {path}: {exc.strerror or exc}') from None
    if not hasattr(paramiko.PKey, 'from_path'):          # paramiko < 3.2
        return
    try:
        paramiko.PKey.from_path(path)
    except Exception as exc:  # noqa: BLE001 - ValueError, SSHException, UnknownKeyType
        # an encrypted key: PasswordRequiredException, or cryptography's TypeError
        if isinstance(exc, paramiko.PasswordRequiredException) or (
                isinstance(exc, TypeError) and re.search(r'encrypted|password',
                                                          str(exc), re.I)):
            raise AuthFailed(f'SSH key {path} is encrypted: xenha needs a key without a '
                             'passphrase') from None
        raise AuthFailed(f'SSH key {path} is not a private key xenha can use '
                         f'({type(exc).__name__})') from None


class _AcceptNewPolicy:
    """Trust-on-first-use, only behind the explicit --ssh-accept-new-host-key.

    Like OpenSSH's StrictHostKeyChecking=accept-new: an unknown host is added
    to known_hosts; a *changed* key is still rejected by paramiko before any
    policy is asked.
    """

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        from xenha import files
        # never through a symlink; a new file for its owner only
        fd = files.open_append(self.path, 0o600)
        try:
            os.write(fd, f'{hostname} {key.get_name()} {key.get_base64()}\n'.encode())
        finally:
            os.close(fd)


def make_runner(host: str | None, opts: SSHOptions = SSHOptions(),
                timeout: float = 10.0):
    """No host (or 'localhost' with no SSH wanted) = local mode."""
    if not host:
        return LocalRunner(sudo=opts.sudo)
    return SSHRunner(host, opts, timeout)
