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
from pathlib import Path

from xenha.lab import dom0 as dom0_lab
from xenha.lab.core import Lab


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


def up(directory=None, *, hosts=DEFAULT_HOSTS, guests=DEFAULT_GUESTS,
       host_memory_mb: int = 8192, storage: bool = True, bmc: bool = True,
       start_guests: bool = True, fencing: str | None = None, nagios: bool = False,
       say=None, xen: str = 'sim', timing: dict | None = None, **defaults) -> Lab:
    """Bring the lab up; on any failure everything started so far is torn down.

    xen='sim': dom0s are sshds with the simulated toolstack (seconds);
    xen='qemu': real Xen 4.17 dom0s under QEMU/TCG (minutes; xenha.lab.qemu).
    `timing`: the inventory's [timing] table (default: none for the simulated
    dom0s, qemu.TIMING for the real ones); `defaults`: its [defaults] keys.
    """
    say = say or (lambda text: None)
    if xen == 'qemu':
        from xenha.lab import qemu
        lab = qemu.cluster_up(directory, say=say, start_guests=start_guests,
                              timing=timing, **defaults)
        if nagios:
            try:
                from xenha.lab import nagios as nagios_lab
                nagios_lab.up(lab, say=say)
            except BaseException:
                lab.down()
                raise
        return lab
    lab = Lab(directory)
    try:
        lab.info['inventory_timing'] = dict(timing or {})
        _build(lab, hosts, guests, host_memory_mb, storage, bmc, start_guests,
               fencing, say, defaults)
        if nagios:
            from xenha.lab import nagios as nagios_lab
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
        from xenha.lab import bmc as bmc_lab
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


def storage_up(lab: Lab, hosts, guests, chap: bool = True) -> dict:
    """tgtd with one target per iSCSI guest, vblade with one export per AoE guest;
    returns guest name -> its disk (what the inventory's targets say)."""
    from xenha.lab import storage as storage_lab
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


def inventory_path(lab: Lab) -> Path:
    return lab.dir / 'cluster.toml'


def device_of(disk: dict) -> str:
    if disk['kind'] == 'aoe':
        return f"/dev/etherd/e{disk['shelf']}.{disk['slot']}"
    return f"/dev/disk/by-path/ip-{disk['portal']}-iscsi-{disk['iqn']}-lun-{disk['lun']}"


def write_configs(lab: Lab) -> None:
    """The domUs' config files, rendered from the inventory as a site would."""
    from xenha import render
    render.write_tree(render.render(cluster(lab), 'xen'), lab.dir / 'xen')


def _q(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace('\\', '\\\\').replace('"', '\\"') + '"'


def write_inventory(lab: Lab, fencing: str | None = None, **defaults) -> Path:
    """The lab's cluster.toml; `fencing`: 'none', 'ssh' or 'storage' instead of
    the BMCs, or 'agent+storage' (the BMC, then storage fencing)."""
    ssh = dom0_lab.ssh_options(lab)
    d = {'toolstack': 'xl', 'ssh_user': 'root', 'ssh_port': ssh.port,
         'ssh_key': ssh.identity, 'known_hosts': ssh.known_hosts,
         'dom0_reserve': '256M', 'timeout': 5, 'state_db': str(lab.dir / 'state.db'),
         'dedupe_window': 300}
    if lab.info.get('nagios'):
        d['nagios_command_file'] = lab.info['nagios']['command_file']
    st = lab.info.get('storage')
    aoe_links = (st or {}).get('aoe', {}).get('links', {})
    if 'monitor' in aoe_links:
        # the monitoring node's SAN interface lives in the lab's monitor namespace
        d['san_netns'] = aoe_links['monitor']['netns']
    d.update(defaults)
    out = ['# generated by xenha lab: the lab cluster', '[defaults]']
    out += [f'{k} = {_q(v)}' for k, v in d.items()]
    if lab.info.get('inventory_timing'):
        out += ['', '[timing]']
        out += [f'{k} = {_q(v)}' for k, v in lab.info['inventory_timing'].items()]
    from xenha.lab import storage as storage_lab
    for name, role in lab.info['roles'].items():
        host = lab.info['hosts'][name]
        out += ['', f'[dom0.{name}]', f'address = {_q(host["address"])}', f'role = {_q(role)}']
        if name in aoe_links:       # its identity on the SAN (storage fencing)
            out += [f'san_mac = {_q(storage_lab.mac_of(lab, name))}',
                    f'initiator_name = {_q(storage_lab.initiator_name(name))}']
        b = lab.info.get('bmc', {}).get(name)
        if fencing in ('none', 'ssh', 'storage') or not b:
            out.append(f'fencing = [{{ method = "{fencing or "ssh"}" }}]'
                       if fencing != 'none' else 'fencing = "none"')
        else:       # the BMC; 'agent+storage': then the storage, for a dead BMC
            out += [f'[[dom0.{name}.fencing]]', 'method = "agent"', 'agent = "fence_ipmilan"']
            out += [f'{k} = {_q(v)}' for k, v in b['params']]
            out += [f'password_file = {_q(b["password_file"])}', 'timeout = 15']
            if fencing == 'agent+storage':
                out += [f'[[dom0.{name}.fencing]]', 'method = "storage"', 'timeout = 10']
    if st:
        out += ['', '[storage.san-1]', f'address = {_q(st["portal"])}']
    for g in lab.info['guests']:
        disk = lab.info['disks'].get(g['name'])
        if not disk:
            continue
        out += ['', f'[target.{g["name"]}-disk]', f'kind = {_q(disk["kind"])}',
                'storage = "san-1"']
        out += [f'{k} = {_q(v)}' for k, v in disk.items() if k != 'kind']
    for g in lab.info['guests']:
        out += ['', f'[domu.{g["name"]}]',
                f'config = {_q(str(lab.dir / "xen" / (g["name"] + ".cfg")))}',
                f'memory = "{g["memory_mb"]}M"', 'vcpus = 1', f'home = {_q(g["home"])}',
                'kernel = "/boot/vmlinuz-guest"',
                f'priority = {g["priority"]}', f'ha = {_q(g["ha"])}']
        if g['name'] in lab.info['disks']:
            out.append(f'targets = ["{g["name"]}-disk"]')
        else:
            out.append('targets = []')
    path = inventory_path(lab)
    path.write_text('\n'.join(out) + '\n')
    return path


def cluster(lab: Lab):
    from xenha import inventory
    return inventory.load(inventory_path(lab))


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
