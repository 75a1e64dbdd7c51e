"""`xenha study`: the quick mode end to end on the lab's real tgtd and vblades
(JSON, table, plots, the lab gone afterwards), the refusal to touch a disk
not marked scratch, and the per-run arithmetic on known inputs."""

import json
import os
import subprocess
import sys

from conftest import command, run
from xenha.study import measure
from xenha.study.run import summarize


def expected_header(mode='quick', size='4M'):
    return (f'xenha study ({mode}): lab, {size} per client, records 64K x1, MTU 1500, '
            f'vblade -b 16, AoE retransmits adaptive, backing tmpfs, target on CPU 0, '
            f'clients on 1; {os.cpu_count()} x {measure.cpu_model()}')


def test_quick_mode_both_protocols_json_table_plots(tmp_path):
    before = set(os.listdir('/dev/shm'))
    r = run('xenha', 'study', '--quick', '--output', tmp_path, timeout=120)
    assert r.rc == 0, r.out[-3000:] + r.err[-3000:]
    lines = r.out.splitlines()
    assert lines[0] == expected_header()
    assert lines[1].startswith('load average at the start: ')
    rows = [line for line in lines if line.split()[:1] in (['iscsi'], ['aoe'])
            and line.split()[1].isdigit()]
    assert [line.split()[:2] for line in rows] == [['iscsi', '1'], ['iscsi', '3'],
                                                   ['aoe', '1'], ['aoe', '3']]
    doc_path = tmp_path / next(f for f in os.listdir(tmp_path) if f.endswith('.json'))
    assert f'results: {doc_path}' in lines
    doc = json.loads(doc_path.read_text())
    assert doc['complete'] is True
    c = doc['conditions']
    assert (c['mode'], c['size_per_client'], c['mtu'], c['vblade_buffers'],
            c['aoe_policy'], c['backing'], c['pinning']) == \
        ('quick', 4 << 20, 1500, 16, 'adaptive', 'tmpfs', {'target': [0], 'clients': [1]})
    assert len(c['load_average_start']) == len(c['load_average_end']) == 3
    assert [(x['protocol'], x['clients']) for x in doc['runs']] == \
        [('iscsi', 1), ('iscsi', 3), ('aoe', 1), ('aoe', 3)]
    for run_ in doc['runs']:
        n = run_['clients']
        assert len(run_['per_client']) == n
        assert run_['completion']['unfinished'] == 0
        for phase in ('write', 'read'):
            assert run_[phase]['bytes'] == n * (4 << 20)
            assert run_[phase]['mismatches'] == 0
            assert run_[phase]['aggregate_mbps'] > 0
        t = run_['target']
        assert t['cpu_seconds'] > 0 and t['cpu_seconds_per_gb'] > 0
        assert 1 <= t['busy_threads'] <= t['threads']
        assert t['socket_drops'] is not None and t['link_drops'] is not None
        if run_['protocol'] == 'aoe':
            assert t['threads'] == 3           # a single-threaded vblade per disk
    assert [(s['protocol'], s['record']) for s in doc['sweep']] == \
        [('iscsi', 4096), ('iscsi', 65536), ('aoe', 4096), ('aoe', 65536)]
    assert all(s['write_mbps'] > 0 and s['read_mbps'] > 0 for s in doc['sweep'])
    pngs = sorted(f for f in os.listdir(tmp_path) if f.endswith('.png'))
    assert pngs == [doc_path.stem + '-sweep.png', doc_path.stem + '.png']
    for png in pngs:
        assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        assert f'plot: {tmp_path / png}' in lines
    assert r.seconds < 60
    assert not [d for d in set(os.listdir('/dev/shm')) - before
                if d.startswith('xenha-study-')]


def test_without_matplotlib_it_says_how_to_get_plots(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from xenha.cli import main\n"
            f"sys.exit(main(['study', '--quick', '--protocol', 'iscsi', '--clients', '1', "
            f"'--no-sweep', '--size', '1M', '--output', {str(tmp_path)!r}]))")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == ("no plots: plots need matplotlib: "
                                         "pip install 'xenha[study]'")
    assert [f for f in os.listdir(tmp_path) if f.endswith('.json')]
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.png')]


INVENTORY = '''
[dom0.dom0-1]
address = "127.0.0.1"
role = "active"
fencing = "none"

[storage.san]
address = "127.0.0.5"

[target.web1-disk]
kind = "iscsi"
storage = "san"
portal = "127.0.0.5:3260"
iqn = "iqn.2026-01.lab:web1"
lun = 1

[target.spare-disk]
kind = "iscsi"
storage = "san"
portal = "127.0.0.5:3260"
iqn = "iqn.2026-01.lab:spare"
lun = 1
scratch = true

[domu.web1]
config = "/etc/xen/web1.cfg"
memory = "256M"
home = "dom0-1"
targets = ["web1-disk", "spare-disk"]
'''


