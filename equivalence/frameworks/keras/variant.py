"""Which Keras the ``keras`` framework runs: Keras 3 on ``KERAS_BACKEND``, or Keras 2 under
``TF_USE_LEGACY_KERAS=1`` (chosen here, once, before either is imported).

TensorFlow reads ``TF_USE_LEGACY_KERAS`` to make ``tf.keras`` the ``tf-keras`` package (Keras 2); ``import keras``
still gives Keras 3 whatever the variable says. A guard that honoured only ``import keras`` would test Keras 3
while the user's code runs Keras 2, so the variable chooses the variant here, and with no ``tf-keras`` installed
it is refused (``builtin.keras_backend_problem``), never ignored.
"""

from __future__ import annotations

from typing import Any

from equivalence.frameworks.base import Adapter
from equivalence.frameworks.builtin import LEGACY_VARIABLE, legacy_keras_requested

__all__ = ["LEGACY_VARIABLE", "adapter", "input_shape", "keras3_adapter", "legacy_keras_requested", "load_model",
           "walk", "walker"]


def adapter() -> Adapter:
    """The Keras 2 adapter under ``TF_USE_LEGACY_KERAS=1``, else Keras 3's on its backend."""
    if legacy_keras_requested():
        from equivalence.frameworks.keras.legacy import LegacyKerasAdapter

        return LegacyKerasAdapter()
    return keras3_adapter()


def keras3_adapter() -> Adapter:
    """The Keras 3 adapter of the backend Keras runs on (``KERAS_BACKEND``, read by Keras at import)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        from equivalence.frameworks.keras.tensorflow import TensorFlowKeras as chosen
    elif backend == "torch":
        from equivalence.frameworks.keras.torch import TorchKeras as chosen
    elif backend == "jax":
        from equivalence.frameworks.keras.jax import JaxKeras as chosen
    else:
        raise ValueError(f"the Keras adapter does not run on the {backend!r} backend")
    return chosen()


def walker() -> Any:
    """The module walking a user's own model of the Keras that runs here (``walk``, ``load_model``)."""
    if legacy_keras_requested():
        from equivalence.frameworks.keras import legacy

        return legacy
    from equivalence.frameworks.keras import walk as keras3_walk

    return keras3_walk


def walk(model: Any, *, input_width: int | None = None) -> list[Any]:
    """A user's Keras model's dense units, walked by the Keras that runs here (Keras 2 or 3)."""
    return walker().walk(model, input_width=input_width)


def input_shape(model: Any) -> tuple[int, ...] | None:
    """One sample's input shape as the Keras model declares it (Keras 2's or 3's walker), or None."""
    shape_of = getattr(walker(), "input_shape", None)
    return None if shape_of is None else shape_of(model)


def load_model(path: str) -> Any:
    """A ``.keras`` file loaded by the Keras that runs here, in safe mode."""
    return walker().load_model(path)
