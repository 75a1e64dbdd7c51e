"""`xenha demo` (`make demo`): the whole story on the lab, narrated.

Picks the kind of dom0 first (`--xen auto`: real Xen 4.17 under QEMU/TCG when
this machine can run it, else the simulator, saying why), brings up the lab
(dom0s, spare, iSCSI and AoE storage, BMCs), runs every check by hand, starts a
real Nagios 4 on the rendered objects and waits until it shows everything OK,
powers a dom0 off through its BMC, and tells with timestamps what Nagios saw
and what the engine did until every domU of that dom0 runs again elsewhere
(the fast path: its BMC says off at the first failed check); then, on the
simulated dom0s, another dom0 hangs (its BMC says on: the HARD path, nothing
fenced before it); then where everything runs, and the lab goes down.  Hosts, guests and disks
come from the lab itself (lab.info and its inventory), so the story is the same
on both kinds of dom0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
XEN_HOSTS = 2           # dom0s of the real-Xen lab (xenha.lab.qemu.cluster_up)


class Narrator:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, text: str = '') -> None:
        print(f'[{time.monotonic() - self.t0:6.1f}s] {text}', flush=True)

    def section(self, title: str) -> None:
        print(f'\n== {title}', flush=True)


# -- which dom0s -----------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    xen: str                # 'sim' or 'qemu'
    why: str
    build: bool = False     # the real-Xen image has to be built first


class CannotRun(Exception):
    """--xen qemu on a machine that cannot run real-Xen dom0s."""


def choose(requested: str, facts) -> Choice:
    """The dom0 kind for `--xen requested` on a machine with `facts`
    (xenha.lab.qemu.Facts): real Xen when asked for or when `auto` finds
    QEMU, the memory, two CPUs and the image (or what builds it)."""
    from xenha.lab import qemu
    if requested == 'sim':
        return Choice('sim', '--xen sim')
    why = qemu.why_not(facts, XEN_HOSTS, build=True)
    if why is None and requested == 'auto' and facts.cpus < 2:
        why = f'{facts.cpus} CPU here, two emulated dom0s want 2'
    if why is not None:
        if requested == 'qemu':
            raise CannotRun(why)
        return Choice('sim', why)
    image = ('the dom0 image is cached' if facts.image else
             'the dom0 image is built first (about 1.5 minutes, once)')
    return Choice('qemu', f'{qemu.QEMU}, {facts.cpus} CPUs, '
                          f'{facts.available_mb / 1024:.1f} GiB of memory available '
                          f'({XEN_HOSTS} dom0s want {qemu.memory_wanted(XEN_HOSTS) / 1024:.1f}), '
                          f'{image}', build=facts.image is None)


def headline(requested: str, choice: Choice) -> str:
    """The demo's first line: which dom0s, and why."""
    if choice.xen == 'qemu':
        return f'xenha demo: real Xen 4.17 dom0s under QEMU/TCG (--xen {requested})'
    if requested == 'sim':
        return 'xenha demo: simulated dom0s (--xen sim)'
    return f'xenha demo: simulated dom0s: {choice.why}'


INTRO = {
    'sim': ('Three dom0s: real sshds with a simulated xl toolstack.  It takes about '
            'half a minute.'),
    'qemu': ('Two dom0s: QEMU machines booting Debian\'s Xen 4.17 hypervisor and a PV '
             'dom0 with the real xl, open-iscsi and aoe; the domUs are real PV guests on '
             'the shared disks.  It takes about three minutes (two dom0s boot in about a '
             'minute, `xl create` takes 11-30 s under emulation).'),
}
COMMON = ('Around them everything is real: a storage node (tgtd for iSCSI, vblade for '
          'AoE), ipmi_sim BMCs fenced with fence_ipmilan, and a Nagios 4 running the '
          'objects `xenha render` makes of the lab\'s inventory.')


# -- the story ---------------------------------------------------------------------
def _check(say, argv, label=None) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    first = (r.stdout.splitlines() or [r.stderr.strip()])[0].split(' | ')[0]
    say(f'{label or Path(argv[0]).name}: {first}   (exit {r.returncode})')


