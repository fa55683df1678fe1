"""A user's transformer encoder and its Keras port: token ids, an Embedding, blocks of self-attention and a
feed-forward network applied to every token, each with its residual Add and LayerNorm (post-norm and pre-norm),
a mean over the tokens and a head. A faithful port passes layer by layer in every dtype, the Linear on the token
sequence judged as a dense layer on N * L rows and the LayerNorm over the features; the traps (LayerNorm epsilon,
an untransposed square kernel, a skip the port forgot) are named at their layer; a framework computing a token-wise
layer across the tokens turns the suite red at that layer; a channels-first conv's output, where torch's Linear and
LayerNorm act along another axis than Keras', stays refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import settings

from tests.helpers import BFLOAT16, assert_ported_pairs_agree
from tests.own.pairs import assert_red_only_in, named_differences
from tests.transformer_models import (
    TransformerArch,
    keras_transformer_model,
    token_ids,
    torch_transformer_model,
    transformer_archs,
)

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip", "torch_adapter", "keras_adapter")  # both or a skip

TRANSFORMER_EXAMPLES = max(4, settings.default.max_examples // 20)
"""Architectures per dtype: each builds two models of up to two blocks."""

ARCH = TransformerArch(vocab=20, heads=2, head_size=4, length=5, ffn=16, activation="relu", pre_norm=False,
                       blocks=1, n_out=3, dtype="float32", seed=0)
"""One post-norm block: embed (0), attn (1), add (2), norm1 (3), fc1 (4), fc2 (5), add (6), norm2 (7), the mean
(8), the head (9)."""


def _ported(arch: TransformerArch):
    from equivalence import port_weights

    t, k = torch_transformer_model(arch), keras_transformer_model(arch)
    port_weights(t, k)
    return t, k


def _kinds(arch: TransformerArch) -> list[str]:
    """The layer kinds a walk of ``arch`` gives, in execution order."""
    attend = ["layernorm", "attention", "add"] if arch.pre_norm else ["attention", "add", "layernorm"]
    feed = ["layernorm", "dense", "dense", "add"] if arch.pre_norm else ["dense", "dense", "add", "layernorm"]
    return ["embedding", *(attend + feed) * arch.blocks, *(["layernorm"] if arch.pre_norm else []), "mean", "dense"]


def _bias_along_tokens(arch: TransformerArch) -> tuple[str, ...]:
    """One ``"bias"`` per attention where Keras adds its biases along the tokens (keras_attention_bias_along_tokens,
    where active: heads of one feature, as many tokens as heads), read from the architecture."""
    from equivalence.frameworks.keras.known_differences import KERAS

    entry = next(d for d in KERAS if d.name == "keras_attention_bias_along_tokens")
    along = arch.head_size == 1 and arch.length == arch.heads > 1
    return ("bias",) * arch.blocks if along and entry.active() else ()


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_ported_transformer_encoder_agrees_layer_by_layer(dtype):
    """Drawn heads, widths, lengths, feed-forward widths and activations, post-norm or pre-norm, one or two blocks,
    dropout on the branches or not, a functional or a subclassed Keras port: every layer within its kind's bound in
    both frameworks; the Linear on the sequence is a dense layer per token (its (L, in) -> (L, out) shapes, its
    in * out + out parameters) on both sides."""
    def check(arch: TransformerArch, t, k, result) -> None:
        kinds = _kinds(arch)
        assert [u.layer_kind.name for u in result.torch_layers] == kinds
        assert [u.layer_kind.name for u in result.keras_layers] == kinds
        assert [u.out_shape for u in result.torch_layers] == [u.out_shape for u in result.keras_layers]
        E, L = arch.dim, arch.length
        token_wise = [u for u in result.torch_layers[:-1] if u.layer_kind.name == "dense"]
        assert [(u.in_shape, u.out_shape) for u in token_wise] == [((L, E), (L, arch.ffn)),
                                                                  ((L, arch.ffn), (L, E))] * arch.blocks
        assert [u.W.size + u.b.size for u in token_wise] == [E * arch.ffn + arch.ffn,
                                                             arch.ffn * E + E] * arch.blocks
        norms = [u for u in result.torch_layers if u.layer_kind.name == "layernorm"]
        assert {(u.in_shape, u.layer_kind.epsilon) for u in norms} == {((L, E), arch.epsilon)}
        counts = sum(u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers)
        assert counts == sum(p.numel() for p in t.parameters()) == k.count_params()

    assert_ported_pairs_agree(transformer_archs(dtype=dtype), ported=_ported, inputs=token_ids,
                              max_examples=TRANSFORMER_EXAMPLES, then=check, named=_bias_along_tokens)


def test_the_post_norm_block_of_the_issue_passes_with_drawn_ids():
    """The block of issue 25 (torch's ``norm1(x + attn(x))``, Keras' ``LayerNormalization()(Add()([x, a]))``),
    refused at ``norm1`` before: equivalent over drawn token ids, the table naming the per-token layers."""
    from equivalence import assert_equivalent

    t, k = _ported(ARCH)
    result = assert_equivalent(t, k, max_examples=5)
    assert [u.name for u in result.torch_layers] == ["embed", "blocks.0.attn", "add", "blocks.0.norm1", "blocks.0.fc1",
                                                     "blocks.0.fc2", "add_1", "blocks.0.norm2", "mean", "head"]
    assert "'blocks.0.fc1' (Linear 8->16 per token, relu)" in [u.label for u in result.torch_layers]
    assert "'head' (Linear 8->3, linear)" in [u.label for u in result.torch_layers]


@pytest.mark.parametrize("direction", ["torch-to-keras", "keras-to-torch"])
def test_port_weights_copies_a_transformer_encoder_either_way(direction):
    """Each side's kernels, attention projections and LayerNorm rows land in the other: the models then agree and
    every weight is the source's."""
    from equivalence import assert_equivalent, port_weights

    arch = replace(ARCH, pre_norm=True, blocks=2, ffn=6)
    t, k = torch_transformer_model(arch), keras_transformer_model(replace(arch, seed=arch.seed + 1))
    source, target = (t, k) if direction == "torch-to-keras" else (k, t)
    port_weights(source, target)
    result = assert_equivalent(t, k, x=token_ids(arch))
    units = dict(zip((u.name for u in result.torch_layers), result.keras_layers))
    assert np.array_equal(units["blocks.1.fc1"].W, t.blocks[1].fc1.weight.detach().numpy().T)
    assert np.array_equal(units["blocks.0.norm2"].W[1], t.blocks[0].norm2.bias.detach().numpy())


