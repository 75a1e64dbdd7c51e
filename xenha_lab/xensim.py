"""An `xl` / `xm` simulator for the lab's dom0s, printing the real formats.

The lab cannot run a hypervisor, so each lab dom0 runs this instead of the
toolstack.  It keeps per-host state in a directory (``XENSIM_STATE``, set by
the dom0's sshd) and prints what real xl (Xen 4.x) and xm (Xen 3.x) print:
column widths, the tab in xl's header, the six state letters, the messages of
a failed create.  Golden files recorded on real Xen check it (issue 6).

Fault injection (used by `xenha lab` and the tests) lives in the same state:
a domain can be crashed or paused, or be missing from `list` for a while as
a rebooting guest is (`reboot`); the toolstack can fail, hang or print
garbage.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager

# a paused PV guest shows b and p together on real Xen 4.17 (golden files)
FLAGS = {'running': 'r-----', 'blocked': '-b----', 'paused': '-bp---',
         'shutdown': '--ps--', 'crashed': '----c-', 'dying': '-----d'}
FAULTS = ('fail', 'hang', 'garbage')
XEN_VERSION = (4, 17, '.7')


def default_state(host: str, total_mb: int = 8192, dom0_mb: int = 1024,
                  cpus: int = 4) -> dict:
    now = time.time()
    return {
        'host': host, 'total_mb': total_mb, 'cpus': cpus, 'next_id': 1,
        'fault': None, 'create_delay': 0.0, 'autoballoon': False,
        'domains': [{'name': 'Domain-0', 'id': 0, 'mem_mb': dom0_mb,
                     'vcpus': cpus, 'state': 'running', 'started': now,
                     'cpu0': 12.0, 'config': None, 'disks': []}],
    }


# -- state ---------------------------------------------------------------------
@contextmanager
def _locked(state_dir: str | os.PathLike, write: bool):
    d = os.fspath(state_dir)
    with open(os.path.join(d, 'lock'), 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        path = os.path.join(d, 'state.json')
        with open(path) as fh:
            state = json.load(fh)
        _expire(state)
        yield state
        if write:
            tmp = path + '.tmp'
            with open(tmp, 'w') as fh:
                json.dump(state, fh, indent=1)
            os.replace(tmp, path)


def init_host(state_dir: str | os.PathLike, host: str, **kw) -> None:
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, 'state.json'), 'w') as fh:
        json.dump(default_state(host, **kw), fh, indent=1)
    open(os.path.join(state_dir, 'devices'), 'a').close()


def _expire(state: dict) -> None:
    """A shut-down domain disappears a moment after the request, as on Xen."""
    now = time.time()
    state['domains'] = [d for d in state['domains']
                        if not (d.get('gone_at') and d['gone_at'] <= now)]


def read(state_dir) -> dict:
    with _locked(state_dir, write=False) as state:
        return state


def set_fault(state_dir, fault: str | None) -> None:
    if fault not in (None, *FAULTS):
        raise ValueError(f'unknown fault {fault!r}; choose from {FAULTS}')
    with _locked(state_dir, write=True) as state:
        state['fault'] = fault


def set_domain_state(state_dir, name: str, new: str) -> None:
    """Crash, pause, unpause (→ blocked) a domain: fault injection."""
    if new not in FLAGS:
        raise ValueError(f'unknown state {new!r}')
    with _locked(state_dir, write=True) as state:
        dom = _find(state, name)
        if dom is None:
            raise LookupError(f'no domain {name} on {state["host"]}')
        dom['state'] = new


def reboot(state_dir, name: str, gap: float) -> None:
    """The guest reboots and is missing from `list` for `gap` seconds, as when
    xl's monitor destroys the old domain and builds the new one (autoballoon or
    a slow teardown stretch that).  It comes back by itself, unless a create of
    its name on this host came first: then, as with real xl, the reboot fails."""
    with _locked(state_dir, write=True) as state:
        dom = _find(state, name)
        if dom is None or dom['id'] == 0:
            raise LookupError(f'no domain {name} on {state["host"]}')
        dom['hidden_until'] = time.time() + gap


def rebooting(state: dict) -> list[str]:
    """Names of the domains in a reboot gap (missing from `list` right now)."""
    return [d['name'] for d in state['domains'] if _hidden(d)]


def _hidden(dom: dict, now: float | None = None) -> bool:
    return dom.get('hidden_until', 0) > (now or time.time())


def destroy(state_dir, name: str) -> None:
    """Take a domain away (lab set-up: `xl destroy` without the SSH round trip)."""
    with _locked(state_dir, write=True) as state:
        state['domains'] = [d for d in state['domains'] if d['name'] != name or d['id'] == 0]


def power_off(state_dir) -> None:
    """The host lost power: every guest is gone with it, and until power_on the
    toolstack runs nothing (a command that was already on its way when the
    lights went out must not create a guest on a dark host)."""
    with _locked(state_dir, write=True) as state:
        state['domains'] = [d for d in state['domains'] if d['id'] == 0]
        state['fault'] = None
        state['power'] = 'off'


def power_on(state_dir) -> None:
    update(state_dir, power='on')


def update(state_dir, **fields) -> None:
    with _locked(state_dir, write=True) as state:
        state.update(fields)


def add_domain(state_dir, name: str, mem_mb: int, vcpus: int = 1,
               state_name: str = 'blocked', config: str | None = None) -> int:
    """Put a domain there directly (lab set-up); returns its id."""
    with _locked(state_dir, write=True) as state:
        return _add(state, name, mem_mb, vcpus, state_name, config, [])


def _add(state, name, mem_mb, vcpus, state_name, config, disks) -> int:
    domid = state['next_id']
    state['next_id'] += 1
    state['domains'].append({
        'name': name, 'id': domid, 'mem_mb': mem_mb, 'vcpus': vcpus,
        'state': state_name, 'started': time.time(), 'cpu0': 0.0,
        'config': config, 'disks': disks})
    return domid


def _find(state, name):
    """The domain the toolstack knows by this name or id (not one in a reboot gap)."""
    now = time.time()
    for dom in state['domains']:
        if (dom['name'] == name or str(dom['id']) == name) and not _hidden(dom, now):
            return dom
    return None


# -- block devices the initiators attach -----------------------------------------
def devices(state_dir) -> set[str]:
    try:
        with open(os.path.join(state_dir, 'devices')) as fh:
            return {l for l in fh.read().split('\n') if l}
    except FileNotFoundError:
        return set()


def _write_devices(state_dir, devs: set[str]) -> None:
    path = os.path.join(state_dir, 'devices')
    with open(path + '.tmp', 'w') as fh:
        fh.write(''.join(f'{d}\n' for d in sorted(devs)))
    os.replace(path + '.tmp', path)


def attach_device(state_dir, path: str) -> None:
    with open(os.path.join(state_dir, 'lock'), 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write_devices(state_dir, devices(state_dir) | {path})


def detach_device(state_dir, path: str) -> None:
    with open(os.path.join(state_dir, 'lock'), 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write_devices(state_dir, devices(state_dir) - {path})


# -- output formats ----------------------------------------------------------------
def _cpu(dom, now) -> float:
    if dom['state'] in ('running', 'blocked'):
        return dom['cpu0'] + (now - dom['started']) * 0.02 * dom['vcpus']
    return dom['cpu0']


def format_list(state: dict, dialect: str, names: list[str] | None = None) -> str:
    now = time.time()
    doms = [d for d in state['domains'] if not _hidden(d, now)] if not names \
        else [_find(state, n) for n in names]
    if dialect == 'xl':
        lines = [f"{'Name':<40} {'ID':>5} {'Mem':>5} {'VCPUs':>5}\tState\tTime(s)"]
        for d in doms:
            lines.append(f"{d['name']:<40} {d['id']:>5} {d['mem_mb']:>5} "
                         f"{d['vcpus']:>5}     {FLAGS[d['state']]}  {_cpu(d, now):8.1f}")
    else:  # xm, Xen 3.2 (Debian 5) layout
        lines = [f"{'Name':<40} {'ID':>3} {'Mem(MiB)':>8} {'VCPUs':>5} "
                 f"{'State':>5} {'Time(s)':>9}"]
        for d in doms:
            lines.append(f"{d['name']:<40} {d['id']:>3} {d['mem_mb']:>8} "
                         f"{d['vcpus']:>5} {FLAGS[d['state']]:>5} {_cpu(d, now):8.1f}")
    return '\n'.join(lines) + '\n'


def free_mb(state: dict) -> int:
    used = sum(d['mem_mb'] for d in state['domains'])
    return max(state['total_mb'] - used - 1, 0)  # Xen keeps a little for itself


def format_info(state: dict, dialect: str) -> str:
    major, minor, extra = XEN_VERSION
    fields = [
        ('host', state['host']), ('release', '6.1.0-56-amd64'),
        ('version', '#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)'),
        ('machine', 'x86_64'), ('nr_cpus', state['cpus']),
        ('max_cpu_id', state['cpus'] - 1), ('nr_nodes', 1),
        ('cores_per_socket', state['cpus']), ('threads_per_core', 1),
        ('cpu_mhz', '2596.128'),
        ('hw_caps', '178bf3fd:80002001:20100800:00000007:00000000:00000000:00000000:00000000'),
        ('virt_caps', 'pv hvm gnttab-v1 gnttab-v2'),
        ('total_memory', state['total_mb']), ('free_memory', free_mb(state)),
        ('sharing_freed_memory', 0), ('sharing_used_memory', 0),
        ('outstanding_claims', 0), ('free_cpus', 0),
        ('xen_major', major), ('xen_minor', minor), ('xen_extra', extra),
        ('xen_version', f'{major}.{minor}{extra}'),
        ('xen_caps', 'xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64 '),
        ('xen_scheduler', 'credit2'), ('xen_pagesize', 4096),
        ('platform_params', 'virt_start=0xffff800000000000'),
        ('xen_changeset', ''),
        ('xen_commandline', 'dom0_mem=1024M,max:1024M noreboot'),
        ('cc_compiler', 'x86_64-linux-gnu-gcc (Debian 12.2.0-14+deb12u1) 12.2.0'),
        ('cc_compile_by', 'pkg-xen-devel'),
        ('cc_compile_domain', 'lists.alioth.debian.org'),
        ('cc_compile_date', 'Wed Nov  4 16:52:28 UTC 2026'),
        ('build_id', '151b373fd64b321593bf987fd923cd10dabadac4'),
    ]
    if dialect == 'xm':  # xend's `xm info` (Xen 3.x) has its own field set
        fields = [f for f in fields if f[0] not in ('outstanding_claims', 'free_cpus',
                                                    'sharing_freed_memory',
                                                    'sharing_used_memory', 'build_id')]
    fields.append(('xend_config_format', 4))     # real xl 4.17 prints it too
    return ''.join(f'{k:<23}: {v}\n' for k, v in fields)


# -- domU configuration files ----------------------------------------------------------
def parse_config(text: str) -> dict:
    """The Python-like `key = value` syntax of xl.cfg(5) and xm config files."""
    from ast import literal_eval   # only create needs it: list and info start faster
    out, buf = {}, ''
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        buf = f'{buf} {line}' if buf else line
        if buf.count('[') > buf.count(']'):
            continue
        key, sep, value = buf.partition('=')
        buf = ''
        if not sep:
            raise ValueError(f'config parsing error near `{line}`')
        try:
            out[key.strip()] = literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f'config parsing error near `{line}`') from None
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in '"\'':
            quote = ch
        elif ch == '#':
            return line[:i]
    return line


def _phy_disks(cfg: dict) -> list[str]:
    paths = []
    for spec in cfg.get('disk', []):
        target = spec.split(',')[0]
        for part in spec.split(','):
            if part.startswith('target='):
                target = part[len('target='):]
        if target.startswith('phy:'):
            paths.append(target[4:])
    return paths


# -- the command line -------------------------------------------------------------------
def _err(msg: str, code: int = 1) -> int:
    sys.stderr.write(msg + '\n')
    return code


def _invalid_domain(name: str, dialect: str) -> int:
    if dialect == 'xl':
        return _err(f'{name} is an invalid domain identifier (rc=-6)')
    return _err(f"Error: the domain '{name}' does not exist.")


def _hang(state_dir) -> None:
    """Hang like a wedged toolstack, but end when the fault or the lab is gone."""
    while True:
        time.sleep(0.2)
        try:
            if read(state_dir).get('fault') != 'hang':
                return
        except (FileNotFoundError, OSError, ValueError):
            return


# What a failed `xl create` prints after its own error (Xen 4.17.7, golden files)
_DESTROY_TRIO = (
    'libxl: error: libxl_domain.c:1183:libxl__destroy_domid: Domain {id}:Non-existant domain\n'
    'libxl: error: libxl_domain.c:1137:domain_destroy_callback: Domain {id}:Unable to '
    'destroy guest\n'
    'libxl: error: libxl_domain.c:1064:domain_destroy_cb: Domain {id}:Destruction of '
    'domain failed')


def _create_error(dialect: str, domid: int, xl_text: str, xm_text: str) -> int:
    """xl: its error, then the clean-up trio, exit 3; xm: one line, exit 1."""
    if dialect == 'xl':
        return _err(xl_text.format(id=domid) + '\n' + _DESTROY_TRIO.format(id=domid), 3)
    return _err(f'Error: {xm_text}')


def _create(state_dir, dialect: str, args: list[str]) -> int:
    paths = [a for a in args if not a.startswith('-')]
    if not paths:
        return _err('Usage: xl create <ConfigFile> [options] [vars]', 2)
    path = paths[0]
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        if dialect == 'xl':
            return _err(f'Failed to read config file: {path}: {exc.strerror}', 3)
        return _err(f'Error: Cannot open config file "{path}"')
    if dialect == 'xl':
        sys.stderr.write(f'Parsing config from {path}\n')
    try:
        cfg = parse_config(text)
    except ValueError as exc:
        return _err(f'{path}:{exc}', 3 if dialect == 'xl' else 1)
    name, mem, vcpus = cfg.get('name'), int(cfg.get('memory', 128)), int(cfg.get('vcpus', 1))
    if not name:
        return _err('Domain name must be specified.', 3 if dialect == 'xl' else 1)
    # With autoballoon on, real xl holds /var/lock/xl from freemem until the domain
    # is built, so creates on one host run one after the other; with it off (dom0_mem
    # on the Xen command line, the recommended set-up) they run side by side.
    with open(os.path.join(state_dir, 'xl-lock'), 'a+') as xl_lock:
        if read(state_dir).get('autoballoon'):
            fcntl.flock(xl_lock, fcntl.LOCK_EX)
        return _build(state_dir, dialect, path, cfg, name, mem, vcpus)


def _build(state_dir, dialect, path, cfg, name, mem, vcpus) -> int:
    with _locked(state_dir, write=True) as state:
        if state.get('power') == 'off':
            return _POWERED_OFF
        delay = state.get('create_delay', 0.0)
        domid = state['next_id']
        state['next_id'] += 1        # a failed create uses up its domain id too
        if _find(state, name) is not None:
            return _create_error(
                dialect, domid,
                'libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain {id}:Domain '
                f'with name "{name}" already exists.\n'
                'libxl: error: libxl_create.c:1296:initiate_domain_create: Domain {id}:'
                'cannot make domain: -6',
                f"Domain '{name}' already exists with ID '{_find(state, name)['id']}'")
        attached = devices(state_dir)
        for dev in _phy_disks(cfg):
            if dev not in attached:
                return _create_error(
                    dialect, domid,
                    'libxl: error: libxl_device.c:455:libxl__device_disk_set_backend: '
                    f'Disk vdev=xvda failed to stat: {dev}: No such file or directory\n'
                    'libxl: error: libxl_create.c:1318:initiate_domain_create: Domain {id}:'
                    'Unable to set disk defaults for disk 0',
                    f'Device xvda (51712, vbd): Disk isn\'t accessible: {dev}')
        if mem > free_mb(state):
            return _create_error(
                dialect, domid,
                "xc: error: panic: xg_dom_boot.c:119: xc_dom_boot_mem_init: can't allocate "
                'low memory for domain: Out of memory\n'
                'libxl: error: libxl_dom.c:586:libxl__build_dom: xc_dom_boot_mem_init '
                'failed: Cannot allocate memory\n'
                'libxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain {id}:'
                'cannot (re-)build domain: -3',
                f'I need {mem * 1024} KiB, but dom0_min_mem is 0 and shrinking to 0 KiB '
                'would leave only 0 KiB free.')
        state['next_id'] -= 1
        # a domain of this name in its reboot gap: this create wins the name,
        # and the reboot's own create will fail (xl's duplicate-name check)
        state['domains'] = [d for d in state['domains'] if d['name'] != name]
        domid = _add(state, name, mem, vcpus, 'blocked', path, _phy_disks(cfg))
    if delay:
        time.sleep(delay)
    if dialect == 'xm':
        print(f'Using config file "{path}".\nStarted domain {name} (id={domid})')
    return 0


_POWERED_OFF = 255   # what ssh returns when the connection dies under it


def main(dialect: str, argv: list[str]) -> int:
    state_dir = os.environ.get('XENSIM_STATE')
    if not state_dir or not os.path.exists(os.path.join(state_dir, 'state.json')):
        if dialect == 'xl':
            return _err("Can't find hypervisor information in sysfs!")
        return _err('Error: Unable to connect to xend: No such file or directory. '
                    'Is xend running?')
    state = read(state_dir)
    if state.get('power') == 'off':
        return _POWERED_OFF
    fault = state.get('fault')
    if fault == 'hang':
        _hang(state_dir)
        fault = read(state_dir).get('fault')
    if fault == 'fail':
        if dialect == 'xl':
            return _err('libxl: error: libxl.c:102:libxl_ctx_alloc: cannot open '
                        'libxc handle: Permission denied\n'
                        'cannot init xl context')
        return _err('Error: Unable to connect to xend: Connection refused. '
                    'Is xend running?')
    if fault == 'garbage':
        sys.stdout.write('\x1b[2J#### segfault in libxenlight ####\n'
                         '<<< 0xdeadbeef >>>\nName???\n')
        return 0
    if not argv:
        return _err(f'Usage {dialect} [-vfN] <subcommand> [args]', 2)
    verb, args = argv[0], argv[1:]
    if verb == 'list':
        names = [a for a in args if not a.startswith('-')]
        state = read(state_dir)
        for n in names:
            if _find(state, n) is None:
                return _invalid_domain(n, dialect)
        sys.stdout.write(format_list(state, dialect, names))
        return 0
    if verb == 'info':
        sys.stdout.write(format_info(read(state_dir), dialect))
        return 0
    if verb == 'create':
        return _create(state_dir, dialect, args)
    if verb in ('destroy', 'shutdown', 'pause', 'unpause'):
        names = [a for a in args if not a.startswith('-')]
        if not names:
            return _err(f"'{dialect} {verb}' requires at least one argument.", 2)
        with _locked(state_dir, write=True) as state:
            dom = _find(state, names[0])
            if dom is None:
                return _invalid_domain(names[0], dialect)
            if dom['id'] == 0 and verb != 'pause':
                if verb == 'destroy' and dialect == 'xl':
                    return _err('Not destroying domain 0; use -f to force.\nThis can only '
                                'be done when using a disaggregated hardware domain and '
                                'toolstack.\n')
                return _err(f'cannot {verb} Domain-0')
            if verb == 'destroy':
                state['domains'].remove(dom)
            elif verb == 'shutdown':
                # it lingers as --ps-- until xl's monitor destroys it (golden files)
                dom['state'] = 'shutdown'
                dom['gone_at'] = time.time() + 0.5
            elif verb == 'pause':
                dom['state'] = 'paused'
            else:
                dom['state'] = 'blocked'
        if verb == 'shutdown' and dialect == 'xl':
            sys.stderr.write(f'Shutting down domain {dom["id"]}\n')
            if '-w' in args or '--wait' in args:
                sys.stderr.write(f'Waiting for 1 domains\nDomain {dom["id"]} has been '
                                 'shut down, reason code 0\n')
        return 0
    return _err(f'command not implemented: {verb}' if dialect == 'xl'
                else f"Error: Subcommand {verb} not found!", 2)


def main_xl(argv: list[str]) -> int:
    return main('xl', argv)


def main_xm(argv: list[str]) -> int:
    return main('xm', argv)


def main_blockdev(argv: list[str]) -> int:
    """`blockdev --getsize64 DEV` on a lab dom0: the devices its initiators attached."""
    if len(argv) != 2 or argv[0] != '--getsize64':
        return _err('usage: blockdev --getsize64 DEVICE (lab stand-in)', 1)
    if argv[1] not in devices(os.environ.get('XENSIM_STATE', '/nonexistent')):
        return _err(f'blockdev: cannot open {argv[1]}: No such file or directory')
    print(64 * 1024 * 1024)
    return 0
