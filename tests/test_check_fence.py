"""check_fence end to end: the installed plugin against a real ipmi_sim BMC through
the real fence_ipmilan (the lab of fencing_fixtures), each case asserting the exact
first line and the exit code."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run
from fencing_fixtures import make_lab, password_file
from xenha.lab import bmc, dom0

CRITICAL_TAIL = ': a failover of h1 would refuse to start anything'
WRONG_PASSWORD = ('fence device refused the status query (wrong username/password?): '
                  'Failed: Unable to obtain correct plug status or plug is not available')


@pytest.fixture
def lab():
    """One dom0 (h1: a real sshd) and its BMC (a real ipmi_sim)."""
    lab = make_lab(('h1',))
    try:
        yield lab
    finally:
        assert lab.down() == []


def agent_table(lab, password=None, **params) -> str:
    """One [[dom0.h1.fencing]] table: fence_ipmilan to h1's lab BMC."""
    b = lab.info['bmc']['h1']
    values = dict(b['params'], **params)
    return '\n'.join(['[[dom0.h1.fencing]]', 'method = "agent"', 'agent = "fence_ipmilan"',
                      *(f'{k} = "{v}"' for k, v in values.items()),
                      f'password_file = "{password or b["password_file"]}"', ''])


def inventory(where, fencing: str, address: str = '127.0.0.1') -> str:
    """A one-dom0 inventory whose h1 has `fencing` (tables, or a `fencing = ...` line)."""
    path = where / 'cluster.toml'
    path.write_text(f'[dom0.h1]\naddress = "{address}"\nrole = "active"\n{fencing}\n')
    return str(path)


def lab_inventory(lab, fencing: str | None = None) -> str:
    return inventory(lab.dir, agent_table(lab) if fencing is None else fencing,
                     lab.info['hosts']['h1']['address'])


def check(inv, *args, timeout=5):
    return run('check_fence', '--inventory', inv, '--dom0', 'h1', '-t', timeout, *args)


# -- the fence device answers ------------------------------------------------------------
def test_ok_when_the_bmc_says_power_on(lab):
    r = check(lab_inventory(lab))
    assert (r.rc, r.status) == (0, 'FENCE OK - h1: agent fence_ipmilan answers (power on)')
    assert r.first.startswith(r.status + ' | fence_ipmilan=')
    assert r.first.endswith('s;;;0 working_agents=1;;;0;1')


def test_warning_when_the_bmc_says_off(lab):
    dom0.power(lab, 'h1', False)
    r = check(lab_inventory(lab))
    assert (r.rc, r.status) == (1, 'FENCE WARNING - h1: fence_ipmilan says h1 is powered off')


def test_warning_for_a_world_readable_password_file(lab):
    path = lab.info['bmc']['h1']['password_file']
    os.chmod(path, 0o644)
    r = check(lab_inventory(lab))
    assert (r.rc, r.status) == (
        1, f'FENCE WARNING - h1: agent fence_ipmilan answers (power on); password file '
           f'{path} is readable by everyone (chmod 600 or 640)')


def test_warning_when_the_first_method_fails_and_the_second_works(lab):
    wrong = password_file(lab, 'wrong-pw', 'not-the-password\n')
    r = check(lab_inventory(lab, agent_table(lab, wrong) + agent_table(lab)))
    assert (r.rc, r.status) == (
        1, f'FENCE WARNING - h1: agent fence_ipmilan #1: {WRONG_PASSWORD}; '
           'agent fence_ipmilan #2 answers (power on)')


# -- the fence device does not work -------------------------------------------------------
def test_critical_when_the_bmc_is_down(lab):
    bmc.stop(lab, 'h1')
    r = check(lab_inventory(lab))
    assert (r.rc, r.status) == (
        2, 'FENCE CRITICAL - h1: agent fence_ipmilan: fence device did not answer '
           '(unreachable or down?): Connection timed out' + CRITICAL_TAIL)
    assert r.seconds < 5


def test_critical_with_a_wrong_password_that_is_never_shown(lab):
    wrong = password_file(lab, 'wrong-pw', 'not-the-password\n')
    inv = lab_inventory(lab, agent_table(lab, wrong))
    r = check(inv)
    assert (r.rc, r.status) == (
        2, f'FENCE CRITICAL - h1: agent fence_ipmilan: {WRONG_PASSWORD}' + CRITICAL_TAIL)
    verbose = check(inv, '-vvv')
    assert verbose.rc == 2
    real = open(lab.info['bmc']['h1']['password_file']).read().strip()
    for text in (r.out, r.err, verbose.out, verbose.err):
        assert 'not-the-password' not in text and real not in text


