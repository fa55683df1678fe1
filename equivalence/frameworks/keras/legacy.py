"""Keras 2 (the ``tf-keras`` package, TensorFlow's ``TF_USE_LEGACY_KERAS=1``): the ``keras`` framework's Keras 2
variant, ``keras2/tensorflow``.

Keras 2 is what ``tf.keras`` was up to TensorFlow 2.15 and still is under ``TF_USE_LEGACY_KERAS=1``; upgrading
from it to Keras 3 is the largest move a Keras user makes. It runs only on TensorFlow. Chosen in one place,
``equivalence.frameworks.keras.variant.adapter``. The adapter is the Keras 3 adapter on TensorFlow driving the
``tf_keras`` module (so Keras 3 is imported too, for its class; every layer and model is Keras 2's).

What differs from the Keras 3 adapter: no ``keras.ops`` (TensorFlow's own ops instead), variables written with
``assign``, ``clear_session`` has no ``free_memory``, no bfloat16 in its HDF5 files, and the activation table.
Keras 2 has no ``celu``, ``hard_silu`` or ``log_softmax`` activation (``cannot`` lists them, so ``verify``
and ``report`` say "not run: ..."), writes ``relu6`` and ``leaky_relu`` as ``relu(max_value=6)`` and
``relu(alpha=...)``, ``silu`` as ``swish``, and defines ``hard_sigmoid`` otherwise (``clip(0.2 z + 0.5, 0, 1)``:
the named difference ``keras2_hard_sigmoid_slope_0_2``).
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from equivalence.core.activations import LEAKY_SLOPE, activation_name, family_of  # noqa: E402
from equivalence.core.dtypes import numpy_dtype  # noqa: E402
from equivalence.core.tokens import is_sequence  # noqa: E402
from equivalence.core.walk import DenseUnit, ModelNotSupported, attach_activation, check_chain  # noqa: E402
from equivalence.frameworks.base import FrameworkRefused  # noqa: E402
from equivalence.frameworks.keras import activation_from, dense_stack_class, legacy_kinds  # noqa: E402
from equivalence.frameworks.keras.tensorflow import TensorFlowKeras  # noqa: E402

activations = tf_keras.activations
FRAMEWORK = "keras"


def _registered(name: str, fn: Any) -> Any:
    """A named, registered activation, so ``.keras`` files reload it in safe mode."""
    fn.__name__ = fn.__qualname__ = name
    return tf_keras.saving.register_keras_serializable(package="equivalence", name=name)(fn)


LACKS = ("celu", "hard_silu", "log_softmax")
"""Activations (and parametric families) Keras 2 has no activation for."""

ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "linear": "linear",
    "softmax": _registered("softmax_last_axis", lambda x: activations.softmax(x, axis=-1)),
    "gelu": _registered("gelu_exact", lambda x: activations.gelu(x, approximate=False)),
    "gelu_tanh": _registered("gelu_tanh", lambda x: activations.gelu(x, approximate=True)),
    "elu": _registered("elu_alpha_1", lambda x: activations.elu(x, alpha=1.0)),
    "selu": "selu",
    "silu": "swish",
    "softplus": "softplus",
    "softsign": "softsign",
    "relu6": _registered("relu6", lambda x: activations.relu(x, max_value=6.0)),
    "hard_sigmoid": "hard_sigmoid",
    "leaky_relu_0.2": _registered("leaky_relu_0_2", lambda x: activations.relu(x, alpha=LEAKY_SLOPE)),
    "mish": "mish",
}

_PARAMETRIC = {
    "leaky_relu": lambda p: (lambda x: activations.relu(x, alpha=p)),
    "elu": lambda p: (lambda x: activations.elu(x, alpha=p)),
    "softmax_axis": lambda p: (lambda x: activations.softmax(x, axis=int(p))),
}
PARAMETRIC_ACTIVATIONS: dict[str, Any] = {}


def _family(name: str) -> str:
    return name if name in ACTIVATIONS or name in LACKS else family_of(name)[0]


def keras2_activation(name: str) -> Any:
    """The Keras 2 activation of ``name`` (``KeyError`` for one Keras 2 lacks: ask ``cannot`` first)."""
    return activation_from(name, ACTIVATIONS, _PARAMETRIC, PARAMETRIC_ACTIVATIONS, _registered)


DenseStack = dense_stack_class(tf_keras.Model)


class LegacyKerasAdapter(TensorFlowKeras):
    """Keras 2 (tf-keras) on TensorFlow: the Keras adapter on the ``tf_keras`` module, the ``keras`` framework's
    ``keras2/tensorflow`` variant. Only what differs from Keras 3 on TensorFlow is here."""

    keras = tf_keras
    chain_builder = False  # the walker reads Keras 3 models
    label = "Keras 2"
    stack_class = DenseStack

    @property
    def variant(self) -> str:
        return "keras2/tensorflow"

    def lacks(self, activation: str) -> str | None:
        family = _family(activation)
        return f"keras {tf_keras.__version__} (tf-keras, Keras 2) has no {family} activation" if family in LACKS \
            else None

    def keras_activation(self, name: str) -> Any:
        return keras2_activation(name)

    def clear_session(self) -> None:
        """Keras 2 has no cheap ``free_memory=False`` form."""
        tf_keras.backend.clear_session()

    def to_tensor(self, x: Any, dtype: str | None = None) -> Any:
        return tf.convert_to_tensor(x, dtype=dtype)

    def cast(self, value: Any, dtype: str) -> Any:
        return tf.cast(value, dtype)

    def mean(self, y: Any) -> Any:
        return tf.reduce_sum(y) / int(np.prod(y.shape))  # in y's dtype, as mean_in_dtype

    def assign(self, variable: Any, value: np.ndarray) -> None:
        variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))

    def save_model(self, model: Any, path: str | os.PathLike) -> None:
        if "bfloat16" in {layer.dtype for layer in self.dense_layers(model)}:
            # measured: ValueError "No cast function available" from h5py, the file half written
            raise FrameworkRefused(f"keras {tf_keras.__version__} (tf-keras, Keras 2) cannot save bfloat16 weights: "
                                   "its HDF5 writer (h5py) has no bfloat16")
        super().save_model(model, path)

    def backend_versions(self) -> dict[str, str]:
        return {"keras_package": "tf-keras", **super().backend_versions()}


# --- a user's own Keras 2 model (``equivalence.own``): walked into dense units, read, never written ---------------

def _walk_functions() -> dict[Any, str]:
    """Keras 2 activation functions -> the name; the suite's own registered ones too (for ``.keras`` files)."""
    a = activations
    table = {a.relu: "relu", a.sigmoid: "sigmoid", a.tanh: "tanh", a.linear: "linear", a.selu: "selu",
             a.swish: "silu", a.softplus: "softplus", a.softsign: "softsign", a.hard_sigmoid: "hard_sigmoid",
             a.mish: "mish", a.softmax: "softmax", a.elu: "elu", a.gelu: "gelu"}
    table.update({activations.get(fn) if isinstance(fn, str) else fn: name for name, fn in ACTIVATIONS.items()})
    table.update({fn: name for name, fn in PARAMETRIC_ACTIVATIONS.items()})
    return table


