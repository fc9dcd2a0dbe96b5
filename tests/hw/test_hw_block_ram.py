"""hw/block_ram.py: the collision-free read port and BlockRamFIFO behave, cycle for cycle, like
amaranth's synchronous read port and SyncFIFOBuffered (which they replace to save the iCE40's
collision logic)."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import fifo, memory

from psconv.hw.block_ram import BlockRamFIFO, collision_free_memory, read_port

from sim_helpers import run


@pytest.mark.parametrize("depth", [2, 3, 8, 17])
def test_fifo_matches_sync_fifo_buffered(depth):
    dut = BlockRamFIFO(width=8, depth=depth)
    ref = fifo.SyncFIFOBuffered(width=8, depth=depth)
    top = Module()
    top.submodules.dut, top.submodules.ref = dut, ref
    rng = random.Random(depth)
    checked = {"reads": 0}

    async def bench(ctx):
        for cycle in range(600):
            # phases: mostly writing, mostly reading, both at random
            phase = (cycle // 100) % 3
            w_en = rng.random() < (0.8, 0.2, 0.5)[phase]
            r_en = rng.random() < (0.2, 0.8, 0.5)[phase]
            value = rng.randrange(256)
            for f in (dut, ref):
                ctx.set(f.w_en, w_en)
                ctx.set(f.w_data, value)
                ctx.set(f.r_en, r_en)
            for name in ("w_rdy", "r_rdy", "level"):
                assert ctx.get(getattr(dut, name)) == ctx.get(getattr(ref, name)), (cycle, name)
            if ctx.get(ref.r_rdy):
                assert ctx.get(dut.r_data) == ctx.get(ref.r_data), cycle
                checked["reads"] += r_en
            await ctx.tick()

    run(top, bench)
    assert checked["reads"] > 100


def test_fifo_refuses_depth_below_two():
    with pytest.raises(ValueError, match="depth"):
        BlockRamFIFO(width=8, depth=1)


def test_read_port_matches_synchronous_read_port():
    """Same word in the same cycle as lib.memory's synchronous port, including a read of the word
    written in the same cycle (the old word in simulation) and a held read (en low)."""
    top = Module()
    ours = collision_free_memory(shape=8, depth=16)
    theirs = memory.Memory(shape=8, depth=16, init=[])
    top.submodules.ours, top.submodules.theirs = ours, theirs
    writes = [mem.write_port() for mem in (ours, theirs)]
    port = read_port(top, ours, "ours")
    ref = theirs.read_port()
    rng = random.Random(3)

    async def bench(ctx):
        for cycle in range(400):
            addr, wdata, wen = rng.randrange(16), rng.randrange(256), rng.random() < 0.5
            raddr = addr if rng.random() < 0.3 else rng.randrange(16)
            en = rng.random() < 0.7
            for w in writes:
                ctx.set(w.addr, addr)
                ctx.set(w.data, wdata)
                ctx.set(w.en, wen)
            ctx.set(port.addr, raddr)
            ctx.set(ref.addr, raddr)
            ctx.set(port.en, en)
            ctx.set(ref.en, en)
            await ctx.tick()
            assert ctx.get(port.data) == ctx.get(ref.data), cycle

    run(top, bench)
