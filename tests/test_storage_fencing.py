"""Storage fencing against the real targets: tgtd's SCSI-3 persistent
reservations and vblade's AoE reserve list.

No mocks: the iSCSI sessions are xenha's own initiator (two identities, the
"dom0-1" IQN and the spare's), logged in to the lab's real tgtd; qemu-io
(libiscsi) is the independent writer; the AoE frames go over the lab's veth
pairs, each from the namespace of the dom0 (or monitoring node) it stands for.

Network safety: IP only to the lab's loopback portal; raw sockets only inside
the lab's own namespaces (`initiators.netns`), never in the root namespace.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time

import pytest

from xenha import fencing
from xenha.inventory import FenceMethod, Target
from xenha.lab import bmc, dom0, storage
from xenha.lab.initiators import netns
from xenha.storage import aoe, iscsi
from xenha.storage import reservations as R

HOSTS = ('dom0-1', 'dom0-2')      # dom0-2 plays the spare


# -- the lab ------------------------------------------------------------------------
@pytest.fixture
def san(lab):
    storage.up(lab, hosts=list(HOSTS))
    return lab


def portal(lab) -> str:
    st = storage.info(lab)
    return f'{st["portal"]}:{st["port"]}'


def iqn(lab, tid=1) -> str:
    return storage.info(lab)['targets'][tid - 1]['name']


def disk1(lab) -> Target:
    return Target('disk1', 'iscsi', portal=portal(lab), iqn=iqn(lab, 1), lun=1)


def disk2(lab) -> Target:
    """The CHAP target: the secret comes from its file, never from argv."""
    chap = storage.info(lab)['chap']
    return Target('disk2', 'iscsi', portal=portal(lab), iqn=iqn(lab, 2), lun=1,
                  chap_user=chap['user'], chap_secret_file=chap['secret_file'])


def e12() -> Target:
    return Target('e1.2', 'aoe', shelf=1, slot=2, interface=storage.SAN_IF)


def mac_of(lab, host) -> str:
    out = subprocess.run(['ip', '-n', storage.netns_of(lab, host), '-j', 'link', 'show',
                          'dev', storage.SAN_IF], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]['address']


def who(lab, host) -> R.Identity:
    return R.Identity(host, storage.initiator_name(host), mac_of(lab, host))


def monitor(lab) -> R.Identity:
    return R.monitor(storage.initiator_name(storage.MONITOR),
                     san_mac=mac_of(lab, storage.MONITOR))


def opener(lab, host=storage.MONITOR):
    """Raw sockets of `host`'s namespace (the thread that asks switches alone)."""
    def open_in(interface):
        with netns(storage.netns_of(lab, host)):
            return aoe.open_socket(interface)
    return open_in


def session(lab, host, target=None) -> iscsi.Session:
    t = target or disk1(lab)
    s = iscsi.Session(iscsi.Portal(t.host, t.port), storage.initiator_name(host), t.iqn,
                      timeout=5)
    s.login()
    iscsi.test_unit_ready(s, 1)
    return s


