#!/usr/bin/env python3
"""Soak: the randomized fault test for many seeds (default 1000), on several labs
at once (each its own address block; most of a seed's time is spent waiting).

Prints one line per violating seed, progress every 50 seeds, and at the end
the counts per fault kind (seeds that had it, and the doubles seen in them),
the job results, the ground-truth polls; exit 1 when any invariant broke.

    python bench/soak.py --seeds 1000 --start 1000 --labs 4
"""

import argparse
import collections
import multiprocessing
import sys
import time


def worker(seeds, queue):
    from xenha_lab import chaos
    lab = chaos.up()
    try:
        for seed in seeds:
            t = time.monotonic()
            try:
                out = chaos.run_seed(lab, seed)
                storage_moves = sum(1 for _, _, r in out.reports if r.storage_only
                                    and r.moved)
                queue.put((seed, time.monotonic() - t, [k for k, _ in out.faults],
                           out.violations, [r.result for _, _, r in out.reports],
                           out.polls, bool(out.roaming), out.fence_unreachable,
                           out.storage_fencing, storage_moves))
            except Exception as exc:  # noqa: BLE001 - a lab failure is reported, not hidden
                queue.put((seed, time.monotonic() - t, [], [f'seed crashed: {exc!r}'],
                           [], 0, False, False, False, 0))
    finally:
        lab.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, default=1000)
    p.add_argument('--start', type=int, default=1000)
    p.add_argument('--labs', type=int, default=4, help='labs (processes) at once')
    args = p.parse_args()
    seeds = list(range(args.start, args.start + args.seeds))
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(seeds[i::args.labs], queue))
             for i in range(args.labs)]
    for proc in procs:
        proc.start()
    bad, results, faults, doubles = [], collections.Counter(), collections.Counter(), \
        collections.Counter()
    polls = roaming = unreachable_policy = storage_chains = storage_moved = 0
    slow = []
    t0 = time.monotonic()
    for n in range(1, len(seeds) + 1):
        seed, took, kinds, violations, res, p_, roamed, fu, sf, smoves = queue.get()
        kinds = [k.split(':')[0] for k in kinds]
        faults.update(set(kinds))
        results.update(res)
        polls += p_
        roaming += roamed
        unreachable_policy += fu
        storage_chains += sf
        storage_moved += smoves
        slow.append(took)
        if violations:
            bad.append(seed)
            doubles.update(set(kinds))
            print(f'seed {seed}: VIOLATION {violations} after {kinds}', flush=True)
        if n % 50 == 0:
            print(f'{n} seeds, {len(bad)} with violations, {time.monotonic() - t0:.0f}s',
                  flush=True)
    for proc in procs:
        proc.join()
    slow.sort()
    print(f'soak: {args.seeds} seeds ({args.start}..{args.start + args.seeds - 1}) on '
          f'{args.labs} labs, {len(bad)} with violations, {time.monotonic() - t0:.0f}s; '
          f'a seed took {slow[len(slow) // 2]:.1f}s median, {slow[-1]:.1f}s at most')
    print(f'ground truth polled {polls} times during the jobs; {roaming} seeds with '
          f'guests away from home; {unreachable_policy} with fence_unreachable = true; '
          f'{storage_chains} with [agent, storage] chains, in which {storage_moved} '
          'failovers moved guests fenced at the storage only')
    print('per fault kind: seeds with it / seeds with a violation')
    for kind, count in sorted(faults.items()):
        print(f'  {kind:<18} {count:5d} / {doubles[kind]}')
    print(f'job results: {dict(results)}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
