"""oneDNN's AMX bfloat16 matmul leaks a NaN from one batch row into others, in torch and in TensorFlow, each for its
own class of shapes (docs/upstream/torch-bfloat16-nan-leak.md, docs/upstream/tensorflow-bfloat16-nan-leak.md): the
reproduction a probe runs through any adapter, and the excuse an entry grants for exactly the rows it leaks into.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from equivalence.core.conditions import Shape
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.known_differences import Excuse
from equivalence.core.layout import LayerWeights


class NanLeak(NamedTuple):
    """One placement that leaked: the input (float64, values of the dtype), the layer's output, the NaN's row, and
    the weights as the framework stores them (canonical layout)."""

    x: np.ndarray
    got: np.ndarray
    nan_row: int
    weights: LayerWeights


NAN_LEAK_PLACEMENTS = tuple((row, col) for row in range(3) for col in range(2))
"""Where a NaN-leak probe puts its one NaN, until a row leaks: rows 0-2, columns 0-1 (the Intel measurements placed
it at rows 0-5, columns 0-3; every leaking shape there leaked from rows 1-2, column 0)."""


def nan_leak(adapter: Any, shape: Shape, dtype: str, rng: np.random.Generator,
             value: float = np.nan) -> NanLeak | None:
    """A dense layer of ``shape`` (batch, in, out) fed one NaN (or ``value``: an infinity leaks too) per placement
    (``NAN_LEAK_PLACEMENTS``) until another batch row's outputs turn NaN: that placement, or None when none leaks.
    oneDNN's AMX bfloat16 matmul does this for some shapes, in torch and in TensorFlow, each with its own shape
    class."""
    batch, n_in, n_out = shape
    layer = adapter.build_layer(n_in, n_out, "linear", bias=True, dtype=dtype)
    adapter.set_weights([layer], [LayerWeights(rng.uniform(-1, 1, (n_in, n_out)).astype(np.float32),
                                               rng.uniform(-1, 1, n_out).astype(np.float32))])
    for row, col in NAN_LEAK_PLACEMENTS:
        if row >= batch:
            continue
        x = rng.standard_normal((batch, n_in)).astype(numpy_dtype(dtype)).astype(np.float64)
        x[row, col] = value
        got = adapter.apply_layer([layer], 0, x)
        if set(np.flatnonzero(~np.isfinite(got).all(axis=-1)).tolist()) - {row}:  # another row turned non-finite
            return NanLeak(x, got, row, adapter.get_weights([layer])[0])
    return None


def nan_leaks_on(grid: Sequence[Shape]) -> Callable[[Any, str], tuple[Shape, ...]]:
    """A probe's ``shows``: the shapes of ``grid`` where one NaN in the input makes another batch row NaN."""
    def shows(adapter: Any, dtype: str) -> tuple[Shape, ...]:
        rng = np.random.default_rng(0)
        return tuple(shape for shape in grid if nan_leak(adapter, shape, dtype, rng) is not None)
    return shows


def nan_leaked_from_another_row(shape_class: Callable[[Shape], bool]) -> Excuse:
    """An excuse for a NaN leak: the NaN outputs of rows whose input and reference are all finite, in a batch where
    another row's input holds a NaN or an infinity (both leak, measured on the Intel Xeon), for a layer of
    ``shape_class``; nothing else."""
    def excuse(z: np.ndarray, got: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        mask = np.zeros(np.shape(got), dtype=bool)
        if x is None or np.ndim(x) != 2 or np.ndim(got) != 2 or not shape_class((*np.shape(x), got.shape[-1])):
            return mask
        if np.all(np.isfinite(x)):
            return mask
        clean = np.all(np.isfinite(x), axis=-1) & np.all(np.isfinite(z), axis=-1)
        return np.isnan(got) & clean[:, None]
    return excuse
