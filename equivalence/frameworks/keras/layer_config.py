"""What a Keras layer's configuration means in the canonical layout, shared by the Keras 3 walker (``walk``) and the
Keras 2 reader (``legacy_kinds``), whose layers are configured alike: TensorFlow's ``padding`` per spatial axis and
whether a norm's ``axis`` is the last one. Nothing here imports Keras (``walk`` imports ``legacy``, which imports
``legacy_kinds``: these two helpers living in ``walk`` made an import circle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from equivalence.core.spatial import same_padding


def keras_padding(padding: str, shape: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  refuse: Callable[[str], Exception]) -> tuple[tuple[int, int], ...]:
    """``padding`` (``"valid"`` or ``"same"``, TensorFlow's: the odd pad at the end) as ``(before, after)`` per
    spatial axis of ``shape``; ``refuse`` for any other."""
    if padding == "valid":
        return ((0, 0),) * len(kernel)
    if padding == "same":
        return tuple(same_padding(n, k, s) for n, k, s in zip(shape, kernel, strides))
    raise refuse(f"padding={padding!r}: the suite judges 'valid' and 'same'")


def axis_is_last(axis: Any, rank: int) -> bool:
    """A norm's ``axis`` (an int or a one-element list) is the last of a ``rank``-D tensor."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)
