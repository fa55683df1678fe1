"""A Keras 2 (``tf_keras``) port of a torch model with convolutions, pooling, norms or an embedding, judged layer by
layer with the kinds the torch walker gives (``equivalence.frameworks.keras.legacy_kinds``), as a model and as its
``.h5`` (issue 26). Where tf-keras is installed: ``make converters`` (marker ``converters``), or ``make keras2``."""

from __future__ import annotations

import importlib.util
import warnings

import pytest

pytestmark = [pytest.mark.converters,
              pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                                 reason="tf-keras is not installed (make converters or make keras2 installs it)")]


@pytest.fixture(autouse=True)
def _frameworks(torch_adapter):
    """torch (skips with the reason otherwise)."""


def conv_pair():
    """A torch conv net and its Keras 2 port, the weights copied by ``port_weights``."""
    import tf_keras
    import torch
    from torch import nn

    from equivalence import port_weights

    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                      nn.Flatten(), nn.Linear(6 * 2 * 2, 5)).eval()
    L = tf_keras.layers
    k = tf_keras.Sequential([tf_keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", name="conv_a"), L.ReLU(),
                             L.MaxPooling2D(2), L.Conv2D(6, 3, activation="relu", name="conv_b"), L.Flatten(),
                             L.Dense(5, name="fc")])
    port_weights(t, k)
    return t, k


def norm_pair():
    import tf_keras
    import torch
    from torch import nn

    from equivalence import port_weights

    torch.manual_seed(1)
    t = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8), nn.Tanh(),
                      nn.Linear(8, 3)).eval()
    with torch.no_grad():
        t[1].running_mean.uniform_(-1, 1)
        t[1].running_var.uniform_(0.5, 2)
        for norm in (t[1], t[4]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    L = tf_keras.layers
    inputs = tf_keras.Input((6,))
    h = L.ReLU()(L.BatchNormalization(epsilon=1e-5, momentum=0.9, name="bn")(L.Dense(8)(inputs)))
    h = L.Activation("tanh")(L.LayerNormalization(epsilon=1e-5, name="ln")(L.Dense(8)(h)))
    k = tf_keras.Model(inputs, L.Dense(3)(h))
    port_weights(t, k)
    return t, k


def token_pair():
    import tf_keras
    import torch
    from torch import nn

    from equivalence import port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.fc = nn.Embedding(10, 4), nn.Linear(4, 3)

        def forward(self, ids):
            return self.fc(self.embed(ids).mean(1))

    torch.manual_seed(2)
    L = tf_keras.layers
    k = tf_keras.Sequential([tf_keras.Input((6,), dtype="int32"), L.Embedding(10, 4, name="emb"),
                             L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")])
    t = nn.Sequential(Net(), nn.Softmax(dim=-1)).eval()
    port_weights(t, k)
    return t, k


@pytest.mark.parametrize("pair", [conv_pair, norm_pair, token_pair])
def test_a_keras2_port_is_judged_layer_by_layer_with_the_torch_walkers_kinds(pair, tmp_path):
    from equivalence import assert_equivalent

    t, k = pair()
    result = assert_equivalent(t, k, max_examples=5)
    assert [u.layer_kind for u in result.torch_layers] == [u.layer_kind for u in result.keras_layers]
    assert [u.out_shape or u.shape[1:] for u in result.torch_layers] == \
        [u.out_shape or u.shape[1:] for u in result.keras_layers]
    assert [u.activation for u in result.torch_layers] == [u.activation for u in result.keras_layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_keras: "HDF5 ... is considered legacy"
        k.save(tmp_path / "port.h5")
    from_file = assert_equivalent(t, tmp_path / "port.h5", max_examples=5)
    assert [u.layer_kind for u in from_file.keras_layers] == [u.layer_kind for u in result.keras_layers]


def test_the_conv_port_has_the_kinds_of_a_conv_net():
    from equivalence.frameworks.keras import legacy

    _, k = conv_pair()
    units = legacy.walk(k)
    assert [(u.kind, type(u.layer_kind).__name__, u.activation) for u in units] == [
        ("Conv2D", "Conv", "relu"), ("MaxPooling2D", "Pool", "linear"), ("Conv2D", "Conv", "relu"),
        ("Flatten", "Flatten", "linear"), ("Dense", "Dense", "linear")]
    assert units[0].in_shape == (8, 8, 3) and units[3].out_shape == (24,)


def _moved_in_h5(path, layer: str, weight: str, index: tuple[int, ...], by: float) -> None:
    """One element of a layer's weight moved in the ``.h5`` file itself."""
    import h5py

    with h5py.File(path, "r+") as f:
        group = f["model_weights"][layer]
        dataset = next(group[name] for name in _datasets(group) if name.split("/")[-1].startswith(weight))
        values = dataset[()]
        values[index] += by
        dataset[...] = values


def _datasets(group) -> list[str]:
    import h5py

    names: list[str] = []
    group.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


@pytest.mark.parametrize(("pair", "layer", "weight", "index", "named"), [
    (conv_pair, "conv_b", "kernel", (1, 2, 3, 4), "layer 2 (torch '3', keras 'conv_b'): kernel: 1 / 216 elements"),
    (norm_pair, "bn", "moving_variance", (5,), "layer 1 (torch '1', keras 'bn'): kernel: 1 / 32 elements"),
    (token_pair, "emb", "embeddings", (7, 2), "layer 0 (torch '0.embed', keras 'emb'): kernel: 1 / 40 elements"),
])
def test_a_moved_weight_in_the_h5_is_named_at_its_layer(pair, layer, weight, index, named, tmp_path):
    from equivalence import compare_models

    t, k = pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k.save(tmp_path / "port.h5")
    _moved_in_h5(tmp_path / "port.h5", layer, weight, index, 1e-2)
    result = compare_models(t, tmp_path / "port.h5", max_examples=3)
    assert not result.passed
    assert named in result.message(), result.message()
    assert f"keras '{layer}']" in result.message()  # its values diverge there too, named


def test_a_layer_still_not_read_is_refused_in_one_line_naming_it():
    """Walked as the form it is (``keras2`` beside Keras 3, ``keras`` under TF_USE_LEGACY_KERAS=1)."""
    import tf_keras

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    L = tf_keras.layers
    k = tf_keras.Sequential([tf_keras.Input((5, 3)), L.LSTM(4, name="rnn"), L.Dense(2)])
    with pytest.raises(ModelNotSupported) as caught:
        walk(k, None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("keras layer 'rnn' (LSTM) at position 0: not a layer or an activation the suite "
                              "judges (it judges Dense, Conv1D, Conv2D"), message


def test_a_channels_first_keras2_conv_is_refused_naming_it():
    import tf_keras

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    L = tf_keras.layers
    k = tf_keras.Sequential([tf_keras.Input((3, 8, 8)), L.Conv2D(4, 3, data_format="channels_first", name="cf"),
                             L.Flatten(), L.Dense(2)])
    with pytest.raises(ModelNotSupported, match=r"keras layer 'cf' \(Conv2D\) at position 0: "
                                                r"data_format='channels_first'"):
        walk(k, None)
