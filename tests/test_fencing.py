"""Fencing against the real thing: fence_ipmilan → ipmi_sim → the lab host's sshd.

No mocks: every BMC is an ipmi_sim whose chassis control stops or starts a lab
dom0 (a real sshd), and the 'ssh' method talks to that sshd with paramiko.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fencing_fixtures import Method, fence_lab, ipmi_method, make_lab, password_file  # noqa: F401
from xenha import fencing
from xenha_lab import bmc, dom0, xensim
from xenha.runner import Result, SSHRunner


def reachable(lab, host) -> bool:
    h = lab.info['hosts'][host]
    try:
        with socket.create_connection((h['address'], h['port']), timeout=0.5):
            return True
    except OSError:
        return False


def method_for(lab, host, **kw):
    # ipmi_sim powers off at once: the agent's 2 s power_wait (for real BMCs)
    # only slows the tests down; the timing test keeps the agent's defaults
    kw.setdefault('power_wait', '0')
    return ipmi_method(lab.info['bmc'][host], **kw)


def ssh_factory(lab):
    def factory(host):
        return SSHRunner(lab.info['hosts'][host]['address'],
                         dom0.ssh_options(lab), timeout=5)
    return factory


# -- power off for real ----------------------------------------------------------
def test_ipmi_off_takes_the_host_down_and_status_says_off(fence_lab):
    m = ipmi_method(fence_lab.info['bmc']['h1'])     # the agent's own defaults
    assert bmc.power_status(m) == 'on'
    xensim.add_domain(dom0.state_dir(fence_lab, 'h1'), 'web1', 256)

    started = time.monotonic()
    out = fencing.fence('h1', [m])
    took = time.monotonic() - started
    print(f'\nfence_ipmilan off + confirm: {took:.2f}s')

    assert out.ok and not out.skipped, out.message
    assert out.method == 'agent fence_ipmilan'
    assert 'confirms off' in out.message
    assert [a.ok for a in out.attempts] == [True]
    assert not dom0.powered(fence_lab, 'h1')
    assert not reachable(fence_lab, 'h1')           # sshd really gone
    names = [d['name'] for d in xensim.read(dom0.state_dir(fence_lab, 'h1'))['domains']]
    assert names == ['Domain-0']                      # its guests died with it
    assert bmc.power_status(m) == 'off'
    assert dom0.powered(fence_lab, 'h2')              # the neighbour is untouched
    assert took < 8


def test_fence_on_brings_the_host_back(fence_lab):
    m = method_for(fence_lab, 'h1')
    assert fencing.fence('h1', [m]).ok
    back = bmc.power_on(m)
    assert back.ok, back.message
    assert reachable(fence_lab, 'h1')
    assert bmc.power_status(m) == 'on'


def test_already_off_is_success(fence_lab):
    m = method_for(fence_lab, 'h1')
    dom0.power(fence_lab, 'h1', False)
    out = fencing.fence('h1', [m])
    assert out.ok, out.message


# -- each failure has its own message, and the host stays up --------------------
def test_wrong_password_fails_and_host_stays_up(fence_lab):
    wrong = password_file(fence_lab, 'wrong-pw', 'not-the-password\n')
    m = Method('agent', 'fence_ipmilan', method_for(fence_lab, 'h1').params, wrong, 10)
    out = fencing.fence('h1', [m])
    assert not out.ok
    assert out.message.startswith('fencing h1 failed: not starting anything')
    assert 'wrong username/password' in out.message
    assert 'not-the-password' not in out.message
    assert out.seconds < 5
    assert dom0.powered(fence_lab, 'h1') and reachable(fence_lab, 'h1')


def test_bmc_stopped_is_unreachable(fence_lab):
    bmc.stop(fence_lab, 'h1')
    out = fencing.fence('h1', [method_for(fence_lab, 'h1', timeout=6)])
    assert not out.ok
    assert 'did not answer (unreachable or down?)' in out.message
    assert 'timed out after' not in out.message       # the agent said it, not our timer
    assert reachable(fence_lab, 'h1')
    assert bmc.power_status(method_for(fence_lab, 'h1', timeout=3)) == 'unknown'


def test_missing_agent_binary(fence_lab):
    m = Method('agent', 'fence_xenha_nonexistent', method_for(fence_lab, 'h1').params,
               fence_lab.info['bmc']['h1']['password_file'])
    out = fencing.fence('h1', [m])
    assert not out.ok
    assert 'fence agent fence_xenha_nonexistent not found' in out.message


def test_missing_password_file(fence_lab):
    m = Method('agent', 'fence_ipmilan', method_for(fence_lab, 'h1').params,
               str(fence_lab.dir / 'no-such-file'))
    out = fencing.fence('h1', [m])
    assert not out.ok
    assert 'cannot read password file' in out.message and 'no-such-file' in out.message
    assert dom0.powered(fence_lab, 'h1')


def test_world_readable_password_file_still_fences(fence_lab):
    # a configuration smell for the inventory to report, not a reason to
    # leave a dead host unfenced
    m = method_for(fence_lab, 'h1')
    os.chmod(m.password_file, 0o644)
    assert any('readable by everyone' in p for p in fencing.problems(m))
    assert fencing.fence('h1', [m]).ok


def test_power_off_ignored_is_still_on(fence_lab):
    bmc.set_fault(fence_lab, 'h1', 'ignore-off')
    # the agent waits power_timeout for the power to go, far below our timeout
    out = fencing.fence('h1', [method_for(fence_lab, 'h1', timeout=20, power_timeout='2')])
    assert not out.ok
    assert 'power still on after off' in out.message
    assert reachable(fence_lab, 'h1')


def test_agent_reports_off_but_status_says_on(fence_lab):
    # the BMC lies "off" once (so fence_ipmilan reports success), then tells
    # the truth: only our own status confirmation catches it
    bmc.set_fault(fence_lab, 'h1', 'fake-off')
    out = fencing.fence('h1', [method_for(fence_lab, 'h1')])
    assert not out.ok
    assert 'reported off, but status still says on' in out.message
    assert reachable(fence_lab, 'h1')


def test_hung_agent_times_out(fence_lab):
    # a frozen BMC, and an agent told to wait far longer than we do
    bmc.hang(fence_lab, 'h1')
    m = method_for(fence_lab, 'h1', timeout=2, power_timeout='60')
    started = time.monotonic()
    out = fencing.fence('h1', [m])
    assert not out.ok
    # the status pre-check took a third of the 2 s, the off request the rest
    assert re.search(r'fence_ipmilan off timed out after 1\.\ds \(agent hung\?\)',
                     out.message), out.message
    assert time.monotonic() - started < 4
    # nothing of the agent is left behind to power the host off later
    address = fence_lab.info['bmc']['h1']['address'].encode()
    assert _cmdlines_with(address) == []
    bmc.resume(fence_lab, 'h1')
    assert bmc.power_status(method_for(fence_lab, 'h1')) == 'on'


def _cmdlines_with(needle: bytes) -> list[bytes]:
    found = []
    for pid in os.listdir('/proc'):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                cmd = fh.read()
        except OSError:
            continue
        if needle in cmd and b'ipmi_sim' not in cmd:
            found.append(cmd.replace(b'\0', b' '))
    return found


# -- the chain -------------------------------------------------------------------
def test_chain_first_fails_second_wins(fence_lab):
    wrong = password_file(fence_lab, 'wrong-pw', 'nope\n')
    bad = Method('agent', 'fence_ipmilan', method_for(fence_lab, 'h1').params, wrong)
    out = fencing.fence('h1', [bad, method_for(fence_lab, 'h1')])
    assert out.ok, out.message
    assert [(a.method, a.ok) for a in out.attempts] == [
        ('agent fence_ipmilan', False), ('agent fence_ipmilan', True)]
    assert 'wrong username/password' in out.attempts[0].message
    assert all(a.seconds >= 0 for a in out.attempts)
    assert not dom0.powered(fence_lab, 'h1')


def test_chain_bmc_down_then_ssh_destroys_the_guests(fence_lab):
    state = dom0.state_dir(fence_lab, 'h1')
    for name in ('web1', 'db1'):
        xensim.add_domain(state, name, 256)
    bmc.stop(fence_lab, 'h1')
    chain = [method_for(fence_lab, 'h1', timeout=3), Method('ssh', timeout=10)]
    out = fencing.fence('h1', chain, ssh_factory(fence_lab))
    assert out.ok, out.message
    assert out.method == 'ssh'
    assert 'NOT powered off' in out.message and 'web1' in out.message
    assert [a.ok for a in out.attempts] == [False, True]
    assert [d['name'] for d in xensim.read(state)['domains']] == ['Domain-0']
    assert reachable(fence_lab, 'h1')                # ssh fencing leaves the host up


def test_ssh_method_confirms_the_guests_are_gone(fence_lab):
    # a toolstack whose destroy says yes and does nothing: only the
    # confirming `xl list` afterwards can tell
    state = dom0.state_dir(fence_lab, 'h1')
    xensim.add_domain(state, 'web1', 256)
    liar = shlex.join(['sh', '-c', '[ "$1" = destroy ] && exit 0; exec xl "$@"', 'xl'])
    out = fencing.fence('h1', [Method('ssh', timeout=3)], ssh_factory(fence_lab),
                        toolstack_command=liar)
    assert not out.ok
    assert out.attempts[0].message == 'still running after destroy: web1'


def test_ssh_method_fails_on_a_dead_host(fence_lab):
    dom0.power(fence_lab, 'h1', False)
    out = fencing.fence('h1', [Method('ssh', timeout=5)], ssh_factory(fence_lab))
    assert not out.ok
    assert 'connection refused' in out.message


def test_ssh_method_fails_on_a_hung_host_and_ipmi_takes_over(fence_lab):
    # the classic case for a power fence: the dom0 hangs, SSH cannot help
    dom0.hang(fence_lab, 'h1')
    try:
        out = fencing.fence('h1', [Method('ssh', timeout=3), method_for(fence_lab, 'h1')],
                            ssh_factory(fence_lab))
    finally:
        if dom0.powered(fence_lab, 'h1'):     # a failed test leaves it hung
            dom0.resume(fence_lab, 'h1')
    assert out.ok and out.method == 'agent fence_ipmilan', out.message
    assert 'timed out' in out.attempts[0].message
    assert not dom0.powered(fence_lab, 'h1')


def test_ssh_method_with_a_failing_toolstack(fence_lab):
    state = dom0.state_dir(fence_lab, 'h1')
    xensim.add_domain(state, 'web1', 256)
    xensim.set_fault(state, 'fail')
    out = fencing.fence('h1', [Method('ssh', timeout=5)], ssh_factory(fence_lab),
                        toolstack='xl')
    assert not out.ok
    assert out.attempts[0].message.startswith('xl list failed')


def test_a_broken_method_does_not_end_the_chain(fence_lab):
    def no_runner(host):
        raise RuntimeError('no runner for you')
    out = fencing.fence('h1', [Method('ssh', timeout=3), method_for(fence_lab, 'h1')],
                        no_runner)
    assert out.ok and out.method == 'agent fence_ipmilan', out.message
    assert out.attempts[0].message == 'internal error: RuntimeError: no runner for you'


def test_all_methods_fail(fence_lab):
    bmc.stop(fence_lab, 'h1')
    dom0.power(fence_lab, 'h1', False)
    out = fencing.fence('h1', [method_for(fence_lab, 'h1', timeout=3),
                               Method('ssh', timeout=3)], ssh_factory(fence_lab))
    assert not out.ok and out.method == ''
    assert out.message.startswith('fencing h1 failed: not starting anything (')
    assert len(out.attempts) == 2 and not any(a.ok for a in out.attempts)


def test_no_methods_is_a_failure():
    out = fencing.fence('h1', [])
    assert not out.ok and 'no fence method configured' in out.message


def test_budget_used_up_skips_the_rest(fence_lab):
    bmc.hang(fence_lab, 'h1')
    slow = method_for(fence_lab, 'h1', timeout=5, power_timeout='60')
    out = fencing.fence('h1', [slow, method_for(fence_lab, 'h2')], timeout=2)
    assert not out.ok
    assert 'timed out after' in out.attempts[0].message     # after ~2s, not 5s
    assert out.attempts[0].seconds < 3
    assert out.attempts[1].message.startswith('not tried')
    assert dom0.powered(fence_lab, 'h2')


# -- none ------------------------------------------------------------------------
def test_none_written_alone_says_nothing_was_fenced():
    out = fencing.fence('h1', [Method('none')])
    assert out.ok and out.skipped and out.method == 'none'
    assert 'nothing was fenced' in out.message


def test_none_in_a_chain_is_refused(fence_lab):
    bmc.stop(fence_lab, 'h1')
    out = fencing.fence('h1', [method_for(fence_lab, 'h1', timeout=3), Method('none')])
    assert not out.ok and not out.skipped
    assert 'must be the only method' in out.attempts[1].message


# -- secrets ---------------------------------------------------------------------
def _scan_cmdlines(secret: bytes, stop: threading.Event, seen: dict,
                   tools: tuple[bytes, ...]) -> None:
    me = str(os.getpid())
    while not stop.is_set():
        for pid in os.listdir('/proc'):
            if not pid.isdigit() or pid == me:
                continue
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if secret in cmd:
                seen['leaks'].append(cmd.replace(b'\0', b' '))
            for tool in tools:
                if tool in cmd:
                    seen[tool] = cmd.replace(b'\0', b' ')


# Debian ships fence_idrac as a copy of fence_ipmilan: it must be hardened too
@pytest.mark.parametrize('agent', ['fence_ipmilan', 'fence_idrac'])
def test_password_never_in_argv_nor_messages(fence_lab, agent):
    info = fence_lab.info['bmc']['h1']
    secret = open(info['password_file']).read().strip().encode()
    seen = {'leaks': []}
    stop = threading.Event()
    tools = (agent.encode(), b'ipmitool')
    scanner = threading.Thread(target=_scan_cmdlines, args=(secret, stop, seen, tools))
    scanner.start()
    try:
        m = Method('agent', agent, method_for(fence_lab, 'h1').params,
                   info['password_file'])
        outcomes = [fencing.fence('h1', [m]), bmc.power_on(m),
                    fencing.power_state(m)]
    finally:
        stop.set()
        scanner.join()
    assert seen['leaks'] == []
    # the scanner did watch the agent and the ipmitool it runs
    assert all(tool in seen for tool in tools), seen.keys()
    assert outcomes[0].ok and outcomes[1].ok and outcomes[2][0] == 'on' 
    assert secret.decode() not in repr(outcomes)


def test_agent_without_ipmitool_gets_the_password_on_stdin(fence_lab):
    # fence_drac5 logs in over SSH (here: to the lab dom0's sshd, which takes
    # keys only): the generic path, password on stdin, typed into a pty by the
    # agent, never in an argv; a refused login has its own message
    h = fence_lab.info['hosts']['h1']
    secret = 'drac-' + os.urandom(6).hex()
    known = dom0.known_hosts(fence_lab)
    m = Method('agent', 'fence_drac5', (
        ('ip', h['address']), ('ipport', str(h['port'])), ('username', 'root'),
        ('secure', '1'),
        # the lab's known_hosts: the agent's ssh must not write root's own
        ('ssh_options', f'-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes')),
        password_file(fence_lab, 'drac-pw', secret + '\n'), 10)
    seen = {'leaks': []}
    stop = threading.Event()
    scanner = threading.Thread(target=_scan_cmdlines,
                               args=(secret.encode(), stop, seen,
                                     (b'fence_drac5', h['address'].encode())))
    scanner.start()
    try:
        state, message = fencing.power_state(m)
    finally:
        stop.set()
        scanner.join()
    assert state == 'unknown'
    assert 'refused the connection or the login' in message, message
    assert seen['leaks'] == [] and b'fence_drac5' in seen
    assert b'ssh' in seen.get(h['address'].encode(), b''), seen   # it did try
    assert secret not in message


def test_snmp_agents_are_not_given_a_password(fence_lab):
    # the SNMP agents put the password on snmpget's command line (-A): refused
    # before anything runs, with the reason
    m = Method('agent', 'fence_apc_snmp', (('ip', fence_lab.addr(99)), ('plug', '1'),
                                          ('snmp_version', '3'), ('username', 'fence')),
               fence_lab.info['bmc']['h1']['password_file'], 5)
    out = fencing.fence('h1', [m])
    assert not out.ok
    assert 'hands the password to snmpget/snmpset on their command line' in out.message


def test_password_scrubbed_from_agent_output():
    # should an agent ever print the password back, the message hides it
    result = Result(1, '', '2026-01-01 00:00:00,000 ERROR: login as admin/s3cr3t failed\n')
    assert fencing._reason(result, 's3cr3t') == 'login as admin/******** failed'


NOEXEC_FENCE = """
import subprocess, sys, tempfile
from xenha import fencing
from xenha.inventory import FenceMethod
d, pwfile, *kv = sys.argv[1:]
subprocess.run(['mount', '-t', 'tmpfs', '-o', 'noexec', 'none', d], check=True)
tempfile.tempdir = d
params = tuple(zip(kv[::2], kv[1::2]))
print(fencing.fence('h1', [FenceMethod('agent', 'fence_ipmilan', params, pwfile, 10)]).message)
"""


def test_noexec_tmp_is_a_clear_failure_not_a_leak(fence_lab, tmp_path):
    # the password helper cannot run from a noexec TMPDIR: say so, and never
    # fall back to handing the password to the agent (it would show up in ps)
    if not shutil.which('unshare'):
        pytest.skip('needs unshare (util-linux)')
    m = method_for(fence_lab, 'h1')
    args = [x for kv in m.params for x in kv]
    ran = subprocess.run(['unshare', '-m', '--', sys.executable, '-c', NOEXEC_FENCE,
                          str(tmp_path), m.password_file, *args],
                         capture_output=True, text=True, timeout=30,
                         cwd=Path(fencing.__file__).parents[1])
    assert ran.returncode == 0, ran.stderr
    assert 'mounted noexec' in ran.stdout and 'not starting anything' in ran.stdout
    assert reachable(fence_lab, 'h1')


def test_problems_in_configuration(tmp_path):
    readable = tmp_path / 'pw'
    readable.write_text('x\n')
    readable.chmod(0o644)
    found = fencing.problems(Method(
        'agent', 'ipmitool', (('password', 'x'), ('verbose', '1'), ('ip', 'a\nb'),
                              ('hexadecimal_kg', '00ff'), ('use_sudo', '1')),
        str(readable)))
    text = ' | '.join(found)
    assert 'not a fence agent' in text
    assert "'password' is refused" in text and "'verbose' is refused" in text
    assert 'line break' in text and 'readable by everyone' in text
    assert "'hexadecimal_kg' is refused" in text and "'use_sudo' is refused" in text
    assert fencing.problems(Method('stonith')) and not fencing.problems(Method('ssh'))


# -- two labs side by side --------------------------------------------------------
def test_two_labs_bmcs_do_not_collide():
    a = make_lab(('h1',))
    try:
        b = make_lab(('h1',))
        try:
            ia, ib = a.info['bmc']['h1'], b.info['bmc']['h1']
            assert ia['address'] != ib['address']
            assert ia['port'] == ib['port'] == 623
            assert fencing.fence('h1', [ipmi_method(ia)]).ok
            assert not dom0.powered(a, 'h1') and dom0.powered(b, 'h1')
            assert bmc.power_status(ipmi_method(ib)) == 'on'
            # a's password does not open b's BMC
            swapped = Method('agent', 'fence_ipmilan', ipmi_method(ib).params,
                             ia['password_file'])
            assert bmc.power_status(swapped) == 'unknown'
        finally:
            b.down()
    finally:
        a.down()


def test_bmc_files_are_private(fence_lab):
    d = fence_lab.dir / 'bmc' / 'h1'
    for name in ('password', 'lan.conf'):
        assert (d / name).stat().st_mode & 0o077 == 0, name
    assert fence_lab.info['bmc']['h1']['address'] == bmc.address_for(
        fence_lab.info['hosts']['h1']['address'])


def test_bmc_stop_start_and_down(fence_lab):
    m = method_for(fence_lab, 'h1', timeout=3)
    bmc.stop(fence_lab, 'h1')
    assert bmc.power_status(m) == 'unknown'
    bmc.start(fence_lab, 'h1')                      # same address, same password
    assert bmc.power_status(m) == 'on'
    bmc.down(fence_lab, 'h1')
    assert 'h1' not in fence_lab.info['bmc'] and not fence_lab.alive('bmc-h1')
    assert dom0.powered(fence_lab, 'h1')            # the host does not care