def qemu_io(lab, host, command, target=None):
    """libiscsi through qemu-io: a writer that owes nothing to our initiator."""
    t = target or disk1(lab)
    opts = (f'driver=iscsi,transport=tcp,portal={t.portal},target={t.iqn},lun=1,'
            f'initiator-name={storage.initiator_name(host)}')
    return subprocess.run(['qemu-io', '--image-opts', opts, '-c', command],
                          capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def key(host) -> str:
    return iscsi.key_text(R.key_for(host))


# -- keys ---------------------------------------------------------------------------
def test_keys_are_stable_per_name_and_distinct():
    # the derivation is part of the interface: sg_persist on a dom0 writes it too
    assert R.key_for('dom0-1') == 0x78683e8750d5948b
    assert key('dom0-1') == '0x78683e8750d5948b'
    assert R.key_for('dom0-1') == R.key_for('dom0-1')
    keys = {R.key_for(f'dom0-{i}') for i in range(1000)}
    assert len(keys) == 1000
    assert all(k >> 48 == 0x7868 for k in keys)
    # an initiator name hashes under its own label: never a dom0's key
    assert R.key_for('dom0-1', 'initiator') != R.key_for('dom0-1')
    assert R.monitor('iqn.2026-01.org.xenha:monitor').pr_key == \
        R.key_for('iqn.2026-01.org.xenha:monitor', 'initiator')
    with pytest.raises(ValueError):
        R.key_for('x', 'other')


# -- iSCSI: the real tgtd -----------------------------------------------------------
def test_preempt_refuses_the_victims_writes_and_keeps_the_spares(san):
    a, b = session(san, 'dom0-1'), session(san, 'dom0-2')
    try:
        # before any reservation, the independent writer may write as dom0-1
        r = qemu_io(san, 'dom0-1', 'write -P 0x61 0 4k')
        assert (r.returncode, r.stdout.splitlines()[0]) == \
            (0, 'wrote 4096/4096 bytes at offset 0'), r.stderr
        # attach time: each dom0's session registers its key; the first reserves
        assert R.register_session(a, 1, R.key_for('dom0-1')) == (
            '; reserved it (Write Exclusive - Registrants Only: nobody held a '
            'reservation)')
        assert R.register_session(b, 1, R.key_for('dom0-2')) == ''
        iscsi.write10(a, 1, 0, b'a' * 512, 512)
        iscsi.write10(b, 1, 8, b'b' * 4096, 512)

        out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san), timeout=5)
        assert out.confirmed, out.message
        assert out.message == (
            f'disk1: PREEMPT removed dom0-1 ({key("dom0-1")}) (the target refuses '
            f'PREEMPT AND ABORT: its queued commands were not aborted); READ KEYS '
            f'confirms it is gone, reservation Write Exclusive - Registrants Only '
            f'held by monitor')
        _, keys = iscsi.pr_read_keys(b, 1)
        assert keys == [R.key_for('dom0-2'), monitor(san).pr_key]

        # dom0-1's own session: one UNIT ATTENTION (reservations preempted), then no
        with pytest.raises(iscsi.ReservationConflict) as refused:
            iscsi.write10(a, 1, 0, b'A' * 512, 512)
        assert str(refused.value) == (
            f'LUN 1 of {iqn(san)}: WRITE(10) from iqn.2026-01.lab.xenha:dom0-1: '
            f'RESERVATION CONFLICT')
        assert a.unit_attentions[-1] == (0x2a, 0x03)
        # a new session of dom0-1 (it logs in again) is refused as well
        a2 = session(san, 'dom0-1')
        with pytest.raises(iscsi.ReservationConflict):
            iscsi.write10(a2, 1, 0, b'A' * 512, 512)
        a2.close()
        # the spare writes on
        iscsi.write10(b, 1, 16, b'c' * 512, 512)
        assert iscsi.read10(b, 1, 16, 1, 512) == b'c' * 512
        assert iscsi.read10(b, 1, 0, 1, 512) == b'a' * 512     # dom0-1's write never landed
    finally:
        a.close()
        b.close()
    # the independent writer as dom0-1: refused by the target
    r = qemu_io(san, 'dom0-1', 'write -P 0x62 0 4k')
    assert (r.returncode, r.stdout.strip()) == (1, 'write failed: Input/output error')
    assert 'iSCSI WRITE10/16 failed at lba 0' in r.stderr
    # reads stay allowed (Write Exclusive): it sees the spare's data
    r = qemu_io(san, 'dom0-1', 'read -P 0x63 8192 512')
    assert r.returncode == 0 and r.stdout.startswith('read 512/512 bytes at offset 8192')


def test_revoke_without_any_registration_reserves_first(san):
    out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san), timeout=5)
    assert out.confirmed
    assert out.message == (
        f'disk1: dom0-1 ({key("dom0-1")}) was not registered; reserved it (Write '
        f'Exclusive - Registrants Only: nobody held a reservation); READ KEYS confirms '
        f'it is gone, reservation Write Exclusive - Registrants Only held by monitor')
    s = session(san, 'dom0-1')
    try:
        with pytest.raises(iscsi.ReservationConflict):
            iscsi.write10(s, 1, 0, b'x' * 512, 512)
    finally:
        s.close()


def test_repeated_revokes_leave_one_monitor_key(san):
    for _ in range(3):
        assert R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san)).confirmed
    facts = R.readiness(disk1(san), [who(san, h) for h in HOSTS], monitor(san))
    assert facts.keys == (monitor(san).pr_key,)
    assert facts.holder == 'monitor'


def test_victim_holding_the_reservation_hands_it_over(san):
    a = session(san, 'dom0-1')
    try:
        R.register_session(a, 1, R.key_for('dom0-1'))
        assert iscsi.pr_read_reservation(a, 1).key == R.key_for('dom0-1')
    finally:
        a.close()
    out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san))
    assert out.confirmed and out.message.endswith('held by monitor'), out.message
    s = session(san, 'dom0-2')
    try:
        r = iscsi.pr_read_reservation(s, 1)
        assert (r.key, r.type) == (monitor(san).pr_key, iscsi.PR_WE_REGISTRANTS_ONLY)
    finally:
        s.close()


