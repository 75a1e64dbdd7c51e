"""Hostile input, issue 12, the property half: random strings into every field.

Every string field of an inventory gets random text (control characters,
quotes, `$`, `;`, `}`, `!`, backslashes, line breaks, non-ASCII).  The
property: either the loader refuses it, naming the key with file:line, or
the value is rendered, and what the consumers read back is exactly the value:

- the real ``nagios4 -vp`` (its object cache: host names, addresses, service
  names, check_command arguments, command lines) — the words the plugins then
  get are worked out from those objects the way Nagios expands them (args
  split at unescaped `!`, `$$` → `$`, /bin/sh word splitting), a procedure
  the real-daemon tests at the end check against a real Nagios 4;
- the real ``icinga2 daemon -C`` (its object dump: hosts, services, custom
  variables, command arrays, `$$` → `$` as Icinga 2 resolves them), checked
  against a real Icinga 2 run at the end;
- xl's own config parser (libxlutil, through ctypes) for the xl domU files,
  Python for the xm ones.

The fast half runs many examples in-process (loader, renderer, libxlutil);
the daemon half renders one inventory full of hostile-but-valid values per
example, a few dozen examples, each read by both daemons.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from test_render import STUB, icinga_verify, nagios_verify
from xenha import grammar
from xenha.inventory import InventoryError, loads
from xenha.render import Options, render, write_tree

# ---------------------------------------------------------------- the inventory

# (place in the file, TOML key, kind, a valid value) for every string field
FIELDS = {
    'defaults.toolstack_command': ('defaults', 'toolstack_command', 'argv', '/usr/sbin/xl'),
    'defaults.ssh_user': ('defaults', 'ssh_user', 'user', 'xenha'),
    'defaults.ssh_key': ('defaults', 'ssh_key', 'path', '/etc/xenha/id_ed25519'),
    'defaults.known_hosts': ('defaults', 'known_hosts', 'path', '/etc/xenha/known_hosts'),
    'defaults.state_db': ('defaults', 'state_db', 'path', '/var/lib/xenha/state.db'),
    'defaults.nagios_command_file': ('defaults', 'nagios_command_file', 'path',
                                     '/var/lib/nagios4/rw/nagios.cmd'),
    'defaults.cluster_host': ('defaults', 'cluster_host', 'name', 'xen-cluster'),
    'defaults.failover_service': ('defaults', 'failover_service', 'service', 'failover'),
    'dom0.address': ('dom0', 'address', 'host', '127.0.10.11'),
    'dom0.ssh_user': ('dom0', 'ssh_user', 'user', 'root'),
    'dom0.ssh_key': ('dom0', 'ssh_key', 'path', '/root/.ssh/id_rsa'),
    'dom0.known_hosts': ('dom0', 'known_hosts', 'path', '/root/.ssh/known_hosts'),
    'dom0.toolstack_command': ('dom0', 'toolstack_command', 'argv', 'sudo -n /usr/sbin/xl'),
    'fence.agent': ('fence', 'agent', 'agent', 'fence_ipmilan'),
    'fence.password_file': ('fence', 'password_file', 'path', '/etc/xenha/bmc'),
    'fence.ip': ('fence', 'ip', 'text', '127.0.10.13'),
    'fence.username': ('fence', 'username', 'text', 'admin'),
    'storage.address': ('storage', 'address', 'host', '127.0.10.5'),
    'iscsi.portal': ('iscsi', 'portal', 'portal', '127.0.10.5:3260'),
    'iscsi.iqn': ('iscsi', 'iqn', 'iqn', 'iqn.2026-01.lab:disk1'),
    'iscsi.chap_user': ('iscsi', 'chap_user', 'chap_user', 'xenha'),
    'iscsi.chap_secret_file': ('iscsi', 'chap_secret_file', 'path', '/etc/xenha/chap'),
    'iscsi.device': ('iscsi', 'device', 'device', '/dev/mapper/disk1'),
    'aoe.interface': ('aoe', 'interface', 'interface', 'aoe1'),
    'domu.config': ('domu', 'config', 'path', '/etc/xen/web1.cfg'),
    'domu.kernel': ('domu', 'kernel', 'path', '/boot/vmlinuz'),
    'domu.ramdisk': ('domu', 'ramdisk', 'path', '/boot/initrd.img'),
    'domu.extra': ('domu', 'extra', 'text', 'root=/dev/xvda ro'),
    'domu.bootloader': ('domu', 'bootloader', 'program', 'pygrub'),
    'domu.vif': ('domu', 'vif', 'vif', 'bridge=xenbr0'),
}
TABLES = {'defaults': '[defaults]', 'dom0': '[dom0.dom0-1]',
          'fence': '[[dom0.spare-1.fencing]]', 'storage': '[storage.san-1]',
          'iscsi': '[target.disk1]', 'aoe': '[target.vol1]', 'domu': '[domu.web1]'}
FIXED = {
    'defaults': ['toolstack = "xl"', 'sudo = true'],
    'dom0': ['role = "active"', 'port = 2200', 'fencing = "none"'],
    'fence': ['method = "agent"', 'lanplus = true'],
    'storage': [],
    'iscsi': ['kind = "iscsi"', 'storage = "san-1"', 'lun = 1'],
    'aoe': ['kind = "aoe"', 'storage = "san-1"', 'shelf = 1', 'slot = 2'],
    'domu': ['memory = "1G"', 'home = "dom0-1"', 'targets = ["disk1", "vol1"]'],
}
SPARE = '[dom0.spare-1]\naddress = "127.0.10.13"\nrole = "spare"\n'
DB1 = ('[domu.db1]\nconfig = "/etc/xen/db1.cfg"\nmemory = 512\nhome = "dom0-1"\n'
       'targets = []\nkernel = "/boot/vmlinuz-db1"\n')


def toml_string(value: str) -> str:
    """A TOML basic string holding exactly `value` (any scalar value)."""
    out = []
    for c in value:
        if c in '"\\':
            out.append('\\' + c)
        elif not c.isprintable() or c in '\x7f':
            out.append(f'\\u{ord(c):04x}' if ord(c) < 0x10000 else f'\\U{ord(c):08x}')
        else:
            out.append(c)
    return '"' + ''.join(out) + '"'


def inventory_text(values: dict) -> str:
    """The inventory with `values` ({field: str}) and the valid value elsewhere."""
    parts = []
    for table, header in TABLES.items():
        lines = [header, *FIXED[table]]
        for field, (t, key, kind, valid) in FIELDS.items():
            if t != table:
                continue
            value = values.get(field, valid)
            lines.append(f'{key} = [{toml_string(value)}]' if kind == 'vif'
                         else f'{key} = {toml_string(value)}')
        parts.append('\n'.join(lines) + '\n')
        if table == 'dom0':
            parts.append(SPARE)
    parts.append(DB1)
    return '\n'.join(parts)


def line_of(text: str, field: str) -> int:
    """The line the field's key is written on."""
    table, key = FIELDS[field][0], FIELDS[field][1]
    lines = text.split('\n')
    start = lines.index(TABLES[table])
    for i in range(start + 1, len(lines)):
        if lines[i].startswith(f'{key} = '):
            return i + 1
    raise AssertionError(field)


