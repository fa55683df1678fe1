"""Sequence models in an ONNX graph (issue 26): an Embedding (``Gather`` of a constant table by the token ids), a
dense layer token by token (``MatMul`` + ``Add`` on ``(batch, L, features)``), a LayerNorm over the features and a
mean over the tokens (``ReduceMean`` over axis 1), read into the core's kinds, each unit run on ONNX Runtime and
judged layer by layer against the torch model it was exported from."""

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


LENGTH, ROWS = 6, 20

SEQNET = '''
import torch
from torch import nn


class TokenNet(nn.Module):
    """Embedding -> Linear per token -> ReLU -> mean over the tokens -> Linear."""

    def __init__(self):
        super().__init__()
        self.emb, self.tok, self.fc = nn.Embedding(20, 8), nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.tok(self.emb(x))).mean(1))


def build():
    torch.manual_seed(0)
    return TokenNet().eval()
'''


def token_net():
    namespace: dict = {}
    exec(SEQNET, namespace)  # noqa: S102 - the factory the command test imports, built here the same way
    return namespace["build"]()


def mean_net():
    """Embedding -> mean over the tokens -> Linear."""
    import torch
    from torch import nn

    class MeanNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(ROWS, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.emb(x).mean(1))

    torch.manual_seed(1)
    return MeanNet().eval()


def norm_net():
    """Embedding -> LayerNorm per token -> Linear per token -> GELU -> mean -> Linear."""
    import torch
    from torch import nn

    class NormNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.norm = nn.Embedding(ROWS, 8), nn.LayerNorm(8)
            self.tok, self.fc = nn.Linear(8, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(nn.functional.gelu(self.tok(self.norm(self.emb(x)))).mean(1))

    torch.manual_seed(2)
    model = NormNet().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2), model.norm.bias.uniform_(-1, 1)
    return model


def export(module, *, opset: int = 20, length: int = LENGTH, **options):
    """``module`` through ``torch.onnx.export(dynamo=False)`` on zero token ids ``(1, length)``."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(1, length, dtype=torch.long),), buffer, dynamo=False,
                          opset_version=opset, **options)
    return onnx.load_from_string(buffer.getvalue())


def ids(seed: int, batch: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, ROWS, (batch, LENGTH))


@pytest.mark.parametrize("opset", [14, 18, 20])
def test_an_embedding_mean_and_linear_and_the_onnx_export_agree_layer_by_layer(opset):
    """``ReduceMean``'s axes are an attribute below opset 18, an input from it: both read."""
    from equivalence import assert_equivalent
    from equivalence.core.embedding import Embedding, SequenceMean

    model = mean_net()
    graph = export(model, opset=opset)
    before = graph.SerializeToString()
    result = assert_equivalent(model, graph, max_examples=10)
    kinds = [u.layer_kind for u in result.keras_layers]
    assert kinds[:2] == [Embedding(ROWS, 8, LENGTH), SequenceMean(LENGTH, 8)]
    assert kinds == [u.layer_kind for u in result.torch_layers]
    matched = "\n".join(result.matched())
    assert "layer 0: torch 'emb' (Embedding; linear: none) = ort '/emb/Gather' (onnx Gather; linear: none)" in matched
    assert "layer 1: torch 'mean' (Tensor.mean; linear: none) = ort '/ReduceMean' (onnx ReduceMean; linear: none)" \
        in matched
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"
    assert_equivalent(model, graph, x=ids(opset))  # given token ids, int64
    assert assert_equivalent(graph, model, max_examples=3).labels == ("ort", "torch")  # either side


@pytest.mark.parametrize("opset", [14, 20])
def test_a_linear_per_token_is_read_as_a_dense_layer_on_the_sequence(opset):
    """torch's exporter writes a Linear on ``(batch, L, 8)`` as a ``MatMul`` by the stored ``(8, 6)`` and an ``Add``
    of the bias: one dense unit of in_shape ``(L, 8)``, its kernel equal to the torch walker's exactly."""
    from equivalence import assert_equivalent

    model = token_net()
    graph = export(model, opset=opset)
    result = assert_equivalent(model, graph, max_examples=10)
    torch_tok, onnx_tok = result.torch_layers[1], result.keras_layers[1]
    assert onnx_tok.in_shape == torch_tok.in_shape == (LENGTH, 8)
    assert onnx_tok.out_shape == torch_tok.out_shape == (LENGTH, 6)
    assert np.array_equal(onnx_tok.W, torch_tok.W) and np.array_equal(onnx_tok.b, torch_tok.b)
    assert "layer 1: torch 'tok' (Linear; relu: torch.relu 'relu') = ort '/tok/MatMul' (onnx MatMul+Add; relu: Relu " \
        "node 3)" in "\n".join(result.matched())
    assert_equivalent(model, graph, x=ids(opset + 1))


