"""Post-processor vs psconv.sim.golden.ops.requantize (bias, M, S, residual R, ReLU, saturation)."""

import random

import pytest
import torch

from psconv.hw.layer import encode_quant_entry, pack_bytes, unpack_bytes
from psconv.hw.post_processor import PostProcessor
from psconv.sim.golden.ops import requantize

from hw_sim_helpers import raw, run, send, small_config


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_requantize(relu, residual):
    config = small_config(tm=2)
    tm, acc_w = config.tm, config.acc_width
    c_out, out_h, out_w = 4, 2, 5
    blocks = -(-out_w // tm)
    groups = out_h * blocks
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
    # pixels beyond W_out come out as 0
    pixel_ok = torch.tensor([[(g % blocks) * tm + r < out_w for r in range(tm)] for g in range(groups)])
    want = torch.where(pixel_ok[None], want, torch.zeros_like(want))
    assert (want == 127).any() and (want == (0 if relu else -128)).any()

    dut = PostProcessor(config)
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
        await send(ctx, dut.quant_in, [encode_quant_entry(int(b), int(m), int(s), int(r))
                                       for b, m, s, r in zip(bias, mult, shift, res_mult)])
        assert ctx.get(dut.quant_loaded) == c_out
        beats = [pack_bytes(res[o, g].tolist()) for g in range(groups) for o in range(c_out)]
        if residual:
            await send(ctx, dut.residual_in, beats)
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
    got = torch.tensor(outputs).reshape(groups, c_out, tm).permute(1, 0, 2)
    assert state["written"] == groups * c_out
    assert torch.equal(got, want)
