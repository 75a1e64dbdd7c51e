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
import shlex
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
    """Runs argv lists with subprocess; never through a shell."""

    host = 'localhost'

    def __init__(self, sudo: bool = False, env: dict | None = None):
        self.sudo = sudo
        self.env = env

    def run(self, argv: Sequence[str], timeout: float,
            input: str | None = None) -> Result:
        return self.run_many([argv], timeout, input)[0]

    def run_many(self, argvs: Sequence[Sequence[str]], timeout: float,
                 input: str | None = None, meanwhile=None) -> list[Result]:
        """Run several commands at once (e.g. `xl list` and `xl info`: a check
        then waits for the slower one, not for both); Results in order.  All
        must finish within `timeout`; the first that cannot run raises.
        `meanwhile()` is called once they have started: the caller's own
        work overlaps theirs."""
        deadline = time.monotonic() + timeout
        started = []
        try:
            for argv in argvs:
                argv = ['sudo', '-n', *argv] if self.sudo else list(argv)
                started.append((argv, self._start(argv, input)))
            if meanwhile:
                meanwhile()
            return [self._finish(argv, proc, deadline, timeout, input)
                    for argv, proc in started]
        finally:
            for _, proc in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _start(self, argv: list[str], input: str | None):
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        except FileNotFoundError:
            raise CommandNotFound(f'{argv[0]}: command not found') from None
        except PermissionError:
            raise CommandNotFound(f'{argv[0]}: permission denied') from None

    @staticmethod
    def _finish(argv, proc, deadline: float, timeout: float, input: str | None) -> Result:
        try:
            out, err = proc.communicate(input, timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            raise CommandTimeout(
                f'{shlex.join(argv)} did not finish within {timeout:g}s') from None
        return Result(proc.returncode, out, err)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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

        client = paramiko.SSHClient()
        known = self.opts.known_hosts or os.path.expanduser('~/.ssh/known_hosts')
        try:
            if self.opts.known_hosts or os.path.exists(known):
                client.load_host_keys(known)
            else:
                client.load_system_host_keys()
        except FileNotFoundError:
            raise HostKeyUnknown(
                f'known_hosts file {known} does not exist') from None
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyUnknown(f'cannot read known_hosts {known}: {exc}') from None
        if self.opts.accept_new_host_key:
            client.set_missing_host_key_policy(_AcceptNewPolicy(known))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connect_t, _ = _split_timeouts(self.timeout)
        where = self._where()
        # paramiko logs transport errors through logging; without a handler
        # Python prints them on stderr next to our one-line answer
        logging.getLogger('paramiko').addHandler(logging.NullHandler())
        logging.getLogger('paramiko').propagate = False
        if self.opts.identity and not os.access(self.opts.identity, os.R_OK):
            raise AuthFailed(f'cannot read SSH key {self.opts.identity}')
        started = time.monotonic()
        try:
            # our own socket, for TCP_NODELAY: without it each command's small
            # packets wait out the peer's delayed ACK (~40 ms a command; OpenSSH
            # sets it too)
            sock = socket.create_connection((self.host, self.opts.port), timeout=connect_t)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                self.host, port=self.opts.port, username=self.opts.user,
                key_filename=self.opts.identity, look_for_keys=self.opts.identity is None,
                allow_agent=False, timeout=connect_t, banner_timeout=connect_t,
                auth_timeout=connect_t, channel_timeout=connect_t, sock=sock)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(
                f'host key for {where} has CHANGED (got {exc.key.get_name()} '
                f'{exc.key.get_fingerprint().hex()}): possible man-in-the-middle; '
                f'if the host was reinstalled, remove its old entry from {known}'
            ) from None
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
            raise HostUnreachable(f'SSH to {where}: {exc.strerror or exc}') from None
        self._client = client

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
        More commands than the server's sessions allow run in turns."""
        timeout = self.timeout if timeout is None else timeout
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
                    item = self._open(argv, deadline, timeout, wait=not batch)
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
                self._collect(batch, deadline, timeout)
                results += [self._result(*item) for item in batch]
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
                    out += chan.recv(65536)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
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
        return Result(status, out.decode(errors='replace'),
                      err.decode(errors='replace'))


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
        with open(self.path, 'a', encoding='ascii') as fh:
            fh.write(f'{hostname} {key.get_name()} {key.get_base64()}\n')


def make_runner(host: str | None, opts: SSHOptions = SSHOptions(),
                timeout: float = 10.0):
    """No host (or 'localhost' with no SSH wanted) = local mode."""
    if not host:
        return LocalRunner(sudo=opts.sudo)
    return SSHRunner(host, opts, timeout)
