"""What the study reads about a target while clients hammer it: CPU time per
process and per thread (/proc/PID/stat, /proc/PID/task/TID/stat), socket
drops (`ss -m`: each socket's skmem "d" counter) and link drops (`ip -s`),
and the machine's conditions (CPU model, load average)."""

from __future__ import annotations

import json
import os
import re
import subprocess

CLK_TCK = os.sysconf('SC_CLK_TCK')


def _ticks(path: str) -> int | None:
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])          # utime + stime


def cpu_snapshot(pids: list[int]) -> dict:
    """{'procs': {pid: ticks}, 'threads': {'pid/tid': ticks}}."""
    procs, threads = {}, {}
    for pid in pids:
        t = _ticks(f'/proc/{pid}/stat')
        if t is None:
            continue
        procs[pid] = t
        try:
            tids = os.listdir(f'/proc/{pid}/task')
        except OSError:
            tids = []
        for tid in tids:
            tt = _ticks(f'/proc/{pid}/task/{tid}/stat')
            if tt is not None:
                threads[f'{pid}/{tid}'] = tt
    return {'procs': procs, 'threads': threads}


def cpu_delta(before: dict, after: dict) -> dict:
    """CPU seconds used between two snapshots, and the threads that used any."""
    seconds = sum(after['procs'].get(p, t) - t for p, t in before['procs'].items())
    busy = [k for k, t in after['threads'].items()
            if t - before['threads'].get(k, 0) > 0]
    return {'cpu_seconds': round(seconds / CLK_TCK, 3), 'busy_threads': len(busy),
            'threads': len(after['threads'])}


_SKMEM_DROPS = re.compile(r'skmem:\([^)]*\bd(\d+)\)')


def socket_drops(argv: list[str]) -> int | None:
    """Sum of the skmem drop counters `ss -m` shows for its selection."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode:
        return None
    return sum(int(m) for m in _SKMEM_DROPS.findall(r.stdout))


def tcp_drops(address: str, port: int) -> int | None:
    """Drops on the target's established TCP sockets (its side of each session)."""
    return socket_drops(['ss', '-tmnH', 'state', 'established', 'src',
                         f'{address}:{port}'])


def packet_drops(netns: str) -> int | None:
    """Drops on every packet socket in `netns` (the vblades' raw sockets)."""
    return socket_drops(['ip', 'netns', 'exec', netns, 'ss', '-0', '-a', '-m', '-H'])


def link_drops(netns: str) -> int | None:
    """rx + tx drops of every link in `netns`."""
    try:
        r = subprocess.run(['ip', '-n', netns, '-s', '-j', 'link', 'show'],
                           capture_output=True, text=True, timeout=10)
        links = json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if links is None:
        return None
    total = 0
    for link in links:
        stats = link.get('stats64') or link.get('stats') or {}
        total += stats.get('rx', {}).get('dropped', 0) + stats.get('tx', {}).get('dropped', 0)
    return total


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
