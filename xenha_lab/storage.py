"""The lab's storage node: a real tgtd (iSCSI) and real vblades (AoE).

tgtd listens on the lab's storage address (``lab.addr(5)``:3260) with its own
control port (``-C lab.port(0)``), so labs never share a daemon.  LUNs are
small sparse files.  Target ``disk1`` has an initiator-name ACL (each dom0 and
the monitoring node), ``disk2`` wants CHAP (secret in a mode-600 file).

AoE lives on layer 2 only inside namespaces this lab creates: a SAN namespace
with a bridge ``br0`` on which the vblades listen, and one veth pair from it
to each dom0's namespace (``lab.netns(host)``) and to a monitoring namespace;
the far end is called ``san0`` everywhere.

Every fault the tests inject is one function here; everything is undone by
``lab.down()`` (tgtadm deletes run before the daemon is killed: tgtd ignores
SIGTERM while it serves targets).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from xenha.units import MiB
from xenha_lab.core import Lab

IQN = 'iqn.2026-01.lab.xenha'
MONITOR = 'monitor'
SAN_IF = 'san0'          # the SAN-side interface name inside a dom0 / monitor ns
CHAP_USER = 'xenha'


def initiator_name(host: str) -> str:
    return f'{IQN}:{host}'


def default_targets() -> list[dict]:
    return [
        {'name': f'{IQN}:disk1', 'size': 64 * MiB, 'acl': 'hosts'},
        {'name': f'{IQN}:disk2', 'size': 32 * MiB, 'acl': 'ALL', 'chap': True},
    ]


def info(lab: Lab) -> dict:
    return lab.info['storage']


# -- bring up --------------------------------------------------------------------
def up(lab: Lab, targets: list[dict] | None = None, hosts: list[str] | None = None,
       aoe: list[tuple[int, int]] | None = None) -> dict:
    """Start tgtd + vblades for `hosts` (default: the lab's dom0s)."""
    if hosts is None:
        hosts = list(lab.info.get('hosts', {})) or ['dom0-1', 'dom0-2']
    targets = default_targets() if targets is None else targets
    aoe = [(1, 2)] if aoe is None else aoe
    sdir = lab.dir / 'storage'
    sdir.mkdir(exist_ok=True)
    secret_file = sdir / 'chap.secret'
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as fh:
        fh.write(secrets.token_hex(8) + '\n')
    names = {h: initiator_name(h) for h in [*hosts, MONITOR]}
    st = {
        'portal': lab.addr(5), 'port': 3260, 'control': lab.port(0),
        'hosts': hosts, 'initiators': names,
        'chap': {'user': CHAP_USER, 'secret_file': str(secret_file)},
        'targets': [], 'aoe': {},
    }
    for tid, spec in enumerate(targets, start=1):
        path = sdir / f'lun-{tid}-1.img'
        with open(path, 'wb') as fh:
            fh.truncate(spec.get('size', 64 * MiB))
        acl = spec.get('acl', 'ALL')
        st['targets'].append({
            'tid': tid, 'name': spec['name'], 'chap': bool(spec.get('chap')),
            'luns': {'1': str(path)},
            'acl': ['ALL'] if acl == 'ALL' else
                   list(names.values()) if acl == 'hosts' else list(acl),
        })
    lab.info['storage'] = st
    for host, data in lab.info.get('hosts', {}).items():
        # what open-iscsi reads on a real dom0: /etc/iscsi/initiatorname.iscsi
        Path(data['state_dir'], 'initiatorname.iscsi').write_text(
            f'InitiatorName={initiator_name(host)}\n')
    # sockets of a crashed earlier lab with the same block would make tgtadm
    # talk to nothing; after down, the files go too
    lab.files += [_socket(lab), _socket(lab) + '.lock']
    lab.teardown.append([sys.executable, '-m', 'xenha_lab.storage', 'down',
                         str(lab.dir)])
    lab.save()
    tgtd_start(lab)
    _aoe_up(lab, hosts, aoe)
    lab.save()
    return st


def _socket(lab: Lab) -> str:
    return f'/var/run/tgtd/socket.{lab.port(0)}'


def tgtadm(lab: Lab, *args: str, timeout: float = 5.0, check: bool = True,
           secret: str | None = None) -> subprocess.CompletedProcess:
    argv = ['tgtadm', '-C', str(lab.port(0)), '--lld', 'iscsi', *args]
    if secret is not None:
        # tgtadm has no other way to take an account password than argv (tgt's
        # own tgt-admin does the same); it lives there for a few milliseconds
        # on the storage node only, and never reaches a log or a message.
        argv += ['--password', secret]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        shown = args[:8]
        raise RuntimeError(f'tgtadm {" ".join(shown)}: {r.stderr.strip()}')
    return r


def _configure(lab: Lab) -> None:
    st = info(lab)
    secret = Path(st['chap']['secret_file']).read_text().strip()
    tgtadm(lab, '--mode', 'account', '--op', 'new', '--user', st['chap']['user'],
           secret=secret)
    for t in st['targets']:
        tid = str(t['tid'])
        tgtadm(lab, '--mode', 'target', '--op', 'new', '--tid', tid,
               '--targetname', t['name'])
        for lun, path in t['luns'].items():
            tgtadm(lab, '--mode', 'logicalunit', '--op', 'new', '--tid', tid,
                   '--lun', lun, '--backing-store', path)
        for who in t['acl']:
            opt = '--initiator-address' if who == 'ALL' else '--initiator-name'
            tgtadm(lab, '--mode', 'target', '--op', 'bind', '--tid', tid, opt, who)
        if t['chap']:
            tgtadm(lab, '--mode', 'account', '--op', 'bind', '--tid', tid,
                   '--user', st['chap']['user'])


def tgtd_start(lab: Lab) -> None:
    st = info(lab)
    for f in (_socket(lab), _socket(lab) + '.lock'):
        if os.path.exists(f) and not lab.alive('tgtd'):
            os.unlink(f)
    lab.spawn('tgtd', ['tgtd', '-f', '-C', str(st['control']), '--iscsi',
                       f'portal={st["portal"]}:{st["port"]}'])
    lab.wait_port(st['portal'], st['port'])
    deadline = time.monotonic() + 5
    while tgtadm(lab, '--mode', 'system', '--op', 'show', check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError('tgtd does not answer tgtadm')
        time.sleep(0.02)
    _configure(lab)


def tgtd_stop(lab: Lab) -> None:
    """The daemon dies (a crash: SIGKILL, it ignores SIGTERM with targets)."""
    if lab.alive('tgtd'):
        lab.signal('tgtd', signal.SIGKILL)
    lab.stop('tgtd', timeout=1.0)
    for f in (_socket(lab), _socket(lab) + '.lock'):
        if os.path.exists(f):
            os.unlink(f)


def tgtd_hang(lab: Lab) -> None:
    lab.signal('tgtd', signal.SIGSTOP)


def tgtd_resume(lab: Lab) -> None:
    lab.signal('tgtd', signal.SIGCONT)


def _down(lab: Lab) -> None:
    """Teardown: wake tgtd, delete its targets, ask it to exit."""
    if not lab.alive('tgtd'):
        return
    tgtd_resume(lab)
    for t in info(lab)['targets']:
        tgtadm(lab, '--mode', 'target', '--op', 'delete', '--force',
               '--tid', str(t['tid']), check=False, timeout=3)
    tgtadm(lab, '--mode', 'system', '--op', 'delete', check=False, timeout=3)


# -- iSCSI faults ----------------------------------------------------------------
def _target(lab: Lab, target: str | int) -> dict:
    for t in info(lab)['targets']:
        if target in (t['tid'], t['name'], t['name'].rsplit(':', 1)[-1]):
            return t
    raise KeyError(target)


def lun_offline(lab: Lab, target='disk1', lun: int = 1) -> None:
    tgtadm(lab, '--mode', 'logicalunit', '--op', 'update', '--tid',
           str(_target(lab, target)['tid']), '--lun', str(lun), '--params', 'online=0')


def lun_online(lab: Lab, target='disk1', lun: int = 1) -> None:
    tgtadm(lab, '--mode', 'logicalunit', '--op', 'update', '--tid',
           str(_target(lab, target)['tid']), '--lun', str(lun), '--params', 'online=1')


def target_offline(lab: Lab, target='disk1') -> None:
    tgtadm(lab, '--mode', 'target', '--op', 'update', '--tid',
           str(_target(lab, target)['tid']), '--name', 'state', '--value', 'offline')


def target_online(lab: Lab, target='disk1') -> None:
    tgtadm(lab, '--mode', 'target', '--op', 'update', '--tid',
           str(_target(lab, target)['tid']), '--name', 'state', '--value', 'ready')


def acl_revoke(lab: Lab, host: str, target='disk1') -> None:
    tgtadm(lab, '--mode', 'target', '--op', 'unbind', '--tid',
           str(_target(lab, target)['tid']), '--initiator-name', initiator_name(host))


def acl_restore(lab: Lab, host: str, target='disk1') -> None:
    tgtadm(lab, '--mode', 'target', '--op', 'bind', '--tid',
           str(_target(lab, target)['tid']), '--initiator-name', initiator_name(host))


def show(lab: Lab) -> str:
    return tgtadm(lab, '--mode', 'target', '--op', 'show').stdout


# -- AoE -------------------------------------------------------------------------
def _ip(*args: str) -> None:
    r = subprocess.run(['ip', *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f'ip {" ".join(args)}: {r.stderr.strip()}')


def _aoe_up(lab: Lab, hosts: list[str], exports: list[tuple[int, int]]) -> None:
    san = lab.netns('san')
    # a fixed MAC: a bridge otherwise takes its lowest port's MAC, and changes it
    # when a port joins (the vblades on br0 answer from that address)
    _ip('-n', san, 'link', 'add', 'br0', 'address', f'02:aa:00:00:{lab.block // 256:02x}:'
        f'{lab.block % 256:02x}', 'type', 'bridge')
    _ip('-n', san, 'link', 'set', 'br0', 'up')
    links = {}
    for i, host in enumerate([*hosts, MONITOR]):
        ns = lab.netns(host if host != MONITOR else 'mon')
        port = f'p{i}'       # names only need to be unique inside each namespace
        _ip('link', 'add', port, 'netns', san, 'type', 'veth', 'peer', 'name',
            SAN_IF, 'netns', ns)
        _ip('-n', san, 'link', 'set', port, 'master', 'br0', 'up')
        _ip('-n', ns, 'link', 'set', SAN_IF, 'up')
        links[host] = {'netns': ns, 'port': port}
    st = info(lab)
    st['aoe'] = {'san': san, 'interface': SAN_IF, 'links': links, 'exports': {}}
    for shelf, slot in exports:
        vblade_start(lab, shelf, slot)


def mac_of(lab: Lab, host: str) -> str:
    """The MAC of `host`'s interface on the SAN segment (its AoE identity):
    a QEMU dom0's own NIC, else the veth of its namespace."""
    import json
    known = lab.info.get('hosts', {}).get(host, {}).get('san_mac')
    if known:
        return known
    out = subprocess.run(['ip', '-n', netns_of(lab, host), '-j', 'link', 'show', 'dev',
                          SAN_IF], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]['address']


def netns_of(lab: Lab, host: str) -> str:
    """The namespace of a dom0 (or 'monitor') on the SAN segment."""
    return info(lab)['aoe']['links'][host]['netns']


def vblade_start(lab: Lab, shelf: int, slot: int, name: str | None = None,
                 node: str | None = None, size: int = 16 * MiB) -> str:
    """Export eSHELF.SLOT from the SAN namespace's bridge, or from another
    storage `node` (its own namespace and MAC, on the same segment): the way
    to make a duplicate export, as a second SAN box would."""
    st = info(lab)['aoe']
    name = name or f'vblade-e{shelf}.{slot}'
    ns, iface = (st['san'], 'br0') if node is None else (_node(lab, node), SAN_IF)
    path = lab.dir / 'storage' / f'aoe-e{shelf}.{slot}.img'
    if not path.exists():
        with open(path, 'wb') as fh:
            fh.truncate(size)
    lab.spawn(name, ['vblade', str(shelf), str(slot), iface, str(path)], netns=ns)
    st['exports'][name] = {'shelf': shelf, 'slot': slot, 'path': str(path),
                           'node': node}
    lab.save()
    _wait_listening(lab, name)
    return name


def _node(lab: Lab, node: str) -> str:
    """Namespace of an extra storage node, plugged into the SAN bridge once."""
    st = info(lab)['aoe']
    nodes = st.setdefault('nodes', {})
    if node not in nodes:
        ns = lab.netns(node)
        port = f'n{len(nodes)}'
        _ip('link', 'add', port, 'netns', st['san'], 'type', 'veth', 'peer',
            'name', SAN_IF, 'netns', ns)
        _ip('-n', st['san'], 'link', 'set', port, 'master', 'br0', 'up')
        _ip('-n', ns, 'link', 'set', SAN_IF, 'up')
        nodes[node] = ns
        lab.save()
    return nodes[node]


def _wait_listening(lab: Lab, name: str, timeout: float = 3.0) -> None:
    """vblade prints its banner once its socket is bound."""
    log = Path(lab.procs[name].log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if 'pid' in log.read_text(errors='replace') or not lab.alive(name):
            break
        time.sleep(0.01)
    if not lab.alive(name):
        raise RuntimeError(f'{name} died: {log.read_text(errors="replace")[-300:]}')


def vblade_stop(lab: Lab, shelf: int = 1, slot: int = 2, name: str | None = None) -> None:
    name = name or f'vblade-e{shelf}.{slot}'
    lab.stop(name, timeout=1.0)
    info(lab)['aoe']['exports'].pop(name, None)
    lab.save()


def link_down(lab: Lab, host: str) -> None:
    st = info(lab)['aoe']
    _ip('-n', st['san'], 'link', 'set', st['links'][host]['port'], 'down')


def link_up(lab: Lab, host: str) -> None:
    st = info(lab)['aoe']
    _ip('-n', st['san'], 'link', 'set', st['links'][host]['port'], 'up')


if __name__ == '__main__':   # teardown entry: python -m xenha_lab.storage down DIR
    if sys.argv[1:2] == ['down']:
        _down(Lab.load(sys.argv[2]))


def clear_reservations(lab: Lab, cluster) -> None:
    """Every persistent reservation and AoE reserve list of the lab's targets
    gone (between two soak seeds): registrations come back with each attach."""
    from xenha.storage import aoe, iscsi, reservations
    me = reservations.monitor()
    for t in cluster.targets.values():
        if t.kind == 'iscsi':
            s = reservations._session(t, me, 5.0)
            try:
                iscsi.pr_register(s, t.lun, me.pr_key)
                iscsi.pr_clear(s, t.lun, me.pr_key)
                s.logout()
            finally:
                s.close()
        else:
            with aoe.netns(netns_of(lab, MONITOR)):
                sock = aoe.open_socket(t.interface)
            try:
                for r in aoe.probe(t.interface, t.shelf, t.slot, timeout=1.0, sock=sock):
                    aoe.set_reserve_list(sock, aoe.mac_bytes(r.mac), t.shelf, t.slot, [],
                                         2.0, force=True)
            finally:
                sock.close()


def may_write(lab: Lab, cluster, host: str, target_name: str) -> bool:
    """The target's own answer: may `host` write this disk now?"""
    from xenha.storage import reservations
    t = cluster.targets[target_name]
    from xenha.storage import aoe

    def opener(interface):
        return aoe.open_socket(interface, netns_of(lab, MONITOR))
    facts = reservations.readiness(t, [reservations.dom0(cluster.dom0s[host])],
                                   timeout=5.0, opener=opener)
    if facts.error:
        raise RuntimeError(f'{target_name}: {facts.error}')
    return facts.may_write(host)
