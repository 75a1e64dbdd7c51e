"""check_iscsi_target against the lab's real tgtd, in every mode and fault.

Each case runs the plugin as a subprocess and asserts the exact first line
(without perfdata where it holds timings) and the exit code.
"""

import os

import pytest

from storage_fixtures import host_runner, run_plugin, san, ssh, wait_for  # noqa: F401
from xenha_lab import storage

D1 = f'{storage.IQN}:disk1'
D2 = f'{storage.IQN}:disk2'
MON = storage.initiator_name('monitor')


def check(*args, **kw):
    return run_plugin('check_iscsi_target', *args, **kw)


def portal(lab):
    return storage.info(lab)['portal']


def probe_d1(lab, *extra, **kw):
    return check('-H', portal(lab), '--target', D1, '--initiator-name', MON, *extra, **kw)


def ok_line(lab, target=D1, size='64.0MiB'):
    return (f'ISCSI_TARGET OK - {target} LUN 1 at {portal(lab)}:3260: IET VIRTUAL-DISK, '
            f'{size}, 2 LUNs')


# --- portal mode -----------------------------------------------------------------------
def test_portal_ok_with_perfdata(san):
    r = probe_d1(san)
    assert (r.rc, r.status) == (0, ok_line(san))
    perf = r.first.split(' | ')[1].split()
    assert [p.split('=')[0] for p in perf] == ['capacity', 'connect_time', 'login_time',
                                               'luns', 'total_time']
    assert perf[0] == 'capacity=67108864B;;;0' and perf[3] == 'luns=2;;;0'


def test_portal_discovery_only_lists_what_this_initiator_may_see(san):
    r = check('-H', portal(san), '--initiator-name', MON)
    assert (r.rc, r.status) == (0, f'ISCSI_TARGET OK - {portal(san)}:3260: 2 targets '
                                   f'offered to {MON}')


def test_portal_target_hidden_by_acl_is_critical(san):
    r = check('-H', portal(san), '--target', D1)       # default initiator name
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - target {D1} not offered by '
                                  f'{portal(san)}:3260 to iqn.2026-01.org.xenha:monitor '
                                  f'(offered: {D2})')


def test_portal_missing_target_is_critical(san):
    r = check('-H', portal(san), '--target', f'{storage.IQN}:nope', '--initiator-name', MON)
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - target {storage.IQN}:nope not '
                                  f'offered by {portal(san)}:3260 to {MON} '
                                  f'(offered: {D1}, {D2})')


def test_portal_chap_required_wrong_and_right(san, tmp_path):
    base = ('-H', portal(san), '--target', D2, '--initiator-name', MON)
    refused = (f'ISCSI_TARGET CRITICAL - login to target {D2} at {portal(san)}:3260 '
               f'refused: authentication failed')
    r = check(*base)
    assert (r.rc, r.first) == (2, f'{refused} (target requires CHAP: pass --chap-user '
                                  f'and a secret)')
    wrong = tmp_path / 'wrong'
    wrong.write_text('not-the-secret\n')
    r = check(*base, '--chap-user', 'xenha', '--chap-secret-file', wrong)
    assert (r.rc, r.first) == (2, f'{refused} (CHAP user/secret wrong or required)')
    secret_file = storage.info(san)['chap']['secret_file']
    r = check(*base, '--chap-user', 'xenha', '--chap-secret-file', secret_file)
    assert (r.rc, r.status) == (0, ok_line(san, D2, '32.0MiB'))
    # from the environment, and never echoed anywhere
    secret = open(secret_file).read().strip()
    env = dict(os.environ, ISCSI_CHAP_SECRET=secret)
    r = check(*base, '--chap-user', 'xenha', '-vvv', env=env)
    assert (r.rc, r.status) == (0, ok_line(san, D2, '32.0MiB'))
    assert secret not in r.out + r.err


def test_portal_chap_without_secret_is_unknown(san):
    r = check('-H', portal(san), '--target', D2, '--chap-user', 'xenha')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - --chap-user needs '
                                  '--chap-secret-file or $ISCSI_CHAP_SECRET')
    r = check('-H', portal(san), '--target', D2, '--chap-user', 'xenha',
              '--chap-secret-file', '/nonexistent/secret')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - cannot read CHAP secret file '
                                  '/nonexistent/secret: No such file or directory')


def test_portal_missing_lun_is_critical(san):
    r = probe_d1(san, '--lun', '4')
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - target {D1} has no LUN 4 '
                                  f'(LUNs: 0, 1)')


