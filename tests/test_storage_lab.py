"""The storage node of the lab and the dom0 initiator stand-ins.

The stand-ins run where the failover engine will run them: on a lab dom0,
over SSH, with argv lists from `xenha.storage.iscsi` / `aoe`.
"""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from storage_fixtures import host_runner, san, wait_for  # noqa: F401
from xenha_lab import dom0, storage, xensim
from xenha_lab.core import Lab
from xenha.storage import aoe, iscsi

D1 = f'{storage.IQN}:disk1'
D2 = f'{storage.IQN}:disk2'


def portal(lab):
    return iscsi.Portal(storage.info(lab)['portal'])


def devices(lab, host):
    return xensim.devices(dom0.state_dir(lab, host))


def test_engine_api_logs_a_spare_in_and_waits_for_the_disk(san):
    """What failover step 6 does: run login_commands, then wait_device."""
    p = portal(san)
    with host_runner(san, 'dom0-2') as h:
        for argv in iscsi.login_commands(p, D1):
            res = h.run(argv)
            assert iscsi.login_ok(res.exit), res
        assert res.out == (f'Logging in to [iface: default, target: {D1}, portal: '
                           f'{p.host},3260]\nLogin to [iface: default, target: {D1}, '
                           f'portal: {p.host},3260] successful.\n')
        assert iscsi.wait_device(h, p, D1, timeout=5)
        assert iscsi.device_path(p, D1, 1) in devices(san, 'dom0-2')
        # idempotent: a second login is "session exists" (15), still ok
        again = h.run(iscsi.login_commands(p, D1)[1])
        assert again.exit == 15 and iscsi.login_ok(again.exit)
        assert again.err == ('iscsiadm: default: 1 session requested, but 1 already '
                             'present.\niscsiadm: Could not log into all portals\n')
        # tgtd sees the dom0's session, from the dom0's own address
        t = {x.name: x for x in iscsi.parse_tgtadm_show(storage.show(san))}
        assert t[D1].initiators == [storage.initiator_name('dom0-2')]
        assert f'IP Address: {san.info["hosts"]["dom0-2"]["address"]}' in storage.show(san)
        out = h.run(iscsi.logout_command(p, D1))
        assert out.ok and 'successful' in out.out
        assert iscsi.device_path(p, D1, 1) not in devices(san, 'dom0-2')
        assert not iscsi.wait_device(h, p, D1, timeout=0)
        assert h.run(iscsi.session_command()).exit == 21


def test_chap_target_login_uses_the_node_secret_not_argv(san):
    p = portal(san)
    with host_runner(san, 'dom0-1') as h:
        for argv in iscsi.login_commands(p, D2):
            assert iscsi.login_ok(h.run(argv).exit)
        assert iscsi.wait_device(h, p, D2, timeout=5)
    secret = Path(storage.info(san)['chap']['secret_file']).read_text().strip()
    assert oct(os.stat(storage.info(san)['chap']['secret_file']).st_mode & 0o777) == '0o600'
    for proc in Path('/proc').glob('[0-9]*'):
        try:
            assert secret not in (proc / 'cmdline').read_text()
        except OSError:
            continue


def test_revoked_acl_fails_the_login_for_real(san):
    p = portal(san)
    with host_runner(san, 'dom0-1') as h:
        assert h.run(iscsi.discovery_command(p)).ok       # node record exists
        storage.acl_revoke(san, 'dom0-1')
        res = h.run(iscsi.login_commands(p, D1)[1])
        assert res.exit == 19, res
        assert res.err == (
            f'iscsiadm: Could not login to [iface: default, target: {D1}, portal: '
            f'{p.host},3260].\niscsiadm: initiator reported error (19 - encountered '
            f'non-retryable iSCSI login failure)\niscsiadm: Could not log into all '
            f'portals\n')
        assert iscsi.device_path(p, D1, 1) not in devices(san, 'dom0-1')
        # rediscovery no longer offers the target to this dom0
        res = h.run(iscsi.discovery_command(p))
        assert res.out == f'{p.host}:3260,1 {D2}\n'
        storage.acl_restore(san, 'dom0-1')
        assert iscsi.login_ok(h.run(iscsi.login_commands(p, D1)[1]).exit)


def test_discovery_errors_have_iscsiadm_codes(san):
    p = portal(san)
    with host_runner(san, 'dom0-1') as h:
        res = h.run(['iscsiadm', '-m', 'node', '-T', D1, '--login'])
        assert (res.exit, res.err) == (21, 'iscsiadm: No records found\n')
        storage.tgtd_stop(san)
        res = h.run(iscsi.discovery_command(p))
        assert res.exit == 4
        assert res.err.splitlines()[-1] == ('iscsiadm: Could not perform SendTargets '
                                            'discovery: encountered connection failure')