def cluster_values(c, field: str):
    d, h = c.defaults, c.dom0s['dom0-1']
    fence = c.dom0s['spare-1'].fencing[0]
    t, a, u = c.targets['disk1'], c.targets['vol1'], c.domus['web1']
    table, key = FIELDS[field][:2]
    obj = {'defaults': d, 'dom0': h, 'fence': fence, 'storage': c.storage['san-1'],
           'iscsi': t, 'aoe': a, 'domu': u}[table]
    if table == 'fence' and key not in ('agent', 'password_file'):
        return dict(fence.params)[key]
    if key == 'vif':
        return u.vif[0] if u.vif else None
    if key == 'device':
        return obj.device_path
    return getattr(obj, key)


# ---------------------------------------------------------------- random strings

HOSTILE = ' \t\n\r\x00\x1b\x7f\x85"\'`$;!}{#\\/=,:@[]()&|<>*?~%\u2028\u202eé中💥'
RANDOM = st.text(alphabet=st.one_of(st.sampled_from(HOSTILE),
                                    st.characters(exclude_categories=('Cs',))),
                 max_size=24)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(sorted(FIELDS)),
                              st.one_of(RANDOM, RANDOM.map(lambda s: '/' + s)),
                              min_size=1, max_size=4))
def test_random_strings_are_refused_with_their_line_or_kept_exactly(values):
    text = inventory_text(values)
    try:
        c = loads(text, 'cluster.toml')
    except InventoryError as e:
        lines = {line_of(text, f) for f in values}
        keys = {FIELDS[f][1] for f in values}
        for error in e.errors:
            # one line each, with the file and the line number ...
            m = re.match(r'cluster\.toml:(\d+): ', error)
            assert '\n' not in error and m, error
            # ... of a field we changed, or naming one (a clash between two)
            assert int(m.group(1)) in lines or any(k in error for k in keys), error
        return
    for field, value in values.items():
        assert cluster_values(c, field) == value, field
    # a loaded inventory renders, every format (nothing refused, nothing lost)
    for fmt in ('nagios', 'icinga2', 'xen'):
        render(c, fmt, Options(inventory_path='/etc/xenha/cluster.toml'))
    xm = dataclasses.replace(c, defaults=dataclasses.replace(c.defaults, toolstack='xm'))
    assert_xen_reads_back(c, render(c, 'xen'), xl=True)
    assert_xen_reads_back(xm, render(xm, 'xen'), xl=False)


