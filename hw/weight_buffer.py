"""Compressed weight buffer: only the kept weights, in exactly the order the lanes consume them.

The buffer image is :func:`psconv.firmware.packing.engine_weight_words` unchanged: word
``o * cycles + c`` holds the ``tn`` weights lanes 0..tn-1 multiply at cycle c of output channel o
(``cycles``: ``cycles_per_output``, the words of all input-channel passes of one output channel).
It is ``tn`` byte-wide banks (bank l = column l, read by lane l) sharing one address, so it is
stored as one Memory of ``tn``-byte words (an FPGA tool splits the width over block RAMs anyway).
There is no index metadata: the address generator derives every weight's (channel, tap) from the
mask table.

Loading: after ``start``, once ``load_enable`` is high (``cycles_per_output`` valid), ``weight_in``
beats are written to consecutive addresses from 0; exactly ``out_channels * cycles_per_output``
beats are accepted. ``loaded_channels`` counts output channels whose words are all written, so
compute of output channel o may start while later channels are still loading (the first pixel
group runs at the stream's rate instead of waiting for the whole buffer).

Reading: ``read_addr`` in cycle n gives ``read_data`` in cycle n + 1. A read of the word being
written in the same cycle is undefined on an FPGA (:class:`~psconv.hw.multiport.MultiReadMemory`,
no collision logic); no such read is used: output channel o issues only once ``loaded_channels``
> o, one cycle after its last word is written, and the engine reads its words a cycle after
issue, while a read that is not issued only feeds lanes whose weight the PE array forces to 0.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .multiport import MultiReadMemory


class WeightBuffer(wiring.Component):
    def __init__(self, config):
        self.config = config
        word = data.ArrayLayout(signed(8), config.tn)
        self.word_layout = word
        super().__init__({
            "start": In(1),
            "load_enable": In(1),
            "out_channels": In(range(config.max_out_channels + 1)),
            "cycles_per_output": In(range(config.weight_depth + 1)),
            "weight_in": In(stream.Signature(word)),
            "loaded_channels": Out(range(config.max_out_channels + 1)),
            "read_addr": In(range(config.weight_depth)),
            "read_data": Out(word),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        mem = m.submodules.words = MultiReadMemory(self.word_layout, cfg.weight_depth, 1)
        m.d.comb += [mem.read_addr[0].eq(self.read_addr), self.read_data.eq(mem.read_data[0])]

        # A word address: after the last word it wraps to 0, but nothing is written then.
        addr = Signal(range(cfg.weight_depth))
        cycle = Signal(range(cfg.weight_depth))      # < cycles_per_output <= weight_depth
        accepting = Signal()
        m.d.comb += [
            accepting.eq(self.load_enable & (self.loaded_channels < self.out_channels)),
            self.weight_in.ready.eq(accepting),
            mem.write_addr.eq(addr),
            mem.write_data.eq(self.weight_in.payload),
            mem.write_en.eq(accepting & self.weight_in.valid),
        ]
        with m.If(self.start):
            m.d.sync += [addr.eq(0), cycle.eq(0), self.loaded_channels.eq(0)]
        with m.Elif(accepting & self.weight_in.valid):
            m.d.sync += addr.eq(addr + 1)
            with m.If(cycle + 1 == self.cycles_per_output):
                m.d.sync += [cycle.eq(0), self.loaded_channels.eq(self.loaded_channels + 1)]
            with m.Else():
                m.d.sync += cycle.eq(cycle + 1)
        return m
