#!/usr/bin/env python3
"""From a dom0's failure to every moved guest OK in the lab's real Nagios.

The lab's Nagios runs the rendered objects with a real site's intervals (host
check every 10 s, retry every 5 s, 3 attempts).  Each run fails dom0-1 at a
random point of its check cycle and measures until Nagios shows each of its
guests OK on another dom0, then heals the lab and moves the guests home.

  power   BMC power-off: the fast path should fire (its BMC says off at the
          first failed check); median and p95 against the issue's targets
          (median < 10 s, p95 < 15 s)
  hung    SIGSTOP of its sshd (BMC says on): the HARD path; also checks that
          nothing was fenced before Nagios' HARD state
  slow    every dom0 answers slowly (its sshd stalls up to the host check's
          -t) for a while: no failover may start anything or fence anyone

    python bench/bench_detection.py --power 20 --hung 5 --slow 60 [--xen qemu]

The baseline measured in the same run is the HARD path's own figure: the
power runs are also reported as a ratio against the hung runs' median.
"""

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from xenha.lab import cluster, dom0, nagios
from xenha.state import StateDB

VICTIM = 'dom0-1'


def status(lab, key):
    return nagios.status(lab).get(key, {})


def wait(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f'timed out waiting for {what}')


def green(lab):
    st = nagios.status(lab)
    want = [v for k, v in st.items() if (k[0] == 'service' and k[2] != 'failover')
            or (k[0] == 'host' and k[1] in lab.info['hosts'])]
    return want and all(v.get('has_been_checked') == '1' and v['current_state'] == '0'
                        for v in want)


def power_off(lab, host):
    b = lab.info['bmc'][host]
    env = dict(os.environ, IPMITOOL_PASSWORD=Path(b['password_file']).read_text().strip())
    subprocess.run(['ipmitool', '-I', 'lanplus', '-H', b['address'], '-p', str(b['port']),
                    '-U', b['username'], '-E', '-C', '3', 'chassis', 'power', 'off'],
                   check=True, env=env, capture_output=True)


def recovered(lab, guests, since, victim):
    for g in guests:
        s = status(lab, ('service', g, 'xen domain'))
        out = s.get('plugin_output', '')
        if not (s.get('current_state') == '0' and int(s.get('last_check', 0)) >= since
                and ' on ' in out and f' on {victim}' not in out):
            return False
    return True


def journal_since(lab, since):
    with StateDB(lab.dir / 'state.db') as db:
        return [r for r in db.journal_rows(since=since) if r['job'] != 'lab-setup']


def heal(lab, c, guests):
    """dom0-1 powered and answering again, its guests back home, Nagios green."""
    from xenha.failover import Engine
    from xenha.lab import xensim
    dom0.resume(lab, VICTIM)
    dom0.power(lab, VICTIM, on=True)
    e = Engine(c)
    e.job = 'lab-setup'
    try:
        for host in lab.info['hosts']:
            if host != VICTIM:
                for g in guests:
                    try:
                        xensim.destroy(dom0.state_dir(lab, host), g)
                    except (LookupError, OSError):
                        pass
        targets = {t.name: t for g in guests for t in c.targets_of(g)}
        bad = {k: v for k, v in e.attach(c.dom0s[VICTIM], list(targets.values())).items()
               if v}
        if bad:
            raise RuntimeError(f'{VICTIM} cannot attach: {bad}')
        out = e.start_on(c.dom0s[VICTIM], [c.domus[g] for g in guests])
        if any(out.values()):
            raise RuntimeError(f'cannot start at home: {out}')
        e.views(list(c.dom0s.values()))
    finally:
        e.close()
        e.db.close()
    wait('Nagios all green again', lambda: green(lab), 120)


def one_run(lab, c, guests, how, rng):
    time.sleep(rng.uniform(0, c.timing.dom0_check))     # a random point of the cycle
    t0 = time.time()
    off_at = []

    def watch_power():
        while not off_at and time.time() - t0 < 180:
            if not dom0.powered(lab, VICTIM):
                off_at.append(time.time())
            time.sleep(0.05)
    watcher = threading.Thread(target=watch_power, daemon=True)
    if how == 'power':
        power_off(lab, VICTIM)
    else:
        watcher.start()
        dom0.hang(lab, VICTIM)
    wait('the guests OK elsewhere in Nagios', lambda: recovered(lab, guests, t0, VICTIM), 180)
    took = time.time() - t0
    rows = journal_since(lab, t0)
    ends = [r['message'] for r in rows if r['step'] == 'end' and r['dom0'] == VICTIM]
    path = 'fast' if any('(fast path: ' in m for m in ends) else 'hard'
    log = nagios.log_lines(lab)
    hard = [int(re.match(r'\[(\d+)\]', l)[1]) for l in log
            if f'HOST ALERT: {VICTIM};DOWN;HARD;' in l and int(re.match(r'\[(\d+)\]', l)[1])
            >= int(t0)]
    first_create = min((r['at'] for r in rows if r['step'] == 'create'), default=None)
    start = min((r['at'] for r in rows if r['step'] == 'start' and r['dom0'] == VICTIM),
                default=None)
    early = bool(how == 'hung' and off_at and hard and off_at[0] < hard[0])
    return dict(took=took, path=path, hard=(hard[0] - t0) if hard else None,
                job_start=(start - t0) if start else None,
                first_create=(first_create - t0) if first_create else None,
                fenced_before_hard=early)


