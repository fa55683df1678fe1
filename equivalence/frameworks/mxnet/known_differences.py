"""MXNet Gluon's measured differences: the entries (``equivalence.core.known_differences.KnownDifference``).
Data only: nothing here imports MXNet (which needs its own venv); the registry entry
(``equivalence.frameworks.builtin``) carries them to the core. Evidence in ``tests/frameworks/test_mxnet_quirks.py``.

Two float64 differences small enough to keep Gluon's op widen the bound (``extra_error``); the others are
``noted``: measured where the mapping was made, and the adapter computes around them (its own formula, or
another op), or they lie outside what the comparison meets (a NaN input; an absolute error below 2e-38).
"""

from __future__ import annotations

from equivalence.core.conditions import Fact
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import FLOAT32_CONSTANT, KnownDifference

MXNET_ONEDNN = Fact("frameworks.mxnet.mxnet_onednn", ("active",),
                    "MXNet's float32 ops on oneDNN (MKLDNN: built in, not off by MXNET_MKLDNN_ENABLED=0)")

MXNET: tuple[KnownDifference, ...] = (
    KnownDifference(
        "mxnet_float64_erf_backward_float32_constant", "mxnet", ("gelu",), ("float64",), "extra_error",
        "MXNet's float64 erf backward is float32-accurate: 2/sqrt(pi) exp(-x^2) off by up to 3.0e-8 relative "
        "(0.252 eps32, over [-6, 6]); gelu's gradient by 7.3e-9 at x = 1. The forward is float64-exact. "
        "Evidence in tests/frameworks/test_mxnet_quirks.py", extra_error=0.5 * EPSILON["float32"], scope=("gradient",)),
    KnownDifference(
        "mxnet_float64_softrelu_threshold_20", "mxnet", ("softplus",), ("float64",), "extra_error",
        "MXNet's float64 Activation('softrelu') returns x above 20 (like torch's threshold=20), dropping "
        "log1p(exp(-x)) <= 2.1e-9. Evidence in tests/frameworks/test_mxnet_quirks.py", extra_error=FLOAT32_CONSTANT,
        scope=("forward",)),
    KnownDifference(
        "relu_nan_float32", "mxnet", ("relu",), ("float32",), "noted",
        "float32 Activation(act_type='relu') maps NaN to 0 under oneDNN (on by default); the reference and torch "
        "keep NaN. float64, nd.relu and MXNET_MKLDNN_ENABLED=0 keep NaN. Finite inputs are unaffected",
        when=(MXNET_ONEDNN,)),
    KnownDifference(
        "sigmoid_tiny_float32", "mxnet", ("sigmoid",), ("float32",), "noted",
        "float32 Activation(act_type='sigmoid') under oneDNN returns 0 for z <= -87, where the true value "
        "(1.6e-38 at -87) is still a normal float: an absolute error below 2e-38, far inside every bound",
        when=(MXNET_ONEDNN,)),
    KnownDifference(
        "gelu_float64_in_float32", "mxnet", ("gelu",), ("float64",), "noted",
        "nn.GELU() (LeakyReLU act_type='gelu', the exact erf form) computes float64 in float32: gelu(16.04) is "
        "off by 9.2e-7 (5.7e-8 relative, float32 precision). float64 maps to 0.5 x (1 + F.erf(x / sqrt 2)), which "
        "is within 2 eps64"),
    KnownDifference(
        "selu_backward_wrong_scale", "mxnet", ("selu",), ("float64", "float32"), "noted",
        "nn.SELU()'s backward for z < 0 is lambda (y + alpha) where the derivative is y + lambda alpha (y the "
        "output): dselu(-5) = -0.0767, not 0.0119; off by (lambda - 1) y, up to 0.089. Its forward uses "
        "float32-rounded lambda and alpha (3.3e-8 relative in float64). selu maps to its formula, float64 "
        "constants"),
    KnownDifference(
        "gelu_has_no_tanh_form", "mxnet", ("gelu_tanh",), ("float64", "float32"), "noted",
        "Gluon 1.9.1's GELU has no approximation argument and is the erf form: it differs from gelu_tanh by "
        "4.7e-4. gelu_tanh maps to its formula"),
    KnownDifference(
        "leaky_relu_float64_in_float32", "mxnet", ("leaky_relu_0.2",), ("float64",), "noted",
        "F.LeakyReLU(act_type='leaky') computes float64 in float32: leaky(-29.54) = -5.908000469 (7.9e-8 "
        "relative); float64 maps to F.where(x >= 0, x, 0.2 x). Its default slope is 0.25; nn.LeakyReLU has none"),
    KnownDifference(
        "hard_sigmoid_defaults", "mxnet", ("hard_sigmoid",), ("float64", "float32"), "noted",
        "F.hard_sigmoid defaults to alpha=0.2, beta=0.5 (the old Keras 2 form): hard_sigmoid(1) = 0.7, not 4/6; "
        "and alpha=1/6 is a float32 parameter. hard_sigmoid maps to F.clip(x + 3, 0, 6) / 6"),
    KnownDifference(
        "log_softmax_onednn_float32", "mxnet", ("log_softmax",), ("float32",), "noted",
        "float32 F.log_softmax under oneDNN is off by up to 3.4e-6 on rows of small values (1.7x the error "
        "model's bound at |z| <= 0.1, width 7); with MXNET_MKLDNN_ENABLED=0 it is within 0.2x. log_softmax maps "
        "to its formula",
        when=(MXNET_ONEDNN,)),
    KnownDifference(
        "softrelu_onednn_float32", "mxnet", ("softplus", "mish"), ("float32",), "noted",
        "float32 Activation('softrelu') under oneDNN is an approximation: softplus(-17.68) = -1.9e-6 (negative; "
        "the true value is 2.1e-8), absolute error up to 7.6e-6 at z = -87 (0.74 eps32 |z|, inside softplus's "
        "bound). mish multiplies that by z (5.6e-5 at z = -29.45, 1.8x its bound): mish maps to a stable softplus",
        when=(MXNET_ONEDNN,)),
)
