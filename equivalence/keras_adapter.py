"""Keras 3 adapter (TensorFlow backend unless ``KERAS_BACKEND`` says otherwise).

The Keras ``Dense`` kernel is ``(in, out)``, already the canonical layout. The
Keras quirks handled here: a model without ``keras.Input`` has no weights until
it is built (``get_weights()`` then silently returns ``[]``), functional
``.layers`` include the ``InputLayer``, and every build leaves state in Keras'
global session, which grows memory unless cleared now and then.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from equivalence.activations import LEAKY_SLOPE, family_of  # noqa: E402
from equivalence.adapters import SAVE_FORMATS, STYLES, Adapter, ParamCount  # noqa: E402
from equivalence.dtypes import numpy_dtype  # noqa: E402
from equivalence.layout import LayerWeights, check_weights  # noqa: E402
from equivalence.spec import StackSpec  # noqa: E402

if TYPE_CHECKING:
    from equivalence.gradients import Gradients


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
_parametric_cache: dict[str, Any] = {}


def keras_activation(name: str) -> Any:
    """The Keras activation of any name, parametric ones too, registered so ``.keras`` files reload it."""
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if name not in _parametric_cache:
        family, param = family_of(name)
        safe = "".join(c if c.isalnum() else "_" for c in name)
        _parametric_cache[name] = _registered(safe, _PARAMETRIC[family](param))
    return _parametric_cache[name]


CLEAR_EVERY = 200
"""Builds between two cheap ``clear_session(free_memory=False)`` calls.

