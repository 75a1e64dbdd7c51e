#!/usr/bin/env python3
"""The failover with a dead BMC (storage fencing) against one whose BMC answers
(the power fence), measured in the same run, alternating, on the same lab kind.

    python bench/bench_dead_bmc.py [--runs 3]

Each run is a fresh lab cluster with the chain [agent, storage], the real
tgtd and vblade, ipmi_sim BMCs with the real fence_ipmilan.  Two failed
dom0s: dom0-1 (guests on iSCSI) and dom0-2 (guests on AoE).

  power     the dom0 loses power, its BMC answers: the agent fences (baseline)
  dead-bmc  the dom0 is cut off (sshd gone, its guests go on) and its BMC is
            dead: the agent fails, the storage method revokes the dom0 on
            every disk of its guests and the failover goes through

Prints per mode and failed dom0 the engine's total and its fence step
(median of the runs), and the ratio dead-bmc / power.
"""

import argparse
import statistics
import sys
import time


def one_run(mode: str, victim: str) -> dict:
    from xenha.failover import Engine
    from xenha_lab import bmc, cluster, dom0
    lab = cluster.up(fencing='agent+storage')
    try:
        if mode == 'power':
            dom0.power(lab, victim, on=False)
        else:
            dom0.partition(lab, victim)
            bmc.stop(lab, victim)
        e = Engine(cluster.cluster(lab), recheck_delay=0.2)
        t0 = time.monotonic()
        r = e.failover(victim)
        total = time.monotonic() - t0
        e.close()
        e.db.close()
        steps = dict(r.steps)
        if r.result != 'ok':
            raise SystemExit(f'{mode} {victim}: {r.result}: {r.message}')
        return {'total': total, 'fence': steps.get('fence', 0.0), 'message': r.message}
    finally:
        lab.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=int, default=3, help='runs per mode and dom0')
    args = p.parse_args()
    results: dict = {}
    for i in range(args.runs):
        for victim in ('dom0-1', 'dom0-2'):
            # alternate which mode goes first: the machine's load drifts
            modes = ('power', 'dead-bmc') if i % 2 == 0 else ('dead-bmc', 'power')
            for mode in modes:
                out = one_run(mode, victim)
                results.setdefault((mode, victim), []).append(out)
                print(f'run {i + 1} {mode:<8} {victim}: total {out["total"]:.2f}s, '
                      f'fence {out["fence"]:.2f}s', flush=True)
    print()
    print(f'{"":9} {"failed dom0":<22} {"total (median)":>15} {"fence step":>11}')
    for victim, kind in (('dom0-1', 'iSCSI guests'), ('dom0-2', 'AoE guests')):
        med = {}
        for mode in ('power', 'dead-bmc'):
            rs = results[(mode, victim)]
            med[mode] = (statistics.median(r['total'] for r in rs),
                         statistics.median(r['fence'] for r in rs))
            print(f'{mode:<9} {victim + " (" + kind + ")":<22} {med[mode][0]:14.2f}s '
                  f'{med[mode][1]:10.2f}s')
        print(f'{"ratio":<9} {"dead-bmc / power":<22} '
              f'{med["dead-bmc"][0] / med["power"][0]:14.2f}x '
              f'{med["dead-bmc"][1] / med["power"][1]:10.2f}x')
    print(f'last dead-bmc result: {results[("dead-bmc", "dom0-1")][-1]["message"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
