"""Self-attention in a LiteRT flatbuffer (issue 26, "any pair of model files"): what ``TFLiteConverter`` writes from a
Keras 3 ``Input((L,), dtype="int32") -> Embedding -> MultiHeadAttention(heads, key_dim)(h, h) ->
GlobalAveragePooling1D -> Dense`` (three ``FULLY_CONNECTED`` projections with ``RESHAPE`` and bias ``ADD``,
``TRANSPOSE``s, ``BATCH_MATMUL``, a scale ``MUL``, ``SOFTMAX``, ``BATCH_MATMUL``, ``RESHAPE``/``TRANSPOSE`` and the
output ``FULLY_CONNECTED``) is read as one ``SelfAttention`` unit whose weights are the Keras walker's, run on the
interpreter, and judged layer by layer; a moved query, key, value or output kernel element in the file is named at the
attention; a mask or cross-attention is refused in one line naming the op."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as
from tests.own.test_litert_1d_and_norm_models import LAYER_NORM
from tests.own.test_litert_sequence_models import DIM, LENGTH, ids, keras_token_model
from tests.own.test_litert_spatial_models import convert, converted_and_saved

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow

BUILDS = {"heads1": (1, 8, True), "heads2": (2, 4, True), "heads4_key3": (4, 3, True), "heads2_no_bias": (2, 4, False),
          "heads4_key5_no_bias": (4, 5, False)}
"""``(heads, key_dim, use_bias)``: key_dim = E / heads, and other (the projections' width heads * key_dim != E)."""
EMBEDDING = "tflite LESS+ADD+SELECT_V2+GATHER"
OPS = {"heads1": 18, "heads2": 21, "heads4_key3": 21, "heads2_no_bias": 18, "heads4_key5_no_bias": 18}
"""The ops of the attention's region: with biases, the three bias ``ADD``s of the query, key and value after their
``RESHAPE``s (with one head the converter folds each into its ``FULLY_CONNECTED``'s bias input)."""


def attention_model(heads: int, key_dim: int, bias: bool, call=None):
    """``Embedding -> MultiHeadAttention(h, h) (or call(mha, h)) -> GlobalAveragePooling1D -> Dense``, its weights
    drawn (so no bias is zero: the converter drops an all-zero one)."""
    import keras

    def attend(h):
        mha = keras.layers.MultiHeadAttention(heads, key_dim, use_bias=bias, name="mha")
        return mha(h, h) if call is None else call(mha, h)

    return keras_token_model(dense=False, norm=False, between=attend)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    """Each model saved (``name.keras``) and converted (``name.tflite``): ``{name: (model, folder)}``."""
    folder = tmp_path_factory.mktemp("litert_attention")
    out = {}
    for name, build in BUILDS.items():
        model = attention_model(*build)
        converted_and_saved(model, folder, name)
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_keras_attention_model_and_its_tflite_agree_layer_by_layer_with_the_keras_walker_s_kinds(converted, name):
    model, folder = converted[name]
    heads, key_dim, bias = BUILDS[name]
    result = read_as(model, folder / f"{name}.tflite",
                     [EMBEDDING, f"tflite self-attention ({OPS[name]} ops)", "tflite MEAN", "tflite FULLY_CONNECTED"])
    keras_unit, litert_unit = result.torch_layers[1], result.keras_layers[1]
    kind = litert_unit.layer_kind
    assert (kind.embed_dim, kind.heads, kind.head_dim, kind.length) == (DIM, heads, key_dim, LENGTH)
    assert (litert_unit.in_shape, litert_unit.out_shape) == ((LENGTH, DIM), (LENGTH, DIM))
    assert np.array_equal(litert_unit.W, keras_unit.W)  # the stored kernels, exactly, in the canonical layout
    assert (litert_unit.b is None) == (not bias) and (not bias or np.array_equal(litert_unit.b, keras_unit.b))
    assert result.matched()[1] == f"layer 1: keras 'mha' (MultiHeadAttention; linear: none) = litert 'op 4' " \
        f"(tflite self-attention ({OPS[name]} ops); linear: none)"


def _stored(model, part: str) -> np.ndarray:
    """A projection's kernel as the converter stores it: ``(out, in)``."""
    kernel = getattr(model.get_layer("mha"), f"_{part}_dense").kernel.numpy()
    return kernel.reshape(-1, kernel.shape[-1]).T if part == "output" else kernel.reshape(kernel.shape[0], -1).T


@pytest.mark.parametrize("part", ["query", "key", "value", "output"])
def test_a_moved_projection_element_in_the_tflite_is_named_at_the_attention(converted, tmp_path, part):
    """Element 5 of the stored ``(out, in)`` matrix moved: the attention's kernel differs at one canonical index, the
    one that element is in the Keras layout (projections ``(E, heads, d)``, the output ``(heads, d, E)``)."""
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted["heads4_key3"]
    heads, key_dim, _ = BUILDS["heads4_key3"]
    width, size = heads * key_dim, DIM * heads * key_dim
    wrong = moved(folder / "heads4_key3.tflite", _stored(model, part), 5, 1e-2, tmp_path / "wrong.tflite")
    row, column = divmod(5, DIM if part != "output" else width)
    index = ["query", "key", "value", "output"].index(part) * size + (
        column * width + row if part != "output" else column * DIM + row)
    message = compare_models(model, wrong, max_examples=3).message()
    assert f"layer 1 (keras 'mha', litert 'op 4'): kernel: 1 / {4 * size} elements differ from the keras kernel; " \
           f"greatest abs diff 0.01 at index ({index},)" in message, message


@pytest.mark.parametrize(("case", "says"), [
    ("causal", r"'\S+/SelectV2' \(SELECT_V2\) at position 18: a SELECT_V2 on the attention scores before the SOFTMAX "
               r"\(use_causal_mask, an attention_mask\): masked attention is not judged"),
    ("mask", r"\(SELECT_V2\) at position \d+: a SELECT_V2 on the attention scores before the SOFTMAX"),
    ("cross", r"'\S+/key[_\d]*/MatMul1' \(FULLY_CONNECTED\) at position \d+: projects the keys from another tensor "
              r"than the queries': cross-attention is not judged"),
])
def test_a_masked_or_cross_attention_is_refused_in_one_line_naming_the_op(keras_adapter, tmp_path, case, says):
    import keras

    from equivalence import ModelNotSupported
    from equivalence.frameworks.litert_graph import walk

    calls = {"causal": lambda mha, h: mha(h, h, use_causal_mask=True),
             "mask": lambda mha, h: mha(h, h, attention_mask=keras.ops.ones((1, LENGTH, LENGTH), "bool") &
                                        keras.ops.expand_dims(keras.ops.any(keras.ops.not_equal(h, 0.0), -1), 1)),
             "cross": lambda mha, h: mha(h, keras.layers.Dense(DIM)(h))}
    path = convert(attention_model(2, 4, True, calls[case]), tmp_path / f"{case}.tflite")
    with pytest.raises(ModelNotSupported, match=says) as refused:
        walk(path)
    assert "\n" not in str(refused.value)


def test_compare_takes_a_keras_attention_model_file_and_its_tflite(converted, capsys):
    _, folder = converted["heads2"]
    code = main(["compare", str(folder / "heads2.keras"), str(folder / "heads2.tflite"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 4 layers agree" in out, (out, err)
    assert "(tflite self-attention (21 ops); linear: none)" in out, out


def test_the_unit_runs_any_batch_the_file_leaves_free(converted):
    """The converter writes every ``RESHAPE`` target with -1 for the batch: the unit runs a batch of 1 and of 9."""
    from equivalence import assert_equivalent

    model, folder = converted["heads2"]
    for batch in (1, 9):
        assert_equivalent(model, folder / "heads2.tflite", x=ids(batch, batch))


def test_float16_weights_and_a_fixed_batch_are_read(keras_adapter, tmp_path):
    """With float16 weights each projection reads a ``DEQUANTIZE`` output: the unit carries those ops and is judged
    with ``litert_fp16w``'s weight rounding term; with the input's batch fixed at 2 the converter writes fewer layout
    ops (16), read the same, the unit run on other batches."""
    from equivalence import assert_equivalent
    from tests.own.test_litert_sequence_models import float16_weights

    model = attention_model(2, 4, True)
    result = assert_equivalent(model, float16_weights(model, tmp_path / "float16.tflite"), max_examples=10)
    assert result.labels == ("keras", "litert_fp16w")
    assert result.keras_layers[1].kind == "tflite self-attention (21 ops) (float16 weights, DEQUANTIZE)"

    def attend(h):
        import keras

        return keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)

    fixed = keras_token_model(dense=False, norm=False, between=attend, batch=2)
    path = convert(fixed, tmp_path / "fixed.tflite")
    result = assert_equivalent(fixed, path, x=ids(4, 5))
    assert result.keras_layers[1].kind == "tflite self-attention (16 ops)"


def residual_attention(mha, h):
    """``h + mha(h, h)``: the attention's input feeds its region and the Add after it."""
    import keras

    return keras.layers.Add(name="add")([h, mha(h, h)])


def test_a_residual_attention_and_its_tflite_agree_with_the_keras_walker_s_residual(keras_adapter, tmp_path):
    """``h + att(h)``: the region's last op stands for the branch through it, so the ADD is the Keras walker's
    Residual unit, its skip the Embedding's output."""
    from equivalence import compare_models

    model = attention_model(2, 4, True, call=residual_attention)
    converted_and_saved(model, tmp_path, "residual")
    result = compare_models(model, tmp_path / "residual.tflite", x=ids(7))
    assert result.passed, result.message()
    kinds = [type(u.layer_kind).__name__ for u in result.keras_layers]
    assert kinds == [type(u.layer_kind).__name__ for u in result.torch_layers] == [
        "Embedding", "SelfAttention", "Residual", "SequenceMean", "Dense"], kinds
    assert result.keras_layers[2].layer_kind.skip == result.torch_layers[2].layer_kind.skip == 0


def post_norm_block(mha, h):
    """``LayerNorm(h + mha(h, h))``, then ``LayerNorm(h + Dense(h))``: a post-norm transformer block."""
    import keras

    L = keras.layers
    h = L.LayerNormalization(name="ln1")(L.Add(name="add1")([h, mha(h, h)]))
    return L.LayerNormalization(name="ln2")(L.Add(name="add2")([h, L.Dense(DIM, activation="relu", name="ff")(h)]))


NO_BETA = "tflite MEAN+NEG+SQUARED_DIFFERENCE+MEAN+ADD+RSQRT+MUL+MUL+MUL+ADD"
"""A LayerNorm whose beta is zeros (a Keras norm as built): the converter drops its ``ADD`` and writes the rest in
another order, a ``SHAPE`` of its output (the next Dense's Tensordot) after it."""


def post_norm_model(beta: str):
    """The post-norm block between an Embedding and a mean, its weights drawn; ``beta`` "zeros": the norms' set so."""
    model = attention_model(2, 4, True, call=post_norm_block)
    if beta == "zeros":
        for name in ("ln1", "ln2"):
            model.get_layer(name).beta.assign(np.zeros(DIM, "float32"))
    return model


@pytest.mark.parametrize(("beta", "norm"), [("drawn", LAYER_NORM), ("zeros", NO_BETA)])
def test_a_post_norm_transformer_block_and_its_tflite_agree_with_the_keras_walker_s_nine_units(keras_adapter, tmp_path,
                                                                                                beta, norm):
    """Both residual Adds (the attention's region standing for one branch of its fork) and both norms, found by
    their dataflow among the ops the converter puts between them, read as the Keras walker's nine units."""
    from equivalence import compare_models

    model = post_norm_model(beta)
    converted_and_saved(model, tmp_path, "block")
    result = compare_models(model, tmp_path / "block.tflite", x=ids(3))
    assert result.passed, result.message()
    kinds = [type(u.layer_kind).__name__ for u in result.keras_layers]
    assert kinds == [type(u.layer_kind).__name__ for u in result.torch_layers] == [
        "Embedding", "SelfAttention", "Residual", "LayerNorm", "Dense", "Residual", "LayerNorm", "SequenceMean",
        "Dense"], kinds
    assert [u.layer_kind.skip for u in result.keras_layers if type(u.layer_kind).__name__ == "Residual"] == [0, 3]
    assert [result.keras_layers[i].kind for i in (3, 6)] == [norm, norm]


def test_a_moved_gamma_of_a_norm_without_beta_in_the_tflite_is_named_at_its_layer(keras_adapter, tmp_path):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model = post_norm_model("zeros")
    converted_and_saved(model, tmp_path, "block")
    wrong = moved(tmp_path / "block.tflite", model.get_layer("ln2").gamma.numpy(), 5, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, x=ids(3)).message()
    assert "layer 6 (keras 'ln2', litert 'op 48'): kernel: 1 / 16 elements differ" in message, message
    assert "first divergence, keras vs litert, layer 6" in message, message
