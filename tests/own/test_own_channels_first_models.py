"""A user's torch conv model and its channels-first Keras port (``data_format="channels_first"``,
``BatchNormalization(axis=1)``): ``x`` in torch's layout reaches the Keras model as given, a faithful port passes
layer by layer in every dtype with either Flatten, ``port_weights`` goes both ways, and the traps are named: a
Dense after a Flatten in the other order ("flatten order"), a weight changed, a BatchNormalization over another axis
than the channels, two data_formats in one model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.conv_models import ConvArch, ConvBlock, conv_archs, keras_conv_model, torch_conv_model
from tests.helpers import BFLOAT16, assert_ported_pairs_agree, compare_files_through_the_cli
from tests.own.pairs import agreeing
from tests.own.test_own_conv_models import CONV_EXAMPLES
from tests.own_models import conv_batchnorm2d

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip")

FIRST, LAST = "channels_first", "channels_last"
FLATTENS = [FIRST, LAST]
"""``Flatten(data_format=...)`` in a channels-first model: H,W,C order (the Dense's rows permuted from torch's), or
torch's own C,H,W order."""


@pytest.fixture(autouse=True)
def _frameworks(torch_adapter, keras_adapter):
    """Every test here needs both frameworks (skips with the reason otherwise)."""


CONV_DOES_NOT_RUN = ("keras_tf_float64_channels_first_conv_does_not_run", "keras_tf_channels_first_conv_needs_onednn",
                     "keras_tf_float16_channels_first_conv_needs_avx512_fp16")


def conv_does_not_run(dtype: str) -> str | None:
    """The known difference under which this Keras backend cannot compute a channels-first conv in ``dtype`` (the
    Keras walker refuses it, naming it: ``test_a_channels_first_conv_the_backend_cannot_compute_is_refused``), or
    None."""
    from equivalence.core.known_differences import KNOWN_DIFFERENCES

    return next((d.name for d in KNOWN_DIFFERENCES if d.name in CONV_DOES_NOT_RUN and dtype in d.dtypes
                 and d.active()), None)


def bias_along_width(arch: ConvArch) -> bool:
    """Whether a conv of ``arch`` has an output as wide as its filters where Keras adds a channels-first conv's bias
    along the width (known difference ``keras_tf_channels_first_conv_bias_along_width``: the walk refuses it,
    ``test_a_conv_whose_bias_keras_adds_along_the_width_is_refused``)."""
    from equivalence.core.spatial import output_size, same_padding
    from equivalence.frameworks.keras.channels_first import BIAS_ALONG_WIDTH
    from equivalence.frameworks.keras.known_differences import KERAS

    if not next(d for d in KERAS if d.name == BIAS_ALONG_WIDTH).active():
        return False
    size, widths = arch.size, []
    for b in arch.blocks:
        size = output_size(size, b.kernel, b.stride, same_padding(size, b.kernel, b.stride) if b.same else (0, 0))
        widths.append(size == b.filters)
        if b.pool is not None and not b.pool_same:
            size -= b.pool_size - 1
    return any(widths)


def needs_channels_first_convs(dtype: str = "float32") -> None:
    """Skip, naming the known difference, where Keras cannot compute a channels-first conv in ``dtype``."""
    entry = conv_does_not_run(dtype)
    if entry is not None:
        pytest.skip(f"{entry}: this Keras backend computes no channels-first conv in {dtype} (its refusal is tested)")


def _input(arch: ConvArch, batch: int = 3, scale: float = 2.0) -> np.ndarray:
    """Inputs in the torch layout (N, C, ...), as a user passes them to both models."""
    return np.random.default_rng(arch.seed).uniform(-scale, scale, (batch, *arch.torch_input))


def _ported(arch: ConvArch, flatten: str = LAST):
    from equivalence import port_weights

    t, k = torch_conv_model(arch), keras_conv_model(arch, FIRST, flatten)
    port_weights(t, k)
    return t, k


BLOCKS = (ConvBlock(4, 3, 1, True, "relu", "max", 2), ConvBlock(3, 2, 1, False, "tanh", "avg", 2))
ARCH = ConvArch(2, 7, 2, BLOCKS, 3, "float32", 5)


