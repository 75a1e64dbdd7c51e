"""Fencing: make sure a failed dom0 is really off before its guests start elsewhere.

Each dom0 has a chain of fence methods (from the inventory: objects with
``method``, ``agent``, ``params``, ``password_file``, ``timeout``), tried in
order; the first *confirmed* success wins.  If none succeeds, the failover
engine must not start anything ("fencing failed: not starting anything").

``agent``
    Any standard fence agent (fence_ipmilan, fence_ilo, fence_drac5, …), run on
    this node through the fence-agents interface: ``key=value`` lines on stdin
    (the params, ``password=`` read from password_file at fencing time,
    ``action=off``), then confirmed by ``action=status``.  Conventions of
    fence-agents: exit 0 = success (status: power on), 2 = status off,
    1 = failure with an ``ERROR: …`` line on stderr.
``ssh``
    ``xl destroy`` every guest of a dom0 that still answers SSH, then confirm
    only Domain-0 is left.  NOT ENOUGH FOR PRODUCTION: the dom0 itself keeps
    running, and a host that was hung (not dead) may resume and write to shared
    disks again; Pacemaker says the same of its ssh agents.  Use it behind a
    power method, or where a wrong guess costs nothing.
``storage``
    Storage fencing (xenha.storage.reservations): the failed dom0's write
    access is revoked on every target handed to `fence` (``storage=``, the
    targets of the guests that dom0 may run), in parallel: iSCSI by
    preempting its SCSI-3 reservation key, AoE by taking its SAN MAC out of
    vblade's reserve list, each confirmed by reading the target back.  It is
    confirmed only when every target is; the message names each target that
    could not be revoked (``FenceOutcome.unrevoked``).  The dom0 keeps running
    (a BMC that died with its chassis cannot say otherwise), but the disks
    refuse it: alone, or after an agent whose BMC may be gone.
``none``
    Only when written alone and explicitly: nothing is fenced, and the outcome
    says so (``FenceOutcome.skipped``), so the engine journals it every time.

Secrets.  The password never goes on a command line, into a message, or into
a log.  Traps found with the real tools (fence-agents 4.12.1):

* fence_ipmilan hands the password to ipmitool as ``-P PASSWORD``, readable
  by every local user in /proc/PID/cmdline (39 of 40 runs caught it here).
  For the fence_ipmilan family (the agents whose metadata has ipmitool_path:
  fence_idrac, fence_ilo3-5, fence_imm …, which Debian ships as copies) the
  password is therefore *not* given to the agent: its ``ipmitool_path`` points
  to a tiny shim (in a private temporary directory; a noexec TMPDIR is a clear
  failure, never a fallback) that drops ``-P`` and runs ipmitool with ``-E``,
  and the password travels in IPMITOOL_PASSWORD (a process's environment is
  readable by its owner only).
* The SNMP agents (fence_apc_snmp, fence_ifmib …: metadata has snmpget_path)
  hand the password to snmpget as ``-A``: they are refused with a password.
* With ``verbose``/``debug`` fence agents log what they send (the password,
  for telnet/ssh-driven devices), to syslog too: such params are refused.

Every agent call has a timeout and runs in its own process group, killed as a
whole on timeout: an orphaned ipmitool could power the host off (or on) later.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from xenha.runner import LocalRunner, Result, RunnerError

METHODS = ('agent', 'ssh', 'storage', 'none')
# options of the storage method (its FenceMethod.params)
STORAGE_PARAMS = ('initiator_name',)
# agents live in sbin, which a monitoring daemon's PATH often lacks
AGENT_DIRS = ('/usr/sbin', '/sbin', '/usr/local/sbin')
# we set these ourselves, or they would leak the password (see the docstring)
REFUSED_PARAMS = {
    'action': 'the action is chosen by xenha',
    'password': 'put the password in password_file', 'passwd': 'use password_file',
    'password_script': 'use password_file', 'passwd_script': 'use password_file',
    'verbose': 'agents log the password at this level',
    'verbose_level': 'agents log the password at this level',
    'debug': 'agents log the password at this level',
    'debug_file': 'agents log the password at this level',
    'hexadecimal_kg': 'a secret (the IPMI Kg key), and fence_ipmilan puts it in argv',
    # sudo resets the environment the ipmitool shim takes the password from
    'sudo': 'sudo drops the password from the environment (no root needed on a LAN)',
    'use_sudo': 'sudo drops the password from the environment (no root needed on a LAN)',
}
CONFIRM_WITHIN = 3.0   # seconds of status polls after an agent reported "off"

IPMITOOL_SHIM = '''#!{python} -I
# ipmitool for fence_ipmilan, password from IPMITOOL_PASSWORD (-E), not argv (-P)
import os, sys
args, rest = [], iter(sys.argv[1:])
for arg in rest:
    if arg == '-P':
        next(rest, None)
    else:
        args.append(arg)
os.execv({ipmitool!r}, [{ipmitool!r}, '-E', *args])
'''


@dataclass(frozen=True)
class Attempt:
    """One method tried: what, whether it was confirmed, why, how long;
    for storage, each target's reservations.Outcome."""
    method: str
    ok: bool
    message: str
    seconds: float
    targets: tuple = ()


