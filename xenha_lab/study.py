"""The storage study's targets on the lab: one real tgtd with one target per
client, or one real vblade per client, on a backing store of choice.

iSCSI: tgtd on the lab's storage address (127.x, loopback only), target
``iqn.2026-01.lab.xenha:study-K`` per client, ACL ALL (nothing but this lab
can reach 127.x of this block).

AoE: a SAN namespace with a bridge, one vblade per client exporting
e1.K on it (``-b`` buffers, ``-d`` for O_DIRECT), and one client namespace
holding one veth per client (``c0``, ``c1`` …) plugged into the bridge, each
client's raw socket bound to its own veth: frames never leave the
namespaces this lab made.  The MTU is set on every one of those links.

Backing stores: ``tmpfs`` (files in /dev/shm, removed at lab down), ``file``
(files in the lab directory), ``direct`` (files in the lab directory opened
with O_DIRECT: tgtd ``--bsoflags direct``, vblade ``-d``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xenha.study import measure
from xenha.study.run import MiB, Options, StudyError
from xenha_lab import storage
from xenha_lab.core import Lab

IQN = f'{storage.IQN}:study'
SHELF = 1
CLIENT_IF = 'c'          # client interfaces c0, c1, … in the client namespace
BACKINGS = ('tmpfs', 'file', 'direct')


def _ip(*args: str) -> None:
    r = subprocess.run(['ip', *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f'ip {" ".join(args)}: {r.stderr.strip()}')


def _backing_dir(lab: Lab, backing: str) -> Path:
    if backing == 'tmpfs':
        d = Path('/dev/shm') / f'xenha-study-{lab.block}'
        d.mkdir(mode=0o700, exist_ok=True)
        if str(d) not in lab.files:
            lab.files.append(str(d))
            lab.save()
        return d
    d = lab.dir / 'study'
    d.mkdir(exist_ok=True)
    return d


def free_bytes(lab: Lab, backing: str) -> int:
    st = os.statvfs(_backing_dir(lab, backing))
    return st.f_bavail * st.f_frsize


def _images(lab: Lab, backing: str, n: int, size: int, prefix: str) -> list[str]:
    d = _backing_dir(lab, backing)
    paths = []
    for k in range(n):
        p = d / f'{prefix}-{k}.img'
        with open(p, 'wb') as fh:          # sparse: only what a client writes is used
            fh.truncate(size)
        paths.append(str(p))
    return paths


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (threads made later inherit it)."""
    try:
        tids = [int(t) for t in os.listdir(f'/proc/{pid}/task')]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