def _bn_pair(axis: int = 1, data_format: str = FIRST):
    """A torch Conv2d, BatchNorm2d, ReLU, Flatten, Linear and its Keras port in ``data_format``, BatchNormalization
    over ``axis``."""
    import keras

    t = conv_batchnorm2d(7)  # a 5-wide output of 4 filters: BIAS_ALONG_WIDTH needs 4 wide
    L = keras.layers
    shape = (3, 7, 7) if data_format == FIRST else (7, 7, 3)
    k = keras.Sequential([keras.Input(shape), L.Conv2D(4, 3, data_format=data_format),
                          L.BatchNormalization(axis=axis), L.ReLU(), L.Flatten(), L.Dense(2)])
    return t, k


# --- agreement ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flatten", FLATTENS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_ported_channels_first_conv_stack_agrees_layer_by_layer(dtype, flatten):
    """Conv1D/Conv2D, max and average pooling, Flatten and Dense, all channels-first: every layer within its kind's
    bound in both frameworks, each Keras layer's output the unit's read back in the torch layout."""
    needs_channels_first_convs(dtype)
    def check(arch: ConvArch, t, k, result) -> None:
        assert [u.layer_kind for u in result.torch_layers] == [u.layer_kind for u in result.keras_layers]
        torch_layout = [(u.out_shape[-1], *u.out_shape[:-1]) if len(u.out_shape) > 1 else u.out_shape
                        for u in result.keras_layers]
        assert [tuple(layer.output.shape[1:]) for layer in k.layers] == torch_layout
        assert sum(u.W.size + (0 if u.b is None else u.b.size) for u in result.keras_layers) == k.count_params()

    archs = conv_archs(dtype=dtype).filter(lambda arch: not bias_along_width(arch))
    assert_ported_pairs_agree(archs, ported=lambda arch: _ported(arch, flatten), inputs=_input,
                              max_examples=CONV_EXAMPLES, then=check)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_channels_first_conv_the_backend_cannot_compute_is_refused(dtype):
    """Where a known difference says Keras cannot compute a channels-first conv (TensorFlow's CPU in float64, or
    with oneDNN off), the walk refuses it in one line naming the layer and why; never a traceback mid-comparison."""
    from equivalence import ModelNotSupported, port_weights

    if conv_does_not_run(dtype) is None:
        pytest.skip(f"this Keras backend computes channels-first convs in {dtype}: they are compared")
    arch = replace(ARCH, dtype=dtype)
    t, k = torch_conv_model(arch), keras_conv_model(arch, FIRST)
    with pytest.raises(ModelNotSupported) as caught:
        port_weights(t, k)
    message = str(caught.value)
    assert f"keras layer {k.layers[0].name!r} (Conv2D) at position 0: data_format='channels_first' in {dtype}" \
        in message and "\n" not in message, message


@pytest.mark.parametrize("rank", [1, 2])
def test_a_conv_whose_bias_keras_adds_along_the_width_is_refused(rank):
    """A channels-first conv with a bias whose output is as wide as its filters (4 filters, 4 wide): Keras on
    TensorFlow adds the bias along the width; the walk refuses it in one line naming the layer and the known
    difference, before port_weights writes anything."""
    import keras

    from equivalence import ModelNotSupported, port_weights
    from equivalence.frameworks.keras.channels_first import BIAS_ALONG_WIDTH

    needs_channels_first_convs()
    arch = ConvArch(rank, 6, 3, (ConvBlock(4, 3, 1, False, "relu", None),), 2, "float32", 1)
    assert bias_along_width(arch) or keras.backend.backend() != "tensorflow"
    if not bias_along_width(arch):
        pytest.skip(f"Keras on {keras.backend.backend()} adds a channels-first conv's bias along the channels")
    t, k = torch_conv_model(arch), keras_conv_model(arch, FIRST)
    before = [w.numpy().copy() for w in k.weights]
    with pytest.raises(ModelNotSupported) as caught:
        port_weights(t, k)
    message = str(caught.value)
    assert f"keras layer {k.layers[0].name!r} (Conv{rank}D) at position 0" in message and BIAS_ALONG_WIDTH in message
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, k.weights))
    from equivalence.frameworks.keras.walk import walk

    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[rank]
    without_bias = keras.Sequential([keras.Input((3, *(6,) * rank)), conv(4, 3, use_bias=False, data_format=FIRST),
                                     keras.layers.Flatten(), keras.layers.Dense(2)])
    assert [u.layer_kind.name for u in walk(without_bias)] == ["conv", "flatten", "dense"]  # no bias: judged


