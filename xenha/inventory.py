"""The cluster description: one TOML file loaded into frozen dataclasses.

Everything else in xenha (checks, handlers, the engine, `xenha render`) reads the
cluster through `load()`.  Loading validates the whole file and reports *every*
problem at once, each as ``FILE:LINE: [place] key = value: what is wrong`` (the
line is left out when it cannot be found cheaply), so an operator fixes the file
in one pass instead of one error per run.

The layout is documented key by key in ``examples/cluster.toml``:
``[defaults]``, ``[timing]``, ``[dom0.NAME]``, ``[storage.NAME]``, ``[target.NAME]``,
``[domu.NAME]``.

Sizes (``memory``, ``dom0_reserve``): a plain number is MiB, as in Xen's own
``memory =``; a suffix K, M, G or T (optionally followed by ``iB`` or ``B``) is a
power of 1024.  Secrets are never written inline: fence passwords and CHAP
secrets live in files named by ``password_file`` / ``chap_secret_file``.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 ** 2

TOOLSTACKS = ('xl', 'xm', 'auto')
ROLES = ('active', 'spare')
KINDS = ('iscsi', 'aoe')
DOMU_TYPES = ('pv', 'pvh', 'hvm')
ON_CRASH = ('destroy', 'restart', 'preserve', 'rename-restart',
            'coredump-destroy', 'coredump-restart')
# A name becomes a Nagios host, an Icinga object, a Xen domain and a file name.
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
# Keys that would put a secret into the file: refused with a pointer to the *_file key.
INLINE_SECRETS = {'password': 'password_file', 'passwd': 'password_file',
                  'chap_secret': 'chap_secret_file', 'chap_password': 'chap_secret_file',
                  'secret': 'a *_file key'}


class InventoryError(Exception):
    """The inventory cannot be used; `.errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__('\n'.join(self.errors))


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Defaults:
    toolstack: str = 'auto'
    toolstack_command: str | None = None     # shell-quoted argv prefix
    ssh_user: str = 'root'
    ssh_port: int = 22
    ssh_key: str | None = None
    known_hosts: str | None = None
    sudo: bool = False
    dom0_reserve: int = 512 * MiB             # bytes kept free on a spare
    timeout: float = 10.0                     # per remote command, seconds
    state_db: str = '/var/lib/xenha/state.db'
    max_restart: int = 3
    restart_window: float = 3600
    dedupe_window: float = 600
    create_parallel: int = 10                # one SSH connection's sessions (MaxSessions)
    split_brain_recheck: float = 1.0          # seconds between the guard's two looks
    reboot_grace: float = 30.0                # a guest gone from xl list less long: rebooting
    fence_unreachable: bool = False           # fence a silent dom0 that may run a victim
    nagios_command_file: str | None = None
    cluster_host: str = 'xen-cluster'
    failover_service: str = 'failover'
    allow_active_as_target: bool = False


@dataclass(frozen=True)
class Timing:
    """Monitoring timing in seconds: the [timing] table, written by `xenha render`
    into the Nagios and Icinga 2 objects.  A dead dom0 is HARD DOWN within about
    dom0_check + (dom0_attempts - 1) * dom0_retry = 20 s, plus each attempt's
    dom0_check_timeout when it does not even refuse the connection."""
    # a dom0's host check: up or down
    dom0_check: int = 10
    dom0_retry: int = 5
    dom0_attempts: int = 3
    dom0_check_timeout: int = 4         # below dom0_retry, so attempts never queue
    # its "xen host" service
    dom0_service_check: int = 60
    dom0_service_retry: int = 15
    dom0_service_attempts: int = 3
    # each domU's "xen domain" service
    domu_check: int = 10
    domu_retry: int = 5
    domu_attempts: int = 2
    domu_max_age: int = 60              # how old a cached listing check_xen_domu trusts
    domu_first_notification_delay: int = 60   # longer than a failover takes
    # the storage targets and the cluster's capacity
    target_check: int = 30
    target_retry: int = 10
    target_attempts: int = 3
    capacity_check: int = 300
    capacity_retry: int = 60
    capacity_attempts: int = 2
    perf_check: int = 3600              # a target's optional --perf service: hourly
    # each dom0's "fencing" service: its fence agents asked for the power state
    fence_check: int = 300
    fence_retry: int = 60
    fence_attempts: int = 3
    notification_interval: int = 1800
    # the checks' -t (services; default: [defaults] timeout rounded up)
    check_timeout: int = 10
    capacity_timeout: int = 20          # check_xen_capacity's own default


@dataclass(frozen=True)
class FenceMethod:
    method: str                               # 'agent' | 'ssh' | 'none'
    agent: str | None = None                  # e.g. 'fence_ipmilan'
    params: tuple[tuple[str, str], ...] = ()  # key=value stdin lines, never a password
    password_file: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Dom0:
    name: str
    address: str
    role: str                                 # 'active' | 'spare'
    port: int
    ssh_user: str
    ssh_key: str | None
    known_hosts: str | None
    fencing: tuple[FenceMethod, ...]          # tried in order
    toolstack: str = 'auto'                   # resolved from [defaults]
    toolstack_command: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    kind: str                                 # 'iscsi' | 'aoe'
    portal: str | None = None                 # "host" or "host:port"
    iqn: str | None = None
    lun: int = 0
    chap_user: str | None = None
    chap_secret_file: str | None = None
    shelf: int | None = None
    slot: int | None = None
    interface: str | None = None
    storage: str | None = None                # the [storage.NAME] serving it
    device_path: str | None = None            # overrides `device`
    # a disk no guest uses: `xenha study` and `--perf --write` may write over it
    scratch: bool = False
    perf: bool = False                        # render an infrequent --perf service

    @property
    def host(self) -> str | None:
        return _split_portal(self.portal)[0] if self.portal else None

    @property
    def port(self) -> int:
        return _split_portal(self.portal)[1] if self.portal else 3260

    @property
    def device(self) -> str:
        """The block device the initiator creates on a dom0."""
        if self.device_path:
            return self.device_path
        if self.kind == 'aoe':
            return f'/dev/etherd/e{self.shelf}.{self.slot}'
        return (f'/dev/disk/by-path/ip-{self.host}:{self.port}'
                f'-iscsi-{self.iqn}-lun-{self.lun}')


@dataclass(frozen=True)
class DomU:
    name: str
    config: str                               # path of its config file on the dom0s
    memory: int                               # bytes
    vcpus: int
    home: str
    targets: tuple[str, ...]
    priority: int = 0                         # higher first
    ha: bool = True
    # Only used by `xenha render --format xen`:
    type: str = 'pv'
    kernel: str | None = None
    ramdisk: str | None = None
    extra: str | None = None
    bootloader: str | None = None
    vif: tuple[str, ...] = ()
    on_crash: str = 'destroy'

    @property
    def memory_mib(self) -> int:
        return self.memory // MiB


@dataclass(frozen=True)
class StorageNode:
    name: str
    address: str


@dataclass(frozen=True)
class Cluster:
    source: str
    defaults: Defaults
    dom0s: dict[str, Dom0]                    # file order; read-only in spirit
    targets: dict[str, Target]
    domus: dict[str, DomU]
    storage: dict[str, StorageNode] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)

    def active(self) -> list[Dom0]:
        return [d for d in self.dom0s.values() if d.role == 'active']

    def spares(self) -> list[Dom0]:
        return [d for d in self.dom0s.values() if d.role == 'spare']

    def domus_homed_on(self, dom0: str) -> list[DomU]:
        """DomUs whose home is `dom0`, highest priority first, then file order."""
        homed = [u for u in self.domus.values() if u.home == dom0]
        return sorted(homed, key=lambda u: -u.priority)

    def targets_of(self, domu: DomU | str) -> list[Target]:
        u = self.domus[domu] if isinstance(domu, str) else domu
        return [self.targets[t] for t in u.targets]


# ---------------------------------------------------------------- public functions

def load(path) -> Cluster:
    """Read and validate the TOML file at `path`; raise InventoryError."""
    try:
        text = Path(path).read_bytes().decode('utf-8')
    except OSError as e:
        raise InventoryError([f'{path}: cannot read: {e.strerror}']) from None
    except UnicodeDecodeError as e:
        raise InventoryError([f'{path}: not UTF-8 text: {e.reason}']) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = '<string>') -> Cluster:
    """Parse and validate TOML text; raise InventoryError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r'at line (\d+)', str(e))
        where = f'{source}:{m.group(1)}' if m else source
        raise InventoryError([f'{where}: TOML syntax error: {e}']) from None
    v = _Validator(text, source)
    cluster = v.cluster(data)
    if v.errors:
        # In file order: errors are found section by section, read top to bottom.
        line = lambda e: int(m.group(1)) if (m := re.match(r'[^:]*:(\d+): ', e)) else 0
        raise InventoryError(sorted(v.errors, key=line))
    return cluster


_SIZE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?)?\s*$', re.I)
_UNITS = {None: MiB, 'K': KiB, 'M': MiB, 'G': 1024 ** 3, 'T': 1024 ** 4}


def parse_size(text_or_int) -> int:
    """Bytes from '512M', '4G', '1.5G', '2048' or 2048 (plain numbers are MiB).

    >>> parse_size('1.5G'), parse_size(2048) == parse_size('2G')
    (1610612736, True)
    """
    if isinstance(text_or_int, bool):
        raise ValueError('not a size')
    if isinstance(text_or_int, (int, float)):
        if not 0 <= text_or_int < 1024 ** 4:       # also refuses TOML's inf and nan
            raise ValueError('not a size')
        return int(text_or_int * MiB)
    m = _SIZE_RE.match(str(text_or_int))
    if not m:
        raise ValueError('not a size')
    unit = m.group(2).upper() if m.group(2) else None
    return int(float(m.group(1)) * _UNITS[unit])


# ---------------------------------------------------------------- validation

_TYPES = {
    'str': ('a string', lambda x: isinstance(x, str)),
    'int': ('an integer', lambda x: isinstance(x, int) and not isinstance(x, bool)),
    'number': ('a number', lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)),
    'bool': ('true or false', lambda x: isinstance(x, bool)),
    'strlist': ('a list of strings',
                lambda x: isinstance(x, list) and all(isinstance(s, str) for s in x)),
}
_SIZE_HINT = ("not a size (a number of MiB, or a number with K, M, G or T, "
              "e.g. '512M', '1.5G')")
_MISSING = object()


def _split_portal(portal: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' → (host, port); ValueError if malformed."""
    m = re.match(r'^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s\[\]]+))(?::(\d{1,5}))?$', portal)
    if not m:
        raise ValueError(portal)
    port = int(m.group(3) or 3260)
    if not 0 < port < 65536:
        raise ValueError(portal)
    return m.group(1) or m.group(2), port


def _toml_name(name: str) -> str:
    return name if re.fullmatch(r'[A-Za-z0-9_-]+', name) else f'"{name}"'


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(sorted(choices))})" if choices else ''


class _Validator:
    """Walks the parsed TOML once, building the model and collecting errors."""

    def __init__(self, text: str, source: str):
        self.lines = text.splitlines()
        self.source = source
        self.errors: list[str] = []

    # ---- error reporting with a cheap line lookup

    def _header_line(self, section: str, name: str | None) -> int | None:
        if name is None:
            pat = rf'^\s*\[\s*{re.escape(section)}\s*[\].]|^\s*{re.escape(section)}\s*[.=]'
        else:
            n = re.escape(name)
            pat = (rf'^\s*\[\s*{re.escape(section)}\s*\.\s*(?:{n}|"{n}"|\'{n}\')\s*\]'
                   rf'|^\s*{re.escape(section)}\s*\.\s*(?:{n}|"{n}"|\'{n}\')\s*=')
        for i, line in enumerate(self.lines):
            if re.search(pat, line):
                return i + 1
        return None

    def _key_line(self, section: str, name: str | None, key: str,
                  sub: str = '') -> int | None:
        """The line of `key` in [section.name]; with sub 'fencing[i]' the line of
        `key` in the i-th [[section.name.fencing]] table, else of `fencing =`."""
        start = self._header_line(section, name)
        m = re.fullmatch(r'(\w+)\[(\d+)\]', sub)
        if m and start:
            n = re.escape(name)
            pat = (rf'^\s*\[\[\s*{re.escape(section)}\s*\.\s*(?:{n}|"{n}")\s*\.'
                   rf'\s*{m.group(1)}\s*\]\]')
            heads = [i + 1 for i, line in enumerate(self.lines) if re.match(pat, line)]
            if int(m.group(2)) < len(heads):
                start = heads[int(m.group(2))]
            else:
                key = m.group(1)
        if start is None:
            return None
        k = re.escape(key)
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if re.match(r'^\s*\[', line):
                break
            if re.match(rf'^\s*(?:{k}|"{k}")\s*=', line):
                return i + 1
        return start

    def error(self, section: str, name: str | None, key: str | None, message: str,
              value: Any = _MISSING, sub: str = '') -> None:
        """Record '[section.name]sub key = value: message' with its line if found."""
        if key is not None:
            line = self._key_line(section, name, key.split('[')[0], sub)
        else:
            line = self._header_line(section, name)
        place = f'[{section}]' if name is None else f'[{section}.{_toml_name(name)}]'
        what = ' '.join(p for p in (place, sub, key or '') if p)
        if value is not _MISSING:
            what += f' = {value!r}'
        where = f'{self.source}:{line}' if line else self.source
        self.errors.append(f'{where}: {what}: {message}')

    # ---- typed access to one table's keys

    def take(self, table: dict, section: str, name: str | None, key: str, kind: str,
             default: Any = _MISSING, sub: str = '') -> Any:
        """Pop `key` from `table`, checking its type; missing required → error."""
        if key not in table:
            if default is _MISSING:
                self.error(section, name, key, 'missing (required)', sub=sub)
                return None
            return default
        value = table.pop(key)
        expected, ok = _TYPES[kind]
        if not ok(value):
            self.error(section, name, key, f'expected {expected}', value, sub=sub)
            return None if default is _MISSING else default
        if kind == 'number':
            value = float(value)
            if not 0 < value < math.inf:            # nan fails too
                self.error(section, name, key, 'must be a number greater than 0', value,
                           sub=sub)
                return None if default is _MISSING else default
        return value

    def choice(self, table, section, name, key, choices, default=_MISSING, sub=''):
        value = self.take(table, section, name, key, 'str', default, sub=sub)
        if value is not None and value not in choices:
            self.error(section, name, key, 'must be one of '
                       + ', '.join(repr(c) for c in choices), value, sub=sub)
            return None if default is _MISSING else default
        return value

    def size(self, table, section, name, key, default=_MISSING, zero_ok=False):
        if key not in table:
            return self.take(table, section, name, key, 'str', default)
        raw = table.pop(key)
        try:
            if isinstance(raw, (list, dict)):
                raise ValueError
            value = parse_size(raw)
        except ValueError:
            self.error(section, name, key, _SIZE_HINT, raw)
            return None if default is _MISSING else default
        if value <= 0 and not zero_ok:
            self.error(section, name, key, 'must be greater than 0', raw)
            return None if default is _MISSING else default
        return value

    def int_range(self, table, section, name, key, lo, hi, default=_MISSING,
                  kind='int'):
        value = self.take(table, section, name, key, kind, default)
        if value is not None and not lo <= value <= hi:
            self.error(section, name, key, f'must be between {lo} and {hi}', value)
            return None if default is _MISSING else default
        return value

    def leftovers(self, table: dict, section: str, name: str | None, valid, sub=''):
        """Every key not consumed is unknown (or a secret written inline)."""
        for key in table:
            if key in INLINE_SECRETS:
                self.error(section, name, key, 'secrets are not written inline: put it '
                           'in a file readable only by the monitoring user and set '
                           f'{INLINE_SECRETS[key]}', sub=sub)
            else:
                self.error(section, name, key, 'unknown key' + _suggest(key, valid),
                           sub=sub)

    # ---- the sections

    SECTIONS = ('defaults', 'timing', 'dom0', 'storage', 'target', 'domu')

    def cluster(self, data: dict) -> Cluster:
        for key in data:
            if key not in self.SECTIONS:
                line = self._header_line(key, None)
                where = f'{self.source}:{line}' if line else self.source
                self.errors.append(f'{where}: [{key}]: unknown section'
                                   + _suggest(key, self.SECTIONS))
        defaults = self.defaults(data.get('defaults', {}))
        timing = self.timing(data.get('timing', {}), defaults)
        dom0s = {n: d for n, d in self.named(data, 'dom0', self.dom0, defaults)}
        storage = {n: s for n, s in self.named(data, 'storage', self.storage_node)}
        targets = {n: t for n, t in self.named(data, 'target', self.target)}
        domus = {n: u for n, u in self.named(data, 'domu', self.domu)}
        # Only when every dom0 is surely a spare: a bad role is reported already.
        if all(d.role == 'spare' for d in dom0s.values()):
            self.errors.append(f'{self.source}: no active dom0: a cluster needs at least '
                               'one [dom0.NAME] with role = "active"')
        self.references(defaults, dom0s, storage, targets, domus)
        return Cluster(self.source, defaults, dom0s, targets, domus, storage, timing)

    def named(self, data: dict, section: str, build, *extra):
        """Yield (name, object) for each [section.NAME] table.

        Objects with errors are yielded too (with None where a value was bad) so
        the cross-section checks still run on them; `loads` raises anyway."""
        tables = data.get(section, {})
        if not isinstance(tables, dict):
            self.error(section, None, None,
                       f'expected [{section}.NAME] tables, got {tables!r}')
            return
        for name, table in tables.items():
            if not isinstance(table, dict):
                self.error(section, name, None, 'expected a table', table)
                continue
            if not NAME_RE.match(name):
                self.error(section, name, None, "bad name: use letters, digits, '.', "
                           "'_' and '-' (at most 64, starting with a letter or digit)")
            yield name, build(dict(table), name, *extra)

    def defaults(self, t) -> Defaults:
        if not isinstance(t, dict):
            self.error('defaults', None, None, 'expected a table', t)
            return Defaults()
        t = dict(t)
        d = Defaults()
        s = 'defaults'
        values = dict(
            toolstack=self.choice(t, s, None, 'toolstack', TOOLSTACKS, d.toolstack),
            toolstack_command=self.argv_prefix(t, s, None),
            ssh_user=self.take(t, s, None, 'ssh_user', 'str', d.ssh_user),
            ssh_port=self.int_range(t, s, None, 'ssh_port', 1, 65535, d.ssh_port),
            ssh_key=self.take(t, s, None, 'ssh_key', 'str', None),
            known_hosts=self.take(t, s, None, 'known_hosts', 'str', None),
            sudo=self.take(t, s, None, 'sudo', 'bool', d.sudo),
            dom0_reserve=self.size(t, s, None, 'dom0_reserve', d.dom0_reserve, True),
            timeout=self.take(t, s, None, 'timeout', 'number', d.timeout),
            state_db=self.take(t, s, None, 'state_db', 'str', d.state_db),
            max_restart=self.int_range(t, s, None, 'max_restart', 0, 1000, d.max_restart),
            restart_window=self.take(t, s, None, 'restart_window', 'number',
                                     d.restart_window),
            dedupe_window=self.take(t, s, None, 'dedupe_window', 'number',
                                    d.dedupe_window),
            create_parallel=self.int_range(t, s, None, 'create_parallel', 1, 256,
                                           d.create_parallel),
            split_brain_recheck=self.int_range(t, s, None, 'split_brain_recheck', 0.5, 60,
                                               d.split_brain_recheck, kind='number'),
            reboot_grace=self.int_range(t, s, None, 'reboot_grace', 0, 3600,
                                        d.reboot_grace, kind='number'),
            fence_unreachable=self.take(t, s, None, 'fence_unreachable', 'bool',
                                        d.fence_unreachable),
            nagios_command_file=self.take(t, s, None, 'nagios_command_file', 'str', None),
            cluster_host=self.take(t, s, None, 'cluster_host', 'str', d.cluster_host),
            failover_service=self.take(t, s, None, 'failover_service', 'str',
                                       d.failover_service),
            allow_active_as_target=self.take(t, s, None, 'allow_active_as_target', 'bool',
                                             d.allow_active_as_target),
        )
        self.leftovers(t, s, None, Defaults.__dataclass_fields__)
        if values['cluster_host'] and not NAME_RE.match(values['cluster_host']):
            self.error(s, None, 'cluster_host', "bad name: use letters, digits, '.', "
                       "'_' and '-'", values['cluster_host'])
        return Defaults(**values)

    # [timing] keys by kind: (lowest, highest) whole seconds or attempts
    TIMING_RANGES = {
        'interval': (1, 86400), 'attempts': (1, 100), 'timeout': (1, 3600),
        'delay': (0, 604800),           # 0 means "none" / "notify once" to Nagios
    }

    @staticmethod
    def timing_kind(key: str) -> str:
        if key.endswith('_attempts'):
            return 'attempts'
        if key.endswith('_timeout'):
            return 'timeout'
        if key in ('domu_first_notification_delay', 'notification_interval'):
            return 'delay'
        return 'interval'

    def timing(self, t, d: Defaults) -> Timing:
        """Every key optional; check_timeout follows [defaults] timeout (rounded up)
        and dom0_check_timeout stays at most that, unless written here."""
        s = 'timing'
        if not isinstance(t, dict):
            self.error(s, None, None, 'expected a table', t)
            return Timing()
        t = dict(t)
        check_timeout = math.ceil(d.timeout)
        base = Timing(check_timeout=check_timeout,
                      dom0_check_timeout=min(Timing.dom0_check_timeout, check_timeout))
        values = {}
        for key in Timing.__dataclass_fields__:
            lo, hi = self.TIMING_RANGES[self.timing_kind(key)]
            values[key] = self.int_range(t, s, None, key, lo, hi, getattr(base, key))
        self.leftovers(t, s, None, Timing.__dataclass_fields__)
        return Timing(**values)

    def argv_prefix(self, t, section, name):
        value = self.take(t, section, name, 'toolstack_command', 'str', None)
        if value is not None:
            try:
                if not shlex.split(value):
                    raise ValueError('empty')
            except ValueError as e:
                self.error(section, name, 'toolstack_command',
                           f'not a shell-quoted command: {e}', value)
                return None
        return value

    DOM0_KEYS = ('address', 'role', 'port', 'ssh_user', 'ssh_key', 'known_hosts',
                 'toolstack', 'toolstack_command', 'fencing')

    def dom0(self, t: dict, name: str, d: Defaults) -> Dom0 | None:
        s = 'dom0'
        address = self.take(t, s, name, 'address', 'str')
        role = self.choice(t, s, name, 'role', ROLES)
        port = self.int_range(t, s, name, 'port', 1, 65535, d.ssh_port)
        ssh_user = self.take(t, s, name, 'ssh_user', 'str', d.ssh_user)
        ssh_key = self.take(t, s, name, 'ssh_key', 'str', d.ssh_key)
        known_hosts = self.take(t, s, name, 'known_hosts', 'str', d.known_hosts)
        toolstack = self.choice(t, s, name, 'toolstack', TOOLSTACKS, d.toolstack)
        toolstack_command = self.argv_prefix(t, s, name) or d.toolstack_command
        fencing = self.fencing(t.pop('fencing', _MISSING), name)
        self.leftovers(t, s, name, self.DOM0_KEYS)
        if address is not None and (not address or re.search(r'\s', address)):
            self.error(s, name, 'address', 'not a host name or address', address)
        return Dom0(name, address, role, port, ssh_user, ssh_key, known_hosts,
                    fencing, toolstack, toolstack_command)

    def fencing(self, raw, name: str) -> tuple[FenceMethod, ...]:
        s = 'dom0'
        if raw is _MISSING:
            self.error(s, name, 'fencing', 'missing (required: a list of methods, or '
                       '"none" written explicitly to run without fencing)')
            return ()
        if raw in ('none', 'ssh'):
            return (FenceMethod(raw),)
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
            self.error(s, name, 'fencing', 'expected a list of methods '
                       '(e.g. [{ method = "agent", agent = "fence_ipmilan", ... }]) '
                       'or "none"', raw)
            return ()
        if not raw:
            self.error(s, name, 'fencing', 'empty: write fencing = "none" to run '
                       'without fencing', raw)
            return ()
        chain = []
        for i, m in enumerate(raw):
            sub, m = f'fencing[{i}]', dict(m)
            method = self.choice(m, s, name, 'method', ('agent', 'ssh', 'none'), sub=sub)
            timeout = self.take(m, s, name, 'timeout', 'number', 30.0, sub=sub)
            if method == 'none' and len(raw) > 1:
                self.error(s, name, 'method', "'none' cannot be part of a chain: "
                           'write fencing = "none"', method, sub=sub)
            if method == 'agent':
                chain.append(self.fence_agent(m, name, sub, timeout))
            elif method is not None:        # a bad method: its other keys mean nothing
                self.leftovers(m, s, name, ('method', 'timeout'), sub=sub)
                chain.append(FenceMethod(method, timeout=timeout))
        return tuple(chain)

    def fence_agent(self, m: dict, name: str, sub: str, timeout: float) -> FenceMethod:
        """An agent's own options are free-form key=value lines for its stdin."""
        s = 'dom0'
        agent = self.take(m, s, name, 'agent', 'str', sub=sub)
        password_file = self.take(m, s, name, 'password_file', 'str', None, sub=sub)
        if agent is not None and not re.fullmatch(r'fence_[A-Za-z0-9_]+|/\S+', agent):
            self.error(s, name, 'agent', "not a fence agent (a 'fence_*' name or an "
                       'absolute path)', agent, sub=sub)
        from xenha.fencing import REFUSED_PARAMS   # what fencing would refuse at failover
        params = []
        for key in [k for k in m if k not in INLINE_SECRETS]:
            value = m.pop(key)
            if key == 'action':
                self.error(s, name, key, 'set by xenha at fencing time (off, then '
                           'status): remove it', value, sub=sub)
            elif key in REFUSED_PARAMS:
                self.error(s, name, key, f'refused ({REFUSED_PARAMS[key]}): fencing '
                           'would fail with it when this dom0 dies', value, sub=sub)
            elif isinstance(value, str) and ('\n' in value or '\r' in value):
                self.error(s, name, key, 'a fence agent option may not contain a line '
                           'break', value, sub=sub)
            elif not re.fullmatch(r'[a-z][a-z0-9_-]*', key):
                self.error(s, name, key, 'not a fence agent option name', value, sub=sub)
            elif isinstance(value, bool):
                params.append((key, '1' if value else '0'))
            elif isinstance(value, (str, int, float)):
                params.append((key, str(value)))
            else:
                self.error(s, name, key, 'expected a string, number or true/false',
                           value, sub=sub)
        self.leftovers(m, s, name, (), sub=sub)     # only inline secrets are left
        return FenceMethod('agent', agent, tuple(params), password_file, timeout)

    def storage_node(self, t: dict, name: str) -> StorageNode:
        address = self.take(t, 'storage', name, 'address', 'str')
        self.leftovers(t, 'storage', name, ('address',))
        return StorageNode(name, address)

    ISCSI_KEYS = ('portal', 'iqn', 'lun', 'chap_user', 'chap_secret_file')
    AOE_KEYS = ('shelf', 'slot', 'interface')

    def target(self, t: dict, name: str) -> Target:
        s = 'target'
        kind = self.choice(t, s, name, 'kind', KINDS)
        storage = self.take(t, s, name, 'storage', 'str')
        device = self.take(t, s, name, 'device', 'str', None)
        mine, other = ((self.ISCSI_KEYS, self.AOE_KEYS) if kind == 'iscsi'
                       else (self.AOE_KEYS, self.ISCSI_KEYS) if kind == 'aoe'
                       else (self.ISCSI_KEYS + self.AOE_KEYS, ()))  # bad kind: said once
        for key in other:
            if key in t:
                self.error(s, name, key, f'not used by an {kind!r} target', t.pop(key))
        f: dict[str, Any] = {}
        if kind == 'iscsi':
            portal = self.take(t, s, name, 'portal', 'str')
            if portal is not None:
                try:
                    _split_portal(portal)
                except ValueError:
                    self.error(s, name, 'portal', "expected 'host' or 'host:port'", portal)
            iqn = self.take(t, s, name, 'iqn', 'str')
            if iqn is not None and not re.fullmatch(r'(iqn|eui|naa)\.\S+', iqn):
                self.error(s, name, 'iqn', "not an iSCSI name (iqn.…, eui.… or naa.…)",
                           iqn)
            # Required: tgt numbers data LUNs from 1, LIO from 0; no default is safe.
            lun = self.int_range(t, s, name, 'lun', 0, 16383)
            chap_user = self.take(t, s, name, 'chap_user', 'str', None)
            chap_file = self.take(t, s, name, 'chap_secret_file', 'str', None)
            if (chap_user is None) != (chap_file is None) and 'chap_secret' not in t:
                self.error(s, name, 'chap_user' if chap_user is None else
                           'chap_secret_file', 'missing (CHAP needs both chap_user and '
                           'chap_secret_file)')
            f = dict(portal=portal, iqn=iqn, lun=lun if lun is not None else 0,
                     chap_user=chap_user, chap_secret_file=chap_file)
        elif kind == 'aoe':
            f = dict(shelf=self.int_range(t, s, name, 'shelf', 0, 65534),  # 0xffff: broadcast
                     slot=self.int_range(t, s, name, 'slot', 0, 254),      # 0xff: broadcast
                     interface=self.take(t, s, name, 'interface', 'str'))
            if f['interface'] is not None and not re.fullmatch(r'[^\s/:]{1,15}',
                                                               f['interface']):
                self.error(s, name, 'interface', 'not a network interface name',
                           f['interface'])
        for key in mine if kind is None else ():
            t.pop(key, None)
        flags = {k: self.take(t, s, name, k, 'bool', False) for k in ('scratch', 'perf')}
        self.leftovers(t, s, name, ('kind', 'storage', 'device', 'scratch', 'perf') + mine)
        return Target(name, kind, storage=storage, device_path=device, **flags, **f)

    DOMU_KEYS = ('config', 'memory', 'vcpus', 'home', 'targets', 'priority', 'ha',
                 'type', 'kernel', 'ramdisk', 'extra', 'bootloader', 'vif', 'on_crash')

    def domu(self, t: dict, name: str) -> DomU:
        s = 'domu'
        config = self.take(t, s, name, 'config', 'str')
        if config is not None and not config.startswith('/'):
            self.error(s, name, 'config', 'must be an absolute path (on the dom0s)', config)
        memory = self.size(t, s, name, 'memory')
        if memory is not None and memory % MiB:
            self.error(s, name, 'memory', 'must be a whole number of MiB (Xen counts '
                       'domU memory in MiB)', memory)
        vcpus = self.int_range(t, s, name, 'vcpus', 1, 512, 1)
        home = self.take(t, s, name, 'home', 'str')
        targets = self.take(t, s, name, 'targets', 'strlist')
        priority = self.take(t, s, name, 'priority', 'int', 0)
        ha = self.take(t, s, name, 'ha', 'bool', True)
        xen = dict(type=self.choice(t, s, name, 'type', DOMU_TYPES, 'pv'),
                   kernel=self.take(t, s, name, 'kernel', 'str', None),
                   ramdisk=self.take(t, s, name, 'ramdisk', 'str', None),
                   extra=self.take(t, s, name, 'extra', 'str', None),
                   bootloader=self.take(t, s, name, 'bootloader', 'str', None),
                   vif=tuple(self.take(t, s, name, 'vif', 'strlist', [])),
                   on_crash=self.choice(t, s, name, 'on_crash', ON_CRASH, 'destroy'))
        self.leftovers(t, s, name, self.DOMU_KEYS)
        return DomU(name, config, memory, vcpus, home, tuple(targets or ()), priority,
                    ha, **xen)

    # ---- across sections

    def references(self, defaults, dom0s, storage, targets, domus):
        """Names that must exist, and host names that must not clash.

        A value that was already reported as bad is None here and skipped."""
        hosts: dict[str, str] = {defaults.cluster_host: '[defaults] cluster_host'}
        for section, objs in (('dom0', dom0s), ('storage', storage), ('domu', domus)):
            for name in objs:
                if name in hosts:
                    self.error(section, name, None, f'name already used by {hosts[name]} '
                               '(dom0s, storage nodes, domUs and the cluster host are all '
                               'Nagios hosts: names must be unique)')
                else:
                    hosts[name] = f'[{section}.{_toml_name(name)}]'
        seen: dict[tuple, str] = {}
        for d in dom0s.values():
            # One machine under two names could "fail over" onto itself.
            if d.address is not None and (d.address, d.port) in seen:
                self.error('dom0', d.name, 'address', 'also the address of [dom0.'
                           f'{_toml_name(seen[d.address, d.port])}]', d.address)
            seen.setdefault((d.address, d.port), d.name)
        disks: dict[tuple, str] = {}
        for t in targets.values():
            if t.storage is not None and t.storage not in storage:
                self.error('target', t.name, 'storage', 'no such storage node'
                           + _suggest(t.storage, storage), t.storage)
            # One disk under two names would let two domUs write it.
            try:
                disk = (('aoe', t.shelf, t.slot) if t.kind == 'aoe' else
                        ('iscsi', t.portal and t.host, t.portal and t.port, t.iqn, t.lun))
            except ValueError:                       # a bad portal, reported already
                continue
            if None not in disk and disk in disks:
                self.error('target', t.name, None, f'the same disk as [target.'
                           f'{_toml_name(disks[disk])}]')
            disks.setdefault(disk, t.name)
        configs: dict[str, str] = {}
        users: dict[str, str] = {}
        for u in domus.values():
            if u.home is not None and u.home not in dom0s:
                self.error('domu', u.name, 'home', 'no such dom0'
                           + _suggest(u.home, dom0s), u.home)
            elif u.home is not None and dom0s[u.home].role == 'spare':
                self.error('domu', u.name, 'home', "is a spare: a domU's home must be "
                           'an active dom0 (spares keep their memory free for failover)',
                           u.home)
            for i, tname in enumerate(u.targets):
                if tname not in targets:
                    self.error('domu', u.name, f'targets[{i}]', 'no such target'
                               + _suggest(tname, targets), tname)
                elif tname in users:
                    self.error('domu', u.name, f'targets[{i}]', 'also used by [domu.'
                               f'{_toml_name(users[tname])}] (a disk written by two '
                               'domUs is corrupted)', tname)
                else:
                    users[tname] = u.name
            if u.config is not None and u.config in configs:
                self.error('domu', u.name, 'config', 'also used by [domu.'
                           f'{_toml_name(configs[u.config])}]', u.config)
            elif u.config is not None:
                configs[u.config] = u.name
