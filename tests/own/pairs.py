"""What the own-model tests of each layer kind share: the differences named from a pair's weights and configs, the
meta tests' verdict and an agreeing pair (the CLI on a saved pair: ``tests.helpers.compare_files_through_the_cli``)."""

from __future__ import annotations

from typing import Any


def named_differences(t: Any, k: Any) -> list:
    """The differences named from the two models' configurations and weights: no layer is run."""
    from equivalence.own import structural_differences, walk_pair

    return structural_differences(*walk_pair(t, k))


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


def read_as(model: Any, converted: Any, kinds: list[str]) -> Any:
    """``assert_equivalent(model, converted)`` over 20 drawn batches, the converted side's units read as ``kinds``
    (what the graph reader says each unit is) and of the same layer kinds as the model's; the result."""
    from equivalence import assert_equivalent

    result = assert_equivalent(model, converted, max_examples=20)
    got = [u.kind for u in result.keras_layers]
    assert got == kinds, f"read as {got}, but should be read as {kinds}"
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    return result
