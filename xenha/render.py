"""`xenha render`: the cluster description → monitoring and Xen configuration.

Three formats, each a set of files rendered from the jinja2 templates in
``templates/`` (installed as the package ``xenha.templates``):

- ``nagios``: command, host, service, group and dependency definitions for a
  ``cfg_dir``, plus ``resource.cfg.example`` saying what each ``$USERn$`` means
  and ``nagios.cfg.example`` with the main settings the HA timing needs;
- ``icinga2``: CheckCommand / EventCommand objects, templates, hosts, apply rules
  and dependencies (include them after ``include <itl>``);
- ``xen``: one domU configuration file per domU (``xl`` syntax, or ``xm`` syntax
  when ``[defaults] toolstack = "xm"``).

`render()` returns the files as ``{relative path: text}``; `write_tree()` writes
them next to the output directory first and then swaps the directory into place,
so a reader (Nagios reloading) never sees half of a rendering, and a bad inventory
writes nothing at all.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from xenha import inventory
from xenha.inventory import Cluster, InventoryError, Timing  # noqa: F401 (Timing: the
# HA timing lives in the inventory's [timing] table; kept importable from here)

FORMATS = ('nagios', 'icinga2', 'xen')
# Written into every output directory: write_tree only replaces a directory
# that holds it (or an empty one), never a directory of someone else's files.
MARKER = '.xenha-render'
MARKER_TEXT = ('This directory is written by `xenha render`, which replaces all of it\n'
               'on every run: do not keep other files here.\n')


@dataclass(frozen=True)
class Options:
    plugin_dir: str | None = None       # None: $USER1$ (Nagios), PluginDir (Icinga 2)
    handler_dir: str | None = None      # None: as plugin_dir
    inventory_path: str | None = None   # None: $USER2$ (Nagios), the inventory's path
    interval_length: int = 60           # nagios.cfg's interval_length, seconds
    contact_group: str = 'admins'
    timeperiod: str = '24x7'


class RenderError(Exception):
    """The inventory cannot be rendered in this format, or not written there."""


# ---------------------------------------------------------------- rendering

def render(cluster: Cluster, fmt: str, options: Options = Options()) -> dict[str, str]:
    """{relative path: content} for one format, or all three in subdirectories."""
    if fmt == 'all':
        return {f'{f}/{path}': text for f in FORMATS
                for path, text in render(cluster, f, options).items()}
    if fmt not in FORMATS:
        raise RenderError(f'unknown format {fmt!r} (nagios, icinga2, xen or all)')
    problems = check_options(options, fmt) + check_values(cluster)
    if problems:
        raise RenderError('; '.join(problems))
    env = _environment(options)
    context = _context(cluster, options, fmt)
    names = {'nagios': ('commands.cfg', 'templates.cfg', 'dom0s.cfg', 'storage.cfg',
                        'domus.cfg', 'cluster.cfg', 'groups.cfg', 'dependencies.cfg',
                        'resource.cfg.example', 'nagios.cfg.example'),
             'icinga2': ('commands.conf', 'templates.conf', 'hosts.conf',
                         'services.conf', 'groups.conf', 'dependencies.conf')}
    if fmt == 'xen':
        _check_xen(cluster)
        tpl = env.get_template('xen/domu.cfg.j2')
        xm = cluster.defaults.toolstack == 'xm'
        return {f'{u.name}.cfg': tpl.render(context, u=u, xm=xm)
                for u in cluster.domus.values()}
    return {name: env.get_template(f'{fmt}/{name}.j2').render(context)
            for name in names[fmt]}


def _template_root():
    """The templates: the installed package data, or the checkout's templates/."""
    try:
        root = resources.files('xenha.templates')
        if root.joinpath('nagios').is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / 'templates'


