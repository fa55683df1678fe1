"""Check a user's own pair of models: ``assert_equivalent(torch_model, keras_model)``.

Nothing here writes the user's weights (``port_weights`` alone does, on purpose). Each model
is walked into dense units in execution order (``equivalence.frameworks.torch.walk``,
``equivalence.frameworks.keras.walk``); then, attributes before values:

1. the structure is compared layer by layer: depth, shapes, dtype, bias, activation;
2. the weights are compared across the pair through the canonical layout, exactly (a port copies
   them); a Keras kernel equal to the torch weight *untransposed* is named as such;
3. every layer of each model is judged against the float64 reference of its own weights, and the
   two against each other, fed the same inputs (``equivalence.core.compare``: the error model).

Inputs are the user's, or drawn by hypothesis (``equivalence.core.strategies.model_inputs``); a
failing input shrinks and the message says how to rebuild it.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from equivalence.core.adapter import entry_for
from equivalence.core.attention import SelfAttention
from equivalence.core.check import reference_inputs
from equivalence.core.compare import Comparison, LayerResult, compare_arrays, compare_layers
from equivalence.core.dtypes import EPSILON, numpy_dtype
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.folded import ChannelAffine, FoldedConv, FoldedDense
from equivalence.core.kinds import DENSE
from equivalence.core.layout import LayerWeights
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.recurrent import Recurrent
from equivalence.core.reference import layerwise_reference
from equivalence.core.residual import Residual
from equivalence.core.spatial import Conv, Pool
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.strategies import MAX_BATCH, MODEL_INPUT_SCALES
from equivalence.core.tolerance import forward_bound
from equivalence.core.tolerance import framework_of as framework_label
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.registry import entry, get_adapter
from equivalence.own_folded import fold_norms, folded_pair, folded_weight_differences
from equivalence.own_recurrent import converted_gate_order, recurrent_differences, takes_sequences
from equivalence.own_residual import residual_differences
from equivalence.traps import layout_traps, padding_row

__all__ = ["Difference", "ModelComparison", "ModelNotSupported", "PortMismatch", "assert_equivalent",
           "compare_models", "port_weights"]

DEFAULT_EXAMPLES = 100


class PortMismatch(ValueError):
    """``port_weights`` refused a pair whose layers do not match; names the first mismatch."""


@dataclass(frozen=True)
class Difference:
    """One way the two models differ before any value is computed (structure or weights)."""

    layer: int | None
    what: str  # "depth" | "shape" | "dtype" | "bias" | "activation" | "untransposed" | "kernel" | "bias values"
    # | "layer kind" | "kernel size" | "stride" | "padding" | "channels" | "pooling" | "kernel layout" | "flatten order"
    # | "row layout" | "padding_idx" | "mask" | "head split" | "heads" | "residual"
    message: str


# --- walking ----------------------------------------------------------------------------------

def framework_of(model: Any) -> str | None:
    """``"torch"``, ``"keras"`` or ``"onnx"`` (a ``ModelProto``) from the model's classes, without importing any; a
    model the suite's own readers loaded says its form (``equivalence_form``: ``"tflite"``)."""
    form = getattr(type(model), "equivalence_form", None)
    if form is not None:
        return form
    for cls in type(model).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root == "tf_keras":  # Keras 2: the keras framework itself under TF_USE_LEGACY_KERAS=1, else a form
            from equivalence.frameworks.builtin import legacy_keras_requested

            return "keras" if legacy_keras_requested() else "keras2"
        if root in ("torch", "keras", "onnx"):
            return root
        if root == "tensorflow" and hasattr(model, "signatures"):
            return "saved_model"  # what tf.saved_model.load returns
    return None


def _walker(framework: str, function: str = "") -> Any:
    module_name, _, name = entry(framework).walker.partition(":")
    return getattr(importlib.import_module(module_name), function or name, None)


def declared_input_shape(model: Any, framework: str) -> tuple[int, ...] | None:
    """One sample's input shape as ``model`` declares it (its walker's ``input_shape``), or None."""
    shape_of = _walker(framework, "input_shape") if entry(framework).walker else None
    return None if shape_of is None else shape_of(model)


GRAPH_READERS = {
    "onnx": ("equivalence.frameworks.onnx_graph", "pip install 'equivalence[ort]' (onnx and onnxruntime)"),
    "tflite": ("equivalence.frameworks.litert_graph", "pip install 'equivalence[runtimes]' (ai-edge-litert)"),
    "saved_model": ("equivalence.frameworks.keras.saved_model_graph", "pip install 'equivalence[keras]' (TensorFlow)"),
    "keras2": ("equivalence.frameworks.keras.legacy", "pip install --no-deps tf-keras (Keras 2; make converters "
               "installs it)"),
}
"""Model forms read by a module of their own, not through a framework's registry entry (graphs, and Keras 2 models
beside Keras 3): the reader module and its install hint."""
GRAPH_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".h5": "keras2"}
"""The files of those forms, by suffix."""


def graph_reader(form: str) -> Any:
    """The reader module of a graph form (``walk``, ``load_model``); ``ImportError`` with the install hint."""
    module_name, hint = GRAPH_READERS[form]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"a {form} model cannot be read here ({exc}): {hint}") from None


def load_graph(path: str | os.PathLike) -> Any:
    """The model in a ``.onnx`` or ``.tflite`` file or a SavedModel folder; ``ValueError`` with one line naming the
    file and the format."""
    form = "saved_model" if Path(path).is_dir() else GRAPH_SUFFIXES.get(Path(path).suffix)
    if form is None:
        raise ValueError(f"{path}: got a {Path(path).suffix or 'suffix-less'} file, but a model given as a path "
                         f"should be one of {', '.join(GRAPH_SUFFIXES)} or a SavedModel folder (load other models "
                         "with their framework)")
    try:
        return graph_reader(form).load_model(str(path))
    except (ValueError, ImportError) as exc:  # a bad file; or its reader's framework missing: the install hint
        raise ValueError(f"{path}: {exc}") from None