def test_float64_channels_first_pooling_and_flatten_agree():
    """Without a conv, a float64 channels-first model runs on every backend: pooling, Flatten and Dense agree."""
    import keras
    from torch import nn

    from equivalence import port_weights

    L = keras.layers
    t = nn.Sequential(nn.MaxPool2d(2, stride=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)).double()
    k = keras.Sequential([keras.Input((3, 5, 5), dtype="float64"),
                          L.MaxPooling2D(2, strides=1, data_format=FIRST, dtype="float64"),
                          L.AveragePooling2D(2, data_format=FIRST, dtype="float64"), L.Flatten(dtype="float64"),
                          L.Dense(2, dtype="float64")])
    port_weights(t, k)
    result = agreeing(t, k, np.random.default_rng(0).uniform(-3, 3, (4, 3, 5, 5)))
    assert [u.dtype for u in result.keras_layers] == ["float64"] * 4


@pytest.mark.parametrize("flatten", FLATTENS)
def test_x_in_the_torch_layout_reaches_the_channels_first_model_as_given(flatten, monkeypatch):
    """The first Keras layer is given the user's ``x`` itself, not a transpose (what the Keras adapter runs it on);
    and the units, run one after the other on the canonical input, give exactly what the Keras model gives when
    called on ``x``."""
    needs_channels_first_convs()
    import keras

    from equivalence import compare_models
    from equivalence.frameworks.registry import get_adapter

    t, k = _ported(ARCH, flatten)
    x = _input(ARCH).astype(np.float32)
    seen = []
    adapter = get_adapter("keras")
    original = adapter.run
    monkeypatch.setattr(adapter, "run", lambda block, inputs: (block is k.layers[0] and seen.append(np.array(inputs)))
                        or original(block, inputs))
    result = compare_models(t, k, x=x)
    assert result.passed, result.message()
    assert any(a.shape == x.shape and np.array_equal(a, x) for a in seen), [a.shape for a in seen]
    h = np.moveaxis(x, 1, -1)
    for unit in result.keras_layers:
        h = unit.run(h)
    assert np.array_equal(h, keras.ops.convert_to_numpy(k(x)))


@pytest.mark.parametrize("flatten", FLATTENS)
def test_port_weights_goes_both_ways_with_either_flatten(flatten):
    """torch -> Keras -> a fresh torch model: every torch tensor back bit for bit; and the Keras model written from
    it agrees with torch."""
    needs_channels_first_convs()
    import torch

    from equivalence import port_weights

    t, k = _ported(ARCH, flatten)
    fresh = torch_conv_model(replace(ARCH, seed=ARCH.seed + 1))
    assert not all(torch.equal(a, b) for a, b in zip(t.state_dict().values(), fresh.state_dict().values()))
    port_weights(k, fresh)
    assert all(torch.equal(a, b) for a, b in zip(t.state_dict().values(), fresh.state_dict().values()))
    agreeing(fresh, k, _input(ARCH))


@pytest.mark.parametrize("form", ["functional", "subclass"])
def test_functional_and_subclassed_channels_first_ports_agree(form):
    needs_channels_first_convs()
    import keras

    from equivalence import assert_equivalent, port_weights

    L = keras.layers
    t = torch_conv_model(ARCH)
    layers = [L.Conv2D(4, 3, padding="same", activation="relu", data_format=FIRST),
              L.MaxPooling2D(2, strides=1, data_format=FIRST), L.Conv2D(3, 2, activation="tanh", data_format=FIRST),
              L.AveragePooling2D(2, strides=1, data_format=FIRST), L.Flatten(), L.Dense(3)]
    if form == "functional":
        inputs = h = keras.Input(ARCH.torch_input)
        for layer in layers:
            h = layer(h)
        k = keras.Model(inputs, h)
    else:
        class Net(keras.Model):
            def __init__(self) -> None:
                super().__init__()
                self.blocks = layers

            def call(self, x):
                for layer in self.blocks:
                    x = layer(x)
                return x

        k = Net()
        k(np.zeros((1, *ARCH.torch_input), dtype="float32"))  # built by a call, as a subclass is
    port_weights(t, k)
    result = assert_equivalent(t, k, max_examples=5)
    assert [u.layer_kind.name for u in result.keras_layers] == ["conv", "pool", "conv", "pool", "flatten", "dense"]