def run(args) -> int:
    from xenha.lab import qemu
    requested = getattr(args, 'xen', 'auto')
    try:
        choice = choose(requested, qemu.facts())
    except CannotRun as exc:
        print(f'xenha demo: cannot run real-Xen dom0s here: {exc}', file=sys.stderr)
        return 2
    print(headline(requested, choice))
    if choice.xen == 'qemu':
        print(f'  (this machine can: {choice.why})')
    print(INTRO[choice.xen] + '\n' + COMMON, flush=True)
    return tell(args, choice, fallback=requested == 'auto')


def tell(args, choice: Choice, fallback: bool = False) -> int:
    """The story on the dom0s of `choice`; `fallback`: when the real-Xen image
    cannot be built, the simulator instead (saying so)."""
    import signal
    from xenha.lab import cluster, nagios
    from xenha.state import StateDB
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on)
    say = Narrator()
    if choice.build:
        from xenha.lab import xenimage
        say.section('building the real-Xen dom0 image (once; about 1.5 minutes)')
        try:
            xenimage.build(say=say)
        except Exception as exc:  # noqa: BLE001 - auto is best effort: say it, go on
            if not fallback:
                raise
            say(f'the image could not be built ({exc}): simulated dom0s instead')
            choice = Choice('sim', f'the real-Xen image could not be built: {exc}')
    say.section('bringing the lab up')
    lab = cluster.up(args.dir, xen=choice.xen, say=say)
    try:
        c = cluster.cluster(lab)
        say.section('every check, run by hand as Nagios runs it')
        hand_checks(lab, c, say)
        say.section('Nagios: waiting for every check to come back OK')
        nagios.up(lab, say=say)
        _wait_green(lab, say, timeout=max(90, 6 * c.timing.check_timeout))
        victim = max(c.active(), key=lambda h: len(c.domus_homed_on(h.name))).name
        guests = [u.name for u in c.domus_homed_on(victim)]
        say.section(f'pulling the plug: {victim} ({", ".join(guests)}) powered off '
                    'through its BMC')
        power_off(lab, victim)
        t_off = time.monotonic()
        say(f'ipmitool chassis power off: {victim} is dark')
        _follow(lab, c, say, victim, guests, t_off,
                timeout=max(120, 10 * c.timing.check_timeout))
        hung = next((h.name for h in c.active() if h.name != victim
                     and c.domus_homed_on(h.name)), None)
        if hung and choice.xen == 'sim':
            guests = [u.name for u in c.domus_homed_on(hung)]
            say.section(f'a hung dom0: {hung} ({", ".join(guests)}) stops answering, its '
                        'BMC still says on')
            from xenha.lab import dom0 as dom0_lab
            dom0_lab.hang(lab, hung)
            say(f'{hung}: its sshd is frozen (SIGSTOP); the host is powered: not a power '
                'loss, so nothing is fenced before Nagios says DOWN HARD')
            _follow(lab, c, say, hung, guests, time.monotonic(), what='the hang',
                    timeout=max(120, 10 * c.timing.check_timeout))
        elif choice.xen == 'qemu':
            say('(a hung dom0 on the slow path needs a third dom0: the simulated demo '
                'shows it, `make demo XEN=sim`)')
        say.section('where everything runs now')
        subprocess.run([str(BIN / 'xenha'), 'status', '--live', '--inventory',
                        str(cluster.inventory_path(lab))])
        say.section('the journal of the failover job')
        with StateDB(lab.dir / 'state.db') as db:
            for r in db.journal_rows():
                if r['job'] and r['job'] != 'lab-setup':
                    print(f"  {time.strftime('%H:%M:%S', time.localtime(r['at']))}"
                          f".{int(r['at'] % 1 * 1000):03d} {r['step']:<8} {r['message']}")
    finally:
        if args.keep:
            print(f'\nthe lab stays up in {lab.dir}: xenha lab --dir {lab.dir} status; '
                  f'xenha lab --dir {lab.dir} down')
        else:
            # down first: a reader that went away (`| head`) must not leave the lab
            # up, nor a second signal stop the teardown halfway
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            _quietly(say.section, 'tearing the lab down')
            problems = lab.down()
            _quietly(say, 'lab down' + (f' with problems: {problems}' if problems
                                        else ', nothing left'))
    return 0


def _quietly(say, text: str) -> None:
    try:
        say(text)
    except OSError:         # stdout closed: the teardown goes on
        pass


