"""Activations as float64 numpy references, with the facts the error model needs.

Only numpy lives here. Each adapter maps these names to its own framework's
activation, with every argument explicit, so the mapping (and its traps) sits in
the adapter; a test asserts both adapters cover exactly ``ACTIVATIONS``.

The references are written so that, in float64, they never warn for finite
inputs (``np.logaddexp`` and ``expm1`` of a clipped argument instead of ``exp``
that could overflow in a branch ``np.where`` evaluates anyway), and so that a
non-finite input gives what both frameworks give (measured in
``docs/measurements.md``): e.g. ``silu(-inf) = -inf * 0 = nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def stable_sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow warnings: ``exp(-log(1 + exp(-z)))``.

    ``np.logaddexp`` never overflows, so this is silent under ``-W error`` even at
    z = ±1e4, unlike the naive form (overflow below -88.7 in float32, -709.8 in float64).
    """
    return np.exp(-np.logaddexp(0.0, -z))


_erfc = np.frompyfunc(math.erfc, 1, 1)  # scipy is not a dependency; math.erfc is correctly rounded-ish


def gelu_exact(z: np.ndarray) -> np.ndarray:
    """``z * Phi(z) = z/2 * erfc(-z/sqrt 2)``: erfc keeps full relative accuracy for z << 0."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * z * _erfc(-z / math.sqrt(2.0)).astype(np.float64)


GELU_TANH_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(z: np.ndarray) -> np.ndarray:
    """``z/2 (1 + tanh(c (z + 0.044715 z^3)))``, written as ``z * sigmoid(2 c (z + 0.044715 z^3))``.

    (``1 + tanh(y) = 2 sigmoid(2y)``: no cancellation for z << 0.)
    """
    return z * stable_sigmoid(2.0 * GELU_TANH_C * (z + 0.044715 * z**3))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum (no overflow)."""
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - np.max(z, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def elu(z: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    # expm1 of min(z, 0): the branch np.where discards never overflows.
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(z: np.ndarray) -> np.ndarray:
    return SELU_SCALE * elu(z, SELU_ALPHA)


def celu(z: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.maximum(z, 0.0) + np.minimum(0.0, alpha * np.expm1(np.minimum(z, 0.0) / alpha))


def softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def relu6(z: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(z, 0.0), 6.0)


def hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """Keras 3 and torch: ``relu6(z + 3) / 6`` (Keras 2's ``0.2 z + 0.5`` differs by up to 0.083)."""
    return relu6(z + 3.0) / 6.0


LEAKY_SLOPE = 0.2
"""The leaky slope we use, explicitly, on both sides: defaults differ (torch 0.01, keras.layers.LeakyReLU 0.3)."""


@dataclass(frozen=True)
class Activation:
    """A float64 reference of an activation and its largest slope (Lipschitz constant).

    The slope turns an error in the pre-activation into an error in the output;
    the error model (``equivalence.core.tolerance``) uses it. For the elementwise
    activations it is ``max |f'|``. For the row-coupled ones (softmax,
    log_softmax) it is the Lipschitz constant in the max-norm: a perturbation of
    at most ``d`` in every element of a row moves ``softmax_i`` by
    ``s_i (dz_i - sum_j s_j dz_j)``, at most ``2 d s_i (1 - s_i) <= d/2``, and
    ``log_softmax_i`` by ``dz_i - sum_j s_j dz_j``, at most ``2 d``.
    ``row_coupled`` says the output of one element depends on its whole row.
    """

    name: str
    reference: Callable[[np.ndarray], np.ndarray]
    max_slope: float
    row_coupled: bool = False


def _softmax_over(axis: int, log: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """softmax (or log_softmax) over ``axis``, by moving it last."""
    def f(z: np.ndarray) -> np.ndarray:
        moved = np.moveaxis(z, axis, -1)
        return np.moveaxis(log_softmax(moved) if log else softmax(moved), -1, axis)
    return f


def _leaky(slope: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda z: np.where(z >= 0, z, slope * z)


# Largest slopes of the smooth non-monotone-slope ones, from a fine float64 grid
# (tests/core/test_activations.py re-measures every entry): gelu 1.1289 at z = 2.42,
# gelu_tanh 1.1290, silu 1.0998 at z = 2.40, mish 1.0886 at z = 1.19 (rounded up).
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", stable_sigmoid, max_slope=0.25),
        Activation("tanh", np.tanh, max_slope=1.0),
        Activation("relu", lambda z: np.maximum(z, 0.0), max_slope=1.0),
        Activation("linear", lambda z: z, max_slope=1.0),
        Activation("softmax", softmax, max_slope=0.5, row_coupled=True),
        Activation("log_softmax", log_softmax, max_slope=2.0, row_coupled=True),
        Activation("gelu", gelu_exact, max_slope=1.13),
        Activation("gelu_tanh", gelu_tanh, max_slope=1.13),
        Activation("elu", elu, max_slope=1.0),
        Activation("selu", selu, max_slope=SELU_SCALE * SELU_ALPHA),  # 1.7581, just left of 0
        Activation("celu", celu, max_slope=1.0),
        Activation("silu", lambda z: z * stable_sigmoid(z), max_slope=1.1),
        Activation("softplus", softplus, max_slope=1.0),
        Activation("softsign", lambda z: z / (1.0 + np.abs(z)), max_slope=1.0),
        Activation("relu6", relu6, max_slope=1.0),
        Activation("hard_sigmoid", hard_sigmoid, max_slope=1.0 / 6.0),
        Activation("hard_silu", lambda z: z * hard_sigmoid(z), max_slope=1.5),  # (2z + 3)/6 at z -> 3
        Activation("leaky_relu_0.2", lambda z: np.where(z >= 0, z, LEAKY_SLOPE * z), max_slope=1.0),
        Activation("mish", lambda z: z * np.tanh(softplus(z)), max_slope=1.09),
    )
}


# --- parametric activations ----------------------------------------------------------------------
# A parameter travels in the name: "leaky_relu_0.01", "elu_0.5", "celu_2.0", "softmax_axis_0".
# The defaults keep their plain names ("elu" is alpha 1, "softmax" the last axis), and "leaky_relu_0.2"
# is both a fixed entry and what the parametric form gives for 0.2, so every existing name keeps working.
PARAMETRIC_FAMILIES = ("leaky_relu", "elu", "celu", "softmax_axis", "log_softmax_axis")


def _param_text(value: float) -> str:
    return repr(float(value))


def activation_name(family: str, param: float | int | None = None) -> str:
    """The table name of ``family`` with its parameter: ``activation_name("leaky_relu", 0.01) == "leaky_relu_0.01"``.

    ``softmax_axis``/``log_softmax_axis`` take an axis of a 2-D ``(batch, features)`` array: 1 and -1
    are the last axis (the plain ``"softmax"``), 0 is the batch axis.
    """
    if param is None:
        if family not in ACTIVATIONS:
            raise ValueError(f"unknown activation {family!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        return family
    if family in ("softmax_axis", "log_softmax_axis"):
        axis = int(param)
        if axis not in (-2, -1, 0, 1):
            raise ValueError(f"{family} over axis {axis}: a dense layer's output is 2-D (batch, features)")
        base = family[: -len("_axis")]
        return base if axis in (-1, 1) else f"{family}_0"
    if family in ("elu", "celu") and float(param) == 1.0:
        return family
    if family not in PARAMETRIC_FAMILIES:
        raise ValueError(f"activation {family!r} takes no parameter; parametric: {', '.join(PARAMETRIC_FAMILIES)}")
    return f"{family}_{_param_text(param)}"


def _parse(name: str) -> Activation | None:
    """The ``Activation`` of a parametric name, or None when ``name`` is not one."""
    for family in sorted(PARAMETRIC_FAMILIES, key=len, reverse=True):
        prefix = family + "_"
        if not name.startswith(prefix):
            continue
        text = name[len(prefix):]
        if family.endswith("_axis"):
            if text != "0":
                return None
            return Activation(name, _softmax_over(0, log=family.startswith("log")),
                              max_slope=2.0 if family.startswith("log") else 0.5, row_coupled=True)
        try:
            value = float(text)
        except ValueError:
            return None
        if not math.isfinite(value) or _param_text(value) != text:
            return None  # one spelling per value: "leaky_relu_0.01", never "leaky_relu_1e-2"
        if family == "leaky_relu":
            return Activation(name, _leaky(value), max_slope=max(1.0, abs(value)))
        if value == 1.0 or (family == "celu" and value == 0.0):
            return None  # alpha 1 is the plain name; celu divides by alpha
        if family == "elu":
            return Activation(name, lambda z, a=value: elu(z, a), max_slope=max(1.0, abs(value)))
        return Activation(name, lambda z, a=value: celu(z, a), max_slope=1.0 if value > 0 else float("inf"))
    return None


class _ActivationTable(dict):
    """``ACTIVATIONS``: the fixed entries, iterated as before, plus every parametric name on lookup."""

    def __missing__(self, name: str) -> Activation:
        found = _parse(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and _parse(name) is not None)

    def get(self, name, default=None):  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default


ACTIVATIONS = _ActivationTable(ACTIVATIONS)


def family_of(name: str) -> tuple[str, float | None]:
    """``("leaky_relu", 0.01)`` for ``"leaky_relu_0.01"``; ``(name, None)`` for a fixed name."""
    if dict.__contains__(ACTIVATIONS, name) and name != "leaky_relu_0.2":
        return name, None
    for family in sorted(PARAMETRIC_FAMILIES, key=len, reverse=True):
        if name.startswith(family + "_") and _parse(name) is not None:
            text = name[len(family) + 1:]
            return family, float(text)
    if name == "leaky_relu_0.2":
        return "leaky_relu", 0.2
    raise KeyError(name)
