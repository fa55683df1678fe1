"""The activations' error statistics (``core.accuracy``) and ``verify``'s verdict on a systematic shift.

A shift of a quarter of an ulp passes every per-element tolerance; these tests inject one (one float32 output in
four moved one ulp toward zero, and every output moved one ulp) and ask ``verify`` to name it. The recording they
verify against is made in the test, on this machine: on any other kernel path a shift is "the machine changed".
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from equivalence import cli
from equivalence.core import accuracy
from equivalence.core.accuracy import MEAN_LIMIT, ErrorStats
from equivalence.core.dtypes import DTYPES, LARGEST, SMALLEST_NORMAL, numpy_dtype
from equivalence.guard import accuracy as guard_accuracy
from equivalence.guard import golden
from tests.helpers import BFLOAT16, keras3_only, needs_bfloat16

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
FEW_CASES = "1-1_"
"""``record -k``: the one-layer cases (one per activation), so that verify is quick."""


def correctly_rounded(activation: str, x: np.ndarray, dtype: str) -> np.ndarray:
    """A framework that rounds the float64 reference to the dtype: at most half an ulp off, no bias."""
    with np.errstate(over="ignore", invalid="ignore"):
        return accuracy.reference(activation, dtype).astype(numpy_dtype(dtype)).astype(np.float64)


# --- the statistic --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_correctly_rounded_activation_has_no_bias_and_errors_within_half_an_ulp(dtype):
    stats = accuracy.measure("rounded", correctly_rounded, "tanh", dtype)
    assert stats.max <= 0.5 and stats.far == 0, stats.describe()
    assert abs(stats.mean) <= max(stats.ci95, 0.01), stats.describe()
    assert sum(stats.histogram) == stats.n


def test_the_grid_covers_zero_subnormals_saturation_and_the_largest_values():
    for dtype in ("float32", "float16"):
        x = accuracy.grid(dtype).ravel()
        assert 0.0 in x and np.all(np.isfinite(x))
        assert np.any((x != 0) & (np.abs(x) < SMALLEST_NORMAL[dtype])), "no subnormal input"
        assert np.any(x > 20) and np.any(x < -20), "no saturated input"
        assert x.max() == LARGEST[dtype] and x.min() == -LARGEST[dtype]


def test_two_measurements_give_identical_numbers(torch_adapter):
    first = accuracy.measure("torch", torch_adapter.activation, "sigmoid", "float32")
    again = accuracy.measure("torch", torch_adapter.activation, "sigmoid", "float32")
    assert first == again


def test_the_signed_error_is_negative_toward_zero_whatever_the_sign():
    ref = np.array([[0.75, -0.75, 3.0, -3.0]])
    toward_zero = np.nextafter(ref.astype(np.float32), np.float32(0)).astype(np.float64)
    errors, far, n = accuracy.signed_errors(toward_zero, ref, "float32")
    assert np.allclose(errors, -1.0) and far == 0 and n == 4


def test_an_output_flushed_to_zero_counts_as_far_not_in_the_mean():
    ref = np.array([1e-40, 0.5])  # a float32 subnormal, then a normal number
    errors, far, n = accuracy.signed_errors(np.array([0.0, 0.5]), ref, "float32")
    assert far == 1 and n == 2 and list(errors) == [0.0]


# --- the decision rule ----------------------------------------------------------------------------

def _stats(mean: float, sd: float = 0.4, far: int = 0, largest: float = 2.0) -> ErrorStats:
    n = 100_000
    return ErrorStats("torch", "sigmoid", "float32", n, mean, 1.96 * sd / math.sqrt(n), sd, largest, far, (n,))


def _recorded(stats: ErrorStats, fp: dict) -> guard_accuracy.Recorded:
    return guard_accuracy.Recorded(fp, "then", {stats.key: stats})


FP = {"kernel": {"cpu_isa": "AVX512_CORE", "onednn_isa": "AVX512_CORE"},
      "frameworks": {"torch": {"torch": "2.13.0", "cpu_capability": "AVX512"}}}


def test_a_quarter_ulp_shift_on_the_same_kernel_path_fails_as_less_accurate():
    [shift] = guard_accuracy.judge(_recorded(_stats(0.0), FP), [_stats(-0.25)], FP)
    assert shift.failed and shift.direction == "less accurate"
    assert "torch sigmoid float32" in shift.describe() and "-0.2500 ulp" in shift.describe()


def test_a_shift_toward_no_bias_is_more_accurate():
    upgraded = {**FP, "frameworks": {"torch": {"torch": "2.14.0", "cpu_capability": "AVX512"}}}
    [shift] = guard_accuracy.judge(_recorded(_stats(0.3), FP), [_stats(0.0)], upgraded)
    assert shift.failed and shift.direction == "more accurate" and shift.versions == ("torch 2.13.0 -> 2.14.0",)


def test_a_shift_within_the_sampling_error_and_the_floor_passes():
    small = guard_accuracy.FLOOR * 0.9
    assert guard_accuracy.judge(_recorded(_stats(0.0), FP), [_stats(small)], FP) == []


def test_a_tripled_spread_with_the_same_mean_fails_as_less_accurate():
    [shift] = guard_accuracy.judge(_recorded(_stats(0.08, sd=0.4), FP), [_stats(0.08, sd=1.2, largest=7.0)], FP)
    assert shift.failed and shift.spread_beyond and not shift.mean_beyond and shift.direction == "less accurate"
    assert shift.describe().startswith("torch sigmoid float32: spread moved +0.8000 ulp (sd 0.4000 -> 1.2000")


def test_a_spread_that_narrowed_is_more_accurate():
    [shift] = guard_accuracy.judge(_recorded(_stats(0.1, sd=0.85, largest=5.2), FP), [_stats(0.1, sd=0.77)], FP)
    assert shift.failed and shift.direction == "more accurate"


def test_a_spread_within_its_sampling_error_and_the_floor_passes():
    then = _stats(0.0, sd=0.4, largest=16.0)
    bound = guard_accuracy.spread_ci95(then)  # 16 ulps from the mean: the widest the bound allows
    within = math.hypot(bound, bound) + guard_accuracy.SPREAD_FLOOR * 0.9
    assert guard_accuracy.judge(_recorded(then, FP), [_stats(0.0, sd=0.4 + within, largest=16.0)], FP) == []


def test_the_spread_bound_holds_the_sampling_error_of_a_bounded_sample():
    """``spread_ci95`` bounds the spread's sampling error without the fourth moment: over repeated samples of a
    heavy-tailed error (most exact, a few at the largest), the spread stays within it at least 95 % of the time."""
    rng = np.random.default_rng(27)
    population = np.concatenate([np.zeros(9_000), np.full(500, 8.0), np.full(500, -8.0)])
    spreads = [population[rng.integers(0, population.size, 4_000)].std(ddof=1) for _ in range(400)]
    sample = population[rng.integers(0, population.size, 4_000)]
    stats = ErrorStats("x", "tanh", "float32", sample.size, float(sample.mean()), 0.0, float(sample.std(ddof=1)),
                       float(np.abs(sample).max()), 0, (sample.size,))
    outside = np.mean(np.abs(np.array(spreads) - population.std()) > guard_accuracy.spread_ci95(stats))
    assert outside <= 0.05, outside


def test_a_share_of_far_off_outputs_within_its_sampling_error_passes():
    then = _stats(0.0, far=28_000)  # 28 % far off: gelu float64's share
    assert guard_accuracy.judge(_recorded(then, FP), [_stats(0.0, far=28_300)], FP) == []
    [shift] = guard_accuracy.judge(_recorded(then, FP), [_stats(0.0, far=30_000)], FP)
    assert shift.far_beyond and shift.direction == "less accurate"


def test_identical_statistics_are_never_flagged():
    for stats in (_stats(0.3, sd=0.01, largest=0.5), _stats(-0.9, sd=3.0, largest=16.0), _stats(0.0, far=900)):
        assert guard_accuracy.judge(_recorded(stats, FP), [stats], FP) == []


def test_a_shift_on_another_kernel_path_is_the_machine_not_a_regression():
    avx2 = {**FP, "frameworks": {"torch": {"torch": "2.13.0", "cpu_capability": "AVX2"}}}
    [shift] = guard_accuracy.judge(_recorded(_stats(0.0), FP), [_stats(-0.25)], avx2)
    assert not shift.failed and shift.machine == ("cpu_capability AVX512 -> AVX2",)
    lines = guard_accuracy.report_lines(_recorded(_stats(0.0), FP), [_stats(-0.25)], [shift], [])
    assert not any(line.startswith("FAIL") for line in lines) and "torch: the machine changed" in lines[-1]


def test_more_outputs_far_off_is_less_accurate_and_fails():
    [shift] = guard_accuracy.judge(_recorded(_stats(0.0), FP), [_stats(0.0, far=500)], FP)
    assert shift.failed and shift.direction == "less accurate"


# --- the frameworks ------------------------------------------------------------------------------

def _bias_beyond_limit(adapter) -> list[str]:
    stats, skipped = guard_accuracy.measure_all({adapter.name: adapter})
    assert stats and not skipped, skipped
    assert {s.dtype for s in stats} == set(DTYPES) - set(adapter.unsupported_dtypes)
    return [f"{s.activation} {s.dtype}: {s.describe()}" for s in stats if abs(s.mean) > MEAN_LIMIT]


def test_torch_activations_have_no_bias_beyond_the_limit_on_this_kernel_path(torch_adapter):
    assert _bias_beyond_limit(torch_adapter) == []


def test_keras_activations_have_no_bias_beyond_the_limit_on_this_kernel_path(keras_adapter):
    assert _bias_beyond_limit(keras_adapter) == []


# --- verify ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded_here(tmp_path_factory, torch_adapter, keras_adapter) -> Path:
    """A few golden cases and the statistics, recorded on this machine with the installed frameworks."""
    folder = tmp_path_factory.mktemp("golden") / "few"
    assert cli.main(["record", str(folder), "-k", FEW_CASES]) == cli.EXIT_OK
    assert (folder / guard_accuracy.FILE).is_file()
    return folder


def _every(n: int, shape) -> np.ndarray:
    return (np.arange(math.prod(shape)) % n == 0).reshape(shape)


def test_verify_passes_the_unshifted_frameworks(recorded_here, capsys):
    assert cli.main(["verify", str(recorded_here)]) == cli.EXIT_OK, capsys.readouterr().out
    assert "none moved beyond the sampling error" in capsys.readouterr().out


@pytest.mark.parametrize("every, mean", [(4, -0.25), (1, -1.0)], ids=["quarter-ulp", "one-ulp"])
def test_verify_catches_float32_torch_sigmoid_moved_toward_zero(recorded_here, monkeypatch, capsys, every, mean):
    import torch

    original = torch.nn.Sigmoid.forward

    def shifted(self, z):
        y = original(self, z)
        if y.dtype != torch.float32:
            return y
        mask = torch.from_numpy(_every(every, tuple(y.shape)))
        return torch.where(mask, torch.nextafter(y, torch.zeros_like(y)), y)

    monkeypatch.setattr(torch.nn.Sigmoid, "forward", shifted)
    assert cli.main(["verify", str(recorded_here)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    assert "error model: " in out and "cases disagree beyond" not in out, out  # no per-element tolerance saw it
    line = next(line for line in out.splitlines() if line.startswith("FAIL accuracy torch sigmoid float32"))
    moved = float(line.split("moved ")[1].split(" ulp")[0])
    # one ulp down from a power of two (a saturated 1.0) is half an ulp of the reference's binade
    assert mean - 0.05 <= moved <= mean / 2 and line.endswith("less accurate"), line


def test_verify_catches_float64_torch_tanh_with_a_tripled_spread_and_no_bias(recorded_here, monkeypatch, capsys):
    """TF 2.20's float64 tanh (docs/accuracy.md): the spread tripled, the mean did not move. Here every other
    output of torch's float64 tanh is moved one ulp toward zero and the others one ulp away from it (the saturated
    1.0 and 0 kept: one ulp below a power of two is half an ulp of its binade, which would bias the mean)."""
    import torch

    original = torch.nn.Tanh.forward

    def noisier(self, z):
        y = original(self, z)
        if y.dtype != torch.float64:
            return y
        away = torch.from_numpy(~_every(2, tuple(y.shape)))
        target = torch.where(away, torch.sign(y) * math.inf, torch.zeros_like(y))
        return torch.where((y.abs() == 1) | (y == 0), y, torch.nextafter(y, target))

    monkeypatch.setattr(torch.nn.Tanh, "forward", noisier)
    assert cli.main(["verify", str(recorded_here)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("FAIL accuracy torch tanh float64"))
    assert line.startswith("FAIL accuracy torch tanh float64: spread moved +") and line.endswith("less accurate"), line
    then, now = (float(v) for v in line.split("(sd ")[1].split(" ±")[0].split(" -> "))
    assert now > 2.5 * then, line


def _nextafter_toward_zero(y):
    """One ulp toward zero, in the Keras backend's own op (Keras has no nextafter)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.math.nextafter(y, tf.zeros_like(y))
    if backend == "torch":
        import torch

        return torch.nextafter(y, torch.zeros_like(y))
    import jax.numpy as jnp

    return jnp.nextafter(y, jnp.zeros_like(y))


