"""Worst error/bound ratio per layer kind and dtype over random models (``make ratios``): docs/layer-kinds.md's tables.

For each family of users' models (dense MLPs, conv stacks, MLPs with BatchNorm and LayerNorm, sequence models,
recurrent models, residual MLPs) and each dtype, draw ``N`` architectures (seeded hypothesis draws over the docs'
ranges, wider than the tests' smoke sizes), build the torch model and its Keras port with the tests' builders
(``tests/own_models.py``, ``tests/conv_models.py``, ``tests/sequence_models.py``, ``tests/recurrent_models.py``,
``tests/residual_models.py``),
and compare them with ``equivalence.compare_models`` on seeded inputs ``U(-s, s)``, ``s`` in 1, 10, 100 (token ids
for a sequence model). Every layer's ratio is kept under its kind (max and average pooling apart), per pair:
torch vs reference, Keras vs reference, torch vs Keras. Writes the JSON (fingerprint, N, seed) and prints the
Markdown table; exits 1 when any ratio exceeds 1 (a layer beyond its bound: a finding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

DTYPES = ("float64", "float32", "float16", "bfloat16")
SCALES = (1.0, 10.0, 100.0)
PAIRS = (("torch", "reference"), ("keras", "reference"), ("torch", "keras"))
DENSE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "gelu", "softmax", "elu")


@dataclass(frozen=True)
class Family:
    """Models of one shape: ``archs(dtype)`` draws an architecture, ``ported(arch)`` gives the torch model and its
    Keras port, ``inputs(arch, rng)`` the inputs it is compared on (a list: one comparison each)."""

    archs: Callable[[str], st.SearchStrategy]
    ported: Callable[[Any], tuple[Any, Any]]
    inputs: Callable[[Any, np.random.Generator], list[np.ndarray]]
    ranges: str


def _port(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    from equivalence import port_weights

    port_weights(*pair)
    return pair


def _scaled(shape: Callable[[Any], tuple[int, ...]], offset: Callable[[np.random.Generator], float] = lambda r: 0.0):
    """Inputs ``U(-s, s) + offset`` of a batch of 1-8, for every ``s`` in SCALES."""
    def inputs(arch: Any, rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.uniform(-s, s, (int(rng.integers(1, 9)), *shape(arch))) + offset(rng) for s in SCALES]
    return inputs


@st.composite
def _mlp(draw: st.DrawFn, dtype: str) -> tuple[tuple[int, ...], tuple[str, ...], str]:
    depth = draw(st.integers(1, 4))
    widths = tuple(draw(st.integers(1, 64)) for _ in range(depth + 1))
    return widths, tuple(draw(st.sampled_from(DENSE_ACTIVATIONS)) for _ in range(depth)), dtype


def _dense_pair(arch: tuple[tuple[int, ...], tuple[str, ...], str]) -> tuple[Any, Any]:
    from tests.own_models import keras_model, torch_model

    widths, activations, dtype = arch
    return _port((torch_model("modulelist", widths, activations, dtype=dtype),
                  keras_model("sequential", widths, activations, dtype=dtype)))


@st.composite
def _norm(draw: st.DrawFn, dtype: str) -> tuple[tuple[int, ...], str, int]:
    widths = (draw(st.integers(1, 32)), draw(st.integers(1, 32)), draw(st.integers(2, 32)), draw(st.integers(1, 8)))
    return widths, dtype, draw(st.integers(0, 2**16))


def _norm_pair(arch: tuple[tuple[int, ...], str, int]) -> tuple[Any, Any]:
    from tests.own_models import norm_mlp

    widths, dtype, model_seed = arch
    return _port(norm_mlp(widths, dtype, seed=model_seed))


@st.composite
def _layernorm_first(draw: st.DrawFn, dtype: str) -> tuple[int, int, str, int]:
    return draw(st.integers(3, 512)), draw(st.integers(1, 8)), dtype, draw(st.integers(0, 2**16))


def _layernorm_first_pair(arch: tuple[int, int, str, int]) -> tuple[Any, Any]:
    from tests.own_models import layernorm_first

    features, units, dtype, model_seed = arch
    return _port(layernorm_first(features, units, dtype, seed=model_seed))


def _offset_rows(arch: tuple[int, int, str, int], rng: np.random.Generator) -> list[np.ndarray]:
    """Rows ``offset + U(-1, 1)``, the offset up to 1e4 (a large mean over a small spread: the cancellation)."""
    return [rng.uniform(-1, 1, (int(rng.integers(1, 9)), arch[0])) + float(rng.choice((0.0, 10.0, 1e3, 1e4)))]


def _families() -> dict[str, Family]:
    from tests import conv_models, recurrent_models, residual_models, sequence_models

    def sequence_inputs(arch: Any, rng: np.random.Generator) -> list[np.ndarray]:
        return [sequence_models.token_ids(arch, batch=int(rng.integers(1, 9)))]

    return {
        "dense": Family(_mlp, _dense_pair, _scaled(lambda a: (a[0][0],)),
                        "MLPs of 1-4 Linear/Dense layers, widths 1-64, activations " + ", ".join(DENSE_ACTIVATIONS)),
        "conv": Family(
            lambda dtype: conv_models.conv_archs(dtype=dtype, size=(4, 16), channels=(1, 16), filters=(1, 16),
                                                 kernel=5, stride=3),
            lambda arch: _port((conv_models.torch_conv_model(arch), conv_models.keras_conv_model(arch))),
            _scaled(lambda a: a.torch_input),
            "1-D/2-D conv stacks: 1-2 blocks, 4-16 px, in/out channels <= 16, kernel <= 5, stride <= 3, valid or "
            "same; max/avg pooling <= 3 wide, stride 1; Flatten; Dense"),
        "norm": Family(_norm, _norm_pair, _scaled(lambda a: (a[0][0],), lambda rng: float(rng.uniform(0, 10))),
                       "Linear, BatchNorm1d (random statistics), ReLU, Linear, LayerNorm, Tanh, Linear; widths 1-32; "
                       "inputs offset 0-10"),
        "sequence": Family(
            lambda dtype: sequence_models.sequence_archs(dtype=dtype, vocab=(2, 200), heads=8, head_size=16,
                                                         length=32, table_scales=(0.1, 1.0, 3.0)),
            lambda arch: _port((sequence_models.torch_sequence_model(arch),
                                sequence_models.keras_sequence_model(arch))),
            sequence_inputs,
            "Embedding (+ self-attention + activation) + mean + Dense: vocabulary 2-200, 1-8 heads of 1-16 "
            "features, 1-32 tokens, batch 1-8, with and without biases, tables scaled 0.1, 1 or 3"),
        "recurrent": Family(
            lambda dtype: recurrent_models.recurrent_archs(dtype=dtype, features=16, units=32, steps=40,
                                                           weight_scales=(None, 0.5, 1.0)),
            recurrent_models.ported, _scaled(lambda a: a.input_shape),
            "1-2 LSTM/GRU layers: 1-16 features, 1-32 units, 1-40 steps, weights torch's init, U(-0.5, 0.5) or "
            "U(-1, 1)"),
        "layernorm_first": Family(_layernorm_first, _layernorm_first_pair, _offset_rows,
                                  "LayerNorm then Linear: 3-512 features, rows offset + U(-1, 1), offset 0, 10, 1e3 "
                                  "or 1e4"),
        "residual": Family(
            lambda dtype: residual_models.residual_archs(dtype=dtype),
            lambda arch: _port((residual_models.torch_residual_model(arch),
                                residual_models.keras_residual_model(arch))),
            _scaled(lambda a: (a.n_in,)),
            "residual MLPs: 1-2 blocks act(fc2(act(norm(fc1(x)))) + x) or + proj(x) (two branches), the skip from the "
            "input or a stem, 1-12 features, 1-16 hidden, LayerNorm or not, relu/tanh/sigmoid/silu inside, "
            "relu/tanh/none after the sum, functional or subclassed Keras ports"),
    }


def drawn(strategy: st.SearchStrategy, n: int, draw_seed: int) -> list[Any]:
    """Up to ``n`` examples of ``strategy``, the same ones for the same seed (hypothesis' generation alone)."""
    out: list[Any] = []

    @seed(draw_seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out[:n]


def kind_label(kind: Any) -> str:
    """A layer kind's row in the table: its name, pooling split by its op (max pooling is exact, average is not)."""
    return f"{kind.op} pool" if kind.name == "pool" else kind.name


def record(worst: dict[str, dict[str, dict[str, float]]], layers: dict[str, dict[str, int]], family: str, dtype: str,
           result: Any) -> None:
    """Fold one comparison's layer results into ``worst["<kind> in <family>"][pair][dtype]`` (a kind apart in each
    family: a Dense after a Flatten is not one in an MLP). A pair with named differences (``result.differences``)
    has its torch vs Keras results left out: each side was judged against its own reference there, and the pair's
    difference is named, not measured. ``layers[row][dtype]`` counts the layers compared (torch's, once per input)."""
    for r in result.results:
        if r.pair[1] != "reference" and result.differences:
            continue
        row = f"{kind_label(result.torch_layers[r.layer].layer_kind)} in {family}"
        if r.pair == PAIRS[0]:
            counted = layers.setdefault(row, {})
            counted[dtype] = counted.get(dtype, 0) + 1
        cell = worst.setdefault(row, {}).setdefault(r.pair_name, {})
        cell[dtype] = max(cell.get(dtype, 0.0), float(r.ratio))


def measure(families: dict[str, Family], counts: dict[str, int], dtypes: Sequence[str], base_seed: int,
            log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every family's ``counts[family]`` models per dtype compared; the worst ratios, the models and the
    differences named."""
    from equivalence import compare_models

    worst: dict[str, dict[str, dict[str, float]]] = {}
    layers: dict[str, dict[str, int]] = {}
    models: dict[str, dict[str, int]] = {}
    named: list[str] = []
    order = list(_families())  # a family draws the same models whichever others run beside it
    for name, family in families.items():
        index = order.index(name)
        for dtype in dtypes:
            rng = np.random.default_rng([base_seed, index, DTYPES.index(dtype)])
            archs = drawn(family.archs(dtype), counts[name], base_seed + 1000 * index + DTYPES.index(dtype))
            for arch in archs:
                t, k = family.ported(arch)
                for x in family.inputs(arch, rng):
                    result = compare_models(t, k, x=x)
                    record(worst, layers, name, dtype, result)
                    named += [f"{name} {dtype} {arch}: {d.message}" for d in result.differences]
            models.setdefault(name, {})[dtype] = len(archs)
            log(f"{name} {dtype}: {len(archs)} models")
    return {"worst": worst, "layers_compared": layers, "models": models, "named_differences": named}


def cell(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio == 0:
        return "exact"
    return f"**{ratio:.3g} (over the bound)**" if ratio > 1 else f"{ratio:.2g}"


def table(worst: dict[str, dict[str, dict[str, float]]], dtypes: Sequence[str]) -> str:
    """The Markdown table: a row per kind (in its family of models) and pair, a column per dtype."""
    lines = [f"| kind | models | pair | {' | '.join(dtypes)} |", "|---|---|---|" + "---|" * len(dtypes)]
    for row in sorted(worst):
        kind, family = row.split(" in ")
        for pair in (f"{a} vs {b}" for a, b in PAIRS):
            if pair in worst[row]:
                lines.append(f"| {kind} | {family} | {pair} | "
                             + " | ".join(cell(worst[row][pair].get(d)) for d in dtypes) + " |")
    return "\n".join(lines)


def over_the_bound(worst: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    return [f"{kind} {pair} {dtype}: {ratio:.3g}" for kind, pairs in worst.items() for pair, cells in pairs.items()
            for dtype, ratio in cells.items() if ratio > 1]


def _counts(default: int, overrides: Iterable[str], names: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, default)
    for item in overrides:
        family, _, n = item.partition("=")
        if family not in counts or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--models {item!r}: should be FAMILY=N, N >= 1, FAMILY one of {', '.join(names)}")
        counts[family] = int(n)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    families = _families()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10, help="models per family and dtype (default 10)")
    parser.add_argument("--models", action="append", default=[], metavar="FAMILY=N",
                        help=f"models for one family ({', '.join(families)}), overriding -n; repeatable")
    parser.add_argument("--family", action="append", choices=list(families), help="only these families")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="only these dtypes (default: all four)")
    parser.add_argument("--seed", type=int, default=0, help="the draws' seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("ratios.json"), help="the JSON (default ratios.json)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n}: should be 1 or more")
    try:
        counts = _counts(args.n, args.models, list(families))
    except ValueError as exc:
        parser.error(str(exc))
    chosen = {name: families[name] for name in args.family or families}
    dtypes = tuple(d for d in DTYPES if d in (args.dtype or DTYPES))

    from equivalence.guard.fingerprint import fingerprint

    started = time.perf_counter()
    measured = measure(chosen, counts, dtypes, args.seed, log=lambda line: print(line, file=sys.stderr))
    seconds = time.perf_counter() - started
    over = over_the_bound(measured["worst"])
    args.out.write_text(json.dumps({
        "seed": args.seed, "models_per_dtype": {name: counts[name] for name in chosen}, "dtypes": list(dtypes),
        "input_scales": list(SCALES), "ranges": {name: family.ranges for name, family in chosen.items()},
        "seconds": round(seconds, 1), "fingerprint": fingerprint(("torch", "keras")), **measured,
        "over_the_bound": over}, indent=1, default=str) + "\n")
    print(table(measured["worst"], dtypes))
    print(f"\nworst error/bound ratios over {', '.join(f'{counts[n]} {n}' for n in chosen)} models per dtype, seed "
          f"{args.seed}, {seconds:.0f} s; written to {args.out}")
    if over:
        print("over the bound: " + "; ".join(over))
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
