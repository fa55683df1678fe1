"""Run a case through framework models and compare every layer three ways."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from equivalence.core.adapter import Adapter, FrameworkRefused
from equivalence.core.case import Case
from equivalence.core.compare import Comparison, compare_layers
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import LayerTrace, layerwise_reference
from equivalence.core.spec import StackSpec


def check_case(case: Case, models: Mapping[str, tuple[Adapter, Any]]) -> Comparison:
    """Load ``case.weights`` into every model, feed each layer the reference's input, compare.

    ``models`` maps a label (e.g. ``"torch"``) to ``(adapter, model)``; the label
    is what failure messages name.
    """
    traces = layerwise_reference(case.spec, case.weights, case.x)
    outputs = run_layers(case.weights, reference_inputs(case.spec, traces), models)
    return compare_layers(case.spec, case.weights, case.x, outputs, case_id=case.id, reference=traces)


class LayerPool:
    """Built layers reused by shape, for the numeric hot path.

    Building a Keras ``Dense`` and assembling a model cost ten times and more what
    assigning new weights to a built layer costs (docs/measurements.md, "Costs per
    step"). Every case overwrites every weight, so reuse is safe. Layers are keyed by ``(framework, in, out,
    activation, bias, dtype)`` plus their position among equal keys in one stack,
    so a stack never gets the same layer object twice. The tests of the build
    styles themselves always build fresh models.
    """

    def __init__(self, size: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self.size = size
        self.builds = 0
        self._layers: OrderedDict[tuple, Any] = OrderedDict()

    def stack(self, adapter: Adapter, spec: StackSpec) -> list[Any]:
        """Built layers for ``spec`` (the bare-layers model form every adapter accepts)."""
        seen: dict[tuple, int] = {}
        out = []
        for (n_in, n_out), act in zip(spec.layer_shapes, spec.activations):
            shape_key = (adapter.name, n_in, n_out, act, spec.bias, spec.dtype)
            seen[shape_key] = seen.get(shape_key, -1) + 1
            key = (*shape_key, seen[shape_key])
            layer = self._layers.get(key)
            if layer is None:
                layer = adapter.build_layer(n_in, n_out, act, bias=spec.bias, dtype=spec.dtype)
                self.builds += 1
                self._layers[key] = layer
                if len(self._layers) > self.size:
                    self._layers.popitem(last=False)
            else:
                self._layers.move_to_end(key)
            out.append(layer)
        return out


def reference_inputs(spec: StackSpec, traces: Sequence[LayerTrace]) -> list[np.ndarray]:
    """The per-layer inputs every framework is fed: the reference chain rounded to the dtype (token ids as
    they are)."""
    dt = numpy_dtype(spec.dtype)
    return [t.x if np.issubdtype(t.x.dtype, np.integer) else t.x.astype(dt) for t in traces]


def why_not_run(adapter: Adapter, spec: StackSpec) -> str | None:
    """Why ``adapter`` cannot compute ``spec`` here (an activation in a dtype it has no kernel for), or None."""
    for activation in dict.fromkeys(spec.activations):
        reason = adapter.cannot(activation, spec.dtype)
        if reason:
            return reason
    return None


def run_available(spec: StackSpec, weights: Sequence[LayerWeights], inputs: Sequence[np.ndarray],
                  adapters: Mapping[str, Adapter], model_for: Callable[[str, Adapter], Any]
                  ) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """Each framework's per-layer outputs, and for each framework that cannot compute ``spec`` or refuses it
    mid-run (``FrameworkRefused``), the one-line reason instead: a case is "not run" there, never a traceback."""
    outputs, not_run = {}, {}
    for name, adapter in adapters.items():
        reason = why_not_run(adapter, spec)
        if reason:
            not_run[name] = reason
            continue
        try:
            outputs.update(run_layers(weights, inputs, {name: (adapter, model_for(name, adapter))}))
        except FrameworkRefused as exc:
            not_run[name] = str(exc)
    return outputs, not_run


def run_layers(weights: Sequence[LayerWeights], inputs: Sequence[np.ndarray],
               models: Mapping[str, tuple[Adapter, Any]]) -> dict[str, list[np.ndarray]]:
    """Each framework's layer ``l`` applied to ``inputs[l]``, after loading ``weights``."""
    outputs = {}
    for label, (adapter, model) in models.items():
        adapter.set_weights(model, weights)
        outputs[label] = adapter.layer_outputs(model, inputs)
    return outputs
