"""A small stream design for the simulation and Verilog-generation infrastructure tests.

``StreamMac`` accepts packets of operand pairs on ``operands`` (a stream whose payload is a
struct ``{a: signed(8), b: signed(8), last: 1}``) through a 4-entry FIFO, and for every packet
(terminated by ``last``) emits ``{total: signed(24), count: unsigned(8)}`` on ``results``, where
``total = bias + sum(a * b)`` and ``count`` is the number of pairs. ``last_pair`` (an
``ArrayLayout(signed(8), 2)`` output) shows the most recent accepted (a, b); ``packets`` counts
the packets emitted. Both streams obey valid/ready: a payload moves on a cycle where both are
high, and ``valid`` never waits for ``ready``.
"""

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

OPERAND = data.StructLayout({"a": signed(8), "b": signed(8), "last": unsigned(1)})
RESULT = data.StructLayout({"total": signed(24), "count": unsigned(8)})


class StreamMac(wiring.Component):
    def __init__(self, fifo_depth: int = 4):
        self._fifo_depth = fifo_depth
        super().__init__({
            "operands": In(stream.Signature(OPERAND)),
            "results": Out(stream.Signature(RESULT)),
            "bias": In(signed(16)),
            "last_pair": Out(data.ArrayLayout(signed(8), 2)),
            "packets": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=OPERAND.size, depth=self._fifo_depth)
        wiring.connect(m, wiring.flipped(self.operands), queue.w_stream)
        head = Signal(OPERAND)
        m.d.comb += head.eq(queue.r_data)

        total = Signal(signed(24))
        count = Signal(unsigned(8))
        started = Signal()
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += self.results.valid.eq(0)
            m.d.sync += self.packets.eq(self.packets + 1)
        # Take the next pair only when no finished packet is waiting (results.valid low) or it
        # leaves this cycle.
        can_take = ~self.results.valid | self.results.ready
        m.d.comb += queue.r_en.eq(queue.r_rdy & can_take)
        with m.If(queue.r_en):
            product = head.a * head.b
            base_total = total.as_signed()
            new_total = Signal(signed(24))
            new_count = Signal(unsigned(8))
            with m.If(started):
                m.d.comb += new_total.eq(base_total + product), new_count.eq(count + 1)
            with m.Else():
                m.d.comb += new_total.eq(self.bias + product), new_count.eq(1)
            m.d.sync += [self.last_pair[0].eq(head.a), self.last_pair[1].eq(head.b)]
            with m.If(head.last):
                m.d.sync += [
                    self.results.valid.eq(1),
                    self.results.payload.total.eq(new_total),
                    self.results.payload.count.eq(new_count),
                    started.eq(0),
                ]
            with m.Else():
                m.d.sync += [total.eq(new_total), count.eq(new_count), started.eq(1)]
        return m


def reference(bias: int, packets: list[list[tuple[int, int]]]) -> list[dict]:
    """What ``StreamMac`` emits for ``packets`` (each a list of (a, b) pairs)."""
    return [{"total": bias + sum(a * b for a, b in packet), "count": len(packet)}
            for packet in packets]
