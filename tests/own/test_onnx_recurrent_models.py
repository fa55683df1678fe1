"""LSTM and GRU layers in an ONNX graph (issue 26): a torch model with an ``nn.LSTM`` or ``nn.GRU`` (one layer, one
direction, ``batch_first=True``) and its ``torch.onnx.export(dynamo=False)`` judged layer by layer, the recurrent
unit (``Transpose``, the node, the ``Squeeze``/``Transpose`` back and the selection torch's forward makes) run on
ONNX Runtime; a moved weight or a swapped gate in the file named at its layer; what is not read refused in one line
naming the node."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import adapter_or_skip
from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main
from tests.own.test_onnx_models import perturbed


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


STEPS, FEATURES, UNITS, ROWS = 5, 8, 6, 20
ONNX_GATES = {"lstm": "iofc", "gru": "zrh"}
CANONICAL_GATES = {"lstm": "ifco", "gru": "zrh"}

RECURRENT_NET = '''
import torch
from torch import nn


class RecurrentNet(nn.Module):
    """[Embedding ->] LSTM or GRU -> the sequence (then its mean), out[:, -1] or h_n[-1] -> Linear."""

    def __init__(self, cell="lstm", selection="last", ids=True, features=8, units=6, rows=20, **options):
        super().__init__()
        self.emb = nn.Embedding(rows, features) if ids else None
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](features, units, batch_first=True, **options)
        width = units * (2 if options.get("bidirectional") else 1)
        self.fc, self.selection, self.cell = nn.Linear(width, 3), selection, cell

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        if self.selection == "h_n":
            if self.cell == "lstm":
                _, (h, c) = self.rnn(x)
            else:
                _, h = self.rnn(x)
            return self.fc(h[-1])
        out, _ = self.rnn(x)
        return self.fc(out[:, -1] if self.selection == "last" else out.mean(1))


def build(seed=0, **options):
    torch.manual_seed(seed)
    return RecurrentNet(**options).eval()
'''


def recurrent_net(**options):
    namespace: dict = {}
    exec(RECURRENT_NET, namespace)  # noqa: S102 - the factory the command test imports, built here the same way
    return namespace["build"](**options)


def example(model, steps: int = STEPS):
    import torch

    if model.emb is not None:
        return torch.zeros(1, steps, dtype=torch.long)
    return torch.zeros(1, steps, model.rnn.input_size)


def export(module, x=None, *, opset: int = 17, **options):
    """``module`` through ``torch.onnx.export(dynamo=False)`` on ``x`` (zeros of one sequence by default)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (example(module) if x is None else x,), buffer, dynamo=False, opset_version=opset,
                          **options)
    return onnx.load_from_string(buffer.getvalue())


