"""Error statistics of an activation alone: the signed error in ulps against the float64 reference, over a grid.

The golden vectors see a change of one element by several eps; a systematic shift of a fraction of an ulp
passes every per-element tolerance, yet accumulates through depth (one output in four moved one ulp toward zero
is a mean shift of -0.25 ulp, the kind of truncation that shrinks a residual stream by percents over many calls).
This module measures what such a shift moves: the mean of the signed error over many elements, with its
sampling error.

* **What is measured.** The framework's own activation (``Adapter.activation``: no matmul around it, so another
  CPU's matmul kernel cannot drown it) on a fixed grid of inputs in the dtype, against the float64 reference of
  the same (rounded) inputs.
* **The grid** (``grid``): for float16 and bfloat16 every finite value of the dtype (zero, subnormals,
  saturation, overflow all included); for float32 and float64, ``CORE_POINTS`` points evenly spaced over
  ``[-CORE_RANGE, CORE_RANGE]`` (where the activations bend) and ``TAIL_POINTS`` evenly spaced in bit pattern
  over every finite value (each binade alike: subnormals, tiny, saturated, huge). Deterministic: no random
  numbers, so two runs on one machine give identical statistics.
* **The signed error** of an output ``y`` against the reference ``r`` is ``sign(r) (y - r) / ulp(r)``: in
  ulps of the dtype at the reference value (``ulp(r)`` is the spacing of the dtype's binade holding ``|r|``,
  the subnormal spacing below the smallest normal), and signed by magnitude: negative when the output is
  smaller in magnitude than it should be (toward zero), positive when larger. Odd functions (tanh) would
  otherwise cancel a truncation over a symmetric grid.
* **Counted apart** (``far``): outputs more than ``FAR_ULPS`` ulps off, or non-finite where the reference is
  finite (flush-to-zero of a subnormal, a definition change): a handful of them would dominate a mean of
  fractions of an ulp. Inputs whose reference does not fit the dtype (overflow) are left out.
* **Statistics** (``ErrorStats``): the mean with its 95 % confidence half-width ``1.96 sd / sqrt(n)`` (the
  sampling error, as if the grid were a sample of the op's inputs), the spread (standard deviation), the RMS
  (``sqrt(mean^2 + sd^2)``: the accuracy, judged by both), the largest ``|error|``, and a histogram over
  ``BIN_EDGES``.

Numpy only: the framework's outputs come in as arrays (``measure`` takes the adapter's ``activation``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import EPSILON, LARGEST, SMALLEST_SUBNORMAL, numpy_dtype

CORE_RANGE = 16.0
CORE_POINTS = 1 << 16
TAIL_POINTS = 1 << 15
ROW = 16
"""Row width the grid is shaped into: the row-coupled activations (softmax) act on rows of this many inputs."""
FAR_ULPS = 16.0
Z95 = 1.959963984540054
BIN_EDGES: tuple[float, ...] = (-math.inf, -8.0, -4.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, -1e-9, 1e-9,
                                0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, math.inf)
"""Histogram bins in ulps; the bin ``[-1e-9, 1e-9)`` holds the exact outputs."""
MEAN_LIMIT = 1.0
"""The largest bias (``|mean|``, ulps) an activation may have on any kernel path: one ulp. A faithfully rounded
function is off by less than one ulp at every point, so its mean is too; a correctly rounded one stays within half
an ulp, which a function computed in a wider type and rounded twice (bfloat16 through float32) need not. The
frameworks' largest, measured on five kernel paths of one CPU (docs/accuracy.md): 0.48 (Keras selu, bfloat16)."""
GRID_VERSION = 1
"""Bumped when ``grid`` changes: statistics over another grid are not comparable."""


# --- the grid -------------------------------------------------------------------------------------

def _finite_values(dtype: str) -> np.ndarray:
    """Every finite value of a 16-bit dtype, in increasing order."""
    dt = numpy_dtype(dtype)
    with np.errstate(invalid="ignore"):  # the NaN patterns
        bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dt).astype(np.float64)
    return np.unique(bits[np.isfinite(bits)])


