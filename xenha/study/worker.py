"""One study client: `python -m xenha.study.worker`, its job on stdin.

Protocol on stdin/stdout, one JSON object a line:
  in:  the job (protocol, where, size, record, depth, policy, seed, cpu)
  out: {"ready": {...}}        logged in / target found
  in:  "go"                    the start barrier
  out: {"progress": bytes}     every half second or so
  out: {"result": {...}}       per phase: bytes, seconds, MB/s, latencies …
A failure is {"error": "..."} and exit 1.  Secrets (a CHAP secret) come in
the job on stdin, never in argv.
"""

from __future__ import annotations

import json
import os
import sys
import time

from xenha.storage.iscsi_io import pattern


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def summary(st) -> dict:
    from xenha.storage.iscsi_io import percentile
    out = {'bytes': st.nbytes, 'seconds': round(st.seconds, 6),
           'start': round(st.started, 6), 'end': round(st.started + st.seconds, 6),
           'mbps': round(st.rate / 1e6, 3), 'requests': st.commands,
           'latency_p50': round(percentile(st.latencies, 50), 6),
           'latency_p99': round(percentile(st.latencies, 99), 6),
           'longest_stall': round(st.longest_stall, 6),
           'mismatches': st.mismatches}
    for key in ('retransmits', 'late_answers', 'frames', 'socket_drops', 'completed'):
        if hasattr(st, key):
            out[key] = getattr(st, key)
    return out


def main() -> int:
    job = json.loads(sys.stdin.readline())
    if job.get('cpu') is not None:
        try:
            os.sched_setaffinity(0, set(job['cpu']))
        except OSError:
            pass
    size, record, depth = job['size'], job['record'], job.get('depth', 1)
    data = pattern(job['seed'], record)
    last = [0.0]

    def progress(done_bytes, base=0):
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            say({'progress': base + done_bytes})
    try:
        if job['protocol'] == 'iscsi':
            from xenha.storage import iscsi, iscsi_io
            chap = iscsi.Chap(job['chap_user'], job['chap_secret']) \
                if job.get('chap_user') else None
            dev = iscsi_io.Disk.open(iscsi.Portal(job['portal'], job['port']),
                                     job['target'], job.get('lun', 1),
                                     job['initiator'], chap, job.get('timeout', 30))

            def go(op, **kw):
                return dev.transfer(op, 0, size, record, depth, **kw)
        else:
            from xenha.storage import aoe_io
            dev = aoe_io.Export(job['interface'], job['shelf'], job['slot'])
            deadline = job.get('deadline')

            def go(op, **kw):
                end = time.monotonic() + deadline if deadline else None
                return dev.transfer(op, 0, size, record, depth, job.get('policy',
                                    'adaptive'), deadline=end,
                                    give_up=job.get('give_up', 180.0), **kw)
        say({'ready': {'capacity': dev.capacity}})
        if sys.stdin.readline().strip() != 'go':
            return 1
        w = go('write', data=data, progress=progress)
        result = {'write': summary(w)}
        if getattr(w, 'completed', True):
            r = go('read', expect=data, progress=lambda n: progress(n, size))
            result['read'] = summary(r)
        dev.close()
        say({'result': result})
        return 0
    except Exception as exc:                       # noqa: BLE001 - reported, not hidden
        say({'error': f'{type(exc).__name__}: {exc}'})
        return 1


if __name__ == '__main__':
    sys.exit(main())
