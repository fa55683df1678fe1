"""A user's sequence model and its Keras port: token ids through an Embedding, a multi-head self-attention, a mean
over the tokens and a Dense. A faithful port passes layer by layer in every dtype; each trap (row layout,
padding_idx, mask_zero, head split, heads) is named from the weights and configs; a broken framework layer turns
the suite red at that layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

from tests.helpers import BFLOAT16, assert_ported_pairs_agree, compare_files_through_the_cli
from tests.own.pairs import assert_red_only_in, named_differences
from tests.sequence_models import SequenceArch, keras_sequence_model, sequence_archs, token_ids, torch_sequence_model

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip", "torch_adapter", "keras_adapter")  # both or a skip

SEQUENCE_EXAMPLES = max(4, settings.default.max_examples // 20)
"""Architectures per dtype: each builds two models."""


def _ported(arch: SequenceArch):
    from equivalence import port_weights

    t, k = torch_sequence_model(arch), keras_sequence_model(arch)
    port_weights(t, k)
    return t, k


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_ported_sequence_model_agrees_layer_by_layer(dtype):
    """Embedding (+ attention + activation) + mean + Dense over drawn vocabularies, widths, lengths and heads:
    every layer within its kind's bound in both frameworks, with the shapes and parameter counts of both."""
    def check(arch: SequenceArch, t, k, result) -> None:
        kinds = ["embedding", *(["attention"] if arch.heads else []), "mean", "dense"]
        assert [u.layer_kind.name for u in result.torch_layers] == kinds
        assert [u.out_shape for u in result.torch_layers] == [u.out_shape for u in result.keras_layers]
        counts = [u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers]
        assert sum(counts) == sum(p.numel() for p in t.parameters()) == k.count_params()
        assert counts[0] == arch.vocab * arch.dim
        if arch.heads:
            assert counts[1] == result.torch_layers[1].layer_kind.parameter_count(bias=arch.bias)

    assert_ported_pairs_agree(sequence_archs(dtype=dtype), ported=_ported, inputs=token_ids,
                              max_examples=SEQUENCE_EXAMPLES, then=check, named=_bias_along_tokens)


def _bias_along_tokens(arch: SequenceArch) -> tuple[str, ...]:
    """``("bias",)`` where Keras adds the attention's biases along the tokens (keras_attention_bias_along_tokens,
    where it is active: biases, heads of one feature, as many tokens as heads), read from the architecture, not
    from what the walker made of the model."""
    from equivalence.frameworks.keras.known_differences import KERAS

    entry = next(d for d in KERAS if d.name == "keras_attention_bias_along_tokens")
    along = bool(arch.heads) and arch.bias and arch.dim == arch.heads and arch.length == arch.heads > 1
    return ("bias",) if along and entry.active() else ()


def test_drawn_ids_cover_an_embedding_model_and_a_failure_says_how_to_rebuild_them(monkeypatch):
    from torch import nn

    from equivalence import compare_models

    arch = SequenceArch(12, 4, 5, None, "linear", 2, "float32", 1)
    t, k = _ported(arch)
    assert compare_models(t, k, max_examples=5).passed
    original = nn.Embedding.forward
    monkeypatch.setattr(nn.Embedding, "forward", lambda self, ids: original(self, (ids + 1) % self.num_embeddings))
    result = compare_models(t, k, max_examples=5)
    assert result.failing_pairs()["torch vs reference"] == 0, result.message()
    assert "ids_from_draw(x, 12)" in result.reproduction


def test_out_of_range_and_fractional_ids_are_refused_in_one_line():
    from equivalence import compare_models

    arch = SequenceArch(6, 3, 4, None, "linear", 2, "float32", 2)
    t, k = _ported(arch)
    refusal = r"^x holds the id 6 at \(0, 2\), but the embedding has 6 rows \(ids 0 to 5\)$"
    with pytest.raises(ValueError, match=refusal):
        compare_models(t, k, x=np.array([[0, 1, 6, 2]]))
    with pytest.raises(ValueError, match="non-integer values"):
        compare_models(t, k, x=np.array([[0.5, 1, 2, 3]]))
    with pytest.raises(ValueError, match=r"should be token ids \(batch, 4\)"):
        compare_models(t, k, x=np.zeros((2, 5), dtype=int))


# --- the traps, named ----------------------------------------------------------------------------


