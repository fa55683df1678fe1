"""Multi-head self-attention, in the canonical (Keras) per-head layout.

``h = concat_heads(softmax(q_h k_h^T / sqrt(d)) v_h) @ W_o + b_o`` with ``q = x W_q + b_q`` (and ``k``, ``v``) over a
batch-first sequence ``x`` ``(N, L, E)``. Canonical parameters (one flat ``W`` and one flat ``b``, in this order):
the query, key and value kernels ``(E, heads, d)``, the output kernel ``(heads, d, E)``; the biases ``(heads, d)``
three times and ``(E,)``. A framework packing them otherwise (torch's ``in_proj_weight`` ``(3E, E)``) converts in its
adapter.

The error bound (derived in ``docs/layer-kinds.md``), first order in ``eps`` and worst case in every step, a dot
product costing ``eps`` of its sum of absolute terms (Dense's model):

* the projections: ``|dq| <= eps Mq`` with ``Mq = |x| @ |W_q| + |b_q|`` (Dense's ``S`` before its max); ``Mk``, ``Mv``
  alike;
* the scores ``s = q.k / sqrt(d)`` of rounded ``q`` and ``k``, and the product's own rounding:
  ``|ds_ij| <= eps Ss_ij``, ``Ss_ij = (Mq_i.|k_j| + |q_i|.Mk_j + |q_i|.|k_j|) / sqrt(d)``;
* the softmax moves each weight by ``dA_ij = A_ij (ds_ij - sum_k A_ik ds_ik)`` to first order, plus its own
  rounding (exp, the sum, the division: ``2 eps A_ij``); since the weights sum to 1, ``sum_j dA_ij v_j =
  sum_j A_ij ds_ij (v_j - o_i)``, ``o_i = sum_j A_ij v_j`` the head's output;
* the weighted sum of ``L`` values: ``|do_i| <= eps (sum_j A_ij Ss_ij |v_j - o_i| + 3 A|v| + A Mv)``,
  ``Mv = |x| @ |W_v| + |b_v|``: the softmax's rounding ``2 A|v|``, the values' own error ``A Mv``, and the sum's
  rounding ``A|v|`` (its sum of absolute terms, not ``|o_i|``, which cancellation can make far smaller);
* the output projection of length ``heads * d``: ``|dh| <= eps ((Do + |o|) @ |W_o| + |b_o|)``, ``Do = |do| / eps``.

Every term is taken element by element (per sample, token and head) and the largest kept: ``S`` below. So
``scale = max(1, slope * S, max|h|)`` and the bound is ``SAFETY * eps * scale``, as for Dense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.dtypes import EPSILON
from equivalence.core.kinds import LayerTrace, LayerWeights
from equivalence.core.spatial import apply_activation


class Projections(dict):
    """The canonical parameters by name: ``query``, ``key``, ``value`` ``(E, heads, d)``, ``output``
    ``(heads, d, E)``, and their biases ``query_bias`` ... ``(heads, d)``, ``output_bias`` ``(E,)`` (if any)."""


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - np.max(s, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class SelfAttention:
    """Multi-head self-attention of ``heads`` heads of size ``head_dim`` over ``length`` tokens of ``embed_dim``
    features (query = key = value = the layer's input, no mask). Forms: ``einsum`` (all heads at once) and
    ``loop`` (one head and one sample at a time, plain products and sums)."""

    embed_dim: int
    heads: int
    head_dim: int
    length: int
    bias_along: str = "heads"
    """Where the query, key and value biases ``(heads, d)`` are added: ``"heads"`` (to every token: the layer's
    definition), or ``"tokens"``: a ``(heads, 1)`` bias added along the tokens instead, token ``l`` getting bias
    ``l`` in every head (a framework defect, with ``d = 1`` and as many tokens as heads: named where it applies)."""

    name = "attention"
    FORMS = ("einsum", "loop")

    def __post_init__(self) -> None:
        if self.bias_along not in ("heads", "tokens"):
            raise ValueError(f"bias_along: got {self.bias_along!r}, but should be 'heads' or 'tokens'")
        if self.bias_along == "tokens" and not (self.head_dim == 1 and self.length == self.heads):
            raise ValueError("bias_along='tokens' needs head_dim 1 and as many tokens as heads")

    def describe(self) -> str:
        along = ", biases along the tokens" if self.bias_along == "tokens" else ""
        return f"self-attention {self.embed_dim} features, {self.heads} heads of {self.head_dim}, " \
               f"{self.length} tokens{along}"

    def _bias(self, bias: np.ndarray) -> np.ndarray:
        """A ``(heads, d)`` bias as added to the projections ``(N, L, heads, d)``."""
        bias = np.asarray(bias, dtype=np.float64)
        return bias[:, 0][:, None, None] if self.bias_along == "tokens" else bias

    def _shapes(self, bias: bool) -> dict[str, tuple[int, ...]]:
        E, H, d = self.embed_dim, self.heads, self.head_dim
        shapes = {"query": (E, H, d), "key": (E, H, d), "value": (E, H, d), "output": (H, d, E)}
        if bias:
            shapes.update(query_bias=(H, d), key_bias=(H, d), value_bias=(H, d), output_bias=(E,))
        return shapes

    def parameter_shapes(self, *, bias: bool) -> tuple[tuple[int, ...], ...]:
        """The canonical layout: all kernels flat in ``W``, all biases flat in ``b``."""
        shapes = self._shapes(bias)
        kernels = sum(int(np.prod(s)) for n, s in shapes.items() if not n.endswith("bias"))
        biases = sum(int(np.prod(s)) for n, s in shapes.items() if n.endswith("bias"))
        return ((kernels,), (biases,)) if bias else ((kernels,),)

    def parameter_count(self, *, bias: bool) -> int:
        return sum(int(np.prod(s)) for s in self.parameter_shapes(bias=bias))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def pack(self, parts: dict[str, np.ndarray]) -> LayerWeights:
        """Named parameters -> the flat canonical ``(W, b)``."""
        bias = "query_bias" in parts
        shapes = self._shapes(bias)
        for name, shape in shapes.items():
            if np.shape(parts[name]) != shape:
                raise ValueError(f"{name}: got shape {np.shape(parts[name])}, but should be {shape}")
        flat = lambda names: np.concatenate([np.asarray(parts[n]).ravel() for n in names])  # noqa: E731
        W = flat([n for n in shapes if not n.endswith("bias")])
        return LayerWeights(W, flat([n for n in shapes if n.endswith("bias")]) if bias else None)

    def unpack(self, weights: LayerWeights) -> Projections:
        """The flat canonical ``(W, b)`` -> named parameters (views)."""
        W, b = weights
        out = Projections()
        for names, flat in ((("query", "key", "value", "output"), W),
                            (("query_bias", "key_bias", "value_bias", "output_bias"), b)):
            if flat is None:
                continue
            start = 0
            for name in names:
                shape = self._shapes(True)[name]
                size = int(np.prod(shape))
                out[name] = np.asarray(flat)[start:start + size].reshape(shape)
                start += size
        return out

    def _projected(self, x: np.ndarray, p: Projections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``q, k, v`` ``(N, L, heads, d)`` in float64."""
        out = []
        for name in ("query", "key", "value"):
            y = np.einsum("nle,ehd->nlhd", x, p[name].astype(np.float64))
            out.append(y + self._bias(p[f"{name}_bias"]) if f"{name}_bias" in p else y)
        return out[0], out[1], out[2]

    def _heads(self, x: np.ndarray, p: Projections) -> tuple[np.ndarray, ...]:
        """``q, k, v`` and every head's output ``A v``, each ``(N, L, heads, d)``, and the attention weights
        ``A = softmax(q k^T / sqrt(d))``, ``(N, heads, L, L)``."""
        q, k, v = self._projected(x, p)
        weights = _softmax(np.einsum("nqhd,nkhd->nhqk", q / np.sqrt(self.head_dim), k))
        return q, k, v, np.einsum("nhqk,nkhd->nqhd", weights, v), weights

    def _einsum(self, x: np.ndarray, p: Projections) -> np.ndarray:
        y = np.einsum("nqhd,hde->nqe", self._heads(x, p)[3], p["output"].astype(np.float64))
        return y + p["output_bias"].astype(np.float64) if "output_bias" in p else y

    def _loop(self, x: np.ndarray, p: Projections) -> np.ndarray:
        E, H, d = self.embed_dim, self.heads, self.head_dim
        y = np.zeros((x.shape[0], x.shape[1], E))
        for n in range(x.shape[0]):
            for h in range(H):
                proj = []
                for name in ("query", "key", "value"):
                    W = p[name][:, h, :].astype(np.float64)
                    z = (x[n][:, :, None] * W[None]).sum(axis=1)
                    if f"{name}_bias" in p:
                        z = z + np.broadcast_to(self._bias(p[f"{name}_bias"]), (x.shape[1], H, d))[:, h, :]
                    proj.append(z)
                q, k, v = proj
                scores = (q[:, None, :] * k[None, :, :]).sum(axis=-1) / np.sqrt(d)
                weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
                weights = weights / weights.sum(axis=-1, keepdims=True)
                head = (weights[:, :, None] * v[None, :, :]).sum(axis=1)
                y[n] += (head[:, :, None] * p["output"][h].astype(np.float64)[None]).sum(axis=1)
        return y + p["output_bias"].astype(np.float64) if "output_bias" in p else y

    def reference(self, x: np.ndarray, weights: LayerWeights,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *,
                  form: str = "einsum") -> LayerTrace:
        if form not in self.FORMS:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            z = (self._einsum if form == "einsum" else self._loop)(x64, self.unpack(weights))
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """The largest output rounding error over ``eps``, first order (module docstring), element by element,
        over the samples without NaN or inf."""
        x = np.asarray(x, dtype=np.float64)
        x = x[np.all(np.isfinite(x), axis=(1, 2))]
        if x.size == 0:
            return 0.0
        p = self.unpack(weights)
        absolute = Projections({name: np.abs(np.asarray(w, dtype=np.float64)) for name, w in p.items()})
        with np.errstate(over="ignore", invalid="ignore"):
            q, k, v, o, A = self._heads(x, p)
            mq, mk, mv = self._projected(np.abs(x), absolute)  # |x| @ |W| + |b|: each projection's error / eps
            q, k = np.abs(q), np.abs(k)
            scores = (np.einsum("nqhd,nkhd->nhqk", mq, k) + np.einsum("nqhd,nkhd->nhqk", q, mk)
                      + np.einsum("nqhd,nkhd->nhqk", q, k)) / np.sqrt(self.head_dim)  # |ds| / eps
            spread = np.abs(v[:, None, :, :, :] - o[:, :, None, :, :])  # |v_j - o_i|: (N, Lq, Lk, heads, d)
            heads = np.einsum("nhqk,nqkhd->nqhd", A * scores, spread) + 3 * np.einsum("nhqk,nkhd->nqhd", A, np.abs(v)) \
                + np.einsum("nhqk,nkhd->nqhd", A, mv) + np.abs(o)  # Do (the softmax's rounding, the weighted sum's:
            # 3 A|v|) + |o|, the output projection's input size
            total = np.einsum("nqhd,hde->nqe", heads, absolute["output"]) + absolute.get("output_bias", 0.0)
            finite = total[np.isfinite(total)]
            return float(finite.max()) if finite.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float = 1.0) -> float:
        """``max(1, slope * magnitude, max|h|)``, as Dense's."""
        h = np.asarray(trace.h, dtype=np.float64)
        finite = h[np.isfinite(h)]
        return max(1.0, slope * self.magnitude(trace.x, weights), float(np.max(np.abs(finite))) if finite.size
                   else 0.0)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float = 1.0,
                              weight_dtype: str = "float32") -> float:
        """Every weight rounded moves by ``u`` of itself: ``u`` of the magnitude, to first order."""
        return slope * EPSILON[weight_dtype] / 2 * self.magnitude(x, weights)

    def parts(self, weights: LayerWeights) -> dict[str, np.ndarray]:
        """The parameters by name (``unpack``), for naming which of them a port got wrong."""
        return dict(self.unpack(weights))

    def wrong_layouts(self, weights: LayerWeights) -> dict[str, list[tuple[str, np.ndarray, str]]]:
        """Each parameter as a port gets it wrong: ``{name: [(trap, the wrong array, what went wrong)]}``. A
        projection matrix reshaped into ``(E, heads, d)`` without its ``(out, in)`` transpose, or its heads
        interleaved (features split as ``(d, heads)`` instead of ``(heads, d)``)."""
        p, E, H, d = self.unpack(weights), self.embed_dim, self.heads, self.head_dim
        if H * d != E:
            return {}
        reshaped = "the (out, in) matrix reshaped to the heads, but should be transposed first"
        interleaved = "the heads interleaved (features split as (head_dim, heads)), but should be (heads, head_dim)"
        out: dict[str, list[tuple[str, np.ndarray, str]]] = {}
        for name in ("query", "key", "value"):
            out[name] = [("head split", p[name].reshape(E, E).T.reshape(E, H, d), reshaped),
                         ("head split", p[name].reshape(E, d, H).transpose(0, 2, 1), interleaved)]
            if f"{name}_bias" in p:
                out[f"{name}_bias"] = [("head split", p[f"{name}_bias"].reshape(d, H).T, interleaved)]
        out["output"] = [("head split", p["output"].reshape(E, E).T.reshape(H, d, E), reshaped),
                         ("head split", p["output"].reshape(d, H, E).transpose(1, 0, 2), interleaved)]
        return out
