"""Post-processor: bias, requantization, residual add, ReLU, int8 saturation, output FIFO.

Per output channel o with quantization entry (b, M, S, R) and, when the layer has a residual,
the int8 residual value r of the same pixel, each of the tm accumulators becomes exactly
:func:`psconv.sim.golden.ops.requantize`::

    v = (acc + b) * M + r * R          (signed, < 2**63)
    y = (v + 2**(S-1)) >> S            (arithmetic shift: round half toward +inf)
    y = max(y, 0)                      if relu
    y = min(max(y, -128), 127)

and pixels outside the map (x >= W_out, ``result_pixels`` bit clear) are output as 0.

Pipeline (tm parallel lanes, one result per cycle sustained, sized for 150 MHz on an ECP5): P1
registers the table entry (a block RAM output) and the accumulator, and r * R starts as two 8 x 15
products (:class:`~psconv.hw.dsp.RegisteredMultiplier`: input registers at P1, products at P2,
summed at P3); (acc + b) * M goes into four partial products of at most 17 x 15 bits (input
registers at P2, products at P3); P4 sums the partial products pairwise and adds 2**(S-1) to the
residual term; P5 gives (acc + b) * M; P6 adds the residual/rounding term; P7, P8 shift by S
(multiples of 8, then 0..7), then ReLU/saturate/mask -> output FIFO. Datapath registers have no
reset (``valid`` is reset).

Quantization entries arrive on ``quant_in`` (exactly ``out_channels`` beats after ``start``) and are
stored by output channel; ``quant_loaded`` counts them so compute of channel o may start as soon as
entry o is in. Results arrive in order o = 0..C_out-1, repeated per pixel group, so the processor
keeps its own channel counter; the entry memory is read one result ahead.

Residual beats (``residual_in``, tm int8 per beat, in output-beat order) are prefetched into a
FIFO, and only when ``residual`` is set; exactly ``out_height * ceil(out_width/tm) * out_channels``
beats are accepted. One is popped per result. ``residual_level`` lets the sequencer start an
output channel only when its residual beat is already buffered, so a late residual stream stalls
the issue of work, never the pipeline.

Outputs go through a FIFO of :attr:`FIFO_DEPTH` beats to ``out``; ``out_level`` and ``written``
(one pulse per beat entering the FIFO) let the sequencer reserve FIFO space before it starts an
output channel, so the pipeline never needs back-pressure.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .dsp import RegisteredMultiplier

from .layer import QUANT_ENTRY_LAYOUT


class PostProcessor(wiring.Component):
    FIFO_DEPTH = 32
    LATENCY = 8
    """Cycles from ``result_valid`` to the beat being written into the output FIFO."""

    def __init__(self, config):
        self.config = config
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
        table = m.submodules.quant = memory.Memory(shape=QUANT_ENTRY_LAYOUT, depth=cfg.max_out_channels, init=[])
        qw = table.write_port()
        qr = table.read_port(domain="sync")
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
        m.d.comb += qr.addr.eq(Mux(self.result_valid, channel_next, channel))
        entry = qr.data   # entry of `channel`, valid in the cycle its result arrives

        # ---- residual prefetch ----
        res_fifo = m.submodules.residual_fifo = fifo.SyncFIFO(width=8 * tm, depth=self.FIFO_DEPTH)
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
        m.d.sync += [valid[0].eq(self.result_valid), pixels[0].eq(self.result_pixels),
                     shift[0].eq(entry.shift)]
        for k in range(1, stages):
            m.d.sync += [valid[k].eq(valid[k - 1]), pixels[k].eq(pixels[k - 1]), shift[k].eq(shift[k - 1])]

        # P1: register the table entry (block RAM output) and the residual (FIFO output).
        bias1, mult1, rmult1 = Signal(signed(32)), Signal(30), Signal(30)
        half_pos1 = Signal(6)                       # S - 1: position of the rounding bit
        m.d.sync += [bias1.eq(entry.bias), mult1.eq(entry.multiplier),
                     rmult1.eq(entry.residual_multiplier), half_pos1.eq(entry.shift - 1)]
        # P2: rounding constant. (The multiplier halves go straight into the DSP input registers.)
        half2 = Signal(64, reset_less=True)
        m.d.sync += half2.eq(Const(1, 1) << half_pos1)
        half3 = Signal(64, reset_less=True)
        m.d.sync += half3.eq(half2)
        rmult_lo, rmult_hi = entry.residual_multiplier[:15], entry.residual_multiplier[15:]

        relu = self.relu
        low = Mux(relu, 0, -128)
        out_bytes = Signal(self.pixel_layout)
        biased_width = max(cfg.acc_width, 32) + 1
        for r in range(tm):
            acc1 = Signal(signed(cfg.acc_width), name=f"acc1_{r}", reset_less=True)
            m.d.sync += acc1.eq(self.result[r])
            # P1 -> P3: r * R as two 8 x 15 products (DSP input registers at P1, products at P2),
            # summed at P3; + 2**(S-1) at P4.
            res0 = Mux(self.residual, residual_now[r], 0)
            rp = {}
            for name, half in (("lo", rmult_lo), ("hi", rmult_hi)):
                mul = m.submodules[f"res_mul_{name}{r}"] = RegisteredMultiplier(8, 16, 24)
                m.d.comb += [mul.a.eq(res0), mul.b.eq(half.as_unsigned())]
                rp[name] = mul.p
            res_prod3 = Signal(signed(39), name=f"res_prod3_{r}", reset_less=True)
            m.d.sync += res_prod3.eq(rp["lo"] + (rp["hi"] << 15))
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
            # P4: combine partial products pairwise; residual term + rounding constant.
            lo4 = Signal(unsigned(17 + 30 + 1), name=f"lo4_{r}", reset_less=True)
            hi4 = Signal(signed(len(b_hi) + 31 + 1), name=f"hi4_{r}", reset_less=True)
            extra4 = Signal(signed(65), name=f"extra4_{r}", reset_less=True)
            m.d.sync += [lo4.eq(pp["ll"] + (pp["lh"] << 15)), hi4.eq(pp["hl"] + (pp["hh"] << 15)),
                         extra4.eq(res_prod3 + half3)]
            # P5: (acc + b) * M.
            scaled5 = Signal(signed(biased_width + 31), name=f"scaled5_{r}", reset_less=True)
            extra5 = Signal(signed(65), name=f"extra5_{r}", reset_less=True)
            m.d.sync += [scaled5.eq((hi4 << 17) + lo4), extra5.eq(extra4)]
            # P6: v + 2**(S-1).
            rounded6 = Signal(signed(67), name=f"rounded6_{r}", reset_less=True)
            m.d.sync += rounded6.eq(scaled5 + extra5)
            # P7, P8: arithmetic shift by S, in two steps (multiples of 8, then 0..7).
            coarse7 = Signal(signed(67), name=f"coarse7_{r}", reset_less=True)
            fine8 = Signal(signed(67), name=f"fine8_{r}", reset_less=True)
            m.d.sync += [coarse7.eq(rounded6 >> Cat(C(0, 3), shift[5][3:6])),
                         fine8.eq(coarse7 >> shift[6][:3])]
            # ReLU, saturation, padding pixels -> output FIFO.
            clamped = Signal(signed(8), name=f"clamped{r}")
            m.d.comb += clamped.eq(Mux(fine8 > 127, 127, Mux(fine8 < low, low, fine8)))
            m.d.comb += out_bytes[r].eq(Mux(pixels[stages - 1][r], clamped, 0))

        out_fifo = m.submodules.out_fifo = fifo.SyncFIFO(width=8 * tm, depth=self.FIFO_DEPTH)
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
