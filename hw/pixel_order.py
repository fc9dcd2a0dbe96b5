"""Byte addresses of a CHW map visited in the engine's output order (the residual gather and the
output scatter of resident mode).

The engine's ``out`` and ``residual_in`` beats go: for y, for column block xb, for channel o,
``tm`` pixels x = xb * tm + r. In a CHW int8 map at ``base`` (planes of ``plane`` bytes, rows of
``width``) pixel (o, y, x) is byte ``base + o * plane + y * width + x``. Pixels with x >= width
pad the last block and have no byte.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class PixelOrderAddress(wiring.Component):
    """Walks the pixels of the engine's beat order over a CHW map, one pixel per ``advance``.

    ``start`` (a pulse) loads ``base``, ``plane``, ``width``, ``height``, ``channels`` (held
    by the caller until ``last_beat``) and points at pixel r = 0 of the first beat. Then, while
    not ``finished``: ``address`` is the current pixel's byte address, ``inside`` says it has
    one (x < width), ``beat_end`` marks r = tm - 1 and ``last_beat`` the final beat of the map.
    ``advance`` moves to the next pixel (the next beat after r = tm - 1); after the final beat's
    last pixel ``finished`` rises until the next ``start``. ``pair_inside`` says the next pixel
    is in the same beat and has a byte too (the two are adjacent bytes), ``pair_end`` that it
    ends the beat, and ``advance_pair`` moves past both, so a client may store or load them as one word. Registers only: no
    multiplier (each step adds ``plane``, ``width`` or ``tm``), and the flags a client decides on
    each cycle (``inside``, ``pair_inside``, ``last_beat``) come from registers and a compare of
    ``r`` against the block's registered pixel count, not from an adder chain (on the ULX3S the
    chain through the client's decision into the next block's address missed 60 MHz).
    """

    def __init__(self, tm: int, size_width: int = 16):
        self.tm = tm
        super().__init__({
            "start": In(1),
            "base": In(32),
            "plane": In(32),
            "width": In(size_width),
            "height": In(size_width),
            "channels": In(size_width),
            "advance": In(1),
            "advance_pair": In(1),
            "address": Out(32),
            "inside": Out(1),
            "pair_inside": Out(1),
            "pair_end": Out(1),
            "beat_end": Out(1),
            "last_beat": Out(1),
            "finished": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tm = self.tm
        size = len(self.width)
        row_address = Signal(32)      # base + y * width
        block_address = Signal(32)    # row_address + xb * tm
        pixel_address = Signal(32)    # block_address + o * plane (r = 0)
        block_x = Signal(size + 1)    # xb * tm
        y = Signal(size)
        o = Signal(size)
        r = Signal(range(tm))
        # registered facts about the current block, row and channel, each updated with the
        # counter it depends on (from values computed before the advance decides), so the
        # client's per-pixel decision never waits for an adder or a comparator chain here
        block_pixels = Signal(range(tm + 1))   # pixels of this block inside the map
        last_block = Signal()
        last_channel = Signal()
        last_row = Signal()

        def clamp(left):
            """Pixels of a block that starts ``left`` pixels before the map's right edge."""
            return Mux(left >= tm, tm, Mux(left < 0, 0, left))

        def enter_block(left):
            m.d.sync += [block_pixels.eq(clamp(left)), last_block.eq(left <= tm)]

        width = self.width
        m.d.comb += [
            self.address.eq(pixel_address + r),
            self.inside.eq(r < block_pixels),
            self.pair_inside.eq((r != tm - 1) & (r + 1 < block_pixels)),
            self.pair_end.eq(r + 1 == tm - 1),
            self.beat_end.eq(r == tm - 1),
            self.last_beat.eq(last_block & last_channel & last_row),
        ]
        left_now = Signal(signed(size + 2))      # width - block_x: the next block's is this - tm
        m.d.comb += left_now.eq(width - block_x)
        with m.If(self.start):
            m.d.sync += [row_address.eq(self.base), block_address.eq(self.base),
                         pixel_address.eq(self.base), block_x.eq(0), y.eq(0), o.eq(0), r.eq(0),
                         self.finished.eq(0), last_channel.eq(self.channels == 1),
                         last_row.eq(self.height == 1)]
            enter_block(width)
        with m.Elif((self.advance | self.advance_pair) & ~self.finished):
            # a pair moves on from its second pixel, as a single advance there would
            last = Mux(self.advance_pair, r + 1, r)
            m.d.sync += r.eq(Mux(last == tm - 1, 0, last + 1))
            with m.If(last == tm - 1):
                with m.If(~last_channel):
                    m.d.sync += [o.eq(o + 1), pixel_address.eq(pixel_address + self.plane),
                                 last_channel.eq(o + 2 == self.channels)]
                with m.Elif(~last_block):
                    m.d.sync += [o.eq(0), block_x.eq(block_x + tm),
                                 block_address.eq(block_address + tm),
                                 pixel_address.eq(block_address + tm),
                                 last_channel.eq(self.channels == 1)]
                    enter_block(left_now - tm)
                with m.Elif(~last_row):
                    m.d.sync += [o.eq(0), block_x.eq(0), y.eq(y + 1),
                                 row_address.eq(row_address + self.width),
                                 block_address.eq(row_address + self.width),
                                 pixel_address.eq(row_address + self.width),
                                 last_channel.eq(self.channels == 1),
                                 last_row.eq(y + 2 == self.height)]
                    enter_block(width)
                with m.Else():
                    m.d.sync += self.finished.eq(1)
        return m
