"""Smallest relative drift of an activation that the suite catches (``make sensitivity``).

For a dtype, patch torch's sigmoid to return ``sigmoid(z) * (1 + drift)`` and ask
whether the suite's property (``check_case`` over ``strategies.cases``) finds a
failing case within the default profile's budget. Bisect ``drift`` on a log
scale. Also confirms the unpatched suite raises no alarm on the same cases.

Then the statistical line per dtype (``equivalence.guard.accuracy``): torch's sigmoid with one output in ``k``
moved one ulp toward zero, for ``k`` = 1, 2, 4, ... 4096, judged against its unshifted statistics the way
``verify`` judges them on the same kernel path; the smallest mean shift still caught, after checking that a
second unshifted measurement raises no alarm. And the spread's line: one output in ``k`` moved one ulp,
alternately toward and away from zero (the spread grows, the mean hardly moves); the smallest spread change caught.
Last, the verdict's false alarms when the inputs are a sample: every statistic of torch and Keras measured on
random halves of the grid (elements; whole rows for the row-coupled activations), one half judged against the
other as ``verify`` judges the same kernel path: each alarm is false (the same op, the same kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator

import numpy as np
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from equivalence.core import accuracy
from equivalence.core.check import LayerPool, check_case
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.strategies import cases, specs
from equivalence.frameworks.registry import get_adapter

BUDGET = settings(max_examples=100, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def drifted_torch_sigmoid(drift: float) -> Iterator[None]:
    import torch

    original = torch.nn.Sigmoid.forward
    torch.nn.Sigmoid.forward = lambda self, z: original(self, z) * (1 + drift)
    try:
        yield
    finally:
        torch.nn.Sigmoid.forward = original


def caught(drift: float, dtype: str, pool: LayerPool) -> bool:
    """Whether the suite's property fails somewhere within the budget under ``drift``."""
    torch_a, keras_a = get_adapter("torch"), get_adapter("keras")

    def fails(case) -> bool:
        models = {"torch": (torch_a, pool.stack(torch_a, case.spec)),
                  "keras": (keras_a, pool.stack(keras_a, case.spec))}
        return not check_case(case, models).passed

    with drifted_torch_sigmoid(drift):
        try:
            find(cases(specs(dtypes=(dtype,))), fails, settings=BUDGET)
        except NoSuchExample:
            return False
    return True


def smallest_caught(dtype: str, *, low: float, high: float, steps: int = 8) -> float:
    """Bisect on a log scale between a drift that is missed (``low``) and one that is caught (``high``)."""
    pool = LayerPool()
    if caught(0.0, dtype, pool):
        raise AssertionError(f"{dtype}: the unpatched suite raised an alarm: a false positive")
    if not caught(high, dtype, pool):
        raise AssertionError(f"{dtype}: drift {high:g} was not caught")
    for _ in range(steps):
        mid = math.sqrt(low * high)
        if caught(mid, dtype, pool):
            high = mid
        else:
            low = mid
    return high


def toward_zero(out: np.ndarray, every: int, dtype: str) -> np.ndarray:
    """``out`` with one element in ``every`` moved one ulp of ``dtype`` toward zero."""
    dt = numpy_dtype(dtype)
    held = out.astype(dt)
    moved = held.ravel().copy()
    moved[::every] = np.nextafter(moved[::every], np.zeros_like(moved[::every]))
    return moved.reshape(held.shape).astype(np.float64)


def noisier(out: np.ndarray, every: int, dtype: str) -> np.ndarray:
    """``out`` with one element in ``every`` moved one ulp of ``dtype``, alternately toward and away from zero."""
    dt = numpy_dtype(dtype)
    held = out.astype(dt)
    moved = held.ravel().copy()
    picked = moved[::every]
    away = np.arange(picked.size) % 2 == 1
    target = np.where(away, np.copysign(np.inf, picked.astype(np.float64)), 0.0).astype(dt)
    moved[::every] = np.nextafter(picked, target)
    return moved.reshape(held.shape).astype(np.float64)


