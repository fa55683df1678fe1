"""The cause a failing layer is named with (``equivalence.core.diagnosis``): each suspect's own mistake is named,
a correct output and an unrelated wrong one never are."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from equivalence.core import chain
from equivalence.core.diagnosis import SUSPECTS, diagnose
from equivalence.core.kinds import LayerWeights

BOUND = 1e-9


def _layer(planned: chain.Planned, shape: tuple[int, ...]):
    case = chain.make_chain_case(shape, [planned], "float64", seed=3, batch=4)
    kind = case.spec.kinds[0]
    return kind, kind.reference(case.x, case.weights[0], planned.activation), case.weights[0]


def _unbiased(x, weights, epsilon):
    gamma, beta = weights.W[:2]
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + epsilon) * gamma + beta


MISTAKES = [
    pytest.param(chain.conv(3, 3, same=True), (5, 5, 2),
                 lambda kind, t, w: kind.reference(t.x, LayerWeights(w.W[::-1, ::-1], w.b), "linear").h,
                 "kernel flipped", id="conv-flipped"),
    pytest.param(chain.pool("avg", 3, stride=1, same=True), (5, 2),
                 lambda kind, t, w: replace(kind, count_include_pad=True).reference(t.x, w, "linear").h,
                 "padding counted", id="avg-pool-counting-padding"),
    pytest.param(chain.batchnorm(), (6,),
                 lambda kind, t, w: replace(kind, epsilon=1e-5).reference(t.x, w, "linear").h,
                 "epsilon 1e-05 instead of 0.001", id="batchnorm-epsilon"),
    pytest.param(chain.batchnorm(), (6,),
                 lambda kind, t, w: replace(kind, batch_statistics=True).reference(t.x, w, "linear").h,
                 "batch statistics", id="batchnorm-statistics"),
    pytest.param(chain.layernorm(epsilon=1e-5), (6,),
                 lambda kind, t, w: replace(kind, epsilon=1e-3).reference(t.x, w, "linear").h,
                 "epsilon 0.001 instead of 1e-05", id="layernorm-epsilon"),
    pytest.param(chain.layernorm(), (6,), lambda kind, t, w: _unbiased(t.x, w, kind.epsilon),
                 "variance divided by n - 1", id="layernorm-unbiased-variance"),
]


@pytest.mark.parametrize("planned, shape, mistaken, cause", MISTAKES)
def test_each_mistake_is_named_and_nothing_else_is(planned, shape, mistaken, cause):
    kind, trace, weights = _layer(planned, shape)
    wrong = mistaken(kind, trace, weights)
    assert np.max(np.abs(wrong - trace.h)) > 1e3 * BOUND, "the mistake must change the output"
    assert cause in diagnose(kind, trace, weights, "linear", wrong, BOUND)
    assert diagnose(kind, trace, weights, "linear", trace.h, BOUND) is None, "a correct output has no cause"
    unrelated = trace.h + np.random.default_rng(0).uniform(0.1, 1.0, trace.h.shape)
    assert diagnose(kind, trace, weights, "linear", unrelated, BOUND) is None


def test_every_kind_with_weights_or_options_has_suspects():
    assert set(SUSPECTS) == {"conv", "pool", "batchnorm", "layernorm"}
    assert set(SUSPECTS) < set(chain.KIND_TYPES)
