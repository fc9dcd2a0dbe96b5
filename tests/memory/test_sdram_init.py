"""SDRAMInit in Amaranth's simulator: plays its program on the control bus, waits, then done."""

from types import SimpleNamespace

import pytest
from amaranth.sim import Simulator

from psconv.errors import PsconvError
from psconv.hw.sdram_init import InitWrite, SDRAMInit, init_program


def _step(csr, value, cdelay=0, command=None):
    return SimpleNamespace(csr=csr, value=value, cdelay=cdelay, command=command, comment="")


def test_program_waits_cover_the_sdram_rules():
    csrs = {"sdram_dfii_control": 0x800, "sdram_dfii_pi0_command_issue": 0x808,
            "ddrctrl_init_done": 0}
    steps = [_step("sdram_dfii_control", 0xE, cdelay=20000),
             _step("sdram_dfii_pi0_command_issue", 1, command="PRECHARGE_ALL"),
             _step("sdram_dfii_pi0_command_issue", 1, cdelay=4, command="AUTO_REFRESH"),
             _step("sdram_dfii_pi0_command_issue", 1, command="MODE_REGISTER"),
             _step("sdram_dfii_control", 1), _step("ddrctrl_init_done", 1)]
    program = init_program(steps, csrs, 143e6, {"tRP": 3, "tRFC": 9})
    # power-up 200 us at 143 MHz outlasts the header's 20000 loop iterations
    assert [w.wait for w in program] == [28600, 3, 9, 2, 0, 0]
    assert program[0].address == 0x800
    with pytest.raises(PsconvError, match="not in the CSR map"):
        init_program([_step("sdram_dfii_pi9", 1)], csrs, 50e6, {"tRP": 1, "tRFC": 4})


def test_writes_in_order_with_waits_then_done():
    program = [InitWrite(0x800, 0xE, wait=5), InitWrite(0x80C, 0x400), InitWrite(0x0, 1, 2)]
    dut = SDRAMInit(program)
    seen = []

    async def slave(ctx):
        cycle = 0
        while True:
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.bus.cyc) and ctx.get(dut.bus.stb):
                assert ctx.get(dut.bus.we) and ctx.get(dut.bus.sel) == 0xF
                seen.append((cycle, ctx.get(dut.bus.adr), ctx.get(dut.bus.dat_w)))
                ctx.set(dut.bus.ack, 1)
                await ctx.tick()
                cycle += 1
                ctx.set(dut.bus.ack, 0)

    async def bench(ctx):
        for cycle in range(60):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        assert ctx.get(dut.done), "init never finished"
        assert [(a, v) for _, a, v in seen] == [(0x200, 0xE), (0x203, 0x400), (0x0, 1)]
        assert seen[1][0] - seen[0][0] >= 5 + 1  # the 5-clock wait after the first write

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(slave, background=True)
    sim.add_testbench(bench)
    sim.run()
