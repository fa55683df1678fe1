"""A user's model as the suite sees it: dense units in execution order, read, never written.

Each framework's walker (``equivalence.frameworks.torch.walk``, ``equivalence.frameworks.keras.walk``) turns a
model into a list of ``DenseUnit``: one dense layer, the activation that follows it, its
weights copied out in the canonical layout, and a function that runs exactly that unit of
the user's model on a numpy input. Everything after this point talks numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from equivalence.core.kinds import DENSE


class ModelNotSupported(ValueError):
    """A model the suite cannot judge (a convolution, a normalisation, a branch, ...).

    ``str()`` is one line naming the layer, its type and its position in execution order.
    """

    def __init__(self, framework: str, layer: str, kind: str, position: int | None, problem: str) -> None:
        self.framework, self.layer, self.kind, self.position = framework, layer, kind, position
        where = "" if position is None else f" at position {position}"
        super().__init__(" ".join(f"{framework} layer {layer!r} ({kind}){where}: {problem}".split()))


@dataclass(frozen=True, eq=False)
class DenseUnit:
    """One layer of a user's model (dense, or another kind: ``layer_kind``) and the activation applied to its
    output.

    ``W`` is the canonical kernel (dense ``(in, out)``, conv ``(*kernel, in, out)``, empty for a layer without
    weights) and ``b`` ``(out,)`` or None, copies in ``dtype`` (what the layer computes in); ``native`` is the
    kernel as the framework stores it (torch ``(out, in)``, ``(out, in, *kernel)``).
    ``run`` applies the user's own layer and activation objects to a numpy input in the canonical (channels-last)
    layout. ``write`` (for ``port_weights``) assigns canonical weights into the user's layer.
    ``layer_kind`` is the core's kind object (``equivalence.core.kinds``, ``equivalence.core.spatial``), its
    configuration resolved at ``in_shape`` (one sample's canonical input shape; empty: a dense chain's width).
    """

    framework: str
    name: str
    kind: str
    position: int
    W: np.ndarray
    b: np.ndarray | None
    native: np.ndarray
    activation: str
    activation_source: str
    dtype: str
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    write: Callable[[np.ndarray, np.ndarray | None], None] | None = field(default=None, repr=False)
    layer_kind: Any = DENSE
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    @classmethod
    def without_weights(cls, framework: str, name: str, kind: str, position: int, activation: str,
                        activation_source: str, run: Callable[[np.ndarray], np.ndarray], *, layer_kind: Any,
                        in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> DenseUnit:
        """A layer with nothing to port (a pool, a flatten, a residual Add): empty kernels, no bias, no ``write``,
        no dtype of its own."""
        empty = np.zeros((0,))
        return cls(framework, name, kind, position, empty, None, empty, activation, activation_source, "", run, None,
                   layer_kind=layer_kind, in_shape=in_shape, out_shape=out_shape)

    @property
    def shape(self) -> tuple[int, int]:
        """``(in, out)``: a dense layer's widths; another kind's input and output sizes per sample."""
        if self.layer_kind is DENSE:
            return (int(self.W.shape[0]), int(self.W.shape[1]))
        return (math.prod(self.in_shape), math.prod(self.out_shape))

    @property
    def label(self) -> str:
        """``'fc1' (Linear 784->256, relu)``; ``'fc1' (Linear 8->16 per token, relu)`` on a sequence."""
        if self.layer_kind is not DENSE:
            return f"{self.name!r} ({self.kind} {self.layer_kind.describe()}, {self.activation})"
        per_token = " per token" if len(self.in_shape) > 1 else ""
        return f"{self.name!r} ({self.kind} {self.shape[0]}->{self.shape[1]}{per_token}, {self.activation})"


def in_flatten_order(unit: DenseUnit, permutation: np.ndarray) -> DenseUnit:
    """A per-feature layer (a norm) between a Flatten whose order is not the canonical one (torch's ``C, H, W``) and
    the dense layer after it, in the canonical order: canonical feature ``j`` is the model's ``permutation[j]``
    (``spatial.flatten_permutation``), so its parameters' columns are permuted, it runs on the features put back in
    the model's order and its output is made canonical again, and ``port_weights`` writes them back so. Without
    this a norm after a torch Flatten would be paired column by column with the Keras one in another order, and a
    port copying its parameters unpermuted would pass."""
    permutation = np.asarray(permutation)
    back = np.argsort(permutation)
    run, write = unit.run, unit.write

    def canonical_run(x: np.ndarray) -> np.ndarray:
        return np.asarray(run(np.ascontiguousarray(np.asarray(x)[:, back])))[:, permutation]

    def canonical_write(W: np.ndarray, b: np.ndarray | None) -> None:
        write(np.asarray(W)[..., back], None if b is None else np.asarray(b)[..., back])

    return replace(unit, W=np.asarray(unit.W)[..., permutation].copy(),
                   b=None if unit.b is None else np.asarray(unit.b)[..., permutation].copy(), run=canonical_run,
                   write=None if write is None else canonical_write)


def check_chain(units: list[DenseUnit], framework: str) -> list[DenseUnit]:
    """Refuse a model with no dense layer, or whose layers do not chain (a width mismatch)."""
    if not units:
        raise ModelNotSupported(framework, "model", "no Linear/Dense", None,
                                "found no dense layer to judge")
    weighted = [u for u in units if u.dtype]
    if not weighted:
        raise ModelNotSupported(framework, "model", "no Linear/Dense", None, "found no layer with weights to judge")
    units = [u if u.dtype else replace(u, dtype=weighted[0].dtype) for u in units]  # pooling, flatten: the chain's
    dtypes = {u.dtype for u in units}
    if len(dtypes) > 1:
        first = next(u for u in units if u.dtype != units[0].dtype)
        raise ModelNotSupported(framework, first.name, first.kind, first.position,
                                f"computes in {first.dtype}, but {units[0].name!r} in {units[0].dtype}: "
                                "the suite judges one dtype per model")
    return units


class Refused(Exception):
    """Raised inside a walker's mapping of one op; the walker turns it into ``ModelNotSupported`` with the layer's
    name and position."""


class NotJudged(KeyError):
    """Raised by a walker's mapping for an op its own tables do not hold (``looked_up``): the one ``KeyError`` that
    means "not a layer the suite judges"; any other raised while mapping a known op is a bug, and surfaces."""


def looked_up(table: Mapping[Any, Any], key: Any) -> Any:
    """``table[key]``, or ``NotJudged`` when the walker's table does not hold ``key``."""
    if key not in table:
        raise NotJudged(key)
    return table[key]


def judged_activation(read: Callable[[], str | None], refuse: Callable[[str], Exception], judged: str) -> str | None:
    """``read()``: a walker's mapping of one op to its activation (None for an op skipped at inference). A reason
    it gives (``Refused``) is refused as it is; an op its tables do not hold (``NotJudged``, not any ``KeyError``)
    is refused naming what the walker judges (``judged``: its layers and modules, in its framework's words)."""
    try:
        return read()
    except Refused as exc:
        raise refuse(str(exc)) from None
    except NotJudged:
        raise refuse(f"not a layer or an activation the suite judges (it judges {judged})") from None


def attach_activation(pending: dict | None, activation: str | None, source: str, op: object,
                      refuse: Callable[[str], Exception], *, dense: str = "Dense") -> None:
    """Attach an activation met in a walk to the dense layer before it (``pending``: its ``name``, ``act``;
    updated with ``act``, ``act_source``, ``act_op``). None is a layer skipped at inference; an activation
    before any dense layer, or a second one after it, is refused through ``refuse``."""
    if activation is None:
        return
    if pending is None:
        raise refuse(f"an activation before any {dense} layer")
    if pending["act"] != "linear":
        raise refuse(f"a second activation after {pending['name']!r} ({pending['act']} already): the suite judges "
                     "one activation per dense layer")
    pending.update(act=activation, act_source=source, act_op=op)
