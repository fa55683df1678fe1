"""``make bench``: how fast the suite's check path runs against the naive loop and the floor.

One run measures, on one fixed seeded workload (depth 1-6, widths 1-64, batch
1-32, sigmoid, float32, full three-way per-layer check):

* ours: cases per second of ``check_case`` with the ``LayerPool`` the suite uses,
  over 10,000 cases after a warm-up, and the RSS growth over them (read after
  the 10,000 cases are generated: their own arrays, ~55 MB, are the workload's
  memory, not the check path's);
* naive: the seed notebooks' way per case (build a Keras ``Sequential`` and a
  torch model, ``set_weights``, ``predict``, compare, ``clear_session``);
* floor: the same cases with layers already built and weights already in place,
  timing only the torch forward, the Keras forward and the numpy reference.

Ours, the floor and the naive loop are then timed block by block on the same
cases (``compare_interleaved``), so the ratios survive a machine whose load drifts.

Per kind (``KIND_WORKLOADS``: chains built around a conv, a pooling layer, a Flatten, a BatchNorm, a LayerNorm, an
Embedding (with the mean over its tokens), a self-attention, an LSTM, a GRU, a residual Add),
ours (pooled chain models: weights written, every layer run and compared) against the floor (the same models,
weights in place, only their layers and the reference timed), interleaved the same way; ``bench.json`` holds them
under ``kinds`` (``dense``: the stacks above).
Those cases go through the check path once, untimed, before the blocks: the floor
is defined with layers already built, so ours must not pay the builds either, and
within a block ours and the floor alternate which runs first.
The last line is machine-readable and nothing follows it.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from equivalence.core import chain
from equivalence.core.case import WEIGHT_SCALES, Case, make_case
from equivalence.core.check import LayerPool, check_case, check_pooled, reference_inputs
from equivalence.core.reference import layerwise_reference
from equivalence.core.residual import INPUT
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import BOUNDARY_WIDTHS, INPUT_SCALES
from equivalence.frameworks.base import Adapter
from equivalence.frameworks.registry import defaults, get_adapter
from equivalence.guard.fingerprint import fingerprint


def random_spec(rng: np.random.Generator, *, max_depth: int = 6) -> StackSpec:
    """As ``strategies.specs`` draws them: each layer square to the previous one, width 1,
    or one of ``BOUNDARY_WIDTHS`` (1-64)."""
    input_width = int(rng.choice(BOUNDARY_WIDTHS))
    widths, previous = [], input_width
    for _ in range(int(rng.integers(1, max_depth + 1))):
        kind = rng.integers(3)
        width = previous if kind == 0 else 1 if kind == 1 else int(rng.choice(BOUNDARY_WIDTHS))
        widths.append(width)
        previous = width
    return StackSpec(input_width, tuple(widths))


def workload(n: int, *, seed: int = 20261122) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [
        make_case(random_spec(rng), seed=int(rng.integers(2**32)), batch=int(rng.integers(1, 33)),
                  input_scale=float(rng.choice(INPUT_SCALES)), weight_scale=str(rng.choice(WEIGHT_SCALES)))
        for _ in range(n)
    ]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (4096 / 2**20)


def _adapters() -> dict[str, Adapter]:
    """The registry's default frameworks (torch and Keras): what ``make check`` and ``report`` run."""
    return {name: get_adapter(name) for name in defaults()}


def run_ours(cases: Sequence[Case], pool: LayerPool) -> tuple[float, int]:
    """Seconds for the suite's check path over ``cases``, and how many disagreed."""
    adapters = _adapters()
    failures = 0
    start = time.perf_counter()
    for case in cases:
        models = {name: (adapter, pool.stack(adapter, case.spec)) for name, adapter in adapters.items()}
        failures += not check_case(case, models).passed
    return time.perf_counter() - start, failures


