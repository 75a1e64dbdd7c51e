#!/usr/bin/env python3
"""Wall time per run of each storage check mode, against a lab, as a ratio to
a minimal nagiosplugin check measured in the same run.

    .venv/bin/python bench/bench_storage.py [-n RUNS]

Also times libiscsi's command-line tools doing the portal probe's work
(iscsi-ls + iscsi-inq + iscsi-readcapacity16), the road not taken.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / 'tests'), str(REPO / 'bench')]

from baseline import baseline_script, timed  # noqa: E402  (the shared baseline)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('-n', '--runs', type=int, default=10)
    runs = ap.parse_args().runs

    from storage_fixtures import plugin_argv, ssh
    from xenha_lab import dom0, storage
    from xenha_lab.core import Lab
    from xenha.runner import SSHRunner
    from xenha.storage import iscsi

    lab = Lab()
    try:
        for h in ('dom0-1', 'dom0-2'):
            dom0.add_host(lab, h)
        st = storage.up(lab)
        d1 = f'{storage.IQN}:disk1'
        mon = storage.initiator_name('monitor')
        portal = st['portal']
        with SSHRunner(lab.info['hosts']['dom0-1']['address'], dom0.ssh_options(lab)) as h:
            for argv in iscsi.login_commands(iscsi.Portal(portal), d1):
                h.run(argv)
            h.run(['aoe-discover'])
        ns = ['ip', 'netns', 'exec', storage.netns_of(lab, storage.MONITOR)]
        baseline = [sys.executable, baseline_script()]
        iscsi_cmd = plugin_argv('check_iscsi_target')
        aoe_cmd = plugin_argv('check_aoe_target')
        url = f'iscsi://{portal}:3260'
        cases = [
            ('baseline (minimal nagiosplugin check)', baseline),
            ('baseline in a netns (ip netns exec)', ns + baseline),
            ('iscsi portal (login, TUR, INQUIRY, RC16)',
             iscsi_cmd + ['-H', portal, '--target', d1, '--initiator-name', mon]),
            ('iscsi portal --via dom0 (SSH + iscsiadm discovery)',
             iscsi_cmd + ['-H', portal, '--target', d1, '--via',
                          lab.info['hosts']['dom0-1']['address'], *ssh(lab)]),
            ('iscsi --initiator -H dom0 (SSH + iscsiadm -m session)',
             iscsi_cmd + ['--initiator', *ssh(lab, 'dom0-1'), '--target', d1]),
            ('iscsi --server (tgtadm --op show + stat)',
             iscsi_cmd + ['--server', '--control-port', str(st['control'])]),
            ('aoe query config (netns)',
             ns + aoe_cmd + ['--interface', 'san0', '--shelf', '1', '--slot', '2']),
            ('aoe query config --settle 0 (netns)',
             ns + aoe_cmd + ['--interface', 'san0', '--shelf', '1', '--slot', '2',
                             '--settle', '0']),
            ('aoe --identify (netns)',
             ns + aoe_cmd + ['--interface', 'san0', '--shelf', '1', '--slot', '2',
                             '--identify']),
            ('aoe --list (netns)', ns + aoe_cmd + ['--interface', 'san0', '--list']),
            ('aoe initiator -H dom0 (SSH + aoe-stat)',
             aoe_cmd + [*ssh(lab, 'dom0-1'), '--shelf', '1', '--slot', '2']),
        ]
        print(f'{runs} runs each, median wall time; lab block {lab.block}')
        results = {}
        for label, argv in cases:
            results[label] = timed(argv, runs)
        t0 = results[cases[0][0]][0]
        t0ns = results[cases[1][0]][0]
        print(f'{"mode":58} {"median":>8} {"ratio":>6}  rc  first line')
        for label, _ in cases:
            t, rc, first = results[label]
            ref = t0ns if '(netns)' in label else t0
            print(f'{label:58} {t * 1000:7.1f}ms {t / ref:5.2f}x  {rc}   {first[:70]}')
        # the road not taken: libiscsi's tools, one fork and one login each
        tools = [['iscsi-ls', '-i', mon, url + '/'],
                 ['iscsi-inq', '-i', mon, f'{url}/{d1}/1'],
                 ['iscsi-readcapacity16', '-i', mon, f'{url}/{d1}/1']]
        total = sum(timed(argv, runs)[0] for argv in tools)
        t_portal = results[cases[2][0]][0]
        print(f'{"libiscsi tools for the same probe (3 processes)":58} '
              f'{total * 1000:7.1f}ms {total / t0:5.2f}x  (portal mode: '
              f'{t_portal * 1000:.1f}ms)')
    finally:
        lab.down()


if __name__ == '__main__':
    main()