def walk(model: Any, framework: str | None, *, input_width: int | None = None,
         input_shape: tuple[int, ...] | None = None) -> list[DenseUnit]:
    """The model's units; ``ModelNotSupported`` when it cannot be judged. ``framework``: the form expected (None:
    any form the suite reads). ``input_shape``: one sample's canonical (channels-last) shape, which a model with
    conv or pooling layers needs walked."""
    found = framework_of(model)
    if found is not None and framework is not None and found != framework:
        raise ModelNotSupported(framework, "model", type(model).__name__, None,
                                f"is a {found} model where a {framework} model was expected (arguments swapped?)")
    framework = framework or found
    if framework is None:
        raise ModelNotSupported("model", "model", type(model).__name__, None,
                                "is neither a torch, a Keras nor an ONNX model (nn.Module, torch.export program, "
                                "keras.Model, onnx.ModelProto)")
    if framework in GRAPH_READERS:
        try:
            reader = graph_reader(framework)
        except ImportError as exc:
            raise ModelNotSupported(framework, "model", type(model).__name__, None, str(exc)) from None
        return reader.walk(model)
    get_adapter(framework)  # FrameworkUnavailable with the install hint when it is missing
    walker = entry(framework).walker
    if walker is None:
        raise ModelNotSupported(framework, "model", type(model).__name__, None,
                                f"{framework} has no walker for a user's own model in its registry entry")
    walk_model = _walker(framework)
    if framework == "keras":
        return walk_model(model, input_width=input_width)
    return walk_model(model, input_shape=input_shape) if input_shape is not None else walk_model(model)


def loaded(model: Any) -> Any:
    """``model``, or the model in the file or SavedModel folder it names (``load_graph``)."""
    return load_graph(model) if isinstance(model, (str, os.PathLike)) else model


def walk_pair(torch_model: Any, keras_model: Any) -> tuple[list[DenseUnit], list[DenseUnit]]:
    """Both models' units. A torch model comes first and its Keras port second; with an ONNX, ``.tflite`` or
    SavedModel graph on either side, each side is read as the form it is. A Keras model declaring a spatial input
    (``keras.Input(shape=(H, W, C))``) gives the torch walk its shape, channels-last (a torch model takes the same
    input as N, C, H, W)."""
    torch_model, keras_model = loaded(torch_model), loaded(keras_model)
    forms = (framework_of(torch_model), framework_of(keras_model))
    if forms[1] in GRAPH_READERS and forms[0] not in GRAPH_READERS:  # the converted side first: its refusal names
        k_units = walk(keras_model, forms[1])                          # the converter's op, not a guess at the other
        return walk(torch_model, forms[0], input_width=k_units[0].shape[0], input_shape=_spatial(k_units)), k_units
    if set(forms) & set(GRAPH_READERS):
        t_units = walk(torch_model, forms[0])
        return t_units, walk(keras_model, forms[1], input_width=t_units[0].shape[0], input_shape=_spatial(t_units))
    get_adapter("keras")
    shape = declared_input_shape(keras_model, "keras") if forms[1] == "keras" else None
    t_units = walk(torch_model, "torch", input_shape=shape)
    return t_units, walk(keras_model, "keras", input_width=t_units[0].shape[0])


def _spatial(units: Sequence[DenseUnit]) -> tuple[int, ...] | None:
    """A graph's canonical input shape when spatial (its conv, pooling or flatten needs the other side's walk to
    know it) or token ids (an Embedding's sequence length, which a torch model does not declare), else None."""
    shape = input_shape_of(units)
    return shape if len(shape) > 1 or getattr(units[0].layer_kind, "integer_input", False) else None


def labels(first: Sequence[DenseUnit], second: Sequence[DenseUnit]) -> tuple[str, str]:
    """The outputs' labels of the two sides: the framework that runs each (``ort`` for an ONNX graph, so its named
    differences apply); the second of two alike is ``ort@2`` (``tolerance.framework_of`` reads ``ort``)."""
    a, b = first[0].framework, second[0].framework
    return (a, f"{b}@2") if a == b else (a, b)


def input_shape_of(units: Sequence[DenseUnit]) -> tuple[int, ...]:
    """One sample's canonical input shape of a walked model: ``(width,)`` for a dense one."""
    return units[0].in_shape or (units[0].shape[0],)


# --- structure and weights ----------------------------------------------------------------------

def _where(i: int, t: DenseUnit, k: DenseUnit, a: str = "torch", b: str = "keras") -> str:
    return f"layer {i} ({a} {t.name!r}, {b} {k.name!r})"


def _layout_note(a: str, b: str, t: DenseUnit, k: DenseUnit) -> str:
    if (a, b) == ("torch", "keras"):
        return "torch Linear stores (out, in), Keras Dense (in, out)"
    return f"{a} {t.kind} stores {t.native.shape}, {b} {k.kind} {k.native.shape}"


def _first_diff(got: np.ndarray, expected: np.ndarray,
                differ: np.ndarray) -> tuple[int, float, tuple[int, ...], float, float]:
    g, e = got.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.where(differ, np.abs(g - e), 0.0)
    flat = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    index = tuple(int(i) for i in np.unravel_index(flat, g.shape))
    return int(np.count_nonzero(differ)), float(diff.flat[flat]), index, float(g[index]), float(e[index])


def _beyond(got: np.ndarray, expected: np.ndarray, dtype: str, ulps: int) -> np.ndarray:
    """Where ``got`` differs from ``expected`` by more than ``ulps`` units in the last place of ``dtype``."""
    if ulps == 0:
        return ~((got == expected) | (np.isnan(got.astype(np.float64)) & np.isnan(expected.astype(np.float64))))
    from equivalence.guard.golden import ulp_distance

    return ulp_distance(got, expected, dtype) > ulps


