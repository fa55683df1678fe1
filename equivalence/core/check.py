"""Run a case through framework models and compare every layer three ways."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from equivalence.core.adapter import Adapter, FrameworkRefused
from equivalence.core.case import Case
from equivalence.core.compare import Comparison, compare_layers
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import LayerTrace, layerwise_reference
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.walk import ModelNotSupported


def check_case(case: Case, models: Mapping[str, tuple[Adapter, Any]]) -> Comparison:
    """Load ``case.weights`` into every model, feed each layer the reference's input, compare.

    ``models`` maps a label (e.g. ``"torch"``) to ``(adapter, model)``; the label
    is what failure messages name.
    """
    traces = layerwise_reference(case.spec, case.weights, case.x)
    outputs = run_layers(case.weights, reference_inputs(case.spec, traces), models)
    return compare_layers(case.spec, case.weights, case.x, outputs, case_id=case.id, reference=traces)


def check_pooled(case: Case, adapters: Mapping[str, Adapter], pool: LayerPool) -> Comparison:
    """``check_case`` with each framework's model from ``pool`` (a dense stack's layers, or a chain's model),
    and a framework that cannot compute the case listed in ``not_run`` with its reason."""
    traces = layerwise_reference(case.spec, case.weights, case.x)
    outputs, not_run = run_available(case.spec, case.weights, reference_inputs(case.spec, traces), adapters,
                                     pool.model_for(case.spec, case.weights))
    return replace(compare_layers(case.spec, case.weights, case.x, outputs, case_id=case.id, reference=traces),
                   not_run=not_run)


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

    def chain(self, adapter: Adapter, spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[Any]:
        """The units of ``spec`` built as a model of ``adapter``'s framework (``Adapter.build_chain``), reused
        for every chain of the same kinds and parameter shapes, holding ``weights`` (written on every call).
        ``FrameworkRefused`` when the framework cannot build it, or its walker cannot read what it built."""
        key = ("chain", adapter.name, spec, tuple((np.shape(W), b is None) for W, b in weights))
        units = self._layers.get(key)
        if units is None:
            try:
                units = adapter.build_chain(spec, weights)
            except ModelNotSupported as exc:  # a gap of that framework's walker
                raise FrameworkRefused(str(exc)) from None
            if len(units) != spec.depth:
                raise FrameworkRefused(f"{adapter.name} built {len(units)} layers of the {spec.depth}-layer "
                                       f"chain {spec.id}")
            self.builds += 1
            self._layers[key] = units
            if len(self._layers) > self.size:
                self._layers.popitem(last=False)
            return units
        self._layers.move_to_end(key)
        for unit, (W, b) in zip(units, weights):
            if np.size(W):
                unit.write(W, b)
        return units

    def model_for(self, spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights]) -> Callable[[str, Adapter], Any]:
        """What ``run_available`` builds each framework's model with: pooled layers, or a pooled chain."""
        if isinstance(spec, ChainSpec):
            return lambda _, adapter: self.chain(adapter, spec, weights)
        return lambda _, adapter: self.stack(adapter, spec)


def reference_inputs(spec: StackSpec | ChainSpec, traces: Sequence[LayerTrace]) -> list[np.ndarray]:
    """The per-layer inputs every framework is fed: the reference chain rounded to the dtype (token ids as
    they are)."""
    dt = numpy_dtype(spec.dtype)
    return [t.x if np.issubdtype(t.x.dtype, np.integer) else t.x.astype(dt) for t in traces]


def why_not_run(adapter: Adapter, spec: StackSpec | ChainSpec) -> str | None:
    """Why ``adapter`` cannot compute ``spec`` here (an activation in a dtype it has no kernel for, a chain where
    it builds dense stacks only), or None."""
    for activation in dict.fromkeys(spec.activations):
        reason = adapter.cannot(activation, spec.dtype)
        if reason:
            return reason
    return adapter.chainless() if isinstance(spec, ChainSpec) else None


def run_available(spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights], inputs: Sequence[np.ndarray],
                  adapters: Mapping[str, Adapter], model_for: Callable[[str, Adapter], Any]
                  ) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """Each framework's per-layer outputs, and for each framework that cannot compute ``spec`` or refuses it
    mid-run (``FrameworkRefused``), the one-line reason instead: a case is "not run" there, never a traceback.
    For a chain of other kinds ``model_for`` gives units already holding ``weights`` (``LayerPool.model_for``)."""
    outputs, not_run = {}, {}
    for name, adapter in adapters.items():
        reason = why_not_run(adapter, spec)
        if reason:
            not_run[name] = reason
            continue
        try:
            if isinstance(spec, ChainSpec):
                outputs[name] = [np.asarray(unit.run(x)) for unit, x in zip(model_for(name, adapter), inputs)]
            else:
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
