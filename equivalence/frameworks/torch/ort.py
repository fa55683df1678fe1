"""ONNX Runtime: the torch stack exported with ``torch.onnx.export`` and run by ORT's CPU execution provider.

What users ship: each layer (``nn.Linear`` + its activation module, as the torch adapter builds it) goes
through torch's TorchScript exporter (``dynamo=False``: 0.09 s the first time, then ~7 ms a layer; the dynamo
exporter took 6.7 s on first use) at ``OPSET``, and ORT runs the graph with its default optimisations (which
fuse ``Gemm`` with some activations). Weights are the graph's initializers, as in an exported model, so a
weight change means a new export and a new session; sessions are cached per layer until the weights change.

ORT's CPU kernels come in (op, dtype) pairs: float64 lacks ``Erf``, ``Elu``, ``Softplus``..., float16 lacks
``Celu`` and bfloat16 has no ``Gemm`` at all. ``cannot`` finds each gap by building a one-unit layer of that
activation and dtype once per process (measured, never a table), and names the op ORT refused ("no float64
Erf kernel in ORT 1.32.0"). An ORT error mid-run becomes ``FrameworkRefused``.

The weights live in the torch layers the graphs are exported from: ``set_weights`` goes through the torch
adapter (the only transpose), and ``native_weights`` reads the exported initializers (``Gemm`` with
``transB=1``: ``(out, in)``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights, check_weights
from equivalence.core.spec import StackSpec
from equivalence.frameworks.base import Adapter, FrameworkRefused, ParamCount
from equivalence.frameworks.ort_errors import ORT_ERRORS
from equivalence.frameworks.ort_errors import refusal as ort_refusal
from equivalence.frameworks.torch import TORCH_DTYPES, TorchAdapter, activation_module

OPSET = 20
"""The ONNX opset exported to: the newest ``torch.onnx.export(dynamo=False)`` writes with torch 2.13."""
PROVIDER = "CPUExecutionProvider"
THREADS = 1


@dataclass(eq=False)
class OrtLayer:
    """One dense layer: the torch layer holding its weights, and the ORT session of its export (None: stale)."""

    linear: nn.Linear
    activation: nn.Module
    name: str
    session: Any = field(default=None, repr=False)
    graph: Any = field(default=None, repr=False)
    """The layer's export (exported once): a weight change rewrites its ``Gemm`` initializers, which is what
    exporting again would write (``test_runtimes`` checks the bytes), at a fraction of the cost."""

    @property
    def module(self) -> nn.Sequential:
        return nn.Sequential(self.linear, self.activation)


@dataclass(eq=False)
class OrtStack:
    """A built model: its layers, and the session of the whole stack exported as one graph (``forward``)."""

    layers: list[OrtLayer]
    session: Any = field(default=None, repr=False)


def _layers(model: OrtStack | list[OrtLayer]) -> list[OrtLayer]:
    if isinstance(model, OrtStack):
        return model.layers
    if isinstance(model, list) and all(isinstance(layer, OrtLayer) for layer in model):
        return model
    raise TypeError(f"the ORT adapter does not know how to walk a {type(model).__name__}")


def refusal(exc: Exception, dtype: str) -> str:
    """ORT's error as one line naming what it lacks: "no float64 Erf kernel in ORT 1.32.0 (CPU)"."""
    return ort_refusal(exc, dtype, OPSET)


