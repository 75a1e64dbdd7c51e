#!/usr/bin/env python3
"""Soak: the randomized fault test for many seeds (default 500).

Prints one line per violating seed and a closing count; exit 1 when any
invariant broke.  `python bench/soak.py --seeds 500 --start 1000`
"""

import argparse
import collections
import sys
import time

from xenha.lab import chaos


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, default=500)
    p.add_argument('--start', type=int, default=1000)
    args = p.parse_args()
    lab = chaos.up()
    bad, results, faults = [], collections.Counter(), collections.Counter()
    t0 = time.monotonic()
    try:
        for seed in range(args.start, args.start + args.seeds):
            out = chaos.run_seed(lab, seed)
            faults.update(k for k, _ in out.faults)
            results.update(r.result for _, _, r in out.reports)
            if out.violations:
                bad.append(out)
                print(f'seed {seed}: VIOLATION {out.violations} after {out.faults}', flush=True)
            if (seed - args.start + 1) % 50 == 0:
                print(f'{seed - args.start + 1} seeds, {len(bad)} violations, '
                      f'{time.monotonic() - t0:.0f}s', flush=True)
    finally:
        lab.down()
    print(f'soak: {args.seeds} seeds ({args.start}..{args.start + args.seeds - 1}), '
          f'{len(bad)} with violations, {time.monotonic() - t0:.0f}s')
    print(f'faults injected: {dict(faults)}')
    print(f'job results: {dict(results)}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
