"""The fixed, seeded case matrices of ``equivalence report`` and of the golden vectors.

Everything here is data. To cover a new activation or dtype, add its name to
``ACTIVATION_AXIS`` or ``DTYPE_AXIS`` (once the adapters know it); to cover a new
shape or input regime, add an entry to the tuples below. Then re-record the
shipped vectors with ``make baseline``.

Seeds come from each case's id (CRC-32), so adding entries never changes the
arrays of the cases already there.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

from equivalence.core import chain
from equivalence.core.activations import ACTIVATIONS
from equivalence.core.case import Case, make_case
from equivalence.core.dtypes import DTYPES, short_dtype_name
from equivalence.core.residual import INPUT
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.frameworks.registry import entry

ACTIVATION_AXIS: tuple[str, ...] = ("sigmoid", "tanh", "relu", "linear")
"""Every activation the matrices cover, each on its own and all of them mixed in one stack."""

DTYPE_AXIS: tuple[str, ...] = ("float32",)
"""Every dtype the matrices cover."""

MIXED = "mixed"
"""Per-layer activations cycling through ``ACTIVATION_AXIS`` (stacks of depth 2 and more)."""

Shape = tuple[int, tuple[int, ...]]  # (input width, layer widths)


@dataclass(frozen=True)
class Inputs:
    """A batch size, an input scale (inputs are U(-scale, scale)) and a weight scale (see ``case.WEIGHT_SCALES``)."""

    batch: int
    input_scale: float
    weight_scale: str

    @property
    def id(self) -> str:
        return f"n{self.batch}_x{self.input_scale:g}_{self.weight_scale}"


REPORT_SHAPES: tuple[Shape, ...] = (
    (1, (1,)),                  # the smallest stack
    (3, (5, 5, 2)),             # a square pair: a missing transpose is shape-valid there
    (10, (10, 10, 10, 10)),     # square all the way
    (16, (32, 8, 1)),           # narrowing to one neuron
    (4, (4,) * 8),              # deep and narrow
    (64, (128, 64)),            # wide
    (512, (512,)),              # large fan-in: |z| reaches the hundreds with unit weights
)
REPORT_INPUTS: tuple[Inputs, ...] = (
    Inputs(1, 1.0, "unit"),      # batch of one
    Inputs(16, 100.0, "unit"),   # saturating: sigmoid and tanh sit at their limits
    Inputs(7, 1.0, "fan_in"),    # the usual initialisation scale
)
NOBIAS_SHAPES: tuple[Shape, ...] = ((3, (5, 5, 2)), (10, (10, 10, 10, 10)))
NOBIAS_INPUTS = Inputs(4, 1.0, "unit")

STYLE_SHAPES: tuple[Shape, ...] = ((3, (5, 5, 2)), (8, (16, 16, 4)))
"""Built as real models in every pairing of a torch style with a Keras style (the build is the point there)."""
STYLE_INPUTS = Inputs(4, 10.0, "unit")

GOLDEN_SHAPES: tuple[Shape, ...] = (
    (1, (1,)),
    (3, (5, 5, 2)),
    (8, (8, 8, 8)),
    (16, (24, 1)),
    (4, (4,) * 6),
    (32, (32,)),
)
GOLDEN_INPUTS: tuple[Inputs, ...] = (
    Inputs(1, 1.0, "unit"),
    Inputs(8, 100.0, "unit"),
    Inputs(5, 1.0, "fan_in"),
)
GOLDEN_WIDE: tuple[tuple[Shape, Inputs], ...] = (
    ((256, (16,)), Inputs(4, 10.0, "unit")),   # fan-in 256, |z| in the thousands
    ((64, (64, 64)), Inputs(2, 1.0, "unit")),
)
"""Few and small on purpose: the shipped vectors must stay under 2 MB."""


@dataclass(frozen=True)
class MatrixCase:
    """One seeded case of a matrix, and how its models are built.

    ``styles`` is empty for bare layers reused from a ``LayerPool`` (the numbers do
    not depend on the style: a test shows each style's forward equals its chained
    layers), or ``(("torch", style), ("keras", style))`` for real built models.
    """

    spec: StackSpec
    inputs: Inputs
    styles: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        built = "_".join(f"{fw}-{style}" for fw, style in self.styles) if self.styles else "layers"
        return f"{self.spec.id}_{self.inputs.id}_{built}"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())

    def style(self, framework: str) -> str | None:
        """The build style for ``framework``, or None for bare pooled layers."""
        return dict(self.styles).get(framework)

    def make(self) -> Case:
        return make_case(self.spec, seed=self.seed, batch=self.inputs.batch,
                         input_scale=self.inputs.input_scale, weight_scale=self.inputs.weight_scale)


@dataclass(frozen=True)
class ChainCase:
    """One seeded case of a chain of layers of any kind (``equivalence.core.chain``): a named blueprint in one
    dtype, built by each framework's adapter as a model of that kind (``Adapter.build_chain``)."""

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[chain.Planned, ...]
    dtype: str
    inputs: Inputs
    styles: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> ChainSpec:
        return chain.resolve(self.input_shape, self.layers, self.dtype)

    @property
    def id(self) -> str:
        """``conv2d_f32_n4_x1_fan_in_chain``: the blueprint's name (its kinds are in ``spec.id``)."""
        return f"{self.name}_{short_dtype_name(self.dtype)}_{self.inputs.id}_chain"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())

    def style(self, framework: str) -> str | None:
        return None

    def make(self) -> Case:
        return chain.make_chain_case(self.input_shape, self.layers, self.dtype, seed=self.seed,
                                      batch=self.inputs.batch, input_scale=self.inputs.input_scale,
                                      weight_scale=self.inputs.weight_scale)