def _environment(options: Options) -> jinja2.Environment:
    root = _template_root()

    def load(name):
        try:
            return root.joinpath(*name.split('/')).read_text(encoding='utf-8')
        except FileNotFoundError:
            return None

    env = jinja2.Environment(loader=jinja2.FunctionLoader(load), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(cq=_command_word, aq=_argument_word, nv=_nagios_value,
                       mv=_main_value, iq=_icinga_string, im=_icinga_macro_string,
                       xq=_xen_string, cm=_comment,
                       units=lambda s: _units(s, options))
    return env


# Each output format has its own escaping rules.  The inventory's grammars
# already keep every value printable and on one line; these refuse what their
# format cannot hold (RenderError) instead of writing it, and escape what it can.

def _refuse_control(value: str, where: str) -> str:
    from xenha import grammar
    value = str(value)
    c = grammar.control(value)
    if c:
        raise RenderError(f'{inventory.show(value, 80)}: contains {c}, which {where} '
                          'cannot hold: not rendered')
    return value


def _command_word(value) -> str:
    """One shell word for a Nagios command_line (Nagios hands a line with quotes
    to /bin/sh): a `$USERn$` macro as it is; anything else quoted when needed,
    with `$` doubled (else a macro) and `;` escaped (else a comment in the
    object file)."""
    value = _refuse_control(value, 'a Nagios command line')
    from xenha import grammar
    if grammar.macro(value):
        return value
    return shlex.quote(value).replace('$', '$$').replace(';', r'\;')


def _argument_word(value) -> str:
    """One shell word inside a check_command argument ($ARGn$): as a command
    word, and `!` escaped (else an argument separator)."""
    value = _refuse_control(value, 'a Nagios check_command')
    from xenha import grammar
    if grammar.macro(value):
        return value
    return _command_word(value).replace('!', r'\!')


def _nagios_value(value) -> str:
    """A Nagios object directive's value: one line, no blank at either end (Nagios
    strips them), `;` escaped (else a comment)."""
    value = _refuse_control(value, 'a Nagios object definition')
    if value != value.strip():
        raise RenderError(f'{value!r}: Nagios strips blanks at the ends of a value: '
                          'not rendered')
    return value.replace(';', r'\;')


def _main_value(value) -> str:
    """A nagios.cfg setting's value: one line, no blank at either end."""
    value = _refuse_control(value, 'nagios.cfg')
    if value != value.strip():
        raise RenderError(f'{value!r}: nagios.cfg strips blanks at the ends of a value: '
                          'not rendered')
    return value


_ICINGA_ESCAPES = {'\\': '\\\\', '"': '\\"', '\n': '\\n', '\t': '\\t', '\r': '\\r',
                   '\b': '\\b', '\f': '\\f'}


def _icinga_string(value) -> str:
    """A double-quoted Icinga 2 string: \\ \" and the escapes Icinga 2 knows
    (\\n \\t \\r \\b \\f); any other control character is refused."""
    value = str(value)
    out = ''.join(_ICINGA_ESCAPES.get(c, c) for c in value)
    _refuse_control(out, 'an Icinga 2 string')
    return f'"{out}"'


def _icinga_macro_string(value) -> str:
    """An Icinga 2 string that is resolved as a macro (custom variables, command
    arrays: Icinga 2 resolves them recursively): also `$` doubled."""
    return _icinga_string(str(value).replace('$', '$$'))


def _xen_string(value) -> str:
    """A double-quoted string for xl (libxlu) and xm (Python) configs: only \\
    and \" are escaped (xl's \\x and octal escapes are unreliable); control
    characters are refused."""
    value = _refuse_control(value, 'an xl or xm config string')
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _comment(value) -> str:
    """Text inside a comment (#… or /* … */): control characters and '*/'
    neutralized, so that a file name cannot end the comment or the line."""
    from xenha import grammar
    return grammar.CONTROL.sub('?', str(value)).replace('*/', '* /')


def _units(seconds: float, options: Options) -> str:
    """Seconds in interval_length units; Nagios 4 reads fractions (0.166667 → 10 s)."""
    return f'{seconds / options.interval_length:.6g}'


def _context(cluster: Cluster, o: Options, fmt: str) -> dict:
    d = cluster.defaults
    icinga = fmt == 'icinga2'
    if icinga:
        # Icinga 2 expressions: the PluginDir constant, or a quoted path (command
        # arrays are resolved as macros: `$` doubled).
        plugin_dir = _icinga_macro_string(o.plugin_dir) if o.plugin_dir else 'PluginDir'
        handler_dir = _icinga_macro_string(o.handler_dir) if o.handler_dir else plugin_dir
        inv = o.inventory_path or str(Path(cluster.source).resolve())
    else:
        plugin_dir = _command_word(o.plugin_dir or '$USER1$')
        handler_dir = _command_word(o.handler_dir) if o.handler_dir else plugin_dir
        inv = _command_word(o.inventory_path or '$USER2$')
    storage = [dict(name=s.name, address=s.address,
                    targets=[t for t in cluster.targets.values() if t.storage == s.name])
               for s in cluster.storage.values()]
    dom0s = [dict(name=h.name, address=h.address, role=h.role, port=h.port,
                  ssh_user=h.ssh_user, ssh_key=h.ssh_key, known_hosts=h.known_hosts,
                  toolstack=h.toolstack, toolstack_command=h.toolstack_command,
                  args=_args(('-p', h.port), ('-l', h.ssh_user), ('-i', h.ssh_key),
                             ('--known-hosts', h.known_hosts), ('--toolstack', h.toolstack),
                             ('--toolstack-command', h.toolstack_command),
                             ('--sudo', d.sudo)))
             for h in cluster.dom0s.values()]
    dependencies = [dict(domu=u.name, target=t, storage=cluster.targets[t].storage)
                    for u in cluster.domus.values() for t in u.targets]
    return dict(
        source=Path(cluster.source).name, d=d, o=o, t=cluster.timing,
        il=o.interval_length, plugin_dir=plugin_dir, handler_dir=handler_dir,
        inventory=inv,
        plugin_timeout=cluster.timing.check_timeout,
        host_check_timeout=cluster.timing.dom0_check_timeout,
        kill_timeouts=_kill_timeouts(cluster.timing),
        dom0s=dom0s, spares=cluster.spares(), storage=storage,
        targets=list(cluster.targets.values()), domus=list(cluster.domus.values()),
        dependencies=dependencies, target_args=_target_args,
        targets_of=cluster.targets_of, disk_name=disk_name,
    )


def disk_name(index: int) -> str:
    """The guest's name for its index-th disk: xvda … xvdz, xvdaa … (as Linux).

    >>> [disk_name(i) for i in (0, 7, 25, 26, 27, 701, 702)]
    ['xvda', 'xvdh', 'xvdz', 'xvdaa', 'xvdab', 'xvdzz', 'xvdaaa']
    """
    letters = ''
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord('a') + rest) + letters
    return 'xvd' + letters