def structural_differences(t_units: Sequence[DenseUnit], k_units: Sequence[DenseUnit],
                           *, weight_ulps: int = 0) -> list[Difference]:
    """Every difference in structure and weights, layer by layer (empty for a faithful port); weights may
    differ by ``weight_ulps`` units in the last place of their dtype."""
    out: list[Difference] = []
    a, b = labels(t_units, k_units)
    weight = "weight.T" if a == "torch" else "kernel"
    if len(t_units) != len(k_units):
        out.append(Difference(None, "depth", f"depth: got {len(k_units)} dense layers in {b} "
                              f"({', '.join(repr(u.name) for u in k_units)}), but {a} has {len(t_units)} "
                              f"({', '.join(repr(u.name) for u in t_units)}){_folded_norm(t_units, k_units, a, b)}"))
    out += [Difference(i, "residual", message) for i, message in residual_differences(t_units, k_units, a, b)]
    for i, (t, k) in enumerate(zip(t_units, k_units)):
        where = _where(i, t, k, a, b)
        if t.layer_kind is not DENSE or k.layer_kind is not DENSE:
            kind_differences = _kind_differences(where, t, k)
            out += [Difference(i, what, message) for what, message in kind_differences]
            if kind_differences or t.W.size == 0:
                continue
            named = layout_traps(where, t, k, a, b) or padding_row(where, t, k)
            out += [Difference(i, what, message) for what, message in named]
            if named:
                continue
        if isinstance(t.layer_kind, Recurrent):  # gate order, one LSTM bias of two, ...; an ONNX node's gate order
            named = recurrent_differences(where, t, k) if (a, b) == ("torch", "keras") else \
                converted_gate_order(where, t, k)
            out += [Difference(i, what, message) for what, message in named]
            if named:
                continue
        untransposed = k.native.shape == t.native.shape and k.native.dtype == t.native.dtype \
            and np.array_equal(k.native, t.native, equal_nan=True) and not np.array_equal(k.W, t.W, equal_nan=True)
        flatten_order = _flatten_order(t, k)
        kernel_layout = t.layer_kind is not DENSE and k.native.size == t.native.size \
            and not np.array_equal(k.W, t.W, equal_nan=True) \
            and np.array_equal(k.native, t.native.reshape(k.native.shape), equal_nan=True)
        if flatten_order:
            out.append(Difference(i, "flatten order", f"{where}: flatten order: {flatten_order}"))
            continue
        if kernel_layout:
            out.append(Difference(i, "kernel layout", f"{where}: kernel layout: the keras kernel {k.native.shape} "
                                  f"is the torch weight {t.native.shape} reshaped, but should be transposed "
                                  "(torch (out, in, *kernel) -> Keras (*kernel, in, out))"))
            continue
        if untransposed:
            out.append(Difference(i, "untransposed", f"{where}: the {b} kernel {k.native.shape} equals the {a} "
                                  f"weight untransposed, but should be its transpose ({_layout_note(a, b, t, k)})"))
        elif k.shape != t.shape:
            out.append(Difference(i, "shape", f"{where}: shape: got {b} {k.shape[0]}->{k.shape[1]}, but {a} is "
                                  f"{t.shape[0]}->{t.shape[1]} (layers missing or in a different order?)"))
        if k.dtype != t.dtype:
            out.append(Difference(i, "dtype", f"{where}: dtype: got {b} {k.dtype}, but {a} computes in {t.dtype}"))
        present = k.b if t.b is None else t.b
        if (k.b is None) != (t.b is None) and np.any(present != 0):  # converters drop an all-zero bias: same layer
            missing, has = (b, a) if k.b is None else (a, b)
            out.append(Difference(i, "bias", f"{where}: bias: got none in {missing}, but {has} has one "
                                  f"(use_bias / bias=)"))
        if k.activation != t.activation:
            out.append(Difference(i, "activation", f"{where}: activation: got {k.activation} in {b} "
                                  f"({k.activation_source}), but {a} has {t.activation} ({t.activation_source})"))
        if untransposed or k.shape != t.shape or k.dtype != t.dtype:
            continue
        narrow = stored_narrower(a, t.dtype) or stored_narrower(b, t.dtype)
        if folded_pair(t, k):  # a BatchNorm a converter folded: its parameters within the fold's rounding
            out += [Difference(i, what, message)
                    for what, message in folded_weight_differences(where, t, k, a, b, narrow)]
            continue
        tolerance = f" by more than {_ulps(weight_ulps)}" if weight_ulps else ""
        if narrow is not None:  # one side stores its weights narrower: both compared as it stores them
            t, k = _rounded(t, narrow), _rounded(k, narrow)
            tolerance += f" (both rounded to {narrow}, as {a if stored_narrower(a, t.dtype) else b} stores them)"
        kernel_off = _beyond(k.W, t.W, t.dtype, weight_ulps)
        if kernel_off.any():
            n, d, idx, kv, tv = _first_diff(k.W, t.W, kernel_off)
            out.append(Difference(i, "kernel", f"{where}: kernel: {n} / {k.W.size} elements differ from the {a} "
                                  f"{weight}{tolerance}; greatest abs diff {d:.3g} at index {idx} ({b} {kv!r}, "
                                  f"{a} {tv!r})"))
        bias_off = None if k.b is None or t.b is None else _beyond(k.b, t.b, t.dtype, weight_ulps)
        if bias_off is not None and bias_off.any():
            n, d, idx, kv, tv = _first_diff(k.b, t.b, bias_off)
            out.append(Difference(i, "bias values", f"{where}: bias: {n} / {k.b.size} elements differ"
                                  f"{tolerance}; greatest abs diff {d:.3g} at index {idx} ({b} {kv!r}, "
                                  f"{a} {tv!r})"))
    return out


