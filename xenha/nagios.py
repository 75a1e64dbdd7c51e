"""Talking with Nagios: event-handler macros in, external commands out.

Event handlers get `$HOSTSTATE$ $HOSTSTATETYPE$ $HOSTATTEMPT$` (or the
service ones) as arguments; `Event` turns them into a decision.  Results go
back through the external command file (a FIFO): a passive result on the
cluster's "failover" service and forced re-checks of what moved.  Writing
never blocks: if Nagios is not reading, the command is reported as not sent.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

PROBLEM_STATES = {'host': ('DOWN', 'UNREACHABLE'), 'service': ('CRITICAL',)}
CODES = {'OK': 0, 'WARNING': 1, 'CRITICAL': 2, 'UNKNOWN': 3}


@dataclass(frozen=True)
class Event:
    kind: str          # 'host' | 'service'
    name: str          # $HOSTNAME$ (or the service's host)
    state: str         # DOWN, UP, CRITICAL, …
    state_type: str    # HARD | SOFT
    attempt: int

    @property
    def problem(self) -> bool:
        return self.state.upper() in PROBLEM_STATES[self.kind]

    def should_act(self, soft_attempt: int | None = None) -> tuple[bool, str]:
        """Act on HARD problem states, or on a SOFT one at the chosen attempt."""
        state, kind = self.state.upper(), self.kind
        if state not in PROBLEM_STATES[kind]:
            return False, f'{self.name} is {state}: nothing to do'
        if self.state_type.upper() == 'HARD':
            return True, f'{self.name} is {state} (HARD)'
        if soft_attempt is not None and self.attempt >= soft_attempt:
            return True, f'{self.name} is {state} (SOFT, attempt {self.attempt} >= {soft_attempt})'
        return False, (f'{self.name} is {state} SOFT attempt {self.attempt}: '
                       'waiting for the HARD state')


def parse_event(kind: str, name: str, state: str, state_type: str, attempt: str) -> Event:
    if kind not in PROBLEM_STATES:
        raise ValueError(kind)
    if state_type.upper() not in ('HARD', 'SOFT'):
        raise ValueError(f'state type must be HARD or SOFT, not {state_type!r}')
    try:
        n = int(attempt)
    except ValueError:
        raise ValueError(f'attempt must be a number, not {attempt!r}') from None
    return Event(kind, name, state.upper(), state_type.upper(), n)


class CommandFile:
    """Nagios' external command file (nagios.cmd)."""

    def __init__(self, path: str | None):
        self.path = path

    def send(self, *fields: str) -> bool:
        if not self.path:
            return False
        from xenha.grammar import CONTROL
        # one command a line: no line end, no ';' (the field separator) and no
        # control character (Nagios stores the text, terminals show it) in a field
        line = f'[{int(time.time())}] ' + ';'.join(
            CONTROL.sub(' ', f).replace(';', ',') if i else f
            for i, f in enumerate(fields)) + '\n'
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT, errno.EACCES):
                return False    # no reader (Nagios down), no file, no right
            raise
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return True

    def service_result(self, host: str, service: str, code: int, text: str) -> bool:
        return self.send('PROCESS_SERVICE_CHECK_RESULT', host, service, str(code), text)

    def force_service_check(self, host: str, service: str) -> bool:
        return self.send('SCHEDULE_FORCED_SVC_CHECK', host, service, str(int(time.time())))

    def force_host_check(self, host: str) -> bool:
        return self.send('SCHEDULE_FORCED_HOST_CHECK', host, str(int(time.time())))
