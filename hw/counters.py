"""Performance counters the host reads after a layer: busy, stall and idle cycles, MACs issued.

Every cycle of a layer, from the ``start`` cycle up to (not including) the ``done`` pulse, is
counted exactly once as busy, stall or idle (see :class:`psconv.hw.sequencer.Sequencer` for the
classification), so ``busy + stall + idle`` is the layer's cycle count. ``macs`` sums the useful
multiply-accumulates issued (valid slot x pixel inside the map). ``clear`` restarts all four from
this cycle's increments; the values hold between layers.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

COUNTER_WIDTH = 48


class PerformanceCounters(wiring.Component):
    def __init__(self, max_macs_per_cycle: int, width: int = COUNTER_WIDTH):
        self.width = width
        super().__init__({
            "clear": In(1),
            "count_busy": In(1),
            "count_stall": In(1),
            "count_idle": In(1),
            "macs_add": In(range(max_macs_per_cycle + 1)),
            "busy_cycles": Out(width),
            "stall_cycles": Out(width),
            "idle_cycles": Out(width),
            "macs": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        # The cycle classifications arrive late in the cycle (the issue decision): they only
        # enable an increment computed in parallel, they do not enter the carry chain.
        for counter, inc in ((self.busy_cycles, self.count_busy), (self.stall_cycles, self.count_stall),
                             (self.idle_cycles, self.count_idle)):
            with m.If(self.clear):
                m.d.sync += counter.eq(inc)
            with m.Elif(inc):
                m.d.sync += counter.eq(counter + 1)
        with m.If(self.clear):
            m.d.sync += self.macs.eq(self.macs_add)
        with m.Else():
            m.d.sync += self.macs.eq(self.macs + self.macs_add)
        return m
