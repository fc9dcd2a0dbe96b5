"""PE array: tap mux, multiply, adder tree, accumulate, result timing and MAC count."""

import random

import pytest

from psconv.protocol.beats import pack_bytes
from psconv.hw.pe_array import PEArray
from psconv.hw.window import patch_address_bits, patch_window_bytes

from hw_sim_helpers import small_config
from sim_helpers import raw, run


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("select_tap_early", [False, True])
def test_accumulated_dot_products(select_tap_early, stride):
    """Patch words are three window rows of 2*tm + 1 bytes; pixel r's tap (dy, dx) is row dy,
    byte r*stride + dx."""
    config = small_config(tm=3, tn=5)      # odd tn: the adder tree carries an unpaired lane
    tm, tn = config.tm, config.tn
    win = patch_window_bytes(config)
    assert win == 2 * tm + 1
    rng = random.Random(9 + stride)
    abits = patch_address_bits(config)
    channels = config.max_in_channels
    patches = [[[rng.randint(-128, 127) for _ in range(3 * win)] for _ in range(channels)]
               for _ in range(2)]

    def tap(buf, ch, r, t):
        dy, dx = divmod(t, 3)
        return patches[buf][ch][dy * win + r * stride + dx]

    # Output channels with 1..3 slot cycles each, back to back, occasional idle cycles between.
    jobs = []
    for _ in range(12):
        cycles = rng.randint(1, 3)
        buf = rng.randint(0, 1)
        pixels = rng.randint(0, (1 << tm) - 1)
        slots = []
        for _ in range(cycles):
            lanes = [(rng.randint(0, channels - 1), rng.randint(0, 8), rng.random() < 0.8,
                      rng.randint(-128, 127)) for _ in range(tn)]
            slots.append(lanes)
        jobs.append((buf, pixels, slots, rng.random() < 0.3))
    # extreme values: all -128 (largest positive products) on one job
    jobs.append((0, (1 << tm) - 1, [[(0, 0, True, -128) for _ in range(tn)]] * 3, False))
    patches[0][0] = [-128] * (3 * win)

    dut = PEArray(config, select_tap_early=select_tap_early)
    results, issue_cycles, macs = [], [], []
    state = {"cycle": 0, "done": False}

    async def driver(ctx):
        ctx.set(dut.stride, stride)
        for buf in range(2):
            for c in range(channels):
                ctx.set(dut.patch_addr, buf << abits | c)
                ctx.set(raw(dut.patch_data), pack_bytes(patches[buf][c]))
                ctx.set(dut.patch_en, 1)
                await ctx.tick()
                state["cycle"] += 1
        ctx.set(dut.patch_en, 0)
        for buf, pixels, slots, gap in jobs:
            for k, lanes in enumerate(slots):
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, k == 0)
                ctx.set(dut.last, k == len(slots) - 1)
                ctx.set(dut.buffer, buf)
                ctx.set(dut.pixels, pixels)
                for l, (ch, tap, ok, w) in enumerate(lanes):
                    ctx.set(dut.lane_channel[l], ch)
                    ctx.set(dut.lane_tap[l], tap)
                    ctx.set(dut.weights[l], w)
                ctx.set(dut.lane_valid, sum(int(ok) << l for l, (_, _, ok, _) in enumerate(lanes)))
                if k == len(slots) - 1:
                    issue_cycles.append(state["cycle"])
                await ctx.tick()
                state["cycle"] += 1
            if gap:
                ctx.set(dut.valid, 0)
                await ctx.tick()
                state["cycle"] += 1
        ctx.set(dut.valid, 0)
        for _ in range(PEArray.latency(config) + 3):
            await ctx.tick()
            state["cycle"] += 1
        state["done"] = True

    async def monitor(ctx):
        cycle = -1
        while not state["done"]:
            _, _, valid, result, pixels, mac = await ctx.tick().sample(
                dut.result_valid, raw(dut.result), dut.result_pixels, dut.macs)
            cycle += 1          # the values sampled at this tick are those of cycle `cycle`
            macs.append(mac)
            if valid:
                values = []
                for r in range(tm):
                    v = result >> (r * config.acc_width) & ((1 << config.acc_width) - 1)
                    values.append(v - (1 << config.acc_width) if v >> (config.acc_width - 1) else v)
                results.append((cycle, values, pixels))

    run(dut, driver, monitor)
    assert len(results) == len(jobs)
    for (cycle, values, pixels), issue, (buf, pix, slots, _) in zip(results, issue_cycles, jobs):
        want = [sum(tap(buf, ch, r, t) * w for lanes in slots for ch, t, ok, w in lanes if ok)
                for r in range(tm)]
        assert values == want
        assert pixels == pix
        assert cycle - issue == PEArray.latency(config)
    want_macs = sum(sum(ok for _, _, ok, _ in lanes) * bin(pix).count("1")
                    for _, pix, slots, _ in jobs for lanes in slots)
    assert sum(macs) == want_macs
