"""The study's and the perf checks' block clients against the real tgtd and
the real vblade: what is written is read back equal, is what the target's
backing store holds, and the target's own counters agree.

Network safety: iSCSI goes to the lab's 127.x portal; every AoE frame is
sent from a lab namespace over the lab's own veth pairs (`ip netns exec`)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from xenha_lab import study as lab_study
from xenha.storage import iscsi, iscsi_io
from xenha.storage.iscsi_io import pattern

MiB = 1024 * 1024


def _io(pid):
    with open(f'/proc/{pid}/io') as fh:
        return {k: int(v) for k, v in (line.split(': ') for line in fh)}


@pytest.fixture
def tgt(lab):
    return lab_study.iscsi_up(lab, 2, 16 * MiB, 'file')


def test_iscsi_write_read_back_equal_and_on_the_backing_store(tgt):
    data = pattern(42, 65536)
    before = _io(tgt['pid'])
    with iscsi_io.Disk.open(iscsi.Portal(tgt['portal'], tgt['port']), tgt['targets'][0],
                            1, 'iqn.2026-01.org.xenha:test-io') as disk:
        assert (disk.capacity, disk.block_size) == (16 * MiB, 512)
        w = disk.transfer('write', 0, 8 * MiB, 65536, 4, data=data)
        r = disk.transfer('read', 0, 8 * MiB, 65536, 4, expect=data)
    after = _io(tgt['pid'])
    assert (w.nbytes, w.commands, r.nbytes, r.commands) == (8 * MiB, 128, 8 * MiB, 128)
    assert r.mismatches == 0
    # 64 KiB each: 8 KiB immediate data (tgtd's MaxRecvDataSegmentLength), the rest
    # after one R2T per command
    assert w.r2t == 128
    assert len(w.latencies) == len(r.latencies) == 128
    with open(tgt['images'][0], 'rb') as fh:
        on_disk = fh.read(8 * MiB)
    assert on_disk == b''.join(data(off, 65536) for off in range(0, 8 * MiB, 65536))
    # tgtd's own I/O counters: it took at least the bytes in from the socket and
    # wrote them to its store, and read them back out
    assert after['rchar'] - before['rchar'] >= 8 * MiB * 2
    assert after['wchar'] - before['wchar'] >= 8 * MiB * 2
    # the other client's disk was not touched
    with open(tgt['images'][1], 'rb') as fh:
        assert fh.read(MiB) == bytes(MiB)


def test_iscsi_read_mismatch_is_counted(tgt):
    with iscsi_io.Disk.open(iscsi.Portal(tgt['portal'], tgt['port']), tgt['targets'][1],
                            1, 'iqn.2026-01.org.xenha:test-io') as disk:
        r = disk.transfer('read', 0, MiB, 65536, 2, expect=pattern(1, 65536))
    assert (r.nbytes, r.mismatches) == (MiB, 16)      # the disk holds zeros


def test_iscsi_refuses_past_the_end(tgt):
    with iscsi_io.Disk.open(iscsi.Portal(tgt['portal'], tgt['port']), tgt['targets'][0],
                            1, 'iqn.2026-01.org.xenha:test-io') as disk:
        with pytest.raises(ValueError, match='past the end of the LUN'):
            disk.transfer('read', 15 * MiB, 2 * MiB)


AOE_CLIENT = r'''
import json, sys
from xenha.storage import aoe_io
from xenha.storage.iscsi_io import pattern
job = json.loads(sys.argv[1])
data = pattern(job['seed'], 65536)
with aoe_io.Export(job['iface'], 1, job['slot']) as ex:
    out = {'bufcnt': ex.bufcnt, 'sectors': ex.sectors, 'capacity': ex.capacity}
    print(json.dumps({'ready': 1}), flush=True)
    for op in ('write', 'read'):
        st = ex.transfer(op, 0, job['size'], 65536, 1, job['policy'],
                         data=data if op == 'write' else None,
                         expect=data if op == 'read' else None)
        out[op] = {'bytes': st.nbytes, 'mismatches': st.mismatches,
                   'retransmits': st.retransmits, 'stall': st.longest_stall,
                   'frames': st.frames, 'late': st.late_answers}
print(json.dumps(out))
'''


def aoe_client(tg, slot, policy, size, seed=5, during=None):
    argv = ['ip', 'netns', 'exec', tg['netns'], sys.executable, '-c', AOE_CLIENT,
            json.dumps({'iface': tg['interfaces'][slot], 'slot': slot, 'policy': policy,
                        'size': size, 'seed': seed})]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline()) == {'ready': 1}, p.stderr.read()
    if during:
        during()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return json.loads(out)


@pytest.fixture
def blades(lab):
    return lab_study.aoe_up(lab, 2, 8 * MiB, 'file', mtu=1500, bufcnt=8)


@pytest.mark.parametrize('policy', ['adaptive', 'linux-2007'])
def test_aoe_write_read_back_equal_and_on_the_backing_store(blades, policy):
    r = aoe_client(blades, 0, policy, 2 * MiB)
    assert (r['bufcnt'], r['sectors'], r['capacity']) == (8, 2, 8 * MiB)
    assert r['write']['bytes'] == r['read']['bytes'] == 2 * MiB
    assert r['write']['frames'] == 2 * MiB // 1024       # 2 sectors a frame at MTU 1500
    assert r['read']['mismatches'] == 0
    data = pattern(5, 65536)
    with open(blades['images'][0], 'rb') as fh:
        assert fh.read(2 * MiB) == b''.join(data(o, 65536) for o in range(0, 2 * MiB, 65536))
    with open(blades['images'][1], 'rb') as fh:
        assert fh.read(MiB) == bytes(MiB)


def test_aoe_jumbo_frames_carry_17_sectors(lab):
    tg = lab_study.aoe_up(lab, 1, 4 * MiB, 'tmpfs', mtu=9000, bufcnt=16)
    r = aoe_client(tg, 0, 'adaptive', MiB)
    assert r['sectors'] == 17
    # 64 KiB records in 8704-byte frames: 8 frames each (the last one 4608 bytes)
    assert r['write']['frames'] == 16 * 8
    assert r['read']['mismatches'] == 0


@pytest.mark.parametrize('policy', ['adaptive', 'linux-2007'])
def test_aoe_a_target_that_stops_answering_is_retransmitted_to(blades, policy):
    """vblade stopped for 1.2 s in every 1.25 while the client runs: frames
    are resent (by the 2007 timer too, once its average has come down from
    its initial 2 s), the longest stall shows it, the data is intact."""
    pid = blades['pids'][1]
    done = threading.Event()

    def stutter():
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            done.wait(1.2)
            os.kill(pid, signal.SIGCONT)
            done.wait(0.05)

    t = threading.Thread(target=stutter)

    def start():
        t.start()
    try:
        r = aoe_client(blades, 1, policy, MiB, seed=9, during=start)
    finally:
        done.set()
        t.join()
        os.kill(pid, signal.SIGCONT)
    rex = r['write']['retransmits'] + r['read']['retransmits']
    assert rex > 0
    assert max(r['write']['stall'], r['read']['stall']) >= 1.0
    assert r['read']['mismatches'] == 0
