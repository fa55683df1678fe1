"""``make runtimes``' table: each runtime's worst error/bound ratio per dtype, and which pairs agree bit for bit.

Seeded random stacks (every activation, each layer its own; depth 1-4, widths 1-256, batch 1-64) run through
every framework asked for, each layer fed the reference's input as in the checks. A framework that cannot
compute a case (``Adapter.cannot``) or refuses it is left out of that case. Prints Markdown.

    python -m equivalence.guard.runtimes --framework torch --framework ort --cases 300
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, reference_inputs, run_available
from equivalence.core.compare import REFERENCE, compare_layers
from equivalence.core.dtypes import DTYPES
from equivalence.core.reference import layerwise_reference
from equivalence.core.spec import StackSpec
from equivalence.frameworks.registry import get_adapter, names


def measure(frameworks: list[str], n_cases: int, seed: int = 0) -> tuple[dict, dict, dict, list[str]]:
    adapters = {name: get_adapter(name) for name in frameworks}
    pool, rng = LayerPool(), np.random.default_rng(seed)
    worst: dict[tuple[str, str], float] = defaultdict(float)
    same: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    ran: dict[tuple[str, str], int] = defaultdict(int)
    failures = []
    activations = sorted(ACTIVATIONS)
    for index in range(n_cases):
        dtype = DTYPES[index % len(DTYPES)]
        depth = int(rng.integers(1, 5))
        spec = StackSpec(int(rng.integers(1, 257)), tuple(int(w) for w in rng.integers(1, 257, size=depth)),
                         tuple(str(a) for a in rng.choice(activations, size=depth)), bias=bool(rng.integers(0, 4)),
                         dtype=dtype)
        case = make_case(spec, seed=index, batch=int(rng.integers(1, 65)),
                         weight_scale="fan_in" if dtype == "float16" else "unit")
        traces = layerwise_reference(spec, case.weights, case.x)
        outputs, _ = run_available(spec, case.weights, reference_inputs(spec, traces), adapters,
                                   lambda _, adapter, spec=spec: pool.stack(adapter, spec))
        comparison = compare_layers(spec, case.weights, case.x, outputs, case_id=case.id, reference=traces)
        if not comparison.passed:
            failures.append(comparison.message())
        for result in comparison.results:
            if result.pair[1] == REFERENCE:
                worst[(result.pair[0], dtype)] = max(worst[(result.pair[0], dtype)], result.ratio)
        for name in outputs:
            ran[(name, dtype)] += depth
        for a, b in itertools.combinations(outputs, 2):
            for got_a, got_b in zip(outputs[a], outputs[b]):
                counts = same[(a, b, dtype)]
                counts[0] += bool(np.array_equal(got_a, got_b, equal_nan=True))
                counts[1] += 1
    return dict(worst), dict(same), dict(ran), failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equivalence.guard.runtimes", description=__doc__.split("\n")[0])
    parser.add_argument("--framework", action="append", choices=names(), dest="frameworks", required=True)
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    worst, same, ran, failures = measure(args.frameworks, args.cases)
    print(f"{args.cases} seeded cases, {time.perf_counter() - start:.0f} s\n")
    print("| framework | " + " | ".join(DTYPES) + " |\n|---|" + "---|" * len(DTYPES))
    for name in args.frameworks:
        cells = [f"{worst[(name, d)]:.3g} ({ran[(name, d)]} layers)" if (name, d) in worst else "not run"
                 for d in DTYPES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nlayers bit for bit identical:\n\n| pair | " + " | ".join(DTYPES) + " |\n|---|" + "---|" * len(DTYPES))
    for a, b in itertools.combinations(args.frameworks, 2):
        cells = [f"{same[(a, b, d)][0]}/{same[(a, b, d)][1]}" if (a, b, d) in same else "-" for d in DTYPES]
        print(f"| {a} = {b} | " + " | ".join(cells) + " |")
    for message in failures:
        print(message)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
