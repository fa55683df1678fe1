"""LiteRT (TensorFlow Lite): the Keras layer converted with ``tf.lite.TFLiteConverter`` and run by the
``ai-edge-litert`` interpreter, as a model shipped to a phone runs. Two registered frameworks: ``litert``
(float32 weights) and ``litert_fp16w`` (float16 weight quantisation: ``optimizations=[Optimize.DEFAULT]``,
``supported_types=[float16]``: the weights are stored as float16 and dequantised to float32 before float32
kernels, so it has its own error model: its registry entry's ``weights_dtype``).

Conversion goes through ``TFLiteConverter.from_keras_model`` (Keras 3 exports a SavedModel to a temporary
directory first: ~0.1 s a layer). ``from_concrete_functions`` of a ``tf.function`` calling the layer converts
without complaint with Keras 3.15 and TF 2.21 but reads the Keras variables as uninitialised resources: NaN or
garbage outputs (measured), so it is not used. The interpreter runs with its default op resolver, which
applies the XNNPACK delegate on CPU, on one thread.

A layer is converted once, with a probe pattern of weights (distinct non-zero values exact in float16: the
converter drops an all-zero bias, so the current weights cannot be trusted to keep the graph's form); when its
``FULLY_CONNECTED`` buffers hold exactly the probe, they are rewritten in place with the layer's current
weights, in the converter's layout (``(out, in)``) and storage dtype, which is what converting again writes
(``tests/frameworks/test_litert.py`` compares the buffers and the outputs), and a new interpreter is made from the
bytes. When they do not (the converter folds ``hard_sigmoid``'s ``+3`` into the bias), each weight change is a
new conversion. ``forward`` of a built model converts the whole model with its weights, as a user would.

LiteRT's builtin ops take float32 here: the converter has no float64 or float16 ``MatMul`` builtin and takes
no bfloat16 input. ``cannot`` measures each (activation, dtype) once per process (a one-unit layer converted
and run) and names what was refused, with the LiteRT and TensorFlow versions.
"""

from __future__ import annotations

import contextlib
import io
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ai_edge_litert
import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.python.convert_phase import ConverterError

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights
from equivalence.frameworks.base import FrameworkRefused
from equivalence.frameworks.keras import ACTIVATIONS
from equivalence.frameworks.keras.tensorflow import TensorFlowKeras

THREADS = 1
_OPS = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_NOT_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_NO_INPUT_TYPE = re.compile(r"Unsupported TensorFlow type `<dtype: '(\w+)'>` provided for the input type")


def refusal(exc: Exception, dtype: str) -> str:
    """The converter's or interpreter's error as one line naming what LiteRT lacks."""
    message = " ".join(str(exc).split())
    versions = f"LiteRT {ai_edge_litert.__version__}, TFLiteConverter of TensorFlow {tf.__version__}"
    op = _NOT_BUILTIN.search(message)
    if op:
        return f"no {dtype} {op.group(1)} among LiteRT's builtin ops (the converter refuses it; {versions})"
    typed = _NO_INPUT_TYPE.search(message)
    if typed:
        return f"the converter takes no {typed.group(1)} model input ({versions})"
    return f"{versions}: {type(exc).__name__}: {message[:200]}"


def probe_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct-looking, non-zero values exact in float16 (1 + k/1024, random signs): what a layer is converted
    with, so the converter keeps its bias and the buffers can be found and checked."""
    rng = np.random.default_rng(n_in * 7919 + n_out)
    values = (1 + rng.integers(1, 1024, size=n_in * n_out + n_out) / 1024) * rng.choice([-1.0, 1.0], size=n_in *
                                                                                        n_out + n_out)
    return values[: n_in * n_out].reshape(n_in, n_out), values[n_in * n_out:]


@dataclass(eq=False)
class Converted:
    """A layer's flatbuffer and where its weights live in it."""

    flat: bytearray
    rewritable: bool
    """Its ``FULLY_CONNECTED`` buffers held exactly the probe weights: new weights are written into them. False:
    the converter folded something into them (``hard_sigmoid``'s ``+3`` into the bias), so every weight change
    is a new conversion with the layer's weights."""
    interpreter: Any = field(default=None, repr=False)
    """Made from ``flat`` holding the current weights; None: stale."""


def _buffer_view(model: Any, graph: Any, tensor_index: int, flat: bytearray) -> np.ndarray:
    tensor = graph.Tensors(tensor_index)
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}.get(tensor.Type())
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if dtype is None or isinstance(data, int):
        raise FrameworkRefused(f"the converter wrote a Dense layer's constant as tensor type {tensor.Type()} "
                               "without data; the LiteRT adapter knows float32 and float16 constants")
    return data.view(dtype).reshape(tuple(tensor.ShapeAsNumpy()))


