"""`xenha study`: the options, the refusal rules, the outputs."""

from __future__ import annotations

import argparse
import sys


def _sizes(text: str) -> tuple[int, ...]:
    from xenha.plugin import parse_size
    try:
        return tuple(parse_size(x) for x in text.split(',') if x)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    return _sizes(text)[0]


def _counts(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(',') if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a list of client counts: {text!r}') from None
    if not out or min(out) < 1 or max(out) > 64:
        raise argparse.ArgumentTypeError('client counts are 1..64')
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_const', const='quick', dest='mode',
                      help='1 and 3 clients, 4 MiB each, a short sweep (about half a minute)')
    mode.add_argument('--thesis', action='store_const', const='thesis', dest='mode',
                      help="the thesis' run: 1, 3, 6, 9, 15, 20 clients, 300 MiB each "
                           '(the default mode)')
    p.add_argument('--clients', type=_counts, metavar='N,N,…',
                   help='client counts (default 1,3,6,9,15,20; quick: 1,3)')
    p.add_argument('--size', type=_size, metavar='SIZE',
                   help='what each client writes then reads (default 300M; quick: 4M)')
    p.add_argument('--record', type=_size, default=65536, metavar='SIZE',
                   help='bytes per request (default 64K)')
    p.add_argument('--depth', type=int, default=1, metavar='N',
                   help='requests each client keeps open (default 1, as dd)')
    p.add_argument('--protocol', choices=('both', 'iscsi', 'aoe'), default='both')
    p.add_argument('--mtu', type=int, choices=(1500, 9000), default=1500,
                   help='MTU of the AoE links (veth, bridge; default 1500)')
    p.add_argument('--vblade-buffers', type=int, default=16, metavar='N',
                   help="vblade -b: the buffer count it advertises (default 16)")
    p.add_argument('--aoe-retransmit', choices=('adaptive', 'linux-2007'),
                   default='adaptive',
                   help="the AoE client's retransmit policy: today's adaptive one, or "
                        "the 2007 Linux driver's fixed timer (default adaptive)")
    p.add_argument('--backing', choices=('tmpfs', 'file', 'direct'), default='tmpfs',
                   help='backing store of the lab targets: tmpfs, a file, a file with '
                        'O_DIRECT (default tmpfs)')
    p.add_argument('--no-pin', dest='pin', action='store_false',
                   help='do not pin the target to CPU 0 and the clients to the others')
    p.add_argument('--sweep', type=_sizes, metavar='SIZE,…',
                   help='record sizes of the one-client sweep (default 4K,16K,64K,256K,1M; '
                        'quick: 4K,64K)')
    p.add_argument('--sweep-size', type=_size, metavar='SIZE',
                   help='what the sweep writes then reads per record size (default 64M; '
                        'quick: 2M)')
    p.add_argument('--no-sweep', action='store_true', help='skip the record-size sweep')
    p.add_argument('--phase-limit', type=float, metavar='S',
                   help='an AoE phase still running after S seconds stops, counted '
                        'unfinished (default 600; quick: 60)')
    p.add_argument('--output', default='.', metavar='DIR',
                   help='where the JSON (and the plots) go (default: here)')
    p.add_argument('--no-plots', dest='plots', action='store_false')
    g = p.add_argument_group("a site's scratch targets instead of the lab")
    g.add_argument('--inventory', metavar='FILE',
                   help='cluster description naming the targets')
    g.add_argument('--target', action='append', default=[], metavar='NAME',
                   help='an inventory target marked scratch = true (repeat: one per '
                        'client); a target without it is refused')


def options(args):
    from xenha.study.run import Options
    mode = args.mode or 'thesis'
    kw = dict(record=args.record, depth=args.depth, mtu=args.mtu, bufcnt=args.vblade_buffers,
              policy=args.aoe_retransmit, backing=args.backing, pin=args.pin,
              output=args.output, plots=args.plots,
              protocols=('iscsi', 'aoe') if args.protocol == 'both' else (args.protocol,))
    for key, value in (('clients', args.clients), ('size', args.size),
                       ('sweep', args.sweep), ('phase_limit', args.phase_limit),
                       ('sweep_size', args.sweep_size)):
        if value is not None:
            kw[key] = value
    if args.no_sweep:
        kw['sweep'] = ()
    opts = Options.quick(**kw) if mode == 'quick' else Options.thesis(**kw)
    for what, n in (('--size', opts.size), ('--record', opts.record)):
        if n <= 0 or n % 512:
            raise SystemExit(f'xenha study: {what} must be a positive multiple of 512 bytes')
    if opts.size % opts.record:
        raise SystemExit('xenha study: --size must be a multiple of --record')
    if opts.depth < 1 or opts.bufcnt < 1:
        raise SystemExit('xenha study: --depth and --vblade-buffers are at least 1')
    return opts


def run(args) -> int:
    from xenha.study import report
    from xenha.study.run import StudyError, study
    opts = options(args)
    targets = None
    if args.target or args.inventory:
        from xenha.study.site import SiteTargets
        try:
            targets = SiteTargets.from_inventory(args.inventory, args.target, opts)
        except StudyError as exc:
            print(f'xenha study: {exc}', file=sys.stderr)
            return 2
        opts = targets.opts
    paths = []

    def checkpoint(doc):
        if not paths:
            paths.append(report.json_path(doc, opts.output))
        report.save(doc, paths[0])
    try:
        doc = study(opts, say=print, tty=sys.stdout.isatty(), targets=targets,
                    checkpoint=checkpoint)
    except StudyError as exc:
        print(f'xenha study: {exc}', file=sys.stderr)
        if paths:
            print(f'xenha study: what was measured until then: {paths[0]}',
                  file=sys.stderr)
        return 1
    path = paths[0]
    print(f'results: {path}')
    bad = sum((r.get(p) or {}).get('mismatches', 0) for r in doc['runs']
              for p in ('write', 'read'))
    if opts.plots:
        if report.have_matplotlib():
            for png in report.plot(doc, path):
                print(f'plot: {png}')
        else:
            print(f'no plots: {report.PLOTS_HINT}')
    if bad:
        print(f'xenha study: {bad} requests read back other bytes than were written',
              file=sys.stderr)
        return 1
    return 0
