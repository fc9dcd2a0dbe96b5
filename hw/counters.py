"""Performance counters the host reads after a layer: busy, stall and idle cycles, MACs issued.

Every cycle of a layer, from the ``start`` cycle up to (not including) the ``done`` pulse, is
counted exactly once as busy, stall or idle (see :class:`psconv.hw.sequencer.Sequencer` for the
classification), so ``busy + stall + idle`` is the layer's cycle count. ``macs`` sums the useful
multiply-accumulates issued (valid slot x pixel inside the map). ``clear`` restarts all four from
this cycle's increments; the values hold between layers.

All four outputs are ``width`` (48) bits, the wire protocol's counter size. Stall and idle cycles
are unbounded (the engine waits for the host as long as it takes), so they are ``width`` bits of
hardware. Busy cycles and MACs are not: a layer issues at most ``max_busy_cycles`` slot cycles
(the caller derives it from the engine configuration) and each issued slot cycle adds at most
``max_macs_per_cycle`` MACs, once, so those two counters are ``bits(max_busy_cycles)`` and
``bits(max_busy_cycles * max_macs_per_cycle)`` bits wide, zero-extended: they never reach a bit
they lack, so the value read is the one a ``width``-bit counter would hold.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.protocol.payloads import COUNTER_WIDTH


class PerformanceCounters(wiring.Component):
    def __init__(self, max_macs_per_cycle: int, max_busy_cycles: int | None = None,
                 width: int = COUNTER_WIDTH):
        self.width = width
        if max_busy_cycles is None:
            self.busy_width = self.macs_width = width
        else:
            self.busy_width = min(width, max(1, max_busy_cycles.bit_length()))
            max_macs = max_busy_cycles * max_macs_per_cycle
            self.macs_width = min(width, max(1, max_macs.bit_length()))
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
        busy = Signal(self.busy_width)
        macs = Signal(self.macs_width)
        m.d.comb += [self.busy_cycles.eq(busy), self.macs.eq(macs)]
        # The cycle classifications arrive late in the cycle (the issue decision): they only
        # enable an increment computed in parallel, they do not enter the carry chain.
        for counter, inc in ((busy, self.count_busy), (self.stall_cycles, self.count_stall),
                             (self.idle_cycles, self.count_idle)):
            with m.If(self.clear):
                m.d.sync += counter.eq(inc)
            with m.Elif(inc):
                m.d.sync += counter.eq(counter + 1)
        with m.If(self.clear):
            m.d.sync += macs.eq(self.macs_add)
        with m.Else():
            m.d.sync += macs.eq(macs + self.macs_add)
        return m
