"""Recurrent layer kinds: LSTM and GRU over a batch-first sequence ``(N, T, features)``, one layer, one direction.

Canonical layout (Keras'; only the torch adapter converts): one ``W`` of the input kernel ``(features, G*units)``
stacked over the recurrent kernel ``(units, G*units)``, so ``W`` is ``(features + units, G*units)`` and a step's
pre-activation is ``[x_t, h] @ W + b``; the gates in Keras' order, ``i, f, c, o`` (LSTM, G = 4: torch's order too)
and ``z, r, h`` (GRU, G = 3: torch stores ``r, z, n``). ``b`` is ``(4*units,)`` for an LSTM (torch's two biases
summed), ``(2, 3*units)`` for a GRU with ``reset_after`` (the input and the recurrent bias, torch's two) and
``(3*units,)`` without. The state starts at zero. A kind object is the layer's whole configuration, so a GRU
without ``reset_after``, another activation or the full sequence against its last step is named from the configs.

The error bound (derived in ``docs/layer-kinds.md``) grows with the steps: a first-order running error analysis
along the float64 trajectory, componentwise. Each step's pre-activation carries Dense's rounding
``|x_t| @ |K| + |h| @ |U| + |b|``; the gates pass it on with their slopes at the reference's values, and every
product, sum and activation adds a rounding of its result. The state's (h, and an LSTM's c) error is carried to
later steps through the product of the steps' signed Jacobians, its absolute value taken last; past
``PRODUCT_BUDGET`` through each Jacobian's absolute value (the textbook worst case: looser, as rigorous).
``scale`` is the output's accumulated error in units of ``eps`` (at least 1 and ``max|h|``), which the error model
turns into ``SAFETY * eps * scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import permutations

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import EPSILON
from equivalence.core.kinds import LayerTrace, LayerWeights
from equivalence.core.spatial import apply_activation

GATES = {"lstm": ("i", "f", "c", "o"), "gru": ("z", "r", "h")}
"""Each cell's gates in the canonical (Keras) order."""

Step = tuple[np.ndarray, ...]
EXACT_BUDGET = 200_000_000
"""Multiply-adds of Jacobian products per sequence up to which the bound takes the exact products over all steps
(every step of 40 steps of 32 LSTM units; not of 64, 8.2e8)."""
PRODUCT_BUDGET = 1_000_000_000
"""Multiply-adds of Jacobian products per sequence the bound spends at most: past ``EXACT_BUDGET`` it multiplies
the Jacobians exactly over runs of up to ``WINDOW`` steps and carries the whole state's bound from run to run
(``_windowed``); when not even runs of two steps fit (an LSTM of 256 units over 40 steps), each Jacobian's absolute
value (``_carried_in_absolute_value``), which grows without limit, and ``unjudged`` says when the bound so reached
judges nothing. Per sequence: a sequence's bound does not depend on the batch it came in."""
WINDOW = 8
"""The longest run of steps whose Jacobians the bound multiplies exactly, unless all steps cost no more."""
_PRODUCT_FLOATS = 4_000_000
"""How many floats of Jacobian products the bound holds at once (32 MB): a sequence's ends are taken in chunks."""