def _walk_activation(fn: Any) -> str:
    if isinstance(fn, str):
        fn = activations.get(fn)
    name = _walk_functions().get(fn)
    if name is None:
        raise _Refused(f"activation {getattr(fn, '__name__', fn)!r} is not one the suite knows (pass a Keras "
                       "activation, or a separate activation layer)")
    return name


class _Refused(Exception):
    """Raised inside a mapping; turned into ``ModelNotSupported`` with the layer's name and position."""


def _walk_layer(layer: Any) -> str | None:
    """The activation of a Keras 2 activation layer; None for one skipped at inference; KeyError otherwise."""
    L = tf_keras.layers
    if isinstance(layer, (L.Dropout, L.Flatten, L.InputLayer)):
        return None
    if type(layer) is L.Activation:
        return _walk_activation(layer.activation)
    if type(layer) is L.ReLU:
        if layer.threshold != 0 or layer.max_value is not None:
            raise _Refused(f"ReLU(max_value={layer.max_value}, threshold={layer.threshold}) is not judged")
        slope = float(layer.negative_slope)
        return "relu" if slope == 0 else activation_name("leaky_relu", slope)
    if type(layer) is L.LeakyReLU:
        return activation_name("leaky_relu", float(layer.alpha))
    if type(layer) is L.ELU:
        return activation_name("elu", float(layer.alpha))
    if type(layer) is L.Softmax:
        return activation_name("softmax_axis", layer.axis)
    raise KeyError(type(layer).__name__)


