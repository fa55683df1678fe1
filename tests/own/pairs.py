"""What the own-model tests of each layer kind share: running the CLI on a saved pair, and the meta tests' verdict."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest


def compare_saved_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *,
                       factory_source: str, module: str, build_port: Any) -> tuple[int, str]:
    """``equivalence compare state.pt port.keras --torch-model module:build`` on a torch model built by
    ``factory_source`` (written to ``module.py``) and its Keras port (``build_port()``, ported first); the exit
    code and what it printed."""
    import torch

    from equivalence import port_weights
    from equivalence.cli import main

    (tmp_path / f"{module}.py").write_text(factory_source, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [str(tmp_path), *sys.path])
    torch_model = importlib.import_module(module).build().eval()
    port = build_port()
    port_weights(torch_model, port)
    torch.save(torch_model.state_dict(), tmp_path / "state.pt")
    port.save(tmp_path / "port.keras")
    code = main(["compare", str(tmp_path / "state.pt"), str(tmp_path / "port.keras"), "--torch-model",
                 f"{module}:build", "--examples", "3"])
    return code, capsys.readouterr().out


def assert_red_only_in(result: Any, framework: str, layer: int) -> None:
    """A meta test's verdict: ``framework``'s outputs first fail against the reference at ``layer``, the other
    framework's nowhere."""
    assert not result.passed
    assert result.failing_pairs()[f"{framework} vs reference"] == layer, result.message()
    other = "keras" if framework == "torch" else "torch"
    assert f"{other} vs reference" not in result.failing_pairs()


def agreeing(torch_model: Any, keras_model: Any, x: Any) -> Any:
    """``compare_models`` on given inputs, asserted to pass with the same layer kinds on both sides."""
    from equivalence import compare_models

    result = compare_models(torch_model, keras_model, x=x)
    assert result.passed, result.message()
    assert [type(u.layer_kind) for u in result.torch_layers] == [type(u.layer_kind) for u in result.keras_layers]
    return result