def slow_period(lab, c, seconds):
    """Every dom0's sshd stalls for a while, again and again, never longer than
    the host check's -t: slow, not dead.  Returns (failovers started, fenced)."""
    t0 = time.time()
    stall = c.timing.dom0_check_timeout * 0.9
    stop = threading.Event()

    def staller(host):
        import signal
        pid = lab.procs[f'sshd-{host}'].pid
        while not stop.is_set():
            os.killpg(pid, signal.SIGSTOP)
            stop.wait(stall)
            os.killpg(pid, signal.SIGCONT)
            stop.wait(0.3)
    threads = [threading.Thread(target=staller, args=(h,), daemon=True)
               for h in lab.info['hosts']]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    rows = journal_since(lab, t0)
    started = [r for r in rows if r['step'] == 'start' and 'failover' in r['message']]
    fenced = [r for r in rows if r['step'] == 'fence' and 'confirmed' in r['message']]
    refused = [r for r in rows if r['step'] == 'end' and 'not failing over' in r['message']]
    unpowered = [h for h in lab.info['hosts'] if not dom0.powered(lab, h)]
    return len(started), len(refused), len(fenced), unpowered


def quantiles(xs):
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return statistics.median(xs), p95, xs[0], xs[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--power', type=int, default=20, help='power-off runs')
    ap.add_argument('--hung', type=int, default=5, help='hung-dom0 runs')
    ap.add_argument('--slow', type=float, default=60, help='seconds of slow dom0s (0: none)')
    ap.add_argument('--xen', choices=('sim', 'qemu'), default='sim')
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    load = os.getloadavg()[0]
    lab = cluster.up(nagios=True, xen=args.xen, dedupe_window=1)
    results = {'power': [], 'hung': []}
    try:
        c = cluster.cluster(lab)
        guests = [u.name for u in c.domus_homed_on(VICTIM)]
        t = c.timing
        print(f'lab: {args.xen} dom0s, real Nagios 4 (host check every {t.dom0_check} s, '
              f'retry {t.dom0_retry} s, {t.dom0_attempts} attempts, -t '
              f'{t.dom0_check_timeout}); {VICTIM} runs {", ".join(guests)}; load average '
              f'{load:.1f} at the start', flush=True)
        wait('Nagios all green', lambda: green(lab), 180)
        for how, n in (('power', args.power), ('hung', args.hung)):
            for i in range(n):
                r = one_run(lab, c, guests, how, rng)
                results[how].append(r)
                print(f'{how:<5} run {i + 1:2d}: {r["took"]:5.1f} s to every guest OK, '
                      f'{r["path"]} path, job started at {r["job_start"]:.1f} s, first '
                      f'create at {r["first_create"]:.1f} s'
                      + (f', HARD at {r["hard"]:.1f} s' if r['hard'] is not None else '')
                      + (' FENCED BEFORE HARD' if r['fenced_before_hard'] else ''),
                      flush=True)
                heal(lab, c, guests)
        slow = slow_period(lab, c, args.slow) if args.slow else None
    finally:
        lab.down()
    print()
    for how, rs in results.items():
        if not rs:
            continue
        med, p95, lo, hi = quantiles([r['took'] for r in rs])
        paths = {p: sum(r['path'] == p for r in rs) for p in ('fast', 'hard')}
        dmed = statistics.median(r['first_create'] for r in rs)
        print(f'{how}: {len(rs)} runs, power-off/hang to every guest OK in Nagios: median '
              f'{med:.1f} s, p95 {p95:.1f} s (min {lo:.1f}, max {hi:.1f}); paths {paths}; '
              f'first create at {dmed:.1f} s (median)'
              + (f'; fenced before HARD: {sum(r["fenced_before_hard"] for r in rs)}'
                 if how == 'hung' else ''))
    if results['power'] and results['hung']:
        ratio = statistics.median(r['took'] for r in results['hung']) / \
            statistics.median(r['took'] for r in results['power'])
        print(f'the fast path is {ratio:.1f}x faster than the HARD path (medians, same run)')
    if slow:
        started, refused, fenced, unpowered = slow
        print(f'slow dom0s for {args.slow:g} s: {started} failover jobs started, {refused} '
              f'refused (the dom0 answered), {fenced} fences, hosts without power: '
              f'{unpowered or "none"}')
    print(f'load average at the end: {os.getloadavg()[0]:.1f}')
    bad = (results['power'] and quantiles([r['took'] for r in results['power']])[0] >= 10) \
        or any(r['fenced_before_hard'] for r in results['hung']) \
        or (slow and (slow[2] or slow[3]))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
