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
period when j wraps — one add and one compare per lane, no division per cycle. Then
i = base + (q - o mod P) mod P.

**Sequence memory: one read port.** The lanes of a cycle take consecutive slots, so lane l's
index is always (j_0 + l) mod T. Word j of the sequence memory therefore holds the tn entries
``s[(j + l) mod T]``, l = 0..tn-1, and one read at lane 0's index serves every lane (a block RAM
has one read port; a memory per lane cost tn RAMs on an iCE40). The words are written while the
masks expand: entry n arrives, word n - (tn-1) is complete (the tn-1 entries before it are kept
in a shift register) and is written. The last tn-1 words wrap to the start of the sequence:
after the last mask beat the first tn-1 entries (kept when they arrived) are streamed once more,
one per cycle, while the divisions run (far more than tn cycles before ``ready``), so setup takes
exactly as long as before. With T < tn - 1 the streamed-again entries are themselves kept, since
s[n] = s[n - T] there too. On an ECP5 (:func:`~psconv.hw.target.has_lut_ram`) the sequence stays in LUT RAM with
one copy and read port per lane at the lane's own index (entry j at address j), as wide words
would make Yosys choose a block RAM, whose slow output would then feed stage 1's logic.

**Input-channel passes.** When C_in exceeds ``patch_channels`` (a power of two that P divides),
each pixel group runs ``passes = ceil(C_in / patch_channels)`` passes; pass k covers channels
``k*patch_channels ..`` and the lanes restart at the first cycle of every (pass, output channel),
so ``lane_channel`` is the channel *within the pass* (the patch address) and a slot is valid
below the pass's channel count (``last_pass`` selects the last pass's count). With one pass (the
default config) this is exactly the description above; a configuration that allows only one
(``max_in_channels <= patch_channels``) builds no pass logic: ``last_pass`` is ignored and
``full_pass_cycles`` and ``last_pass_cycles`` are ``cycles_per_output``.

Per-layer setup (after ``start``): the P mask beats are expanded at 9 cycles per beat, then for
the last pass's channels periods = ceil(C / P), N = periods*T, cycles = ceil(N / tn), (for several
passes the same again for a full pass, and the words per output channel), then
(a, b) = divmod(tn, T), all with one serial divider; the tn lane start positions are generated
(tn cycles). ``ready`` rises when done; ``cycles_per_output`` (weight words per output channel),
``passes``, ``full_pass_cycles`` and ``last_pass_cycles`` are then valid.

