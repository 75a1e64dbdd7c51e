"""check_aoe_target against the lab's real vblades.

Network safety: every raw-socket probe runs inside the lab's monitoring
namespace (`ip netns exec`), whose only link is the veth to the lab's SAN
bridge; nothing here touches the root namespace's interfaces.
"""

import json
import subprocess

import pytest

from storage_fixtures import host_runner, run_plugin, san, ssh, wait_for  # noqa: F401
from xenha_lab import dom0, storage, xensim


def local(lab, *args, **kw):
    return run_plugin('check_aoe_target', '--interface', storage.SAN_IF, *map(str, args),
                      netns=storage.netns_of(lab, storage.MONITOR), **kw)


def mac(ns, iface):
    out = subprocess.run(['ip', '-n', ns, '-j', 'link', 'show', 'dev', iface],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]['address']


def san_mac(lab):
    return mac(storage.info(lab)['aoe']['san'], 'br0')


def test_query_config_ok_with_perfdata(san):
    r = local(san, '--shelf', 1, '--slot', 2)
    assert (r.rc, r.status) == (0, f'AOE_TARGET OK - e1.2 on san0 answered by '
                                   f'{san_mac(san)} (16 buffers, firmware 0x4019)')
    perf = r.first.split(' | ')[1].split()
    assert perf[:2] == ['buffers=16;;;0', 'responders=1;;;0']
    assert perf[2].startswith('rtt=') and perf[2].endswith('s;;;0')


def test_identify_adds_model_and_size(san):
    r = local(san, '--shelf', 1, '--slot', 2, '--identify')
    assert (r.rc, r.status) == (0, f'AOE_TARGET OK - e1.2 on san0 answered by '
                                   f'{san_mac(san)} (Coraid EtherDrive vblade, 16.0MiB, '
                                   f'16 buffers, firmware 0x4019)')
    assert 'size=16777216B;;;0' in r.first


def test_rtt_thresholds(san):
    r = local(san, '--shelf', 1, '--slot', 2, '-w', '0.000000001')
    assert r.rc == 1, r
    assert r.status.startswith(f'AOE_TARGET WARNING - e1.2 on san0 answered by '
                               f'{san_mac(san)} (16 buffers, firmware 0x4019), round '
                               f'trip '), r
    assert r.status.endswith('s (outside range 0:1e-09)'), r
    assert local(san, '--shelf', 1, '--slot', 2, '-w', '1', '-c', '2').rc == 0


def test_nothing_answers_is_critical(san):
    r = local(san, '--shelf', 1, '--slot', 3, '--wait', '0.3')
    assert (r.rc, r.first) == (2, 'AOE_TARGET CRITICAL - no AoE target answers for e1.3 '
                                  'on san0 within 0.3s')


def test_vblade_stopped_is_critical_and_restart_recovers(san):
    storage.vblade_stop(san, 1, 2)
    r = local(san, '--shelf', 1, '--slot', 2, '--wait', '0.3')
    assert (r.rc, r.first) == (2, 'AOE_TARGET CRITICAL - no AoE target answers for e1.2 '
                                  'on san0 within 0.3s')
    storage.vblade_start(san, 1, 2)
    # a loaded machine may take a moment before the new vblade answers
    assert wait_for(lambda: local(san, '--shelf', 1, '--slot', 2).rc == 0, timeout=10)


def test_link_down_is_critical(san):
    storage.link_down(san, storage.MONITOR)
    r = local(san, '--shelf', 1, '--slot', 2, '--wait', '0.3')
    assert (r.rc, r.first) == (2, 'AOE_TARGET CRITICAL - no AoE target answers for e1.2 '
                                  'on san0 within 0.3s')
    storage.link_up(san, storage.MONITOR)
    assert wait_for(lambda: local(san, '--shelf', 1, '--slot', 2).rc == 0, timeout=5)


def test_duplicate_export_is_warning(san):
    storage.vblade_start(san, 1, 2, name='vblade-dup', node='san2')
    dup = mac(storage.info(san)['aoe']['nodes']['san2'], storage.SAN_IF)
    macs = ', '.join(sorted([san_mac(san), dup]))
    # a generous settle: under CPU contention the second vblade answers late
    r = local(san, '--shelf', 1, '--slot', 2, '--settle', 1)
    assert (r.rc, r.status) == (1, f'AOE_TARGET WARNING - 2 targets answer for e1.2 on '
                                   f'san0: {macs} (duplicate export: data corruption risk)')
    assert 'responders=2;;;0' in r.first
    r = local(san, '--list', '--settle', 1)
    assert (r.rc, r.status) == (1, 'AOE_TARGET WARNING - 1 AoE target on san0: e1.2; '
                                   'answered more than once: e1.2')


