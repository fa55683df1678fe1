"""Copy weights between frameworks through the canonical layout."""

from __future__ import annotations

from typing import Any

from equivalence.core.adapter import Adapter


def transfer(source: Adapter, source_model: Any, target: Adapter, target_model: Any) -> None:
    """Copy every layer of ``source_model`` into ``target_model``.

    Shapes are checked for every layer before anything is written; a mismatch
    raises ``ValueError`` naming the layer and both shapes. A square layer copied
    without the transpose would pass any shape check, which is why the torch
    adapter owns the transpose and nothing else touches it.
    """
    target.set_weights(target_model, source.get_weights(source_model))