# -- iSCSI ------------------------------------------------------------------------------
def iscsi_up(lab: Lab, n: int, size: int, backing: str = 'tmpfs',
             cpus: set[int] | None = None) -> dict:
    """tgtd with n targets of `size` bytes; {'portal', 'port', 'pid', 'targets'}."""
    if backing not in BACKINGS:
        raise ValueError(backing)
    images = _images(lab, backing, n, size, 'iscsi')
    st = {'portal': lab.addr(5), 'port': 3260, 'control': lab.port(0),
          'hosts': [], 'initiators': {}, 'chap': {}, 'targets': [], 'aoe': {}}
    lab.info['storage'] = st
    lab.files += [storage._socket(lab), storage._socket(lab) + '.lock']
    lab.teardown.append([sys.executable, '-m', 'xenha_lab.storage', 'down', str(lab.dir)])
    lab.save()
    for f in (storage._socket(lab), storage._socket(lab) + '.lock'):
        if os.path.exists(f) and not lab.alive('tgtd'):
            os.unlink(f)
    proc = lab.spawn('tgtd', ['tgtd', '-f', '-C', str(st['control']), '--iscsi',
                              f'portal={st["portal"]}:{st["port"]}'])
    if cpus:
        pin(proc.pid, cpus)
    lab.wait_port(st['portal'], st['port'])
    deadline = time.monotonic() + 5
    while storage.tgtadm(lab, '--mode', 'system', '--op', 'show',
                         check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError('tgtd does not answer tgtadm')
        time.sleep(0.02)
    for k, path in enumerate(images):
        tid = str(k + 1)
        name = f'{IQN}-{k}'
        storage.tgtadm(lab, '--mode', 'target', '--op', 'new', '--tid', tid,
                       '--targetname', name)
        extra = ['--bsoflags', 'direct'] if backing == 'direct' else []
        storage.tgtadm(lab, '--mode', 'logicalunit', '--op', 'new', '--tid', tid,
                       '--lun', '1', '--backing-store', path, *extra)
        storage.tgtadm(lab, '--mode', 'target', '--op', 'bind', '--tid', tid,
                       '--initiator-address', 'ALL')
        st['targets'].append({'tid': k + 1, 'name': name, 'chap': False,
                              'luns': {'1': path}, 'acl': ['ALL']})
    if cpus:                      # the backing store's I/O threads exist now
        pin(proc.pid, cpus)
    lab.save()
    return {'portal': st['portal'], 'port': st['port'], 'pid': proc.pid,
            'targets': [t['name'] for t in st['targets']], 'images': images}


def iscsi_down(lab: Lab) -> None:
    storage._down(lab)
    lab.stop('tgtd', timeout=2.0)
    storage.tgtd_stop(lab)


# -- AoE ---------------------------------------------------------------------------------
def aoe_up(lab: Lab, n: int, size: int, backing: str = 'tmpfs', mtu: int = 1500,
           bufcnt: int = 16, cpus: set[int] | None = None) -> dict:
    """n vblades (e1.0 … e1.{n-1}) on a bridge; one client veth each."""
    if backing not in BACKINGS:
        raise ValueError(backing)
    images = _images(lab, backing, n, size, 'aoe')
    san = lab.netns('ssan')
    cli = lab.netns('scli')
    _ip('-n', san, 'link', 'add', 'br0', 'mtu', str(mtu), 'address',
        f'02:ab:00:00:{lab.block // 256:02x}:{lab.block % 256:02x}', 'type', 'bridge')
    _ip('-n', san, 'link', 'set', 'br0', 'up')
    ifaces = []
    for k in range(n):
        iface = f'{CLIENT_IF}{k}'
        _ip('link', 'add', f'p{k}', 'netns', san, 'mtu', str(mtu), 'type', 'veth',
            'peer', 'name', iface, 'netns', cli, 'mtu', str(mtu))
        _ip('-n', san, 'link', 'set', f'p{k}', 'master', 'br0', 'up')
        _ip('-n', cli, 'link', 'set', iface, 'up')
        ifaces.append(iface)
    pids = []
    for k, path in enumerate(images):
        name = f'study-vblade-{k}'
        argv = ['vblade', '-b', str(bufcnt), *(['-d'] if backing == 'direct' else []),
                str(SHELF), str(k), 'br0', path]
        proc = lab.spawn(name, argv, netns=san)
        pids.append(proc.pid)
    for k in range(n):
        storage._wait_listening(lab, f'study-vblade-{k}')
    # the vblade itself is the child of `ip netns exec`'s exec: same pid
    if cpus:
        for pid in pids:
            pin(pid, cpus)
    lab.info['study_aoe'] = {'san': san, 'clients': cli, 'n': n}
    lab.save()
    return {'san': san, 'netns': cli, 'interfaces': ifaces, 'shelf': SHELF,
            'slots': list(range(n)), 'pids': pids, 'images': images, 'mtu': mtu,
            'bufcnt': bufcnt}


def aoe_down(lab: Lab) -> None:
    st = lab.info.pop('study_aoe', None)
    if not st:
        return
    for k in range(st['n']):
        lab.stop(f'study-vblade-{k}', timeout=1.0)
    for ns in (st['clients'], st['san']):
        subprocess.run(['ip', 'netns', 'delete', ns], capture_output=True)
        if ns in lab.namespaces:
            lab.namespaces.remove(ns)
    lab.save()


def remove_images(images: list[str]) -> None:
    for p in images:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def tmpfs_gone(lab: Lab) -> None:
    shutil.rmtree(Path('/dev/shm') / f'xenha-study-{lab.block}', ignore_errors=True)


# -- the targets `xenha study` runs on (entry point xenha.study_targets: lab) -----------
class LabTargets:
    """The lab's tgtd / vblades for the study; `with` brings them down."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.lab = Lab()
        ncpu = os.cpu_count() or 1
        self.pinning = None
        if opts.pin and ncpu >= 2:
            self.pinning = {'target': [0], 'clients': list(range(1, ncpu))}
        self.where = 'lab'

    def close(self) -> list[str]:
        tmpfs_gone(self.lab)
        return self.lab.down()

    def check_room(self, n: int, size: int) -> None:
        need = n * size
        free = free_bytes(self.lab, self.opts.backing)
        if need > free * 0.9:
            raise StudyError(f'{n} disks of {size // MiB} MiB on {self.opts.backing} need '
                             f'{need / 2 ** 30:.1f} GiB, {free / 2 ** 30:.1f} GiB free: '
                             f'use fewer clients, a smaller --size or another --backing')

    def up(self, protocol: str, n: int, size: int) -> dict:
        self.check_room(n, size)
        cpus = set(self.pinning['target']) if self.pinning else None
        if protocol == 'iscsi':
            self.tg = iscsi_up(self.lab, n, size, self.opts.backing, cpus)
        else:
            self.tg = aoe_up(self.lab, n, size, self.opts.backing,
                                       self.opts.mtu, self.opts.bufcnt, cpus)
        self.protocol = protocol
        return self.tg

    def down(self) -> None:
        if self.protocol == 'iscsi':
            iscsi_down(self.lab)
        else:
            aoe_down(self.lab)
        remove_images(self.tg['images'])

    def jobs(self, n: int, size: int, record: int, seed: int) -> tuple[list[dict], str | None]:
        o, tg = self.opts, self.tg
        cpu = self.pinning['clients'] if self.pinning else None
        jobs = []
        for k in range(n):
            base = {'size': size, 'record': record, 'depth': o.depth, 'seed': seed + k,
                    'cpu': cpu}
            if self.protocol == 'iscsi':
                base.update(protocol='iscsi', portal=tg['portal'], port=tg['port'],
                            target=tg['targets'][k], lun=1,
                            initiator=f'iqn.2026-01.org.xenha:study-{k}')
            else:
                base.update(protocol='aoe', interface=tg['interfaces'][k],
                            shelf=tg['shelf'], slot=tg['slots'][k], policy=o.policy,
                            deadline=o.phase_limit)
            jobs.append(base)
        return jobs, (tg['netns'] if self.protocol == 'aoe' else None)

    def snapshot(self) -> dict:
        tg = self.tg
        pids = [tg['pid']] if self.protocol == 'iscsi' else tg['pids']
        snap = {'cpu': measure.cpu_snapshot(pids)}
        if self.protocol == 'iscsi':
            snap['socket_drops'] = measure.tcp_drops(tg['portal'], tg['port'])
            snap['link_drops'] = 0
        else:
            snap['socket_drops'] = measure.packet_drops(tg['san'])
            snap['link_drops'] = sum(x or 0 for x in (measure.link_drops(tg['san']),
                                                      measure.link_drops(tg['netns'])))
        return snap