def test_list_with_wildcards(san):
    storage.vblade_start(san, 0, 7)
    storage.vblade_start(san, 12, 0)
    r = local(san, '--list', '--settle', 1)
    assert (r.rc, r.status) == (0, 'AOE_TARGET OK - 3 AoE targets on san0: e0.7, e1.2, '
                                   'e12.0')
    assert 'targets=3;;;0' in r.first
    for name in ('vblade-e0.7', 'vblade-e1.2', 'vblade-e12.0'):
        san.stop(name)
    r = local(san, '--list', '--wait', '0.3')
    assert (r.rc, r.first) == (2, 'AOE_TARGET CRITICAL - no AoE target answers on san0 '
                                  'within 0.3s')


def test_without_cap_net_raw_is_unknown_with_the_fix(san):
    r = local(san, '--shelf', 1, '--slot', 2, prefix=[
        'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'])
    assert r.rc == 3, r
    assert r.first == (
        'AOE_TARGET UNKNOWN - AoE needs a raw socket (CAP_NET_RAW): run as root, through '
        'sudo (e.g. "nagios ALL=(root) NOPASSWD: /usr/lib/nagios/plugins/check_aoe_target")'
        ', or grant the capability to a copy of the interpreter: setcap cap_net_raw+ep '
        '/usr/local/lib/xenha-python3')


def test_unknown_interface_and_bad_options(san):
    # inside the lab's namespace too: a mistake here must never reach a real NIC
    def bad(*args):
        return run_plugin('check_aoe_target', *args,
                          netns=storage.netns_of(san, storage.MONITOR))
    r = bad('--interface', 'nope0', '--shelf', '1', '--slot', '2')
    assert (r.rc, r.first) == (3, 'AOE_TARGET UNKNOWN - interface nope0: No such device')
    r = bad('--interface', 'nope0', '--shelf', '1')
    assert (r.rc, r.first) == (3, 'AOE_TARGET UNKNOWN - --shelf and --slot are required '
                                  '(or --list)')
    r = bad('--shelf', '1', '--slot', '2')
    assert (r.rc, r.first) == (3, 'AOE_TARGET UNKNOWN - local mode needs --interface (or '
                                  '-H DOM0 for initiator mode)')
    r = bad('--interface', 'san0', '--shelf', '1', '--slot', '255')
    assert (r.rc, r.first) == (3, 'AOE_TARGET UNKNOWN - --slot must be 0..254')


# --- initiator mode (-H a dom0) ------------------------------------------------------------
def remote(lab, host, *args):
    return run_plugin('check_aoe_target', *ssh(lab, host), *map(str, args))


def test_initiator_unknown_then_up_then_down(san):
    a = san.info['hosts']['dom0-1']['address']
    r = remote(san, 'dom0-1', '--shelf', 1, '--slot', 2)
    assert (r.rc, r.status) == (2, f'AOE_TARGET CRITICAL - e1.2 is unknown to the aoe '
                                   f'driver on {a} (run aoe-discover; known: none)')
    with host_runner(san, 'dom0-1') as h:
        res = h.run(['aoe-discover'])
        assert (res.exit, res.out) == (0, '')
    assert '/dev/etherd/e1.2' in xensim.devices(dom0.state_dir(san, 'dom0-1'))
    r = remote(san, 'dom0-1', '--shelf', 1, '--slot', 2)
    assert (r.rc, r.first) == (0, f'AOE_TARGET OK - e1.2 is up on {a} via san0, 0.016GB | '
                                  f'devices_up=1;;;0 size=16000000B;;;0')
    storage.link_down(san, 'dom0-1')
    r = remote(san, 'dom0-1', '--shelf', 1, '--slot', 2)
    assert (r.rc, r.status) == (2, f'AOE_TARGET CRITICAL - e1.2 is down on {a} (san0)')
    # dom0-2's link is still up: the fault is dom0-1's path only
    with host_runner(san, 'dom0-2') as h:
        assert h.run(['aoe-discover']).ok
    assert remote(san, 'dom0-2', '--shelf', 1, '--slot', 2).rc == 0


