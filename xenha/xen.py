"""The Xen toolstack: `xl` (Xen 4.x), `xm` (Xen 3.x), or whichever a host has.

Parsers for `list` and `info` that accept every layout the two tools have
printed across releases (xl's tab-separated header, xm's `Mem(MiB)` column,
inactive xend-managed domains without an ID, extra columns such as xl's
`Security Label`, names longer than the 40-character column), and refuse
anything else with `UnparseableOutput`: a check must say UNKNOWN rather than
a wrong OK.  The verbs create / shutdown / destroy are what the failover
engine uses.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections import namedtuple
from collections.abc import Sequence

from xenha.units import MiB


class ToolstackError(Exception):
    """The toolstack ran but failed; the message quotes its reason."""


class UnparseableOutput(ToolstackError):
    """The toolstack printed something that is not a listing we understand."""


class State(enum.Enum):
    RUNNING = 'running'
    BLOCKED = 'blocked'      # idle: healthy for a PV guest
    PAUSED = 'paused'
    SHUTDOWN = 'shutdown'    # going away: shutdown, reboot or suspend requested
    CRASHED = 'crashed'
    DYING = 'dying'
    INACTIVE = 'inactive'    # xend-managed domain that is defined but not running

    @property
    def healthy(self) -> bool:
        return self in (State.RUNNING, State.BLOCKED)

    @property
    def present(self) -> bool:
        """It holds memory and may touch its disks: counts for split brain."""
        return self is not State.INACTIVE


# One letter a position in the flags column; the worst flag decides.
_FLAG_ORDER = [('d', State.DYING), ('c', State.CRASHED), ('s', State.SHUTDOWN),
               ('p', State.PAUSED), ('r', State.RUNNING), ('b', State.BLOCKED)]
_FLAGS_RE = re.compile(r'^[rbpscd-]{5,6}$')


def decode_flags(flags: str, has_id: bool = True) -> State:
    """Decode xl/xm's state column, e.g. ``-b----`` → BLOCKED.

    No flag at all means runnable but not on a CPU right now (busy guests on
    a loaded host show it), or, for a domain without an ID, defined but off.

    >>> decode_flags('r-----'), decode_flags('--p---'), decode_flags('------')
    (<State.RUNNING: 'running'>, <State.PAUSED: 'paused'>, <State.RUNNING: 'running'>)
    """
    if not _FLAGS_RE.match(flags) or any(flags.count(c) > 1 for c in 'rbpscd'):
        raise UnparseableOutput(f'unknown domain state {flags!r}')
    for letter, state in _FLAG_ORDER:
        if letter in flags:
            return state
    return State.RUNNING if has_id else State.INACTIVE


class Domain(namedtuple('Domain', 'name domid memory vcpus state flags cpu_time')):
    """One row of the listing: domid is None for an inactive xend domain,
    memory in bytes, state a `State`, flags as printed, cpu_time in seconds
    (a counter).  (collections.namedtuple: `typing` would cost every check ~2 ms.)"""
    __slots__ = ()

    @property
    def is_dom0(self) -> bool:
        return self.domid == 0 or self.name == 'Domain-0'


class HostInfo(namedtuple('HostInfo',
                          'host total_memory free_memory nr_cpus xen_version fields',
                          defaults=(None,))):
    """`xl info`: memory in bytes; fields holds every key/value it printed."""
    __slots__ = ()


# A row: name, id, mem, vcpus, flags, time; an inactive xend-managed domain
# has neither id nor flags.  Extra columns (xl list -Z) only when the header has them.
_ROW_RE = re.compile(
    r'^(?P<name>\S+)\s+(?P<id>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+'
    r'(?P<flags>[rbpscd-]{5,6})\s+(?P<time>\d+(?:\.\d+)?)(?P<extra>\s+.*)?$')
_INACTIVE_RE = re.compile(
    r'^(?P<name>\S+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+(?P<time>\d+(?:\.\d+)?)$')
_HEADER_RE = re.compile(r'^Name\s+ID\s+Mem(?:\(MiB\))?\s+VCPUs\s+State\s+Time\(s\)')
_INFO_RE = re.compile(r'^([a-z_0-9]+)\s+:(.*)$')


def parse_list(text: str) -> list[Domain]:
    """Parse `xl list` / `xm list` output (any release seen in the wild)."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if _HEADER_RE.match(line.strip()):
            break
    else:
        first = next((l for l in lines if l.strip()), '')
        raise UnparseableOutput(
            'no domain list header in toolstack output'
            + (f' (first line: {first.strip()[:60]!r})' if first else ' (empty output)'))
    extra_columns = not _HEADER_RE.sub('', lines[start].strip()) == ''
    domains = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        m = _ROW_RE.match(line.strip()) or _INACTIVE_RE.match(line.strip())
        if not m or (m.groupdict().get('extra') and not extra_columns):
            raise UnparseableOutput(f'cannot parse domain list line {line.strip()[:120]!r}')
        has_id = 'id' in m.groupdict()
        flags = m['flags'] if has_id else '------'
        domains.append(Domain(
            name=m['name'], domid=int(m['id']) if has_id else None,
            memory=int(m['mem']) * MiB, vcpus=int(m['vcpus']),
            state=decode_flags(flags, has_id), flags=flags,
            cpu_time=float(m['time'])))
    if not any(d.is_dom0 for d in domains):
        raise UnparseableOutput('domain list without Domain-0')
    return domains


