"""Keras 2 (the ``tf-keras`` package, TensorFlow's ``TF_USE_LEGACY_KERAS=1``): the ``keras`` framework's Keras 2
variant, ``keras2/tensorflow``.

Keras 2 is what ``tf.keras`` was up to TensorFlow 2.15 and still is under ``TF_USE_LEGACY_KERAS=1``; upgrading
from it to Keras 3 is the largest move a Keras user makes. It runs only on TensorFlow. Chosen in one place,
``equivalence.frameworks.keras_variant.adapter``; it imports ``tf_keras`` and TensorFlow, never Keras 3.

What differs from the Keras 3 adapter: no ``keras.ops`` (TensorFlow's own ops instead), ``Dense.call`` has no
``training`` argument, ``clear_session`` has no ``free_memory``, and the activation table. Keras 2 has no
``celu``, ``hard_silu`` or ``log_softmax`` activation (``cannot`` lists them, so ``verify`` and ``report`` say
"not run: ..."), writes ``relu6`` and ``leaky_relu`` as ``relu(max_value=6)`` and ``relu(alpha=...)``, ``silu``
as ``swish``, and defines ``hard_sigmoid`` otherwise (``clip(0.2 z + 0.5, 0, 1)``: the named difference
``keras2_hard_sigmoid_slope_0_2``).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from equivalence.core.activations import LEAKY_SLOPE, activation_name, family_of  # noqa: E402
from equivalence.core.dtypes import numpy_dtype  # noqa: E402
from equivalence.core.layout import LayerWeights, check_weights  # noqa: E402
from equivalence.core.spec import StackSpec  # noqa: E402
from equivalence.core.types import Gradients  # noqa: E402
from equivalence.core.walk import DenseUnit, ModelNotSupported, attach_activation, check_chain  # noqa: E402
from equivalence.frameworks.base import Adapter, FrameworkRefused, ParamCount  # noqa: E402
from equivalence.frameworks.tensorflow_facts import tensorflow_versions  # noqa: E402

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
_parametric_cache: dict[str, Any] = {}


def _family(name: str) -> str:
    return name if name in ACTIVATIONS or name in LACKS else family_of(name)[0]


def keras2_activation(name: str) -> Any:
    """The Keras 2 activation of ``name`` (``KeyError`` for one Keras 2 lacks: ask ``cannot`` first)."""
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if name not in _parametric_cache:
        family, param = family_of(name)
        safe = "".join(c if c.isalnum() else "_" for c in name)
        _parametric_cache[name] = _registered(safe, _PARAMETRIC[family](param))
    return _parametric_cache[name]


CLEAR_EVERY = 200
"""Builds between two ``clear_session()`` calls (Keras 2 has no cheap ``free_memory=False`` form)."""


class DenseStack(tf_keras.Model):
    """A ``Model`` subclass holding its ``Dense`` layers in a list (Keras tracks lists)."""

    def __init__(self, dense_layers: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense_layers = list(dense_layers)

    def call(self, x: Any) -> Any:
        for layer in self.dense_layers:
            x = layer(x)
        return x


def _dense_layers(model: Any) -> list[Any]:
    if isinstance(model, list):
        layers = model
    elif isinstance(model, DenseStack):
        layers = list(model.dense_layers)
    elif isinstance(model, tf_keras.Model):
        layers = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]
    else:
        raise TypeError(f"keras2 adapter does not know how to walk a {type(model).__name__}")
    for i, layer in enumerate(layers):
        if not layer.built:
            raise ValueError(f"Keras 2 model is not built: Dense layer {i} ({layer.name}) has no weights yet. "
                             "Start the model with tf_keras.Input(shape=(n_in,)) or call model.build first")
    if not layers:
        raise ValueError("Keras 2 model has no Dense layers")
    return layers


class LegacyKerasAdapter(Adapter):
    """Keras 2 (tf-keras) on TensorFlow: the ``keras`` framework's ``keras2/tensorflow`` variant."""

    name = "keras"
    kernel_layout = "in_out"
    backend = "tensorflow"

    def __init__(self) -> None:
        self._builds = 0

    @property
    def variant(self) -> str:
        return "keras2/tensorflow"

    def cannot(self, activation: str, dtype: str) -> str | None:
        if _family(activation) in LACKS:
            return f"keras {tf_keras.__version__} (tf-keras, Keras 2) has no {_family(activation)} activation"
        return super().cannot(activation, dtype)

    def to_numpy(self, value: Any) -> np.ndarray:
        """A TensorFlow tensor or variable as a numpy array."""
        return value.numpy()

    # --- building --------------------------------------------------------------------------------
    def _dense(self, width: int, activation: str, *, bias: bool, dtype: str) -> Any:
        problem = self.cannot(activation, dtype)
        if problem:
            raise FrameworkRefused(problem)
        return tf_keras.layers.Dense(width, activation=keras2_activation(activation), use_bias=bias, dtype=dtype,
                                     kernel_initializer="zeros")

    def _count_build(self) -> None:
        self._builds += 1
        if self._builds % CLEAR_EVERY == 0:
            tf_keras.backend.clear_session()

    def build(self, spec: StackSpec, style: str) -> Any:
        self.check_style(style)
        self._count_build()
        dense = [self._dense(width, act, bias=spec.bias, dtype=spec.dtype)
                 for width, act in zip(spec.widths, spec.activations)]
        if style == "sequential":
            return tf_keras.Sequential([tf_keras.Input(shape=(spec.input_width,), dtype=spec.dtype), *dense])
        if style == "functional":
            inputs = tf_keras.Input(shape=(spec.input_width,), dtype=spec.dtype)
            h = inputs
            for layer in dense:
                h = layer(h)
            return tf_keras.Model(inputs, h)
        for layer, fan_in in zip(dense, spec.fan_ins):
            layer.build((None, fan_in))
        model = DenseStack(dense, dtype=spec.dtype)  # its own policy: the default float32 autocasts a float64 input
        model.build((None, spec.input_width))
        return model

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Any:
        self._count_build()
        layer = self._dense(n_out, activation, bias=bias, dtype=dtype)
        layer.build((None, n_in))
        return layer

    # --- weights ---------------------------------------------------------------------------------
    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [(layer.kernel.numpy().copy(), None if layer.bias is None else layer.bias.numpy().copy())
                for layer in _dense_layers(model)]

    def get_weights(self, model: Any) -> list[LayerWeights]:
        return [LayerWeights(W, b) for W, b in self.native_weights(model)]

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = _dense_layers(model)
        check_weights([tuple(layer.kernel.shape) for layer in layers],
                      [layer.bias is not None for layer in layers], weights, what=f"{self.name} set_weights")
        for layer, (W, b) in zip(layers, weights):
            layer.kernel.assign(np.asarray(W, dtype=layer.kernel.dtype.as_numpy_dtype))
            if b is not None:
                layer.bias.assign(np.asarray(b, dtype=layer.bias.dtype.as_numpy_dtype))

    # --- running ---------------------------------------------------------------------------------
    def run(self, block: Any, x: Any) -> Any:
        try:
            return block(tf.convert_to_tensor(x) if isinstance(x, np.ndarray) else x)
        except tf.errors.OpError as exc:
            raise FrameworkRefused(f"TensorFlow {tf.__version__}: {type(exc).__name__}: "
                                   f"{' '.join(str(exc.message).split())[:200]}") from exc

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        return self.run(_dense_layers(model)[index], x).numpy()

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        if isinstance(model, list):
            for layer in _dense_layers(model):
                x = self.run(layer, x)
            return x.numpy()
        return self.run(model, x).numpy()

    def count_params(self, model: Any) -> ParamCount:
        layers = _dense_layers(model)
        per_layer = tuple(layer.count_params() for layer in layers)
        if isinstance(model, list):
            return ParamCount(per_layer, sum(per_layer), sum(len(layer.trainable_variables) for layer in layers))
        return ParamCount(per_layer, total=model.count_params(), trainable_tensors=len(model.trainable_variables))

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        problem = self.cannot(name, dtype)
        if problem:
            raise FrameworkRefused(problem)
        fn = keras2_activation(name)
        fn = activations.get(fn) if isinstance(fn, str) else fn
        tensor = tf.convert_to_tensor(np.asarray(x, dtype=np.float64).astype(numpy_dtype(dtype)), dtype=dtype)
        return tf.cast(fn(tensor), tf.float64).numpy()

    # --- training --------------------------------------------------------------------------------
    def _autodiff(self, model: Any, x: np.ndarray) -> tuple[Any, list[Any], list[Any]]:
        layers = _dense_layers(model)
        variables = [v for layer in layers for v in (layer.kernel, layer.bias) if v is not None]
        t = tf.convert_to_tensor(x, dtype=layers[0].compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = self._call(model, t)
            loss = tf.reduce_sum(y) / int(np.prod(y.shape))  # in y's dtype, as the Keras 3 adapter's _mean
        dx, *grads = tape.gradient(loss, [t, *variables])
        return dx, grads, variables

    def loss_gradients(self, model: Any, x: np.ndarray) -> Gradients:
        layers = _dense_layers(model)
        dx, grads, _ = self._autodiff(model, x)
        out, it = [], iter(grads)
        for layer in layers:
            dW = next(it).numpy()
            out.append(LayerWeights(dW, None if layer.bias is None else next(it).numpy()))
        return Gradients(tuple(out), dx.numpy())

    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        _, grads, variables = self._autodiff(model, x)
        optimizer = tf_keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.0, nesterov=False)
        optimizer.apply_gradients(zip(grads, variables))

    @staticmethod
    def _call(model: Any, x: Any) -> Any:
        if isinstance(model, list):
            for layer in model:
                x = layer(x)
            return x
        return model(x)

    # --- files -----------------------------------------------------------------------------------
    def save(self, model: Any, path: str | os.PathLike) -> None:
        self.check_new_file(path)
        if isinstance(model, list):
            raise TypeError("keras save needs a built model (build), not a list of bare layers")
        name = os.fspath(path)
        dtypes = {layer.dtype for layer in _dense_layers(model)}
        if "bfloat16" in dtypes:  # measured: ValueError "No cast function available" from h5py, file half written
            raise FrameworkRefused(f"keras {tf_keras.__version__} (tf-keras, Keras 2) cannot save bfloat16 weights: "
                                   "its HDF5 writer (h5py) has no bfloat16")
        if name.endswith(".weights.h5"):
            model.save_weights(name)
        elif isinstance(model, DenseStack):
            raise ValueError("the subclass style has no get_config, so it cannot go to a .keras file; "
                             "save it as .weights.h5")
        else:
            model.save(name)

    def load(self, path: str | os.PathLike, spec: StackSpec, style: str) -> Any:
        self.check_style(style)
        name = os.fspath(path)
        if name.endswith(".weights.h5"):
            model = self.build(spec, style)
            model.load_weights(name)
            return model
        self._count_build()
        return tf_keras.saving.load_model(name, safe_mode=True)

    def versions(self) -> dict[str, str]:
        return {"keras": tf_keras.__version__, "keras_backend": self.backend, "variant": self.variant,
                "keras_package": "tf-keras", **tensorflow_versions()}