@pytest.mark.parametrize(("axis", "data_format"), [(1, FIRST), (-3, FIRST), (3, LAST)])
def test_a_batchnormalization_over_the_channel_axis_agrees_with_batchnorm2d(axis, data_format):
    """The channels' axis however it is written: 1 or -3 of a channels-first N, C, H, W tensor, -1 or 3 of a
    channels-last one."""
    if data_format == FIRST:
        needs_channels_first_convs()
    from equivalence import assert_equivalent, port_weights

    t, k = _bn_pair(axis, data_format)
    port_weights(t, k)
    result = assert_equivalent(t, k, max_examples=10)
    assert [u.layer_kind.name for u in result.keras_layers] == ["conv", "batchnorm", "flatten", "dense"]


def test_a_channels_first_global_average_pooling_computes_the_channels_last_one():
    """GlobalAveragePooling1D(data_format="channels_first") after a channels-first Conv1D is the mean over the
    steps, as the channels-last model's: the two Keras models' units, fed the same canonical inputs, agree layer by
    layer within the error model (torch has no mean over a conv's steps the suite walks, so no torch pair)."""
    needs_channels_first_convs()
    import keras

    from equivalence.core.embedding import SequenceMean
    from equivalence.frameworks.keras.walk import walk
    from equivalence.own import numeric_results

    L = keras.layers

    def model(data_format: str, shape: tuple[int, int]):
        return keras.Sequential([keras.Input(shape), L.Conv1D(3, 3, activation="tanh", data_format=data_format),
                                 L.GlobalAveragePooling1D(data_format=data_format), L.Dense(2)])

    last, first = model(LAST, (9, 2)), model(FIRST, (2, 9))
    first.set_weights(last.get_weights())
    a, b = walk(last), walk(first)
    assert [u.layer_kind for u in a] == [u.layer_kind for u in b] and isinstance(b[1].layer_kind, SequenceMean)
    x = np.random.default_rng(0).uniform(-3, 3, (4, 9, 2)).astype(np.float32)
    results = numeric_results(a, b, x, same=True)
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]
    assert np.array_equal(b[0].run(x), np.moveaxis(keras.ops.convert_to_numpy(first.layers[0](np.moveaxis(x, -1, 1))),
                                                   1, -1))


# --- the traps, named -----------------------------------------------------------------------------

@pytest.mark.parametrize(("flatten", "kernel"), [
    (FIRST, lambda weight, permutation: weight.T),  # torch's C,H,W rows where Keras' Flatten gives H,W,C
    (LAST, lambda weight, permutation: weight.T[permutation]),  # permuted where Flatten() keeps C,H,W
])
def test_a_dense_after_a_flatten_in_the_other_order_is_named_flatten_order(flatten, kernel):
    needs_channels_first_convs()
    from equivalence import compare_models
    from equivalence.core.spatial import flatten_permutation

    t, k = _ported(ARCH, flatten)
    flat_in = compare_models(t, k).keras_layers[-2].in_shape
    k.layers[-1].kernel.assign(kernel(t[-1].weight.detach().numpy(), flatten_permutation(flat_in)))
    result = compare_models(t, k)
    assert [d.what for d in result.differences] == ["flatten order"], result.message()
    assert f"layer 5 (torch '{len(t) - 1}', keras '{k.layers[-1].name}')" in result.differences[0].message
    assert "torch vs keras, layer 5" in result.message()


@pytest.mark.parametrize(("layer", "variable"), [(0, "kernel"), (2, "bias"), (5, "kernel")])
def test_a_weight_changed_after_the_port_is_named_at_its_layer(layer, variable):
    needs_channels_first_convs()
    from equivalence import compare_models

    t, k = _ported(ARCH, FIRST)
    unit = compare_models(t, k).keras_layers[layer]
    target = next(v for v in k.get_layer(unit.name).weights if v.name == variable)
    values = np.array(target.numpy())
    values.flat[1] += 0.5
    target.assign(values)
    result = compare_models(t, k)
    what = "kernel" if variable == "kernel" else "bias values"
    assert [(d.layer, d.what) for d in result.differences] == [(layer, what)], result.message()
    assert f"keras {unit.name!r}" in result.differences[0].message


