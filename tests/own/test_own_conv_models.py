"""A user's conv model and its Keras port: a faithful port passes layer by layer in every dtype, and each trap
(kernel layout, flatten order, "same" padding, count_include_pad) fails naming the layer and the cause."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

from tests.conv_models import ConvArch, ConvBlock, conv_archs, keras_conv_model, torch_conv_model
from tests.helpers import BFLOAT16, assert_ported_pairs_agree, compare_files_through_the_cli
from tests.own.pairs import named_differences

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip")

CONV_EXAMPLES = max(5, settings.default.max_examples // 10)
"""Architectures per dtype: each builds two models (~0.3 s)."""


@pytest.fixture(autouse=True)
def _frameworks(torch_adapter, keras_adapter):
    """Every test here needs both frameworks (skips with the reason otherwise)."""


def _input(arch: ConvArch, batch: int = 3, scale: float = 2.0) -> np.ndarray:
    """Inputs in the torch layout (N, C, ...), as a user passes them."""
    return np.random.default_rng(arch.seed).uniform(-scale, scale, (batch, *arch.torch_input))


def _ported(arch: ConvArch):
    from equivalence import port_weights

    t, k = torch_conv_model(arch), keras_conv_model(arch)
    port_weights(t, k)
    return t, k


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_ported_conv_stack_agrees_layer_by_layer(dtype):
    """Conv1D/Conv2D (valid and symmetric same padding, strides 1-2), max and average pooling, Flatten and Dense:
    every layer within its kind's bound in both frameworks, with the shapes and parameter counts of both."""
    def check(arch: ConvArch, t, k, result) -> None:
        assert [type(u.layer_kind) for u in result.torch_layers] == [type(u.layer_kind) for u in result.keras_layers]
        assert [u.out_shape for u in result.torch_layers] == [u.out_shape for u in result.keras_layers]
        assert result.torch_layers[-1].out_shape == (arch.units,)
        assert [tuple(s) for s in (layer.output.shape[1:] for layer in k.layers)] == \
            [u.out_shape for u in result.keras_layers]
        counts = [u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers]
        assert sum(counts) == sum(p.numel() for p in t.parameters()) == k.count_params()
        assert counts == [u.layer_kind.parameter_count(bias=u.b is not None) if u.W.size and u.W.ndim > 2
                          else c for u, c in zip(result.torch_layers, counts)]

    assert_ported_pairs_agree(conv_archs(dtype=dtype), ported=_ported, inputs=_input, max_examples=CONV_EXAMPLES,
                              then=check)


def test_drawn_inputs_cover_a_conv_model_and_say_how_to_rebuild_a_failure(monkeypatch):
    """Drawn inputs (no ``x``) pass a faithful port; a broken torch conv shrinks to an input rebuilt in the
    torch layout."""
    from torch import nn

    from equivalence import compare_models

    arch = ConvArch(2, 6, 2, (ConvBlock(3, 3, 1, True, "relu", "max", 2),), 2, "float32", 7)
    t, k = _ported(arch)
    assert compare_models(t, k, max_examples=5).passed
    original = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, x, w, b: original(self, x, w.flip(-1), b))
    result = compare_models(t, k, max_examples=5)
    assert not result.passed
    assert "torch vs reference, layer 0" in result.message() and "[torch '0', keras 'conv2d" in result.message()
    assert ".transpose(0, 3, 1, 2)" in result.reproduction


# --- the traps, named ----------------------------------------------------------------------------

def test_a_reshaped_conv_kernel_is_named_kernel_layout():
    from equivalence import compare_models

    arch = ConvArch(2, 6, 3, (ConvBlock(4, 3, 1, False, "relu", None),), 2, "float32", 1)
    t, k = _ported(arch)
    conv = k.layers[0]
    conv.kernel.assign(t[0].weight.detach().numpy().reshape(conv.kernel.shape))  # fits the shape, wrong layout
    result = compare_models(t, k)
    assert not result.passed
    assert [d.what for d in result.differences] == ["kernel layout"], result.message()
    assert "torch '0', keras 'conv2d" in result.differences[0].message
    assert "keras vs reference" not in result.message() or "torch vs keras, layer 0" in result.message()


def test_a_dense_after_flatten_without_the_row_permutation_is_named_flatten_order():
    from equivalence import compare_models

    arch = ConvArch(2, 5, 2, (ConvBlock(3, 2, 1, False, "tanh", None),), 3, "float32", 2)
    t, k = _ported(arch)
    k.layers[-1].kernel.assign(t[-1].weight.detach().numpy().T)  # the torch rows, in C,H,W order
    result = compare_models(t, k)
    assert [d.what for d in result.differences] == ["flatten order"], result.message()
    assert "layer 2 (torch '3', keras 'dense" in result.differences[0].message
    assert "torch vs keras, layer 2" in result.message()


def test_stride_2_same_padding_is_named_padding_before_any_value():
    """TensorFlow's "same" pads an even input (0, 1) at stride 2; torch's padding=1 pads (1, 1): same shapes."""
    import keras
    import torch
    from torch import nn

    from equivalence import PortMismatch, compare_models, port_weights

    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    k = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(3, 3, strides=2, padding="same"),
                          keras.layers.Flatten(), keras.layers.Dense(2)])
    differences = named_differences(t, k)  # the Dense after it: weights not ported yet, named too
    assert [d.what for d in differences if d.layer == 0] == ["padding"]
    assert "got keras ((0, 1), (0, 1)), but torch has ((1, 1), (1, 1))" in differences[0].message
    with pytest.raises(PortMismatch, match="padding"):
        port_weights(t, k)
    k.layers[0].kernel.assign(t[0].weight.detach().numpy().transpose(2, 3, 1, 0))  # the user's own port
    k.layers[0].bias.assign(t[0].bias.detach().numpy())
    result = compare_models(t, k)
    assert "torch vs keras, layer 0" in result.message(), result.message()