# --- a user's own Keras 2 model (``equivalence.own``): walked into dense units, read, never written ---------------

def _walk_functions() -> dict[Any, str]:
    """Keras 2 activation functions -> the name; the suite's own registered ones too (for ``.keras`` files)."""
    a = activations
    table = {a.relu: "relu", a.sigmoid: "sigmoid", a.tanh: "tanh", a.linear: "linear", a.selu: "selu",
             a.swish: "silu", a.softplus: "softplus", a.softsign: "softsign", a.hard_sigmoid: "hard_sigmoid",
             a.mish: "mish", a.softmax: "softmax", a.elu: "elu", a.gelu: "gelu"}
    table.update({activations.get(fn) if isinstance(fn, str) else fn: name for name, fn in ACTIVATIONS.items()})
    table.update({fn: name for name, fn in _parametric_cache.items()})
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
                                        f"a branch: it takes {len(inputs)} tensors (residual connections and "
                                        "concatenations are not judged)")
            layers.append(layer)
            tensor = inputs[0]
        layers.reverse()
    else:
        raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                                "a subclassed Keras 2 model: Keras 2 records no order of its layers' calls; build it "
                                "as a Sequential or functional model")
    return [inner for layer in layers
            for inner in (_walk_chain(layer) if isinstance(layer, tf_keras.Model) else [layer])]


