"""`xenha lab up | status | fail HOST | heal HOST | crash DOMU | down`.

`xenha` finds this command through the entry-point group `xenha.commands`
(`COMMAND`); the product never imports the lab."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEFAULT_DIR = os.environ.get('XENHA_LAB_DIR', '/tmp/xenha-lab')


def add_arguments(p) -> None:
    p.add_argument('--dir', default=DEFAULT_DIR,
                   help=f'lab directory (default $XENHA_LAB_DIR or {DEFAULT_DIR})')
    # `xenha lab down --dir D` works as well as `xenha lab --dir D down`
    import argparse
    here = argparse.ArgumentParser(add_help=False)
    here.add_argument('--dir', default=argparse.SUPPRESS,
                      help='lab directory (as before the action)')
    sub = p.add_subparsers(dest='lab_command', required=True, metavar='ACTION')

    def action(name, **kw):
        return sub.add_parser(name, parents=[here], **kw)
    s = action('up', help='bring the lab cluster up')
    s.add_argument('--no-storage', action='store_true', help='no tgtd / vblade')
    s.add_argument('--no-bmc', action='store_true', help='no ipmi_sim BMCs')
    s.add_argument('--nagios', action='store_true', help='also run a real Nagios 4')
    s.add_argument('--xen', choices=('sim', 'qemu'), default='sim',
                   help='dom0 kind: sim (sshd + simulated toolstack, seconds) or qemu '
                        '(real Xen 4.17 under QEMU/TCG, minutes; needs the image)')
    s = action('image', help='build (or show) the cached real-Xen dom0 image')
    s.add_argument('--force', action='store_true', help='rebuild even when cached')
    action('status', help='what runs where, what is up')
    action('down', help='stop everything the lab started and remove it')
    s = action('fail', help='make a dom0 fail')
    s.add_argument('host')
    s.add_argument('--how', choices=('power', 'hang', 'partition', 'toolstack', 'garbage'),
                   default='power', help='power off (default), hang (SIGSTOP sshd), '
                   'partition (sshd gone, host and guests go on), toolstack error, '
                   'toolstack garbage')
    s = action('heal', help='undo `fail` (power on, resume, clear faults)')
    s.add_argument('host')
    for verb, what in (('crash', 'crash'), ('pause', 'pause')):
        s = action(verb, help=f'{what} a domU where it runs')
        s.add_argument('domu')
    s = action('reboot', help='a domU reboots: missing from xl list for a while')
    s.add_argument('domu')
    s.add_argument('--gap', type=float, default=10.0, metavar='S',
                   help='seconds it is missing (default 10)')


def main(argv: list[str], prog: str = 'xenha lab') -> int:
    import argparse
    p = argparse.ArgumentParser(prog=prog)
    add_arguments(p)
    return run(p.parse_args(argv))


class Command:
    """What `xenha` needs of a command another package adds."""

    def __init__(self, help: str, main):
        self.help, self.main = help, main


COMMAND = Command('a whole cluster on this machine (demo, tests)', main)


def _lab(args):
    from xenha_lab.core import Lab
    if not (Path(args.dir) / 'lab.json').exists():
        print(f'xenha lab: no lab in {args.dir} (xenha lab --dir {args.dir} up)',
              file=sys.stderr)
        raise SystemExit(2)
    return Lab.load(args.dir)


def _find_domu(lab, name):
    from xenha_lab import dom0, xensim
    for host in lab.info['hosts']:
        sd = dom0.state_dir(lab, host)
        if any(d['name'] == name for d in xensim.read(sd)['domains']):
            return sd
    raise SystemExit(f'xenha lab: {name} runs nowhere')


def run(args) -> int:
    from xenha_lab import dom0, xensim
    cmd = args.lab_command
    if cmd == 'image':
        from xenha_lab import xenimage
        return xenimage.image_main(['--force'] if args.force else [])
    if cmd == 'up':
        from xenha_lab import cluster
        if (Path(args.dir) / 'lab.json').exists():
            print(f'xenha lab: a lab is already up in {args.dir} (xenha lab down first)',
                  file=sys.stderr)
            return 2
        t = time.monotonic()
        if args.xen == 'qemu':
            from xenha_lab import qemu
            why = qemu.cannot_run(2)
            if why:
                print(f'xenha lab: cannot run real-Xen dom0s here: {why}', file=sys.stderr)
                return 2
        lab = cluster.up(args.dir, storage=not args.no_storage, bmc=not args.no_bmc,
                         nagios=args.nagios, xen=args.xen,
                         say=lambda s: print(f'  {s}', flush=True))
        print(f'lab up in {time.monotonic() - t:.1f}s: {lab.dir}')
        print(f'  inventory: {cluster.inventory_path(lab)}')
        print(f'  try: XENHA_INVENTORY={cluster.inventory_path(lab)} xenha status --live')
        return 0
    lab = _lab(args)
    if cmd == 'down':
        problems = lab.down()
        for p in problems:
            print(f'xenha lab: {p}', file=sys.stderr)
        print(f'lab {args.dir} is down')
        return 1 if problems else 0
    if cmd == 'status':
        return status(lab)
    if cmd in ('crash', 'pause'):
        xensim.set_domain_state(_find_domu(lab, args.domu),
                                args.domu, 'crashed' if cmd == 'crash' else 'paused')
        print(f'{args.domu}: {cmd}ed')
        return 0
    if cmd == 'reboot':
        xensim.reboot(_find_domu(lab, args.domu), args.domu, args.gap)
        print(f'{args.domu}: rebooting, missing from xl list for {args.gap:g}s')
        return 0
    if args.host not in lab.info['hosts']:
        print(f'xenha lab: no host {args.host}', file=sys.stderr)
        return 2
    kind = dom0.kind(lab, args.host)
    toolstack_faults = 'toolstack' in kind.FAULTS     # the simulator's
    sd = dom0.state_dir(lab, args.host) if toolstack_faults else None
    if cmd == 'fail' and args.how not in kind.FAULTS:
        print(f'xenha lab: {args.host} {kind.WHAT}: only --how {"|".join(kind.FAULTS)}',
              file=sys.stderr)
        return 2
    if cmd == 'fail':
        if args.how == 'power':
            dom0.power(lab, args.host, on=False)
        elif args.how == 'hang':
            dom0.hang(lab, args.host)
        elif args.how == 'partition':
            dom0.partition(lab, args.host)
        else:
            xensim.set_fault(sd, 'fail' if args.how == 'toolstack' else 'garbage')
        print(f'{args.host}: failed ({args.how})')
    else:
        dom0.resume(lab, args.host)
        dom0.power(lab, args.host, on=True)
        if sd:
            xensim.set_fault(sd, None)
        if args.host in lab.info.get('bmc', {}):
            from xenha_lab import bmc
            bmc.set_fault(lab, args.host, None)
            bmc.resume(lab, args.host)
            if not lab.alive(f'bmc-{args.host}'):
                bmc.start(lab, args.host)
        print(f'{args.host}: healed')
    return 0


def status(lab) -> int:
    from xenha_lab import dom0
    print(f'lab {lab.dir} (block {lab.block})')
    roles = lab.info.get('roles', {})
    for host, h in lab.info['hosts'].items():
        power = 'on' if dom0.powered(lab, host) else 'OFF'
        guests = ', '.join(f'{n}({s})' for n, s in dom0.domains(lab, host))
        fault = dom0.kind(lab, host).fault(lab, host)
        fault = f' {fault}' if fault else ''
        print(f"  {host:<8} {roles.get(host, ''):<7} {h['address']}:{h['port']} "
              f"power {power}{fault}  {guests or '-'}")
    st = lab.info.get('storage')
    if st:
        print(f"  storage  tgtd {st['portal']}:{st['port']} "
              f"{'up' if lab.alive('tgtd') else 'DOWN'}; "
              f"targets {', '.join(t['name'].split(':')[-1] for t in st['targets'])}")
    for host, b in lab.info.get('bmc', {}).items():
        print(f"  bmc      {host}: {b['address']}:{b['port']}")
    n = lab.info.get('nagios')
    if n:
        print(f"  nagios   {n['dir']} {'up' if lab.alive('nagios') else 'DOWN'}")
    return 0
