"""PE array: tap mux, multiply, adder tree, accumulate, result timing and MAC count."""

import random

import pytest

from psconv.protocol.beats import pack_bytes
from psconv.hw.pe_array import PEArray
from psconv.hw.window import patch_address_bits, patch_window_bytes

from hw_sim_helpers import small_config
from sim_helpers import raw, run


def _random_patches(config, rng):
    win = patch_window_bytes(config)
    return [[[rng.randint(-128, 127) for _ in range(3 * win)]
             for _ in range(config.patch_channels)] for _ in range(2)]


def _random_slots(config, rng, cycles):
    return [[(rng.randint(0, config.patch_channels - 1), rng.randint(0, 8), rng.random() < 0.8,
              rng.randint(-128, 127)) for _ in range(config.tn)] for _ in range(cycles)]


def _run_jobs(config, stride, select_tap_early, patches, jobs):
    """Drive ``jobs`` (dicts: buf, pixels, slots (per cycle, per lane: channel, tap, valid,
    weight), gap (an idle cycle after), and with passes first_pass, last_pass, channel) through
    a PEArray; returns the results (cycle, tm values, pixels), the issue cycle of every job's
    last slot and the MAC count per cycle."""
    tm, tn = config.tm, config.tn
    abits = patch_address_bits(config)
    dut = PEArray(config, select_tap_early=select_tap_early)
    results, issue_cycles, macs = [], [], []
    state = {"cycle": 0, "done": False}

    async def driver(ctx):
        ctx.set(dut.stride, stride)
        for buf in range(2):
            for c in range(config.patch_channels):
                ctx.set(dut.patch_addr, buf << abits | c)
                ctx.set(raw(dut.patch_data), pack_bytes(patches[buf][c]))
                ctx.set(dut.patch_en, 1)
                await ctx.tick()
                state["cycle"] += 1
        ctx.set(dut.patch_en, 0)
        for job in jobs:
            slots = job["slots"]
            for k, lanes in enumerate(slots):
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, k == 0)
                ctx.set(dut.last, k == len(slots) - 1)
                ctx.set(dut.buffer, job["buf"])
                ctx.set(dut.pixels, job["pixels"])
                if config.multi_pass:
                    ctx.set(dut.first_pass, job.get("first_pass", 1))
                    ctx.set(dut.last_pass, job.get("last_pass", 1))
                    ctx.set(dut.out_channel, job.get("channel", 0))
                for l, (ch, tap, ok, w) in enumerate(lanes):
                    ctx.set(dut.lane_channel[l], ch)
                    ctx.set(dut.lane_tap[l], tap)
                    ctx.set(dut.weights[l], w)
                ctx.set(dut.lane_valid, sum(int(ok) << l for l, (_, _, ok, _) in enumerate(lanes)))
                if k == len(slots) - 1:
                    issue_cycles.append(state["cycle"])
                await ctx.tick()
                state["cycle"] += 1
            if job["gap"]:
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
    return results, issue_cycles, macs


def _dot(config, patches, stride, job):
    """Per pixel, the sum over the job's slots and valid lanes of tap x weight."""
    win = patch_window_bytes(config)

    def tap(buf, ch, r, t):
        dy, dx = divmod(t, 3)
        return patches[buf][ch][dy * win + r * stride + dx]

    return [sum(tap(job["buf"], ch, r, t) * w for lanes in job["slots"]
                for ch, t, ok, w in lanes if ok) for r in range(config.tm)]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("select_tap_early", [False, True])
def test_accumulated_dot_products(select_tap_early, stride):
    """Patch words are three window rows of 2*tm + 1 bytes; pixel r's tap (dy, dx) is row dy,
    byte r*stride + dx."""
    config = small_config(tm=3, tn=5)      # odd tn: the adder tree carries an unpaired lane
    tm = config.tm
    assert patch_window_bytes(config) == 2 * tm + 1
    rng = random.Random(9 + stride)
    patches = _random_patches(config, rng)

    # Output channels with 1..3 slot cycles each, back to back, occasional idle cycles between.
    jobs = [dict(buf=rng.randint(0, 1), pixels=rng.randint(0, (1 << tm) - 1),
                 slots=_random_slots(config, rng, rng.randint(1, 3)), gap=rng.random() < 0.3)
            for _ in range(12)]
    # extreme values: all -128 (largest positive products) on one job
    jobs.append(dict(buf=0, pixels=(1 << tm) - 1,
                     slots=[[(0, 0, True, -128) for _ in range(config.tn)]] * 3, gap=False))
    patches[0][0] = [-128] * len(patches[0][0])

    results, issue_cycles, macs = _run_jobs(config, stride, select_tap_early, patches, jobs)
    assert len(results) == len(jobs)
    for (cycle, values, pixels), issue, job in zip(results, issue_cycles, jobs):
        assert values == _dot(config, patches, stride, job)
        assert pixels == job["pixels"]
        assert cycle - issue == PEArray.latency(config)
    want_macs = sum(sum(ok for _, _, ok, _ in lanes) * bin(job["pixels"]).count("1")
                    for job in jobs for lanes in job["slots"])
    assert sum(macs) == want_macs


def test_partial_sums_carry_across_input_channel_passes():
    """With input-channel passes an output channel's total is the sum of its passes, whatever
    comes between them: passes of other channels, idle cycles, or nothing (a pass of one cycle
    right after the channel's previous pass, or two cycles after it: the partial sum is read
    ahead, and those writes reach it through bypasses)."""
    config = small_config(tm=3, tn=5, patch_channels=4)
    assert config.multi_pass
    rng = random.Random(31)
    patches = _random_patches(config, rng)
    # (channel, cycles of each pass) in issue order, each channel's passes in order
    order = []
    for channel, passes in ((0, [1, 1, 1]),            # back to back, one cycle each
                            (1, [2, 1, 3])):
        order += [(channel, cycles) for cycles in passes]
    order += [(2, 1), (3, 1), (2, 1), (3, 1), (2, 1), (3, 1)]   # two cycles apart
    pending = {4: [3, 1], 5: [1, 2, 2], 6: [2, 2]}             # random interleaving
    while pending:
        channel = rng.choice(sorted(pending))
        order.append((channel, pending[channel].pop(0)))
        if not pending[channel]:
            del pending[channel]
    counts = {channel: sum(1 for c, _ in order if c == channel) for channel, _ in order}
    seen = {channel: 0 for channel in counts}
    jobs = []
    for channel, cycles in order:
        k = seen[channel]
        seen[channel] += 1
        jobs.append(dict(buf=rng.randint(0, 1), pixels=(1 << config.tm) - 1, channel=channel,
                         first_pass=k == 0, last_pass=k == counts[channel] - 1,
                         slots=_random_slots(config, rng, cycles),
                         gap=channel >= 4 and rng.random() < 0.3))
    results, _, _ = _run_jobs(config, 1, False, patches, jobs)
    finished = [job["channel"] for job in jobs if job["last_pass"]]
    assert len(results) == len(finished)
    for (_, values, _), channel in zip(results, finished):
        want = [sum(column) for column in zip(*(_dot(config, patches, 1, job) for job in jobs
                                                 if job["channel"] == channel))]
        assert values == want, channel
