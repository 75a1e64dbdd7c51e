"""Storage fencing in the failover (issue 14): with the chain [agent, storage]
and a dead BMC the failover goes through, the target itself refusing the old
dom0; the real tgtd and vblade say so.  Only a guest whose every disk is
revoked starts elsewhere."""

import re

import pytest

from conftest import cluster_lab, engine, journal, placement
from xenha.lab import bmc, cluster, dom0, initiators, storage
from xenha.storage import aoe


@pytest.fixture
def slab():
    yield from cluster_lab(fencing='agent+storage')


def write_as(lab, host, target):
    """One block written by `host` (its own session or SAN MAC) to `target`:
    None when the target took it, else what it said."""
    if target.kind == 'iscsi':
        out = initiators.request(None, target.device, 'write', lab=lab, host_name=host)
        return None if out['ok'] else out['error']
    with initiators.netns(storage.netns_of(lab, host)):
        sock = aoe.open_socket(storage.SAN_IF)
    try:
        dst = aoe.probe(storage.SAN_IF, target.shelf, target.slot, timeout=1, sock=sock)[0]
        aoe.write_sectors(sock, aoe.mac_bytes(dst.mac), target.shelf, target.slot, 0,
                          b'\x5a' * 512, 2.0)
        return None
    except aoe.Refused as exc:
        return 'reserved' if exc.reserved else str(exc)
    finally:
        sock.close()


def test_a_dead_bmc_and_a_partition_end_with_the_old_copy_refused(slab):
    """dom0-1 is cut off (sshd gone, its guests go on) and its BMC is dead:
    the agent cannot fence it, storage fencing can.  db1 and web1 start on
    the spare; their old copies on dom0-1 can no longer write."""
    c = cluster.cluster(slab)
    dom0.partition(slab, 'dom0-1')
    bmc.stop(slab, 'dom0-1')
    r = engine(slab).failover('dom0-1')
    assert (r.result, r.moved) == ('ok', {'db1': 'dom0-3', 'web1': 'dom0-3'}), r.message
    assert r.message == ('dom0-1 failed over (fenced at the storage only: dom0-1 may still '
                         'run, its old copies cannot write their disks): 2 domUs running: '
                         'db1 on dom0-3, web1 on dom0-3')
    fence = [m for s, m in journal(slab, r.job) if s == 'fence']
    assert fence[0].startswith('agent fence_ipmilan: failed: fence_ipmilan off: ')
    assert re.fullmatch(r'storage: confirmed: revoked on 2 target\(s\), each confirmed: '
                        r'db1-disk: .*; web1-disk: .* \(\d+\.\ds\)', fence[1]), fence[1]
    assert dom0.powered(slab, 'dom0-1')            # it still runs: only the disks refuse
    assert placement(slab)['db1'] == ['dom0-1', 'dom0-3']
    for g in ('db1', 'web1'):
        t = c.targets_of(g)[0]
        assert write_as(slab, 'dom0-1', t) == 'RESERVATION CONFLICT'
        assert write_as(slab, 'dom0-3', t) is None      # the spare registered at attach
    # an independent writer with dom0-1's initiator name is refused too
    with engine(slab).db as db:
        assert db.revoked() == {slab.info['hosts']['dom0-1']['address']:
                                frozenset({'db1-disk', 'web1-disk'})}


def test_aoe_guests_the_old_copy_is_refused_by_vblade(slab):
    c = cluster.cluster(slab)
    dom0.partition(slab, 'dom0-2')
    bmc.stop(slab, 'dom0-2')
    r = engine(slab).failover('dom0-2')
    assert (r.result, r.moved) == ('ok', {'mail1': 'dom0-3', 'build1': 'dom0-3'}), r.message
    for g in ('mail1', 'build1'):
        t = c.targets_of(g)[0]
        assert write_as(slab, 'dom0-2', t) == 'reserved'
        assert write_as(slab, 'dom0-3', t) is None


def test_a_guest_whose_disk_cannot_be_revoked_is_not_started(slab):
    """The monitoring node may not log in to web1's target (its ACL): web1's
    disk cannot be revoked, so web1 stays where it may still run; db1 moves."""
    from xenha.storage.iscsi import DEFAULT_INITIATOR
    storage.tgtadm(slab, '--mode', 'target', '--op', 'unbind', '--tid',
                   str(storage._target(slab, 'web1')['tid']), '--initiator-name',
                   DEFAULT_INITIATOR)
    dom0.partition(slab, 'dom0-1')
    bmc.stop(slab, 'dom0-1')
    r = engine(slab).failover('dom0-1')
    assert (r.result, r.moved) == ('partial', {'db1': 'dom0-3'}), r.message
    assert re.fullmatch(r'web1 may run on dom0-1, which does not answer since \d\d:\d\d:\d\d, '
                        r'is not power-fenced and not revoked on all of web1\'s disks \(not '
                        r'revoked: web1-disk\): not started; power dom0-1 off .*',
                        r.failed['web1']), r.failed
    notes = [m for s, m in journal(slab, r.job) if s == 'fence']
    assert any(m.startswith('dom0-1 is fenced at the storage only (revoked on db1-disk; NOT '
                            'on web1-disk)') for m in notes), notes
    assert placement(slab)['web1'] == ['dom0-1']


