"""The recurrent layer kinds (``equivalence.core.recurrent``): the references against hand computations and each
other, the running error bound's Jacobians against finite differences, its growth with the steps, and its
tightness: a wrong gate order, a missing bias or a transposed square block sits orders of magnitude outside it.
Numpy only: the frameworks are judged against these in ``tests/own/test_own_recurrent_models.py``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from equivalence.core.activations import stable_sigmoid as sigmoid
from equivalence.core.kinds import LayerWeights
from equivalence.core.recurrent import Recurrent, gate_permutation
from equivalence.core.tolerance import forward_bound

KINDS = [Recurrent("lstm", 3, 4, 6, True), Recurrent("gru", 3, 4, 6, True),
         Recurrent("gru", 3, 4, 6, False, reset_after=False)]


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator of its own per test: its draws do not depend on which tests ran before (-k, xdist)."""
    return np.random.default_rng(0)


def _weights(kind: Recurrent, rng: np.random.Generator, scale: float = 1.0) -> LayerWeights:
    kernel, bias = kind.parameter_shapes(bias=True)
    return LayerWeights(rng.uniform(-scale, scale, kernel), rng.uniform(-scale, scale, bias))


def test_one_lstm_step_matches_a_hand_computation_in_both_forms():
    """One unit, one step from a zero state: c = sigmoid(a_i) tanh(a_c), h = sigmoid(a_o) tanh(c), a = x k + b."""
    kind = Recurrent("lstm", 1, 1, 1, False)
    k, b, x = np.array([0.5, -1.0, 2.0, 0.25]), np.array([0.1, 0.2, -0.3, 0.4]), 0.7
    weights = LayerWeights(np.stack([k, np.full(4, 9.0)]), b)  # the recurrent row meets a zero state
    a = x * k + b
    c = sigmoid(a[0]) * np.tanh(a[2])
    for form in Recurrent.FORMS:
        h = kind.reference(np.array([[[x]]]), weights, "linear", form=form).h
        np.testing.assert_allclose(h, [[sigmoid(a[3]) * np.tanh(c)]], rtol=1e-15)


@pytest.mark.parametrize("reset_after", [True, False])
def test_one_gru_step_matches_a_hand_computation_in_both_forms(reset_after):
    """From a zero state: h = (1 - z) tanh(a_h + r * b_rec_h) with reset_after (the recurrent bias is inside the
    reset gate's product), h = (1 - z) tanh(a_h) without; z, r from the input and both biases."""
    kind = Recurrent("gru", 1, 1, 1, False, reset_after=reset_after)
    k, b_in, b_rec, x = np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.2, -0.3]), np.array([0.3, -0.2, 0.6]), 0.7
    bias = np.stack([b_in, b_rec]) if reset_after else b_in
    weights = LayerWeights(np.stack([k, np.full(3, 9.0)]), bias)
    a = x * k + b_in + (b_rec * [1, 1, 0] if reset_after else 0)
    z, r = sigmoid(a[0]), sigmoid(a[1])
    expected = (1 - z) * np.tanh(a[2] + (r * b_rec[2] if reset_after else 0))
    for form in Recurrent.FORMS:
        np.testing.assert_allclose(kind.reference(np.array([[[x]]]), weights, "linear", form=form).h, [[expected]],
                                   rtol=1e-15)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_the_two_forms_agree_and_the_last_step_is_the_sequence_s_last(kind, rng):
    x = rng.uniform(-2, 2, (3, kind.steps, kind.features))
    weights = _weights(kind, rng)
    fused, gates = (kind.reference(x, weights, "tanh", form=form).h for form in Recurrent.FORMS)
    np.testing.assert_allclose(fused, gates, rtol=0, atol=1e-14)
    assert fused.shape == (3, *kind.output_shape((kind.steps, kind.features)))
    sequence = replace(kind, return_sequences=True).reference(x, weights, "tanh").h
    np.testing.assert_array_equal(kind.last_step().reference(x, weights, "tanh").h, sequence[:, -1])


