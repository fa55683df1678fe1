"""A user's LSTM or GRU model and its Keras port: a faithful port passes layer by layer in every dtype over drawn
sequence lengths and widths; each trap (gate order, one LSTM bias of two, reset_after, the activations, the
sequence against its last step) is named from the weights or configs; a framework whose recurrent layer computes
with two gates swapped turns the suite red at that layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from equivalence.core.known_differences import KNOWN_DIFFERENCES
from tests.helpers import BFLOAT16, compare_files_through_the_cli, swap_torch_gates
from tests.own.pairs import agreeing, assert_red_only_in, named_differences
from tests.recurrent_models import RecurrentArch, ported, recurrent_archs, sequences, torch_recurrent_model

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip", "torch_adapter", "keras_adapter")  # both or a skip

RECURRENT_EXAMPLES = max(5, settings.default.max_examples // 10)
"""Architectures per dtype: each builds two models."""
GRU_WITHOUT_BIAS_DOES_NOT_RUN = next(d for d in KNOWN_DIFFERENCES
                                     if d.name == "keras_jax_gru_without_bias_does_not_run")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
@settings(max_examples=RECURRENT_EXAMPLES)
@given(data=st.data())
def test_a_ported_recurrent_model_agrees_layer_by_layer(dtype, data):
    """One or two LSTM/GRU layers (the last step taken as out[:, -1] or h_n[-1]) and a Dense: every layer within
    its kind's bound in both frameworks, with the shapes and parameter counts of both."""
    import keras

    arch = data.draw(recurrent_archs(dtype=dtype), label="architecture")
    assume(not (GRU_WITHOUT_BIAS_DOES_NOT_RUN.active() and dtype in GRU_WITHOUT_BIAS_DOES_NOT_RUN.dtypes
                and "gru" in arch.cells and not arch.bias))  # Keras on jax cannot run it: nothing to compare
    t, k = ported(arch)
    result = agreeing(t, k, sequences(arch))
    assert [u.layer_kind for u in result.torch_layers] == [u.layer_kind for u in result.keras_layers]
    assert [u.out_shape for u in result.keras_layers] == \
        [tuple(layer.output.shape[1:]) for layer in k.layers if not isinstance(layer, keras.layers.InputLayer)]
    counts = [u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers]
    assert sum(counts) == k.count_params() == sum(p.numel() for p in t.parameters()) - arch.extra_torch_parameters()
    assert counts[:-1] == [u.layer_kind.parameter_count(bias=arch.bias) for u in result.torch_layers[:-1]]


def test_drawn_inputs_cover_a_recurrent_model_and_say_how_to_rebuild_a_failure(monkeypatch):
    """Drawn batch-first sequences (no ``x``) pass a faithful port; a broken torch LSTM shrinks to an input
    rebuilt without any transposition (the layout is the same in both frameworks)."""
    from equivalence import compare_models

    arch = RecurrentArch(("lstm",), 3, (4,), 5, "out", 2, "float32", 7)
    t, k = ported(arch)
    assert compare_models(t, k, max_examples=5).passed
    swap_torch_gates(monkeypatch, "lstm")
    result = compare_models(t, k, max_examples=5)
    assert not result.passed
    assert "torch vs reference, layer 0" in result.message() and "[torch 'rnns.0', keras 'lstm" in result.message()
    assert "drawn_input(" in result.reproduction and "transpose" not in result.reproduction


# --- the traps, named ----------------------------------------------------------------------------

def _numpy(tensor) -> np.ndarray:
    return tensor.detach().numpy()


def test_gru_gates_copied_in_torch_s_order_are_named_gate_order_and_fail_at_the_layer():
    """torch stores r, z, n; a port that only transposes leaves Keras' GRU with (r, z, h) for (z, r, h)."""
    from equivalence import compare_models

    arch = RecurrentArch(("gru",), 3, (5,), 6, "out", 2, "float32", 1)
    t, k = ported(arch)
    rnn, cell = t.rnns[0], k.layers[0].cell
    cell.kernel.assign(_numpy(rnn.weight_ih_l0).T)
    cell.recurrent_kernel.assign(_numpy(rnn.weight_hh_l0).T)
    cell.bias.assign(np.stack([_numpy(rnn.bias_ih_l0), _numpy(rnn.bias_hh_l0)]))
    result = compare_models(t, k, x=sequences(arch))
    assert [(d.layer, d.what) for d in result.differences] == [(0, "gate order")], result.message()
    assert "holds the gates as (r, z, h), but Keras' GRU orders them (z, r, h)" in result.differences[0].message
    assert result.failing_pairs().get("torch vs keras") == 0, result.message()


