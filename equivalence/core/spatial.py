"""Spatial layer kinds: convolution, pooling and flatten, in the canonical channels-last layout.

Canonical layout (the Keras layout; only the torch adapter transposes): activations ``(N, *spatial, C)``, a conv
kernel ``(*kernel, in, out)``, and padding resolved at the layer's input size to explicit ``(before, after)``
zeros per spatial axis, so a Keras ``"same"`` and a torch ``padding=1`` are the same kind exactly when they pad
alike (``same_padding``). A kind object is one layer's configuration; two layers compute the same function
exactly when their kinds are equal, which is how a structural difference is named before any value is computed.

The error bounds (derived in ``docs/layer-kinds.md``):

* ``Conv``: every output is a dot product of length ``in * prod(kernel)`` plus a bias, so a conv is a dense
  layer applied to its input's patches (im2col) and has Dense's bound at the patches:
  ``SAFETY * eps * max(1, slope * S, max|h|)``, ``S = max(|patches| @ |W| + |b|)``.
* ``Pool("max")`` and ``Flatten``: a selection and a reshape, exact (bound 0).
* ``Pool("avg")``: a sum of ``m`` terms and a division; at most ``(m/2) eps`` of ``S = max(sum|x| / divisor)``,
  within ``SAFETY * eps * max(1, S, max|h|)`` for windows of up to ``2 * SAFETY`` elements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.kinds import DENSE, LayerTrace, LayerWeights

Padding = tuple[tuple[int, int], ...]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``"same"`` padding of one axis: ``ceil(size / stride)`` outputs, the odd pad at the end
    (so a stride-2 ``"same"`` conv on an even size pads ``(0, 1)`` where torch's ``padding=1`` pads ``(1, 1)``)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2)


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _pad(x: np.ndarray, padding: Padding, value: float) -> np.ndarray:
    return np.pad(x, ((0, 0), *padding, (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """The windows of a padded ``(N, *spatial, C)`` input: a view ``(N, *out, *kernel, C)``."""
    rank = len(kernel)
    view = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=tuple(range(1, 1 + rank)))
    view = view[(slice(None), *(slice(None, None, s) for s in strides))]
    return np.moveaxis(view, 1 + rank, -1)


def _offsets(kernel: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*kernel)]


def _strided(x: np.ndarray, offset: tuple[int, ...], strides: tuple[int, ...], out: tuple[int, ...]) -> np.ndarray:
    """``x[:, o + s * i, ...]`` for every output position ``i``: the input each output sees at one kernel offset."""
    return x[(slice(None), *(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out)))]


def apply_activation(activation: str | Callable[[np.ndarray], np.ndarray], z: np.ndarray) -> np.ndarray:
    act = ACTIVATIONS[activation].reference if isinstance(activation, str) else activation
    return act(z)


def exact_scale(trace: LayerTrace) -> float:
    """The scale of a layer computing exactly (a selection, a reshape, a gather): 0 while its output is its own
    values (no activation after it, or one that changed none of them), else the rounding of the activation after it
    on exact inputs, ``max(1, max|h|)`` as Dense's (a tanh after an embedding is off by an ulp of its output)."""
    z, h = np.asarray(trace.z, dtype=np.float64), np.asarray(trace.h, dtype=np.float64)
    if z.shape == h.shape and np.array_equal(z, h, equal_nan=True):
        return 0.0
    finite = h[np.isfinite(h)]
    return max(1.0, float(np.max(np.abs(finite))) if finite.size else 0.0)


class NoParameters:
    """What a kind without weights (pooling, flatten, a mean) answers: no parameters, nothing to round."""

    def parameter_shapes(self, *, bias: bool = False) -> tuple[tuple[int, ...], ...]:
        return ()

    def parameter_count(self, *, bias: bool = False) -> int:
        return 0

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights | None = None, *, slope: float = 1.0,
                              weight_dtype: str = "float32") -> float:
        return 0.0


