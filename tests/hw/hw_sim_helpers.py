"""Shared Amaranth-simulator helpers for the gateware unit tests (tests/hw)."""

from __future__ import annotations

from psconv.config import EngineConfig
from psconv.families import paper_family

from sim_helpers import raw, run, stream_get, stream_put


def small_config(**changes) -> EngineConfig:
    """A tiny engine (tm=2, tn=4) that simulates fast; ``changes`` override fields."""
    values = dict(tm=2, tn=4, family=paper_family(1, 4, dense_kernel=True), max_in_channels=16,
                  max_out_channels=16, max_height=8, max_width=8, fmap_depth=1024,
                  weight_depth=512)
    values.update(changes)
    return EngineConfig(**values)


async def wait_for(ctx, signal, limit=100000):
    """Tick until ``signal`` is high (checked after each tick); returns the ticks taken."""
    for n in range(limit):
        if ctx.get(signal):
            return n
        await ctx.tick()
    raise AssertionError(f"timeout waiting for {signal!r}")


def random_layer(config, family, spec, seed):
    """Random int8 input, family-masked weights, quantization entries and residual for ``spec``.

    Multipliers/shifts are chosen so outputs cover the int8 range and saturate both ways."""
    import torch

    g = torch.Generator().manual_seed(seed)
    k = spec.kernel
    x = torch.randint(-128, 128, (spec.in_channels, spec.in_height, spec.in_width), generator=g)
    w = torch.randint(-128, 128, (spec.out_channels, spec.in_channels, k, k), generator=g)
    w = w * family.weight_mask(spec.out_channels, spec.in_channels).to(torch.int64)
    bias = torch.randint(-20000, 20000, (spec.out_channels,), generator=g)
    mult = torch.randint(1 << 28, 1 << 29, (spec.out_channels,), generator=g)
    res_mult = torch.randint(0, 1 << 29, (spec.out_channels,), generator=g)
    residual = torch.randint(-128, 128, (spec.out_channels, spec.out_height, spec.out_width), generator=g)
    # Shift per channel so the outputs spread to ~2x the int8 range: saturation both ways.
    from psconv.sim.golden.ops import conv2d_int

    acc = conv2d_int(x, w, stride=spec.stride) + bias.view(-1, 1, 1)
    spread = acc.reshape(spec.out_channels, -1).abs().amax(dim=1).clamp(min=1).to(torch.float64)
    shift = torch.clamp(torch.round(torch.log2(spread * mult.to(torch.float64) / 300)), 1, 62).to(torch.int64)
    return dict(x=x, w=w, bias=bias, mult=mult, shift=shift, res_mult=res_mult, residual=residual)


def golden_output(spec, layer):
    """The golden model's output of ``spec``: the requantized convolution, max-pooled
    (``maxpool2d_int``) when ``spec.pool``."""
    from psconv.sim.golden.ops import conv2d_int, maxpool2d_int, requantize

    acc = conv2d_int(layer["x"], layer["w"], stride=spec.stride)
    out = requantize(acc, layer["bias"], layer["mult"], layer["shift"], spec.relu,
                     layer["residual"] if spec.residual else None,
                     layer["res_mult"] if spec.residual else None)
    return maxpool2d_int(out) if spec.pool else out


def simulate_engine(config, family, spec, layer, *, seed=0, input_gaps=0.0, output_stalls=0.0,
                    order="concurrent", timeout=200000, family_of_fpga=None):
    """Run one layer through :class:`PeriodicSparseEngine` in the Amaranth simulator.

    ``input_gaps``/``output_stalls``: probability that a source withholds ``valid`` / the sink
    withholds ``ready`` in a cycle. ``order="sequential"`` sends masks, quant, weights, then fmap
    one after the other (as a simple host would). ``family_of_fpga`` ("iCE40", "ecp5") elaborates
    the engine as for that FPGA family (the structures psconv.hw.target picks), else for none.
    Returns dict(out=(C,H,W) tensor, beats,
    counters, cycles = start..done, load = cycles before the first issue).
    """
    return simulate_engine_layers(config, [(family, spec, layer, False)], seed=seed,
                                  input_gaps=input_gaps, output_stalls=output_stalls, order=order,
                                  timeout=timeout, family_of_fpga=family_of_fpga)[0]