def test_portal_thresholds_login_time_and_capacity(san):
    r = probe_d1(san, '--min-capacity', '1G')
    assert (r.rc, r.status) == (2, f'{ok_line(san).replace(" OK ", " CRITICAL ")}, '
                                   f'capacity 67108864B (outside range 1073741824:)')
    r = probe_d1(san, '--min-capacity', '32M')
    assert r.rc == 0, r
    r = probe_d1(san, '-w', '0.000000001')
    assert r.rc == 1 and r.status.startswith(
        f'{ok_line(san).replace(" OK ", " WARNING ")}, login took '), r
    assert r.status.endswith('s (outside range 0:1e-09)'), r


def test_portal_lun_offline_is_critical(san):
    storage.lun_offline(san)
    r = probe_d1(san)
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - LUN 1 of {D1} is not ready '
                                  f'(NOT READY, ASC/ASCQ 0x04/0x01)')
    storage.lun_online(san)
    assert probe_d1(san).rc == 0


def test_portal_target_offline_is_critical(san):
    storage.target_offline(san)
    r = probe_d1(san)
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - login to target {D1} at '
                                  f'{portal(san)}:3260 refused: target error (target '
                                  f'offline?)')
    storage.target_online(san)
    assert probe_d1(san).rc == 0


def test_portal_tgtd_stopped_is_critical_then_recovers(san):
    storage.tgtd_stop(san)
    r = probe_d1(san)
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - portal {portal(san)}:3260: '
                                  f'connection refused (no iSCSI target daemon listening)')
    storage.tgtd_start(san)
    assert probe_d1(san).rc == 0


def test_portal_tgtd_hung_is_critical_before_the_plugin_timeout(san):
    storage.tgtd_hang(san)
    r = probe_d1(san, '-t', '2')
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - portal {portal(san)}:3260 '
                                  f'accepted the connection but gave no login answer '
                                  f'within 1.6s (target daemon hung?)')
    assert r.seconds < 5      # our own timeout fired (rc 2), not -t (rc 3)
    storage.tgtd_resume(san)
    assert probe_d1(san).rc == 0


def test_portal_nothing_at_all_on_that_address(lab):
    r = check('-H', lab.addr(5), '--target', D1)     # a lab address, no daemon
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - portal {lab.addr(5)}:3260: '
                                  f'connection refused (no iSCSI target daemon listening)')


def test_bad_options_are_unknown():
    r = check('--target', D1)
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - portal mode needs -H PORTAL')
    r = check('-H', '127.0.0.1', '--min-capacity', 'lots')
    assert (r.rc, r.first) == (3, "ISCSI_TARGET UNKNOWN - not a size: 'lots' (try 512M, 4G)")


# --- portal mode through a dom0 (--via) -----------------------------------------------------
def via(lab, host, *extra):
    return check('-H', portal(lab), '--target', D1, '--via',
                 lab.info['hosts'][host]['address'], *ssh(lab), *extra)


def test_via_dom0_ok_and_acl_revoked(san):
    a = san.info['hosts']['dom0-1']['address']
    r = via(san, 'dom0-1')
    assert (r.rc, r.status) == (0, f'ISCSI_TARGET OK - {D1} offered by {portal(san)}:3260 '
                                   f'from {a}')
    storage.acl_revoke(san, 'dom0-1')
    r = via(san, 'dom0-1')
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - {D1} not offered by '
                                   f'{portal(san)}:3260 from {a} (missing, or that '
                                   f'initiator is not in its ACL)')
    assert via(san, 'dom0-2').rc == 0            # the other dom0 still may


def test_via_dom0_portal_down_and_dom0_down(san):
    a = san.info['hosts']['dom0-1']['address']
    storage.tgtd_stop(san)
    r = via(san, 'dom0-1')
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - discovery of '
                                   f'{portal(san)}:3260 from {a} failed: cannot make '
                                   f'connection to {portal(san)}: Connection refused')
    from xenha_lab import dom0
    dom0.power(san, 'dom0-1', False)
    r = via(san, 'dom0-1')
    assert (r.rc, r.first) == (3, f'ISCSI_TARGET UNKNOWN - SSH to {a}: connection refused '
                                  f'(host down?)')


# --- initiator mode -----------------------------------------------------------------------------
def login(lab, host, target=D1):
    r = host_runner(lab, host)
    with r:
        assert r.run(['iscsiadm', '-m', 'discovery', '-t', 'st', '-p', portal(lab)]).ok
        res = r.run(['iscsiadm', '-m', 'node', '-T', target, '-p', portal(lab), '--login'])
    assert res.ok, res


def initiator(lab, host, *extra):
    return check('--initiator', *ssh(lab, host), *extra)