# ---------------------------------------------------------------- hostile but valid

_PRINTABLE = st.one_of(st.sampled_from(' "\'`$;!}{#\\=,:@[]()&|<>*?~%éü中💥'),
                       st.characters(exclude_categories=('Cc', 'Cs', 'Cf', 'Co', 'Cn',
                                                         'Zl', 'Zp')))
_TEXT = st.text(alphabet=_PRINTABLE, max_size=30).filter(lambda s: grammar.text(s) is None)
_PATH = st.text(alphabet=_PRINTABLE, max_size=30).map(lambda s: '/' + s.rstrip()) \
    .filter(lambda s: grammar.path(s) is None)
_NAME = st.from_regex(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,20}', fullmatch=True)
_PROGRAM = st.one_of(_PATH, st.from_regex(r'[A-Za-z0-9_][A-Za-z0-9_.+-]{0,12}',
                                          fullmatch=True))
_IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: '.'.join(map(str, t)))
_HOSTNAME = st.from_regex(r'[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}'
                          r'[a-z0-9])?){0,3}', fullmatch=True)
_IPV6 = st.ip_addresses(v=6).map(str)
_HOST = st.one_of(_IPV4, _HOSTNAME, _IPV6).filter(lambda s: grammar.host(s) is None)
_MAC = st.tuples(st.integers(0, 127).map(lambda b: b * 2), *[st.integers(0, 255)] * 5) \
    .map(lambda t: ':'.join(f'{b:02x}' for b in t))
_IFACE = st.from_regex(r'[A-Za-z0-9_.-]{1,15}', fullmatch=True) \
    .filter(lambda s: grammar.interface(s) is None)
VALID = {
    'argv': st.lists(_TEXT.filter(bool), max_size=3).flatmap(
        lambda words: _PROGRAM.map(lambda p: shlex.join([p, *words]))),
    'user': st.from_regex(r'[A-Za-z_][A-Za-z0-9_.-]{0,12}', fullmatch=True),
    'path': st.one_of(_PATH, RANDOM.map(lambda s: '/' + s).filter(
        lambda s: grammar.path(s) is None)),
    'name': _NAME,
    'service': st.from_regex(r'[A-Za-z0-9]([A-Za-z0-9 _.-]{0,20}[A-Za-z0-9_.-])?',
                             fullmatch=True).filter(lambda s: grammar.service(s) is None),
    'host': _HOST,
    'agent': st.one_of(st.from_regex(r'fence_[A-Za-z0-9_]{1,12}', fullmatch=True),
                       _PATH.filter(lambda p: not re.search(r'\s', p)).map(
                           lambda p: p.rstrip('/') + '/fence_x')).filter(
                               lambda s: grammar.fence_agent(s) is None),
    'text': st.one_of(_TEXT, RANDOM.filter(lambda s: grammar.text(s) is None)),
    'portal': st.tuples(_HOST, st.integers(1, 65535)).map(
        lambda hp: (f'[{hp[0]}]' if ':' in hp[0] else hp[0]) + f':{hp[1]}'),
    'iqn': st.from_regex(r'iqn\.20[0-9]{2}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9.-]{0,10}'
                         r'[a-z0-9])?(:[A-Za-z0-9.:_-]{1,12})?', fullmatch=True),
    'chap_user': st.from_regex(r'[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,12}', fullmatch=True),
    'device': st.from_regex(r'/[A-Za-z0-9._/:@+\[\]-]{0,20}', fullmatch=True),
    'interface': _IFACE,
    'program': _PROGRAM,
    'vif': st.tuples(_IFACE, _MAC).map(lambda t: f'bridge={t[0]},mac={t[1]}'),
}
RESERVED = {'dom0-1', 'spare-1', 'san-1', 'web1', 'db1', 'disk1', 'vol1'}


