"""A memory with one write port and many synchronous read ports, split into copies.

The patch memory and the tap-sequence memory are read by every lane in every cycle (``tn`` read
ports). An FPGA has 1-2 read ports per RAM block, so such a memory is replicated per read port
either way; Yosys' ``memory_libmap`` (0.70) does that itself for up to about 10 read ports but
aborts for 12 or more. :class:`MultiReadMemory` therefore splits the read ports into copies of
at most :data:`PORTS_PER_COPY` ports, each copy written with the same data: the FPGA result is
the same as Yosys' own replication, and the Verilog stays small (``ceil(n / 8)`` arrays, not n).

Read port k: ``read_addr[k]`` in cycle t gives ``read_data[k]`` in cycle t + 1 (a write in
cycle t is seen from cycle t + 2 on, as with a plain Memory sync read port).

**Read/write collisions are don't-care.** A read of the address written in the same cycle gives
the old word in simulation but is undefined on an FPGA: the read ports are
:func:`psconv.hw.block_ram.read_port` s, which Yosys maps without collision logic. Every user
reads a word at least two cycles after it was written whenever the read is used (the patch
memory, the tap sequence and the weight buffer say why in their docstrings). Same cycles, same
simulation.
"""

from __future__ import annotations

import math

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .block_ram import collision_free_memory, read_port

PORTS_PER_COPY = 8


class MultiReadMemory(wiring.Component):
    def __init__(self, shape, depth: int, read_ports: int, ports_per_copy: int = PORTS_PER_COPY):
        self.shape = shape
        self.depth = depth
        self.read_ports = read_ports
        self.ports_per_copy = ports_per_copy
        abits = max(1, ceil_log2(depth))
        super().__init__({
            "write_addr": In(abits),
            "write_data": In(shape),
            "write_en": In(1),
            "read_addr": In(data.ArrayLayout(abits, read_ports)),
            "read_data": Out(data.ArrayLayout(shape, read_ports)),
        })

    @property
    def copies(self) -> int:
        return math.ceil(self.read_ports / self.ports_per_copy)

    def elaborate(self, platform):
        m = Module()
        for copy in range(self.copies):
            mem = collision_free_memory(shape=self.shape, depth=self.depth)
            m.submodules[f"copy{copy}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.write_addr), wp.data.eq(self.write_data), wp.en.eq(self.write_en)]
            first = copy * self.ports_per_copy
            for k in range(first, min(first + self.ports_per_copy, self.read_ports)):
                rp = read_port(m, mem, f"read{k}")
                m.d.comb += [rp.addr.eq(self.read_addr[k]), self.read_data[k].eq(rp.data)]
        return m