def test_an_activation_after_an_embedding_is_judged_within_its_rounding():
    """A gather is exact, the tanh after it is not: a faithful port agrees (the bound was 0, so it failed by an
    ulp); a wrong gather still fails (``tests/core/test_layer_kinds.py``)."""
    import keras
    from torch import nn

    from equivalence import compare_models, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.act, self.fc = nn.Embedding(6, 3), nn.Tanh(), nn.Linear(3, 2)

        def forward(self, ids):
            return self.fc(self.act(self.embed(ids)).mean(1))

    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.Activation("tanh")(L.Embedding(6, 3)(ids)))))
    t = Net().eval()
    port_weights(t, k)
    x = np.array([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1]])
    result = compare_models(t, k, x=x)
    assert result.passed, result.message()
    assert all(0 < r.bound < 1e-5 for r in result.results if r.layer == 0)  # the tanh's rounding, no more

def test_a_transposed_square_table_is_named_row_layout():
    from equivalence import compare_models

    arch = SequenceArch(5, 5, 3, None, "linear", 2, "float32", 3)
    t, k = _ported(arch)
    k.layers[1].embeddings.assign(t.embed.weight.detach().numpy().T)  # fits the shape
    result = compare_models(t, k)
    assert [d.what for d in result.differences] == ["row layout"], result.message()
    assert "torch 'embed', keras 'embedding" in result.differences[0].message


def test_keras_mask_zero_is_named_mask_before_any_value():
    """Keras' mask_zero=True makes GlobalAveragePooling1D average the non-zero ids only; torch's mean counts them."""
    import keras

    from equivalence import PortMismatch, port_weights

    arch = SequenceArch(6, 3, 4, None, "linear", 2, "float32", 4, padding_idx=0)
    t = torch_sequence_model(arch)
    L = keras.layers
    def port(mask_zero: bool):
        ids = keras.Input((4,), dtype="int32")
        return keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(6, 3, mask_zero=mask_zero)(ids))))

    k, unmasked = port(True), port(False)
    differences = named_differences(t, k)
    assert [d.what for d in differences if d.layer == 0] == ["mask"]
    assert "got keras mask_zero=True, but torch has mask_zero=False" in differences[0].message
    assert "padding_idx only keeps that row at zero" in differences[0].message
    with pytest.raises(PortMismatch, match="mask"):
        port_weights(t, k)
    unmasked.set_weights(k.get_weights())
    ids = np.array([[0, 0, 1, 2]])
    masked, plain = (keras.ops.convert_to_numpy(model.predict(ids, verbose=0)) for model in (k, unmasked))
    assert not np.allclose(masked, plain)  # the mask changes the values


def test_a_padding_row_is_named_only_where_the_two_rows_differ():
    """padding_idx changes no forward value: a differing row p is named, equal tables pass whatever the row holds."""
    import torch

    from equivalence import port_weights

    arch = SequenceArch(6, 3, 4, None, "linear", 2, "float32", 5, padding_idx=0)
    t, k = _ported(arch)
    assert not named_differences(t, k)
    table = t.embed.weight.detach().numpy().copy()
    table[0] = 0.5
    k.layers[1].embeddings.assign(table)  # a Keras model trained on: its row 0 moved
    differences = named_differences(t, k)
    assert [d.what for d in differences] == ["padding_idx"]
    assert "the keras row 0 differs from the torch padding_idx=0 row (greatest abs diff 0.5)" in differences[0].message
    port_weights(k, t)  # copied as it is: torch looks row 0 up as any other
    assert torch.equal(t.embed.weight[0], torch.full((3,), 0.5))
    assert not named_differences(t, k)


def test_a_pretrained_table_with_a_non_zero_padding_row_ports_faithfully():
    """``nn.Embedding.from_pretrained(w, padding_idx=0)`` keeps a non-zero row 0: a faithful port passes."""
    import torch

    from equivalence import assert_equivalent, port_weights

    arch = SequenceArch(6, 3, 4, None, "linear", 2, "float32", 5, padding_idx=0)
    t, k = torch_sequence_model(arch), keras_sequence_model(arch)
    table = torch.randn(6, 3, generator=torch.Generator().manual_seed(5)) + 1.0
    t.embed = torch.nn.Embedding.from_pretrained(table, padding_idx=0)
    assert torch.count_nonzero(t.embed.weight[0]) > 0
    port_weights(t, k)
    assert_equivalent(t, k, x=np.array([[0, 1, 2, 0], [3, 4, 5, 0]]))


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_broken_framework_embedding_turns_the_suite_red_naming_the_layer(framework, monkeypatch):
    """The meta test: an embedding reading the next row (a shifted table) is caught at its layer."""
    from equivalence import compare_models

    arch = SequenceArch(9, 4, 6, 2, "relu", 3, "float32", 6)
    t, k = _ported(arch)
    if framework == "torch":
        from torch import nn

        original = nn.Embedding.forward
        monkeypatch.setattr(nn.Embedding, "forward",
                            lambda self, ids: original(self, (ids + 1) % self.num_embeddings))
    else:
        import keras

        original = keras.layers.Embedding.call
        monkeypatch.setattr(keras.layers.Embedding, "call",
                            lambda self, inputs: original(self, (inputs + 1) % self.input_dim))
    assert_red_only_in(compare_models(t, k, x=token_ids(arch)), framework, layer=0)