@st.composite
def hostile_inventories(draw):
    values = {field: draw(VALID[kind]) for field, (_, _, kind, _) in FIELDS.items()}
    assume(values['dom0.address'] != '127.0.10.13')
    assume(values['defaults.cluster_host'] not in RESERVED)
    assume(values['domu.config'] != '/etc/xen/db1.cfg')
    options = dict(plugin_dir=draw(_PATH), handler_dir=draw(_PATH),
                   inventory_path=draw(_PATH))
    return values, options


@settings(max_examples=int(os.environ.get('XENHA_DAEMON_EXAMPLES', 25)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(drawn=hostile_inventories())
def test_hostile_but_valid_values_read_back_by_nagios_icinga2_and_xl(tmp_path_factory, drawn):
    values, options = drawn
    c = loads(inventory_text(values), 'cluster.toml')       # valid: it must load
    for field, value in values.items():
        assert cluster_values(c, field) == value, field
    tmp = tmp_path_factory.mktemp('hostile')
    o = Options(**options)
    write_tree(render(c, 'nagios', o), tmp / 'nagios')
    write_tree(render(c, 'icinga2', o), tmp / 'icinga2')
    (tmp / 'n').mkdir()
    v = nagios_verify(tmp / 'n', tmp / 'nagios', 60)
    assert v.returncode == 0 and 'Total Warnings: 0' in v.stdout, v.stdout[-3000:]
    assert_nagios_reads_back(c, o, tmp / 'n', tmp / 'nagios')
    (tmp / 'i').mkdir()
    v = icinga_verify(tmp / 'i', tmp / 'icinga2')
    assert v.returncode == 0, v.stdout[-3000:] + v.stderr
    assert_icinga_reads_back(c, o, icinga_objects(tmp / 'i' / 'cache' / 'icinga2.debug'))
    assert_xen_reads_back(c, render(c, 'xen'), xl=True)
    xm = dataclasses.replace(c, defaults=dataclasses.replace(c.defaults, toolstack='xm'))
    assert_xen_reads_back(xm, render(xm, 'xen'), xl=False)


# ---------------------------------------------------------------- Nagios, read back

def nagios_objects(precache: Path) -> list[tuple[str, dict]]:
    """The object cache nagios4 -vp writes: (type, {directive: value})."""
    objects, current = [], None
    for line in precache.read_text(encoding='utf-8', errors='surrogateescape').split('\n'):
        m = re.match(r'define (\w+) \{$', line)
        if m:
            current = (m.group(1), {})
            objects.append(current)
        elif line.strip() == '}':
            current = None
        elif current is not None and line.startswith('\t'):
            key, _, value = line[1:].partition('\t')
            current[1][key] = value
    return objects


def nagios_split(check_command: str) -> tuple[str, list[str]]:
    """command!arg1!arg2 → (command, args): split at unescaped '!', '\\!' → '!'."""
    parts, cur, i = [], '', 0
    while i < len(check_command):
        ch = check_command[i]
        if ch == '\\' and check_command[i + 1:i + 2] == '!':
            cur, i = cur + '!', i + 2
        elif ch == '!':
            parts.append(cur)
            cur, i = '', i + 1
        else:
            cur, i = cur + ch, i + 1
    parts.append(cur)
    return parts[0], parts[1:]


def nagios_macros(text: str, macros: dict) -> str:
    """One pass of Nagios' macro processing: $NAME$ → its value, $$ → $."""
    out, i = '', 0
    while i < len(text):
        if text[i] != '$':
            out, i = out + text[i], i + 1
            continue
        j = text.find('$', i + 1)
        if j < 0:
            return out + text[i:]
        name = text[i + 1:j]
        out += '$' if name == '' else macros.get(name, f'${name}$')
        i = j + 1
    return out


def nagios_argv(objects, check_command: str, macros: dict) -> list[str]:
    """The argv a check gets: its command_line with macros and args, split as sh."""
    name, args = nagios_split(check_command)
    line = next(o['command_line'] for t, o in objects if t == 'command'
                and o['command_name'] == name)
    m = dict(macros)
    for n, arg in enumerate(args, 1):
        m[f'ARG{n}'] = nagios_macros(arg, macros)
    return shlex.split(nagios_macros(line, m))


def dom0_args(c, h) -> list[str]:
    words = ['-p', str(h.port), '-l', h.ssh_user]
    words += ['-i', h.ssh_key] if h.ssh_key else []
    words += ['--known-hosts', h.known_hosts] if h.known_hosts else []
    words += ['--toolstack', h.toolstack]
    words += ['--toolstack-command', h.toolstack_command] if h.toolstack_command else []
    return words + (['--sudo'] if c.defaults.sudo else [])


def assert_nagios_reads_back(c, o: Options, tmp: Path, objects_dir: Path):
    v = subprocess.run(['nagios4', '-vp', str(tmp / 'nagios.cfg')], capture_output=True,
                       text=True, timeout=60)
    assert v.returncode == 0, v.stdout[-2000:]
    objects = nagios_objects(tmp / 'objects.precache')
    hosts = {o_['host_name']: o_ for t, o_ in objects if t == 'host'}
    services = {(o_['host_name'], o_['service_description']): o_
                for t, o_ in objects if t == 'service'}
    d = c.defaults
    macros = {'USER1': '/usr/lib/nagios/plugins', 'USER2': '/etc/xenha/cluster.toml'}
    for h in c.dom0s.values():
        host = hosts[h.name]
        assert host['address'] == h.address
        m = dict(macros, HOSTADDRESS=h.address, HOSTNAME=h.name)
        argv = nagios_argv(objects, host['check_command'], m)
        assert argv == [o.plugin_dir + '/check_xen_host', '-H', h.address,
                        *dom0_args(c, h), '--state-db', d.state_db, '-t',
                        str(c.timing.dom0_check_timeout)]
        fence = services[(h.name, 'fencing')]
        assert nagios_argv(objects, fence['check_command'], m) == [
            o.plugin_dir + '/check_fence', '--inventory', o.inventory_path, '--dom0', h.name,
            '-t', str(c.timing.check_timeout)]
        handler = next(x for t, x in objects if t == 'command'
                       and x['command_name'] == 'handle_dom0_event')
        assert shlex.split(nagios_macros(handler['command_line'], dict(
            m, HOSTSTATE='DOWN', HOSTSTATETYPE='HARD', HOSTATTEMPT='3'))) == [
            o.handler_dir + '/handle_dom0_event', '--inventory', o.inventory_path, h.name,
            'DOWN', 'HARD', '3']
    for u in c.domus.values():
        assert hosts[u.name]['notes'] == f'home: {u.home}'
        svc = services[(u.name, 'xen domain')]
        assert nagios_argv(objects, svc['check_command'], dict(macros, HOSTNAME=u.name)) == [
            o.plugin_dir + '/check_xen_domu', '--cluster', o.inventory_path, '--domain',
            u.name, '--max-age', str(c.timing.domu_max_age), '-t', str(c.timing.check_timeout)]
    t = c.targets['disk1']
    svc = services[('san-1', 'target disk1')]
    assert svc['display_name'] == f'iSCSI {t.iqn} LUN {t.lun}'
    assert nagios_argv(objects, svc['check_command'], macros) == [
        o.plugin_dir + '/check_iscsi_target', '-H', t.host, '-p', str(t.port), '--target',
        t.iqn, '--lun', str(t.lun), '--chap-user', t.chap_user, '--chap-secret-file',
        t.chap_secret_file, '-t', str(c.timing.check_timeout)]
    a = c.targets['vol1']
    assert services[('san-1', 'target vol1')]['display_name'] == \
        f'AoE e{a.shelf}.{a.slot} on {a.interface}'
    assert hosts['san-1']['address'] == c.storage['san-1'].address
    assert (d.cluster_host, d.failover_service) in services
    main = (objects_dir / 'nagios.cfg.example').read_text(encoding='utf-8')
    assert re.findall(r'^command_file=(.*)$', main, re.M) == [d.nagios_command_file]


# ---------------------------------------------------------------- Icinga 2, read back

def icinga_objects(debug: Path) -> dict:
    """icinga2.debug (netstrings of JSON, written by daemon -C): {(type, name): props}."""
    data = debug.read_bytes()
    out, i = {}, 0
    while i < len(data):
        j = data.index(b':', i)
        n = int(data[i:j])
        obj = json.loads(data[j + 1:j + 1 + n])
        props = obj['properties']
        name = (f"{props['host_name']}!{obj['name']}" if obj['type'] == 'Service'
                else obj['name'])
        out[(obj['type'], name)] = props
        i = j + 1 + n + 1
    return out


def resolved(value: str) -> str:
    """A custom variable as Icinga 2 hands it to a command: `$$` → `$`."""
    return value.replace('$$', '$')


def assert_icinga_reads_back(c, o: Options, objects: dict):
    d = c.defaults
    for h in c.dom0s.values():
        host = objects[('Host', h.name)]
        assert host['address'] == h.address
        v = host['vars']
        assert resolved(v['xenha_ssh_user']) == h.ssh_user
        assert resolved(v.get('xenha_ssh_key') or '') == (h.ssh_key or '')
        assert resolved(v.get('xenha_known_hosts') or '') == (h.known_hosts or '')
        assert resolved(v.get('xenha_toolstack_command') or '') == (h.toolstack_command or '')
        assert v['xenha_ssh_port'] == h.port
    cmd = objects[('CheckCommand', 'xenha-xen-host')]
    assert [resolved(x) for x in cmd['command']] == [o.plugin_dir + '/check_xen_host']
    assert resolved(cmd['vars']['xenha_state_db']) == d.state_db
    domu = objects[('CheckCommand', 'xenha-xen-domu')]
    assert resolved(domu['vars']['xenha_inventory']) == o.inventory_path
    ev = objects[('EventCommand', 'xenha-dom0-event')]
    assert resolved(ev['command'][0]) == o.handler_dir + '/handle_dom0_event'
    t = c.targets['disk1']
    svc = objects[('Service', 'san-1!target disk1')]
    assert svc['display_name'] == f'iSCSI {t.iqn} LUN {t.lun}'
    v = svc['vars']
    assert (resolved(v['xenha_portal_host']), v['xenha_portal_port'], resolved(v['xenha_iqn']),
            resolved(v['xenha_chap_user']), resolved(v['xenha_chap_secret_file'])) == (
        t.host, t.port, t.iqn, t.chap_user, t.chap_secret_file)
    a = c.targets['vol1']
    assert resolved(objects[('Service', 'san-1!target vol1')]['vars']['xenha_interface']) \
        == a.interface
    assert objects[('Host', 'san-1')]['address'] == c.storage['san-1'].address
    assert ('Service', f'{d.cluster_host}!{d.failover_service}') in objects
    for u in c.domus.values():
        assert objects[('Host', u.name)]['vars']['xenha_home'] == u.home


# ---------------------------------------------------------------- xl and xm, read back

def _xlu():
    try:
        lib = ctypes.CDLL('libxlutil.so.4.17')
    except OSError:
        pytest.fail('libxlutil (Debian package libxenmisc4.17, xl\'s config parser) is '
                    'missing: run `make deps`')
    lib.xlu_cfg_init.restype = ctypes.c_void_p
    lib.xlu_cfg_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.xlu_cfg_readdata.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.xlu_cfg_destroy.argtypes = [ctypes.c_void_p]
    lib.xlu_cfg_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                       ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    lib.xlu_cfg_get_long.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_long), ctypes.c_int]
    lib.xlu_cfg_get_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_void_p),
                                     ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.xlu_cfg_get_listitem.restype = ctypes.c_char_p
    lib.xlu_cfg_get_listitem.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def xl_parse(text: str, strings=(), longs=(), lists=()) -> dict:
    """Parse an xl domU config with xl's own parser (libxlutil)."""
    lib = _xlu()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    report = libc.fopen(b'/dev/null', b'w')
    cfg = lib.xlu_cfg_init(report, b'domU.cfg')
    try:
        data = text.encode()
        assert lib.xlu_cfg_readdata(cfg, data, len(data)) == 0, text
        out = {}
        for key in strings:
            v = ctypes.c_char_p()
            if lib.xlu_cfg_get_string(cfg, key.encode(), ctypes.byref(v), 1) == 0:
                out[key] = v.value.decode()
        for key in longs:
            v = ctypes.c_long()
            if lib.xlu_cfg_get_long(cfg, key.encode(), ctypes.byref(v), 1) == 0:
                out[key] = v.value
        for key in lists:
            lst, n = ctypes.c_void_p(), ctypes.c_int()
            if lib.xlu_cfg_get_list(cfg, key.encode(), ctypes.byref(lst), ctypes.byref(n),
                                    1) == 0:
                out[key] = [lib.xlu_cfg_get_listitem(lst, i).decode() for i in range(n.value)]
        return out
    finally:
        lib.xlu_cfg_destroy(cfg)
        libc.fclose(report)


