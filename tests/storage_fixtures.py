"""Fixtures and helpers for the storage tests: a lab with two dom0s and the
storage node, and the storage plugins run as subprocesses."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, Ran
from xenha_lab import dom0, storage

REPO = Path(__file__).resolve().parent.parent
HOSTS = ('dom0-1', 'dom0-2')


def plugin_argv(name: str) -> list[str]:
    """The installed plugin; until setup.cfg lists it, the repository copy."""
    installed = BIN / name
    if installed.exists():
        return [str(installed)]
    return [sys.executable, str(REPO / 'plugins' / name)]


def run_plugin(name, *args, netns=None, prefix=(), env=None, timeout=60) -> Ran:
    argv = [*prefix, *plugin_argv(name), *map(str, args)]
    if netns:
        argv = ['ip', 'netns', 'exec', netns, *argv]
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Ran(proc, time.monotonic() - t)


def ssh(lab, host=None):
    """SSH options of the storage plugins reaching `host` (address as -H)."""
    opts = dom0.ssh_options(lab)
    args = ['-i', opts.identity, '--known-hosts', opts.known_hosts]
    if host:
        args[:0] = ['-H', lab.info['hosts'][host]['address']]
    return args


def host_runner(lab, host):
    from xenha.runner import SSHRunner
    return SSHRunner(lab.info['hosts'][host]['address'], dom0.ssh_options(lab), 20)


def wait_for(predicate, timeout=8.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def san(lab):
    """Two dom0s plus the storage node (tgtd + vblade e1.2) of this lab."""
    for name in HOSTS:
        dom0.add_host(lab, name)
    storage.up(lab)
    return lab
