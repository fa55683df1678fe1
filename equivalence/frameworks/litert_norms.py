"""Normalisations in a LiteRT flatbuffer: a Keras ``LayerNormalization`` as the TFLite converter writes it, read as
the core's ``LayerNorm``; a ``BatchNormalization`` it folded away, named so its refusal says so.

The converter writes a LayerNorm of ``x`` ``(batch, features)`` as eleven ops (``LAYER_NORM_OPS``)::

    m = MEAN(x, [-1]), n = NEG(m), d = SQUARED_DIFFERENCE(x, m), v = MEAN(d, [-1]), e = ADD(v, epsilon),
    r = RSQRT(e), s = MUL(r, gamma), t = MUL(n, s), o = ADD(t, beta), p = MUL(x, s), y = ADD(p, o)

that is ``y = x s + (beta - m s)`` with ``s = gamma / sqrt(var + epsilon)``: the same function as ``gamma (x - m) /
sqrt(var + epsilon) + beta``, its roundings within the core's LayerNorm bound (each product is at most ``|gamma|
(|x| + |m|) / sigma``, which the bound's magnitude covers). Its activation is the last ``ADD``'s fused one.

A BatchNormalization at inference is an affine map per channel, and the converter folds it: into the weights of
the ``CONV_2D`` or ``FULLY_CONNECTED`` before it (no activation between) or after it, or, where it cannot (after a
fused ReLU, a pool), into a ``MUL`` and an ``ADD`` of per-channel constants (``gamma / sqrt(var + epsilon)`` and
``beta - mean`` times that). A scale and a shift are read as the ``ChannelAffine`` kind (the model's BatchNorm is
folded exactly to compare them, ``equivalence.own_folded``); a norm folded into a layer's weights is refused, naming
the fold.
A weight or bias it folded a norm into shows it only in the constant's name (``.../batchnorm/mul_1;.../MatMul``,
the norm's ops' scope); a norm that changes nothing (the initial gamma 1, beta 0, mean 0, variance 1) may leave no
name, and the file then reads as the layers without it (the comparison names the missing BatchNorm).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from equivalence.core.norms import LayerNorm
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead

LAYER_NORM_OPS = ("MEAN", "NEG", "SQUARED_DIFFERENCE", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "ADD", "MUL", "ADD")
"""A LayerNormalization as the TFLite converter writes it, in its order."""
_FOLDED = ("a BatchNormalization the converter folded {where}: the file holds {lost}, and the suite does not match "
           "a folded norm against its layers yet; compare the models it was converted from")
_PARAMETERS = "the norm's four parameters (gamma, beta, mean, variance)"
BATCHNORM_SCOPE = "/batchnorm/"
"""What the name of a constant the converter folded a Keras BatchNormalization into holds (its ops' scope)."""


def _inputs(op: Any) -> list[int]:
    return [int(t) for t in op.inputs if int(t) >= 0]


def _output(op: Any) -> int:
    return int(op.outputs[0])


def _fused(op: Any) -> int:
    return int(getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0)


def layer_norm(ops: list[tuple[str, Any]], constant: Callable[[int], np.ndarray | None],
               integers: Callable[[int], list[int] | None], x: int, features: int) -> KindRead:
    """``ops`` (the chain's next ops, from a ``MEAN`` of ``x``, with their names) read as a LayerNorm of ``x`` over
    its ``features``; every wire checked, ``Refused`` naming the first that is not a LayerNorm's. ``integers``: a
    constant integer tensor's values (the reduction axes), else None."""
    names = tuple(name for name, _ in ops[:len(LAYER_NORM_OPS)])
    if names != LAYER_NORM_OPS:
        raise Refused(f"starts a normalisation written as ops ({'+'.join(names)}), but not the ones the converter "
                      f"writes a LayerNormalization as ({'+'.join(LAYER_NORM_OPS)}): the suite does not read it")
    mean, neg, squared, var, add, rsqrt, scale, shifted, shift, mul, out = (op for _, op in ops[:len(names)])

    def const(op: Any, other: int) -> np.ndarray | None:
        found = [constant(t) for t in _inputs(op) if t != other]
        return found[0] if other in _inputs(op) and len(found) == 1 and found[0] is not None else None

    def last_axis(op: Any) -> bool:
        return integers(_inputs(op)[1]) in ([-1], [1]) and bool(getattr(op.builtinOptions, "keepDims", False))

    def takes(op: Any, *tensors: int) -> bool:
        return sorted(_inputs(op)) == sorted(tensors)

    wired = [_inputs(mean)[0] == x and last_axis(mean), takes(neg, _output(mean)),
             takes(squared, x, _output(mean)), _inputs(var)[0] == _output(squared) and last_axis(var),
             const(add, _output(var)) is not None and const(add, _output(var)).size == 1,
             takes(rsqrt, _output(add)), const(scale, _output(rsqrt)) is not None,
             takes(shifted, _output(neg), _output(scale)), const(shift, _output(shifted)) is not None,
             takes(mul, x, _output(scale)), takes(out, _output(mul), _output(shift)),
             not any(_fused(op) for _, op in ops[:len(names) - 1])]
    if not all(wired):
        raise Refused(f"the ops of a LayerNormalization ({'+'.join(LAYER_NORM_OPS)}), but wired otherwise (check "
                      f"{wired.index(False) + 1} of {len(wired)} fails): the suite does not read it")
    gamma, beta = const(scale, _output(rsqrt)).reshape(-1), const(shift, _output(shifted)).reshape(-1)
    if gamma.size != features or beta.size != features:
        raise Refused(f"a scale of {gamma.size} and an offset of {beta.size} values on {features} features")
    rows = np.stack([gamma, beta]).astype(np.float32)
    epsilon = float(str(np.float32(const(add, _output(var)).reshape(-1)[0])))  # as written: 1e-3, not 1.0000e-3...
    return KindRead(LayerNorm(features, epsilon), rows.copy(), None, rows, None)


def scale_and_shift(op: Any, following: tuple[str, Any] | None, constant: Callable[[int], np.ndarray | None],
                    current: int, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The scale and the shift of a ``MUL`` of ``current`` by a per-channel constant, then an ``ADD`` of one (a
    BatchNorm the converter folded into them, ``gamma / sqrt(variance + epsilon)`` and ``beta - mean`` times that:
    the ``ChannelAffine`` kind), each ``(channels,)``; None for any other ``MUL``."""
    if following is None or following[0] != "ADD":
        return None
    add = following[1]

    def per_channel(op: Any, other: int) -> np.ndarray | None:
        found = [constant(t) for t in _inputs(op) if t != other]
        one = found[0] if other in _inputs(op) and len(found) == 1 else None
        return one.reshape(-1) if one is not None and one.size == channels and one.shape[-1:] == (channels,) \
            else None
    scale, shift = per_channel(op, current), per_channel(add, _output(op))
    return None if scale is None or shift is None else (scale, shift)


def folded_into_weights(names: list[str]) -> str | None:
    """Why an op whose constants carry a folded BatchNorm's name (``names``) is refused; None when none does."""
    folded = next((name for name in names if BATCHNORM_SCOPE in name), None)
    if folded is None:
        return None
    return _FOLDED.format(where=f"into this layer's weights (a constant is named {folded[:120]!r})",
                          lost=f"neither {_PARAMETERS} nor the layer's own weights")
