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
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from xenha import devices, grammar, units
from xenha.units import MiB

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
# The files that hold secrets: the only keys naming one that are not one.
SECRET_FILE_KEYS = ('password_file', 'chap_secret_file')
# What in a key says it holds a secret, whatever its case or separators: fence
# agents' passwd, snmp_priv_passwd, community, hexadecimal_kg, cloud agents'
# secret_key, token, apikey …  (a whole part, or anywhere in the squeezed key)
_SECRET_PARTS = ('pass', 'pwd', 'psk', 'kg', 'pin')
_SECRET_INFIXES = ('passw', 'passphrase', 'secret', 'community', 'token', 'apikey',
                   'accesskey', 'privatekey', 'credential', 'hexadecimalkg')


def secret_key(key: str) -> bool:
    """Does this key (of any table, at any depth) name an inline secret?

    >>> [secret_key(k) for k in ('Password', 'password ', 'BMC-Password',
    ...  'snmp_priv_passwd', 'community', 'passwd_script', 'password_file', 'ip',
    ...  'passive')]
    [True, True, True, True, True, True, False, False, False]
    """
    norm = re.sub(r'[\s\-.]+', '_', str(key).strip().lower()).strip('_')
    if norm.endswith(('_file', '_path')):     # names the file that holds it
        return False
    squeezed = norm.replace('_', '')
    return (any(p in _SECRET_PARTS for p in norm.split('_'))
            or any(i in squeezed for i in _SECRET_INFIXES))


MAX_BYTES = 4 * 1024 * 1024     # an inventory larger than this is not one
MAX_DEPTH = 8                   # tables and lists inside each other
MAX_ERRORS = 200                # reported at once; the rest are counted


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
    san_netns: str | None = None              # network namespace of our SAN interface
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
    method: str                               # 'agent' | 'ssh' | 'storage' | 'none'
    agent: str | None = None                  # e.g. 'fence_ipmilan'
    params: tuple[tuple[str, str], ...] = ()  # key=value stdin lines, never a password;
                                              # storage: (('initiator_name', IQN),)
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
    san_mac: str | None = None                # storage fencing: its AoE SAN MAC
    initiator_name: str | None = None         # its iSCSI initiator name (reports)


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
            return devices.aoe_device(self.shelf, self.slot)
        return devices.iscsi_device(self.host, self.port, self.iqn, self.lun)


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
    """Read and validate the TOML file at `path`; raise InventoryError.

    At most MAX_BYTES of a regular file are read: an inventory that is a
    device, a FIFO or a runaway file is an error at once, not a hang."""
    from xenha import files
    shown = show(str(path))
    try:
        text = files.read_bytes(path, MAX_BYTES).decode('utf-8')
    except OSError as e:
        raise InventoryError([f'{shown}: cannot read: {e.strerror or e}']) from None
    except UnicodeDecodeError as e:
        raise InventoryError([f'{shown}: not UTF-8 text: {e.reason}']) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = '<string>') -> Cluster:
    """Parse and validate TOML text; raise InventoryError listing every problem."""
    shown = show(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r'at line (\d+)', str(e))
        where = f'{shown}:{m.group(1)}' if m else shown
        raise InventoryError([f'{where}: TOML syntax error: {e}']) from None
    except RecursionError:
        raise InventoryError([f'{shown}: nested too deeply (at most {MAX_DEPTH} tables '
                              'or lists inside each other)']) from None
    v = _Validator(text, source)
    if v.secrets_and_depth(data):
        v.cluster(data)
    if v.errors:
        # In file order: errors are found section by section, read top to bottom.
        prefix = re.compile(re.escape(shown) + r':(\d+): ')
        line = lambda e: int(m.group(1)) if (m := prefix.match(e)) else 0
        errors = sorted(v.errors, key=line)
        if len(errors) > MAX_ERRORS:
            errors = errors[:MAX_ERRORS] + [f'{shown}: … and {len(errors) - MAX_ERRORS} '
                                            'more errors']
        raise InventoryError(errors)
    return v.built