def locate_weights(flat: bytearray) -> tuple[np.ndarray, np.ndarray | None]:
    """Views into ``flat`` of the ``FULLY_CONNECTED`` weight and bias buffers (read through a ``DEQUANTIZE`` when
    quantised). The converter may write several ``FULLY_CONNECTED`` ops for one layer (``celu``: one with a fused
    ReLU, one without), all reading the same constants."""
    model = schema.Model.GetRootAs(flat, 0)
    graph = model.Subgraphs(0)
    producer, constants = {}, set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = _OPS.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        producer.update({op.Outputs(j): (name, op) for j in range(op.OutputsLength())})
        if name == "FULLY_CONNECTED":
            constants.add(tuple(op.Inputs(j) if j < op.InputsLength() else -1 for j in (1, 2)))
    if len(constants) != 1:
        raise FrameworkRefused(f"the converter wrote {len(constants)} different FULLY_CONNECTED constants for one "
                               "Dense layer; the LiteRT adapter knows one")
    views = []
    for tensor in constants.pop():
        if tensor < 0:
            views.append(None)
            continue
        name, op = producer.get(tensor, (None, None))
        if name == "DEQUANTIZE":
            tensor = op.Inputs(0)
        elif name is not None:
            raise FrameworkRefused(f"the converter computes a Dense constant with {name}; the LiteRT adapter "
                                   "knows stored or dequantised constants")
        views.append(_buffer_view(model, graph, tensor, flat))
    return views[0], views[1]


def holds(views: tuple[np.ndarray | None, np.ndarray | None], W: np.ndarray, b: np.ndarray | None) -> bool:
    """Whether the buffers hold exactly ``W`` (as ``(out, in)``) and ``b``, in their storage dtype."""
    for view, want in zip(views, (np.asarray(W).T, b)):  # not native_kernel: the writer is what is checked
        if (view is None) != (want is None):
            return False
        if view is not None and (view.shape != want.shape or not np.array_equal(view, want.astype(view.dtype))):
            return False
    return True


def _quiet_convert(converter: Any) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' export prints "Saved artifact at ..."
        return converter.convert()