def inputs(model, seed: int, batch: int = 6, steps: int = STEPS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if model.emb is not None:
        return rng.integers(0, model.emb.num_embeddings, (batch, steps))
    return rng.uniform(-2, 2, (batch, steps, model.rnn.input_size)).astype(np.float32)


def recurrent_node(graph, which: int = 0):
    return [n for n in graph.graph.node if n.op_type in ("LSTM", "GRU")][which]


SELECTED = {  # what torch's exporter writes after the node for each selection
    "sequence": "Transpose+{op}+Squeeze+Transpose", "last": "Transpose+{op}+Squeeze+Transpose+Gather",
    "h_n": "Transpose+{op}+Gather"}


@pytest.mark.parametrize("opset", [14, 17])
@pytest.mark.parametrize("ids", [True, False], ids=["embedding", "float"])
@pytest.mark.parametrize("selection", ["sequence", "last", "h_n"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_lstm_or_gru_and_its_onnx_export_agree_layer_by_layer(cell, selection, ids, opset):
    """Each ORT unit within its kind's bound, the recurrent unit's kind, shapes and canonical weights equal to the
    torch walker's (exactly: the exporter writes torch's values, only reordered), its nodes as the exporter wrote
    them."""
    from equivalence import compare_models
    from equivalence.core.recurrent import Recurrent

    model = recurrent_net(cell=cell, selection=selection, ids=ids, seed=opset)
    graph = export(model, opset=opset)
    result = compare_models(model, graph, x=inputs(model, opset))
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    at = 1 if ids else 0
    onnx_rnn, torch_rnn = result.keras_layers[at], result.torch_layers[at]
    assert onnx_rnn.layer_kind == Recurrent(cell, FEATURES, UNITS, STEPS, selection == "sequence")
    assert (onnx_rnn.in_shape, onnx_rnn.out_shape) == (torch_rnn.in_shape, torch_rnn.out_shape)
    assert np.array_equal(onnx_rnn.W, torch_rnn.W) and np.array_equal(onnx_rnn.b, torch_rnn.b)
    op = cell.upper()
    assert onnx_rnn.kind == "onnx " + SELECTED[selection].format(op=op)
    assert f"layer {at}: torch 'rnn' ({op}; linear: none) = ort '/rnn/{op}' (onnx {SELECTED[selection].format(op=op)}" \
        in "\n".join(result.matched())
    judged = [r for r in result.results if r.layer == at and r.pair == ("ort", "reference")]
    assert judged and all(r.passed for r in judged)


def test_assert_equivalent_takes_the_graph_on_either_side_and_leaves_it_unmodified():
    from equivalence import assert_equivalent

    model = recurrent_net(cell="gru", selection="last", ids=True)
    graph = export(model)
    before = graph.SerializeToString()
    assert_equivalent(model, graph, max_examples=10)
    assert assert_equivalent(graph, model, max_examples=3).labels == ("ort", "torch")
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"


def test_drawn_inputs_of_a_float_sequence_model_are_batch_first():
    """No ``x``: the suite draws ``(batch, L, features)`` sequences for the ONNX unit as for the torch one."""
    from equivalence import compare_models

    model = recurrent_net(cell="lstm", selection="sequence", ids=False, seed=3)
    result = compare_models(model, export(model), max_examples=5)
    assert result.passed, result.message()
    assert result.keras_layers[0].in_shape == (STEPS, FEATURES)


@settings(max_examples=6, deadline=None)
@given(cell=st.sampled_from(["lstm", "gru"]), selection=st.sampled_from(["sequence", "last", "h_n"]),
       ids=st.booleans(), features=st.integers(1, 10), units=st.integers(1, 12), steps=st.integers(1, 12),
       bias=st.booleans(), opset=st.sampled_from([14, 17, 20]), seed=st.integers(0, 2**16))
def test_drawn_recurrent_nets_agree_with_their_onnx_export(cell, selection, ids, features, units, steps, bias, opset,
                                                           seed):
    """Widths, lengths (one step included), bias or none, opsets: kinds and shapes equal to the torch walker's."""
    import torch

    from equivalence import compare_models

    model = recurrent_net(cell=cell, selection=selection, ids=ids, features=features, units=units, seed=seed,
                          bias=bias)
    x = torch.zeros(1, steps, dtype=torch.long) if ids else torch.zeros(1, steps, features)
    graph = export(model, x, opset=opset)
    result = compare_models(model, graph, x=inputs(model, seed, batch=4, steps=steps))
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    sequence = [u for u in result.keras_layers if u.in_shape]  # a dense chain's ONNX unit has its width alone
    assert [u.out_shape for u in sequence] == [u.out_shape for u in result.torch_layers[:len(sequence)]]
    assert all((u.b is None) == (not bias) for u in result.keras_layers if u.kind.startswith("onnx Transpose"))


# --- a weight moved, a gate swapped: named at the layer -------------------------------------------

def _initializer(graph, name: str) -> int:
    return next(i for i, init in enumerate(graph.graph.initializer) if init.name == name)


def _canonical_column(cell: str, row: int) -> int:
    """The canonical column of ONNX's row ``row`` of ``W``/``R``/``B`` (gate block by gate block)."""
    gate, unit = divmod(row, UNITS)
    return CANONICAL_GATES[cell].index(ONNX_GATES[cell][gate]) * UNITS + unit


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("tensor", ["W", "R", "B"])
def test_a_moved_element_of_w_r_or_b_in_the_file_is_named_at_the_layer(cell, tensor):
    """One element of the node's ``W``, ``R`` or ``B`` moved by 1e-3: named at the recurrent layer, at its canonical
    index (the ONNX row's gate found in Keras' order; ``R`` below ``W`` in the kernel; ``B``'s recurrent half in a
    GRU's second bias row)."""
    from equivalence import compare_models

    model = recurrent_net(cell=cell, selection="last", ids=True, seed=5)
    graph = export(model)
    node = recurrent_node(graph)
    gates = len(ONNX_GATES[cell])
    name = node.input[{"W": 1, "R": 2, "B": 3}[tensor]]
    row, col = UNITS + 2, 3  # the second gate's third unit
    if tensor == "B":
        flat, recurrent_half = gates * UNITS + row, True
        expected = f"bias: 1 / {gates * UNITS * (2 if cell == 'gru' else 1)} elements differ"
        index = (1, _canonical_column(cell, row)) if cell == "gru" else (_canonical_column(cell, row),)
    else:
        inner = FEATURES if tensor == "W" else UNITS
        flat, recurrent_half = row * inner + col, False
        expected = f"kernel: 1 / {(FEATURES + UNITS) * gates * UNITS} elements differ"
        index = (col + (FEATURES if tensor == "R" else 0), _canonical_column(cell, row))
    assert recurrent_half or tensor != "B"
    wrong = perturbed(graph, initializer=_initializer(graph, name), index=flat, by=1e-3)
    result = compare_models(model, wrong, x=inputs(model, 5))
    assert not result.passed
    message = result.message()
    assert f"layer 1 (torch 'rnn', ort '/rnn/{cell.upper()}'): {expected}" in message, message
    assert f"at index {index}" in message, message


def _swapped(graph, cell: str, first: int, second: int, tensors=("W", "R", "B")):
    """A copy of ``graph`` with two gate blocks of the node's ``W``, ``R`` and ``B`` (each half of ``B``) swapped."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    node = recurrent_node(copy)
    for tensor in tensors:
        init = copy.graph.initializer[_initializer(copy, node.input[{"W": 1, "R": 2, "B": 3}[tensor]])]
        values = numpy_helper.to_array(init).copy()
        halves = np.split(values, 2, axis=1) if tensor == "B" else [values]
        for half in halves:
            blocks = np.split(half, len(ONNX_GATES[cell]), axis=1)
            blocks[first], blocks[second] = blocks[second].copy(), blocks[first].copy()
            half[...] = np.concatenate(blocks, axis=1)
        init.CopyFrom(numpy_helper.from_array(np.concatenate(halves, axis=1), init.name))
    return copy


@pytest.mark.parametrize(("cell", "swap", "held"), [("lstm", (1, 2), "i, f, o, c"), ("lstm", (1, 3), "i, c, f, o"),
                                                    ("gru", (0, 1), "r, z, h")])
def test_two_gates_swapped_in_the_file_are_named_gate_order_at_the_layer(cell, swap, held):
    """An exporter that wrote two gate blocks in each other's place (in ``W``, ``R`` and ``B``) wrote another valid
    LSTM or GRU: ORT agrees with its own float64 reference, torch does not, and the weights name the gates the file
    holds in ONNX's order."""
    from equivalence import compare_models

    model = recurrent_net(cell=cell, selection="sequence", ids=False, seed=7)
    result = compare_models(model, _swapped(export(model), cell, *swap), x=inputs(model, 7))
    assert [(d.layer, d.what) for d in result.differences] == [(0, "gate order")], result.message()
    onnx_order = ", ".join(ONNX_GATES[cell])
    assert f"layer 0 (torch 'rnn', ort '/rnn/{cell.upper()}'): gate order: the ONNX {cell.upper()}'s W and R hold " \
        f"the gates as ({held}), but ONNX orders them ({onnx_order})" in result.message(), result.message()
    assert result.failing_pairs().get("torch vs ort") == 0, result.message()
    assert all(r.passed for r in result.results if r.pair == ("ort", "reference")), result.message()


def test_a_gate_swapped_in_w_alone_is_a_kernel_difference_at_the_layer():
    """Not a permutation of the whole kernel (``R`` and ``B`` left in order): its elements named, and the values
    wrong against torch."""
    from equivalence import compare_models

    model = recurrent_net(cell="lstm", selection="last", ids=True, seed=8)
    result = compare_models(model, _swapped(export(model), "lstm", 1, 2, tensors=("W",)), x=inputs(model, 8))
    assert [(d.layer, d.what) for d in result.differences] == [(1, "kernel")], result.message()
    assert "layer 1 (torch 'rnn', ort '/rnn/LSTM'): kernel: 96 / 336 elements differ" in result.message()
    assert result.failing_pairs().get("torch vs ort") == 1, result.message()


def test_a_gru_without_linear_before_reset_is_named_reset_after_and_judged_against_its_own_reference():
    """``linear_before_reset=0`` is Keras' ``reset_after=False``: another GRU, read as such (its two biases summed),
    named from the configs against torch's, and within its own bound on ORT."""
    from onnx import helper

    from equivalence import compare_models

    model = recurrent_net(cell="gru", selection="last", ids=False, seed=9)
    graph = export(model)
    node = recurrent_node(graph)
    node.attribute.remove(next(a for a in node.attribute if a.name == "linear_before_reset"))
    node.attribute.append(helper.make_attribute("linear_before_reset", 0))
    result = compare_models(model, graph, x=inputs(model, 9))
    assert result.keras_layers[0].layer_kind.reset_after is False and result.keras_layers[0].b.shape == (18,)
    assert [(d.layer, d.what) for d in result.differences] == [(0, "reset_after")], result.message()
    assert "got ort reset_after=False, but torch has reset_after=True" in result.differences[0].message  # each side's
    judged = [r for r in result.results if r.pair == ("ort", "reference") and r.layer == 0]  # own label
    assert judged and all(r.passed for r in judged), result.message()


def stacked_net(seed: int = 14):
    """An LSTM then a GRU, two modules: torch's exporter cancels the Transposes between them, so the GRU node reads
    the LSTM's squeezed ``Y`` ``(L, batch, units)`` directly, as it writes ``num_layers=2``."""
    import torch
    from torch import nn

    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.LSTM(FEATURES, UNITS, batch_first=True), nn.GRU(UNITS, 5, batch_first=True)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            out, _ = self.first(x)
            out, _ = self.second(out)
            return self.fc(out[:, -1])

    torch.manual_seed(seed)
    return Stacked().eval()


def test_two_recurrent_layers_back_to_back_are_two_units_each_batch_first():
    """Each stacked unit takes and gives the canonical batch-first sequence (a Transpose added to its copy where
    the graph passes ``(L, batch, units)``), its kind the graph's own nodes; shapes and kinds the torch walker's."""
    from equivalence import compare_models

    model = stacked_net()
    graph = export(model, __import__("torch").zeros(1, STEPS, FEATURES))
    assert [n.op_type for n in graph.graph.node if n.op_type in ("LSTM", "Squeeze", "GRU")] == \
        ["LSTM", "Squeeze", "GRU", "Squeeze"]
    rng = np.random.default_rng(14)
    result = compare_models(model, graph, x=rng.uniform(-2, 2, (7, STEPS, FEATURES)).astype(np.float32))
    assert result.passed, result.message()
    assert [u.kind for u in result.keras_layers[:2]] == ["onnx Transpose+LSTM+Squeeze",
                                                          "onnx GRU+Squeeze+Transpose+Gather"]
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    assert [(u.in_shape, u.out_shape) for u in result.keras_layers[:2]] == \
        [(u.in_shape, u.out_shape) for u in result.torch_layers[:2]] == [((STEPS, FEATURES), (STEPS, UNITS)),
                                                                         ((STEPS, UNITS), (5,))]
    wrong = perturbed(graph, initializer=_initializer(graph, recurrent_node(graph, 1).input[2]), index=4, by=1e-3)
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 1 (torch 'second', ort '/second/GRU'): kernel: 1 / 165 elements differ" in message, message
    assert "at index (10, 0)" in message, message  # R's row 0 (z), column 4: the kernel's row 6 + 4


@pytest.mark.parametrize("dynamic", [False, True])
def test_stacked_layers_exported_on_a_batch_of_3_run_on_any_batch(dynamic):
    """Exported on a batch of 3 (torch's exporter writes the zero initial states of that batch, or, with a dynamic
    batch, computes them from a Transpose back to batch-first whose values only a Shape reads): the units run
    without those states, checked zero, on any batch."""
    import torch

    from equivalence import compare_models

    model = stacked_net()
    options = {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}} if dynamic else {}
    graph = export(model, torch.zeros(3, STEPS, FEATURES), **options)
    x = np.random.default_rng(3).uniform(-2, 2, (3 if not dynamic else 5, STEPS, FEATURES)).astype(np.float32)
    result = compare_models(model, graph, x=x)
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]


def test_a_num_layers_2_export_is_read_as_two_units_and_its_torch_model_refused_on_the_torch_side():
    """From the graph alone ``num_layers=2`` and two modules are the same nodes: read, each layer judged against its
    own reference; torch's walker refuses the module naming ``num_layers``."""
    from equivalence import ModelNotSupported, compare_models

    model = recurrent_net(cell="lstm", selection="last", ids=True, num_layers=2)
    graph = export(model)
    result = compare_models(graph, graph, max_examples=5)
    assert result.passed, result.message()
    assert [u.kind for u in result.keras_layers[1:3]] == ["onnx Transpose+LSTM+Squeeze",
                                                          "onnx LSTM+Squeeze+Transpose+Gather"]
    with pytest.raises(ModelNotSupported, match=r"torch layer 'rnn' \(LSTM\) at position 1: num_layers=2"):
        compare_models(model, graph)


def test_a_sequence_lens_of_l_for_every_sequence_is_read_and_runs_on_any_batch():
    from onnx import numpy_helper

    from equivalence import assert_equivalent

    model = recurrent_net(cell="gru", selection="h_n", ids=True, seed=11)
    graph = export(model)
    graph.graph.initializer.append(numpy_helper.from_array(np.array([STEPS], np.int32), "lengths"))
    recurrent_node(graph).input[4] = "lengths"
    assert_equivalent(model, graph, x=inputs(model, 11, batch=7))


# --- refused in one line, naming the node ----------------------------------------------------------

def _edited(edit, **options):
    """The export of an LSTM net (float input, last step) with ``edit(graph, node)`` applied."""
    model = recurrent_net(cell=options.pop("cell", "lstm"), selection="last", ids=False, **options)
    graph = export(model)
    edit(graph, recurrent_node(graph))
    return graph


def _attribute(name, value):
    from onnx import helper

    return lambda graph, node: node.attribute.append(helper.make_attribute(name, value))


def _constant_input(position, values):
    def edit(graph, node):
        from onnx import numpy_helper

        graph.graph.initializer.append(numpy_helper.from_array(np.asarray(values), f"edited_{position}"))
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = f"edited_{position}"

    return edit


def _initial_state_net():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.GRU(FEATURES, UNITS, batch_first=True), nn.Linear(UNITS, 3)
            self.register_buffer("h0", torch.full((1, 1, UNITS), 0.5))

        def forward(self, x):
            out, _ = self.rnn(x, self.h0)
            return self.fc(out[:, -1])

    return export(Net().eval(), __import__("torch").zeros(1, STEPS, FEATURES))


def _cell_state_net():
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(FEATURES, UNITS, batch_first=True), nn.Linear(UNITS, 3)

        def forward(self, x):
            _, (h, c) = self.rnn(x)
            return self.fc(c[-1])

    return export(Net().eval(), __import__("torch").zeros(1, STEPS, FEATURES))


def _step_net(step=2, batch_first=True):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(FEATURES, UNITS, batch_first=batch_first), nn.Linear(UNITS, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, step] if batch_first else out[-1])

    return export(Net().eval(), torch.zeros(1, STEPS, FEATURES))


