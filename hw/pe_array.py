"""PE array: tm rows (output pixels) x tn lanes (tap-sequence slots), with the patch memory.

Row r computes output pixel x = xb*tm + r of the current output channel o; lane l takes slot
``c*tn + l`` of o's tap stream. All rows use the same weight in a lane (weights are broadcast down
the rows), so one ``tn``-byte weight word per cycle feeds all ``tm*tn`` multipliers.

**Patch memory.** Two buffers of ``patch_channels`` patch words (one per input
channel; a word is tm x 9 int8 taps, see :func:`psconv.hw.window.patch_layout`), written by the
window generator, read by every lane at the channel the address generator gave it. It has ``tn``
read ports: in the Verilog that is one array with ``tn`` reads (cheap to simulate); an FPGA tool
replicates it per port (block RAM cost x tn; see docs/architecture.md for the banked alternative
and why it is not used).

**Pipeline** (one slot cycle enters per clock; ``valid/first/last`` travel with it):

* A: patch read at ``{buffer, channel}`` (block RAM); lane tap and weight word registered.
* A2: the patch words are registered (no logic after a block RAM output); weight gated to 0 for
  invalid lanes (channel >= C_in).
* B: per PE (r, l) a 9:1 tap mux picks byte ``patch[r][tap_l]`` into a fabric register (weight
  delayed alongside), which feeds the multiplier's input register (B2).
* C: int8 x int8 multiply, registered product (:class:`~psconv.hw.dsp.RegisteredMultiplier`: on
  an ECP5 the MULT18X18D's own input and output registers).
* tree: per row a binary adder tree over the tn lanes, one register per level.
* accumulate: ``acc_r = first ? carried_r + sum_r : acc_r + sum_r`` (``acc_width`` bits); on
  ``last`` of the last input-channel pass the total is presented on ``result`` with
  ``result_valid`` for one cycle. The next output channel's ``first`` cycle may follow
  immediately: no bubble between output channels.
* partial sums (only if ``config.multi_pass``): on ``last`` of an earlier pass the total is
  written to a memory of ``max_out_channels`` entries at ``out_channel``; ``carried_r`` is that
  entry (0 in the first pass), read the cycle before and transparent to a write in that cycle,
  so a pass of one cycle may follow the previous one directly.

Latency from an input cycle to ``result_valid`` of a ``last`` cycle: :meth:`latency`.
Datapath registers (patch words, taps, weights, products, adder tree, accumulators) have no
reset: ``valid/first/last`` (which are reset) decide what they mean.
``macs`` is the number of useful multiply-accumulates (valid lanes x valid pixels) of the slot
cycle that entered 3 cycles earlier (0 when not valid); the counters sum it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .address_generator import lane_channel_width
from .dsp import RegisteredMultiplier
from .multiport import MultiReadMemory
from .window import patch_address_bits, patch_layout


def _tree_levels(n: int) -> int:
    return ceil_log2(n) if n > 1 else 0


class PEArray(wiring.Component):
    def __init__(self, config):
        self.config = config
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

        # Stage A2: patch words registered (block RAM output -> flip-flops before the tap mux);
        # invalid lanes' weights forced to 0.
        patch_a2 = [Signal(self.patch_layout, name=f"patch_a2_{l}", reset_less=True) for l in range(tn)]
        tap_a2 = [Signal(4, name=f"tap_a2_{l}", reset_less=True) for l in range(tn)]
        w_a2 = [Signal(signed(8), name=f"w_a2_{l}", reset_less=True) for l in range(tn)]
        for l in range(tn):
            m.d.sync += [patch_a2[l].eq(patches.read_data[l]), tap_a2[l].eq(tap_b[l]),
                         w_a2[l].eq(Mux(lanes_b[l], wraw_b[l], 0))]

        # Stage B: per PE the 9:1 tap mux into a fabric register (the placer can put it next to
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
                m.d.sync += tapped.eq(patch_a2[l][r].as_value().word_select(tap_a2[l], 8))
                mul = m.submodules[f"mul{r}_{l}"] = RegisteredMultiplier(8, 8, 16)
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
        delay = 5 + depth
        ctl = Cat(self.valid, self.first, self.last, self.first_pass, self.last_pass,
                  self.out_channel, self.pixels)
        chain = [ctl]
        for k in range(delay):
            d = Signal(len(ctl), name=f"ctl_d{k + 1}")
            m.d.sync += d.eq(chain[-1])
            chain.append(d)
        o_bits = len(self.out_channel)
        valid_z, first_z, last_z, first_pass_z, last_pass_z = (chain[-1][k] for k in range(5))
        pixels_z = chain[-1][5 + o_bits:5 + o_bits + tm]

        # Partial sums of passes before the last, one entry per output channel (only when the
        # config allows several input-channel passes). Read one cycle ahead of the accumulate
        # stage, transparent so a write in that cycle is seen.
        acc_layout = data.ArrayLayout(signed(cfg.acc_width), tm)
        carried = Signal(acc_layout)
        if cfg.multi_pass:
            psums = m.submodules.partial_sums = memory.Memory(
                shape=acc_layout, depth=cfg.max_out_channels, init=[])
            pw = psums.write_port()
            pr = psums.read_port(domain="sync", transparent_for=(pw,))
            totals = Signal(acc_layout)
            m.d.comb += [
                pr.addr.eq(chain[-2][5:5 + o_bits]),
                carried.eq(Mux(first_pass_z, 0, pr.data.as_value())),
                pw.addr.eq(chain[-1][5:5 + o_bits]),
                pw.data.eq(totals),
                pw.en.eq(valid_z & last_z & ~last_pass_z),
            ]
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
                with m.If(last_z):
                    m.d.sync += self.result[r].eq(total)
        with m.If(valid_z & last_z):
            m.d.sync += self.result_pixels.eq(pixels_z)
        return m
