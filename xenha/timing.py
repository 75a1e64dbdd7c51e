"""One time budget per run.

A check is given ``-t SECONDS`` by Nagios and is killed soon after; every wait
it does (SQLite's busy timeout, each SSH phase, each command, each fence agent)
must end before that, so that the check's own message says what hung.  The
budget starts when the process starts (this module is imported first thing by
every check) and is set once, when ``-t`` is parsed: one deadline for the whole
run, which is a property of the process, like the SIGALRM nagiosplugin arms
for the same -t.  Code that waits asks `bound()` for what it may still use.

Commands without a ``-t`` (``xenha failover``, the handlers' detached jobs)
never set it: `left()` is None and every wait keeps its own limit.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()
MAX_TIMEOUT = 3600          # -t above an hour is a typo, not a budget
MARGIN = 0.25               # seconds kept to print the answer


class Budget:
    """A deadline on the monotonic clock; None = no budget."""

    def __init__(self):
        self.deadline: float | None = None
        self.seconds: float | None = None

    def start(self, seconds: float, since: float = STARTED) -> None:
        self.seconds = seconds
        self.deadline = since + seconds

    def left(self) -> float | None:
        """Seconds until the deadline (may be negative), None without a budget."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def bound(self, seconds: float | None, margin: float = MARGIN,
              floor: float = 0.05) -> float | None:
        """`seconds`, cut to what the budget leaves (minus `margin`), never below
        `floor`; `seconds` as it is without a budget (None: no limit of its own)."""
        left = self.left()
        if left is None:
            return seconds
        room = max(left - margin, floor)
        return room if seconds is None else max(min(seconds, room), floor)

    def expired(self, margin: float = 0.0) -> bool:
        left = self.left()
        return left is not None and left <= margin


# The run's budget: set by the -t parser of the checks (xenha.plugin), read by
# the runner, the state database and the fencing code.
RUN = Budget()


def left() -> float | None:
    return RUN.left()


def bound(seconds: float | None, margin: float = MARGIN, floor: float = 0.05):
    return RUN.bound(seconds, margin, floor)

