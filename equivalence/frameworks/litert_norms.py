"""Normalisations in a LiteRT flatbuffer: a Keras ``LayerNormalization`` as the TFLite converter writes it, read as
the core's ``LayerNorm``; a ``BatchNormalization`` it folded away, named so its refusal says so.

The converter writes a LayerNorm of ``x`` ``(batch, features)`` as eleven ops (``LAYER_NORM_OPS``)::

    m = MEAN(x, [-1]), n = NEG(m), d = SQUARED_DIFFERENCE(x, m), v = MEAN(d, [-1]), e = ADD(v, epsilon),
    r = RSQRT(e), s = MUL(r, gamma), t = MUL(n, s), o = ADD(t, beta), p = MUL(x, s), y = ADD(p, o)

that is ``y = x s + (beta - m s)`` with ``s = gamma / sqrt(var + epsilon)``: the same function as ``gamma (x - m) /
sqrt(var + epsilon) + beta``, its roundings within the core's LayerNorm bound (each product is at most ``|gamma|
(|x| + |m|) / sigma``, which the bound's magnitude covers). Its activation is the last ``ADD``'s fused one. onnx2tf's
forms of a torch ``LayerNorm`` are read the same way: tf_keras' (``LAYER_NORM_SUB_OPS``: ``beta - m s`` as a ``SUB``)
and torch's ONNX form below opset 17 op by op (``LAYER_NORM_DECOMPOSED_OPS``: ``gamma (x - m) rsqrt(var + epsilon) +
beta``).

A BatchNormalization at inference is an affine map per channel, and the converter folds it: into the weights of
the ``CONV_2D`` or ``FULLY_CONNECTED`` before it (no activation between) or after it, or, where it cannot (after a
fused ReLU, a pool), into a ``MUL`` and an ``ADD`` of per-channel constants (``gamma / sqrt(var + epsilon)`` and
``beta - mean`` times that). The ``MUL`` and ``ADD`` are read as one unit of the ``ChannelAffine`` kind
(``channel_affine``); a layer whose constants carry the norm's name (``.../batchnorm/mul_1;.../MatMul``, the norm's
ops' scope: ``named_after_norm``) is read as the layer, its kind marked ``NAMED_FOLD``. Either way the file no longer
holds the norm's four parameters: the comparison folds the model's (``equivalence.own_folded``), and refuses a
marked layer it cannot match (a norm folded into the layer after it). A norm folded into the layer before it that
changes little (the initial gamma 1, beta 0, mean 0, variance 1) may leave no name: it is matched all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from equivalence.core.folded import ChannelAffine
from equivalence.core.norms import LayerNorm
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead

LAYER_NORM_OPS = ("MEAN", "NEG", "SQUARED_DIFFERENCE", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "ADD", "MUL", "ADD")
"""A LayerNormalization as the TFLite converter writes it, in its order."""
LAYER_NORM_SUB_OPS = ("MEAN", "SQUARED_DIFFERENCE", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "MUL", "SUB", "ADD")
"""tf_keras' LayerNormalization (onnx2tf's of an ONNX ``LayerNormalization``, opset 17 on) as the converter writes it:
``y = x s + (beta - m s)``, ``s = gamma rsqrt(var + epsilon)``."""
LAYER_NORM_DECOMPOSED_OPS = ("MEAN", "SUB", "MUL", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "ADD")
"""The ONNX form of a LayerNorm below opset 17 (onnx2tf's op by op) as the converter writes it: ``c = x - m``, ``y =
c rsqrt(mean(c c) + epsilon) gamma + beta``."""
LAYER_NORM_FORMS = (LAYER_NORM_OPS, LAYER_NORM_SUB_OPS, LAYER_NORM_DECOMPOSED_OPS)
BATCHNORM_SCOPE = "/batchnorm/"
"""What the name of a constant the converter folded a Keras BatchNormalization into holds (its ops' scope)."""


def _inputs(op: Any) -> list[int]:
    return [int(t) for t in op.inputs if int(t) >= 0]


def _output(op: Any) -> int:
    return int(op.outputs[0])


def _fused(op: Any) -> int:
    return int(getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0)


def layer_norm_form(names: list[str]) -> tuple[str, ...]:
    """Which of ``LAYER_NORM_FORMS`` the op names from a ``MEAN`` on are; ``Refused`` when none."""
    for form in LAYER_NORM_FORMS:
        if tuple(names[:len(form)]) == form:
            return form
    shown = "+".join(names[:len(LAYER_NORM_OPS)])
    raise Refused(f"starts a normalisation written as ops ({shown}), but not the ones a converter writes a "
                  f"LayerNormalization as ({' or '.join('+'.join(f) for f in LAYER_NORM_FORMS)}): the suite does not "
                  "read it")


def layer_norm(ops: list[tuple[str, Any]], constant: Callable[[int], np.ndarray | None],
               integers: Callable[[int], list[int] | None], x: int, features: int, *, rank: int = 2) -> KindRead:
    """``ops`` (the chain's next ops, from a ``MEAN`` of ``x``, with their names; as many as their form has,
    ``layer_norm_form``) read as a LayerNorm of ``x`` over its ``features`` (its last axis of ``rank``: 3 for a token
    sequence, normalised token by token); every wire checked, ``Refused`` naming the first that is not a
    LayerNorm's. ``integers``: a constant integer tensor's values (the reduction axes), else None."""
    form = layer_norm_form([name for name, _ in ops])
    ops = [op for _, op in ops[:len(form)]]

    def const(op: Any, other: int) -> np.ndarray | None:
        found = [constant(t) for t in _inputs(op) if t != other]
        return found[0] if other in _inputs(op) and len(found) == 1 and found[0] is not None else None

    def last_axis(op: Any) -> bool:
        return integers(_inputs(op)[1]) in ([-1], [rank - 1]) and bool(getattr(op.builtinOptions, "keepDims", False))

    def takes(op: Any, *tensors: int) -> bool:
        return sorted(_inputs(op)) == sorted(tensors)

    if form == LAYER_NORM_OPS:
        mean, neg, squared, var, add, rsqrt, scale, shifted, shift, mul, out = ops
        wired = [_inputs(mean)[0] == x and last_axis(mean), takes(neg, _output(mean)),
                 takes(squared, x, _output(mean)), _inputs(var)[0] == _output(squared) and last_axis(var),
                 const(add, _output(var)) is not None and const(add, _output(var)).size == 1,
                 takes(rsqrt, _output(add)), const(scale, _output(rsqrt)) is not None,
                 takes(shifted, _output(neg), _output(scale)), const(shift, _output(shifted)) is not None,
                 takes(mul, x, _output(scale)), takes(out, _output(mul), _output(shift))]
        gamma, beta = const(scale, _output(rsqrt)), const(shift, _output(shifted))
    elif form == LAYER_NORM_SUB_OPS:
        mean, squared, var, add, rsqrt, scale, mul, shifted, shift, out = ops
        wired = [_inputs(mean)[0] == x and last_axis(mean), takes(squared, x, _output(mean)),
                 _inputs(var)[0] == _output(squared) and last_axis(var),
                 const(add, _output(var)) is not None and const(add, _output(var)).size == 1,
                 takes(rsqrt, _output(add)), const(scale, _output(rsqrt)) is not None,
                 takes(mul, x, _output(scale)), takes(shifted, _output(mean), _output(scale)),
                 const(shift, _output(shifted)) is not None and _inputs(shift)[1] == _output(shifted),
                 takes(out, _output(mul), _output(shift))]
        gamma, beta = const(scale, _output(rsqrt)), const(shift, _output(shifted))
    else:
        mean, centred, square, var, add, rsqrt, normed, scaled, out = ops
        wired = [_inputs(mean)[0] == x and last_axis(mean), _inputs(centred) == [x, _output(mean)],
                 _inputs(square) == [_output(centred)] * 2, _inputs(var)[0] == _output(square) and last_axis(var),
                 const(add, _output(var)) is not None and const(add, _output(var)).size == 1,
                 takes(rsqrt, _output(add)), takes(normed, _output(centred), _output(rsqrt)),
                 const(scaled, _output(normed)) is not None, const(out, _output(scaled)) is not None]
        gamma, beta = const(scaled, _output(normed)), const(out, _output(scaled))
    wired.append(not any(_fused(op) for op in ops[:-1]))
    if not all(wired):
        raise Refused(f"the ops of a LayerNormalization ({'+'.join(form)}), but wired otherwise (check "
                      f"{wired.index(False) + 1} of {len(wired)} fails): the suite does not read it")
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    if gamma.size != features or beta.size != features:
        raise Refused(f"a scale of {gamma.size} and an offset of {beta.size} values on {features} features")
    rows = np.stack([gamma, beta]).astype(np.float32)
    epsilon = float(str(np.float32(const(add, _output(var)).reshape(-1)[0])))  # as written: 1e-3, not 1.0000e-3...
    return KindRead(LayerNorm(features, epsilon), rows.copy(), None, rows, None)


def channel_affine(op: Any, following: tuple[str, Any] | None, constant: Callable[[int], np.ndarray | None],
                   current: int, channels: int) -> tuple[Any, KindRead] | None:
    """A ``MUL`` of ``current`` by a float32 constant of one value per channel, then an ``ADD`` of another (a
    BatchNorm the converter folded into a scale and a shift), neither with a fused activation on the ``MUL``: the
    ``ADD`` and the ``ChannelAffine`` read (its activation is the ``ADD``'s); None for any other ``MUL``."""
    if following is None or following[0] != "ADD" or _fused(op):
        return None
    add = following[1]

    def per_channel(op: Any, other: int) -> np.ndarray | None:
        found = [constant(t) for t in _inputs(op) if t != other]
        ok = other in _inputs(op) and len(found) == 1 and found[0] is not None and found[0].size == channels \
            and found[0].dtype == np.float32 and found[0].ndim <= 1
        return found[0].reshape(-1) if ok else None

    scale, offset = per_channel(op, current), per_channel(add, _output(op))
    if scale is None or offset is None:
        return None
    return add, KindRead(ChannelAffine(channels), scale.copy(), offset.copy(), np.stack([scale, offset]), None)


def named_after_norm(names: list[str]) -> bool:
    """Whether one of an op's constants (``names``) carries a folded BatchNorm's name."""
    return any(BATCHNORM_SCOPE in name for name in names)
