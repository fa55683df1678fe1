"""The one canonical weight layout every adapter reads and writes.

A stack's weights are a list with one ``LayerWeights`` per layer: the kernel ``W``
shaped ``(in, out)`` (the Keras layout, so ``X @ W + b``) and the bias ``b`` shaped
``(out,)``, or ``None`` for a layer without bias. Only the torch adapter transposes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.kinds import LayerWeights
from equivalence.core.spec import StackSpec

__all__ = ["LayerWeights", "cast_weights", "check_spec_weights", "check_weights", "weights_equal"]


def check_weights(shapes: Sequence[tuple[int, int]], bias: Sequence[bool],
                  weights: Sequence[LayerWeights], *, what: str = "weights") -> None:
    """Raise ``ValueError`` naming the first layer whose weights do not fit.

    ``shapes`` are the target's canonical ``(in, out)`` kernel shapes and ``bias``
    whether each target layer has a bias. Checked before anything is written, so
    a bad list never leaves a model half-copied.
    """
    if len(weights) != len(shapes):
        raise ValueError(f"{what}: expected {len(shapes)} layers, got {len(weights)}")
    for i, ((n_in, n_out), has_bias, layer) in enumerate(zip(shapes, bias, weights)):
        if not isinstance(layer, tuple) or len(layer) != 2:
            raise ValueError(f"{what}: layer {i} must be a (W, b) pair, got {type(layer).__name__}")
        W, b = layer
        if np.shape(W) != (n_in, n_out):
            raise ValueError(
                f"{what}: layer {i} kernel has shape {np.shape(W)}, expected {(n_in, n_out)} "
                "(canonical layout is (in, out); a weight stored (out, in) needs a transpose)"
            )
        if has_bias:
            if b is None:
                raise ValueError(f"{what}: layer {i} has no bias, but the target layer has one of shape {(n_out,)}")
            if np.shape(b) != (n_out,):
                raise ValueError(f"{what}: layer {i} bias has shape {np.shape(b)}, expected {(n_out,)}")
        elif b is not None:
            raise ValueError(f"{what}: layer {i} has a bias of shape {np.shape(b)}, but the target layer has none")


def check_spec_weights(spec: StackSpec, weights: Sequence[LayerWeights], *, what: str = "weights") -> None:
    """``check_weights`` against the shapes of ``spec``."""
    check_weights(spec.layer_shapes, [spec.bias] * spec.depth, weights, what=what)


def cast_weights(spec: StackSpec, weights: Sequence[LayerWeights]) -> list[LayerWeights]:
    """Weights checked against ``spec`` and held in the spec's dtype (copies)."""
    check_spec_weights(spec, weights)
    dt = numpy_dtype(spec.dtype)
    return [
        LayerWeights(np.array(W, dtype=dt), None if b is None else np.array(b, dtype=dt))
        for W, b in weights
    ]


def weights_equal(a: Sequence[LayerWeights], b: Sequence[LayerWeights]) -> bool:
    """Bitwise equality of two canonical weight lists (shapes, dtypes, values)."""
    if len(a) != len(b):
        return False
    for (wa, ba), (wb, bb) in zip(a, b):
        if wa.shape != wb.shape or wa.dtype != wb.dtype or wa.tobytes() != wb.tobytes():
            return False
        if (ba is None) != (bb is None):
            return False
        if ba is not None and (ba.dtype != bb.dtype or ba.tobytes() != bb.tobytes()):
            return False
    return True
