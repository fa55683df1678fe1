"""The dtypes a spec may use, their machine epsilon, and how numpy holds them.

bfloat16 has no numpy dtype of its own; ``ml_dtypes`` (shipped with TensorFlow and
JAX) provides one. Without it, bfloat16 specs are refused with a clear message.
"""

from __future__ import annotations

import numpy as np

# Machine epsilon (distance from 1.0 to the next float), the unit of the error model.
EPSILON: dict[str, float] = {
    "float64": 2.0**-52,
    "float32": 2.0**-23,
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
}
DTYPES: tuple[str, ...] = tuple(EPSILON)
# The smallest normal and the subnormal spacing: written out, since numpy 1.x's finfo does not know bfloat16.
SMALLEST_NORMAL: dict[str, float] = {"float64": 2.0**-1022, "float32": 2.0**-126, "float16": 2.0**-14,
                                     "bfloat16": 2.0**-126}
SMALLEST_SUBNORMAL: dict[str, float] = {name: SMALLEST_NORMAL[name] * EPSILON[name] for name in EPSILON}
LARGEST: dict[str, float] = {"float64": (2 - 2.0**-52) * 2.0**1023, "float32": (2 - 2.0**-23) * 2.0**127,
                             "float16": (2 - 2.0**-10) * 2.0**15, "bfloat16": (2 - 2.0**-7) * 2.0**127}
"""The largest finite value, written out for the same reason."""
_SHORT = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def short_dtype_name(dtype: str) -> str:
    return _SHORT[dtype]


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype holding values of ``dtype`` (ml_dtypes for bfloat16)."""
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on install
            raise ValueError("dtype 'bfloat16' needs the ml_dtypes package: pip install ml_dtypes") from exc
        return np.dtype(ml_dtypes.bfloat16)
    if dtype not in EPSILON:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return np.dtype(dtype)
