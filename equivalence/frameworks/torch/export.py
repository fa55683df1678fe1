"""torch.export: each torch layer captured with ``torch.export.export`` and run as the exported program
(``ExportedProgram.module()``), the graph AOTInductor, ExecuTorch and the ONNX dynamo exporter start from.

A layer is exported once (``nn.Sequential(linear, activation)``, the batch axis ``Dim.DYNAMIC``, ~0.1 s a
layer after ~2 s for the first of a process) and cached per layer object; the exported module holds the torch
layer's own parameters (``module()`` shares their storage: measured), so new weights need no new export.
``forward`` exports the model itself. ``tests/frameworks/test_torch_export.py`` checks that a ``torch.export.save`` and
``load`` round trip runs the same bits, and measures eager against exported.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from equivalence.frameworks.base import FrameworkRefused
from equivalence.frameworks.torch import TorchAdapter, layer_pairs, numpy_dtype_of, to_numpy, to_tensor

EXAMPLE_BATCH = 2
"""The example's batch: export specialises a dimension of size 0 or 1, so the example holds two rows."""


def export(module: nn.Module, n_in: int, dtype: torch.dtype) -> torch.export.ExportedProgram:
    """``module`` exported with a dynamic batch axis; ``FrameworkRefused`` when torch.export cannot capture it."""
    example = torch.zeros(EXAMPLE_BATCH, n_in, dtype=dtype)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    except RuntimeError as exc:  # torch._dynamo's UserError and the shape constraint errors are RuntimeErrors
        raise FrameworkRefused(f"torch.export (torch {torch.__version__}) could not capture it: "
                               f"{' '.join(str(exc).split())[:200]}") from exc


class TorchExportAdapter(TorchAdapter):
    name = "torch_export"
    chain_builder = False  # its layers exported: a chain built here would run eagerly

    def __init__(self) -> None:
        self._exported: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def variant(self) -> str:
        return "torch/export"

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        linear, act = layer_pairs(model)[index]
        cached = self._exported.get(linear)
        if cached is None or cached[0] is not act:  # a pooled Linear keeps its activation; a new one: export
            program = export(nn.Sequential(linear, act), linear.in_features, linear.weight.dtype).module()
            cached = self._exported[linear] = (act, program)
        with torch.no_grad():
            y = cached[1](to_tensor(x, linear.weight.dtype))
        return to_numpy(y, numpy_dtype_of(linear.weight))

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        layers = layer_pairs(model)
        cached = self._exported.get(model)
        if cached is None:
            cached = self._exported[model] = (model, export(model, layers[0][0].in_features,
                                                            layers[0][0].weight.dtype).module())
        with torch.no_grad():
            y = cached[1](to_tensor(x, layers[0][0].weight.dtype))
        return to_numpy(y, numpy_dtype_of(layers[-1][0].weight))

    def forget_compiled(self) -> None:
        """Meta tests patch torch's modules; an export keeps the code traced before the patch."""
        self._exported.clear()

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "torch_export": "torch.export.export, ExportedProgram.module()"}
