"""PE array: tm rows (output pixels) x tn lanes (tap-sequence slots), with the patch memory.

Row r computes output pixel x = xb*tm + r of the current output channel o; lane l takes slot
``c*tn + l`` of o's tap stream. All rows use the same weight in a lane (weights are broadcast down
the rows), so one ``tn``-byte weight word per cycle feeds all ``tm*tn`` multipliers.

**Patch memory.** Two buffers of ``patch_channels`` patch words (one per input channel; a word
is the three ``2*tm + 1``-byte window rows of the pixel group, see
:func:`psconv.hw.window.patch_layout`: 27 bytes at tm = 4 where tm x 9 taps would be 36, so a
copy is 6 block RAMs wide on an ECP5 instead of 8), written by the window generator, read by
every lane at the channel the address generator gave it; ``stride`` (1|2, the layer's, held
while the array computes) says where a pixel's taps sit in the word. It has ``tn`` read ports:
in the Verilog that is one array with ``tn`` reads (cheap to simulate); an FPGA tool replicates
it per port (block RAM cost x tn; see docs/architecture.md for the banked alternative
and why it is not used). A read colliding with a write is undefined on an FPGA
(:class:`~psconv.hw.multiport.MultiReadMemory`); no such read is used: the sequencer issues from a
buffer only once it is flagged full (after its last write) and releases it after its last read,
before the window generator writes it again; the reads of slots that are not valid meet weight 0.

**Pipeline** (one slot cycle enters per clock; ``valid/first/last`` travel with it):

* A: patch read at ``{buffer, channel}`` (block RAM); lane tap and weight word registered.
* A2: the patch words are registered (no logic after a block RAM output); weight gated to 0 for
  invalid lanes (channel >= C_in). Tap-early (``select_tap_early``, the iCE40's choice) registers
  the bytes of stage B's mux here instead, and B only delays them.
* B: per PE (r, l) a tap mux picks byte ``patch[dy][r*s + dx]`` (``tap_l = 3*dy + dx``; a 9:1
  mux per stride and a 2:1 on ``stride``, which is static for a layer; row 0's two are one) into
  a fabric register (weight delayed alongside), which feeds the multiplier's input register
  (B2).
* C: int8 x int8 multiply, registered product (:class:`~psconv.hw.dsp.RegisteredMultiplier`: on
  an ECP5 the MULT18X18D's own input and output registers).
* tree: per row a binary adder tree over the tn lanes, one register per level.
* accumulate: ``acc_r = first ? carried_r + sum_r : acc_r + sum_r`` (``acc_width`` bits); on
  ``last`` of the last input-channel pass the total is on ``result`` (the accumulator itself)
  in the one cycle ``result_valid`` is high; at other times ``result`` is a partial sum. The next output channel's ``first`` cycle may follow
  immediately: no bubble between output channels.
* partial sums (only if ``config.multi_pass``): on ``last`` of an earlier pass the total is
  written to a memory of ``max_out_channels`` entries at ``out_channel``; ``carried_r`` is that
  entry (0 in the first pass), read two cycles before into a register, with the writes of those
  two cycles bypassed into it, so a pass of one cycle may follow the previous one directly.

Latency from an input cycle to ``result_valid`` of a ``last`` cycle: :meth:`latency`.
Datapath registers (patch words, taps, weights, products, adder tree, accumulators) have no
reset: ``valid/first/last`` (which are reset) decide what they mean.
``macs`` is the number of useful multiply-accumulates (valid lanes x valid pixels) of the slot
cycle that entered 3 cycles earlier (0 when not valid); the counters sum it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from psconv.families import NUM_TAPS

from .address_generator import lane_channel_width
from .dsp import RegisteredMultiplier
from .multiport import MultiReadMemory
from .target import area_first
from .window import patch_address_bits, patch_layout, patch_tap_column


def _tree_levels(n: int) -> int:
    return ceil_log2(n) if n > 1 else 0


class PEArray(wiring.Component):
    """``select_tap_early``: where stage A2 registers the patch (None: from the platform,
    :func:`~psconv.hw.target.area_first`). False: the whole patch word of every lane (``tm *
    72`` flip-flops per lane, no logic after the block RAM output); True: the 9:1 tap mux sits
    on the block RAM output and A2 registers the chosen bytes (``tm * 8`` flip-flops per lane).
    Same cycles, same results."""

    def __init__(self, config, select_tap_early: bool | None = None):
        self.config = config
        self.select_tap_early = select_tap_early
        tm, tn = config.tm, config.tn
        self.patch_layout = patch_layout(config)
        self.address_bits = patch_address_bits(config) + 1
        super().__init__({
            "patch_addr": In(self.address_bits),
            "patch_data": In(self.patch_layout),
            "patch_en": In(1),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "out_channel": In(range(config.max_out_channels)),
            "first_pass": In(1, init=1),
            "last_pass": In(1, init=1),
            "buffer": In(1),
            "pixels": In(tm),
            "stride": In(2),
            "lane_channel": In(data.ArrayLayout(unsigned(lane_channel_width(config)), tn)),
            "lane_tap": In(data.ArrayLayout(unsigned(4), tn)),
            "lane_valid": In(tn),
            "weights": In(data.ArrayLayout(signed(8), tn)),
            "result_valid": Out(1),
            "result": Out(data.ArrayLayout(signed(config.acc_width), tm)),
            "result_pixels": Out(tm),
            "macs": Out(range(tm * tn + 1)),
        })

    @classmethod
    def latency(cls, config) -> int:
        """Cycles from a slot cycle at the inputs to its ``result_valid`` (when ``last``)."""
        return 6 + _tree_levels(config.tn)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm, tn = cfg.tm, cfg.tn
        abits = patch_address_bits(cfg)

        patches = m.submodules.patches = MultiReadMemory(self.patch_layout, 2 << abits, tn)
        m.d.comb += [patches.write_addr.eq(self.patch_addr), patches.write_data.eq(self.patch_data),
                     patches.write_en.eq(self.patch_en)]

        # Stage A: patch read; lane taps, raw weights (block RAM outputs) and flags registered.
        tap_b = [Signal(4, name=f"tap_b{l}", reset_less=True) for l in range(tn)]
        wraw_b = [Signal(signed(8), name=f"wraw_b{l}", reset_less=True) for l in range(tn)]
        lanes_b = Signal(tn)
        for l in range(tn):
            m.d.comb += patches.read_addr[l].eq(Cat(self.lane_channel[l][:abits], self.buffer))
            m.d.sync += [tap_b[l].eq(self.lane_tap[l]), wraw_b[l].eq(self.weights[l])]
        pixels_b = Signal(tm)
        m.d.sync += [lanes_b.eq(self.lane_valid & self.valid.replicate(tn)),
                     pixels_b.eq(self.pixels)]

        # Useful MACs of this slot cycle (counter input): the two popcounts are registered before
        # their product, so neither adder tree is in series with the multiply (timing only; the
        # counters sum ``macs`` long before ``done``). ``lanes_b`` is 0 when the slot is not valid.
        lane_count = Signal(range(tn + 1))
        pixel_count = Signal(range(tm + 1))
        m.d.sync += [lane_count.eq(sum(lanes_b[l] for l in range(tn))),
                     pixel_count.eq(sum(pixels_b[r] for r in range(tm)))]
        m.d.sync += self.macs.eq(lane_count * pixel_count)

        # Stage A2: patch words (or, tap-early, the chosen bytes) registered; invalid lanes'
        # weights forced to 0.
        early = self.select_tap_early
        if early is None:
            early = area_first(platform)
        w_a2 = [Signal(signed(8), name=f"w_a2_{l}", reset_less=True) for l in range(tn)]
        byte_a2 = [[None] * tn for _ in range(tm)]      # byte_a2[r][l]: PE (r, l)'s tap byte
        stride2 = self.stride == 2

        def tap_byte(word, r, tap):
            """Pixel r's byte of ``tap`` in a patch word (:func:`patch_tap_column`)."""
            by_stride = []
            for s in (1, 2):
                taps = []
                for t in range(NUM_TAPS):
                    dy, k = patch_tap_column(r, t, s)
                    taps.append(Value.cast(word[dy][k]))
                by_stride.append(Cat(*taps).word_select(tap, 8))
            return Mux(stride2, by_stride[1], by_stride[0]) if r else by_stride[0]

        for l in range(tn):
            m.d.sync += w_a2[l].eq(Mux(lanes_b[l], wraw_b[l], 0))
            word = patches.read_data[l]
            if early:
                for r in range(tm):
                    byte_a2[r][l] = Signal(signed(8), name=f"byte_a2_{r}_{l}", reset_less=True)
                    m.d.sync += byte_a2[r][l].eq(tap_byte(word, r, tap_b[l]))
            else:
                patch_a2 = Signal(self.patch_layout, name=f"patch_a2_{l}", reset_less=True)
                tap_a2 = Signal(4, name=f"tap_a2_{l}", reset_less=True)
                m.d.sync += [patch_a2.eq(word), tap_a2.eq(tap_b[l])]
                for r in range(tm):
                    byte_a2[r][l] = tap_byte(patch_a2, r, tap_a2)

        # Stage B: per PE the tap mux into a fabric register (the placer can put it next to
        # the multiplier; the mux and the route to a DSP column are two paths, not one).
        # Stage B2: the multiplier's input registers; stage C: multiply (registered product). On
        # an ECP5 both are the MULT18X18D's own registers (psconv.hw.dsp).
        w_b = [Signal(signed(8), name=f"w_b2_{l}", reset_less=True) for l in range(tn)]
        m.d.sync += [w_b[l].eq(w_a2[l]) for l in range(tn)]
        level = []
        for r in range(tm):
            row = []
            for l in range(tn):
                tapped = Signal(signed(8), name=f"tap_byte{r}_{l}", reset_less=True)
                m.d.sync += tapped.eq(byte_a2[r][l])
                # the first product of each adder pair keeps its register in the fabric, so Yosys
                # fuses the pair's adder into the other one's DSP without claiming it twice
                paired_first = l % 2 == 0 and l + 1 < tn
                mul = m.submodules[f"mul{r}_{l}"] = RegisteredMultiplier(
                    8, 8, 16, fused_add_safe=paired_first)
                m.d.comb += [mul.a.eq(tapped), mul.b.eq(w_b[l])]
                row.append(mul.p)
            level.append(row)

        # Adder tree, one register per level.
        depth = 0
        while len(level[0]) > 1:
            depth += 1
            nxt = []
            for r in range(tm):
                row = level[r]
                out = []
                for k in range(0, len(row) - 1, 2):
                    s = Signal(signed(len(row[k]) + 1), name=f"sum{depth}_{r}_{k // 2}", reset_less=True)
                    m.d.sync += s.eq(row[k] + row[k + 1])
                    out.append(s)
                if len(row) % 2:
                    s = Signal(signed(len(row[-1]) + 1), name=f"sum{depth}_{r}_{len(row) // 2}",
                               reset_less=True)
                    m.d.sync += s.eq(row[-1])
                    out.append(s)
                nxt.append(out)
            level = nxt
        sums = [level[r][0] for r in range(tm)]

        # Control delayed to the accumulate stage (5 + tree levels after stage A); the stage
        # before it addresses the partial-sum memory.
        # A one-pass configuration carries no pass flags or channel: every pass is the first
        # and the last (the sequencer drives both to 1) and there are no partial sums.
        delay = 5 + depth
        o_bits = len(self.out_channel)
        if cfg.multi_pass:
            ctl = Cat(self.valid, self.first, self.last, self.pixels, self.first_pass,
                      self.last_pass, self.out_channel)
        else:
            ctl = Cat(self.valid, self.first, self.last, self.pixels)
        chain = [ctl]
        for k in range(delay):
            d = Signal(len(ctl), name=f"ctl_d{k + 1}")
            m.d.sync += d.eq(chain[-1])
            chain.append(d)
        valid_z, first_z, last_z = (chain[-1][k] for k in range(3))
        pixels_z = chain[-1][3:3 + tm]
        if cfg.multi_pass:
            first_pass_y = chain[-2][3 + tm]
            last_pass_z = chain[-1][4 + tm]
            channel_x, channel_y, channel_z = (chain[k][5 + tm:5 + tm + o_bits]
                                               for k in (-3, -2, -1))
        else:
            last_pass_z = 1

        # Partial sums of passes before the last, one entry per output channel (only when the
        # config allows several input-channel passes). Read two cycles ahead of the accumulate
        # stage into a register (``carried``, 0 in the first pass): the block RAM's output no
        # longer runs through the adder into its own write data (the ULX3S's critical loop).
        # The read misses the writes of the two cycles after it, which a pass of one or two
        # cycles needs: those come from the write port's data of that cycle, or a register of
        # the one before, the latest first.
        acc_layout = data.ArrayLayout(signed(cfg.acc_width), tm)
        carried = Signal(acc_layout)
        if cfg.multi_pass:
            psums = m.submodules.partial_sums = memory.Memory(
                shape=acc_layout, depth=cfg.max_out_channels, init=[])
            pw = psums.write_port()
            pr = psums.read_port(domain="sync")
            totals = Signal(acc_layout)
            written = Signal(acc_layout)          # the write of the cycle before, registered
            written_channel = Signal.like(channel_z)
            written_en = Signal()
            m.d.comb += [
                pr.addr.eq(channel_x),
                pw.addr.eq(channel_z),
                pw.data.eq(totals),
                pw.en.eq(valid_z & last_z & ~last_pass_z),
            ]
            m.d.sync += [written.eq(totals), written_channel.eq(channel_z),
                         written_en.eq(pw.en)]
            with m.If(first_pass_y):
                m.d.sync += carried.eq(0)
            with m.Elif(pw.en & (channel_z == channel_y)):
                m.d.sync += carried.eq(totals)
            with m.Elif(written_en & (written_channel == channel_y)):
                m.d.sync += carried.eq(written)
            with m.Else():
                m.d.sync += carried.eq(pr.data)
        else:
            m.d.comb += carried.eq(0)

        m.d.sync += self.result_valid.eq(valid_z & last_z & last_pass_z)
        for r in range(tm):
            acc = Signal(signed(cfg.acc_width), name=f"acc{r}", reset_less=True)
            total = Signal(signed(cfg.acc_width), name=f"total{r}")
            m.d.comb += total.eq(Mux(first_z, carried[r] + sums[r], acc + sums[r]))
            if cfg.multi_pass:
                m.d.comb += totals[r].eq(total)
            with m.If(valid_z):
                m.d.sync += acc.eq(total)
            # the accumulator holds the total in the cycle result_valid is high (the next output
            # channel's first sum lands a cycle later): no copy of it is needed
            m.d.comb += self.result[r].eq(acc)
        with m.If(valid_z & last_z):
            m.d.sync += self.result_pixels.eq(pixels_z)
        return m