@pytest.mark.parametrize(("axis", "data_format", "expected"), [
    (-1, FIRST, "over axis -1 of a channels_first tensor (its channels are axis 1)"),
    (1, LAST, "over axis 1 of a channels_last tensor (its channels are axis -1)"),
])
def test_a_batchnormalization_over_another_axis_than_the_channels_is_refused(axis, data_format, expected):
    needs_channels_first_convs()
    from equivalence import ModelNotSupported, compare_models

    t, k = _bn_pair(axis, data_format)
    with pytest.raises(ModelNotSupported, match="BatchNormalization") as caught:
        compare_models(t, k)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert f"keras layer {k.layers[1].name!r} (BatchNormalization) at position 1" in str(caught.value)


@pytest.mark.parametrize(("second", "found"), [
    (lambda L: L.MaxPooling2D(2, data_format=LAST), "MaxPooling2D"),
    (lambda L: L.Flatten(data_format=FIRST), "Flatten"),
])
def test_two_data_formats_in_one_model_are_refused_naming_the_layer(second, found):
    """A channels_first conv then a channels_last pool; a channels_last conv then Flatten(channels_first)."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    layer = second(L)
    first = FIRST if found == "MaxPooling2D" else LAST
    shape = (2, 6, 6) if first == FIRST else (6, 6, 2)
    k = keras.Sequential([keras.Input(shape), L.Conv2D(3, 3, data_format=first), layer, L.Flatten(), L.Dense(2)])
    t = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(48, 2))
    with pytest.raises(ModelNotSupported) as caught:
        compare_models(t, k)
    message = str(caught.value)
    assert f"keras layer {layer.name!r} ({found})" in message and "one data_format per model" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("layers", "refused", "expected"), [
    (lambda L: [keras_input((2, 6, 6)), L.Conv2D(3, 3, activation="softmax", data_format=FIRST), L.Flatten(),
                L.Dense(2)], "Conv2D", "softmax on a channels-first tensor"),
    (lambda L: [keras_input((5,), "int32"), L.Embedding(7, 4), L.Conv1D(3, 2, data_format=FIRST), L.Flatten(),
                L.Dense(2)], "Embedding", "a sequence layer (embedding) in a channels_first model"),
])
def test_what_a_channels_first_model_cannot_hold_is_refused_naming_the_layer(layers, refused, expected):
    """A softmax on a channels-first tensor (Keras takes it over the width); a sequence layer, whose batch-first
    tensors are no N, C, ... tensor."""
    import keras

    from equivalence import ModelNotSupported
    from equivalence.frameworks.keras.walk import walk

    needs_channels_first_convs()
    model = keras.Sequential(layers(keras.layers))
    with pytest.raises(ModelNotSupported) as caught:
        walk(model)
    message = str(caught.value)
    assert f"({refused})" in message and expected in message and "\n" not in message, message


def keras_input(shape: tuple[int, ...], dtype: str = "float32"):
    import keras

    return keras.Input(shape, dtype=dtype)


CONV_FACTORY = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2))
'''


def _cf_port():
    import keras

    L = keras.layers
    return keras.Sequential([keras.Input((2, 4, 4)), L.Conv2D(3, 3, padding="same", activation="relu",
                                                              data_format=FIRST),
                             L.MaxPooling2D(2, data_format=FIRST), L.Flatten(data_format=FIRST), L.Dense(2)])


def test_equivalence_compare_takes_a_channels_first_keras_file_and_torch_layout_inputs(tmp_path, capsys,
                                                                                         monkeypatch):
    needs_channels_first_convs()
    from equivalence.cli import EXIT_OK

    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-2, 2, (5, 2, 4, 4)).astype(np.float32))
    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=CONV_FACTORY, module="cf_nets",
                                              port=_cf_port(), args=["--input", str(x)])
    assert code == EXIT_OK, out
    assert "all 4 layers agree over 1 input batch" in out


def test_equivalence_compare_exits_1_naming_the_flatten_order_of_a_channels_first_file(tmp_path, capsys,
                                                                                         monkeypatch):
    needs_channels_first_convs()
    from equivalence.cli import EXIT_DISAGREE

    def forget_the_permutation(torch_model, port) -> None:
        port.layers[-1].kernel.assign(torch_model[-1].weight.detach().numpy().T)

    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=CONV_FACTORY,
                                              module="cf_nets_wrong", port=_cf_port(),
                                              after_port=forget_the_permutation)
    assert code == EXIT_DISAGREE, out
    assert "layer 3 (torch '4', keras 'dense" in out and "flatten order" in out
