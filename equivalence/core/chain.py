"""Chains of layers of any kind, as the golden vectors and the report matrix hold them.

A ``ChainSpec`` names each layer's kind (resolved at its input shape), activation and dtype; a dense layer's
width and whether a layer has a bias are in its weights. Here: the JSON form of a chain spec (each kind by its
``name`` in ``KIND_TYPES``, its fields as they are), the shapes along a chain, the check of a chain's weights,
and seeded cases drawn from a blueprint (``Planned`` layers: the kind made at the input shape it gets).

A new kind plugs in with one entry in ``KIND_TYPES`` (a frozen dataclass whose fields are JSON numbers,
strings, booleans, null and tuples of them) and one in ``WEIGHT_DRAWS``; each framework's chain builder
(``Adapter.build_chain``) gains one entry too.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.attention import SelfAttention
from equivalence.core.case import Case
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.kinds import DENSE, LayerWeights
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.recurrent import Recurrent
from equivalence.core.residual import INPUT, Branch, Residual, check_links
from equivalence.core.spatial import Conv, Flatten, Padding, Pool, same_padding
from equivalence.core.spec import ChainSpec, StackSpec

KIND_TYPES: dict[str, Any] = {"dense": None, "conv": Conv, "pool": Pool, "flatten": Flatten,
                              "layernorm": LayerNorm, "batchnorm": BatchNorm, "embedding": Embedding,
                              "mean": SequenceMean, "attention": SelfAttention, "lstm": Recurrent, "gru": Recurrent,
                              "add": Residual, "branch": Branch}
"""Every kind a chain may hold, by its ``name``: its class (None: the ``DENSE`` singleton, no fields)."""

NO_WEIGHTS = np.zeros((0,))
"""A pooling or flatten layer's weights: nothing to store."""


# --- the JSON form -----------------------------------------------------------------------------------

def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def kind_to_json(kind: Any) -> dict[str, Any]:
    if kind is DENSE:
        return {"name": "dense"}
    return {"name": kind.name, **{f.name: _as_lists(getattr(kind, f.name)) for f in dataclasses.fields(kind)}}


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value


def kind_from_json(data: Any) -> Any:
    """The kind of a ``kind_to_json`` dict; ``ValueError`` naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or data["name"] not in KIND_TYPES:
        raise ValueError(f"a layer kind must be an object whose 'name' is one of {', '.join(KIND_TYPES)}; "
                         f"got {data!r:.80}")
    cls = KIND_TYPES[data["name"]]
    if cls is None:
        return DENSE
    fields = {k: _as_tuples(v) for k, v in data.items() if k != "name"}
    hints = typing.get_type_hints(cls)
    indices = getattr(cls, "INDEX_FIELDS", ())  # an earlier layer's index, or INPUT (-1): the model's input
    for name, value in fields.items():
        minimum = INPUT if name in indices else 0 if hints.get(name) == Padding else 1
        if name in hints and not _fits(value, hints[name], minimum=minimum):
            what = f"a layer's index or {INPUT} (the model's input)" if name in indices else _what(hints[name])
            raise ValueError(f"layer kind {data['name']}: {name} must be {what}, got {value!r:.60}")
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"layer kind {data['name']}: {exc}") from None


def _fits(value: Any, hint: Any, *, minimum: int) -> bool:
    """``value`` read from JSON is of the field's type ``hint``: an integer at least ``minimum`` (a size, a stride,
    a channel count: 1; a padding: 0), a finite non-negative number, a string, a boolean, or a tuple of them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # an optional index (padding_idx): 0 or more
        return any(value is None if arg is type(None) else _fits(value, arg, minimum=0)
                   for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, tuple):
            return False
        args = typing.get_args(hint)
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        return len(items) == len(value) and all(_fits(v, h, minimum=minimum) for v, h in zip(value, items))
    if hint is bool or hint is str:
        return isinstance(value, hint)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if hint is int:
        return isinstance(value, int) and value >= minimum
    return hint is float and math.isfinite(value) and value >= 0


def _what(hint: Any) -> str:
    if hint == Padding:
        return "a list of [before, after] pairs of integers, 0 or more, one per spatial axis"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return "an integer, 0 or more, or null"
    if typing.get_origin(hint) is tuple:
        return "a list of positive integers"
    return {int: "a positive integer", float: "a finite number, 0 or more", str: "a string", bool: "a boolean"}.get(
        hint, str(hint))


