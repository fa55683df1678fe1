"""The spatial layer kinds (``equivalence.core.spatial``): references against hand computations and each other,
the padding and flatten layouts, and the error bound's terms. Numpy only: the frameworks are judged against these
in ``tests/own/test_own_conv_models.py``."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.core.embedding import Embedding
from equivalence.core.kinds import DENSE, LayerWeights
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.reference import layerwise_reference
from equivalence.core.spatial import Conv, Flatten, Pool, flatten_permutation, same_padding
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.tolerance import SAFETY, forward_bound

RNG = np.random.default_rng(0)


def test_a_conv1d_matches_a_hand_computation_in_both_forms():
    """x = 1, 2, 3 (one channel), kernel 1, 10, bias 0.5: valid outputs 1 + 20 + 0.5 and 2 + 30 + 0.5."""
    kind = Conv((2,), (1,), ((0, 0),), 1, 1)
    weights = LayerWeights(np.array([1.0, 10.0]).reshape(2, 1, 1), np.array([0.5]))
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    for form in Conv.FORMS:
        assert kind.reference(x, weights, "linear", form=form).h.ravel().tolist() == [21.5, 32.5]


@pytest.mark.parametrize("rank", [1, 2])
def test_the_two_conv_forms_agree(rank):
    kind = Conv((3,) * rank, (2,) * rank, ((0, 1),) * rank, 4, 5)
    x = RNG.uniform(-1, 1, (2, *(7,) * rank, 4))
    weights = LayerWeights(RNG.uniform(-1, 1, kind.parameter_shapes(bias=True)[0]), RNG.uniform(-1, 1, 5))
    im2col, direct = (kind.reference(x, weights, "tanh", form=form).h for form in Conv.FORMS)
    assert im2col.shape == (2, *(3,) * rank, 5) == (2, *kind.output_shape(x.shape[1:]))  # (7 + 1 - 3) // 2 + 1
    np.testing.assert_allclose(im2col, direct, rtol=0, atol=1e-13)


def test_a_1x1_conv_is_the_dense_layer_of_its_kernel_with_the_same_bound():
    """A conv is dense layers over its patches: for a 1x1 kernel the patches are the inputs themselves."""
    kind = Conv((1,), (1,), ((0, 0),), 6, 3)
    x = RNG.uniform(-3, 3, (4, 1, 6))
    weights = LayerWeights(RNG.uniform(-1, 1, (1, 6, 3)), RNG.uniform(-1, 1, 3))
    dense_weights = LayerWeights(weights.W[0], weights.b)
    conv_trace = kind.reference(x, weights, "sigmoid")
    dense_trace = DENSE.reference(x[:, 0], dense_weights, "sigmoid")
    np.testing.assert_array_equal(conv_trace.h[:, 0], dense_trace.h)
    both = {"torch": None, "keras": None}
    assert forward_bound(conv_trace, weights, "sigmoid", "float32", both, kind=kind) == \
        forward_bound(dense_trace, dense_weights, "sigmoid", "float32", both)


def test_a_flipped_kernel_is_outside_the_conv_bound_by_orders_of_magnitude():
    kind = Conv((3, 3), (1, 1), ((1, 1), (1, 1)), 3, 4)
    x = RNG.uniform(-1, 1, (2, 6, 6, 3)).astype(np.float32)
    weights = LayerWeights(RNG.uniform(-1, 1, (3, 3, 3, 4)).astype(np.float32), None)
    trace = kind.reference(x, weights, "linear")
    flipped = kind.reference(x, LayerWeights(weights.W[:, ::-1], None), "linear")
    bound = forward_bound(trace, weights, "linear", "float32", {"torch": None}, kind=kind).against_reference("torch")
    assert np.max(np.abs(flipped.h - trace.h)) > 1e4 * bound


def test_the_conv_bound_holds_for_float32_arithmetic_over_random_layers():
    """The im2col product computed in float32 (BLAS) and the direct form in float32: within the bound."""
    worst = 0.0
    for _ in range(20):
        cin, cout, k = RNG.integers(1, 9, size=3)
        kind = Conv((int(k), int(k)), (1, 1), ((0, 0), (0, 0)), int(cin), int(cout))
        x = RNG.uniform(-10, 10, (2, 9, 9, cin)).astype(np.float32)
        weights = LayerWeights(RNG.uniform(-1, 1, kind.parameter_shapes(bias=True)[0]).astype(np.float32),
                               RNG.uniform(-1, 1, cout).astype(np.float32))
        trace = kind.reference(x, weights, "linear")
        bound = forward_bound(trace, weights, "linear", "float32", {"numpy": None}, kind=kind).base
        patches = kind.patches(x).astype(np.float32)
        got = patches @ weights.W.reshape(-1, cout) + weights.b
        worst = max(worst, float(np.max(np.abs(got.reshape(trace.h.shape) - trace.h))) / bound)
    assert 0 < worst <= 1


def test_max_pooling_and_flatten_are_exact_and_average_pooling_has_a_bound():
    x = RNG.uniform(-1, 1, (1, 4, 4, 2))
    maxpool, avgpool = Pool("max", (2, 2), (2, 2), ((0, 0),) * 2), Pool("avg", (2, 2), (2, 2), ((0, 0),) * 2)
    flatten = Flatten((4, 4, 2))
    for kind in (maxpool, flatten):
        assert forward_bound(kind.reference(x), LayerWeights(np.zeros(0), None), "linear", "float32",
                             {"torch": None}, kind=kind).base == 0.0
    bound = forward_bound(avgpool.reference(x), LayerWeights(np.zeros(0), None), "linear", "float32",
                          {"torch": None}, kind=avgpool).base
    assert bound == SAFETY * np.finfo(np.float32).eps  # scale: the floor 1 (|x| < 1)



@pytest.mark.parametrize("kind", [Pool("max", (2, 2), (2, 2), ((0, 0),) * 2), Flatten((4, 4, 2)),
                                  Embedding(8, 4, 8)], ids=["max pool", "flatten", "embedding"])
def test_an_exact_layer_with_an_activation_after_it_is_bounded_by_the_activation_s_rounding(kind):
    """A selection, a reshape or a gather is exact, but a tanh after it rounds: float32's tanh of the exact values
    stays within the bound (it was 0: a faithful torch Embedding + Tanh failed against its Keras port by an ulp),
    and a wrong selection (the features reversed) sits orders of magnitude outside."""
    rng = np.random.default_rng(3)
    x = rng.permutation(8)[None].repeat(2, axis=0) if isinstance(kind, Embedding) \
        else rng.uniform(-1, 1, (2, 4, 4, 2)).astype(np.float32)
    weights = LayerWeights(rng.uniform(-2, 2, (8, 4)).astype(np.float32) if isinstance(kind, Embedding)
                           else np.zeros(0), None)
    trace = kind.reference(x, weights, "tanh")
    bound = forward_bound(trace, weights, "tanh", "float32", {"torch": None}, kind=kind).base
    got = np.tanh(trace.z.astype(np.float32))
    assert 0 < np.max(np.abs(got - trace.h)) <= bound
    assert np.max(np.abs(np.tanh(trace.z[..., ::-1]) - trace.h)) > 1000 * bound
    assert forward_bound(kind.reference(x, weights, "linear"), weights, "linear", "float32", {"torch": None},
                         kind=kind).base == 0.0  # no activation: exact, any difference fails

def test_average_pooling_counts_the_padding_only_when_told():
    """A 2x2 input of ones, 3x3 windows, padding 1: each window holds 4 inputs and 5 zeros of padding."""
    x = np.ones((1, 2, 2, 1))
    padding = ((1, 1), (1, 1))
    counted = Pool("avg", (3, 3), (1, 1), padding, count_include_pad=True)
    not_counted = Pool("avg", (3, 3), (1, 1), padding, count_include_pad=False)
    for form in Pool.FORMS:
        np.testing.assert_allclose(counted.reference(x, form=form).h.ravel(), [4 / 9] * 4)
        np.testing.assert_allclose(not_counted.reference(x, form=form).h.ravel(), [1.0] * 4)


def test_max_pooling_pads_with_minus_infinity_and_the_forms_agree():
    x = -RNG.uniform(1, 2, (2, 5, 5, 3))  # all negative: a zero pad would win
    kind = Pool("max", (3, 3), (2, 2), ((1, 1), (1, 1)))
    windows, offsets = (kind.reference(x, form=form).h for form in Pool.FORMS)
    np.testing.assert_array_equal(windows, offsets)
    assert np.all(windows < 0)


def test_pooling_kinds_compare_equal_where_count_include_pad_cannot_matter():
    unpadded = ((0, 0), (0, 0))
    assert Pool("avg", (2, 2), (2, 2), unpadded, True) == Pool("avg", (2, 2), (2, 2), unpadded, False)
    assert Pool("max", (2, 2), (1, 1), ((1, 1),) * 2, True) == Pool("max", (2, 2), (1, 1), ((1, 1),) * 2, False)
    assert Pool("avg", (3, 3), (1, 1), ((1, 1),) * 2, True) != Pool("avg", (3, 3), (1, 1), ((1, 1),) * 2, False)


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (8, 3, 1, (1, 1)), (8, 2, 1, (0, 1)), (5, 1, 1, (0, 0))])
def test_same_padding_puts_the_odd_pad_at_the_end(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_the_flatten_permutation_maps_channels_last_to_channels_first():
    x = RNG.normal(size=(2, 3, 4, 5))  # N, H, W, C
    channels_first = np.moveaxis(x, -1, 1).reshape(2, -1)  # what torch's flatten gives
    np.testing.assert_array_equal(channels_first[:, flatten_permutation((3, 4, 5))], x.reshape(2, -1))


def test_a_chain_of_kinds_runs_layer_by_layer_and_a_stack_is_all_dense():
    conv = Conv((3, 3), (1, 1), ((1, 1), (1, 1)), 2, 3)
    pool = Pool("max", (2, 2), (2, 2), ((0, 0), (0, 0)))
    spec = ChainSpec((4, 4, 2), (conv, pool, Flatten((2, 2, 3)), DENSE), ("relu", "linear", "linear", "sigmoid"),
                     "float32")
    weights = [LayerWeights(RNG.uniform(-1, 1, (3, 3, 2, 3)), np.zeros(3)), LayerWeights(np.zeros(0), None),
               LayerWeights(np.zeros(0), None), LayerWeights(RNG.uniform(-1, 1, (12, 2)), np.zeros(2))]
    traces = layerwise_reference(spec, weights, RNG.uniform(-1, 1, (3, 4, 4, 2)))
    assert [t.h.shape for t in traces] == [(3, 4, 4, 3), (3, 2, 2, 3), (3, 12), (3, 2)]
    assert spec.id == "4x4x2-conv-pool-flatten-dense_f32"
    assert StackSpec(3, (4, 2)).kinds == (DENSE, DENSE)


def test_layernorm_matches_a_hand_computation_in_both_forms():
    """x = 1, 3: mean 2, variance 1, so (x - 2) / sqrt(1 + epsilon), then gamma 2 and beta 0.5."""
    kind = LayerNorm(2, 1e-3)
    weights = LayerWeights(np.array([[2.0, 2.0], [0.5, 0.5]]), None)
    for form in LayerNorm.FORMS:
        h = kind.reference(np.array([[1.0, 3.0]]), weights, "linear", form=form).h.ravel()
        np.testing.assert_allclose(h, [0.5 - 2 / np.sqrt(1.001), 0.5 + 2 / np.sqrt(1.001)], rtol=1e-15)


def test_the_two_batchnorm_forms_agree_and_batch_statistics_are_the_batch_s():
    x = RNG.uniform(-2, 2, (6, 3, 3, 4))
    W = np.stack([RNG.uniform(-2, 2, 4), RNG.uniform(-1, 1, 4), RNG.uniform(-1, 1, 4), RNG.uniform(0.5, 2, 4)])
    moving = BatchNorm(4, 1e-3, 0.99)
    direct, folded = (moving.reference(x, LayerWeights(W, None), "linear", form=form).h for form in BatchNorm.FORMS)
    np.testing.assert_allclose(direct, folded, rtol=0, atol=1e-13)
    batch = BatchNorm(4, 1e-3, 0.99, batch_statistics=True).reference(x, LayerWeights(W, None), "linear").h
    np.testing.assert_allclose(((batch - W[1]) / W[0]).mean(axis=(0, 1, 2)), 0, atol=1e-12)


def test_the_layernorm_scale_grows_with_a_row_s_offset_over_its_spread():
    """A row 10,000 + U(-1, 1): its mean's rounding is eps of 10,000, divided by a spread of about 0.6."""
    kind = LayerNorm(8, 1e-5)
    weights = LayerWeights(np.stack([np.ones(8), np.zeros(8)]), None)
    spread = RNG.uniform(-1, 1, (1, 8))
    centred, offset = (kind.reference(spread + shift, weights, "linear") for shift in (0.0, 1e4))
    assert kind.scale(offset, weights, slope=1.0) > 1e4 * kind.scale(centred, weights, slope=1.0) / 10