def test_average_pooling_counting_the_padding_is_named_padding():
    import keras
    from torch import nn

    t = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(5 * 5 * 2, 2))
    k = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.AveragePooling2D(3, strides=1, padding="same"),
                          keras.layers.Flatten(), keras.layers.Dense(2)])
    differences = named_differences(t, k)
    assert [d.what for d in differences if d.layer == 0] == ["padding"]
    assert "count_include_pad=False, but torch has count_include_pad=True" in differences[0].message


@pytest.mark.parametrize(("torch_change", "what"), [({"kernel_size": 2}, "kernel size"), ({"stride": 2}, "stride")])
def test_conv_configuration_differences_are_named(torch_change, what):
    import keras
    import torch
    from torch import nn

    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv1d(2, 3, **{"kernel_size": 3, "stride": 1, **torch_change}))
    k = keras.Sequential([keras.Input((9, 2)), keras.layers.Conv1D(3, 3)])
    assert what in [d.what for d in named_differences(t, k)]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_broken_framework_conv_turns_the_suite_red_naming_the_layer(framework, monkeypatch):
    """The meta test: a conv computing with a flipped kernel is caught at its layer, in either framework."""
    from equivalence import compare_models

    arch = ConvArch(2, 7, 2, (ConvBlock(4, 3, 2, False, "relu", "avg", 2), ConvBlock(3, 2, 1, False, "linear", None)),
                    2, "float32", 3)
    t, k = _ported(arch)
    if framework == "torch":
        from torch import nn

        original = nn.Conv2d._conv_forward
        monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, x, w, b: original(self, x, w.flip(-1), b))
    else:
        import keras
        from keras.src.layers.convolutional.base_conv import BaseConv

        original = BaseConv.convolution_op
        monkeypatch.setattr(BaseConv, "convolution_op",
                            lambda self, x, kernel: original(self, x, keras.ops.flip(kernel, axis=1)))
    result = compare_models(t, k, x=_input(arch))
    assert not result.passed
    assert result.failing_pairs()[f"{framework} vs reference"] == 0, result.message()
    other = "keras" if framework == "torch" else "torch"
    assert f"{other} vs reference" not in result.failing_pairs()


CONV_FACTORY = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2))
'''


def test_equivalence_compare_takes_a_conv_state_dict_and_its_keras_file(tmp_path, capsys, monkeypatch):
    import keras

    from equivalence.cli import EXIT_OK

    L = keras.layers
    port = keras.Sequential([keras.Input((4, 4, 2)), L.Conv2D(3, 3, padding="same", activation="relu"),
                             L.MaxPooling2D(2), L.Flatten(), L.Dense(2)])
    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=CONV_FACTORY, module="convnets",
                                              port=port)
    assert code == EXIT_OK, out
    assert "all 4 layers agree over 3 input batches" in out


def test_a_subclassed_torch_conv_net_against_a_functional_keras_port():
    """The seed styles: a torch subclass flattening with ``x.view(x.size(0), -1)`` and functional ops, its layers
    registered in another order than called, against a Keras functional model."""
    import keras
    import torch
    import torch.nn.functional as F
    from torch import nn

    from equivalence import assert_equivalent, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4 * 3 * 3, 3)
            self.conv = nn.Conv2d(2, 4, 3)
            self.pool = nn.AvgPool2d(2, stride=2)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            return F.softmax(self.fc(x.view(x.size(0), -1)), dim=-1)

    torch.manual_seed(0)
    t = Net().eval()
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(keras.layers.AveragePooling2D(2)(h))
    k = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    port_weights(t, k)
    result = assert_equivalent(t, k, max_examples=5)
    assert [u.layer_kind.name for u in result.torch_layers] == ["conv", "pool", "flatten", "dense"]


@pytest.mark.parametrize(("dim", "refused"), [(1, False), (None, False), (-1, True), (2, True)])
def test_a_softmax_after_a_conv_is_judged_over_the_channels_and_refused_over_another_axis(dim, refused):
    """torch's N, C, H, W: a softmax over dim 1 (or torch's implicit dim of a 4-D input) is over the channels, the
    canonical last axis, and agrees with Keras' Softmax() after a channels-last Conv2D; over the width or the height
    it is another function, refused in one line rather than read as a softmax over the last axis."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, assert_equivalent, port_weights

    L = keras.layers
    t = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Softmax(dim=dim), nn.Flatten(), nn.Linear(27, 2)).eval()
    k = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(3, 3), L.Softmax(), L.Flatten(), L.Dense(2)])
    if refused:
        with pytest.raises(ModelNotSupported, match=rf"^torch layer '1' \(Softmax\) at position 1: a softmax over dim "
                                                    rf"{dim} of a 4-D tensor .*over the channels \(dim=1\)"):
            port_weights(t, k)
        return
    port_weights(t, k)
    assert assert_equivalent(t, k, max_examples=5).torch_layers[0].activation == "softmax"


@pytest.mark.parametrize("axis", [1, 2, -2])
def test_a_keras_softmax_over_another_axis_than_the_channels_is_refused(axis):
    import keras

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    L = keras.layers
    k = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(3, 3), L.Softmax(axis=axis, name="sm"), L.Flatten(),
                          L.Dense(2)])
    with pytest.raises(ModelNotSupported, match=rf"^keras layer 'sm' \(Softmax\) at position 1: a softmax over axis "
                                                rf"{axis} of a 4-D tensor"):
        walk(k, "keras")