def test_chap_target_revoke_keeps_the_secret_out(san):
    secret = open(storage.info(san)['chap']['secret_file']).read().strip()
    out = R.revoke(disk2(san), who(san, 'dom0-1'), monitor(san))
    assert out.confirmed, out.message
    assert secret not in out.message
    wrong = Target('disk2', 'iscsi', portal=portal(san), iqn=iqn(san, 2), lun=1)
    out = R.revoke(wrong, who(san, 'dom0-1'), monitor(san))
    assert not out.confirmed
    assert out.message == (
        f'disk2: could not revoke dom0-1: login to target {iqn(san, 2)} at '
        f'{portal(san)} refused: authentication failed (target requires CHAP: pass '
        f'--chap-user and a secret)')


def test_readiness_names_who_is_registered(san):
    dom0s = [who(san, h) for h in HOSTS]
    facts = R.readiness(disk1(san), dom0s, monitor(san))
    assert (facts.ready, facts.reservation, facts.problems) == (
        False, 'none', ('not registered: dom0-1, dom0-2',
                        'no reservation (every initiator may write)'))
    sessions = [session(san, h) for h in HOSTS]
    try:
        for s, h in zip(sessions, HOSTS):
            R.register_session(s, 1, R.key_for(h))
        facts = R.readiness(disk1(san), dom0s, monitor(san))
        assert facts.ready, facts.problems
        assert facts.registered == (('dom0-1', True), ('dom0-2', True))
        assert (facts.reservation, facts.holder) == (
            'Write Exclusive - Registrants Only', 'dom0-1')
        assert R.revoke(disk1(san), dom0s[0], monitor(san)).confirmed
        facts = R.readiness(disk1(san), dom0s, monitor(san))
        assert facts.registered == (('dom0-1', False), ('dom0-2', True))
        assert facts.problems == ('not registered: dom0-1',)
        assert facts.holder == 'monitor'
        # a key nobody in the inventory owns is said
        iscsi.pr_register(sessions[1], 1, 0x1234)
        assert R.readiness(disk1(san), dom0s, monitor(san)).problems == (
            'not registered: dom0-1, dom0-2', 'keys of no dom0: 0x1234')
    finally:
        for s in sessions:
            s.close()


def test_register_unregister_clear(san):
    mon = monitor(san)
    out = R.register(disk1(san), mon)
    assert out.confirmed
    assert out.message == (
        f'disk1: monitor registered ({iscsi.key_text(mon.pr_key)}) as '
        f'iqn.2026-01.lab.xenha:monitor; reserved it (Write Exclusive - Registrants '
        f'Only: nobody held a reservation); reservation Write Exclusive - Registrants '
        f'Only')
    s = session(san, 'dom0-2')
    try:
        iscsi.pr_register(s, 1, R.key_for('dom0-2'), ignore_existing=False)
        # plain REGISTER of a nexus already registered: RESERVATION CONFLICT
        with pytest.raises(iscsi.ReservationConflict):
            iscsi.pr_register(s, 1, 0x99, ignore_existing=False)
        iscsi.pr_unregister(s, 1, R.key_for('dom0-2'))
        assert R.key_for('dom0-2') not in iscsi.pr_read_keys(s, 1)[1]
        iscsi.pr_register(s, 1, R.key_for('dom0-2'))
        iscsi.pr_clear(s, 1, R.key_for('dom0-2'))
        assert iscsi.pr_read_keys(s, 1)[1] == []
        assert not iscsi.pr_read_reservation(s, 1).held
        # not registered: CLEAR is refused
        with pytest.raises(iscsi.ReservationConflict):
            iscsi.pr_clear(s, 1, R.key_for('dom0-2'))
    finally:
        s.close()


def test_revoke_fails_when_tgtd_hangs_or_is_gone(san):
    storage.tgtd_hang(san)
    started = time.monotonic()
    out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san), timeout=1.0)
    took = time.monotonic() - started
    storage.tgtd_resume(san)
    assert not out.confirmed
    assert out.message == (f'disk1: could not revoke dom0-1: portal {portal(san)} '
                           f'accepted the connection but gave no login answer within '
                           f'1s (target daemon hung?)')
    assert took < 2.0
    storage.tgtd_stop(san)
    out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san), timeout=1.0)
    assert out.message == (f'disk1: could not revoke dom0-1: portal {portal(san)}: '
                           f'connection refused (no iSCSI target daemon listening)')


