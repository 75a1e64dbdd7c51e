"""What every xenha check shares: options, runner and toolstack set-up, ranges,
and the guard every check runs under.

Options follow the monitoring-plugins conventions so operators guess them
right: no ``-H`` means local mode (NRPE, check_by_ssh, Icinga agent).
Imports stay light: nagiosplugin is imported by the plugins themselves and
paramiko only when SSH is actually used.

`run()` is every check's entry point (the scripts in plugins/ call it): the
check's main runs under it, and whatever it did not expect becomes one status
line ``NAME UNKNOWN - <what failed>: <why>`` (the traceback only at -vvv);
every status line is capped and stripped of control characters, whatever a
host, an agent or a hostile name put into it.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex

from xenha import timing   # first: the run's time budget starts with the process
from xenha import units


def parse_size(text: str | int | float) -> int:
    """Bytes from a check's size option (a plain number is bytes): see xenha.units."""
    return units.parse_size(text)


_NUMBER = r'[-+]?(?:\d+(?:\.\d*)?|\.\d+)'


def parse_range(text: str | None, sizes: bool = False) -> str | None:
    """A threshold range ``[@][start:][end]`` (monitoring-plugins syntax),
    checked and written the way nagiosplugin reads it; with `sizes`, bounds may
    carry K M G T P suffixes and are turned into bytes.  ValueError says what
    is wrong (not a number, start above end, ``~`` as an end).

    >>> parse_range('4G:', sizes=True), parse_range('@1G:2G', sizes=True)
    ('4294967296:', '@1073741824:2147483648')
    >>> parse_range('~:512M', sizes=True), parse_range('0.5'), parse_range('10:20')
    ('~:536870912', '0.5', '10:20')
    """
    if text is None or text == '':
        return text
    inverted = text.startswith('@')
    body = text[1:] if inverted else text
    low, sep, high = body.partition(':') if ':' in body else (None, '', body)
    usage = 'use [@][start:][end], e.g. 10, 10:, ~:10, 10:20, @10:20'
    pattern = (rf'({_NUMBER})\s*([KMGTP]?)(?:i?B)?' if sizes else rf'({_NUMBER})')

    def number(part: str, what: str) -> float:
        m = re.fullmatch(pattern, part.strip(), re.I)
        if not m:
            raise ValueError(f'not a range: {text!r}: its {what} {part!r} is not a '
                             + ('size (try 512M, 4G)' if sizes else f'number ({usage})'))
        value = float(m.group(1)) * (units.UNITS[m.group(2).upper()] if sizes else 1)
        if not math.isfinite(value):
            raise ValueError(f'not a range: {text!r}: its {what} is not finite')
        return value

    if high == '~' or ':' in high:
        raise ValueError(f'not a range: {text!r} ({usage})')
    start = -math.inf if low == '~' else 0.0 if not low else number(low, 'start')
    end = math.inf if high == '' else number(high, 'end')
    if start > end:
        raise ValueError(f'not a range: {text!r}: its start ({low}) is above its end '
                         f'({high})')

    def atom(v: float) -> str:       # nagiosplugin: int() without a '.', else float()
        return str(int(v)) if v.is_integer() else f'{v:.12f}'.rstrip('0')
    out = '' if low is None else ('~' if low == '~' else atom(start)) + ':'
    out += '' if high == '' else atom(end)
    return ('@' if inverted else '') + out


def size_range(text: str | None) -> str | None:
    """A nagiosplugin range whose bounds may carry size suffixes, in bytes.

    >>> size_range('4G:'), size_range('@1G:2G'), size_range('~:512M')
    ('4294967296:', '@1073741824:2147483648', '~:536870912')
    """
    return parse_range(text, sizes=True)


def range_arg(sizes: bool = False):
    """An argparse type for -w/-c: a bad range is a usage error (UNKNOWN) that
    says why, before anything runs."""
    def parse(text):
        try:
            return parse_range(text, sizes)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = 'range'
    return parse


def timeout_arg(text: str) -> float:
    """-t: whole seconds from 1 to 3600 (nagiosplugin's alarm counts whole
    seconds; nan, inf, 0 and negatives are refused).  It starts the run's budget."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number of seconds: {text!r}') from None
    if not (math.isfinite(value) and value == int(value)
            and 1 <= value <= timing.MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(
            f'must be a whole number of seconds from 1 to {timing.MAX_TIMEOUT}, '
            f'not {text!r}')
    timing.RUN.start(value)
    return value


def port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a port number: {text!r}') from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f'a port is 1 to 65535, not {text!r}')
    return value


def seconds_arg(low: float = 0.0, high: float = 3600.0, low_ok: bool = False):
    """An argparse type for a duration option: finite, within (low, high]."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'not a number of seconds: {text!r}') from None
        if not math.isfinite(value) or value > high or (value < low if low_ok
                                                          else value <= low):
            raise argparse.ArgumentTypeError(
                f'must be a number of seconds {"from" if low_ok else "above"} {low:g} '
                f'to {high:g}, not {text!r}')
        return value
    parse.__name__ = 'seconds'
    return parse


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
    g.add_argument('-p', '--port', type=port_arg, default=22, help='SSH port (default 22)')
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
    g.add_argument('--toolstack-command', metavar='CMD', type=argv_arg,
                   help="argv prefix as one shell-quoted string, the verb is appended "
                        "(e.g. 'sudo -n /usr/sbin/xl')")
    g.add_argument('--sudo', action='store_true',
                   help="prefix every command with 'sudo -n'")


