"""Token sequence models in a LiteRT flatbuffer (issue 26, "any pair of model files"): what ``TFLiteConverter`` writes
from a Keras 3 ``Input((L,), dtype="int32") -> Embedding -> Dense per token -> LayerNormalization ->
GlobalAveragePooling1D -> Dense`` (the id wrap and ``GATHER``, ``RESHAPE``+``FULLY_CONNECTED``+``RESHAPE`` or one
``FULLY_CONNECTED`` keeping the tokens, the LayerNorm's eleven ops on a 3-D tensor, ``MEAN`` over axis 1) is read into
the core's kinds with the Keras walker's kinds and shapes, each unit run on the interpreter fed int ids, and judged
layer by layer; a moved table row or kernel element in the file is named at its layer; what is not read on a
sequence is refused in one line naming the op."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as
from tests.own.test_litert_1d_and_norm_models import LAYER_NORM
from tests.own.test_litert_spatial_models import convert, converted_and_saved

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow

LENGTH, ROWS, DIM = 6, 20, 8
EMBEDDING = "tflite LESS+ADD+SELECT_V2+GATHER"
"""Keras' wrap of negative ids (``ids < 0 ? ids + rows : ids``) as the converter writes it, read with the gather."""
TENSORDOT = "tflite RESHAPE+FULLY_CONNECTED+RESHAPE+ADD"
"""A Dense on a sequence with a free batch: TensorFlow's Tensordot, its targets computed from SHAPE, then the bias."""
UNITS = {
    "full": [EMBEDDING, TENSORDOT, LAYER_NORM, "tflite MEAN", "tflite FULLY_CONNECTED"],
    "no_norm": [EMBEDDING, TENSORDOT, "tflite MEAN", "tflite FULLY_CONNECTED"],
    "no_dense": [EMBEDDING, LAYER_NORM, "tflite MEAN", "tflite FULLY_CONNECTED"],
    "fixed_batch": ["tflite LESS+ADD+SELECT+GATHER", "tflite FULLY_CONNECTED", LAYER_NORM, "tflite MEAN",
                    "tflite FULLY_CONNECTED"],
}
"""What the reader says each unit of each converted model is (with the batch fixed, one FULLY_CONNECTED keeps the
tokens, its bias fused)."""


def keras_token_model(*, dense: bool = True, norm: bool = True, batch: int | None = None, length: int | None = LENGTH,
                      activation: str = "relu", between=None, mask_zero: bool = False):
    """``Embedding -> [Dense per token] -> [LayerNormalization] -> GlobalAveragePooling1D -> Dense``, its weights and
    the norm's gamma and beta drawn; ``between``: a layer put after the Embedding (one the readers refuse)."""
    import keras

    L = keras.layers
    ids = keras.Input((length,), batch_size=batch, dtype="int32")
    h = L.Embedding(ROWS, DIM, mask_zero=mask_zero, name="emb")(ids)
    h = between(h) if between is not None else h
    if dense:
        h = L.Dense(5, activation=activation, name="tok")(h)
    if norm:
        h = L.LayerNormalization(name="ln")(h)
    model = keras.Model(ids, L.Dense(3, name="fc")(L.GlobalAveragePooling1D(name="mean")(h)))
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    return model


BUILDS = {"full": {}, "no_norm": {"norm": False, "activation": "tanh"}, "no_dense": {"dense": False},
          "fixed_batch": {"batch": 2, "activation": "gelu"}}


def ids(seed: int, batch: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, ROWS, (batch, LENGTH))


