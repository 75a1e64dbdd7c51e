#!/usr/bin/env python3
"""The storage study's full measurement (not a test, and not in `make bench`:
it takes from a quarter of an hour to hours, depending on the machine).

    python bench/study_full.py [--output DIR] [any `xenha study` option]

runs `xenha study --thesis` (1, 3, 6, 9, 15, 20 clients, 300 MiB each, both
protocols, the record-size sweep) and then the knobs that explain the 2007
result one at a time: MTU 9000, vblade -b 4, the 2007 driver's retransmit
timer, both of those, a file and an O_DIRECT backing store (AoE only, beside an
AoE baseline run with the same options).  Each run writes
its own JSON (and plots); the load average is in each JSON's conditions.
The figures are CPU-bound: on a machine others use, say so beside them.
"""

import os
import subprocess
import sys
from pathlib import Path

VARIANTS = [
    [],
    ['--protocol', 'aoe', '--no-sweep'],              # the knobs' baseline
    ['--protocol', 'aoe', '--mtu', '9000', '--no-sweep'],
    ['--protocol', 'aoe', '--vblade-buffers', '4', '--no-sweep'],
    ['--protocol', 'aoe', '--aoe-retransmit', 'linux-2007', '--no-sweep'],
    ['--protocol', 'aoe', '--vblade-buffers', '4', '--aoe-retransmit', 'linux-2007',
     '--no-sweep'],
    ['--protocol', 'aoe', '--backing', 'file', '--no-sweep'],
    ['--protocol', 'aoe', '--backing', 'direct', '--no-sweep'],
]

if __name__ == '__main__':
    args = sys.argv[1:]
    out = 'study-results'
    if '--output' in args:
        out = args[args.index('--output') + 1]
    else:
        args += ['--output', out]
    Path(out).mkdir(parents=True, exist_ok=True)
    xenha = str(Path(sys.executable).with_name('xenha'))
    only = os.environ.get('STUDY_VARIANTS')          # e.g. "1,4": a subset, by index
    chosen = [VARIANTS[int(i)] for i in only.split(',')] if only else VARIANTS
    rc = 0
    for extra in chosen:
        argv = [xenha, 'study', '--thesis', *extra, *args]
        print(f'\n### {" ".join(argv[1:])}', flush=True)
        rc |= subprocess.call(argv)
    sys.exit(rc)
