"""A Keras BatchNormalization ``TFLiteConverter`` folded (issue 26): into the ``CONV_2D`` or ``FULLY_CONNECTED``
before it (no activation between), or, after a fused ReLU or a pool, into a ``MUL`` and an ``ADD`` of per-channel
constants. The reader reads the ``MUL`` and ``ADD`` as one ``ChannelAffine`` unit and marks a layer whose constants
are named after the norm; the comparison folds the Keras layers exactly, in float64 (``equivalence.own_folded``),
compares the folded parameters within the fold's rounding and the values within the folded kind's bound. A moved
statistic is named at its layer. A norm before a ``Dense`` is folded into it, and matched so; between two ``Dense``
layers with no activation the first one's bias goes into the second too: refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.core.folded import NAMED_FOLD, ChannelAffine, FoldedConv, FoldedDense
from tests.helpers import keras3_only
from tests.own.test_litert_spatial_models import convert, converted_and_saved

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow

AFFINE = "the BatchNorm's statistics folded into a scale and a shift by the converter"


def trained(model, seed: int, *, mean: float = 2.0, var: float = 3.0):
    """``model`` with weights ``U(-1, 1)`` and each BatchNormalization's gamma ``U(-2, 2)``, beta and moving mean
    ``U(-mean, mean)``, moving variance ``U(1e-3, var)``: what a trained model holds, not the initial identity."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(-2, 2, c), rng.uniform(-mean, mean, c), rng.uniform(-mean, mean, c),
                               rng.uniform(1e-3, var, c)])
        elif layer.weights:
            layer.set_weights([rng.uniform(-1, 1, w.shape) for w in layer.get_weights()])
    return model


def folded_net():
    """Every place the converter folds a norm: after a conv (into it), after a ReLU conv and after a pool (a
    ``MUL`` and an ``ADD``), after a Dense (into it), then a ReLU."""
    import keras

    L = keras.layers
    return trained(keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", name="conv"), L.BatchNormalization(name="bn_conv"),
        L.Conv2D(5, 3, activation="relu", name="conv_relu"), L.BatchNormalization(name="bn_relu"),
        L.MaxPooling2D(2, name="pool"), L.BatchNormalization(name="bn_pool"), L.Flatten(name="flatten"),
        L.Dense(6, name="dense"), L.BatchNormalization(name="bn_dense"), L.ReLU(name="relu"),
        L.Dense(2, name="out")]), 0)


KINDS = ["tflite CONV_2D, the BatchNorm folded into the conv by the converter", "tflite CONV_2D",
         f"tflite MUL+ADD, {AFFINE}", "tflite MAX_POOL_2D", f"tflite MUL+ADD, {AFFINE}", "tflite RESHAPE",
         "tflite FULLY_CONNECTED, the BatchNorm folded into the dense layer by the converter",
         "tflite FULLY_CONNECTED"]
"""What the reader says each unit of the converted ``folded_net`` is, once matched."""


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("litert_folded")
    model = folded_net()
    converted_and_saved(model, folder, "folded")
    return model, folder / "folded.tflite"


def test_every_folded_norm_is_matched_with_its_keras_layers_and_the_report_says_so(converted):
    from equivalence import assert_equivalent

    model, path = converted
    result = assert_equivalent(model, path, max_examples=20)
    assert [u.kind for u in result.keras_layers] == KINDS
    assert [type(u.layer_kind) for u in result.torch_layers] == [type(u.layer_kind) for u in result.keras_layers]
    assert [type(u.layer_kind).__name__ for u in result.keras_layers if u.W.size] == \
        ["FoldedConv", "Conv", "ChannelAffine", "ChannelAffine", "FoldedDense", "Dense"]
    matched = result.matched()
    assert matched[0] == ("layer 0: keras 'conv+bn_conv' (Conv2D+BatchNormalization; linear: none) = litert 'op 0' "
                          f"({KINDS[0]}; linear: none)"), matched[0]
    assert matched[2] == f"layer 2: keras 'bn_relu' (BatchNormalization; linear: none) = litert 'op 2' ({KINDS[2]}; " \
        "linear: none)", matched[2]
    assert matched[6].startswith("layer 6: keras 'dense+bn_dense' (Dense+BatchNormalization; relu: ReLU 'relu') = "
                                 "litert 'op ") and "relu: fused in FULLY_CONNECTED op" in matched[6], matched[6]