def _batch_first_node():
    """A hand-written graph of an exported LSTM's weights whose node takes the batch-first sequence (``layout=1``)
    and gives ``Y (batch, L, 1, units)``, squeezed."""
    import onnx
    from onnx import TensorProto, helper

    exported = export(recurrent_net(cell="lstm", selection="sequence", ids=False))
    weights = [init for init in exported.graph.initializer if init.name in recurrent_node(exported).input[1:4]]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", *[w.name for w in weights]], ["y"], name="lstm", hidden_size=UNITS,
                          layout=1),
         helper.make_node("Squeeze", ["y", "axes"], ["seq"], name="squeeze")],
        "batch_first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", STEPS, FEATURES])],
        [helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["batch", STEPS, UNITS])], [*weights, axes])
    written = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(written)
    return written


def _rnn_net():
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.RNN(FEATURES, UNITS, batch_first=True), nn.Linear(UNITS, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    return export(Net().eval(), __import__("torch").zeros(1, STEPS, FEATURES))


REFUSED = {
    "bidirectional": (lambda: export(recurrent_net(cell="gru", ids=False, bidirectional=True)),
                      r"'/rnn/GRU' \(GRU\) at position \d+: direction=bidirectional: the suite judges one-direction"),
    "peepholes": (lambda: _edited(_constant_input(7, np.zeros((1, 3 * UNITS), np.float32))),
                  r"'/rnn/LSTM' \(LSTM\) at position \d+: peephole weights P"),
    "clip": (lambda: _edited(_attribute("clip", 5.0)), r"'/rnn/LSTM' \(LSTM\) at position \d+: clip=5.0"),
    "activations": (lambda: _edited(_attribute("activations", ["Sigmoid", "Relu"]), cell="gru"),
                    r"'/rnn/GRU' \(GRU\) at position \d+: activations \['Sigmoid', 'Relu'\]: the suite judges the "
                    r"default \['Sigmoid', 'Tanh'\]"),
    "input_forget": (lambda: _edited(_attribute("input_forget", 1)),
                     r"'/rnn/LSTM' \(LSTM\) at position \d+: input_forget=1"),
    "initial state": (_initial_state_net, r"'/rnn/GRU' \(GRU\) at position \d+: a nonzero initial_h \(largest "
                                          r"\|value\| 0.5\): the suite judges a recurrent layer started from zeros"),
    "sequence_lens": (lambda: _edited(_constant_input(4, np.array([3], np.int32))),
                      r"'/rnn/LSTM' \(LSTM\) at position \d+: a sequence_lens other than L for every sequence \(\[3\], "
                      r"L = 5\)"),
    "dynamic length": (lambda: export(recurrent_net(ids=False), input_names=["x"],
                                      dynamic_axes={"x": {0: "batch", 1: "steps"}}),
                       r"onnx layer 'x' \(input\): feeds the LSTM '/rnn/LSTM' a sequence of shape \['batch', "
                       r"'steps', 8\]: the suite judges a sequence \(batch, L, features\) with L and the features "
                       r"fixed"),
    "cell state": (_cell_state_net, r"'/rnn/LSTM' \(LSTM\) at position \d+: its cell state Y_c is used"),
    "another step": (_step_net, r"'/rnn/LSTM' \(LSTM\) at position \d+: takes step 2 of the 5 \(a Gather over L\)"),
    "batch_first=False": (lambda: _step_net(batch_first=False),
                          r"'/rnn/LSTM' \(LSTM\) at position \d+: takes the chain's \(batch, L, features\) sequence "
                          r"as \(L, batch, features\) \(layout=0 without a Transpose before it\)"),
    "layout=1": (_batch_first_node, r"onnx layer 'lstm' \(LSTM\) at position 0: layout=1 \(batch-first X and Y\): "
                                    r"ONNX Runtime's CPU kernels run layout=0 alone"),
    "float64": (lambda: export(recurrent_net(cell="gru", ids=False).double(),
                               __import__("torch").zeros(1, STEPS, FEATURES, dtype=__import__("torch").float64)),
                r"'/rnn/GRU' \(GRU\) at position \d+: weights in float64: ONNX Runtime's CPU GRU computes float32 "
                r"alone"),
    "RNN": (_rnn_net, r"'/rnn/RNN' \(RNN\) at position \d+: a simple recurrent layer \(RNN\): the suite does not "
                      r"read simple RNN nodes or fused attention ops from converted graphs yet \(it reads LSTM and "
                      r"GRU nodes"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_the_recurrent_reader_does_not_judge_is_refused_in_one_line_naming_the_node(case):
    from equivalence import ModelNotSupported, compare_models

    build, says = REFUSED[case]
    graph = build()
    with pytest.raises(ModelNotSupported, match=says) as info:
        compare_models(graph, graph)
    assert "\n" not in str(info.value)


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("onnx_recurrent")
    (folder / "rnnnet.py").write_text(RECURRENT_NET, encoding="utf-8")
    model = recurrent_net()
    torch.save(model.state_dict(), folder / "state.pt")
    graph = export(model)
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    (folder / "swapped.onnx").write_bytes(_swapped(graph, "lstm", 1, 2).SerializeToString())
    (folder / "bidirectional.onnx").write_bytes(REFUSED["bidirectional"][0]().SerializeToString())
    return folder


def run(files, monkeypatch, capsys, onnx_file: str) -> tuple[int, str, str]:
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    code = main(["compare", str(files / "state.pt"), str(files / onnx_file), "--torch-model", "rnnnet:build",
                 "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_a_recurrent_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "model.onnx")
    assert code == EXIT_OK and "all 3 layers agree" in out, (out, err)
    assert "layer 1: torch 'rnn' (LSTM; linear: none) = ort '/rnn/LSTM' (onnx Transpose+LSTM+Squeeze+Transpose+" \
        "Gather; linear: none)" in out, out


def test_compare_names_the_gate_order_of_a_swapped_file(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "swapped.onnx")
    assert code == EXIT_DISAGREE, (out, err)
    assert "layer 1 (torch 'rnn', ort '/rnn/LSTM'): gate order: the ONNX LSTM's W and R hold the gates as " \
        "(i, f, o, c), but ONNX orders them (i, o, f, c)" in out, out


def test_compare_refuses_a_bidirectional_gru_in_one_line(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "bidirectional.onnx")
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert re.search(r"onnx layer '/rnn/GRU' \(GRU\) at position \d+: direction=bidirectional", err), err


# --- a Keras model through tf2onnx (model.export(format="onnx")) -----------------------------------

def keras_recurrent(cell: str, return_sequences: bool, folder, *, mean: bool = False):
    """A Keras LSTM or GRU on ``(L, features)`` float sequences with drawn weights, its sequence the model's output or
    its last step into a ``Dense`` (``mean``: the sequence's mean into it), and its tf2onnx export."""
    pytest.importorskip("tf2onnx", reason="tf2onnx is installed by make converters only")
    import keras

    L = keras.layers
    layer = {"lstm": L.LSTM, "gru": L.GRU}[cell](UNITS, return_sequences=return_sequences, name="rnn")
    head = [L.GlobalAveragePooling1D(name="mean")] if mean else []
    head += [] if return_sequences and not mean else [L.Dense(3, name="fc")]  # the Keras walker reads no Dense on it
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, *head])
    rng = np.random.default_rng(12)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, STEPS, FEATURES), "float32"))  # Keras' ONNX export wants a model that was called
    path = folder / f"{cell}_{'sequence' if return_sequences else 'last'}{'_mean' if mean else ''}.onnx"
    model.export(str(path), format="onnx", verbose=False)
    return model, path


