"""Shared fixtures for fencing tests: a lab with dom0s that have real BMCs.

Import the fixtures into a test module (``from fencing_fixtures import …``).
Every lab is torn down in a ``finally``, also when the test fails.
"""

from __future__ import annotations

import os

import pytest

from xenha.inventory import FenceMethod
from xenha_lab import bmc, dom0
from xenha_lab.core import Lab


# the inventory's method object; fencing accepts any object of that shape
Method = FenceMethod


def ipmi_method(info: dict, timeout: float = 10.0, **overrides) -> Method:
    """A fence_ipmilan method for a lab BMC (`bmc.up`'s answer)."""
    params = dict(map(tuple, info['params']))
    params.update(overrides)
    return Method('agent', 'fence_ipmilan', tuple(params.items()),
                  info['password_file'], timeout)


def password_file(lab: Lab, name: str, text: str) -> str:
    path = lab.dir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as fh:
        fh.write(text)
    return str(path)


def make_lab(hosts=('h1',)) -> Lab:
    lab = Lab()
    try:
        for host in hosts:
            dom0.add_host(lab, host)
            bmc.up(lab, host)
    except BaseException:
        lab.down()
        raise
    return lab


@pytest.fixture
def fence_lab():
    """A lab with dom0s h1 and h2, each with its ipmi_sim BMC."""
    lab = make_lab(('h1', 'h2'))
    try:
        yield lab
    finally:
        lab.down()