def test_the_reader_alone_reads_the_folded_layers_marking_those_named_after_a_norm(converted):
    from equivalence.frameworks.litert_graph import walk

    units = walk(converted[1])
    assert [u.kind for u in units][:3] == [f"tflite CONV_2D, {NAMED_FOLD}", "tflite CONV_2D", "tflite MUL+ADD"]
    assert units[2].layer_kind == units[4].layer_kind == ChannelAffine(5)
    assert units[6].kind == f"tflite FULLY_CONNECTED, {NAMED_FOLD}"


@pytest.mark.parametrize(("layer", "at", "kind"), [("bn_conv", 0, FoldedConv), ("bn_relu", 2, ChannelAffine),
                                                   ("bn_dense", 6, FoldedDense)])
@pytest.mark.parametrize("statistic", ["moving_mean", "moving_variance", "gamma", "beta"])
def test_a_statistic_moved_after_the_conversion_is_named_at_its_layer_and_far_outside(converted, layer, at, kind,
                                                                                      statistic):
    """The Keras model's norm changed by 10% in one channel after the conversion: its fold differs from the file's,
    named as a folded parameter at that layer, and the pair's values there are beyond the folded bound (how far
    depends on how much that channel's term weighs in the layer's magnitude)."""
    import keras

    from equivalence import compare_models

    model, path = converted
    changed = keras.models.clone_model(model)
    changed.set_weights(model.get_weights())
    variable = getattr(changed.get_layer(layer), statistic)
    value = variable.numpy()
    value[1] *= 1.1
    variable.assign(value)
    result = compare_models(changed, path, x=np.random.default_rng(0).uniform(-1, 1, (8, 3, 8, 8)))  # torch layout
    assert not result.passed
    assert isinstance(result.keras_layers[at].layer_kind, kind)
    off = [d for d in result.differences if d.what not in ("kernel", "bias values")]
    assert off == [], result.message()
    assert {d.layer for d in result.differences} == {at}, result.message()
    assert "differ from the keras layers folded (beyond the fold's rounding, 8 eps of float32 of the terms each " \
           "sums)" in result.message(), result.message()
    cross = max(r.ratio for r in result.results if r.layer == at and r.pair == ("keras", "litert"))
    assert cross > 10, cross  # measured 14.5 (beta after the Dense) to 15000 (gamma) over these twelve


