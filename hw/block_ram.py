"""Block RAM read ports without read/write collision logic, and a FIFO built on them.

Why: a synchronous read port of :class:`amaranth.lib.memory.Memory` promises the old word when
the address it reads is written in the same cycle. An iCE40 block RAM does not, so Yosys adds,
behind every such port, a copy of the write data and address, a comparator and a bypass
multiplexer: about two flip-flops and a LUT per data bit, and the flip-flops take a logic cell
each. Where a design never *uses* such a read, :func:`read_port` gives the same port (address in
cycle t, data in cycle t + 1, held while ``en`` is low) as an asynchronous read and a register on
a memory marked ``no_rw_check`` (:func:`collision_free_memory`): Yosys' ``memory_dff`` merges
the register into the block RAM's own read port and adds nothing. Simulation still returns the
old word, so the only difference is in what a colliding read would give on an FPGA, and every
caller says why it never uses one.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out


def collision_free_memory(*, shape, depth: int) -> memory.Memory:
    """A memory whose reads of a word written in the same cycle are never used."""
    return memory.Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})


@dataclass
class ReadPort:
    """``addr`` in cycle t gives ``data`` in cycle t + 1 when ``en`` (default high) was set."""

    addr: Value
    en: Signal
    data: Signal


def read_port(m: Module, mem: memory.Memory, name: str) -> ReadPort:
    """A synchronous read port of ``mem`` (from :func:`collision_free_memory`) that Yosys maps
    into the block RAM without collision logic."""
    port = mem.read_port(domain="comb")
    en = Signal(name=f"{name}_en", init=1)
    data = Signal(mem.shape, name=f"{name}_data", reset_less=True)
    with m.If(en):
        m.d.sync += data.eq(port.data)
    return ReadPort(addr=port.addr, en=en, data=data)


class BlockRamFIFO(wiring.Component):
    """A synchronous FIFO of ``depth`` (>= 2) entries of ``width`` bits with the ports, timing
    and ``level`` of :class:`amaranth.lib.fifo.SyncFIFOBuffered` (``depth - 1`` entries in the
    memory and one in the output register; an entry written to an empty FIFO is readable two
    cycles later), built on :func:`read_port`.

    A read never collides with a write it uses: the memory is read only while it holds an entry
    (``produce != consume``) and written only while it is not full, so the two addresses differ
    whenever both happen.
    """

    def __init__(self, *, width: int, depth: int):
        if not isinstance(depth, int) or depth < 2:
            self._MustUse__silence = True     # refused: no "never elaborated" warning
            raise ValueError(f"BlockRamFIFO depth is {depth!r}; allowed: an integer >= 2")
        self.width = width
        self.depth = depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        inner_depth = self.depth - 1
        m.submodules.storage = storage = collision_free_memory(shape=self.width, depth=inner_depth)
        write = storage.write_port()
        read = read_port(m, storage, "storage_read")

        def following(pointer):
            if inner_depth == 1 << len(pointer):
                return pointer + 1
            return Mux(pointer == inner_depth - 1, 0, pointer + 1)

        produce = Signal(range(inner_depth))
        consume = Signal(range(inner_depth))
        stored = Signal(range(inner_depth + 1))       # entries in the memory
        do_write = Signal()
        fetch = Signal()                              # memory -> output register
        m.d.comb += [
            self.w_rdy.eq(stored != inner_depth),
            do_write.eq(self.w_en & self.w_rdy),
            fetch.eq((stored != 0) & (~self.r_rdy | self.r_en)),
            write.addr.eq(produce), write.data.eq(self.w_data), write.en.eq(do_write),
            read.addr.eq(consume), read.en.eq(fetch),
            self.r_data.eq(read.data),
            self.level.eq(stored + self.r_rdy),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(following(produce))
        with m.If(fetch):
            m.d.sync += [consume.eq(following(consume)), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        with m.If(do_write & ~fetch):
            m.d.sync += stored.eq(stored + 1)
        with m.Elif(fetch & ~do_write):
            m.d.sync += stored.eq(stored - 1)
        return m
