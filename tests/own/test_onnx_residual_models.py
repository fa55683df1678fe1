"""Residual connections in an ONNX graph (issue 26): an ``Add`` of the chain's tensor and an earlier one is read as the
core's ``Residual`` unit (its activation with it), a second branch ``a(x) + b(x)`` as a ``Branch`` unit, with the
kinds, indices and shapes the torch walker gives the model the graph was exported from, so the pair is judged layer
by layer; the Add runs on ONNX Runtime with two inputs, channels-first on a conv's tensor. What is not a residual
Add (a Concat, a Mul or a Sub of two branches, a broadcast, a value feeding three nodes) is refused naming the node."""

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
from tests.own.test_onnx_folded_norms import trained
from tests.own.test_onnx_models import perturbed
from tests.own.test_onnx_sequence_models import export as export_ids
from tests.residual_models import keras_block_models, residual_archs, torch_residual_model


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


def export(module, shape, *, opset: int = 17, dtype=None, **options):
    """``module`` through ``torch.onnx.export(dynamo=False)`` on a zero input of ``shape`` (batch 1) in ``dtype``
    (torch's default: float32)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(*shape, dtype=dtype),), buffer, dynamo=False, opset_version=opset,
                          **options)
    return onnx.load_from_string(buffer.getvalue())


NETS = '''
import torch
from torch import nn


class ResidualMLP(nn.Module):
    """relu(fc2(relu(fc1(x))) + x), then a head."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x))) + x))


class ResidualConv(nn.Module):
    """A stem (conv, BatchNorm, ReLU), one block relu(bn2(conv2(relu(bn1(conv1(h))))) + h), pooling and a head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool, self.head = nn.MaxPool2d(2), nn.Linear(36, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))) + h)
        return self.head(self.pool(y).flatten(1))


def build():
    torch.manual_seed(0)
    return ResidualMLP().eval()


def build_conv():
    torch.manual_seed(1)
    return ResidualConv().eval()
'''
CONV_SHAPE = (1, 2, 6, 6)


def _nets() -> dict:
    namespace: dict = {}
    exec(NETS, namespace)  # noqa: S102 - the factories the command tests import, built here the same way
    return namespace


def residual_mlp():
    return _nets()["build"]()


def residual_conv():
    model = _nets()["build_conv"]()
    rng = np.random.default_rng(1)
    for norm in (model.bn0, model.bn1, model.bn2):
        trained(norm, rng)
    return model


def _net(forward, widths=(4, 4, 4), head: int = 4, seed: int = 0):
    """A model of three Linear layers ``a``, ``b``, ``c`` (``widths``: their outputs, all taking 4) and a head on
    ``forward(net, x)`` (``head`` features)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (nn.Linear(4, n) for n in widths)
            self.head = nn.Linear(head, 2)

        def forward(self, x):
            return self.head(forward(self, x))

    torch.manual_seed(seed)
    return Net().eval()


def _cat(m, x):  # a head of 8 features
    return __import__("torch").cat([m.a(x), m.b(x)], 1)


def _pre_activation(m, x):  # x + relu(a(x)): nothing after the Add
    return x + __import__("torch").relu(m.a(x))


def _projection(m, x):  # tanh(c(relu(a(x))) + b(x)): two computed branches
    torch = __import__("torch")
    return torch.tanh(m.c(torch.relu(m.a(x))) + m.b(x))


def _stacked(m, x):  # two blocks, the second's skip the first's output
    torch = __import__("torch")
    h = torch.relu(m.a(x) + x)
    return torch.relu(m.c(torch.relu(m.b(h))) + h)


def _kinds(units) -> list[str]:
    return [type(u.layer_kind).__name__ for u in units]


def _links(units) -> list[tuple]:
    """Every residual Add's and branch's kind (its features and the layer it takes) and shapes."""
    return [(u.layer_kind, u.in_shape, u.out_shape) for u in units if u.layer_kind.name in ("add", "branch")]


def _input(seed: int, shape=(8, 4)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, shape).astype("float32")


