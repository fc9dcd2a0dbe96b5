"""The periodic-sparse convolution engine: top level.

``PeriodicSparseEngine(config)`` runs one convolution layer (3x3 padding 1 or 1x1, stride 1|2) of
a periodic-sparse (pSConv) network with int8 data, requantization, optional residual and ReLU,
bit-exact to :mod:`psconv.sim.golden.ops` (``conv2d_int`` then ``requantize``).

Interface (all ports flat after Verilog conversion; ``clk``/``rst`` are the sync domain; stream
ports are ``<name>__valid``, ``<name>__ready``, ``<name>__payload``; multi-byte payloads put element
0 in bits 7:0; see :mod:`psconv.protocol.beats` for Python encoders of every beat):

* ``layer`` In(:func:`~psconv.protocol.descriptor.layer_descriptor_layout`): in_channels, out_channels,
  in_height, in_width, stride (1|2), kernel (3|1), relu, residual, period, pool. Sampled when
  ``start`` is accepted.
* ``keep_map`` In(1): sampled with ``start``; set, the layer takes no ``fmap_in`` beats and
  computes on the input map the engine holds from its previous layer, which must have had the
  same in_channels, in_height and in_width (and, for a result equal to loading it, the same
  bytes: the resident runner's rule, :mod:`psconv.hw.program_runner`). The first pixel group's
  build then starts after setup's H divmod 3 instead of after the load
  (:func:`psconv.sim.cycle_model.predict_cycles` ``keep_map``).
* ``start`` In(1): pulse; accepted only when ``busy`` is low.
* ``busy`` Out(1): high from an accepted ``start`` until ``done``.
* ``done`` Out(1): one-cycle pulse when the last output beat of the layer has been accepted
  (with ``pool`` and an odd H_out, once the dropped last row has been computed, which may be
  long after the last pooled beat left).
* ``mask_in`` In(stream 9 bits): the layer's P masks, rotated so kernel (o, i) uses entry
  (o + i) mod P (:func:`psconv.firmware.packing.rotated_masks`); P beats.
* ``quant_in`` In(stream :data:`~psconv.protocol.descriptor.QUANT_ENTRY_LAYOUT`): bias, multiplier, shift,
  residual_multiplier of output channel 0, 1, ..; C_out beats.
* ``weight_in`` In(stream ArrayLayout(signed(8), tn)): the rows of
  :func:`psconv.firmware.packing.engine_weight_words` in order; C_out * words beats,
  words = :func:`psconv.schedule.words_per_output_channel` (one input-channel pass:
  ceil(ceil(C_in / P) * T / tn), T = kept taps of the table).
* ``fmap_in`` In(stream ArrayLayout(signed(8), tn)): the input map, CHW order, as a flat byte
  stream of tn bytes per beat, the last beat zero-padded; ceil(C_in*H*W / tn) beats.
* ``residual_in`` In(stream ArrayLayout(signed(8), tm)): only when ``residual`` is set; same beat
  order and count as ``out``.
* ``out`` Out(stream ArrayLayout(signed(8), tm)): for y in range(H_out), for xb in
  range(ceil(W_out / tm)), for o in range(C_out): the tm outputs of pixels x = xb*tm + r
  (0 for x >= W_out). H_out*ceil(W_out/tm)*C_out beats. With ``pool`` (an engine built with
  ``config.max_pool``) the same order over the 2x2 stride-2 max-pooled map of
  H_out // 2 x W_out // 2 pixels (:class:`~psconv.hw.output_pool.OutputMaxPool`, between the
  post-processor's output FIFO and ``out``; ``LayerSpec.output_beats`` beats).
* ``busy_cycles``, ``stall_cycles``, ``idle_cycles``, ``macs`` Out(48): performance counters,
  cleared at ``start``, held after ``done`` (:mod:`psconv.hw.counters`,
  :mod:`psconv.hw.sequencer`).

After ``start`` the input streams may be driven in any order or concurrently: masks are taken
first (then ~150 cycles of setup), weights once setup is done, quant entries, the input map and
residuals at once; output channel o of the first pixel group starts as soon as its weights and
entry are in, so the weight load overlaps the first group's compute.

The engine does not check its descriptor: :data:`psconv.protocol.descriptor.DESCRIPTOR_RULES`
states the limits, which the host's ``LayerSpec.check`` and the command processor's
:class:`~psconv.hw.descriptor_check.DescriptorCheck` enforce before a layer starts (C_out*cycles
words in the weight buffer depend on the mask table and are the host's to check).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.protocol.beats import fmap_beat_bytes
from psconv.protocol.descriptor import MASK_BITS, QUANT_ENTRY_LAYOUT, layer_descriptor_layout

from .address_generator import AddressGenerator
from .arith import output_size_value
from .counters import COUNTER_WIDTH
from .output_pool import OutputMaxPool
from .pe_array import PEArray
from .post_processor import PostProcessor
from .sequencer import Sequencer
from .weight_buffer import WeightBuffer
from .window import WindowGenerator


class PeriodicSparseEngine(wiring.Component):
    """``layer_held=True`` promises that ``layer`` holds its value from ``start`` until ``done``
    (the command processor's descriptor register does: it refuses ``WRITE_LAYER`` while the
    engine is busy), so the engine reads it directly instead of keeping a copy of its own: the
    descriptor's flip-flops are saved, but its fields then reach every block from the driver's
    register, through whatever lies between (the board top's use on a device where logic cells,
    not clock speed, run out). Same cycles, same results."""

    def __init__(self, config, layer_held: bool = False):
        self.config = config
        self.layer_held = layer_held
        self.descriptor_layout = layer_descriptor_layout(config)
        pixels = data.ArrayLayout(signed(8), config.tm)
        super().__init__({
            "layer": In(self.descriptor_layout),
            "start": In(1),
            "keep_map": In(1),
            "busy": Out(1),
            "done": Out(1),
            "mask_in": In(stream.Signature(MASK_BITS)),
            "quant_in": In(stream.Signature(QUANT_ENTRY_LAYOUT)),
            "weight_in": In(stream.Signature(data.ArrayLayout(signed(8), config.tn))),
            "fmap_in": In(stream.Signature(data.ArrayLayout(signed(8), fmap_beat_bytes(config)))),
            "residual_in": In(stream.Signature(pixels)),
            "out": Out(stream.Signature(pixels)),
            "busy_cycles": Out(COUNTER_WIDTH),
            "stall_cycles": Out(COUNTER_WIDTH),
            "idle_cycles": Out(COUNTER_WIDTH),
            "macs": Out(COUNTER_WIDTH),
        })

    @classmethod
    def issue_to_output_latency(cls, config) -> int:
        """Cycles from the last slot cycle of an output channel being issued to its beat entering
        the output FIFO (address generator + PE array + post-processor)."""
        return AddressGenerator.LATENCY + PEArray.latency(config) + PostProcessor.LATENCY

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        seq = m.submodules.sequencer = Sequencer(cfg)
        ag = m.submodules.address_generator = AddressGenerator(cfg)
        wg = m.submodules.window_generator = WindowGenerator(cfg)
        wb = m.submodules.weight_buffer = WeightBuffer(cfg)
        pe = m.submodules.pe_array = PEArray(cfg)
        pp = m.submodules.post_processor = PostProcessor(cfg)

        out_height = Signal(range(cfg.max_height + 1))
        out_width = Signal(range(cfg.max_width + 1))

        def output_sizes(layer):
            return [out_height.eq(output_size_value(layer.in_height, layer.stride)),
                    out_width.eq(output_size_value(layer.in_width, layer.stride))]

        if self.layer_held:
            desc = self.layer
            m.d.comb += output_sizes(desc)
        else:
            # the descriptor and the output size in flip-flops of the engine's own: every block
            # reads them from BEGIN on, and none of their logic reaches back to the driver
            desc = Signal(self.descriptor_layout)
            with m.If(seq.accept_start):
                m.d.sync += [desc.eq(self.layer), *output_sizes(self.layer)]
        begin = seq.begin
        keep_map = Signal()
        with m.If(seq.accept_start):
            m.d.sync += keep_map.eq(self.keep_map)

        wiring.connect(m, wiring.flipped(self.mask_in), ag.mask_in)
        wiring.connect(m, wiring.flipped(self.fmap_in), wg.fmap_in)
        wiring.connect(m, wiring.flipped(self.weight_in), wb.weight_in)
        wiring.connect(m, wiring.flipped(self.quant_in), pp.quant_in)
        wiring.connect(m, wiring.flipped(self.residual_in), pp.residual_in)
        if cfg.max_pool:
            pool = m.submodules.output_pool = OutputMaxPool(cfg)
            wiring.connect(m, pp.out, pool.in_)
            wiring.connect(m, wiring.flipped(self.out), pool.out)
            m.d.comb += [pool.start.eq(begin), pool.enable.eq(desc.pool),
                         pool.out_channels.eq(desc.out_channels), pool.out_width.eq(out_width),
                         seq.out_idle.eq(pool.idle)]
        else:
            wiring.connect(m, wiring.flipped(self.out), pp.out)
            m.d.comb += seq.out_idle.eq(1)

        m.d.comb += [
            seq.start.eq(self.start),
            self.busy.eq(seq.busy),
            self.done.eq(seq.done),
            self.busy_cycles.eq(seq.busy_cycles),
            self.stall_cycles.eq(seq.stall_cycles),
            self.idle_cycles.eq(seq.idle_cycles),
            self.macs.eq(seq.macs),
            seq.out_channels.eq(desc.out_channels),
            seq.out_height.eq(out_height),
            seq.out_width.eq(out_width),
            seq.period.eq(desc.period),
            seq.residual.eq(desc.residual),
            seq.cycles_per_output.eq(ag.cycles_per_output),
            seq.passes.eq(ag.passes),
            seq.full_pass_cycles.eq(ag.full_pass_cycles),
            seq.last_pass_cycles.eq(ag.last_pass_cycles),
            seq.setup_ready.eq(ag.ready),
            seq.patch_full.eq(wg.patch_full),
            seq.weights_loaded.eq(wb.loaded_channels),
            seq.quant_loaded.eq(pp.quant_loaded),
            seq.out_level.eq(pp.out_level),
            seq.written.eq(pp.written),
            seq.residual_level.eq(pp.residual_level),
            seq.residual_popped.eq(pp.residual_popped),
            seq.macs_add.eq(pe.macs),

            ag.start.eq(begin),
            ag.in_channels.eq(desc.in_channels),
            ag.period.eq(desc.period),
            ag.issue.eq(seq.issue),
            ag.first.eq(seq.first),
            ag.last_pass.eq(seq.last_pass),
            ag.out_mod.eq(seq.out_mod),

            wg.start.eq(begin),
            wg.in_channels.eq(desc.in_channels),
            wg.in_height.eq(desc.in_height),
            wg.in_width.eq(desc.in_width),
            wg.stride.eq(desc.stride),
            wg.keep_map.eq(keep_map),
            wg.patch_release.eq(seq.patch_release),

            wb.start.eq(begin),
            wb.load_enable.eq(ag.ready & ~begin),
            wb.out_channels.eq(desc.out_channels),
            wb.cycles_per_output.eq(ag.cycles_per_output),

            pe.patch_addr.eq(wg.patch_addr),
            pe.patch_data.eq(wg.patch_data),
            pe.patch_en.eq(wg.patch_en),
            pe.stride.eq(desc.stride),

            pp.start.eq(begin),
            pp.out_channels.eq(desc.out_channels),
            pp.out_height.eq(out_height),
            pp.out_width.eq(out_width),
            pp.relu.eq(desc.relu),
            pp.residual.eq(desc.residual),
            pp.result_valid.eq(pe.result_valid),
            pp.result.eq(pe.result),
            pp.result_pixels.eq(pe.result_pixels),
        ]

        # Stage S1: weight word address; S2: weight word, lane addresses and control meet the PE array.
        waddr1 = Signal.like(seq.weight_addr)
        m.d.sync += waddr1.eq(seq.weight_addr)
        m.d.comb += wb.read_addr.eq(waddr1)
        ctl = [seq.first, seq.last, seq.buffer, seq.pixels, seq.out_channel, seq.first_pass,
               seq.last_pass]
        delayed = []
        for sig in ctl:
            d1 = Signal.like(sig, name=f"{sig.name}_s1")
            d2 = Signal.like(sig, name=f"{sig.name}_s2")
            m.d.sync += [d1.eq(sig), d2.eq(d1)]
            delayed.append(d2)
        first2, last2, buf2, pixels2, channel2, first_pass2, last_pass2 = delayed
        m.d.comb += [
            pe.valid.eq(ag.slot_valid),
            pe.first.eq(first2),
            pe.last.eq(last2),
            pe.buffer.eq(buf2),
            pe.pixels.eq(pixels2),
            pe.out_channel.eq(channel2),
            pe.first_pass.eq(first_pass2),
            pe.last_pass.eq(last_pass2),
            pe.lane_channel.eq(ag.lane_channel),
            pe.lane_tap.eq(ag.lane_tap),
            pe.lane_valid.eq(ag.lane_valid),
            pe.weights.eq(wb.read_data),
        ]
        return m
