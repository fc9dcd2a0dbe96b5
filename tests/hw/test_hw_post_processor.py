"""Post-processor vs psconv.sim.golden.ops.requantize (bias, M, S, residual R, ReLU, saturation)."""

import random

import pytest
import torch

from psconv.protocol.beats import pack_bytes, unpack_bytes
from psconv.protocol.descriptor import encode_quant_entry
from psconv.hw.post_processor import PostProcessor
from psconv.sim.golden.ops import requantize

from hw_sim_helpers import small_config
from sim_helpers import raw, run, stream_put


def simulate(config, acc, bias, mult, shift, res_mult, res, relu, residual, out_h, out_w, seed=0,
             register_entry=True):
    """Run the post-processor on ``acc`` (C_out, groups, tm) and return what it outputs, in the
    same shape; asserts one ``written`` pulse per result and that extra residual beats are refused."""
    tm = config.tm
    c_out, groups = acc.shape[0], acc.shape[1]
    blocks = -(-out_w // tm)
    pixel_ok = torch.tensor([[(g % blocks) * tm + r < out_w for r in range(tm)] for g in range(groups)])
    rng = random.Random(seed)
    dut = PostProcessor(config, register_entry=register_entry)
    outputs = []
    state = {"done": False, "written": 0}

    async def loader(ctx):
        ctx.set(dut.out_channels, c_out)
        ctx.set(dut.out_height, out_h)
        ctx.set(dut.out_width, out_w)
        ctx.set(dut.relu, relu)
        ctx.set(dut.residual, residual)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for b, m, s, r in zip(bias, mult, shift, res_mult):
            await stream_put(ctx, dut.quant_in, encode_quant_entry(int(b), int(m), int(s), int(r)))
        assert ctx.get(dut.quant_loaded) == c_out
        beats = [pack_bytes(res[o, g].tolist()) for g in range(groups) for o in range(c_out)]
        if residual:
            for beat in beats:
                await stream_put(ctx, dut.residual_in, beat)
            ctx.set(dut.residual_in.valid, 1)     # one beat more than the layer needs: refused
            for _ in range(3):
                await ctx.tick()
                assert not ctx.get(dut.residual_in.ready)
            ctx.set(dut.residual_in.valid, 0)
            assert ctx.get(dut.residual_level) == groups * c_out
        else:
            ctx.set(dut.residual_in.valid, 1)
            await ctx.tick()
            assert not ctx.get(dut.residual_in.ready)
            ctx.set(dut.residual_in.valid, 0)
        for g in range(groups):
            for o in range(c_out):
                ctx.set(dut.result_valid, 1)
                for r in range(tm):
                    ctx.set(dut.result[r], int(acc[o, g, r]))
                ctx.set(dut.result_pixels, sum(int(pixel_ok[g, r]) << r for r in range(tm)))
                await ctx.tick()
                if rng.random() < 0.3:
                    ctx.set(dut.result_valid, 0)
                    await ctx.tick()
        ctx.set(dut.result_valid, 0)
        for _ in range(PostProcessor.LATENCY + 4):
            await ctx.tick()
        state["done"] = True

    async def sink(ctx):
        ctx.set(dut.out.ready, 1)
        while not state["done"]:
            _, _, valid, payload, written = await ctx.tick().sample(dut.out.valid, raw(dut.out.payload), dut.written)
            state["written"] += written
            if valid:
                outputs.append(unpack_bytes(payload, tm))

    run(dut, loader, sink)
    assert state["written"] == groups * c_out
    return torch.tensor(outputs).reshape(groups, c_out, tm).permute(1, 0, 2), pixel_ok


@pytest.mark.parametrize("register_entry", [True, False])
@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_requantize(relu, residual, register_entry):
    config = small_config(tm=2)
    tm, acc_w = config.tm, config.acc_width
    c_out, out_h, out_w = 4, 2, 5
    groups = out_h * -(-out_w // tm)
    rng = random.Random(relu * 2 + residual)
    lim = 1 << (acc_w - 1)
    acc = torch.tensor([[[rng.choice([rng.randint(-lim, lim - 1), -lim, lim - 1, 0, rng.randint(-99, 99)])
                          for _ in range(tm)] for _ in range(groups)] for _ in range(c_out)])
    # per channel: hard saturation; a spread over the int8 range; extreme bias/shift (rounding
    # at the edge of 2**62); multiplier 0 (only the residual term counts)
    bias = torch.tensor([rng.randint(-5000, 5000), rng.randint(-5000, 5000), -(1 << 31), (1 << 31) - 1])
    mult = torch.tensor([(1 << 30) - 1, rng.randint(1 << 28, 1 << 29), (1 << 30) - 1, 0])
    shift = torch.tensor([20, acc_w + 20, 62, 29])
    res_mult = torch.tensor([rng.randint(0, 1 << 29), (1 << 30) - 1, rng.randint(0, 1 << 29), (1 << 30) - 1])
    res = torch.randint(-128, 128, (c_out, groups, tm), generator=torch.Generator().manual_seed(4))
    res[:, 0, 0] = -128
    want = requantize(acc, bias, mult, shift, relu, res if residual else None, res_mult if residual else None)
    got, pixel_ok = simulate(config, acc, bias, mult, shift, res_mult, res, relu, residual, out_h, out_w,
                             seed=relu * 2 + residual, register_entry=register_entry)
    # pixels beyond W_out come out as 0
    want = torch.where(pixel_ok[None], want, torch.zeros_like(want))
    assert (want == 127).any() and (want == (0 if relu else -128)).any()
    assert torch.equal(got, want)


@pytest.mark.parametrize("register_entry", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_rounding_ties_and_saturation_edges(relu, register_entry):
    """Every shift 1..62, with accumulators placed on exact rounding ties (v = (2k+1) * 2**(S-1))
    and around the int8 limits (y = -129..-127, 126..128, and far beyond): the shift stages keep
    only 17 bits of v >> (S - 1), so these are the values a wrong clamp or rounding would change."""
    config = small_config(tm=1, max_out_channels=64)
    acc_w = config.acc_width
    lim = 1 << (acc_w - 1)
    shifts = list(range(1, 63))
    targets = [-1000, -257, -129, -128, -127, -1, 0, 1, 126, 127, 128, 255, 256, 1000]
    acc, bias, mult = [], [], []
    for n, s in enumerate(shifts):
        # v = (acc + b) * M with M = 2**(S - 20) (capped at 2**29): every tie (2k+1) * 2**(S-1)
        # is a whole number of M, so one channel gets y + 1/2 - 1, y + 1/2, y + 1/2 + 1... in
        # units of M around its target y (clamped to what acc and b can hold at large S)
        m = 1 << min(29, max(0, s - 20))
        scale = (1 << s) // m
        half = max(scale // 2, 1)
        u = [targets[n % len(targets)] * scale + d for d in (0, -half - 1, -half, half - 1, half, half + 1)]
        b = max(min(u[0], (1 << 31) - 1), -(1 << 31))
        acc.append([max(min(x - b, lim - 1), -lim) for x in u])
        bias.append(b)
        mult.append(m)
    acc = torch.tensor(acc).unsqueeze(-1)                      # (C_out, groups = 6, tm = 1)
    c_out, groups = acc.shape[0], acc.shape[1]
    bias, mult, shift = torch.tensor(bias), torch.tensor(mult), torch.tensor(shifts)
    res_mult = torch.zeros(c_out, dtype=torch.int64)
    res = torch.zeros(c_out, groups, 1, dtype=torch.int64)
    want = requantize(acc, bias, mult, shift, relu)
    got, _ = simulate(config, acc, bias, mult, shift, res_mult, res, relu, False, groups, 1,
                      register_entry=register_entry)
    seen = set(want.flatten().tolist())
    assert len(seen) > 8 and {127, 0 if relu else -128} <= seen   # the targets really spread out
    assert torch.equal(got, want)
