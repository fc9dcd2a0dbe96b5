"""A cocotb bench that must fail: proves psconv.sim.runner.run reports failures."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def test_deliberately_wrong_expectation(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    assert int(dut.packets.value) == 12345, "deliberate failure: packets is not 12345 after reset"