def _folded_norm(t_units: Sequence[DenseUnit], k_units: Sequence[DenseUnit], a: str, b: str) -> str:
    """Why two models differ in depth when one has a BatchNorm right after a conv and the other no BatchNorm: a
    converter folded it into the conv's weights (torch.onnx.export does in eval mode); else empty."""
    for (side, units), (other, others) in (((a, t_units), (b, k_units)), ((b, k_units), (a, t_units))):
        folded = [u for before, u in zip(units, units[1:]) if isinstance(before.layer_kind, Conv)
                  and isinstance(u.layer_kind, BatchNorm)]
        if folded and not any(isinstance(u.layer_kind, BatchNorm) for u in others):
            return (f"; {side} {folded[0].name!r} is a BatchNorm after a conv, which {other} does not have: a "
                    "converter folds it into the conv's weights (torch.onnx.export does in eval mode unless "
                    "do_constant_folding=False), which the suite matches with a conv of the same configuration in a "
                    "converter's graph: none lines up here")
    return ""


def stored_narrower(label: str, dtype: str) -> str | None:
    """The dtype the framework behind ``label`` stores its weights in (its registry entry's ``weights_dtype``) when
    narrower than ``dtype``, the one its layers compute in (``litert_fp16w``: float16 weights), else None."""
    found = entry_for(framework_label(label))
    stored = None if found is None else found.weights_dtype
    return stored if stored is not None and EPSILON[stored] > EPSILON[dtype] else None


