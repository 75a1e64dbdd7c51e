"""The baseline every check benchmark divides by: a minimal nagiosplugin check,
run as a subprocess exactly like the checks, measured in the same run."""

import os
import statistics
import subprocess
import sys
import tempfile
import time

BASELINE = '''#!{python}
import nagiosplugin

class Baseline(nagiosplugin.Resource):
    def probe(self):
        return [nagiosplugin.Metric('value', 1, context='value')]

@nagiosplugin.guarded
def main():
    nagiosplugin.Check(Baseline(), nagiosplugin.ScalarContext('value', '5', '10')).main()

main()
'''


def baseline_script() -> str:
    fd, path = tempfile.mkstemp(prefix='xenha-baseline-', suffix='.py')
    with os.fdopen(fd, 'w') as fh:
        fh.write(BASELINE.format(python=sys.executable))
    os.chmod(path, 0o755)
    return path


def _once(argv, env):
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    return time.monotonic() - t, proc


def _summary(times, proc):
    first = proc.stdout.splitlines()[0] if proc.stdout else proc.stderr.strip()[:80]
    return statistics.median(times), proc.returncode, first


def timed(argv, runs: int, env=None):
    """Median wall time of `runs` runs, the last exit code and first line."""
    times = []
    for _ in range(runs):
        t, proc = _once(argv, env)
        times.append(t)
    return _summary(times, proc)


def timed_rounds(cases, runs: int):
    """`timed` for several (name, argv, env) cases, interleaved: each round runs
    every case once, so a change of machine load hits the baseline and the
    checks alike.  Returns {name: (median, last exit code, first line)}."""
    times = {name: [] for name, _, _ in cases}
    last = {}
    for _ in range(runs):
        for name, argv, env in cases:
            t, last[name] = _once(argv, env)
            times[name].append(t)
    return {name: _summary(times[name], last[name]) for name in times}
