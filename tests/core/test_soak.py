"""``make soak``: 100,000+ random cases on hypothesis + pytest-xdist, zero false alarms allowed.

Deselected from ``make check`` by the ``soak`` marker. The work is split into
shards (separate test items, so xdist spreads them over workers); each shard
draws its own random cases (the ``soak`` profile is not derandomized). Most
examples use pooled layers (cheap, about numbers); a slice builds real models in
every style. conftest prints, and ``--stats-json`` writes, the worst
error/bound ratio per dtype and activation.

The accuracy verdict (``guard.accuracy.judge``, what ``verify`` applies on one kernel path) soaks too: each
framework's activation measured again on the grid with its rows in a random order and cut into two calls of random
sizes (other tensor shapes, other SIMD tails), judged against the canonical measurement: any alarm is false.
"""

from functools import cache

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from equivalence.core import accuracy
from equivalence.core.check import check_case
from equivalence.core.dtypes import DTYPES
from equivalence.core.strategies import breadth_specs, cases
from equivalence.frameworks.registry import entry
from equivalence.guard.accuracy import Recorded, activations, judge
from tests.helpers import assert_layers_agree

SHARDS = 40
STYLE_PAIRS = list(zip(entry("torch").styles, entry("keras").styles))
SOAK_WIDTHS = (1, 2, 8, 17, 33)
"""Boundary widths only (1, 2, 8, 17, 33; square and width 1 as ever). With every activation and dtype, the
full width set gives ~34,000 distinct layer keys and a pool that never hits (~100 ms a case); these ~3,800
fit in the pool, so 100,000 cases take minutes. The main suite keeps drawing all of BOUNDARY_WIDTHS."""
any_case = cases(breadth_specs(width=st.sampled_from(SOAK_WIDTHS)))  # every activation, dtype, bias on/off

pytestmark = pytest.mark.soak


@pytest.fixture(scope="session")
def soak_pool():
    from equivalence.core.check import LayerPool

    return LayerPool(size=8192)  # holds every soak layer key (~3,800, some twice in one stack)


@pytest.mark.parametrize("shard", range(SHARDS))
@given(case=any_case)
def test_soak_pooled_layers(shard, case, torch_adapter, keras_adapter, soak_pool):
    models = {"torch": (torch_adapter, soak_pool.stack(torch_adapter, case.spec)),
              "keras": (keras_adapter, soak_pool.stack(keras_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize("shard", range(SHARDS // 4))
@settings(max_examples=max(1, settings.default.max_examples // 20))
@given(case=any_case, styles=st.sampled_from(STYLE_PAIRS))
def test_soak_every_build_style(shard, case, styles, torch_adapter, keras_adapter):
    torch_style, keras_style = styles
    models = {"torch": (torch_adapter, torch_adapter.build(case.spec, torch_style)),
              "keras": (keras_adapter, keras_adapter.build(case.spec, keras_style))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


@cache
def _canonical(adapter, activation: str, dtype: str) -> accuracy.ErrorStats:
    return accuracy.measure(adapter.name, adapter.activation, activation, dtype)


@pytest.mark.parametrize("framework", ["torch", "keras"])
@settings(max_examples=max(1, settings.default.max_examples // 5), deadline=None)
@given(dtype=st.sampled_from(DTYPES), activation=st.sampled_from(activations()), data=st.data())
def test_soak_accuracy_verdict_raises_no_alarm_on_a_remeasurement(framework, dtype, activation, data, request):
    adapter = request.getfixturevalue(f"{framework}_adapter")
    assume(adapter.cannot(activation, dtype) is None)
    grid = accuracy.grid(dtype)
    order = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed")).permutation(len(grid))
    cut = data.draw(st.integers(1, len(grid) - 1), label="cut")
    shuffled = grid[order]
    out = np.empty_like(shuffled)
    out[:cut] = adapter.activation(activation, shuffled[:cut].copy(), dtype)
    out[cut:] = adapter.activation(activation, shuffled[cut:].copy(), dtype)
    again = np.empty_like(out)
    again[order] = out
    then = _canonical(adapter, activation, dtype)
    now = accuracy.statistics(adapter.name, activation, dtype, again)
    assert judge(Recorded({}, "canonical", {then.key: then}), [now], {}) == [], now.describe()