def argv_arg(text: str) -> str:
    """--toolstack-command: the inventory's grammar for an argv prefix."""
    from xenha import grammar
    why = grammar.argv(text)
    if why:
        raise argparse.ArgumentTypeError(why)
    return text


def add_inventory_argument(parser: argparse.ArgumentParser) -> None:
    """--inventory, for the checks that read the cluster description."""
    parser.add_argument('--inventory', default='/etc/xenha/cluster.toml', metavar='FILE',
                        help='cluster description (default /etc/xenha/cluster.toml)')


def add_common_arguments(parser: argparse.ArgumentParser, timeout: int = 10) -> None:
    # a str default: argparse runs it through timeout_arg too, which starts the
    # run's budget whether -t was given or not
    parser.add_argument('-t', '--timeout', type=timeout_arg, default=str(timeout),
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
    text = str(exc).strip()
    return text.replace('|', '/').splitlines()[0] if text else type(exc).__name__


def quote(argv) -> str:
    return shlex.join(argv)


# ---------------------------------------------------------------- the guard

STATUS_LIMIT = 4096      # characters of the status line (summary and perfdata)
OUTPUT_LIMIT = 16384     # characters of the whole output (long output, -vvv logs)
_ANSI = re.compile(r'\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])')


def clean_output(text: str) -> str:
    """A check's output as Nagios should store it: terminal escape sequences
    removed, every other control character (but the line ends) a '?', the
    status line at most STATUS_LIMIT characters (its summary cut first, its
    perfdata kept), the whole at most OUTPUT_LIMIT."""
    from xenha.grammar import CONTROL
    text = _ANSI.sub('', text).replace('\r\n', '\n').replace('\t', ' ')
    lines = [CONTROL.sub('?', line) for line in text.split('\n')]
    first = lines[0]
    if len(first) > STATUS_LIMIT:
        summary, sep, perf = first.partition(' | ')
        perf = perf[:STATUS_LIMIT // 2]
        room = STATUS_LIMIT - len(perf) - len(sep) - 1
        first = summary[:room] + '…' + sep + perf
    lines[0] = first
    out = '\n'.join(lines)
    if len(out) > OUTPUT_LIMIT:
        out = out[:OUTPUT_LIMIT].rstrip('\n') + f'\n(output cut at {OUTPUT_LIMIT} characters)\n'
    return out


def verbosity(argv) -> int:
    """-v count from the raw argv (the guard needs it when parsing itself failed)."""
    n = 0
    for arg in argv:
        if arg == '--':
            break
        if arg == '--verbose':
            n += 1
        elif re.fullmatch(r'-v+', arg):
            n += len(arg) - 1
    return n


def where(exc: BaseException) -> str:
    """'module.function' of the innermost xenha frame the exception came through."""
    import traceback
    found = ''
    for frame in traceback.extract_tb(exc.__traceback__):
        m = re.search(r'/xenha/(.+)\.py$', frame.filename)
        if m:
            found = f"{m.group(1).replace('/', '.')}.{frame.name}"
    return found


def unknown_line(name: str, exc: BaseException) -> str:
    import nagiosplugin
    at = where(exc)
    if isinstance(exc, nagiosplugin.Timeout):
        t = timing.RUN.seconds
        return (f'{name} UNKNOWN - timed out: -t {t:g} ran out' if t else
                f'{name} UNKNOWN - timed out') + (f' (in {at})' if at else '')
    return (f'{name} UNKNOWN - unexpected {type(exc).__name__}'
            + (f' in {at}' if at else '') + f': {describe(exc)}')


def run(name: str, module: str) -> None:
    """Run the check `module`'s main() as the check NAME; exit with its code."""
    import contextlib
    import importlib
    import io
    import sys
    import traceback
    out = io.StringIO()
    code = 3
    try:
        with contextlib.redirect_stdout(out):
            try:
                main = importlib.import_module(module).main
                # nagiosplugin's guard would print a traceback at -v: take its place
                getattr(main, '__wrapped__', main)()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (
                    0 if exc.code is None else 3)
            except BaseException as exc:  # noqa: BLE001 - the one place that catches all
                out.seek(0)
                out.truncate()             # half a status line is worse than none
                print(f'{name} UNKNOWN - interrupted' if isinstance(exc, KeyboardInterrupt)
                      else unknown_line(name, exc))
                if verbosity(sys.argv[1:]) >= 3:
                    print(traceback.format_exc().rstrip())
                code = 3
    finally:
        sys.stdout.write(clean_output(out.getvalue()))
        sys.stdout.flush()
    sys.exit(code)