Measured: 2,000 builds never cleared grow RSS by 447 MB; clearing without
``gc.collect`` costs 0.008 ms against 116 ms for a full ``clear_session()``.
"""


class DenseStack(keras.Model):
    """A ``Model`` subclass holding its ``Dense`` layers in a list (Keras tracks lists)."""

    def __init__(self, dense_layers: Sequence[keras.layers.Layer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense_layers = list(dense_layers)

    def call(self, x: Any) -> Any:
        for layer in self.dense_layers:
            x = layer(x)
        return x


def _dense_layers(model: Any) -> list[keras.layers.Dense]:
    if isinstance(model, list):  # bare layers from build_layer
        layers = model
    elif isinstance(model, DenseStack):
        layers = list(model.dense_layers)
    elif isinstance(model, keras.Model):
        layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    else:
        raise TypeError(f"keras adapter does not know how to walk a {type(model).__name__}")
    for i, layer in enumerate(layers):
        if not layer.built:
            raise ValueError(
                f"Keras model is not built: Dense layer {i} ({layer.name}) has no weights yet. "
                "Start the model with keras.Input(shape=(n_in,)) or call model.build((None, n_in)) first"
            )
    if not layers:
        raise ValueError("Keras model has no Dense layers (is it built? add keras.Input(shape=(n_in,)))")
    return layers


# --- the backend-specific part: to numpy, assign, gradients -------------------------------------
BACKEND = keras.backend.backend()
_TENSORFLOW = BACKEND == "tensorflow"


def _numpy(value: Any) -> np.ndarray:
    """A backend tensor or Keras variable as a numpy array.

    TF's own ``.numpy()`` and torch's ``detach().numpy()`` avoid the numpy 2
    ``__array__(copy=...)`` DeprecationWarning that ``convert_to_numpy`` raises on
    every call; torch's numpy has no bfloat16, so that goes through float32 (exact).
    """
    if _TENSORFLOW:
        return value.numpy()
    if BACKEND == "torch":
        import torch

        tensor = (value.value if isinstance(value, keras.Variable) else value).detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.float().numpy().astype(numpy_dtype("bfloat16"))
        return tensor.numpy()
    return keras.ops.convert_to_numpy(value)


def _assign(variable: Any, value: np.ndarray) -> None:
    """``variable.assign(value)``, as TF's own assign op on the TensorFlow backend.

    Keras' ``assign`` converts, checks the shape, adds a cast op and reads the
    value back: 0.12 ms a variable; ``tf.Variable.assign(value, read_value=False)``
    on the backend variable costs 0.056 ms, and the ``AssignVariableOp`` it ends in,
    called directly, 0.020-0.028 ms (float32; measured, the hot path does 2 per
    layer). ``validate_shape=True`` keeps TF's own shape check (``check_weights``
    has checked already) and the op refuses a wrong dtype, so the value is cast
    here. The weight round-trip tests read back through Keras' own
    ``kernel.numpy()``, so a missed write would fail them.
    """
    value = np.asarray(value, dtype=variable.dtype)
    if _TENSORFLOW:
        import tensorflow as tf

        tf.raw_ops.AssignVariableOp(resource=variable.value.handle, value=value, validate_shape=True)
    else:
        variable.assign(value)


_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _run(block: Any, x: Any) -> Any:
    """``block(x)`` for a built layer or model, as a backend tensor.

    On jax, through ``jax.jit`` of the call with the variables' values passed in
    (``keras.StatelessScope``), compiled once per block and input shape: what
    ``model.predict`` runs there. Eager jax compiles every op for
    every new shape, which made the suite compile-bound: a new shape cost 130-225 ms
    eager against 55-86 ms jitted (sigmoid, gelu, mish, softmax; measured), and a
    cached call 0.5-0.9 ms against 0.1 ms. The jitted and eager results are bit-identical
    but for float16/bfloat16 softmax (one ulp: XLA keeps excess precision in the fusion).
    A jitted block keeps the code it was traced with: ``forget_compiled`` drops them all.

    Elsewhere a numpy input is made a backend tensor first: ``__call__`` still runs (the
    same casts and autocast, bit-identical results), but Keras' own conversion of a numpy
    argument costs ~0.25 ms more a call on TensorFlow (0.78 against 0.54 ms, measured).
    """
    if BACKEND != "jax":
        return block(keras.ops.convert_to_tensor(x) if isinstance(x, np.ndarray) else x)
    fn = _JITTED.get(block)
    if fn is None:
        import jax

        ref = weakref.ref(block)  # the cache must not keep a pooled layer alive

        def call(values: list[Any], x: Any) -> Any:
            # Not stateless_call: on a bare layer it runs call(), skipping __call__'s input casts and
            # autocast (a mixed_float16 Dense would return float32). predict runs __call__ too.
            layer = ref()
            with keras.StatelessScope(state_mapping=list(zip(layer.trainable_variables, values))):
                return layer(x)

        fn = _JITTED[block] = jax.jit(call)
    return fn([v.value for v in block.trainable_variables], x)


def _float64_available() -> bool:
    """Keras on jax truncates float64 to float32 (with only a UserWarning) unless jax_enable_x64 is on."""
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def _variables(layers: Sequence[keras.layers.Dense]) -> list[Any]:
    """Kernel, then bias (when there is one), layer by layer."""
    return [v for layer in layers for v in (layer.kernel, layer.bias) if v is not None]


def _mean(y: Any) -> Any:
    """``mean(y)`` computed in ``y``'s dtype on every backend: its gradient is ``1/size`` in that dtype.

    Not ``keras.ops.mean``: off TensorFlow, Keras 3.15.1 computes it in ``result_type(dtype, "float32")``,
    which is float32 for float64, so every float64 gradient would carry a float32-rounded ``1/N``
    (2.98e-8 relative at N = 3: found by the suite on the jax backend, where nothing else hid it; pinned
    in ``tests/test_keras_quirks.py``). A sum and the backend tensor's own division stay float64.
    A float16 sum may overflow, but its gradient does not depend on its value.
    """
    return keras.ops.sum(y) / math.prod(y.shape)


def _loss_gradients(forward: Any, x: Any, variables: Sequence[Any]) -> tuple[Any, list[Any]]:
    """``dL/dx`` and ``dL/dv`` for ``L = mean(forward(x))``, with the backend's own autodiff.

    TensorFlow: ``GradientTape``. torch: ``torch.autograd.grad`` on the variables'
    parameters (nothing accumulates in ``.grad``). JAX: ``jax.grad`` of a pure
    function, the variables' values substituted through ``keras.StatelessScope``.
    """
    if _TENSORFLOW:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _mean(forward(x))
        dx, *grads = tape.gradient(loss, [x, *variables])
        return dx, grads
    if BACKEND == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        loss = _mean(forward(x))
        dx, *grads = torch.autograd.grad(loss, [x, *(v.value for v in variables)])
        return dx, grads
    if BACKEND == "jax":
        import jax

        def loss(x_value: Any, values: list[Any]) -> Any:
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return _mean(forward(x_value))

        dx, grads = jax.grad(loss, argnums=(0, 1))(x, [v.value for v in variables])
        return dx, list(grads)
    raise NotImplementedError(f"gradients on the Keras {BACKEND!r} backend are not written")


class KerasAdapter(Adapter):
    name = "keras"
    styles = STYLES["keras"]
    kernel_layout = "in_out"

    def __init__(self) -> None:
        self._builds = 0

    def build(self, spec: StackSpec, style: str) -> keras.Model:
        self.check_style(style)
        self._count_build()
        dense = [self._dense(width, act, bias=spec.bias, dtype=spec.dtype)
                 for width, act in zip(spec.widths, spec.activations)]
        if style == "sequential":
            return keras.Sequential([keras.Input(shape=(spec.input_width,), dtype=spec.dtype), *dense])
        if style == "functional":
            inputs = keras.Input(shape=(spec.input_width,), dtype=spec.dtype)
            h = inputs
            for layer in dense:
                h = layer(h)
            return keras.Model(inputs, h)
        for layer, fan_in in zip(dense, spec.fan_ins):
            layer.build((None, fan_in))
        model = DenseStack(dense)
        model.build((None, spec.input_width))
        return model

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [
            (_numpy(layer.kernel).copy(), None if layer.bias is None else _numpy(layer.bias).copy())
            for layer in _dense_layers(model)
        ]

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> keras.layers.Dense:
        self._count_build()
        layer = self._dense(n_out, activation, bias=bias, dtype=dtype)
        layer.build((None, n_in))
        return layer

    @staticmethod
    def _dense(width: int, activation: str, *, bias: bool, dtype: str) -> keras.layers.Dense:
        if dtype == "float64" and not _float64_available():
            raise ValueError("Keras on jax has no float64 unless jax_enable_x64 is on: it would truncate this "
                             "float64 Dense to float32 with only a warning. Set JAX_ENABLE_X64=1 before jax is "
                             "imported (the test suite's conftest does when KERAS_BACKEND=jax)")
        # Weights are always overwritten, so skip the random glorot init (4.2 -> 2.7 ms a layer).
        return keras.layers.Dense(width, activation=keras_activation(activation), use_bias=bias, dtype=dtype,
                                  kernel_initializer="zeros")

    def _count_build(self) -> None:
        self._builds += 1
        if self._builds % CLEAR_EVERY == 0:
            keras.backend.clear_session(free_memory=False)

    def get_weights(self, model: Any) -> list[LayerWeights]:
        return [LayerWeights(W, b) for W, b in self.native_weights(model)]  # already (in, out)

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = _dense_layers(model)
        check_weights([tuple(layer.kernel.shape) for layer in layers],
                      [layer.bias is not None for layer in layers], weights, what="keras set_weights")
        for layer, (W, b) in zip(layers, weights):
            _assign(layer.kernel, W)
            if b is not None:
                _assign(layer.bias, b)

    def forget_compiled(self) -> None:
        _JITTED.clear()

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        return _numpy(_run(_dense_layers(model)[index], x))

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        if isinstance(model, list):
            for layer in _dense_layers(model):
                x = _run(layer, x)
            return _numpy(x)
        return _numpy(_run(model, x))

    def count_params(self, model: Any) -> ParamCount:
        layers = _dense_layers(model)
        per_layer = tuple(layer.count_params() for layer in layers)
        if isinstance(model, list):
            return ParamCount(per_layer, sum(per_layer), sum(len(layer.trainable_variables) for layer in layers))
        return ParamCount(per_layer, total=model.count_params(), trainable_tensors=len(model.trainable_variables))

    def loss_gradients(self, model: Any, x: np.ndarray) -> Gradients:
        from equivalence.gradients import Gradients

        layers = _dense_layers(model)
        variables = _variables(layers)
        dx, grads = _loss_gradients(lambda t: self._call(model, t), keras.ops.convert_to_tensor(
            x, dtype=layers[0].compute_dtype), variables)
        out, it = [], iter(grads)
        for layer in layers:
            dW = _numpy(next(it))
            out.append(LayerWeights(dW, None if layer.bias is None else _numpy(next(it))))
        return Gradients(tuple(out), _numpy(dx))

    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        layers = _dense_layers(model)
        variables = _variables(layers)
        _, grads = _loss_gradients(lambda t: self._call(model, t), keras.ops.convert_to_tensor(
            x, dtype=layers[0].compute_dtype), variables)
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.0, nesterov=False)
        optimizer.apply_gradients(zip(grads, variables))

    def save(self, model: Any, path: str | os.PathLike) -> None:
        self.check_new_file(path, SAVE_FORMATS["keras"])
        if isinstance(model, list):
            raise TypeError("keras save needs a built model (build), not a list of bare layers")
        name = os.fspath(path)
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
        return keras.saving.load_model(name, safe_mode=True)  # safe_mode: no lambdas or arbitrary code

    @staticmethod
    def _call(model: Any, x: Any) -> Any:
        if isinstance(model, list):
            for layer in model:
                x = layer(x)
            return x
        return model(x)

    def versions(self) -> dict[str, str]:
        out = {"keras": keras.__version__, "keras_backend": BACKEND}
        if _TENSORFLOW:
            import tensorflow as tf

            out["tensorflow"] = tf.__version__
            # 0 means "TF chooses": one thread per core.
            out["tf_intra_op_threads"] = str(tf.config.threading.get_intra_op_parallelism_threads())
            out["tf_inter_op_threads"] = str(tf.config.threading.get_inter_op_parallelism_threads())
            out["onednn_enabled"] = _onednn_enabled()
            out["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (build default)")
        elif BACKEND == "torch":
            import torch

            out["keras_torch"] = torch.__version__
        elif BACKEND == "jax":
            import jax

            out["jax"] = jax.__version__
        return out


def _onednn_enabled() -> str:
    """Whether TF's oneDNN custom ops are on, as TF itself decides (env var or build default).

    TF 2.21 on x86 Linux turns them on when ``TF_ENABLE_ONEDNN_OPTS`` is unset (measured:
    unset and ``=1`` give the same bits, ``=0`` changes some matmuls). The answer comes from
    TF's util port (``IsMklEnabled``), which has no public API; "unknown" if it moves.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - depends on the TF build
        return "unknown"
    is_enabled = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return "unknown" if is_enabled is None else ("on" if is_enabled() else "off")
