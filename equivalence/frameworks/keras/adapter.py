"""Keras 3 adapter: the backend-neutral part (the backend is chosen in ``equivalence.frameworks.keras.variant``).

The Keras ``Dense`` kernel is ``(in, out)``, already the canonical layout. The
Keras quirks handled here: a model without ``keras.Input`` has no weights until
it is built (``get_weights()`` then silently returns ``[]``), functional
``.layers`` include the ``InputLayer``, and every build leaves state in Keras'
global session, which grows memory unless cleared now and then.

Each Keras backend is a subclass (``tensorflow.TensorFlowKeras``, ``torch.TorchKeras``, ``jax.JaxKeras``)
holding what differs: converting to numpy, writing a variable, running a layer, autodiff, versions. Its
``variant`` (``keras/tensorflow``...) is what the fingerprint records and known differences are judged by.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from equivalence.core.activations import LEAKY_SLOPE, family_of  # noqa: E402
from equivalence.core.dtypes import numpy_dtype  # noqa: E402
from equivalence.core.layout import LayerWeights, check_weights  # noqa: E402
from equivalence.core.spec import ChainSpec, StackSpec  # noqa: E402
from equivalence.frameworks.base import Adapter, FrameworkRefused, ParamCount  # noqa: E402

if TYPE_CHECKING:
    from equivalence.core.types import Gradients


def _registered(name: str, fn: Any) -> Any:
    """A named, registered activation, so ``.keras`` files reload it in safe mode."""
    fn.__name__ = fn.__qualname__ = name
    return keras.saving.register_keras_serializable(package="equivalence", name=name)(fn)


# Our activation name -> Keras activation, every argument explicit (keras.ops.gelu defaults to
# approximate=True, keras.layers.LeakyReLU to slope 0.3): a plain name only where there is no argument.
ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "linear": "linear",
    "softmax": _registered("softmax_last_axis", lambda x: keras.activations.softmax(x, axis=-1)),
    "log_softmax": _registered("log_softmax_last_axis", lambda x: keras.activations.log_softmax(x, axis=-1)),
    "gelu": _registered("gelu_exact", lambda x: keras.activations.gelu(x, approximate=False)),
    "gelu_tanh": _registered("gelu_tanh", lambda x: keras.activations.gelu(x, approximate=True)),
    "elu": _registered("elu_alpha_1", lambda x: keras.activations.elu(x, alpha=1.0)),
    "selu": "selu",
    "celu": _registered("celu_alpha_1", lambda x: keras.activations.celu(x, alpha=1.0)),
    "silu": "silu",
    "softplus": "softplus",
    "softsign": "softsign",
    "relu6": "relu6",
    "hard_sigmoid": "hard_sigmoid",
    "hard_silu": "hard_silu",
    "leaky_relu_0.2": _registered("leaky_relu_0_2",
                                  lambda x: keras.activations.leaky_relu(x, negative_slope=LEAKY_SLOPE)),
    "mish": "mish",
}

_PARAMETRIC = {
    "leaky_relu": lambda p: (lambda x: keras.activations.leaky_relu(x, negative_slope=p)),
    "elu": lambda p: (lambda x: keras.activations.elu(x, alpha=p)),
    "celu": lambda p: (lambda x: keras.activations.celu(x, alpha=p)),
    "softmax_axis": lambda p: (lambda x: keras.activations.softmax(x, axis=int(p))),
    "log_softmax_axis": lambda p: (lambda x: keras.activations.log_softmax(x, axis=int(p))),
}
PARAMETRIC_ACTIVATIONS: dict[str, Any] = {}
"""The parametric activations made so far (``keras_activation``), by name: the walker reads them back."""

KERAS_FUNCTIONS = {"softmax": "softmax", "log_softmax": "log_softmax", "gelu": "gelu", "gelu_tanh": "gelu",
                   "elu": "elu", "celu": "celu", "leaky_relu_0.2": "leaky_relu", "leaky_relu": "leaky_relu",
                   "softmax_axis": "softmax", "log_softmax_axis": "log_softmax"}
"""Our activation (or parametric family) -> the ``keras.activations`` function it calls, where the name differs
or an argument is passed; the rest are Keras' own names (``ACTIVATIONS``)."""