# ---------------------------------------------------------------- defence in depth

def check_values(cluster: Cluster) -> list[str]:
    """Every value the renderings carry, checked again against its grammar.

    The loader already did this; a Cluster built some other way (or a grammar
    loosened one day) must still never put, say, `$(…)` into a host address
    that Nagios hands to /bin/sh.  Returns the problems, one line each."""
    from xenha import grammar as g
    d = cluster.defaults
    checks = [('[defaults] state_db', d.state_db, g.path),
              ('[defaults] cluster_host', d.cluster_host, g.name),
              ('[defaults] failover_service', d.failover_service, g.service),
              ('[defaults] nagios_command_file', d.nagios_command_file, g.path)]
    for h in cluster.dom0s.values():
        p = f'[dom0.{inventory.show(h.name, 80)}]'
        checks += [(p, h.name, g.name), (f'{p} address', h.address, g.host),
                   (f'{p} ssh_user', h.ssh_user, g.user),
                   (f'{p} ssh_key', h.ssh_key, g.path),
                   (f'{p} known_hosts', h.known_hosts, g.path),
                   (f'{p} toolstack_command', h.toolstack_command, g.argv)]
    for s in cluster.storage.values():
        p = f'[storage.{inventory.show(s.name, 80)}]'
        checks += [(p, s.name, g.name), (f'{p} address', s.address, g.host)]
    for t in cluster.targets.values():
        p = f'[target.{inventory.show(t.name, 80)}]'
        checks.append((p, t.name, g.name))
        if t.kind == 'iscsi':
            try:
                g.portal(t.portal)
                checks.append((f'{p} device', t.device, g.device))
            except (ValueError, TypeError) as exc:
                checks.append((f'{p} portal', t.portal, lambda v, e=exc: str(e)))
            checks += [(f'{p} iqn', t.iqn, g.iqn),
                       (f'{p} chap_user', t.chap_user, g.chap_user),
                       (f'{p} chap_secret_file', t.chap_secret_file, g.path)]
        else:
            checks += [(f'{p} interface', t.interface, g.interface),
                       (f'{p} device', t.device, g.device)]
    for u in cluster.domus.values():
        p = f'[domu.{inventory.show(u.name, 80)}]'
        checks += [(p, u.name, g.domain), (f'{p} config', u.config, g.path),
                   (f'{p} kernel', u.kernel, g.path), (f'{p} ramdisk', u.ramdisk, g.path),
                   (f'{p} extra', u.extra, g.text),
                   (f'{p} bootloader', u.bootloader, g.program)]
        checks += [(f'{p} vif[{i}]', v, g.vif) for i, v in enumerate(u.vif)]
    problems = []
    for where, value, check in checks:
        if value is None:
            continue
        why = check(value) if isinstance(value, str) else 'not a string'
        if why:
            problems.append(f'{where} = {inventory.show(repr(value), 120)}: {why}')
    for h in cluster.dom0s.values():
        if isinstance(h.port, bool) or not isinstance(h.port, int) or not 0 < h.port < 65536:
            problems.append(f'[dom0.{inventory.show(h.name, 80)}] port = {h.port!r}: '
                            'not a TCP port')
    return problems