def _walk_chain(model: Any) -> list[Any]:
    """The layers of a Sequential or functional Keras 2 model in execution order, nested models expanded; a
    subclassed model records no order, and a branch is not judged."""
    if isinstance(model, tf_keras.Sequential):
        layers = list(model.layers)
    elif getattr(model, "_is_graph_network", False):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                                    "takes or returns more than one tensor; the suite judges a chain of layers")
        layers, tensor = [], model.outputs[0]
        while tensor is not model.inputs[0]:
            layer, node_index, _ = tensor._keras_history
            inputs = tf.nest.flatten(layer._inbound_nodes[node_index].keras_inputs)
            if len(inputs) != 1:
                raise ModelNotSupported(FRAMEWORK, layer.name, type(layer).__name__, None,
                                        f"a branch: it takes {len(inputs)} tensors (concatenations are not "
                                        "judged; residual connections are in Keras 3 models, not yet in Keras 2's)")
            layers.append(layer)
            tensor = inputs[0]
        layers.reverse()
    else:
        raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                                "a subclassed Keras 2 model: Keras 2 records no order of its layers' calls; build it "
                                "as a Sequential or functional model")
    return [inner for layer in layers
            for inner in (_walk_chain(layer) if isinstance(layer, tf_keras.Model) else [layer])]


OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")
"""The layers a functional Keras 2 model records for a TensorFlow op called on its tensors (``tf.matmul``,
``tf.math.add``...): what onnx2tf builds its models of, with the weights baked in as constants."""


def walk(model: Any, *, input_width: int | None = None) -> list[DenseUnit]:
    """The units of a Keras 2 ``model`` in execution order: its Dense layers and the kinds ``legacy_kinds`` reads
    (convolutions, pooling, norms, an Embedding, a mean over the tokens), each with the activation after it;
    ``ModelNotSupported`` names what cannot be judged. ``input_width`` is not needed: a Sequential or functional
    Keras 2 model knows its input. A model of TensorFlow ops (``TFOpLambda`` layers) is read as a graph
    (``op_graph``)."""
    if not isinstance(model, tf_keras.Model):
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                "is not a tf_keras.Model (Keras 2 runs here: TF_USE_LEGACY_KERAS=1)")
    if any(type(layer).__name__ in OP_LAYERS for layer in model._flatten_layers(include_self=False)):
        from equivalence.frameworks.keras import saved_model_graph

        return saved_model_graph.walk(op_graph(model))
    units: list[DenseUnit] = []
    pending: dict[str, Any] | None = None
    sequence: bool | None = None  # the chain's value is a token sequence (an Embedding's output)
    for position, layer in enumerate(_walk_chain(model)):
        kind = type(layer).__name__

        def refuse(problem: str, layer: Any = layer, kind: str = kind, position: int = position) -> Exception:
            return ModelNotSupported(FRAMEWORK, layer.name, kind, position, problem)

        try:
            shape = _layer_input_shape(layer)
            layer_kind = None if shape is None else legacy_kinds.layer_kind(layer, shape, refuse,
                                                                            sequence=bool(sequence))
            if layer_kind is not None or type(layer) is tf_keras.layers.Dense:
                if not layer.built:
                    raise refuse("has no weights yet: build the model and give it its weights first")
                if pending is not None:
                    units.append(_pending_unit(pending))
                pending = _pending(layer, layer_kind, position, shape, bool(sequence), refuse)
                sequence = is_sequence(layer_kind, sequence)
                continue
            act = _walk_layer(layer)
        except _Refused as exc:
            raise refuse(str(exc)) from None
        except KeyError:
            raise refuse(f"not a layer or an activation the suite judges (it judges {legacy_kinds.JUDGED})") from None
        attach_activation(pending, act, f"{kind} {layer.name!r}", layer, refuse)
    if pending is not None:
        units.append(_pending_unit(pending))
    return check_chain(units, FRAMEWORK)


def _layer_input_shape(layer: Any) -> tuple[int, ...] | None:
    """One sample's input shape of a layer called once in the model, or None where Keras 2 does not record one
    (a layer never called on a symbolic input: a Dense of a model built with ``build``)."""
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(shape, tuple) or any(n is None for n in shape[1:]):
        return None
    return tuple(int(n) for n in shape[1:])


def input_shape(model: Any) -> tuple[int, ...] | None:
    """One sample's input shape as the Keras 2 model declares it (``tf_keras.Input``), or None."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or any(n is None for n in inputs[0].shape[1:]):
        return None
    return tuple(int(n) for n in inputs[0].shape[1:])


def _pending(layer: Any, layer_kind: Any, position: int, shape: tuple[int, ...] | None, sequence: bool,
             refuse: Any) -> dict[str, Any]:
    """The walk's pending unit of a Dense (``layer_kind`` None) or of a layer of a kind, before its activation."""
    if layer_kind is None and shape is not None and len(shape) > 1 and not sequence:
        raise refuse(f"a Dense on a {len(shape) + 1}-D tensor (per sample {shape}): the suite judges a Dense after "
                     "a Flatten, or on the (batch, tokens, features) sequence of an Embedding, token by token")
    act = _walk_activation(layer.activation) if layer_kind is None else \
        legacy_kinds.conv_activation(layer, _walk_activation)
    return {"position": position, "layer": layer, "name": layer.name, "act": act, "act_op": None,
            "layer_kind": layer_kind, "in_shape": shape or (),
            "act_source": "none" if act == "linear" else f"{type(layer).__name__}(activation={act!r})"}


