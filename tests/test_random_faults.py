"""Seeded random faults in random order; the invariants must hold for every seed.

A handful of seeds here; `bench/soak.py` runs hundreds.
"""

import pytest

from xenha_lab import chaos

SEEDS = [1, 2, 3, 5, 8, 13]


@pytest.fixture(scope='module')
def chaos_lab():
    lab = chaos.up()
    try:
        yield lab
    finally:
        assert lab.down() == []


@pytest.mark.parametrize('seed', SEEDS)
def test_invariants_hold(chaos_lab, seed):
    out = chaos.run_seed(chaos_lab, seed)
    assert out.violations == [], (out.faults, [(k, n, r.result, r.message)
                                               for k, n, r in out.reports])
    assert out.reports, 'every seed injects at least one fault that needs a job'