def check_options(o: Options, fmt: str) -> list[str]:
    """The render options end up in the objects too: same grammars."""
    from xenha import grammar as g
    problems = []
    for flag, value in (('--plugin-dir', o.plugin_dir), ('--handler-dir', o.handler_dir),
                        ('--config-inventory', o.inventory_path)):
        if value is None:
            continue
        why = g.path_or_macro(value)
        if why is None and g.macro(value) and fmt in ('icinga2', 'all'):
            why = 'a $USERn$ macro is for Nagios only: Icinga 2 needs a path'
        if why:
            problems.append(f'{flag} {inventory.show(repr(value), 120)}: {why}')
    for flag, value in (('--contact-group', o.contact_group),
                        ('--timeperiod', o.timeperiod)):
        why = g.name(value)
        if why:
            problems.append(f'{flag} {inventory.show(repr(value), 120)}: {why}')
    if isinstance(o.interval_length, bool) or not isinstance(o.interval_length, int) \
            or not 1 <= o.interval_length <= 3600:
        problems.append(f'--interval-length {o.interval_length!r}: must be a whole number '
                        'of seconds between 1 and 3600')
    return problems


# Nagios' own limits (nagios.cfg host_check_timeout, service_check_timeout) and
# Icinga 2's CheckCommand timeout: past them the daemon kills a check.
MONITOR_KILL_DEFAULTS = {'host': 30, 'service': 60}
KILL_MARGIN = 5     # a check's own -t must fire first, so its message says what hung


def _kill_timeouts(t: Timing) -> dict[str, int]:
    """{'host': s, 'service': s} for the limits the rendered -t values would
    exceed (with a margin); empty for the default timing."""
    want = {'host': t.dom0_check_timeout,
            'service': max(t.check_timeout, t.capacity_timeout)}
    return {k: v + KILL_MARGIN for k, v in want.items()
            if v + KILL_MARGIN > MONITOR_KILL_DEFAULTS[k]}


def _args(*pairs) -> str:
    """'-i KEY --known-hosts FILE' for a check_command's $ARG1$ (not a custom
    variable: Nagios strips the quotes out of those, see illegal_macro_output_chars).
    None values are left out; a None flag is a flag alone (--sudo)."""
    return ' '.join(flag if value is True else f'{flag} {_argument_word(value)}'
                    for flag, value in pairs if value not in (None, False))


def _target_args(t) -> str:
    if t.kind == 'aoe':
        return _args(('--interface', t.interface), ('--shelf', t.shelf), ('--slot', t.slot))
    return _args(('-H', t.host), ('-p', t.port), ('--target', t.iqn), ('--lun', t.lun),
                 ('--chap-user', t.chap_user), ('--chap-secret-file', t.chap_secret_file))


def _check_xen(cluster: Cluster) -> None:
    """What a domU config needs beyond what the inventory requires."""
    errors = []
    for u in cluster.domus.values():
        if u.type == 'pv' and not (u.kernel or u.bootloader):
            errors.append(f'{cluster.source}: [domu.{u.name}]: a PV domU needs kernel '
                          'or bootloader to render its Xen config')
        if u.type == 'pvh' and cluster.defaults.toolstack == 'xm':
            errors.append(f'{cluster.source}: [domu.{u.name}] type = \'pvh\': xm does '
                          'not know PVH guests')
    if errors:
        raise InventoryError(errors)


# ---------------------------------------------------------------- writing

