"""Keras on TensorFlow: TF's own ops where Keras' wrappers cost more, ``GradientTape``, oneDNN in the versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from equivalence.frameworks.base import FrameworkRefused
from equivalence.frameworks.keras import KerasAdapter
from equivalence.frameworks.keras.tensorflow_facts import onednn_enabled, tensorflow_versions

__all__ = ["TensorFlowKeras", "onednn_enabled"]


class TensorFlowKeras(KerasAdapter):
    backend = "tensorflow"

    def to_numpy(self, value: Any) -> np.ndarray:
        """TF's own ``.numpy()``: ``convert_to_numpy`` raises numpy 2's ``__array__(copy=...)`` DeprecationWarning
        on every call."""
        return value.numpy()

    def assign(self, variable: Any, value: np.ndarray) -> None:
        """TF's ``AssignVariableOp`` on the variable's handle: Keras' ``assign`` converts, checks the shape, adds a
        cast op and reads the value back, several times the cost on the hot path (docs/measurements.md).
        ``validate_shape=True`` keeps TF's own shape check and the op refuses a wrong dtype, so the value is
        cast here. The weight round-trip tests read back through Keras' ``kernel.numpy()``, so a missed write
        would fail them."""
        value = np.asarray(value, dtype=variable.dtype)
        tf.raw_ops.AssignVariableOp(resource=variable.value.handle, value=value, validate_shape=True)

    def run(self, block: Any, x: Any) -> Any:
        try:
            return super().run(block, x)
        except tf.errors.OpError as exc:  # a kernel TF has not, or a primitive oneDNN cannot create
            raise FrameworkRefused(f"TensorFlow {tf.__version__}: {type(exc).__name__}: "
                                   f"{' '.join(str(exc.message).split())[:200]}") from exc

    def autodiff(self, forward: Any, x: Any, variables: Sequence[Any]) -> tuple[Any, list[Any]]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = self.mean(forward(x))
        dx, *grads = tape.gradient(loss, [x, *variables])
        return dx, grads

    def backend_versions(self) -> dict[str, str]:
        return tensorflow_versions()
