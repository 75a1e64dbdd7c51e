"""`xenha`: the admin command (failover, restart, unfence, boot-script, status, journal,
render, study; lab and demo from the lab).

Every command answers in lines an operator reads on a terminal: whatever a
host, a guest or the state database holds, no control character or terminal
escape reaches it (they print as '?').  What goes wrong is one line, ``xenha:
refused: …`` (an unusable state database or inventory) or ``xenha: COMMAND:
unexpected …``, with the traceback only at -vvv."""

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
        report = engine.failover(args.dom0, dry_run=args.dry_run, why=args.why or '',
                                 if_off=args.if_off)
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


def cmd_unfence(args) -> int:
    from xenha.failover import Engine
    from xenha.unfence import unfence
    cluster = _load(args)
    if args.dom0 not in cluster.dom0s:
        print(f'xenha: no dom0 {args.dom0!r} in {cluster.source}', file=sys.stderr)
        return 2
    report = unfence(Engine(cluster, say=None if args.quiet else _stamp), args.dom0,
                     why=args.why or '')
    print(report.message)
    return report.code


def cmd_boot_script(args) -> int:
    from xenha.unfence import boot_script
    cluster = _load(args)
    if args.dom0 not in cluster.dom0s:
        print(f'xenha: no dom0 {args.dom0!r} in {cluster.source}', file=sys.stderr)
        return 2
    sys.stdout.write(boot_script(cluster, args.dom0))
    return 0


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
        print(journal_line(r))
    return 0


def journal_line(r: dict) -> str:
    """One journal entry on one line, whatever its fields hold: a message with a
    line break or a terminal escape (a hostile host name, a forged row) shows
    them escaped, never as a second, forged entry."""
    def field(value) -> str:
        text = '' if value is None else str(value)
        return text if text.isprintable() else repr(text)[1:-1]
    at = r['at'] if isinstance(r['at'], (int, float)) and r['at'] == r['at'] else 0.0
    try:
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))
        millis = int(at % 1 * 1000)
    except (OverflowError, ValueError, OSError):
        when, millis = '????-??-?? ??:??:??', 0
    where = '/'.join(field(x) for x in (r['dom0'], r['domu']) if x)
    return (f"{when}.{millis:03d} {field(r['level']):<7} {field(r['step']):<8} "
            f"{where:<18} {field(r['message'])}  [{field(r['job']) or '-'}]")


def cmd_render(args) -> int:
    from xenha import render
    return render.run(args)


def cmd_study(args) -> int:
    from xenha.study import cli as study_cli
    return study_cli.run(args)


# -- commands other packages add ------------------------------------------------------
# `xenha lab` and `xenha demo` come from the lab (the package xenha_lab), found
# through this entry-point group: the product never imports it.  Each entry
# point names an object with `help` (one line for `xenha --help`) and
# `main(argv, prog) -> int`; it is loaded only when its command runs or when
# `xenha` lists its commands.
PLUGIN_GROUP = 'xenha.commands'


def plugins() -> dict:
    """name -> entry point of each command another installed package adds."""
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def _command_of(raw: list[str]) -> str | None:
    """The COMMAND of an argv (the first word that is not an option of `xenha`'s own)."""
    return next((a for a in raw if not a.startswith('-')), None)


