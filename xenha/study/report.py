"""The study's outputs: the terminal table, the JSON file, and (with
matplotlib, `pip install 'xenha[study]'`) the thesis-style figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

# the thesis (2007, Gigabit Ethernet, Pentium III file server), chapter 4.3
THESIS = {
    'iscsi_write_mbps_at_9': 10.5,
    'aoe_write_mbps_at_1': 4.0,
    'aoe_server_load': (1, 2),
    'iscsi_server_load': (5, 8.5),
    'aoe_clients_before_stalls': 8,
}


def size_text(n: int) -> str:
    for unit, div in (('M', 1 << 20), ('K', 1 << 10)):
        if n >= div and n % div == 0:
            return f'{n // div}{unit}'
    return f'{n}B'


def caption(c: dict, load: bool = True) -> str:
    pin = c['pinning']
    pinning = (f"target on CPU {','.join(map(str, pin['target']))}, clients on "
               f"{','.join(map(str, pin['clients']))}" if isinstance(pin, dict) else 'no pinning')
    # the MTU, vblade -b and backing store are the lab's knobs: a site's are its own
    lab = (f"MTU {c['mtu']}, vblade -b {c['vblade_buffers']}, " if c['where'] == 'lab'
           else '')
    store = f"backing {c['backing']}, " if c['where'] == 'lab' else ''
    return (f"{c['where']}, {size_text(c['size_per_client'])} per client, records "
            f"{size_text(c['record'])} x{c['depth']}, {lab}AoE retransmits "
            f"{c['aoe_policy']}, {store}{pinning}; {c['cpus']} x {c['cpu_model']}"
            + (f', load average {c["load_average_start"][0]:.2f} at the start'
               if load and c.get('load_average_start') else ''))


def header(c: dict) -> str:
    load = ' '.join(f'{x:.2f}' for x in c['load_average_start'])
    return (f'xenha study ({c["mode"]}): {caption(c, load=False)}\n'
            f'load average at the start: {load} (the figures are CPU-bound: compare runs '
            f'taken under similar load)')


COLUMNS = ('proto', 'N', 'write agg', 'read agg', 'mean/client', 'job s (min-max)',
           'lat p50/p99 ms', 'rexmit', 'stall s', 'CPU s/GB', 'busy thr', 'drops')


def table_head() -> str:
    return ('proto     N  agg MB/s w / r    mean/client w / r  job s min-max     '
            'p50/p99 ms     rexmit  stall s  CPU s/GB  busy  drops')


def _ph(run, phase, key, fmt='{:.1f}'):
    ph = run.get(phase)
    return fmt.format(ph[key]) if ph else '-'


def table_row(run: dict) -> str:
    comp, tgt = run['completion'], run['target']
    drops = sum(x for x in (tgt.get('socket_drops'), tgt.get('link_drops')) if x) \
        if tgt.get('socket_drops') is not None else None
    rex = sum((run.get(p) or {}).get('retransmits', 0) for p in ('write', 'read'))
    stall = max((run.get(p) or {}).get('longest_stall', 0) for p in ('write', 'read'))
    p50 = (run['write'] or {}).get('latency_p50_median', 0) * 1000
    p99 = max((run.get(p) or {}).get('latency_p99_max', 0) for p in ('write', 'read')) * 1000
    unfinished = f' ({comp["unfinished"]} unfinished)' if comp['unfinished'] else ''
    cpu = tgt.get('cpu_seconds_per_gb')
    return (f"{run['protocol']:<6} {run['clients']:>4}  "
            f"{_ph(run, 'write', 'aggregate_mbps'):>7} / {_ph(run, 'read', 'aggregate_mbps'):<7}  "
            f"{_ph(run, 'write', 'mean_client_mbps'):>7} / {_ph(run, 'read', 'mean_client_mbps'):<7}  "
            f"{comp['min']:>6.2f}-{comp['max']:<8.2f}  "
            f"{p50:>6.2f}/{p99:<7.2f}  {rex:>6}  {stall:>7.3f}  "
            f"{'-' if cpu is None else f'{cpu:.2f}':>8}  {tgt.get('busy_threads', '-'):>4}  "
            f"{'-' if drops is None else drops:>5}{unfinished}")


def sweep_table(rows: list[dict]) -> str:
    if not rows:
        return ''
    lines = ['one client, record-size sweep (standing in for IOzone):',
             'proto   record   write MB/s  read MB/s  write p50 ms  read p50 ms']
    for r in rows:
        lines.append(f"{r['protocol']:<6}  {size_text(r['record']):>6}   "
                     f"{r['write_mbps']:>10.1f}  {(r['read_mbps'] or 0):>9.1f}  "
                     f"{r['write_latency_p50'] * 1000:>12.3f}  "
                     f"{(r['read_latency_p50'] or 0) * 1000:>11.3f}")
    return '\n'.join(lines)


def json_path(doc: dict, outdir: str | Path) -> Path:
    """A new file name for this study's JSON: study-MODE-YYYYmmdd-HHMMSS.json."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    path = outdir / f'study-{doc["conditions"]["mode"]}-{stamp}.json'
    n = 1
    while path.exists():
        n += 1
        path = outdir / f'study-{doc["conditions"]["mode"]}-{stamp}-{n}.json'
    return path


