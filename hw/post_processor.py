"""Post-processor: bias, requantization, residual add, ReLU, int8 saturation, output FIFO.

Per output channel o with quantization entry (b, M, S, R) and, when the layer has a residual,
the int8 residual value r of the same pixel, each of the tm accumulators becomes exactly
:func:`psconv.sim.golden.ops.requantize`::

    v = (acc + b) * M + r * R          (signed, < 2**63)
    y = (v + 2**(S-1)) >> S            (arithmetic shift: round half toward +inf)
    y = max(y, 0)                      if relu
    y = min(max(y, -128), 127)

and pixels outside the map (x >= W_out, ``result_pixels`` bit clear) are output as 0.

Pipeline (tm parallel lanes, one result per cycle sustained, sized for 150 MHz on an ECP5): at P1
the table entry is there (``register_entry``) and the accumulator and the residual are
registered; r * R goes into two 8 x 15 products (:class:`~psconv.hw.dsp.RegisteredMultiplier`:
input registers at P2, products at P3); (acc + b) * M into four partial products of at most
17 x 15 bits (input registers at P2, products at P3); P4 sums each pair of partial products;
P5 gives (acc + b) * M; P6 adds the residual term, giving v; P7, P8 compute t = v >> (S-1)
(multiples of 8, then 0..7); then y = (t + 1) >> 1, ReLU/saturate/mask -> output FIFO. Datapath
registers have no reset (``valid`` is reset).

Why t = v >> (S-1) and not v + 2**(S-1): floor((v + 2**(S-1)) / 2**S) = floor((floor(v / 2**(S-1))
+ 1) / 2), so the rounding needs no 64-bit constant and no 67-bit adder, and t only has to be
exact as far as int8 saturation can tell: P7 clamps it to :attr:`COARSE_BITS` bits
(:func:`saturating_coarse_shift`). The result is the same integer, element for element.

Quantization entries arrive on ``quant_in`` (exactly ``out_channels`` beats after ``start``) and are
stored by output channel; ``quant_loaded`` counts them so compute of channel o may start as soon as
entry o is in. Results arrive in order o = 0..C_out-1, repeated per pixel group, so the processor
keeps its own channel counter and reads the entry of each result from it.

Residual beats (``residual_in``, tm int8 per beat, in output-beat order) are prefetched into a
FIFO, and only when ``residual`` is set; exactly ``out_height * ceil(out_width/tm) * out_channels``
beats are accepted. One is popped per result. ``residual_level`` lets the sequencer start an
output channel only when its residual beat is already buffered, so a late residual stream stalls
the issue of work, never the pipeline.

Outputs go through a FIFO of :attr:`FIFO_DEPTH` beats to ``out``
(:class:`~psconv.hw.block_ram.BlockRamFIFO`: its read port is registered, so a beat leaves 2
cycles after it is written; the iCE40 has no LUT RAM and would build an asynchronous-read FIFO
from flip-flops); ``out_level`` and ``written``
(one pulse per beat entering the FIFO) let the sequencer reserve FIFO space before it starts an
output channel, so the pipeline never needs back-pressure.
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.protocol.descriptor import QUANT_ENTRY_LAYOUT

from .block_ram import BlockRamFIFO, collision_free_memory, read_port
from .dsp import RegisteredMultiplier
from .target import area_first


def saturating_coarse_shift(m, value, steps, width: int, name: str):
    """``value >> (8 * steps)`` (arithmetic), clamped to the signed ``width``-bit range.

    Why clamping is exact here: the result is shifted right by at most 7 more bits and then
    saturated to int8, so with ``width`` >= 17 any value beyond the range saturates the same way
    as its clamped stand-in (|x| >= 2**16 gives |x >> 7| >= 512, past int8 after rounding).
    The range check is a suffix AND over 8-bit segments of ``value`` (one per step), computed
    beside the shift multiplexer rather than after it.
    """
    total = len(value)
    sign = value[total - 1]
    options = 1 << len(steps)
    fits = [None] * options
    all_zero, all_ones = C(1, 1), C(1, 1)
    for k in reversed(range(options)):
        low = 8 * k + width - 1           # lowest bit that must equal the sign for step k
        if low < total:
            segment = value[low:min(low + 8, total)] if k + 1 < options else value[low:]
            zero_k = Signal(name=f"{name}_zero{k}")
            ones_k = Signal(name=f"{name}_ones{k}")
            m.d.comb += [zero_k.eq((segment == 0) & all_zero),
                         ones_k.eq((segment == (1 << len(segment)) - 1) & all_ones)]
            all_zero, all_ones = zero_k, ones_k
            fits[k] = zero_k | ones_k
        else:
            fits[k] = C(1, 1)
    shifted = []
    for k in range(options):
        option = Signal(signed(width), name=f"{name}_shift{k}")
        m.d.comb += option.eq(value.as_signed() >> min(8 * k, total - 1))
        shifted.append(option)
    limit = Mux(sign, -(1 << (width - 1)), (1 << (width - 1)) - 1)
    return Mux(Cat(*fits).bit_select(steps, 1), Array(shifted)[steps], limit)


class PostProcessor(wiring.Component):
    FIFO_DEPTH = 32
    COARSE_BITS = 17
    """Width of the shift stages (see :func:`saturating_coarse_shift`): t = v >> (S - 1) is
    kept only as far as int8 saturation can tell."""
    LATENCY = 8
    """Cycles from ``result_valid`` to the beat being written into the output FIFO."""

    def __init__(self, config, register_entry: bool | None = None):
        """``register_entry``: P1 takes the table entry from flip-flops loaded from the block RAM
        a result ahead (True: no logic after the block RAM output) or straight from the block
        RAM, read when the result arrives (False: ~70 flip-flops fewer). None: False where
        :func:`~psconv.hw.target.area_first`, else True. Same cycles, same results."""
        self.config = config
        self.register_entry = register_entry
        tm = config.tm
        pix = data.ArrayLayout(signed(8), tm)
        self.pixel_layout = pix
        super().__init__({
            "start": In(1),
            "out_channels": In(range(config.max_out_channels + 1)),
            "out_height": In(range(config.max_height + 1)),
            "out_width": In(range(config.max_width + 1)),
            "relu": In(1),
            "residual": In(1),
            "quant_in": In(stream.Signature(QUANT_ENTRY_LAYOUT)),
            "quant_loaded": Out(range(config.max_out_channels + 1)),
            "residual_in": In(stream.Signature(pix)),
            "residual_level": Out(range(self.FIFO_DEPTH + 1)),
            "residual_popped": Out(1),
            "result_valid": In(1),
            "result": In(data.ArrayLayout(signed(config.acc_width), tm)),
            "result_pixels": In(tm),
            "out": Out(stream.Signature(pix)),
            "out_level": Out(range(self.FIFO_DEPTH + 1)),
            "written": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm

        # ---- quantization table ----
        # A read of the entry being written is never used: an entry is written before the
        # sequencer lets its channel start (psconv.hw.block_ram).
        table = m.submodules.quant = collision_free_memory(shape=QUANT_ENTRY_LAYOUT,
                                                           depth=cfg.max_out_channels)
        qw = table.write_port()
        qr = read_port(m, table, "quant_read")
        q_accept = self.quant_loaded < self.out_channels
        m.d.comb += [
            self.quant_in.ready.eq(q_accept & ~self.start),
            qw.addr.eq(self.quant_loaded), qw.data.eq(self.quant_in.payload),
            qw.en.eq(self.quant_in.valid & self.quant_in.ready),
        ]
        with m.If(self.start):
            m.d.sync += self.quant_loaded.eq(0)
        with m.Elif(qw.en):
            m.d.sync += self.quant_loaded.eq(self.quant_loaded + 1)

        channel = Signal(range(cfg.max_out_channels))
        channel_next = Signal(range(cfg.max_out_channels))
        m.d.comb += channel_next.eq(Mux(channel + 1 == self.out_channels, 0, channel + 1))
        with m.If(self.start):
            m.d.sync += channel.eq(0)
        with m.Elif(self.result_valid):
            m.d.sync += channel.eq(channel_next)
        register_entry = self.register_entry
        if register_entry is None:
            register_entry = not area_first(platform)
        # the entry of a result arriving at P0 is at P1 either way: in flip-flops loaded from the
        # block RAM read a result ahead, or straight from the block RAM read at P0
        if register_entry:
            m.d.comb += qr.addr.eq(Mux(self.result_valid, channel_next, channel))
            entry1 = Signal(QUANT_ENTRY_LAYOUT, reset_less=True)
            m.d.sync += entry1.eq(qr.data)
        else:
            m.d.comb += qr.addr.eq(channel)
            entry1 = qr.data

        # ---- residual prefetch ----
        res_fifo = m.submodules.residual_fifo = BlockRamFIFO(width=8 * tm, depth=self.FIFO_DEPTH)
        r_o = Signal(range(cfg.max_out_channels + 1))
        r_x = Signal(range(cfg.max_width + cfg.tm + 1))
        r_y = Signal(range(cfg.max_height + 1))
        r_accept = self.residual & (r_y < self.out_height) & ~self.start
        m.d.comb += [
            res_fifo.w_data.eq(self.residual_in.payload),
            res_fifo.w_en.eq(self.residual_in.valid & r_accept),
            self.residual_in.ready.eq(res_fifo.w_rdy & r_accept),
            self.residual_level.eq(res_fifo.level),
        ]
        with m.If(self.start):
            m.d.sync += [r_o.eq(0), r_x.eq(0), r_y.eq(0)]
        with m.Elif(self.residual_in.valid & self.residual_in.ready):
            with m.If(r_o + 1 == self.out_channels):
                m.d.sync += r_o.eq(0)
                with m.If(r_x + tm >= self.out_width):
                    m.d.sync += [r_x.eq(0), r_y.eq(r_y + 1)]
                with m.Else():
                    m.d.sync += r_x.eq(r_x + tm)
            with m.Else():
                m.d.sync += r_o.eq(r_o + 1)
        pop = self.result_valid & self.residual
        m.d.comb += [res_fifo.r_en.eq(pop), self.residual_popped.eq(pop)]
        residual_now = data.View(self.pixel_layout, res_fifo.r_data)

        # ---- arithmetic pipeline (stage k's registers are visible k cycles after the input) ----
        stages = self.LATENCY
        valid = [Signal(name=f"valid_p{k}") for k in range(1, stages + 1)]
        pixels = [Signal(tm, name=f"pixels_p{k}") for k in range(1, stages + 1)]
        shift = [Signal(6, name=f"shift_p{k}") for k in range(1, stages + 1)]
        # the shift chain carries S - 1 (1 <= S <= 62): the rounding step needs t = v >> (S - 1)
        m.d.sync += [valid[0].eq(self.result_valid), pixels[0].eq(self.result_pixels)]
        m.d.comb += shift[0].eq(entry1.shift - 1)
        for k in range(1, stages):
            m.d.sync += [valid[k].eq(valid[k - 1]), pixels[k].eq(pixels[k - 1]), shift[k].eq(shift[k - 1])]

        # P1: the table entry (see above) and the registered residual (FIFO output).
        bias1, mult1 = entry1.bias, entry1.multiplier
        rmult_lo, rmult_hi = entry1.residual_multiplier[:15], entry1.residual_multiplier[15:]

        relu = self.relu
        low = Mux(relu, 0, -128)
        out_bytes = Signal(self.pixel_layout)
        biased_width = max(cfg.acc_width, 32) + 1
        for r in range(tm):
            acc1 = Signal(signed(cfg.acc_width), name=f"acc1_{r}", reset_less=True)
            m.d.sync += acc1.eq(self.result[r])
            # P2 -> P4: r * R as two 8 x 15 products (DSP input registers at P2, products at P3),
            # summed at P4.
            res1 = Signal(signed(8), name=f"res1_{r}", reset_less=True)
            m.d.sync += res1.eq(Mux(self.residual, residual_now[r], 0))
            rp = {}
            for name, half in (("lo", rmult_lo), ("hi", rmult_hi)):
                mul = m.submodules[f"res_mul_{name}{r}"] = RegisteredMultiplier(8, 16, 24)
                m.d.comb += [mul.a.eq(res1), mul.b.eq(half.as_unsigned())]
                rp[name] = mul.p
            # P2 -> P3: (acc + b) * M as four partial products of at most 17 x 15 bits (one DSP
            # each, input registers at P2, products at P3).
            biased = Signal(signed(biased_width), name=f"biased1_{r}")
            m.d.comb += biased.eq(acc1 + bias1)
            b_lo, b_hi = biased[:17], biased[17:].as_signed()
            pp = {}
            for name, x, y in (("ll", b_lo, mult1[:15]), ("lh", b_lo, mult1[15:]),
                               ("hl", b_hi, mult1[:15]), ("hh", b_hi, mult1[15:])):
                xw = len(x) + (0 if name[0] == "h" else 1)
                mul = m.submodules[f"pp_{name}{r}"] = RegisteredMultiplier(xw, 16, xw + 16)
                m.d.comb += [mul.a.eq(x), mul.b.eq(y.as_unsigned())]
                pp[name] = mul.p
            # P4: combine partial products pairwise, and the residual's.
            lo4 = Signal(unsigned(17 + 30 + 1), name=f"lo4_{r}", reset_less=True)
            hi4 = Signal(signed(len(b_hi) + 31 + 1), name=f"hi4_{r}", reset_less=True)
            res4 = Signal(signed(39), name=f"res4_{r}", reset_less=True)
            m.d.sync += [lo4.eq(pp["ll"] + (pp["lh"] << 15)), hi4.eq(pp["hl"] + (pp["hh"] << 15)),
                         res4.eq(rp["lo"] + (rp["hi"] << 15))]
            # P5: (acc + b) * M.
            scaled5 = Signal(signed(biased_width + 31), name=f"scaled5_{r}", reset_less=True)
            res5 = Signal(signed(39), name=f"res5_{r}", reset_less=True)
            m.d.sync += [scaled5.eq((hi4 << 17) + lo4), res5.eq(res4)]
            # P6: v.
            v6 = Signal(signed(len(scaled5) + 1), name=f"v6_{r}", reset_less=True)
            m.d.sync += v6.eq(scaled5 + res5)
            # P7, P8: t = v >> (S - 1), in two steps (multiples of 8, then 0..7), each result
            # clamped to COARSE_BITS (see saturating_coarse_shift).
            coarse7 = Signal(signed(self.COARSE_BITS), name=f"coarse7_{r}", reset_less=True)
            fine8 = Signal(signed(self.COARSE_BITS), name=f"fine8_{r}", reset_less=True)
            m.d.sync += [coarse7.eq(saturating_coarse_shift(m, v6, shift[5][3:6], self.COARSE_BITS,
                                                             name=f"coarse{r}")),
                         fine8.eq(coarse7 >> shift[6][:3])]
            # (t + 1) >> 1 is the rounded quotient; ReLU, saturation, padding pixels -> output FIFO.
            rounded = Signal(signed(self.COARSE_BITS), name=f"rounded{r}")
            clamped = Signal(signed(8), name=f"clamped{r}")
            m.d.comb += [rounded.eq((fine8 + 1) >> 1),
                         clamped.eq(Mux(rounded > 127, 127, Mux(rounded < low, low, rounded)))]
            m.d.comb += out_bytes[r].eq(Mux(pixels[stages - 1][r], clamped, 0))

        out_fifo = m.submodules.out_fifo = BlockRamFIFO(width=8 * tm, depth=self.FIFO_DEPTH)
        m.d.comb += [
            out_fifo.w_data.eq(out_bytes),
            out_fifo.w_en.eq(valid[stages - 1]),
            self.written.eq(valid[stages - 1]),
            self.out.valid.eq(out_fifo.r_rdy),
            self.out.payload.eq(out_fifo.r_data),
            out_fifo.r_en.eq(self.out.ready),
            self.out_level.eq(out_fifo.level),
        ]
        return m
