"""Which Keras the ``keras`` framework runs: Keras 3 on ``KERAS_BACKEND``, or Keras 2 under
``TF_USE_LEGACY_KERAS=1`` (chosen here, once, before either is imported).

TensorFlow reads ``TF_USE_LEGACY_KERAS`` to make ``tf.keras`` the ``tf-keras`` package (Keras 2); ``import keras``
still gives Keras 3 whatever the variable says. A guard that honoured only ``import keras`` would test Keras 3
while the user's code runs Keras 2, so the variable chooses the variant here, and with no ``tf-keras`` installed
it is refused (``builtin.keras_backend_problem``), never ignored.
"""

from __future__ import annotations

import os
from typing import Any

from equivalence.frameworks.base import Adapter

LEGACY_VARIABLE = "TF_USE_LEGACY_KERAS"


def legacy_keras_requested() -> bool:
    """``TF_USE_LEGACY_KERAS`` as TensorFlow reads it (``1``, ``true`` or ``True``)."""
    return os.environ.get(LEGACY_VARIABLE) in ("1", "true", "True")


def adapter() -> Adapter:
    """The Keras 2 adapter under ``TF_USE_LEGACY_KERAS=1``, else Keras 3's on its backend."""
    if legacy_keras_requested():
        from equivalence.frameworks.keras2 import LegacyKerasAdapter

        return LegacyKerasAdapter()
    from equivalence.frameworks.keras import adapter as keras3

    return keras3()


def walker() -> Any:
    """The module walking a user's own model of the Keras that runs here (``walk``, ``load_model``)."""
    if legacy_keras_requested():
        from equivalence.frameworks import keras2

        return keras2
    from equivalence.frameworks.keras import walk as keras3_walk

    return keras3_walk


def walk(model: Any, *, input_width: int | None = None) -> list[Any]:
    """A user's Keras model's dense units, walked by the Keras that runs here (Keras 2 or 3)."""
    return walker().walk(model, input_width=input_width)


def load_model(path: str) -> Any:
    """A ``.keras`` file loaded by the Keras that runs here, in safe mode."""
    return walker().load_model(path)