def test_a_moved_element_of_the_file_s_folded_filter_is_named_at_its_op(converted, tmp_path):
    from equivalence import compare_models
    from equivalence.frameworks.litert_graph import walk
    from tests.own.test_converters import moved

    model, path = converted
    stored = walk(path)[0].native  # the folded filter as the file holds it, (out, kh, kw, in)
    wrong = moved(path, stored, 7, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 0 (keras 'conv+bn_conv', litert 'op 0'): kernel: 1 / 108 elements differ from the keras layers " \
           "folded" in message, message


def test_folded_parameters_stored_as_float16_are_compared_within_the_fold_and_the_rounding_to_float16(
        converted, tmp_path):
    """Float16 weight quantisation stores the folded filter, scale and shift as float16 (``litert_fp16w``): each is
    allowed the fold's float32 rounding, then its rounding to float16; a moved statistic is still named."""
    import keras
    import tensorflow as tf

    from equivalence import assert_equivalent, compare_models
    from equivalence.core.folded import fold_tolerance, shift
    from equivalence.core.kinds import LayerWeights

    model, _ = converted
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations, converter.target_spec.supported_types = [tf.lite.Optimize.DEFAULT], [tf.float16]
    path = tmp_path / "folded_float16.tflite"
    path.write_bytes(converter.convert())
    result = assert_equivalent(model, path, max_examples=10)
    assert [u.kind.replace(" (float16 weights, DEQUANTIZE)", "") for u in result.keras_layers] == KINDS
    for exact, stored in zip(result.torch_layers, result.keras_layers):
        if isinstance(stored.layer_kind, (FoldedConv, FoldedDense, ChannelAffine)):
            allowed = fold_tolerance(LayerWeights(exact.W, exact.b), "float32", "float16")
            assert np.all(np.abs(stored.W - exact.W) <= allowed.W), stored.kind  # measured 0.97 of it at most
            assert np.all(np.abs(stored.b - shift(exact.b)) <= allowed.b), stored.kind
            assert not np.all(np.abs(stored.W - exact.W) <= fold_tolerance(LayerWeights(exact.W, exact.b),
                                                                          "float32").W), "rounded to float16"
    changed = keras.models.clone_model(model)
    changed.set_weights(model.get_weights())
    variable = changed.get_layer("bn_dense").moving_variance
    variable.assign(variable.numpy() * np.array([1, 1.1, 1, 1, 1, 1], dtype="float32"))
    message = compare_models(changed, path, max_examples=3).message()
    assert "layer 6 (keras 'dense+bn_dense', litert_fp16w 'op " in message and "kernel: " in message, message
    assert "then rounded to the float16 the file stores" in message, message


def _drawn(seed: int):
    """A conv or dense layer (with or without bias) and a BatchNormalization folded into it, or one after a ReLU
    conv or a pool (a ``MUL`` and an ``ADD``); means and betas up to 100, variances from 1e-3."""
    import keras

    L = keras.layers
    rng = np.random.default_rng(seed)
    c_in, c_out, kernel = (int(v) for v in (rng.integers(1, 5), rng.integers(1, 6), rng.integers(1, 4)))
    bias = bool(seed % 4 < 2)
    act = ["relu", "tanh", None][seed % 3]
    head = [keras.Input((6, 6, c_in))]
    body = [
        [L.Conv2D(c_out, kernel, padding="same" if seed % 2 else "valid", use_bias=bias), L.BatchNormalization(),
         L.Activation(act or "linear"), L.Flatten()],
        [L.Conv2D(c_out, kernel, activation="relu", use_bias=bias), L.MaxPooling2D(2, padding="same"),
         L.BatchNormalization(), L.Flatten(), L.Dense(3)],
        [L.Flatten(), L.Dense(c_out * 2, use_bias=bias), L.BatchNormalization(), L.Activation(act or "linear")],
    ][seed % 3]
    return trained(keras.Sequential(head + body), seed, mean=float(rng.choice([0.1, 10, 100])),
                   var=float(rng.choice([1e-3, 1, 100])))


@pytest.mark.parametrize("seed", range(9))
def test_drawn_folded_norms_are_within_the_bound_and_the_folded_parameters_within_the_fold_s_rounding(
        keras_adapter, tmp_path, seed):
    from equivalence import compare_models
    from equivalence.core.folded import fold_tolerance, shift
    from equivalence.core.kinds import LayerWeights

    model = _drawn(seed)
    converted_and_saved(model, tmp_path, "drawn")
    result = compare_models(model, tmp_path / "drawn.tflite", max_examples=15)
    assert result.passed, result.message()
    assert result.worst_ratio < 0.5, result.worst_ratio  # measured 0.24 over 30 such nets (FoldedDense, litert)
    folded = [(t, k) for t, k in zip(result.torch_layers, result.keras_layers)
              if isinstance(k.layer_kind, (FoldedConv, FoldedDense, ChannelAffine))]
    assert len(folded) == 1, [k.kind for k in result.keras_layers]
    exact, stored = folded[0]
    allowed = fold_tolerance(LayerWeights(exact.W, exact.b), "float32")
    assert np.all(np.abs(stored.W - exact.W) <= allowed.W / 4)  # measured at most 0.19 of it
    if stored.b is not None:
        assert np.all(np.abs(stored.b - shift(exact.b)) <= allowed.b / 4)


NEXT = "the BatchNorm before it folded into the dense layer by the converter"


@pytest.mark.parametrize(("layers", "at"), [("norm, dense", 0), ("dense relu, norm, dense", 1),
                                            ("norm, dense tanh, dense", 0)])
def test_a_norm_folded_into_the_dense_after_it_is_matched_and_a_moved_statistic_named(keras_adapter, tmp_path,
                                                                                      layers, at):
    """``TFLiteConverter`` folds a BatchNormalization before a Dense into that Dense (``s[:, None] * W``,
    ``b + (beta - mean * s) @ W``): matched with the model's norm and Dense folded exactly, the shift's terms
    ``-mean_i s_i W_i`` and ``beta_i W_i`` giving the bound the norm's own magnitude."""
    import keras

    from equivalence import assert_equivalent, compare_models

    L = keras.layers
    made = {"norm": lambda: L.BatchNormalization(name="norm"), "dense": lambda: L.Dense(4),
            "dense relu": lambda: L.Dense(4, activation="relu"), "dense tanh": lambda: L.Dense(4, activation="tanh")}
    model = trained(keras.Sequential([keras.Input((5,)), *(made[name]() for name in layers.split(", "))]), 1)
    converted_and_saved(model, tmp_path, "before")
    result = assert_equivalent(model, tmp_path / "before.tflite", max_examples=20)
    assert result.keras_layers[at].kind == f"tflite FULLY_CONNECTED, {NEXT}", [k.kind for k in result.keras_layers]
    assert result.keras_layers[at].layer_kind == FoldedDense(4 if at else 5, 4, norm_first=True)
    assert result.worst_ratio < 0.5, result.worst_ratio
    mean = model.get_layer("norm").moving_mean
    mean.assign(mean.numpy() + np.eye(1, mean.shape[0], 2, dtype="float32")[0] / 10)  # one input's mean, by 0.1
    message = compare_models(model, tmp_path / "before.tflite", max_examples=5).message()
    assert f"layer {at} (keras 'norm+" in message and "bias: " in message and "differ from the keras layers " \
        "folded" in message, message


def test_a_norm_between_two_dense_layers_is_refused_in_one_line_at_that_op(keras_adapter, tmp_path):
    """No activation between: the converter folds the norm and the first Dense's bias into the second Dense (the
    first keeps no bias), which no layer-by-layer match can follow."""
    import keras

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    model = trained(keras.Sequential([keras.Input((5,)), L.Dense(4), L.BatchNormalization(), L.Dense(4)]), 1)
    converted_and_saved(model, tmp_path, "between")
    with pytest.raises(ModelNotSupported, match=r"litert layer 'op 1' \(tflite FULLY_CONNECTED\) at position 1: "
                                                r"holds a BatchNormalization the converter folded into its weights "
                                                r".*folds the norm and the first Dense's bias into the second") as no:
        compare_models(model, tmp_path / "between.tflite")
    assert "\n" not in str(no.value)


def test_a_norm_at_its_initial_parameters_folded_without_a_name_is_matched_all_the_same(keras_adapter, tmp_path):
    """``TFLiteConverter`` names the bias of a conv it folded an initial norm into ``arith.constant``: nothing says a
    norm is in it, and the pair is matched by its layers alone."""
    import keras

    from equivalence import assert_equivalent
    from equivalence.frameworks.litert_graph import walk

    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(), L.Flatten()])
    path = convert(model, tmp_path / "initial.tflite")
    assert walk(path)[0].kind == "tflite CONV_2D"
    result = assert_equivalent(model, path, max_examples=5)
    assert isinstance(result.keras_layers[0].layer_kind, FoldedConv)


def test_compare_judges_a_keras_file_and_its_tflite_with_folded_norms_and_refuses_a_norm_between_two_dense(
        converted, tmp_path, capsys):
    import keras

    from equivalence.cli import EXIT_OK, main

    _, path = converted
    code = main(["compare", str(path.with_suffix(".keras")), str(path), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and f"all {len(KINDS)} layers agree" in out, (out, err)
    model = trained(keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                                      keras.layers.Dense(3)]), 2)
    converted_and_saved(model, tmp_path, "before")
    code = main(["compare", str(tmp_path / "before.keras"), str(tmp_path / "before.tflite")])
    out, err = capsys.readouterr()
    assert code == 2 and "holds a BatchNormalization the converter folded into its weights" in err, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