def test_a_layer_norm_per_token_agrees_with_the_torch_layer_norm():
    from equivalence import assert_equivalent
    from equivalence.core.norms import LayerNorm

    model = norm_net()
    graph = export(model, opset=17)
    result = assert_equivalent(model, graph, max_examples=10)
    norm = result.keras_layers[1]
    assert norm.layer_kind == LayerNorm(8, 1e-5) and norm.in_shape == (LENGTH, 8)
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]


def drawn_net(rows: int, dim: int, hidden: int, activation: str, norm: bool, seed: int):
    """Embedding -> [LayerNorm] -> Linear per token -> activation -> mean over the tokens -> Linear."""
    import torch
    from torch import nn

    acts = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "gelu": nn.GELU(), "softmax": nn.Softmax(dim=-1), "silu": nn.SiLU()}

    class Drawn(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.norm = nn.Embedding(rows, dim), nn.LayerNorm(dim) if norm else nn.Identity()
            self.tok, self.act, self.fc = nn.Linear(dim, hidden), acts[activation], nn.Linear(hidden, 2)

        def forward(self, x):
            return self.fc(self.act(self.tok(self.norm(self.emb(x)))).mean(1))

    torch.manual_seed(seed)
    return Drawn().eval()


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(2, 40), dim=st.integers(1, 12), hidden=st.integers(1, 10), length=st.integers(1, 24),
       activation=st.sampled_from(["relu", "tanh", "gelu", "softmax", "silu"]), norm=st.booleans(),
       opset=st.sampled_from([14, 17, 20]), seed=st.integers(0, 2**16))
def test_drawn_sequence_nets_agree_with_their_onnx_export(rows, dim, hidden, length, activation, norm, opset, seed):
    """Every ORT unit within its kind's bound, the kinds and shapes read from the graph equal the torch walker's
    (below opset 17 a LayerNorm is written as nine ops on the sequence: refused, named)."""
    from equivalence import ModelNotSupported, compare_models

    model = drawn_net(rows, dim, hidden, activation, norm, seed)
    graph = export(model, opset=opset, length=length)
    x = np.random.default_rng(seed).integers(0, rows, (4, length))
    if norm and opset < 17:
        with pytest.raises(ModelNotSupported, match=r"\(ReduceMean\) at position 1: a ReduceMean over axes \[-1\] "
                                                    r"with keepdims=1 of the \(batch, \d+, \d+\) token sequence.*"
                                                    r"export at opset 17 or later"):
            compare_models(model, graph, x=x)
        return
    result = compare_models(model, graph, x=x)
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    sequence = [u for u in result.keras_layers if u.in_shape]  # a dense chain's ONNX unit has its width alone
    assert [u.out_shape for u in sequence] == [u.out_shape for u in result.torch_layers[:len(sequence)]]


def test_int32_token_ids_as_tf2onnx_writes_them_are_fed_as_int32():
    """tf2onnx declares Keras' ids int32: the same graph with its input made int32 is run on int32 ids."""
    from onnx import TensorProto

    from equivalence import assert_equivalent
    from equivalence.frameworks.onnx_graph import walk

    model = token_net()
    graph = export(model)
    graph.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    units = walk(graph)
    assert units[0].run(ids(0)).dtype == np.float32
    assert_equivalent(model, graph, max_examples=5)