def test_parameter_shapes_and_counts_are_keras():
    """LSTM 3->4: kernel 3x16, recurrent 4x16, bias 16 (torch has 16 more: two biases); GRU with reset_after:
    a (2, 12) bias, without: (12,)."""
    lstm, gru, gru_before = KINDS
    assert lstm.parameter_shapes() == ((7, 16), (16,)) and lstm.parameter_count() == 128
    assert gru.parameter_shapes() == ((7, 12), (2, 12)) and gru.parameter_count() == 108
    assert gru_before.parameter_shapes(bias=True) == ((7, 12), (12,)) and gru_before.parameter_count(bias=False) == 84


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_each_step_s_jacobian_is_the_derivative_of_the_step(kind, rng):
    """The bound carries a state's error to the next step through the step's Jacobian: checked against central
    differences of the float64 step."""
    K, U, b = kind._parts(_weights(kind, rng))
    n, units = 2, kind.units
    xt = rng.uniform(-1, 1, (n, kind.features)) @ K + (b if b.ndim == 1 else b[0])
    state = tuple(rng.uniform(-0.8, 0.8, (n, units)) for _ in range(2 if kind.cell == "lstm" else 1))
    step = kind._lstm_step_error if kind.cell == "lstm" else kind._gru_step_error
    _, _, J = step(xt, np.zeros_like(xt), state, U, b)
    flat = np.concatenate(state, axis=1)
    delta = 1e-6
    for j in range(flat.shape[1]):
        moved = [flat.copy(), flat.copy()]
        moved[0][:, j] += delta
        moved[1][:, j] -= delta
        plus, minus = (np.concatenate(step(xt, np.zeros_like(xt), tuple(np.split(m, len(state), axis=1)), U, b)[0],
                                      axis=1) for m in moved)
        np.testing.assert_allclose(J[:, j, :], (plus - minus) / (2 * delta), rtol=0, atol=1e-8)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_bound_grows_with_the_steps(cell):
    """The same input at every step: each step adds its rounding and carries the state's error on, so the bound
    after 20 steps is over twice that after one (it levels off where the layer's Jacobians contract)."""
    rng = np.random.default_rng(3)
    weights = _weights(Recurrent(cell, 3, 4, 1, False), rng, 1.0)
    x = np.repeat(rng.uniform(-1, 1, (2, 1, 3)), 20, axis=1)
    scales = [kind.scale(kind.reference(x[:, :kind.steps], weights, "linear"), weights, slope=1.0)
              for kind in (Recurrent(cell, 3, 4, t, False) for t in (1, 5, 20))]
    assert scales[0] < scales[1] < scales[2] and scales[2] > 2 * scales[0]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_past_the_budget_the_error_is_carried_in_absolute_value_a_looser_bound(kind, monkeypatch, rng):
    """Each Jacobian's absolute value in place of the product's: never below the exact products' bound."""
    from equivalence.core import recurrent

    weights = _weights(kind, rng, 1.0)
    x = rng.uniform(-1, 1, (3, kind.steps, kind.features))
    exact = kind.running_error(x, weights)
    monkeypatch.setattr(recurrent, "EXACT_BUDGET", 0)
    monkeypatch.setattr(recurrent, "PRODUCT_BUDGET", 0)
    carried = kind.running_error(x, weights)
    assert carried.shape == exact.shape
    assert np.all(carried >= exact * (1 - 1e-12)) and np.max(carried) > np.max(exact)


