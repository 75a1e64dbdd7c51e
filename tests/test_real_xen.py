"""The suite against real Xen 4.17: dom0s are QEMU/TCG machines (xenha_lab.qemu).

Runs when XENHA_REAL_XEN=1 (the image is built if missing, about 2 minutes),
or when the image is already cached and the machine has the memory for two
dom0s.  One module-wide cluster: dom0-1 (active) runs web1 (disk on iSCSI)
and mail1 (disk on AoE), dom0-2 is the spare; each guest counts its boots on
its own disk.  Each step's duration is printed (pytest -s) and kept in
lab.info['timings'].
"""

import os
import time

import pytest

from conftest import run, ssh_args


def _skip_reason() -> str | None:
    from xenha_lab import qemu
    return qemu.cannot_run(2, build=os.environ.get('XENHA_REAL_XEN') == '1')


pytestmark = [pytest.mark.skipif(_skip_reason() is not None,
                                 reason=_skip_reason() or ''), pytest.mark.slow]


def say(text):
    print(f'[real-xen {time.strftime("%H:%M:%S")}] {text}', flush=True)


def test_the_demo_on_real_xen(lab_dir):
    """`xenha demo --xen qemu`, run as a user runs it (before the module's own
    cluster is up: two QEMU machines at a time).  The lab's [timing] for
    emulated dom0s gets Nagios to all OK, and the story to its end without a
    false "split brain" while `xl create` builds the guests on the spare.
    About 3 minutes (2:15-4:00 seen, the machine shared or not): slow, as the whole
    module; `-m 'not slow'` leaves it out."""
    import subprocess
    from conftest import command, demo_story
    t = time.monotonic()
    r = subprocess.run([command('xenha'), 'demo', '--xen', 'qemu', '--dir', str(lab_dir)],
                       capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t
    # by hand: 2 xen host, 2 fence, 2 domU, 2 targets, capacity; Nagios: the same
    # 9 services and the 2 dom0 host checks
    recovered = demo_story(r, 'xenha demo: real Xen 4.17 dom0s under QEMU/TCG (--xen qemu)',
                           2 + 2 + 2 + 2 + 1, 11, 'dom0-1',
                           {'web1': 'dom0-2', 'mail1': 'dom0-2'})
    assert 'split brain' not in r.stdout
    say(f'demo on real Xen: {took:.0f}s, recovered {recovered}s after the power-off')


@pytest.fixture(scope='module')
def real():
    from xenha_lab import cluster, xenimage
    t = time.monotonic()
    xenimage.build(say=say)
    say(f'image ready after {time.monotonic() - t:.0f}s')
    # allow_active_as_target: the last test moves the guests back to dom0-1
    lab = cluster.up(xen='qemu', say=say, allow_active_as_target=True)
    try:
        yield lab
    finally:
        say(f'timings: {lab.info.get("timings")}')
        assert lab.down() == []


def xl(lab, host, *argv, timeout=120):
    from xenha_lab import dom0
    from xenha.runner import SSHRunner
    h = lab.info['hosts'][host]
    with SSHRunner(h['address'], dom0.ssh_options(lab), timeout=timeout) as r:
        return r.run(['xl', *argv], timeout)


def disk_file(lab, guest):
    d = lab.info['disks'][guest]
    st = lab.info['storage']
    if d['kind'] == 'iscsi':
        return next(t['luns']['1'] for t in st['targets'] if t['name'] == d['iqn'])
    return next(e['path'] for e in st['aoe']['exports'].values()
                if (e['shelf'], e['slot']) == (d['shelf'], d['slot']))


def wait_count(lab, guest, want, timeout=90):
    from xenha_lab import qemu
    deadline = time.monotonic() + timeout
    while (n := qemu.boot_count(disk_file(lab, guest))) < want:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    return n


def test_guests_boot_from_the_shared_disks(real):
    assert wait_count(real, 'web1', 1) >= 1
    assert wait_count(real, 'mail1', 1) >= 1


def test_checks_ok_paused_destroyed(real):
    a = real.info['hosts']['dom0-1']['address']
    r = run('check_xen_host', *ssh_args(real, 'dom0-1'), '-t', '30')
    assert r.rc == 0, r
    assert r.status.startswith(f'XEN_HOST OK - {a}: 2 domUs ('), r
    r = run('check_xen_domu', *ssh_args(real, 'dom0-1'), '--domain', 'web1', '-t', '30')
    assert r.rc == 0 and r.status in (f'XEN_DOMU OK - web1 is blocked on {a}',
                                      f'XEN_DOMU OK - web1 is running on {a}'), r

    assert xl(real, 'dom0-1', 'pause', 'web1').exit == 0
    r = run('check_xen_host', *ssh_args(real, 'dom0-1'), '-t', '30')
    assert (r.rc, r.status) == (1, f'XEN_HOST WARNING - {a}: paused: web1'), r
    r = run('check_xen_domu', *ssh_args(real, 'dom0-1'), '--domain', 'web1', '-t', '30')
    assert (r.rc, r.status) == (1, f'XEN_DOMU WARNING - web1 is paused on {a}'), r
    assert xl(real, 'dom0-1', 'unpause', 'web1').exit == 0

    # mail1 destroyed: CRITICAL; created again: its disk counts one boot more
    booted = wait_count(real, 'mail1', 1)
    assert xl(real, 'dom0-1', 'destroy', 'mail1').exit == 0
    r = run('check_xen_domu', *ssh_args(real, 'dom0-1'), '--domain', 'mail1', '-t', '30')
    assert (r.rc, r.first) == (
        2, f'XEN_DOMU CRITICAL - mail1 is not running on {a} | hosts=0;;;0'), r
    t = time.monotonic()
    r = xl(real, 'dom0-1', 'create', str(real.dir / 'xen' / 'mail1.cfg'))
    assert r.exit == 0, r
    say(f'xl create mail1: {time.monotonic() - t:.1f}s')
    assert wait_count(real, 'mail1', booted + 1) == booted + 1


def test_creates_on_one_dom0_overlap_with_autoballoon_off(real):
    """What the simulator models and create_parallel counts on: with dom0_mem
    set (autoballoon "auto" is then off), real xl 4.17 takes no /var/lock/xl,
    so two creates on one dom0 are built side by side.  Diskless guests on the
    spare; each create's start and end are stamped on the dom0 itself."""
    from xenha_lab import dom0, qemu
    from xenha.runner import SSHRunner
    h = real.info['hosts']['dom0-2']
    boot = '\n'.join(qemu.GUEST_BOOT)
    with SSHRunner(h['address'], dom0.ssh_options(real), timeout=180) as r:
        names = ('par0', 'par1', 'par2')
        for n in names:
            assert r.run(['tee', f'/root/{n}.cfg'], 30, input=(
                f'name = "{n}"\ntype = "pv"\nmemory = 128\nvcpus = 1\n{boot}\n')).exit == 0

        def stamped(n):
            return ['sh', '-c', f'date +%s.%N; xl create /root/{n}.cfg >&2; date +%s.%N']
        try:
            alone = r.run(stamped('par0'), 180)
            (a, b) = r.run_many([stamped('par1'), stamped('par2')], 180)
            assert (alone.exit, a.exit, b.exit) == (0, 0, 0), (alone, a, b)
            locks = r.run(['sh', '-c', 'ls /run/lock; cat /proc/locks'], 30).out
        finally:
            for n in names:
                r.run(['xl', 'destroy', n], 60)
    (t0, t1), (a0, a1), (b0, b1) = ([float(x) for x in res.out.split()]
                                    for res in (alone, a, b))
    say(f'xl create alone on dom0-2: {t1 - t0:.1f}s; two at once: {a1 - a0:.1f}s and '
        f'{b1 - b0:.1f}s, ending {abs(a1 - b1):.1f}s apart')
    # xl would have made its lock file had it taken the lock
    assert 'xl' not in locks.split(), locks
    # in turn, the second would end a whole create after the first
    assert abs(a1 - b1) < 0.6 * (t1 - t0)


def storage_args(lab, host):
    from xenha_lab import dom0
    opts = dom0.ssh_options(lab)
    args = ['-H', lab.info['hosts'][host]['address'], '-i', opts.identity,
            '--known-hosts', opts.known_hosts, '-t', '30']
    return args + (['--ssh-port', opts.port] if opts.port != 22 else [])


def test_storage_initiator_checks_on_real_open_iscsi_and_aoe(real):
    iqn = real.info['disks']['web1']['iqn']
    r = run('check_iscsi_target', '--initiator', *storage_args(real, 'dom0-1'),
            '--target', iqn)
    assert r.rc == 0 and r.status.startswith('ISCSI'), r
    # the spare has no session yet
    r = run('check_iscsi_target', '--initiator', *storage_args(real, 'dom0-2'),
            '--target', iqn)
    assert r.rc == 2, r
    a = storage_args(real, 'dom0-1')
    if '--ssh-port' in a:
        a[a.index('--ssh-port')] = '-p'
    r = run('check_aoe_target', *a, '--shelf', 1, '--slot', 1)
    assert r.rc == 0 and r.status.startswith('AOE'), r


def _scratch_disks(lab):
    """An iSCSI target and an AoE export no guest uses (the guests keep theirs):
    the disks the storage-fencing test writes."""
    from xenha.inventory import Target
    from xenha_lab import storage
    st = storage.info(lab)
    tid = max(t['tid'] for t in st['targets']) + 1
    iqn = f'{storage.IQN}:fence-scratch'
    path = lab.dir / 'storage' / f'lun-{tid}-1.img'
    with open(path, 'wb') as fh:
        fh.truncate(16 * 1024 * 1024)
    storage.tgtadm(lab, '--mode', 'target', '--op', 'new', '--tid', str(tid),
                   '--targetname', iqn)
    storage.tgtadm(lab, '--mode', 'logicalunit', '--op', 'new', '--tid', str(tid),
                   '--lun', '1', '--backing-store', str(path))
    storage.tgtadm(lab, '--mode', 'target', '--op', 'bind', '--tid', str(tid),
                   '--initiator-address', 'ALL')
    storage.vblade_start(lab, 1, 9)
    aoe_path = st['aoe']['exports']['vblade-e1.9']['path']
    return ((Target('scratch-iscsi', 'iscsi', portal=f"{st['portal']}:{st['port']}",
                    iqn=iqn, lun=1), str(path)),
            (Target('scratch-aoe', 'aoe', shelf=1, slot=9, interface=storage.SAN_IF),
             aoe_path))


def test_storage_fence_refuses_the_kernel_initiators_writes(real):
    """Storage fencing with the real initiators of two real-Xen dom0s: each
    registers as the engine's attach does (sg_persist over open-iscsi; the AoE
    reserve list), dom0-1 is revoked from the monitoring node, and then its
    `dd oflag=direct` writes never reach either disk while dom0-2's do."""
    from conftest import engine
    from xenha_lab import cluster
    from xenha.storage import reservations as R
    c = cluster.cluster(real)
    disks = _scratch_disks(real)
    e = engine(real)
    try:
        for host in ('dom0-1', 'dom0-2'):
            h = c.dom0s[host]
            assert e.attach(h, [t for t, _ in disks]) == {t.name: None for t, _ in disks}
            for t, _ in disks:
                assert e.make_writer(h, e.runner(h), t) is None
        keys = on_dom0(real, 'dom0-2', ['sg_persist', '--in', '--read-keys', '-n',
                                        disks[0][0].device])
        assert keys.exit == 0, keys.err
        assert set(R.parse_sg_read_keys(keys.out)) == {R.key_for('dom0-1'),
                                                       R.key_for('dom0-2')}

        def dd(host, target, pattern):
            """One 4 KiB block of `pattern` at 1 MiB, O_DIRECT: exit status, or
            None when it never completed (the aoe driver drops the target's
            error answers and retries until aoe_deadsecs, 60 s by default)."""
            from xenha.runner import RunnerError
            try:
                return on_dom0(real, host, [
                    'sh', '-c', f'printf %4096s | tr " " {pattern} | dd of={target.device} '
                    'bs=4096 seek=256 count=1 oflag=direct conv=notrunc'], timeout=90)
            except RunnerError as exc:
                say(f'{host} dd to {target.device}: {exc}')
                return None

        for t, path in disks:
            assert dd('dom0-1', t, 'a').exit == 0
            assert _block(path) == b'a' * 4096
        victim = R.dom0(c.dom0s['dom0-1'])
        keep = [R.dom0(c.dom0s['dom0-2'])]
        t0 = time.monotonic()
        outs = R.revoke_all([t for t, _ in disks], victim, R.monitor(), keep=keep,
                            timeout=20, opener=e.aoe_opener())
        say(f'revoked dom0-1 in {time.monotonic() - t0:.2f}s: '
            + '; '.join(f'{o.target}: {o.message}' for o in outs))
        assert all(o.confirmed for o in outs), outs
        for t, path in disks:
            refused = dd('dom0-1', t, 'b')
            if refused is not None:
                say(f'dom0-1 dd to {t.device} after the fence: exit {refused.exit}, '
                    f'{refused.reason()}')
                assert refused.exit != 0
            assert _block(path) == b'a' * 4096, f'{t.name}: the fenced write landed'
            assert dd('dom0-2', t, 'c').exit == 0
            assert _block(path) == b'c' * 4096
        keys = on_dom0(real, 'dom0-2', ['sg_persist', '--in', '--read-keys', '-n',
                                        disks[0][0].device])
        assert set(R.parse_sg_read_keys(keys.out)) == {R.key_for('dom0-2'),
                                                       R.monitor().pr_key}
        resv = on_dom0(real, 'dom0-2', ['sg_persist', '--in', '--read-reservation', '-n',
                                        disks[0][0].device])
        assert R.parse_sg_read_reservation(resv.out)[1].startswith('Write Exclusive'), \
            resv.out
    finally:
        for host in ('dom0-1', 'dom0-2'):       # leave the guests' sessions alone
            on_dom0(real, host, ['iscsiadm', '-m', 'node', '-T', disks[0][0].iqn,
                                 '--logout'])
        e.close()
        e.db.close()


def on_dom0(lab, host, argv, timeout=60):
    """Any command on a real dom0 over SSH (not only xl)."""
    from xenha_lab import dom0
    from xenha.runner import SSHRunner
    h = lab.info['hosts'][host]
    with SSHRunner(h['address'], dom0.ssh_options(lab), timeout=timeout) as r:
        return r.run(argv, timeout)


def _block(path):
    with open(path, 'rb') as fh:
        fh.seek(256 * 4096)
        return fh.read(4096)


def power_loss(real):
    """dom0-1 loses power; the engine fences it through its BMC (fence_ipmilan),
    logs dom0-2 in with the real open-iscsi and aoe, creates both guests there,
    and each guest's boot counter goes on from the same disk."""
    from conftest import engine
    from xenha_lab import qemu
    before = {g: qemu.boot_count(disk_file(real, g)) for g in ('web1', 'mail1')}
    # the check records where the guests run (the engine's "last seen")
    assert run('check_xen_host', *ssh_args(real, 'dom0-1'), '-t', '30').rc == 0
    t = time.monotonic()
    qemu.power(real, 'dom0-1', on=False)
    say(f'dom0-1 powered off in {time.monotonic() - t:.1f}s')
    t = time.monotonic()
    e = engine(real, create_timeout=120)
    try:
        report = e.failover('dom0-1', why='test: power loss')
    finally:
        e.close()
        e.db.close()
    total = time.monotonic() - t
    steps = {k: round(v, 1) for k, v in report.steps}
    real.info.setdefault('timings', {})['failover'] = steps
    say(f'failover {report.result} in {total:.1f}s: {steps}')
    from xenha.state import StateDB
    with StateDB(real.dir / 'state.db') as db:
        rows = db.journal_rows(job=report.job)
    for row in rows:       # the journal, with seconds since the job began
        say(f"  +{row['at'] - rows[0]['at']:5.1f}s {row['step']}: {row['message']}")
    assert report.result == 'ok', (report.message, report.failed)
    assert report.moved == {'web1': 'dom0-2', 'mail1': 'dom0-2'}
    assert not qemu.powered(real, 'dom0-1')     # the BMC kept it off
    listing = xl(real, 'dom0-2', 'list').out
    assert 'web1' in listing and 'mail1' in listing
    for g in ('web1', 'mail1'):
        assert wait_count(real, g, before[g] + 1) == before[g] + 1


def power_on_through_the_bmc(real):
    """fence_ipmilan action=on: ipmi_sim's chassis control cold-boots QEMU."""
    import subprocess
    from xenha_lab import qemu
    b = real.info['bmc']['dom0-1']
    params = dict(b['params'])
    password = open(b['password_file']).read().strip()
    stdin = ''.join(f'{k}={v}\n' for k, v in params.items())
    stdin += f'password={password}\naction=on\n'
    t = time.monotonic()
    r = subprocess.run(['fence_ipmilan'], input=stdin, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert qemu.powered(real, 'dom0-1')
    waited = qemu.wait_ssh(real, 'dom0-1')
    say(f'BMC power on -> SSH + xl info: {time.monotonic() - t:.1f}s '
        f'(boot {waited:.1f}s)')
    listing = xl(real, 'dom0-1', 'list').out
    assert 'web1' not in listing and 'mail1' not in listing   # a cold boot


def hung_dom0_moves_the_guests_back(real):
    """dom0-2 (now running both guests) hangs: SSH accepts but never answers.
    The engine must really power it off through the BMC before it starts
    the guests again on dom0-1 (cold-booted by the step before)."""
    from conftest import engine
    from xenha_lab import qemu
    before = {g: qemu.boot_count(disk_file(real, g)) for g in ('web1', 'mail1')}
    assert sorted(n for n, _ in qemu.domains(real, 'dom0-2')) == ['mail1', 'web1']
    qemu.hang(real, 'dom0-2')
    t = time.monotonic()
    e = engine(real, create_timeout=120)
    try:
        report = e.failover('dom0-2', why='test: hung dom0')
    finally:
        e.close()
        e.db.close()
    steps = {k: round(v, 1) for k, v in report.steps}
    real.info.setdefault('timings', {})['failover_hung'] = steps
    say(f'failover of a hung dom0 {report.result} in {time.monotonic() - t:.1f}s: {steps}')
    assert report.result == 'ok', (report.message, report.failed)
    assert report.moved == {'web1': 'dom0-1', 'mail1': 'dom0-1'}
    assert not qemu.powered(real, 'dom0-2')      # fenced for real: QEMU is gone
    assert qemu.domains(real, 'dom0-2') == []
    assert sorted(n for n, _ in qemu.domains(real, 'dom0-1')) == ['mail1', 'web1']
    for g in ('web1', 'mail1'):
        assert wait_count(real, g, before[g] + 1) == before[g] + 1


def test_power_loss_power_on_and_a_hung_dom0(real):
    """One story, its steps in order (each needs the one before): dom0-1 loses
    power and its guests move to dom0-2; its BMC powers it on again (a cold
    boot); then dom0-2 hangs and the guests move back to dom0-1.  It leaves
    dom0-2 powered off: the last test of the module."""
    power_loss(real)
    power_on_through_the_bmc(real)
    hung_dom0_moves_the_guests_back(real)