def missing_activation(name: str) -> str | None:
    """The ``keras.activations`` function ``name`` needs that this Keras lacks (Keras 3.0.5 has no celu, no
    hard_silu), or None."""
    family = name if name in ACTIVATIONS else family_of(name)[0]
    function = KERAS_FUNCTIONS.get(family) or ACTIVATIONS[family]
    return None if hasattr(keras.activations, function) else function


def _clear_session() -> None:
    """``clear_session(free_memory=False)`` where Keras has the argument (3.4 and later), else the full clear."""
    if "free_memory" in inspect.signature(keras.backend.clear_session).parameters:
        keras.backend.clear_session(free_memory=False)
    else:
        keras.backend.clear_session()


def activation_from(name: str, table: Mapping[str, Any], families: Mapping[str, Callable[[float], Any]],
                    made: dict[str, Any], register: Callable[[str, Any], Any]) -> Any:
    """``table[name]``, or the parametric activation of ``families`` made (once, kept in ``made``) and registered
    under a safe name so saved files reload it: what each Keras' own ``keras_activation`` looks up."""
    if name in table:
        return table[name]
    if name not in made:
        family, param = family_of(name)
        safe = "".join(c if c.isalnum() else "_" for c in name)
        made[name] = register(safe, families[family](param))
    return made[name]


def keras_activation(name: str) -> Any:
    """The Keras activation of any name, parametric ones too, registered so ``.keras`` files reload it."""
    return activation_from(name, ACTIVATIONS, _PARAMETRIC, PARAMETRIC_ACTIVATIONS, _registered)


CLEAR_EVERY = 200
"""Builds between two cheap ``clear_session(free_memory=False)`` calls: never clearing grows RSS by hundreds
of MB over thousands of builds, and a full ``clear_session()`` runs ``gc.collect`` (docs/measurements.md,
"Costs per step")."""