# -- AoE: the real vblade -----------------------------------------------------------
def ata(lab, host):
    """(socket in `host`'s namespace, the export's MAC) for ATA frames."""
    sock = opener(lab, host)(storage.SAN_IF)
    dst = aoe.mac_bytes(aoe.probe(storage.SAN_IF, 1, 2, sock=sock)[0].mac)
    return sock, dst


def test_aoe_force_set_without_the_victim_refuses_its_writes(san):
    x, dst = ata(san, 'dom0-1')
    y, _ = ata(san, 'dom0-2')
    try:
        aoe.write_sectors(x, dst, 1, 2, 0, b'1' * 512, 1.0)     # an empty list: anyone
        out = R.revoke(e12(), who(san, 'dom0-1'), monitor(san), keep=[who(san, 'dom0-2')],
                       opener=opener(san))
        assert out.confirmed, out.message
        target_mac = aoe.mac_text(dst)
        assert out.message == (
            f'e1.2: {target_mac}: force set the reserve list to {mac_of(san, "dom0-2")} '
            f'(it was empty: anyone could write); reads back without '
            f'{mac_of(san, "dom0-1")}')
        with pytest.raises(aoe.Refused) as refused:
            aoe.write_sectors(x, dst, 1, 2, 1, b'X' * 512, 1.0)
        assert refused.value.reserved
        assert str(refused.value) == (f'e1.2 refused the ATA command from '
                                      f'{mac_of(san, "dom0-1")}: target reserved')
        aoe.write_sectors(y, dst, 1, 2, 1, b'Y' * 512, 1.0)
        assert aoe.read_sectors(y, dst, 1, 2, 1, 1, 1.0) == b'Y' * 512
        assert aoe.read_sectors(y, dst, 1, 2, 0, 1, 1.0) == b'1' * 512
        # the victim may still IDENTIFY, nothing else (reads refused too)
        with pytest.raises(aoe.Refused):
            aoe.read_sectors(x, dst, 1, 2, 0, 1, 1.0)
        assert aoe.probe(storage.SAN_IF, 1, 2, identify=True, sock=x)[0].identity.model \
            == 'Coraid EtherDrive vblade'
    finally:
        x.close()
        y.close()


def test_aoe_revoke_from_a_list_and_of_a_mac_not_in_it(san):
    m = opener(san)(storage.SAN_IF)
    dst = aoe.mac_bytes(aoe.probe(storage.SAN_IF, 1, 2, sock=m)[0].mac)
    d1, d2 = mac_of(san, 'dom0-1'), mac_of(san, 'dom0-2')
    aoe.set_reserve_list(m, dst, 1, 2, [d1, d2], 1.0)
    out = R.revoke(e12(), who(san, 'dom0-1'), monitor(san), opener=opener(san))
    assert out.message == (f'e1.2: {aoe.mac_text(dst)}: force set the reserve list to '
                           f'{d2}; reads back without {d1}')
    assert aoe.reserve_list(m, dst, 1, 2, 1.0) == [d2]
    out = R.revoke(e12(), who(san, 'dom0-1'), monitor(san), opener=opener(san))
    assert out.confirmed
    assert out.message == (f'e1.2: {aoe.mac_text(dst)}: dom0-1 ({d1}) was not in the '
                           f'reserve list; reads back without {d1}')
    # the last one out: the list never becomes empty (that would let everyone in)
    out = R.revoke(e12(), who(san, 'dom0-2'), monitor(san), opener=opener(san))
    own = mac_of(san, storage.MONITOR)
    assert out.confirmed
    assert out.message == (f'e1.2: {aoe.mac_text(dst)}: force set the reserve list to '
                           f'{own} (only ours: an empty list would let everyone in); '
                           f'reads back without {d2}')
    # un-fencing: register puts a MAC back
    back = R.register(e12(), who(san, 'dom0-1'), monitor(san), opener=opener(san))
    assert back.confirmed
    assert aoe.reserve_list(m, dst, 1, 2, 1.0) == [own, d1]
    m.close()


