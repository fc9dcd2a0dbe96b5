"""The board memory as the resident-mode blocks see it: one byte-wide request/response port.

Why bytes: the runner moves int8 maps and byte tables, and the scatter of output pixels into a
CHW map writes single bytes at computed addresses, so a byte port keeps every client simple. A
wider memory (the ULX3S's 16-bit SDRAM) sits behind an adapter with byte masks.

:data:`MEMORY_REQUEST`: ``address`` (32 bits, a byte address), ``write`` (1: store ``data``;
0: load), ``data`` (8 bits). :func:`memory_port_signature` (the client's view, Out):

* ``request`` Out(stream MEMORY_REQUEST): one access per accepted beat, in order.
* ``read_data`` In(stream 8): one byte per accepted load, in the order of the loads; a write
  answers nothing. The client must take read data it asked for (the memory may hold further
  requests back until it does).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

MEMORY_REQUEST = data.StructLayout({"address": 32, "write": 1, "data": 8})


def memory_port_signature() -> wiring.Signature:
    """The client side of a memory port (see the module docstring)."""
    return wiring.Signature({
        "request": Out(stream.Signature(MEMORY_REQUEST)),
        "read_data": In(stream.Signature(8)),
    })


class OnChipMemory(wiring.Component):
    """``depth`` bytes of block RAM behind a memory port: the simulated board's memory, and a
    board's own RAM where it has no external memory.

    Ports: ``port`` In(:func:`memory_port_signature`). A request is taken when the one-entry
    read-data register is empty or being emptied; a load's byte is valid the next cycle. Any
    address bit above ``depth`` is ignored (the command processor checks regions first).
    """

    def __init__(self, depth: int):
        if not isinstance(depth, int) or depth < 2:
            raise PsconvError(f"on-chip memory: depth {depth!r}; allowed: an integer >= 2 (bytes)")
        self.depth = depth
        super().__init__({"port": In(memory_port_signature())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = memory.Memory(shape=8, depth=self.depth, init=[])
        write = storage.write_port()
        read = storage.read_port(transparent_for=[write])
        request = self.port.request
        address = request.payload.address[:max(1, (self.depth - 1).bit_length())]
        out = self.port.read_data
        take = Signal()
        m.d.comb += [
            request.ready.eq(~out.valid | out.ready),
            take.eq(request.valid & request.ready),
            write.addr.eq(address), write.data.eq(request.payload.data),
            write.en.eq(take & request.payload.write),
            read.addr.eq(address), read.en.eq(take & ~request.payload.write),
            out.payload.eq(read.data),
        ]
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(take & ~request.payload.write):
            m.d.sync += out.valid.eq(1)
        return m


def memory_port_mux(m, select, first, second, memory_port) -> None:
    """Connect client ``first`` (``select`` low) or ``second`` (``select`` high) to
    ``memory_port`` (the memory's In side). ``select`` may change only while neither client has
    a load outstanding; the other client sees a port that is never ready."""
    for client, chosen in ((first, ~select), (second, select)):
        m.d.comb += [client.request.ready.eq(chosen & memory_port.request.ready),
                     client.read_data.payload.eq(memory_port.read_data.payload),
                     client.read_data.valid.eq(chosen & memory_port.read_data.valid)]
    m.d.comb += [
        memory_port.request.valid.eq(Mux(select, second.request.valid, first.request.valid)),
        memory_port.request.payload.eq(Mux(select, second.request.payload, first.request.payload)),
        memory_port.read_data.ready.eq(Mux(select, second.read_data.ready, first.read_data.ready)),
    ]
