"""`pip install .` into a throwaway venv puts every command on PATH, and they
work from any directory with their data (templates, the simulator) found."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ('check_xen_host', 'check_xen_domu', 'check_iscsi_target', 'check_aoe_target',
            'check_xen_capacity', 'check_fence', 'handle_dom0_event', 'handle_domu_event',
            'xenha')


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp('venv')
    subprocess.run([sys.executable, '-m', 'venv', str(d)], check=True)
    r = subprocess.run([str(d / 'bin' / 'python'), '-m', 'pip', 'install', '-q', str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def test_every_command_is_installed_and_answers_help(venv, tmp_path):
    for name in COMMANDS:
        r = subprocess.run([str(venv / 'bin' / name), '--help'], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == 0, (name, r.stderr[-500:])
        assert r.stdout.startswith('usage: '), name


def test_the_installed_package_is_not_the_checkout(venv):
    r = subprocess.run([str(venv / 'bin' / 'python'), '-c',
                        'import xenha, xenha.templates; print(xenha.__file__)'],
                       capture_output=True, text=True, cwd='/')
    assert r.returncode == 0, r.stderr
    assert str(venv) in r.stdout and str(ROOT) not in r.stdout


def test_render_finds_its_templates_after_a_real_install(venv, tmp_path):
    out = tmp_path / 'objects'
    r = subprocess.run([str(venv / 'bin' / 'xenha'), 'render', '--inventory',
                        str(ROOT / 'examples' / 'cluster.toml'), '--format', 'all',
                        '--output', str(out)], capture_output=True, text=True, cwd=tmp_path)
    files = [p for p in out.rglob('*') if p.is_file() and p.name != '.xenha-render']
    assert (r.returncode, r.stdout.strip()) == (
        0, f'xenha render: {len(files)} all file(s) in {out}'), r.stderr
    assert {p.parent.name for p in files} == {'nagios', 'icinga2', 'xen'}
    assert (out / 'nagios' / 'dom0s.cfg').read_text() == \
        (ROOT / 'nagios-objects' / 'dom0s.cfg').read_text()


def test_the_lab_runs_from_the_installed_package(venv, tmp_path):
    """The simulator's executables point at the installed package."""
    lab = tmp_path / 'lab'
    xenha = str(venv / 'bin' / 'xenha')
    up = subprocess.run([xenha, 'lab', '--dir', str(lab), 'up', '--no-storage', '--no-bmc'],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    try:
        assert up.returncode == 0, up.stderr[-1000:]
        r = subprocess.run([xenha, 'status', '--live', '--inventory', str(lab / 'cluster.toml')],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'web1         dom0-1     dom0-1                   blocked' in r.stdout
        wrapper = (lab / 'hosts' / 'dom0-1' / 'bin' / 'xl').read_text()
        assert wrapper.startswith(f'#!{venv}/bin/python')
    finally:
        subprocess.run([xenha, 'lab', '--dir', str(lab), 'down'], capture_output=True,
                       timeout=120)


def test_readme_command_reference_is_current():
    r = subprocess.run([sys.executable, '-m', 'xenha.docs', '--check', str(ROOT / 'README.md')],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    text = (ROOT / 'README.md').read_text().splitlines()
    assert text[3:5] == ['make demo     # the whole failover story on a lab cluster (real Xen '
                         'under QEMU: about 3 minutes; simulated: half a minute)',
                         'make test     # the test suite (installs what it needs; about 30 '
                         'minutes with the real-Xen tests)']
