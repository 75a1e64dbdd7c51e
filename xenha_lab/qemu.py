"""Lab dom0s that run real Xen: one QEMU/TCG machine per host.

Each machine boots the image of `xenha_lab.xenimage` (Xen 4.17 + a Debian PV
dom0) with ``-snapshot``, so the cached image stays clean and a power cycle
is a cold boot.  One of the two kinds of xenha_lab.dom0.HostKind (the
other: xenha_lab.simhost): the same ``lab.info['hosts'][name]`` keys, the
lab's client key authorized, its own host key in the lab's known_hosts, sshd
at the host's own loopback address.

Network (loopback only):
* NIC 1, QEMU user mode with ``restrict=on``: the only ways through are the
  host forward ``ADDR:PORT -> guest:22`` and one guest forward: the guest's
  ``<slirp net>.4:3260`` runs ``qemu.py pipe PORTAL 3260`` on the host per
  connection, i.e. reaches the lab's tgtd.  Inside dom0 a socat on the
  portal's own address (on dom0's lo) leads there, so the spare's iscsiadm
  uses the inventory's portal unchanged.
* NIC 2, a tap that this module moves into the lab's SAN namespace and
  enslaves to its bridge: layer 2 for the dom0's `aoe` module (which is
  told to use that NIC only).

Per-host seed (a tar archive as a read-only raw drive): authorized key,
host key, hostname, portal, initiator name; applied by dom0's PID 1.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# nothing of the package at import time: QEMU runs this file as a script
# (`python -IS qemu.py pipe`, the iSCSI forwarder), where no package is found

if TYPE_CHECKING:
    from xenha_lab.core import Lab

NAME = 'qemu'
WHAT = 'runs real Xen'
FAULTS = ('power', 'hang')
QEMU = 'qemu-system-x86_64'
MEMORY_MB = 2048        # the machine; QEMU peaks near 2.5 GB RSS with it
DOM0_MB = 512
UPLINK_MAC = '52:54:00:12:34:56'   # the same on every host: slirp is per QEMU
# what one QEMU may hold: ~750 MB after boot (bootscrub=false), but it grows
# towards the whole guest memory as dom0 creates and destroys domUs (1.7 and
# 1.9 GB measured at the end of `xenha demo --xen qemu`)
RSS_MB = MEMORY_MB
BOOT_TIMEOUT = 240      # seconds from QEMU start to an SSH login (TCG on a busy host)
# The inventory's [timing] for emulated dom0s.  Measured on 2 CPUs with two of
# them up, the machine also running other tests (load 1.5-4.7): SSH banner +
# key exchange (paramiko, every 2 s) median 0.6-0.9 s, up to 3.4 s while the
# guests boot and 16 s in a burst of ten sessions; in `xenha demo --xen qemu`
# (Nagios' check_execution_time, 3 runs) host checks median 4.4-6.6 s, max
# 16.1 s, the "xen host" service max 19.1 s (the spare busy with `xl create`).
# The SSH connect, banner and authentication each get 0.4 * (-t - 0.5) s, at
# most 10 (xenha.runner): the host check gets 25 s (9.8 s per phase, 1.5x the
# slowest host check seen), the services 40 s (10 s per phase, 2.1x), the
# capacity check (every dom0 in turn) 60 s.  domu_max_age 10: a powered-off
# dom0's cached listing must expire before the engine creates its guests on
# the spare, or check_xen_domu sees each guest on both ("split brain") while
# `xl create` builds it (11-30 s here); that is at least 16.5 s after the
# power-off (10 s to HARD DOWN, then 6.5-11 s measured to confirm, fence, plan
# and log the spare in).
TIMING = {'dom0_check_timeout': 25, 'check_timeout': 40, 'capacity_timeout': 60,
          'domu_max_age': 10}


@dataclass(frozen=True)
class Facts:
    """What decides whether this machine can run real-Xen dom0s now."""
    qemu: str | None              # path of qemu-system-x86_64
    available_mb: int             # MemAvailable
    cpus: int
    image: str | None             # the cached image directory
    build_missing: tuple = ()     # tools `xenha lab image` needs and cannot find


BUILD_TOOLS = ('apt-get', 'dpkg', 'debootstrap', 'chroot', 'cpio', 'mkfs.ext4',
               '/bin/busybox')


def facts() -> Facts:
    """This machine, now."""
    import shutil
    from xenha_lab import xenimage
    with open('/proc/meminfo') as fh:
        avail = {ln.split(':')[0]: int(ln.split()[1]) for ln in fh}['MemAvailable'] // 1024
    image = xenimage.cached()
    return Facts(qemu=shutil.which(QEMU), available_mb=avail, cpus=os.cpu_count() or 1,
                 image=str(image) if image else None,
                 build_missing=tuple(t for t in BUILD_TOOLS if not shutil.which(t)))


def memory_wanted(hosts: int) -> int:
    """MiB of available memory `hosts` QEMU dom0s need (their RSS and a margin)."""
    return hosts * (RSS_MB + 512)


def why_not(f: Facts, hosts: int = 2, build: bool = False) -> str | None:
    """Why `hosts` real-Xen dom0s cannot run on a machine with facts `f` (None:
    they can).  `build`: a missing image is fine when it can be built."""
    if not f.qemu:
        return f'{QEMU} is not installed (apt-get install qemu-system-x86)'
    if f.image is None and not build:
        return 'no real-Xen image cached (xenha lab image)'
    if f.image is None and f.build_missing:
        return ('no real-Xen image cached, and building one needs '
                + ', '.join(f.build_missing) + ' (make deps)')
    if f.available_mb < memory_wanted(hosts):
        return (f'{f.available_mb} MiB of memory available, {hosts} real-Xen dom0s want '
                f'{memory_wanted(hosts)}')
    return None


def cannot_run(hosts: int = 2, build: bool = False) -> str | None:
    """Why this machine cannot run `hosts` real-Xen dom0s now (None: it can).
    `build`: a missing image is fine (it will be built)."""
    return why_not(facts(), hosts, build)


# -- guest forward helper (runs on the host, stdin/stdout = the guest's TCP stream)
def pipe(host: str, port: int) -> int:
    with socket.create_connection((host, port), timeout=10) as s:
        s.settimeout(None)
        fds = {0: s.fileno(), s.fileno(): 1}
        while True:
            for fd in select.select(list(fds), [], [])[0]:
                data = os.read(fd, 65536)
                if not data:
                    return 0
                os.write(fds[fd], data) if fds[fd] == 1 else s.sendall(data)


# -- setup ---------------------------------------------------------------------
def _seed(path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    import io
    with tarfile.open(path, 'w', format=tarfile.USTAR_FORMAT) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))


def write_seed(lab: Lab, name: str) -> None:
    """The host's seed drive: keys, identity, and the lab's domU configs at
    their paths (the image runs with -snapshot: a power cycle forgets
    everything else, as a site's dom0 would not)."""
    from xenha_lab import keys, storage
    host = lab.info['hosts'][name]
    hostkey = Path(host['host_key'])
    env = (f'HOSTNAME={name}\nPORTAL={lab.addr(5)}\n'
           f'INITIATOR={storage.initiator_name(name)}\nUPLINK_MAC={UPLINK_MAC}\n')
    files = {
        'root/.ssh/authorized_keys': (Path(f'{keys.client_key(lab)}.pub').read_bytes(),
                                      0o600),
        'etc/ssh/ssh_host_ed25519_key': (hostkey.read_bytes(), 0o600),
        'etc/ssh/ssh_host_ed25519_key.pub': (Path(f'{hostkey}.pub').read_bytes(), 0o644),
        'etc/xenha/seed.env': (env.encode(), 0o644),
    }
    for cfg in sorted((lab.dir / 'xen').glob('*.cfg')):
        files[str(cfg).lstrip('/')] = (cfg.read_bytes(), 0o644)
    seed = Path(host['dir']) / 'seed.tar'
    _seed(seed.with_suffix('.tmp'), files)
    seed.with_suffix('.tmp').replace(seed)    # a running QEMU keeps the old one


def tap_name(lab: Lab, name: str) -> str:
    index = list(lab.info['hosts']).index(name)
    return f'{lab.prefix}q{index}'


def add_host(lab: Lab, name: str, *, image: str | os.PathLike | None = None,
             memory_mb: int = MEMORY_MB, dom0_mb: int = DOM0_MB, wait: bool = True) -> dict:
    """Create host `name` as a QEMU machine and boot it (wait for SSH)."""
    from xenha_lab import keys, xenimage
    image = Path(image) if image else xenimage.cached()
    if image is None:
        raise RuntimeError('no real-Xen image cached: run `xenha lab image` first')
    address, port, hdir, hostkey = keys.place_host(lab, name)
    (hdir / 'state').mkdir(parents=True, exist_ok=True)
    hosts = lab.info['hosts']
    # its NIC on the SAN segment: the MAC its AoE frames carry (its san_mac)
    san_mac = f'52:54:00:5a:{lab.block % 256:02x}:{len(hosts) + 1:02x}'
    hosts[name] = {'address': address, 'port': port, 'dir': str(hdir),
                   'state_dir': str(hdir / 'state'), 'bin': None,
                   'host_key': str(hostkey), 'kind': 'qemu', 'image': str(image),
                   'memory_mb': memory_mb, 'dom0_mb': dom0_mb, 'san_mac': san_mac}
    lab.save()
    write_seed(lab, name)
    start(lab, name, wait=wait)
    return hosts[name]


def argv(lab: Lab, name: str) -> list[str]:
    host = lab.info['hosts'][name]
    image, hdir = Path(host['image']), Path(host['dir'])
    fwd = (f'{sys.executable} -IS {Path(__file__).resolve()} pipe '
           f'{lab.addr(5)} 3260')
    san_mac = host['san_mac']
    nic = (f'user,model=virtio-net-pci,mac={UPLINK_MAC},restrict=on,'
           f'hostfwd=tcp:{host["address"]}:{host["port"]}-:22,'
           f'guestfwd=tcp::3260-cmd:{fwd}')
    mem = host['dom0_mb']
    return [
        QEMU, '-accel', 'tcg', '-cpu', 'qemu64', '-m', str(host['memory_mb']),
        '-smp', '2', '-nographic', '-monitor', 'none', '-no-reboot', '-snapshot',
        '-serial', f'file:{hdir / "console.log"}',
        '-drive', f'file={image / "dom0.img"},format=raw,if=virtio',
        '-drive', f'file={hdir / "seed.tar"},format=raw,if=virtio,readonly=on',
        '-nic', nic,
        '-netdev', f'tap,id=san,ifname={tap_name(lab, name)},script=no,downscript=no',
        '-device', f'virtio-net-pci,netdev=san,mac={san_mac}',
        '-device', 'virtio-rng-pci',
        '-kernel', str(image / 'xen'),
        '-initrd', f'{image / "vmlinuz"} console=hvc0 earlyprintk=xen root=/dev/vda,'
                   f'{image / "initrd.gz"}',
        '-append', f'console=com1 com1=115200,8n1 dom0_mem={mem}M,max:{mem}M '
                   'dom0_max_vcpus=2 noreboot bootscrub=false',
    ]


def start(lab: Lab, name: str, wait: bool = True) -> None:
    """Power on: start QEMU, put its SAN tap on the lab's bridge, wait for SSH."""
    t = time.monotonic()
    host = lab.info['hosts'][name]
    log = Path(host['dir']) / 'console.log'
    if log.exists():
        log.rename(log.with_suffix('.log.old'))
    lab.spawn(f'qemu-{name}', argv(lab, name))
    san_attach(lab, name)
    if wait:
        wait_ssh(lab, name, BOOT_TIMEOUT - (time.monotonic() - t))


def san_attach(lab: Lab, name: str, timeout: float = 10) -> bool:
    """Move the host's tap into the SAN namespace, on br0 (if the SAN exists)."""
    san = f'{lab.prefix}-san'
    tap = tap_name(lab, name)
    if san not in lab.namespaces:
        return False
    deadline = time.monotonic() + timeout
    while not Path(f'/sys/class/net/{tap}').exists():
        if time.monotonic() > deadline or not lab.alive(f'qemu-{name}'):
            raise RuntimeError(f'{name}: QEMU made no {tap}')
        time.sleep(0.05)
    subprocess.run(['ip', 'link', 'set', tap, 'netns', san], check=True)
    subprocess.run(['ip', '-n', san, 'link', 'set', tap, 'master', 'br0', 'up'],
                   check=True)
    return True


def wait_ssh(lab: Lab, name: str, timeout: float = BOOT_TIMEOUT) -> float:
    """Poll until `true` runs over SSH as the checks will; seconds waited."""
    from xenha.runner import SSHRunner
    from xenha_lab import keys
    host = lab.info['hosts'][name]
    t = time.monotonic()
    last = ''
    while time.monotonic() - t < timeout:
        if not lab.alive(f'qemu-{name}'):
            raise RuntimeError(f'{name}: QEMU died, see {host["dir"]}/console.log')
        runner = SSHRunner(host['address'], keys.ssh_options(lab), timeout=15)
        try:
            r = runner.run(['xl', 'info'], 15)
            if r.exit == 0 and 'xen_version' in r.out:
                return time.monotonic() - t
            last = r.reason()
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = str(exc)
        finally:
            runner.close()
        time.sleep(1)
    raise RuntimeError(f'{name}: no SSH + xl info after {timeout:.0f}s ({last})')


# -- the HostKind interface ------------------------------------------------------
def power(lab: Lab, name: str, on: bool) -> None:
    """What the BMC's chassis control does: pull the plug / cold boot (no wait)."""
    if on:
        if not lab.alive(f'qemu-{name}'):
            start(lab, name, wait=False)
    else:
        lab.stop(f'qemu-{name}', timeout=5)


def powered(lab: Lab, name: str) -> bool:
    return lab.alive(f'qemu-{name}')


def hang(lab: Lab, name: str) -> None:
    """The whole machine stops (SSH connects, no banner): SIGSTOP to QEMU."""
    import signal
    lab.signal(f'qemu-{name}', signal.SIGSTOP)


def resume(lab: Lab, name: str) -> None:
    import signal
    lab.signal(f'qemu-{name}', signal.SIGCONT)


def partition(lab: Lab, name: str) -> None:
    raise NotImplementedError('partition: simulated dom0s only')


def fault(lab: Lab, name: str) -> str | None:
    return 'real Xen'


def wait_ready(lab: Lab, name: str) -> None:
    """After `power(on)`: until SSH and `xl info` answer (a cold boot)."""
    wait_ssh(lab, name)


def reachable(lab: Lab, name: str) -> bool:
    """QEMU runs and is not stopped (`hang`)."""
    return powered(lab, name) and not lab.stopped(f'qemu-{name}')


def domains(lab: Lab, name: str, timeout: float = 30) -> list[tuple[str, str]]:
    """(name, state) of the guests on a QEMU dom0, from the real `xl list`
    (what `xenha lab status` shows); [] when it is off or does not answer."""
    from xenha.runner import RunnerError, SSHRunner
    from xenha_lab import keys
    from xenha.xen import Toolstack, ToolstackError
    if not powered(lab, name):
        return []
    host = lab.info['hosts'][name]
    runner = SSHRunner(host['address'], keys.ssh_options(lab), timeout=timeout)
    try:
        return [(d.name, d.state.value) for d in Toolstack(runner, 'xl').list()
                if not d.is_dom0]
    except (RunnerError, ToolstackError):
        return []
    finally:
        runner.close()


# -- shared disks and guest configs ---------------------------------------------
def format_disks(lab: Lab) -> None:
    """ext4 on every guest disk's backing file, before any dom0 logs in."""
    st = lab.info['storage']
    files = [t['luns']['1'] for t in st['targets'] if not t['chap']]
    files += [e['path'] for e in st.get('aoe', {}).get('exports', {}).values()]
    for f in files:
        subprocess.run(['mkfs.ext4', '-q', '-F', f], check=True, capture_output=True)


def boot_count(path: str) -> int:
    """The boot counter the test domU keeps on its disk (read on the host)."""
    r = subprocess.run(['debugfs', '-R', 'cat /boot-count', path],
                       capture_output=True, text=True)
    return int(r.stdout.strip() or 0)


def push_configs(lab: Lab, name: str) -> None:
    """Copy the lab's domU configs into the dom0 at the same paths (now, and
    on its seed drive for the next boot)."""
    from xenha.runner import SSHRunner
    from xenha_lab import keys
    write_seed(lab, name)
    host = lab.info['hosts'][name]
    runner = SSHRunner(host['address'], keys.ssh_options(lab), timeout=30)
    try:
        xdir = lab.dir / 'xen'
        runner.run(['mkdir', '-p', str(xdir)], 30)
        for cfg in sorted(xdir.glob('*.cfg')):
            r = runner.run(['tee', str(cfg)], 30, input=cfg.read_text())
            if r.exit:
                raise RuntimeError(f'{name}: cannot write {cfg}: {r.reason()}')
    finally:
        runner.close()


GUEST_BOOT = ('kernel = "/boot/vmlinuz-guest"', 'ramdisk = "/boot/initrd-guest.gz"',
              'extra = "console=hvc0 quiet"')


def real_guest_configs(lab: Lab) -> None:
    """The lab inventory names only a kernel; the image's test guest also
    needs its initramfs (it counts boots on xvda) and its console."""
    for cfg in (lab.dir / 'xen').glob('*.cfg'):
        lines = [ln for ln in cfg.read_text().splitlines()
                 if not ln.startswith(('kernel', 'ramdisk', 'extra'))]
        cfg.write_text('\n'.join([*lines, *GUEST_BOOT]) + '\n')


if __name__ == '__main__' and sys.argv[1:2] == ['pipe']:
    sys.exit(pipe(sys.argv[2], int(sys.argv[3])))