@pytest.mark.parametrize("opset", [14, 17])
def test_a_residual_mlp_and_its_onnx_export_agree_layer_by_layer(opset):
    from equivalence import assert_equivalent
    from equivalence.core.residual import INPUT, Residual

    model = residual_mlp()
    graph = export(model, (1, 4), opset=opset)
    before = graph.SerializeToString()
    result = assert_equivalent(model, graph, max_examples=10)
    assert _kinds(result.keras_layers) == _kinds(result.torch_layers) == ["Dense", "Dense", "Residual", "Dense"]
    assert _links(result.keras_layers) == _links(result.torch_layers) == [(Residual((4,), INPUT), (8,), (4,))]
    assert "layer 2: torch 'add' (add; relu: torch.relu 'relu_1') = ort '/Add' (onnx Add; relu: Relu node 4)" in \
        result.matched(), result.matched()
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"
    assert_equivalent(model, graph, x=_input(opset))
    assert assert_equivalent(graph, model, max_examples=3).labels == ("ort", "torch")  # either side


@pytest.mark.parametrize(("forward", "kinds"), [
    (_pre_activation, ["Dense", "Residual", "Dense"]),
    (_projection, ["Dense", "Dense", "Branch", "Dense", "Residual", "Dense"]),
    (_stacked, ["Dense", "Residual", "Dense", "Dense", "Residual", "Dense"]),
])
@pytest.mark.parametrize("opset", [14, 17])
def test_residual_blocks_are_read_with_the_torch_walker_s_kinds_indices_and_shapes(forward, kinds, opset):
    """``x + relu(a(x))``; ``tanh(c(relu(a(x))) + b(x))`` (a Branch from the input before ``b``, the Add taking
    ``c``'s output); two blocks, the second's skip the first Add's output."""
    from equivalence import assert_equivalent

    model = _net(forward)
    result = assert_equivalent(model, export(model, (1, 4), opset=opset), max_examples=10)
    assert _kinds(result.keras_layers) == _kinds(result.torch_layers) == kinds
    assert _links(result.keras_layers) == _links(result.torch_layers)


@settings(max_examples=8, deadline=None)
@given(arch=st.one_of(residual_archs(dtype="float32"), residual_archs(dtype="float64")),
       opset=st.sampled_from([14, 17]))
def test_drawn_residual_mlps_agree_with_their_onnx_export(arch, opset):
    """A stem or none, one or two blocks, a projection on the shortcut or none, a LayerNorm in the branch (read as
    ``LayerNormalization`` at opset 17, as its nine ops at 14), an activation after the sum or none; float32 and
    float64 (ONNX's float32 epsilon attribute: ``onnx_float64_norm_epsilon_float32``)."""
    import torch

    from equivalence import compare_models

    model = torch_residual_model(arch)
    graph = export(model, (1, arch.n_in), opset=opset, dtype=getattr(torch, arch.dtype))
    result = compare_models(model, graph, x=np.random.default_rng(arch.seed).uniform(-3, 3, (6, arch.n_in)))
    assert result.passed, result.message()
    assert _kinds(result.keras_layers) == _kinds(result.torch_layers)
    assert _links(result.keras_layers) == _links(result.torch_layers)
    assert len([u for u in result.keras_layers if u.layer_kind.name == "add"]) == arch.blocks


@pytest.mark.parametrize("opset", [14, 17])
def test_a_conv_residual_block_exported_channels_first_agrees_with_the_torch_model(opset):
    """The exporter folds each BatchNorm into its conv; the block's skip is the stem's output (layer 0 of the folded
    model, layer 1 of the torch walker's: renumbered with the fold); the Add runs channels-first on ORT."""
    from equivalence import assert_equivalent
    from equivalence.core.residual import Residual

    model = residual_conv()
    graph = export(model, CONV_SHAPE, opset=opset)
    assert [n.op_type for n in graph.graph.node][:6] == ["Conv", "Relu", "Conv", "Relu", "Conv", "Add"]
    result = assert_equivalent(model, graph, max_examples=10)
    assert _kinds(result.keras_layers) == _kinds(result.torch_layers) == ["FoldedConv"] * 3 + [
        "Residual", "Pool", "Flatten", "Dense"]
    assert _links(result.keras_layers) == _links(result.torch_layers) == [
        (Residual((6, 6, 4), 0), (6, 6, 8), (6, 6, 4))]
    assert_equivalent(model, graph, x=_input(opset, (4, 2, 6, 6)))
    unfolded = assert_equivalent(model, export(model, CONV_SHAPE, opset=opset, do_constant_folding=False),
                                 max_examples=3)
    assert _kinds(unfolded.keras_layers)[:7] == ["Conv", "BatchNorm"] * 3 + ["Residual"]
    assert _links(unfolded.keras_layers) == _links(unfolded.torch_layers) == [
        (Residual((6, 6, 4), 1), (6, 6, 8), (6, 6, 4))]


