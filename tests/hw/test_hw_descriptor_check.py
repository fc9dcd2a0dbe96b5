# amaranth: UnusedElaboratable=no
"""DescriptorCheck: the gateware refuses exactly the descriptors LayerSpec.check refuses, naming
the same rule of DESCRIPTOR_RULES; Watchdog: expires after its period of silence, only while armed."""

import random

import pytest

from psconv.errors import PsconvError
from psconv.hw.descriptor_check import DescriptorCheck
from psconv.hw.watchdog import Watchdog
from psconv.protocol.descriptor import DESCRIPTOR_RULES, LayerSpec, layer_descriptor_layout

from hw_sim_helpers import small_config
from sim_helpers import raw, run

# every rule live (products above the buffer's rows; passes with periods that do not divide
# patch_channels), and a config for which two rules are implied and left out and which has no
# output max pool (pool = 1 refused)
ALL_RULES = small_config(max_in_channels=16, patch_channels=4, max_period=6, fmap_depth=96)
IMPLIED = small_config(max_pool=False)


def host_verdict(config, fields):
    """The index of the rule LayerSpec.check refuses ``fields`` for, or None."""
    spec = LayerSpec(**fields)
    try:
        spec.check(config)
    except PsconvError as e:
        index = spec.broken_rule(config)
        assert str(e).startswith(f"engine layer: {DESCRIPTOR_RULES[index].name} is "), e
        return index
    assert spec.broken_rule(config) is None
    return None


@pytest.mark.parametrize("config", [ALL_RULES, IMPLIED], ids=["all rules", "implied rules"])
def test_gateware_and_host_refuse_the_same_descriptors(config):
    layout = layer_descriptor_layout(config)
    rng = random.Random(5)
    cases = []
    for _ in range(400):
        # mostly near the limits, where the rules bite
        fields = {}
        for name, member in layout:
            top = (1 << member.shape.width) - 1
            fields[name] = rng.choice([0, 1, 2, 3, top, top - 1, rng.randint(0, top)])
        for flag in ("relu", "residual", "pool"):
            fields[flag] = bool(fields[flag])
        cases.append(fields)
    # a layer in passes whose period does not divide patch_channels: rare at random
    cases += [dict(in_channels=config.patch_channels + 1, out_channels=1, in_height=1,
                   in_width=1, stride=1, kernel=3, relu=False, residual=False, period=period)
              for period in range(1, config.max_period + 1)]
    # rules that random fields rarely break alone: the feature-map rows (where live), pool
    # without the block, pool with a residual, pool of a map that pools to nothing (and the
    # smallest maps that pool to something)
    valid = dict(in_channels=4, out_channels=1, in_height=2, in_width=2, stride=1, kernel=3,
                 relu=False, residual=False, period=1, pool=False)
    pooled = {**valid, "pool": True}
    cases += [valid, {**valid, "in_height": 4}, pooled, {**pooled, "residual": True},
              {**pooled, "in_height": 1}, {**pooled, "in_width": 1},
              {**pooled, "stride": 2}, {**pooled, "stride": 2, "in_height": 3},
              {**pooled, "stride": 2, "in_height": 3, "in_width": 3}]
    seen = set()
    dut = DescriptorCheck(config)

    async def tb(ctx):
        for fields in cases:
            ctx.set(raw(dut.descriptor), layout.const(fields).as_value().value)
            await ctx.tick().repeat(DescriptorCheck.LATENCY)
            expected = host_verdict(config, fields)
            assert ctx.get(dut.ok) == (expected is None), fields
            if expected is not None:
                assert ctx.get(dut.rule) == expected, fields
            seen.add(expected)

    run(dut, tb)
    live = {i for i, rule in enumerate(DESCRIPTOR_RULES)
            if rule.implied is None or not rule.implied(config)}
    assert seen == live | {None}


def test_watchdog_expires_after_its_period_of_silence_only_while_armed():
    dut = Watchdog(5)
    pulses = []

    async def tb(ctx):
        ctx.set(dut.armed, 0)
        for _ in range(20):                    # disarmed: never
            await ctx.tick()
            pulses.append(ctx.get(dut.expired))
        ctx.set(dut.armed, 1)
        for cycle in range(12):
            ctx.set(dut.activity, int(cycle == 3))   # a byte restarts the count
            pulses.append(ctx.get(dut.expired))
            await ctx.tick()

    run(dut, tb)
    # armed from cycle 20; activity at 23; then 5 quiet cycles 24..28: expired in cycle 28
    assert [i for i, p in enumerate(pulses) if p] == [28]
    with pytest.raises(PsconvError, match="watchdog: cycles 1; allowed: an integer >= 2"):
        Watchdog(1)
