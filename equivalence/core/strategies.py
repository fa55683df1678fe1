"""Hypothesis strategies for specs and cases.

Square consecutive layers (where a missing transpose is shape-valid) and width 1
are drawn often on purpose; so are batch size 1 and inputs large enough to
saturate the sigmoid. Weights come from a drawn seed, so a failing example
shrinks to a minimal stack and replays from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from equivalence.core import chain
from equivalence.core.activations import ACTIVATIONS
from equivalence.core.case import WEIGHT_SCALES, Case, make_case
from equivalence.core.dtypes import DTYPES
from equivalence.core.spec import StackSpec

MAX_DEPTH = 8
MAX_BATCH = 32
INPUT_SCALES = (1.0, 0.1, 10.0, 100.0)
"""Input magnitudes; 100 saturates a sigmoid stack with U(-1, 1) weights. The first is where shrinking goes."""

seeds = st.integers(0, 2**32 - 1)

BOUNDARY_WIDTHS = (1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64)
"""Widths at and around the block sizes where BLAS and SIMD kernels switch code paths.

Drawing from these finds kernel-edge bugs faster than uniform widths, and makes
shapes repeat, so the layer pool reuses built Keras layers (a build costs tens of times
an assignment: docs/measurements.md, "Costs per step"). ``specs(width=st.integers(1, 64))`` draws uniformly.
"""
boundary_widths = st.sampled_from(BOUNDARY_WIDTHS)


ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)
"""Every activation both frameworks have (the adapters map exactly these), for properties and reports."""
DTYPE_NAMES: tuple[str, ...] = DTYPES
"""float64, float32, float16, bfloat16."""
BIAS_CHOICES: tuple[bool, ...] = (True, False)
NONFINITE_VALUES: tuple[float, ...] = (float("nan"), float("inf"), float("-inf"))


def _check_choices(name: str, given: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    given = tuple(given)
    if not given:
        raise InvalidArgument(f"{name} is empty; pass at least one of {', '.join(known)}")
    unknown = [g for g in given if g not in known]
    if unknown:
        raise InvalidArgument(f"{name} has unknown entries {unknown}; choose from {', '.join(known)}")
    return given


def _check_bound(name: str, value: int, low: int) -> int:
    if not isinstance(value, int) or value < low:
        raise InvalidArgument(f"{name}={value!r} must be an integer of at least {low}")
    return value


def boundary_widths_up_to(n: int) -> st.SearchStrategy[int]:
    """``BOUNDARY_WIDTHS`` no larger than ``n``: small stacks for properties whose examples are costly."""
    _check_bound("n", n, 1)
    return st.sampled_from([w for w in BOUNDARY_WIDTHS if w <= n])


@st.composite
def widths(draw: st.DrawFn, *, input_width: int, max_depth: int = MAX_DEPTH,
           width: st.SearchStrategy[int] = boundary_widths) -> tuple[int, ...]:
    """Layer widths; each layer is square to the previous one, width 1, or drawn from ``width``."""
    depth = draw(st.integers(1, max_depth), label="depth")
    out, previous = [], input_width
    for i in range(depth):
        kind = draw(st.sampled_from(("any", "square", "one")), label=f"layer {i} width kind")
        if kind == "square":
            layer_width = previous
        elif kind == "one":
            layer_width = 1
        else:
            layer_width = draw(width, label=f"layer {i} width")
        out.append(layer_width)
        previous = layer_width
    return tuple(out)


@st.composite
def specs(draw: st.DrawFn, *, activations: Sequence[str] = ("sigmoid",), dtypes: Sequence[str] = ("float32",),
          max_depth: int = MAX_DEPTH, width: st.SearchStrategy[int] = boundary_widths,
          bias: bool | None = None) -> StackSpec:
    """Stack specs; every layer draws its own activation from ``activations``.

    ``width`` draws the input width and every width that is neither square nor 1.
    ``bias=None`` draws bias on or off (mostly on).
    """
    activations = _check_choices("activations", activations, sorted(ACTIVATIONS))
    dtypes = _check_choices("dtypes", dtypes, DTYPES)
    _check_bound("max_depth", max_depth, 1)
    if not isinstance(width, st.SearchStrategy):
        raise InvalidArgument(f"width={width!r} must be a strategy of positive ints, e.g. st.integers(1, 64)")
    input_width = draw(width, label="input width")
    layer_widths = draw(widths(input_width=input_width, max_depth=max_depth, width=width))
    acts = tuple(draw(st.sampled_from(activations), label=f"layer {i} activation")
                 for i in range(len(layer_widths)))
    has_bias = draw(st.sampled_from((True, True, True, False)), label="bias") if bias is None else bias
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    return StackSpec(input_width, layer_widths, acts, bias=has_bias, dtype=dtype)


def _weight_scales(dtype: str) -> tuple[str, ...]:
    # float16 tops out at 65504: U(-1, 1) weights under unbounded activations overflow within a few
    # layers (the reference stays finite, the frameworks give inf). fan_in keeps |h| near the input's size.
    return ("fan_in",) if dtype == "float16" else WEIGHT_SCALES


@st.composite
def cases(draw: st.DrawFn, spec_strategy: st.SearchStrategy[StackSpec] | None = None,
          *, max_batch: int = MAX_BATCH) -> Case:
    """A spec with seeded weights and inputs (see ``equivalence.core.case.make_case``)."""
    _check_bound("max_batch", max_batch, 1)
    spec = draw(spec_strategy if spec_strategy is not None else specs(), label="spec")
    batch = draw(st.one_of(st.just(1), st.integers(1, max_batch)), label="batch")
    return make_case(
        spec,
        seed=draw(seeds, label="seed"),
        batch=batch,
        input_scale=draw(st.sampled_from(INPUT_SCALES), label="input scale"),
        weight_scale=draw(st.sampled_from(_weight_scales(spec.dtype)), label="weight scale"),
    )


def breadth_specs(**kwargs) -> st.SearchStrategy[StackSpec]:
    """Specs drawing every activation (per layer), every dtype, and bias on or off."""
    return specs(activations=ACTIVATION_NAMES, dtypes=DTYPE_NAMES, **kwargs)


@st.composite
def nonfinite_cases(draw: st.DrawFn, spec_strategy: st.SearchStrategy[StackSpec] | None = None,
                    *, max_batch: int = MAX_BATCH) -> Case:
    """A case whose input holds NaN, +inf or -inf at a few drawn positions (at least one)."""
    case = draw(cases(spec_strategy if spec_strategy is not None else breadth_specs(), max_batch=max_batch))
    x = case.x.copy()
    n = draw(st.integers(1, min(4, x.size)), label="non-finite count")
    for i in range(n):
        row = draw(st.integers(0, x.shape[0] - 1), label=f"non-finite {i} row")
        col = draw(st.integers(0, x.shape[1] - 1), label=f"non-finite {i} column")
        x[row, col] = draw(st.sampled_from(NONFINITE_VALUES), label=f"non-finite {i} value")
    return Case(case.spec, case.weights, x)


MODEL_INPUT_SCALES = (1.0, 100.0)
"""Input magnitudes for a user's own model: ordinary inputs, and inputs that saturate (the first shrinks best)."""