def _pending_unit(p: dict[str, Any]) -> DenseUnit:
    return _walk_unit(p) if p["layer_kind"] is None else legacy_kinds.kind_unit(p)


def _walk_unit(p: dict[str, Any]) -> DenseUnit:
    dense, act_layer = p["layer"], p["act_op"]
    dtype = dense.compute_dtype
    if dtype not in ("float64", "float32", "float16", "bfloat16"):
        raise ModelNotSupported(FRAMEWORK, dense.name, "Dense", p["position"], f"computes in {dtype}")
    dt = numpy_dtype(dtype)
    native = dense.kernel.numpy().copy()
    b = None if dense.bias is None else dense.bias.numpy().astype(dt)

    def run(x: np.ndarray) -> np.ndarray:
        y = dense(tf.convert_to_tensor(x))
        return (y if act_layer is None else act_layer(y)).numpy()

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        dense.kernel.assign(np.asarray(W, dtype=dense.kernel.dtype.as_numpy_dtype))
        if dense.bias is not None and bias is not None:
            dense.bias.assign(np.asarray(bias, dtype=dense.bias.dtype.as_numpy_dtype))

    in_shape = tuple(p["in_shape"])
    return DenseUnit(FRAMEWORK, dense.name, "Dense", p["position"], native.astype(dt), b, native,
                     p["act"], p["act_source"], dtype, run, write, in_shape=in_shape,
                     out_shape=(*in_shape[:-1], native.shape[1]) if in_shape else ())


def op_graph(model: Any) -> Any:
    """A functional Keras 2 model of TensorFlow ops traced on its declared input and frozen, to be read as a graph
    (``saved_model_graph.walk``): MatMul, Add and the activations' ops, the weights as its constants."""
    from equivalence.frameworks.keras import saved_model_graph

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                                "takes or returns more than one tensor; the suite judges a chain of layers")
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return saved_model_graph.frozen(function, f"<tf_keras {model.name!r}>", "tf_keras ops")


def load_model(path: str) -> Any:
    """A ``.keras`` or Keras 2 ``.h5`` file loaded by Keras 2 with ``safe_mode=True``; ``ValueError`` with one line
    on anything else. An ``.h5`` holding a ``Lambda`` layer (Python bytecode, run on loading) is refused unread."""
    if str(path).endswith(".h5"):
        return _load_h5(path)
    if not str(path).endswith(".keras"):
        raise ValueError("not a .keras or .h5 file (model.save(path) with a .keras or .h5 suffix)")
    if not zipfile.is_zipfile(path):
        raise ValueError("not a .keras file: not a zip archive (random bytes, or a truncated file)")
    return _loaded(path)


def _loaded(path: str) -> Any:
    try:
        return tf_keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - zip, HDF5, config and deserialization errors come in many types
        raise ValueError(f"Keras 2 (tf-keras {tf_keras.__version__}) cannot load it "
                         f"({' '.join(str(exc).split())[:400]})") from None


def _load_h5(path: str) -> Any:
    import json

    import h5py

    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError as exc:
        raise ValueError(f"not a Keras 2 .h5 file: not HDF5 (random bytes, or a truncated file: {exc})") from None
    if config is None:
        raise ValueError("not a Keras 2 .h5 model: no model_config in it (a weights-only file? "
                         "model.save_weights writes those; save the model with model.save(path))")
    lambdas = sorted(_class_names(json.loads(config), "Lambda"))
    if lambdas:
        raise ValueError(f"holds Lambda layer {', '.join(map(repr, lambdas))}: Python bytecode, run when loaded, "
                         "is not loaded here (replace it with a Keras layer or a TensorFlow op)")
    return _loaded(path)


def _class_names(config: Any, wanted: str) -> set[str]:
    """The names of the layers of class ``wanted`` anywhere in a Keras model config."""
    found: set[str] = set()
    if isinstance(config, dict):
        if config.get("class_name") == wanted:
            found.add(str(config.get("config", {}).get("name", "?")))
        for value in config.values():
            found |= _class_names(value, wanted)
    elif isinstance(config, list):
        for value in config:
            found |= _class_names(value, wanted)
    return found