def parse_info(text: str) -> HostInfo:
    """Parse `xl info` / `xm info`: ``key   : value`` lines (values may end in blanks)."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _INFO_RE.match(line)   # keys are padded: "free_memory            : 1512"
        if not m:
            raise UnparseableOutput(f'cannot parse info line {line.strip()[:120]!r}')
        fields[m[1]] = m[2].strip()
    for key in ('total_memory', 'free_memory'):
        if key not in fields:
            raise UnparseableOutput(f'toolstack info has no {key}')
        # MiB as digits only: no sign (negative free memory is garbage, not a
        # full host), no '1_000' (int() would take it)
        if not re.fullmatch(r'\d{1,12}', fields[key]):
            raise UnparseableOutput(f'toolstack info: {key} is not a number of MiB '
                                    f'({fields[key][:40]!r})')
    total = int(fields['total_memory']) * MiB
    free = int(fields['free_memory']) * MiB
    if free > total:
        raise UnparseableOutput(f'toolstack info: free_memory ({free // MiB} MiB) is more '
                                f'than total_memory ({total // MiB} MiB)')
    version = fields.get('xen_version') or '.'.join(
        fields.get(k, '?') for k in ('xen_major', 'xen_minor')) + fields.get('xen_extra', '')
    return HostInfo(host=fields.get('host', ''), total_memory=total, free_memory=free,
                    nr_cpus=int(fields['nr_cpus']) if re.fullmatch(
                        r'\d{1,6}', fields.get('nr_cpus', '')) else 0, xen_version=version,
                    fields=fields)


def failure_reason(result) -> str:
    """The line that says why a verb failed (xl first prints "Parsing config from")."""
    for line in (result.err + '\n' + result.out).splitlines():
        line = line.strip()
        if line and not line.startswith(('Parsing config from', 'Using config file')):
            return line
    return f'exit status {result.exit}'


DIALECTS = ('xl', 'xm', 'auto')


class Toolstack:
    """The toolstack on one host, reached through a runner."""

    def __init__(self, runner, dialect: str = 'auto', command: str | None = None,
                 timeout: float = 10.0):
        if dialect not in DIALECTS:
            raise ValueError(f'toolstack must be one of {", ".join(DIALECTS)}')
        self.runner = runner
        self.dialect = dialect
        self.timeout = timeout
        # --toolstack-command: one shell-quoted string, the verb is appended
        self.prefix = shlex.split(command) if command else None

    def _argv(self, dialect: str, verb: Sequence[str]) -> list[str]:
        return [*(self.prefix or [dialect]), *verb]

    def run(self, *verb: str):
        """Run a verb; with `auto`, prefer xl and fall back to xm (as Pacemaker does)."""
        return self.run_many(verb)[0]

    def run_many(self, *verbs: Sequence[str], meanwhile=None):
        """Run verbs at once (the runner starts them together); Results in order.
        With `auto`: xl when it is there, else xm, decided once for all of them.
        `meanwhile()` runs once while they do (see LocalRunner.run_many)."""
        from xenha.runner import CommandNotFound
        pending = [meanwhile] if meanwhile else []

        def once():
            while pending:
                pending.pop()()
        if self.dialect != 'auto' or self.prefix:
            return self._run_many(self.dialect, verbs, once)
        try:
            results = self._run_many('xl', verbs, once)
        except CommandNotFound:
            results = None
        if results is None or any(r.exit == 127 for r in results):
            self.dialect = 'xm'
            try:
                return self._run_many('xm', verbs, once)
            except CommandNotFound:
                raise ToolstackError('neither xl nor xm found on the host') from None
        self.dialect = 'xl'
        return results

    def _run_many(self, dialect: str, verbs, meanwhile):
        return self.runner.run_many([self._argv(dialect, verb) for verb in verbs],
                                    self.timeout, meanwhile=meanwhile)

    def _check(self, verb, result):
        if result.exit != 0:
            raise ToolstackError(f'{" ".join(self._argv(self.dialect, verb[:1]))} '
                                 f'failed: {failure_reason(result)}')
        return result

    def _checked(self, *verb: str):
        return self._check(verb, self.run(*verb))

    def list(self) -> list[Domain]:
        return parse_list(self._checked('list').out)

    def info(self) -> HostInfo:
        return parse_info(self._checked('info').out)

    def list_and_info(self, meanwhile=None) -> tuple[list[Domain], HostInfo]:
        """`list` and `info` run at the same time: the wait is the slower of the two."""
        verbs = (('list',), ('info',))
        listed, info = (self._check(v, r) for v, r in
                        zip(verbs, self.run_many(*verbs, meanwhile=meanwhile)))
        return parse_list(listed.out), parse_info(info.out)

    def create(self, config: str):
        return self.run('create', config)

    def shutdown(self, name: str, wait: bool = False):
        return self.run('shutdown', *(['-w'] if wait else []), name)

    def destroy(self, name: str):
        return self.run('destroy', name)