def _attention_pair(seed: int = 7, heads: int = 2, dim: int = 8):
    arch = SequenceArch(10, dim, 5, heads, "linear", 2, "float32", seed)
    t, k = _ported(arch)
    return arch, t, k, k.layers[2]



def test_a_model_starting_with_attention_takes_batch_first_sequences():
    """Float sequences straight into an attention are (N, L, E) in both frameworks: given so, they are judged (they
    were refused as not the torch layout N, C, ... of a spatial input), and a failure's rebuilt input is not
    transposed."""
    import keras
    from torch import nn

    from equivalence import compare_models, port_weights

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    x_in = keras.Input((4, 8))
    k = keras.Model(x_in, keras.layers.MultiHeadAttention(2, 4)(x_in, x_in))
    t = Net().eval()
    port_weights(t, k)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 8)).astype(np.float32)
    result = compare_models(t, k, x=x)
    assert result.passed, result.message()
    with pytest.raises(ValueError, match=r"should be \(batch, 4, 8\): batch-first sequences"):
        compare_models(t, k, x=x.transpose(0, 2, 1))

def test_a_head_split_by_reshape_is_named_head_split():
    """The query and output kernels written as the torch matrices reshaped, without their transpose: shape-valid."""
    from equivalence import compare_models

    arch, t, k, mha = _attention_pair()
    E, H, d = arch.dim, arch.heads, arch.dim // arch.heads
    weight = t.attn.in_proj_weight.detach().numpy()
    mha._query_dense.kernel.assign(weight[:E].reshape(E, H, d))
    mha._output_dense.kernel.assign(t.attn.out_proj.weight.detach().numpy().reshape(H, d, E))
    result = compare_models(t, k, x=token_ids(arch))
    assert [d.what for d in result.differences] == ["head split"], result.message()
    message = result.differences[0].message
    assert "layer 1 (torch 'attn', keras 'multi_head_attention" in message
    assert "keras query, output are the torch ones with a wrong layout" in message and "transposed first" in message
    assert "torch vs keras, layer 1" in result.message()  # and the values show it


def test_interleaved_heads_are_named_head_split():
    from equivalence import compare_models

    arch, t, k, mha = _attention_pair(heads=4)
    E, H, d = arch.dim, arch.heads, arch.dim // arch.heads
    value = t.attn.in_proj_weight.detach().numpy()[2 * E:].T  # (in, out): the right transpose
    mha._value_dense.kernel.assign(value.reshape(E, d, H).transpose(0, 2, 1))  # features split (d, heads)
    result = compare_models(t, k, x=token_ids(arch))
    assert [d.what for d in result.differences] == ["head split"], result.message()
    assert "keras value is the torch one with a wrong layout: the heads interleaved" in \
        result.differences[0].message


@pytest.mark.parametrize(("heads", "key_dim", "named"), [(4, 2, "got keras 4, but torch has 2"),
                                                         (2, 8, "got keras 8, but torch has 4")])
def test_another_head_count_or_key_dim_is_named_heads_before_any_value(heads, key_dim, named):
    """torch MultiheadAttention(8, 2) has heads of 4; Keras MultiHeadAttention(4, 2) the same 8 features in 4
    heads (a reshaped port fits the shapes), MultiHeadAttention(2, 8) heads of the whole width."""
    import keras

    from equivalence import PortMismatch, port_weights

    arch = SequenceArch(10, 8, 5, 2, "linear", 2, "float32", 8)
    t = torch_sequence_model(arch)
    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 8)(ids)
    h = L.MultiHeadAttention(heads, key_dim)(h, h)
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(h)))
    differences = [d for d in named_differences(t, k) if d.layer == 1]
    assert [d.what for d in differences] == ["heads"]
    assert named in differences[0].message and "key_dim = E // num_heads" in differences[0].message
    with pytest.raises(PortMismatch, match="heads"):
        port_weights(t, k)


