"""Normalisations in a LiteRT flatbuffer: a Keras ``LayerNormalization`` as the TFLite converter writes it, read as
the core's ``LayerNorm``; a ``BatchNormalization`` it folded away, named so its refusal says so.

The converter writes a LayerNorm of ``x`` ``(batch, features)`` as eleven ops (``KERAS_ROLES``)::

    m = MEAN(x, [-1]), n = NEG(m), d = SQUARED_DIFFERENCE(x, m), v = MEAN(d, [-1]), e = ADD(v, epsilon),
    r = RSQRT(e), s = MUL(r, gamma), t = MUL(n, s), o = ADD(t, beta), p = MUL(x, s), y = ADD(p, o)

that is ``y = x s + (beta - m s)`` with ``s = gamma / sqrt(var + epsilon)``: the same function as ``gamma (x - m) /
sqrt(var + epsilon) + beta``, its roundings within the core's LayerNorm bound (each product is at most ``|gamma|
(|x| + |m|) / sigma``, which the bound's magnitude covers). Its activation is the last ``ADD``'s fused one. onnx2tf's
forms of a torch ``LayerNorm`` are read the same way: tf_keras' (``SUB_ROLES``: ``beta - m s`` as a ``SUB``)
and torch's ONNX form below opset 17 op by op (``DECOMPOSED_ROLES``: ``gamma (x - m) rsqrt(var + epsilon) +
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

X, AXES, CONST = "x", "axes", "const"
"""What a role's inputs are besides earlier roles' outputs: the norm's input, the reduction axes (the last one, kept)
and a constant (gamma or beta; epsilon for the ``add`` role, one value)."""
Roles = tuple[tuple[str, str, tuple[str, ...]], ...]
_MEAN = ("mean", "MEAN", (X, AXES))
_SCALE = (("var", "MEAN", ("squared", AXES)), ("add", "ADD", ("var", CONST)), ("rsqrt", "RSQRT", ("add",)))
_GAMMA = ("scale", "MUL", ("rsqrt", CONST))
_NEGATED = (_MEAN, ("neg", "NEG", ("mean",)), ("squared", "SQUARED_DIFFERENCE", (X, "mean")), *_SCALE, _GAMMA,
            ("shifted", "MUL", ("neg", "scale")))
KERAS_ROLES: Roles = (*_NEGATED, ("shift", "ADD", ("shifted", CONST)), ("mul", "MUL", (X, "scale")),
                      ("out", "ADD", ("mul", "shift")))
"""A LayerNormalization as the TFLite converter writes it (``LAYER_NORM_OPS``)."""
KERAS_NO_BETA_ROLES: Roles = (*_NEGATED, ("mul", "MUL", (X, "scale")), ("out", "ADD", ("mul", "shifted")))
"""The same with a beta of zeros (a Keras norm as built), whose ``ADD`` the converter drops: ``y = x s + n s``."""
SUB_ROLES: Roles = (_MEAN, ("squared", "SQUARED_DIFFERENCE", (X, "mean")), *_SCALE, _GAMMA,
                    ("mul", "MUL", (X, "scale")), ("shifted", "MUL", ("mean", "scale")),
                    ("shift", "SUB", (CONST, "shifted")), ("out", "ADD", ("mul", "shift")))
"""tf_keras' LayerNormalization (onnx2tf's of an ONNX ``LayerNormalization``, opset 17 on) as the converter writes it:
``y = x s + (beta - m s)``, ``s = gamma rsqrt(var + epsilon)``."""
DECOMPOSED_ROLES: Roles = (_MEAN, ("centred", "SUB", (X, "mean")), ("squared", "MUL", ("centred", "centred")),
                           *_SCALE, ("normed", "MUL", ("centred", "rsqrt")), ("scale", "MUL", ("normed", CONST)),
                           ("out", "ADD", ("scale", CONST)))
"""The ONNX form of a LayerNorm below opset 17 (onnx2tf's op by op) as the converter writes it: ``c = x - m``, ``y =
c rsqrt(mean(c c) + epsilon) gamma + beta``."""
LAYER_NORM_ROLES = (KERAS_ROLES, KERAS_NO_BETA_ROLES, SUB_ROLES, DECOMPOSED_ROLES)
"""Each form by its dataflow: ``(role, op, inputs)``, an op's inputs earlier roles' outputs, ``X``, ``AXES`` or
``CONST``, a ``SUB``'s in their order, any other op's in any. Gamma is the ``scale`` role's constant, beta the
``shift`` role's (``out``'s in the decomposed form; zeros where there is neither)."""
LAYER_NORM_FORMS = tuple(tuple(op for _, op, _ in roles) for roles in LAYER_NORM_ROLES)
LAYER_NORM_OPS = LAYER_NORM_FORMS[0]
BATCHNORM_SCOPE = "/batchnorm/"
"""What the name of a constant the converter folded a Keras BatchNormalization into holds (its ops' scope)."""


def _inputs(op: Any) -> list[int]:
    return [int(t) for t in op.inputs if int(t) >= 0]


def _output(op: Any) -> int:
    return int(op.outputs[0])


def _fused(op: Any) -> int:
    return int(getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0)


def layer_norm(ops: list[tuple[str, Any]], constant: Callable[[int], np.ndarray | None],
               integers: Callable[[int], list[int] | None], x: int, features: int, *,
               rank: int = 2) -> tuple[KindRead, tuple[str, ...], list[int]]:
    """The ops from a ``MEAN`` of ``x`` on (with their names) read as a LayerNorm of ``x`` over its ``features`` (its
    last axis of ``rank``: 3 for a token sequence, normalised token by token): the read, its form and the positions in
    ``ops`` of the form's ops, in the form's order. Its ops are found by which one reads which (``LAYER_NORM_ROLES``),
    not by where they are: a converter interleaves them with ops the norm does not need (the ``SHAPE`` of its output a
    next layer's reshape reads), which stay outside. Every wire is checked; ``Refused`` naming the first that is not a
    LayerNorm's."""
    matches = [_match(roles, ops, constant, integers, x, rank) for roles in LAYER_NORM_ROLES]
    best = max(range(len(matches)), key=lambda f: len(matches[f]))
    roles, found = LAYER_NORM_ROLES[best], matches[best]
    names = [name for name, _ in ops]
    if len(found) <= 1 and not any(tuple(names[:len(form)]) == form for form in LAYER_NORM_FORMS):
        shown = "+".join(names[:len(LAYER_NORM_OPS)])
        raise Refused(f"starts a normalisation written as ops ({shown}), but not the ones a converter writes a "
                      f"LayerNormalization as ({' or '.join('+'.join(f) for f in LAYER_NORM_FORMS)}): the suite "
                      "does not read it")
    unit = [ops[p][1] for p in found]
    checks = len(roles) + 1  # each role's op found, wired as the form's, then no fused activation before the last
    failed = len(found) + 1 if len(found) < len(roles) else checks if any(_fused(op) for op in unit[:-1]) else 0
    if failed:
        raise Refused(f"the ops of a LayerNormalization ({'+'.join(LAYER_NORM_FORMS[best])}), but wired otherwise "
                      f"(check {failed} of {checks} fails): the suite does not read it")
    role = dict(zip((r for r, _, _ in roles), unit, strict=True))
    gamma = _constant_input(role["scale"], constant)
    beta = np.zeros_like(gamma) if roles is KERAS_NO_BETA_ROLES else _constant_input(role.get("shift", role["out"]),
                                                                                   constant)
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    if gamma.size != features or beta.size != features:
        raise Refused(f"a scale of {gamma.size} and an offset of {beta.size} values on {features} features")
    rows = np.stack([gamma, beta]).astype(np.float32)
    epsilon = float(str(np.float32(_constant_input(role["add"], constant).reshape(-1)[0])))  # as written: 1e-3
    return KindRead(LayerNorm(features, epsilon), rows.copy(), None, rows, None), LAYER_NORM_FORMS[best], found


def _constant_input(op: Any, constant: Callable[[int], np.ndarray | None]) -> np.ndarray:
    return next(value for t in _inputs(op) if (value := constant(t)) is not None)


def _match(roles: Roles, ops: list[tuple[str, Any]], constant: Callable[[int], np.ndarray | None],
           integers: Callable[[int], list[int] | None], x: int, rank: int) -> list[int]:
    """The positions in ``ops`` of the ops playing ``roles`` in turn, the first ``ops``' own, each later one any op
    not yet taken that reads what its role reads; as far as they are found."""
    outputs = {X: x}
    found: list[int] = []
    for role, name, reads in roles:
        candidates = [0] if not found else range(1, len(ops))
        position = next((p for p in candidates if p not in found and ops[p][0] == name
                         and _reads(ops[p][1], reads, outputs, constant, integers, rank, one_value=role == "add",
                                       ordered=name == "SUB")), None)
        if position is None:
            break
        found.append(position)
        outputs[role] = _output(ops[position][1])
    return found


def _reads(op: Any, reads: tuple[str, ...], outputs: dict[str, int], constant: Callable[[int], np.ndarray | None],
           integers: Callable[[int], list[int] | None], rank: int, *, one_value: bool, ordered: bool) -> bool:
    """Whether ``op`` reads ``reads``: the tensors named in ``outputs``, constants (of one value if ``one_value``),
    reduction axes over the last of ``rank`` axes, kept; in their order if ``ordered`` (a ``SUB``)."""
    inputs = _inputs(op)
    if len(inputs) != len(reads) or any(r not in (CONST, AXES) and r not in outputs for r in reads):
        return False
    if AXES in reads:
        return reads == (reads[0], AXES) and inputs[0] == outputs[reads[0]] and integers(inputs[1]) in (
            [-1], [rank - 1]) and bool(getattr(op.builtinOptions, "keepDims", False))
    constants = [value for t in inputs if (value := constant(t)) is not None]
    if len(constants) != reads.count(CONST) or (one_value and any(value.size != 1 for value in constants)):
        return False
    if ordered:
        return all(constant(t) is not None if r == CONST else t == outputs[r]
                   for r, t in zip(reads, inputs, strict=True))
    return sorted(t for t in inputs if constant(t) is None) == sorted(outputs[r] for r in reads if r != CONST)


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