def test_initiator_dom0_unreachable_is_unknown(san):
    a = san.info['hosts']['dom0-2']['address']
    dom0.power(san, 'dom0-2', False)
    r = remote(san, 'dom0-2', '--shelf', 1, '--slot', 2)
    assert (r.rc, r.first) == (3, f'AOE_TARGET UNKNOWN - SSH to {a}: connection refused '
                                  f'(host down?)')


def test_initiator_local_mode_as_under_nrpe_on_the_dom0(san):
    env = dom0.env_for(san, 'dom0-1')
    r = run_plugin('check_aoe_target', '--initiator', '--shelf', '1', '--slot', '2', env=env)
    assert (r.rc, r.status) == (2, 'AOE_TARGET CRITICAL - e1.2 is unknown to the aoe '
                                   'driver on localhost (run aoe-discover; known: none)')
    standin = f"{san.info['hosts']['dom0-1']['bin']}/aoe-discover"   # never the real one
    assert subprocess.run([standin], env=env).returncode == 0
    r = run_plugin('check_aoe_target', '--initiator', '--shelf', '1', '--slot', '2', env=env)
    assert (r.rc, r.status) == (0, 'AOE_TARGET OK - e1.2 is up on localhost via san0, '
                                   '0.016GB')


# -- Reserve/Release and the Mac Mask List against the real vblade -----------------------
def test_reserve_and_mask_frames_are_vblades_layout():
    from xenha.storage import aoe
    src, dst = bytes.fromhex('020000000001'), bytes.fromhex('020000000002')
    f = aoe.reserve_frame(src, dst, 1, 2, 0x11223344, aoe.RR_FORCE_SET,
                          ['52:54:00:aa:00:01', '5254000000ff'])
    raw = f.encode()
    assert raw[:14].hex() == '020000000002' '020000000001' '88a2'
    assert raw[14:24].hex() == '10' '00' '0001' '02' '03' '11223344'
    assert raw[24:38].hex() == '02' '02' '525400aa0001' '5254000000ff'
    assert len(raw) == 60
    assert aoe.decode_reserve(raw[24:38]) == (2, ['52:54:00:aa:00:01', '52:54:00:00:00:ff'])
    m = aoe.mask_frame(src, dst, 1, 2, 1, aoe.MASK_EDIT,
                       [(aoe.MD_ADD, '52:54:00:aa:00:01')]).encode()
    assert m[24:36].hex() == '00' '01' '00' '01' '00' '01' '525400aa0001'
    assert aoe.decode_mask(m[24:36]) == (1, 0, ['52:54:00:aa:00:01'])
    w = aoe.ata_write(src, dst, 1, 2, 1, 0x010203, b'z' * 512).encode()
    assert w[24:36].hex() == '41' '00' '01' '34' '030201000000' '0000'
    assert len(w) == 36 + 512
    with pytest.raises(ValueError):
        aoe.mac_bytes('52:54:00:aa:00')
    with pytest.raises(aoe.BadFrame):
        aoe.decode_reserve(bytes([0, 3]) + b'\1' * 6)


def _in(lab, host):
    from xenha_lab.initiators import netns
    from xenha.storage import aoe
    with netns(storage.netns_of(lab, host)):
        sock = aoe.open_socket(storage.SAN_IF)
    return sock, aoe.mac_bytes(aoe.probe(storage.SAN_IF, 1, 2, sock=sock)[0].mac), \
        aoe.mac_text(sock.getsockname()[4])


