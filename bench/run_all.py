#!/usr/bin/env python3
"""Every benchmark, one after the other (`make bench`).  None of them is a test:
each prints its ratios against a baseline it measured in the same run."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [['bench_checks.py'], ['bench_storage.py'], ['bench_failover.py']]

if __name__ == '__main__':
    rc = 0
    for argv in BENCHES:
        print(f'\n### {" ".join(argv)}', flush=True)
        rc |= subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
    sys.exit(rc)