def test_keras_attention_biases_added_along_the_tokens_are_named_bias():
    """keras_attention_bias_along_tokens: 2 heads of 1 feature over 2 tokens. Keras is judged against what it
    computes (and passes), the pair fails naming the bias; with 3 tokens the port agrees."""
    from equivalence import compare_models
    from equivalence.frameworks.keras.known_differences import KERAS

    if not next(d for d in KERAS if d.name == "keras_attention_bias_along_tokens").active():
        pytest.skip("Keras off TensorFlow adds the attention biases along the heads: nothing to name")
    for length, named in ((2, ["bias"]), (3, [])):
        arch = SequenceArch(5, 2, length, 2, "linear", 1, "float32", 11)
        t, k = _ported(arch)
        result = compare_models(t, k, x=token_ids(arch))
        assert [d.what for d in result.differences] == named, result.message()
        assert "keras vs reference" not in result.failing_pairs() and "torch vs reference" not in \
            result.failing_pairs()
        if named:
            assert result.failing_pairs() == {"torch vs keras": 1}
            assert "known difference keras_attention_bias_along_tokens" in result.differences[0].message


@pytest.mark.parametrize("call", [
    lambda attn, h: attn(query=h, key=h, value=h),
    lambda attn, h: attn(h, key=h, value=h, need_weights=False)], ids=["keywords", "query-then-keywords"])
def test_a_self_attention_called_with_keywords_is_judged(call):
    """``attn(query=x, key=x, value=x)`` is the same self-attention as ``attn(x, x, x)``: walked, ported, agreeing."""
    from torch import nn

    from equivalence import port_weights
    from tests.own.pairs import agreeing

    arch = SequenceArch(7, 4, 5, 2, "linear", 2, "float32", 3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.fc = nn.Embedding(7, 4), nn.Linear(4, 2)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, ids):
            return self.fc(call(self.attn, self.embed(ids))[0].mean(1))

    t, k = Net().eval(), keras_sequence_model(arch)
    port_weights(t, k)
    result = agreeing(t, k, token_ids(arch))
    assert [u.layer_kind.name for u in result.torch_layers] == ["embedding", "attention", "mean", "dense"]


@pytest.mark.parametrize(("call", "refused"), [
    (lambda net, h: net.attn(h, h, h, key_padding_mask=net.padding), "key_padding_mask"),
    (lambda net, h: net.attn(h, h, h, attn_mask=net.mask), "attn_mask"),
    (lambda net, h: net.attn(h, h.flip(1), h), "a branch"),
    (lambda net, h: net.attn(query=h, key=h.flip(1), value=h), "a branch")],
    ids=["key_padding_mask", "attn_mask", "cross", "cross-by-keyword"])
def test_attention_the_suite_does_not_judge_is_refused_in_one_line(call, refused):
    import keras
    import torch
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.attn, self.fc = nn.Embedding(10, 4), nn.MultiheadAttention(4, 2, batch_first=True), \
                nn.Linear(4, 2)
            self.register_buffer("mask", torch.zeros(5, 5, dtype=torch.bool))
            self.register_buffer("padding", torch.zeros(1, 5, dtype=torch.bool))

        def forward(self, ids):
            return self.fc(call(self, self.embed(ids))[0].mean(1))

    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 4)(ids)
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 2)(h, h))))
    with pytest.raises(ModelNotSupported, match=refused) as info:
        compare_models(Net().eval(), k)
    assert str(info.value).startswith("torch layer ") and "\n" not in str(info.value)


