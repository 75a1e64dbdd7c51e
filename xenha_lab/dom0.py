"""Lab dom0s, of two kinds behind one interface (`HostKind`):

* simulated (xenha_lab.simhost): a real sshd on its own loopback address and
  the toolstack simulator; seconds to start, every fault available;
* real Xen (xenha_lab.qemu): a QEMU/TCG machine booting Xen 4.17 and a PV
  dom0; minutes, power and hang only.

`kind(lab, name)` is the one place that tells them apart; the functions here
(power, powered, hang, resume, partition, reachable, domains) ask it and
never look at the kind themselves.  `add_host` makes a simulated dom0
(`qemu.add_host` a real one); the SSH identity of both lives in xenha_lab.keys.
"""

from __future__ import annotations

import os
from typing import Protocol

from xenha_lab import simhost
from xenha_lab.core import Lab
from xenha_lab.keys import client_key, known_hosts, known_hosts_name, ssh_options

__all__ = ['HostKind', 'kind', 'add_host', 'start', 'sshd_setting', 'power', 'powered',
           'partition', 'reachable', 'hang', 'resume', 'domains', 'wait_ready', 'state_dir',
           'env_for',
           'client_key', 'known_hosts', 'known_hosts_name', 'ssh_options']


class HostKind(Protocol):
    """What a kind of lab dom0 does (each is a module: simhost, qemu)."""
    NAME: str                   # 'sim' | 'qemu', as lab.json records it
    WHAT: str                   # what it is, for a message ("runs real Xen")
    FAULTS: tuple               # the `xenha lab fail --how` it can do

    def power(self, lab: Lab, name: str, on: bool) -> None:
        """What a BMC's chassis control does: pull the plug, or power on."""

    def powered(self, lab: Lab, name: str) -> bool:
        """What its BMC says: the host has power (its sshd may be cut off)."""

    def hang(self, lab: Lab, name: str) -> None:
        """It stops answering: SSH connects, no banner comes."""

    def resume(self, lab: Lab, name: str) -> None:
        """Undo a hang or a partition (a host without power stays off)."""

    def partition(self, lab: Lab, name: str) -> None:
        """Cut off from the monitoring node (refused), power and guests on."""

    def reachable(self, lab: Lab, name: str) -> bool:
        """Its SSH daemon runs and is not hung."""

    def domains(self, lab: Lab, name: str) -> list[tuple[str, str]]:
        """(name, state) of its guests; [] when off or silent."""

    def fault(self, lab: Lab, name: str) -> str | None:
        """What `xenha lab status` says of it beyond its power (a fault set)."""

    def wait_ready(self, lab: Lab, name: str) -> None:
        """After `power(on)`: until it answers SSH as the checks will."""


def kind(lab: Lab, name: str) -> HostKind:
    """The kind of lab dom0 `name` (the one place that decides)."""
    if lab.info['hosts'][name].get('kind') == 'qemu':
        from xenha_lab import qemu
        return qemu
    return simhost


add_host = simhost.add_host
start = simhost.start
sshd_setting = simhost.sshd_setting


def power(lab: Lab, name: str, on: bool) -> None:
    """Power the host on or off (what a BMC's chassis control does)."""
    kind(lab, name).power(lab, name, on)


def powered(lab: Lab, name: str) -> bool:
    """What its BMC says: the host has power (its sshd may still be cut off)."""
    return kind(lab, name).powered(lab, name)


def partition(lab: Lab, name: str) -> None:
    """Cut the host off from the monitoring node: no SSH answer (refused), while
    it keeps power and its guests keep running."""
    kind(lab, name).partition(lab, name)


def reachable(lab: Lab, name: str) -> bool:
    """Its sshd runs and is not hung."""
    return kind(lab, name).reachable(lab, name)


def hang(lab: Lab, name: str) -> None:
    kind(lab, name).hang(lab, name)


def resume(lab: Lab, name: str) -> None:
    """Undo a hang or a partition (a host without power stays off)."""
    kind(lab, name).resume(lab, name)


def domains(lab: Lab, name: str) -> list[tuple[str, str]]:
    """(name, state) of the guests on it, as its toolstack has them."""
    return kind(lab, name).domains(lab, name)


def wait_ready(lab: Lab, name: str) -> None:
    """After power on: until it answers SSH as the checks will."""
    kind(lab, name).wait_ready(lab, name)


def state_dir(lab: Lab, name: str) -> str:
    return lab.info['hosts'][name]['state_dir']


def env_for(lab: Lab, name: str) -> dict:
    """The environment a command on that host sees (for local-mode runs)."""
    host = lab.info['hosts'][name]
    env = dict(os.environ)
    env.update(XENSIM_HOST=name, XENSIM_STATE=host['state_dir'],
               XENHA_LAB_DIR=str(lab.dir),
               PATH=f"{host['bin']}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return env
