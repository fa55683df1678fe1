"""MXNet Gluon adapter. Gluon ``Dense.weight`` is ``(units, in_units)`` like torch: this module transposes, nobody else.

MXNet is retired (Apache Attic). Its last release, 1.9.1, still runs on Python
3.11 but needs ``numpy<1.24`` (it uses the removed ``np.bool``), so it lives in
its own environment (``make mxnet``), never beside TensorFlow.

Gluon traps handled here (each measured and pinned in ``tests/frameworks/test_mxnet_quirks.py``):

* ``nd.array(numpy_array)`` makes float32 whatever the numpy dtype: every
  conversion here names its dtype.
* ``Dense(units)`` without ``in_units`` defers its weight's shape to
  ``(units, 0)`` until the first forward pass, and reading it raises
  ``DeferredInitializationError``. The adapter always passes ``in_units`` and
  refuses a deferred or uninitialised model with a clear message.
* ``Dense`` flattens every axis but the first by default (``flatten=True``),
  unlike torch and Keras, which act on the last axis: the adapter says
  ``flatten=False``.
* The engine is asynchronous: an operator's error surfaces only when the result
  is read. Every method here returns numpy, so it synchronises.
* On CPU, ``FullyConnected`` cannot compute float16 (``UNSUPPORTED_DTYPES``).

Activations (``GLUON_ACTIVATIONS``, every argument explicit): Gluon's own layer
where it computes the reference's function, a ``HybridLambda`` of ``F.*`` ops
where it does not, or has no layer. What Gluon gets wrong is in
``equivalence.frameworks.mxnet.known_differences`` (each with a test): no GELU tanh form; float64 GELU and
LeakyReLU computed in float32; SELU's backward off by ``(lambda - 1) y`` for
z < 0; ``F.hard_sigmoid``'s 0.2 x + 0.5 defaults; float32 log_softmax and
softrelu approximated under oneDNN. Two float64 differences small enough to
keep Gluon's op widen the bound by name; the others are ``noted``: the mapping computes around them.
A layer is a ``Dense`` (carrying a plain ``act_type``) and an optional activation block after it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from equivalence.frameworks.base import Adapter, FrameworkUnavailable, ParamCount

try:
    import mxnet as mx
except AttributeError as exc:  # pragma: no cover - depends on install: mxnet 1.x uses numpy aliases removed in 1.24
    raise FrameworkUnavailable(
        f"mxnet is installed but cannot import with numpy {np.__version__} ({str(exc).splitlines()[0]}); "
        "MXNet 1.9.1 needs numpy<1.24, "
        "so it cannot share .venv with TensorFlow: make mxnet creates .venv-mxnet"
    ) from exc
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

from equivalence.core.activations import GELU_TANH_C, LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE  # noqa: E402
from equivalence.core.layout import LayerWeights, check_weights  # noqa: E402
from equivalence.core.spec import StackSpec  # noqa: E402

_SQRT_HALF = math.sqrt(0.5)
CELU_ALPHA = 1.0
"""The CELU alpha of ``equivalence.core.activations.celu``'s default, explicit here."""


def _lambda(name: str, function: Callable[..., Any]) -> Callable[[], nn.HybridLambda]:
    """A ``HybridLambda`` factory: ``function(F, x)`` runs imperatively and in the hybridized graph alike."""
    return lambda: nn.HybridLambda(function, prefix=f"{name.replace('.', '_')}_")


def _softplus(F: Any, x: Any) -> Any:
    """``relu(x) + log1p(exp(-|x|))``: never overflows, and full accuracy for x << 0 (unlike
    float32 ``Activation('softrelu')`` under oneDNN, the known difference ``softrelu_onednn_float32``)."""
    return F.relu(x) + F.log1p(F.exp(-F.abs(x)))


def _hard_sigmoid(F: Any, x: Any) -> Any:
    # relu6(x + 3) / 6. Not F.hard_sigmoid: its defaults are the old 0.2 x + 0.5 (hard_sigmoid_defaults),
    # and alpha=1/6 would be rounded to a float32 parameter.
    return F.clip(x + 3.0, 0.0, 6.0) / 6.0


def _log_softmax(F: Any, x: Any) -> Any:
    """Written out: float32 ``F.log_softmax`` under oneDNN is off by up to 29 eps (log_softmax_onednn_float32)."""
    shifted = F.broadcast_sub(x, F.max(x, axis=-1, keepdims=True))
    return F.broadcast_sub(shifted, F.log(F.sum(F.exp(shifted), axis=-1, keepdims=True)))


