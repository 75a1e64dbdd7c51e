"""What both Nagios event handlers do: decide fast, hand over to a detached job.

Nagios kills an event handler after `event_handler_timeout` and calls it at
SOFT attempts, at the HARD state and on recovery.  So a handler parses the
macros, decides, journals the decision, starts the real work as a detached
`xenha` job (own session, output to a log file, no pipe back to Nagios) and
returns in milliseconds.

Nagios logs what a handler prints: every answer is one line, with no secret
and no control character in it, also when something unexpected happens (the
traceback only at -vvv).  A state database that is locked does not hold the
handler (it waits STATE_WAIT seconds at most) and does not stop the failover:
the job journals for itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

STATE_WAIT = 2.0      # seconds a handler waits for a locked state database


def parser(kind: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().split('\n\n')[0])
    p.add_argument('--inventory', default=os.environ.get('XENHA_INVENTORY',
                                                         '/etc/xenha/cluster.toml'),
                   help='cluster description (default $XENHA_INVENTORY or '
                        '/etc/xenha/cluster.toml)')
    p.add_argument('--soft-attempt', type=int, metavar='N',
                   help='also act at SOFT attempt N (default: HARD states only)')
    if kind == 'host':
        p.add_argument('--fast-attempt', type=int, metavar='N', default=1,
                       help="at SOFT attempt N, ask the dom0's BMC: power off = fail over "
                            'now, anything else = wait for HARD (default 1; 0: never)')
    p.add_argument('--log', metavar='FILE',
                   help="the job's output (default: next to the state database)")
    p.add_argument('--foreground', action='store_true',
                   help='run the job here and wait for it (for a shell, not for Nagios)')
    p.add_argument('-v', '--verbose', action='count', default=0,
                   help='-vvv: a traceback when something unexpected happens')
    names = {'host': ('$HOSTNAME$', '$HOSTSTATE$', '$HOSTSTATETYPE$', '$HOSTATTEMPT$'),
             'service': ('$HOSTNAME$', '$SERVICESTATE$', '$SERVICESTATETYPE$',
                         '$SERVICEATTEMPT$')}[kind]
    for dest, macro in zip(('name', 'state', 'state_type', 'attempt'), names):
        p.add_argument(dest, metavar=macro.strip('$'))
    return p


def say(text: str, file=None) -> None:
    """One line for Nagios' log: control characters out, bounded."""
    from xenha.plugin import clean_output
    print(clean_output(text).split('\n')[0][:2000], file=file or sys.stdout, flush=True)


def handle(kind: str, doc: str, job_argv, argv=None) -> int:
    """The handler, guarded: never a traceback, one line whatever happens."""
    import traceback
    from xenha.plugin import verbosity, where
    raw = sys.argv[1:] if argv is None else argv
    try:
        return _handle(kind, doc, job_argv, argv)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - Nagios must get one line, not a traceback
        at = where(exc)
        say(f'xenha: refused: unexpected {type(exc).__name__}' + (f' in {at}' if at else '')
            + f': {str(exc).strip() or type(exc).__name__}')
        if verbosity(raw) >= 3:
            print(traceback.format_exc().rstrip())
        return 3


def _handle(kind: str, doc: str, job_argv, argv=None) -> int:
    from xenha import grammar, inventory
    from xenha.nagios import parse_event
    args = parser(kind, doc).parse_args(argv)
    shown = inventory.show(args.name, 80)
    try:
        # the name comes from Nagios' macro: a name of the inventory's grammar,
        # or nothing that could forge a journal line or an argument
        why = grammar.name(args.name)
        if why:
            raise ValueError(f"'{shown}' is not a host name of xenha ({why})")
        event = parse_event(kind, args.name, args.state, args.state_type, args.attempt)
    except ValueError as exc:
        say(f'xenha: refused: {exc}')
        return 3
    act, why = event.should_act(args.soft_attempt)
    fast = (kind == 'host' and not act and event.problem and event.state_type == 'SOFT'
            and args.fast_attempt > 0 and event.attempt == args.fast_attempt)
    if fast:
        # a power loss is a fact, not a guess: the job asks the BMC (about a
        # second) and fails over only when it says off; on or silent: nothing
        act, why = True, (f'{event.name} is {event.state} SOFT attempt {event.attempt}: '
                          'asking its BMC whether the power is off (fast path)')
    try:
        cluster = inventory.load(args.inventory)
    except inventory.InventoryError as exc:
        say(f'xenha: refused: inventory unusable: {exc.errors[0]}')
        return 3
    from xenha.state import StateDB, StateDBError
    subject = {'host': 'dom0', 'service': 'domu'}[kind]
    known = cluster.dom0s if kind == 'host' else cluster.domus
    try:
        db = StateDB(cluster.defaults.state_db, timeout=STATE_WAIT)
    except StateDBError as exc:
        # no journal to write to: Nagios' event log and stderr are all there is
        say(f'xenha: refused: {exc}')
        say(f'xenha: refused {shown} {inventory.show(args.state, 20)} '
            f'{inventory.show(args.state_type, 20)}: {exc}', file=sys.stderr)
        return 3
    unjournaled = ''
    with db:
        try:
            if args.name not in known:
                msg = f'{args.name} is not a {subject} of {inventory.show(args.inventory)}: ignored'
                db.journal('event', msg, 'warning', **{subject: args.name})
                say(f'xenha: {msg}')
                return 0
            db.journal('event', f'Nagios: {why}' + ('' if act else ' (no action)'),
                       **{subject: args.name})
        except Exception as exc:  # noqa: BLE001 - sqlite3.OperationalError: locked, full
            if args.name not in known:
                say(f'xenha: {args.name} is not a {subject} of '
                    f'{inventory.show(args.inventory)}: ignored (not journaled: {exc})')
                return 0
            unjournaled = f' (not journaled: {exc})'
    if not act:
        say(f'xenha: {why}{unjournaled}')
        return 0
    argv = [sys.executable, '-m', 'xenha.cli', *job_argv(args.name),
            *(['--if-off'] if fast else []),
            '--inventory', args.inventory, '--why', f'Nagios: {why}']
    if args.foreground:
        return subprocess.call(argv)
    log = args.log or os.path.join(os.path.dirname(os.path.abspath(
        cluster.defaults.state_db)), 'jobs.log')
    out, trouble = _open_log(log, argv)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(out)
    where = f'log {inventory.show(log)}' if not trouble else f'no log: {trouble}'
    say(f'xenha: {why}: job started (pid {proc.pid}, {where}){unjournaled}')
    return 0


def _open_log(path: str, argv) -> tuple[int, str]:
    """An fd for the job's output and '' — or /dev/null and why the log cannot
    be written (a symlink, a directory, a full disk): the failover must start
    all the same, its journal is in the state database."""
    from xenha import files, inventory
    header = f'--- {time.strftime("%F %T")} {" ".join(argv[2:])}\n'.encode()
    try:
        fd = files.open_append(path, 0o600)
    except OSError as exc:
        return os.open(os.devnull, os.O_WRONLY), \
            f'cannot write {inventory.show(path)}: {exc.strerror or exc}'
    try:
        os.write(fd, header)
    except OSError as exc:
        os.close(fd)
        return os.open(os.devnull, os.O_WRONLY), \
            f'cannot write {inventory.show(path)}: {exc.strerror or exc}'
    return fd, ''
