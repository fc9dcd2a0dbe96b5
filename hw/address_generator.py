"""Periodic-mask address generator: the tap sequence of one period drives every lane.

The mask table is loaded per layer from ``mask_in`` (P beats of 9 bits, already rotated so
kernel (o, i) uses ``masks[(o + i) % P]``, see :mod:`psconv.firmware.packing`) and expanded into
the T-entry *tap sequence*: entry j = (q, t) for q = 0..P-1 ascending, then the kept taps t of
``masks[q]`` ascending. Nothing but this table encodes sparsity.

Slot s of output channel o is sequence entry j = s mod T of period p = s div T; it reads input
channel ``i = p*P + (q - o) mod P`` and tap t (slots with i >= C_in are padding: their weight is 0
and they are flagged invalid). Lane l at cycle c of an output channel takes slot ``c*tn + l``,
exactly the column/row of :func:`psconv.firmware.packing.engine_weight_words`, so the weight word
for (o, c) is simply address ``o*cycles + c``.

Hardware: per lane a position register (channel base p*P, sequence index j). At the first cycle
of an output channel the lanes restart from precomputed start positions divmod(l, T); every issue
cycle each lane advances by tn slots, i.e. by (a*P, b) with (a, b) = divmod(tn, T), plus one
period when j wraps — one add and one compare per lane, no division per cycle. Each lane reads its
(q, t) from the sequence memory (one read port per lane; the memory is T <= 9*max_period entries
of a few bits, LUT RAM on an FPGA, :class:`~psconv.hw.multiport.MultiReadMemory`), then
i = base + (q - o mod P) mod P.

**Input-channel passes.** When C_in exceeds ``patch_channels`` (a power of two that P divides),
each pixel group runs ``passes = ceil(C_in / patch_channels)`` passes; pass k covers channels
``k*patch_channels ..`` and the lanes restart at the first cycle of every (pass, output channel),
so ``lane_channel`` is the channel *within the pass* (the patch address) and a slot is valid
below the pass's channel count (``last_pass`` selects the last pass's count). With one pass (the
default config) this is exactly the description above.

Per-layer setup (after ``start``): the P mask beats are expanded at 9 cycles per beat, then for
the last pass's channels periods = ceil(C / P), N = periods*T, cycles = ceil(N / tn), (for several
passes the same again for a full pass, and the words per output channel), then
(a, b) = divmod(tn, T), all with one serial divider; the tn lane start positions are generated
(tn cycles). ``ready`` rises when done; ``cycles_per_output`` (weight words per output channel),
``passes``, ``full_pass_cycles`` and ``last_pass_cycles`` are then valid.

Timing: lane outputs for an ``issue`` in cycle n appear in cycle n + :attr:`LATENCY`
(``slot_valid`` marks them). ``in_channels`` and ``period`` must be stable from ``start`` to the
end of the layer.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.families import NUM_TAPS
from .arith import SerialDivider
from .layer import MASK_BITS
from .multiport import MultiReadMemory


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


def lane_channel_width(config) -> int:
    """Bits of a lane's input-channel index (slots past the last period reach C_in + (tn+2)*P)."""
    return _bits(config.max_in_channels + (config.tn + 2) * config.max_period)