CHAIN_BLUEPRINTS: tuple[tuple[str, tuple[int, ...], tuple[chain.Planned, ...]], ...] = (
    ("conv2d", (8, 8, 3), (chain.conv(4, 3, same=True, activation="relu"), chain.pool("max", 2),
                           chain.conv(6, 3, activation="tanh"), chain.pool("avg", 2, stride=1), chain.flatten(),
                           chain.dense(5, "sigmoid"))),
    ("conv1d", (16, 2), (chain.conv(5, 3, stride=2, activation="relu"), chain.pool("avg", 3, stride=1, same=True),
                         chain.conv(3, 1), chain.flatten(), chain.dense(4, "tanh"))),
    ("conv_bn", (6, 6, 2), (chain.conv(4, 3, same=True, bias=False), chain.batchnorm("relu"), chain.pool("max", 2),
                            chain.flatten(), chain.dense(3))),
    ("norm_mlp", (10,), (chain.dense(12), chain.batchnorm("relu"), chain.dense(9), chain.layernorm("tanh"),
                         chain.dense(4, "sigmoid"))),
)
"""Architectures that mix the kinds: conv stacks with pooling, a Flatten and a Dense; norms after a conv and
inside an MLP. Each name is one blueprint (a new kind adds one here)."""
CHAIN_INPUTS: tuple[tuple[tuple[str, ...], Inputs], ...] = (
    (DTYPES, Inputs(4, 1.0, "fan_in")),          # every dtype, the usual initialisation scale
    (("float32",), Inputs(3, 10.0, "unit")),     # large sums: tanh and sigmoid saturate, norms see large rows
)


SEQUENCE_BLUEPRINTS: tuple[tuple[str, tuple[int, ...], tuple[chain.Planned, ...]], ...] = (
    ("embed_mean", (6,), (chain.embedding(11, 8), chain.token_mean("tanh"), chain.dense(5, "relu"),
                          chain.dense(3, "sigmoid"))),
    ("attention", (5,), (chain.embedding(13, 8), chain.attention(2, "relu"), chain.attention(4), chain.token_mean(),
                         chain.dense(4, "tanh"))),
    ("lstm", (7, 3), (chain.recurrent("lstm", 6, sequences=True), chain.recurrent("lstm", 4, "tanh"),
                      chain.dense(2, "sigmoid"))),
    ("gru", (8, 4), (chain.recurrent("gru", 5, sequences=True), chain.recurrent("gru", 3, "relu"), chain.dense(2))),
)
"""The sequence and recurrent kinds, as users' models hold them: token ids through an Embedding, its mean over the
tokens into an MLP; self-attention blocks between an Embedding and the mean; two LSTMs (the first returning its
sequence) and two GRUs before a Dense. Recorded after the chains of ``CHAIN_BLUEPRINTS`` (``sequence_cases``), so
the vectors recorded before them keep their keys."""