def _broken(kind: Recurrent, weights: LayerWeights) -> dict[str, LayerWeights]:
    """Weights a port may leave: two gates swapped, no bias, each recurrent gate block transposed."""
    W, b = weights
    units, gates = kind.units, len(kind.gates)
    swapped = np.concatenate([W[:, units:2 * units], W[:, :units], W[:, 2 * units:]], axis=1)
    blocks = np.split(W[kind.features:], gates, axis=1)
    transposed = np.concatenate([W[:kind.features], np.concatenate([m.T for m in blocks], axis=1)])
    return {"gate order": LayerWeights(swapped, b), "bias": LayerWeights(W, np.zeros_like(b)),
            "square block": LayerWeights(transposed, b)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_a_broken_port_is_orders_of_magnitude_outside_the_float32_bound(kind):
    """Torch-initialised layers (U(-1/sqrt(H), 1/sqrt(H))), inputs U(-1, 1): every mistake sits at least 100
    times outside the bound (measured: over 1,000 times at these sizes)."""
    rng = np.random.default_rng(1)
    worst = np.inf
    for _ in range(5):
        weights = _weights(kind, rng, 1 / np.sqrt(kind.units))
        x = rng.uniform(-1, 1, (4, kind.steps, kind.features))
        trace = kind.reference(x, weights, "linear")
        bound = forward_bound(trace, weights, "linear", "float32", {"torch": None}, kind=kind).base
        for broken in _broken(kind, weights).values():
            worst = min(worst, float(np.max(np.abs(kind.reference(x, broken, "linear").h - trace.h))) / bound)
    assert worst > 100


def test_the_bound_holds_for_the_reference_computed_in_float32(rng):
    """The fused form run in float32 arithmetic (weights, inputs and every step in float32) stays within the
    float32 bound of the float64 reference, and not by a margin of many orders (the bound is not vacuous)."""
    ratios = []
    for kind in KINDS:
        weights = _weights(kind, rng, 0.5)
        x = rng.uniform(-3, 3, (4, kind.steps, kind.features)).astype(np.float32)
        w32 = LayerWeights(weights.W.astype(np.float32), weights.b.astype(np.float32))
        trace = kind.reference(x, w32, "linear")
        bound = forward_bound(trace, w32, "linear", "float32", {"numpy": None}, kind=kind).base
        got = _float32_run(kind, x, w32)
        ratios.append(float(np.max(np.abs(got - trace.h))) / bound)
    assert 1e-4 < max(ratios) <= 1


def _float32_run(kind: Recurrent, x: np.ndarray, weights: LayerWeights) -> np.ndarray:
    """The reference's step loop with every operation in float32 (numpy keeps float32 for float32 operands)."""
    step = kind._lstm_step if kind.cell == "lstm" else kind._gru_step
    K, U = weights.W[:kind.features], weights.W[kind.features:]
    b = weights.b
    state = (np.zeros((x.shape[0], kind.units), np.float32),) * (2 if kind.cell == "lstm" else 1)
    outputs = []
    for t in range(x.shape[1]):
        state = step(x[:, t] @ K + (b if b.ndim == 1 else b[0]), state, U, b, "fused")
        outputs.append(state[0])
    assert outputs[-1].dtype == np.float32
    return np.stack(outputs, axis=1) if kind.return_sequences else outputs[-1]


def test_gate_permutation_finds_the_order_a_port_left(rng):
    W = rng.uniform(-1, 1, (5, 9))
    r, z, h = np.split(W, 3, axis=1)
    assert gate_permutation(W, np.concatenate([z, r, h], axis=1), 3) == (1, 0, 2)
    assert gate_permutation(W, W, 3) is None
    assert gate_permutation(W, W + 1, 3) is None


def test_a_named_difference_of_an_activation_the_cell_computes_with_reaches_the_layer(rng):
    """Keras on jax computes a float64 tanh in float32 (keras_jax_float64_tanh_in_float32): a float64 LSTM there was
    off by ratio 3e6 with nothing granted, since the entry is keyed on the activation after the layer (linear).
    Granted now to a cell computing with tanh, not to one without it, nor to a dense layer."""
    from equivalence.core.conditions import RecordedFacts
    from equivalence.core.kinds import DENSE
    from equivalence.core.tolerance import SAFETY

    on_jax = {"keras": RecordedFacts({"frameworks.keras.keras_backend": "jax"})}
    x = rng.uniform(-1, 1, (2, 6, 3))
    for kind, granted in ((KINDS[0], True), (replace(KINDS[1], activation="relu"), False)):
        weights = _weights(kind, rng)
        trace = kind.reference(x, weights, "linear")
        bound = forward_bound(trace, weights, "linear", "float64", on_jax, kind=kind)
        assert bool(bound.granted["keras"] > SAFETY * np.finfo(np.float32).eps) is granted, kind
    dense_x = rng.uniform(-1, 1, (2, 3))
    dense = LayerWeights(rng.uniform(-1, 1, (3, 4)), None)
    assert forward_bound(DENSE.reference(dense_x, dense, "linear"), dense, "linear", "float64", on_jax).granted[
        "keras"] == 0.0


def test_an_entry_covering_the_activation_after_a_cell_and_those_inside_it_is_granted_once(rng):
    """Keras on torch computes a float64 matmul in float32 (keras_float64_matmul_in_float32_off_tensorflow, for
    every activation): an LSTM followed by linear and computing with tanh and sigmoid holds that one difference,
    granted once, not once per activation it computes with."""
    from equivalence.core.conditions import RecordedFacts
    from equivalence.core.known_differences import FLOAT32_MATMUL

    on_torch = {"keras": RecordedFacts({"frameworks.keras.keras_backend": "torch"})}
    kind = KINDS[0]
    weights = _weights(kind, rng)
    trace = kind.reference(rng.uniform(-1, 1, (2, 6, 3)), weights, "linear")
    bound = forward_bound(trace, weights, "linear", "float64", on_torch, kind=kind)
    assert bound.granted["keras"] == pytest.approx(FLOAT32_MATMUL * kind.scale(trace, weights, slope=1.0), rel=1e-12)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_runs_of_exact_products_bound_rigorously_and_within_a_small_factor_of_the_exact_bound(kind, monkeypatch,
                                                                                               rng):
    """Past EXACT_BUDGET the Jacobians are multiplied exactly over runs of steps, the state's bound carried from
    run to run: never below the all-steps bound (rigorous), and far tighter than each Jacobian in absolute value."""
    from equivalence.core import recurrent

    weights = _weights(kind, rng, 1 / np.sqrt(kind.units))
    x = rng.uniform(-1, 1, (3, kind.steps, kind.features))
    exact = kind.running_error(x, weights)
    monkeypatch.setattr(recurrent, "EXACT_BUDGET", 0)
    monkeypatch.setattr(recurrent, "WINDOW", 2)
    assert kind.window(kind.steps) == 2
    runs = kind.running_error(x, weights)
    assert np.all(runs >= exact * (1 - 1e-12))
    assert np.max(runs) <= 4 * np.max(exact), (np.max(runs), np.max(exact))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_layer_whose_affordable_bound_passes_its_outputs_range_is_not_judged_never_a_pass(cell, monkeypatch):
    """Each Jacobian in absolute value (no budget for products) over 40 steps of 48 units grows past the outputs'
    range: a comparison there could not fail, so the layer is reported not judged, naming its units and steps,
    and the comparison does not pass. With the exact products the same layer is judged."""
    from equivalence.core import recurrent
    from equivalence.core.compare import LayerResult

    rng = np.random.default_rng(5)
    kind = Recurrent(cell, 4, 48, 40, True)
    weights = _weights(kind, rng, 3 / np.sqrt(kind.units))
    x = rng.uniform(-1, 1, (2, kind.steps, kind.features))
    trace = kind.reference(x, weights, "linear")
    assert kind.unjudged(trace, forward_bound(trace, weights, "linear", "float32", {"torch": None}, kind=kind).base) \
        == ""
    monkeypatch.setattr(recurrent, "EXACT_BUDGET", 0)
    monkeypatch.setattr(recurrent, "PRODUCT_BUDGET", 0)
    bound = forward_bound(trace, weights, "linear", "float32", {"torch": None}, kind=kind).base
    reason = kind.unjudged(trace, bound)
    assert "48 units over 40 steps" in reason and "absolute value" in reason, reason
    result = LayerResult(pair=("torch", "reference"), layer=0, shape=trace.h.shape, expected_shape=trace.h.shape,
                         bound=bound, max_abs=0.0, max_rel=0.0, index=(), got=0.0, expected=0.0, mismatches=0,
                         unjudged=reason)
    assert not result.passed and "not judged" in result.describe()
