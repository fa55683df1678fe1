"""The sequence layer kinds (``equivalence.core.embedding``, ``equivalence.core.attention``): references against hand
computations and each other, the token ids refused, and the error bounds: held by float32 arithmetic, and a wrong
head split or a missing scale far outside. Numpy only: the frameworks are judged against these in
``tests/own/test_own_sequence_models.py``."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.core.attention import SelfAttention
from equivalence.core.embedding import Embedding, SequenceMean, check_ids, ids_from_draw
from equivalence.core.kinds import LayerWeights
from equivalence.core.tolerance import SAFETY, forward_bound

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator of its own per test: its draws do not depend on which tests ran before (-k, xdist)."""
    return np.random.default_rng(0)


def _attention(E: int, H: int, L: int, rng: np.random.Generator, *, bias: bool = True, dtype=np.float64) -> tuple:
    kind = SelfAttention(E, H, E // H, L)
    weights = kind.pack({name: rng.uniform(-1, 1, shape).astype(dtype) for name, shape in kind._shapes(bias).items()})
    return kind, weights


def test_an_embedding_gathers_rows_in_both_forms_exactly():
    kind = Embedding(4, 2, 3)
    W = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    for form in Embedding.FORMS:
        h = kind.reference(np.array([[3, 0, 3]]), LayerWeights(W, None), form=form).h
        assert h.tolist() == [[[6.0, 7.0], [0.0, 1.0], [6.0, 7.0]]]
    trace = kind.reference(np.array([[1, 2, 3]]), LayerWeights(W, None))
    assert forward_bound(trace, LayerWeights(W, None), "linear", "float32", {"torch": None}, kind=kind).base == 0.0


def test_token_ids_are_checked_and_drawn_ids_stay_in_the_table(rng):
    assert check_ids(np.array([1.0, 2.0, 0.0]), 3, 3).tolist() == [[1, 2, 0]]
    with pytest.raises(ValueError, match=r"x holds the id -1 at \(0, 1\), but the embedding has 3 rows"):
        check_ids(np.array([[0, -1, 2]]), 3, 3)
    with pytest.raises(ValueError, match="non-integer values"):
        check_ids(np.array([[0.0, np.nan, 2.0]]), 3, 3)
    ids = ids_from_draw(rng.uniform(-100, 100, (50, 4)), 7)
    assert ids.min() == 0 and ids.max() == 6 and ids.dtype == np.int64


def test_the_mean_over_the_tokens_and_its_bound_for_long_sequences(rng):
    x = rng.uniform(-1, 1, (2, 64, 3))
    short, long = SequenceMean(16, 3), SequenceMean(64, 3)
    for form in SequenceMean.FORMS:
        np.testing.assert_allclose(long.reference(x, form=form).h, x.mean(axis=1), rtol=0, atol=1e-15)
    trace = long.reference(x)
    assert long.scale(trace) == pytest.approx(4 * long.magnitude(x))  # 64 / (2 * SAFETY) = 4: the worst case
    assert short.scale(short.reference(x[:, :16])) == max(1.0, short.magnitude(x[:, :16]))
    worst = 0.0
    for _ in range(20):  # a sequential float32 sum, as a kernel reducing over the tokens computes it
        x = rng.uniform(-10, 10, (4, 200, 5)).astype(np.float32)
        kind = SequenceMean(200, 5)
        got = np.cumsum(x, axis=1, dtype=np.float32)[:, -1] / np.float32(200)
        bound = forward_bound(kind.reference(x), LayerWeights(np.zeros(0), None), "linear", "float32",
                              {"numpy": None}, kind=kind).base
        worst = max(worst, float(np.max(np.abs(got - kind.reference(x).h))) / bound)
    assert 0 < worst <= 1


def test_one_head_of_one_feature_matches_a_hand_computation():
    """x = 0, 1 (two tokens, one feature), all kernels 1, no bias: scores q k = x_i x_j, so token 1 weighs
    e^0 and e^1 over (0, 1): out_1 = e / (1 + e); token 0 weighs both alike: out_0 = 1/2."""
    kind = SelfAttention(1, 1, 1, 2)
    weights = kind.pack({name: np.ones(shape) for name, shape in kind._shapes(False).items()})
    for form in SelfAttention.FORMS:
        h = kind.reference(np.array([[[0.0], [1.0]]]), weights, form=form).h.ravel()
        np.testing.assert_allclose(h, [0.5, np.e / (1 + np.e)], rtol=1e-15)


@pytest.mark.parametrize(("E", "H"), [(8, 2), (6, 3), (4, 1), (4, 4)])
def test_the_two_attention_forms_agree(E, H, rng):
    kind, weights = _attention(E, H, 5, rng, bias=E != 4)
    x = rng.uniform(-2, 2, (3, 5, E))
    einsum, loop = (kind.reference(x, weights, form=form).h for form in SelfAttention.FORMS)
    np.testing.assert_allclose(einsum, loop, rtol=0, atol=1e-13)


def test_pack_and_unpack_are_inverse_and_the_count_is_four_projections(rng):
    kind, weights = _attention(6, 2, 4, rng)
    assert kind.parameter_count(bias=True) == 4 * 6 * 6 + 4 * 6 == weights.W.size + weights.b.size
    again = kind.pack(kind.unpack(weights))
    assert np.array_equal(again.W, weights.W) and np.array_equal(again.b, weights.b)
    with pytest.raises(ValueError, match=r"query: got shape \(6, 6\), but should be \(6, 2, 3\)"):
        kind.pack({**kind.unpack(weights), "query": np.zeros((6, 6))})


def _float32_attention(kind: SelfAttention, weights: LayerWeights, x: np.ndarray) -> np.ndarray:
    """The layer computed in float32 throughout, the way a framework's kernels order it."""
    p = {name: w.astype(np.float32) for name, w in kind.unpack(weights).items()}
    x = x.astype(np.float32)
    q, k, v = (np.einsum("nle,ehd->nlhd", x, p[n]) + p[f"{n}_bias"] for n in ("query", "key", "value"))
    scores = np.einsum("nqhd,nkhd->nhqk", q * np.float32(1 / np.sqrt(kind.head_dim)), k)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    heads = np.einsum("nhqk,nkhd->nqhd", e / e.sum(axis=-1, keepdims=True), v)
    return np.einsum("nqhd,hde->nqe", heads, p["output"]) + p["output_bias"]


def test_the_attention_bound_holds_for_float32_arithmetic_and_a_broken_layer_sits_far_outside():
    """Over random layers and input scales: float32 arithmetic within the bound; a wrong head split (the
    matrices reshaped without their transpose, or the heads interleaved) and a missing 1/sqrt(d) scale at least
    100 times outside it."""
    worst, closest_broken = 0.0, np.inf
    for trial in range(24):
        rng = np.random.default_rng(trial)
        H = int(rng.integers(1, 5))
        E, L = H * int(rng.integers(2, 9)), int(rng.integers(2, 12))
        kind, weights = _attention(E, H, L, rng, dtype=np.float32)
        x = rng.uniform(-1, 1, (3, L, E)).astype(np.float32) * [0.1, 1.0, 3.0][trial % 3]
        trace = kind.reference(x, weights)
        bound = forward_bound(trace, weights, "linear", "float32", {"numpy": None}, kind=kind).base
        worst = max(worst, float(np.max(np.abs(_float32_attention(kind, weights, x) - trace.h))) / bound)
        parts = kind.unpack(weights)
        outputs = [kind.reference(x, kind.pack({**parts, "query": wrong})).h
                   for _, wrong, _ in kind.wrong_layouts(weights)["query"]
                   if not np.array_equal(wrong, parts["query"])]  # one head: interleaving changes nothing
        outputs.append(_unscaled(kind, weights, x))  # head_dim >= 2 here
        closest_broken = min(closest_broken, *(float(np.max(np.abs(o - trace.h))) / bound for o in outputs))
    assert 0 < worst <= 1, worst
    assert closest_broken > 100, closest_broken


def _unscaled(kind: SelfAttention, weights: LayerWeights, x: np.ndarray) -> np.ndarray:
    """The layer without its 1/sqrt(d) scale: the same weights with the query kernel and bias times sqrt(d)."""
    p = kind.unpack(weights)
    root = np.sqrt(kind.head_dim)
    scaled = {**p, "query": p["query"] * root, "query_bias": p["query_bias"] * root}
    return kind.reference(x, kind.pack(scaled)).h


def test_the_weighted_sum_s_rounding_is_its_sum_of_absolute_terms_not_its_result():
    """Two tokens x = 1, -1 of one feature, query and key kernels 0 (both weights 1/2), value and output kernels 1:
    v = 1, -1 cancel to o = 0, but the sum rounds as its terms are, A|v| = 1. By the model: the softmax's rounding
    2 A|v| = 2, the values' own error A Mv = 1, the sum's A|v| = 1, plus |o| = 0 into the output projection: 4."""
    kind = SelfAttention(1, 1, 1, 2)
    weights = kind.pack({"query": np.zeros((1, 1, 1)), "key": np.zeros((1, 1, 1)), "value": np.ones((1, 1, 1)),
                         "output": np.ones((1, 1, 1))})
    x = np.array([[[1.0], [-1.0]]])
    assert np.array_equal(kind.reference(x, weights).h, np.zeros((1, 2, 1)))
    assert kind.magnitude(x, weights) == 4.0


def test_the_attention_bound_is_dense_s_form_of_its_error_magnitude(rng):
    kind, weights = _attention(4, 2, 3, rng)
    x = rng.uniform(-1, 1, (2, 3, 4))
    trace = kind.reference(x, weights)
    bound = forward_bound(trace, weights, "linear", "float32", {"torch": None}, kind=kind).base
    assert bound == SAFETY * EPS32 * max(1.0, kind.magnitude(x, weights), float(np.max(np.abs(trace.h))))
    assert kind.magnitude(x, weights) > float(np.max(np.abs(trace.h)))  # the error terms exceed the output's size