def _exit_on(signum, _frame) -> None:
    """SIGTERM / SIGHUP (a closed terminal) end the demo like Ctrl-C: through
    the `finally` that takes the lab down."""
    raise SystemExit(128 + signum)


def hand_checks(lab, c, say) -> None:
    """Each check of the rendered objects, run once from here, on the lab's own
    hosts, guests and disks (the listing each dom0 check records is the cache
    Nagios' first domU checks use)."""
    from xenha.lab import cluster, dom0, storage
    inv = str(cluster.inventory_path(lab))
    opts = dom0.ssh_options(lab)
    t = c.timing
    ssh = ['-i', opts.identity, '--known-hosts', opts.known_hosts,
           '--state-db', str(lab.dir / 'state.db'), '-t', str(t.check_timeout)]
    if opts.port != 22:
        ssh += ['-p', str(opts.port)]
    # a dom0 is WARNING when it could no longer take every guest, CRITICAL when
    # not even the largest
    mems = [u.memory_mib for u in c.domus.values()] or [0]
    free = ['-w', f'{sum(mems)}M:', '-c', f'{max(mems)}M:']
    for h in c.dom0s.values():
        _check(say, [str(BIN / 'check_xen_host'), '-H', h.address, *ssh, *free],
               f'check_xen_host {h.name}')
    for h in c.dom0s.values():
        _check(say, [str(BIN / 'check_fence'), '--inventory', inv, '--dom0', h.name,
                     '-t', str(t.check_timeout)], f'check_fence {h.name}')
    for u in c.domus:
        _check(say, [str(BIN / 'check_xen_domu'), '--cluster', inv, '--domain', u,
                     '--max-age', str(t.domu_max_age), '-t', str(t.check_timeout)],
               f'check_xen_domu {u}')
    for tg in c.targets.values():
        if tg.kind == 'iscsi':
            _check(say, [str(BIN / 'check_iscsi_target'), '-H', tg.host, '-p', str(tg.port),
                         '--target', tg.iqn, '--lun', str(tg.lun),
                         '-t', str(t.check_timeout)], f'check_iscsi_target {tg.name}')
        else:
            _check(say, ['ip', 'netns', 'exec', storage.netns_of(lab, storage.MONITOR),
                         str(BIN / 'check_aoe_target'), '--interface', tg.interface,
                         '--shelf', str(tg.shelf), '--slot', str(tg.slot),
                         '-t', str(t.check_timeout)],
                   f'check_aoe_target {tg.name} (e{tg.shelf}.{tg.slot})')
    _check(say, [str(BIN / 'check_xen_capacity'), '--inventory', inv,
                 '-t', str(t.capacity_timeout)])


def power_off(lab, host: str) -> None:
    """What an operator's ipmitool does to the dom0's BMC (password from the
    environment, never argv)."""
    b = lab.info['bmc'][host]
    env = dict(os.environ, IPMITOOL_PASSWORD=Path(b['password_file']).read_text().strip())
    subprocess.run(['ipmitool', '-I', 'lanplus', '-H', b['address'], '-p', str(b['port']),
                    '-U', b['username'], '-E', '-C', '3', 'chassis', 'power', 'off'],
                   check=True, env=env, capture_output=True)


def _wait_green(lab, say, timeout: float = 90) -> None:
    from xenha.lab import nagios
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        st = nagios.status(lab)
        want = [(k, v) for k, v in st.items() if (k[0] == 'service' and k[2] != 'failover')
                or (k[0] == 'host' and k[1] in lab.info['hosts'])]
        ok = [k for k, v in want if v.get('has_been_checked') == '1'
              and v.get('current_state') == '0']
        if want and len(ok) == len(want):
            say(f'all {len(want)} checks OK in Nagios')
            return
        if len(ok) != last:
            say(f'{len(ok)}/{len(want)} checks OK ...')
            last = len(ok)
        time.sleep(0.5)
    bad = [f'{" ".join(k[1:])}: {v.get("plugin_output", "not checked yet")}'
           for k, v in want if k not in ok]
    raise SystemExit(f'xenha demo: Nagios did not get to all OK in {timeout:.0f}s: '
                     + '; '.join(bad))


def _where(output: str) -> str | None:
    """The dom0 a "xen domain" result names: 'web1 is running on dom0-2 (...)'."""
    m = re.search(r' on (\S+?)(?: \(|$)', output)
    return m.group(1) if m else None