def test_initiator_no_session_is_critical(san):
    a = san.info['hosts']['dom0-1']['address']
    r = initiator(san, 'dom0-1')
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - {a}: no iSCSI session to '
                                   f'any target')


def test_initiator_logged_in_then_tgtd_dies_then_comes_back(san):
    a = san.info['hosts']['dom0-1']['address']
    login(san, 'dom0-1')
    r = initiator(san, 'dom0-1', '--target', D1)
    assert (r.rc, r.first) == (0, f'ISCSI_TARGET OK - {a}: 1 session logged in ({D1}) | '
                                  f'logged_in=1;;;0 sessions=1;;;0')
    r = initiator(san, 'dom0-1', '--target', D2)
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - {a}: no iSCSI session to {D2}')
    storage.tgtd_stop(san)
    r = wait_for(lambda: (x := initiator(san, 'dom0-1', '--target', D1)).rc == 2 and x)
    assert r and r.status == (f'ISCSI_TARGET CRITICAL - {a}: session 1 to {D1} at '
                              f'{portal(san)}:3260 is FAILED (connection TRANSPORT WAIT)')
    storage.tgtd_start(san)
    assert wait_for(lambda: initiator(san, 'dom0-1', '--target', D1).rc == 0)


def test_initiator_session_fails_while_tgtd_hangs(san):
    login(san, 'dom0-2', D2)                    # the CHAP target
    assert initiator(san, 'dom0-2').rc == 0
    storage.tgtd_hang(san)
    try:
        assert wait_for(lambda: initiator(san, 'dom0-2').rc == 2)
    finally:
        storage.tgtd_resume(san)
    assert wait_for(lambda: initiator(san, 'dom0-2').rc == 0)


# --- server mode ------------------------------------------------------------------------------
def server(lab, *extra):
    return check('--server', '--control-port', storage.info(lab)['control'], *extra)


def test_server_ok_counts_sessions(san):
    r = server(san)
    assert (r.rc, r.first) == (0, 'ISCSI_TARGET OK - localhost: 2 targets ready, 2 LUNs '
                                  'online, 0 initiator sessions | luns=2;;;0 '
                                  'sessions=0;;;0 targets=2;;;0')
    login(san, 'dom0-1')
    r = server(san, '--target', D1)
    assert (r.rc, r.status) == (0, 'ISCSI_TARGET OK - localhost: 1 target ready, 1 LUN '
                                   'online, 1 initiator session')


def test_server_faults(san):
    storage.lun_offline(san)
    storage.target_offline(san, 'disk2')
    r = server(san)
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - localhost: LUN 1 of {D1} is '
                                   f'offline; target {D2} is offline')
    storage.lun_online(san)
    storage.target_online(san, 'disk2')
    dom02 = storage.initiator_name('dom0-2')
    assert server(san, '--expect-initiator', dom02).rc == 0
    storage.acl_revoke(san, 'dom0-2')
    r = server(san, '--target', D1, '--expect-initiator', dom02)
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - localhost: {dom02} is not in '
                                   f'the ACL of {D1}')
    r = server(san, '--target', f'{storage.IQN}:nope')
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - localhost: target '
                                   f'{storage.IQN}:nope is not configured')


def test_server_backing_store_removed(san):
    path = storage.info(san)['targets'][0]['luns']['1']
    os.unlink(path)
    r = server(san)
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - localhost: backing store '
                                   f'{path} is missing')


def test_server_tgtd_down(san):
    storage.tgtd_stop(san)
    r = server(san)
    assert (r.rc, r.status) == (2, 'ISCSI_TARGET CRITICAL - tgtd on localhost does not '
                                   'answer: tgtadm: failed to send request hdr to tgt '
                                   'daemon, Transport endpoint is not connected')


def test_initiator_local_mode_as_under_nrpe_on_the_dom0(san):
    """No -H: the check runs on the dom0 itself (NRPE, check_by_ssh)."""
    from xenha_lab import dom0
    login(san, 'dom0-1')
    r = check('--initiator', '--target', D1, env=dom0.env_for(san, 'dom0-1'))
    assert (r.rc, r.status) == (0, f'ISCSI_TARGET OK - localhost: 1 session logged in '
                                   f'({D1})')
    r = check('--initiator', '--target', D1, env=dom0.env_for(san, 'dom0-2'))
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - localhost: no iSCSI session '
                                   f'to {D1}')


