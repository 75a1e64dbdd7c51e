"""The simulator against real Xen 4.17.7: the same scenario, compared step by step.

The golden file (tests/golden/xl_scenario_4_17_7.json) was recorded on a real
Xen dom0 under QEMU by `python -m xenha_lab.golden` (`make golden`); this test
runs the same steps on `xenha_lab.xensim` (no QEMU needed) and compares exit
codes, the exact stderr (source line numbers masked), the `xl list` layout
and state letters, and the `xl info` field names.
"""

import json
import re
from pathlib import Path

import pytest

from xenha_lab import golden

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / 'golden' / 'xl_scenario_4_17_7.json'
REAL = {s['step']: s for s in json.loads(GOLDEN.read_text())}


def _real_info() -> dict:
    return {k.strip(): v.strip() for k, _, v in
            (ln.partition(':') for ln in REAL['info']['stdout'].splitlines())}


@pytest.fixture(scope='module')
def sim():
    info = _real_info()
    total = int(info['total_memory'])
    dom0 = int(REAL['list_dom0']['stdout'].splitlines()[1].split()[2])
    cpus = int(info['nr_cpus'])
    return {s['step']: s for s in golden.run_sim(total, dom0, cpus)}


def list_shape(text: str) -> list[str]:
    """Each line with the CPU time masked: layout, names, ids, memory, state.

    r and b count as one ("healthy"): a guest a few seconds after create is
    still running its init under TCG, the simulator's is idle (blocked).
    Likewise a paused guest: real Xen shows -bp--- or --p---, depending on
    whether its vcpu was blocked or running when it was paused."""
    out = []
    for ln in text.splitlines():
        ln = re.sub(r'\d+\.\d$', lambda m: '9' * (len(m.group()) - 2) + '.9', ln)
        out.append(re.sub(r' (r-|-b|--)([p-][s-][c-][d-]) ',
                          lambda m: ' rb' + m.group(2) + ' '
                          if m.group(1) != '--' or m.group(2)[0] == 'p' else m.group(0),
                          ln))
    return out


STEPS = [s for s in REAL if s != 'info']

# Differences found by the golden file that xensim.py (the lead's file) does not
# fix yet; the exact patch is in the issue-6 report.  Non-strict xfail: once
# xensim is fixed these pass (XPASS) and this set can go.
PENDING_SIM_FIX: set = set()   # every difference found so far is fixed in xensim


def pending(kind, steps):
    return [pytest.param(s, marks=pytest.mark.xfail(
                reason='xensim differs from real xl: fix pending', strict=False))
            if (kind, s) in PENDING_SIM_FIX else s for s in steps]


@pytest.mark.parametrize('step', pending('exit', STEPS))
def test_exit_status(sim, step):
    assert sim[step]['exit'] == REAL[step]['exit'], (step, sim[step]['stderr'])


@pytest.mark.parametrize('step', pending('stderr', STEPS))
def test_stderr(sim, step):
    assert golden.normalize(sim[step]['stderr']) == golden.normalize(REAL[step]['stderr'])


@pytest.mark.parametrize('step', pending('list', [s for s in STEPS if s.startswith('list')]))
def test_list_layout(sim, step):
    assert list_shape(sim[step]['stdout']) == list_shape(REAL[step]['stdout'])


@pytest.mark.parametrize('step', [s for s in STEPS if not s.startswith('list')])
def test_no_stdout_where_real_xl_prints_none(sim, step):
    assert sim[step]['stdout'] == REAL[step]['stdout']


@pytest.mark.xfail(('info', 'info') in PENDING_SIM_FIX, strict=False,
                   reason='xensim differs from real xl: fix pending')
def test_info_fields_in_order(sim):
    keys = lambda text: [ln[:25] for ln in text.splitlines()]  # noqa: E731
    assert keys(sim['info']['stdout']) == keys(REAL['info']['stdout'])