def _follow(lab, c, say, victim: str, guests: list[str], t_off: float,
            timeout: float = 120, what: str = 'the power-off') -> None:
    """Narrate Nagios' log and the engine's journal until every guest of the
    dead dom0 is OK in Nagios on another dom0, and say which path fired."""
    from xenha.lab import nagios
    from xenha.state import StateDB
    seen_log = len(nagios.log_lines(lab))
    seen_journal = 0
    wall_off = time.time()
    deadline = time.monotonic() + timeout
    ticks = 0
    shown = None
    t = c.timing
    db = StateDB(lab.dir / 'state.db')
    try:
        while time.monotonic() < deadline:
            lines = nagios.log_lines(lab)
            for line in lines[seen_log:]:
                text = line.split('] ', 1)[-1]
                if any(k in text for k in ('ALERT', 'EVENT HANDLER', 'EXTERNAL COMMAND: PROCESS')):
                    say(f'Nagios: {text[:150]}')
            seen_log = len(lines)
            rows = [r for r in db.journal_rows(since=wall_off) if r['job'] != 'lab-setup']
            for r in rows[seen_journal:]:
                say(f"engine: {r['step']}: {r['message'][:150]}")
            seen_journal = len(rows)
            st = nagios.status(lab)
            doms = [st.get(('service', g, 'xen domain'), {}) for g in guests]
            where = {g: _where(d.get('plugin_output', '')) for g, d in zip(guests, doms)}
            if all(d.get('current_state') == '0' and int(d.get('last_check', 0)) >= wall_off
                   and where[g] not in (None, victim) for g, d in zip(guests, doms)):
                places = ', '.join(f'{g} on {where[g]}' for g in guests)
                ends = [r['message'] for r in rows if r['step'] == 'end'
                        and r['dom0'] == victim]
                path = ('the fast path: its BMC said off at the first failed check'
                        if any('(fast path: ' in m for m in ends) else
                        'the HARD path: its BMC said on, so Nagios\' DOWN HARD decided')
                say(f'Nagios shows every guest of {victim} OK again ({places}): recovered '
                    f'{time.monotonic() - t_off:.1f}s after {what}, by {path} (host check '
                    f'every {t.dom0_check} s, retry {t.dom0_retry} s, {t.dom0_attempts} '
                    'attempts)')
                return
            ticks += 1
            host = st.get(('host', victim), {})
            now = (host.get('current_state'), host.get('state_type'),
                   host.get('current_attempt'))
            # a line when Nagios' view of the dead dom0 changes, else every 30 s
            if now != shown or ticks % 120 == 0:
                say(f'... waiting ({victim} in Nagios: state {now[0]}, '
                    f'{"HARD" if now[1] == "1" else "SOFT"}, attempt {now[2]})')
                shown = now
            time.sleep(0.25)
    finally:
        db.close()
    _post_mortem(lab, say, victim, guests)
    raise SystemExit(f'xenha demo: the domUs did not come back in {timeout:.0f}s '
                     '(what the lab shows is above)')


def _post_mortem(lab, say, victim: str, guests: list[str]) -> None:
    """What a reader needs when the story did not end: Nagios' view of the
    dead dom0 and its guests, the event handlers' job log, jobs still running."""
    from xenha.lab import nagios
    say.section('the story did not end: what the lab shows')
    st = nagios.status(lab)
    for key in [('host', victim)] + [('service', g, 'xen domain') for g in guests]:
        v = st.get(key, {})
        say(f'Nagios {" ".join(key[1:])}: state {v.get("current_state")} '
            f'type {v.get("state_type")} attempt {v.get("current_attempt")}, '
            f'last check {v.get("last_check")}: {v.get("plugin_output")}')
    for line in nagios.log_lines(lab)[-15:]:
        say(f'nagios.log: {line[:200]}')
    log = lab.dir / 'jobs.log'
    lines = log.read_text(errors='replace').splitlines() if log.exists() else []
    say(f'{log}: {len(lines)} lines' + (', the last 40:' if len(lines) > 40 else ''))
    for line in lines[-40:]:
        say(f'  {line[:200]}')
    ps = subprocess.run(['pgrep', '-af', 'xenha.cli'], capture_output=True, text=True)
    say('jobs still running: ' + (ps.stdout.strip().replace('\n', '; ') or 'none'))