def test_an_lstm_given_one_of_torch_s_two_biases_is_named_bias():
    from equivalence import compare_models

    arch = RecurrentArch(("lstm",), 2, (3,), 4, "h_n", 1, "float32", 2)
    t, k = ported(arch)
    k.layers[0].cell.bias.assign(_numpy(t.rnns[0].bias_hh_l0))
    result = compare_models(t, k, x=sequences(arch))
    assert [(d.layer, d.what) for d in result.differences] == [(0, "bias")], result.message()
    assert "torch's bias_hh alone, but should be bias_ih + bias_hh" in result.differences[0].message
    assert result.failing_pairs().get("torch vs keras") == 0


def _reshaped_input_kernel(t, k):
    """torch's weight_ih (G*units, features) reshaped to Keras' (features, G*units) instead of transposed."""
    cell = k.layers[0].cell
    cell.kernel.assign(_numpy(t.rnns[0].weight_ih_l0).reshape(cell.kernel.shape))


def _square_blocks_transposed(t, k):
    """Each gate's (units, units) block of the recurrent kernel transposed: the shape fits either way."""
    cell = k.layers[0].cell
    blocks = np.split(_keras_numpy(cell.recurrent_kernel), 3, axis=1)
    cell.recurrent_kernel.assign(np.concatenate([block.T for block in blocks], axis=1))


def _gru_bias_rows_swapped(t, k):
    """Keras' (2, 3*units) GRU bias with its input and recurrent rows the other way round."""
    cell = k.layers[0].cell
    cell.bias.assign(_keras_numpy(cell.bias)[::-1])


def _keras_numpy(variable) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(variable)


@pytest.mark.parametrize(("mistake", "what", "says"), [
    (_reshaped_input_kernel, "kernel layout", "is torch's weight_ih (15, 3) reshaped, but should be transposed"),
    (_square_blocks_transposed, "kernel layout",
     "each gate's square block of the keras recurrent kernel is transposed"),
    (_gru_bias_rows_swapped, "bias", "the keras bias rows are swapped"),
], ids=["reshaped-kernel", "square-blocks-transposed", "gru-bias-rows-swapped"])
def test_a_gru_kernel_or_bias_in_another_layout_is_named_and_fails_at_the_layer(mistake, what, says):
    """The layouts layer-kinds.md lists beside the gate order: named from the weights, and wrong in value too."""
    from equivalence import compare_models

    arch = RecurrentArch(("gru",), 3, (5,), 6, "out", 2, "float32", 12)
    t, k = ported(arch)
    mistake(t, k)
    result = compare_models(t, k, x=sequences(arch))
    assert [(d.layer, d.what) for d in result.differences] == [(0, what)], result.message()
    assert says in result.differences[0].message, result.differences[0].message
    assert result.failing_pairs().get("torch vs keras") == 0, result.message()


@pytest.mark.parametrize(("keras_options", "what"), [
    ({"reset_after": False}, "reset_after"), ({"recurrent_activation": "hard_sigmoid"}, "activation"),
    ({"activation": "relu"}, "activation"), ({"return_sequences": True}, "return_sequences")])
def test_a_gru_configured_otherwise_is_named_before_any_value_and_not_ported(keras_options, what):
    """torch's GRU is Keras' reset_after=True with tanh and sigmoid, returning the sequence from ``out``."""
    import keras

    from equivalence import PortMismatch, port_weights

    t = torch_recurrent_model(RecurrentArch(("gru",), 3, (4,), 5, "out", 2, "float32", 3))
    head = [] if keras_options.get("return_sequences") else [keras.layers.Dense(2)]  # no Dense on a sequence
    k = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, **keras_options), *head])
    named = [d.what for d in named_differences(t, k) if d.layer == 0]
    assert named == [what], named
    with pytest.raises(PortMismatch):
        port_weights(t, k)


def test_a_keras_gru_without_reset_after_is_judged_against_its_own_reference():
    """A reset_after=False GRU is another function, but a function all the same: Keras agrees with the reference
    of its own weights, while torch vs keras diverges at that layer."""
    import keras

    from equivalence import compare_models

    arch = RecurrentArch(("gru",), 3, (4,), 5, "out", 2, "float32", 4)
    t = torch_recurrent_model(arch)
    k = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, reset_after=False), keras.layers.Dense(2)])
    result = compare_models(t, k, x=sequences(arch))
    judged = [r for r in result.results if r.pair == ("keras", "reference") and r.layer == 0]
    assert judged and all(r.passed for r in judged), result.message()  # judged, and within its bound
    assert result.failing_pairs().get("torch vs keras") == 0, result.message()


