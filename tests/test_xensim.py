"""The simulator's timing model: parallel `xl create` on one host, and the
/var/lock/xl serialization real xl does when autoballoon is on."""

import subprocess
import time
from pathlib import Path

import pytest

from xenha_lab import dom0, xensim
from xenha_lab.core import Lab

DELAY = 0.6


@pytest.fixture(scope='module')
def host():
    lab = Lab()
    try:
        dom0.add_host(lab, 'dom0-1')
        yield lab
    finally:
        lab.down()


def _two_creates(lab, autoballoon: bool, tag: str) -> float:
    state = dom0.state_dir(lab, 'dom0-1')
    xensim.update(state, create_delay=DELAY, autoballoon=autoballoon)
    xl = str(Path(lab.info['hosts']['dom0-1']['bin']) / 'xl')
    cfgs = []
    for i in (1, 2):
        cfg = lab.dir / f'{tag}{i}.cfg'
        cfg.write_text(f'name = "{tag}{i}"\nmemory = 128\nvcpus = 1\n')
        cfgs.append(str(cfg))
    t = time.monotonic()
    procs = [subprocess.Popen([xl, 'create', c], env=dom0.env_for(lab, 'dom0-1'),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cfgs]
    codes = [p.wait(timeout=30) for p in procs]
    elapsed = time.monotonic() - t
    assert codes == [0, 0]
    names = {d['name'] for d in xensim.read(state)['domains']}
    assert {f'{tag}1', f'{tag}2'} <= names
    return elapsed


def test_creates_run_side_by_side_without_autoballoon(host):
    assert _two_creates(host, False, 'par') < 2 * DELAY


def test_autoballoon_serializes_creates_like_var_lock_xl(host):
    assert _two_creates(host, True, 'ser') >= 2 * DELAY


def test_a_powered_off_host_runs_nothing_even_a_late_command(host):
    """The lab's power-off: a session that forks while sshd dies must not create a
    guest on a dark host (seen once in the soak as a split brain)."""
    lab = host
    state = dom0.state_dir(lab, 'dom0-1')
    xensim.update(state, create_delay=0, autoballoon=False)
    cfg = lab.dir / 'late.cfg'
    cfg.write_text('name = "late"\nmemory = 128\n')
    xl = str(Path(lab.info['hosts']['dom0-1']['bin']) / 'xl')
    env = dom0.env_for(lab, 'dom0-1')
    xensim.power_off(state)
    try:
        for argv in ([xl, 'create', str(cfg)], [xl, 'list']):
            r = subprocess.run(argv, env=env, capture_output=True, text=True)
            assert (r.returncode, r.stdout) == (255, '')
        assert 'late' not in {d['name'] for d in xensim.read(state)['domains']}
    finally:
        xensim.power_on(state)
    r = subprocess.run([xl, 'create', str(cfg)], env=env, capture_output=True, text=True)
    assert r.returncode == 0
