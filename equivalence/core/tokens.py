"""Which values of a walked model are token sequences ``(N, L, features)``: where a dense layer and a LayerNorm act
token by token, over the features.

A walker tracks it explicitly, value by value, rather than reading it from a rank: a channels-last ``(L, C)``
after a Conv1D has the rank of a sequence ``(L, E)``, but torch holds it channels-first ``(N, C, L)``, where a
Linear or a LayerNorm acts along the positions, not the channels. A token sequence is batch-first in torch and
Keras alike, the canonical layout: nothing is transposed around its layers.
"""

from __future__ import annotations

from typing import Any

from equivalence.core.attention import SelfAttention
from equivalence.core.embedding import Embedding
from equivalence.core.norms import LayerNorm
from equivalence.core.residual import Residual

STARTS = (Embedding, SelfAttention)
"""Kinds whose output is a token sequence whatever their input."""

TOKEN_WISE = (LayerNorm, Residual)
"""Kinds (besides the dense layer's, and an activation) that act on a token sequence token by token: their output
is a sequence when their input is."""


def is_sequence(kind: Any, before: bool | None) -> bool | None:
    """Whether a layer of ``kind`` gives a token sequence, its input being one (``before``: True), not one (False),
    or the model's input (None: its layout is the one the model declares). ``kind`` None: a dense layer or an
    activation."""
    if isinstance(kind, STARTS):
        return True
    if kind is None or isinstance(kind, TOKEN_WISE):
        return before
    return False