@dataclass(frozen=True)
class StorageFence:
    """What the storage method needs from the engine: the targets to revoke
    the failed dom0 on, who it is on the SAN (reservations.Identity: its name
    gives its key, san_mac its AoE MAC), the dom0s that may still write
    (AoE: used when a reserve list was empty), and optionally who acts (default:
    the monitoring node, initiator name from the method's initiator_name) and
    how AoE sockets are opened (the lab opens them in its SAN namespace)."""
    targets: tuple
    victim: object
    keep: tuple = ()
    as_initiator: object = None
    opener: object = None


@dataclass(frozen=True)
class FenceOutcome:
    ok: bool              # confirmed fenced (or 'none' explicitly): may start guests
    method: str           # label of the method that succeeded, '' if none did
    message: str
    seconds: float
    attempts: tuple[Attempt, ...] = ()

    @property
    def skipped(self) -> bool:
        """Nothing was fenced because the inventory says fencing = none."""
        return self.ok and self.method == 'none'

    @property
    def revoked(self) -> tuple[str, ...]:
        """Targets a storage attempt revoked the dom0 on (and confirmed)."""
        return tuple(dict.fromkeys(o.target for a in self.attempts for o in a.targets
                                   if o.confirmed))

    @property
    def unrevoked(self) -> tuple[str, ...]:
        """Targets a storage attempt could not revoke the dom0 on."""
        done = set(self.revoked)
        return tuple(dict.fromkeys(o.target for a in self.attempts for o in a.targets
                                   if not o.confirmed and o.target not in done))


class FenceError(Exception):
    """The agent could not be run, or did not finish; the message says why."""


def label(method) -> str:
    if method.method == 'agent':
        return f'agent {os.path.basename(method.agent or "?")}'
    return method.method


# -- configuration -----------------------------------------------------------
def problems(method, check_files: bool = True) -> list[str]:
    """Mistakes in one method, for the inventory to report at load time.

    At fencing time (check_files=False) a world-readable password file is not
    a reason to leave a dead host unfenced; a missing one is reported when read.
    """
    out = []
    if method.method not in METHODS:
        return [f'unknown fence method {method.method!r} (one of {", ".join(METHODS)})']
    if method.method == 'storage':
        return [f'param {key!r} is not an option of the storage method (only '
                f'{", ".join(STORAGE_PARAMS)})' for key, _ in method.params
                if key not in STORAGE_PARAMS]
    if method.method == 'agent':
        name = os.path.basename(method.agent or '')
        if not re.fullmatch(r'fence_[A-Za-z0-9_]+', name):
            out.append(f'agent {method.agent!r} is not a fence agent (fence_*)')
    for key, value in method.params:
        if key in REFUSED_PARAMS:
            out.append(f'param {key!r} is refused: {REFUSED_PARAMS[key]}')
        if not re.fullmatch(r'[a-z][a-z0-9_-]*', key):
            out.append(f'param name {key!r} is not a fence-agent option name')
        if '\n' in str(value) or '\r' in str(value):
            out.append(f'param {key!r}: a value may not contain a line break')
    if method.password_file and check_files:
        try:
            if os.stat(method.password_file).st_mode & 0o004:
                out.append(f'password file {method.password_file} is readable by '
                           f'everyone (chmod 600 or 640)')
        except OSError as exc:
            out.append(f'password file {method.password_file}: {exc.strerror}')
    return out


