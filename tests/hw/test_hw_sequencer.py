"""Sequencer: loop order (with input-channel passes), start conditions (patch, residual, output
credits), counters, done."""

import random

import pytest

from psconv.hw.sequencer import Sequencer

from hw_sim_helpers import small_config
from sim_helpers import run


def expected_issues(c_out, out_h, out_w, period, pass_cycles, tm):
    """(first, last, o mod P, weight word, buffer, pixels, first pass, last pass) per issue."""
    seq = []
    build = 0
    words = sum(pass_cycles)
    for y in range(out_h):
        for x0 in range(0, out_w, tm):
            pixels = sum(1 << r for r in range(tm) if x0 + r < out_w)
            for k, cycles in enumerate(pass_cycles):
                for o in range(c_out):
                    for c in range(cycles):
                        seq.append((c == 0, c == cycles - 1, o % period,
                                    o * words + sum(pass_cycles[:k]) + c, build % 2, pixels,
                                    k == 0, k == len(pass_cycles) - 1))
                build += 1
    return seq


@pytest.mark.parametrize("pass_cycles,max_in,residual", [
    ([2], 48, True), ([3, 3, 1], 48, True), ([2], 16, True), ([3], 16, True),
    # one cycle per output channel: channels may start on consecutive cycles, so the credits
    # must count the beat claimed the cycle before (without a residual the output FIFO binds)
    ([1], 16, True), ([1], 16, False)],
    ids=["multi_pass-1", "multi_pass-3", "one_pass-2", "one_pass-3", "one_pass-1",
         "one_pass-1-no_residual"])
@pytest.mark.parametrize("lookahead", [True, False], ids=["lookahead", "compares"])
def test_loop_order_conditions_and_counters(pass_cycles, max_in, residual, lookahead):
    # max_in = patch_channels: a one-pass configuration (no pass state, consecutive weight words)
    config = small_config(tm=2, max_in_channels=max_in, patch_channels=16)
    assert config.multi_pass == (max_in > 16)
    c_out, out_h, out_w, period = 5, 2, 3, 2
    latency = 9                          # issue of a last cycle -> residual pop; +4 -> written
    rng = random.Random(3)
    dut = Sequencer(config, lookahead=lookahead)
    issues = []
    state = {"cycle": 0, "done_cycles": [], "stalls_seen": 0}

    async def env(ctx):
        ctx.set(dut.out_channels, c_out)
        ctx.set(dut.out_height, out_h)
        ctx.set(dut.out_width, out_w)
        ctx.set(dut.period, period)
        ctx.set(dut.residual, residual)
        ctx.set(dut.cycles_per_output, sum(pass_cycles))
        ctx.set(dut.passes, len(pass_cycles))
        ctx.set(dut.full_pass_cycles, pass_cycles[0])
        ctx.set(dut.last_pass_cycles, pass_cycles[-1])
        ctx.set(dut.weights_loaded, c_out)
        ctx.set(dut.quant_loaded, c_out)
        ctx.set(dut.macs_add, 3)
        ctx.set(dut.out_idle, 1)        # no output max pool holding a beat
        ctx.set(dut.start, 1)
        full = 0
        build_timer = {0: 7, 1: 12}      # cycles until the "window generator" fills each buffer
        res_level, res_arrival = 0, 0
        pops, writes = [], []
        # output FIFO: 28 beats of an earlier consumer's backlog, read one every 4 cycles (the
        # layer's 20 beats would overflow it: forces output-credit stalls)
        fifo_level = 28
        cycle = 0
        while cycle < 2000:
            # window generator model
            for b in (0, 1):
                if not (full >> b & 1) and build_timer.get(b) is not None:
                    build_timer[b] -= 1
                    if build_timer[b] == 0:
                        full |= 1 << b
                        build_timer[b] = None
            ctx.set(dut.patch_full, full)
            # residual stream: a beat every 6 cycles (slow: forces residual stalls)
            res_arrival += 1
            if res_arrival == 6:
                res_arrival = 0
                res_level += 1
            popped = residual and cycle in pops
            if popped:
                assert res_level > 0, "residual popped before it arrived"
                res_level -= 1
            ctx.set(dut.residual_level, res_level)
            ctx.set(dut.residual_popped, popped)
            if cycle % 4 == 0 and fifo_level:
                fifo_level -= 1
            fifo_level += cycle in writes
            ctx.set(dut.written, cycle in writes)
            ctx.set(dut.out_level, fifo_level)
            ctx.set(dut.setup_ready, cycle >= 5)
            issue, first, last, mod, waddr, buf, pixels, release, done = (
                ctx.get(dut.issue), ctx.get(dut.first), ctx.get(dut.last), ctx.get(dut.out_mod),
                ctx.get(dut.weight_addr), ctx.get(dut.buffer), ctx.get(dut.pixels),
                ctx.get(dut.patch_release), ctx.get(dut.done))
            last_pass = bool(ctx.get(dut.last_pass))
            if issue:
                issues.append((bool(first), bool(last), mod, waddr, buf, pixels,
                               bool(ctx.get(dut.first_pass)), last_pass))
                if first and last_pass:
                    # a started output channel's residual beat is buffered and its FIFO room kept
                    claimed = sum(p > cycle for p in pops)
                    assert not residual or res_level > claimed, \
                        f"cycle {cycle}: residual beat not buffered"
                    in_flight = sum(w > cycle for w in writes)
                    assert fifo_level + in_flight < dut.fifo_depth, \
                        f"cycle {cycle}: output FIFO over-committed"
                if last and last_pass:
                    pops.append(cycle + latency)
                    writes.append(cycle + latency + 4)
            for b in (0, 1):
                if release >> b & 1:
                    assert full >> b & 1
                    full &= ~(1 << b)
                    build_timer[b] = rng.randint(1, 15)
            if done:
                state["done_cycles"].append(cycle)
                state["counters"] = {n: ctx.get(getattr(dut, n)) for n in
                                     ("busy_cycles", "stall_cycles", "idle_cycles", "macs")}
                state["busy_after"] = ctx.get(dut.busy)
                break
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycle += 1

    run(dut, env)
    assert issues == expected_issues(c_out, out_h, out_w, period, pass_cycles, config.tm)
    assert len(state["done_cycles"]) == 1
    counters = state["counters"]
    assert counters["busy_cycles"] == len(issues)
    assert counters["stall_cycles"] > 0          # the slow residual stream and builder stall issue
    assert counters["busy_cycles"] + counters["stall_cycles"] + counters["idle_cycles"] == state["done_cycles"][0]
    assert counters["macs"] == 3 * (state["done_cycles"][0])     # macs_add summed every cycle
    assert not state["busy_after"]


