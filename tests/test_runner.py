"""The runners' run_many: commands side by side, one deadline, nothing left behind."""

import os
import time

import pytest

from xenha_lab import dom0
from xenha.runner import CommandNotFound, CommandTimeout, LocalRunner, SSHRunner


def test_local_run_many_waits_for_the_slower_not_the_sum():
    t = time.monotonic()
    a, b = LocalRunner().run_many([['sleep', '0.6'], ['sh', '-c', 'echo hi; exit 3']], 5)
    assert time.monotonic() - t < 1.1
    assert (a.exit, b.exit, b.out) == (0, 3, 'hi\n')


def test_local_run_many_timeout_names_the_command_and_kills_all(tmp_path):
    pidfile = tmp_path / 'pid'
    t = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"^sh -c 'echo \$\$ > .*; sleep 30' did not "
                                             r'finish within 0.5s$'):
        LocalRunner().run_many([['sh', '-c', f'echo $$ > {pidfile}; sleep 30'],
                                ['sleep', '30']], 0.5)
    assert time.monotonic() - t < 2
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_local_run_many_missing_command():
    with pytest.raises(CommandNotFound, match='^no-such-xl: command not found$'):
        LocalRunner().run_many([['true'], ['no-such-xl', 'list']], 5)


def test_ssh_run_many_one_connection_side_by_side(dom0s):
    r = SSHRunner(dom0s.info['hosts']['dom0-1']['address'], dom0.ssh_options(dom0s), 10)
    with r:
        r.connect()
        t = time.monotonic()
        a, b = r.run_many([['sleep', '0.8'],
                           ['sh', '-c', 'sleep 0.8; echo out; echo err >&2; exit 2']])
        assert time.monotonic() - t < 1.5     # one after the other: 1.6 s at least
        assert (a.exit, b.exit, b.out, b.err) == (0, 2, 'out\n', 'err\n')
        with pytest.raises(CommandTimeout, match=r'^sleep 5 on .* did not finish within 0.5s$'):
            r.run_many([['true'], ['sleep', '5']], 0.5)


def test_ssh_output_after_the_exit_status_is_not_lost(dom0s):
    """sshd may send the exit status before the last output (real xl info did
    that): the command is done at EOF, not at its exit status."""
    r = SSHRunner(dom0s.info['hosts']['dom0-1']['address'], dom0.ssh_options(dom0s), 10)
    with r:
        res = r.run(['sh', '-c', '(sleep 0.3; echo late) & echo early'])
        assert (res.exit, res.out) == (0, 'early\nlate\n')
        a, b = r.run_many([['sh', '-c', '(sleep 0.3; echo late) & exit 4'], ['true']])
        assert (a.exit, a.out, b.exit) == (4, 'late\n', 0)


def test_ssh_a_daemon_holding_stdout_does_not_keep_the_command_running(dom0s):
    r = SSHRunner(dom0s.info['hosts']['dom0-1']['address'], dom0.ssh_options(dom0s), 10)
    with r:
        t = time.monotonic()
        res = r.run(['sh', '-c', 'sleep 5 & echo started'])
        assert (res.exit, res.out) == (0, 'started\n')
        assert time.monotonic() - t < 3


def test_ssh_more_commands_than_the_server_allows_sessions(dom0s):
    """A hardened sshd (MaxSessions 2) refuses a third session on a connection
    (OpenSSH answers "connect failed"): the runner runs the rest in turns, from
    one thread (run_many) or many (the engine's parallel creates), and never
    drops the connection under the commands still running."""
    from concurrent.futures import ThreadPoolExecutor
    dom0.sshd_setting(dom0s, 'dom0-2', 'MaxSessions 2')
    where, opts = dom0s.info['hosts']['dom0-2']['address'], dom0.ssh_options(dom0s)
    with SSHRunner(where, opts, 10) as r:
        t = time.monotonic()
        res = r.run_many([['sh', '-c', f'sleep 0.5; echo {i}'] for i in range(5)])
        assert [x.out for x in res] == [f'{i}\n' for i in range(5)]
        assert r.max_sessions == 2        # learnt from the server's refusal
        assert time.monotonic() - t > 1.4     # in 3 turns
    with SSHRunner(where, opts, 10) as r, ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda i: r.run(['sh', '-c', f'sleep 0.3; echo {i}']).out,
                             range(6)))
        assert outs == [f'{i}\n' for i in range(6)]
        # 2, or 1 when a refusal came while sshd still freed a session of ours
        assert r.max_sessions in (1, 2)
        assert r.run(['echo', 'still connected']).out == 'still connected\n'


def test_ssh_a_command_that_times_out_leaves_the_others_running(dom0s):
    """The engine logs a spare in to two targets at once on one connection:
    one of them hanging must not cut the other off."""
    from concurrent.futures import ThreadPoolExecutor
    r = SSHRunner(dom0s.info['hosts']['dom0-3']['address'], dom0.ssh_options(dom0s), 10)
    with r, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(r.run, ['sh', '-c', 'sleep 1.5; echo done'], 5)
        time.sleep(0.2)
        with pytest.raises(CommandTimeout, match=r'^sleep 5 on .* did not finish within 0.5s$'):
            r.run(['sleep', '5'], 0.5)
        assert slow.result().out == 'done\n'
        assert r.run(['echo', 'again']).out == 'again\n'


def test_connecting_gets_its_share_of_any_timeout():
    """-t is the budget: 40% of it for connect/banner/auth (an emulated dom0's
    banner took 16 s under load; a fixed 10 s ceiling cut it off whatever -t
    said), the rest for the command, all before the plugin's own alarm."""
    from xenha.runner import _split_timeouts
    assert _split_timeouts(3) == pytest.approx((1.0, 2.5))
    assert _split_timeouts(60) == pytest.approx((23.8, 59.5))
    assert _split_timeouts(0.5) == pytest.approx((0.2, 0.4))