def test_critical_with_ssh_behind_a_dead_bmc_says_what_is_left(lab):
    bmc.stop(lab, 'h1')
    r = check(lab_inventory(lab, agent_table(lab) + '[[dom0.h1.fencing]]\nmethod = "ssh"\n'))
    assert (r.rc, r.status) == (
        2, 'FENCE CRITICAL - h1: agent fence_ipmilan: fence device did not answer '
           '(unreachable or down?): Connection timed out; ssh (not probed: it works only '
           'while h1 answers SSH)' + CRITICAL_TAIL + ' unless h1 still answers SSH')


def test_critical_when_the_agent_is_not_installed(lab):
    table = agent_table(lab).replace('"fence_ipmilan"', '"fence_xenha_nonexistent"')
    r = check(lab_inventory(lab, table))
    assert (r.rc, r.status) == (
        2, 'FENCE CRITICAL - h1: agent fence_xenha_nonexistent: fence agent '
           'fence_xenha_nonexistent not found (looked in PATH and /usr/sbin, /sbin, '
           '/usr/local/sbin; is fence-agents installed?)' + CRITICAL_TAIL)


def test_a_hung_bmc_is_unknown_within_t_and_leaves_no_agent_behind(lab):
    # an agent told to wait longer than -t: our own timer stops it, before -t
    bmc.hang(lab, 'h1')
    try:
        started = time.monotonic()
        r = check(lab_inventory(lab, agent_table(lab, power_timeout='60')), timeout=3)
        took = time.monotonic() - started
    finally:
        bmc.resume(lab, 'h1')
    assert (r.rc, r.status) == (
        3, 'FENCE UNKNOWN - h1: agent fence_ipmilan: status did not answer within -t 3 '
           '(agent or fence device hung?)')
    assert 2 < took < 3.5
    address = lab.info['bmc']['h1']['address']
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    ps = [line for line in ps.splitlines() if address in line and 'ipmi_sim' not in line]
    assert ps == []


# -- what the inventory says -----------------------------------------------------------------
def test_warning_for_fencing_none(tmp_path):
    r = check(inventory(tmp_path, 'fencing = "none"'))
    assert (r.rc, r.status) == (
        1, 'FENCE WARNING - h1: fencing = none: a failover of h1 would start its guests '
           'unfenced')


def test_warning_for_ssh_fencing_only(tmp_path):
    r = check(inventory(tmp_path, 'fencing = "ssh"'))
    assert (r.rc, r.status) == (
        1, 'FENCE WARNING - h1: only ssh fencing: not enough for production (not probed: '
           'it works only while h1 answers SSH)')


def test_warning_for_storage_fencing_that_protects_nothing(tmp_path):
    r = check(inventory(tmp_path, 'fencing = "storage"'))
    assert (r.rc, r.status) == (
        1, 'FENCE WARNING - h1: storage: no guest of h1 has a disk: storage fencing '
           'protects nothing here')


def test_critical_with_storage_behind_a_dead_bmc_says_what_is_left(lab):
    bmc.stop(lab, 'h1')
    r = check(lab_inventory(lab, agent_table(lab) + '[[dom0.h1.fencing]]\n'
                                                   'method = "storage"\n'))
    assert r.rc == 2, r
    assert r.status.endswith('storage: no guest of h1 has a disk: storage fencing '
                             'protects nothing here: a failover of h1 would refuse to '
                             'start anything'), r


def test_unknown_dom0(tmp_path):
    inv = inventory(tmp_path, 'fencing = "none"')
    r = run('check_fence', '--inventory', inv, '--dom0', 'h9')
    assert (r.rc, r.status) == (3, f"FENCE UNKNOWN - no dom0 'h9' in {inv} (dom0s: h1)")


def test_broken_inventory(tmp_path):
    inv = inventory(tmp_path, 'fencing = "none"')
    Path(inv).write_text(Path(inv).read_text().replace('"active"', '"primary"'))
    r = check(inv)
    assert (r.rc, r.status) == (
        3, f"FENCE UNKNOWN - cannot load inventory: {inv}:3: [dom0.h1] role = 'primary': "
           "must be one of 'active', 'spare'")
    missing = tmp_path / 'nowhere.toml'
    r = check(missing)
    assert (r.rc, r.status) == (
        3, f'FENCE UNKNOWN - cannot load inventory: {missing}: cannot read: No such file '
           'or directory')


def test_usage_errors_are_unknown(tmp_path):
    r = run('check_fence', '--inventory', inventory(tmp_path, 'fencing = "none"'))
    assert (r.rc, r.first) == (3, 'FENCE UNKNOWN - the following arguments are required: '
                                  '--dom0')
    r = check(inventory(tmp_path, 'fencing = "none"'), timeout=0.5)
    assert (r.rc, r.first) == (3, 'FENCE UNKNOWN - argument -t/--timeout: must be a whole '
                                  "number of seconds from 1 to 3600, not '0.5'")
