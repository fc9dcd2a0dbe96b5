"""Output max pool: the engine's output stream, optionally 2x2 stride-2 max-pooled on its way out.

The engine's ``out`` beats arrive in the order: for y in range(H_out), for xb in
range(ceil(W_out / tm)), for o in range(C_out): the tm pixels x = xb*tm + r (0 for x >= W_out).
With ``enable`` the block returns :func:`psconv.sim.golden.ops.maxpool2d_int` of that map in the
same order for the pooled size: for yp in range(H_out // 2), for pb in
range(ceil((W_out // 2) / tm)), for o: the tm pooled pixels p = pb*tm + r (0 for p >= W_out // 2);
an odd last row or column is dropped.

Why this works with two small memories: pooled block pb covers input columns 2*pb*tm ..
2*pb*tm + 2*tm - 1, exactly the engine's blocks 2*pb and 2*pb + 1 (whatever ``tm`` is), and
pooled row yp is input rows 2*yp and 2*yp + 1. So per input beat (y, xb, o):

* block 2*pb (``xb`` even) is kept in the *left* memory at ``o`` (``max_out_channels`` beats);
* at block 2*pb + 1 the two beats, side by side, give the tm maxima of horizontal pairs; in an
  even row they go to the *row* memory at (pb, o) (``max_out_channels * ceil((max_width // 2) /
  tm)`` beats); in an odd row their maxima with the row memory's word are the pooled beat,
  which goes out;
* an odd number of blocks ends a row with block 2*pb alone: its pairs are taken with zeros on
  the right, which only ever meet columns beyond ``W_out // 2`` (output as 0).

Pooled pixels p >= W_out // 2 are output as 0. A last even row with no odd row after it only
writes the row memory, so an odd ``H_out`` needs no special case.

Timing: an input beat is taken in cycle t (both memories read; the left memory is written
with the raw beat in t+1), the memories' words are registered in t+2 with nothing between the
block RAM outputs and those registers, the pair maxima are computed from registers in t+2 (row
memory written), registered with the row word in t+3, where the pooled beat is computed (one
compare per stage), and the pooled beat is in the output register in t+4. A
read is transparent to the write of the same cycle (a one-channel layer reads the left word its
previous beat wrote), and the row word of a beat right behind the beat that writes it is
forwarded from that beat's pair maxima. One input beat per cycle while ``out`` is ready;
``in_.ready`` falls only while a pooled beat waits in the output register and the next result
is another. ``idle`` is high when no beat is held (the engine's ``done`` waits for it). Without
``enable`` beats pass straight through (comb), so an unpooled layer's cycles do not change.

``start`` (a pulse, with ``enable``, ``out_channels`` and ``out_width`` held from then until
the layer's last beat is out) resets the position to the first beat.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out


def row_memory_depth(config) -> int:
    """Words (``tm`` bytes each) of the row memory: every output channel's pooled blocks."""
    return max(1, config.max_out_channels * -(-(config.max_width // 2) // config.tm))


class OutputMaxPool(wiring.Component):
    """Ports: ``start`` In(1), ``enable`` In(1), ``out_channels`` In, ``out_width`` In (the
    convolution's W_out), ``in_`` In(stream ArrayLayout(signed(8), tm)), ``out`` Out(stream of
    the same layout), ``idle`` Out(1). See the module docstring for order and timing."""

    def __init__(self, config):
        self.config = config
        pixels = data.ArrayLayout(signed(8), config.tm)
        self.pixel_layout = pixels
        super().__init__({
            "start": In(1),
            "enable": In(1),
            "out_channels": In(range(config.max_out_channels + 1)),
            "out_width": In(range(config.max_width + 1)),
            "in_": In(stream.Signature(pixels)),
            "out": Out(stream.Signature(pixels)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm
        row_depth = row_memory_depth(cfg)

        m.submodules.left = left = memory.Memory(shape=self.pixel_layout,
                                                  depth=cfg.max_out_channels, init=[])
        m.submodules.row = row = memory.Memory(shape=self.pixel_layout, depth=row_depth, init=[])
        left_w = left.write_port()
        row_w = row.write_port()
        left_r = left.read_port(transparent_for=(left_w,))
        row_r = row.read_port(transparent_for=(row_w,))

        # position of the next input beat
        o = Signal(range(cfg.max_out_channels))
        odd_row = Signal()
        second = Signal()                                  # xb odd: the block 2*pb + 1
        x0 = Signal(range(cfg.max_width + tm + 1))         # xb * tm
        p0 = Signal(range(cfg.max_width + tm + 1))         # pb * tm
        row_base = Signal(range(row_depth + cfg.max_out_channels + 1))   # pb * C_out
        pooled_width = Signal(range(cfg.max_width // 2 + 1))
        m.d.comb += pooled_width.eq(self.out_width >> 1)
        last_block = Signal()
        m.d.comb += last_block.eq(x0 + tm >= self.out_width)

        # what a taken beat carries through both stages, and what to do with it
        carried = data.StructLayout({
            "beat": self.pixel_layout,
            "odd": 1,                               # an odd input row
            "pair": 1,                              # completes pairs: second, or the row's last block
            "second": 1,
            "emit": 1,                              # completes a pooled beat that is kept
            "keep": tm,                             # pooled pixels p < W_out // 2
            "o": range(cfg.max_out_channels),
            "row_addr": range(row_depth),
        })
        # stage 1: the beat taken last cycle (memory reads in flight); stage 2: the same, with
        # the memories' words in registers
        s1_valid, s2_valid = Signal(), Signal()
        s1, s2 = Signal(carried), Signal(carried)
        s2_left = Signal(self.pixel_layout)
        s2_above = Signal(self.pixel_layout)

        # stage 3: a beat that completes a kept pooled beat, with its pair maxima and row word
        s3_valid, s3_keep = Signal(), Signal(tm)
        s3_pair_max = Signal(self.pixel_layout)
        s3_above = Signal(self.pixel_layout)

        out_valid = Signal()
        out_beat = Signal(self.pixel_layout)

        advance = Signal()
        m.d.comb += advance.eq(~(s3_valid & out_valid & ~self.out.ready))
        take = Signal()
        m.d.comb += take.eq(self.in_.valid & self.in_.ready)

        with m.If(self.enable):
            m.d.comb += [self.in_.ready.eq(advance),
                         self.out.valid.eq(out_valid), self.out.payload.eq(out_beat)]
        with m.Else():
            m.d.comb += [self.in_.ready.eq(self.out.ready),
                         self.out.valid.eq(self.in_.valid), self.out.payload.eq(self.in_.payload)]
        m.d.comb += self.idle.eq(~s1_valid & ~s2_valid & ~s3_valid & ~out_valid)

        row_addr = Signal(range(row_depth + cfg.max_out_channels + 1))
        m.d.comb += [row_addr.eq(row_base + o),
                     left_r.addr.eq(o), left_r.en.eq(advance),
                     row_r.addr.eq(row_addr), row_r.en.eq(advance)]

        with m.If(advance):
            m.d.sync += s1_valid.eq(take & self.enable)
        with m.If(take & advance):
            pair = second | last_block
            m.d.sync += [s1.beat.eq(self.in_.payload), s1.odd.eq(odd_row), s1.pair.eq(pair),
                         s1.second.eq(second), s1.o.eq(o), s1.row_addr.eq(row_addr),
                         s1.emit.eq(odd_row & pair & (p0 < pooled_width)),
                         s1.keep.eq(Cat(*[p0 + r < pooled_width for r in range(tm)]))]

        # stage 2's pairs of the two blocks side by side (block 2*pb alone: zeros on its right)
        first_half = Mux(s2.second, s2_left.as_value(), s2.beat.as_value())
        second_half = Mux(s2.second, s2.beat.as_value(), 0)
        both = data.View(data.ArrayLayout(signed(8), 2 * tm), Cat(first_half, second_half))
        pair_max = Signal(self.pixel_layout)
        pooled = Signal(self.pixel_layout)
        for r in range(tm):
            a, b = both[2 * r], both[2 * r + 1]
            m.d.comb += [pair_max[r].eq(Mux(a > b, a, b)),
                         pooled[r].eq(Mux(s3_keep[r],
                                          Mux(s3_above[r] > s3_pair_max[r], s3_above[r],
                                              s3_pair_max[r]), 0))]
        row_write = Signal()
        m.d.comb += row_write.eq(s2_valid & s2.pair & ~s2.odd)

        with m.If(advance):
            m.d.sync += s2_valid.eq(s1_valid)
            m.d.sync += [s2.eq(s1), s2_left.eq(left_r.data)]
            # stage 1's row word was read before stage 2's beat writes it: forward
            with m.If(row_write & (s2.row_addr == s1.row_addr)):
                m.d.sync += s2_above.eq(pair_max)
            with m.Else():
                m.d.sync += s2_above.eq(row_r.data)

        m.d.comb += [
            left_w.addr.eq(s1.o), left_w.data.eq(s1.beat),
            left_w.en.eq(s1_valid & advance & ~s1.pair),
            row_w.addr.eq(s2.row_addr), row_w.data.eq(pair_max),
            row_w.en.eq(row_write & advance),
        ]
        with m.If(advance):
            m.d.sync += [s3_valid.eq(s2_valid & s2.emit), s3_keep.eq(s2.keep),
                         s3_pair_max.eq(pair_max), s3_above.eq(s2_above)]
        with m.If(s3_valid & advance):
            m.d.sync += [out_valid.eq(1), out_beat.eq(pooled)]
        with m.Elif(self.out.ready):
            m.d.sync += out_valid.eq(0)

        # walk the input order
        with m.If(self.start):
            m.d.sync += [o.eq(0), odd_row.eq(0), second.eq(0), x0.eq(0), p0.eq(0),
                         row_base.eq(0), s1_valid.eq(0), s2_valid.eq(0), s3_valid.eq(0),
                         out_valid.eq(0)]
        with m.Elif(take & self.enable):
            with m.If(o + 1 != self.out_channels):
                m.d.sync += o.eq(o + 1)
            with m.Else():
                m.d.sync += o.eq(0)
                with m.If(last_block):
                    m.d.sync += [x0.eq(0), second.eq(0), p0.eq(0), row_base.eq(0),
                                 odd_row.eq(~odd_row)]
                with m.Else():
                    m.d.sync += [x0.eq(x0 + tm), second.eq(~second)]
                    with m.If(second):
                        m.d.sync += [p0.eq(p0 + tm), row_base.eq(row_base + self.out_channels)]
        return m