def show(value: str, limit: int = 200) -> str:
    """`value` for a one-line message: control characters escaped, cut at `limit`."""
    value = str(value)
    if grammar.CONTROL.search(value):
        value = json.dumps(value)[1:-1]
    return value if len(value) <= limit else value[:limit] + '…'


def _shown(value: Any) -> str:
    """repr() of a value for an error: one line, bounded, secrets never shown."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + '…'


class Redacted:
    """Stands for an inline secret once it is found: never printed, never used."""
    __slots__ = ()

    def __repr__(self) -> str:
        return '<secret, not shown>'


# storage fencing identities: a unicast MAC (written with ':'), an iSCSI name
# (RFC 3720 3.2.6: iqn.YYYY-MM.reversed.domain[:anything], eui. + 16 hex,
# naa. + 16 or 32 hex; at most 223 bytes, no spaces or control characters)
MAC_RE = re.compile(r'^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$')
IQN_RE = re.compile(r'^(?:iqn\.\d{4}-(?:0[1-9]|1[0-2])\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?'
                    r'(?::[\x21-\x7e]+)?|eui\.[0-9A-Fa-f]{16}|naa\.(?:[0-9A-Fa-f]{16}){1,2})$')


def _mac_problem(value: str) -> str | None:
    if not MAC_RE.match(value):
        return "not a MAC address (six hex pairs with ':', e.g. '52:54:00:12:34:56')"
    first = int(value[:2], 16)
    if first & 1:
        return 'a multicast or broadcast address, not an interface\'s own MAC'
    if value.replace(':', '') == '0' * 12:
        return 'the all-zero MAC is no interface\'s address'
    return None


def _netns_problem(value: str) -> str | None:
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}', value):
        return "not a network namespace name (letters, digits, '.', '_', '-')"
    return None


def _iqn_problem(value: str) -> str | None:
    if len(value.encode()) > 223 or not IQN_RE.match(value):
        return ("not an iSCSI initiator name (iqn.YYYY-MM.reversed.domain[:name], "
                "eui.<16 hex> or naa.<16 or 32 hex>, at most 223 bytes)")
    return None


def parse_size(text_or_int) -> int:
    """Bytes from '512M', '4G', '1.5G', '2048' or 2048 (plain numbers are MiB;
    no P: nothing in a cluster is that big): see xenha.units.

    >>> parse_size('1.5G'), parse_size(2048) == parse_size('2G')
    (1610612736, True)
    """
    return units.parse_size(text_or_int, plain=MiB, suffixes='KMGT')


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
    return grammar.portal(portal)


def _toml_name(name: str) -> str:
    name = str(name)
    return name if re.fullmatch(r'[A-Za-z0-9_-]+', name) else json.dumps(name)[:120]


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(sorted(choices))})" if choices else ''


class _Validator:
    """Walks the parsed TOML once, building the model and collecting errors."""

    def __init__(self, text: str, source: str):
        self.lines = text.split('\n')    # TOML's own line ends (not U+2028 &c.)
        self.source = source
        self.shown = show(source)
        self.errors: list[str] = []
        self.built: Cluster | None = None

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
        if m and start and name is not None:
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
        end = next((i for i in range(start, len(self.lines))
                    if re.match(r'^\s*\[', self.lines[i])), len(self.lines))
        for pattern in (rf'^\s*(?:{k}|"{k}")\s*=',              # key = …
                        rf'[{{,]\s*(?:{k}|"{k}"|\'{k}\')\s*='):  # { …, key = … }
            for i in range(start, end):
                if re.search(pattern, self.lines[i]):
                    return i + 1
        return start

    def error(self, section: str, name: str | None, key: str | None, message: str,
              value: Any = _MISSING, sub: str = '') -> None:
        """Record '[section.name]sub key = value: message' with its line if found."""
        if key is not None:
            line = self._key_line(section, name, key.split('[')[0], sub)
        else:
            line = self._header_line(section, name)
        place = f'[{_toml_name(section)}]' if name is None else \
            f'[{_toml_name(section)}.{_toml_name(name)}]'
        what = ' '.join(p for p in (place, sub, show(key or '', 80)) if p)
        if value is not _MISSING:
            what += f' = {_shown(value)}'
        where = f'{self.shown}:{line}' if line else self.shown
        self.errors.append(f'{where}: {what}: {message}')

    # ---- before anything else: inline secrets (any spelling, any depth), depth

    def secrets_and_depth(self, data: dict) -> bool:
        """Replace every inline secret by Redacted (reported once, by key, never
        by value); False (and an error) when the file nests too deeply to walk."""
        stack = [(data, ())]
        while stack:
            obj, path = stack.pop()
            if len(path) > MAX_DEPTH:
                self.errors.append(f'{self.shown}: {self.place(path)}: nested too '
                                   f'deeply (at most {MAX_DEPTH} tables or lists inside '
                                   'each other)')
                return False
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for k, value in list(items):
                if isinstance(obj, dict) and secret_key(k):
                    obj[k] = Redacted()
                    self.secret(path + (k,))
                elif isinstance(value, (dict, list)):
                    stack.append((value, path + (k,)))
        return True

    @staticmethod
    def place(path) -> str:
        """('dom0', 'h1', 'fencing', 0, 'x') → '[dom0.h1] fencing[0].x'."""
        named = path[0] in _Validator.SECTIONS[2:] and len(path) > 2
        head = path[:2] if named else path[:1]
        rest = ''
        for p in path[len(head):]:
            rest += f'[{p}]' if isinstance(p, int) else f'.{show(p, 80)}'
        head = '.'.join(_toml_name(h) for h in head)
        return f'[{head}] {rest.lstrip(".")}'.rstrip()

    def secret(self, path) -> None:
        key, inner = path[-1], path[:-1]
        if inner and inner[0] in ('dom0',) and 'fencing' in inner:
            pointer = 'password_file'
        elif inner and inner[0] == 'target':
            pointer = 'chap_secret_file'
        else:
            pointer = ('password_file (fence methods) or chap_secret_file (iSCSI '
                       'targets)')
        message = ('secrets are not written inline: put it in a file readable only by '
                   f'the monitoring user and set {pointer}')
        named = inner and inner[0] in self.SECTIONS[2:] and len(inner) >= 2
        section = inner[0] if inner else str(key)
        name = inner[1] if named else None
        subpath = inner[2:] if named else inner[1:]
        sub = ''
        for p in subpath:
            sub += f'[{p}]' if isinstance(p, int) else f'.{show(p, 80)}'
        sub = sub.lstrip('.')
        if not inner:                       # a key at the top of the file
            self.errors.append(f'{self.shown}:{self._bare_key_line(key) or "?"}: '
                               f'{show(key, 80)}: {message}'.replace(':?:', ':'))
            return
        self.error(section, name, key, message, sub=sub)

    def _bare_key_line(self, key) -> int | None:
        k = re.escape(str(key))
        for i, line in enumerate(self.lines):
            if re.match(rf'^\s*(?:{k}|"{k}"|\'{k}\')\s*=', line):
                return i + 1
        return None

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

    def string(self, table, section, name, key, check, default=_MISSING, sub=''):
        """A string of one kind (a grammar of xenha.grammar): else an error."""
        value = self.take(table, section, name, key, 'str', default, sub=sub)
        if value is not None and value is not default:
            why = check(value)
            if why:
                self.error(section, name, key, why, value, sub=sub)
                return None if default is _MISSING else default
        return value

    def duration(self, table, section, name, key, hi, default=_MISSING, sub=''):
        """Seconds: a number greater than 0 and at most `hi`."""
        value = self.take(table, section, name, key, 'number', default, sub=sub)
        if value is not None and value is not default and value > hi:
            self.error(section, name, key, f'must be at most {hi:g} seconds', value,
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
            if isinstance(table[key], Redacted):
                continue                    # reported (by key only) already
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
            if key not in self.SECTIONS and not isinstance(data[key], Redacted):
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
        self.storage_fencing(dom0s, targets, domus)
        self.built = Cluster(self.source, defaults, dom0s, targets, domus, storage, timing)
        return self.built

    def named(self, data: dict, section: str, build, *extra):
        """Yield (name, object) for each [section.NAME] table.

        Objects with errors are yielded too (with None where a value was bad) so
        the cross-section checks still run on them; `loads` raises anyway."""
        tables = data.get(section, {})
        if not isinstance(tables, dict):
            self.error(section, None, None,
                       f'expected [{section}.NAME] tables, got {_shown(tables)}')
            return
        check = grammar.domain if section == 'domu' else grammar.name
        for name, table in tables.items():
            if not isinstance(table, dict):
                self.error(section, name, None, 'expected a table', table)
                continue
            why = check(name)
            if why:
                self.error(section, name, None, why)
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
            ssh_user=self.string(t, s, None, 'ssh_user', grammar.user, d.ssh_user),
            ssh_port=self.int_range(t, s, None, 'ssh_port', 1, 65535, d.ssh_port),
            ssh_key=self.string(t, s, None, 'ssh_key', grammar.path, None),
            known_hosts=self.string(t, s, None, 'known_hosts', grammar.path, None),
            sudo=self.take(t, s, None, 'sudo', 'bool', d.sudo),
            dom0_reserve=self.size(t, s, None, 'dom0_reserve', d.dom0_reserve, True),
            timeout=self.duration(t, s, None, 'timeout', 3600, d.timeout),
            state_db=self.string(t, s, None, 'state_db', grammar.path, d.state_db),
            max_restart=self.int_range(t, s, None, 'max_restart', 0, 1000, d.max_restart),
            restart_window=self.duration(t, s, None, 'restart_window', 30 * 86400,
                                         d.restart_window),
            dedupe_window=self.duration(t, s, None, 'dedupe_window', 30 * 86400,
                                        d.dedupe_window),
            create_parallel=self.int_range(t, s, None, 'create_parallel', 1, 256,
                                           d.create_parallel),
            split_brain_recheck=self.int_range(t, s, None, 'split_brain_recheck', 0.5, 60,
                                               d.split_brain_recheck, kind='number'),
            reboot_grace=self.int_range(t, s, None, 'reboot_grace', 0, 3600,
                                        d.reboot_grace, kind='number'),
            fence_unreachable=self.take(t, s, None, 'fence_unreachable', 'bool',
                                        d.fence_unreachable),
            san_netns=self.grammar(t, s, None, 'san_netns', _netns_problem),
            nagios_command_file=self.string(t, s, None, 'nagios_command_file',
                                            grammar.path, None),
            cluster_host=self.string(t, s, None, 'cluster_host', grammar.name,
                                     d.cluster_host),
            failover_service=self.string(t, s, None, 'failover_service', grammar.service,
                                         d.failover_service),
            allow_active_as_target=self.take(t, s, None, 'allow_active_as_target', 'bool',
                                             d.allow_active_as_target),
        )
        self.leftovers(t, s, None, Defaults.__dataclass_fields__)
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
        return self.string(t, section, name, 'toolstack_command', grammar.argv, None)

    DOM0_KEYS = ('address', 'role', 'port', 'ssh_user', 'ssh_key', 'known_hosts',
                 'toolstack', 'toolstack_command', 'fencing', 'san_mac', 'initiator_name')

    def grammar(self, t, section, name, key, problem, sub=''):
        """An optional string key checked by `problem(value)` -> message or None."""
        value = self.take(t, section, name, key, 'str', None, sub=sub)
        if value is not None and (why := problem(value)):
            self.error(section, name, key, why, value, sub=sub)
            return None
        return value

    def dom0(self, t: dict, name: str, d: Defaults) -> Dom0 | None:
        s = 'dom0'
        # the address reaches Nagios' /bin/sh as $HOSTADDRESS$: a host name or an
        # IP address, nothing else ($(…), `…`, ; and blanks never get through)
        address = self.string(t, s, name, 'address', grammar.host)
        role = self.choice(t, s, name, 'role', ROLES)
        port = self.int_range(t, s, name, 'port', 1, 65535, d.ssh_port)
        ssh_user = self.string(t, s, name, 'ssh_user', grammar.user, d.ssh_user)
        ssh_key = self.string(t, s, name, 'ssh_key', grammar.path, d.ssh_key)
        known_hosts = self.string(t, s, name, 'known_hosts', grammar.path, d.known_hosts)
        toolstack = self.choice(t, s, name, 'toolstack', TOOLSTACKS, d.toolstack)
        toolstack_command = self.argv_prefix(t, s, name) or d.toolstack_command
        fencing = self.fencing(t.pop('fencing', _MISSING), name)
        san_mac = self.grammar(t, s, name, 'san_mac', _mac_problem)
        initiator_name = self.grammar(t, s, name, 'initiator_name', _iqn_problem)
        self.leftovers(t, s, name, self.DOM0_KEYS)
        return Dom0(name, address, role, port, ssh_user, ssh_key, known_hosts,
                    fencing, toolstack, toolstack_command,
                    san_mac.lower() if san_mac else None, initiator_name)

    def fencing(self, raw, name: str) -> tuple[FenceMethod, ...]:
        s = 'dom0'
        if raw is _MISSING:
            self.error(s, name, 'fencing', 'missing (required: a list of methods, or '
                       '"none" written explicitly to run without fencing)')
            return ()
        if raw in ('none', 'ssh', 'storage'):
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
            method = self.choice(m, s, name, 'method', ('agent', 'ssh', 'storage', 'none'),
                                 sub=sub)
            timeout = self.duration(m, s, name, 'timeout', 3600, 30.0, sub=sub)
            if method == 'none' and len(raw) > 1:
                self.error(s, name, 'method', "'none' cannot be part of a chain: "
                           'write fencing = "none"', method, sub=sub)
            if method == 'agent':
                chain.append(self.fence_agent(m, name, sub, timeout))
            elif method == 'storage':
                # who revokes: the monitoring node's initiator name (default xenha's)
                iqn = self.grammar(m, s, name, 'initiator_name', _iqn_problem, sub=sub)
                self.leftovers(m, s, name, ('method', 'timeout', 'initiator_name'), sub=sub)
                chain.append(FenceMethod('storage', params=(('initiator_name', iqn),)
                                         if iqn else (), timeout=timeout))
            elif method is not None:        # a bad method: its other keys mean nothing
                self.leftovers(m, s, name, ('method', 'timeout'), sub=sub)
                chain.append(FenceMethod(method, timeout=timeout))
        return tuple(chain)

    def fence_agent(self, m: dict, name: str, sub: str, timeout: float) -> FenceMethod:
        """An agent's own options are free-form key=value lines for its stdin."""
        s = 'dom0'
        agent = self.string(m, s, name, 'agent', grammar.fence_agent, sub=sub)
        password_file = self.string(m, s, name, 'password_file', grammar.path, None,
                                    sub=sub)
        from xenha.fencing import REFUSED_PARAMS   # what fencing would refuse at failover
        params = []
        for key in [k for k in m if k not in INLINE_SECRETS
                    and not isinstance(m[k], Redacted)]:
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
            elif isinstance(value, str) and grammar.text(value):
                self.error(s, name, key, grammar.text(value), value, sub=sub)
            elif isinstance(value, float) and not math.isfinite(value):
                self.error(s, name, key, 'not a finite number', value, sub=sub)
            elif not re.fullmatch(r'[a-z][a-z0-9_-]{0,63}', key):
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

    def vifs(self, t: dict, name: str) -> tuple[str, ...]:
        specs = self.take(t, 'domu', name, 'vif', 'strlist', [])
        good = []
        for i, spec in enumerate(specs or []):
            why = grammar.vif(spec)
            if why:
                self.error('domu', name, f'vif[{i}]', why, spec)
            else:
                good.append(spec)
        return tuple(good)

    def storage_node(self, t: dict, name: str) -> StorageNode:
        address = self.string(t, 'storage', name, 'address', grammar.host)
        self.leftovers(t, 'storage', name, ('address',))
        return StorageNode(name, address)

    ISCSI_KEYS = ('portal', 'iqn', 'lun', 'chap_user', 'chap_secret_file')
    AOE_KEYS = ('shelf', 'slot', 'interface')

    def target(self, t: dict, name: str) -> Target:
        s = 'target'
        kind = self.choice(t, s, name, 'kind', KINDS)
        storage = self.take(t, s, name, 'storage', 'str')
        device = self.string(t, s, name, 'device', grammar.device, None)
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
                except ValueError as exc:
                    self.error(s, name, 'portal', str(exc), portal)
                    portal = None
            iqn = self.string(t, s, name, 'iqn', grammar.iqn)
            # Required: tgt numbers data LUNs from 1, LIO from 0; no default is safe.
            lun = self.int_range(t, s, name, 'lun', 0, 16383)
            # both or neither, as written (a bad value of one is reported once)
            written = ('chap_user' in t, 'chap_secret_file' in t)
            chap_user = self.string(t, s, name, 'chap_user', grammar.chap_user, None)
            chap_file = self.string(t, s, name, 'chap_secret_file', grammar.path, None)
            if written[0] != written[1] and 'chap_secret' not in t:
                self.error(s, name, 'chap_user' if not written[0] else
                           'chap_secret_file', 'missing (CHAP needs both chap_user and '
                           'chap_secret_file)')
            f = dict(portal=portal, iqn=iqn, lun=lun if lun is not None else 0,
                     chap_user=chap_user, chap_secret_file=chap_file)
        elif kind == 'aoe':
            f = dict(shelf=self.int_range(t, s, name, 'shelf', 0, 65534),  # 0xffff: broadcast
                     slot=self.int_range(t, s, name, 'slot', 0, 254),      # 0xff: broadcast
                     interface=self.take(t, s, name, 'interface', 'str'))
            if f['interface'] is not None and grammar.interface(f['interface']):
                self.error(s, name, 'interface', 'not a network interface name',
                           f['interface'])
                f['interface'] = None
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
            config = None
        elif config is not None and grammar.path(config):
            self.error(s, name, 'config', grammar.path(config), config)
            config = None
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
                   kernel=self.string(t, s, name, 'kernel', grammar.path, None),
                   ramdisk=self.string(t, s, name, 'ramdisk', grammar.path, None),
                   extra=self.string(t, s, name, 'extra', grammar.text, None),
                   bootloader=self.string(t, s, name, 'bootloader', grammar.program,
                                          None),
                   vif=self.vifs(t, name),
                   on_crash=self.choice(t, s, name, 'on_crash', ON_CRASH, 'destroy'))
        self.leftovers(t, s, name, self.DOMU_KEYS)
        return DomU(name, config, memory, vcpus, home, tuple(targets or ()), priority,
                    ha, **xen)

    # ---- across sections

    def storage_fencing(self, dom0s, targets, domus):
        """Storage fencing of AoE disks takes a dom0's MAC out of a reserve
        list and keeps the others': with a "storage" method anywhere and a
        guest on an AoE target, every dom0 needs its san_mac, each its own."""
        aoe_used = any(targets[t].kind == 'aoe' for u in domus.values()
                       for t in u.targets if t in targets)
        fenced = [d.name for d in dom0s.values()
                  if any(m.method == 'storage' for m in d.fencing)]
        if aoe_used and fenced:
            for d in dom0s.values():
                if d.san_mac is None and 'san_mac' not in self._dom0_errors(d.name):
                    self.error('dom0', d.name, None, 'san_mac missing: storage fencing '
                               f'(in the chain of {", ".join(fenced)}) keeps or takes out '
                               "each dom0's MAC in the AoE reserve lists")
        seen: dict[str, str] = {}
        for d in dom0s.values():
            if d.san_mac is not None and d.san_mac in seen:
                self.error('dom0', d.name, 'san_mac', f'also the san_mac of [dom0.'
                           f'{_toml_name(seen[d.san_mac])}]', d.san_mac)
            elif d.san_mac is not None:
                seen[d.san_mac] = d.name

    def _dom0_errors(self, name: str) -> str:
        """What was already said of [dom0.NAME] (not to say it twice)."""
        tag = f'[dom0.{_toml_name(name)}]'
        return ' '.join(e for e in self.errors if tag in e)

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