def float16_weights(model, path):
    """``model`` converted with float16 weights (``optimizations=[DEFAULT]``, ``supported_types=[float16]``)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    """Each Keras model saved (``name.keras``) and converted (``name.tflite``), the one without a LayerNorm and the
    full one also with float16 weights (``name_float16.tflite``): ``{name: (model, folder)}``."""
    folder = tmp_path_factory.mktemp("litert_sequence")
    out = {}
    for name, options in BUILDS.items():
        model = keras_token_model(**options)
        converted_and_saved(model, folder, name)
        out[name] = (model, folder)
    for name in ("no_norm", "full"):
        float16_weights(out[name][0], folder / f"{name}_float16.tflite")
    return out


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_keras_token_model_and_its_tflite_agree_layer_by_layer_with_the_keras_walker_s_kinds(converted, name):
    from equivalence import assert_equivalent

    model, folder = converted[name]
    result = read_as(model, folder / f"{name}.tflite", UNITS[name])
    assert [u.shape for u in result.keras_layers] == [u.shape for u in result.torch_layers]
    shapes = [(u.in_shape, u.out_shape) for u in result.keras_layers[:-1]]  # the last, a dense chain's: its widths
    assert shapes == [(u.in_shape, u.out_shape) for u in result.torch_layers[:-1]], shapes
    assert shapes[0] == ((LENGTH,), (LENGTH, DIM)) and shapes[-1][1] == (result.keras_layers[-1].W.shape[0],)
    matched = result.matched()
    assert matched[0] == f"layer 0: keras 'emb' (Embedding; linear: none) = litert 'op 3' ({UNITS[name][0]}; " \
        "linear: none)", matched
    assert_equivalent(model, folder / f"{name}.tflite", x=ids(len(name)))  # given int ids


def test_the_dense_per_token_reads_the_stored_kernel_and_its_fused_relu(converted):
    """The ``FULLY_CONNECTED``'s ``(out, in)`` weight read as the Keras kernel ``(in, out)``, exactly, the bias from the
    ``ADD`` after the ``RESHAPE`` back, the ReLU fused into that ``ADD``."""
    from equivalence import compare_models

    model, folder = converted["full"]
    result = compare_models(model, folder / "full.tflite", x=ids(1))
    keras_tok, litert_tok = result.torch_layers[1], result.keras_layers[1]
    assert np.array_equal(litert_tok.W, keras_tok.W) and np.array_equal(litert_tok.b, keras_tok.b)
    assert (litert_tok.activation, litert_tok.activation_source) == ("relu", "fused in ADD op 14")
    assert (litert_tok.in_shape, litert_tok.out_shape) == ((LENGTH, DIM), (LENGTH, 5))


def test_float16_weights_are_read_as_float16_and_the_float16_epsilon_of_a_layer_norm_is_refused(converted):
    """Without a LayerNorm, the float16 file is judged with the weight rounding term of ``litert_fp16w``; the
    converter also stores a LayerNorm's epsilon as float16 on a sequence (0.001 as 0.0010004): refused at the norm."""
    from equivalence import ModelNotSupported, assert_equivalent

    model, folder = converted["no_norm"]
    result = assert_equivalent(model, folder / "no_norm_float16.tflite", max_examples=10)
    assert result.labels == ("keras", "litert_fp16w")
    assert result.keras_layers[0].kind == "tflite LESS+ADD+SELECT_V2+GATHER (float16 weights, DEQUANTIZE)"
    model, folder = converted["full"]
    with pytest.raises(ModelNotSupported, match=r"\(MEAN\) at position 23: a LayerNormalization whose epsilon the "
                                                r"file stores as float16 \(DEQUANTIZE"):
        assert_equivalent(model, folder / "full_float16.tflite", max_examples=3)


@pytest.mark.parametrize(("layer", "file", "element", "says"), [
    ("emb", "full", 8 * 4 + 1, "layer 0 (keras 'emb', litert 'op 3'): kernel: 1 / 160 elements differ"),
    ("tok", "full", 7, "layer 1 (keras 'tok', litert 'op 11'): kernel: 1 / 40 elements differ"),
    ("tok", "fixed_batch", 7, "layer 1 (keras 'tok', litert 'op 4'): kernel: 1 / 40 elements differ"),
    ("emb", "no_norm_float16", 8 * 11, "layer 0 (keras 'emb', litert_fp16w 'op 8'): kernel: 1 / 160 elements differ"),
])
def test_a_moved_table_row_or_token_kernel_element_in_the_tflite_is_named_at_its_layer(converted, tmp_path, layer,
                                                                                       file, element, says):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted[file.removesuffix("_float16")]
    stored = model.get_layer(layer).embeddings.numpy() if layer == "emb" else model.get_layer(layer).kernel.numpy().T
    dtype = np.float16 if file.endswith("float16") else np.float32
    wrong = moved(folder / f"{file}.tflite", stored, element, 1e-2, tmp_path / "wrong.tflite", dtype=dtype)
    message = compare_models(model, wrong, max_examples=3).message()
    assert says in message, message
    if layer == "tok":  # every token goes through the kernel (a row of the table only where its id is drawn)
        assert "first divergence, keras vs litert, layer 1" in message, message


def test_the_torch_twin_of_a_converted_keras_token_model_agrees_with_its_tflite(converted, torch_adapter):
    """The Keras weights ported into a torch ``nn.Embedding``, ``nn.Linear``, ``nn.LayerNorm``, ``x.mean(1)``,
    ``nn.Linear``: torch against the ``.tflite``, each side walked as its own form."""
    from equivalence import assert_equivalent, port_weights

    model, folder = converted["full"]
    twin = torch_token_model()
    port_weights(model, twin)
    result = assert_equivalent(twin, folder / "full.tflite", max_examples=10)
    assert result.labels == ("torch", "litert")
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]