def save(doc: dict, path: Path) -> None:
    """(Re)write the JSON whole: after every run, so a study stopped halfway
    keeps what it measured ("complete": false)."""
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(doc, indent=1) + '\n')
    tmp.replace(path)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


PLOTS_HINT = "plots need matplotlib: pip install 'xenha[study]'"


def plot(doc: dict, json_path: Path) -> list[Path]:
    """The thesis' figures from one study document: PNGs beside the JSON."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    runs = doc['runs']
    protocols = sorted({r['protocol'] for r in runs})
    styles = {'iscsi': ('tab:blue', 'iSCSI (tgtd)'), 'aoe': ('tab:orange', 'AoE (vblade)')}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_agg, ax_mean), (ax_comp, ax_cpu) = axes
    for proto in protocols:
        rs = sorted((r for r in runs if r['protocol'] == proto), key=lambda r: r['clients'])
        color, label = styles.get(proto, (None, proto))
        ns = [r['clients'] for r in rs]
        for phase, ls in (('write', '-'), ('read', '--')):
            ax_agg.plot(ns, [(r[phase] or {}).get('aggregate_mbps', 0) for r in rs], ls,
                        marker='o', color=color, label=f'{label} {phase}')
            ax_mean.plot(ns, [(r[phase] or {}).get('mean_client_mbps', 0) for r in rs], ls,
                         marker='o', color=color, label=f'{label} {phase}')
        offset = -0.15 if proto == 'aoe' else 0.15
        for r in rs:
            secs = r['completion']['seconds']
            ax_comp.scatter([r['clients'] + offset] * len(secs), secs, s=14, color=color,
                            alpha=0.7, label=label if r is rs[0] else None)
        ax_cpu.plot(ns, [r['target'].get('cpu_seconds_per_gb') or 0 for r in rs],
                    marker='o', color=color, label=label)
    counts = sorted({r['clients'] for r in runs})
    for ax, title, ylabel in (
            (ax_agg, 'aggregate throughput', 'MB/s (all clients)'),
            (ax_mean, 'mean speed per client', 'MB/s per client'),
            (ax_comp, 'job completion times (write + read)', 'seconds'),
            (ax_cpu, 'storage server CPU per GB moved', 'CPU seconds / GB')):
        ax.set_title(title)
        ax.set_xlabel('concurrent clients')
        ax.set_xticks(counts)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    import textwrap
    fig.suptitle('xenha storage study: iSCSI vs AoE\n'
                 + '\n'.join(textwrap.wrap(caption(doc['conditions']), 150)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    paths = [json_path.with_suffix('.png')]
    fig.savefig(paths[0], dpi=90)
    plt.close(fig)
    if doc.get('sweep'):
        fig, ax = plt.subplots(figsize=(8, 5))
        for proto in protocols:
            rows = [s for s in doc['sweep'] if s['protocol'] == proto]
            color, label = styles.get(proto, (None, proto))
            recs = [s['record'] / 1024 for s in rows]
            ax.plot(recs, [s['write_mbps'] for s in rows], '-', marker='o', color=color,
                    label=f'{label} write')
            ax.plot(recs, [s['read_mbps'] or 0 for s in rows], '--', marker='o', color=color,
                    label=f'{label} read')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('record size (KiB)')
        ax.set_ylabel('MB/s, one client')
        ax.set_title('record-size sweep (one client)\n' + '\n'.join(
            textwrap.wrap(caption(doc['conditions']), 110)), fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(json_path.with_name(json_path.stem + '-sweep.png'))
        fig.savefig(paths[1], dpi=90)
        plt.close(fig)
    return paths
