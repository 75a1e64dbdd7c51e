"""Run the study: for each protocol and each client count N, N client
processes (one disk each) wait at a start barrier, then each writes and
reads S MiB; the target's CPU, threads and drops are read around the run.

The targets are the lab's (`xenha_lab.study`: a real tgtd, real vblades,
torn down at the end, also on failure) or a site's targets named in the
inventory and marked `scratch = true` (`Site`): the study writes over the
whole disk it is given, so it refuses any other.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass

from xenha.study import measure
from xenha.units import MiB

THESIS_CLIENTS = (1, 3, 6, 9, 15, 20)
SWEEP_RECORDS = (4096, 16384, 65536, 262144, 1048576)


class StudyError(Exception):
    """The study cannot run as asked; the message says why."""


@dataclass(frozen=True)
class Options:
    mode: str = 'custom'                      # quick | thesis | custom
    clients: tuple[int, ...] = THESIS_CLIENTS
    size: int = 300 * MiB                     # per client, written then read
    record: int = 65536
    depth: int = 1                            # requests open per client
    protocols: tuple[str, ...] = ('iscsi', 'aoe')
    mtu: int = 1500
    bufcnt: int = 16
    policy: str = 'adaptive'
    backing: str = 'tmpfs'
    pin: bool = True
    sweep: tuple[int, ...] = SWEEP_RECORDS
    sweep_size: int = 64 * MiB
    phase_limit: float = 600.0                # an AoE phase stops unfinished after this
    output: str = '.'
    plots: bool = True

    @classmethod
    def quick(cls, **kw) -> 'Options':
        base = dict(mode='quick', clients=(1, 3), size=4 * MiB, sweep=(4096, 65536),
                    sweep_size=2 * MiB, phase_limit=60.0)
        base.update(kw)
        return cls(**base)

    @classmethod
    def thesis(cls, **kw) -> 'Options':
        base = dict(mode='thesis', clients=THESIS_CLIENTS, size=300 * MiB)
        base.update(kw)
        return cls(**base)


@dataclass
class Progress:
    """What the terminal shows while a run goes on."""
    say: callable = print
    tty: bool = False
    _last: float = 0.0
    _width: int = 0

    def update(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.say('\r' + text.ljust(self._width), end='', flush=True)
            self._width = len(text)
        elif now - self._last >= 5.0:         # a log: a line every 5 s at most
            self.say(text, flush=True)
            self._last = now

    def done(self) -> None:
        if self.tty and self._width:
            self.say('\r' + ' ' * self._width + '\r', end='', flush=True)
            self._width = 0


# -- the clients -------------------------------------------------------------------------
def _worker_argv(netns: str | None) -> list[str]:
    argv = [sys.executable, '-m', 'xenha.study.worker']
    return ['ip', 'netns', 'exec', netns, *argv] if netns else argv


def run_clients(jobs: list[dict], netns: str | None, progress: Progress, label: str,
                snapshot, ready_timeout: float = 60.0) -> tuple[list[dict], dict, dict]:
    """Start one worker per job, wait until all are ready, release them at
    once, follow their progress; (results, before, after) with the target
    snapshots taken at the barrier and at the end."""
    procs = []
    env = dict(os.environ)
    try:
        for job in jobs:
            p = subprocess.Popen(_worker_argv(netns), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
            p.stdin.write(json.dumps(job) + '\n')
            p.stdin.flush()
            procs.append(p)
        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            sel.register(p.stdout, selectors.EVENT_READ, i)
        ready = set()
        deadline = time.monotonic() + ready_timeout
        while len(ready) < len(procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise StudyError(f'{label}: {len(procs) - len(ready)} clients not ready '
                                 f'after {ready_timeout:g}s')
            for key, _ in sel.select(left):
                msg = _message(procs[key.data], key.fileobj)
                if 'error' in msg:
                    raise StudyError(f'{label}: client {key.data}: {msg["error"]}')
                if 'ready' in msg:
                    ready.add(key.data)
        before = snapshot()
        for p in procs:                       # the barrier: every client is logged in
            p.stdin.write('go\n')
            p.stdin.flush()
        total = sum(2 * j['size'] for j in jobs)
        done = [0] * len(procs)
        results: list[dict | None] = [None] * len(procs)
        started = time.monotonic()
        while any(r is None for r in results):
            for key, _ in sel.select(1.0):
                i = key.data
                msg = _message(procs[i], key.fileobj)
                if 'progress' in msg:
                    done[i] = msg['progress']
                elif 'result' in msg:
                    results[i] = msg['result']
                    done[i] = sum(ph['bytes'] for ph in msg['result'].values())
                    sel.unregister(key.fileobj)
                elif 'error' in msg:
                    raise StudyError(f'{label}: client {i}: {msg["error"]}')
            moved = sum(done)
            secs = time.monotonic() - started
            progress.update(f'  running {label}: {moved / MiB:.0f}/{total / MiB:.0f} MiB '
                            f'({100 * moved / total:.0f}%), {moved / 1e6 / secs:.1f} MB/s, '
                            f'{sum(r is not None for r in results)}/{len(procs)} '
                            f'clients done' if secs > 0.5 else f'  running {label}')
        after = snapshot()
        progress.done()
        return results, before, after
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                try:
                    f.close()
                except OSError:
                    pass


def _message(proc, stream) -> dict:
    line = stream.readline()
    if not line:
        err = proc.stderr.read()[-500:] if proc.poll() is not None else ''
        return {'error': f'exited without a result{": " + err.strip() if err else ""}'}
    try:
        return json.loads(line)
    except ValueError:
        return {'error': f'said {line.strip()[:200]!r}'}


# -- one run: N clients ------------------------------------------------------------------
def summarize(protocol: str, results: list[dict], cpu: dict, drops: dict) -> dict:
    """Per-run figures from the clients' results and the target's counters."""
    clients = []
    for i, r in enumerate(results):
        w, rd = r['write'], r.get('read')
        end = rd['end'] if rd else w['end']
        clients.append({'client': i, 'start': w['start'], 'end': end,
                        'job_seconds': round(end - w['start'], 6),
                        'completed': w.get('completed', True) and bool(rd) and
                        rd.get('completed', True),
                        'write': w, 'read': rd})
    out = {'protocol': protocol, 'clients': len(clients), 'per_client': clients}
    moved = 0
    for phase in ('write', 'read'):
        ph = [c[phase] for c in clients if c[phase]]
        nbytes = sum(p['bytes'] for p in ph)
        moved += nbytes
        if not ph:
            out[phase] = None
            continue
        span = max(p['end'] for p in ph) - min(p['start'] for p in ph)
        lat50 = sorted(p['latency_p50'] for p in ph)
        out[phase] = {
            'bytes': nbytes,
            'aggregate_mbps': round(nbytes / span / 1e6, 3) if span > 0 else 0.0,
            'mean_client_mbps': round(sum(p['mbps'] for p in ph) / len(ph), 3),
            'min_client_mbps': min(p['mbps'] for p in ph),
            'max_client_mbps': max(p['mbps'] for p in ph),
            'latency_p50_median': lat50[len(lat50) // 2],
            'latency_p99_max': max(p['latency_p99'] for p in ph),
            'longest_stall': max(p['longest_stall'] for p in ph),
            'retransmits': sum(p.get('retransmits', 0) for p in ph),
            'mismatches': sum(p['mismatches'] for p in ph),
        }
    times = sorted(c['job_seconds'] for c in clients)
    out['completion'] = {'seconds': times, 'min': times[0], 'max': times[-1],
                         'median': times[len(times) // 2],
                         'spread': round(times[-1] - times[0], 6),
                         'unfinished': sum(not c['completed'] for c in clients)}
    out['target'] = dict(cpu)
    gb = moved / 1e9
    out['target']['cpu_seconds_per_gb'] = round(cpu['cpu_seconds'] / gb, 3) if gb else None
    out['target'].update(drops)
    out['bytes'] = moved
    return out


# -- where the targets are ---------------------------------------------------------------
# the lab's targets come from the lab (the package xenha_lab), found through this
# entry-point group: the product never imports the lab.  The entry point names a
# class taking the Options, with the methods SiteTargets has (site.py).
TARGETS_GROUP = 'xenha.study_targets'


def lab_targets(opts: Options):
    """The lab's targets for the study (a real tgtd, real vblades)."""
    from importlib.metadata import entry_points
    found = {ep.name: ep for ep in entry_points(group=TARGETS_GROUP)}
    if 'lab' not in found:
        raise StudyError('the lab (xenha_lab) is not installed here: name scratch '
                         'targets with --inventory FILE --target NAME')
    return found['lab'].load()(opts)


