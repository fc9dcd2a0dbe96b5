"""Formal properties of the engine's addresses (docs/formal.md): the patch memory's, from
:class:`~psconv.hw.address_generator.AddressGenerator`, and the weight buffer's, which
:class:`~psconv.hw.sequencer.Sequencer` forms from the generator's ``cycles_per_output``.

Each ``*_harness`` function returns an elaboratable without ports for
:func:`psconv.rtl_gen.formal.check`, built on :func:`formal_config`, whose inputs are free within
the contract the engine keeps for a descriptor the checker
(:meth:`psconv.protocol.descriptor.LayerSpec.check`) admits: the descriptor fields in range and
constant through the run, mask beats of a pattern family (1..511) held until taken, ``out_mod``
below P, slots issued only once set up. Everything else (``start``, ``issue``, ``first``,
``last_pass``, the loading status) is any sequence.

* :func:`address_generator_harness` (**patch memory**): a lane flagged valid reads a channel of
  the current pass, below ``patch_channels`` (inside its patch buffer) and below the pass's
  channel count (a channel the window generator wrote). (Its tap, 0..8, comes from the sequence
  memory, whose arbitrary contents in an induction step defeat a proof; it is not claimed.)
* :func:`sequencer_harness` (**weight buffer**): every issued slot cycle reads a word below
  ``C_out * cycles_per_output``, the words the weight buffer loaded, which the checker bounds by
  ``weight_depth``; ``cycles_per_output`` and the pass cycles are free, related as the
  generator makes them (``(passes - 1) * full + last``).
"""

from __future__ import annotations

from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Module, Mux, ResetSignal, Signal

from psconv.config import EngineConfig
from psconv.families import paper_family

from .address_generator import AddressGenerator
from .sequencer import Sequencer


def formal_config() -> EngineConfig:
    """The engine the proof uses: 2 lanes, periods up to 2, up to 4 input channels in passes of
    2 (so the pass logic is in), every other size as small as allowed."""
    return EngineConfig(tm=1, tn=2, family=paper_family(4, 2), max_in_channels=4,
                        max_out_channels=2, max_height=1, max_width=1, patch_channels=2,
                        fmap_depth=4, weight_depth=64)


def _free(m, *signals):
    for signal in signals:
        m.d.comb += signal.eq(AnySeq(len(signal)))


def address_generator_harness(config: EngineConfig | None = None) -> Module:
    """The address generator and its patch-memory assertion."""
    cfg = config or formal_config()
    m = Module()
    m.submodules.ag = ag = AddressGenerator(cfg, shared_sequence_read=True)
    m.d.comb += Assume(~ResetSignal())

    # the descriptor, as the checker admits it, constant through the run
    in_channels = Signal.like(ag.in_channels)
    period = Signal.like(ag.period)
    m.d.comb += [in_channels.eq(AnyConst(len(in_channels))), period.eq(AnyConst(len(period))),
                 ag.in_channels.eq(in_channels), ag.period.eq(period)]
    pc = cfg.patch_channels
    passes = (in_channels + pc - 1) // pc          # pc is a power of two: a shift
    m.d.comb += [Assume((in_channels >= 1) & (in_channels <= cfg.max_in_channels)),
                 Assume((period >= 1) & (period <= cfg.max_period))]
    if cfg.multi_pass:
        m.d.comb += Assume((passes == 1) | (pc % period == 0))     # schedule.check_passes

    _free(m, ag.start, ag.mask_in.valid, ag.mask_in.payload, ag.issue, ag.first, ag.last_pass,
          ag.out_mod)
    # a stream source holds a beat until it is taken (amaranth.lib.stream)
    held = Signal()
    held_mask = Signal.like(ag.mask_in.payload)
    m.d.sync += [held.eq(ag.mask_in.valid & ~ag.mask_in.ready), held_mask.eq(ag.mask_in.payload)]
    m.d.comb += [Assume(~held | (ag.mask_in.valid & (ag.mask_in.payload == held_mask))),
                 Assume(~ag.mask_in.valid | (ag.mask_in.payload != 0)),
                 Assume(ag.out_mod < period),
                 Assume(~ag.issue | (ag.ready & ~ag.start))]

    # patch memory: lanes valid for an issue cycle appear LATENCY cycles later
    last_pass = ag.last_pass
    for _ in range(AddressGenerator.LATENCY):
        delayed = Signal()
        m.d.sync += delayed.eq(last_pass)
        last_pass = delayed
    last_count = in_channels - (passes - 1) * pc
    channels = Mux(last_pass, last_count, pc) if cfg.multi_pass else in_channels
    for lane in range(cfg.tn):
        with m.If(ag.slot_valid & ag.lane_valid[lane]):
            m.d.comb += Assert((ag.lane_channel[lane] < channels) & (ag.lane_channel[lane] < pc),
                               f"lane {lane} valid outside its pass's channels")


    return m


def sequencer_harness(config: EngineConfig | None = None) -> Module:
    """The sequencer and its weight-buffer assertion."""
    cfg = config or formal_config()
    m = Module()
    m.submodules.seq = seq = Sequencer(cfg)
    m.d.comb += Assume(~ResetSignal())

    def constant(signal):
        value = Signal.like(signal)
        m.d.comb += [value.eq(AnyConst(len(value))), signal.eq(value)]
        return value

    out_channels, out_height, out_width, period = (
        constant(seq.out_channels), constant(seq.out_height), constant(seq.out_width),
        constant(seq.period))
    passes, full, last = constant(seq.passes), constant(seq.full_pass_cycles), \
        constant(seq.last_pass_cycles)
    words = constant(seq.cycles_per_output)
    m.d.comb += [
        Assume((out_channels >= 1) & (out_channels <= cfg.max_out_channels)),
        Assume((out_height >= 1) & (out_height <= cfg.max_height)),
        Assume((out_width >= 1) & (out_width <= cfg.max_width)),
        Assume((period >= 1) & (period <= cfg.max_period)),
        Assume((passes >= 1) & (passes <= cfg.max_passes) & (full >= 1) & (last >= 1)),
        Assume(words == (passes - 1) * full + last),
        Assume(out_channels * words <= cfg.weight_depth),        # the checker's bound
    ]
    _free(m, seq.start, seq.residual, seq.setup_ready, seq.patch_full, seq.weights_loaded,
          seq.quant_loaded, seq.out_level, seq.written, seq.residual_level, seq.residual_popped,
          seq.macs_add)
    with m.If(seq.issue):
        m.d.comb += Assert((seq.weight_addr < out_channels * words)
                           & (seq.weight_addr < cfg.weight_depth),
                           "a weight word read outside the loaded words")
    return m
