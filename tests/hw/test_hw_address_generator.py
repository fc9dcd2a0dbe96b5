"""Address generator vs the packing stream order (psconv.firmware.packing)."""

import math

import pytest
import torch

from psconv.families import dense_family, mask_taps, paper_family, pointwise_family
from psconv.firmware.packing import engine_weight_words, pack_layer, rotated_masks
from psconv.hw.address_generator import AddressGenerator

from hw_sim_helpers import small_config, wait_for
from sim_helpers import run, stream_put


def expected_slots(masks, in_channels, o, tn):
    """(channel, tap, valid) per (cycle, lane) straight from the stream-order definition."""
    period = len(masks)
    seq = [(q, t) for q, mask in enumerate(masks) for t in mask_taps(mask)]
    slots = math.ceil(in_channels / period) * len(seq)
    cycles = math.ceil(slots / tn)
    out = []
    for c in range(cycles):
        row = []
        for lane in range(tn):
            p, j = divmod(c * tn + lane, len(seq))
            q, t = seq[j]
            i = p * period + (q - o) % period
            row.append((i, t, i < in_channels))
        out.append(row)
    return out


def simulate(config, masks, in_channels, out_channels, gap_every=0, shared=True):
    """Load ``masks``, then issue every cycle of ``out_channels`` output channels; returns
    (cycles_per_output, list of per-cycle lane tuples, T). ``shared``: one sequence word read
    for all lanes (iCE40) or a read port per lane (ECP5 LUT RAM)."""
    dut = AddressGenerator(config, shared_sequence_read=shared)
    period = len(masks)
    result = {}

    async def tb(ctx):
        ctx.set(dut.in_channels, in_channels)
        ctx.set(dut.period, period)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for mask in masks:
            await stream_put(ctx, dut.mask_in, mask)
        await wait_for(ctx, dut.ready, limit=2000)
        cycles = ctx.get(dut.cycles_per_output)
        result["cycles"] = cycles
        result["taps"] = ctx.get(dut.taps_per_period)
        collected = []
        issued = 0

        def sample():
            if ctx.get(dut.slot_valid):
                collected.append([(ctx.get(dut.lane_channel[l]), ctx.get(dut.lane_tap[l]),
                                   bool(ctx.get(dut.lane_valid) >> l & 1)) for l in range(config.tn)])

        for o in range(out_channels):
            for c in range(cycles):
                if gap_every and issued % gap_every == gap_every - 1:
                    ctx.set(dut.issue, 0)   # a stall cycle: lanes must hold their positions
                    await ctx.tick()
                    sample()
                ctx.set(dut.issue, 1)
                ctx.set(dut.first, c == 0)
                ctx.set(dut.out_mod, o % period)
                await ctx.tick()
                issued += 1
                sample()
        ctx.set(dut.issue, 0)
        for _ in range(AddressGenerator.LATENCY + 1):
            await ctx.tick()
            sample()
        result["lanes"] = collected

    run(dut, tb)
    return result


CASES = [
    # (family, tn, C_in, C_out)
    (paper_family(1, 16, dense_kernel=True), 16, 37, 3),   # unbalanced PSD1_P16, T=24, C_in % P != 0
    (paper_family(4, 8, dense_kernel=True), 4, 13, 3),      # PSD4_P8 with a narrow engine
    (paper_family(2, 8), 16, 16, 2),                        # balanced PS2_P8, T=16 = tn
    (dense_family(), 16, 5, 3),                             # T = 9 < tn: two wraps per cycle
    (pointwise_family(), 16, 21, 2),                        # T = 1: 16 periods per cycle
    (paper_family(3, 6), 4, 7, 7),                          # P = 6 (not a power of two)
    # narrow engines (the iCEBreaker's tn = 2): sequence words of tn entries wrapping around T
    (paper_family(1, 16, dense_kernel=True), 2, 16, 3),     # T = 24 > tn
    (dense_family(), 2, 5, 2),                              # T = 9 odd: word 8 is (s8, s0)
    (pointwise_family(), 2, 5, 2),                          # T = 1 = tn - 1
    (pointwise_family(), 3, 4, 2),                          # T = 1 < tn - 1: entries kept twice
    (paper_family(2, 8), 1, 9, 2),                          # tn = 1: one entry per word
]


@pytest.mark.parametrize("shared", [True, False], ids=["shared_read", "read_per_lane"])
@pytest.mark.parametrize("family,tn,c_in,c_out", CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_lanes_follow_stream_order(family, tn, c_in, c_out, shared):
    config = small_config(tn=tn, family=paper_family(1, 16, dense_kernel=True), max_in_channels=64)
    masks = rotated_masks(family)
    res = simulate(config, masks, c_in, c_out, gap_every=5, shared=shared)
    expected = [row for o in range(c_out) for row in expected_slots(masks, c_in, o, tn)]
    assert res["taps"] == sum(bin(m).count("1") for m in masks)
    slots = math.ceil(c_in / len(masks)) * res["taps"]
    assert res["cycles"] == math.ceil(slots / tn)
    assert len(res["lanes"]) == len(expected)
    for k, (got, want) in enumerate(zip(res["lanes"], expected)):
        got_cmp = [(i if v else None, t if v else None, v) for i, t, v in got]
        want_cmp = [(i if v else None, t if v else None, v) for i, t, v in want]
        assert got_cmp == want_cmp, f"cycle {k}"

    # The same slots index the packed weight words: lane l of word o*cycles + c is w[o, i, t].
    torch.manual_seed(7)
    k = family.kernel_size
    weight = torch.randint(1, 127, (c_out, c_in, k, k)) * family.weight_mask(c_out, c_in).to(torch.int64)
    words = engine_weight_words(pack_layer(weight.to(torch.int8), family), tn)
    taps = weight.reshape(c_out, c_in, -1)
    for idx, row in enumerate(res["lanes"]):
        o = idx // res["cycles"]
        for lane, (i, t, valid) in enumerate(row):
            want = 0
            if valid:
                want = int(taps[o, i, t if k == 3 else 0])
            assert int(words[idx, lane]) == want, (idx, lane, i, t)


def test_sequence_read_ports_follow_the_platform():
    """One shared sequence read where block RAM has one read port (iCE40, no platform); a read
    port per lane in LUT RAM on an ECP5."""
    from amaranth.back import rtlil

    class ECP5:
        family = "ecp5"

    config = small_config(tn=4)
    shared = rtlil.convert(AddressGenerator(config), name="top")
    per_lane = rtlil.convert(AddressGenerator(config), name="top", platform=ECP5())
    assert shared.count("cell $memrd_v2") == 1
    assert per_lane.count("cell $memrd_v2") == config.tn