def spec_to_json(spec: StackSpec | ChainSpec) -> dict[str, Any]:
    """A dense stack's own JSON form, or a chain's: ``input_shape``, ``layers`` (kind and activation), ``dtype``."""
    if isinstance(spec, StackSpec):
        return spec.to_json()
    return {"input_shape": list(spec.input_shape),
            "layers": [{"kind": kind_to_json(k), "activation": a} for k, a in zip(spec.kinds, spec.activations)],
            "dtype": spec.dtype}


def spec_from_json(data: Any) -> StackSpec | ChainSpec:
    """The spec of a ``spec_to_json`` dict (a chain when it has ``layers``); ``ValueError`` naming the field."""
    if not isinstance(data, dict) or "layers" not in data:
        return StackSpec.from_json(data)
    shape, layers = data.get("input_shape"), data["layers"]
    if not isinstance(shape, list) or not shape or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"input_shape must be a list of positive integers, got {shape!r:.60}")
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        raise ValueError(f"layers must be a non-empty list of {{kind, activation}} objects, got {layers!r:.60}")
    from equivalence.core.activations import ACTIVATIONS

    for i, layer in enumerate(layers):
        if layer.get("activation") not in ACTIVATIONS:
            raise ValueError(f"layers[{i}]: unknown activation {layer.get('activation')!r}")
    return ChainSpec(tuple(shape), tuple(kind_from_json(layer.get("kind")) for layer in layers),
                     tuple(layer["activation"] for layer in layers), data.get("dtype"))


# --- shapes and weights -----------------------------------------------------------------------------