def test_aoe_readiness_and_failures(san):
    dom0s = [who(san, h) for h in HOSTS]
    facts = R.readiness(e12(), dom0s, monitor(san), opener=opener(san))
    assert facts.problems == ('reserve list empty (every MAC may write)',)
    for d in dom0s:
        assert R.register(e12(), d, monitor(san), opener=opener(san)).confirmed
    facts = R.readiness(e12(), dom0s, monitor(san), opener=opener(san))
    assert facts.ready and facts.allowed == (('dom0-1', True), ('dom0-2', True))
    assert facts.reserve_list == (mac_of(san, 'dom0-1'), mac_of(san, 'dom0-2'))
    assert facts.mask_list == ()
    out = R.revoke(e12(), R.Identity('dom0-1'), monitor(san), opener=opener(san))
    assert (out.confirmed, out.message) == (False, (
        'e1.2: dom0-1 has no san_mac in the inventory: cannot tell which MAC to take '
        'out of the reserve list'))
    storage.vblade_stop(san, 1, 2)
    started = time.monotonic()
    out = R.revoke(e12(), dom0s[0], monitor(san), opener=opener(san), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert (out.confirmed, out.message) == (False, (
        'e1.2: could not revoke dom0-1: e1.2: no export answers on san0'))


# -- time to revoke and confirm, per target kind ---------------------------------------
def test_revoke_and_confirm_time_per_kind(san):
    a = session(san, 'dom0-1')
    times = {'iscsi': [], 'aoe': []}
    try:
        for _ in range(5):
            R.register_session(a, 1, R.key_for('dom0-1'))
            out = R.revoke(disk1(san), who(san, 'dom0-1'), monitor(san))
            assert out.confirmed and 'PREEMPT removed dom0-1' in out.message, out.message
            times['iscsi'].append(out.seconds)
            assert R.register(e12(), who(san, 'dom0-1'), monitor(san),
                              opener=opener(san)).confirmed
            out = R.revoke(e12(), who(san, 'dom0-1'), monitor(san),
                           keep=[who(san, 'dom0-2')], opener=opener(san))
            assert out.confirmed and 'force set' in out.message, out.message
            times['aoe'].append(out.seconds)
    finally:
        a.close()
    for kind, seconds in times.items():
        print(f'\nrevoke + confirm, {kind}: median {statistics.median(seconds) * 1000:.1f} '
              f'ms (of {", ".join(f"{s * 1000:.1f}" for s in seconds)})')
        assert statistics.median(seconds) < 1.0


# -- the fence method -----------------------------------------------------------------
STORAGE = FenceMethod('storage', params=(('initiator_name',
                                          storage.initiator_name(storage.MONITOR)),),
                      timeout=10)


def plan(lab, targets):
    return fencing.StorageFence(tuple(targets), who(lab, 'dom0-1'),
                                keep=(who(lab, 'dom0-2'),), opener=opener(lab))


def test_storage_method_revokes_every_target_in_parallel(san):
    out = fencing.fence('dom0-1', [STORAGE], storage=plan(san, [disk1(san), disk2(san),
                                                                 e12()]))
    assert out.ok and not out.skipped, out.message
    assert out.method == 'storage'
    assert out.revoked == ('disk1', 'disk2', 'e1.2') and out.unrevoked == ()
    assert out.message.startswith('dom0-1 fenced by storage: revoked on 3 target(s), each '
                                  'confirmed: disk1: dom0-1 (')
    assert [o.target for o in out.attempts[0].targets] == ['disk1', 'disk2', 'e1.2']


def test_storage_method_names_each_target_it_could_not_revoke(san):
    nosuch = Target('disk9', 'iscsi', portal=portal(san), iqn=f'{storage.IQN}:nosuch', lun=1)
    out = fencing.fence('dom0-1', [STORAGE], storage=plan(san, [disk1(san), nosuch]))
    assert not out.ok
    assert out.unrevoked == ('disk9',) and out.revoked == ('disk1',)
    assert out.message == (
        f'fencing dom0-1 failed: not starting anything (storage: not revoked on disk9 '
        f'(disk9: could not revoke dom0-1: login to target {storage.IQN}:nosuch at '
        f'{portal(san)} refused: target not found (missing, or not offered to initiator '
        f'{storage.initiator_name(storage.MONITOR)})); revoked on disk1)')


def test_storage_method_without_targets_is_refused():
    out = fencing.fence('dom0-1', [FenceMethod('storage')])
    assert not out.ok
    assert out.message == ('fencing dom0-1 failed: not starting anything (storage: no '
                           'storage targets were given (the engine passes the targets '
                           'of the guests dom0-1 may run))')
    out = fencing.fence('dom0-1', [FenceMethod('storage')],
                        storage=fencing.StorageFence((), R.Identity('dom0-1')))
    assert out.message.endswith('(storage: no targets to revoke dom0-1 on: storage '
                                'fencing protects nothing here)')
    assert fencing.problems(FenceMethod('storage', params=(('ip', 'x'),))) == [
        "param 'ip' is not an option of the storage method (only initiator_name)"]


def test_agent_then_storage_with_a_dead_bmc_fences_by_storage(san):
    dom0.add_host(san, 'dom0-1')
    info = bmc.up(san, 'dom0-1')
    bmc.stop(san, 'dom0-1')                 # the BMC died with its chassis
    params = dict(map(tuple, info['params']))
    agent = FenceMethod('agent', 'fence_ipmilan', tuple(params.items()),
                        info['password_file'], 3)
    out = fencing.fence('dom0-1', [agent, STORAGE], timeout=20,
                        storage=plan(san, [disk1(san), e12()]))
    assert out.ok, out.message
    assert out.method == 'storage'
    assert [(a.method, a.ok) for a in out.attempts] == [('agent fence_ipmilan', False),
                                                       ('storage', True)]
    # ipmitool gives up on the dead BMC, or the agent's budget ends first (load)
    first = out.attempts[0].message
    assert 'fence device did not answer' in first or \
        re.fullmatch(r'fence_ipmilan (off|status) timed out after [\d.]+s \(agent hung\?\)',
                     first), first
    assert out.revoked == ('disk1', 'e1.2')


# -- sg_persist on the real-Xen dom0s (argv only: the QEMU image is not built here) -------
def test_sg_persist_argv():
    k = R.key_for('dom0-1')
    dev = '/dev/disk/by-path/ip-127.20.1.5:3260-iscsi-iqn.x:disk1-lun-1'
    assert R.sg_persist_register(dev, k) == [
        'sg_persist', '--no-inquiry', '--out', '--register-ignore',
        '--param-sark=78683e8750d5948b', dev]
    assert R.sg_persist_reserve(dev, k) == [
        'sg_persist', '--no-inquiry', '--out', '--reserve', '--param-rk=78683e8750d5948b',
        '--prout-type=5', dev]
    assert R.sg_persist_read_keys(dev) == ['sg_persist', '--no-inquiry', '--in',
                                           '--read-keys', dev]
    assert R.sg_persist_read_reservation(dev) == ['sg_persist', '--no-inquiry', '--in',
                                                  '--read-reservation', dev]
    with pytest.raises(ValueError):
        R.sg_persist_register('-rf', k)          # never an option where a device goes
    with pytest.raises(ValueError):
        R.sg_persist_register(dev, 0)            # key 0 means "unregister"


def test_sg_persist_output_parsers():
    keys = ('  PR generation=0x3, 2 registered reservation keys follow:\n'
            '    0x78683e8750d5948b\n    0x1234\n')
    assert R.parse_sg_read_keys(keys) == [0x78683e8750d5948b, 0x1234]
    assert R.parse_sg_read_keys('  PR generation=0x0, there are NO registered '
                                'reservation keys\n') == []
    held = ('  PR generation=0x4, Reservation follows:\n    Key=0x78683e8750d5948b\n'
            '    scope: LU_SCOPE,  type: Write Exclusive, registrants only\n')
    assert R.parse_sg_read_reservation(held) == (0x78683e8750d5948b,
                                                 'Write Exclusive, registrants only')
    assert R.parse_sg_read_reservation('  PR generation=0x0, there is NO reservation '
                                       'held\n') == (0, '')
    with pytest.raises(ValueError):
        R.parse_sg_read_keys('sg_persist: error opening file')


def test_the_spare_may_revoke_with_its_own_key_and_keeps_writing(san):
    a, b = session(san, 'dom0-1'), session(san, 'dom0-2')
    try:
        R.register_session(a, 1, R.key_for('dom0-1'))
        R.register_session(b, 1, R.key_for('dom0-2'))
        for _ in range(2):              # twice: its key's other copies are its sessions
            out = R.revoke(disk1(san), who(san, 'dom0-1'), who(san, 'dom0-2'))
            assert out.confirmed, out.message
        assert out.message.endswith('held by dom0-2'), out.message
        iscsi.write10(b, 1, 0, b's' * 512, 512)        # the spare's live session writes on
        with pytest.raises(iscsi.ReservationConflict):
            iscsi.write10(a, 1, 0, b'v' * 512, 512)
    finally:
        a.close()
        b.close()