Timing: lane outputs for an ``issue`` in cycle n appear in cycle n + :attr:`LATENCY`
(``slot_valid`` marks them; without it they are don't-care, e.g. during setup). ``in_channels`` and ``period`` must be stable from ``start`` to the
end of the layer.
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.families import NUM_TAPS
from psconv.protocol.descriptor import MASK_BITS

from .arith import SerialDivider
from .multiport import MultiReadMemory
from .target import has_lut_ram


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


def lane_channel_width(config) -> int:
    """Bits of a lane's input-channel index (slots past the last period reach C_in + (tn+2)*P)."""
    return _bits(config.max_in_channels + (config.tn + 2) * config.max_period)


class AddressGenerator(wiring.Component):
    LATENCY = 2

    def __init__(self, config, shared_sequence_read: bool | None = None):
        self.config = config
        self.shared_sequence_read = shared_sequence_read   # None: from the platform
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

        shared = self.shared_sequence_read
        if shared is None:
            # with LUT RAM (ECP5) one copy per lane; elsewhere one shared block RAM word
            shared = not has_lut_ram(platform)
        # Written only during setup, read (where it matters) only after ``ready``: no read/write
        # collision is ever used (MultiReadMemory).
        if shared:
            seq = m.submodules.sequence = MultiReadMemory(data.ArrayLayout(self.seq_layout, tn),
                                                          self.seq_depth, 1)
        else:
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
        # Lane start positions divmod(l, T); lane 0 always starts at (0, 0): no register.
        init_base = [C(0, cw)] + [Signal(cw, name=f"init_base{l}") for l in range(1, tn)]
        init_j = [C(0, _bits(self.seq_depth))] + [Signal(_bits(self.seq_depth), name=f"init_j{l}")
                                                  for l in range(1, tn)]
        gen_base = Signal(cw)
        gen_j = Signal(_bits(self.seq_depth))
        gen_count = Signal(_bits(tn))

        bit = self.mask_in.payload.bit_select(tap_k, 1)

        # The sequence entries as the masks expand them (then, shared, the wrap-around ones).
        stream_valid = Signal()
        stream_entry = Signal(self.seq_layout)
        wrapping = Signal()                       # shared: streaming s[T..T+tn-2] = head again
        wrap_index = Signal(range(max(tn - 1, 1)))
        restart = [wrapping.eq(0)]                # at ``start``
        if shared:
            # Entry n of the periodic stream s completes word n - (tn-1) (module docstring);
            # ``word_addr`` is that word (negative while n < tn - 1).
            word_addr = Signal(signed(_bits(self.seq_depth) + 1))
            window = [Signal(self.seq_layout, name=f"window{k}") for k in range(tn - 1)]
            head = [Signal(self.seq_layout, name=f"head{k}") for k in range(tn - 1)]  # s[0:tn-1]
            restart.append(word_addr.eq(-(tn - 1)))
            word = Cat(*(w.as_value() for w in window), stream_entry.as_value())
            m.d.comb += [seq.write_addr.eq(word_addr), seq.write_data.eq(word),
                         seq.write_en.eq(stream_valid & (word_addr >= 0))]
            with m.If(stream_valid):
                m.d.sync += word_addr.eq(word_addr + 1)
                if tn > 1:           # window = s[n-tn+1:n]
                    m.d.sync += [window[k].eq(window[k + 1]) for k in range(tn - 2)]
                    m.d.sync += window[tn - 2].eq(stream_entry)
                for k in range(tn - 1):
                    with m.If(word_addr == k - (tn - 1)):
                        m.d.sync += head[k].eq(stream_entry)
            if tn > 1:
                with m.If(wrapping):
                    m.d.comb += [stream_valid.eq(1), stream_entry.eq(Array(head)[wrap_index])]
                    m.d.sync += wrap_index.eq(wrap_index + 1)
                    with m.If(wrap_index == tn - 2):
                        m.d.sync += wrapping.eq(0)
        else:
            m.d.comb += [seq.write_addr.eq(taps), seq.write_data.eq(stream_entry),
                         seq.write_en.eq(stream_valid)]
        # Input-channel passes (patch_channels a power of two): the last pass takes the rest.
        # They follow ``in_channels`` through registers (one cycle behind; it is stable from
        # ``start``), so the setup multiply and the lanes' validity compare start at flip-flops.
        full_round = Signal()      # second round of the setup arithmetic: a full pass
        full_passes = Signal(_bits(cfg.max_passes))                 # passes - 1
        last_pass_channels = Signal(range(cfg.patch_channels + 1))
        before_last = (self.in_channels - 1) >> self.pass_bits
        if cfg.multi_pass:
            m.d.sync += [
                full_passes.eq(before_last),
                self.passes.eq(before_last + 1),
                last_pass_channels.eq(((self.in_channels - 1) & (cfg.patch_channels - 1)) + 1),
            ]
        else:
            # One pass: C_in (1..max_in_channels <= patch_channels) is the last pass's count.
            m.d.sync += [self.passes.eq(before_last + 1), last_pass_channels.eq(self.in_channels)]
        pass_channels = Mux(full_round, cfg.patch_channels, last_pass_channels)
        with m.FSM(name="setup"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [taps.eq(0), mask_q.eq(0), tap_k.eq(0), full_round.eq(0), *restart]
                    m.next = "MASKS"
            with m.State("MASKS"):
                with m.If(self.mask_in.valid):
                    with m.If(bit):
                        m.d.comb += [stream_valid.eq(1), stream_entry.q.eq(mask_q),
                                     stream_entry.t.eq(tap_k)]
                        m.d.sync += taps.eq(taps + 1)
                    with m.If(tap_k == NUM_TAPS - 1):
                        m.d.comb += self.mask_in.ready.eq(1)
                        m.d.sync += [tap_k.eq(0), mask_q.eq(mask_q + 1)]
                        with m.If(mask_q + 1 == self.period):
                            m.d.sync += [wrapping.eq(shared and tn > 1), wrap_index.eq(0)]
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
                    if not cfg.multi_pass:
                        m.d.sync += self.cycles_per_output.eq(div.quotient)
                        m.next = "DIV_LANES"
                    else:
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
            if cfg.multi_pass:
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
                for l in range(1, tn - 1):
                    m.d.sync += [init_base[l].eq(init_base[l + 1]), init_j[l].eq(init_j[l + 1])]
                if tn > 1:
                    m.d.sync += [init_base[tn - 1].eq(gen_base), init_j[tn - 1].eq(gen_j)]
                m.d.sync += gen_count.eq(gen_count + 1)
                with m.If(gen_j + 1 == taps):
                    m.d.sync += [gen_j.eq(0), gen_base.eq(gen_base + self.period)]
                with m.Else():
                    m.d.sync += gen_j.eq(gen_j + 1)
                with m.If(gen_count == tn - 1):
                    m.next = "READY"
            with m.State("READY"):
                m.d.comb += self.ready.eq(1)
                with m.If(self.start):
                    m.d.sync += [taps.eq(0), mask_q.eq(0), tap_k.eq(0), full_round.eq(0), *restart]
                    m.next = "MASKS"

        # Stage 0: lane positions of this issue cycle; sequence read.
        base1 = [Signal(cw, name=f"base1_{l}") for l in range(tn)]
        out_mod1 = Signal.like(self.out_mod)
        issue1 = Signal()
        last_pass1 = Signal()
        wrap_mod1 = Signal(unsigned(self.q_width + 1))   # P - o: (q - o) mod P = q + P - o if q < o
        m.d.sync += [out_mod1.eq(self.out_mod), wrap_mod1.eq(self.period - self.out_mod),
                     issue1.eq(self.issue), last_pass1.eq(self.last_pass)]
        pass_limit = Signal(range(cfg.patch_channels + 1))
        if cfg.multi_pass:
            m.d.comb += pass_limit.eq(Mux(last_pass1, last_pass_channels, cfg.patch_channels))
        else:
            m.d.comb += pass_limit.eq(last_pass_channels)      # every pass is the last
        for l in range(tn):
            st_base = Signal(cw, name=f"lane_base{l}")
            st_j = Signal(_bits(self.seq_depth), name=f"lane_j{l}")
            pos_base = Mux(self.first, init_base[l], st_base)
            pos_j = Mux(self.first, init_j[l], st_j)
            if not shared:
                m.d.comb += seq.read_addr[l].eq(pos_j)
            elif l == 0:
                m.d.comb += seq.read_addr[0].eq(pos_j)     # one word serves every lane
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
            entry = seq.read_data[0][l] if shared else seq.read_data[l]
            # (q - o) mod P: one subtraction gives both q - o and (by its borrow) q < o.
            below = Signal(signed(self.q_width + 1), name=f"below{l}")
            diff = Signal(unsigned(self.q_width + 1), name=f"diff{l}")
            m.d.comb += [below.eq(entry.q - out_mod1),
                         diff.eq(Mux(below[-1], entry.q + wrap_mod1, below))]
            channel = Signal(cw, name=f"channel{l}")
            m.d.comb += channel.eq(base1[l] + diff)
            m.d.sync += [
                self.lane_channel[l].eq(channel),
                self.lane_tap[l].eq(entry.t),
                self.lane_valid[l].eq(channel < pass_limit),
            ]
        if not cfg.multi_pass:
            # one pass: its cycles are the output channel's (one register for all three outputs)
            m.d.comb += [self.full_pass_cycles.eq(self.cycles_per_output),
                         self.last_pass_cycles.eq(self.cycles_per_output)]
        return m
