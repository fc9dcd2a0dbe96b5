"""cocotb bench for ``PeriodicSparseEngine``: drive every stream of each prepared layer, collect
the output beats and counters, and write them to a results file.

The cases come from :mod:`psconv.sim.engine_rtl` through ``PSCONV_TB_DATA`` (beats already encoded
with :mod:`psconv.protocol.beats`); comparison against the golden model happens on the host side, where
the failure message can name the first differing (channel, row, column). This bench fails on
its own only when the engine stops making progress (a hang), naming the case and what is
missing.

One Python iteration per clock cycle while any input stream has beats left; once all inputs are
in, the bench sleeps until ``out.valid`` rises, so long compute phases run at Verilator speed.
"""

import json
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer

from psconv.sim.runner import tb_data

INPUT_STREAMS = ("mask_in", "quant_in", "weight_in", "fmap_in", "residual_in")
COUNTERS = ("busy_cycles", "stall_cycles", "idle_cycles", "macs")


async def _reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    for name in INPUT_STREAMS:
        getattr(dut, f"{name}__valid").value = 0
    dut.out__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def _run_case(dut, case, rng):
    pending = {name: list(case["beats"].get(name, [])) for name in INPUT_STREAMS}
    valid = {name: getattr(dut, f"{name}__valid") for name in INPUT_STREAMS}
    payload = {name: getattr(dut, f"{name}__payload") for name in INPUT_STREAMS}
    ready = {name: getattr(dut, f"{name}__ready") for name in INPUT_STREAMS}
    expected_beats = case["output_beats"]
    gap = case.get("input_gap_probability", 0.0)
    backpressure = case.get("output_backpressure", 0.0)
    budget = case["cycle_budget"]

    dut.layer.value = case["descriptor"]
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    started = time.perf_counter()
    outputs = []
    cycles = 0
    offered = {name: False for name in INPUT_STREAMS}
    dut.out__ready.value = 1
    while any(pending.values()) or len(outputs) < expected_beats:
        if cycles > budget:
            left = {k: len(v) for k, v in pending.items() if v}
            raise AssertionError(
                f"case {case['name']}: no completion after {cycles} cycles; inputs not accepted: "
                f"{left or 'none'}; outputs {len(outputs)}/{expected_beats}")
        inputs_left = any(pending.values())
        if not inputs_left and backpressure == 0.0:
            await ReadOnly()
            if not int(dut.out__valid.value):
                await First(RisingEdge(dut.out__valid), Timer(budget * 10, unit="ns"))
                await ReadOnly()
                if not int(dut.out__valid.value):
                    raise AssertionError(
                        f"case {case['name']}: all inputs accepted but no output for {budget} "
                        f"cycles; outputs {len(outputs)}/{expected_beats}")
            outputs.append(int(dut.out__payload.value))
            await RisingEdge(dut.clk)
            cycles += 1
            continue
        for name in INPUT_STREAMS:
            beats = pending[name]
            want = bool(beats) and (gap == 0.0 or rng.random() >= gap)
            if want:
                payload[name].value = beats[0]
            if want != offered[name]:
                valid[name].value = int(want)
                offered[name] = want
        out_ready = backpressure == 0.0 or rng.random() >= backpressure
        dut.out__ready.value = int(out_ready)
        await ReadOnly()
        taken = [name for name in INPUT_STREAMS if offered[name] and int(ready[name].value)]
        if out_ready and int(dut.out__valid.value):
            outputs.append(int(dut.out__payload.value))
        await RisingEdge(dut.clk)
        cycles += 1
        for name in taken:
            pending[name].pop(0)
            if not pending[name]:
                valid[name].value = 0
                offered[name] = False
    dut.out__ready.value = 1
    for name in INPUT_STREAMS:
        valid[name].value = 0
    # done pulses when the last output beat is accepted, or, with the output max pool, once the
    # dropped last row of an odd-height map is computed too: wait until busy drops (that row
    # takes fewer cycles than the case so far).
    for _ in range(64 + cycles):
        await ReadOnly()
        if not int(dut.busy.value):
            break
        await RisingEdge(dut.clk)
    else:
        raise AssertionError(f"case {case['name']}: all outputs arrived but busy stayed high")
    counters = {name: int(getattr(dut, name).value) for name in COUNTERS}
    seconds = time.perf_counter() - started
    await RisingEdge(dut.clk)
    return {"name": case["name"], "outputs": outputs, "counters": counters,
            "bench_cycles": cycles, "seconds": seconds}


@cocotb.test()
async def run_cases(dut):
    data = tb_data()
    rng = random.Random(data.get("seed", 0))
    await _reset(dut)
    results = []
    for case in data["cases"]:
        results.append(await _run_case(dut, case, rng))
        with open(data["results_path"], "w") as f:
            json.dump({"results": results}, f)