def _verbose_arg(p) -> None:
    p.add_argument('-v', '--verbose', action='count', default=0,
                   help='-vvv: a traceback when something unexpected happens')


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """`xenha`'s parser; `with_plugins`: also list the commands of other
    packages (the entry-point group PLUGIN_GROUP)."""
    p = argparse.ArgumentParser(prog='xenha', description=__doc__.split('\n')[0])
    _verbose_arg(p)
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    s = sub.add_parser('failover', help='fail a dom0 over to the spares (or show the plan)')
    s.add_argument('dom0')
    s.add_argument('--dry-run', action='store_true',
                   help='print the plan (fencing, victims, placement) and change nothing')
    s.add_argument('--why', help='reason recorded in the journal')
    s.add_argument('--if-off', action='store_true',
                   help="the fast path: fail over only if the dom0's BMC says its power "
                        'is off (the handler uses it at the first failed check)')
    s.add_argument('-q', '--quiet', action='store_true', help='no step-by-step narration')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_failover)

    s = sub.add_parser('restart', help='restart a domU in place (or relocate it)')
    s.add_argument('domu')
    s.add_argument('--why', help='reason recorded in the journal')
    s.add_argument('--forget-pending', action='store_true',
                   help='a create of the domU lost its answer and blocks it for 10 '
                        'minutes: you checked (xl list, ps) that it will not finish')
    s.add_argument('-q', '--quiet', action='store_true')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_restart)

    s = sub.add_parser('unfence', help='a repaired dom0 may write its disks again '
                       '(storage fencing)')
    s.add_argument('dom0')
    s.add_argument('--why', help='reason recorded in the journal')
    s.add_argument('-q', '--quiet', action='store_true')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_unfence)

    s = sub.add_parser('boot-script', help="the script a dom0 runs at boot to register "
                       'on its disks (storage fencing)')
    s.add_argument('dom0')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_boot_script)

    s = sub.add_parser('status', help='where each domU runs')
    s.add_argument('--live', action='store_true',
                   help='ask every dom0 now instead of reading the state cache')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_status)

    s = sub.add_parser('journal', help='what the engine decided and did')
    s.add_argument('--job', help='one job only')
    s.add_argument('--dom0', help='one dom0 only')
    s.add_argument('--since', type=float, metavar='S', help='the last S seconds only')
    s.add_argument('--last', type=int, metavar='N', help='the last N entries only')
    _inventory_arg(s)
    _verbose_arg(s)
    s.set_defaults(func=cmd_journal)

    s = sub.add_parser('render', help='generate Nagios, Icinga 2 and Xen configuration')
    try:
        from xenha import render
        render.add_arguments(s)
    except ImportError:
        pass
    s.set_defaults(func=cmd_render)

    s = sub.add_parser('study', help='the storage study: iSCSI vs AoE for 1-20 concurrent '
                                     'clients, on the lab or on scratch targets')
    from xenha.study import cli as study_cli
    study_cli.add_arguments(s)
    s.set_defaults(func=cmd_study)

    for name, ep in (plugins() if with_plugins else {}).items():
        if name not in sub.choices:
            # listed here; its own parser reads its arguments (see main)
            sub.add_parser(name, help=ep.load().help, add_help=False)
    return p


def _commands(parser: argparse.ArgumentParser) -> dict:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


class _Clean:
    """A text stream that prints control characters (but line ends) as '?' and
    drops terminal escape sequences."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        from xenha.grammar import CONTROL
        from xenha.plugin import _ANSI
        text = _ANSI.sub('', text)
        self.stream.write(CONTROL.sub(lambda m: m.group() if m.group() in '\n\t'
                                      else '?', text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv=None) -> int:
    import traceback
    from xenha.plugin import verbosity
    raw = sys.argv[1:] if argv is None else list(argv)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Clean(out), _Clean(err)
    try:
        command = _command_of(raw)
        builtin = build_parser(with_plugins=False)
        plugin = None
        if command is not None and command not in _commands(builtin):
            plugin = plugins().get(command)
        if plugin is not None:
            args = argparse.Namespace(command=command)
            rest = raw[raw.index(command) + 1:]
            args.func = lambda _args: plugin.load().main(rest, prog=f'xenha {command}')
        else:
            parser = builtin if command in _commands(builtin) else build_parser()
            args = parser.parse_args(raw)
        try:
            return args.func(args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback (but -vvv)
            print(refusal(args.command, exc), file=sys.stderr)
            if verbosity(raw) >= 3:
                traceback.print_exc()
            return 2 if _known(exc) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


def _known(exc: Exception) -> bool:
    """An unusable state database or storage of it, an unreadable file, a host
    that cannot be reached: the operator's to fix, said as a refusal."""
    import sqlite3
    from xenha.runner import RunnerError
    from xenha.state import StateDBError
    return isinstance(exc, (StateDBError, sqlite3.Error, RunnerError, OSError))


def refusal(command: str, exc: Exception) -> str:
    from xenha.plugin import describe, where
    if _known(exc):
        import sqlite3
        why = describe(exc)
        if isinstance(exc, sqlite3.OperationalError) and 'locked' in why:
            why = f'the state database is locked by another process ({why})'
        elif isinstance(exc, sqlite3.Error):
            why = f'the state database cannot be used ({why})'
        return f'xenha: refused: {why}'
    at = where(exc)
    return (f'xenha: {command}: unexpected {type(exc).__name__}' + (f' in {at}' if at else '')
            + f': {describe(exc)}')


if __name__ == '__main__':
    sys.exit(main())