def test_narrow_counters_cover_the_largest_layer():
    """The busy and MAC counters are only as wide as a layer can count (hw/counters.py): the
    largest layer the iCEBreaker configuration accepts must fit, and the outputs stay 48 bits."""
    from psconv.families import paper_family
    from psconv.firmware.packing import rotated_masks
    from psconv.hw.counters import PerformanceCounters
    from psconv.protocol.payloads import COUNTER_WIDTH
    from psconv.protocol.descriptor import LayerSpec
    from psconv.sim.cycle_model import predict_cycles

    config = small_config(tm=1, tn=2, family=paper_family(1, 16, dense_kernel=True),
                          weight_depth=256)
    family = paper_family(1, 16, dense_kernel=True)
    masks = rotated_masks(family)
    shape = dict(in_channels=16, out_channels=16, in_height=8, in_width=8, stride=1, kernel=3,
                 relu=0, residual=0, period=16)
    LayerSpec(**shape).check(config, masks)                 # the largest layer is a valid one
    pred = predict_cycles(config, shape, masks)
    counters = PerformanceCounters(config.tm * config.tn, Sequencer.max_busy_cycles(config))
    assert pred["busy"] < 1 << counters.busy_width
    assert pred["busy"] * config.tm * config.tn < 1 << counters.macs_width
    assert counters.busy_width < COUNTER_WIDTH and counters.macs_width < COUNTER_WIDTH
    assert len(counters.busy_cycles) == len(counters.macs) == COUNTER_WIDTH

    # At their bound the narrow counters read as 48-bit ones would (and clear restarts them).
    cycles, per_cycle = 2 ** counters.busy_width - 1, config.tm * config.tn

    async def tb(ctx):
        ctx.set(counters.clear, 1)
        ctx.set(counters.count_busy, 1)
        ctx.set(counters.macs_add, per_cycle)
        await ctx.tick()
        ctx.set(counters.clear, 0)
        for _ in range(cycles - 1):
            await ctx.tick()
        ctx.set(counters.count_busy, 0)
        ctx.set(counters.macs_add, 0)
        await ctx.tick()
        assert ctx.get(counters.busy_cycles) == cycles
        assert ctx.get(counters.macs) == cycles * per_cycle
        ctx.set(counters.clear, 1)
        await ctx.tick()
        assert ctx.get(counters.busy_cycles) == ctx.get(counters.macs) == 0

    run(counters, tb)