def simulate_engine_layers(config, layers, *, seed=0, input_gaps=0.0, output_stalls=0.0,
                           order="concurrent", timeout=200000, family_of_fpga=None):
    """:func:`simulate_engine` for several layers in turn on one engine: ``layers`` holds
    (family, spec, layer, keep_map) tuples; a layer with ``keep_map`` gets no input-map beats and
    starts with the engine's ``keep_map`` set. Returns one result dict per layer."""
    import random

    import torch

    from psconv.firmware.packing import engine_weight_words, pack_layer, rotated_masks
    from psconv.hw.engine import PeriodicSparseEngine
    from psconv.protocol.beats import beats_to_pixels, fmap_beats, pixel_beats, weight_beats
    from psconv.protocol.descriptor import encode_quant_entry

    rng = random.Random(seed)
    dut = PeriodicSparseEngine(config)

    def layer_streams(family, spec, layer, keep_map):
        packed = pack_layer(layer["w"].to(torch.int8), family)
        words = engine_weight_words(packed, config.tn, config.patch_channels)
        streams = {
            "mask_in": list(rotated_masks(family)),
            "quant_in": [encode_quant_entry(int(b), int(m), int(s), int(r)) for b, m, s, r in
                         zip(layer["bias"], layer["mult"], layer["shift"], layer["res_mult"])],
            "weight_in": weight_beats(words),
        }
        if not keep_map:
            streams["fmap_in"] = fmap_beats(config, layer["x"])
        if spec.residual:
            streams["residual_in"] = pixel_beats(config, layer["residual"])
        return streams

    plan = [layer_streams(*entry) for entry in layers]
    names = ("mask_in", "quant_in", "weight_in", "fmap_in", "residual_in")
    state = {"out": [], "started": -1}
    results = []

    async def drive(ctx, name, beats, index):
        port = getattr(dut, name)
        while state["started"] < index:
            await ctx.tick()
        for beat in beats:
            await stream_put(ctx, port, beat, gap=input_gaps, rng=rng)

    async def sequential(ctx):
        for index, streams in enumerate(plan):
            for name in names:
                if name in streams:
                    await drive(ctx, name, streams[name], index)

    def driver(name):
        async def tb(ctx):
            for index, streams in enumerate(plan):
                if name in streams:
                    await drive(ctx, name, streams[name], index)
        return tb

    async def sink(ctx):
        while True:
            beat = await stream_get(ctx, dut.out, stall=output_stalls, rng=rng)
            state["out"].append(beat.as_bits())

    async def control(ctx):
        for index, (_, spec, _, keep_map) in enumerate(layers):
            state["out"] = []
            ctx.set(raw(dut.layer), spec.encode(config))
            ctx.set(dut.keep_map, keep_map)
            ctx.set(dut.start, 1)
            state["started"] = index
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            first_issue = None
            while not ctx.get(dut.done):
                await ctx.tick()
                if first_issue is None and ctx.get(dut.busy_cycles):
                    first_issue = cycles   # this is cycle cycles + 1; the counter shows an issue a cycle later
                cycles += 1
                if cycles > timeout:
                    raise AssertionError(f"engine did not finish within {timeout} cycles; "
                                         f"{len(state['out'])}/{spec.output_beats(config)} beats "
                                         f"out (layer {index})")
            counters = {n: ctx.get(getattr(dut, n)) for n in
                        ("busy_cycles", "stall_cycles", "idle_cycles", "macs")}
            await ctx.tick()
            out = beats_to_pixels(config, state["out"], spec.out_channels, spec.result_height,
                                  spec.result_width)
            results.append(dict(out=out, beats=len(state["out"]), cycles=cycles,
                                counters=counters, load=first_issue))

    tbs = [control]
    if order == "sequential":
        tbs.append(sequential)
    else:
        tbs += [driver(name) for name in names if any(name in streams for streams in plan)]
    if family_of_fpga is None:
        run(dut, *tbs, background=[sink])
    else:
        from amaranth.hdl import Fragment

        class FamilyOnly:          # all a psconv block asks of a platform (psconv.hw.target)
            family = family_of_fpga

        run(Fragment.get(dut, FamilyOnly()), *tbs, background=[sink])
    return results