def test_reserve_list_read_set_force_set(san):
    from xenha.storage import aoe
    m, dst, mm = _in(san, storage.MONITOR)
    a, _, am = _in(san, 'dom0-1')
    b, _, bm = _in(san, 'dom0-2')
    try:
        assert aoe.reserve_list(m, dst, 1, 2, 1.0) == []
        assert aoe.set_reserve_list(a, dst, 1, 2, [am], 1.0, force=False) == [am]
        # "set" from outside the list: refused, and the answer is the list as it is
        with pytest.raises(aoe.Refused) as refused:
            aoe.set_reserve_list(b, dst, 1, 2, [bm], 1.0, force=False)
        assert refused.value.reserved
        assert str(refused.value) == f'e1.2 refused Reserve/Release from {bm}: target reserved'
        assert aoe.reserve_list(b, dst, 1, 2, 1.0) == [am]          # reading is for all
        # I/O from outside: "reserved" for writes and reads; IDENTIFY still answers
        with pytest.raises(aoe.Refused) as refused:
            aoe.write_sectors(b, dst, 1, 2, 0, b'b' * 512, 1.0)
        assert refused.value.error == aoe.ERROR_RESERVED
        aoe.write_sectors(a, dst, 1, 2, 0, b'a' * 512, 1.0)
        assert aoe.probe(storage.SAN_IF, 1, 2, identify=True, sock=b)[0].identity
        # "force set" from anyone, the monitoring node included
        assert aoe.set_reserve_list(m, dst, 1, 2, [bm], 1.0) == [bm]
        aoe.write_sectors(b, dst, 1, 2, 0, b'b' * 512, 1.0)
        with pytest.raises(aoe.Refused):
            aoe.write_sectors(a, dst, 1, 2, 0, b'a' * 512, 1.0)
        assert aoe.set_reserve_list(m, dst, 1, 2, [], 1.0) == []   # empty: open again
        aoe.write_sectors(a, dst, 1, 2, 0, b'a' * 512, 1.0)
    finally:
        for s in (m, a, b):
            s.close()


def test_mask_list_read_add_and_vblade_25s_edit_bugs(san):
    """Why storage fencing never edits the mask: vblade 25's edit code walks
    its list by MAC count as if it were a byte count."""
    from xenha.storage import aoe
    m, dst, mm = _in(san, storage.MONITOR)
    a, _, am = _in(san, 'dom0-1')
    b, _, bm = _in(san, 'dom0-2')
    try:
        assert aoe.mask_list(m, dst, 1, 2, 1.0) == []
        assert aoe.edit_mask_list(m, dst, 1, 2, add=[mm], timeout=1.0) == [mm]
        assert aoe.edit_mask_list(m, dst, 1, 2, add=[am], timeout=1.0) == [mm, am]
        # outside a non-empty mask: no answer at all
        with pytest.raises(aoe.NoAnswer):
            aoe.reserve_list(b, dst, 1, 2, 0.3)
        # a third add overwrites the second entry and counts a zero MAC
        assert aoe.edit_mask_list(m, dst, 1, 2, add=[bm], timeout=1.0) == [
            mm, bm, '00:00:00:00:00:00']
        # deleting an entry but the first does nothing
        assert aoe.edit_mask_list(m, dst, 1, 2, delete=[bm], timeout=1.0) == [
            mm, bm, '00:00:00:00:00:00']
        # deleting the first one kills vblade
        with pytest.raises(aoe.NoAnswer):
            aoe.edit_mask_list(m, dst, 1, 2, delete=[mm], timeout=0.5)
        assert wait_for(lambda: not san.alive('vblade-e1.2'), timeout=2)
        assert 'buffer overflow detected' in open(san.procs['vblade-e1.2'].log).read()
    finally:
        for s in (m, a, b):
            s.close()


def test_verbose_shows_the_reserve_list_and_the_mask(san):
    from xenha_lab.initiators import netns
    from xenha.storage import aoe
    r = local(san, '--shelf', 1, '--slot', 2, '-v')
    assert r.rc == 0, r
    assert (f'e1.2 from {san_mac(san)}: reserve list empty (every MAC may do I/O); '
            f'mac mask empty (every MAC is served)') in r.out
    one, two = '02:00:00:00:00:01', '02:00:00:00:00:02'
    with netns(storage.netns_of(san, storage.MONITOR)):
        sock = aoe.open_socket(storage.SAN_IF)
    try:
        dst = aoe.mac_bytes(san_mac(san))
        own = aoe.mac_text(sock.getsockname()[4])
        aoe.set_reserve_list(sock, dst, 1, 2, [own, one], 1.0)
        aoe.edit_mask_list(sock, dst, 1, 2, add=[own, two], timeout=1.0)
        r = local(san, '--shelf', 1, '--slot', 2, '-v')
        assert r.rc == 0, r
        assert (f'e1.2 from {san_mac(san)}: reserve list {own}, {one}; '
                f'mac mask {own}, {two}') in r.out
        assert 'reserve list' not in local(san, '--shelf', 1, '--slot', 2).out
    finally:
        aoe.set_reserve_list(sock, dst, 1, 2, [], 1.0)
        sock.close()
