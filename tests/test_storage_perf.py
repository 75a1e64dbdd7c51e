"""check_iscsi_target --perf and check_aoe_target --perf against the lab's real
tgtd and vblade: exact first lines (figures matched by pattern, since they are
measurements) and exit codes.

Network safety: iSCSI to the lab's 127.x portal only; AoE frames only from the
lab's monitoring namespace over its veth to the lab's SAN bridge."""

import os
import re
import signal
import threading
import time

from storage_fixtures import run_plugin, san  # noqa: F401
from xenha_lab import storage

NUM = r'[0-9.]+(?:e[-+]?\d+)?'
PHASE = (rf'(read|write) 16\.0MiB in {NUM}s: {NUM}MB/s, latency p50 {NUM}ms '
         rf'p99 {NUM}ms')


def iscsi(lab, *args):
    st = storage.info(lab)
    return run_plugin('check_iscsi_target', '-H', st['portal'], '--target',
                      f'{storage.IQN}:disk1', '--initiator-name',
                      storage.initiator_name(storage.MONITOR), '--perf', *map(str, args))


def aoe(lab, *args, **kw):
    return run_plugin('check_aoe_target', '--interface', storage.SAN_IF, '--shelf', 1,
                      '--slot', 2, '--perf', *map(str, args),
                      netns=storage.netns_of(lab, storage.MONITOR), **kw)


def where_iscsi(lab):
    return f'{storage.IQN}:disk1 LUN 1 at {storage.info(lab)["portal"]}:3260'


def test_iscsi_perf_ok_with_perfdata(san):
    r = iscsi(san)
    assert r.rc == 0, r
    assert re.fullmatch(rf'ISCSI_TARGET OK - {re.escape(where_iscsi(san))}: {PHASE}',
                        r.status), r.status
    perf = r.first.split(' | ')[1].split()
    names = [p.split('=')[0] for p in perf]
    assert names == ['read_latency_p50', 'read_latency_p99', 'read_throughput']
    assert re.fullmatch(rf'read_throughput={NUM}B/s;;;0', perf[2])
    assert re.fullmatch(rf'read_latency_p99={NUM}s;;;0', perf[1])


def test_iscsi_perf_throughput_ranges(san):
    r = iscsi(san, '-w', '1000G:', '-c', '1K:')
    assert r.rc == 1, r
    assert re.fullmatch(rf'ISCSI_TARGET WARNING - {re.escape(where_iscsi(san))}: {PHASE}, '
                        rf'read throughput {NUM}B/s \(outside range 1073741824000:\)',
                        r.status), r.status
    assert 'read_throughput=' in r.first and ';1073741824000:;1024:;0' in r.first
    r = iscsi(san, '-w', '1000G:', '-c', '999G:')
    assert r.rc == 2, r
    assert r.status.endswith('(outside range 1072668082176:)'), r.status
    assert iscsi(san, '-w', '1K:', '-c', '512:').rc == 0


def test_iscsi_perf_latency_ranges(san):
    r = iscsi(san, '--latency-warning', '0.000000001')
    assert r.rc == 1, r
    assert re.fullmatch(rf'ISCSI_TARGET WARNING - .*, read latency p99 {NUM}s '
                        rf'\(outside range 0:1e-09\)', r.status), r.status
    r = iscsi(san, '--latency-critical', '0.000000001')
    assert r.rc == 2, r


def test_iscsi_perf_write_refused_on_a_target_not_marked_scratch(san, tmp_path):
    inv = tmp_path / 'cluster.toml'
    inv.write_text(inventory(san, scratch=False))
    r = iscsi(san, '--write', '--inventory', inv)
    assert (r.rc, r.first) == (3, f'ISCSI_TARGET UNKNOWN - refusing to write: target '
                                  f'lab-disk1 is not marked scratch = true in {inv} (a '
                                  f'guest may use it)')
    missing = tmp_path / 'other.toml'
    missing.write_text(inventory(san, scratch=True).replace(':disk1', ':disk9'))
    r = iscsi(san, '--write', '--inventory', missing)
    assert (r.rc, r.first) == (3, f'ISCSI_TARGET UNKNOWN - refusing to write: this target '
                                  f'is not in {missing} (only a target marked scratch = '
                                  f'true there may be written)')


def test_iscsi_perf_write_on_a_scratch_target_reads_back(san, tmp_path):
    inv = tmp_path / 'cluster.toml'
    inv.write_text(inventory(san, scratch=True))
    r = iscsi(san, '--write', '--inventory', inv, '--bytes', '16M')
    assert r.rc == 0, r
    assert re.fullmatch(rf'ISCSI_TARGET OK - {re.escape(where_iscsi(san))}: {PHASE}; '
                        rf'{PHASE}', r.status), r.status
    assert 'write_throughput=' in r.first
    lun = storage.info(san)['targets'][0]['luns']['1']
    with open(lun, 'rb') as fh:
        assert fh.read(16)[8:] == (0x5eed).to_bytes(8, 'big')