def test_with_a_working_bmc_the_power_fence_comes_first_and_nothing_is_revoked(slab):
    dom0.power(slab, 'dom0-1', on=False)
    r = engine(slab).failover('dom0-1')
    assert (r.result, r.moved) == ('ok', {'db1': 'dom0-3', 'web1': 'dom0-3'})
    assert [m.split(':')[0] for s, m in journal(slab, r.job) if s == 'fence'] == [
        'agent fence_ipmilan']
    with engine(slab).db as db:
        assert db.revoked() == {}


def test_check_fence_reads_each_disk_and_unfence_brings_a_repaired_dom0_back(slab):
    from conftest import run
    inv = cluster.inventory_path(slab)
    r = run('check_fence', '--inventory', inv, '--dom0', 'dom0-1', '-t', '10')
    assert (r.rc, r.status) == (0, 'FENCE OK - dom0-1: agent fence_ipmilan answers (power '
                                   'on); storage ready on 2 targets (each reservation '
                                   'readable from here, dom0-1 may write)'), r
    dom0.partition(slab, 'dom0-1')
    bmc.stop(slab, 'dom0-1')
    assert engine(slab).failover('dom0-1').result == 'ok'
    r = run('check_fence', '--inventory', inv, '--dom0', 'dom0-1', '-t', '10')
    assert r.rc == 1 and r.status.endswith(
        'dom0-1 is revoked on db1-disk, web1-disk (fenced at the storage: `xenha unfence '
        'dom0-1` once it is repaired)'), r
    # repaired: back on the network, but its old copies still run there
    dom0.resume(slab, 'dom0-1')
    r = run('xenha', 'unfence', 'dom0-1', '-q', '--inventory', inv)
    assert (r.rc, r.first) == (1, 'dom0-1 still runs db1, web1, whose disks it would write '
                                  'again: `xl destroy` them there first (the failover '
                                  'started them elsewhere)'), r
    c = cluster.cluster(slab)
    assert write_as(slab, 'dom0-1', c.targets_of('db1')[0]) == 'RESERVATION CONFLICT'
    from xenha.lab import xensim
    for g in ('db1', 'web1'):
        xensim.destroy(dom0.state_dir(slab, 'dom0-1'), g)
    r = run('xenha', 'unfence', 'dom0-1', '-q', '--inventory', inv)
    assert (r.rc, r.first) == (0, 'dom0-1 unfenced: it may write again on db1-disk, '
                                  'web1-disk'), r
    assert write_as(slab, 'dom0-1', c.targets_of('db1')[0]) is None
    assert write_as(slab, 'dom0-3', c.targets_of('db1')[0]) is None     # still
    with engine(slab).db as db:
        assert db.revoked() == {}
    bmc.start(slab, 'dom0-1')
    r = run('check_fence', '--inventory', inv, '--dom0', 'dom0-1', '-t', '10')
    assert r.rc == 0, r


def test_the_boot_script_registers_but_never_undoes_a_fence(slab, tmp_path):
    import subprocess
    from conftest import run
    inv = cluster.inventory_path(slab)
    r = run('xenha', 'boot-script', 'dom0-1', '--inventory', inv)
    assert r.rc == 0 and r.out.startswith('#!/bin/sh\n')
    script = tmp_path / 'xenha-register'
    script.write_text(r.out)
    assert subprocess.run(['sh', '-n', str(script)]).returncode == 0
    env = dom0.env_for(slab, 'dom0-1')
    ok = subprocess.run(['sh', str(script)], env=env, capture_output=True, text=True)
    assert (ok.returncode, ok.stderr) == (0, '')
    dom0.partition(slab, 'dom0-1')
    bmc.stop(slab, 'dom0-1')
    assert engine(slab).failover('dom0-1').result == 'ok'
    # dom0-1 reboots with the script: it must not register where it was revoked
    no = subprocess.run(['sh', str(script)], env=env, capture_output=True, text=True)
    assert no.returncode == 1
    assert 'dom0-1 was fenced here (its key is gone): not registering; xenha unfence ' \
           'dom0-1' in no.stderr
    c = cluster.cluster(slab)
    assert write_as(slab, 'dom0-1', c.targets_of('db1')[0]) == 'RESERVATION CONFLICT'
