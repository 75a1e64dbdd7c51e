"""`xenha demo`: which dom0s it picks and why (from the facts of a machine), and
the whole story on the simulated lab, run as a user runs it.  The story on
real-Xen dom0s is in test_real_xen.py."""

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import command, demo_story
from xenha.lab import qemu
from xenha.lab.demo import CannotRun, Choice, choose, headline

# A machine that can run two real-Xen dom0s; each case below takes one fact away.
ABLE = qemu.Facts(qemu='/usr/bin/qemu-system-x86_64', available_mb=22000, cpus=2,
                  image='/var/cache/xenha-lab/0123456789ab')
NO_QEMU = 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)'


def test_auto_takes_real_xen_when_the_machine_can():
    c = choose('auto', ABLE)
    assert c == Choice('qemu', 'qemu-system-x86_64, 2 CPUs, 21.5 GiB of memory available '
                               '(2 dom0s want 5.0), the dom0 image is cached')
    assert headline('auto', c) == 'xenha demo: real Xen 4.17 dom0s under QEMU/TCG (--xen auto)'


def test_no_image_yet_means_building_it_first():
    c = choose('auto', dataclasses.replace(ABLE, image=None))
    assert c.xen == 'qemu' and c.build
    assert c.why.endswith('the dom0 image is built first (about 1.5 minutes, once)')


@pytest.mark.parametrize('change, why', [
    (dict(qemu=None), NO_QEMU),
    (dict(available_mb=4000), '4000 MiB of memory available, 2 real-Xen dom0s want 5120'),
    (dict(image=None, build_missing=('debootstrap',)),
     'no real-Xen image cached, and building one needs debootstrap (make deps)'),
    (dict(cpus=1), '1 CPU here, two emulated dom0s want 2'),
], ids=['no qemu', 'memory short', 'no image, cannot build', 'one CPU'])
def test_auto_falls_back_to_the_simulator_and_says_why(change, why):
    c = choose('auto', dataclasses.replace(ABLE, **change))
    assert c == Choice('sim', why)
    assert headline('auto', c) == f'xenha demo: simulated dom0s: {why}'


def test_sim_when_asked_even_on_a_machine_that_could():
    c = choose('sim', ABLE)
    assert c == Choice('sim', '--xen sim')
    assert headline('sim', c) == 'xenha demo: simulated dom0s (--xen sim)'


def test_qemu_when_asked_refuses_a_machine_that_cannot():
    with pytest.raises(CannotRun, match='^4000 MiB of memory available'):
        choose('qemu', dataclasses.replace(ABLE, available_mb=4000))
    # one CPU is slow, not impossible: asked for, it runs
    assert choose('qemu', dataclasses.replace(ABLE, cpus=1)).xen == 'qemu'


def path_without(tmp: Path, hidden: str) -> str:
    """A PATH of links to every command of this one but `hidden`: this machine
    as one without it."""
    farm = tmp / 'bin'
    farm.mkdir()
    for d in os.environ['PATH'].split(':'):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src = os.path.join(d, name)
            if name != hidden and not (farm / name).exists() and os.access(src, os.X_OK) \
                    and os.path.isfile(src):
                (farm / name).symlink_to(src)
    assert shutil.which(hidden, path=str(farm)) is None
    return str(farm)


def test_demo_qemu_on_a_machine_without_qemu_exits_2(tmp_path):
    env = dict(os.environ, PATH=path_without(tmp_path, 'qemu-system-x86_64'))
    r = subprocess.run([command('xenha'), 'demo', '--xen', 'qemu'], capture_output=True,
                       text=True, env=env, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (
        2, '', f'xenha demo: cannot run real-Xen dom0s here: {NO_QEMU}\n')


def test_the_demo_on_simulated_dom0s(tmp_path, lab_dir):
    """`xenha demo` on a machine without QEMU: the simulator, said on the first
    line, and the whole story to the end."""
    env = dict(os.environ, PATH=path_without(tmp_path, 'qemu-system-x86_64'))
    r = subprocess.run([command('xenha'), 'demo', '--dir', str(lab_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    # by hand: 3 xen host, 3 fence, 4 domU, 4 targets, capacity; Nagios: the same
    # 15 services and the 3 dom0 host checks
    recovered = demo_story(r, f'xenha demo: simulated dom0s: {NO_QEMU}',
                           3 + 3 + 4 + 4 + 1, 18, 'dom0-1',
                           {'db1': 'dom0-3', 'web1': 'dom0-3'},
                           hung=('dom0-2', {'mail1': 'dom0-3', 'build1': 'dom0-3'}))
    print(f'\nsim demo: recovered {recovered}s after the power-off')


def test_auto_goes_on_with_the_simulator_when_the_image_cannot_be_built(tmp_path,
                                                                        lab_dir):
    """A machine that could run real Xen but whose image cache cannot be
    created (a file stands where its directory should be): auto says so and
    tells the story on simulated dom0s."""
    (tmp_path / 'file').write_text('')
    env = dict(os.environ, XENHA_IMAGE_CACHE=str(tmp_path / 'file' / 'cache'))
    if qemu.why_not(dataclasses.replace(qemu.facts(), image=None), 2, build=True):
        pytest.skip('this machine cannot run real-Xen dom0s anyway')
    r = subprocess.run([command('xenha'), 'demo', '--dir', str(lab_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    demo_story(r, 'xenha demo: real Xen 4.17 dom0s under QEMU/TCG (--xen auto)',
               3 + 3 + 4 + 4 + 1, 18, 'dom0-1', {'db1': 'dom0-3', 'web1': 'dom0-3'})
    assert r.stdout.splitlines()[1].endswith(
        'the dom0 image is built first (about 1.5 minutes, once))')
    assert re.search(r'\] the image could not be built \(.*\): simulated dom0s instead\n',
                     r.stdout)


def started_demo(tmp: Path, until: str):
    """`xenha demo --xen sim` running, its output read up to the line `until`."""
    proc = subprocess.Popen([command('xenha'), 'demo', '--xen', 'sim', '--dir',
                             str(tmp / 'lab')], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith(until):
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f'the demo ended ({proc.returncode}) before {until!r}')


def lab_gone(tmp: Path) -> bool:
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    return not (tmp / 'lab').exists() and str(tmp / 'lab') not in ps


def test_a_reader_that_goes_away_does_not_leave_the_lab_up(tmp_path, lab_dir):
    """`xenha demo | head`: the next line written fails, the lab goes down all
    the same."""
    proc = started_demo(tmp_path, '== every check')
    proc.stdout.close()
    assert proc.wait(timeout=120) != 0
    assert lab_gone(tmp_path)


def test_sigterm_takes_the_lab_down(tmp_path, lab_dir):
    import signal
    proc = started_demo(tmp_path, '== Nagios')
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM
    assert out.rstrip().endswith('lab down, nothing left'), out[-1000:]
    assert lab_gone(tmp_path)
