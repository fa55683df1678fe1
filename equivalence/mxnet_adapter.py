"""MXNet Gluon adapter. Gluon ``Dense.weight`` is ``(units, in_units)`` like torch: this module transposes, nobody else.

MXNet is retired (Apache Attic). Its last release, 1.9.1, still runs on Python
3.11 but needs ``numpy<1.24`` (it uses the removed ``np.bool``), so it lives in
its own environment (``make mxnet``), never beside TensorFlow.

Gluon traps handled here (each measured and pinned in ``tests/test_mxnet.py``):

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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from equivalence.adapters import STYLES, Adapter, FrameworkUnavailable, ParamCount

try:
    import mxnet as mx
except AttributeError as exc:  # pragma: no cover - depends on install: mxnet 1.x uses numpy aliases removed in 1.24
    raise FrameworkUnavailable(
        f"mxnet is installed but cannot import with numpy {np.__version__} ({str(exc).splitlines()[0]}); "
        "MXNet 1.9.1 needs numpy<1.24, "
        "so it cannot share .venv with TensorFlow: make mxnet creates .venv-mxnet"
    ) from exc
from mxnet import gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

from equivalence.layout import LayerWeights, check_weights  # noqa: E402
from equivalence.spec import StackSpec  # noqa: E402

GLUON_ACTIVATIONS: dict[str, str | None] = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "linear": None,  # Dense(activation=None): no activation block at all
}
"""Our activation name -> the ``act_type`` Gluon's ``Dense(activation=...)`` passes to ``Activation``."""

UNSUPPORTED_DTYPES: dict[str, str] = {
    "float16": "MXNet 1.9.1's FullyConnected has no float16 CPU kernel (it raises 'float16 fully connected layer "
               "is currently only supported by CuDNN version' when the result is read)",
    "bfloat16": "Gluon's Dense does not accept dtype 'bfloat16' (numpy: \"data type 'bfloat16' not understood\")",
}
"""Dtypes MXNet cannot compute a Dense layer in on this CPU build (measured, see tests/test_mxnet.py)."""


KNOWN_DIFFERENCES: dict[str, str] = {
    "relu_nan_float32": "float32 Activation(act_type='relu') maps NaN to 0 under oneDNN (on by default); the "
                        "reference and torch keep NaN. float64, nd.relu and MXNET_MKLDNN_ENABLED=0 keep NaN. "
                        "Finite inputs are unaffected.",
    "sigmoid_tiny_float32": "float32 Activation(act_type='sigmoid') under oneDNN returns 0 for z <= -87, where "
                            "the true value (1.6e-38 at -87) is still a normal float: an absolute error below "
                            "2e-38, far inside every bound.",
}
"""Measured behaviours where Gluon differs from the reference (evidence in tests/test_mxnet.py)."""


def onednn_active() -> bool:
    """Whether float32 operators run on oneDNN (MKLDNN): built in, and not disabled by the environment."""
    return mx.runtime.Features().is_enabled("MKLDNN") and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0"


def gluon_activation(name: str) -> str | None:
    """The Gluon ``act_type`` for our activation ``name``; a clear error when there is no mapping."""
    try:
        return GLUON_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"mxnet adapter has no Gluon mapping for activation {name!r}; mapped: {', '.join(GLUON_ACTIVATIONS)}"
        ) from None


def _check_dtype(dtype: str) -> None:
    if dtype in UNSUPPORTED_DTYPES:
        raise ValueError(f"mxnet cannot run a {dtype} Dense layer on CPU: {UNSUPPORTED_DTYPES[dtype]}")


class DenseStack(gluon.HybridBlock):
    """A ``HybridBlock`` subclass as the Gluon 1.x tutorials write one: the ``Dense``
    children registered by attribute assignment, and a ``hybrid_forward(F, x)`` loop."""

    def __init__(self, dense_layers: Sequence[nn.Dense], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth = len(dense_layers)
        for i, layer in enumerate(dense_layers):
            setattr(self, f"dense{i}", layer)  # Block.__setattr__ registers the child

    @property
    def dense_layers(self) -> list[nn.Dense]:
        return [getattr(self, f"dense{i}") for i in range(self.depth)]

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        for layer in self.dense_layers:
            x = layer(x)
        return x


def _dense_layers(model: Any) -> list[nn.Dense]:
    if isinstance(model, list):  # bare layers from build_layer
        return model
    if isinstance(model, DenseStack):
        return model.dense_layers
    if isinstance(model, (nn.Sequential, nn.HybridSequential)):
        return [child for child in model if isinstance(child, nn.Dense)]
    raise TypeError(f"mxnet adapter does not know how to walk a {type(model).__name__}")


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


class GluonAdapter(Adapter):
    name = "mxnet"
    styles = STYLES["mxnet"]
    kernel_layout = "out_in"

    def build(self, spec: StackSpec, style: str) -> gluon.Block:
        """``sequential``: ``nn.Sequential``, imperative. ``hybridized``: ``nn.HybridSequential``
        after ``hybridize()``, run as a cached symbolic graph. ``subclass``: ``DenseStack``."""
        self.check_style(style)
        dense = [self._dense(n_in, n_out, act, bias=spec.bias, dtype=spec.dtype)
                 for (n_in, n_out), act in zip(spec.layer_shapes, spec.activations)]
        if style == "subclass":
            model = DenseStack(dense)
        else:
            model = nn.HybridSequential() if style == "hybridized" else nn.Sequential()
            model.add(*dense)
        model.initialize()
        if style == "hybridized":
            model.hybridize()
        return model

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> nn.Dense:
        layer = self._dense(n_in, n_out, activation, bias=bias, dtype=dtype)
        layer.initialize()
        return layer

    @staticmethod
    def _dense(n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> nn.Dense:
        _check_dtype(dtype)
        return nn.Dense(n_out, activation=gluon_activation(activation), use_bias=bias, flatten=False,
                        dtype=dtype, in_units=n_in)

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
                      weights, what="mxnet set_weights")
        for layer, (W, b) in zip(layers, weights):
            layer.weight.set_data(_nd(np.asarray(W).T, layer.weight.dtype))
            if b is not None:
                layer.bias.set_data(_nd(b, layer.bias.dtype))

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        layer = _dense_layers(model)[index]
        return layer(_nd(x, layer.weight.dtype)).asnumpy()

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        layers = _dense_layers(model)
        y = _nd(x, layers[0].weight.dtype)
        if isinstance(model, list):
            for layer in layers:
                y = layer(y)
        else:
            y = model(y)
        return y.asnumpy()

    def count_params(self, model: Any) -> ParamCount:
        layers = _initialized(model)
        per_layer = tuple(_trainable_size(layer.collect_params().values()) for layer in layers)
        if isinstance(model, list):
            params = [p for layer in layers for p in layer.collect_params().values()]
        else:
            params = list(model.collect_params().values())
        trainable = [p for p in params if p.grad_req != "null"]
        return ParamCount(per_layer, _trainable_size(trainable), len(trainable))

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