def chain_shapes(spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[tuple[int, ...]]:
    """One sample's output shape of every layer (a dense layer's width is its kernel's)."""
    shape, out = tuple(spec.input_shape), []
    for kind, (W, _) in zip(spec.kinds, weights):
        shape = (int(np.shape(W)[1]),) if kind is DENSE else tuple(kind.output_shape(shape))
        out.append(shape)
    return out


def check_chain_weights(spec: ChainSpec, weights: Sequence[LayerWeights], *, what: str = "weights") -> None:
    """Raise ``ValueError`` naming the first layer whose weights do not fit its kind at its input shape."""
    if len(weights) != spec.depth:
        raise ValueError(f"{what}: expected {spec.depth} layers, got {len(weights)}")
    shape = tuple(spec.input_shape)
    shapes = [shape]
    for i, (kind, (W, b)) in enumerate(zip(spec.kinds, weights)):
        if kind is DENSE:
            if len(shape) != 1:
                raise ValueError(f"{what}: layer {i} (dense) takes a flat input, but gets shape {shape}: put a "
                                 f"flatten layer before it (its kernel is then ({math.prod(shape)}, out))")
            if np.ndim(W) != 2 or np.shape(W)[0] != shape[0]:
                raise ValueError(f"{what}: layer {i} (dense) kernel has shape {np.shape(W)}, expected "
                                 f"({shape[0]}, out) on input {shape}")
            expected = DENSE.parameter_shapes(shape[0], np.shape(W)[1], bias=b is not None)
        else:
            expected = kind.parameter_shapes(bias=b is not None)
        got = tuple(np.shape(a) for a in (W, b) if a is not None and np.size(a))
        if got != expected:
            raise ValueError(f"{what}: layer {i} ({kind.name}) has parameters shaped {got}, expected {expected}")
        before, shape = shape, (int(np.shape(W)[1]),) if kind is DENSE else tuple(kind.output_shape(shape))
        if not all(n > 0 for n in shape):
            raise ValueError(f"{what}: layer {i} ({kind.name}) gives no output on its input {before} (got shape "
                             f"{shape}): its window is larger than the input")
        shapes.append(shape)
    problem = check_links(spec.kinds, shapes)
    if problem:
        raise ValueError(f"{what}: {problem}")


# --- blueprints and seeded cases -----------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """One layer of a blueprint: its kind, made at the input shape it gets (``make``); its activation; a
    dense layer's width and bias (``units``, ``bias``), which its weights carry."""

    make: Callable[[tuple[int, ...]], Any]
    activation: str = "linear"
    units: int = 0
    bias: bool = True
    takes: int | None = None
    """Made at the output shape of this earlier layer (``INPUT``: the model's input) instead of the previous one's:
    a second branch's start."""


def _same(shape: tuple[int, ...], size: tuple[int, ...], strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(same_padding(n, k, s) for n, k, s in zip(shape[:-1], size, strides))


def conv(filters: int, kernel: int, *, stride: int = 1, same: bool = False, activation: str = "linear",
         bias: bool = True) -> Planned:
    """A conv of rank its input's; ``same``: TensorFlow's ``"same"`` padding (pick sizes where it is symmetric:
    torch pads both ends alike)."""
    def make(shape: tuple[int, ...]) -> Conv:
        rank = len(shape) - 1
        size, strides = (kernel,) * rank, (stride,) * rank
        padding = _same(shape, size, strides) if same else ((0, 0),) * rank
        return Conv(size, strides, padding, shape[-1], filters)
    return Planned(make, activation, bias=bias)


def pool(op: str, size: int, *, stride: int | None = None, same: bool = False) -> Planned:
    def make(shape: tuple[int, ...]) -> Pool:
        rank = len(shape) - 1
        window, strides = (size,) * rank, (stride or size,) * rank
        return Pool(op, window, strides, _same(shape, window, strides) if same else ((0, 0),) * rank)
    return Planned(make)


def flatten() -> Planned:
    return Planned(lambda shape: Flatten(tuple(shape)))


def dense(units: int, activation: str = "linear", *, bias: bool = True) -> Planned:
    return Planned(lambda shape: DENSE, activation, units, bias)


def batchnorm(activation: str = "linear", *, epsilon: float = 1e-3, momentum: float = 0.99) -> Planned:
    return Planned(lambda shape: BatchNorm(shape[-1], epsilon, momentum), activation)


def layernorm(activation: str = "linear", *, epsilon: float = 1e-3) -> Planned:
    return Planned(lambda shape: LayerNorm(shape[-1], epsilon), activation)


def embedding(rows: int, dim: int) -> Planned:
    """A table of ``rows`` ids over the chain's input, token ids ``(L,)``; its cases draw ids, not values."""
    return Planned(lambda shape: Embedding(rows, dim, shape[0]))


def token_mean(activation: str = "linear") -> Planned:
    """The mean over the tokens of a sequence ``(L, features)``."""
    return Planned(lambda shape: SequenceMean(*shape), activation)


def attention(heads: int, activation: str = "linear", *, bias: bool = True) -> Planned:
    """Self-attention of ``heads`` heads over a sequence ``(L, E)``, each head ``E // heads`` wide."""
    return Planned(lambda shape: SelfAttention(shape[1], heads, shape[1] // heads, shape[0]), activation, bias=bias)


def recurrent(cell: str, units: int, activation: str = "linear", *, sequences: bool = False,
              bias: bool = True) -> Planned:
    """An LSTM or GRU (``cell``) over a sequence ``(T, features)``: its output the sequence, or the last step."""
    return Planned(lambda shape: Recurrent(cell, shape[1], units, shape[0], sequences), activation, bias=bias)


def add(skip: int, activation: str = "linear") -> Planned:
    """A residual Add of the previous layer's output (the branch) and the output of layer ``skip`` (``INPUT``: the
    model's input), then ``activation``."""
    return Planned(lambda shape: Residual(tuple(shape), skip), activation)


def branch(source: int) -> Planned:
    """A second branch starting from the output of layer ``source`` (``INPUT``: the model's input): ``a(x) + b(x)``
    is ``a``'s layers, ``branch(x)``, ``b``'s layers, then ``add(a's last layer)``."""
    return Planned(lambda shape: Branch(tuple(shape), source), takes=source)


def resolve(input_shape: tuple[int, ...], layers: Sequence[Planned], dtype: str) -> ChainSpec:
    """The chain spec of a blueprint: every kind made at the shape the layers before it give."""
    kinds, shape = [], tuple(input_shape)
    shapes = [shape]  # the input's, then every layer's output shape
    for planned in layers:
        kind = planned.make(shape if planned.takes is None else shapes[planned.takes + 1])
        kinds.append(kind)
        shape = (planned.units,) if kind is DENSE else tuple(kind.output_shape(shape))
        shapes.append(shape)
    return ChainSpec(tuple(input_shape), tuple(kinds), tuple(p.activation for p in layers), dtype)


def _signed(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return rng.uniform(low, high, size=n) * rng.choice([-1.0, 1.0], size=n)


def _draw_affine(rng: np.random.Generator, kernel: tuple[int, ...], fan_in: int, bias: bool,
                 weight_scale: str) -> LayerWeights:
    """A kernel U(-s, s) (s = 1, or 1/sqrt(fan-in)) and a bias bounded away from zero (a dropped bias shows)."""
    return _draw_shaped(rng, (kernel, (kernel[-1],)), fan_in, bias, weight_scale)


def _draw_shaped(rng: np.random.Generator, shapes: tuple[tuple[int, ...], ...], fan_in: int, bias: bool,
                 weight_scale: str) -> LayerWeights:
    """``W`` shaped ``shapes[0]``, U(-s, s) (s = 1, or 1/sqrt(fan-in)); a bias shaped ``shapes[1]``, bounded away
    from zero (a dropped bias shows)."""
    scale = 1.0 if weight_scale == "unit" else 1.0 / np.sqrt(fan_in)
    W = rng.uniform(-scale, scale, size=shapes[0])
    return LayerWeights(W, _signed(rng, 0.1, 1.0, math.prod(shapes[1])).reshape(shapes[1]) if bias else None)


def _draw_norm(rng: np.random.Generator, kind: Any) -> LayerWeights:
    """gamma of either sign away from zero, beta U(-1, 1); BatchNorm's moving mean U(-1, 1), variance U(0.25, 4)."""
    rows = [_signed(rng, 0.5, 2.0, kind.features), rng.uniform(-1, 1, kind.features)]
    if kind.ROWS == 4:
        rows += [rng.uniform(-1, 1, kind.features), rng.uniform(0.25, 4.0, kind.features)]
    return LayerWeights(np.stack(rows), None)


WEIGHT_DRAWS: Mapping[str, Callable[..., LayerWeights]] = {
    "dense": lambda rng, kind, shape, planned, scale: _draw_affine(rng, (shape[0], planned.units), shape[0],
                                                                   planned.bias, scale),
    "conv": lambda rng, kind, shape, planned, scale: _draw_affine(
        rng, kind.parameter_shapes(bias=False)[0], math.prod(kind.kernel) * kind.in_channels, planned.bias, scale),
    "pool": lambda rng, kind, shape, planned, scale: LayerWeights(NO_WEIGHTS, None),
    "flatten": lambda rng, kind, shape, planned, scale: LayerWeights(NO_WEIGHTS, None),
    "layernorm": lambda rng, kind, shape, planned, scale: _draw_norm(rng, kind),
    "batchnorm": lambda rng, kind, shape, planned, scale: _draw_norm(rng, kind),
    "embedding": lambda rng, kind, shape, planned, scale: LayerWeights(rng.uniform(-1, 1, (kind.rows, kind.dim)), None),
    "mean": lambda rng, kind, shape, planned, scale: LayerWeights(NO_WEIGHTS, None),
    "attention": lambda rng, kind, shape, planned, scale: _draw_shaped(
        rng, kind.parameter_shapes(bias=True), kind.embed_dim, planned.bias, scale),
    "lstm": lambda rng, kind, shape, planned, scale: _draw_shaped(
        rng, kind.parameter_shapes(bias=True), kind.units, planned.bias, scale),
    "gru": lambda rng, kind, shape, planned, scale: _draw_shaped(
        rng, kind.parameter_shapes(bias=True), kind.units, planned.bias, scale),
    "add": lambda rng, kind, shape, planned, scale: LayerWeights(NO_WEIGHTS, None),
    "branch": lambda rng, kind, shape, planned, scale: LayerWeights(NO_WEIGHTS, None),
}
"""Each kind's seeded weights: ``(rng, kind, input shape, planned layer, weight scale) -> LayerWeights``."""


def make_chain_case(input_shape: tuple[int, ...], layers: Sequence[Planned], dtype: str, *, seed: int, batch: int,
                    input_scale: float = 1.0, weight_scale: str = "fan_in") -> Case:
    """The case a blueprint draws from ``seed``: the same arguments always give the same arrays."""
    spec = resolve(input_shape, layers, dtype)
    rng = np.random.default_rng(seed)
    dt = numpy_dtype(dtype)
    weights, shape = [], tuple(input_shape)
    for kind, planned in zip(spec.kinds, layers):
        W, b = WEIGHT_DRAWS[kind.name](rng, kind, shape, planned, weight_scale)
        weights.append(LayerWeights(W.astype(dt), None if b is None else b.astype(dt)))
        shape = (planned.units,) if kind is DENSE else tuple(kind.output_shape(shape))
    if getattr(spec.kinds[0], "integer_input", False):  # token ids, every one of the table's rows possible
        x = rng.integers(0, spec.kinds[0].rows, size=(batch, *input_shape))
    else:
        x = rng.uniform(-input_scale, input_scale, size=(batch, *input_shape)).astype(dt)
    return Case(spec, tuple(weights), x)  # type: ignore[arg-type]  # a chain's Case: ChainSpec in spec's place
