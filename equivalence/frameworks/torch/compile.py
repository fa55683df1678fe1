"""torch.compile (inductor on CPU): torch's layers compiled into generated C++ kernels, checked per layer.

Inductor writes C++ for CPU kernels and builds it with the machine's C++ compiler, so a C++ compiler is a
requirement (``builtin.cxx_compiler_problem``, checked before torch is imported). Compiling is slow: ~17 s before the
first layer of a process (inductor's import and first build), then ~1 s for each new graph. So a layer is not
compiled per object: one compiled function per (activation, dtype, bias), ``act(F.linear(x, W, b))`` with the
weights as inputs (what ``torch.compile`` of an ``nn.Module`` does with its parameters) and ``dynamic=True``,
so new shapes and new weights reuse it. ``forward`` compiles the model itself. The suite runs it in
``make runtimes`` only (its registry entry is not in ``make check``'s default selection).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from equivalence.frameworks.base import FrameworkRefused
from equivalence.frameworks.torch import TorchAdapter, layer_pairs, numpy_dtype_of, to_numpy, to_tensor

RECOMPILE_LIMIT = 64


class TorchCompileAdapter(TorchAdapter):
    name = "torch_compile"
    chain_builder = False  # its layers compiled: a chain built here would run eagerly

    def __init__(self) -> None:
        # dynamo caches compiled graphs per code object, 8 by default; with dynamic shapes one key still
        # specialises sizes 0 and 1 (batch, fan-in, width: up to 8 variants).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self._layer_fns: dict[tuple[str, torch.dtype, bool], Any] = {}
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def variant(self) -> str:
        return "torch/inductor"

    def _compiled_layer(self, activation: torch.nn.Module, dtype: torch.dtype, bias: bool) -> Any:
        key = (repr(activation), dtype, bias)
        if key not in self._layer_fns:
            def layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
                return activation(functional.linear(x, w, b))

            # A code object of its own per key: dynamo's cache (and its recompile limit) is per code object.
            layer.__code__ = layer.__code__.replace(co_name=f"layer_{len(self._layer_fns)}")
            self._layer_fns[key] = torch.compile(layer, dynamic=True, fullgraph=True)
        return self._layer_fns[key]

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        linear, act = layer_pairs(model)[index]
        fn = self._compiled_layer(act, linear.weight.dtype, linear.bias is not None)
        with torch.no_grad():
            try:
                y = fn(to_tensor(x, linear.weight.dtype), linear.weight, linear.bias)
            except (torch._dynamo.exc.BackendCompilerFailed, torch._dynamo.exc.FailOnRecompileLimitHit) as exc:
                raise FrameworkRefused(f"torch.compile (inductor) could not compile it: {str(exc)[:200]}") from exc
        return to_numpy(y, numpy_dtype_of(linear.weight))

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        compiled = self._models.get(model)
        if compiled is None:
            compiled = self._models[model] = torch.compile(model, dynamic=True)
        layers = layer_pairs(model)
        with torch.no_grad():
            y = compiled(to_tensor(x, layers[0][0].weight.dtype))
        return to_numpy(y, numpy_dtype_of(layers[-1][0].weight))

    def forget_compiled(self) -> None:
        """Meta tests patch torch's modules; dynamo's caches would keep the code traced before the patch."""
        self._layer_fns.clear()
        self._models.clear()
        torch._dynamo.reset()

    def versions(self) -> dict[str, str]:
        from torch._inductor import config

        return {**super().versions(), "torch_compile_backend": "inductor",
                "inductor_cpp_compiler": str(config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else
                                             config.cpp.cxx),
                "inductor_simd": str(getattr(config.cpp, "simdlen", None))}