def test_aoe_discover_and_stat_from_the_dom0_namespace(san):
    with host_runner(san, 'dom0-1') as h:
        assert h.run(aoe.stat_command()).out == ''
        for argv in aoe.discover_commands():
            assert h.run(argv).ok
        assert aoe.wait_device(h, 1, 2, timeout=3)
        assert h.run(['aoe-stat']).out == \
            '      e1.2         0.016GB       san0 1024  up            \n'
        assert aoe.device_path(1, 2) in devices(san, 'dom0-1')
        storage.vblade_stop(san, 1, 2)
        assert not aoe.wait_device(h, 1, 2, timeout=0)
        assert h.run(['aoe-stat']).out == \
            '      e1.2         0.016GB       san0 1024  down          \n'


def test_two_storage_labs_at_once():
    """Two labs' storage nodes come up at the same time and stay apart: own
    portals, control ports, namespaces.  (The Lab() claims are made one
    after the other: core.Lab._stale can take a claim made at the same
    instant for a stale one; reported to the lead.)"""
    labs, errors = [Lab(), Lab()], []

    def bring_up(lab):
        try:
            storage.up(lab, hosts=['dom0-1'])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bring_up, args=(lab,)) for lab in labs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        a, b = labs
        assert storage.info(a)['portal'] != storage.info(b)['portal']
        assert storage.info(a)['control'] != storage.info(b)['control']
        for lab in labs:
            res = iscsi.probe(portal(lab), D1, initiator=storage.initiator_name('monitor'))
            assert res.lun.capacity == 64 * 1024 * 1024
            # each lab's tgtadm (-C port) talks to its own daemon
            assert len(iscsi.parse_tgtadm_show(storage.show(lab))) == 2
        storage.target_offline(a)
        with pytest.raises(iscsi.TargetUnavailable):
            iscsi.probe(portal(a), D1, initiator=storage.initiator_name('monitor'))
        iscsi.probe(portal(b), D1, initiator=storage.initiator_name('monitor'))
    finally:
        for lab in labs:
            assert lab.down() == []


def test_down_leaves_nothing_behind():
    lab = Lab()
    try:
        dom0.add_host(lab, 'dom0-1')
        storage.up(lab)
        with host_runner(lab, 'dom0-1') as h:          # a session holder runs
            for argv in iscsi.login_commands(portal(lab), D1):
                h.run(argv)
        storage.tgtd_hang(lab)                         # even a hung tgtd
        pids = [p.pid for p in lab.procs.values()]
        namespaces = list(lab.namespaces)
        sock = f'/var/run/tgtd/socket.{lab.port(0)}'
    finally:
        assert lab.down() == []
    assert not any(Path(f'/proc/{pid}').exists() and
                   'Z' not in Path(f'/proc/{pid}/stat').read_text().split(')')[1][:3]
                   for pid in pids)
    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                            text=True).stdout
    assert not any(ns in listed.split() for ns in namespaces)
    assert not os.path.exists(sock)


def test_host_down_drops_sessions_without_logout(san):
    from xenha_lab import initiators
    p = portal(san)
    with host_runner(san, 'dom0-1') as h:
        for argv in [*iscsi.login_commands(p, D1), *aoe.discover_commands()]:
            assert iscsi.login_ok(h.run(argv).exit)
    assert len(devices(san, 'dom0-1')) == 2
    initiators.host_down(san, 'dom0-1')
    assert devices(san, 'dom0-1') == set()
    assert wait_for(lambda: not any(
        t.initiators for t in iscsi.parse_tgtadm_show(storage.show(san))))
    with host_runner(san, 'dom0-1') as h:
        assert h.run(iscsi.session_command()).exit == 21
        assert h.run(aoe.stat_command()).out == ''


def test_dom0_initiator_name_comes_from_its_initiatorname_file(san):
    state = Path(dom0.state_dir(san, 'dom0-2'))
    f = state / 'initiatorname.iscsi'
    assert f.read_text() == f'InitiatorName={storage.initiator_name("dom0-2")}\n'
    p = portal(san)
    with host_runner(san, 'dom0-2') as h:
        assert h.run(iscsi.discovery_command(p)).out.split() == [
            f'{p.host}:3260,1', D1, f'{p.host}:3260,1', D2]
        f.write_text('InitiatorName=iqn.2026-01.lab.xenha:impostor\n')
        assert h.run(iscsi.discovery_command(p)).out.split() == [f'{p.host}:3260,1', D2]
        assert h.run(iscsi.login_commands(p, D1)[1]).exit == 19   # stale node record
