"""A user's model as the suite sees it: dense units in execution order, read, never written.

Each framework's walker (``equivalence.frameworks.torch.walk``, ``equivalence.frameworks.keras.walk``) turns a
model into a list of ``DenseUnit``: one dense layer, the activation that follows it, its
weights copied out in the canonical layout, and a function that runs exactly that unit of
the user's model on a numpy input. Everything after this point talks numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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
    """One dense layer of a user's model and the activation applied to its output.

    ``W`` is ``(in, out)`` and ``b`` ``(out,)`` or None, copies in ``dtype`` (what the layer
    computes in); ``native`` is the kernel as the framework stores it (torch ``(out, in)``).
    ``run`` applies the user's own layer and activation objects to a numpy input.
    ``write`` (for ``port_weights``) assigns canonical weights into the user's layer.
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

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.W.shape[0]), int(self.W.shape[1]))

    @property
    def label(self) -> str:
        """``'fc1' (Linear 784->256, relu)``."""
        return f"{self.name!r} ({self.kind} {self.shape[0]}->{self.shape[1]}, {self.activation})"


def check_chain(units: list[DenseUnit], framework: str) -> list[DenseUnit]:
    """Refuse a model with no dense layer, or whose layers do not chain (a width mismatch)."""
    if not units:
        raise ModelNotSupported(framework, "model", "no Linear/Dense", None,
                                "found no dense layer to judge")
    dtypes = {u.dtype for u in units}
    if len(dtypes) > 1:
        first = next(u for u in units if u.dtype != units[0].dtype)
        raise ModelNotSupported(framework, first.name, first.kind, first.position,
                                f"computes in {first.dtype}, but {units[0].name!r} in {units[0].dtype}: "
                                "the suite judges one dtype per model")
    return units


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