@pytest.mark.parametrize(("options", "problem"), [
    ({"num_layers": 2}, "num_layers=2"), ({"bidirectional": True}, "bidirectional=True"),
    ({"batch_first": False}, "batch_first=False"), ({"proj_size": 2}, "proj_size=2")])
def test_recurrent_options_the_suite_does_not_judge_are_refused_in_one_line(options, problem):
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4, **{"batch_first": True, **options})

        def forward(self, x):
            out, _ = self.rnn(x)
            return out[:, -1]

    k = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4)])
    with pytest.raises(ModelNotSupported, match=rf"torch layer 'rnn' \(LSTM\) at position 0: {problem}") as info:
        compare_models(Net(), k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("steps", "keras_layer", "problem"), [
    (None, "LSTM", "sequence length is unknown"), (5, "go_backwards", "go_backwards=True"),
    (5, "Bidirectional", r"'bidirectional' \(Bidirectional\) at position 0: not a layer")])
def test_keras_recurrent_layers_the_suite_does_not_judge_are_refused_in_one_line(steps, keras_layer, problem):
    import keras

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    layer = {"LSTM": lambda: L.LSTM(4), "go_backwards": lambda: L.LSTM(4, go_backwards=True),
             "Bidirectional": lambda: L.Bidirectional(L.LSTM(2), name="bidirectional")}[keras_layer]()
    k = keras.Sequential([keras.Input((steps, 3)), layer, L.Dense(2)])
    t = torch_recurrent_model(RecurrentArch(("lstm",), 3, (4,), 5, "out", 2, "float32", 1))
    with pytest.raises(ModelNotSupported, match=problem) as info:
        compare_models(t, k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("state", ["buffer", "constant", "None", "hx=None"])
def test_a_torch_recurrent_layer_given_an_initial_state_is_refused_and_none_starts_from_zeros(state):
    """A state in a buffer or built in ``forward`` is named as an initial state (not as a parameter used by hand);
    ``rnn(x, None)`` is torch's zero state, judged as ``rnn(x)``."""
    import keras
    import torch
    from torch import nn

    from equivalence import ModelNotSupported, assert_equivalent, compare_models, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.fc = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)
            self.register_buffer("h0", torch.ones(1, 2, 4))

        def forward(self, x):
            out, _ = {"buffer": lambda: self.rnn(x, self.h0), "constant": lambda: self.rnn(x, torch.ones(1, 2, 4)),
                      "None": lambda: self.rnn(x, None), "hx=None": lambda: self.rnn(x, hx=None)}[state]()
            return self.fc(out[:, -1])

    t = Net().eval()
    k = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    if state in ("buffer", "constant"):
        with pytest.raises(ModelNotSupported, match=r"^torch layer 'rnn' \(GRU\) at position 0: called with an "
                                                    r"initial state") as info:
            compare_models(t, k)
        assert "\n" not in str(info.value)
        return
    port_weights(t, k)
    assert_equivalent(t, k, max_examples=3)


@pytest.mark.parametrize(("options", "problem"), [({"return_state": True}, "return_state=True"),
                                                  ({"stateful": True}, "stateful=True")])
def test_a_keras_recurrent_layer_returning_or_keeping_its_state_is_refused_in_one_line(options, problem):
    import keras

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    inputs = keras.Input((5, 3), batch_size=2)
    out = L.GRU(4, name="gru", **options)(inputs)
    k = keras.Model(inputs, L.Dense(2)(out[0] if options.get("return_state") else out))
    t = torch_recurrent_model(RecurrentArch(("gru",), 3, (4,), 5, "out", 2, "float32", 1))
    with pytest.raises(ModelNotSupported, match=rf"'gru' \(GRU\) at position 0: {problem}") as info:
        compare_models(t, k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("take", ["out[:, -1, :]", "h.squeeze(0)", "c[-1]"])
def test_the_torch_walk_follows_the_ways_a_forward_takes_the_last_step(take):
    """``out[:, -1, :]`` and ``h_n.squeeze(0)`` are the last step; an LSTM's cell state ``c_n`` is refused."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            out, (h, c) = self.rnn(x)
            return self.fc({"out[:, -1, :]": lambda: out[:, -1, :], "h.squeeze(0)": lambda: h.squeeze(0),
                            "c[-1]": lambda: c[-1]}[take]())

    k = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    t = Net().eval()
    if take == "c[-1]":
        with pytest.raises(ModelNotSupported, match="cell state c_n"):
            port_weights(t, k)
        return
    port_weights(t, k)
    assert compare_models(t, k, max_examples=3).passed



def test_a_mean_over_a_recurrent_layer_s_sequence_is_judged_as_keras_global_average_pooling():
    """``out.mean(1)`` after an LSTM is the Keras port's GlobalAveragePooling1D (it was refused as "not a layer the
    suite judges", while the refusal listed "a mean over the tokens" among those it judges)."""
    import keras
    from torch import nn

    from equivalence import compare_models, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.fc = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out.mean(1))

    L = keras.layers
    k = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, return_sequences=True), L.GlobalAveragePooling1D(),
                          L.Dense(2)])
    t = Net().eval()
    port_weights(t, k)
    result = compare_models(t, k, x=np.random.default_rng(0).uniform(-1, 1, (3, 5, 3)).astype(np.float32))
    assert result.passed, result.message()
    assert [u.layer_kind.name for u in result.torch_layers] == ["lstm", "mean", "dense"]