def walk(model: Any, *, input_width: int | None = None) -> list[DenseUnit]:
    """The dense units of a Keras 2 ``model`` in execution order; ``ModelNotSupported`` names what cannot be
    judged. ``input_width`` is not needed: a Sequential or functional Keras 2 model knows its input."""
    if not isinstance(model, tf_keras.Model):
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                "is not a tf_keras.Model (Keras 2 runs here: TF_USE_LEGACY_KERAS=1)")
    units: list[DenseUnit] = []
    pending: dict[str, Any] | None = None
    for position, layer in enumerate(_walk_chain(model)):
        kind = type(layer).__name__

        def refuse(problem: str, layer: Any = layer, kind: str = kind, position: int = position) -> Exception:
            return ModelNotSupported(FRAMEWORK, layer.name, kind, position, problem)

        try:
            if type(layer) is tf_keras.layers.Dense:
                if not layer.built:
                    raise refuse("has no weights yet: build the model and give it its weights first")
                if pending is not None:
                    units.append(_walk_unit(pending))
                act = _walk_activation(layer.activation)
                pending = {"position": position, "dense": layer, "name": layer.name, "act": act, "act_op": None,
                           "act_source": "none" if act == "linear" else f"Dense(activation={act!r})"}
                continue
            act = _walk_layer(layer)
        except _Refused as exc:
            raise refuse(str(exc)) from None
        except KeyError:
            raise refuse("not a Dense layer or an activation the suite judges (it judges dense layers, their "
                         "activations, and skips Dropout, Flatten and InputLayer)") from None
        attach_activation(pending, act, f"{kind} {layer.name!r}", layer, refuse)
    if pending is not None:
        units.append(_walk_unit(pending))
    return check_chain(units, FRAMEWORK)


def _walk_unit(p: dict[str, Any]) -> DenseUnit:
    dense, act_layer = p["dense"], p["act_op"]
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

    return DenseUnit(FRAMEWORK, dense.name, "Dense", p["position"], native.astype(dt), b, native,
                     p["act"], p["act_source"], dtype, run, write)


def load_model(path: str) -> Any:
    """A ``.keras`` file loaded by Keras 2 with ``safe_mode=True``; ``ValueError`` with one line on anything else."""
    if not str(path).endswith(".keras"):
        raise ValueError("not a .keras file (model.save(path) with a .keras suffix)")
    if not zipfile.is_zipfile(path):
        raise ValueError("not a .keras file: not a zip archive (random bytes, or a truncated file)")
    try:
        return tf_keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - zip, config and deserialization errors come in many types
        raise ValueError(f"Keras 2 (tf-keras {tf_keras.__version__}) cannot load it "
                         f"({' '.join(str(exc).split())[:400]})") from None
