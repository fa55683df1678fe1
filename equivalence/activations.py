"""Activations as float64 numpy references, with the facts the error model needs.

Only numpy lives here. Each adapter maps these names to its own framework's
activation, so the mapping (and its traps) sits in the adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def stable_sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow warnings: ``exp(-log(1 + exp(-z)))``.

    ``np.logaddexp`` never overflows, so this is silent under ``-W error`` even at
    z = ±1e4, unlike the naive form (overflow below -88.7 in float32, -709.8 in float64).
    """
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class Activation:
    """A float64 reference of an activation and its largest slope (Lipschitz constant).

    The slope turns an error in the pre-activation into an error in the output;
    the error model (``equivalence.tolerance``) uses it.
    """

    name: str
    reference: Callable[[np.ndarray], np.ndarray]
    max_slope: float


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", stable_sigmoid, max_slope=0.25),
        Activation("tanh", np.tanh, max_slope=1.0),
        Activation("relu", lambda z: np.maximum(z, 0.0), max_slope=1.0),
        Activation("linear", lambda z: z, max_slope=1.0),
    )
}
