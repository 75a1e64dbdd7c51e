"""What both Nagios event handlers do: decide fast, hand over to a detached job.

Nagios kills an event handler after `event_handler_timeout` and calls it at
SOFT attempts, at the HARD state and on recovery.  So a handler parses the
macros, decides, journals the decision, starts the real work as a detached
`xenha` job (own session, output to a log file, no pipe back to Nagios) and
returns in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


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
    names = {'host': ('$HOSTNAME$', '$HOSTSTATE$', '$HOSTSTATETYPE$', '$HOSTATTEMPT$'),
             'service': ('$HOSTNAME$', '$SERVICESTATE$', '$SERVICESTATETYPE$',
                         '$SERVICEATTEMPT$')}[kind]
    for dest, macro in zip(('name', 'state', 'state_type', 'attempt'), names):
        p.add_argument(dest, metavar=macro.strip('$'))
    return p


def handle(kind: str, doc: str, job_argv, argv=None) -> int:
    from xenha.nagios import parse_event
    args = parser(kind, doc).parse_args(argv)
    try:
        event = parse_event(kind, args.name, args.state, args.state_type, args.attempt)
    except ValueError as exc:
        print(f'xenha: refused: {exc}')
        return 3
    act, why = event.should_act(args.soft_attempt)
    fast = (kind == 'host' and not act and event.problem and event.state_type == 'SOFT'
            and args.fast_attempt > 0 and event.attempt == args.fast_attempt)
    if fast:
        # a power loss is a fact, not a guess: the job asks the BMC (about a
        # second) and fails over only when it says off; on or silent: nothing
        act, why = True, (f'{event.name} is {event.state} SOFT attempt {event.attempt}: '
                          'asking its BMC whether the power is off (fast path)')
    from xenha import inventory
    try:
        cluster = inventory.load(args.inventory)
    except inventory.InventoryError as exc:
        print(f'xenha: refused: inventory unusable: {exc.errors[0]}')
        return 3
    from xenha.state import StateDB, StateDBError
    subject = {'host': 'dom0', 'service': 'domu'}[kind]
    known = cluster.dom0s if kind == 'host' else cluster.domus
    try:
        db = StateDB(cluster.defaults.state_db)
    except StateDBError as exc:
        # no journal to write to: Nagios' event log and stderr are all there is
        print(f'xenha: refused: {exc}')
        print(f'xenha: refused {args.name} {args.state} {args.state_type}: {exc}',
              file=sys.stderr)
        return 3
    with db:
        if args.name not in known:
            msg = f'{args.name} is not a {subject} of {args.inventory}: ignored'
            db.journal('event', msg, 'warning', **{subject: args.name})
            print(f'xenha: {msg}')
            return 0
        db.journal('event', f'Nagios: {why}' + ('' if act else ' (no action)'),
                   **{subject: args.name})
    if not act:
        print(f'xenha: {why}')
        return 0
    argv = [sys.executable, '-m', 'xenha.cli', *job_argv(args.name),
            *(['--if-off'] if fast else []),
            '--inventory', args.inventory, '--why', f'Nagios: {why}']
    if args.foreground:
        return subprocess.call(argv)
    log = args.log or os.path.join(os.path.dirname(os.path.abspath(
        cluster.defaults.state_db)), 'jobs.log')
    with open(log, 'ab') as out:
        out.write(f'--- {time.strftime("%F %T")} {" ".join(argv[2:])}\n'.encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    print(f'xenha: {why}: job started (pid {proc.pid}, log {log})')
    return 0