def test_the_onnx_add_unit_adds_the_canonical_operands_in_onnx_s_layout():
    """The unit's canonical input is ``[branch, skip]`` channels-last; ORT gets each operand channels-first: the
    sum and ReLU come back channels-last, element for element."""
    from equivalence.frameworks.onnx_graph import walk

    add = next(u for u in walk(export(residual_conv(), CONV_SHAPE)) if u.layer_kind.name == "add")
    rng = np.random.default_rng(0)
    branch, skip = (rng.uniform(-2, 2, (3, 6, 6, 4)).astype("float32") for _ in range(2))
    out = add.run(np.concatenate([branch, skip], axis=-1))
    assert out.shape == (3, 6, 6, 4) and np.array_equal(out, np.maximum(branch + skip, 0))


def test_a_residual_block_on_a_token_sequence_agrees_token_by_token():
    """``h + ffn(h)`` on an Embedding's ``(batch, L, 8)``: the Add is batch-first, nothing transposed."""
    import torch
    from torch import nn

    from equivalence import assert_equivalent
    from equivalence.core.residual import Residual

    class TokenResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.up, self.down, self.fc = nn.Embedding(20, 8), nn.Linear(8, 16), nn.Linear(16, 8), \
                nn.Linear(8, 3)

        def forward(self, x):
            h = self.emb(x)
            return self.fc((h + self.down(nn.functional.gelu(self.up(h)))).mean(1))

    torch.manual_seed(2)
    model = TokenResidual().eval()
    result = assert_equivalent(model, export_ids(model, opset=17), max_examples=10)
    assert _kinds(result.keras_layers) == ["Embedding", "Dense", "Dense", "Residual", "SequenceMean", "Dense"]
    assert _links(result.keras_layers) == _links(result.torch_layers) == [(Residual((6, 8), 0), (6, 16), (6, 8))]


# --- a wrong file ---------------------------------------------------------------------------------

def _initializer(graph, name: str) -> int:
    return next(i for i, init in enumerate(graph.graph.initializer) if init.name == name)


@pytest.mark.parametrize(("build", "weight", "says"), [
    (residual_mlp, "fc2.weight", "layer 1 (torch 'fc2', ort '/fc2/Gemm'): kernel: 1 / 16 elements differ"),
    (lambda: _net(_projection), "b.weight", "layer 3 (torch 'b', ort '/b/Gemm'): kernel: 1 / 16 elements differ"),
])
def test_a_moved_weight_inside_a_branch_is_named_at_its_layer(build, weight, says):
    from equivalence import compare_models

    model = build()
    graph = export(model, (1, 4))
    result = compare_models(model, perturbed(graph, initializer=_initializer(graph, weight), index=5, by=1e-3),
                            max_examples=3)
    assert not result.passed
    assert says in result.message(), result.message()


def rewired(graph):
    """A copy of ``graph`` whose Add takes the first layer's output (``fc1``'s ReLU) as its skip, not the input."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    nodes = list(copy.graph.node)
    add = next(n for n in nodes if n.op_type == "Add")
    relu = next(n for n in nodes if n.op_type == "Relu")
    add.input[list(add.input).index(copy.graph.input[0].name)] = relu.output[0]
    return copy


def test_an_add_whose_skip_is_wired_to_another_tensor_is_named_at_the_add():
    from equivalence import compare_models

    model = residual_mlp()
    graph = rewired(export(model, (1, 4)))
    result = compare_models(model, graph, max_examples=3)
    assert not result.passed
    assert "layer 2 (torch 'add', ort '/Add'): residual: ort adds layer 0's output ('/fc1/Gemm'), but torch adds the " \
           "model's input (the Add joins different branches)" in result.message(), result.message()


# --- refused ----------------------------------------------------------------------------------------

def _dead_end(graph):
    """``graph`` with a node taking the input whose output nothing takes: a fork whose paths never meet."""
    from onnx import helper

    graph.graph.node.insert(0, helper.make_node("Relu", [graph.graph.input[0].name], ["unused"], name="dead_end"))
    return graph


def _interleaved(graph):
    """``tanh(c(relu(a(x))) + b(x))`` with ``b``'s Gemm written before ``a``'s ReLU (a valid order)."""
    nodes = list(graph.graph.node)
    ops = [n.op_type for n in nodes]
    first_relu, b_gemm = ops.index("Relu"), [i for i, op in enumerate(ops) if op == "Gemm"][2]
    nodes.insert(first_relu, nodes.pop(b_gemm))
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return graph


def _flattened_skip():
    """``head(relu(fc1(h)) + h)``, ``h`` a conv's output flattened (channels-first in torch and ONNX)."""
    import torch
    from torch import nn

    class FlattenedSkip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc1, self.head = nn.Conv2d(2, 2, 3, padding=1), nn.Linear(18, 18), nn.Linear(18, 2)

        def forward(self, x):
            h = torch.relu(self.conv(x)).flatten(1)
            return self.head(torch.relu(self.fc1(h)) + h)

    return FlattenedSkip().eval()