def _rounded(unit: DenseUnit, dtype: str) -> DenseUnit:
    """``unit`` with its weights rounded to ``dtype`` (to nearest) and back: what a framework storing them so holds."""
    def narrow(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.astype(numpy_dtype(dtype)).astype(a.dtype)

    return replace(unit, W=narrow(unit.W), b=narrow(unit.b))


_KIND_FIELDS = {Conv: (("kernel", "kernel size"), ("strides", "stride"), ("padding", "padding"),
                       ("in_channels", "channels"), ("out_channels", "channels")),
                Pool: (("op", "pooling"), ("size", "kernel size"), ("strides", "stride"), ("padding", "padding"),
                       ("count_include_pad", "padding")),
                LayerNorm: (("features", "shape"), ("epsilon", "epsilon")),
                BatchNorm: (("features", "channels"), ("batch_statistics", "statistics"), ("epsilon", "epsilon"),
                            ("momentum", "momentum")),
                Embedding: (("rows", "shape"), ("dim", "shape"), ("length", "shape"), ("mask_zero", "mask")),
                SequenceMean: (("length", "shape"), ("features", "shape")),
                SelfAttention: (("embed_dim", "shape"), ("heads", "heads"), ("head_dim", "heads"),
                                ("length", "shape"), ("bias_along", "bias")),
                Recurrent: (("cell", "layer kind"), ("features", "shape"), ("units", "shape"), ("steps", "shape"),
                            ("return_sequences", "return_sequences"), ("reset_after", "reset_after"),
                            ("activation", "activation"), ("recurrent_activation", "activation")),
                Residual: (("features", "shape"),)}
_KIND_FIELDS.update({FoldedConv: _KIND_FIELDS[Conv], ChannelAffine: (("features", "channels"),),
                     FoldedDense: (("n_in", "shape"), ("n_out", "shape"))})
NOT_RECORDED = ("momentum",)
"""Fields a converted file may not record (None: a SavedModel's BatchNorm, inference only, has no momentum): not
compared then."""
COMPUTED_OTHERWISE = ("bias",)
"""Differences of a framework computing the same weights otherwise (Keras' attention bias added along the tokens):
``port_weights`` still copies them (their layout is the same), the comparison names the difference."""
_HINTS = {
    "padding": " (TensorFlow's 'same' pads the odd pad at the end, torch's padding=p both ends: use an explicit "
               "ZeroPadding in Keras or F.pad in torch)",
    "count_include_pad": " (torch's AvgPool counts the zero padding in each average by default "
                         "(count_include_pad=True); Keras 'same' averages the inputs only)",
    "epsilon": " (torch's default is 1e-5, Keras' 1e-3: pass eps= or epsilon= explicitly)",
    "momentum": " (in Keras' meaning, the weight of the old moving average: torch's momentum=m is Keras' 1 - m, so "
                "torch's default 0.1 is Keras' 0.9, and Keras' default 0.99 is torch's 0.01)",
    "mask_zero": " (Keras' mask_zero=True makes the layers after the Embedding skip id 0: GlobalAveragePooling1D "
                 "averages the other tokens only, attention ignores them; torch's padding_idx only keeps that row at "
                 "zero, so x.mean(1) counts the padding: use mask_zero=False, or mask in torch too)",
    "heads": " (torch's nn.MultiheadAttention(E, num_heads) has head_dim E // num_heads; Keras' "
             "MultiHeadAttention(num_heads, key_dim) takes key_dim per head: key_dim = E // num_heads)",
    "head_dim": " (Keras' key_dim is the size of each head, not the embedding: key_dim = E // num_heads)",
    "bias_along": " (Keras on TensorFlow adds a (num_heads, 1) query, key and value bias along the tokens when "
                  "key_dim is 1 and the sequence has num_heads tokens: known difference "
                  "keras_attention_bias_along_tokens; another sequence length, key_dim or Keras backend avoids it)",
    "return_sequences": " (True: the whole sequence (N, T, units); in torch out, _ = lstm(x) is the sequence, "
                        "out[:, -1] or h_n[-1] its last step)",
    "reset_after": " (torch's GRU applies its reset gate after the recurrent product, as Keras' reset_after=True, "
                   "Keras 3's default; reset_after=False computes another function)",
    "activation": " (torch's LSTM and GRU compute with tanh, their gates with sigmoid)",
    "recurrent_activation": " (torch's LSTM and GRU compute with tanh, their gates with sigmoid)",
    "batch_statistics": " (True: torch is in training mode and normalises by each batch's own statistics; call "
                        "model.eval() to use the moving ones, as Keras does at inference)",
}


def _kind_differences(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    """Configuration differences of two layers (conv, pooling, flatten) before any value: kernel size, stride,
    padding (TF's ``"same"`` pads the odd pad at the end, torch's ``padding=p`` both ends; an average over
    padding counts it in torch by default, never in Keras), channels, pooling op."""
    tk, kk = t.layer_kind, k.layer_kind
    if type(tk) is not type(kk):
        return [("layer kind", f"{where}: layer kind: got {k.framework} {k.kind} ({kk.name}), but {t.framework} has "
                 f"{t.kind} ({tk.name}) (layers missing or in a different order?)")]
    out: dict[str, str] = {}
    for attr, what in _KIND_FIELDS.get(type(tk), ()):
        got, expected = getattr(kk, attr), getattr(tk, attr)
        if got != expected and what not in out and not (attr in NOT_RECORDED and None in (got, expected)):
            if isinstance(got, bool):
                got, expected = f"{attr}={got}", f"{attr}={expected}"
            out[what] = f"{where}: {what}: got {k.framework} {got}, but {t.framework} has {expected}" \
                f"{_HINTS.get(attr, '')}"
    if not out and t.shape != k.shape:
        out["shape"] = f"{where}: shape: got {k.framework} {k.in_shape}->{k.out_shape}, but {t.framework} " \
            f"{t.in_shape}->{t.out_shape}"
    return list(out.items())


def _flatten_order(t: DenseUnit, k: DenseUnit) -> str | None:
    """Why a dense layer after a Flatten has its keras rows in the other flatten order than the Keras model's Flatten
    gives: the torch rows unpermuted (C,H,W order) where the Flatten gives H,W,C; or permuted to H,W,C where a
    ``Flatten()`` of a channels-first tensor keeps C,H,W (its native kernel holds the canonical rows); else None."""
    unpermuted = t.native.T
    if t.layer_kind is not DENSE or unpermuted.shape != k.W.shape or np.array_equal(unpermuted, t.W):
        return None
    if np.array_equal(k.W, unpermuted.astype(k.W.dtype), equal_nan=True):
        return ("the keras kernel's rows are the torch weight.T in torch's C,H,W order, but should be permuted to "
                "Keras' channels-last H,W,C flatten order (torch flattens N,C,H,W; a Keras Flatten of channels-last "
                "tensors, or Flatten(data_format='channels_first'), gives H,W,C; port_weights permutes them)")
    if k.native.shape == t.W.shape and not np.array_equal(k.W, t.W.astype(k.W.dtype), equal_nan=True) \
            and np.array_equal(k.native, t.W.astype(k.native.dtype), equal_nan=True):
        return ("the keras kernel's rows are the torch weight.T permuted to H,W,C, but this Keras Flatten() of a "
                "channels-first tensor keeps torch's C,H,W order: copy weight.T unpermuted (port_weights does)")
    return None


# --- values -------------------------------------------------------------------------------------

def _spec(units: Sequence[DenseUnit]) -> StackSpec | ChainSpec:
    if all(u.layer_kind is DENSE for u in units):
        return StackSpec(units[0].shape[0], tuple(u.shape[1] for u in units), tuple(u.activation for u in units),
                         bias=all(u.b is not None for u in units), dtype=units[0].dtype)
    return ChainSpec(input_shape_of(units), tuple(u.layer_kind for u in units), tuple(u.activation for u in units),
                     units[0].dtype)


def _weights(units: Sequence[DenseUnit]) -> list[LayerWeights]:
    return [LayerWeights(u.W, u.b) for u in units]


def numeric_results(t_units: Sequence[DenseUnit], k_units: Sequence[DenseUnit], x: np.ndarray,
                    *, same: bool) -> tuple[LayerResult, ...]:
    """Every layer: torch vs its reference, keras vs its reference, torch vs keras.

    ``same``: structure and weights agree, so one reference serves both (the usual case). Otherwise
    each model gets the reference of its own weights, and each keras layer whose shape and dtype
    match is also fed the torch reference's input and compared with torch's output.
    """
    a, b = labels(t_units, k_units)
    spec_t, w_t = _spec(t_units), _weights(t_units)
    traces_t = layerwise_reference(spec_t, w_t, x)
    inputs_t = reference_inputs(spec_t, traces_t)
    outs_t = [u.run(xi) for u, xi in zip(t_units, inputs_t)]
    if same:
        outs_k = [u.run(xi) for u, xi in zip(k_units, inputs_t)]
        return compare_layers(spec_t, w_t, x, {a: outs_t, b: outs_k}, reference=traces_t).results
    results = list(compare_layers(spec_t, w_t, x, {a: outs_t}, reference=traces_t).results)
    if k_units[0].shape[0] != t_units[0].shape[0]:
        return tuple(results)  # the keras model takes other inputs: its layer-0 shape is the difference named
    spec_k, w_k = _spec(k_units), _weights(k_units)
    traces_k = layerwise_reference(spec_k, w_k, x)
    outs_k = [u.run(xi) for u, xi in zip(k_units, reference_inputs(spec_k, traces_k))]
    results += compare_layers(spec_k, w_k, x, {b: outs_k}, reference=traces_k).results
    for i, (t, k) in enumerate(zip(t_units, k_units)):
        if t.shape != k.shape or t.dtype != k.dtype or type(t.layer_kind) is not type(k.layer_kind) \
                or input_shape_of([t]) != input_shape_of([k]):  # a graph reader's dense unit leaves in_shape empty
            continue
        bound = forward_bound(traces_t[i], LayerWeights(t.W, t.b), t.activation, t.dtype,
                              {a: None, b: None}, kind=t.layer_kind)
        results.append(compare_arrays(outs_t[i], k.run(inputs_t[i]), bound=bound.between(a, b),
                                      pair=(a, b), layer=i))
    return tuple(results)


# --- the result ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelComparison(Comparison):
    """A ``Comparison`` of two user models: per-layer results (the worst over every input tried), the
    differences in structure and weights, the layers' names, and how to rebuild a failing input."""

    differences: tuple[Difference, ...] = ()
    torch_layers: tuple[DenseUnit, ...] = ()
    keras_layers: tuple[DenseUnit, ...] = ()
    examples: int = 0
    reproduction: str = ""
    weight_ulps: int = 0

    @property
    def passed(self) -> bool:
        return not self.differences and not self.failures

    @property
    def labels(self) -> tuple[str, str]:
        """The two sides' labels: ``("torch", "keras")``, ``("torch", "ort")`` for a torch model and its ONNX export."""
        return labels(self.torch_layers, self.keras_layers)

    def _names(self, layer: int) -> str:
        names = [f"{fw} {units[layer].name!r}" for fw, units in zip(self.labels, (self.torch_layers,
                                                                                   self.keras_layers))
                 if layer < len(units)]
        return ", ".join(names)

    def matched(self) -> list[str]:
        """What was matched with what, layer by layer: each side's op or layer kind and where its activation came
        from (a converter's fused ``Gemm`` against a ``Linear``, ``Sigmoid+Mul`` nodes against ``SiLU``)."""
        a, b = self.labels
        return [f"layer {i}: {a} {t.name!r} ({t.kind}; {t.activation}: {t.activation_source}) = {b} {k.name!r} "
                f"({k.kind}; {k.activation}: {k.activation_source})"
                for i, (t, k) in enumerate(zip(self.torch_layers, self.keras_layers))]

    def message(self) -> str:
        inputs = _batches(self.examples)
        if self.passed:
            n = len(self.torch_layers)
            layers = "its one layer agrees" if n == 1 else "both layers agree" if n == 2 else f"all {n} layers agree"
            within = f", weights within {_ulps(self.weight_ulps)}" if self.weight_ulps else ""
            return f"{self.case_id}: {layers} over {inputs} (worst error/bound ratio {self.worst_ratio:.3g}{within})"
        n, m = len(self.differences), len(self.failures)
        lines = [f"{self.case_id}: {n} difference{'s' if n != 1 else ''} in structure or weights, "
                 f"{m} layer comparison{'s' if m != 1 else ''} beyond the error model ({inputs})"]
        lines += [f"  {d.message}" for d in self.differences]
        seen: set[tuple[str, str]] = set()
        for r in sorted(self.failures, key=lambda r: (r.layer, r.pair)):
            if r.pair not in seen:  # each pair's first diverging layer
                seen.add(r.pair)
                lines.append(f"  {r.failure_line()} [{self._names(r.layer)}]")
        if self.reproduction:
            lines.append(self.reproduction)
        return "\n".join(lines)

    def table(self) -> str:
        """The per-layer table (Markdown): names, shapes, activations, dtype, weights, worst ratio per pair."""
        worst: dict[tuple[tuple[str, str], int], float] = {}
        for r in self.results:
            key = (r.pair, r.layer)
            worst[key] = max(worst.get(key, 0.0), r.ratio)
        flagged = {d.layer for d in self.differences}
        a, b = self.labels
        pairs = [(a, "reference"), (b, "reference"), (a, b)]
        lines = [f"### {self.case_id}", "",
                 f"| layer | {a} | {b} | shape | activation | dtype | structure and weights | "
                 f"{a} vs reference | {b} vs reference | {a} vs {b} |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for i in range(max(len(self.torch_layers), len(self.keras_layers))):
            t = self.torch_layers[i] if i < len(self.torch_layers) else None
            k = self.keras_layers[i] if i < len(self.keras_layers) else None
            both = [u for u in (t, k) if u is not None]
            cell = lambda f, both=both: " / ".join(dict.fromkeys(str(f(u)) for u in both))  # noqa: E731
            ratios = [f"{worst[(p, i)]:.3g}" if (p, i) in worst else "-" for p in pairs]
            lines.append(f"| {i} | {t.name if t else '-'} | {k.name if k else '-'} | "
                         f"{cell(lambda u: f'{u.shape[0]}->{u.shape[1]}')} | {cell(lambda u: u.activation)} | "
                         f"{cell(lambda u: u.dtype)} | {'differ' if i in flagged else 'same'} | {' | '.join(ratios)} |")
        verdict = "PASS" if self.passed else "FAIL"
        lines += ["", f"{verdict} over {_batches(self.examples)}, worst error/bound ratio {self.worst_ratio:.3g}",
                  ""]
        return "\n".join(lines)

    def parameters(self) -> str:
        """The parameter counts (kernel and bias) of both models, per dense layer and in total."""
        def count(units: Sequence[DenseUnit]) -> str:
            sizes = [(u.name, u.W.size + (0 if u.b is None else u.b.size)) for u in units]
            return f"{sum(n for _, n in sizes):,} (" + ", ".join(f"{name!r} {n:,}" for name, n in sizes) + ")"

        a, b = self.labels
        return f"parameters: {a} {count(self.torch_layers)}, {b} {count(self.keras_layers)}"


def _batches(n: int) -> str:
    return f"{n} input batch{'es' if n != 1 else ''}"


def _ulps(n: int) -> str:
    return f"{n} ulp{'s' if n != 1 else ''}"


def _case_id(torch_model: Any, keras_model: Any, a: str = "torch", b: str = "keras") -> str:
    keras_name = getattr(keras_model, "name", None) if b == "keras" else None
    return f"{a} {type(torch_model).__name__} vs {b} {type(keras_model).__name__}" + \
        (f" {keras_name!r}" if keras_name else "")


def _spatial_input(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` in the torch layout ``(N, C, *spatial)``, channels-last for the suite (one sample: ``(C, *spatial)``
    with a batch of one added)."""
    x = np.asarray(x)
    torch_shape = (shape[-1], *shape[:-1])
    if x.shape == torch_shape:
        x = x[None]
    if x.shape[1:] != torch_shape or x.shape[0] < 1:
        raise ValueError(f"x has shape {x.shape}, but should be (batch, {', '.join(map(str, torch_shape))}): the "
                         "torch layout N, C, ... (the Keras model's channels-last input is made from it)")
    return _as_input(np.moveaxis(x, 1, -1).reshape(x.shape[0], -1), math.prod(shape)).reshape(x.shape[0], *shape)


def _sequence_input(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` batch-first ``(N, T, features)``, as a torch ``nn.LSTM(batch_first=True)`` and a Keras LSTM both take
    it (one sequence: ``(T, features)``, a batch of one added)."""
    x = np.asarray(x)
    if x.shape == shape:
        x = x[None]
    if x.shape[1:] != shape or x.shape[0] < 1:
        raise ValueError(f"x has shape {x.shape}, but should be (batch, {', '.join(map(str, shape))}): batch-first "
                         "sequences (N, T, features)")
    return _as_input(x.reshape(x.shape[0], -1), math.prod(shape)).reshape(x.shape[0], *shape)


def _as_input(x: Any, width: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1 and x.size == width:
        x = x[None, :]
    elif x.ndim > 2 and int(np.prod(x.shape[1:])) == width:
        x = x.reshape(x.shape[0], width)  # e.g. (N, 1, 28, 28) images for a 784-wide first layer
    if x.ndim != 2 or x.shape[1] != width or x.shape[0] < 1:
        raise ValueError(f"x has shape {x.shape}, but the models take {width} features: pass (batch, {width})")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x has dtype {x.dtype}; pass floating-point inputs")
    if not np.isfinite(x).any():  # every layer's output would be non-finite too: nothing would be checked
        raise ValueError("x has no finite value, but should have at least one (got only NaN and infinities)")
    return x


def _takes_ids(units: Sequence[DenseUnit]) -> bool:
    return getattr(units[0].layer_kind, "integer_input", False)


def _token_ids(units: Sequence[DenseUnit], x: np.ndarray, *, drawn: bool = False) -> np.ndarray:
    """``x`` as token ids for a model starting with an embedding (drawn floats mapped to ids,
    ``equivalence.core.embedding.ids_from_draw``; given ones checked); else ``x``."""
    if not _takes_ids(units):
        return x
    from equivalence.core.embedding import check_ids, ids_from_draw

    kind = units[0].layer_kind
    return check_ids(ids_from_draw(x, kind.rows) if drawn else x, kind.rows, kind.length)


def _worst_per_layer(results: Sequence[LayerResult]) -> dict[tuple[tuple[str, str], int], LayerResult]:
    out: dict[tuple[tuple[str, str], int], LayerResult] = {}
    for r in results:
        key = (r.pair, r.layer)
        if key not in out or r.ratio > out[key].ratio:
            out[key] = r
    return out


class _Diverged(AssertionError):
    pass


def compare_models(torch_model: Any, keras_model: Any, x: Any = None, *, max_examples: int = DEFAULT_EXAMPLES,
                   scales: Sequence[float] = MODEL_INPUT_SCALES, nonfinite: bool = False, max_batch: int = MAX_BATCH,
                   derandomize: bool = False, table: str | Path | None = None,
                   weight_ulps: int = 0) -> ModelComparison:
    """Compare a torch model and its Keras port layer by layer, without writing either's weights.

    ``x``: inputs ``(batch, n_in)``; ``None`` draws them with hypothesis (``max_examples`` batches, input
    scales ``scales``, NaN/inf at drawn positions with ``nonfinite=True``), shrinking a failure to a
    minimal input. ``table``: write the per-layer table (Markdown) there. ``weight_ulps``: accept weights
    that differ across the pair by that many units in the last place (default 0: a port copies them exactly;
    each model is then judged against the reference of its own weights). Raises ``ModelNotSupported``
    (a ``ValueError``) for a model the suite cannot judge.
    """
    if not isinstance(weight_ulps, int) or weight_ulps < 0:
        raise ValueError(f"weight_ulps={weight_ulps!r} must be an integer, 0 or more")
    torch_model, keras_model = loaded(torch_model), loaded(keras_model)
    t_units, k_units = fold_norms(*walk_pair(torch_model, keras_model),
                                  graph=(framework_of(torch_model) in GRAPH_READERS,
                                         framework_of(keras_model) in GRAPH_READERS))
    differences = tuple(structural_differences(t_units, k_units, weight_ulps=weight_ulps))
    same = not (structural_differences(t_units, k_units) if weight_ulps else differences)  # identical weights
    base = dict(case_id=_case_id(torch_model, keras_model, *labels(t_units, k_units)), differences=differences,
                torch_layers=tuple(t_units), keras_layers=tuple(k_units), weight_ulps=weight_ulps)
    width, shape = t_units[0].shape[0], input_shape_of(t_units)
    if x is not None or differences:  # given inputs; or a port already wrong: one seeded batch shows the values
        from equivalence.core.case import drawn_input

        if x is None:
            x = _token_ids(t_units, drawn_input(width=width, dtype=t_units[0].dtype, batch=8), drawn=True)
            x = x.reshape(8, *shape)
        else:
            x = _token_ids(t_units, x) if _takes_ids(t_units) else \
                _as_input(x, width) if len(shape) == 1 else \
                _sequence_input(x, shape) if takes_sequences(t_units) else _spatial_input(x, shape)
        result = ModelComparison(results=numeric_results(t_units, k_units, x, same=same), examples=1, **base)
    else:
        result = _drawn(t_units, k_units, base, max_examples=max_examples, scales=scales, nonfinite=nonfinite,
                        max_batch=max_batch, derandomize=derandomize, same=same)
    if table is not None:
        from equivalence.core.atomic import write_text_atomic

        write_text_atomic(Path(table), result.table())  # a crash never leaves half a table
    return result


def _drawn(t_units: list[DenseUnit], k_units: list[DenseUnit], base: dict, *, max_examples: int,
           scales: Sequence[float], nonfinite: bool, max_batch: int, derandomize: bool,
           same: bool) -> ModelComparison:
    from hypothesis import HealthCheck, Phase, given, settings

    from equivalence.core.case import drawn_input
    from equivalence.core.strategies import model_inputs

    if not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples={max_examples!r} must be a positive integer")
    strategy = model_inputs(width=t_units[0].shape[0], dtype=t_units[0].dtype, scales=scales, nonfinite=nonfinite,
                            max_batch=max_batch)
    worst: dict[tuple[tuple[str, str], int], LayerResult] = {}
    state: dict[str, Any] = {"examples": 0, "failing": None}

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(draw=strategy)
    def check(draw: dict) -> None:
        x = _token_ids(t_units, drawn_input(**draw), drawn=True)
        results = numeric_results(t_units, k_units, x.reshape(x.shape[0], *input_shape_of(t_units)), same=same)
        state["examples"] += 1
        if all(r.passed for r in results):
            for key, r in _worst_per_layer(results).items():
                if key not in worst or r.ratio > worst[key].ratio:
                    worst[key] = r
            return
        state["failing"] = (draw, results)  # the last failing call hypothesis makes is the shrunk one
        raise _Diverged()

    try:
        check()
    except _Diverged:
        draw, results = state["failing"]
        args = ", ".join(f"{k}={v!r}" for k, v in draw.items())
        shape = input_shape_of(t_units)
        layout = "    from equivalence.core.embedding import ids_from_draw\n" \
            f"    x = ids_from_draw(x, {t_units[0].layer_kind.rows})  # token ids\n" \
            if _takes_ids(t_units) else "" if len(shape) == 1 or takes_sequences(t_units) else \
            f"    x = x.reshape(-1, {', '.join(map(str, shape))}).transpose(0, {len(shape)}, " \
            f"{', '.join(map(str, range(1, len(shape))))})  # channels-last -> torch's N, C, ...\n"
        reproduction = ("  minimal failing input (shrunk by hypothesis), rebuilt with:\n"
                        f"    from equivalence.core.case import drawn_input\n    x = drawn_input({args})\n{layout}"
                        "    equivalence.assert_equivalent(torch_model, keras_model, x=x)")
        return ModelComparison(results=tuple(results), examples=state["examples"], reproduction=reproduction, **base)
    return ModelComparison(results=tuple(worst.values()), examples=state["examples"], **base)


def assert_equivalent(torch_model: Any, keras_model: Any, x: Any = None, **options: Any) -> ModelComparison:
    """``compare_models``, raising ``AssertionError`` with the per-layer report when the models differ in any
    way: structure, dtype, bias, activation, weights (an untransposed kernel named as such) or values
    beyond the error model. Returns the comparison when they agree."""
    result = compare_models(torch_model, keras_model, x, **options)
    if not result.passed:
        raise AssertionError(result.message())
    return result


# --- porting ------------------------------------------------------------------------------------

def _port_mismatch(source: Sequence[DenseUnit], target: Sequence[DenseUnit]) -> str | None:
    s_fw, t_fw = source[0].framework, target[0].framework
    if len(source) != len(target):
        return f"{s_fw} has {len(source)} dense layers, {t_fw} {len(target)}"
    for i, (s, t) in enumerate(zip(source, target)):
        where = f"layer {i} ({s_fw} {s.name!r}, {t_fw} {t.name!r})"
        if s.layer_kind is not DENSE or t.layer_kind is not DENSE:
            pair = (s, t) if s_fw == "torch" else (t, s)
            kind_differences = [(what, message) for what, message in _kind_differences(where, *pair)
                                if what not in COMPUTED_OTHERWISE]
            if kind_differences:
                return kind_differences[0][1]
            if s.W.size == 0:
                continue  # pooling, flatten: nothing to write
        if s.shape != t.shape:
            return f"{where}: {s_fw} is {s.shape[0]}->{s.shape[1]}, {t_fw} {t.shape[0]}->{t.shape[1]}"
        if (s.b is None) != (t.b is None):
            return f"{where}: {s_fw} {'has no' if s.b is None else 'has a'} bias, {t_fw} " \
                   f"{'has no' if t.b is None else 'has a'} bias"
        if s.dtype != t.dtype:
            return f"{where}: {s_fw} is {s.dtype}, {t_fw} {t.dtype}"
        if s.activation != t.activation:
            return f"{where}: {s_fw} has {s.activation} ({s.activation_source}), {t_fw} {t.activation} " \
                   f"({t.activation_source})"
        if t.write is None:
            return f"{where}: the {t_fw} model cannot be written (a torch.export program holds copies)"
    return None


def port_weights(source: Any, target: Any) -> None:
    """Copy every layer's weights from ``source`` to ``target`` (torch to Keras, or Keras to torch),
    transposing between torch's ``(out, in)`` and Keras' ``(in, out)`` and a conv's ``(out, in, *kernel)`` and
    ``(*kernel, in, out)``, and permuting a dense layer after a Flatten between torch's C,H,W rows and Keras'
    H,W,C. The Keras model may be a Keras 2 (``tf_keras``) one beside Keras 3.

    Refuses (``PortMismatch``, before writing anything) a pair whose layers do not match in number,
    shape, bias, dtype or activation, naming the first mismatch.
    """
    frameworks = (framework_of(source), framework_of(target))
    if sorted("keras" if form == "keras2" else str(form) for form in frameworks) != ["keras", "torch"]:
        raise PortMismatch(f"port_weights copies between a torch and a Keras model, got {type(source).__name__} "
                           f"({frameworks[0]}) and {type(target).__name__} ({frameworks[1]})")
    if frameworks[0] == "torch":
        s_units, t_units = walk_pair(source, target)
    else:
        t_units, s_units = walk_pair(target, source)
    problem = _port_mismatch(s_units, t_units)
    if problem is not None:
        raise PortMismatch(f"port_weights: the layers do not match: {problem}")
    for s, t in zip(s_units, t_units):
        if s.W.size:
            t.write(s.W, s.b)