def test_a_guests_disk_is_refused(tmp_path):
    inv = tmp_path / 'cluster.toml'
    inv.write_text(INVENTORY)
    r = run('xenha', 'study', '--quick', '--inventory', inv, '--target', 'web1-disk')
    assert (r.rc, r.out, r.err) == (
        2, '', f'xenha study: refusing to use target web1-disk (disk of web1): it is not '
               f'marked scratch = true in {inv}, and the study writes over its disk\n')
    # marked scratch, but a guest lists it: refused too
    r = run('xenha', 'study', '--quick', '--inventory', inv, '--target', 'spare-disk')
    assert (r.rc, r.err) == (2, f'xenha study: refusing to use target spare-disk: marked '
                                f'scratch but listed as a disk of web1 in {inv}\n')
    r = run('xenha', 'study', '--quick', '--inventory', inv, '--target', 'nope')
    assert (r.rc, r.err) == (2, f"xenha study: no target 'nope' in {inv}\n")
    assert command('xenha')


def _phase(start, seconds, nbytes, p50=0.001, p99=0.002, stall=0.01, rex=0):
    return {'bytes': nbytes, 'seconds': seconds, 'start': start, 'end': start + seconds,
            'mbps': round(nbytes / seconds / 1e6, 3), 'requests': 1, 'latency_p50': p50,
            'latency_p99': p99, 'longest_stall': stall, 'mismatches': 0,
            'retransmits': rex, 'completed': True}


def test_summarize_arithmetic():
    mb = 10 ** 6
    results = [{'write': _phase(100.0, 2.0, 20 * mb), 'read': _phase(102.0, 1.0, 20 * mb)},
               {'write': _phase(100.5, 4.0, 20 * mb, rex=3),
                'read': _phase(104.5, 2.0, 20 * mb, p99=0.5)}]
    run_ = summarize('aoe', results, {'cpu_seconds': 0.8, 'busy_threads': 2, 'threads': 2},
                     {'socket_drops': 5, 'link_drops': 0})
    assert run_['write']['aggregate_mbps'] == round(40 / 4.5, 3)       # 40 MB from 100.0 to 104.5
    assert run_['read']['aggregate_mbps'] == round(40 / 4.5, 3)  # 102.0 to 106.5
    assert run_['write']['mean_client_mbps'] == 7.5           # (10 + 5) / 2
    assert run_['write']['retransmits'] == 3
    assert run_['read']['latency_p99_max'] == 0.5
    assert run_['completion'] == {'seconds': [3.0, 6.0], 'min': 3.0, 'max': 6.0,
                                  'median': 6.0, 'spread': 3.0, 'unfinished': 0}
    assert run_['target'] == {'cpu_seconds': 0.8, 'busy_threads': 2, 'threads': 2,
                              'cpu_seconds_per_gb': 10.0, 'socket_drops': 5,
                              'link_drops': 0}


def test_a_site_study_on_scratch_targets(lab, tmp_path):
    """Site mode end to end: two scratch targets of a real tgtd named in an
    inventory (the lab's here), no target CPU (another machine's), bytes
    read back equal."""
    from xenha_lab import study as lab_study
    tg = lab_study.iscsi_up(lab, 2, 4 << 20, 'tmpfs')
    targets = ''.join(f'''
[target.scratch-{k}]
kind = "iscsi"
storage = "san"
portal = "{tg['portal']}:{tg['port']}"
iqn = "{iqn}"
lun = 1
scratch = true
''' for k, iqn in enumerate(tg['targets']))
    inv = tmp_path / 'cluster.toml'
    inv.write_text(INVENTORY.split('[target.web1-disk]')[0].replace('127.0.0.5', tg['portal'])
                   + targets)
    r = run('xenha', 'study', '--quick', '--inventory', inv, '--target', 'scratch-0',
            '--target', 'scratch-1', '--clients', '1,2', '--size', '1M', '--no-sweep',
            '--no-plots', '--output', tmp_path / 'out', timeout=120)
    assert r.rc == 0, r.out + r.err
    assert r.out.splitlines()[0] == (
        f'xenha study (quick): site, 1M per client, records 64K x1, AoE retransmits '
        f'adaptive, no pinning; {os.cpu_count()} x {measure.cpu_model()}')
    doc = json.loads(next((tmp_path / 'out').glob('*.json')).read_text())
    assert [(x['protocol'], x['clients']) for x in doc['runs']] == [('iscsi', 1),
                                                                  ('iscsi', 2)]
    for x in doc['runs']:
        assert x['read']['mismatches'] == 0
        assert x['read']['bytes'] == x['clients'] << 20
        assert x['target']['cpu_seconds'] == 0 and x['target']['socket_drops'] is None