def expected_domu(c, u) -> dict:
    from xenha.render import disk_name
    out = {'name': u.name, 'memory': u.memory_mib, 'vcpus': u.vcpus, 'on_crash': u.on_crash,
           'disk': [f'phy:{t.device},{disk_name(i)},w' for i, t in enumerate(c.targets_of(u))]}
    for key in ('kernel', 'ramdisk', 'extra', 'bootloader'):
        if getattr(u, key):
            out[key] = getattr(u, key)
    if u.vif:
        out['vif'] = list(u.vif)
    return out


def assert_xen_reads_back(c, files: dict, xl: bool):
    for u in c.domus.values():
        text = files[f'{u.name}.cfg']
        want = expected_domu(c, u)
        if xl:
            got = xl_parse(text, strings=('name', 'kernel', 'ramdisk', 'extra', 'bootloader',
                                          'on_crash', 'type'),
                           longs=('memory', 'vcpus'), lists=('disk', 'vif'))
            assert got.pop('type') == u.type
        else:
            got = {}
            exec(compile(text, 'domU config', 'exec'), {}, got)   # xm reads it as Python
            for key in ('on_poweroff', 'on_reboot', 'builder'):
                got.pop(key, None)
        got = {k: v for k, v in got.items() if k in want or k in ('disk', 'vif')}
        if not want.get('vif'):
            got.pop('vif', None)
        assert got == want, text