RESIDUAL_BLUEPRINTS: tuple[tuple[str, tuple[int, ...], tuple[chain.Planned, ...]], ...] = (
    ("residual_mlp", (8,), (chain.dense(16, "relu"), chain.dense(8), chain.add(INPUT, "relu"),
                            chain.dense(12, "tanh"), chain.dense(8), chain.add(2, "tanh"), chain.dense(3, "sigmoid"))),
    ("residual_projection", (6,), (chain.dense(8, "tanh"), chain.dense(10, "relu"), chain.dense(5), chain.branch(0),
                                   chain.dense(5), chain.add(2, "tanh"), chain.dense(3))),
    ("residual_conv", (6, 6, 3), (chain.conv(4, 3, same=True, activation="relu"),
                                  chain.conv(4, 3, same=True, activation="relu"), chain.conv(4, 3, same=True),
                                  chain.add(0, "relu"), chain.pool("max", 2), chain.flatten(), chain.dense(3))),
    ("residual_attention", (5,), (chain.embedding(13, 8), chain.attention(2), chain.add(0), chain.attention(4, "relu"),
                                  chain.token_mean(), chain.layernorm(), chain.dense(3, "tanh"))),
)
"""Residual Adds as users' models hold them: two Dense blocks ``relu(x + f(x))`` then ``tanh(h + g(h))``, the
second's skip an Add's output; a stem, then ``tanh(a(h) + proj(h))`` (two computed branches: a branch unit starts
``proj`` from the stem's output); a conv block ``relu(h + conv(conv(h)))`` on a channels-last tensor; a transformer
block's ``x + attention(x)`` over embedded tokens, then another attention, the mean over the tokens and a LayerNorm
(after the mean: the walkers judge a LayerNorm of 2-D inputs only, and torch's a mean over the tokens after a
sequence layer, not right after an Add). Recorded after the sequence chains
(``residual_cases``), so the vectors recorded before them keep their keys."""


def chain_cases(blueprints: Sequence[tuple[str, tuple[int, ...], tuple[chain.Planned, ...]]] = CHAIN_BLUEPRINTS
                ) -> list[ChainCase]:
    """Every blueprint in every dtype of ``CHAIN_INPUTS``."""
    return [ChainCase(name, shape, blueprint, dtype, inp)
            for dtypes, inp in CHAIN_INPUTS for name, shape, blueprint in blueprints for dtype in dtypes]


def sequence_cases() -> list[ChainCase]:
    """The chains of ``SEQUENCE_BLUEPRINTS`` in every dtype of ``CHAIN_INPUTS``."""
    return chain_cases(SEQUENCE_BLUEPRINTS)


def residual_cases() -> list[ChainCase]:
    """The chains of ``RESIDUAL_BLUEPRINTS`` in every dtype of ``CHAIN_INPUTS``."""
    return chain_cases(RESIDUAL_BLUEPRINTS)


def activation_mixes(depth: int) -> list[tuple[str, ...]]:
    """One activation for every layer, for each of ``ACTIVATION_AXIS``; plus the mixed stack when ``depth > 1``."""
    mixes = [(name,) * depth for name in ACTIVATION_AXIS]
    if depth > 1:
        mixes.append(tuple(ACTIVATION_AXIS[i % len(ACTIVATION_AXIS)] for i in range(depth)))
    return mixes


