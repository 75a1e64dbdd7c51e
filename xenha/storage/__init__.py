"""Storage targets: iSCSI (iscsi.py), AoE (aoe.py), and what a spare runs (attach.py)."""

import time


def poll(runner, argv, ready, timeout: float, interval: float,
         command_timeout: float) -> bool:
    """Run argv on the host behind `runner` until ready(output) or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = runner.run(argv, timeout=command_timeout)
        if result.exit == 0 and ready(result.out):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
