# amaranth: UnusedElaboratable=no
"""PixelOrderAddress walks a CHW map in the engine's beat order: every pixel's address and flags
against a Python model of that order, for map widths that fill, split and pad the column
blocks, with single and pair advances mixed at random."""

import random

import pytest

from psconv.hw.pixel_order import PixelOrderAddress

from sim_helpers import run


def expected_walk(tm, base, plane, width, height, channels):
    """(address or None, beat_end, last_beat) per pixel, in the engine's output order."""
    blocks = -(-width // tm)
    walk = []
    for y in range(height):
        for xb in range(blocks):
            for o in range(channels):
                for r in range(tm):
                    x = xb * tm + r
                    address = base + o * plane + y * width + x if x < width else None
                    last = xb == blocks - 1 and o == channels - 1 and y == height - 1
                    walk.append((address, r == tm - 1, last))
    return walk


@pytest.mark.parametrize("tm,width,height,channels", [
    (4, 8, 2, 3), (4, 5, 3, 2), (4, 1, 2, 2), (4, 3, 1, 1), (2, 7, 2, 3), (1, 3, 2, 2),
])
def test_walk_matches_the_engine_order(tm, width, height, channels):
    dut = PixelOrderAddress(tm)
    base, plane = 1001, width * height + 3
    walk = expected_walk(tm, base, plane, width, height, channels)
    rng = random.Random(tm * 100 + width)
    seen = []

    async def tb(ctx):
        for name, value in (("base", base), ("plane", plane), ("width", width),
                            ("height", height), ("channels", channels)):
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        index = 0
        while not ctx.get(dut.finished):
            address, beat_end, last = walk[index]
            inside = ctx.get(dut.inside)
            assert inside == (address is not None), index
            if inside:
                assert ctx.get(dut.address) == address, index
            assert ctx.get(dut.beat_end) == beat_end, index
            assert ctx.get(dut.last_beat) == last, index
            pair_expected = (not beat_end and address is not None
                             and walk[index + 1][0] is not None)
            assert ctx.get(dut.pair_inside) == pair_expected, index
            pair = pair_expected and rng.random() < 0.5
            if pair:
                assert ctx.get(dut.pair_end) == walk[index + 1][1], index
            ctx.set(dut.advance_pair if pair else dut.advance, 1)
            await ctx.tick()
            ctx.set(dut.advance_pair, 0)
            ctx.set(dut.advance, 0)
            seen.append(index)
            index += 2 if pair else 1
            if rng.random() < 0.2:                      # a cycle with no advance
                await ctx.tick()
        assert index == len(walk)

    run(dut, tb, max_cycles=10_000)
    assert seen