_GLUON_FORMS: dict[str, tuple[str, str | Callable[[], gluon.HybridBlock] | None]] = {
    # name: (how it reads, Dense act_type | activation block factory | None); every argument explicit
    "sigmoid": ("Dense(activation='sigmoid')", "sigmoid"),
    "tanh": ("Dense(activation='tanh')", "tanh"),
    "relu": ("Dense(activation='relu')", "relu"),
    "linear": ("Dense(activation=None)", None),
    "softmax": ("F.softmax(x, axis=-1)", _lambda("softmax", lambda F, x: F.softmax(x, axis=-1))),
    "log_softmax": ("x - max - log(sum(exp(x - max))), axis -1", _lambda("log_softmax", _log_softmax)),
    "gelu": ("nn.GELU() in float32; 0.5 x (1 + F.erf(x / sqrt 2)) in float64", None),  # per dtype, below
    "gelu_tanh": ("x * F.sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))",
                  _lambda("gelu_tanh", lambda F, x: x * F.sigmoid(2.0 * GELU_TANH_C * (x + 0.044715 * x ** 3)))),
    "elu": ("nn.ELU(alpha=1.0)", lambda: nn.ELU(alpha=1.0)),
    "selu": ("scale * F.where(x > 0, x, alpha * F.expm1(min(x, 0))), float64 constants",
             _lambda("selu", lambda F, x: SELU_SCALE * F.where(x > 0, x, SELU_ALPHA * F.expm1(F.minimum(x, 0.0))))),
    "celu": ("relu(x) + min(0, alpha expm1(min(x, 0) / alpha)), alpha=1.0",
             _lambda("celu", lambda F, x: F.relu(x) + F.minimum(
                 CELU_ALPHA * F.expm1(F.minimum(x, 0.0) / CELU_ALPHA), 0.0))),
    "silu": ("nn.Swish(beta=1.0)", lambda: nn.Swish(beta=1.0)),
    "softplus": ("Dense(activation='softrelu')", "softrelu"),
    "softsign": ("Dense(activation='softsign')", "softsign"),
    "relu6": ("F.clip(x, 0, 6)", _lambda("relu6", lambda F, x: F.clip(x, 0.0, 6.0))),
    "hard_sigmoid": ("F.clip(x + 3, 0, 6) / 6", _lambda("hard_sigmoid", _hard_sigmoid)),
    "hard_silu": ("x * F.clip(x + 3, 0, 6) / 6", _lambda("hard_silu", lambda F, x: x * _hard_sigmoid(F, x))),
    "leaky_relu_0.2": ("nn.LeakyReLU(alpha=0.2) in float32; F.where(x >= 0, x, 0.2 x) in float64", None),
    "mish": ("x * F.tanh(relu(x) + log1p(exp(-|x|)))", _lambda("mish", lambda F, x: x * F.tanh(_softplus(F, x)))),
}

_FLOAT32_FORMS: dict[str, Callable[[], gluon.HybridBlock]] = {
    "gelu": lambda: nn.GELU(),  # the erf form (not tanh) in MXNet 1.9.1 (tests/frameworks/test_mxnet_quirks.py)
    "leaky_relu_0.2": lambda: nn.LeakyReLU(alpha=LEAKY_SLOPE),  # no default in nn; F.LeakyReLU's is 0.25
}
_FLOAT64_FORMS: dict[str, Callable[[], gluon.HybridBlock]] = {
    # Gluon's own layer computes these in float32 whatever the dtype (gelu_float64_in_float32,
    # leaky_relu_float64_in_float32): float64 composes.
    "gelu": _lambda("gelu", lambda F, x: 0.5 * x * (1.0 + F.erf(x * _SQRT_HALF))),
    "leaky_relu_0.2": _lambda("leaky_relu", lambda F, x: F.where(x >= 0, x, LEAKY_SLOPE * x)),
}

GLUON_ACTIVATIONS: dict[str, str] = {name: form for name, (form, _) in _GLUON_FORMS.items()}
"""Our activation name -> the Gluon computation it maps to, as it reads (the mapping table)."""


UNSUPPORTED_DTYPES: dict[str, str] = {
    "float16": "MXNet 1.9.1's FullyConnected has no float16 CPU kernel (it raises 'float16 fully connected layer "
               "is currently only supported by CuDNN version' when the result is read)",
    "bfloat16": "Gluon's Dense does not accept dtype 'bfloat16' (numpy: \"data type 'bfloat16' not understood\")",
}
"""Dtypes MXNet cannot compute a Dense layer in on this CPU build (measured: tests/frameworks/test_mxnet_quirks.py)."""




def onednn_active() -> bool:
    """Whether float32 operators run on oneDNN (MKLDNN): built in, and not disabled by the environment."""
    return mx.runtime.Features().is_enabled("MKLDNN") and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0"


