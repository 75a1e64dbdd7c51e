"""Shared fixtures: the installed commands and a lab per test."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items):
    """Every test not marked `unit` is a `lab` test (`-m lab`, `-m unit`)."""
    for item in items:
        if item.get_closest_marker('unit') is None:
            item.add_marker(pytest.mark.lab)


def command(name: str) -> str:
    """The installed command (pip install . puts it next to the interpreter)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f'{name} is not installed in {BIN}: run `pip install .`')
    return str(path)


class Ran:
    def __init__(self, proc, seconds):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.first = proc.stdout.splitlines()[0] if proc.stdout else ''
        self.seconds = seconds

    @property
    def status(self):
        """The first line without perfdata: what an operator reads."""
        return self.first.split(' | ')[0]

    def __repr__(self):
        return f'<rc={self.rc} {self.first!r} err={self.err[-300:]!r}>'


def run(name, *args, env=None, timeout=60, cwd=None) -> Ran:
    import time
    t = time.monotonic()
    proc = subprocess.run([command(name), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    return Ran(proc, time.monotonic() - t)


@pytest.fixture
def lab():
    """An empty lab; torn down whatever happens in the test."""
    from xenha_lab.core import Lab
    lab = Lab()
    try:
        yield lab
    finally:
        problems = lab.down()
        assert not problems, problems


@pytest.fixture
def lab_dir(tmp_path):
    """Where a demo under test puts its lab; whatever it leaves there is taken down."""
    d = tmp_path / 'lab'
    yield d
    if (d / 'lab.json').exists():
        from xenha_lab.core import Lab
        Lab.load(d).down()


@pytest.fixture
def dom0s(lab):
    """Three simulated dom0s (dom0-1, dom0-2, dom0-3) on real sshds."""
    from xenha_lab import dom0
    for name in ('dom0-1', 'dom0-2', 'dom0-3'):
        dom0.add_host(lab, name)
    return lab


def ssh_args(lab, host=None, **kw):
    """Command-line options of a check reaching `host` of `lab` over SSH."""
    from xenha_lab import dom0
    opts = dom0.ssh_options(lab)
    args = ['-i', kw.get('identity', opts.identity),
            '--known-hosts', kw.get('known_hosts', opts.known_hosts),
            '--state-db', lab.dir / 'state.db']
    if host:
        args[:0] = ['-H', lab.info['hosts'][host]['address']]
    if opts.port != 22:
        args += ['-p', opts.port]
    return args


def cluster_lab(**kw):
    """A fixture body: the lab cluster (xenha_lab.cluster.up(**kw)), torn down after."""
    from xenha_lab import cluster
    lab = cluster.up(**kw)
    try:
        yield lab
    finally:
        assert lab.down() == []


# -- looking at a lab cluster -------------------------------------------------------
def engine(lab, **kw):
    """The failover engine on the lab's inventory, with a short split-brain re-check."""
    from xenha.failover import Engine
    from xenha_lab import cluster
    kw.setdefault('recheck_delay', 0.2)
    return Engine(cluster.cluster(lab), **kw)


def placement(lab):
    """domU -> sorted hosts where the simulated hypervisors hold it."""
    from xenha_lab import dom0, xensim
    out = {}
    for host in lab.info['hosts']:
        for d in xensim.read(dom0.state_dir(lab, host))['domains']:
            if d['id']:
                out.setdefault(d['name'], []).append(host)
    return {k: sorted(v) for k, v in out.items()}


def journal(lab, job=None):
    from xenha.state import StateDB
    with StateDB(lab.dir / 'state.db') as db:
        return [(r['step'], r['message']) for r in db.journal_rows(job=job)]


def ssh_where(lab, host='dom0-1') -> str:
    """A lab dom0 as the SSH runner names it in messages: its address, with
    the port when it is not 22 (a lab block whose port 22 is taken uses 2222)."""
    h = lab.info['hosts'][host]
    return h['address'] + (f":{h['port']}" if h.get('port', 22) != 22 else '')


def demo_story(r, first_line: str, hand_checks: int, nagios_checks: int, dead: str,
               moved: dict, hung: tuple[str, dict] | None = None) -> float:
    """Assert the whole story a `xenha demo` run told (exit 0, first line, every
    check by hand OK, Nagios all OK, `dead` powered off, fenced by the fast path,
    each guest of `moved` back on its new dom0; with `hung` = (dom0, moved): that
    dom0 hung and failed over by the HARD path; the lab down); the recovery
    time it said after the power-off."""
    import re
    out = r.stdout
    # on failure: the story from the power-off on (the demo's post-mortem ends it)
    story = out[out.find('\n== pulling the plug'):][-12000:] + r.stderr[-2000:]
    assert r.returncode == 0, story
    assert out.splitlines()[0] == first_line
    hand = [line for line in out.splitlines() if '   (exit ' in line]
    assert len(hand) == hand_checks, hand
    assert all(line.endswith('(exit 0)') for line in hand), hand
    assert f'] all {nagios_checks} checks OK in Nagios\n' in out
    assert (f'\n== pulling the plug: {dead} ({", ".join(moved)}) powered off through its '
            'BMC\n') in out
    assert f'Nagios: HOST ALERT: {dead};DOWN;HARD;3;' in out
    assert 'engine: fence: agent fence_ipmilan: confirmed' in out
    running = ', '.join(f'{g} on {h}' for g, h in sorted(moved.items()))
    assert (f'engine: end: {dead} failed over (fast path: its BMC said off at the first '
            f'failed check): {len(moved)} domUs running: {running}\n') in out, story
    places = ', '.join(f'{g} on {h}' for g, h in moved.items())
    recovered = re.search(rf'Nagios shows every guest of {dead} OK again \({places}\): '
                          r'recovered (\d+\.\d)s after the power-off, by the fast path: '
                          'its BMC said off at the first failed check', out)
    assert recovered, story
    if hung:
        host, hmoved = hung
        assert f'\n== a hung dom0: {host} ({", ".join(hmoved)}) stops answering' in out
        running = ', '.join(f'{g} on {h}' for g, h in sorted(hmoved.items()))
        assert f'engine: end: {host} failed over: {len(hmoved)} domUs running: {running}\n' \
            in out, out[out.find('== a hung'):][-8000:]
        assert re.search(rf'engine: fast: fast path: {host} is down for Nagios, but its BMC '
                         r'says on \(', out)
        places = ', '.join(f'{g} on {h}' for g, h in hmoved.items())
        assert re.search(rf'Nagios shows every guest of {host} OK again \({places}\): '
                         r'recovered \d+\.\ds after the hang, by the HARD path', out), \
            out[out.find('== a hung'):][-8000:]
    assert out.rstrip().endswith('lab down, nothing left')
    return float(recovered[1])


class GroundTruth:
    """The lab's hypervisors polled in a thread while a job runs: every moment
    a domU was held by two hosts at once (a domain in a reboot gap counts on
    its host: it comes back there).  `with GroundTruth(lab) as truth: ...`,
    then `truth.doubles` (empty: never twice) and `truth.polls`."""

    def __init__(self, lab, every: float = 0.1):
        import threading
        self.lab, self.every = lab, every
        self.doubles: list = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import time
        while not self._stop.is_set():
            for name, hosts in placement(self.lab).items():
                if len(hosts) > 1:
                    self.doubles.append((time.time(), name, hosts))
            self.polls += 1
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for name, hosts in placement(self.lab).items():     # and the end state
            if len(hosts) > 1:
                self.doubles.append(('end', name, hosts))
