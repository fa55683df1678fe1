"""``make ratios`` (tests/kind_ratios.py): it runs, writes its JSON and table, and a layer beyond its bound is
reported over it (and fails the command), not folded into a small number."""

from __future__ import annotations

import json

import pytest

from tests.kind_ratios import cell, main

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip", "torch_adapter", "keras_adapter")  # both or a skip


def test_the_command_writes_every_pair_of_the_kinds_it_drew(tmp_path, capsys):
    out = tmp_path / "ratios.json"
    assert main(["-n", "2", "--family", "norm", "--dtype", "float32", "--seed", "3", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["seed"] == 3 and written["models_per_dtype"] == {"norm": 2} and written["models"]["norm"] == {
        "float32": 2}
    assert written["fingerprint"]["cpu_model"] and written["fingerprint"]["frameworks"]["torch"]
    assert set(written["worst"]) == {"dense in norm", "batchnorm in norm", "layernorm in norm"}
    assert written["layers_compared"]["batchnorm in norm"] == {"float32": 2 * 3}  # 2 models, 3 input scales each
    for kind in written["worst"].values():
        assert set(kind) == {"torch vs reference", "keras vs reference", "torch vs keras"}
        assert all(0 <= ratio <= 1 for pair in kind.values() for ratio in pair.values())
    printed = capsys.readouterr().out
    assert "| kind | models | pair | float32 |" in printed and "| batchnorm | norm | torch vs keras |" in printed
    assert "over the bound" not in printed


def test_the_same_seed_draws_the_same_ratios(tmp_path):
    runs = []
    for name in ("a.json", "b.json"):
        assert main(["-n", "3", "--family", "dense", "--dtype", "float32", "--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name).read_text())["worst"])
    assert runs[0] == runs[1] and runs[0]["dense in dense"]["torch vs reference"]["float32"] > 0


def test_a_broken_torch_linear_is_reported_over_the_bound(tmp_path, capsys, monkeypatch):
    """torch's Linear off by one part in 1000: its ratio is reported beyond 1 and the command fails; Keras' is not."""
    from torch import nn

    original = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: original(self, x) * (1 + 1e-3))
    out = tmp_path / "ratios.json"
    assert main(["-n", "1", "--family", "dense", "--dtype", "float32", "--out", str(out)]) == 1
    worst = json.loads(out.read_text())["worst"]["dense in dense"]
    assert worst["torch vs reference"]["float32"] > 100
    assert worst["keras vs reference"]["float32"] <= 1
    assert "dense in dense torch vs reference float32" in json.loads(out.read_text())["over_the_bound"][0]
    assert "(over the bound)" in capsys.readouterr().out


@pytest.mark.parametrize(("ratio", "shown"), [(None, "-"), (0.0, "exact"), (0.123, "0.12"),
                                              (1.0, "1"), (1.5, "**1.5 (over the bound)**")])
def test_a_cell_says_exact_and_over_the_bound(ratio, shown):
    assert cell(ratio) == shown


def test_a_wrong_family_count_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--models", "lstm=3"])
    assert exit_.value.code == 2
    assert "--models 'lstm=3': should be FAMILY=N, N >= 1, FAMILY one of dense, conv, norm, sequence, recurrent, " \
        "layernorm_first, residual" in capsys.readouterr().err


def test_the_residual_adds_have_their_row_and_a_torch_add_dropping_the_skip_is_over_the_bound(tmp_path, monkeypatch):
    """The residual family's Adds are a row of their own; once torch's add drops its skip operand, only that row's
    torch pairs are over the bound and the command fails."""
    import torch

    out = tmp_path / "ratios.json"
    assert main(["-n", "2", "--family", "residual", "--dtype", "float32", "--out", str(out)]) == 0
    worst = json.loads(out.read_text())["worst"]
    assert 0 < worst["add in residual"]["torch vs reference"]["float32"] <= 1
    monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: self)
    assert main(["-n", "2", "--family", "residual", "--dtype", "float32", "--out", str(out)]) == 1
    written = json.loads(out.read_text())
    assert written["worst"]["add in residual"]["torch vs reference"]["float32"] > 100
    assert written["worst"]["add in residual"]["keras vs reference"]["float32"] <= 1
    assert {line.rsplit(":", 1)[0] for line in written["over_the_bound"]} == {
        "add in residual torch vs reference float32", "add in residual torch vs keras float32"}
