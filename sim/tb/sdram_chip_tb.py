"""cocotb bench driving ``psconv_sdram_chip`` directly at its pins (no controller).

The scenario comes from :mod:`psconv.sim.sdram_rtl` through ``PSCONV_TB_DATA``: a list of
steps ``{"cmd", "ba", "a", "dqm", "data", "wait"}`` (``cmd`` one of :data:`COMMANDS`; ``wait``
NOP clocks after it). Each command is set up between clock edges and registered by the next
rising edge. The bench records, for every edge, the edge number and whether the chip drove
DQ just before it (``reads``: ``[edge, value]``), and the violation outputs at the end; the
host side decides what is right.
"""

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from psconv.sim.runner import tb_data

COMMANDS = {  # ras_n, cas_n, we_n
    "NOP": (1, 1, 1), "ACT": (0, 1, 1), "READ": (1, 0, 1), "WRITE": (1, 0, 0),
    "PRE": (0, 1, 0), "REF": (0, 0, 1), "LMR": (0, 0, 0), "BST": (1, 1, 0),
}


def _drive(dut, cmd="NOP", ba=0, a=0, dqm=0, data=None):
    ras, cas, we = COMMANDS[cmd]
    dut.cs_n.value = 0
    dut.ras_n.value = ras
    dut.cas_n.value = cas
    dut.we_n.value = we
    dut.ba.value = ba
    dut.a.value = a
    dut.dqm.value = dqm
    dut.dq_i.value = data or 0
    dut.dq_i_driven.value = int(data is not None)


@cocotb.test()
async def run_scenario(dut):
    data = tb_data()
    cocotb.start_soon(Clock(dut.clk, data.get("period_ns", 20), unit="ns").start())
    dut.cke.value = 1
    _drive(dut)
    reads = []
    edge = 0

    async def clock(n):
        nonlocal edge
        if n > 8:  # long NOP stretches run at simulator speed
            await ClockCycles(dut.clk, n)
            edge += n
            return
        for _ in range(n):
            await FallingEdge(dut.clk)
            if int(dut.dq_oe.value):
                reads.append([edge, int(dut.dq_o.value)])
            await RisingEdge(dut.clk)
            edge += 1

    await FallingEdge(dut.clk)
    for step in data["steps"]:
        _drive(dut, step["cmd"], step.get("ba", 0), step.get("a", 0), step.get("dqm", 0),
               step.get("data"))
        await RisingEdge(dut.clk)
        step_edge = edge
        edge += 1
        _drive(dut)
        await clock(step.get("wait", 0))
        step["edge"] = step_edge
    await clock(8)
    result = {
        "violation": int(dut.violation.value), "code": int(dut.violation_code.value),
        "violation_cycle": int(dut.violation_cycle.value), "reads": reads,
        "refresh_count": int(dut.refresh_count.value), "ready": int(dut.ready.value),
        "edges": [step["edge"] for step in data["steps"]],
    }
    with open(data["results_path"], "w") as f:
        json.dump(result, f)