@keras3_only  # patches Keras 3's ops
@pytest.mark.parametrize("every, mean", [(4, -0.25), (1, -1.0)], ids=["quarter-ulp", "one-ulp"])
def test_verify_catches_float32_keras_tanh_moved_toward_zero(recorded_here, monkeypatch, capsys, keras_adapter, every,
                                                     mean):
    import keras

    original = keras.src.ops.tanh

    def shifted(x):
        y = original(x)
        if keras.backend.standardize_dtype(y.dtype) != "float32":
            return y
        return keras.ops.where(_every(every, tuple(y.shape)), _nextafter_toward_zero(y), y)

    monkeypatch.setattr(keras.src.ops, "tanh", shifted)
    assert cli.main(["verify", str(recorded_here)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("FAIL accuracy keras tanh float32"))
    moved = float(line.split("moved ")[1].split(" ulp")[0])
    # one ulp down from a power of two (a saturated 1.0) is half an ulp of the reference's binade
    assert mean - 0.05 <= moved <= mean / 2 and line.endswith("less accurate"), line


@needs_bfloat16  # the shipped vectors hold bfloat16 cases
def test_a_corrupted_statistics_file_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "golden"
    shutil.copytree(GOLDEN, folder)
    (folder / guard_accuracy.FILE).write_text('{"format": "something else"}')
    assert cli.main(["verify", str(folder)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert guard_accuracy.FILE in err and "Traceback" not in err


def test_recording_vectors_keeps_the_statistics_file_and_never_deletes_it(tmp_path):
    folder = tmp_path / "golden"
    shutil.copytree(GOLDEN, folder)
    removed_after_recording = golden.check_folder_is_ours(folder)  # raises on a file record did not write
    assert removed_after_recording and folder / guard_accuracy.FILE not in removed_after_recording


def test_keras_on_another_backend_is_not_judged_against_the_recording():
    def keras(backend: str) -> dict:
        return {**FP, "frameworks": {"keras": {"keras": "3.15.1", "keras_backend": backend}}}

    then, now = (ErrorStats("keras", "tanh", "float32", 100_000, mean, 0.003, 0.4, 2.0, 0, (100_000,))
                 for mean in (0.12, 0.0))
    [shift] = guard_accuracy.judge(guard_accuracy.Recorded(keras("tensorflow"), "then", {then.key: then}), [now],
                                   keras("jax"))
    assert not shift.failed and shift.machine == ("keras_backend tensorflow -> jax",)
