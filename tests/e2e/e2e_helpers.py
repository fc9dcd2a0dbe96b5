"""Shared pieces of the end-to-end tests: configurations, a processor harness, a mock engine, a
host that dies, descriptors that break each limit."""

from __future__ import annotations

import torch
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.config import EngineConfig
from psconv.families import family_by_name, paper_family
from psconv.firmware.compiler import EngineStep
from psconv.firmware.packing import engine_weight_words, pack_layer, rotated_masks
from psconv.hw.command_processor import CommandProcessor, engine_signature
from psconv.hw.framing import LinkLayer
from psconv.firmware.transport import Transport
from psconv.protocol.descriptor import DESCRIPTOR_RULES, LayerSpec, layer_descriptor_layout
from psconv.protocol.frame import MAX_PAYLOAD
from psconv.protocol.payloads import descriptor_bytes
from psconv.sim.golden.ops import conv2d_int, maxpool2d_int, requantize

from sim_helpers import raw

# Verilator: big enough for a width-8 ResNet18 (64 channels, 32x32 maps), small enough to build fast
# 16 channels per patch buffer: the width-8 ResNet18's 32- and 64-channel layers run in 2 and 4
# input-channel passes, as the ULX3S build runs ResNet18's 256- and 512-channel layers.
SIM_CONFIG = EngineConfig(tm=4, tn=8, family=family_by_name("PSD1_P16"), max_in_channels=64,
                          patch_channels=16, max_out_channels=64, fmap_depth=16384,
                          weight_depth=1024)

# Amaranth simulator: tiny
TINY_CONFIG = EngineConfig(tm=2, tn=4, family=paper_family(1, 4, dense_kernel=True),
                           max_in_channels=16, max_out_channels=16, max_height=8, max_width=8,
                           fmap_depth=1024, weight_depth=512)

ENGINE_INPUTS = ("mask_in", "quant_in", "weight_in", "fmap_in", "residual_in")
ENGINE_COUNTERS = ("busy_cycles", "stall_cycles", "idle_cycles", "macs")


