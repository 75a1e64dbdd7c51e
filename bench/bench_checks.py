#!/usr/bin/env python3
"""Wall time per run of check_xen_host and check_xen_domu, local, over SSH and
from the cache, as ratios to a minimal nagiosplugin check measured in the same
run; and whether paramiko was imported (it must not be, locally or cached).

    python bench/bench_checks.py [-n RUNS]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import baseline_script, timed_rounds  # noqa: E402

BIN = Path(sys.executable).parent


def imports_paramiko(argv, env) -> bool:
    import subprocess
    env = dict(env or os.environ, PYTHONVERBOSE='1')
    err = subprocess.run(argv, capture_output=True, text=True, env=env).stderr
    return "import 'paramiko'" in err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('-n', '--runs', type=int, default=20)
    runs = ap.parse_args().runs
    import compileall
    import xenha
    # a site's pip install byte-compiles; a checkout under PYTHONDONTWRITEBYTECODE would not
    compileall.compile_dir(os.path.dirname(xenha.__file__), quiet=1)
    from xenha_lab import dom0, xensim
    from xenha_lab.core import Lab
    lab = Lab()
    try:
        for h in ('dom0-1', 'dom0-2'):
            dom0.add_host(lab, h)
        for i in range(10):
            xensim.add_domain(dom0.state_dir(lab, 'dom0-1'), f'guest{i}', 256)
        opts = dom0.ssh_options(lab)
        db = str(lab.dir / 'state.db')
        ssh = ['-H', lab.info['hosts']['dom0-1']['address'], '-i', opts.identity,
               '--known-hosts', opts.known_hosts, '--state-db', db]
        local_env = dom0.env_for(lab, 'dom0-1')
        host, domu = str(BIN / 'check_xen_host'), str(BIN / 'check_xen_domu')
        base = baseline_script()
        cases = [
            ('minimal nagiosplugin check (baseline)', [sys.executable, base], None),
            ('check_xen_host local', [host, '--state-db', db], local_env),
            ('check_xen_domu local', [domu, '--domain', 'guest3'], local_env),
            ('check_xen_host over SSH', [host, *ssh], None),
            ('check_xen_domu over SSH', [domu, *ssh, '--domain', 'guest3'], None),
            ('check_xen_domu cached (--max-age)',
             [domu, *ssh, '--domain', 'guest3', '--max-age', '3600'], None),
        ]
        xl = str(Path(lab.info['hosts']['dom0-1']['bin']) / 'xl')
        cases += [('toolstack alone: xl list', [xl, 'list'], local_env),
                  ('toolstack alone: xl info', [xl, 'info'], local_env),
                  # as check_xen_host runs them: side by side (sh adds ~1 ms)
                  ('toolstack alone: list + info together',
                   ['sh', '-c', f'{xl} list >/dev/null & {xl} info >/dev/null; wait'],
                   local_env)]
        results = timed_rounds(cases, runs)
        b = results[cases[0][0]][0]
        print(f'{runs} rounds (every case once a round), median wall time; '
              f'ratio = time / baseline')
        for name, argv, env in cases:
            t, rc, first = results[name]
            para = imports_paramiko(argv, env)
            print(f'  {name:<40} {t * 1000:7.1f} ms  {t / b:5.2f}x  rc={rc}  '
                  f'paramiko={"yes" if para else "no"}  {first.split(" | ")[0][:60]}')
        xl_list = results['toolstack alone: xl list'][0]
        xl_info = results['toolstack alone: xl info'][0]
        both = results['toolstack alone: list + info together'][0]
        for name, toolstack, how in (
                ('check_xen_host local', both, 'list and info side by side'),
                ('check_xen_domu local', xl_list, 'xl list')):
            own = results[name][0] - toolstack
            print(f'  {name} without the (simulated) toolstack\'s own time ({how}): '
                  f'{own * 1000:.1f} ms = {own / b:.2f}x the baseline')
        ssh_t = results['check_xen_domu over SSH'][0]
        cached_t = results['check_xen_domu cached (--max-age)'][0]
        print(f'  cached domU check vs its SSH path: {cached_t / ssh_t:.2f}x '
              f'({ssh_t / cached_t:.1f} times faster)')
        os.unlink(base)
    finally:
        lab.down()
    return 0


if __name__ == '__main__':
    sys.exit(main())
