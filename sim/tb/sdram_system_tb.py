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


async def _stream(dut, sources, sink, expected_reads, stall, rng):
    """Offer every source's beats in order (``sources``: ``(prefix, [payload, ...])`` of
    ``<prefix>__valid/ready/payload`` input streams) while taking ``expected_reads`` beats from
    the output stream ``sink`` (refused with probability ``stall``). Returns the beats taken
    and the clocks it took; fails if nothing moves for 5000 clocks."""
    pending = [(getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"),
                getattr(dut, f"{name}__payload"), list(beats), name) for name, beats in sources]
    taken = [0] * len(pending)
    out_valid, out_ready, out_payload = (getattr(dut, f"{sink}__{x}")
                                         for x in ("valid", "ready", "payload"))
    reads, cycles, idle = [], 0, 0
    while any(t < len(p[3]) for t, p in zip(taken, pending)) or len(reads) < expected_reads:
        offered = []
        for t, (valid, _, payload, beats, _) in zip(taken, pending):
            offered.append(t < len(beats))
            if offered[-1]:
                payload.value = beats[t]
            valid.value = int(offered[-1])
        accept = stall == 0.0 or rng.random() >= stall
        out_ready.value = int(accept)
        await ReadOnly()
        progressed = False
        for i, (_, ready, _, _, _) in enumerate(pending):
            if offered[i] and int(ready.value):
                taken[i] += 1
                progressed = True
        if accept and int(out_valid.value):
            reads.append(int(out_payload.value))
            progressed = True
        idle = 0 if progressed else idle + 1
        if idle > 5000:
            state = ", ".join(f"{p[4]} {t}/{len(p[3])}" for t, p in zip(taken, pending))
            raise AssertionError(f"no progress for 5000 cycles: {state}, {sink} "
                                 f"{len(reads)}/{expected_reads}")
        await RisingEdge(dut.clk)
        cycles += 1
    for valid, *_ in pending:
        valid.value = 0
    return reads, cycles


@cocotb.test()
async def run_ops(dut):
    """Word operations on the wrapper's own ``cmd``/``wdata``/``rdata`` ports."""
    data = tb_data()
    init_cycles, started = await _start(dut, data, (dut.cmd__valid, dut.wdata__valid),
                                        dut.rdata__ready)
    ops = data["ops"]
    address_width = len(dut.cmd__payload) - 1
    commands = [op[1] | (int(op[0] == "W") << address_width) for op in ops]
    writes = [op[2] | (op[3] << 16) for op in ops if op[0] == "W"]
    reads, cycles = await _stream(dut, [("cmd", commands), ("wdata", writes)], "rdata",
                                  sum(op[0] == "R" for op in ops), data.get("rdata_stall", 0.0),
                                  random.Random(data.get("seed", 0)))
    await _finish(dut, data, reads, init_cycles, cycles, started)


@cocotb.test()
async def run_port_ops(dut):
    """Word and byte operations on a memory port (``port__request``/``port__read_data``):
    ``["W", address, data, enable]``, ``["R", address]``."""
    data = tb_data()
    init_cycles, started = await _start(dut, data, (dut.port__request__valid,),
                                        dut.port__read_data__ready)
    ops = data["ops"]
    # MEMORY_REQUEST: address (32 bits), write (1), data (16), enable (2)
    requests = [op[1] | (int(op[0] == "W") << 32)
                | ((op[2] << 33 | op[3] << 49) if op[0] == "W" else 0) for op in ops]
    reads, cycles = await _stream(dut, [("port__request", requests)], "port__read_data",
                                  sum(op[0] == "R" for op in ops), data.get("rdata_stall", 0.0),
                                  random.Random(data.get("seed", 0)))
    await _finish(dut, data, reads, init_cycles, cycles, started)