def _pooled(shapes: tuple[Shape, ...], inputs: tuple[Inputs, ...], *, bias: bool = True) -> list[MatrixCase]:
    out = []
    for dtype, (n_in, widths), inp in product(DTYPE_AXIS, shapes, inputs):
        for acts in activation_mixes(len(widths)):
            out.append(MatrixCase(StackSpec(n_in, widths, acts, bias=bias, dtype=dtype), inp))
    return out


BREADTH_SHAPE: Shape = (8, (8, 5, 5, 8, 3))
"""A five-layer stack with square layers, for the breadth block."""
BREADTH_INPUTS = Inputs(3, 1.0, "fan_in")


def breadth_cases() -> list[MatrixCase]:
    """Every shared activation and every dtype, bias on and off, in few cases.

    Each activation alone in float32; then, for every dtype, five-layer stacks
    that together hold every activation (``ACTIVATIONS`` in order, in
    slices of five), with bias and without.
    """
    n_in, widths = BREADTH_SHAPE
    out = [MatrixCase(StackSpec(n_in, widths, name), BREADTH_INPUTS) for name in ACTIVATIONS]
    names = list(ACTIVATIONS)
    slices = [tuple((names[i:i + len(widths)] + names)[:len(widths)]) for i in range(0, len(names), len(widths))]
    for dtype, acts, bias in product(DTYPES, slices, (True, False)):
        out.append(MatrixCase(StackSpec(n_in, widths, acts, bias=bias, dtype=dtype), BREADTH_INPUTS))
    return out


def report_cases() -> list[MatrixCase | ChainCase]:
    """The ``equivalence report`` matrix: every shape, activation, input regime, and every build-style pairing."""
    cases = _pooled(REPORT_SHAPES, REPORT_INPUTS)
    cases += _pooled(NOBIAS_SHAPES, (NOBIAS_INPUTS,), bias=False)
    for dtype, (n_in, widths) in product(DTYPE_AXIS, STYLE_SHAPES):
        acts = activation_mixes(len(widths))[-1]
        for torch_style, keras_style in product(entry("torch").styles, entry("keras").styles):
            spec = StackSpec(n_in, widths, acts, dtype=dtype)
            cases.append(MatrixCase(spec, STYLE_INPUTS, (("torch", torch_style), ("keras", keras_style))))
    return cases + breadth_cases() + chain_cases() + sequence_cases() + residual_cases()


def golden_cases() -> list[MatrixCase | ChainCase]:
    """The cases recorded as golden vectors (``equivalence record``); small, so the files stay small."""
    cases = _pooled(GOLDEN_SHAPES, GOLDEN_INPUTS)
    cases += _pooled(NOBIAS_SHAPES[:1], (NOBIAS_INPUTS,), bias=False)
    for (n_in, widths), inp in GOLDEN_WIDE:
        for dtype, acts in product(DTYPE_AXIS, activation_mixes(len(widths))):
            cases.append(MatrixCase(StackSpec(n_in, widths, acts, dtype=dtype), inp))
    return cases + breadth_golden_cases() + chain_cases() + sequence_cases() + residual_cases()


def breadth_golden_cases() -> list[MatrixCase]:
    """The breadth block, trimmed for the shipped files: per dtype, the mixed stacks that hold every
    activation, bias on and off alternating (so both appear in every dtype)."""
    mixed = [c for c in breadth_cases() if len(set(c.spec.activations)) > 1]
    by_dtype: dict[str, list[MatrixCase]] = {}
    for c in mixed:
        by_dtype.setdefault(c.spec.dtype, []).append(c)
    out = []
    for dtype_cases in by_dtype.values():
        with_bias = [c for c in dtype_cases if c.spec.bias]
        without = [c for c in dtype_cases if not c.spec.bias]
        out += [(with_bias if i % 2 == 0 else without)[i] for i in range(len(with_bias))]
    return out


def select(cases: list[MatrixCase], patterns: Sequence[str] | None) -> list[MatrixCase]:
    """The cases whose id contains any of ``patterns`` (all of them for none)."""
    return list(cases) if not patterns else [c for c in cases if any(p in c.id for p in patterns)]