@dataclass(frozen=True)
class Conv:
    """A convolution ``h = act(conv(x, W) + b)``, channels-last, zero padding, no dilation, one group.

    ``kernel``, ``strides`` and ``padding`` have one entry per spatial axis (one for Conv1D, two for Conv2D).
    The reference has two independent forms: ``im2col`` (the patches times the flattened kernel, through BLAS)
    and ``direct`` (for every kernel offset an elementwise product and a plain sum over the input channels).
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Padding
    in_channels: int
    out_channels: int

    name = "conv"
    FORMS = ("im2col", "direct")

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def describe(self) -> str:
        return (f"Conv{self.rank}D {'x'.join(map(str, self.kernel))} stride {'x'.join(map(str, self.strides))} "
                f"pad {self.padding} {self.in_channels}->{self.out_channels}")

    def parameter_shapes(self, *, bias: bool) -> tuple[tuple[int, ...], ...]:
        """The canonical layout: the kernel ``(*kernel, in, out)`` (Keras'; torch stores ``(out, in, *kernel)``)."""
        kernel = (*self.kernel, self.in_channels, self.out_channels)
        return (kernel, (self.out_channels,)) if bias else (kernel,)

    def parameter_count(self, *, bias: bool) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes(bias=bias))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        spatial = tuple(output_size(n, k, s, p) for n, k, s, p in zip(in_shape[:-1], self.kernel, self.strides,
                                                                        self.padding))
        return (*spatial, self.out_channels)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """The im2col matrix ``(N * prod(out), prod(kernel) * in)``: one row per output position."""
        windows = _windows(_pad(np.asarray(x, dtype=np.float64), self.padding, 0.0), self.kernel, self.strides)
        return windows.reshape(-1, math.prod(self.kernel) * self.in_channels)

    def _flat(self, weights: LayerWeights) -> LayerWeights:
        W, b = weights
        return LayerWeights(np.asarray(W).reshape(-1, self.out_channels), b)

    def _affine(self, x: np.ndarray, weights: LayerWeights, form: str) -> np.ndarray:
        W, b = weights
        W = np.asarray(W, dtype=np.float64)
        out = self.output_shape(x.shape[1:])
        if form == "im2col":
            z = (self.patches(x) @ W.reshape(-1, self.out_channels)).reshape(x.shape[0], *out)
        elif form == "direct":
            padded = _pad(x, self.padding, 0.0)
            z = np.zeros((x.shape[0], *out), dtype=np.float64)
            for offset in _offsets(self.kernel):
                z += (_strided(padded, offset, self.strides, out[:-1])[..., :, None] * W[offset]).sum(axis=-2)
        else:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        return z if b is None else z + np.asarray(b, dtype=np.float64)

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "im2col") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            z = self._affine(x64, weights, form)
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """Dense's ``S`` at the patches: ``max(|patches| @ |W| + |b|)``."""
        return DENSE.magnitude(self.patches(x), self._flat(weights))

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        """Dense's scale of the same layer written as a dense layer over the patches."""
        h = np.asarray(trace.h).reshape(-1, self.out_channels)
        return DENSE.scale(LayerTrace(self.patches(trace.x), h, h), self._flat(weights), slope=slope)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        return DENSE.weight_rounding_error(self.patches(x), self._flat(weights), slope=slope,
                                           weight_dtype=weight_dtype)