@pytest.mark.converters
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequence", "last"])
def test_a_keras_lstm_and_its_tf2onnx_export_agree_layer_by_layer(return_sequences, tmp_path):
    """tf2onnx writes Keras' LSTM as an ``LSTM`` node (its one bias as ``B``'s input half, the recurrent half
    zero), its last step as a ``Slice`` of ``Y`` over L and a ``Squeeze``, without a Transpose back."""
    from equivalence import compare_models
    from equivalence.core.recurrent import Recurrent

    model, path = keras_recurrent("lstm", return_sequences, tmp_path)
    x = np.random.default_rng(13).uniform(-2, 2, (6, STEPS, FEATURES)).astype("float32")
    result = compare_models(model, path, x=x)
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    rnn = result.keras_layers[0]
    assert rnn.layer_kind == Recurrent("lstm", FEATURES, UNITS, STEPS, return_sequences)
    assert rnn.kind == ("onnx Transpose+LSTM+Squeeze+Transpose" if return_sequences else
                        "onnx Transpose+LSTM+Squeeze+Slice+Squeeze")
    assert np.array_equal(rnn.W, result.torch_layers[0].W) and np.array_equal(rnn.b, result.torch_layers[0].b)


@pytest.mark.converters
def test_a_keras_lstm_with_a_moved_kernel_element_in_the_tf2onnx_export_is_named_at_its_layer(tmp_path):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, path = keras_recurrent("lstm", False, tmp_path)
    kernel = model.get_layer("rnn").cell.kernel.numpy()  # (features, 4*units), Keras' i, f, c, o
    onnx_w = kernel.T[np.concatenate([np.arange(g * UNITS, (g + 1) * UNITS) for g in (0, 3, 1, 2)])][None]
    wrong = moved(path, onnx_w, 2 * FEATURES + 1, 1e-3, tmp_path / "wrong.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert re.search(r"layer 0 \(keras 'rnn', ort 'LSTM__\d+'\): kernel: 1 / 336 elements differ", message), message


@pytest.mark.converters
def test_a_keras_gru_which_tf2onnx_writes_as_a_loop_is_refused_naming_the_loop(tmp_path):
    """tf2onnx 1.17 does not recognise Keras 3's GRU: it writes TensorFlow's while loop, refused as what it is."""
    from equivalence import ModelNotSupported, compare_models

    model, path = keras_recurrent("gru", False, tmp_path)
    with pytest.raises(ModelNotSupported, match=r"onnx layer '[^']*while_loop' \(Loop\) at position \d+: a Loop: a "
                                                r"converter wrote a while loop here \(tf2onnx writes Keras 3's GRU"):
        compare_models(model, path)


@pytest.mark.converters
def test_a_keras_lstm_before_a_mean_whose_transpose_tf2onnx_moved_past_it_is_refused_naming_the_node(tmp_path):
    """tf2onnx's optimiser moves the Transpose back to batch-first past a ``GlobalAveragePooling1D``'s
    ``ReduceMean``, which then averages the ``(L, batch, units)`` tensor over axis 0: refused at the LSTM, naming
    where its output goes."""
    from equivalence import ModelNotSupported, compare_models

    model, path = keras_recurrent("lstm", True, tmp_path, mean=True)
    with pytest.raises(ModelNotSupported, match=r"onnx layer 'LSTM__\d+' \(LSTM\) at position \d+: its Y, of "
                                                r"axes \(L, batch, units\) there, goes into the ReduceMean "
                                                r"'[^']*mean[^']*'"):
        compare_models(model, path)


@pytest.mark.converters
def test_two_keras_lstms_back_to_back_in_the_tf2onnx_export_are_two_units(tmp_path):
    """tf2onnx keeps the Transposes between two Keras LSTMs: two units as the first one."""
    pytest.importorskip("tf2onnx", reason="tf2onnx is installed by make converters only")
    import keras

    from equivalence import compare_models

    L = keras.layers
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), L.LSTM(UNITS, return_sequences=True, name="first"),
                              L.LSTM(5, name="second"), L.Dense(3, name="fc")])
    rng = np.random.default_rng(15)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, STEPS, FEATURES), "float32"))
    model.export(str(tmp_path / "stacked.onnx"), format="onnx", verbose=False)
    result = compare_models(model, tmp_path / "stacked.onnx", x=rng.uniform(-2, 2, (6, STEPS, FEATURES)))
    assert result.passed, result.message()
    assert [u.kind for u in result.keras_layers[:2]] == ["onnx Transpose+LSTM+Squeeze+Transpose",
                                                          "onnx Transpose+LSTM+Squeeze+Slice+Squeeze"]
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
