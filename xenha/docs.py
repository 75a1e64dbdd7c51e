"""Regenerate the README's command reference from each command's own --help.

    python -m xenha.docs README.md          # rewrite the section
    python -m xenha.docs --check README.md  # exit 1 when it is out of date
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BEGIN = '<!-- BEGIN COMMAND REFERENCE (python -m xenha.docs README.md) -->'
END = '<!-- END COMMAND REFERENCE -->'
COMMANDS = [['check_xen_host'], ['check_xen_domu'], ['check_iscsi_target'],
            ['check_aoe_target'], ['check_xen_capacity'], ['check_fence'],
            ['handle_dom0_event'],
            ['handle_domu_event'], ['xenha'], ['xenha', 'failover'], ['xenha', 'restart'],
            ['xenha', 'status'], ['xenha', 'journal'], ['xenha', 'render'],
            ['xenha', 'lab'], ['xenha', 'demo'], ['xenha', 'study']]


def reference() -> str:
    bindir = Path(sys.executable).parent
    env = dict(os.environ, COLUMNS='96')
    parts = []
    for argv in COMMANDS:
        out = subprocess.run([str(bindir / argv[0]), *argv[1:], '--help'], capture_output=True,
                             text=True, env=env, check=True).stdout
        parts.append(f'### `{" ".join(argv)}`\n\n```\n{out.rstrip()}\n```\n')
    return '\n'.join(parts)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = '--check' in args
    path = Path([a for a in args if a != '--check'][0])
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f'{head}{BEGIN}\n\n{reference()}\n{END}{tail}'
    if check:
        if new != text:
            print(f'{path}: the command reference is out of date: python -m xenha.docs {path}')
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == '__main__':
    sys.exit(main())
