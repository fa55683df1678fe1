import pytest

from equivalence.core.spec import StackSpec


def test_derived_facts_of_a_small_stack():
    spec = StackSpec(5, (7, 3))
    assert spec.depth == 2
    assert spec.layer_shapes == ((5, 7), (7, 3))
    assert spec.param_counts == (42, 24)
    assert spec.total_params == 66
    assert StackSpec(5, (7, 3), bias=False).total_params == 56
    assert spec.activations == ("sigmoid", "sigmoid")


def test_ids_are_short_and_readable():
    assert StackSpec(5, (7, 3)).id == "5-7-3_sigmoid_f32"
    assert StackSpec(5, (7, 3), ("relu", "tanh"), bias=False).id == "5-7relu-3tanh_f32_nobias"


def test_spec_is_immutable_and_hashable():
    spec = StackSpec(5, [7, 3])
    assert spec.widths == (7, 3)
    with pytest.raises(AttributeError):
        spec.input_width = 4
    assert {spec: 1}[StackSpec(5, (7, 3))] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_width=0, widths=(3,)), r"input_width must be a positive integer, got 0"),
        (dict(input_width=2.5, widths=(3,)), r"input_width must be a positive integer, got 2.5 \(float\)"),
        (dict(input_width=True, widths=(3,)), r"input_width must be a positive integer, got True"),
        (dict(input_width=4, widths=()), r"widths is empty"),
        (dict(input_width=4, widths=(3, -1)), r"widths\[1\] \(layer 1\) must be a positive integer, got -1"),
        (dict(input_width=4, widths=(3, "8")), r"widths\[1\] \(layer 1\) must be a positive integer, got '8'"),
        (dict(input_width=4, widths="38"), r"widths must be a sequence"),
        (dict(input_width=4, widths=(3,), activations="sigmod"), r"unknown activation 'sigmod' for layer 0"),
        (dict(input_width=4, widths=(3, 2), activations=("relu",)), r"activations names 1 but the stack has 2 layers"),
        (dict(input_width=4, widths=(3, 2), activations=7), r"activations must be one name \(a str\) or a sequence"),
        (dict(input_width=4, widths=(3,), activations=(["relu"],)), r"activations\[0\] \(layer 0\) must be a name"),
        (dict(input_width=4, widths=(3,), dtype=["float32"]), r"unknown dtype \['float32'\]"),
        (dict(input_width=4, widths=(3,), dtype="float8"), r"unknown dtype 'float8'"),
        (dict(input_width=4, widths=(3,), bias="yes"), r"bias must be True or False"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_invalid_specs_say_what_and_where(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackSpec(**kwargs)


@pytest.mark.parametrize(("data", "message"), [
    ({"input_width": 1, "widths": [1], "activations": "sigmoid", "bias": True, "dtype": "float32"},
     r"activations must be a list of activation names, one per layer; got str 'sigmoid'"),
    ({"input_width": 1, "widths": 3, "activations": ["relu"], "bias": True, "dtype": "float32"},
     r"widths must be a list of positive integers, one per layer; got int 3"),
    ({"input_width": 1, "widths": [1], "activations": ["relu"], "bias": True}, r"the spec has no dtype"),
    ("5-7-3", r"a spec must be an object"),
], ids=["activations-string", "widths-int", "no-dtype", "not-an-object"])
def test_a_json_spec_of_the_wrong_types_says_which_field(data, message):
    with pytest.raises(ValueError, match=message):
        StackSpec.from_json(data)
