"""The spec of a dense stack: input width, layer widths, activations, bias, dtype.

A spec is framework-neutral and immutable. Every adapter builds from it, the
reference computes from it, and its ``id`` names the case in pytest and in reports.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import DTYPES, short_dtype_name
from equivalence.core.kinds import DENSE

DEFAULT_ACTIVATION = "sigmoid"


def _check_width(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{where} must be a positive integer, got {value!r} ({type(value).__name__})"
        )
    if value <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value}")
    return int(value)


@dataclass(frozen=True)
class StackSpec:
    """A dense stack ``input_width -> widths[0] -> ... -> widths[-1]``.

    ``activations`` may be one name (used for every layer) or one name per layer.
    """

    input_width: int
    widths: tuple[int, ...]
    activations: tuple[str, ...] | str = DEFAULT_ACTIVATION
    bias: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_width", _check_width(self.input_width, "input_width"))
        if isinstance(self.widths, (str, bytes)) or not isinstance(self.widths, Sequence):
            raise ValueError(f"widths must be a sequence of positive integers, got {self.widths!r}")
        if len(self.widths) == 0:
            raise ValueError("widths is empty: a stack needs at least one layer")
        widths = tuple(_check_width(w, f"widths[{i}] (layer {i})") for i, w in enumerate(self.widths))
        object.__setattr__(self, "widths", widths)

        acts = self.activations
        layers = f"{len(widths)} layer{'s' if len(widths) != 1 else ''}"
        if isinstance(acts, str):
            acts = (acts,) * len(widths)
        elif isinstance(acts, bytes) or not isinstance(acts, Sequence):
            raise ValueError(
                f"activations must be one name (a str) or a sequence of names, one per layer; "
                f"got {acts!r} ({type(acts).__name__})"
            )
        elif len(acts) != len(widths):
            raise ValueError(
                f"activations names {len(acts)} but the stack has {layers}: "
                "give one name for all layers or exactly one per layer"
            )
        for i, name in enumerate(acts):
            if not isinstance(name, str):
                raise ValueError(f"activations[{i}] (layer {i}) must be a name (a str), got {name!r} "
                                 f"({type(name).__name__})")
            if name not in ACTIVATIONS:
                raise ValueError(
                    f"unknown activation {name!r} for layer {i}; known: {', '.join(sorted(ACTIVATIONS))}"
                )
        object.__setattr__(self, "activations", tuple(acts))

        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")

    # --- derived facts -------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def fan_ins(self) -> tuple[int, ...]:
        return (self.input_width, *self.widths[:-1])

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """Canonical kernel shape ``(in, out)`` of every layer."""
        return tuple(zip(self.fan_ins, self.widths))

    @property
    def param_counts(self) -> tuple[int, ...]:
        """Parameters per layer: ``in*out`` (+ ``out`` with bias)."""
        return tuple(DENSE.parameter_count(i, o, bias=self.bias) for i, o in self.layer_shapes)

    @property
    def total_params(self) -> int:
        return sum(self.param_counts)

    @property
    def kinds(self) -> tuple:
        """Every layer's kind (``equivalence.core.kinds``): all dense."""
        return (DENSE,) * self.depth

    @property
    def tensors_per_layer(self) -> int:
        return len(DENSE.parameter_shapes(self.input_width, self.widths[0], bias=self.bias))

    @property
    def id(self) -> str:
        """A short readable id such as ``5-7-3_sigmoid_f32`` or ``5-7relu-3tanh_f32_nobias``."""
        if len(set(self.activations)) == 1:
            body = "-".join(map(str, (self.input_width, *self.widths))) + f"_{self.activations[0]}"
        else:
            body = "-".join(
                [str(self.input_width)] + [f"{w}{a}" for w, a in zip(self.widths, self.activations)]
            )
        suffix = "" if self.bias else "_nobias"
        return f"{body}_{short_dtype_name(self.dtype)}{suffix}"

    def __str__(self) -> str:
        return self.id

    def to_json(self) -> dict:
        """A plain dict that ``from_json`` turns back into an equal spec."""
        return {"input_width": self.input_width, "widths": list(self.widths), "activations": list(self.activations),
                "bias": self.bias, "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> StackSpec:
        """The spec of a ``to_json`` dict; a ``ValueError`` names the field and what is wrong with it.

        The JSON form is strict where the constructor is lenient: ``widths`` and ``activations`` are lists
        with one entry per layer (``"activations": "sigmoid"`` is refused as a string, not read as 7 names).
        """
        fields = ("input_width", "widths", "activations", "bias", "dtype")
        if not isinstance(data, dict):
            raise ValueError(f"a spec must be an object with {', '.join(fields)}; got {type(data).__name__} "
                             f"{data!r:.60}")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"the spec has no {', '.join(missing)}")
        for name, what in (("widths", "positive integers"), ("activations", "activation names")):
            value = data[name]
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list of {what}, one per layer; got {type(value).__name__} "
                                 f"{value!r:.60}")
        return cls(data["input_width"], tuple(data["widths"]), tuple(data["activations"]), data["bias"],
                   data["dtype"])


@dataclass(frozen=True)
class ChainSpec:
    """A chain of layers of any kind (dense, conv, pooling, flatten: ``equivalence.core.spatial``), each with its
    activation, in one dtype; ``input_shape`` is one sample's canonical (channels-last) shape.

    What ``layerwise_reference`` and ``compare_layers`` read of a spec (``kinds``, ``activations``, ``dtype``,
    ``id``), for a user's own model with layers other than dense; the stacks of the matrix and of the golden
    vectors stay ``StackSpec``.
    """

    input_shape: tuple[int, ...]
    kinds: tuple
    activations: tuple[str, ...]
    dtype: str

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.activations) or not self.kinds:
            raise ValueError(f"a chain needs one activation per layer, got {len(self.kinds)} layers and "
                             f"{len(self.activations)} activations")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")

    @property
    def depth(self) -> int:
        return len(self.kinds)

    @property
    def id(self) -> str:
        """``8x8x3-conv-pool-flatten-dense_f32``."""
        body = "-".join(kind.name for kind in self.kinds)
        return f"{'x'.join(map(str, self.input_shape))}-{body}_{short_dtype_name(self.dtype)}"

    def __str__(self) -> str:
        return self.id