def _dot(a: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``a @ M`` as an elementwise product and a plain sum: no BLAS (the ``gates`` form)."""
    return (a[:, :, None] * M[None, :, :]).sum(axis=1)


@dataclass(frozen=True)
class Recurrent:
    """An LSTM (``cell="lstm"``) or GRU (``cell="gru"``) of ``units`` over ``steps`` steps of ``features``; its
    output the whole sequence ``(N, steps, units)`` or the last step ``(N, units)``.

    The reference has two independent forms: ``fused`` (the whole sequence's input projection in one matrix
    product, then one recurrent product a step, through BLAS) and ``gates`` (every gate's products as elementwise
    products and plain sums, step by step).
    """

    cell: str
    features: int
    units: int
    steps: int
    return_sequences: bool
    reset_after: bool = True
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"

    FORMS = ("fused", "gates")

    def __post_init__(self) -> None:
        if self.cell not in GATES:
            raise ValueError(f"recurrent cell: got {self.cell!r}, but should be one of {', '.join(GATES)}")
        if self.cell == "lstm":
            object.__setattr__(self, "reset_after", True)  # a GRU's option: equal LSTM kinds stay equal

    @property
    def name(self) -> str:
        return self.cell

    @property
    def gates(self) -> tuple[str, ...]:
        return GATES[self.cell]

    @property
    def inner_activations(self) -> tuple[str, ...]:
        """The activations the cell computes with: their named differences (Keras on jax computing a float64 tanh
        in float32) reach its output as those of the activation after it do (``tolerance.forward_bound``)."""
        return (self.activation, self.recurrent_activation)

    def describe(self) -> str:
        out = "sequence" if self.return_sequences else "last step"
        extra = "" if self.cell == "lstm" else f", reset_after={self.reset_after}"
        acts = "" if (self.activation, self.recurrent_activation) == ("tanh", "sigmoid") else \
            f", {self.activation}/{self.recurrent_activation}"
        return f"{self.cell.upper()} {self.features}->{self.units} over {self.steps} steps, {out}{extra}{acts}"

    def bias_shape(self) -> tuple[int, ...]:
        width = len(self.gates) * self.units
        return (2, width) if self.cell == "gru" and self.reset_after else (width,)

    def parameter_shapes(self, *, bias: bool = True) -> tuple[tuple[int, ...], ...]:
        """The canonical layout: the kernels stacked ``(features + units, G*units)``, then the bias."""
        kernel = (self.features + self.units, len(self.gates) * self.units)
        return (kernel, self.bias_shape()) if bias else (kernel,)

    def parameter_count(self, *, bias: bool = True) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes(bias=bias))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (in_shape[0], self.units) if self.return_sequences else (self.units,)

    def last_step(self) -> Recurrent:
        """The same layer, its output the last step only (what ``output[:, -1]`` or ``h_n[-1]`` takes)."""
        return replace(self, return_sequences=False)

    # --- the float64 reference ----------------------------------------------------------------------

    def _parts(self, weights: LayerWeights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W = np.asarray(weights.W, dtype=np.float64)
        b = np.zeros(self.bias_shape()) if weights.b is None else np.asarray(weights.b, dtype=np.float64)
        return W[:self.features], W[self.features:], b

    def _run(self, x: np.ndarray, weights: LayerWeights, step: Callable[..., Step], form: str) -> np.ndarray:
        K, U, b = self._parts(weights)
        n, units = x.shape[0], self.units
        state: Step = (np.zeros((n, units)),) * (2 if self.cell == "lstm" else 1)
        x_bias = b if b.ndim == 1 else b[0]
        projected = (x @ K + x_bias) if form == "fused" else None  # (N, T, G*units): one product for all steps
        outputs = []
        for t in range(x.shape[1]):
            xt = projected[:, t] if projected is not None else _dot(x[:, t], K) + x_bias
            state = step(xt, state, U, b, form)
            outputs.append(state[0])
        return np.stack(outputs, axis=1) if self.return_sequences else outputs[-1]

    def _lstm_step(self, xt: np.ndarray, state: Step, U: np.ndarray, b: np.ndarray, form: str) -> Step:
        h, c = state
        z = xt + (h @ U if form == "fused" else _dot(h, U))
        i, f, g, o = np.split(z, 4, axis=1)
        rec, act = ACTIVATIONS[self.recurrent_activation].reference, ACTIVATIONS[self.activation].reference
        c = rec(f) * c + rec(i) * act(g)
        return rec(o) * act(c), c

    def _gru_step(self, xt: np.ndarray, state: Step, U: np.ndarray, b: np.ndarray, form: str) -> Step:
        (h,) = state
        product = (lambda a, M: a @ M) if form == "fused" else _dot
        rec, act = ACTIVATIONS[self.recurrent_activation].reference, ACTIVATIONS[self.activation].reference
        xz, xr, xh = np.split(xt, 3, axis=1)
        units = self.units
        if self.reset_after:
            hz, hr, hh = np.split(product(h, U) + b[1], 3, axis=1)
            z, r = rec(xz + hz), rec(xr + hr)
            candidate = act(xh + r * hh)
        else:
            hz, hr = np.split(product(h, U[:, :2 * units]), 2, axis=1)
            z, r = rec(xz + hz), rec(xr + hr)
            candidate = act(xh + product(r * h, U[:, 2 * units:]))
        return (z * h + (1.0 - z) * candidate,)

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "fused") -> LayerTrace:
        """The float64 layer from a zero state; ``activation`` is the one applied to its output after it (a
        separate activation layer), ``z`` the recurrent layer's own output."""
        if form not in self.FORMS:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        x64 = np.asarray(x, dtype=np.float64)
        step = self._lstm_step if self.cell == "lstm" else self._gru_step
        with np.errstate(invalid="ignore", over="ignore"):
            z = self._run(x64, weights, step, form)
            return LayerTrace(x64, z, apply_activation(activation, z))

    # --- the error bound ----------------------------------------------------------------------------

    def _slopes(self, name: str, pre: np.ndarray, value: np.ndarray) -> np.ndarray:
        """An activation's slope at ``pre`` (where it gave ``value``): exact for the sigmoid and tanh, a central
        difference of its float64 reference for any other."""
        if name == "sigmoid":
            return value * (1.0 - value)
        if name == "tanh":
            return 1.0 - value * value
        step = 1e-6 * np.maximum(1.0, np.abs(pre))
        f = ACTIVATIONS[name].reference
        return (f(pre + step) - f(pre - step)) / (2 * step)

    def _lstm_step_error(self, xt: np.ndarray, ext: np.ndarray, state: Step, U: np.ndarray,
                         b: np.ndarray) -> tuple[Step, np.ndarray, np.ndarray]:
        """One LSTM step: the new state (h, c), the rounding it adds in units of eps ``(N, 2*units)`` (h then c),
        and its Jacobian ``d(h, c)/d(h_prev, c_prev)`` ``(N, 2*units, 2*units)`` (rows: the previous state)."""
        h, c = state
        rec_name, act_name = self.recurrent_activation, self.activation
        rec, act = ACTIVATIONS[rec_name].reference, ACTIVATIONS[act_name].reference
        z = xt + h @ U
        ez = ext + np.abs(h) @ np.abs(U)  # Dense's rounding of the step's dot products
        (zi, zf, zg, zo), (ei, ef, eg, eo) = np.split(z, 4, axis=1), np.split(ez, 4, axis=1)
        i, f, g, o = rec(zi), rec(zf), act(zg), rec(zo)
        si, sf, sg, so = (self._slopes(rec_name, zi, i), self._slopes(rec_name, zf, f), self._slopes(act_name, zg, g),
                          self._slopes(rec_name, zo, o))
        ei, ef, eg, eo = si * ei + np.abs(i), sf * ef + np.abs(f), sg * eg + np.abs(g), so * eo + np.abs(o)
        c_new = f * c + i * g
        ec = np.abs(c) * ef + np.abs(i) * eg + np.abs(g) * ei + np.abs(f * c) + np.abs(i * g) + np.abs(c_new)
        a = act(c_new)
        sa = self._slopes(act_name, c_new, a)
        h_new = o * a
        eh = np.abs(o) * (sa * ec + np.abs(a)) + np.abs(a) * eo + np.abs(h_new)
        Ui, Uf, Ug, Uo = np.split(U, 4, axis=1)
        to_c = Ui[None] * (si * g)[:, None] + Uf[None] * (sf * c)[:, None] + Ug[None] * (sg * i)[:, None]
        out = o * sa  # dh/dc
        n, units = h.shape
        J = np.zeros((n, 2 * units, 2 * units))
        J[:, :units, :units] = Uo[None] * (so * a)[:, None] + to_c * out[:, None]
        J[:, :units, units:] = to_c
        diag = np.arange(units)
        J[:, units + diag, diag] = f * out
        J[:, units + diag, units + diag] = f
        return (h_new, c_new), np.concatenate([eh, ec], axis=1), J

    def _gru_step_error(self, xt: np.ndarray, ext: np.ndarray, state: Step, U: np.ndarray,
                        b: np.ndarray) -> tuple[Step, np.ndarray, np.ndarray]:
        """One GRU step: the new state (h,), the rounding it adds in units of eps ``(N, units)``, and its Jacobian
        ``dh/dh_prev`` ``(N, units, units)``."""
        (h,) = state
        rec_name, act_name = self.recurrent_activation, self.activation
        rec, act = ACTIVATIONS[rec_name].reference, ACTIVATIONS[act_name].reference
        units = self.units
        Uz, Ur, Uh = np.split(U, 3, axis=1)
        (xz, xr, xh), (exz, exr, exh) = np.split(xt, 3, axis=1), np.split(ext, 3, axis=1)
        U_zr = U if self.reset_after else U[:, :2 * units]
        recurrent = h @ U_zr + (b[1] if self.reset_after else 0.0)
        e_recurrent = np.abs(h) @ np.abs(U_zr) + (np.abs(b[1]) if self.reset_after else 0.0)
        parts, e_parts = np.split(recurrent, U_zr.shape[1] // units, axis=1), \
            np.split(e_recurrent, U_zr.shape[1] // units, axis=1)
        gates = []
        for x_part, ex_part, h_part, eh_part in ((xz, exz, parts[0], e_parts[0]), (xr, exr, parts[1], e_parts[1])):
            pre = x_part + h_part
            value = rec(pre)
            slope = self._slopes(rec_name, pre, value)
            gates.append((value, slope, slope * (ex_part + eh_part + np.abs(pre)) + np.abs(value)))
        (z, sz, ez), (r, sr, er) = gates
        if self.reset_after:
            hh = parts[2]
            pre = xh + r * hh
            epre = exh + np.abs(r) * e_parts[2] + np.abs(hh) * er + np.abs(r * hh) + np.abs(pre)
            to_pre = Ur[None] * (sr * hh)[:, None] + Uh[None] * r[:, None]
        else:
            rh = r * h
            pre = xh + rh @ Uh
            epre = exh + (np.abs(rh) + np.abs(h) * er) @ np.abs(Uh) + np.abs(pre)
            to_rh = Ur[None] * (sr * h)[:, None]
            to_rh[:, np.arange(units), np.arange(units)] += r
            to_pre = to_rh @ Uh
        candidate = act(pre)
        sc = self._slopes(act_name, pre, candidate)
        h_new = z * h + (1.0 - z) * candidate
        eh = np.abs(h - candidate) * ez + np.abs(1.0 - z) * (sc * epre + np.abs(candidate)) + np.abs(z * h) \
            + 2 * np.abs((1.0 - z) * candidate) + np.abs(h) + np.abs(h_new)  # any of the update's written forms
        J = Uz[None] * (sz * (h - candidate))[:, None] + to_pre * (sc * (1.0 - z))[:, None]
        J[:, np.arange(units), np.arange(units)] += z
        return (h_new,), eh, J

    def running_error(self, x: np.ndarray, weights: LayerWeights) -> np.ndarray:
        """The output's first-order error bound in units of eps, componentwise: ``(N, T, units)`` or ``(N, units)``.

        Step ``s`` adds the rounding ``e_s`` (its state's error with an exact previous state); the state's error
        then evolves as ``d_t = d_{t-1} J_t + e_t``, so ``|d_t| <= sum_s |e_s| |J_{s+1} ... J_t|``: the product of
        the signed Jacobians along the float64 trajectory, its absolute value taken last (the errors' signs are
        unknown, the Jacobians' are not). Sequences are taken a few at a time (``_PRODUCT_FLOATS``); each
        sequence's bound is its own (``_windowed``), whatever the batch. A non-finite input gives a non-finite
        bound there (``scale`` leaves it out)."""
        K, U, b = self._parts(weights)
        x64 = np.asarray(x, dtype=np.float64)
        size = len(self._state_sizes()) * self.units
        rows = max(1, _PRODUCT_FLOATS // (max(1, x64.shape[1]) * size * size))
        out = [self._rows_error(x64[i:i + rows], K, U, b) for i in range(0, x64.shape[0], rows)]
        return np.concatenate(out) if out else np.zeros((0, *self.output_shape(x64.shape[1:])))

    def _state_sizes(self) -> tuple[int, ...]:
        return (self.units, self.units) if self.cell == "lstm" else (self.units,)

    def _rows_error(self, x64: np.ndarray, K: np.ndarray, U: np.ndarray, b: np.ndarray) -> np.ndarray:
        n = x64.shape[0]
        x_bias = b if b.ndim == 1 else b[0]
        step = self._lstm_step_error if self.cell == "lstm" else self._gru_step_error
        state: Step = tuple(np.zeros((n, size)) for size in self._state_sizes())
        local, jacobians = [], []
        with np.errstate(invalid="ignore", over="ignore"):
            for t in range(x64.shape[1]):
                xt = x64[:, t]
                state, e, J = step(xt @ K + x_bias, np.abs(xt) @ np.abs(K) + np.abs(x_bias), state, U, b)
                local.append(e)
                jacobians.append(J)
            ends = np.arange(len(local)) if self.return_sequences else np.array([len(local) - 1])
            local_, jacobians_ = np.stack(local), np.stack(jacobians)
            window = self.window(len(local))
            out = self._windowed(local_, jacobians_, ends, window) if window > 1 else \
                self._carried_in_absolute_value(local_, jacobians_)[ends]
        return np.moveaxis(out, 0, 1) if self.return_sequences else out[0]

    def window(self, steps: int) -> int:
        """How many steps' Jacobians the bound multiplies exactly (``_windowed``): all ``steps`` (the exact bound)
        within ``EXACT_BUDGET`` per sequence or where that costs no more than ``WINDOW`` steps' runs, else the
        longest run up to ``WINDOW`` steps within ``PRODUCT_BUDGET``; 1 when not even two steps fit (each
        Jacobian's absolute value then)."""
        runs = range(min(WINDOW, steps), 1, -1)
        exact = self.product_cost(steps, steps)
        if exact <= EXACT_BUDGET or exact <= min(PRODUCT_BUDGET, self.product_cost(steps, max(runs, default=1))):
            return steps
        return next((w for w in runs if self.product_cost(steps, w) <= PRODUCT_BUDGET), 1)

    def product_cost(self, steps: int, window: int) -> int:
        """Multiply-adds of Jacobian products per sequence for ``_windowed`` with ``window``: a product per lag
        for each output end (``units`` columns), and per window boundary before the last step, the full state's
        (``size`` columns) over the window."""
        size = len(self._state_sizes()) * self.units
        ends = range(steps) if self.return_sequences else (steps - 1,)
        lags = sum(max(0, t % window) for t in ends)  # the first lag is a Jacobian itself, no product
        boundaries = (steps - 1) // window
        return size * size * (lags * self.units + boundaries * (window - 1) * size)

    def _windowed(self, local: np.ndarray, jacobians: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
        """The bound at ``ends`` with the Jacobians multiplied exactly over runs of ``window`` steps:
        ``(len(ends), N, units)``. Within a run from step ``a``, ``d_t = sum_{a <= s <= t} e_s J_{s+1}..J_t +
        d_{a-1} J_a..J_t``, so ``|d_t| <= sum |e_s| |J_{s+1}..J_t| + D_{a-1} |J_a..J_t|`` with ``D_{a-1}`` the
        bound of the whole state (h, and an LSTM's c) at the run's start, computed the same way: as rigorous as
        the exact products (``window`` = all steps), and as tight where the products over a window contract."""
        steps, n, size = local.shape
        carried = np.zeros((n, size))  # the state starts exact
        out = []
        for start in range(0, steps, window):
            stop = min(start + window, steps)
            run_local = np.concatenate([carried[None], local[start:stop]])
            run_jacobians = np.concatenate([jacobians[start:start + 1], jacobians[start:stop]])  # [0] never used
            mine = ends[(ends >= start) & (ends < stop)] - start + 1
            if len(mine):
                chunk = max(1, _PRODUCT_FLOATS // (n * size * self.units))
                out.extend(self._accumulated(run_local, run_jacobians, mine[i:i + chunk], self.units)
                           for i in range(0, len(mine), chunk))
            if stop < steps:
                carried = self._accumulated(run_local, run_jacobians, np.array([stop - start]), size)[0]
        return np.concatenate(out)

    def _carried_in_absolute_value(self, local: np.ndarray, jacobians: np.ndarray) -> np.ndarray:
        """``|d_t| <= |d_{t-1}| |J_t| + |e_t|`` for every step: ``(T, N, units)``. The textbook worst case, the
        absolute value taken of each Jacobian: as rigorous, a matrix-vector product a step, and loose (it grows
        like the product of the ``|J|`` where the signed products contract); used past ``PRODUCT_BUDGET``."""
        carried = np.zeros_like(local[0])
        out = []
        for e, J in zip(local, jacobians):
            carried = (carried[:, None, :] @ np.abs(J))[:, 0] + np.abs(e)
            out.append(carried[:, :self.units])
        return np.stack(out)

    @staticmethod
    def _accumulated(local: np.ndarray, jacobians: np.ndarray, ends: np.ndarray, columns: int) -> np.ndarray:
        """``sum_{s <= t} |e_s| |J_{s+1} ... J_t|`` at the state's first ``columns`` columns, for every ``t`` of
        ``ends``: ``(len(ends), N, columns)``. Lag by lag, every end at once: ``Q = J_{t-lag+1} Q`` (one batched
        product a lag, over the ends still that long; the first lag's ``Q`` is the Jacobian itself)."""
        total = np.abs(local[ends][..., :columns])
        product = jacobians[ends[ends >= 1]][..., :columns]
        for lag in range(1, int(ends.max()) + 1):
            reach = ends >= lag
            if lag > 1:
                product = jacobians[ends[reach] - lag + 1] @ product[reach[-len(product):]]
            total[reach] += (np.abs(local[ends[reach] - lag])[:, :, None, :] @ np.abs(product))[:, :, 0]
        return total

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """The largest finite output error bound, in units of eps."""
        e = self.running_error(x, weights)
        e = e[np.isfinite(e)]
        return float(np.max(e)) if e.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        """``max(1, slope * E, max|h|)``: ``E`` the output's accumulated error in units of eps, ``slope`` that of
        the activation after the layer."""
        h = np.asarray(trace.h, dtype=np.float64)
        finite = h[np.isfinite(h)]
        return max(1.0, slope * self.magnitude(trace.x, weights), float(np.max(np.abs(finite))) if finite.size else 0.0)

    def unjudged(self, trace: LayerTrace, bound: float) -> str:
        """Why a comparison within ``bound`` judges nothing here, or "": the budget kept the bound from the exact
        products over all steps (``window``) and it is not below the reference outputs' largest magnitude (an
        output of zeros would pass): a wide, long layer. An exact bound that large is the dtype's own resolution
        (bfloat16 outputs below ``SAFETY`` eps), as for every kind."""
        h = np.asarray(trace.h, dtype=np.float64)
        finite = np.abs(h[np.isfinite(h)])
        largest = float(np.max(finite)) if finite.size else 0.0
        window = self.window(self.steps)
        if not largest or bound < largest or window == self.steps:
            return ""
        how = f"exact over {window} steps at a time" if window > 1 else \
            "each step's Jacobian in absolute value (past PRODUCT_BUDGET)"
        return (f"its error bound {bound:.3g} is not below its outputs' largest magnitude {largest:.3g}, so no "
                f"output could fail it ({self.units} units over {self.steps} steps; Jacobian products {how})")

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        """Every weight rounded moves by at most ``u`` of itself: the input projections' share of the running
        error, to first order (``u = eps/2`` of the magnitude, whose dot products carry one ``eps``)."""
        return slope * EPSILON[weight_dtype] / 2 * self.magnitude(x, weights)


def gate_permutation(expected: np.ndarray, got: np.ndarray, gates: int) -> tuple[int, ...] | None:
    """The order of ``expected``'s gate blocks (along its last axis) that ``got`` holds, when ``got`` is
    ``expected`` with its ``gates`` blocks permuted (and not in order); else None. What a port that copies a
    framework's weights without reordering its gates leaves."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape or expected.shape[-1] % gates:
        return None
    blocks = np.split(expected, gates, axis=-1)
    for order in permutations(range(gates)):
        if order != tuple(range(gates)) and np.array_equal(np.concatenate([blocks[i] for i in order], axis=-1), got):
            return order
    return None
