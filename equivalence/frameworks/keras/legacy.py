"""Keras 2 (the ``tf-keras`` package, TensorFlow's ``TF_USE_LEGACY_KERAS=1``): the ``keras`` framework's Keras 2
variant, ``keras2/tensorflow``.

Keras 2 is what ``tf.keras`` was up to TensorFlow 2.15 and still is under ``TF_USE_LEGACY_KERAS=1``; upgrading
from it to Keras 3 is the largest move a Keras user makes. It runs only on TensorFlow. Chosen in one place,
``equivalence.frameworks.keras.variant.adapter``. The adapter is the Keras 3 adapter on TensorFlow driving the
``tf_keras`` module (so Keras 3 is imported too, for its class; every layer and model is Keras 2's).

What differs from the Keras 3 adapter: no ``keras.ops`` (TensorFlow's own ops instead), variables written with
``assign``, ``clear_session`` has no ``free_memory``, no bfloat16 in its HDF5 files, and the activation table.
Keras 2 has no ``celu``, ``hard_silu`` or ``log_softmax`` activation (``cannot`` lists them, so ``verify``
and ``report`` say "not run: ..."), writes ``relu6`` and ``leaky_relu`` as ``relu(max_value=6)`` and
``relu(alpha=...)``, ``silu`` as ``swish``, and defines ``hard_sigmoid`` otherwise (``clip(0.2 z + 0.5, 0, 1)``:
the named difference ``keras2_hard_sigmoid_slope_0_2``).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from equivalence.core.activations import LEAKY_SLOPE, family_of  # noqa: E402
from equivalence.frameworks.base import FrameworkRefused  # noqa: E402
from equivalence.frameworks.keras import activation_from, dense_stack_class  # noqa: E402
from equivalence.frameworks.keras.tensorflow import TensorFlowKeras  # noqa: E402

activations = tf_keras.activations


def _registered(name: str, fn: Any) -> Any:
    """A named, registered activation, so ``.keras`` files reload it in safe mode."""
    fn.__name__ = fn.__qualname__ = name
    return tf_keras.saving.register_keras_serializable(package="equivalence", name=name)(fn)


LACKS = ("celu", "hard_silu", "log_softmax")
"""Activations (and parametric families) Keras 2 has no activation for."""

ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "linear": "linear",
    "softmax": _registered("softmax_last_axis", lambda x: activations.softmax(x, axis=-1)),
    "gelu": _registered("gelu_exact", lambda x: activations.gelu(x, approximate=False)),
    "gelu_tanh": _registered("gelu_tanh", lambda x: activations.gelu(x, approximate=True)),
    "elu": _registered("elu_alpha_1", lambda x: activations.elu(x, alpha=1.0)),
    "selu": "selu",
    "silu": "swish",
    "softplus": "softplus",
    "softsign": "softsign",
    "relu6": _registered("relu6", lambda x: activations.relu(x, max_value=6.0)),
    "hard_sigmoid": "hard_sigmoid",
    "leaky_relu_0.2": _registered("leaky_relu_0_2", lambda x: activations.relu(x, alpha=LEAKY_SLOPE)),
    "mish": "mish",
}

_PARAMETRIC = {
    "leaky_relu": lambda p: (lambda x: activations.relu(x, alpha=p)),
    "elu": lambda p: (lambda x: activations.elu(x, alpha=p)),
    "softmax_axis": lambda p: (lambda x: activations.softmax(x, axis=int(p))),
}
PARAMETRIC_ACTIVATIONS: dict[str, Any] = {}


def _family(name: str) -> str:
    return name if name in ACTIVATIONS or name in LACKS else family_of(name)[0]


def keras2_activation(name: str) -> Any:
    """The Keras 2 activation of ``name`` (``KeyError`` for one Keras 2 lacks: ask ``cannot`` first)."""
    return activation_from(name, ACTIVATIONS, _PARAMETRIC, PARAMETRIC_ACTIVATIONS, _registered)


DenseStack = dense_stack_class(tf_keras.Model)


class LegacyKerasAdapter(TensorFlowKeras):
    """Keras 2 (tf-keras) on TensorFlow: the Keras adapter on the ``tf_keras`` module, the ``keras`` framework's
    ``keras2/tensorflow`` variant. Only what differs from Keras 3 on TensorFlow is here."""

    keras = tf_keras
    label = "Keras 2"
    stack_class = DenseStack

    @property
    def variant(self) -> str:
        return "keras2/tensorflow"

    def lacks(self, activation: str) -> str | None:
        family = _family(activation)
        return f"keras {tf_keras.__version__} (tf-keras, Keras 2) has no {family} activation" if family in LACKS \
            else None

    def keras_activation(self, name: str) -> Any:
        return keras2_activation(name)

    def clear_session(self) -> None:
        """Keras 2 has no cheap ``free_memory=False`` form."""
        tf_keras.backend.clear_session()

    def to_tensor(self, x: Any, dtype: str | None = None) -> Any:
        return tf.convert_to_tensor(x, dtype=dtype)

    def cast(self, value: Any, dtype: str) -> Any:
        return tf.cast(value, dtype)

    def mean(self, y: Any) -> Any:
        return tf.reduce_sum(y) / int(np.prod(y.shape))  # in y's dtype, as mean_in_dtype

    def assign(self, variable: Any, value: np.ndarray) -> None:
        variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))

    def save_model(self, model: Any, path: str | os.PathLike) -> None:
        if "bfloat16" in {layer.dtype for layer in self.dense_layers(model)}:
            # measured: ValueError "No cast function available" from h5py, the file half written
            raise FrameworkRefused(f"keras {tf_keras.__version__} (tf-keras, Keras 2) cannot save bfloat16 weights: "
                                   "its HDF5 writer (h5py) has no bfloat16")
        super().save_model(model, path)

    def backend_versions(self) -> dict[str, str]:
        return {"keras_package": "tf-keras", **super().backend_versions()}
