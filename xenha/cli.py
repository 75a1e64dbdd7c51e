"""`xenha`: the admin command (failover, restart, status, journal, render, lab, demo)."""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_INVENTORY = '/etc/xenha/cluster.toml'


def _inventory_arg(p) -> None:
    p.add_argument('--inventory', metavar='FILE',
                   default=os.environ.get('XENHA_INVENTORY', DEFAULT_INVENTORY),
                   help=f'cluster description (default $XENHA_INVENTORY or {DEFAULT_INVENTORY})')


def _load(args):
    from xenha import inventory
    try:
        return inventory.load(args.inventory)
    except inventory.InventoryError as exc:
        for e in exc.errors:
            print(f'xenha: {e}', file=sys.stderr)
        raise SystemExit(2) from None


def _stamp(text: str) -> None:
    print(f'{time.strftime("%H:%M:%S")} {text}', flush=True)


# -- failover / restart / status / journal --------------------------------------
def cmd_failover(args) -> int:
    from xenha.failover import Engine
    cluster = _load(args)
    engine = Engine(cluster, say=None if args.quiet else _stamp)
    try:
        report = engine.failover(args.dom0, dry_run=args.dry_run, why=args.why or '')
    except KeyError as exc:
        print(f'xenha: {exc.args[0]}', file=sys.stderr)
        return 2
    code = 0
    for r in [report, *report.followups]:
        if r is not report:
            print(f'then, fenced by this failover: {r.subject}')
        print(r.message)
        if r.result not in ('plan', 'noop'):
            steps = ', '.join(f'{k} {v:.2f}s' for k, v in r.steps)
            print(f'result: {r.result} ({steps})')
        code = max(code, r.code)
    return code


def cmd_restart(args) -> int:
    from xenha.failover import Engine
    from xenha.restart import restart
    cluster = _load(args)
    if args.domu not in cluster.domus:
        print(f'xenha: no domU {args.domu!r} in {cluster.source}', file=sys.stderr)
        return 2
    engine = Engine(cluster, say=None if args.quiet else _stamp)
    if args.forget_pending:
        from xenha.failover import PENDING_WINDOW
        pending = engine.db.pending(args.domu, PENDING_WINDOW)
        if pending:
            engine.db.clear_pending(args.domu)
            engine.log('pending', f'the lost create of {args.domu} on {pending[0]} is '
                       'forgotten (an operator checked it will not finish)', 'warning',
                       domu=args.domu, dom0=pending[0])
    report = restart(engine, args.domu, why=args.why or '')
    print(report.message)
    return report.code


def cmd_status(args) -> int:
    from xenha.status import status
    return status(_load(args), live=args.live)


def cmd_journal(args) -> int:
    from xenha.state import StateDB
    cluster = _load(args)
    since = time.time() - args.since if args.since else None
    with StateDB(cluster.defaults.state_db) as db:
        rows = db.journal_rows(job=args.job, since=since, dom0=args.dom0)
    for r in rows[-args.last:] if args.last else rows:
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['at']))
        where = '/'.join(x for x in (r['dom0'], r['domu']) if x)
        print(f"{when}.{int(r['at'] % 1 * 1000):03d} {r['level']:<7} {r['step']:<8} "
              f"{where:<18} {r['message']}  [{r['job'] or '-'}]")
    return 0


def cmd_render(args) -> int:
    from xenha import render
    return render.run(args)


def cmd_lab(args) -> int:
    from xenha.lab import cli as lab_cli
    return lab_cli.run(args)


def cmd_study(args) -> int:
    from xenha.study import cli as study_cli
    return study_cli.run(args)


def cmd_demo(args) -> int:
    from xenha.lab import demo
    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='xenha', description=__doc__)
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    s = sub.add_parser('failover', help='fail a dom0 over to the spares (or show the plan)')
    s.add_argument('dom0')
    s.add_argument('--dry-run', action='store_true',
                   help='print the plan (fencing, victims, placement) and change nothing')
    s.add_argument('--why', help='reason recorded in the journal')
    s.add_argument('-q', '--quiet', action='store_true', help='no step-by-step narration')
    _inventory_arg(s)
    s.set_defaults(func=cmd_failover)

    s = sub.add_parser('restart', help='restart a domU in place (or relocate it)')
    s.add_argument('domu')
    s.add_argument('--why', help='reason recorded in the journal')
    s.add_argument('--forget-pending', action='store_true',
                   help='a create of the domU lost its answer and blocks it for 10 '
                        'minutes: you checked (xl list, ps) that it will not finish')
    s.add_argument('-q', '--quiet', action='store_true')
    _inventory_arg(s)
    s.set_defaults(func=cmd_restart)

    s = sub.add_parser('status', help='where each domU runs')
    s.add_argument('--live', action='store_true',
                   help='ask every dom0 now instead of reading the state cache')
    _inventory_arg(s)
    s.set_defaults(func=cmd_status)

    s = sub.add_parser('journal', help='what the engine decided and did')
    s.add_argument('--job', help='one job only')
    s.add_argument('--dom0', help='one dom0 only')
    s.add_argument('--since', type=float, metavar='S', help='the last S seconds only')
    s.add_argument('--last', type=int, metavar='N', help='the last N entries only')
    _inventory_arg(s)
    s.set_defaults(func=cmd_journal)

    s = sub.add_parser('render', help='generate Nagios, Icinga 2 and Xen configuration')
    try:
        from xenha import render
        render.add_arguments(s)
    except ImportError:
        pass
    s.set_defaults(func=cmd_render)

    s = sub.add_parser('lab', help='a whole cluster on this machine (demo, tests)')
    from xenha.lab import cli as lab_cli
    lab_cli.add_arguments(s)
    s.set_defaults(func=cmd_lab)

    s = sub.add_parser('study', help='the storage study: iSCSI vs AoE for 1-20 concurrent '
                                     'clients, on the lab or on scratch targets')
    from xenha.study import cli as study_cli
    study_cli.add_arguments(s)
    s.set_defaults(func=cmd_study)

    s = sub.add_parser('demo', help='the lab, a dom0 failure and the recovery, narrated')
    s.add_argument('--xen', choices=('auto', 'sim', 'qemu'), default='auto',
                   help='dom0 kind: qemu (real Xen 4.17 under QEMU/TCG, about 3 minutes), '
                        'sim (sshd + simulated toolstack, about half a minute), or auto '
                        '(default): qemu when this machine can run it, else sim; the '
                        'first line says which and why')
    s.add_argument('--keep', action='store_true', help='leave the lab up at the end')
    s.add_argument('--dir', help='lab directory (default: a new temporary one)')
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