@pytest.mark.parametrize(("build", "initializer", "index", "says"), [
    (mean_net, "emb.weight", 8 * 3 + 5, "layer 0 (torch 'emb', ort '/emb/Gather'): kernel: 1 / 160 elements differ"),
    (token_net, "onnx::MatMul", 7, "layer 1 (torch 'tok', ort '/tok/MatMul'): kernel: 1 / 48 elements differ"),
    (token_net, "tok.bias", 2, "layer 1 (torch 'tok', ort '/tok/MatMul'): bias: 1 / 6 elements differ"),
])
def test_a_moved_embedding_row_or_token_weight_in_the_file_is_named_at_its_layer(build, initializer, index, says):
    from equivalence import compare_models

    model = build()
    graph = export(model)
    at = next(i for i, init in enumerate(graph.graph.initializer) if init.name.startswith(initializer))
    result = compare_models(model, perturbed(graph, initializer=at, index=index, by=1e-3), max_examples=3)
    assert not result.passed
    assert says in result.message(), result.message()


def _recurrent(cell):
    import torch
    from torch import nn

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.fc = nn.Embedding(ROWS, 8), cell(8, 6, batch_first=True), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.rnn(self.emb(x))[0].mean(1))

    torch.manual_seed(0)
    return Recurrent().eval()


def _on_tokens(op):
    import torch
    from torch import nn

    class OnTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.tok = nn.Embedding(ROWS, 8), nn.Linear(8, 4)
            self.fc = nn.Linear(LENGTH * 4 if op == "flatten" else LENGTH if op == "mean2" else 4, 2)

        def forward(self, x):
            h = self.tok(self.emb(x))
            if op == "softmax1":
                return self.fc(torch.softmax(h, 1).mean(1))
            return self.fc(h.flatten(1) if op == "flatten" else h.mean(2))

    return OnTokens().eval()


@pytest.mark.parametrize(("build", "says"), [
    (lambda: _recurrent(__import__("torch").nn.RNN),  # LSTM and GRU are read: tests/own/test_onnx_recurrent_models.py
     r"onnx layer '/rnn/RNN' \(RNN\) at position \d+: a simple recurrent layer \(RNN\): the suite does not read "
     r"simple RNN nodes or fused attention ops"),
    (lambda: _on_tokens("softmax1"), r"onnx layer '/Softmax' \(Softmax\) at position \d: a Softmax over axis 1 of "
                                     r"the \(batch, tokens, features\) sequence"),
    (lambda: _on_tokens("mean2"), r"\(ReduceMean\) at position \d: a ReduceMean over axes \[2\] with keepdims=0 of "
                                  r"the \(batch, 6, 4\) token sequence"),
    (lambda: _on_tokens("flatten"), r"onnx layer '/Flatten' \(Flatten\) at position \d: a Flatten of the "
                                    r"\(batch, 6, 4\) token sequence"),
])
def test_what_the_reader_does_not_judge_on_a_sequence_is_refused_naming_the_node(build, says):
    from equivalence import ModelNotSupported, compare_models

    graph = export(build())
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(graph, graph)


def test_a_dynamic_sequence_length_is_refused_at_the_embedding():
    from equivalence import ModelNotSupported, compare_models

    graph = export(mean_net(), input_names=["ids"], dynamic_axes={"ids": {0: "batch", 1: "tokens"}})
    with pytest.raises(ModelNotSupported, match=r"'/emb/Gather' \(Gather\) at position 0: token ids of shape "
                                                r"\['batch', 'tokens'\]: the suite judges ids \(batch, L\) with the "
                                                r"sequence length L fixed"):
        compare_models(graph, graph)


def test_a_dynamic_batch_is_read():
    from equivalence import assert_equivalent

    model = token_net()
    assert_equivalent(model, export(model, input_names=["ids"], dynamic_axes={"ids": {0: "batch"}}),
                      max_examples=5)


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("onnx_sequence")
    (folder / "seqnet.py").write_text(SEQNET, encoding="utf-8")
    model = token_net()
    torch.save(model.state_dict(), folder / "state.pt")
    graph = export(model)
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    (folder / "wrong.onnx").write_bytes(perturbed(graph, initializer=0, index=11, by=1e-2).SerializeToString())
    (folder / "rnn.onnx").write_bytes(export(_recurrent(torch.nn.RNN)).SerializeToString())
    return folder


