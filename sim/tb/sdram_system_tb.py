"""cocotb bench for the LiteDRAM core + ``SDRAM`` wrapper + chip model (``sdram_system``).

Drives ``clk`` and, 90 degrees later, ``sdram_clk`` (as the ULX3S PLL does), resets, waits
for ``ready`` at simulator speed, then streams the scenario's operations from
``PSCONV_TB_DATA``. ``run_ops`` (word ports): ``["W", addr, data, enable]`` / ``["R", addr]``,
commands on ``cmd``, write beats on ``wdata`` (offered as soon as their turn comes), read
beats from ``rdata``. ``run_byte_ops`` (a top built with a byte memory port):
``["W", byte address, byte]`` / ``["R", byte address]`` on ``port``. Read data is refused at
random with probability ``rdata_stall``. Writes the read data (command order), the chip's
violation outputs and counters to ``results_path``.
"""

import json
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

from cocotb.simtime import get_sim_time

from psconv.sim.runner import tb_data

COUNTS = ("refresh_count", "activate_count", "read_count", "write_count")


async def _start(dut, data, client_valids, read_ready):
    """Clocks (the chip's 90 degrees late), reset, and wait for ``ready``; returns the clocks
    init took and the wall-clock start."""
    period = data.get("period_ns", 20)
    cocotb.start_soon(Clock(dut.clk, period, unit="ns").start())
    dut.rst.value = 1
    for valid in client_valids:
        valid.value = 0
    read_ready.value = 0
    await Timer(period / 4, unit="ns")
    cocotb.start_soon(Clock(dut.sdram_clk, period, unit="ns").start())
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    reset_ns = get_sim_time(unit="ns")
    started = time.perf_counter()
    for _ in range(40):  # a few clocks for the reset synchroniser, then sleep until ready
        await RisingEdge(dut.clk)
    if not int(dut.ready.value):
        await RisingEdge(dut.ready)
    init_cycles = round((get_sim_time(unit="ns") - reset_ns) / period)
    await RisingEdge(dut.clk)
    return init_cycles, started


async def _finish(dut, data, reads, init_cycles, cycles, started):
    if data.get("tail_cycles"):
        await ClockCycles(dut.clk, data["tail_cycles"])
    await ClockCycles(dut.clk, 16)
    result = {
        "reads": reads, "violation": int(dut.violation.value),
        "code": int(dut.violation_code.value), "violation_cycle": int(dut.violation_cycle.value),
        "counts": {name: int(getattr(dut, name).value) for name in COUNTS},
        "init_cycles": init_cycles, "cycles": cycles,
        "seconds": time.perf_counter() - started,
    }
    with open(data["results_path"], "w") as f:
        json.dump(result, f)


@cocotb.test()
async def run_ops(dut):
    """Word operations on the wrapper's own ``cmd``/``wdata``/``rdata`` ports."""
    data = tb_data()
    rng = random.Random(data.get("seed", 0))
    init_cycles, started = await _start(dut, data, (dut.cmd__valid, dut.wdata__valid),
                                        dut.rdata__ready)

    ops = data["ops"]
    writes = [op for op in ops if op[0] == "W"]
    expected_reads = sum(op[0] == "R" for op in ops)
    stall = data.get("rdata_stall", 0.0)
    address_width = len(dut.cmd__payload) - 1
    cmd_i = wr_i = 0
    reads = []
    cycles = 0
    idle = 0
    while cmd_i < len(ops) or wr_i < len(writes) or len(reads) < expected_reads:
        cmd_valid = cmd_i < len(ops)
        if cmd_valid:
            op = ops[cmd_i]
            dut.cmd__payload.value = op[1] | ((op[0] == "W") << address_width)
        dut.cmd__valid.value = int(cmd_valid)
        wr_valid = wr_i < len(writes)
        if wr_valid:
            _, _, word, enable = writes[wr_i]
            dut.wdata__payload.value = word | (enable << 16)
        dut.wdata__valid.value = int(wr_valid)
        rd_ready = stall == 0.0 or rng.random() >= stall
        dut.rdata__ready.value = int(rd_ready)
        await ReadOnly()
        progressed = False
        if cmd_valid and int(dut.cmd__ready.value):
            cmd_i += 1
            progressed = True
        if wr_valid and int(dut.wdata__ready.value):
            wr_i += 1
            progressed = True
        if rd_ready and int(dut.rdata__valid.value):
            reads.append(int(dut.rdata__payload.value))
            progressed = True
        idle = 0 if progressed else idle + 1
        if idle > 5000:
            raise AssertionError(
                f"no progress for 5000 cycles: commands {cmd_i}/{len(ops)}, write beats "
                f"{wr_i}/{len(writes)}, reads {len(reads)}/{expected_reads}")
        await RisingEdge(dut.clk)
        cycles += 1
    dut.cmd__valid.value = 0
    dut.wdata__valid.value = 0
    await _finish(dut, data, reads, init_cycles, cycles, started)


@cocotb.test()
async def run_byte_ops(dut):
    """Byte operations on a memory port (``port__request``/``port__read_data``)."""
    data = tb_data()
    rng = random.Random(data.get("seed", 0))
    request, read_data = dut.port__request__valid, dut.port__read_data__ready
    init_cycles, started = await _start(dut, data, (request,), read_data)
    ops = data["ops"]
    expected_reads = sum(op[0] == "R" for op in ops)
    stall = data.get("rdata_stall", 0.0)
    index, reads, cycles, idle = 0, [], 0, 0
    while index < len(ops) or len(reads) < expected_reads:
        valid = index < len(ops)
        if valid:
            op = ops[index]
            # MEMORY_REQUEST: address (32 bits), write (1), data (8)
            dut.port__request__payload.value = (op[1] | (int(op[0] == "W") << 32)
                                                | ((op[2] if op[0] == "W" else 0) << 33))
        request.value = int(valid)
        ready = stall == 0.0 or rng.random() >= stall
        read_data.value = int(ready)
        await ReadOnly()
        progressed = False
        if valid and int(dut.port__request__ready.value):
            index += 1
            progressed = True
        if ready and int(dut.port__read_data__valid.value):
            reads.append(int(dut.port__read_data__payload.value))
            progressed = True
        idle = 0 if progressed else idle + 1
        if idle > 5000:
            raise AssertionError(f"no progress for 5000 cycles: requests {index}/{len(ops)}, "
                                 f"reads {len(reads)}/{expected_reads}")
        await RisingEdge(dut.clk)
        cycles += 1
    request.value = 0
    await _finish(dut, data, reads, init_cycles, cycles, started)
