"""Keras on torch: torch's own numpy conversion and ``torch.autograd.grad``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import torch

from equivalence.core.dtypes import numpy_dtype
from equivalence.frameworks.keras import KerasAdapter


class TorchKeras(KerasAdapter):
    backend = "torch"

    def to_numpy(self, value: Any) -> np.ndarray:
        """``detach().numpy()`` (no numpy 2 DeprecationWarning); torch's numpy has no bfloat16, so that goes
        through float32 (exact)."""
        tensor = (value.value if isinstance(value, keras.Variable) else value).detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.float().numpy().astype(numpy_dtype("bfloat16"))
        return tensor.numpy()

    def autodiff(self, forward: Any, x: Any, variables: Sequence[Any]) -> tuple[Any, list[Any]]:
        """``torch.autograd.grad`` on the variables' parameters: nothing accumulates in ``.grad``."""
        x = x.detach().requires_grad_(True)
        loss = self.mean(forward(x))
        dx, *grads = torch.autograd.grad(loss, [x, *(v.value for v in variables)])
        return dx, grads

    def backend_versions(self) -> dict[str, str]:
        return {"keras_torch": torch.__version__}