def run_floor(cases: Sequence[Case], pool: LayerPool) -> float:
    """Seconds of only the forwards and the reference; building and loading weights untimed."""
    adapters = _adapters()
    total = 0.0
    for case in cases:
        models = {name: pool.stack(adapter, case.spec) for name, adapter in adapters.items()}
        for name, model in models.items():
            adapters[name].set_weights(model, case.weights)
        inputs = reference_inputs(case.spec, layerwise_reference(case.spec, case.weights, case.x))
        start = time.perf_counter()
        for name, model in models.items():
            adapters[name].layer_outputs(model, inputs)
        layerwise_reference(case.spec, case.weights, case.x)
        total += time.perf_counter() - start
    return total


def run_naive(cases: Sequence[Case]) -> float:
    """Seconds for the seed notebooks' loop: build, set_weights, predict, clear_session per case."""
    import keras  # the naive loop is Keras' public API on purpose: it is what the suite replaces

    torch_a = get_adapter("torch")
    get_adapter("keras")
    start = time.perf_counter()
    for case in cases:
        model = keras.Sequential([keras.Input((case.spec.input_width,))]
                                 + [keras.layers.Dense(w, activation="sigmoid") for w in case.spec.widths])
        model.set_weights([a for W, b in case.weights for a in (W, b)])
        got = model.predict(case.x, verbose=0)
        torch_model = torch_a.build(case.spec, "sequential")
        torch_a.set_weights(torch_model, case.weights)
        ref = layerwise_reference(case.spec, case.weights, case.x)[-1].h
        np.abs(got - torch_a.forward(torch_model, case.x)).max()
        np.abs(got - ref).max()
        keras.backend.clear_session()
    return time.perf_counter() - start


def ours_and_floor(block: Sequence[Case], pool: LayerPool,
                   ours: Callable[[Sequence[Case], LayerPool], tuple[float, int]],
                   floor: Callable[[Sequence[Case], LayerPool], float], *, floor_first: bool) -> tuple[float, float]:
    """Seconds of ours and of the floor on one block; blocks alternate which runs first."""
    if floor_first:
        floor_s = floor(block, pool)
        return ours(block, pool)[0], floor_s
    ours_s = ours(block, pool)[0]
    return ours_s, floor(block, pool)


