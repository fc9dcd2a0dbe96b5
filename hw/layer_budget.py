"""The per-layer beat budgets the command processor enforces, computed in gateware.

The command processor must refuse a write the engine would never take (it blocks while it
pushes a payload into a stream, so an extra beat would hang it): it needs, per layer, how many
beats each stream takes. :class:`LayerBudget` derives them from the descriptor and the mask table
once per layer, small rather than fast.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.protocol.descriptor import layer_descriptor_layout

from .arith import SerialDivider, output_size_value


class LayerBudget(wiring.Component):
    """How many beats each engine stream of a layer takes, from its descriptor and mask table.

    Inputs (held from ``start`` until ``done``): ``descriptor`` fields in_channels, out_channels,
    in_height, in_width, stride, residual, period, and ``taps`` (T, kept taps of the P masks).
    After a ``start`` pulse it computes

    * ``fmap_beats`` = ceil(C_in * H * W / tn)
    * ``residual_beats`` = H_out * ceil(W_out / tm) * C_out if ``residual`` else 0
    * ``weight_beats`` = C_out * ceil(ceil(C_in / P) * T / tn)

    (the formulas of :meth:`psconv.protocol.descriptor.LayerSpec.output_beats`,
    :func:`psconv.schedule.cycles_per_output_channel` and :func:`psconv.protocol.beats.fmap_beats`)
    and hands each out once, in that order: in the cycle ``store_fmap`` / ``store_residual`` /
    ``store_weights`` is high, ``value`` is that stream's beats (nothing holds them here: the
    consumer's counters are the only copy). ``done`` rises after the last one and holds until the
    next ``start``; a ``start`` during a run restarts it. ``width`` bits hold every product the
    descriptor's field widths allow, so nothing wraps.

    How (small on purpose: this runs once per layer): one ``width``-bit register ``q`` holds the
    running value, and a shift-add multiplier built around it (``{hi, q}`` shifts right one bit a
    cycle while ``hi`` adds the small factor, ``width`` cycles per product) computes
    ``q * f + c``; ceil(x / 2**k) is that with ``f`` = 1, ``c`` = 2**k - 1 and k more shifts.
    A :class:`~psconv.hw.arith.SerialDivider` does ceil(C_in / P) (a narrow one) and, only for a
    ``tn`` or ``tm`` that is not a power of two, the divisions by them. About 7 ``width``-cycle
    products in all: ~150 cycles for the small configurations, ~250 for the default one.
    """

    def __init__(self, config):
        self.config = config
        self.layout = layer_descriptor_layout(config)
        bits = {name: field.shape.width for name, field in self.layout}
        self.taps_width = (9 * ((1 << bits["period"]) - 1)).bit_length()
        self.width = 1 + max(
            bits["in_channels"] + bits["in_height"] + bits["in_width"],
            bits["in_height"] + bits["in_width"] + bits["out_channels"],
            bits["in_channels"] + self.taps_width + bits["out_channels"])
        self.factor_width = max(bits["in_height"], bits["in_width"], bits["out_channels"],
                                self.taps_width)
        pow2 = all(n & (n - 1) == 0 for n in (config.tn, config.tm))
        if pow2:          # the divider only does ceil(C_in / P)
            self.dividend_width = max(bits["in_channels"], bits["period"]) + 1
            self.divisor_width = bits["period"]
        else:
            self.dividend_width = self.width
            self.divisor_width = max(config.tn, config.tm, (1 << bits["period"]) - 1).bit_length()
        super().__init__({
            "start": In(1),
            "descriptor": In(self.layout),
            "taps": In(self.taps_width),
            "value": Out(self.width),
            "store_fmap": Out(1),
            "store_residual": Out(1),
            "store_weights": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        d = self.descriptor
        width = self.width
        m.submodules.divider = div = SerialDivider(self.dividend_width, self.divisor_width)
        q = Signal(width)
        hi = Signal(max(self.factor_width, (max(cfg.tn, cfg.tm) - 1).bit_length()))
        factor = Signal(self.factor_width)
        count = Signal(range(max(width, 7)))
        m.d.comb += self.value.eq(q)
        out_height = output_size_value(d.in_height, d.stride)
        out_width = output_size_value(d.in_width, d.stride)

        def ceil_div(n):
            """Steps for q = q // n (the caller has added n - 1 to q: a ceiling division)."""
            if n & (n - 1) == 0:
                return [("shift", n.bit_length() - 1)] if n > 1 else []
            return [("div", q, n)]

        def times_then_ceil(f, n):
            """q = ceil(q * f / n): the ``+ n - 1`` rides on the product (q * f + c)."""
            return [("mul", f, n - 1)] + ceil_div(n)

        steps = (
            [("load", d.in_channels), ("mul", d.in_height, 0)]
            + times_then_ceil(d.in_width, cfg.tn) + [("store", self.store_fmap)]
            + [("load", out_width + (cfg.tm - 1))] + ceil_div(cfg.tm)
            + [("mul", out_height, 0), ("mul", Mux(d.residual, d.out_channels, 0), 0),
               ("store", self.store_residual)]
            + [("div", d.in_channels + d.period - 1, d.period)]
            + times_then_ceil(self.taps, cfg.tn)
            + [("mul", d.out_channels, 0), ("store", self.store_weights)])
        # ("mul", f, c, n): n cycles of the multiply datapath; a product is n = width, a shift
        # right by k is n = k with f = c = 0
        steps = [("mul", 0, 0, step[1]) if step[0] == "shift"
                 else step + (width,) if step[0] == "mul" else step for step in steps]

        def enter(k):
            """Go to step ``k`` (its first cycle is the next one)."""
            if k == len(steps):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
                return
            kind, *args = steps[k]
            if kind == "mul":
                m.d.sync += [hi.eq(args[1]), count.eq(args[2] - 1)]
            m.next = f"STEP_{k}"

        # {hi, q} >> 1 after hi += factor (if q[0]): q * factor + hi, one bit a cycle
        total = Signal(len(hi) + 1)
        m.d.comb += total.eq(hi + Mux(q[0], factor, 0))

        def restart():
            with m.If(self.start):
                m.d.sync += self.done.eq(0)
                enter(0)

        with m.FSM():
            with m.State("IDLE"):
                restart()
            for k, (kind, *args) in enumerate(steps):
                with m.State(f"STEP_{k}"):
                    if kind == "load":
                        m.d.sync += q.eq(args[0])
                        enter(k + 1)
                    elif kind == "mul":
                        m.d.comb += factor.eq(args[0])
                        m.d.sync += [q.eq(Cat(q[1:], total[0])), hi.eq(total[1:]),
                                     count.eq(count - 1)]
                        with m.If(count == 0):
                            enter(k + 1)
                    elif kind == "store":
                        m.d.comb += args[0].eq(1)
                        enter(k + 1)
                    else:   # div: issue, then wait
                        m.d.comb += [div.start.eq(1), div.dividend.eq(args[0]),
                                     div.divisor.eq(args[1])]
                        m.next = f"WAIT_{k}"
                    restart()
                if kind == "div":
                    with m.State(f"WAIT_{k}"):
                        with m.If(div.done):
                            m.d.sync += q.eq(div.quotient)
                            enter(k + 1)
                        restart()
        return m