@dataclass(frozen=True)
class Pool(NoParameters):
    """Max or average pooling, channels-last. ``count_include_pad``: an average over a window that reaches into
    the padding divides by the whole window (torch's default) rather than by its inputs (Keras ``"same"``); it is
    normalised to False where it cannot matter (max pooling, no padding), so equal kinds compute alike."""

    op: str  # "max" | "avg"
    size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Padding
    count_include_pad: bool = False

    name = "pool"
    FORMS = ("windows", "offsets")

    def __post_init__(self) -> None:
        if self.op not in ("max", "avg"):
            raise ValueError(f"pooling op: got {self.op!r}, but should be 'max' or 'avg'")
        if self.op == "max" or not any(p for pair in self.padding for p in pair):
            object.__setattr__(self, "count_include_pad", False)

    def describe(self) -> str:
        extra = ", count_include_pad" if self.count_include_pad else ""
        return (f"{self.op.capitalize()}Pool{len(self.size)}D {'x'.join(map(str, self.size))} stride "
                f"{'x'.join(map(str, self.strides))} pad {self.padding}{extra}")

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*(output_size(n, k, s, p) for n, k, s, p in zip(in_shape[:-1], self.size, self.strides,
                                                                 self.padding)), in_shape[-1])

    def _divisor(self, x: np.ndarray) -> np.ndarray | float:
        if self.count_include_pad:
            return float(math.prod(self.size))
        ones = _pad(np.ones((1, *x.shape[1:-1], 1)), self.padding, 0.0)
        return _windows(ones, self.size, self.strides).sum(axis=tuple(range(-1 - len(self.size), -1)))

    def _pool(self, x: np.ndarray, form: str) -> np.ndarray:
        fill = -np.inf if self.op == "max" else 0.0
        padded = _pad(x, self.padding, fill)
        if form == "windows":
            windows = _windows(padded, self.size, self.strides)
            axes = tuple(range(-1 - len(self.size), -1))
            pooled = windows.max(axis=axes) if self.op == "max" else windows.sum(axis=axes)
        elif form == "offsets":
            out = self.output_shape(x.shape[1:])[:-1]
            parts = [_strided(padded, offset, self.strides, out) for offset in _offsets(self.size)]
            pooled = parts[0].copy()
            for part in parts[1:]:
                pooled = np.maximum(pooled, part) if self.op == "max" else pooled + part
        else:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        return pooled if self.op == "max" else pooled / self._divisor(x)

    def reference(self, x: np.ndarray, weights: LayerWeights | None = None,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *,
                  form: str = "windows") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            z = self._pool(x64, form)
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights | None = None) -> float:
        """``S = max(sum|x| / divisor)`` over the windows: the largest sum the average accumulates, divided."""
        if self.op == "max":
            return 0.0
        x = np.abs(np.asarray(x, dtype=np.float64))
        s = self._pool(np.where(np.isfinite(x), x, 0.0), "windows")
        return float(np.max(s)) if s.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights | None = None, *, slope: float = 1.0) -> float:
        """For max pooling (a selection is exact) ``exact_scale``, else ``max(1, slope * S, max|h|)`` as Dense's."""
        if self.op == "max":
            return exact_scale(trace)
        h = np.asarray(trace.h, dtype=np.float64)
        finite = h[np.isfinite(h)]
        return max(1.0, slope * self.magnitude(trace.x), float(np.max(np.abs(finite))) if finite.size else 0.0)


@dataclass(frozen=True)
class Flatten(NoParameters):
    """``(N, *spatial, C) -> (N, prod)`` in the canonical (channels-last) order: exact. Torch flattens
    ``C, *spatial``; its adapter permutes, and the next dense layer's canonical rows are its torch rows permuted
    (``flatten_permutation``)."""

    in_shape: tuple[int, ...]

    name = "flatten"
    FORMS = ("reshape",)

    def describe(self) -> str:
        return f"Flatten {self.in_shape}"

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def reference(self, x: np.ndarray, weights: LayerWeights | None = None,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *,
                  form: str = "reshape") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        z = x64.reshape(x64.shape[0], -1)
        return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights | None = None) -> float:
        return 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights | None = None, *, slope: float = 1.0) -> float:
        return exact_scale(trace)


def flatten_permutation(channels_last: tuple[int, ...]) -> np.ndarray:
    """``perm`` with ``canonical[i] = channels_first_flat[perm[i]]``: where each element of a channels-last
    flatten sits in a channels-first one. A dense layer after it has canonical rows ``W_torch.T[perm]``."""
    rank = len(channels_last)
    first = np.arange(math.prod(channels_last)).reshape(channels_last[-1], *channels_last[:-1])
    return np.moveaxis(first, 0, rank - 1).reshape(-1)