def gluon_activation(name: str, dtype: str) -> tuple[str | None, gluon.HybridBlock | None]:
    """``(act_type for Dense, activation block after it)`` for our activation ``name`` in ``dtype``.

    At most one is set: Gluon's ``Dense(activation=...)`` takes an ``Activation`` act_type
    string; everything else is its own block after a ``Dense(activation=None)``.
    """
    if name not in _GLUON_FORMS:
        raise ValueError(
            f"mxnet adapter has no Gluon mapping for activation {name!r}; mapped: {', '.join(_GLUON_FORMS)}"
        )
    per_dtype = _FLOAT64_FORMS if dtype == "float64" else _FLOAT32_FORMS
    form = per_dtype.get(name, _GLUON_FORMS[name][1])
    if form is None or isinstance(form, str):
        return form, None
    return None, form()


def _check_dtype(dtype: str) -> None:
    if dtype in UNSUPPORTED_DTYPES:
        raise ValueError(f"mxnet cannot run a {dtype} Dense layer on CPU: {UNSUPPORTED_DTYPES[dtype]}")


Layer = tuple[nn.Dense, "gluon.HybridBlock | None"]
"""One dense layer: the ``Dense`` (which may carry an act_type itself) and the activation block after it, if any."""


class DenseStack(gluon.HybridBlock):
    """A ``HybridBlock`` subclass as the Gluon 1.x tutorials write one: the children
    registered by attribute assignment, and a ``hybrid_forward(F, x)`` loop."""

    def __init__(self, layers: Sequence[Layer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth = len(layers)
        for i, (dense, act) in enumerate(layers):
            setattr(self, f"dense{i}", dense)  # Block.__setattr__ registers the child
            setattr(self, f"act{i}", act)

    @property
    def layers(self) -> list[Layer]:
        return [(getattr(self, f"dense{i}"), getattr(self, f"act{i}")) for i in range(self.depth)]

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        for dense, act in self.layers:
            x = dense(x)
            if act is not None:
                x = act(x)
        return x


def _sequential_layers(model: nn.Sequential | nn.HybridSequential) -> list[Layer]:
    """Each ``Dense`` with the non-Dense block that follows it, if any (the Gluon idiom:
    ``add(Dense(..., activation=None), nn.GELU())``)."""
    out: list[list] = []
    for child in model:
        if isinstance(child, nn.Dense):
            out.append([child, None])
        elif out and out[-1][1] is None:
            out[-1][1] = child
        else:
            raise TypeError(f"Gluon model: block {child.name} ({type(child).__name__}) does not follow a Dense layer")
    return [(dense, act) for dense, act in out]


def _layers(model: Any) -> list[Layer]:
    if isinstance(model, list):  # bare (Dense, activation) pairs from build_layer
        return model
    if isinstance(model, DenseStack):
        return model.layers
    if isinstance(model, (nn.Sequential, nn.HybridSequential)):
        return _sequential_layers(model)
    raise TypeError(f"mxnet adapter does not know how to walk a {type(model).__name__}")


def _dense_layers(model: Any) -> list[nn.Dense]:
    return [dense for dense, _ in _layers(model)]


def _initialized(model: Any) -> list[nn.Dense]:
    """The model's Dense layers, refusing any whose weights do not exist yet."""
    layers = _dense_layers(model)
    if not layers:
        raise ValueError("Gluon model has no Dense layers")
    for i, layer in enumerate(layers):
        if 0 in layer.weight.shape:
            raise ValueError(
                f"Gluon model is not initialised: Dense layer {i} ({layer.name}) has the deferred weight shape "
                f"{layer.weight.shape}. Give Dense its in_units=..., or run one forward pass first"
            )
        try:
            layer.weight.data()
        except RuntimeError as exc:  # DeferredInitializationError is a RuntimeError too
            raise ValueError(
                f"Gluon model is not initialised: Dense layer {i} ({layer.name}) has no weights yet. "
                "Call model.initialize() first"
            ) from exc
    return layers


def _nd(a: np.ndarray, dtype: Any) -> nd.NDArray:
    # nd.array(numpy) defaults to float32 whatever the numpy dtype: always name the dtype.
    return nd.array(np.asarray(a), dtype=dtype)


def _run(layers: Sequence[Layer], x: Any) -> Any:
    for dense, act in layers:
        x = dense(x)
        if act is not None:
            x = act(x)
    return x


def _params(model: Any) -> list[gluon.Parameter]:
    if isinstance(model, list):
        return [p for dense, _ in model for p in dense.collect_params().values()]
    return list(model.collect_params().values())


class GluonAdapter(Adapter):
    name = "mxnet"
    kernel_layout = "out_in"
    unsupported_dtypes = UNSUPPORTED_DTYPES

    def build(self, spec: StackSpec, style: str) -> gluon.Block:
        """``sequential``: ``nn.Sequential``, imperative. ``hybridized``: ``nn.HybridSequential``
        after ``hybridize()``, run as a cached symbolic graph. ``subclass``: ``DenseStack``."""
        self.check_style(style)
        layers = [self._layer(n_in, n_out, act, bias=spec.bias, dtype=spec.dtype)
                  for (n_in, n_out), act in zip(spec.layer_shapes, spec.activations)]
        if style == "subclass":
            model = DenseStack(layers)
        else:
            model = nn.HybridSequential() if style == "hybridized" else nn.Sequential()
            model.add(*[block for pair in layers for block in pair if block is not None])
        model.initialize()
        if style == "hybridized":
            model.hybridize()
        return model

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Layer:
        dense, act = self._layer(n_in, n_out, activation, bias=bias, dtype=dtype)
        dense.initialize()
        return dense, act

    @staticmethod
    def _layer(n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Layer:
        _check_dtype(dtype)
        act_type, block = gluon_activation(activation, dtype)
        dense = nn.Dense(n_out, activation=act_type, use_bias=bias, flatten=False, dtype=dtype, in_units=n_in)
        if block is not None:
            block.cast(dtype)  # parameter-free, but keeps the block's declared dtype honest
        return dense, block

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [
            (layer.weight.data().asnumpy(), None if layer.bias is None else layer.bias.data().asnumpy())
            for layer in _initialized(model)
        ]

    def get_weights(self, model: Any) -> list[LayerWeights]:
        # Gluon stores (units, in_units); the canonical layout is (in, out).
        return [LayerWeights(W.T.copy(), b) for W, b in self.native_weights(model)]

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = _initialized(model)
        check_weights([layer.weight.shape[::-1] for layer in layers], [layer.bias is not None for layer in layers],
                      weights, what=f"{self.name} set_weights")
        for layer, (W, b) in zip(layers, weights):
            layer.weight.set_data(_nd(np.asarray(W).T, layer.weight.dtype))
            if b is not None:
                layer.bias.set_data(_nd(b, layer.bias.dtype))

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        layer = _layers(model)[index]
        return _run([layer], _nd(x, layer[0].weight.dtype)).asnumpy()

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        return self._forward(model, _nd(x, _dense_layers(model)[0].weight.dtype)).asnumpy()

    @staticmethod
    def _forward(model: Any, x: nd.NDArray) -> nd.NDArray:
        return _run(model, x) if isinstance(model, list) else model(x)

    def count_params(self, model: Any) -> ParamCount:
        layers = _initialized(model)
        per_layer = tuple(_trainable_size(layer.collect_params().values()) for layer in layers)
        trainable = [p for p in _params(model) if p.grad_req != "null"]
        return ParamCount(per_layer, _trainable_size(trainable), len(trainable))

    def loss_gradients(self, model: Any, x: np.ndarray) -> Any:
        from equivalence.core.gradients import Gradients

        layers = _initialized(model)
        xt = _nd(x, layers[0].weight.dtype)
        xt.attach_grad()  # grad_req "write": every backward overwrites, nothing accumulates
        self._backward_mean(model, xt)
        grads = [LayerWeights(layer.weight.grad().asnumpy().T.copy(),  # (out, in) -> canonical (in, out)
                              None if layer.bias is None else layer.bias.grad().asnumpy())
                 for layer in layers]
        return Gradients(tuple(grads), xt.grad.asnumpy())

    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        layers = _initialized(model)
        params = [p for p in _params(model) if p.grad_req != "null"]
        trainer = gluon.Trainer(params, "sgd", {"learning_rate": learning_rate, "momentum": 0.0, "wd": 0.0},
                                kvstore=None)
        self._backward_mean(model, _nd(x, layers[0].weight.dtype))
        trainer.step(1)  # the loss is already a mean: no further 1/batch_size rescaling

    def _backward_mean(self, model: Any, xt: nd.NDArray) -> None:
        with autograd.record():
            loss = nd.mean(self._forward(model, xt))
        loss.backward()

    def save_model(self, model: Any, path: str | os.PathLike) -> None:
        """MXNet's own ``.params`` NDArray container (``save_parameters``): no pickle."""
        _initialized(model)
        model.save_parameters(os.fspath(path))

    def load(self, path: str | os.PathLike, spec: StackSpec, style: str) -> gluon.Block:
        model = self.build(spec, style)
        # The same structural names as save_parameters wrote; nothing missing, nothing extra, dtypes kept.
        model.load_parameters(os.fspath(path), allow_missing=False, ignore_extra=False, cast_dtype=False)
        return model

    def versions(self) -> dict[str, str]:
        features = mx.runtime.Features()
        return {
            "mxnet": mx.__version__,
            "mxnet_onednn": "active" if onednn_active() else "off",
            "mxnet_blas": next((f.name for f in features.values() if f.name.startswith("BLAS_") and f.enabled),
                               "unknown"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        }


def _trainable_size(params: Any) -> int:
    return sum(int(np.prod(p.shape)) for p in params if p.grad_req != "null")
