"""MultiReadMemory: every read port sees the written data, one cycle after its address."""

import random

from amaranth.hdl import unsigned

from psconv.hw.multiport import MultiReadMemory

from sim_helpers import run


def test_all_ports_read_written_data():
    dut = MultiReadMemory(unsigned(12), 20, read_ports=11, ports_per_copy=4)
    assert dut.copies == 3
    rng = random.Random(2)
    contents = [0] * 20

    async def tb(ctx):
        for addr in range(20):
            contents[addr] = rng.randrange(1 << 12)
            ctx.set(dut.write_addr, addr)
            ctx.set(dut.write_data, contents[addr])
            ctx.set(dut.write_en, 1)
            await ctx.tick()
        ctx.set(dut.write_en, 0)
        for _ in range(30):
            addrs = [rng.randrange(20) for _ in range(11)]
            for k, a in enumerate(addrs):
                ctx.set(dut.read_addr[k], a)
            await ctx.tick()
            for k, a in enumerate(addrs):
                assert ctx.get(dut.read_data[k]) == contents[a], (k, a)

    run(dut, tb)


def test_collision_reads_old_word_in_simulation_and_is_unchecked_in_synthesis():
    """A read of the address written in the same cycle gives the old word (read-first, like a
    plain sync read port) and the new one a cycle later; the memory is marked ``no_rw_check``
    so Yosys adds no collision logic (the users never use such a read)."""
    from amaranth.back import rtlil

    dut = MultiReadMemory(unsigned(8), 4, read_ports=2)
    assert "no_rw_check" in rtlil.convert(dut)
    dut = MultiReadMemory(unsigned(8), 4, read_ports=2)

    async def tb(ctx):
        ctx.set(dut.write_addr, 1)
        ctx.set(dut.write_data, 0x11)
        ctx.set(dut.write_en, 1)
        await ctx.tick()
        ctx.set(dut.write_data, 0x22)          # overwrite address 1 while both ports read it
        ctx.set(dut.read_addr[0], 1)
        ctx.set(dut.read_addr[1], 1)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert [ctx.get(dut.read_data[k]) for k in range(2)] == [0x11, 0x11]
        await ctx.tick()
        assert [ctx.get(dut.read_data[k]) for k in range(2)] == [0x22, 0x22]

    run(dut, tb)