# -- fence agents ------------------------------------------------------------
def _find_agent(name: str) -> str:
    path = os.pathsep.join([os.environ.get('PATH', ''), *AGENT_DIRS])
    found = shutil.which(name, path=path) if not os.path.isabs(name) else \
        (name if os.access(name, os.X_OK) else None)
    if not found:
        raise FenceError(f'fence agent {name} not found (looked in PATH and '
                         f'{", ".join(AGENT_DIRS)}; is fence-agents installed?)')
    return found


def _read_password(method) -> str | None:
    if not method.password_file:
        return None
    from xenha import files
    try:
        # the first line, without its line end: spaces may belong to the password;
        # a small regular file only (/dev/zero must not hang a failover)
        return files.read_secret(method.password_file)
    except OSError as exc:
        raise FenceError(f'cannot read password file {method.password_file}: '
                         f'{exc.strerror or exc}') from None
    except UnicodeDecodeError:
        raise FenceError(f'cannot read password file {method.password_file}: not '
                         'text (not UTF-8)') from None


_OPTIONS: dict[tuple[str, float], frozenset[str]] = {}   # per process: (path, mtime)


def _agent_options(path: str, mtime: float, timeout: float = 10.0) -> frozenset[str]:
    """The option names an agent declares in its metadata (asked once per file).

    They tell how it treats the password: agents with ipmitool_path (the
    fence_ipmilan family: Debian ships fence_idrac, fence_ilo3 … as copies, not
    symlinks) get the ipmitool shim; agents with snmpget_path put it on
    snmpget's command line, so they are not used with a password at all.
    """
    if (path, mtime) in _OPTIONS:
        return _OPTIONS[path, mtime]
    try:
        # its own process group, killed whole when it hangs (no orphans); at
        # most `timeout` (the call's own), and in a check what its -t leaves
        meta = LocalRunner(kill_group=True).run([path, '-o', 'metadata'],
                                                min(timeout, 10.0)).out
    except RunnerError as exc:
        # not knowing means not knowing where the password would end up
        raise FenceError(f'{os.path.basename(path)} -o metadata: {exc}') from None
    _OPTIONS[path, mtime] = frozenset(re.findall(r'<parameter name="([^"]+)"', meta))
    return _OPTIONS[path, mtime]


def call_agent(method, action: str, timeout: float) -> tuple[Result, str | None]:
    """Run the agent once with `action`; returns its Result and the password
    (to scrub from what it printed).  Raises FenceError when it could not run
    or did not finish in `timeout` seconds."""
    agent = os.path.basename(method.agent)
    path = _find_agent(method.agent)
    password = _read_password(method)
    params = dict(method.params)
    # the agent's own timeout fires before ours, so an unreachable device is
    # reported as such ("Connection timed out") rather than as a hung agent
    params.setdefault('power_timeout', str(max(1, int(timeout / 3))))
    env = None
    with tempfile.TemporaryDirectory(prefix='xenha-fence-') as tmp:
        options = (_agent_options(path, os.stat(path).st_mtime, timeout)
                   if password is not None else frozenset())
        if 'snmpget_path' in options:
            raise FenceError(f'{agent} hands the password to snmpget/snmpset on their '
                             f'command line (-A/-X, readable by every local user): '
                             f'not used with a password_file')
        if 'ipmitool_path' in options:
            if os.statvfs(tmp).f_flag & os.ST_NOEXEC:
                raise FenceError(f'{tmp}: mounted noexec, so the ipmitool helper that '
                                 f'keeps the password out of argv cannot run there; '
                                 f'set TMPDIR to another directory')
            shim = Path(tmp) / 'ipmitool'
            shim.write_text(IPMITOOL_SHIM.format(
                python=sys.executable,
                ipmitool=params.get('ipmitool_path', '/usr/bin/ipmitool')))
            shim.chmod(0o700)
            params['ipmitool_path'] = str(shim)
            env = dict(os.environ, IPMITOOL_PASSWORD=password)
        elif password is not None:
            params['password'] = password
        params['action'] = action
        stdin = ''.join(f'{k}={v}\n' for k, v in params.items())
        try:
            return _run_group([path], stdin, env, timeout), password
        except subprocess.TimeoutExpired:
            raise FenceError(f'{agent} {action} timed out after {round(timeout, 1):g}s '
                             f'(agent hung?)') from None