def test_the_torch_walk_keeps_no_model_alive():
    """The walk's liveness pass (which parts of an LSTM's tuple reach the output) is cached per graph without
    holding the graph: a cache of its nodes kept the last eight walked models, weights and all, alive."""
    import gc
    import weakref

    from torch import nn

    from equivalence.frameworks.torch.walk import walk

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.fc = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            out, (h, c) = self.rnn(x)
            return self.fc(out[:, -1])

    net = Net()
    weight = weakref.ref(net.rnn.weight_ih_l0)
    assert [u.layer_kind.name for u in walk(net, input_shape=(5, 3))] == ["lstm", "dense"]
    del net
    gc.collect()
    assert weight() is None

def test_a_recurrent_layer_in_an_nn_sequential_is_refused_naming_the_tuple():
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    k = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4)])
    with pytest.raises(ModelNotSupported, match="returns a tuple"):
        compare_models(nn.Sequential(nn.LSTM(3, 4, batch_first=True)), k)


def test_x_of_another_shape_is_refused_in_one_line():
    from equivalence import compare_models

    arch = RecurrentArch(("lstm",), 3, (4,), 5, "out", 2, "float32", 5)
    t, k = ported(arch)
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 5\), but should be \(batch, 5, 3\)"):
        compare_models(t, k, x=np.zeros((2, 3, 5)))
    assert compare_models(t, k, x=sequences(arch)[0]).passed  # one sequence: a batch of one


# --- the meta tests: a framework's recurrent layer broken ------------------------------------------

def _swap_keras_gates(monkeypatch, cell: str) -> None:
    """Keras' LSTM or GRU layer computing with its first two gates' columns swapped (i and f, or z and r), whatever
    path its backend takes (the cell step by step on TensorFlow, a fused loop on torch)."""
    import keras

    layer_class = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    original = layer_class.call

    def swapped(self, sequences, *args, **kwargs):
        units, cell_ = self.units, self.cell
        names = [name for name in ("kernel", "recurrent_kernel", "bias") if getattr(cell_, name) is not None]
        stored = {name: getattr(cell_, name) for name in names}
        order = np.r_[units:2 * units, 0:units, 2 * units:stored["kernel"].shape[-1]]
        # The cell reads the swapped tensors in place of its variables, which stay as stored: a keras.ops take,
        # so it works eagerly (TensorFlow, torch) and inside jax's trace, where variables cannot be read to numpy
        for name in names:
            object.__setattr__(cell_, name, keras.ops.take(stored[name], order, axis=-1))
        try:
            return original(self, sequences, *args, **kwargs)
        finally:
            for name in names:
                object.__setattr__(cell_, name, stored[name])

    monkeypatch.setattr(layer_class, "call", swapped)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_framework_computing_with_two_gates_swapped_turns_the_suite_red_naming_the_layer(framework, cell,
                                                                                          monkeypatch):
    """The meta test: two recurrent layers, the first returning its sequence; the broken framework fails against
    the reference from the first of them, the other framework nowhere."""
    from equivalence import compare_models

    arch = RecurrentArch((cell, cell), 3, (4, 5), 6, "out", 2, "float32", 6)
    t, k = ported(arch)
    (swap_torch_gates if framework == "torch" else _swap_keras_gates)(monkeypatch, cell)
    assert_red_only_in(compare_models(t, k, x=sequences(arch)), framework, layer=0)


# --- the CLI -------------------------------------------------------------------------------------

RECURRENT_FACTORY = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


def build():
    return Net()
'''


def test_equivalence_compare_takes_a_recurrent_state_dict_and_its_keras_file(tmp_path, capsys, monkeypatch):
    import keras

    from equivalence.cli import EXIT_OK

    port = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=RECURRENT_FACTORY,
                                              module="sequences", port=port)
    assert code == EXIT_OK, out
    assert "both layers agree over 3 input batches" in out
