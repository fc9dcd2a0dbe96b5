"""Layer descriptor, quantization-table entry and the byte formats of the engine's streams.

This module is the single description of what crosses the engine's boundary
(:class:`psconv.hw.engine.PeriodicSparseEngine`): the Amaranth layouts of the ``layer`` port and of
a ``quant_in`` beat, and plain-Python encoders/decoders of every stream's beats, which the
Amaranth tests, the cocotb bench and the host driver share so nobody re-derives bit positions.

Layer descriptor (``layer`` port, :func:`layer_descriptor_layout`), fields in this order from
bit 0 upward, widths sized from the :class:`~psconv.config.EngineConfig`:

===============  =====================================  ==========================================
field            width                                  meaning
===============  =====================================  ==========================================
in_channels      bits of ``max_in_channels``            C_in, 1..max_in_channels
out_channels     bits of ``max_out_channels``           C_out, 1..max_out_channels
in_height        bits of ``max_height``                 H, 1..max_height
in_width         bits of ``max_width``                  W, 1..max_width
stride           2                                      1 or 2
kernel           2                                      3 (3x3, padding 1) or 1 (1x1, padding 0)
relu             1                                      clamp the output at 0
residual         1                                      add ``residual_in`` * R (see requantize)
period           bits of ``max_period``                 P, entries of the mask table, 1..max_period
===============  =====================================  ==========================================

The engine runs a 1x1 layer exactly as a 3x3 layer with padding 1 whose mask table keeps only the
centre tap: the centre tap of that window at output (y, x) is input (y*s, x*s), and both give an
output size of ``(H - 1) // s + 1``. So ``kernel`` is informational for the gateware (the host must
load the pointwise table, P = 1, mask 0x010, for 1x1 layers).

Quantization entry (one ``quant_in`` beat per output channel, :data:`QUANT_ENTRY_LAYOUT`), from
bit 0: ``bias`` signed 32, ``multiplier`` unsigned 30, ``shift`` unsigned 6 (1..62),
``residual_multiplier`` unsigned 30 (98 bits). These are M, S, b, R of
:func:`psconv.sim.golden.ops.requantize`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Mux, signed, unsigned
from amaranth.lib import data

from psconv.errors import PsconvError
from psconv.families import NUM_TAPS

QUANT_ENTRY_LAYOUT = data.StructLayout({
    "bias": signed(32),
    "multiplier": unsigned(30),
    "shift": unsigned(6),
    "residual_multiplier": unsigned(30),
})

MASK_BITS = NUM_TAPS
"""A ``mask_in`` beat is one 9-bit mask; bit t keeps row-major tap t (dy = t // 3, dx = t % 3)."""


def layer_descriptor_layout(config) -> data.StructLayout:
    """The ``layer`` port layout for ``config`` (see module docstring)."""
    return data.StructLayout({
        "in_channels": unsigned(config.max_in_channels.bit_length()),
        "out_channels": unsigned(config.max_out_channels.bit_length()),
        "in_height": unsigned(config.max_height.bit_length()),
        "in_width": unsigned(config.max_width.bit_length()),
        "stride": unsigned(2),
        "kernel": unsigned(2),
        "relu": unsigned(1),
        "residual": unsigned(1),
        "period": unsigned(config.max_period.bit_length()),
    })


def fmap_beat_bytes(config) -> int:
    """Bytes per ``fmap_in`` beat: ``tn`` (the input map loads at ``tn`` bytes per cycle)."""
    return config.tn


def fmap_rows_capacity(config) -> int:
    """Input rows (one channel, one row each) the feature-map buffer holds: C_in * H <= this."""
    return config.fmap_depth // config.max_width


def output_size(size: int, stride: int) -> int:
    """Output height/width of a 3x3 padding-1 or 1x1 padding-0 layer: ``(size - 1) // s + 1``."""
    return (size - 1) // stride + 1


def output_size_value(size, stride):
    """:func:`output_size` in gateware (``stride`` is a 1|2 value): a shift and an add."""
    return Mux(stride == 2, ((size - 1) >> 1) + 1, size)


def cycles_per_output_channel(config, masks, in_channels: int) -> int:
    """Engine cycles (weight words) per output channel over all input-channel passes; one pass:
    ceil(ceil(C_in / P) * T / tn) (:func:`psconv.firmware.packing.words_per_output_channel`)."""
    from psconv.firmware.packing import words_per_output_channel

    return words_per_output_channel(masks, in_channels, config.tn, config.patch_channels)


@dataclass(frozen=True)
class LayerSpec:
    """One engine invocation, in the terms of the ``layer`` port."""

    in_channels: int
    out_channels: int
    in_height: int
    in_width: int
    stride: int = 1
    kernel: int = 3
    relu: bool = False
    residual: bool = False
    period: int = 1

    @property
    def out_height(self) -> int:
        return output_size(self.in_height, self.stride)

    @property
    def out_width(self) -> int:
        return output_size(self.in_width, self.stride)

    def column_blocks(self, config) -> int:
        return math.ceil(self.out_width / config.tm)

    def output_beats(self, config) -> int:
        """Beats of ``out`` (and of ``residual_in`` when ``residual``)."""
        return self.out_height * self.column_blocks(config) * self.out_channels

    def check(self, config, masks=None) -> None:
        """Raise :class:`PsconvError` if this layer does not fit ``config`` (the engine does not
        check its descriptor; the compiler must tile larger layers)."""
        def bad(name, value, allowed):
            raise PsconvError(f"engine layer: {name} is {value!r}; allowed: {allowed}")
        for name, high in (("in_channels", config.max_in_channels),
                           ("out_channels", config.max_out_channels),
                           ("in_height", config.max_height), ("in_width", config.max_width),
                           ("period", config.max_period)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= high:
                bad(name, value, f"1..{high} (engine config)")
        if self.stride not in (1, 2):
            bad("stride", self.stride, "1 or 2")
        if self.kernel not in (1, 3):
            bad("kernel", self.kernel, "1 or 3")
        rows = fmap_rows_capacity(config)
        if self.in_channels * self.in_height > rows:
            bad("in_channels * in_height", self.in_channels * self.in_height,
                f"at most {rows} rows (fmap_depth // max_width) in the feature-map buffer")
        from psconv.firmware.packing import check_passes

        check_passes(self.period, self.in_channels, config.patch_channels, "engine layer")
        if masks is not None:
            if len(masks) != self.period:
                bad("period", self.period, f"the mask table's length {len(masks)}")
            if self.kernel == 1 and any(m != 1 << 4 for m in masks):
                bad("mask table", masks, "only the centre tap (0x010) for a 1x1 layer")
            words = self.out_channels * cycles_per_output_channel(config, masks, self.in_channels)
            if words > config.weight_depth:
                bad("weight words (C_out * cycles per output channel)", words,
                    f"at most weight_depth = {config.weight_depth}")

    def encode(self, config) -> int:
        """The integer to drive on the ``layer`` port."""
        self.check(config)
        layout = layer_descriptor_layout(config)
        return layout.const({
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "in_height": self.in_height, "in_width": self.in_width,
            "stride": self.stride, "kernel": self.kernel,
            "relu": int(bool(self.relu)), "residual": int(bool(self.residual)),
            "period": self.period,
        }).as_value().value


def encode_quant_entry(bias: int, multiplier: int, shift: int, residual_multiplier: int = 0) -> int:
    """One ``quant_in`` beat as an integer (ranges of :func:`psconv.sim.golden.ops.requantize`)."""
    if not -(1 << 31) <= bias < (1 << 31):
        raise PsconvError(f"quant entry: bias {bias} is outside int32")
    if not 0 <= multiplier < (1 << 30) or not 0 <= residual_multiplier < (1 << 30):
        raise PsconvError(f"quant entry: multipliers {multiplier}, {residual_multiplier}; allowed 0..2**30-1")
    if not 1 <= shift <= 62:
        raise PsconvError(f"quant entry: shift {shift}; allowed 1..62")
    return QUANT_ENTRY_LAYOUT.const({
        "bias": bias, "multiplier": multiplier, "shift": shift,
        "residual_multiplier": residual_multiplier,
    }).as_value().value


def pack_bytes(values) -> int:
    """Little-endian packing of int8 values (element 0 in bits 7:0) into one beat integer."""
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & 0xFF) << (8 * k)
    return word


def unpack_bytes(word: int, count: int) -> list[int]:
    """Inverse of :func:`pack_bytes`: ``count`` signed int8 values."""
    out = []
    for k in range(count):
        b = (word >> (8 * k)) & 0xFF
        out.append(b - 256 if b >= 128 else b)
    return out


def fmap_beats(config, fmap) -> list[int]:
    """``fmap_in`` beats of a CHW int8 map: the flat CHW byte stream, ``tn`` bytes per beat,
    only the last beat zero-padded."""
    flat = [int(v) for v in fmap.reshape(-1).tolist()]
    b = fmap_beat_bytes(config)
    flat += [0] * (-len(flat) % b)
    return [pack_bytes(flat[k:k + b]) for k in range(0, len(flat), b)]


def weight_beats(words) -> list[int]:
    """``weight_in`` beats from :func:`psconv.firmware.packing.engine_weight_words` rows."""
    return [pack_bytes(row) for row in words.tolist()]


def pixel_beats(config, tensor) -> list[int]:
    """Beats of a (C, H_out, W_out) int8 tensor in ``out``/``residual_in`` order: for each output
    row y, each column block xb, each channel o, the ``tm`` pixels x = xb*tm + r (0 beyond W)."""
    channels, height, width = tensor.shape
    tm = config.tm
    beats = []
    for y in range(height):
        for x0 in range(0, width, tm):
            for o in range(channels):
                row = [int(tensor[o, y, x]) if x < width else 0 for x in range(x0, x0 + tm)]
                beats.append(pack_bytes(row))
    return beats


def beats_to_pixels(config, beats, channels: int, height: int, width: int):
    """Inverse of :func:`pixel_beats`: a (C, H_out, W_out) int64 tensor; also checks that the
    padding pixels beyond W are 0."""
    import torch

    tm = config.tm
    blocks = math.ceil(width / tm)
    if len(beats) != height * blocks * channels:
        raise PsconvError(f"output: {len(beats)} beats; expected {height * blocks * channels}")
    out = torch.zeros((channels, height, width), dtype=torch.int64)
    k = 0
    for y in range(height):
        for xb in range(blocks):
            for o in range(channels):
                values = unpack_bytes(beats[k], tm)
                k += 1
                for r, v in enumerate(values):
                    x = xb * tm + r
                    if x < width:
                        out[o, y, x] = v
                    elif v != 0:
                        raise PsconvError(f"output: padding pixel x={x} of row {y}, channel {o} is {v}, not 0")
    return out
