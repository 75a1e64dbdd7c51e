#!/usr/bin/env python3
"""Relocating N domUs from one failed dom0 to 2 spares: engine time from the
handler call to all verified, against a one-at-a-time baseline (one domU after
the other, each verified before the next) measured in the same run.

    python bench/bench_failover.py [--sizes 1,5,20,50]

The lab's dom0s are simulated (real sshd, simulated xl) and the domUs are
diskless here: the storage logins are measured by bench_storage.py.
"""

import argparse
import subprocess
import sys
import time

from xenha_lab import cluster, dom0
from xenha.state import StateDB

BIN = f'{sys.prefix}/bin'


def one_run(n: int, mode: str, create_delay: float, autoballoon: bool = False,
            create_parallel: int | None = None) -> tuple[float, str, list]:
    """mode: 'handler' (Nagios' way in), 'engine' or 'one-at-a-time' (in-process)."""
    guests = tuple(cluster.GuestSpec(f'g{i:02d}', 'dom0-1', 256, 'none') for i in range(n))
    lab = cluster.up(hosts=(('dom0-1', 'active'), ('spare-1', 'spare'), ('spare-2', 'spare')),
                     guests=guests, storage=False, host_memory_mb=32768,
                     **({'create_parallel': create_parallel} if create_parallel else {}))
    try:
        from xenha_lab import xensim
        for spare in ('spare-1', 'spare-2'):
            xensim.update(dom0.state_dir(lab, spare), create_delay=create_delay,
                          autoballoon=autoballoon)
        dom0.power(lab, 'dom0-1', on=False)
        inv = str(cluster.inventory_path(lab))
        t0 = time.time()
        if mode != 'handler':
            from xenha.failover import Engine
            r = Engine(cluster.cluster(lab),
                       one_at_a_time=mode == 'one-at-a-time').failover('dom0-1')
            message, steps = r.message, r.steps
        else:
            subprocess.run([f'{BIN}/handle_dom0_event', '--inventory', inv, 'dom0-1',
                            'DOWN', 'HARD', '3'], check=True, capture_output=True)
            message, steps = '', []
        with StateDB(lab.dir / 'state.db') as db:
            while True:
                end = [r for r in db.journal_rows() if r['step'] == 'end'
                       and r['dom0'] == 'dom0-1']
                if end:
                    break
                time.sleep(0.01)
        elapsed = end[0]['at'] - t0
        return elapsed, message or end[0]['message'], steps
    finally:
        lab.down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sizes', default='1,5,20,50')
    ap.add_argument('--create-delays', default='0,0.5',
                    help='seconds the simulated `xl create` takes (0: instant; 0.5: a small '
                         'PV guest on real hardware; a real-Xen dom0 under QEMU/TCG takes ~11)')
    ap.add_argument('--autoballoon', action='store_true',
                    help='the spares run xl with autoballoon on: their creates queue '
                         'behind /var/lock/xl (default: off, dom0_mem set, as advised)')
    ap.add_argument('--create-parallel', type=int,
                    help="the inventory's create_parallel (default: its default)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(',')]
    from xenha.inventory import Defaults
    parallel = args.create_parallel or Defaults.create_parallel
    for delay in (float(x) for x in args.create_delays.split(',')):
        print(f'\nsimulated xl create takes {delay:g} s; 2 spares, create_parallel = '
              f'{parallel}{"" if args.create_parallel else " (the default)"}, '
              f'autoballoon {"on" if args.autoballoon else "off"}')
        table(sizes, delay, args.autoballoon, args.create_parallel)
    return 0


def table(sizes, delay, autoballoon=False, create_parallel=None):
    print('N    handler->verified   engine   one-at-a-time   speed-up (one-at-a-time / engine)')
    for n in sizes:
        runs = {m: one_run(n, m, delay, autoballoon, create_parallel)
                for m in ('handler', 'engine', 'one-at-a-time')}
        bad = [f'{m}: {msg[:70]}' for m, (_, msg, _) in runs.items()
               if not msg.startswith('dom0-1 failed over: ') or 'NOT running' in msg]
        h, e, o = (runs[m][0] for m in ('handler', 'engine', 'one-at-a-time'))
        steps = ' '.join(f'{k} {v:.2f}' for k, v in runs['engine'][2] if k != 'total')
        print(f'{n:<4} {h:10.2f} s      {e:6.2f} s   {o:8.2f} s      {o / e:5.1f}x'
              f'      engine steps (s): {steps}'
              + (f'  PROBLEM {bad}' if bad else ''), flush=True)


if __name__ == '__main__':
    sys.exit(main())