# --- the traps, named ----------------------------------------------------------------------------


def test_a_layernorm_epsilon_left_at_the_default_is_named_epsilon_before_any_value():
    """torch's nn.LayerNorm defaults to eps=1e-5, Keras' LayerNormalization to epsilon=1e-3: every LayerNorm of the
    port is named, and port_weights refuses to copy into it."""
    from equivalence import PortMismatch, port_weights

    arch = replace(ARCH, epsilon=1e-5)
    t, faithful = _ported(arch)
    k = keras_transformer_model(replace(arch, keras_epsilon=1e-3))
    k.set_weights(faithful.get_weights())
    differences = named_differences(t, k)
    assert [(d.layer, d.what) for d in differences] == [(3, "epsilon"), (7, "epsilon")]
    assert "got keras 0.001, but torch has 1e-05" in differences[0].message
    assert "torch's default is 1e-5, Keras' 1e-3" in differences[0].message
    with pytest.raises(PortMismatch, match="epsilon"):
        port_weights(t, k)


def test_a_square_feed_forward_kernel_copied_untransposed_is_named_at_its_layer():
    """fc1 is E x E: torch's (out, in) weight copied as Keras' (in, out) kernel fits the shape. Named from the
    weights; each model agrees with the reference of its own weights, and the pair fails at that layer only, orders
    of magnitude outside the bound."""
    from equivalence import compare_models

    arch = replace(ARCH, ffn=8)
    t, k = _ported(arch)
    fc1 = next(layer for layer in k.layers if type(layer).__name__ == "Dense" and layer.activation.__name__ == "relu")
    fc1.kernel.assign(t.blocks[0].fc1.weight.detach().numpy())
    result = compare_models(t, k, x=token_ids(arch))
    assert [(d.layer, d.what) for d in result.differences] == [(4, "untransposed")], result.message()
    assert "layer 4 (torch 'blocks.0.fc1', keras 'dense" in result.differences[0].message
    assert result.failing_pairs() == {"torch vs keras": 4}, result.message()  # each its own reference: agrees
    worst = max(r.ratio for r in result.results if r.layer == 4 and r.pair == ("torch", "keras"))
    assert worst > 1e3, result.message()