@pytest.mark.parametrize(("build", "says"), [
    (lambda: export(_net(_cat, head=8), (1, 4)),
     r"onnx layer '/Concat' \(Concat\) at position 2: joins two branches from '[^']+' with a Concat: the suite judges "
     r"a value feeding two nodes whose paths meet at an Add"),
    (lambda: export(_net(lambda m, x: m.a(x) * __import__("torch").tanh(m.b(x))), (1, 4)),
     r"onnx layer '/Mul' \(Mul\) at position 3: joins two branches from '[^']+' with a Mul"),
    (lambda: export(_net(lambda m, x: __import__("torch").relu(m.a(x)) - x), (1, 4)),
     r"onnx layer '/Sub' \(Sub\) at position 2: joins two branches from '[^']+' with a Sub"),
    (lambda: export(_net(lambda m, x: m.a(x) + x, widths=(1, 4, 4)), (1, 4)),
     r"onnx layer '/Add' \(Add\) at position 1: a residual Add of shapes \(1,\) \(the branch\) and \(4,\) \(the "
     r"model's input\): the suite judges an Add of equal shapes, not a broadcast"),
    (lambda: export(_net(lambda m, x: m.a(x) + m.b(x) + m.c(x)), (1, 4)),
     r"onnx layer '/a/Gemm' \(Gemm\) at position 0: a branch: '[^']+' feeds 3 nodes \(more than two live branches\)"),
    (lambda: _dead_end(export(_net(lambda m, x: m.a(x)), (1, 4))),
     r"onnx layer 'dead_end' \(Relu\) at position 0: a branch: '[^']+' feeds two nodes whose paths never meet"),
    (lambda: export(_flattened_skip(), (1, 2, 3, 3)),
     r"onnx layer '/fc1/Gemm' \(Gemm\) at position 3: a branch from '/Flatten_output_0', a Flatten's output in ONNX's "
     r"channels-first order"),
    (lambda: _interleaved(export(_net(_projection), (1, 4))),
     r"onnx layer '/b/Gemm' \(Gemm\) at position 1: starts a second branch from '[^']+' before the first one ends at "
     r"the Add '/Add' that joins them"),
])
def test_what_is_not_a_residual_add_is_refused_naming_the_node(build, says):
    from equivalence import ModelNotSupported
    from equivalence.frameworks.onnx_graph import walk

    with pytest.raises(ModelNotSupported, match=says):
        walk(build())


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("onnx_residual")
    (folder / "nets.py").write_text(NETS, encoding="utf-8")
    mlp, conv = residual_mlp(), residual_conv()
    torch.save(mlp.state_dict(), folder / "mlp.pt")
    torch.save(conv.state_dict(), folder / "conv.pt")
    graph = export(mlp, (1, 4))
    (folder / "mlp.onnx").write_bytes(graph.SerializeToString())
    (folder / "rewired.onnx").write_bytes(rewired(graph).SerializeToString())
    (folder / "conv.onnx").write_bytes(export(conv, CONV_SHAPE).SerializeToString())
    (folder / "cat.onnx").write_bytes(export(_net(_cat, head=8), (1, 4)).SerializeToString())
    return folder


