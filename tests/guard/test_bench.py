"""``make bench`` itself is timed by hand, never in a test; these check what it measures and prints."""

import re

import numpy as np

from equivalence.core.check import LayerPool
from equivalence.guard.bench import (
    KIND_WORKLOADS,
    bench_line,
    compare_kinds,
    kind_workload,
    random_spec,
    run_floor,
    run_floor_chains,
    run_ours,
    run_ours_chains,
    workload,
)
from tests.helpers import skip_chainless

BENCH_LINE = re.compile(
    r"bench: cases_per_s=[0-9.]+ vs_naive=[0-9.]+x vs_floor=[0-9.]+x rss_growth_mb_per_10k=-?[0-9.]+")


def test_the_bench_workload_is_the_issue_s_and_passes_the_check(torch_adapter, keras_adapter):
    cases = workload(40)
    assert all(1 <= c.spec.depth <= 6 and max(c.spec.widths) <= 64 and 1 <= c.x.shape[0] <= 32 for c in cases)
    assert {c.spec.dtype for c in cases} == {"float32"}
    assert {a for c in cases for a in c.spec.activations} == {"sigmoid"}
    pool = LayerPool()
    seconds, disagreements = run_ours(cases, pool)
    assert disagreements == 0 and seconds > 0
    assert pool.builds > 0
    builds = pool.builds
    assert run_floor(cases, pool) > 0
    assert pool.builds == builds, "the floor must reuse the layers the check path built, never build"


def test_the_workload_is_seeded():
    assert [c.id for c in workload(10)] == [c.id for c in workload(10)]
    assert [c.id for c in workload(10)] != [c.id for c in workload(10, seed=3)]


def test_the_last_line_has_the_issue_s_exact_form():
    line = bench_line({"cases_per_s": 201.26, "vs_naive": 70.04, "vs_floor": 1.234, "rss_growth_mb_per_10k": 9.57})
    assert line == "bench: cases_per_s=201.3 vs_naive=70.0x vs_floor=1.23x rss_growth_mb_per_10k=9.6"
    assert BENCH_LINE.fullmatch(line)


def test_random_spec_draws_square_and_width_one_layers():
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(200)]
    assert any(1 in s.widths for s in specs)
    assert any(a == b for s in specs for a, b in s.layer_shapes)


def test_every_kind_has_a_seeded_workload_built_around_it():
    for kind in KIND_WORKLOADS:
        cases = kind_workload(kind, 12)
        assert [c.id for c in cases] == [c.id for c in kind_workload(kind, 12)]
        assert all(kind in {k.name for k in c.spec.kinds} for c in cases), kind
        assert {c.spec.dtype for c in cases} == {"float32"}
    assert set(KIND_WORKLOADS) == {"conv", "pool", "flatten", "batchnorm", "layernorm", "embedding", "attention",
                                   "lstm", "gru", "add"}


def test_the_kind_workloads_pass_the_check_and_the_floor_never_builds(torch_adapter, keras_adapter):
    skip_chainless(torch_adapter, keras_adapter)
    pool = LayerPool()
    cases = [case for kind in KIND_WORKLOADS for case in kind_workload(kind, 4)]
    seconds, disagreements = run_ours_chains(cases, pool)
    assert disagreements == 0 and seconds > 0
    builds = pool.builds
    assert builds > 0
    assert run_floor_chains(cases, pool) > 0 and run_ours_chains(cases, pool)[1] == 0
    assert pool.builds == builds, "pooled chain models are reused: same kinds and shapes, new weights"
    kinds = compare_kinds(20, pool, blocks=2)
    assert set(kinds) == set(KIND_WORKLOADS)
    assert all(k["vs_floor"] > 0 and k["cases"] == 20 and k["disagreements"] == 0 for k in kinds.values())


def test_the_add_workload_holds_both_residual_forms_and_a_broken_add_disagrees_in_it(torch_adapter, keras_adapter,
                                                                                      monkeypatch):
    """``x + f(x)`` and ``f(x) + proj(x)`` both drawn; agreeing as they are, each case a disagreement once torch's add
    drops an operand (what ``kinds.add.disagreements`` in bench.json counts, failing ``make bench``)."""
    import torch

    skip_chainless(torch_adapter, keras_adapter)
    cases = kind_workload("add", 20)
    assert {"branch" in {k.name for k in c.spec.kinds} for c in cases} == {True, False}
    assert run_ours_chains(cases, LayerPool())[1] == 0
    monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: other)
    assert run_ours_chains(cases, LayerPool())[1] == len(cases)
