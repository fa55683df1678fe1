"""``make soak``: 100,000+ random cases on hypothesis + pytest-xdist, zero false alarms allowed.

Deselected from ``make check`` by the ``soak`` marker. The work is split into
shards (separate test items, so xdist spreads them over workers); each shard
draws its own random cases (the ``soak`` profile is not derandomized). Most
examples use pooled layers (cheap, about numbers); a slice builds real models in
every style. conftest prints, and ``--stats-json`` writes, the worst
error/bound ratio per dtype and activation.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equivalence.adapters import STYLES
from equivalence.check import check_case
from equivalence.strategies import breadth_specs, cases
from tests.helpers import assert_layers_agree

SHARDS = 40
STYLE_PAIRS = list(zip(STYLES["torch"], STYLES["keras"]))
any_case = cases(breadth_specs())  # every activation (per layer), every dtype, bias on or off

pytestmark = pytest.mark.soak


@pytest.mark.parametrize("shard", range(SHARDS))
@given(case=any_case)
def test_soak_pooled_layers(shard, case, torch_adapter, keras_adapter, layer_pool):
    models = {"torch": (torch_adapter, layer_pool.stack(torch_adapter, case.spec)),
              "keras": (keras_adapter, layer_pool.stack(keras_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize("shard", range(SHARDS // 4))
@settings(max_examples=max(1, settings.default.max_examples // 20))
@given(case=any_case, styles=st.sampled_from(STYLE_PAIRS))
def test_soak_every_build_style(shard, case, styles, torch_adapter, keras_adapter):
    torch_style, keras_style = styles
    models = {"torch": (torch_adapter, torch_adapter.build(case.spec, torch_style)),
              "keras": (keras_adapter, keras_adapter.build(case.spec, keras_style))}
    assert_layers_agree(comparison=check_case(case, models), case=case)