def test_a_port_without_the_feed_forward_skip_is_named_residual():
    """The Keras port leaves out the last block's ``x + ffn(x)``: named "residual" before any value (and the depth
    differs by that Add)."""
    from equivalence import PortMismatch, port_weights

    t, k = torch_transformer_model(ARCH), keras_transformer_model(replace(ARCH, skip=False))
    whats = [d.what for d in named_differences(t, k)]
    assert "residual" in whats and whats[0] == "depth", whats
    with pytest.raises(PortMismatch):
        port_weights(t, k)


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("layer", ["dense", "layernorm"])
def test_a_token_wise_layer_mixing_the_tokens_turns_the_suite_red_at_its_layer(framework, layer, monkeypatch):
    """The meta test: a framework whose Linear/Dense or LayerNorm on a sequence reads the next token's features
    (its tokens rolled by one) is caught at that layer (fc1 at 4, norm1 at 3), the other framework nowhere."""
    from equivalence import compare_models

    t, k = _ported(ARCH)
    if framework == "torch":
        from torch import nn

        cls = nn.Linear if layer == "dense" else nn.LayerNorm
        original = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, x: original(self, x.roll(1, dims=1) if x.dim() == 3 else x))
    else:
        import keras

        cls = keras.layers.Dense if layer == "dense" else keras.layers.LayerNormalization
        original = cls.call

        def rolled(self, inputs, *args, **kwargs):
            if len(inputs.shape) == 3:
                inputs = keras.ops.roll(inputs, 1, axis=1)
            return original(self, inputs, *args, **kwargs)

        monkeypatch.setattr(cls, "call", rolled)
    assert_red_only_in(compare_models(t, k, x=token_ids(ARCH)), framework, layer=4 if layer == "dense" else 3)


# --- dropout, and what stays refused -------------------------------------------------------------


