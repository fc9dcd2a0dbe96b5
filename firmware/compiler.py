"""Layer program compiler: a quantized model becomes the engine invocations that run it.

Each step's descriptor is a :class:`psconv.protocol.descriptor.LayerSpec` (the engine's layer registers)
and is checked against the configuration with its ``check``.

The program is deterministic (same model and config, same bytes; :meth:`LayerProgram.digest`).
Every convolution becomes one or more :class:`EngineStep` s; a step is one engine invocation
(``start`` with one descriptor) over all input channels and a contiguous tile of output
channels. Tiling by output channels is needed when a layer's weight image exceeds the engine's
weight buffer (``EngineConfig.weight_depth`` words) or its output channels exceed
``max_out_channels``; each tile re-sends the input map. A layer whose input map does not fit
is refused with an error naming the layer (:meth:`LayerSpec.check` states the limits): input
channels beyond the patch buffer run in the engine's own input-channel passes with partial sums
on chip (``EngineConfig.patch_channels``), but the whole input map of an invocation must be in
its feature-map buffer, and the engine has no partial-sum outputs to tile it by. :func:`check_fits` raises the same error from the graph's shapes
alone, before any weight exists (how ``psconv run`` picks a default network an engine holds).

The whole-map average pool and the classifier (0.002 % of ResNet18's MACs) run on the host with
the golden model's integer ops, so the logits are bit-exact by construction; they are listed in
the program as :class:`HostStep` s.

A ``maxpool`` layer (VGG16's 2x2 stride-2 max pool) is a :class:`PoolStep`: no engine
invocation but a pass of a resident board's program runner over a map in its memory
(:mod:`psconv.protocol.memory`). Its descriptor, that of a 1x1 stride-2 layer with as many output
channels as input channels, must keep the engine's descriptor rules like every step's.

Streamed (the engine over the link, no map memory) a max pool runs in the engine's output max
pool instead (``EngineConfig.max_pool``): :func:`streamed_program` fuses each pool step into the
engine steps of the convolution it reads (descriptor ``pool``; those steps then return the pooled
map, :attr:`EngineStep.output_layer`). It refuses, naming the layer, a max pool it cannot fuse:
on an engine without the block, of a map that is not a convolution's (the image, another max
pool), of a convolution with a residual add, or of a convolution whose map another layer reads
too. Resident programs keep their pool steps: the runner's pass over the map in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.families import PatternFamily
from psconv.firmware.packing import PackedLayer, engine_weight_words, pack_layer, rotated_masks
from psconv.protocol.descriptor import LayerSpec
from psconv.qmodel import QLayer, QuantizedModel
from psconv.schedule import cycles_per_output_channel, output_size

PROGRAM_VERSION = 1


@dataclass
class EngineStep:
    """One engine invocation: a layer's output channels ``[first, first + count)``."""

    layer: str
    tile: int
    tiles: int
    first_channel: int
    descriptor: LayerSpec            # the engine's layer registers
    masks: tuple[int, ...]
    weight_words: torch.Tensor       # (rows, tn) int8, engine_weight_words order
    bias: torch.Tensor               # (count,) int32
    multiplier: torch.Tensor         # (count,) int64
    shift: torch.Tensor              # (count,) int64
    residual_multiplier: torch.Tensor  # (count,) int64, zeros without residual
    input: str
    residual: str | None
    useful_macs: int                 # nonzero-tap MACs of this tile
    pool: str | None = None          # the max-pool layer fused into this step (descriptor pool)

    @property
    def name(self) -> str:
        """The step in messages and tables: the layer (and a fused max pool), with its tile
        when it has several."""
        layer = self.layer if self.pool is None else f"{self.layer}+{self.pool}"
        return layer if self.tiles == 1 else f"{layer} tile {self.tile + 1}/{self.tiles}"

    @property
    def output_layer(self) -> str:
        """The layer whose map this step's output is: the fused max pool's, else its own."""
        return self.layer if self.pool is None else self.pool

    @property
    def channel_slice(self) -> slice:
        return slice(self.first_channel, self.first_channel + self.descriptor.out_channels)