def run(files, monkeypatch, capsys, onnx_file: str) -> tuple[int, str, str]:
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    code = main(["compare", str(files / "state.pt"), str(files / onnx_file), "--torch-model", "seqnet:build",
                 "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_a_sequence_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "model.onnx")
    assert code == EXIT_OK and "all 4 layers agree" in out, (out, err)
    assert "= ort '/emb/Gather' (onnx Gather; linear: none)" in out and "= ort '/tok/MatMul' (onnx MatMul+Add" in out


def test_compare_names_the_embedding_of_a_moved_row(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "wrong.onnx")
    assert code == EXIT_DISAGREE and "layer 0 (torch 'emb', ort '/emb/Gather'): kernel: 1 / 160 elements differ" \
        in out, (out, err)


def test_compare_refuses_a_simple_rnn_in_one_line(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "rnn.onnx")
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert "onnx layer '/rnn/RNN' (RNN) at position" in err, err


# --- a Keras model through tf2onnx (model.export(format="onnx")) -----------------------------------

TF2ONNX_EMBEDDING = "onnx Add+Cast+Less+Cast+Mul+Not+Cast+Mul+Add+Gather"
"""Keras' wrap of negative ids (``ids < 0 ? ids + rows : ids``) as tf2onnx writes it, read with the ``Gather``."""


@pytest.fixture(scope="module")
def keras_export(tmp_path_factory):
    pytest.importorskip("tf2onnx", reason="tf2onnx is installed by make converters only")
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((LENGTH,), dtype="int32"), L.Embedding(ROWS, 8, name="emb"),
                              L.Dense(6, activation="relu", name="tok"), L.GlobalAveragePooling1D(name="mean"),
                              L.Dense(3, name="fc")])
    rng = np.random.default_rng(3)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, LENGTH), "int32"))  # Keras' ONNX export wants a model that was called
    folder = tmp_path_factory.mktemp("keras_sequence_onnx")
    model.export(str(folder / "seq.onnx"), format="onnx", verbose=False)
    return model, folder


@pytest.mark.converters
def test_a_keras_sequence_model_and_its_tf2onnx_export_agree_layer_by_layer(keras_export):
    """tf2onnx writes a Dense on a sequence as TensorFlow's Tensordot (``Reshape`` to ``(-1, 8)``, ``MatMul``,
    ``Reshape`` back to a computed shape), read as one dense unit token by token; the ids are int32."""
    from equivalence import assert_equivalent
    from equivalence.core.embedding import Embedding, SequenceMean

    model, folder = keras_export
    result = assert_equivalent(model, folder / "seq.onnx", max_examples=20)
    kinds = [u.kind for u in result.keras_layers]
    # tf2onnx orders the wrap's independent nodes differently from one export to the next: compared as a multiset
    assert sorted(kinds[0].split("+")) == sorted(TF2ONNX_EMBEDDING.split("+")) and kinds[0].endswith("Gather"), kinds
    assert kinds[1:] == ["onnx Reshape+MatMul+Reshape+Add", "onnx ReduceMean", "onnx MatMul+Add"], kinds
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    assert result.keras_layers[0].layer_kind == Embedding(ROWS, 8, LENGTH)
    assert result.keras_layers[2].layer_kind == SequenceMean(LENGTH, 6)
    assert result.keras_layers[1].in_shape == (LENGTH, 8)
    assert_equivalent(model, folder / "seq.onnx", x=ids(5))


@pytest.mark.converters
@pytest.mark.parametrize(("layer", "element", "says"), [
    ("emb", 8 * 4 + 1, r"layer 0 \(keras 'emb', ort 'sequential[_\d]*/emb_1/GatherV2'\): kernel: 1 / 160 elements "
                       r"differ"),
    ("tok", 5, r"layer 1 \(keras 'tok', ort 'sequential[_\d]*/tok_1/Tensordot/Reshape'\): kernel: 1 / 48 elements "
               r"differ"),
])  # the graph's scope names count the Keras models made before in the process: a number, not asserted
def test_a_moved_row_or_kernel_in_the_tf2onnx_export_is_named_at_its_layer(keras_export, layer, element, says):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = keras_export
    variable = model.get_layer(layer).embeddings if layer == "emb" else model.get_layer(layer).kernel
    wrong = moved(folder / "seq.onnx", variable.numpy(), element, 1e-3, folder / f"wrong_{layer}.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert re.search(says, message), message