@pytest.mark.parametrize(("options", "call", "training", "refused"), [
    ({}, {"is_causal": True}, False, "is_causal"),
    ({"kdim": 3, "vdim": 3}, {}, False, "kdim or vdim other than embed_dim"),
    ({"add_bias_kv": True}, {}, False, "add_bias_kv"),
    ({"add_zero_attn": True}, {}, False, "add_zero_attn"),
    ({"dropout": 0.1}, {}, True, r"dropout in training mode \(call model.eval\(\)\)"),
], ids=["is_causal", "kdim-vdim", "add_bias_kv", "add_zero_attn", "dropout-training"])
def test_a_torch_attention_configured_otherwise_is_refused_in_one_line(options, call, training, refused):
    """The options layer-kinds.md lists as refused, each named (the call's keyword or the module's setting)."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True, **options)

        def forward(self, ids):
            h = self.embed(ids)
            return self.fc(self.attn(h, h, h, **call)[0].mean(1))

    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 4)(ids)
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 2)(h, h))))
    with pytest.raises(ModelNotSupported, match=rf"^torch layer 'attn' \(MultiheadAttention\) at position 1: .*"
                                                rf"{refused}") as info:
        compare_models(Net().train(training), k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("options", "refused"), [
    ({"value_dim": 3}, "value_dim 3 other than key_dim 2"),
    ({"output_shape": 6}, r"output_shape \(6,\)"),
    ({"attention_axes": (2,)}, r"attention_axes \(2,\)"),
], ids=["value_dim", "output_shape", "attention_axes"])
def test_a_keras_attention_configured_otherwise_is_refused_in_one_line(options, refused):
    import keras

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    h = L.Embedding(10, 4)(ids)
    h = L.MultiHeadAttention(2, 2, name="mha", **options)(h, h)
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(h)))
    t = torch_sequence_model(SequenceArch(10, 4, 5, 2, "linear", 2, "float32", 1))
    with pytest.raises(ModelNotSupported, match=rf"'mha' \(MultiHeadAttention\) at position 1: {refused}") as info:
        compare_models(t, k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("length", "conv", "refused"), [
    (None, False, r"'embed' \(Embedding\) at position 0: an Embedding, but the sequence length is unknown"),
    (5, True, r"'conv' \(Conv1d\) at position 1: on the \(batch, tokens, features\) sequence of an Embedding"),
], ids=["keras-length-unknown", "conv-taking-tokens-for-channels"])
def test_an_embedding_of_unknown_length_or_a_conv_on_its_tokens_is_refused_in_one_line(length, conv, refused):
    """A Conv1d on a batch-first sequence takes its tokens for channels (a Linear on it acts per token: judged,
    ``tests/own/test_own_transformer_blocks.py``)."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.conv, self.fc = nn.Embedding(10, 4), nn.Conv1d(5, 5, 1), nn.Linear(4, 2)

        def forward(self, ids):
            return self.fc(self.conv(self.embed(ids)).mean(1)) if conv else self.fc(self.embed(ids).mean(1))

    L = keras.layers
    ids = keras.Input((length,), dtype="int32")
    k = keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(10, 4)(ids))))
    with pytest.raises(ModelNotSupported, match=rf"^torch layer {refused}") as info:
        compare_models(Net(), k)
    assert "\n" not in str(info.value)


def test_a_sparse_torch_embedding_is_refused_in_one_line():
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    L = keras.layers
    port = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(10, 4), L.GlobalAveragePooling1D(),
                             L.Dense(2)])
    t = nn.Sequential(nn.Embedding(10, 4, sparse=True))
    with pytest.raises(ModelNotSupported, match=r"'0' \(Embedding\) at position 0: sparse=True") as info:
        compare_models(t, port)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("call", "refused"), [
    (lambda mha, h, mask: mha(h, h, use_causal_mask=True), "use_causal_mask"),
    (lambda mha, h, mask: mha(h, h, attention_mask=mask), "attention_mask"),
    (lambda mha, h, mask: mha(h, h, return_attention_scores=True)[0], "return_attention_scores")],
    ids=["use_causal_mask", "attention_mask", "return_attention_scores"])
def test_a_keras_attention_called_with_a_mask_or_for_its_scores_is_refused_in_one_line(call, refused):
    """The unit runs the layer as ``mha(x, x)``: a call that masks (a causal mask computes another function; 0.2
    apart from the unmasked torch attention at 4 tokens) must be refused, not judged as the plain attention."""
    import keras
    import numpy as np

    from equivalence import ModelNotSupported
    from equivalence.frameworks.keras.walk import walk

    x = keras.Input((5, 4))
    mask = keras.ops.convert_to_tensor(np.tril(np.ones((5, 5), dtype=bool)))
    k = keras.Model(x, call(keras.layers.MultiHeadAttention(2, 2), x, mask))
    with pytest.raises(ModelNotSupported, match=refused) as info:
        walk(k)
    assert str(info.value).startswith("keras layer ") and "\n" not in str(info.value)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_broken_framework_attention_turns_the_suite_red_naming_the_layer(framework, monkeypatch):
    """The meta test: an attention whose heads are shifted by one feature (a wrong head split inside the
    framework) is caught at its layer, in either framework."""
    from equivalence import compare_models

    arch, t, k, _ = _attention_pair(seed=9)
    if framework == "torch":
        from torch import nn

        original = nn.MultiheadAttention.forward

        def shifted(self, query, key, value, **kwargs):
            out, weights = original(self, query, key, value, **kwargs)
            return out.roll(1, dims=-1), weights

        monkeypatch.setattr(nn.MultiheadAttention, "forward", shifted)
    else:
        import keras

        original = keras.layers.MultiHeadAttention._compute_attention

        def shifted(self, query, key, value, *args, **kwargs):
            out, scores = original(self, query, key, value, *args, **kwargs)
            return keras.ops.roll(out, 1, axis=2), scores  # (batch, tokens, heads, d): the heads rotated

        monkeypatch.setattr(keras.layers.MultiHeadAttention, "_compute_attention", shifted)
    assert_red_only_in(compare_models(t, k, x=token_ids(arch)), framework, layer=1)