def smallest_caught_change(dtype: str, move, activation: str = "sigmoid") -> tuple[float, float, int, str]:
    """``(mean shift, spread shift, k, rules)``: the smallest change of torch's ``activation`` the accuracy verdict
    catches when ``move`` alters one output in ``k``, with no false alarm on an unshifted re-measurement; ``rules``
    names what caught it (mean, spread)."""
    from equivalence.guard.accuracy import Recorded, judge
    from equivalence.guard.fingerprint import fingerprint

    adapter = get_adapter("torch")
    fp = fingerprint(("torch",))
    then = accuracy.measure("torch", adapter.activation, activation, dtype)
    recorded = Recorded(fp, "now", {then.key: then})
    if judge(recorded, [accuracy.measure("torch", adapter.activation, activation, dtype)], fp):
        raise AssertionError(f"{dtype}: the unshifted statistics raised an alarm: a false positive")
    caught = None
    for every in (2**j for j in range(13)):
        out = move(adapter.activation(activation, accuracy.grid(dtype).copy(), dtype), every, dtype)
        shifts = judge(recorded, [accuracy.statistics("torch", activation, dtype, out)], fp)
        if not shifts:
            break
        s = shifts[0]
        rules = "+".join(rule for rule, hit in (("mean", s.mean_beyond), ("spread", s.spread_beyond),
                                                ("far-off count", s.far_beyond)) if hit)
        caught = (s.shift, s.spread_shift, every, rules)
    if caught is None:
        raise AssertionError(f"{dtype}: every output moved one ulp was not caught")
    return caught


def false_alarms_over_halves(pairs: int, seed: int = 27) -> tuple[int, int, dict[str, int]]:
    """``(alarms, comparisons, alarms per rule)`` over ``pairs`` random splits of the grid in two halves per
    (framework, activation, dtype) (see the module)."""
    from equivalence.core.activations import ACTIVATIONS
    from equivalence.core.dtypes import DTYPES
    from equivalence.guard.accuracy import Recorded, activations, judge

    rng = np.random.default_rng(seed)
    alarms, comparisons, rules = 0, 0, {"mean": 0, "spread": 0, "far-off count": 0}
    for framework in ("torch", "keras"):
        adapter = get_adapter(framework)
        for dtype in DTYPES:
            for activation in activations():
                if adapter.cannot(activation, dtype) is not None:
                    continue
                grid = accuracy.grid(dtype)
                out = adapter.activation(activation, grid.copy(), dtype)
                reference = accuracy.reference(activation, dtype)
                rows = ACTIVATIONS[activation].row_coupled
                for _ in range(pairs):
                    units = grid.shape[0] if rows else grid.size
                    chosen = np.zeros(units, dtype=bool)
                    chosen[rng.permutation(units)[: units // 2]] = True
                    half = np.repeat(chosen, grid.shape[1]) if rows else chosen
                    half = half.reshape(grid.shape)
                    a, b = (accuracy.summarize(framework, activation, dtype,
                                               *accuracy.signed_errors(out[m], reference[m], dtype))
                            for m in (half, ~half))
                    comparisons += 1
                    shifts = judge(Recorded({}, "half", {a.key: a}), [b], {})
                    if shifts:
                        alarms += 1
                        for rule, hit in (("mean", shifts[0].mean_beyond), ("spread", shifts[0].spread_beyond),
                                          ("far-off count", shifts[0].far_beyond)):
                            rules[rule] += hit
    return alarms, comparisons, rules


def smallest_mean_shift(dtype: str, activation: str = "sigmoid") -> tuple[float, int]:
    """``(shift in ulps, k)``: the smallest systematic mean shift of torch's ``activation`` the accuracy statistic
    catches (one output in ``k`` moved one ulp toward zero), with no false alarm on an unshifted re-measurement."""
    shift, _, every, _ = smallest_caught_change(dtype, toward_zero, activation)
    return shift, every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="bisection steps per dtype (default 8)")
    parser.add_argument("--halves", type=int, default=20, help="random splits per statistic (default 20)")
    args = parser.parse_args()
    for dtype, low, high in (("float32", 1e-9, 1e-4), ("float64", 1e-18, 1e-12)):
        print(f"sensitivity {dtype}: smallest relative sigmoid drift caught = "
              f"{smallest_caught(dtype, low=low, high=high, steps=args.steps):.2g}")
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        shift, every = smallest_mean_shift(dtype)
        print(f"sensitivity {dtype}: smallest systematic mean shift caught by the accuracy statistics = "
              f"{shift:+.3f} ulp (one sigmoid output in {every} moved one ulp toward zero; no false alarm)")
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        mean, spread, every, rules = smallest_caught_change(dtype, noisier)
        print(f"sensitivity {dtype}: smallest spread change caught by the accuracy statistics = {spread:+.3f} ulp "
              f"(mean {mean:+.3f}; one sigmoid output in {every} moved one ulp, alternately toward and away from "
              f"zero; caught by the {rules}; no false alarm)")
    alarms, comparisons, rules = false_alarms_over_halves(args.halves)
    print(f"sensitivity: false alarms of the accuracy verdict over random halves of the grid = {alarms} of "
          f"{comparisons} comparisons ({', '.join(f'{rule} {n}' for rule, n in rules.items())}; {args.halves} "
          f"splits per statistic of torch and Keras)")


if __name__ == "__main__":
    main()
