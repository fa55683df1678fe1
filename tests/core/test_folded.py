"""The folded kinds (``equivalence.core.folded``): a conv and the BatchNorm after it as one conv of folded weights, a
BatchNorm as a scale and a shift. Their references are the two layers' composed, their bound sees the terms the
folded shift cancels, and a converter's float32 fold sits inside ``fold_tolerance`` while a wrong statistic does
not."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.core.dtypes import EPSILON
from equivalence.core.folded import (
    LAYERS,
    ChannelAffine,
    FoldedConv,
    FoldedDense,
    fold_batch_norm,
    fold_batch_norm_into_next,
    fold_tolerance,
    shift,
)
from equivalence.core.kinds import DENSE, LayerTrace, LayerWeights
from equivalence.core.norms import BatchNorm
from equivalence.core.spatial import Conv

CONV = Conv((3, 3), (1, 1), ((1, 1), (1, 1)), 2, 3)
NORM = BatchNorm(3, 1e-5, 0.9)


def draw(seed: int, *, mean: float = 2.0) -> tuple[LayerWeights, np.ndarray, np.ndarray]:
    """A conv's weights, a BatchNorm's rows (gamma, beta, mean, var) and an input ``(4, 5, 5, 2)``."""
    rng = np.random.default_rng(seed)
    conv = LayerWeights(rng.uniform(-1, 1, (3, 3, 2, 3)), rng.uniform(-1, 1, 3))
    rows = np.stack([rng.uniform(-2, 2, 3), rng.uniform(-mean, mean, 3), rng.uniform(-mean, mean, 3),
                     rng.uniform(0.01, 3, 3)])
    return conv, rows, rng.uniform(-1, 1, (4, 5, 5, 2))


@pytest.mark.parametrize("form", Conv.FORMS)
def test_a_folded_conv_is_the_conv_then_the_batch_norm(form):
    conv, rows, x = draw(0)
    two = NORM.reference(CONV.reference(x, conv, "linear", form=form).h, LayerWeights(rows, None), "relu").h
    one = FoldedConv(CONV).reference(x, fold_batch_norm(NORM, rows, *conv), "relu", form=form).h
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-12)


def test_a_channel_affine_is_the_batch_norm():
    _, rows, x = draw(1)
    expected = NORM.reference(x[..., :1].repeat(3, -1), LayerWeights(rows, None), "tanh").h
    got = ChannelAffine(3).reference(x[..., :1].repeat(3, -1), fold_batch_norm(NORM, rows), "tanh").h
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_the_shift_is_kept_as_the_rows_it_sums_and_a_conv_without_bias_has_two():
    conv, rows, _ = draw(2)
    with_bias, without = fold_batch_norm(NORM, rows, *conv), fold_batch_norm(NORM, rows, conv.W, None)
    s = rows[0] / np.sqrt(rows[3] + NORM.epsilon)
    np.testing.assert_allclose(shift(with_bias.b), (conv.b - rows[2]) * s + rows[1], rtol=1e-14)
    assert with_bias.b.shape == (3, 3) and without.b.shape == (2, 3)
    np.testing.assert_allclose(without.W, conv.W * s, rtol=1e-15)


def test_batch_statistics_have_nothing_to_fold():
    with pytest.raises(ValueError, match="no affine map"):
        fold_batch_norm(BatchNorm(3, 1e-5, 0.9, batch_statistics=True), draw(0)[1])


def test_the_scale_is_twice_dense_s_at_the_terms_before_they_cancel():
    """A mean and a beta of 1000 that cancel in the folded bias still count in ``S``: the unfolded side computes
    ``x - mean`` in the dtype, whose rounding is eps of 1000."""
    conv, rows, x = draw(3)
    rows[2] = 1000.0
    rows[1] = rows[2] * rows[0] / np.sqrt(rows[3] + NORM.epsilon)  # beta = mean * s: the shift's terms cancel
    weights = fold_batch_norm(NORM, rows, conv.W, None)
    assert np.max(np.abs(shift(weights.b))) < 1e-9
    kind = FoldedConv(CONV)
    trace = kind.reference(x, weights, "linear")
    patches = CONV.patches(x)
    spread = np.abs(weights.b).sum(axis=0)
    expected = DENSE.magnitude(patches, LayerWeights(weights.W.reshape(-1, 3), spread))
    assert expected > 1000
    assert kind.scale(trace, weights, slope=1.0) == pytest.approx(LAYERS * max(1.0, expected,
                                                                                np.max(np.abs(trace.h))))
    plain = CONV.scale(trace, LayerWeights(weights.W, shift(weights.b)), slope=1.0)
    assert kind.scale(trace, weights, slope=1.0) > 100 * plain


def test_a_float32_fold_sits_inside_the_tolerance_and_a_wrong_statistic_far_outside():
    """The fold as an exporter computes it, in float32 (``W * (gamma / sqrt(var + eps))``, ``(b - mean) * s +
    beta``), is within ``fold_tolerance``; one with a variance 0.1% off is orders of magnitude beyond."""
    conv, rows, _ = draw(4, mean=50.0)
    exact = fold_batch_norm(NORM, rows, *conv)
    allowed = fold_tolerance(exact, "float32")

    def float32_fold(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gamma, beta, mean, var = rows.astype(np.float32)
        s = gamma / np.sqrt(var + np.float32(NORM.epsilon))
        return conv.W.astype(np.float32) * s, (conv.b.astype(np.float32) - mean) * s + beta

    W, b = float32_fold(rows)
    assert np.all(np.abs(W - exact.W) <= allowed.W) and np.all(np.abs(b - shift(exact.b)) <= allowed.b)
    assert np.max(np.abs(W - exact.W) / allowed.W) < 0.25  # 8 eps allowed, about 1 eps seen
    wrong = rows.copy()
    wrong[3, 1] *= 1.001
    W, b = float32_fold(wrong)
    assert np.max(np.abs(W - exact.W) / allowed.W) > 50
    assert allowed.W.max() <= 8 * EPSILON["float32"] * np.abs(exact.W).max()


def test_kinds_of_the_same_conv_are_equal_and_name_its_configuration():
    folded = FoldedConv(CONV)
    assert folded == FoldedConv(Conv((3, 3), (1, 1), ((1, 1), (1, 1)), 2, 3)) and folded != FoldedConv(
        Conv((3, 3), (2, 2), ((1, 1), (1, 1)), 2, 3))
    assert (folded.kernel, folded.strides, folded.padding, folded.in_channels, folded.out_channels) == \
        (CONV.kernel, CONV.strides, CONV.padding, CONV.in_channels, CONV.out_channels)
    assert folded.describe().endswith("a BatchNorm folded in") and folded.output_shape((5, 5, 2)) == (5, 5, 3)
    assert ChannelAffine(3).parameter_count() == 6 and folded.parameter_count() == CONV.parameter_count(bias=True)


def test_non_finite_inputs_are_left_out_of_the_scale():
    _, rows, x = draw(5)
    x = x[..., :1].repeat(3, -1)
    x[0, 0, 0, 0] = np.inf
    weights = fold_batch_norm(NORM, rows)
    trace = ChannelAffine(3).reference(x, weights, "linear")
    assert np.isfinite(ChannelAffine(3).scale(trace, weights, slope=1.0))
    trace = LayerTrace(trace.x, trace.z, trace.h)
    assert np.isfinite(FoldedConv(Conv((1, 1), (1, 1), ((0, 0), (0, 0)), 3, 3)).scale(
        trace, LayerWeights(np.eye(3).reshape(1, 1, 3, 3), weights.b), slope=1.0))


@pytest.mark.parametrize("form", FoldedDense.FORMS)
def test_a_folded_dense_layer_is_the_dense_layer_then_the_batch_norm_and_its_scale_sees_the_shift_s_terms(form):
    rng = np.random.default_rng(6)
    dense = LayerWeights(rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, 3))
    rows = np.stack([rng.uniform(-2, 2, 3), np.zeros(3), np.full(3, 500.0), rng.uniform(0.01, 3, 3)])
    rows[1] = rows[2] * rows[0] / np.sqrt(rows[3] + NORM.epsilon)  # beta = mean * s: the shift's terms cancel
    x = rng.uniform(-1, 1, (4, 5))
    two = NORM.reference(DENSE.reference(x, dense, "linear").h, LayerWeights(rows, None), "tanh").h
    kind, weights = FoldedDense(5, 3), fold_batch_norm(NORM, rows, *dense)
    trace = kind.reference(x, weights, "tanh", form=form)
    np.testing.assert_allclose(trace.h, two, rtol=0, atol=1e-12)
    assert kind.output_shape((5,)) == (3,) and kind.parameter_shapes() == ((5, 3), (3,))
    expected = DENSE.magnitude(x, LayerWeights(weights.W, np.abs(weights.b).sum(axis=0)))
    assert kind.scale(trace, weights, slope=1.0) == pytest.approx(LAYERS * max(1.0, expected)) and expected > 500
    assert kind.scale(trace, weights, slope=1.0) > 100 * DENSE.scale(trace, LayerWeights(weights.W, shift(weights.b)),
                                                                     slope=1.0)


def test_a_float32_fold_stored_as_float16_sits_inside_the_tolerance_that_allows_its_rounding():
    conv, rows, _ = draw(7, mean=50.0)
    exact = fold_batch_norm(NORM, rows, *conv)
    gamma, beta, mean, var = rows.astype(np.float32)
    s = gamma / np.sqrt(var + np.float32(NORM.epsilon))
    W = (conv.W.astype(np.float32) * s).astype(np.float16).astype(np.float64)
    b = ((conv.b.astype(np.float32) - mean) * s + beta).astype(np.float16).astype(np.float64)
    allowed, plain = fold_tolerance(exact, "float32", "float16"), fold_tolerance(exact, "float32")
    assert np.all(np.abs(W - exact.W) <= allowed.W) and np.all(np.abs(b - shift(exact.b)) <= allowed.b)
    assert np.max(np.abs(W - exact.W) / plain.W) > 10  # float16's rounding is not the fold's
    wrong = ((conv.b.astype(np.float32) - mean) * s * np.float32(1.01) + beta).astype(np.float16)
    assert np.max(np.abs(wrong - shift(exact.b)) / allowed.b) > 1


def test_a_norm_folded_into_the_dense_after_it_is_the_norm_then_the_dense_and_float32_sits_within_its_bound():
    """``fold_batch_norm_into_next``: ``s[:, None] * W`` and ``b + (beta - mean * s) @ W`` compute the norm then the
    dense layer exactly; the shift's terms carry the norm's own magnitude (``|mean s| + |beta|`` through ``|W|``),
    so the two layers computed in float32 sit within the folded kind's bound, and a float32 fold within the fold's
    tolerance, while a mean moved by 1% is far outside it."""
    rng = np.random.default_rng(7)
    norm = BatchNorm(5, 1e-3, 0.99)
    dense = LayerWeights(rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, 3))
    rows = np.stack([rng.uniform(-2, 2, 5), rng.uniform(-50, 50, 5), rng.uniform(-50, 50, 5), rng.uniform(1e-3, 3, 5)])
    x = rows[2] + rng.uniform(-1, 1, (64, 5))  # around the mean: the norm's subtraction cancels
    two = DENSE.reference(norm.reference(x, LayerWeights(rows, None), "linear").h, dense, "tanh").h
    kind, weights = FoldedDense(5, 3, norm_first=True), fold_batch_norm_into_next(norm, rows, *dense)
    trace = kind.reference(x, weights, "tanh")
    np.testing.assert_allclose(trace.h, two, rtol=0, atol=1e-12)
    assert weights.b.shape == (1 + 2 * 5, 3) and kind != FoldedDense(5, 3)
    gamma, beta, mean, var = rows.astype(np.float32)
    y = (x.astype(np.float32) - mean) * (gamma / np.sqrt(var + np.float32(1e-3))) + beta  # Keras' norm, float32
    got = np.tanh(y @ dense.W.astype(np.float32) + dense.b.astype(np.float32))
    bound = 8 * EPSILON["float32"] * kind.scale(trace, weights, slope=1.0)
    assert 0 < np.max(np.abs(got - trace.h)) <= bound
    s = gamma / np.sqrt(var + np.float32(1e-3))
    W32, b32 = s[:, None] * dense.W.astype(np.float32), dense.b.astype(np.float32) + (beta - mean * s) @ dense.W.astype(
        np.float32)
    allowed = fold_tolerance(weights, "float32")
    assert np.all(np.abs(W32 - weights.W) <= allowed.W) and np.all(np.abs(b32 - shift(weights.b)) <= allowed.b)
    moved = rows.copy()
    moved[2, 1] *= 1.01
    assert np.max(np.abs(shift(fold_batch_norm_into_next(norm, moved, *dense).b) - shift(weights.b)) / allowed.b) > 50