def _run_group(argv: list[str], stdin: str, env: dict | None, timeout: float) -> Result:
    """Run the agent in its own process group, and leave nothing of it behind.

    Killing only the agent on a timeout would orphan its ipmitool, which may
    still power the host off (or on) later, behind the engine's back.  Its
    output is bounded (a flooding agent cannot fill the memory or the status
    line)."""
    from xenha.runner import CommandNotFound, CommandTimeout
    try:
        return LocalRunner(env=env, kill_group=True).run(argv, timeout, input=stdin)
    except CommandTimeout:
        raise subprocess.TimeoutExpired(argv, timeout) from None
    except CommandNotFound as exc:
        raise FenceError(f'fence agent {exc}') from None


def _reason(result: Result, password: str | None) -> str:
    """The agent's own error line, without its timestamp and warning noise."""
    lines = [line.strip() for line in (result.err + '\n' + result.out).splitlines()]
    lines = [line for line in lines if line and 'DeprecationWarning' not in line
             and not line.startswith('from pipes')]
    errors = [line for line in lines if 'ERROR' in line or 'Failed' in line]
    text = (errors or lines or [f'exit status {result.exit}'])[0]
    text = re.sub(r'^(\d{4}-\d\d-\d\d [\d:,]+ )?(ERROR: )?', '', text)
    if password:
        text = text.replace(password, '********')
    return text


def _explain(agent: str, action: str, result: Result, password: str | None) -> str:
    """One distinct message per way an agent fails (fencing.py's fail() texts)."""
    reason = _reason(result, password)
    low = reason.lower()
    if 'timed out waiting to power off' in low:
        why = 'power still on after off (the device took the request, the host stayed up)'
    elif 'connection timed out' in low or 'connection lost' in low:
        why = 'fence device did not answer (unreachable or down?)'
    elif 'unable to connect/login' in low:
        why = 'fence device refused the connection or the login (wrong username/password?)'
    elif 'unable to obtain correct plug status' in low:
        why = 'fence device refused the status query (wrong username/password?)'
    elif 'password' in low:
        why = 'password problem'
    else:
        why = 'failed'
    return f'{agent} {action}: {why}: {reason}'


def power_state(method, timeout: float | None = None) -> tuple[str, str]:
    """('on'|'off'|'unknown', message) from the agent's status action."""
    if method.method != 'agent':
        return 'unknown', f'{label(method)} cannot tell the power state'
    agent = os.path.basename(method.agent)
    try:
        result, password = call_agent(method, 'status', timeout or method.timeout)
    except FenceError as exc:
        return 'unknown', str(exc)
    if result.exit == 0:
        return 'on', f'{agent} status: on'
    if result.exit == 2:
        return 'off', f'{agent} status: off'
    return 'unknown', _explain(agent, 'status', result, password)


def power_status(method, timeout: float | None = None) -> str:
    """'on' | 'off' | 'unknown': for the engine's "is the dom0 really gone" step."""
    return power_state(method, timeout)[0]