class OnnxRuntimeAdapter(Adapter):
    name = "ort"
    kernel_layout = "out_in"

    def __init__(self) -> None:
        self._torch = TorchAdapter()
        self._gaps: dict[tuple[str, str], str | None] = {}
        self.options = ort.SessionOptions()
        self.options.log_severity_level = 3  # ORT's own warnings (e.g. unused initializers) go to stderr
        # One intra-op thread: a session's own thread pool costs ~20 ms to create (0.6 ms without), and every
        # weight change is a new session. The thread count does not change ORT's bits
        # (tests/frameworks/test_runtimes.py).
        self.options.intra_op_num_threads = THREADS

    # --- export and sessions -------------------------------------------------------------------
    def export(self, module: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
        """``module`` as an ONNX graph (batch axis dynamic), exported the way a user ships it."""
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        return onnx.load_from_string(buffer.getvalue())

    def session(self, graph: onnx.ModelProto, dtype: str) -> Any:
        """An ORT session of ``graph`` on the CPU provider; ``FrameworkRefused`` when ORT cannot run it."""
        try:
            return ort.InferenceSession(graph.SerializeToString(), self.options, providers=[PROVIDER])
        except ORT_ERRORS as exc:
            raise FrameworkRefused(refusal(exc, dtype)) from exc

    def _layer_graph(self, layer: OrtLayer) -> onnx.ModelProto:
        """The layer's exported graph holding its current weights."""
        if layer.graph is None or layer.linear.weight.dtype == torch.bfloat16:  # numpy has no bfloat16: export
            weight = layer.linear.weight
            layer.graph = self.export(layer.module, torch.zeros(1, layer.linear.in_features, dtype=weight.dtype))
            return layer.graph
        graph = layer.graph
        node, transposed = _dense_node(graph)
        initializers = {init.name: init for init in graph.graph.initializer}
        weight = layer.linear.weight.detach().numpy()  # (out, in)
        values = [weight.T if transposed else weight]
        if layer.linear.bias is not None:
            values.append(layer.linear.bias.detach().numpy())
        for name, value in zip(node.input[1:], values):
            initializers[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return graph

    def _run(self, session: Any, x: np.ndarray, dtype: str) -> np.ndarray:
        try:
            return session.run(None, {"x": np.ascontiguousarray(x, dtype=numpy_dtype(dtype))})[0]
        except ORT_ERRORS as exc:
            raise FrameworkRefused(refusal(exc, dtype)) from exc

    def cannot(self, activation: str, dtype: str) -> str | None:
        """Measured once per (activation, dtype) in this process: a one-unit layer exported and loaded."""
        key = (activation, dtype)
        if key not in self._gaps:
            layer = self.build_layer(1, 1, activation, bias=True, dtype=dtype)
            try:
                self.session(self._layer_graph(layer), dtype)
                self._gaps[key] = None
            except FrameworkRefused as exc:
                self._gaps[key] = str(exc)
        return self._gaps[key]

    # --- the adapter ---------------------------------------------------------------------------
    def build(self, spec: StackSpec, style: str) -> OrtStack:
        self.check_style(style)
        return OrtStack([self.build_layer(i, o, act, bias=spec.bias, dtype=spec.dtype)
                         for (i, o), act in zip(spec.layer_shapes, spec.activations)])

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> OrtLayer:
        linear, act = self._torch.build_layer(n_in, n_out, activation, bias=bias, dtype=dtype)
        return OrtLayer(linear, act, activation)

    def get_weights(self, model: Any) -> list[LayerWeights]:
        return self._torch.get_weights([(layer.linear, layer.activation) for layer in _layers(model)])

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = _layers(model)
        linears = [layer.linear for layer in layers]
        check_weights([(lin.in_features, lin.out_features) for lin in linears],
                      [lin.bias is not None for lin in linears], weights, what=f"{self.name} set_weights")
        self._torch.set_weights([(layer.linear, layer.activation) for layer in layers], weights)
        for layer in layers:
            layer.session = None
        if isinstance(model, OrtStack):
            model.session = None

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The exported initializers, the weight as ``Gemm`` stores it (``transB=1``: ``(out, in)``); a layer
        without bias is a ``MatMul`` whose ``(in, out)`` initializer is given transposed, in the same layout."""
        out = []
        for layer in _layers(model):
            graph = self._layer_graph(layer)
            values = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
            node, transposed = _dense_node(graph)
            W = values[node.input[1]]
            out.append((W.T if transposed else W, values[node.input[2]] if len(node.input) > 2 else None))
        return out

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        layer = _layers(model)[index]
        dtype = _dtype_name(layer.linear.weight)
        if layer.session is None:
            layer.session = self.session(self._layer_graph(layer), dtype)
        return self._run(layer.session, x, dtype)

    def model_forward(self, model: OrtStack, x: np.ndarray) -> np.ndarray:
        layers = _layers(model)
        dtype = _dtype_name(layers[0].linear.weight)
        stack = model
        if stack.session is None:
            whole = nn.Sequential(*[m for layer in layers for m in (layer.linear, layer.activation)])
            example = torch.zeros(1, layers[0].linear.in_features, dtype=layers[0].linear.weight.dtype)
            stack.session = self.session(self.export(whole, example), dtype)
        return self._run(stack.session, x, dtype)

    def count_params(self, model: Any) -> ParamCount:
        """What the exported graphs hold: their initializers (ORT has no notion of trainable)."""
        per_layer, tensors = [], 0
        for W, b in self.native_weights(model):
            per_layer.append(W.size + (0 if b is None else b.size))
            tensors += 1 + (b is not None)
        return ParamCount(tuple(per_layer), sum(per_layer), tensors)

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).astype(numpy_dtype(dtype))
        flat = x.reshape(1, -1) if x.ndim < 2 else x
        graph = self.export(activation_module(name), torch.zeros(1, flat.shape[-1], dtype=TORCH_DTYPES[dtype]))
        return self._run(self.session(graph, dtype), flat, dtype).reshape(x.shape).astype(np.float64)

    def versions(self) -> dict[str, str]:
        """Versions (ORT, onnx, the opset, the exporting torch) and what chooses kernels: the execution provider,
        the graph optimisation level (it decides the fusions) and the intra-op threads (0: one per core)."""
        return {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "onnx_opset": str(OPSET),
                "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
                "ort_provider": PROVIDER,
                "ort_graph_optimization": str(self.options.graph_optimization_level).rsplit(".", 1)[-1],
                "ort_intra_op_threads": str(self.options.intra_op_num_threads)}


def _dense_node(graph: onnx.ModelProto) -> tuple[onnx.NodeProto, bool]:
    """The exported layer's matmul and whether its weight initializer is ``(in, out)``.

    torch's exporter writes ``Gemm(x, W, b, transB=1)`` (``W`` as torch stores it, ``(out, in)``) for a layer
    with a bias, and ``MatMul(x, W.T)`` (the initializer ``(in, out)``) for one without.
    """
    for node in graph.graph.node:
        if node.op_type == "Gemm":
            if next((a.i for a in node.attribute if a.name == "transB"), 0) != 1:
                raise FrameworkRefused("torch.onnx.export wrote a Gemm without transB=1; the ORT adapter knows "
                                       "no other form")
            return node, False
        if node.op_type == "MatMul":
            return node, True
    raise FrameworkRefused("torch.onnx.export wrote neither Gemm nor MatMul for a Linear layer")


def _dtype_name(t: torch.Tensor) -> str:
    return {v: k for k, v in TORCH_DTYPES.items()}[t.dtype]