def write_tree(files: dict[str, str], outdir) -> None:
    """Write `files` under `outdir`, replacing it whole: render into a temporary
    directory beside it, then rename.  On any error nothing in `outdir` changes."""
    outdir = Path(outdir).absolute()
    if outdir.exists() and not _replaceable(outdir):
        raise RenderError(f'{outdir}: not written by xenha render (no {MARKER} file) '
                          'and not empty: refusing to replace it')
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{outdir.name}.new-', dir=outdir.parent))
    try:
        for rel, text in sorted(files.items()):
            path = tmp / rel
            if Path(rel).is_absolute() or '..' in Path(rel).parts:
                raise RenderError(f'{rel}: not a relative path inside the output')
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding='utf-8')
        (tmp / MARKER).write_text(MARKER_TEXT, encoding='utf-8')
        os.chmod(tmp, 0o755)            # mkdtemp made it 0700: Nagios must read it
        if outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{outdir.name}.old-', dir=outdir.parent))
            # Two renames (no atomic directory swap in the stdlib): a reader may
            # find no directory for an instant, never a half-written one.
            os.rename(outdir, old / 'tree')
            try:
                os.rename(tmp, outdir)
            except BaseException:
                os.rename(old / 'tree', outdir)
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replaceable(outdir: Path) -> bool:
    return outdir.is_dir() and ((outdir / MARKER).is_file() or not any(outdir.iterdir()))


# ---------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--inventory', metavar='FILE', default='/etc/xenha/cluster.toml',
                        help='the cluster description (default: %(default)s)')
    parser.add_argument('--format', choices=FORMATS + ('all',), default='nagios',
                        help='what to render (default: %(default)s; all: one '
                        'subdirectory per format: point cfg_dir at DIR/nagios, the '
                        'domU files end in .cfg too)')
    parser.add_argument('--output', metavar='DIR', required=True,
                        help='directory to (re)write whole; created if missing')
    parser.add_argument('--plugin-dir', metavar='DIR',
                        help='where the xenha plugins are (default: $USER1$ for '
                        'Nagios, PluginDir for Icinga 2)')
    parser.add_argument('--handler-dir', metavar='DIR',
                        help='where the event handlers are (default: the plugin dir)')
    parser.add_argument('--config-inventory', metavar='PATH',
                        help='inventory path written into the configuration for the '
                        'handlers and checks (default: $USER2$ for Nagios, the '
                        'absolute --inventory path for Icinga 2)')
    parser.add_argument('--interval-length', metavar='SECONDS', type=int, default=60,
                        help="nagios.cfg's interval_length (default: %(default)s)")
    parser.add_argument('--fast', action='store_true',
                        help='for a lab Nagios with interval_length=1 (same as '
                        '--interval-length 1)')
    parser.add_argument('--contact-group', default='admins', metavar='NAME',
                        help='Nagios contact group to notify (default: %(default)s)')
    parser.add_argument('--timeperiod', default='24x7', metavar='NAME',
                        help='Nagios check and notification period (default: '
                        '%(default)s)')


def run(args: argparse.Namespace) -> int:
    """Load, render, write; exit 0, 2 for a bad inventory or usage, 1 if writing fails."""
    if not 1 <= args.interval_length <= 3600:
        print('xenha render: --interval-length must be at '
              + ('least 1' if args.interval_length < 1 else 'most 3600'), file=sys.stderr)
        return 2
    options = Options(plugin_dir=args.plugin_dir, handler_dir=args.handler_dir,
                      inventory_path=args.config_inventory,
                      interval_length=1 if args.fast else args.interval_length,
                      contact_group=args.contact_group, timeperiod=args.timeperiod)
    problems = check_options(options, args.format)
    if problems:
        for line in problems:
            print(f'xenha render: {line}', file=sys.stderr)
        return 2
    try:
        cluster = inventory.load(args.inventory)
        files = render(cluster, args.format, options)
    except InventoryError as e:
        print(f'xenha render: {inventory.show(args.inventory)}: {len(e.errors)} error(s), '
              'nothing written:', file=sys.stderr)
        for line in e.errors:
            print(f'  {line}', file=sys.stderr)
        return 2
    except RenderError as e:
        print(f'xenha render: {inventory.show(args.inventory)}: nothing written: {e}',
              file=sys.stderr)
        return 2
    try:
        write_tree(files, args.output)
    except (RenderError, OSError) as e:
        print(f'xenha render: {e}', file=sys.stderr)
        return 1
    print(f'xenha render: {len(files)} {args.format} file(s) in {args.output}')
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='xenha render', description=__doc__.split(
        '\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