def fence_on(method, timeout: float | None = None) -> Attempt:
    """Power the dom0 on again (the lab's heal; an operator after repair)."""
    started = time.monotonic()
    if method.method != 'agent':
        return Attempt(label(method), False, f'{label(method)} cannot power on', 0.0)
    agent = os.path.basename(method.agent)
    try:
        result, password = call_agent(method, 'on', timeout or method.timeout)
        ok = result.exit == 0
        message = f'{agent} on: powered on' if ok else \
            _explain(agent, 'on', result, password)
    except FenceError as exc:
        ok, message = False, str(exc)
    return Attempt(label(method), ok, message, time.monotonic() - started)


def _agent_off(method, budget: float) -> tuple[bool, str]:
    deadline = time.monotonic() + budget
    agent = os.path.basename(method.agent)
    # a dead host is usually off already: its status confirms the fence, and
    # saves the off request with its power_wait (2 s for fence_ipmilan)
    state, _ = power_state(method, budget / 3)
    if state == 'off':
        return True, f'{agent}: status says off (already powered off): fenced'
    result, password = call_agent(method, 'off', deadline - time.monotonic())
    if result.exit != 0:
        return False, _explain(agent, 'off', result, password)
    # confirm: never trust one "Success" (an agent may report off too early)
    confirm_until = min(time.monotonic() + CONFIRM_WITHIN, deadline)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0.2:
            return False, f'{agent}: reported off, no time left to confirm it'
        state, message = power_state(method, remaining)
        if state == 'off':
            return True, f'{agent}: powered off, status confirms off'
        if time.monotonic() >= confirm_until:
            if state == 'on':
                return False, (f'{agent}: reported off, but status still says on '
                               f'after {CONFIRM_WITHIN:g}s: the host is not fenced')
            return False, f'{agent}: reported off, but cannot confirm: {message}'
        time.sleep(0.3)


# -- ssh: destroy the guests of a dom0 that still answers ----------------------
def _ssh_destroy(dom0: str, method, runner_factory, budget: float,
                 toolstack: str, toolstack_command: str | None) -> tuple[bool, str]:
    from xenha.xen import Toolstack, ToolstackError

    if runner_factory is None:
        return False, 'no runner to reach the dom0'
    params = dict(method.params)
    deadline = time.monotonic() + budget
    runner = None
    try:
        runner = runner_factory(dom0)
        xen = Toolstack(runner, dialect=params.get('toolstack', toolstack),
                        command=params.get('toolstack_command', toolstack_command))

        def call(verb, *args):
            # each call gets what is left of the budget, not all of it
            xen.timeout = max(deadline - time.monotonic(), 0.5)
            return verb(*args)

        guests = [d.name for d in call(xen.list) if not d.is_dom0]
        errors = [f'{name}: {r.reason()}' for name in guests
                  if (r := call(xen.destroy, name)).exit != 0]
        # confirm: a destroyed domain may linger a moment as "dying"
        while left := [d.name for d in call(xen.list) if not d.is_dom0]:
            if time.monotonic() > deadline - 0.5:
                return False, (f'still running after destroy: {", ".join(left)}'
                               + (f' ({"; ".join(errors)})' if errors else ''))
            time.sleep(0.2)
    except (RunnerError, ToolstackError) as exc:
        return False, str(exc)
    finally:
        if runner is not None:
            runner.close()
    return True, (f'destroyed {len(guests)} guest(s)'
                  + (f' ({", ".join(guests)})' if guests else '')
                  + '; only Domain-0 runs. The dom0 itself was NOT powered off: '
                  'ssh fencing is not enough for production')