# ---------------------------------------------------------------- the real daemons run it

# Hostile but valid: every character a shell, Nagios, Icinga 2 or xl treats
# specially, in the values the plugins get as words.
NASTY = '/srv/x ha/$tate;"q\'1"!`b`{a}#\\!é'
NASTY_VALUES = {
    'defaults.state_db': NASTY + '/state.db',
    'defaults.ssh_key': '/etc/xenha/key $HOME; !x \\ "k"',
    'defaults.known_hosts': "/etc/xenha/it's known#1",
    'defaults.toolstack_command': shlex.join(['/usr/sbin/x l', '-c', 'a;b$c!d']),
    'defaults.failover_service': 'xen fail-over',
    'dom0.ssh_key': '/k/$$two!!',
    'dom0.toolstack_command': shlex.join(['sudo', '-n', "/o'pt/xl"]),
    'iscsi.chap_secret_file': '/etc/xenha/chap $(secret)`x`;',
    'iscsi.chap_user': 'u@x:1+2',
}
NASTY_OPTIONS = dict(plugin_dir='/opt/xen ha/$plug!ins;', handler_dir='/opt/handl"ers',
                     inventory_path="/etc/xenha/clus'ter $1.toml")


def stubs(plugins: Path, calls: Path) -> None:
    plugins.mkdir(parents=True)
    for name in ('check_xen_host', 'check_xen_domu', 'check_iscsi_target',
                 'check_aoe_target', 'check_xen_capacity', 'check_fence',
                 'handle_dom0_event', 'handle_domu_event'):
        p = plugins / name
        p.write_text(STUB.format(name=name, calls=calls, failing='-no-such-'))
        p.chmod(0o755)


