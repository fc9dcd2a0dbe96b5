"""Layer descriptor and quantization entry: the WRITE_LAYER and WRITE_QUANT payloads.

The single description of both: the gateware drives the engine's ``layer`` port and ``quant_in``
beats with these layouts, and the host encodes :class:`LayerSpec` and quantization entries with
them, so nobody re-derives bit positions.

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
pool             1                                      2x2 stride-2 max pool of the output (only
                                                        on an engine built with ``max_pool``)
===============  =====================================  ==========================================

With ``pool`` set the engine returns ``maxpool2d_int`` of the layer's output (after ReLU and
saturation): ``out_height // 2`` x ``out_width // 2`` pixels per channel, an odd last row or
column dropped, in the same beat order as an unpooled output of that size
(:attr:`LayerSpec.result_height`, :attr:`LayerSpec.result_width`).

Limits (:data:`DESCRIPTOR_RULES`): one table of rules, each a value of the descriptor (a field
or a product of fields), the values it may take for a configuration, and when it applies. The
host's :meth:`LayerSpec.check` and the gateware's :class:`psconv.hw.descriptor_check.DescriptorCheck`
both read it, so the board refuses exactly what the host would: a ``WRITE_LAYER`` that breaks
a rule is NAKed ``BAD_DESCRIPTOR`` with the rule's index in the table as a second NAK byte
(:func:`describe_rejection` turns it back into the field and its allowed values). The limits
that depend on the mask table (its length, the 1x1 table, weight words) arrive after ``START``
and are checked by the host only.

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
from typing import Callable

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from psconv.errors import PsconvError
from psconv.families import DENSE_MASK, NUM_TAPS
from psconv.schedule import cycles_per_output_channel, fmap_rows_capacity, output_size, pass_periods

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
        "pool": unsigned(1),
    })


@dataclass(frozen=True)
class DescriptorRule:
    """One limit of the layer descriptor, stated once for the host and the gateware.

    ``name`` is what errors and NAKs call it. ``value(d)`` computes it from a descriptor ``d``:
    a :class:`LayerSpec` (ints) or the gateware's view of the ``layer`` port (Amaranth values),
    so it uses only operators both understand (``*``, ``>``, ``>=``, ``|``). ``allowed(config)`` is a range
    (step 1) or a tuple of the values it may take. ``applies(d, config)``, if given, says when
    the rule holds (the same two-sided kind of expression); ``why`` says where the limit comes
    from. ``implied(config)``, if given, is true when the rules before it already guarantee this
    one for ``config`` (the gateware then leaves it out: it could never fire).
    """

    name: str
    value: Callable
    allowed: Callable
    why: str = ""
    applies: Callable | None = None
    implied: Callable | None = None

    def describe(self, config) -> str:
        """The allowed values in words, e.g. ``1..32 (max_height)``."""
        allowed = self.allowed(config)
        if isinstance(allowed, range):
            words = f"{allowed.start}..{allowed.stop - 1}"
        elif len(allowed) == 1:
            words = f"only {allowed[0]}"
        else:
            words = ", ".join(str(v) for v in allowed[:-1]) + f" or {allowed[-1]}"
        return f"{words} ({self.why})" if self.why else words


def _at_most(limit: str) -> Callable:
    return lambda config: range(1, getattr(config, limit) + 1)


def _field(name: str) -> Callable:
    return lambda d: getattr(d, name)


DESCRIPTOR_RULES = (
    DescriptorRule("in_channels", _field("in_channels"), _at_most("max_in_channels"),
                   "max_in_channels"),
    DescriptorRule("out_channels", _field("out_channels"), _at_most("max_out_channels"),
                   "max_out_channels"),
    DescriptorRule("in_height", _field("in_height"), _at_most("max_height"), "max_height"),
    DescriptorRule("in_width", _field("in_width"), _at_most("max_width"), "max_width"),
    DescriptorRule("stride", _field("stride"), lambda config: (1, 2)),
    DescriptorRule("kernel", _field("kernel"), lambda config: (1, 3)),
    DescriptorRule("period", _field("period"), _at_most("max_period"), "max_period"),
    DescriptorRule("in_channels * in_height", lambda d: d.in_channels * d.in_height,
                   lambda config: range(1, fmap_rows_capacity(config) + 1),
                   "rows of the feature-map buffer: fmap_depth // max_width",
                   implied=lambda config: (config.max_in_channels * config.max_height
                                           <= fmap_rows_capacity(config))),
    DescriptorRule("period", _field("period"),
                   lambda config: pass_periods(config.patch_channels, config.max_period),
                   "divides patch_channels: more input channels than patch_channels run in "
                   "passes", applies=lambda d, config: d.in_channels > config.patch_channels,
                   implied=lambda config: (config.max_in_channels <= config.patch_channels
                                           or len(pass_periods(config.patch_channels,
                                                               config.max_period))
                                           == config.max_period)),
    DescriptorRule("pool", _field("pool"),
                   lambda config: (0, 1) if config.max_pool else (0,),
                   "1 needs the engine's output max-pool block: EngineConfig.max_pool",
                   implied=lambda config: config.max_pool),
    DescriptorRule("pool", _field("pool"), lambda config: (0,),
                   "a layer with a residual is not pooled: the residual window counts output "
                   "beats", applies=lambda d, config: d.residual,
                   implied=lambda config: not config.max_pool),
    # out_height = (in_height - 1) // stride + 1 is 2 or more exactly when in_height > stride
    DescriptorRule("pool", _field("pool"), lambda config: (0,),
                   "the pooled map would be empty: pooling needs an output of at least 2x2, "
                   "in_height and in_width above stride",
                   applies=lambda d, config: (d.stride >= d.in_height) | (d.stride >= d.in_width),
                   implied=lambda config: not config.max_pool),
)
"""Every limit the engine puts on a descriptor, in the order they are checked; a rule's index
here is the second byte of a ``BAD_DESCRIPTOR`` NAK. Each rule names the field it judges, or
the product of fields."""


def describe_rejection(config, rule_index: int, descriptor: int | None = None) -> str:
    """The words for a ``BAD_DESCRIPTOR`` NAK naming rule ``rule_index``: the field, its value
    when the sent ``descriptor`` (the ``layer`` port's integer) is given, and what is allowed."""
    if not 0 <= rule_index < len(DESCRIPTOR_RULES):
        return (f"rule {rule_index}, which this host does not know (it knows 0.."
                f"{len(DESCRIPTOR_RULES) - 1}): the board's psconv is another version")
    rule = DESCRIPTOR_RULES[rule_index]
    value = ""
    if descriptor is not None:
        layout = layer_descriptor_layout(config)
        fields = layout.from_bits(descriptor)
        spec = LayerSpec(**{name: int(fields[name]) for name in layout.members})
        value = f" is {rule.value(spec)}"
    return f"{rule.name}{value}; allowed: {rule.describe(config)}"


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
    pool: bool = False

    @property
    def out_height(self) -> int:
        """Rows of the convolution's output (before any pool)."""
        return output_size(self.in_height, self.stride)

    @property
    def out_width(self) -> int:
        return output_size(self.in_width, self.stride)

    @property
    def result_height(self) -> int:
        """Rows of the map the engine returns: ``out_height``, halved (rounded down) by
        ``pool``."""
        return self.out_height // 2 if self.pool else self.out_height

    @property
    def result_width(self) -> int:
        """Columns of the map the engine returns: ``out_width``, halved by ``pool``."""
        return self.out_width // 2 if self.pool else self.out_width

    def column_blocks(self, config) -> int:
        """Column blocks of the convolution's output (``tm`` pixels each), before any pool."""
        return math.ceil(self.out_width / config.tm)

    def output_beats(self, config) -> int:
        """Beats of ``out``: ``result_height * ceil(result_width / tm) * out_channels``; with
        ``residual`` (which excludes ``pool``) also the beats of ``residual_in``."""
        return self.result_height * math.ceil(self.result_width / config.tm) * self.out_channels

    def check(self, config, masks=None) -> None:
        """Raise :class:`PsconvError` if this layer does not fit ``config``: the rules of
        :data:`DESCRIPTOR_RULES` (which the board checks too) and, given the mask table, the
        limits that depend on it. The compiler must tile larger layers."""
        def bad(name, value, allowed):
            raise PsconvError(f"engine layer: {name} is {value!r}; allowed: {allowed}")
        for name in ("in_channels", "out_channels", "in_height", "in_width", "stride", "kernel",
                     "period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                bad(name, value, "an integer")
        if not isinstance(self.pool, (bool, int)) or self.pool not in (0, 1):
            bad("pool", self.pool, "true or false")
        index = self.broken_rule(config)
        if index is not None:
            rule = DESCRIPTOR_RULES[index]
            bad(rule.name, rule.value(self), rule.describe(config))
        if masks is not None:
            if len(masks) != self.period:
                bad("period", self.period, f"the mask table's length {len(masks)}")
            for q, mask in enumerate(masks):
                if not isinstance(mask, int) or isinstance(mask, bool) or not 1 <= mask <= DENSE_MASK:
                    bad(f"mask {q}", mask, f"1..{DENSE_MASK} (9 tap bits, at least one kept: the "
                                           f"board refuses a mask without taps, NAK NO_TAPS)")
            if self.kernel == 1 and any(m != 1 << 4 for m in masks):
                bad("mask table", masks, "only the centre tap (0x010) for a 1x1 layer")
            words = self.out_channels * cycles_per_output_channel(config, masks, self.in_channels)
            if words > config.weight_depth:
                bad("weight words (C_out * cycles per output channel)", words,
                    f"at most weight_depth = {config.weight_depth}")

    def broken_rule(self, config) -> int | None:
        """The index in :data:`DESCRIPTOR_RULES` of the first rule this descriptor breaks for
        ``config`` (the rule a board's ``BAD_DESCRIPTOR`` NAK names), or None. Its fields must be
        integers (:meth:`check` says which is not)."""
        for index, rule in enumerate(DESCRIPTOR_RULES):
            if rule.applies is not None and not rule.applies(self, config):
                continue
            if rule.value(self) not in rule.allowed(config):
                return index
        return None

    def encode(self, config) -> int:
        """The integer to drive on the ``layer`` port."""
        self.check(config)
        layout = layer_descriptor_layout(config)
        return layout.const({
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "in_height": self.in_height, "in_width": self.in_width,
            "stride": self.stride, "kernel": self.kernel,
            "relu": int(bool(self.relu)), "residual": int(bool(self.residual)),
            "period": self.period, "pool": int(bool(self.pool)),
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
