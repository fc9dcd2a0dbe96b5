"""The output max pool (psconv.hw.output_pool) alone, bit-exact against the golden maxpool2d_int."""

import random

import pytest
import torch

from psconv.hw.output_pool import OutputMaxPool
from psconv.protocol.beats import beats_to_pixels, pixel_beats
from psconv.sim.golden.ops import maxpool2d_int

from hw_sim_helpers import small_config
from sim_helpers import raw, run


def pool_stream(config, layers, *, enable=True, gaps=0.0, stalls=0.0, seed=0):
    """Each (C, H, W) map of ``layers`` as the engine's ``out`` beats through one
    :class:`OutputMaxPool`, one layer after the other; returns the beats that came out per layer
    (the block must be ``idle`` with nothing more to give after each)."""
    rng = random.Random(seed)
    dut = OutputMaxPool(config)
    results = []

    async def bench(ctx):
        for fmap in layers:
            channels, _, width = fmap.shape
            ctx.set(dut.enable, enable)
            ctx.set(dut.out_channels, channels)
            ctx.set(dut.out_width, width)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            beats = pixel_beats(config, fmap)
            got = []
            want = len(pixel_beats(config, maxpool2d_int(fmap))) if enable else len(beats)
            # one testbench offers input beats and takes output beats in the same cycles
            pending = list(beats)
            while pending or len(got) < want:
                if pending:
                    ctx.set(dut.in_.valid, 1)
                    ctx.set(raw(dut.in_.payload), pending[0])
                ready_out = not (stalls and rng.random() < stalls)
                ctx.set(dut.out.ready, ready_out)
                _, _, in_ready, out_valid, out_payload = await ctx.tick().sample(
                    dut.in_.ready, dut.out.valid, dut.out.payload)
                if pending and in_ready:
                    pending.pop(0)
                if out_valid and ready_out:
                    got.append(out_payload.as_bits())
                ctx.set(dut.in_.valid, 0)
                if gaps and rng.random() < gaps:
                    ctx.set(dut.out.ready, 0)
                    await ctx.tick()
            ctx.set(dut.out.ready, 1)
            while not ctx.get(dut.idle):
                await ctx.tick()
            assert not ctx.get(dut.out.valid)
            results.append(got)

    run(dut, bench, max_cycles=20000)
    return results


def maps(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(-128, 128, shape, generator=g) for shape in shapes]


ODD_SHAPES = [(1, 7, 5), (3, 9, 9), (2, 5, 7), (4, 6, 8), (2, 8, 3), (1, 2, 2), (3, 3, 8)]


@pytest.mark.parametrize("tm", [1, 2, 3, 4])
def test_pooled_beats_equal_maxpool2d_int(tm):
    """Odd and even sizes, one and several channels, a lone last column block (W = 9, tm = 4:
    blocks 0-3, 4-7, 8), back to back in one block (``start`` resets it), with input gaps and
    output stalls."""
    config = small_config(tm=tm)
    layers = maps(ODD_SHAPES, seed=tm)
    results = pool_stream(config, layers, gaps=0.2, stalls=0.3, seed=tm)
    for fmap, beats in zip(layers, results):
        want = maxpool2d_int(fmap)
        got = beats_to_pixels(config, beats, *want.shape)
        assert torch.equal(got, want), f"{tuple(fmap.shape)} tm={tm}"


def test_pool_takes_the_maximum_not_another_element():
    """Every 2x2 window holds four different values in a random position, so a pool that took
    the minimum, the first or the last element would differ from the maximum somewhere."""
    config = small_config(tm=2)
    g = torch.Generator().manual_seed(5)
    fmap = torch.empty((2, 6, 6), dtype=torch.int64)
    for c in range(2):
        for y in range(0, 6, 2):
            for x in range(0, 6, 2):
                values = torch.tensor([-100, -3, 40, 120])[torch.randperm(4, generator=g)]
                fmap[c, y:y + 2, x:x + 2] = values.view(2, 2)
    (beats,) = pool_stream(config, [fmap])
    got = beats_to_pixels(config, beats, 2, 3, 3)
    assert (got == 120).all()


def test_without_enable_beats_pass_unchanged():
    config = small_config(tm=3)
    layers = maps([(2, 5, 7)], seed=9)
    (beats,) = pool_stream(config, layers, enable=False, stalls=0.3)
    assert beats == pixel_beats(config, layers[0])
