"""Plain data the core and the adapters exchange: parameter counts and gradients, in the canonical layout.

Kept apart from the logic that produces or judges them, so that neither the adapters nor the core import
each other for a type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivalence.core.layout import LayerWeights


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts as the framework itself reports them."""

    per_layer: tuple[int, ...]
    total: int
    trainable_tensors: int


@dataclass(frozen=True, eq=False)
class Gradients:
    """``dL/dW`` and ``dL/db`` per layer (canonical ``(in, out)`` layout) and ``dL/dX``."""

    weights: tuple[LayerWeights, ...]
    x: np.ndarray
