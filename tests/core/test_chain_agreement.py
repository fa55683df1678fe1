"""The suite's property for chains of mixed kinds (conv, BatchNorm, pooling, Flatten, Dense; norms inside an MLP):
each framework builds the chain as a model of its own (``Adapter.build_chain``), and every layer agrees with the
float64 reference and with the other framework within its kind's bound, in every dtype."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from equivalence.core.check import LayerPool, check_pooled
from equivalence.core.strategies import chain_cases
from tests.helpers import BFLOAT16, skip_chainless

CHAIN_EXAMPLES = max(5, settings.default.max_examples // 5)
POOL = LayerPool()
"""Shared by the tests here: a drawn architecture met again is not built again."""


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_chains_of_mixed_kinds_agree_layer_by_layer(dtype, torch_adapter, keras_adapter):
    skip_chainless(torch_adapter, keras_adapter)
    adapters = {"torch": torch_adapter, "keras": keras_adapter}

    @settings(max_examples=CHAIN_EXAMPLES)
    @given(case=chain_cases(dtypes=(dtype,)))
    def check(case):
        result = check_pooled(case, adapters, POOL)
        assert not result.not_run, result.not_run
        assert result.passed, result.message()
        assert {r.layer for r in result.results} == set(range(case.spec.depth))  # every layer judged, 3 ways
        assert len(result.results) == 3 * case.spec.depth

    check()