def torch_token_model():
    import torch
    from torch import nn

    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.tok = nn.Embedding(ROWS, DIM), nn.Linear(DIM, 5)
            self.ln, self.fc = nn.LayerNorm(5, eps=1e-3), nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(self.ln(torch.relu(self.tok(self.emb(x)))).mean(1))

    return TokenNet().eval()


def _refused(case: str):
    import keras

    L = keras.layers
    return {
        "lstm": lambda: keras_token_model(dense=False, norm=False, batch=1,
                                          between=lambda h: L.LSTM(4, return_sequences=True)(h)),
        "causal_attention": lambda: keras_token_model(
            dense=False, norm=False, between=lambda h: L.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True)),
        "permute": lambda: keras_token_model(dense=False, norm=False, between=lambda h: L.Permute((2, 1))(h)),
        "conv1d": lambda: keras_token_model(dense=False, norm=False, between=lambda h: L.Conv1D(4, 3)(h)),
        "free_length": lambda: keras_token_model(norm=False, length=None),
        "mask_zero": lambda: keras_token_model(norm=False, mask_zero=True),
    }[case]()


@pytest.mark.parametrize(("case", "says"), [
    ("lstm", r"\(WHILE\) at position \d+: WHILE is a loop \(the converter writes a Keras LSTM, GRU or RNN as one\): "
             r"the suite does not read recurrent or attention layers from converted graphs yet"),
    ("causal_attention", r"\(SELECT_V2\) at position 18: a SELECT_V2 on the attention scores before the SOFTMAX "
                         r"\(use_causal_mask, an attention_mask\): masked attention is not judged"),
    ("permute", r"\(TRANSPOSE\) at position 4: a TRANSPOSE of the \(batch, 6, 8\) token sequence: the suite reads an "
                r"Embedding \(GATHER\), a dense layer token by token"),
    ("conv1d", r"\(EXPAND_DIMS\) at position 4: an EXPAND_DIMS of the \(batch, 6, 8\) token sequence: .*convolutions "
               r"over the tokens are not read"),
    ("free_length", r"\(GATHER\) at position 3: token ids of shape \[-1, -1\]: the suite judges ids \(batch, L\) with "
                    r"the sequence length L fixed"),
    ("mask_zero", r"\(NOT_EQUAL\) at position 0: a NOT_EQUAL of the token ids, but not the lookup of an Embedding .*"
                  r"a mask of the ids \(Keras' mask_zero=True, whose masked mean the converter writes\) is not read"),
])
def test_what_the_reader_does_not_read_on_a_sequence_is_refused_in_one_line_naming_the_op(converted, tmp_path, case,
                                                                                         says):
    from equivalence import ModelNotSupported
    from equivalence.frameworks.litert_graph import walk

    path = convert(_refused(case), tmp_path / f"{case}.tflite")
    with pytest.raises(ModelNotSupported, match=says) as refused:
        walk(path)
    assert "\n" not in str(refused.value)


# --- the command ----------------------------------------------------------------------------------

def test_compare_takes_a_keras_token_model_file_and_its_tflite(converted, capsys):
    _, folder = converted["full"]
    code = main(["compare", str(folder / "full.keras"), str(folder / "full.tflite"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 5 layers agree" in out, (out, err)
    assert f"= litert 'op 11' ({TENSORDOT}; relu: fused in ADD op 14)" in out, out


def test_compare_names_the_embedding_of_a_moved_row_and_refuses_a_free_length_in_one_line(converted, tmp_path,
                                                                                          capsys):
    from tests.own.test_converters import moved

    model, folder = converted["full"]
    wrong = moved(folder / "full.tflite", model.get_layer("emb").embeddings.numpy(), 19, 1e-2, tmp_path / "w.tflite")
    code = main(["compare", str(folder / "full.keras"), str(wrong), "--examples", "3"])
    out, err = capsys.readouterr()
    assert code == EXIT_DISAGREE and "layer 0 (keras 'emb', litert 'op 3'): kernel: 1 / 160 elements differ" in out, \
        (out, err)
    free = _refused("free_length")
    free.save(tmp_path / "free.keras")
    convert(free, tmp_path / "free.tflite")
    capsys.readouterr()  # the converter's own output
    code = main(["compare", str(tmp_path / "free.keras"), str(tmp_path / "free.tflite")])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert "(GATHER) at position 3: token ids of shape [-1, -1]: the suite judges ids (batch, L)" in err, err