@dataclass
class HostStep:
    """A layer the host runs with the golden model's integer op (avgpool, fc)."""

    layer: QLayer


@dataclass
class PoolStep:
    """A 2x2 stride-2 max pool the resident board's runner does over a map in its memory
    (:data:`~psconv.protocol.memory.MAX_POOL_2X2`); ``descriptor`` is that of a 1x1 stride-2
    layer with ``out_channels = in_channels``, period 1 (the contract's form of a pool step)."""

    layer: str
    descriptor: LayerSpec
    input: str
    residual: None = None

    @property
    def name(self) -> str:
        return self.layer

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H // 2, W // 2): an odd last row or column is dropped."""
        spec = self.descriptor
        return spec.in_channels, spec.in_height // 2, spec.in_width // 2


def pool_descriptor(channels: int, height: int, width: int) -> LayerSpec:
    """The descriptor of a max-pool step over a C x H x W map (see :class:`PoolStep`)."""
    return LayerSpec(in_channels=channels, out_channels=channels, in_height=height,
                     in_width=width, stride=2, kernel=1, relu=False, residual=False, period=1)


def _check_pool_fits(layer, config: EngineConfig, channels: int, height: int,
                     width: int) -> LayerSpec:
    """The pool step's descriptor, or a one-line error naming the layer if it breaks a rule."""
    spec = pool_descriptor(channels, height, width)
    try:
        spec.check(config)
    except PsconvError as e:
        raise PsconvError(f"compile: max-pool layer {layer.name!r} ({channels}x{height}x{width}) "
                          f"does not fit the engine's descriptor rules: {e}") from None
    return spec


@dataclass
class LayerProgram:
    config: EngineConfig
    model: QuantizedModel
    steps: list = field(default_factory=list)

    @property
    def engine_steps(self) -> list[EngineStep]:
        return [s for s in self.steps if isinstance(s, EngineStep)]

    @property
    def device_steps(self) -> list:
        """The steps a resident board runs, in order: engine steps and max-pool steps."""
        return [s for s in self.steps if isinstance(s, (EngineStep, PoolStep))]

    @property
    def pool_steps(self) -> list[PoolStep]:
        return [s for s in self.steps if isinstance(s, PoolStep)]

    def digest(self) -> str:
        """SHA-256 over everything the engine is sent, in order (determinism check)."""
        h = hashlib.sha256(f"psconv-program-v{PROGRAM_VERSION}".encode())
        for step in self.device_steps:
            if isinstance(step, PoolStep):
                h.update(repr(("maxpool", step.layer, step.descriptor, step.input)).encode())
                continue
            h.update(repr((step.layer, step.tile, step.first_channel, step.descriptor,
                           step.masks, step.input, step.residual)).encode())
            for t in (step.weight_words, step.bias, step.multiplier, step.shift,
                      step.residual_multiplier):
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def _check_fits(layer: QLayer, config: EngineConfig, channels: int, height: int, width: int,
                period: int) -> None:
    """Refuse a layer whose input side of the engine is too small for its input map."""
    spec = LayerSpec(in_channels=channels, out_channels=1, in_height=height,
                     in_width=width, stride=layer.stride, kernel=layer.kernel_size, period=period)
    try:
        spec.check(config)
    except PsconvError as e:
        raise PsconvError(f"compile: layer {layer.name!r} does not fit the engine: {e}") from None


