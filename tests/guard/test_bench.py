"""``make bench`` itself is timed by hand, never in a test; these check what it measures and prints."""

import re

import numpy as np

from equivalence.core.check import LayerPool
from equivalence.guard.bench import bench_line, random_spec, run_floor, run_ours, workload

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
