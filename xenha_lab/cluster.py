"""A whole xenha cluster on one machine: what `xenha lab up` and the tests build.

Two active dom0s and a spare (real sshds, simulated toolstack), a storage node
(real tgtd for iSCSI, real vblade for AoE), one BMC per dom0 (real ipmi_sim,
fenced with the real fence_ipmilan), the domUs started on their homes through
the product's own storage login and `xl create`, and an inventory
(`cluster.toml`) that describes all of it for the checks, the engine and
`xenha render`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from xenha_lab import dom0 as dom0_lab
from xenha_lab.core import Lab
# the lab's cluster.toml (re-exported: cluster.cluster(lab) is the lab's Cluster)
from xenha_lab.inventory import cluster, inventory_path, write_configs, write_inventory

__all__ = ['GuestSpec', 'up', 'storage_up', 'start_homes', 'cluster', 'inventory_path',
           'write_configs', 'write_inventory', 'device_of']


@dataclass(frozen=True)
class GuestSpec:
    name: str
    home: str
    memory_mb: int
    disk: str            # 'iscsi' or 'aoe'
    priority: int = 0
    ha: bool = True


DEFAULT_HOSTS = (('dom0-1', 'active'), ('dom0-2', 'active'), ('dom0-3', 'spare'))
DEFAULT_GUESTS = (
    GuestSpec('db1', 'dom0-1', 1024, 'iscsi', priority=20),
    GuestSpec('web1', 'dom0-1', 512, 'iscsi', priority=10),
    GuestSpec('mail1', 'dom0-2', 512, 'aoe', priority=10),
    GuestSpec('build1', 'dom0-2', 256, 'aoe', priority=0),
)
# the real-Xen cluster: two QEMU dom0s (memory and CPUs of a small machine)
QEMU_HOSTS = (('dom0-1', 'active'), ('dom0-2', 'spare'))
QEMU_GUESTS = (GuestSpec('web1', 'dom0-1', 128, 'iscsi'),
               GuestSpec('mail1', 'dom0-1', 128, 'aoe'))


def up(directory=None, *, hosts=DEFAULT_HOSTS, guests=DEFAULT_GUESTS,
       host_memory_mb: int = 8192, storage: bool = True, bmc: bool = True,
       start_guests: bool = True, fencing: str | None = None, nagios: bool = False,
       say=None, xen: str = 'sim', timing: dict | None = None, **defaults) -> Lab:
    """Bring the lab up; on any failure everything started so far is torn down.

    xen='sim': dom0s are sshds with the simulated toolstack (seconds);
    xen='qemu': real Xen 4.17 dom0s under QEMU/TCG (minutes; xenha_lab.qemu).
    `timing`: the inventory's [timing] table (default: none for the simulated
    dom0s, qemu.TIMING for the real ones); `defaults`: its [defaults] keys.
    """
    say = say or (lambda text: None)
    lab = Lab(directory)
    try:
        if xen == 'qemu':
            _build_qemu(lab, QEMU_HOSTS, QEMU_GUESTS, start_guests, timing, say, defaults)
        else:
            lab.info['inventory_timing'] = dict(timing or {})
            _build(lab, hosts, guests, host_memory_mb, storage, bmc, start_guests,
                   fencing, say, defaults)
        if nagios:
            from xenha_lab import nagios as nagios_lab
            nagios_lab.up(lab, say=say)
    except BaseException:
        lab.down()
        raise
    return lab


def _build(lab, hosts, guests, host_memory_mb, storage, bmc, start_guests, fencing,
           say, defaults):
    t = time.monotonic()
    for name, _role in hosts:
        dom0_lab.add_host(lab, name, total_mb=host_memory_mb)
    say(f'{len(hosts)} dom0s up (sshd on {", ".join(h["address"] for h in lab.info["hosts"].values())})'
        f' in {time.monotonic() - t:.1f}s')
    lab.info['roles'] = dict(hosts)
    lab.info['guests'] = [vars(g) for g in guests]
    disks = {}
    if storage:
        t = time.monotonic()
        disks = storage_up(lab, hosts, guests)
        st = lab.info['storage']
        shelves = sorted(f"e{e['shelf']}.{e['slot']}" for e in st['aoe']['exports'].values())
        say(f'storage up: tgtd on {st["portal"]}:{st["port"]} ({len(st["targets"])} targets), '
            f'vblade exports {", ".join(shelves)} in {time.monotonic() - t:.1f}s')
    if bmc:
        from xenha_lab import bmc as bmc_lab
        t = time.monotonic()
        for name, _role in hosts:
            bmc_lab.up(lab, name)
        say(f'{len(hosts)} BMCs up (ipmi_sim) in {time.monotonic() - t:.1f}s')
    lab.info['disks'] = disks
    lab.info['inventory_defaults'] = dict(defaults, fencing=fencing)
    write_inventory(lab, fencing=fencing, **defaults)
    write_configs(lab)
    lab.save()
    if start_guests:
        t = time.monotonic()
        start_homes(lab)
        say(f'{len(guests)} domUs started on their homes in {time.monotonic() - t:.1f}s')


def _build_qemu(lab, hosts, guests, start_guests, timing, say, defaults):
    """The lab cluster with QEMU dom0s; its inventory's [timing] is `timing`, by
    default qemu.TIMING (emulated dom0s are slow)."""
    from xenha_lab import bmc as bmc_lab
    from xenha_lab import qemu
    defaults.setdefault('timeout', 60)      # xl create takes ~10 s under TCG
    timings = lab.info.setdefault('timings', {})
    lab.info['inventory_timing'] = dict(qemu.TIMING if timing is None else timing)
    t = time.monotonic()
    for name, _role in hosts:           # boot them side by side
        qemu.add_host(lab, name, wait=False)
    for name, _role in hosts:
        qemu.wait_ssh(lab, name)
    timings['boot'] = round(time.monotonic() - t, 1)
    say(f'{len(hosts)} real-Xen dom0s answer SSH + xl info after {timings["boot"]}s')
    lab.info['roles'] = dict(hosts)
    lab.info['guests'] = [vars(g) for g in guests]
    t = time.monotonic()
    disks = storage_up(lab, hosts, guests, chap=False)
    qemu.format_disks(lab)
    for name, _role in hosts:
        qemu.san_attach(lab, name)
    lab.info['disks'] = disks
    for name, _role in hosts:
        bmc_lab.up(lab, name)           # its chassis control: dom0.power, on QEMU
    lab.info['inventory_defaults'] = dict(defaults)
    write_inventory(lab, **defaults)
    write_configs(lab)              # rendered from the inventory
    qemu.real_guest_configs(lab)
    for name, _role in hosts:
        qemu.push_configs(lab, name)
    lab.save()
    timings['storage_bmc_configs'] = round(time.monotonic() - t, 1)
    say(f'storage, BMCs, configs in {timings["storage_bmc_configs"]}s')
    if start_guests:
        t = time.monotonic()
        start_homes(lab)
        timings['start_homes'] = round(time.monotonic() - t, 1)
        say(f'{len(guests)} domUs started on their homes in {timings["start_homes"]}s')
    lab.save()


def storage_up(lab: Lab, hosts, guests, chap: bool = True) -> dict:
    """tgtd with one target per iSCSI guest, vblade with one export per AoE guest;
    returns guest name -> its disk (what the inventory's targets say)."""
    from xenha_lab import storage as storage_lab
    from xenha.storage.iscsi import DEFAULT_INITIATOR
    iscsi = [g for g in guests if g.disk == 'iscsi']
    aoe = [g for g in guests if g.disk == 'aoe']
    # the dom0s, and the monitoring node under the name check_iscsi_target uses
    acl = [storage_lab.initiator_name(h) for h, _ in hosts] + [DEFAULT_INITIATOR]
    targets = [{'name': f'{storage_lab.IQN}:{g.name}', 'size': 32 * 1024 * 1024,
                'acl': acl} for g in iscsi]
    if chap:
        targets.append({'name': f'{storage_lab.IQN}:chap', 'size': 16 * 1024 * 1024,
                        'acl': 'ALL', 'chap': True})
    exports = [(1, slot) for slot in range(1, len(aoe) + 1)]
    st = storage_lab.up(lab, targets=targets, hosts=[h for h, _ in hosts], aoe=exports)
    disks = {}
    for g in iscsi:
        disks[g.name] = {'kind': 'iscsi', 'portal': f"{st['portal']}:{st['port']}",
                         'iqn': f'{storage_lab.IQN}:{g.name}', 'lun': 1}
    for g, (shelf, slot) in zip(aoe, exports):
        disks[g.name] = {'kind': 'aoe', 'shelf': shelf, 'slot': slot,
                         'interface': storage_lab.SAN_IF}
    return disks


def device_of(disk: dict) -> str:
    from xenha import devices
    if disk['kind'] == 'aoe':
        return devices.aoe_device(disk['shelf'], disk['slot'])
    host, _, port = disk['portal'].rpartition(':')
    return devices.iscsi_device(host, int(port), disk['iqn'], disk['lun'])


def start_homes(lab: Lab) -> None:
    """Start each domU on its home the way a site would: storage login, create."""
    from concurrent.futures import ThreadPoolExecutor
    from xenha.failover import Engine
    c = cluster(lab)
    engine = Engine(c)
    engine.job = 'lab-setup'
    try:
        homes = {}
        for u in c.domus.values():
            homes.setdefault(u.home, []).append(u)

        def one(home):
            host = c.dom0s[home]
            needed = {t.name: t for u in homes[home] for t in c.targets_of(u)}
            bad = {k: v for k, v in engine.attach(host, list(needed.values())).items() if v}
            if bad:
                raise RuntimeError(f'lab: {home} cannot attach {bad}')
            res = engine.start_on(host, homes[home])
            failed = {k: v for k, v in res.items() if v}
            if failed:
                raise RuntimeError(f'lab: cannot start on {home}: {failed}')
        with ThreadPoolExecutor(max_workers=len(homes) or 1) as pool:
            list(pool.map(one, homes))
    finally:
        engine.close()
        engine.db.close()
