"""The numerical changelog (``make history``): consecutive replays diffed by activation and dtype, in ulps.

Replays here are the golden vectors' own recorded Keras outputs (numpy only, no framework runs); one is moved
by a known number of ulps in one sigmoid float32 layer, so the changelog must name exactly that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from equivalence.guard import golden, history

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
MEMBERS = {"summary": "a CPU (AVX), ...", "not_run": []}


@pytest.fixture(scope="module")
def recorded():
    vectors = golden.load(GOLDEN)
    outputs = {history.key(case.id, "keras", layer): golden._stored(out, case.spec.dtype)
               for case in vectors.cases for layer, out in enumerate(case.outputs["keras"])}
    return vectors, outputs


def _sigmoid_float32_layer(vectors):
    case = next(c for c in vectors.cases if c.spec.dtype == "float32" and c.spec.activations[0] == "sigmoid")
    return case, history.key(case.id, "keras", 0)


def test_unchanged_pairs_are_bit_identical_and_a_move_is_named_with_its_ulps(recorded, tmp_path):
    vectors, outputs = recorded
    case, moved_key = _sigmoid_float32_layer(vectors)
    nudged = dict(outputs)
    out = outputs[moved_key].copy()
    assert out.dtype == np.float32 and out.reshape(-1)[0] > 0
    out.view(np.uint32).reshape(-1)[0] += 3  # 3 ulps up: a positive float's bits count its ulps
    nudged[moved_key] = out
    for label, data, keras in (("a", outputs, "3.1"), ("b", outputs, "3.2"), ("c", nudged, "3.3")):
        history.write_replay(tmp_path, label, data, {**MEMBERS, "frameworks": {"keras": {"keras": keras}}})
    header, blank, *table = history.changelog(tmp_path, ["a", "b", "c"], GOLDEN).splitlines()
    assert "replayed under 3 releases" in header and "on a CPU" in header
    assert len(table) == 4
    assert "Keras 3.1 | TF ?, Keras 3.2 | bit-identical" in table[2]
    assert "sigmoid float32: 1 case, up to 3 ulps" in table[3], table[3]
    assert table[3].count("case") == 1  # nothing else moved
    before, after = table[3].rsplit("|", 3)[1].split("->")
    assert before.strip().startswith("sigmoid float32:") and after.strip()  # mean / max ulps, before and after


def test_a_release_whose_verify_failed_is_marked_and_fails_the_changelog(recorded, tmp_path, capsys):
    _, outputs = recorded
    history.write_replay(tmp_path, "a", outputs, {**MEMBERS, "frameworks": {"keras": {"keras": "3.1"}}})
    history.write_replay(tmp_path, "b", outputs, {**MEMBERS, "frameworks": {"keras": {"keras": "3.2"}},
                                                  "passed": False, "failures": 2, "moved": 0})
    assert history.main(["changelog", str(tmp_path), "a", "b", "--golden", str(GOLDEN)]) == 1
    out = capsys.readouterr().out
    assert "Keras 3.2 (verify FAILED: 2 cases disagree" in out and "FAIL: verify failed under b" in out


def _accuracy(mean: float, far: int = 0, sd: float = 0.45, dtype: str = "float32") -> list[dict]:
    from equivalence.core.accuracy import ErrorStats

    return [ErrorStats("keras", "sigmoid", dtype, 100_000, mean, 0.003, sd, 2.0, far, (100_000,)).to_json(),
            ErrorStats("keras", "tanh", "float32", 100_000, 0.1, 0.003, 0.45, 2.0, 0, (100_000,)).to_json()]


def test_the_changelog_states_the_accuracy_direction_and_size_of_each_change(recorded, tmp_path):
    _, outputs = recorded
    for label, mean, keras in (("a", 0.0, "3.1"), ("b", 0.0, "3.2"), ("c", -0.25, "3.3"), ("d", 0.05, "3.4")):
        history.write_replay(tmp_path, label, outputs, {**MEMBERS, "frameworks": {"keras": {"keras": keras}},
                                                        "accuracy": _accuracy(mean)})
    *_, same, worse, better = history.changelog(tmp_path, ["a", "b", "c", "d"], GOLDEN).splitlines()
    assert same.endswith("| unchanged |"), same
    assert "sigmoid float32: +0.000 / 2 -> -0.250 / 2 (-0.250 ulp, rms 0.45 -> 0.51, less accurate)" in worse, worse
    assert "sigmoid float32: -0.250 / 2 -> +0.050 / 2 (+0.300 ulp, rms 0.51 -> 0.45, more accurate)" in better, better
    assert "tanh" not in worse + better and "beyond" not in worse + better


def test_the_changelog_counts_the_outputs_that_moved_beyond_the_statistics(recorded, tmp_path):
    """Keras 3.3.3's float64 gelu moved a fifth of the grid by millions of ulps: out of the mean and max (within
    16 ulps), so the row must say how many outputs left them, or a large loss reads as a small shift."""
    _, outputs = recorded
    for label, far, keras in (("a", 0, "3.1"), ("b", 20_000, "3.2"), ("c", 0, "3.3")):
        history.write_replay(tmp_path, label, outputs, {**MEMBERS, "frameworks": {"keras": {"keras": keras}},
                                                        "accuracy": _accuracy(0.0, far)})
    *_, worse, better = history.changelog(tmp_path, ["a", "b", "c"], GOLDEN).splitlines()
    assert "sigmoid float32: +0.000 / 2 -> +0.000 / 2 (+0.000 ulp, rms 0.45 -> 0.45, beyond 16 ulps 0 -> 20000 " \
           "of 100000, less accurate)" in worse, worse
    assert "beyond 16 ulps 20000 -> 0 of 100000, more accurate)" in better, better


def test_a_missing_replay_is_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="no replay 'nope'"):
        history.load_replay(tmp_path, "nope")


def test_a_keras2_replay_is_labelled_keras2_tf_keras(recorded, tmp_path):
    _, outputs = recorded
    legacy = {"keras": "2.16.0", "keras_package": "tf-keras", "tensorflow": "2.16.2"}
    history.write_replay(tmp_path, "k2", outputs, {**MEMBERS, "frameworks": {"keras": legacy}})
    history.write_replay(tmp_path, "k3", outputs, {**MEMBERS, "frameworks": {"keras": {"keras": "3.0.5"}}})
    row = history.changelog(tmp_path, ["k2", "k3"], GOLDEN).splitlines()[-1]
    assert row.startswith("| TF 2.16.2, Keras 2 (tf-keras 2.16.0) | TF ?, Keras 3.0.5 |"), row


def test_the_history_starts_at_keras2_and_holds_every_keras3_release_line():
    noxfile = pytest.importorskip("noxfile", reason="noxfile.py needs nox (pip install .[matrix])")
    first_tf, first_keras, _ = noxfile.HISTORY[0]
    assert noxfile.tf_keras_version(first_keras) and "tf-keras" in noxfile.HISTORY_LABELS[0]
    lines = [tuple(map(int, keras.split(".")[:2])) for _, keras, _ in noxfile.HISTORY[1:]]
    assert all(noxfile.tf_keras_version(keras) is None for _, keras, _ in noxfile.HISTORY[1:])
    assert sorted(set(lines)) == [(3, minor) for minor in range(16)], "got these Keras 3 lines, but should be 3.0-3.15"
    assert lines == sorted(lines)  # release order: the changelog diffs each row against the one before
    assert len(set(noxfile.HISTORY_LABELS)) == len(noxfile.HISTORY_LABELS)


def test_a_change_of_the_spread_alone_is_stated_and_judged_by_its_limit(recorded, tmp_path):
    """TF 2.20's tanh: the mean hardly moved, the spread did (float64: RMS 0.40 -> 1.26). The row states every
    change of the outputs (the grid and the outputs are deterministic) and its direction; a spread that moved within
    verify's limit is marked so, a doubled one is not; a mean that differs only by numpy's summation order is no
    change."""
    _, outputs = recorded
    rows = (("a", 0.1, 0.45, "3.1"), ("b", 0.1 + 1e-13, 0.45, "3.2"), ("c", 0.1, 0.46, "3.3"), ("d", 0.1, 0.92, "3.4"))
    for label, mean, sd, keras in rows:
        history.write_replay(tmp_path, label, outputs, {**MEMBERS, "frameworks": {"keras": {"keras": keras}},
                                                        "accuracy": _accuracy(mean, sd=sd)})
    *_, noise, within, doubled = history.changelog(tmp_path, ["a", "b", "c", "d"], GOLDEN).splitlines()
    assert noise.endswith("| unchanged |"), noise
    assert "sigmoid float32: +0.100 / 2 -> +0.100 / 2 (-0.000 ulp, rms 0.46 -> 0.47, less accurate, within verify " \
           "limit)" in within, within
    assert "sigmoid float32: +0.100 / 2 -> +0.100 / 2 (+0.000 ulp, rms 0.47 -> 0.93, less accurate)" in doubled, doubled


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_change_that_came_with_the_reference_is_not_judged(recorded, tmp_path, dtype):
    """numpy's float64 functions differ by release (one float64 ulp on a third of the grid, 1.26.4 against 2.1.3):
    a statistic whose reference moved (its digest, or numpy's version when a replay has none) is not judged."""
    _, outputs = recorded
    name = f"sigmoid {dtype}"
    replays = (("a", "1.26.4", {name: "aaaa"}), ("b", "2.1.3", {name: "bbbb"}), ("c", "2.4.6", {name: "bbbb"}),
               ("d", "2.5.0", None))
    for (label, numpy_version, digests), mean in zip(replays, (0.0, -0.25, 0.0, -0.25)):
        meta = {**MEMBERS, "summary": f"a CPU (AVX), numpy {numpy_version} (openblas)", "not_run": [],
                "frameworks": {"keras": {"keras": label}}, "accuracy": _accuracy(mean, dtype=dtype)}
        history.write_replay(tmp_path, label, outputs, meta if digests is None else
                             {**meta, "accuracy_reference": digests})
    *_, moved, same, unrecorded = history.changelog(tmp_path, ["a", "b", "c", "d"], GOLDEN).splitlines()
    assert "not judged: the reference moved with numpy 1.26.4 -> 2.1.3)" in moved, moved
    assert "(+0.250 ulp, rms 0.51 -> 0.45, more accurate)" in same, same
    assert "not judged: numpy 2.4.6 -> 2.5.0, reference not recorded)" in unrecorded, unrecorded