def compare_interleaved(cases: Sequence[Case], pool: LayerPool, *, naive_cases: int,
                        blocks: int = 20) -> dict[str, float]:
    """ms per case of ours, the floor and the naive loop, measured block by block on the same cases.

    The machine is shared and its load drifts; alternating the three in short
    blocks gives each the same conditions, so their ratios mean something.
    """
    size = max(1, len(cases) // blocks)
    naive_per_block = max(1, naive_cases // blocks)
    ours = floor = naive = 0.0
    n_ours = n_naive = 0
    run_ours(cases, pool)  # build every layer these cases need, untimed: the floor never pays a build
    for b in range(blocks):
        block = cases[b * size:(b + 1) * size]
        block_ours, block_floor = ours_and_floor(block, pool, run_ours, run_floor, floor_first=bool(b % 2))
        ours, floor = ours + block_ours, floor + block_floor
        naive += run_naive(block[:naive_per_block])
        n_ours += len(block)
        n_naive += len(block[:naive_per_block])
    return {"ours": ours / n_ours * 1e3, "floor": floor / n_ours * 1e3, "naive": naive / n_naive * 1e3,
            "cases": n_ours, "naive_cases": n_naive}


def _pick(rng: np.random.Generator, options: Sequence) -> Any:
    return options[int(rng.integers(len(options)))]


def _residual_block(rng: np.random.Generator) -> tuple[tuple[int, ...], list[chain.Planned]]:
    """``act(x + f(x))``, ``f`` two Dense layers; or, half the time, ``act(f(x) + proj(x))`` (a second branch)."""
    width, after = _pick(rng, (8, 32)), _pick(rng, ("linear", "relu", "tanh"))
    f = [chain.dense(_pick(rng, (8, 32)), _pick(rng, ("relu", "tanh"))), chain.dense(width)]
    if _pick(rng, (False, True)):
        return (width,), [*f, chain.branch(INPUT), chain.dense(width), chain.add(1, after)]
    return (width,), [*f, chain.add(INPUT, after)]


KIND_WORKLOADS: dict[str, Callable[[np.random.Generator], tuple[tuple[int, ...], list[chain.Planned]]]] = {
    "conv": lambda rng: ((_pick(rng, (6, 10)),) * _pick(rng, (1, 2)) + (_pick(rng, (1, 3)),),
                         [chain.conv(_pick(rng, (2, 8)), _pick(rng, (1, 3)), activation=_pick(rng, ("relu", "tanh")))]),
    "pool": lambda rng: ((_pick(rng, (6, 10)),) * 2 + (3,),
                         [chain.conv(4, 1), chain.pool(_pick(rng, ("max", "avg")), _pick(rng, (2, 3)), stride=1)]),
    "flatten": lambda rng: ((_pick(rng, (4, 8)),) * 2 + (3,),
                            [chain.conv(2, 1), chain.flatten(), chain.dense(_pick(rng, (1, 8)), "sigmoid")]),
    "batchnorm": lambda rng: ((_pick(rng, (8, 32)),), [chain.dense(_pick(rng, (8, 32))), chain.batchnorm("relu")]),
    "layernorm": lambda rng: ((_pick(rng, (8, 32)),), [chain.dense(_pick(rng, (8, 32))), chain.layernorm("tanh")]),
    "embedding": lambda rng: ((_pick(rng, (6, 12)),), [chain.embedding(_pick(rng, (10, 50)), _pick(rng, (8, 16))),
                                                       chain.token_mean()]),
    "attention": lambda rng: ((_pick(rng, (4, 8)),), [chain.embedding(20, 8), chain.attention(_pick(rng, (1, 2, 4)),
                                                                                               "relu")]),
    "lstm": lambda rng: ((_pick(rng, (5, 10)), 4), [chain.recurrent("lstm", _pick(rng, (4, 16)),
                                                                    sequences=_pick(rng, (False, True)))]),
    "gru": lambda rng: ((_pick(rng, (5, 10)), 4), [chain.recurrent("gru", _pick(rng, (4, 16)),
                                                                   sequences=_pick(rng, (False, True)))]),
    "add": _residual_block,
}
"""Per kind, a drawn chain built around a layer of it (float32; a few sizes, so the pooled models are reused)."""


def kind_workload(kind: str, n: int, *, seed: int = 20261205) -> list[Case]:
    rng = np.random.default_rng([seed, len(kind)] + [ord(c) for c in kind])
    out = []
    for _ in range(n):
        shape, layers = KIND_WORKLOADS[kind](rng)
        out.append(chain.make_chain_case(shape, layers, "float32", seed=int(rng.integers(2**32)),
                                         batch=int(rng.integers(1, 17)), input_scale=float(rng.choice(INPUT_SCALES)),
                                         weight_scale=str(rng.choice(WEIGHT_SCALES))))
    return out


def run_ours_chains(cases: Sequence[Case], pool: LayerPool) -> tuple[float, int]:
    """Seconds for the check path of chains (``check_pooled``: pooled models, every layer compared)."""
    adapters = _adapters()
    failures = 0
    start = time.perf_counter()
    for case in cases:
        failures += not check_pooled(case, adapters, pool).passed
    return time.perf_counter() - start, failures


def run_floor_chains(cases: Sequence[Case], pool: LayerPool) -> float:
    """Seconds of only the chains' layers and the reference; weights written untimed."""
    adapters = _adapters()
    total = 0.0
    for case in cases:
        models = [pool.chain(adapter, case.spec, case.weights) for adapter in adapters.values()]
        inputs = reference_inputs(case.spec, layerwise_reference(case.spec, case.weights, case.x))
        start = time.perf_counter()
        for units in models:
            [unit.run(x) for unit, x in zip(units, inputs)]
        layerwise_reference(case.spec, case.weights, case.x)
        total += time.perf_counter() - start
    return total


def compare_kinds(n: int, pool: LayerPool, *, blocks: int = 10) -> dict[str, dict[str, float]]:
    """Per kind: ms per case of ours and the floor, interleaved block by block, their ratio, and disagreements."""
    out = {}
    for kind in KIND_WORKLOADS:
        cases = kind_workload(kind, n)
        _, failures = run_ours_chains(cases, pool)  # build every model these cases need, untimed
        size = max(1, len(cases) // blocks)
        ours = floor = 0.0
        for b in range(blocks):
            block_ours, block_floor = ours_and_floor(cases[b * size:(b + 1) * size], pool, run_ours_chains,
                                                     run_floor_chains, floor_first=bool(b % 2))
            ours, floor = ours + block_ours, floor + block_floor
        timed = size * blocks
        out[kind] = {"vs_floor": ours / floor, "ms_ours": ours / timed * 1e3, "ms_floor": floor / timed * 1e3,
                     "cases": timed, "disagreements": failures}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equivalence.guard.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases for cases/s and RSS (default 10000)")
    parser.add_argument("--ratio-cases", type=int, default=2_000, help="cases for the ours/floor ratio (2000)")
    parser.add_argument("--naive-cases", type=int, default=300, help="cases for the naive loop (default 300)")
    parser.add_argument("--warmup", type=int, default=1_000,
                        help="cases run first, untimed: imports, first calls, filling the layer pool (1000)")
    parser.add_argument("--kind-cases", type=int, default=200, help="cases per layer kind (default 200)")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the figures")
    args = parser.parse_args(argv)
    for name in ("cases", "ratio_cases", "naive_cases", "kind_cases"):
        if getattr(args, name) < 20:
            parser.error(f"--{name.replace('_', '-')} must be at least 20, got {getattr(args, name)}")

    pool = LayerPool()
    run_ours(workload(args.warmup, seed=1), pool)
    cases = workload(args.cases)
    gc.collect()
    rss_before, builds_before = _rss_mb(), pool.builds
    seconds, failures = run_ours(cases, pool)
    gc.collect()
    rss_growth = (_rss_mb() - rss_before) * 10_000 / len(cases)
    builds_in_timed_run = pool.builds - builds_before
    ms = compare_interleaved(workload(args.ratio_cases, seed=2), pool, naive_cases=args.naive_cases)
    kinds = {"dense": {"vs_floor": ms["ours"] / ms["floor"], "ms_ours": ms["ours"], "ms_floor": ms["floor"],
                       "cases": ms["cases"], "disagreements": failures},
             **compare_kinds(args.kind_cases, pool)}

    figures = {
        "cases_per_s": len(cases) / seconds, "vs_naive": ms["naive"] / ms["ours"], "vs_floor": ms["ours"] / ms["floor"],
        "rss_growth_mb_per_10k": rss_growth, "rss_after_warmup_mb": rss_before,
        "ms_per_case_interleaved": ms, "cases": len(cases), "warmup_cases": args.warmup,
        "layer_pool": {"size": pool.size, "builds": pool.builds, "builds_in_timed_run": builds_in_timed_run},
        "disagreements": failures,
        "kinds": kinds,
        "fingerprint": fingerprint(defaults()),
    }
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"ms per case, interleaved: ours {ms['ours']:.2f}, floor {ms['floor']:.2f}, naive {ms['naive']:.1f}; "
          f"layer builds {pool.builds} ({builds_in_timed_run} in the timed run); disagreements {failures}; "
          f"RSS after warm-up {rss_before:.0f} MB")
    print("per kind, ms per case ours / floor: " + "; ".join(
        f"{kind} {k['ms_ours']:.2f} / {k['ms_floor']:.2f} = {k['vs_floor']:.2f}x" for kind, k in kinds.items()))
    print(bench_line(figures))
    return 1 if failures or any(k["disagreements"] for k in kinds.values()) else 0


def bench_line(figures: dict) -> str:
    """The machine-readable last line (issue 5's exact form)."""
    return (f"bench: cases_per_s={figures['cases_per_s']:.1f} vs_naive={figures['vs_naive']:.1f}x "
            f"vs_floor={figures['vs_floor']:.2f}x rss_growth_mb_per_10k={figures['rss_growth_mb_per_10k']:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