class ProcessorHarness(wiring.Component):
    """LinkLayer + CommandProcessor with the engine side left as a port (for a mock engine)."""

    def __init__(self, config, output_fifo_depth=256, timeout_cycles=400):
        self.config = config
        self.output_fifo_depth = output_fifo_depth
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx_data": In(stream.Signature(8)),
            "tx_data": Out(stream.Signature(8)),
            "engine": In(engine_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = LinkLayer(MAX_PAYLOAD, timeout_cycles=self.timeout_cycles)
        m.submodules.processor = processor = CommandProcessor(
            self.config, output_fifo_depth=self.output_fifo_depth)
        wiring.connect(m, wiring.flipped(self.rx_data), link.rx_data)
        wiring.connect(m, wiring.flipped(self.tx_data), link.tx_data)
        wiring.connect(m, link.command, processor.command)
        wiring.connect(m, link.command_payload, processor.command_payload)
        wiring.connect(m, processor.reply, link.reply)
        wiring.connect(m, processor.reply_payload, link.reply_payload)
        m.d.comb += processor.link_counters.eq(link.counters)
        wiring.connect(m, wiring.flipped(self.engine), processor.engine)
        return m


class MockEngine:
    """A testbench standing in for the engine: takes every input beat (recording it), goes busy
    on ``start``, offers ``outputs`` on ``out``, and shows ``counters``. ``finish()`` makes it
    pulse ``done`` and drop ``busy``."""

    def __init__(self, dut):
        self.dut = dut
        self.beats = {name: [] for name in ENGINE_INPUTS}
        self.starts = []          # the layer port's value at each start
        self.outputs = []         # beats to offer on out
        self.taken = 0            # output beats accepted by the processor
        self.counters = {name: 0 for name in ENGINE_COUNTERS}
        self.busy = False
        self._finish = False
        self.accepting = {name: True for name in ENGINE_INPUTS}

    def finish(self):
        self._finish = True

    async def run(self, ctx):
        eng = self.dut.engine
        ports = [getattr(eng, name) for name in ENGINE_INPUTS]
        while True:
            for name, port in zip(ENGINE_INPUTS, ports):
                ctx.set(port.ready, int(self.accepting[name]))
            ctx.set(eng.busy, int(self.busy))
            for name, value in self.counters.items():
                ctx.set(getattr(eng, name), value)
            offering = bool(self.outputs)
            ctx.set(eng.out.valid, int(offering))
            if offering:
                ctx.set(raw(eng.out.payload), self.outputs[0])
            done = self._finish and self.busy
            ctx.set(eng.done, int(done))
            signals = [eng.start, raw(eng.layer), eng.out.ready]
            for port in ports:
                signals += [port.valid, raw(port.payload)]
            values = await ctx.tick().sample(*signals)
            start, layer, out_ready = values[2:5]
            rest = values[5:]
            for k, name in enumerate(ENGINE_INPUTS):
                valid, payload = rest[2 * k], rest[2 * k + 1]
                if valid and self.accepting[name]:
                    self.beats[name].append(payload)
            if offering and out_ready:
                self.outputs.pop(0)
                self.taken += 1
            if done:
                self.busy = False
                self._finish = False
            if start and not self.busy:
                self.starts.append(layer)
                self.busy = True


def make_step(name, family, c_in, c_out, size, generator, *, stride=1, relu=True, residual=False,
              pool=False, x=None):
    """A compiled-looking EngineStep with random data, its input, residual and golden output
    (``size``: H = W, or (H, W); ``pool``: the descriptor's output max pool, the golden output
    ``maxpool2d_int`` of the layer's; ``x``: the input map instead of a random one)."""
    k = family.kernel_size
    g = generator
    height, width = (size, size) if isinstance(size, int) else size
    weight = torch.randint(-128, 128, (c_out, c_in, k, k), generator=g)
    weight = weight * family.weight_mask(c_out, c_in).to(torch.int64)
    if x is None:
        x = torch.randint(-128, 128, (c_in, height, width), generator=g)
    assert tuple(x.shape) == (c_in, height, width)
    masks = rotated_masks(family)
    spec = LayerSpec(in_channels=c_in, out_channels=c_out, in_height=height, in_width=width,
                     stride=stride, kernel=k, relu=relu, residual=residual, period=len(masks),
                     pool=pool)
    bias = torch.randint(-3000, 3000, (c_out,), generator=g)
    multiplier = torch.randint(1 << 28, 1 << 29, (c_out,), generator=g)
    shift = torch.full((c_out,), 35 if k == 3 else 33)
    res_mult = torch.randint(1 << 27, 1 << 29, (c_out,), generator=g) if residual else torch.zeros(c_out, dtype=torch.int64)
    res = (torch.randint(-128, 128, (c_out, spec.out_height, spec.out_width), generator=g)
           if residual else None)
    expected = requantize(conv2d_int(x, weight, stride, k // 2), bias, multiplier, shift, relu,
                          res, res_mult if residual else None)
    if pool:
        expected = maxpool2d_int(expected)
    packed = pack_layer(weight.to(torch.int8), family)
    step = EngineStep(layer=name, tile=0, tiles=1, first_channel=0, descriptor=spec, masks=masks,
                      weight_words=engine_weight_words(packed, TINY_CONFIG.tn, TINY_CONFIG.patch_channels), bias=bias,
                      multiplier=multiplier, shift=shift, residual_multiplier=res_mult,
                      input="input", residual="residual" if residual else None,
                      useful_macs=int(family.weight_mask(c_out, c_in).sum()) * spec.out_height * spec.out_width)
    return step, x, res, expected


class HostDied(Exception):
    """Raised by :class:`DyingHost` when its host 'dies'."""


class DyingHost(Transport):
    """A host that dies: passes bytes through to ``inner`` until ``bytes_left`` have been
    written, then writes the part of the frame that fits, raises :class:`HostDied` and sends
    nothing more (the board sees a frame cut short and then silence). ``inner`` stays open, as
    a serial port does for the next host."""

    def __init__(self, inner: Transport, bytes_left: int):
        self.inner = inner
        self.clock = inner.clock
        self.bytes_left = bytes_left

    def write(self, data: bytes) -> None:
        if self.bytes_left <= 0:
            raise HostDied("this host is dead")
        self.inner.write(data[:self.bytes_left])
        self.bytes_left -= len(data)
        if self.bytes_left <= 0:
            raise HostDied(f"the host died {-self.bytes_left} bytes short of its last frame's end")

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        return self.inner.read(max_bytes, timeout_s)


def breaking_descriptors(config):
    """``(rule index, fields)`` for every rule of
    :data:`~psconv.protocol.descriptor.DESCRIPTOR_RULES` the gateware checks for ``config``: each
    field just past each of its limits (below the lowest allowed value; above the highest, if
    the field is wide enough to carry it; every value a set rule leaves out), a rule that holds
    only sometimes (``applies``) under every setting of the other fields below that makes it
    hold, and the product rule broken with every field in range. Each case breaks that
    rule first (:meth:`~psconv.protocol.descriptor.LayerSpec.broken_rule`), as the board's NAK
    must name it."""
    layout = layer_descriptor_layout(config)
    valid = dict(in_channels=1, out_channels=1, in_height=3, in_width=3, stride=1, kernel=3,
                 relu=0, residual=0, period=1, pool=0)
    # where the rules with ``applies`` hold: input-channel passes, a residual, and maps that
    # pool to nothing (one row, one column, two rows at stride 2)
    contexts = [{"in_channels": config.patch_channels + 1}, {"residual": 1}, {"in_height": 1},
                {"in_width": 1}, {"stride": 2, "in_height": 2}]
    for index, rule in enumerate(DESCRIPTOR_RULES):
        if rule.implied is not None and rule.implied(config):
            continue
        allowed = rule.allowed(config)
        if rule.name == "in_channels * in_height":
            high = allowed.stop - 1
            height = high // config.max_in_channels + 1
            assert height <= config.max_height, "this config's product rule is implied"
            cases = [{**valid, "in_channels": config.max_in_channels, "in_height": height}]
        else:
            limit = 1 << layout[rule.name].shape.width
            if isinstance(allowed, range):
                bad = [v for v in (allowed.start - 1, allowed.stop) if 0 <= v < limit]
            else:
                bad = [v for v in range(limit) if v not in allowed]
            cases = [{**valid, **context, rule.name: value} for value in bad
                     for context in (contexts if rule.applies is not None else [{}])]
        cases = [fields for fields in cases if LayerSpec(**fields).broken_rule(config) == index]
        assert cases, f"no descriptor breaks rule {index} ({rule.name}) first"
        for fields in cases:
            yield index, fields


def descriptor_payload(config, fields) -> bytes:
    """A ``WRITE_LAYER`` payload of ``fields`` as they are, unchecked (a host would refuse)."""
    value = layer_descriptor_layout(config).const(fields).as_value().value
    return value.to_bytes(descriptor_bytes(config), "little")