class AddressGenerator(wiring.Component):
    LATENCY = 2

    def __init__(self, config):
        self.config = config
        tn, max_p, max_in = config.tn, config.max_period, config.max_in_channels
        self.seq_depth = NUM_TAPS * max_p
        self.max_slots = NUM_TAPS * (max_in + max_p)
        self.channel_width = lane_channel_width(config)
        self.pass_bits = (config.patch_channels - 1).bit_length()   # log2(patch_channels)
        self.q_width = _bits(max_p - 1)
        self.seq_layout = data.StructLayout({"q": unsigned(self.q_width), "t": unsigned(4)})
        super().__init__({
            "start": In(1),
            "in_channels": In(_bits(max_in)),
            "period": In(_bits(max_p)),
            "mask_in": In(stream.Signature(MASK_BITS)),
            "ready": Out(1),
            "taps_per_period": Out(_bits(self.seq_depth)),
            "cycles_per_output": Out(_bits(self.max_slots)),
            "passes": Out(_bits(config.max_passes)),
            "full_pass_cycles": Out(_bits(self.max_slots)),
            "last_pass_cycles": Out(_bits(self.max_slots)),
            "issue": In(1),
            "first": In(1),
            "last_pass": In(1, init=1),
            "out_mod": In(_bits(max_p - 1)),
            "slot_valid": Out(1),
            "lane_channel": Out(data.ArrayLayout(unsigned(self.channel_width), tn)),
            "lane_tap": Out(data.ArrayLayout(unsigned(4), tn)),
            "lane_valid": Out(tn),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tn = cfg.tn
        cw = self.channel_width

        seq = m.submodules.sequence = MultiReadMemory(self.seq_layout, self.seq_depth, tn)

        taps = self.taps_per_period            # T
        periods = Signal(_bits(cfg.max_in_channels))
        slots = Signal(_bits(self.max_slots))  # N
        adv_periods = Signal(_bits(tn))        # a = tn // T
        adv_index = Signal(_bits(self.seq_depth))  # b = tn % T
        adv_base = Signal(cw)                  # a * P

        div_dividend_w = max(_bits(cfg.max_in_channels + cfg.max_period), _bits(self.max_slots + tn))
        div_divisor_w = max(_bits(cfg.max_period), _bits(tn), _bits(self.seq_depth))
        div = m.submodules.divider = SerialDivider(div_dividend_w, div_divisor_w)

        mask_q = Signal(self.q_width + 1)
        tap_k = Signal(4)
        init_base = [Signal(cw, name=f"init_base{l}") for l in range(tn)]
        init_j = [Signal(_bits(self.seq_depth), name=f"init_j{l}") for l in range(tn)]
        gen_base = Signal(cw)
        gen_j = Signal(_bits(self.seq_depth))
        gen_count = Signal(_bits(tn))

        bit = self.mask_in.payload.bit_select(tap_k, 1)
        # Input-channel passes (patch_channels a power of two): the last pass takes the rest.
        # They follow ``in_channels`` through registers (one cycle behind; it is stable from
        # ``start``), so the setup multiply and the lanes' validity compare start at flip-flops.
        full_round = Signal()      # second round of the setup arithmetic: a full pass
        full_passes = Signal(_bits(cfg.max_passes))                 # passes - 1
        last_pass_channels = Signal(range(cfg.patch_channels + 1))
        before_last = (self.in_channels - 1) >> self.pass_bits
        m.d.sync += [
            full_passes.eq(before_last),
            self.passes.eq(before_last + 1),
            last_pass_channels.eq(((self.in_channels - 1) & (cfg.patch_channels - 1)) + 1),
        ]
        pass_channels = Mux(full_round, cfg.patch_channels, last_pass_channels)
        with m.FSM(name="setup"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [taps.eq(0), mask_q.eq(0), tap_k.eq(0), full_round.eq(0)]
                    m.next = "MASKS"
            with m.State("MASKS"):
                with m.If(self.mask_in.valid):
                    with m.If(bit):
                        m.d.comb += [seq.write_en.eq(1), seq.write_addr.eq(taps),
                                     seq.write_data.q.eq(mask_q), seq.write_data.t.eq(tap_k)]
                        m.d.sync += taps.eq(taps + 1)
                    with m.If(tap_k == NUM_TAPS - 1):
                        m.d.comb += self.mask_in.ready.eq(1)
                        m.d.sync += [tap_k.eq(0), mask_q.eq(mask_q + 1)]
                        with m.If(mask_q + 1 == self.period):
                            m.next = "DIV_PERIODS"
                    with m.Else():
                        m.d.sync += tap_k.eq(tap_k + 1)
            with m.State("DIV_PERIODS"):
                m.d.comb += [div.start.eq(1), div.dividend.eq(pass_channels + self.period - 1),
                             div.divisor.eq(self.period)]
                m.next = "WAIT_PERIODS"
            with m.State("WAIT_PERIODS"):
                with m.If(div.done):
                    m.d.sync += periods.eq(div.quotient)
                    m.next = "MUL_SLOTS"
            with m.State("MUL_SLOTS"):
                m.d.sync += slots.eq(periods * taps)
                m.next = "DIV_CYCLES"
            with m.State("DIV_CYCLES"):
                m.d.comb += [div.start.eq(1), div.dividend.eq(slots + tn - 1), div.divisor.eq(tn)]
                m.next = "WAIT_CYCLES"
            with m.State("WAIT_CYCLES"):
                with m.If(div.done):
                    with m.If(full_round):
                        m.d.sync += self.full_pass_cycles.eq(div.quotient)
                        m.next = "MUL_WORDS"
                    with m.Else():
                        m.d.sync += [self.last_pass_cycles.eq(div.quotient),
                                     self.full_pass_cycles.eq(div.quotient),
                                     self.cycles_per_output.eq(div.quotient)]
                        with m.If(self.passes == 1):
                            m.next = "DIV_LANES"
                        with m.Else():
                            m.d.sync += full_round.eq(1)
                            m.next = "DIV_PERIODS"
            with m.State("MUL_WORDS"):
                # Several passes: (passes - 1) full passes, then the last one.
                m.d.sync += self.cycles_per_output.eq(full_passes * self.full_pass_cycles
                                                      + self.last_pass_cycles)
                m.next = "DIV_LANES"
            with m.State("DIV_LANES"):
                m.d.comb += [div.start.eq(1), div.dividend.eq(tn), div.divisor.eq(taps)]
                m.next = "WAIT_LANES"
            with m.State("WAIT_LANES"):
                with m.If(div.done):
                    m.d.sync += [adv_periods.eq(div.quotient), adv_index.eq(div.remainder),
                                 gen_base.eq(0), gen_j.eq(0), gen_count.eq(0)]
                    m.next = "MUL_ADVANCE"
            with m.State("MUL_ADVANCE"):
                m.d.sync += adv_base.eq(adv_periods * self.period)
                m.next = "LANE_INIT"
            with m.State("LANE_INIT"):
                # Shift the lane start positions divmod(l, T) in, lane tn-1 enters last.
                for l in range(tn - 1):
                    m.d.sync += [init_base[l].eq(init_base[l + 1]), init_j[l].eq(init_j[l + 1])]
                m.d.sync += [init_base[tn - 1].eq(gen_base), init_j[tn - 1].eq(gen_j),
                             gen_count.eq(gen_count + 1)]
                with m.If(gen_j + 1 == taps):
                    m.d.sync += [gen_j.eq(0), gen_base.eq(gen_base + self.period)]
                with m.Else():
                    m.d.sync += gen_j.eq(gen_j + 1)
                with m.If(gen_count == tn - 1):
                    m.next = "READY"
            with m.State("READY"):
                m.d.comb += self.ready.eq(1)
                with m.If(self.start):
                    m.d.sync += [taps.eq(0), mask_q.eq(0), tap_k.eq(0), full_round.eq(0)]
                    m.next = "MASKS"

        # Stage 0: lane positions of this issue cycle; sequence read.
        base1 = [Signal(cw, name=f"base1_{l}") for l in range(tn)]
        out_mod1 = Signal.like(self.out_mod)
        issue1 = Signal()
        last_pass1 = Signal()
        m.d.sync += [out_mod1.eq(self.out_mod), issue1.eq(self.issue), last_pass1.eq(self.last_pass)]
        pass_limit = Signal(range(cfg.patch_channels + 1))
        m.d.comb += pass_limit.eq(Mux(last_pass1, last_pass_channels, cfg.patch_channels))
        for l in range(tn):
            st_base = Signal(cw, name=f"lane_base{l}")
            st_j = Signal(_bits(self.seq_depth), name=f"lane_j{l}")
            pos_base = Mux(self.first, init_base[l], st_base)
            pos_j = Mux(self.first, init_j[l], st_j)
            m.d.comb += seq.read_addr[l].eq(pos_j)
            m.d.sync += base1[l].eq(pos_base)
            next_j = Signal(_bits(2 * self.seq_depth), name=f"next_j{l}")
            m.d.comb += next_j.eq(pos_j + adv_index)
            with m.If(self.issue):
                with m.If(next_j >= taps):
                    m.d.sync += [st_j.eq(next_j - taps), st_base.eq(pos_base + adv_base + self.period)]
                with m.Else():
                    m.d.sync += [st_j.eq(next_j), st_base.eq(pos_base + adv_base)]

        # Stage 1: channel = base + (q - o) mod P.
        m.d.sync += self.slot_valid.eq(issue1)
        for l in range(tn):
            entry = seq.read_data[l]
            diff = Signal(unsigned(self.q_width + 1), name=f"diff{l}")
            m.d.comb += diff.eq(Mux(entry.q >= out_mod1, entry.q - out_mod1,
                                    entry.q + self.period - out_mod1))
            channel = Signal(cw, name=f"channel{l}")
            m.d.comb += channel.eq(base1[l] + diff)
            m.d.sync += [
                self.lane_channel[l].eq(channel),
                self.lane_tap[l].eq(entry.t),
                self.lane_valid[l].eq(channel < pass_limit),
            ]
        return m
