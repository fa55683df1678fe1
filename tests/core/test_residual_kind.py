"""The residual Add kind: its reference (two forms, a hand computation), where the per-layer reference places its
operands, and its bound: one rounding of the sum holds in every dtype, with the margin the derivation gives, and an
Add that drops an operand sits far outside."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equivalence.core.dtypes import EPSILON, numpy_dtype
from equivalence.core.kinds import DENSE, LayerWeights
from equivalence.core.reference import layerwise_reference
from equivalence.core.residual import INPUT, Branch, Residual
from equivalence.core.spec import ChainSpec
from equivalence.core.tolerance import SAFETY, forward_bound
from tests.helpers import BFLOAT16

NO_WEIGHTS = LayerWeights(np.zeros((0,)), None)


def test_the_reference_adds_the_two_halves_in_both_forms():
    kind = Residual((3,), INPUT)
    x = np.array([[1.0, -2.0, 0.5, 10.0, 2.0, -0.5]])
    for form in kind.FORMS:
        trace = kind.reference(x, NO_WEIGHTS, "relu", form=form)
        assert np.array_equal(trace.z, [[11.0, 0.0, 0.0]]) and np.array_equal(trace.h, [[11.0, 0.0, 0.0]])
    assert kind.output_shape((6,)) == (3,) and kind.describe() == "Add 3 + the model's input"
    with pytest.raises(ValueError, match="unknown reference form"):
        kind.reference(x, form="matmul")


def test_the_per_layer_reference_feeds_the_add_the_branch_and_the_skip_rounded():
    """Dense 2->3 (tanh), Dense 3->3, then an Add of the second's output and the first's: its input is both,
    side by side, each rounded to the dtype as the frameworks get them."""
    rng = np.random.default_rng(0)
    weights = [LayerWeights(rng.uniform(-1, 1, (2, 3)).astype(np.float32), None),
               LayerWeights(rng.uniform(-1, 1, (3, 3)).astype(np.float32), None), NO_WEIGHTS]
    spec = ChainSpec((2,), (DENSE, DENSE, Residual((3,), 0)), ("tanh", "linear", "linear"), "float32")
    x = rng.uniform(-1, 1, (4, 2))
    traces = layerwise_reference(spec, weights, x)
    first, second = (t.h.astype(np.float32) for t in traces[:2])
    assert np.array_equal(traces[2].x, np.concatenate([second, first], axis=-1))
    assert np.array_equal(traces[2].h, second.astype(np.float64) + first)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_one_rounding_of_the_sum_holds_within_a_sixteenth_of_the_bound_and_a_dropped_operand_does_not(dtype):
    """``|fl(a + b) - (a + b)| <= u |a + b| <= (eps / 2) S`` and the bound is ``8 eps max(1, S, max|h|)``: the
    error/bound ratio of a correctly rounded add is at most 1/16, whatever the operands. An Add that returns the
    branch alone (a skip connection dropped) is off by the skip itself."""
    if dtype == "float64" and np.finfo(np.longdouble).eps >= EPSILON["float64"]:
        pytest.skip("numpy's longdouble is float64 here: no wider sum to measure float64's rounding against")
    dt = numpy_dtype(dtype)
    worst = {"add": 0.0, "dropped": np.inf}

    @settings(max_examples=60, deadline=None, database=None)
    @given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 3.0, 100.0, 1e4]), width=st.integers(1, 32))
    def check(seed, scale, width):
        rng = np.random.default_rng(seed)
        a, b = (rng.uniform(-scale, scale, (16, width)).astype(dt) for _ in range(2))
        kind = Residual((width,), INPUT)
        trace = kind.reference(np.concatenate([a, b], axis=-1).astype(np.float64), NO_WEIGHTS, "linear")
        bound = forward_bound(trace, NO_WEIGHTS, "linear", dtype, {}, kind=kind).base
        assert bound == SAFETY * EPSILON[dtype] * kind.scale(trace)
        exact = a.astype(np.longdouble) + b.astype(np.longdouble)  # float64's own sum rounds too: 64 bits here
        error = float(np.max(np.abs((a + b).astype(np.longdouble) - exact)))
        dropped = float(np.max(np.abs(a.astype(np.longdouble) - exact)))
        assert error <= bound / 16, (error, bound)
        worst["add"] = max(worst["add"], error / bound)
        worst["dropped"] = min(worst["dropped"], dropped / bound)

    check()
    assert worst["add"] > 1 / 64, worst  # tight: random sums reach a quarter of the derived worst case
    assert worst["dropped"] > 1 / (64 * EPSILON[dtype]), worst  # 4e5 in float32, 2 in bfloat16


def test_a_second_branch_starts_from_an_earlier_output_exactly():
    """a(x) + b(x) as a chain: Dense a (0), then a Branch from the input, Dense b (2), the Add of b and a."""
    rng = np.random.default_rng(1)
    weights = [LayerWeights(rng.uniform(-1, 1, (2, 3)).astype(np.float32), None), NO_WEIGHTS,
               LayerWeights(rng.uniform(-1, 1, (2, 3)).astype(np.float32), None), NO_WEIGHTS]
    kinds = (DENSE, Branch((2,), INPUT), DENSE, Residual((3,), 0))
    spec = ChainSpec((2,), kinds, ("tanh", "linear", "linear", "linear"), "float32")
    x = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
    traces = layerwise_reference(spec, weights, x)
    assert np.array_equal(traces[1].x, x) and np.array_equal(traces[1].h, x) and np.array_equal(traces[2].x, x)
    a, b = traces[0].h.astype(np.float32), traces[2].h.astype(np.float32)
    assert np.array_equal(traces[3].h, b.astype(np.float64) + a)
    assert kinds[1].scale(traces[1]) == 0.0  # a copy: any difference fails
    assert forward_bound(traces[1], NO_WEIGHTS, "linear", "float32", {}, kind=kinds[1]).base == 0.0


def test_the_scale_leaves_non_finite_elements_out():
    kind = Residual((2,), INPUT)
    trace = kind.reference(np.array([[np.inf, 3.0, 1.0, 4.0], [1.0, 2.0, 0.5, 0.5]]), NO_WEIGHTS, "linear")
    assert kind.scale(trace) == 7.0  # the inf row is left out of S (2.5 from the other); its finite sum 7 counts


def _chain(kinds: tuple, dense_width: int = 4) -> tuple[ChainSpec, list[LayerWeights]]:
    """A float32 chain on a (4,) input of ``kinds``: each DENSE square, the others without weights."""
    square = LayerWeights(np.eye(dense_width) + 0.5, None)
    return (ChainSpec((4,), kinds, ("linear",) * len(kinds), "float32"),
            [square if k is DENSE else NO_WEIGHTS for k in kinds])


@pytest.mark.parametrize(("kinds", "problem"), [
    ((DENSE, Branch((4,), 1), DENSE),
     r"layer 1 \(branch\) takes layer 1's output, but it may take the model's input \(-1\) or a layer's output up "
     r"to layer 0"),
    ((DENSE, Branch((4,), INPUT), Residual((4,), 0)), r"layer 2 \(add\) has no layer of its branch before it"),
    ((Residual((4,), INPUT),), r"layer 0 \(add\) has no layer of its branch before it"),
    ((DENSE, DENSE, Residual((4,), 1)), r"layer 2 \(add\) takes layer 1's output, but it may take the model's "
                                        r"input \(-1\) or a layer's output up to layer 0"),
    ((DENSE, DENSE, Residual((3,), INPUT)), r"layer 2 \(add\) names features \(3,\), but the model's input is shaped "
                                            r"\(4,\)"),
])
def test_a_chain_whose_add_or_branch_takes_what_it_cannot_is_refused_naming_the_layer(kinds, problem):
    """What a golden-vector manifest or a blueprint could say, refused before any reference runs."""
    from equivalence.core.chain import check_chain_weights

    spec, weights = _chain(kinds)
    with pytest.raises(ValueError, match=problem):
        check_chain_weights(spec, weights)
    if len(kinds) == 3 and kinds[1] is DENSE:  # the same chain adding the input, x + f(f(x)): accepted
        check_chain_weights(*_chain((DENSE, DENSE, Residual((4,), INPUT))))