def _drops(before: dict, after: dict) -> dict:
    out = {}
    for key in ('socket_drops', 'link_drops'):
        a, b = after.get(key), before.get(key)
        out[key] = None if a is None or b is None else max(0, a - b)
    return out


# -- the whole study ---------------------------------------------------------------------
def conditions(opts: Options, targets) -> dict:
    return {
        'mode': opts.mode, 'where': targets.where,
        'size_per_client': opts.size, 'record': opts.record, 'depth': opts.depth,
        'mtu': opts.mtu if targets.where == 'lab' else None,
        'vblade_buffers': opts.bufcnt if targets.where == 'lab' else None,
        'aoe_policy': opts.policy,
        'backing': opts.backing if targets.where == 'lab' else None,
        'pinning': targets.pinning or 'none',
        'cpu_model': measure.cpu_model(), 'cpus': os.cpu_count(),
        'load_average_start': measure.load_average(),
        'python': sys.version.split()[0],
        'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }


def study(opts: Options, say=print, tty: bool = False, targets=None,
          checkpoint=None) -> dict:
    """The whole study; the JSON document.  Prints a table row per run and
    hands the document to `checkpoint` after each (None: nobody)."""
    from xenha.study import report
    targets = targets or lab_targets(opts)
    progress = Progress(say, tty)
    doc = {'complete': False, 'conditions': conditions(opts, targets), 'runs': [],
           'sweep': []}
    checkpoint = checkpoint or (lambda doc: None)
    checkpoint(doc)
    say(report.header(doc['conditions']), flush=True)
    say(report.table_head(), flush=True)
    try:
        for protocol in opts.protocols:
            nmax = max(opts.clients)
            targets.up(protocol, nmax, max(opts.size, opts.sweep_size if opts.sweep else 0))
            try:
                for n in opts.clients:
                    jobs, netns = targets.jobs(n, opts.size, opts.record, seed=1000 * n)
                    label = f'{protocol}, {n} client{"s" if n != 1 else ""}'
                    results, before, after = run_clients(jobs, netns, progress, label,
                                                         targets.snapshot)
                    run = summarize(protocol, results,
                                    measure.cpu_delta(before['cpu'], after['cpu']),
                                    _drops(before, after))
                    run['load_average'] = measure.load_average()
                    doc['runs'].append(run)
                    checkpoint(doc)
                    say(report.table_row(run), flush=True)
                for rec in opts.sweep:
                    jobs, netns = targets.jobs(1, opts.sweep_size, rec, seed=7)
                    label = f'{protocol}, sweep {report.size_text(rec)}'
                    results, _, _ = run_clients(jobs, netns, progress, label,
                                                targets.snapshot)
                    r = results[0]
                    doc['sweep'].append({'protocol': protocol, 'record': rec,
                                         'size': opts.sweep_size,
                                         'write_mbps': r['write']['mbps'],
                                         'read_mbps': (r.get('read') or {}).get('mbps'),
                                         'write_latency_p50': r['write']['latency_p50'],
                                         'read_latency_p50':
                                             (r.get('read') or {}).get('latency_p50')})
                    checkpoint(doc)
            finally:
                targets.down()
    finally:
        problems = targets.close()
        if problems:
            say(f'xenha study: lab teardown: {"; ".join(problems)}', flush=True)
    doc['conditions']['load_average_end'] = measure.load_average()
    doc['complete'] = True
    checkpoint(doc)
    if opts.sweep:
        say(report.sweep_table(doc['sweep']), flush=True)
    return doc

