"""What every xenha check shares: options, runner and toolstack set-up, size ranges.

Options follow the monitoring-plugins conventions so operators guess them
right: no ``-H`` means local mode (NRPE, check_by_ssh, Icinga agent).
Imports stay light: nagiosplugin is imported by the plugins themselves and
paramiko only when SSH is actually used.
"""

from __future__ import annotations

import argparse
import re
import shlex


_SIZE_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$', re.I)
_UNITS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4, 'P': 1024 ** 5}


def parse_size(text: str | int | float) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``1048576`` (plain = bytes).

    >>> parse_size('4G'), parse_size('512M'), parse_size('100')
    (4294967296, 536870912, 100)
    """
    if isinstance(text, (int, float)):
        return int(text)
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f'not a size: {text!r} (try 512M, 4G)')
    return int(float(m[1]) * _UNITS[m[2].upper()])


def size_range(text: str | None) -> str | None:
    """A nagiosplugin range whose bounds may carry size suffixes, in bytes.

    >>> size_range('4G:'), size_range('@1G:2G'), size_range('~:512M')
    ('4294967296:', '@1073741824:2147483648', '~:536870912')
    """
    if text is None or text == '':
        return text
    inverted = text.startswith('@')
    body = text[1:] if inverted else text
    if ':' in body:
        low, high = body.split(':', 1)
    else:
        low, high = None, body
    def conv(part):
        if part in (None, '', '~'):
            return part
        return str(parse_size(part))
    out = f'{conv(low)}:{conv(high)}' if low is not None else conv(high)
    return ('@' if inverted else '') + out


class ArgumentParser(argparse.ArgumentParser):
    """A usage error is UNKNOWN (exit 3) with a status line, not argparse's exit 2."""

    def __init__(self, check_name: str, doc: str, **kw):
        first, _, rest = doc.strip().partition('\n\n')
        super().__init__(description=first, epilog=rest or None,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        self.check_name = check_name

    def error(self, message):
        import sys
        self.print_usage(sys.stderr)
        print(f'{self.check_name} UNKNOWN - {message.replace("|", "/")}')
        sys.exit(3)


def add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('remote mode (SSH); without -H the check runs locally')
    g.add_argument('-H', '--hostname', metavar='HOST',
                   help='dom0 to check over SSH (no -H: local mode)')
    g.add_argument('-p', '--port', type=int, default=22, help='SSH port (default 22)')
    g.add_argument('-l', '--logname', default='root', metavar='USER',
                   help='SSH user (default root)')
    g.add_argument('-i', '--identity', metavar='KEYFILE',
                   help='SSH private key (default: ~/.ssh/id_*)')
    g.add_argument('--known-hosts', metavar='FILE',
                   help='known_hosts file to verify host keys (default ~/.ssh/known_hosts)')
    g.add_argument('--ssh-accept-new-host-key', action='store_true',
                   help='trust and record an unknown host key on first contact '
                        '(a changed key is always refused)')


def add_toolstack_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('toolstack')
    g.add_argument('--toolstack', choices=('xl', 'xm', 'auto'), default='auto',
                   help='xl (Xen 4.x), xm (Xen 3.x) or auto (xl, else xm); default auto')
    g.add_argument('--toolstack-command', metavar='CMD',
                   help="argv prefix as one shell-quoted string, the verb is appended "
                        "(e.g. 'sudo -n /usr/sbin/xl')")
    g.add_argument('--sudo', action='store_true',
                   help="prefix every command with 'sudo -n'")


def add_inventory_argument(parser: argparse.ArgumentParser) -> None:
    """--inventory, for the checks that read the cluster description."""
    parser.add_argument('--inventory', default='/etc/xenha/cluster.toml', metavar='FILE',
                        help='cluster description (default /etc/xenha/cluster.toml)')


def add_common_arguments(parser: argparse.ArgumentParser, timeout: int = 10) -> None:
    parser.add_argument('-t', '--timeout', type=float, default=timeout,
                        help=f'seconds before giving up (UNKNOWN); default {timeout}')
    parser.add_argument('-v', '--verbose', action='count', default=0,
                        help='more detail (-v, -vv, -vvv)')


def ssh_options(args):
    from xenha.runner import SSHOptions   # lazy: the cached path never runs anything
    return SSHOptions(user=args.logname, port=args.port, identity=args.identity,
                              known_hosts=args.known_hosts,
                              accept_new_host_key=args.ssh_accept_new_host_key,
                              sudo=getattr(args, 'sudo', False))


def make_runner(args):
    """The runner for -H (SSH) or local mode, with timeouts below -t."""
    from xenha import runner as _runner
    return _runner.make_runner(args.hostname, ssh_options(args), args.timeout)


def toolstack(runner, args):
    from xenha.xen import Toolstack
    # the remote command must end before -t fires, so its message names what hung
    return Toolstack(runner, args.toolstack, args.toolstack_command,
                     timeout=max(args.timeout - 0.5, 0.5))


def describe(exc: Exception) -> str:
    """One line for an UNKNOWN/CRITICAL message (no `|`: it starts perfdata)."""
    return str(exc).replace('|', '/').splitlines()[0] if str(exc) else type(exc).__name__


def quote(argv) -> str:
    return shlex.join(argv)