# -- the chain ---------------------------------------------------------------
# -- storage: the targets refuse the dom0 ----------------------------------------
def _storage_revoke(dom0: str, method, storage: StorageFence | None,
                    budget: float) -> tuple[bool, str, tuple]:
    """Revoke `dom0` on every target of `storage` at once; confirmed only
    when each one is.  (ok, message, the per-target Outcomes)."""
    from xenha.storage import reservations

    if storage is None:
        return False, ('no storage targets were given (the engine passes the targets '
                       f'of the guests {dom0} may run)'), ()
    if not storage.targets:
        return False, (f'no targets to revoke {dom0} on: storage fencing protects '
                       'nothing here'), ()
    actor = storage.as_initiator
    if actor is None:
        params = dict(method.params)
        actor = reservations.monitor(params.get('initiator_name')
                                     or reservations.iscsi.DEFAULT_INITIATOR)
    outcomes = tuple(reservations.revoke_all(
        storage.targets, storage.victim, actor, keep=storage.keep,
        timeout=budget, opener=storage.opener))
    failed = [o for o in outcomes if not o.confirmed]
    if failed:
        done = [o.target for o in outcomes if o.confirmed]
        return False, (f'not revoked on {", ".join(o.target for o in failed)} ('
                       + '; '.join(o.message for o in failed) + ')'
                       + (f'; revoked on {", ".join(done)}' if done else '')), outcomes
    return True, (f'revoked on {len(outcomes)} target(s), each confirmed: '
                  + '; '.join(o.message for o in outcomes)), outcomes


def _try(dom0: str, method, runner_factory, budget: float, storage=None,
         **xen) -> tuple[bool, str, tuple]:
    if method.method == 'agent':
        try:
            return (*_agent_off(method, budget), ())
        except FenceError as exc:
            return False, str(exc), ()
    if method.method == 'ssh':
        return (*_ssh_destroy(dom0, method, runner_factory, budget, **xen), ())
    if method.method == 'storage':
        return _storage_revoke(dom0, method, storage, budget)
    return False, f'unknown fence method {method.method!r}', ()


def fence(dom0: str, methods, runner_factory=None, timeout: float = 60.0, *,
          toolstack: str = 'auto', toolstack_command: str | None = None,
          storage: StorageFence | None = None) -> FenceOutcome:
    """Fence `dom0` with the first method of the chain that confirms it.

    runner_factory(dom0) -> a runner (run/close) to the dom0, for 'ssh', whose
    toolstack is `toolstack` / `toolstack_command` (the dom0's inventory
    settings); `storage`: the targets (and identities) for 'storage';
    `timeout` bounds the whole chain, each method's own timeout one attempt.
    """
    started = time.monotonic()
    methods = tuple(methods)
    attempts: list[Attempt] = []

    def elapsed() -> float:
        return time.monotonic() - started

    if len(methods) == 1 and methods[0].method == 'none':
        return FenceOutcome(True, 'none', (
            f'fencing of {dom0} is "none" (written in the inventory): nothing was '
            f'fenced; if {dom0} still runs its guests, they now run twice'),
            0.0, (Attempt('none', True, 'explicit: nothing fenced', 0.0),))
    for method in methods:
        name, t0 = label(method), time.monotonic()
        remaining = timeout - elapsed()
        wrong = problems(method, check_files=False)
        if method.method == 'none':
            wrong = ['"none" must be the only method, never part of a chain']
        if wrong:
            attempts.append(Attempt(name, False, 'refused: ' + '; '.join(wrong), 0.0))
            continue
        if remaining <= 0.5:
            attempts.append(Attempt(name, False, f'not tried: the fencing time '
                                    f'budget of {timeout:g}s is used up', 0.0))
            continue
        try:
            ok, message, targets = _try(dom0, method, runner_factory,
                                        min(method.timeout or remaining, remaining),
                                        storage, toolstack=toolstack,
                                        toolstack_command=toolstack_command)
        except Exception as exc:  # noqa: BLE001 - a bug in one method must not end the chain
            ok, message, targets = False, f'internal error: {type(exc).__name__}: {exc}', ()
        attempts.append(Attempt(name, ok, message, time.monotonic() - t0, targets))
        if ok:
            return FenceOutcome(True, name, f'{dom0} fenced by {name}: {message}',
                                elapsed(), tuple(attempts))
    why = '; '.join(f'{a.method}: {a.message}' for a in attempts) \
        or 'no fence method configured'
    return FenceOutcome(False, '', f'fencing {dom0} failed: not starting anything '
                        f'({why})', elapsed(), tuple(attempts))