def output_channel_tiles(config: EngineConfig, masks, in_channels: int, out_channels: int,
                         name: str = "layer") -> list[int]:
    """Output channels of each invocation of a layer: the fewest tiles the weight buffer (and
    ``max_out_channels``) allows, balanced so they differ by at most one channel (a small last
    tile would pay a whole input-map load for little compute)."""
    rows = cycles_per_output_channel(config, masks, in_channels)
    per_tile = min(out_channels, config.max_out_channels, config.weight_depth // rows)
    if per_tile < 1:
        raise PsconvError(f"compile: layer {name!r} needs {rows} weight words per output "
                          f"channel; weight_depth is {config.weight_depth}")
    tiles = -(-out_channels // per_tile)
    base, extra = divmod(out_channels, tiles)
    return [base + 1] * extra + [base] * (tiles - extra)


def _unfusable(program: LayerProgram, pool: PoolStep, before: list) -> str | None:
    """Why ``pool`` cannot be fused into the engine steps ``before`` it (None: it can)."""
    if not program.config.max_pool:
        return ("the engine has no output max-pool block (EngineConfig.max_pool is false; the "
                "iCEBreaker leaves it out)")
    source = next((layer for layer in program.model.layers if layer.name == pool.input), None)
    if source is None or source.op != "conv":
        what = "the input image" if source is None else f"a {source.op} layer's map"
        return f"it pools {what} ({pool.input!r}); fused, it pools a convolution's output"
    if source.residual is not None:
        return (f"it pools {pool.input!r}, a convolution with a residual add (the engine pools "
                f"no layer with a residual)")
    readers = [layer.name for layer in program.model.layers
               if layer.name != pool.layer and pool.input in (layer.input, layer.residual)]
    if readers:
        return (f"{readers[0]!r} reads the map of {pool.input!r} too (fused, the engine returns "
                f"only the pooled map)")
    tiles = [s for s in before if isinstance(s, EngineStep) and s.layer == pool.input]
    if not tiles or before[-1] is not tiles[-1]:
        return f"its convolution {pool.input!r} is not the step just before it"
    return None


def streamed_program(program: LayerProgram) -> LayerProgram:
    """``program`` as the streamed engine runs it: every max-pool step fused into the engine
    steps of the convolution before it (their descriptors set ``pool``), or a one-line error
    naming the first pool that cannot be (see the module docstring). A program without pool
    steps is returned as it is."""
    if not program.pool_steps:
        return program
    steps: list = []
    for step in program.steps:
        if not isinstance(step, PoolStep):
            steps.append(step)
            continue
        reason = _unfusable(program, step, steps)
        if reason is not None:
            raise PsconvError(f"layer {step.layer!r} is a max pool that cannot run streamed: "
                              f"{reason}. Use --mode resident on a board with memory")
        for k, conv in enumerate(steps):
            if isinstance(conv, EngineStep) and conv.layer == step.input:
                descriptor = dataclasses.replace(conv.descriptor, pool=True)
                try:
                    descriptor.check(program.config, conv.masks)
                except PsconvError as e:
                    raise PsconvError(f"compile: max-pool layer {step.layer!r} fused into "
                                      f"{conv.name!r}: {e}") from None
                steps[k] = dataclasses.replace(conv, descriptor=descriptor, pool=step.layer)
    return LayerProgram(config=program.config, model=program.model, steps=steps)


def check_streamable(program: LayerProgram) -> None:
    """Raise unless ``program`` can run streamed (the engine over the link): every max pool
    must fuse into the convolution before it (:func:`streamed_program`)."""
    streamed_program(program)


def _conv_inputs(layers, input_shape):
    """``(layer, (C, H, W))`` for each conv or maxpool layer of the graph ``layers`` (its input
    map) and ``(layer, None)`` for each host layer, in order. ``layers`` are :class:`QLayer` s or any
    objects with the same ``name``, ``op``, ``input``, ``stride`` and ``weight`` (only its shape
    is read), such as :class:`psconv.nn.quantize.FloatLayer` s."""
    shapes = {"input": tuple(input_shape)}
    for layer in layers:
        c, h, w = shapes[layer.input] if len(shapes[layer.input]) == 3 else (0, 0, 0)
        out_channels = int(layer.weight.shape[0]) if layer.weight is not None else 0
        if layer.op == "maxpool":
            yield layer, (c, h, w)
            shapes[layer.name] = (c, h // 2, w // 2)
            continue
        if layer.op != "conv":
            shapes[layer.name] = (out_channels or c,)
            yield layer, None
            continue
        in_channels = int(layer.weight.shape[1])
        if in_channels != c:
            raise PsconvError(f"compile: layer {layer.name!r} expects {in_channels} input "
                              f"channels, its input {layer.input!r} has {c}")
        yield layer, (c, h, w)
        shapes[layer.name] = (out_channels, output_size(h, layer.stride),
                              output_size(w, layer.stride))


def _layer_tiles(layer, config: EngineConfig, masks, channels: int, height: int,
                 width: int) -> list[int]:
    """The output-channel tiles of a conv layer, or its one-line error if it does not fit."""
    _check_fits(layer, config, channels, height, width, len(masks))
    return output_channel_tiles(config, masks, channels, int(layer.weight.shape[0]), layer.name)


def check_fits(layers, input_shape, config: EngineConfig) -> None:
    """Raise the :class:`PsconvError` :func:`compile_model` would (naming the first layer that
    does not fit, the value and the limit) without packing any weight: only the graph's shapes
    and pattern families are read (see :func:`_conv_inputs` for ``layers``)."""
    for layer, geometry in _conv_inputs(layers, input_shape):
        if geometry is not None and layer.op == "maxpool":
            _check_pool_fits(layer, config, *geometry)
        elif geometry is not None:
            _layer_tiles(layer, config, rotated_masks(layer.family), *geometry)


def compile_model(model: QuantizedModel, config: EngineConfig) -> LayerProgram:
    """Compile every layer of ``model`` for ``config`` (see module docstring)."""
    program = LayerProgram(config=config, model=model)
    for layer, geometry in _conv_inputs(model.layers, model.input_shape):
        if geometry is None:
            program.steps.append(HostStep(layer))
            continue
        c, h, w = geometry
        if layer.op == "maxpool":
            program.steps.append(PoolStep(layer.name, _check_pool_fits(layer, config, c, h, w),
                                          layer.input))
            continue
        packed = pack_layer(layer.weight, layer.family, layer.name)
        tiles = _layer_tiles(layer, config, packed.masks, c, h, w)
        first = 0
        for tile, count in enumerate(tiles):
            program.steps.append(
                _engine_step(layer, packed, config, tile, len(tiles), first, count, h, w))
            first += count
    return program


def _engine_step(layer: QLayer, packed: PackedLayer, config: EngineConfig, tile: int, tiles: int,
                 first: int, count: int, height: int, width: int) -> EngineStep:
    """The invocation for output channels ``[first, first + count)`` of ``layer``.

    The engine numbers a tile's output channels from 0, so the tile's mask table is the layer's
    rotated by ``first``: entry q of the tile is entry (q + first) % P of the layer, and kernel
    (o', i) of the tile keeps the taps of kernel (first + o', i) of the layer.
    """
    period = packed.period
    masks = tuple(packed.masks[(q + first) % period] for q in range(period))
    tile_family = PatternFamily(masks=masks, offset=0, name=f"{layer.family.name}@{first}",
                                kernel_size=packed.kernel_size)
    channels = slice(first, first + count)
    tile_packed = pack_layer(layer.weight[channels], tile_family, layer.name)
    descriptor = LayerSpec(
        in_channels=packed.in_channels, out_channels=count, in_height=height, in_width=width,
        stride=layer.stride, kernel=layer.kernel_size, relu=layer.relu,
        residual=layer.residual is not None, period=period)
    descriptor.check(config, masks)
    if layer.residual is not None:
        residual_multiplier = layer.residual_multiplier[channels].to(torch.int64)
    else:
        residual_multiplier = torch.zeros(count, dtype=torch.int64)
    kept_taps = int(tile_family.weight_mask(count, packed.in_channels).sum())
    return EngineStep(
        layer=layer.name, tile=tile, tiles=tiles, first_channel=first, descriptor=descriptor,
        masks=masks, weight_words=engine_weight_words(tile_packed, config.tn, config.patch_channels),
        bias=layer.bias[channels].to(torch.int32), multiplier=layer.multiplier[channels].to(torch.int64),
        shift=layer.shift[channels].to(torch.int64), residual_multiplier=residual_multiplier,
        input=layer.input, residual=layer.residual,
        useful_macs=kept_taps * descriptor.out_height * descriptor.out_width)