def test_a_subclassed_keras_port_calling_its_attention_and_ops_agrees():
    """The seed styles: the torch subclass against a Keras subclass built by a call, its activation a
    ``keras.ops`` function."""
    import keras

    from equivalence import assert_equivalent, port_weights

    L = keras.layers

    class Port(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.attn = L.Embedding(10, 8), L.MultiHeadAttention(2, 4)
            self.pool, self.fc = L.GlobalAveragePooling1D(), L.Dense(2)

        def call(self, ids):
            h = self.embed(ids)
            return self.fc(self.pool(keras.ops.relu(self.attn(h, h))))

    k = Port()
    k(np.zeros((1, 5), dtype="int32"))
    t = torch_sequence_model(SequenceArch(10, 8, 5, 2, "relu", 2, "float32", 10))
    port_weights(t, k)
    result = assert_equivalent(t, k, max_examples=3)
    assert [u.activation for u in result.keras_layers] == ["linear", "relu", "linear", "linear"]


SEQUENCE_FACTORY = '''
import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        return self.fc(torch.mean(self.embed(ids), 1))


def build():
    return Classifier()
'''


def test_equivalence_compare_takes_an_embedding_state_dict_and_its_keras_file(tmp_path, capsys, monkeypatch):
    import keras

    from equivalence.cli import EXIT_OK, EXIT_USAGE, main

    L = keras.layers
    port = keras.Sequential([keras.Input((7,), dtype="int32"), L.Embedding(11, 4), L.GlobalAveragePooling1D(),
                             L.Dense(2)])
    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=SEQUENCE_FACTORY,
                                              module="textnets", port=port)
    assert code == EXIT_OK, out
    assert "all 3 layers agree over 3 input batches" in out
    np.save(tmp_path / "ids.npy", np.array([[0, 1, 2, 11, 3, 4, 5]]))  # id 11 of an 11-row table
    code = main(["compare", "state.pt", "port.keras", "--torch-model", "textnets:build", "--input", "ids.npy"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "x holds the id 11 at (0, 3), but the embedding has 11 rows (ids 0 to 10)" in err
    assert len(err.strip().splitlines()) == 1, err


def _prebuilt(*layers_and_shapes):
    """A Sequential of layers built one by one: the model itself never learns its input shape."""
    import keras

    for layer, shape in layers_and_shapes:
        if shape is not None:
            layer.build(shape)
    return keras.Sequential([layer for layer, _ in layers_and_shapes])


@pytest.mark.parametrize(("first", "says"), [
    ("embedding", r"keras.Input\(shape=\(L,\), dtype='int32'\) or call model.build\(\(None, L\)\), L its sequence "
                  "length"),
    ("lstm", r"keras.Input\(shape=\(T, features\)\) or call model.build\(\(None, T, features\)\), T its sequence "
             "length")], ids=["embedding", "lstm"])
def test_a_sequence_model_of_unknown_shape_is_told_the_sequence_form_of_its_input(first, says):
    import keras

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    L = keras.layers
    head = (L.Embedding(10, 4), (None, 5)) if first == "embedding" else (L.LSTM(4, return_sequences=True), (None, 5, 3))
    model = _prebuilt(head, (L.GlobalAveragePooling1D(), None), (L.Dense(2), (None, 4)))
    with pytest.raises(ModelNotSupported, match=f"its input shape is unknown: start it with {says}$"):
        walk(model, "keras")
    unbuilt = keras.Sequential([head[0].__class__.from_config(head[0].get_config()), L.GlobalAveragePooling1D(),
                                L.Dense(2)])
    with pytest.raises(ModelNotSupported, match=f"has no weights yet: start it with {says}, and give it its weights"):
        walk(unbuilt, "keras")