def nasty_cluster(**timing):
    text = inventory_text(NASTY_VALUES)
    if timing:
        text += '\n[timing]\n' + ''.join(f'{k} = {v}\n' for k, v in timing.items())
    return loads(text, 'cluster.toml')


def recorded(c, o: Options) -> set[str]:
    """The lines the stubs write for each check, worked out from the inventory."""
    t = c.targets['disk1']
    words = lambda *w: ' '.join(f'[{x}]' for x in w)
    return {
        *('check_xen_host ' + words('-H', h.address, *dom0_args(c, h), '--state-db',
                                    c.defaults.state_db, '-t', c.timing.dom0_check_timeout)
          for h in c.dom0s.values()),
        'check_iscsi_target ' + words('-H', t.host, '-p', t.port, '--target', t.iqn, '--lun',
                                      t.lun, '--chap-user', t.chap_user, '--chap-secret-file',
                                      t.chap_secret_file, '-t', c.timing.check_timeout),
        'check_xen_domu ' + words('--cluster', o.inventory_path, '--domain', 'web1',
                                  '--max-age', c.timing.domu_max_age, '-t',
                                  c.timing.check_timeout),
    }


def test_a_real_nagios_hands_hostile_values_to_the_plugins_as_they_are(tmp_path):
    """The procedure the property test uses (split at '!', `$$`, sh words) is
    what a real Nagios 4 does: the stand-in plugins get each value intact."""
    calls, plugins = tmp_path / 'calls', tmp_path / 'plugins' / 'x y$z'
    o = Options(**dict(NASTY_OPTIONS, plugin_dir=str(plugins)), interval_length=1)
    c = nasty_cluster()
    write_tree(render(c, 'nagios', o), tmp_path / 'objects')
    stubs(plugins, calls)
    v = nagios_verify(tmp_path, tmp_path / 'objects', 1)
    assert v.returncode == 0 and 'Total Warnings: 0' in v.stdout, v.stdout
    (tmp_path / 'nagios.cfg').write_text((tmp_path / 'nagios.cfg').read_text() + '\n'.join([
        'service_inter_check_delay_method=n', 'host_inter_check_delay_method=n',
        'max_service_check_spread=1', 'max_host_check_spread=1',
        'check_result_reaper_frequency=1', 'retain_state_information=0',
        'enable_notifications=0', 'cached_host_check_horizon=0', '']))
    assert subprocess.run(['nagios4', '-d', str(tmp_path / 'nagios.cfg')],
                          timeout=30).returncode == 0
    want = recorded(c, o)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if calls.exists() and want <= set(calls.read_text().splitlines()):
                break
            time.sleep(0.2)
    finally:
        os.kill(int((tmp_path / 'nagios.lock').read_text()), signal.SIGTERM)
    seen = set(calls.read_text().splitlines()) if calls.exists() else set()
    assert want <= seen, sorted(seen)