def _bit_uniform(dtype: str, count: int) -> np.ndarray:
    """``count`` finite values of ``dtype`` evenly spaced in bit pattern from -max to +max (every binade alike)."""
    dt = numpy_dtype(dtype)
    bits = dt.itemsize * 8
    top = LARGEST[dtype]
    largest = int(np.array(top, dtype=dt).view(np.dtype(f"uint{bits}")))
    positive = np.linspace(0, largest, count // 2, dtype=np.float64).round().astype(np.uint64)
    magnitudes = positive.astype(np.dtype(f"uint{bits}")).view(dt).astype(np.float64)
    return np.concatenate([-magnitudes[::-1], magnitudes])


@cache
def grid(dtype: str) -> np.ndarray:
    """The inputs, as float64 holding values of ``dtype``, shaped ``(-1, ROW)`` (read-only; see the module)."""
    if numpy_dtype(dtype).itemsize == 2:
        values = _finite_values(dtype)
    else:
        core = np.linspace(-CORE_RANGE, CORE_RANGE, CORE_POINTS).astype(numpy_dtype(dtype)).astype(np.float64)
        values = np.concatenate([core, _bit_uniform(dtype, TAIL_POINTS)])
    values = np.concatenate([values, np.zeros(-len(values) % ROW)]).reshape(-1, ROW)  # whole rows: a few more zeros
    values.setflags(write=False)
    return values


@cache
def reference(activation: str, dtype: str) -> np.ndarray:
    """The float64 reference on ``grid(dtype)`` (computed once per process; read-only)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(ACTIVATIONS[activation].reference(grid(dtype)), dtype=np.float64)
    out.setflags(write=False)
    return out


def reference_digest(activation: str, dtype: str) -> str:
    """A digest of ``reference(activation, dtype)``'s bits: numpy's float64 functions differ between releases
    (measured: ``exp`` and ``expm1`` by one float64 ulp on a third of the grid, numpy 1.26.4 against 2.1.3), and
    a float64 statistic moves with its reference. Statistics compare only over the same digest."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(reference(activation, dtype)).tobytes()).hexdigest()[:16]


# --- the error ------------------------------------------------------------------------------------

def ulp(r: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of ``dtype`` in the binade holding ``|r|`` (the subnormal spacing below the smallest normal)."""
    _, exponent = np.frexp(np.abs(r))  # |r| = m 2^e, m in [0.5, 1): the binade starts at 2^(e-1)
    return np.maximum(np.ldexp(EPSILON[dtype], exponent - 1), SMALLEST_SUBNORMAL[dtype])


def signed_errors(out: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[np.ndarray, int, int]:
    """``(errors, far, n)``: the signed errors in ulps (see the module) of the elements whose reference fits
    ``dtype`` and whose error is within ``FAR_ULPS``; ``far`` counts the others of the ``n`` that fit."""
    fits, ref, scale = _scaled(np.asarray(ref, np.float64).ravel(), dtype)
    return _signed(np.asarray(out, np.float64).ravel()[fits], ref, scale)


def _scaled(ref: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fits, ref[fits], sign(ref) ulp(ref))`` over the elements whose reference fits ``dtype`` (a division
    by the ulp, not a product with its inverse: float64's subnormal spacing has no finite inverse)."""
    fits = np.isfinite(ref) & (np.abs(ref) <= LARGEST[dtype])
    kept = ref[fits]
    return fits, kept, np.where(kept < 0, -1.0, 1.0) * ulp(kept, dtype)


@cache
def _prepared(activation: str, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_scaled`` of the grid's reference, once per process."""
    return _scaled(reference(activation, dtype).ravel(), dtype)


def _signed(out: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, int, int]:
    with np.errstate(invalid="ignore", over="ignore"):
        errors = (out - ref) / scale
    near = np.abs(errors) <= FAR_ULPS  # False for NaN and inf
    return errors[near], int(ref.size - np.count_nonzero(near)), int(ref.size)


@dataclass(frozen=True)
class ErrorStats:
    """The signed error of one framework's activation in one dtype over the grid, in ulps (see the module)."""

    framework: str
    activation: str
    dtype: str
    n: int
    mean: float
    ci95: float
    sd: float
    max: float
    far: int
    histogram: tuple[int, ...]

    @property
    def rms(self) -> float:
        """``sqrt(mean^2 + sd^2)``: the accuracy, by both the bias and the spread."""
        return math.hypot(self.mean, self.sd)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.framework, self.activation, self.dtype

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "histogram": list(self.histogram)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorStats:
        return cls(**{**data, "histogram": tuple(data["histogram"])})

    def describe(self) -> str:
        return (f"mean {self.mean:+.4f} ± {self.ci95:.4f} ulp, sd {self.sd:.3f}, max {self.max:.3g}, "
                f"{self.far} of {self.n} beyond {FAR_ULPS:g} ulps")


def statistics(framework: str, activation: str, dtype: str, out: np.ndarray) -> ErrorStats:
    """The statistics of ``out``, the framework's activation on ``grid(dtype)``."""
    fits, ref, scale = _prepared(activation, dtype)
    return summarize(framework, activation, dtype, *_signed(np.asarray(out, np.float64).ravel()[fits], ref, scale))


def summarize(framework: str, activation: str, dtype: str, errors: np.ndarray, far: int, n: int) -> ErrorStats:
    """The statistics of ``signed_errors``' result ``(errors, far, n)``."""
    count = errors.size
    mean = float(errors.mean()) if count else 0.0
    sd = float(errors.std(ddof=1)) if count > 1 else 0.0
    inner = np.array(BIN_EDGES[1:-1])  # bins [lo, hi), as np.histogram's but for the last
    histogram = np.bincount(np.searchsorted(inner, errors, side="right"), minlength=len(BIN_EDGES) - 1)
    return ErrorStats(framework, activation, dtype, n, mean, Z95 * sd / math.sqrt(count) if count else 0.0, sd,
                      float(np.abs(errors).max()) if count else 0.0, far, tuple(int(c) for c in histogram))


Evaluate = Callable[[str, np.ndarray, str], np.ndarray]
"""``(activation, x, dtype) -> float64 output``: an adapter's ``activation``."""


def measure(framework: str, evaluate: Evaluate, activation: str, dtype: str) -> ErrorStats:
    """The statistics of ``evaluate`` (the framework's activation alone) for ``activation`` in ``dtype``."""
    return statistics(framework, activation, dtype, evaluate(activation, grid(dtype).copy(), dtype))