@st.composite
def model_inputs(draw: st.DrawFn, *, width: int, dtype: str = "float32", scales: Sequence[float] = MODEL_INPUT_SCALES,
                 nonfinite: bool = False, max_batch: int = MAX_BATCH) -> dict:
    """Keyword arguments of ``equivalence.core.case.drawn_input`` for a model of ``width`` inputs.

    A dict rather than the array, so that a failing example prints as a short, rebuildable call.
    ``nonfinite=True`` puts NaN, +inf or -inf at one to four drawn positions.
    """
    _check_bound("width", width, 1)
    _check_bound("max_batch", max_batch, 1)
    _check_choices("dtype", (dtype,), DTYPES)
    scales = tuple(scales)
    if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise InvalidArgument(f"scales={scales!r} must hold positive numbers, e.g. (1.0, 100.0)")
    batch = draw(st.one_of(st.just(1), st.integers(1, max_batch)), label="batch")
    out = {"width": width, "dtype": dtype, "seed": draw(seeds, label="seed"), "batch": batch,
           "scale": float(draw(st.sampled_from(scales), label="input scale")), "nonfinite": ()}
    if nonfinite:
        n = draw(st.integers(1, min(4, batch * width)), label="non-finite count")
        out["nonfinite"] = tuple(
            (draw(st.integers(0, batch - 1), label="row"), draw(st.integers(0, width - 1), label="column"),
             draw(st.sampled_from(("nan", "inf", "-inf")), label="value")) for _ in range(n))
    return out


CHAIN_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")


@st.composite
def chain_cases(draw: st.DrawFn, *, dtypes: Sequence[str] = ("float32",), max_batch: int = 8) -> Case:
    """A seeded chain of mixed kinds (``equivalence.core.chain``): a 1-D or 2-D conv with an optional
    BatchNorm and pooling layer, then Flatten and a Dense; or an MLP with a BatchNorm or a LayerNorm inside.
    Small on purpose: every distinct architecture is a model built once in each framework."""
    dtypes = _check_choices("dtypes", dtypes, DTYPES)
    act = st.sampled_from(CHAIN_ACTIVATIONS)
    if draw(st.booleans(), label="conv"):
        rank, size = draw(st.sampled_from((1, 2)), label="rank"), draw(st.integers(3, 7), label="size")
        shape = (size,) * rank + (draw(st.integers(1, 3), label="channels"),)
        layers = [chain.conv(draw(st.integers(1, 4), label="filters"), draw(st.sampled_from((1, 3)), label="kernel"),
                             same=True, activation=draw(act, label="conv activation"))]
        if draw(st.booleans(), label="batchnorm"):
            layers.append(chain.batchnorm(draw(act, label="norm activation")))
        pool = draw(st.sampled_from((None, "max", "avg")), label="pool")
        if pool is not None:
            layers.append(chain.pool(pool, 2, stride=1))
        layers += [chain.flatten(), chain.dense(draw(st.integers(1, 4), label="units"), draw(act, label="act"))]
    else:
        shape = (draw(st.integers(2, 12), label="width"),)
        norm = draw(st.sampled_from((chain.batchnorm, chain.layernorm)), label="norm")
        layers = [chain.dense(draw(st.integers(2, 12), label="hidden")), norm(draw(act, label="norm activation")),
                  chain.dense(draw(st.integers(1, 6), label="units"), draw(act, label="act"))]
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    return chain.make_chain_case(shape, layers, dtype, seed=draw(seeds, label="seed"),
                                 batch=draw(st.integers(1, max_batch), label="batch"),
                                 input_scale=draw(st.sampled_from(INPUT_SCALES), label="input scale"),
                                 weight_scale=draw(st.sampled_from(_weight_scales(dtype)), label="weight scale"))
