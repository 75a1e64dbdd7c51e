"""Build (once) and cache the images a real-Xen lab dom0 boots under QEMU.

From Debian packages only: the Xen 4.17 hypervisor and the Debian kernel are
downloaded with `apt-get download` and extracted with `dpkg -x`; the dom0 root
filesystem is a `debootstrap --variant=minbase` with the toolstack, sshd and the
storage initiators, upgraded from bookworm-security so the toolstack matches
the hypervisor.  Nothing host-specific is baked in: each dom0 gets its
authorized key, host key and name at boot from a small "seed" disk (a tar
archive written to a raw drive), so one image serves every lab and host.

Artifacts, in ``$XENHA_IMAGE_CACHE`` (default /var/cache/xenha-lab)/<key>/,
the key being derived from the package versions and this recipe's version:

* ``xen``          the hypervisor (multiboot ELF, QEMU ``-kernel``)
* ``vmlinuz``      the Debian kernel (dom0 and domU)
* ``initrd.gz``    busybox initramfs: virtio + ext4 modules, switch_root
* ``dom0.img``     ext4 root filesystem (QEMU runs it with ``-snapshot``)
* inside dom0.img: ``/boot/vmlinuz-guest`` + ``/boot/initrd-guest.gz``, a PV
  domU whose init mounts xvda, increments ``/boot-count`` on it and idles.

`xenha lab image` builds it (``image_main``); ``python -m xenha_lab.golden``
re-records ``tests/golden/`` on a real-Xen dom0 booted from it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = 9               # bump when the build below changes
SUITE = 'bookworm'
MIRROR = 'http://deb.debian.org/debian'
SECURITY = 'http://deb.debian.org/debian-security'
XEN_PKG = 'xen-hypervisor-4.17-amd64'
PACKAGES = ['xen-utils-4.17', 'xenstore-utils', 'busybox', 'openssh-server', 'kmod',
            'iproute2', 'procps', 'open-iscsi', 'aoetools', 'util-linux', 'socat',
            'e2fsprogs', 'udev', 'sg3-utils']   # sg_persist: storage fencing
# modules the initramfs loads (dependencies are added from modules.dep)
DOM0_INITRD_MODULES = ['virtio_pci', 'virtio_blk', 'virtio-rng', 'crc32c_generic', 'ext4']
DOMU_INITRD_MODULES = ['xen-blkfront', 'crc32c_generic', 'ext4']
IMAGE_SIZE = '2G'


def cache_dir() -> Path:
    return Path(os.environ.get('XENHA_IMAGE_CACHE', '/var/cache/xenha-lab'))


def _run(argv, **kw) -> str:
    kw.setdefault('check', True)
    return subprocess.run(argv, capture_output=True, text=True, **kw).stdout


def _candidate(pkg: str) -> str:
    out = _run(['apt-cache', 'policy', pkg])
    for line in out.splitlines():
        if line.strip().startswith('Candidate:'):
            return line.split()[1]
    raise RuntimeError(f'apt knows no {pkg} (apt-get update?)')


def kernel_package() -> str:
    """linux-image-6.1.0-N-amd64 that the linux-image-amd64 meta package names."""
    out = _run(['apt-cache', 'depends', 'linux-image-amd64'])
    for line in out.splitlines():
        word = line.split(':')[-1].strip()
        if line.strip().startswith('Depends:') and word.startswith('linux-image-6'):
            return word
    raise RuntimeError('cannot resolve linux-image-amd64')


def versions() -> dict:
    kpkg = kernel_package()
    return {'recipe': RECIPE, XEN_PKG: _candidate(XEN_PKG),
            'xen-utils-4.17': _candidate('xen-utils-4.17'),
            'kernel': kpkg, kpkg: _candidate(kpkg)}


def key(vers: dict) -> str:
    return hashlib.sha256(json.dumps(vers, sort_keys=True).encode()).hexdigest()[:12]


def cached() -> Path | None:
    """The newest complete image in the cache (no apt calls: fast for tests)."""
    found = sorted(cache_dir().glob('*/manifest.json'), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


# -- the files written into the images ---------------------------------------
INITRD_INIT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
root=/dev/vda
for w in $(cat /proc/cmdline); do case $w in root=*) root=${w#root=};; esac; done
i=0; while [ ! -b $root ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /newroot
mount -t ext4 $root /newroot || { echo "initramfs: cannot mount $root"; exec sh; }
mount --move /dev /newroot/dev; umount /proc /sys
exec switch_root /newroot /sbin/xenha-init
'''

# PID 1 of a dom0.  The seed drive (vdb) is a tar archive: /root/.ssh/authorized_keys,
# the host keys, /etc/xenha/seed.env (HOSTNAME, PORTAL = the lab's iSCSI portal).
DOM0_INIT = r'''#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mount -o remount,rw /
# devtmpfs has no /dev/fd, /dev/stdin …; Xen's locking.sh stats /dev/stdin
# and spins forever without it (the block hotplug script times out)
ln -sf /proc/self/fd /dev/fd; for i in 0:stdin 1:stdout 2:stderr; do
    ln -sf /proc/self/fd/${i%%:*} /dev/${i#*:}; done
mkdir -p /run/sshd /run/xen /var/log/xen/console /run/lock
echo "xenha-init: mounting done"
i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
tar -xf /dev/vdb -C / && echo "xenha-init: seed applied"
. /etc/xenha/seed.env
hostname "$HOSTNAME"
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback \
         virtio_net iscsi_tcp loop; do modprobe $m || echo "xenha-init: no module $m"; done
mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen
ip link set lo up
# NICs by MAC: the user-mode uplink has UPLINK_MAC, the other one is the SAN
i=0; while [ $(ls /sys/class/net | wc -l) -lt 3 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
for nic in /sys/class/net/*; do
    n=${nic##*/}; [ "$n" = lo ] && continue
    if [ "$(cat $nic/address)" = "$UPLINK_MAC" ]; then ip link set "$n" name lab0
    else ip link set "$n" name san0; fi
done
ip link set lab0 up; ip link set san0 up
modprobe aoe aoe_iflist=san0   # AoE on the SAN NIC only, never on the uplink
# quiet: the user-mode network's addresses stay out of the lab's logs
busybox udhcpc -q -n -t 20 -i lab0 -s /etc/xenha/udhcpc.script >/dev/null 2>&1 &&
    echo "xenha-init: network up"
# the lab's iSCSI portal is reachable through QEMU's guestfwd at the slirp
# network's .4 address; make it answer at the portal's own address, so
# discovery, node records and by-path names look exactly like on a real site
if [ -n "$PORTAL" ] && [ -s /run/xenha-gateway ]; then
    fwd=$(sed 's/\.[0-9]*$/.4/' /run/xenha-gateway)
    ip addr add "$PORTAL/32" dev lo
    socat TCP-LISTEN:3260,bind="$PORTAL",fork,reuseaddr TCP:"$fwd":3260 >/dev/null 2>&1 &
fi
/etc/init.d/xen start && echo "xenha-init: xen started"
/lib/systemd/systemd-udevd --daemon && udevadm trigger && udevadm settle -t 20
echo "InitiatorName=$INITIATOR" > /etc/iscsi/initiatorname.iscsi
iscsid && echo "xenha-init: iscsid started"
/usr/sbin/sshd -E /var/log/sshd.log && echo "xenha-init: sshd started"
echo "xenha-init: ready"
trap 'sync; busybox poweroff -f' TERM
while :; do sleep 3600; done
'''

UDHCPC_SCRIPT = r'''#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via ${router%% *} dev "$interface"
    # restrict=on: slirp offers no router; its DHCP server is the host side
    echo "${serverid:-${router%% *}}" > /run/xenha-gateway;;
esac
'''

SSHD_CONFIG = '''Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
MaxStartups 100:30:200
Subsystem sftp internal-sftp
'''

XEN_DEFAULT = '''XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
'''

# PID 1 of the test domU: count boots on its own disk, then idle.  `xl shutdown`
# makes the kernel run /sbin/poweroff: power off at once (the disk is unmounted).
DOMU_INIT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /sbin; printf '#!/bin/sh\nsync\nexec /bin/busybox poweroff -f\n' > /sbin/poweroff
chmod 755 /sbin/poweroff
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
i=0; while [ ! -b /dev/xvda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /disk
if mount -t ext4 /dev/xvda /disk; then
    n=$(cat /disk/boot-count 2>/dev/null || echo 0); n=$((n+1))
    echo $n > /disk/boot-count; echo "$(hostname) $n" >> /disk/boot-log
    sync; umount /disk
    echo "xenha-domu: boot-count $n"
else
    echo "xenha-domu: no disk"
fi
while :; do sleep 3600; done
'''


# -- steps --------------------------------------------------------------------
def _say(text: str) -> None:
    print(f'[xenimage {time.strftime("%H:%M:%S")}] {text}', flush=True)


def _module_closure(moddir: Path, wanted: list[str]) -> list[str]:
    """Relative .ko paths for `wanted` and their dependencies, load order."""
    deps, by_name = {}, {}
    for line in (moddir / 'modules.dep').read_text().splitlines():
        mod, _, rest = line.partition(':')
        deps[mod] = rest.split()
        base = Path(mod).name.split('.ko')[0]
        by_name[base] = mod
        by_name[base.replace('-', '_')] = mod
    order: list[str] = []

    def add(mod):
        if mod in order:
            return
        for d in reversed(deps.get(mod, [])):
            add(d)
        order.append(mod)
    for w in wanted:
        mod = by_name.get(w) or by_name.get(w.replace('-', '_'))
        if mod is None:           # built in: nothing to load
            continue
        add(mod)
    return order


def _initramfs(out: Path, moddir: Path, modules: list[str], init: str) -> None:
    """A busybox initramfs with `modules` (+ deps, decompressed) and `init`."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ('bin', 'proc', 'sys', 'dev', 'lib/modules', 'newroot'):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy('/bin/busybox', root / 'bin/busybox')
        names = []
        for rel in _module_closure(moddir, modules):
            src = moddir / rel
            name = Path(rel).name
            data = src.read_bytes()
            if name.endswith('.xz'):
                import lzma
                data, name = lzma.decompress(data), name[:-3]
            (root / 'lib/modules' / name).write_bytes(data)
            names.append(name)
        (root / 'modules.order').write_text('\n'.join(names) + '\n')
        (root / 'init').write_text(init)
        (root / 'init').chmod(0o755)
        files = subprocess.run(['find', '.'], cwd=root, capture_output=True,
                               check=True).stdout
        cpio = subprocess.run(['cpio', '-o', '-H', 'newc', '--quiet'], cwd=root,
                              input=files, capture_output=True, check=True).stdout
        out.write_bytes(gzip.compress(cpio, 6))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build(force: bool = False, say=_say) -> Path:
    """Build the image (or return the cached one for these package versions)."""
    t0 = time.monotonic()
    vers = versions()
    out = cache_dir() / key(vers)
    if (out / 'manifest.json').exists() and not force:
        say(f'cached: {out}')
        return out
    work = cache_dir() / f'{key(vers)}.build'
    shutil.rmtree(work, ignore_errors=True)
    (work / 'debs').mkdir(parents=True)
    say(f'versions: {vers}')
    t = time.monotonic()
    say(f'apt-get download {XEN_PKG} {vers["kernel"]}')
    _run(['apt-get', 'download', XEN_PKG, vers['kernel']], cwd=work / 'debs')
    ex = work / 'extract'
    for deb in (work / 'debs').glob('*.deb'):
        _run(['dpkg', '-x', str(deb), str(ex)])
    kver = vers['kernel'].removeprefix('linux-image-')
    xen_gz = next((ex / 'boot').glob('xen-4.17*-amd64.gz'))
    (work / 'xen').write_bytes(gzip.decompress(xen_gz.read_bytes()))
    shutil.copy(ex / 'boot' / f'vmlinuz-{kver}', work / 'vmlinuz')
    say(f'hypervisor + kernel {kver} extracted in {time.monotonic() - t:.0f}s')

    t = time.monotonic()
    rootfs = work / 'rootfs'
    say('debootstrap (about a minute)')
    _run(['debootstrap', '--variant=minbase', f'--include={",".join(PACKAGES)}',
          SUITE, str(rootfs), MIRROR])
    say(f'debootstrap done in {time.monotonic() - t:.0f}s; security upgrade')
    t = time.monotonic()
    _write(rootfs / 'etc/apt/sources.list',
           f'deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n'
           f'deb {SECURITY} {SUITE}-security main\n')
    _write(rootfs / 'usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', 0o755)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive', LC_ALL='C')
    _run(['chroot', str(rootfs), 'apt-get', 'update', '-qq'], env=env)
    _run(['chroot', str(rootfs), 'apt-get', 'upgrade', '-y', '-qq'], env=env)
    _run(['chroot', str(rootfs), 'apt-get', 'clean'], env=env)
    got = _run(['chroot', str(rootfs), 'dpkg-query', '-W', '-f=${Version}',
                'xen-utils-4.17'])
    if got != vers[XEN_PKG]:
        raise RuntimeError(f'toolstack {got} != hypervisor {vers[XEN_PKG]}')
    say(f'upgraded in {time.monotonic() - t:.0f}s (toolstack {got})')

    # depmod of the rootfs (kmod is in it), so the host needs no kmod
    moddir = rootfs / 'lib/modules' / kver
    shutil.copytree(ex / 'lib/modules' / kver, moddir, dirs_exist_ok=True)
    _run(['chroot', str(rootfs), 'depmod', kver])
    _write(rootfs / 'sbin/xenha-init', DOM0_INIT, 0o755)
    _write(rootfs / 'etc/xenha/udhcpc.script', UDHCPC_SCRIPT, 0o755)
    _write(rootfs / 'etc/ssh/sshd_config', SSHD_CONFIG)
    for f in (rootfs / 'etc/ssh').glob('ssh_host_*'):
        f.unlink()                    # host keys come from the seed at boot
    with open(rootfs / 'etc/default/xen', 'a') as fh:
        fh.write(XEN_DEFAULT)
    (rootfs / 'root/.ssh').mkdir(mode=0o700, exist_ok=True)
    _initramfs(rootfs / 'boot/initrd-guest.gz', moddir, DOMU_INITRD_MODULES, DOMU_INIT)
    shutil.copy(work / 'vmlinuz', rootfs / 'boot/vmlinuz-guest')
    _initramfs(work / 'initrd.gz', moddir, DOM0_INITRD_MODULES, INITRD_INIT)

    t = time.monotonic()
    _run(['mkfs.ext4', '-q', '-F', '-L', 'xenha-dom0', '-d', str(rootfs),
          str(work / 'dom0.img'), IMAGE_SIZE])
    say(f'dom0.img ({IMAGE_SIZE}) written in {time.monotonic() - t:.0f}s')
    shutil.rmtree(rootfs)
    shutil.rmtree(ex)
    shutil.rmtree(work / 'debs')
    (work / 'manifest.json').write_text(json.dumps(
        {'versions': vers, 'built': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
         'seconds': round(time.monotonic() - t0)}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    say(f'image ready in {out} after {time.monotonic() - t0:.0f}s')
    return out


def image_main(argv: list[str]) -> int:
    """`xenha lab image [--force]`: build the real-Xen image, show where it is."""
    import argparse
    p = argparse.ArgumentParser(prog='xenha lab image', description=build.__doc__)
    p.add_argument('--force', action='store_true', help='rebuild even if cached')
    args = p.parse_args(argv)
    build(force=args.force)
    return 0


if __name__ == '__main__':
    sys.exit(image_main(sys.argv[1:]))