def test_iscsi_perf_bad_options(san):
    r = run_plugin('check_iscsi_target', '-H', '127.0.0.1', '--write')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - --write needs --perf')
    r = run_plugin('check_iscsi_target', '-H', '127.0.0.1', '-w', '100M:')
    assert (r.rc, r.first) == (3, "ISCSI_TARGET UNKNOWN - argument -w/--warning: not a "
                                  "range: '100M:': its start '100M' is not a number (use "
                                  "[@][start:][end], e.g. 10, 10:, ~:10, 10:20, @10:20) "
                                  "(size suffixes only with --perf)")
    r = iscsi(san, '--bytes', '1000')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - --bytes, --record and --offset '
                                  'must be multiples of 512 bytes (and --bytes, --record '
                                  'more than 0)')
    r = iscsi(san, '--offset', '60M')
    assert (r.rc, r.first) == (3, 'ISCSI_TARGET UNKNOWN - --offset + --bytes is past the '
                                  'end of LUN 1 (64.0MiB)')


def test_iscsi_perf_portal_down_is_critical(san):
    storage.tgtd_stop(san)
    r = iscsi(san)
    assert (r.rc, r.first) == (2, f'ISCSI_TARGET CRITICAL - portal '
                                  f'{storage.info(san)["portal"]}:3260: connection refused '
                                  f'(no iSCSI target daemon listening)')


def inventory(lab, scratch: bool) -> str:
    st = storage.info(lab)
    return f'''
[dom0.dom0-1]
address = "127.0.0.1"
role = "active"
fencing = "none"

[storage.san]
address = "{st['portal']}"

[target.lab-disk1]
kind = "iscsi"
storage = "san"
portal = "{st['portal']}:3260"
iqn = "{storage.IQN}:disk1"
lun = 1
scratch = {'true' if scratch else 'false'}

[target.lab-e1-2]
kind = "aoe"
storage = "san"
shelf = 1
slot = 2
interface = "san0"
scratch = {'true' if scratch else 'false'}
'''


AOE_WHERE = r'e1\.2 on san0 from [0-9a-f:]{17} \(16 buffers, 1024 B frames\)'


def test_aoe_perf_ok_with_perfdata(san):
    r = aoe(san)
    assert r.rc == 0, r
    assert re.fullmatch(rf'AOE_TARGET OK - {AOE_WHERE}: {PHASE}', r.status), r.status
    perf = r.first.split(' | ')[1].split()
    assert [p.split('=')[0] for p in perf] == ['read_latency_p50', 'read_latency_p99',
                                               'read_throughput', 'retransmits']
    assert perf[3] == 'retransmits=0c;0;;0'


def test_aoe_perf_any_retransmit_is_a_warning(san):
    """The vblade stops for 0.3 s in every 0.35 while the check runs: the
    discovery waits it out, the read's frames are resent, and the check says so
    (16 MiB need more than one 50 ms window even at full speed)."""
    pid = san.procs['vblade-e1.2'].pid
    done = threading.Event()

    def stutter():
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.3)
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
    t = threading.Thread(target=stutter)
    t.start()
    try:
        r = aoe(san, '-t', '60')
    finally:
        done.set()
        t.join()
    assert r.rc == 1, r
    assert re.fullmatch(rf'AOE_TARGET WARNING - {AOE_WHERE}: {PHASE}, \d+ frames '
                        rf'retransmitted \(outside range 0:0\)', r.status), r.status


def test_aoe_perf_throughput_range(san):
    r = aoe(san, '-w', '1000G:')
    assert r.rc == 1, r
    assert re.fullmatch(rf'AOE_TARGET WARNING - {AOE_WHERE}: {PHASE}, read throughput '
                        rf'{NUM}B/s \(outside range 1073741824000:\)', r.status), r.status


def test_aoe_perf_nothing_answers_is_critical(san):
    r = run_plugin('check_aoe_target', '--interface', storage.SAN_IF, '--shelf', 1,
                   '--slot', 3, '--perf', '--wait', '0.3',
                   netns=storage.netns_of(san, storage.MONITOR))
    assert (r.rc, r.first) == (2, 'AOE_TARGET CRITICAL - no AoE target answers for e1.3 '
                                  'on san0 within 0.3s')


def test_aoe_perf_write_refused_unless_scratch(san, tmp_path):
    inv = tmp_path / 'cluster.toml'
    inv.write_text(inventory(san, scratch=False))
    r = aoe(san, '--write', '--inventory', inv)
    assert (r.rc, r.first) == (3, f'AOE_TARGET UNKNOWN - refusing to write: target '
                                  f'lab-e1-2 is not marked scratch = true in {inv} (a '
                                  f'guest may use it)')
    inv.write_text(inventory(san, scratch=True))
    r = aoe(san, '--write', '--inventory', inv, '--bytes', '4M')
    assert r.rc == 0, r
    assert re.fullmatch(rf'AOE_TARGET OK - {AOE_WHERE}: '
                        + PHASE.replace('16', '4') + '; ' + PHASE.replace('16', '4'),
                        r.status), r.status