def test_dropout_on_the_branch_and_on_the_skip_is_skipped_at_inference():
    """``norm(drop(x) + drop(attn(x)))`` in torch (eval mode) and Keras (inference): the same layers as without
    the Dropouts, and the port agrees."""
    import keras
    import torch
    from torch import nn

    from equivalence import assert_equivalent, port_weights

    E, V, L = 8, 12, 4

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.attn = nn.Embedding(V, E), nn.MultiheadAttention(E, 2, batch_first=True)
            self.drop_skip, self.drop = nn.Dropout(0.2), nn.Dropout(0.1)
            self.norm, self.head = nn.LayerNorm(E, eps=1e-3), nn.Linear(E, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(ids)
            x = self.norm(self.drop_skip(x) + self.drop(self.attn(x, x, x)[0]))
            return self.head(x.mean(1))

    Lk = keras.layers
    ids = keras.Input((L,), dtype="int32")
    x = Lk.Embedding(V, E)(ids)
    a = Lk.Dropout(0.1)(Lk.MultiHeadAttention(2, 4)(x, x))
    x = Lk.LayerNormalization(epsilon=1e-3)(Lk.Add()([Lk.Dropout(0.2)(x), a]))
    k = keras.Model(ids, Lk.Dense(2)(Lk.GlobalAveragePooling1D()(x)))
    t = Block().eval()
    port_weights(t, k)
    result = assert_equivalent(t, k, x=np.random.default_rng(1).integers(0, V, (3, L)))
    kinds = ["embedding", "attention", "add", "layernorm", "mean", "dense"]
    assert [u.layer_kind.name for u in result.torch_layers] == kinds
    assert [u.layer_kind.name for u in result.keras_layers] == kinds


@pytest.mark.parametrize("layer", ["Linear", "LayerNorm"])
def test_a_torch_linear_or_layernorm_on_a_conv1d_output_stays_refused(layer):
    """torch's Conv1d gives (N, C, L): a Linear or a LayerNorm there acts along the positions, Keras' after a
    channels-last Conv1D along the channels. Not a token sequence, so not judged, in one line."""
    import keras
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    after = nn.Linear(6, 6) if layer == "Linear" else nn.LayerNorm(6)
    t = nn.Sequential(nn.Conv1d(3, 4, 1), after, nn.Flatten(), nn.Linear(24, 2))
    x_in = keras.Input((6, 3))
    L = keras.layers
    k = keras.Model(x_in, L.Dense(2)(L.Flatten()(L.Dense(4)(L.Conv1D(4, 1)(x_in)))))
    with pytest.raises(ModelNotSupported, match=rf"^torch layer '1' \({layer}\) at position 1: a {layer} (on|over)") \
            as info:
        compare_models(t, k)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layer", ["Dense", "LayerNormalization"])
def test_a_keras_dense_or_layernorm_on_a_conv1d_output_stays_refused(layer):
    import keras

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    L = keras.layers
    x_in = keras.Input((6, 3))
    after = L.Dense(4, name="after") if layer == "Dense" else L.LayerNormalization(name="after")
    k = keras.Model(x_in, L.Dense(2)(L.Flatten()(after(L.Conv1D(4, 1)(x_in)))))
    with pytest.raises(ModelNotSupported, match=rf"^keras layer 'after' \({layer}\) at position 1: a {layer} "
                                                r"(on|other than)") as info:
        walk(k, "keras")
    assert "\n" not in str(info.value)


def test_a_torch_attention_on_a_conv1d_output_is_refused_even_where_its_shape_fits():
    """torch's Conv1d gives (N, C, L): a batch-first MultiheadAttention there takes the C channels for its tokens and
    the L positions for its features. With C == L it runs, and its (L, C) canonical shape has a sequence's rank, but
    it computes attention across the channels, not the positions a Keras attention after a Conv1D attends over."""
    from torch import nn

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    class ConvThenAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.attention = nn.Conv1d(4, 4, 1), nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            h = self.conv(x)
            return self.attention(h, h, h)[0]

    model = ConvThenAttention().eval()
    import torch

    assert model(torch.ones(2, 4, 4)).shape == (2, 4, 4)  # it runs: the shape fits
    with pytest.raises(ModelNotSupported, match=r"^torch layer 'attention' \(MultiheadAttention\) at position 1: a "
                                                r"MultiheadAttention on a conv's or pooling's channels-first") as info:
        walk(model, "torch", input_shape=(4, 4))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_softmax_over_the_tokens_is_refused_not_read_as_one_over_the_features(framework):
    """On a (batch, tokens, features) sequence a softmax over axis 1 normalises across the tokens; the activation
    tables read axis 1 of a 2-D tensor as the last, so it is refused here in one line (over -1 it is judged)."""
    import keras
    import torch
    from torch import nn

    from equivalence import ModelNotSupported
    from equivalence.own import walk

    if framework == "torch":
        class TokenSoftmax(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.proj, self.head = nn.Embedding(10, 3), nn.Linear(3, 3), nn.Linear(3, 2)

            def forward(self, ids):
                return self.head(torch.softmax(self.proj(self.embed(ids)), dim=1).mean(1))

        with pytest.raises(ModelNotSupported, match=r"a softmax over dim 1 of a 3-D tensor .*over the features"):
            walk(TokenSoftmax(), "torch", input_shape=(5,))
        return
    L = keras.layers
    ids = keras.Input((5,), dtype="int32")
    h = L.Softmax(axis=1, name="sm")(L.Dense(3)(L.Embedding(10, 3)(ids)))
    with pytest.raises(ModelNotSupported, match=r"^keras layer 'sm' \(Softmax\) at position 2: a softmax over axis 1 "
                                                r"of a 3-D tensor"):
        walk(keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(h))), "keras")
