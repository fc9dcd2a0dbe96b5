"""Serial divider vs Python divmod."""

import random

from psconv.hw.arith import SerialDivider

from sim_helpers import run


def test_divider_matches_divmod():
    dut = SerialDivider(13, 8)
    rng = random.Random(5)
    cases = [(0, 1), (1, 1), (8191, 1), (8191, 255), (100, 3), (5, 7), (4752, 16)]
    cases += [(rng.randrange(1 << 13), rng.randrange(1, 1 << 8)) for _ in range(20)]

    async def tb(ctx):
        for dividend, divisor in cases:
            ctx.set(dut.dividend, dividend)
            ctx.set(dut.divisor, divisor)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ticks = 0
            while not ctx.get(dut.done):
                await ctx.tick()
                ticks += 1
            assert ticks == 13
            assert (ctx.get(dut.quotient), ctx.get(dut.remainder)) == divmod(dividend, divisor), (dividend, divisor)

    run(dut, tb)