class LiteRTKeras(TensorFlowKeras):
    """Each Keras layer converted to a LiteRT flatbuffer (float32 weights) and run by LiteRT's interpreter."""

    name = "litert"
    kernel_layout = "out_in"
    chain_builder = False  # its layers converted: a chain built here would run on Keras

    def __init__(self) -> None:
        super().__init__()
        self._converted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._gaps: dict[tuple[str, str], str | None] = {}

    @property
    def variant(self) -> str:
        return f"keras/tensorflow-litert{'-fp16w' if self.weights_dtype == 'float16' else ''}"

    # --- conversion and interpreters -----------------------------------------------------------
    def convert(self, model: keras.Model) -> bytes:
        """``model`` as a LiteRT flatbuffer, converted the way a user ships it; ``FrameworkRefused`` if refused."""
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if self.weights_dtype == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            return _quiet_convert(converter)
        except (ConverterError, ValueError) as exc:  # ValueError: an input type the converter does not take
            raise FrameworkRefused(refusal(exc, model.inputs[0].dtype)) from exc

    def interpreter(self, flat: bytes | bytearray, dtype: str) -> Any:
        try:
            interpreter = Interpreter(model_content=bytes(flat), num_threads=THREADS)
            interpreter.allocate_tensors()
            return interpreter
        except (RuntimeError, ValueError) as exc:
            raise FrameworkRefused(refusal(exc, dtype)) from exc

    def _run(self, interpreter: Any, x: np.ndarray, dtype: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=numpy_dtype(dtype))
        try:
            [given] = interpreter.get_input_details()
            if tuple(given["shape"]) != x.shape:
                interpreter.resize_tensor_input(given["index"], x.shape)
                interpreter.allocate_tensors()
            interpreter.set_tensor(given["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
        except (RuntimeError, ValueError) as exc:
            raise FrameworkRefused(refusal(exc, dtype)) from exc

    def _convert_layer(self, layer: keras.layers.Dense, weights: LayerWeights | None = None) -> bytearray:
        """The layer alone as a flatbuffer, converted with ``weights`` (then its own restored), or its own."""
        saved = None
        if weights is not None:
            saved = [self.to_numpy(v).copy() for v in (layer.kernel, layer.bias) if v is not None]
            for variable, value in zip((layer.kernel, layer.bias), weights):
                if variable is not None:
                    self.assign(variable, value)
        try:
            return bytearray(self.convert(keras.Sequential([keras.Input((layer.kernel.shape[0],),
                                                                        dtype=layer.dtype), layer])))
        finally:
            if saved is not None:
                for variable, value in zip((layer.kernel, layer.bias), saved):
                    self.assign(variable, value)

    def _layer(self, layer: keras.layers.Dense) -> Converted:
        """The layer's conversion holding its current weights: converted once with the probe weights and
        rewritten after, or converted again with them when the converter folds something into its buffers."""
        converted = self._converted.get(layer)
        if converted is None:
            probe = LayerWeights(*probe_weights(*layer.kernel.shape))
            probe = LayerWeights(probe.W, probe.b if layer.bias is not None else None)
            flat = self._convert_layer(layer, probe)
            converted = self._converted[layer] = Converted(flat, holds(locate_weights(flat), *probe))
        if converted.interpreter is None:
            W, b = self.to_numpy(layer.kernel), None if layer.bias is None else self.to_numpy(layer.bias)
            if converted.rewritable:
                self._write(locate_weights(converted.flat), W, b)
            else:
                self._check_range(W, b)
                converted.flat = self._convert_layer(layer)
            converted.interpreter = self.interpreter(converted.flat, layer.dtype)
        return converted

    def _check_range(self, W: np.ndarray, b: np.ndarray | None) -> None:
        if self.weights_dtype != "float16":
            return
        largest = max(float(np.max(np.abs(W), initial=0.0)), 0.0 if b is None else float(np.max(np.abs(b),
                                                                                               initial=0.0)))
        if largest > float(np.finfo(np.float16).max):
            raise FrameworkRefused(f"float16 weight quantisation: a weight of magnitude {largest:.4g} overflows "
                                   "float16 (largest 65504)")

    def _write(self, views: tuple[np.ndarray, np.ndarray | None], W: np.ndarray, b: np.ndarray | None) -> None:
        """The canonical ``W (in, out)`` and ``b`` into the buffers, as the converter stores them."""
        self._check_range(W, b)
        for view, value in zip(views, (native_kernel(W), b)):
            if view is not None:
                view[...] = value.astype(view.dtype)

    # --- the adapter ---------------------------------------------------------------------------
    def cannot(self, activation: str, dtype: str) -> str | None:
        """Measured once per (activation, dtype) in this process: a one-unit layer converted and run (a dtype
        whose linear layer is refused is refused for every activation, without converting each)."""
        key = (activation, dtype)
        if key not in self._gaps:
            whole = self.cannot("linear", dtype) if activation != "linear" else None
            if whole:
                self._gaps[key] = whole
            else:
                layer = self.build_layer(1, 1, activation, bias=True, dtype=dtype)
                try:
                    self.apply_layer([layer], 0, np.zeros((1, 1), dtype=numpy_dtype(dtype)))
                    self._gaps[key] = None
                except FrameworkRefused as exc:
                    self._gaps[key] = str(exc)
        return self._gaps[key]

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        super().set_weights(model, weights)
        for layer in self.dense_layers(model):
            if layer in self._converted:
                self._converted[layer].interpreter = None
        if not isinstance(model, list):
            self._models.pop(model, None)

    def get_weights(self, model: Any) -> list[LayerWeights]:
        """What was written, canonical (the Keras layers' variables); ``native_weights``: what LiteRT stores."""
        return [LayerWeights(W, b) for W, b in super().native_weights(model)]

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The weights in the flatbuffer: ``FULLY_CONNECTED``'s ``(out, in)`` weight and its bias, in the storage
        dtype (float16 for ``litert_fp16w``)."""
        out = []
        for layer in self.dense_layers(model):
            W, b = locate_weights(self._layer(layer).flat)
            out.append((W.copy(), None if b is None else b.copy()))
        return out

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        layer = self.dense_layers(model)[index]
        return self._run(self._layer(layer).interpreter, x, layer.dtype)

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        interpreter = self._models.get(model)
        dtype = self.dense_layers(model)[0].dtype
        if interpreter is None:
            interpreter = self._models[model] = self.interpreter(self.convert(model), dtype)
        return self._run(interpreter, x, dtype)

    def forget_compiled(self) -> None:
        """Meta tests patch Keras; a conversion keeps the ops traced before the patch."""
        self._converted.clear()
        self._models.clear()

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        """The activation alone, converted (a Keras ``Activation`` layer) and run by LiteRT."""
        fn = keras.activations.get(ACTIVATIONS[name]) if isinstance(ACTIVATIONS[name], str) else ACTIVATIONS[name]
        x = np.asarray(x, dtype=np.float64).astype(numpy_dtype(dtype))
        flat = x.reshape(1, -1) if x.ndim < 2 else x
        model = keras.Sequential([keras.Input((flat.shape[-1],), dtype=dtype), keras.layers.Activation(fn)])
        out = self._run(self.interpreter(self.convert(model), dtype), flat, dtype)
        return out.reshape(x.shape).astype(np.float64)

    def backend_versions(self) -> dict[str, str]:
        return {**super().backend_versions(), "ai_edge_litert": ai_edge_litert.__version__,
                "litert_converter": f"tf.lite.TFLiteConverter.from_keras_model, TensorFlow {tf.__version__}",
                "litert_weights": self.weights_dtype,
                "litert_op_resolver": "AUTO (builtin ops, XNNPACK delegate)", "litert_threads": str(THREADS)}


class LiteRTFloat16WeightsKeras(LiteRTKeras):
    """The same, converted with float16 weight quantisation: float16 weights, float32 compute."""

    name = "litert_fp16w"


def native_kernel(W: np.ndarray) -> np.ndarray:
    """The canonical ``(in, out)`` kernel as ``FULLY_CONNECTED`` stores it: ``(out, in)``."""
    return np.asarray(W).T