def dense_stack_class(model: type) -> type:
    """The build style ``subclass`` on a Keras' ``Model`` class: a subclass holding its ``Dense`` layers in a list
    (Keras tracks lists)."""

    class DenseStack(model):
        def __init__(self, dense_layers: Sequence[Any], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.dense_layers = list(dense_layers)

        def call(self, x: Any) -> Any:
            for layer in self.dense_layers:
                x = layer(x)
            return x

    return DenseStack


DenseStack = dense_stack_class(keras.Model)


def _variables(layers: Sequence[keras.layers.Dense]) -> list[Any]:
    """Kernel, then bias (when there is one), layer by layer."""
    return [v for layer in layers for v in (layer.kernel, layer.bias) if v is not None]


def mean_in_dtype(y: Any) -> Any:
    """``mean(y)`` computed in ``y``'s dtype on every backend: its gradient is ``1/size`` in that dtype.

    Not ``keras.ops.mean``: off TensorFlow, Keras 3.15.1 computes it in ``result_type(dtype, "float32")``,
    which is float32 for float64, so every float64 gradient would carry a float32-rounded ``1/N``
    (2.98e-8 relative at N = 3: found by the suite on the jax backend, where nothing else hid it; pinned
    in ``tests/frameworks/test_keras_quirks.py``). A sum and the backend tensor's own division stay float64.
    A float16 sum may overflow, but its gradient does not depend on its value.
    """
    return keras.ops.sum(y) / math.prod(y.shape)


class KerasAdapter(Adapter):
    """Keras on some backend; the subclasses fill in the backend's hooks (the methods that raise here).

    Everything Keras is reached through ``keras`` (the module: Keras 3 here, ``tf_keras`` for Keras 2,
    ``legacy.LegacyKerasAdapter``) and the hooks below, so a Keras variant overrides only what differs.
    """

    name = "keras"
    kernel_layout = "in_out"
    chain_builder = True
    backend: str = "?"
    keras: Any = keras
    """The Keras module the adapter drives."""
    label = "Keras"
    """What messages call it."""
    stack_class: type = DenseStack
    """The build style ``subclass``: a ``Model`` subclass holding its ``Dense`` layers in a list."""

    def __init__(self) -> None:
        self._builds = 0

    @property
    def variant(self) -> str:
        return f"keras/{self.backend}"

    def cannot(self, activation: str, dtype: str) -> str | None:
        return self.lacks(activation) or super().cannot(activation, dtype)

    # --- the variant's hooks (Keras 3 here) --------------------------------------------------------
    def lacks(self, activation: str) -> str | None:
        """Why this Keras has no ``activation`` (one line), or None."""
        missing = missing_activation(activation)
        return f"keras {keras.__version__} has no {missing}" if missing else None

    def keras_activation(self, name: str) -> Any:
        """What ``Dense(activation=...)`` takes for ``name``."""
        return keras_activation(name)

    def clear_session(self) -> None:
        _clear_session()

    def to_tensor(self, x: Any, dtype: str | None = None) -> Any:
        return keras.ops.convert_to_tensor(x, dtype=dtype)

    def cast(self, value: Any, dtype: str) -> Any:
        return keras.ops.cast(value, dtype)

    def mean(self, y: Any) -> Any:
        """``mean(y)`` in ``y``'s dtype (``mean_in_dtype``)."""
        return mean_in_dtype(y)

    # --- the backend's hooks -------------------------------------------------------------------
    def to_numpy(self, value: Any) -> np.ndarray:
        """A backend tensor or Keras variable as a numpy array."""
        return keras.ops.convert_to_numpy(value)

    def assign(self, variable: Any, value: np.ndarray) -> None:
        """``variable.assign(value)`` (``check_weights`` has checked the shapes)."""
        variable.assign(np.asarray(value, dtype=variable.dtype))

    def run(self, block: Any, x: Any) -> Any:
        """``block(x)`` for a built layer or model, as a backend tensor.

        A numpy input is made a backend tensor first: ``__call__`` still runs (the same casts and autocast,
        bit-identical results) without Keras' slower conversion of a numpy argument.
        """
        return block(self.to_tensor(x) if isinstance(x, np.ndarray) else x)

    def float64_available(self) -> bool:
        return True

    def autodiff(self, forward: Any, x: Any, variables: Sequence[Any]) -> tuple[Any, list[Any]]:
        """``dL/dx`` and ``dL/dv`` for ``L = mean(forward(x))``, with the backend's own autodiff."""
        raise NotImplementedError(f"gradients on the Keras {self.backend!r} backend are not written")

    def backend_versions(self) -> dict[str, str]:
        return {}

    # --- models ----------------------------------------------------------------------------------
    def dense_layers(self, model: Any) -> list[Any]:
        """The ``Dense`` layers of a model of any build style, or of bare layers; refused unless built."""
        if isinstance(model, list):  # bare layers from build_layer
            layers = model
        elif isinstance(model, self.stack_class):
            layers = list(model.dense_layers)
        elif isinstance(model, self.keras.Model):
            layers = [layer for layer in model.layers if isinstance(layer, self.keras.layers.Dense)]
        else:
            raise TypeError(f"{self.name} adapter does not know how to walk a {type(model).__name__}")
        start = f"{self.keras.__name__}.Input(shape=(n_in,))"
        for i, layer in enumerate(layers):
            if not layer.built:
                raise ValueError(f"{self.label} model is not built: Dense layer {i} ({layer.name}) has no weights yet. "
                                 f"Start the model with {start} or call model.build((None, n_in)) first")
        if not layers:
            raise ValueError(f"{self.label} model has no Dense layers (is it built? add {start})")
        return layers

    def build(self, spec: StackSpec, style: str) -> Any:
        self.check_style(style)
        self._count_build()
        dense = [self._dense(width, act, bias=spec.bias, dtype=spec.dtype)
                 for width, act in zip(spec.widths, spec.activations)]
        if style == "sequential":
            return self.keras.Sequential([self.keras.Input(shape=(spec.input_width,), dtype=spec.dtype), *dense])
        if style == "functional":
            inputs = self.keras.Input(shape=(spec.input_width,), dtype=spec.dtype)
            h = inputs
            for layer in dense:
                h = layer(h)
            return self.keras.Model(inputs, h)
        for layer, fan_in in zip(dense, spec.fan_ins):
            layer.build((None, fan_in))
        model = self.stack_class(dense, dtype=spec.dtype)  # its own policy: the default float32 would round float64
        model.build((None, spec.input_width))
        return model

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [
            (self.to_numpy(layer.kernel).copy(), None if layer.bias is None else self.to_numpy(layer.bias).copy())
            for layer in self.dense_layers(model)
        ]

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Any:
        self._count_build()
        layer = self._dense(n_out, activation, bias=bias, dtype=dtype)
        layer.build((None, n_in))
        return layer

    def build_chain(self, spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[Any]:
        from equivalence.frameworks.keras.chain import build_chain

        if self.chainless():
            return super().build_chain(spec, weights)  # refuses
        self._count_build()
        return build_chain(self, spec, weights)

    def _dense(self, width: int, activation: str, *, bias: bool, dtype: str) -> Any:
        if dtype == "float64" and not self.float64_available():
            raise ValueError("Keras on jax has no float64 unless jax_enable_x64 is on: it would truncate this "
                             "float64 Dense to float32 with only a warning. Set JAX_ENABLE_X64=1 before jax is "
                             "imported (the test suite's conftest does when KERAS_BACKEND=jax)")
        problem = self.lacks(activation)
        if problem:
            raise FrameworkRefused(problem)
        # Weights are always overwritten, so skip the random glorot init (a third of a build's time).
        return self.keras.layers.Dense(width, activation=self.keras_activation(activation), use_bias=bias,
                                       dtype=dtype, kernel_initializer="zeros")

    def _count_build(self) -> None:
        self._builds += 1
        if self._builds % CLEAR_EVERY == 0:
            self.clear_session()

    def get_weights(self, model: Any) -> list[LayerWeights]:
        return [LayerWeights(W, b) for W, b in self.native_weights(model)]  # already (in, out)

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = self.dense_layers(model)
        check_weights([tuple(layer.kernel.shape) for layer in layers],
                      [layer.bias is not None for layer in layers], weights, what=f"{self.name} set_weights")
        for layer, (W, b) in zip(layers, weights):
            self.assign(layer.kernel, W)
            if b is not None:
                self.assign(layer.bias, b)

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        return self.to_numpy(self.run(self.dense_layers(model)[index], x))

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        return self.to_numpy(self.run(model, x))

    def count_params(self, model: Any) -> ParamCount:
        layers = self.dense_layers(model)
        per_layer = tuple(layer.count_params() for layer in layers)
        if isinstance(model, list):
            return ParamCount(per_layer, sum(per_layer), sum(len(layer.trainable_variables) for layer in layers))
        return ParamCount(per_layer, total=model.count_params(), trainable_tensors=len(model.trainable_variables))

    def loss_gradients(self, model: Any, x: np.ndarray) -> Gradients:
        from equivalence.core.types import Gradients

        layers = self.dense_layers(model)
        variables = _variables(layers)
        dx, grads = self.autodiff(lambda t: self._call(model, t), self.to_tensor(x, layers[0].compute_dtype),
                                  variables)
        out, it = [], iter(grads)
        for layer in layers:
            dW = self.to_numpy(next(it))
            out.append(LayerWeights(dW, None if layer.bias is None else self.to_numpy(next(it))))
        return Gradients(tuple(out), self.to_numpy(dx))

    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        layers = self.dense_layers(model)
        variables = _variables(layers)
        _, grads = self.autodiff(lambda t: self._call(model, t), self.to_tensor(x, layers[0].compute_dtype),
                                 variables)
        optimizer = self.keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.0, nesterov=False)
        optimizer.apply_gradients(zip(grads, variables))

    def save_model(self, model: Any, path: str | os.PathLike) -> None:
        name = os.fspath(path)
        if name.endswith(".weights.h5"):
            model.save_weights(name)
        elif isinstance(model, self.stack_class):
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
        return self.keras.saving.load_model(name, safe_mode=True)  # safe_mode: no lambdas or arbitrary code

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        problem = self.lacks(name)
        if problem:
            raise FrameworkRefused(problem)
        fn = self.keras_activation(name)
        fn = self.keras.activations.get(fn) if isinstance(fn, str) else fn
        tensor = self.to_tensor(np.asarray(x, dtype=np.float64).astype(numpy_dtype(dtype)), dtype)
        return self.to_numpy(self.cast(fn(tensor), "float64"))

    @staticmethod
    def _call(model: Any, x: Any) -> Any:
        if isinstance(model, list):
            for layer in model:
                x = layer(x)
            return x
        return model(x)

    def versions(self) -> dict[str, str]:
        return {"keras": self.keras.__version__, "keras_backend": self.backend, "variant": self.variant,
                **self.backend_versions()}