def run(files, monkeypatch, capsys, state: str, onnx_file: str, factory: str = "nets:build") -> tuple[int, str, str]:
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    code = main(["compare", str(files / state), str(files / onnx_file), "--torch-model", factory, "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_a_residual_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "mlp.pt", "mlp.onnx")
    assert code == EXIT_OK and "all 4 layers agree" in out, (out, err)
    assert "= ort '/Add' (onnx Add; relu: Relu node 4)" in out, out


def test_compare_takes_a_conv_residual_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "conv.pt", "conv.onnx", "nets:build_conv")
    assert code == EXIT_OK and "all 7 layers agree" in out, (out, err)
    assert re.search(r"torch 'add' \(add; relu: torch.relu '\w+'\) = ort '/Add' \(onnx Add; relu: Relu node \d+\)",
                     out), out


def test_compare_names_the_add_of_a_rewired_skip(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "mlp.pt", "rewired.onnx")
    assert code == EXIT_DISAGREE and "layer 2 (torch 'add', ort '/Add'): residual: ort adds layer 0's output" in out, \
        (out, err)


def test_compare_refuses_a_concatenation_in_one_line(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "mlp.pt", "cat.onnx")
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert "onnx layer '/Concat' (Concat) at position 2: joins two branches" in err, err


# --- Keras functional models through tf2onnx (model.export(format="onnx")) -------------------------

@pytest.fixture(scope="module")
def keras_exports(tmp_path_factory):
    pytest.importorskip("tf2onnx", reason="tf2onnx is installed by make converters only")
    folder = tmp_path_factory.mktemp("keras_residual_onnx")
    # the dense and two-branch models (tf2onnx writes the projection's branches proj first) and the conv block
    # (tf2onnx's input Transpose shared by the stem, its BatchNorms a Mul and an Add, its Add channels-first)
    models = {name: model for name, model in keras_block_models().items() if name != "tokens"}
    for name, model in models.items():
        model(np.zeros((1, *model.input_shape[1:]), "float32"))  # Keras' ONNX export wants a model that was called
        model.export(str(folder / f"{name}.onnx"), format="onnx", verbose=False)
    return models, folder


@pytest.mark.converters
@pytest.mark.parametrize(("name", "kinds"), [
    ("dense", ["Dense", "Dense", "Residual", "Dense"]),
    ("projection", ["Dense", "Dense", "Dense", "Branch", "Dense", "Residual", "Dense"]),
    ("conv", ["Conv", "ChannelAffine", "Conv", "Conv", "ChannelAffine", "Residual", "Pool", "Flatten", "Dense"]),
])
def test_a_keras_residual_model_and_its_tf2onnx_export_agree_layer_by_layer(keras_exports, name, kinds):
    from equivalence import assert_equivalent

    models, folder = keras_exports
    result = assert_equivalent(models[name], folder / f"{name}.onnx", max_examples=10)
    assert _kinds(result.keras_layers) == kinds
    assert [type(u.layer_kind).__name__ for u in result.torch_layers] == kinds  # the BatchNorms folded as tf2onnx did
    assert _links(result.keras_layers) == _links(result.torch_layers)


@pytest.mark.converters
def test_tf2onnx_s_order_of_two_branches_is_read_in_the_add_s_operands_order(keras_exports):
    """tf2onnx writes ``proj``'s MatMul before ``fc1``'s and ``a``'s; the reader walks ``Add()([a, proj])`` as the
    Keras walker does: ``fc1``, ``a``, a Branch from the stem, ``proj``, the Add of ``proj`` and ``a``."""
    import onnx

    from equivalence.frameworks.onnx_graph import walk

    graph = onnx.load(str(keras_exports[1] / "projection.onnx"))
    matmuls = [n.name for n in graph.graph.node if n.op_type == "MatMul"]
    assert [re.sub(r"^functional\w*/(\w+?)_1/MatMul$", r"\1", n) for n in matmuls] == ["stem", "proj", "fc1", "a",
                                                                                        "head"], matmuls
    units = walk(graph)
    assert [re.sub(r"^functional\w*/(\w+?)_1/.*", r"\1", u.name) for u in units] == [
        "stem", "fc1", "a", "branch", "proj", "add", "head"]
    assert (units[3].layer_kind.source, units[5].layer_kind.skip) == (0, 2)


@pytest.mark.converters
def test_a_moved_kernel_in_a_branch_of_the_tf2onnx_export_is_named_at_its_layer(keras_exports):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    models, folder = keras_exports
    model = models["projection"]
    wrong = moved(folder / "projection.onnx", model.get_layer("proj").kernel.numpy(), 7, 1e-3,
                  folder / "wrong_proj.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert re.search(r"layer 4 \(keras 'proj', ort 'functional\w*/proj_1/MatMul'\): kernel: 1 / 25 elements differ",
                     message), message