ICINGA_RUN = '''\
const PluginDir = "/usr/lib/nagios/plugins"
const NodeName = "lab"
const ZoneName = "lab"
include <itl>
include <plugins>
object CheckerComponent "checker" {{ }}
object Endpoint NodeName {{ }}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
include "{objects}/*.conf"
'''


def test_a_real_icinga2_hands_hostile_values_to_the_plugins_as_they_are(tmp_path):
    """Icinga 2 resolves custom variables as macros, recursively: `$$` in the
    rendering is the `$` the stand-in plugins get."""
    calls, plugins = tmp_path / 'calls', tmp_path / 'plugins' / 'x y$z'
    o = Options(**dict(NASTY_OPTIONS, plugin_dir=str(plugins)))
    c = nasty_cluster(dom0_check=2, target_check=2, domu_check=2, fence_check=2)
    write_tree(render(c, 'icinga2', o), tmp_path / 'objects')
    stubs(plugins, calls)
    (tmp_path / 'icinga2.conf').write_text(ICINGA_RUN.format(objects=tmp_path / 'objects'))
    dirs = {d: tmp_path / d for d in ('cache', 'data', 'log', 'run', 'spool')}
    for d in dirs.values():
        d.mkdir()
    (dirs['run'] / 'icinga2').mkdir()
    daemon = subprocess.Popen(
        ['icinga2', 'daemon', '-c', str(tmp_path / 'icinga2.conf'),
         *(f'-DConfiguration.{key}={dirs[d]}' for key, d in (
             ('CacheDir', 'cache'), ('DataDir', 'data'), ('LogDir', 'log'),
             ('InitRunDir', 'run'), ('SpoolDir', 'spool'))),
         '-DConfiguration.RunAsUser=root', '-DConfiguration.RunAsGroup=root'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Icinga 2 passes the arguments sorted by name, not in our order: compare the words
    words = lambda line: tuple(sorted(re.findall(r'\[([^\]]*)\]', line)))
    want = {words(line) for line in recorded(c, o)}
    got: set = set()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not want <= got:
            got = {words(line) for line in
                   (calls.read_text().splitlines() if calls.exists() else [])}
            time.sleep(0.2)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert want <= got, sorted(got)