def test_server_mode_over_ssh(san):
    """-H: tgtadm and stat run on the storage node over SSH (here a lab sshd
    on this machine plays the storage node's sshd)."""
    a = san.info['hosts']['dom0-1']['address']
    r = check('--server', *ssh(san, 'dom0-1'), '--control-port',
              storage.info(san)['control'], '--target', D2)
    assert (r.rc, r.status) == (0, f'ISCSI_TARGET OK - {a}: 1 target ready, 1 LUN online, '
                                   f'0 initiator sessions')
    os.unlink(storage.info(san)['targets'][1]['luns']['1'])
    r = check('--server', *ssh(san, 'dom0-1'), '--control-port',
              storage.info(san)['control'], '--target', D2)
    path = storage.info(san)['targets'][1]['luns']['1']
    assert (r.rc, r.status) == (2, f'ISCSI_TARGET CRITICAL - {a}: backing store {path} '
                                   f'is missing')


# -- writes and persistent reservations: the codec, then the real tgtd -------------------
def test_persistent_reserve_cdbs_and_parameters():
    from xenha.storage import iscsi
    # PERSISTENT RESERVE OUT: service action, scope 0 | type, 4-byte list length
    assert iscsi.pr_out_cdb(iscsi.PR_PREEMPT_AND_ABORT, 5).hex() == '5f050500000000001800'
    assert iscsi.pr_out_parameters(0x1122334455667788, 0xaa).hex() == (
        '1122334455667788' '00000000000000aa' '00000000' '00' '00' '0000')
    assert iscsi.pr_out_parameters(1, aptpl=True)[20] == 1
    # PERSISTENT RESERVE IN: allocation length in bytes 7-8
    assert iscsi.pr_in_cdb(iscsi.PR_READ_RESERVATION, 24).hex() == '5e010000000000001800'
    assert iscsi.parse_read_keys(bytes.fromhex('00000007' '00000010' '0000000000000001'
                                               '78683e8750d5948b')) == (
        7, [1, 0x78683e8750d5948b])
    assert iscsi.parse_read_keys(bytes.fromhex('00000000' '00000000')) == (0, [])
    held = bytes.fromhex('00000004' '00000010' '78683e8750d5948b' '00000000' '00' '05'
                         '0000')
    r = iscsi.parse_read_reservation(held)
    assert (r.generation, r.key, r.type, r.held, r.type_name) == (
        4, 0x78683e8750d5948b, 5, True, 'Write Exclusive - Registrants Only')
    assert not iscsi.parse_read_reservation(bytes(8)).held
    with pytest.raises(iscsi.ProtocolError):
        iscsi.parse_read_keys(b'\0\0')
    with pytest.raises(ValueError):
        iscsi.write10(None, 1, 0, b'x' * 100, 512)


def test_large_write_goes_out_after_r2t_and_reads_back(san):
    """More than the target takes as immediate data: the rest follows its R2Ts."""
    from xenha.storage import iscsi
    st = storage.info(san)
    s = iscsi.Session(iscsi.Portal(st['portal'], st['port']),
                      storage.initiator_name('dom0-1'), st['targets'][0]['name'], timeout=5)
    with s:
        s.login()
        iscsi.test_unit_ready(s, 1)
        data = bytes(range(256)) * 512            # 128 KiB: immediate 8 KiB, then R2T
        iscsi.write10(s, 1, 100, data, 512)
        assert iscsi.read10(s, 1, 100, len(data) // 512, 512) == data
        s.logout()


def test_portal_verbose_shows_registrations_and_the_reservation(san):
    from xenha.storage import iscsi
    r = probe_d1(san, '-v')
    assert (r.rc, r.status) == (0, ok_line(san))
    assert 'registrations: none; reservation: none' in r.out
    # what storage fencing leaves: two registrants, Write Exclusive - Registrants Only
    sessions = []
    for host, key in (('dom0-1', 0x1111), ('dom0-2', 0x2222)):
        s = iscsi.Session(iscsi.Portal(portal(san), 3260), storage.initiator_name(host),
                          D1, timeout=5)
        s.login()
        iscsi.test_unit_ready(s, 1)
        iscsi.pr_register(s, 1, key)
        sessions.append(s)
    iscsi.pr_reserve(sessions[0], 1, 0x1111)
    try:
        r = probe_d1(san, '-v')
        assert (r.rc, r.status) == (0, ok_line(san))
        assert ('registrations: 0x1111, 0x2222; reservation: Write Exclusive - '
                'Registrants Only, held by 0x1111') in r.out
        plain = probe_d1(san)                  # without -v: nothing read, nothing said
        assert 'registrations' not in plain.out
        # reading never registers the monitor: the keys stay the dom0s'
        s = sessions[1]
        assert iscsi.pr_read_keys(s, 1)[1] == [0x1111, 0x2222]
    finally:
        for s in sessions:
            s.close()
