"""Layer sequencer: the loop nest, work issue with credits, done, and the performance counters.

Loop order (outer to inner)::

    for y in range(H_out):                    # output row
        for xb in range(ceil(W_out / tm)):    # column block: pixels x = xb*tm + r, one per PE row
            for k in range(passes):           # input-channel pass (one patch buffer each)
                for o in range(C_out):        # output channel: one result beat in the last pass
                    for c in range(cycles_k): # slot cycles: lane l takes slot c*tn + l
                        issue                 # weight word o*words + sum(cycles_j, j < k) + c

Pixel groups (y, xb) are outer so one patch (tm pixels x the pass's channels) serves all C_out
output channels; the weights, resident in the weight buffer, are re-read per group. Passes
before the last leave partial sums in the PE array; only the last pass claims output-FIFO room
and a residual beat. With one pass (``passes = 1``) the weight word is simply o*cycles + c.

An output channel is started (its first slot cycle issued) only when everything it will need is
guaranteed: the group's patch buffer is full, its weights and quantization entry are loaded,
the output FIFO has room for its beat counting all beats already in flight, and, for a residual
layer, its residual beat is already buffered. Once started, its remaining cycles issue back to
back, and the pipeline behind never stalls (no back-pressure inside the engine). There is no
bubble between output channels or between pixel groups when the checks pass.

Cycle classification (counters): after ``start`` the sequencer is in LOAD until setup is done, the
first patch is built and the first output channel's weights and quantization entry are in; every
LOAD cycle is *idle*. In RUN a cycle is *busy* if a slot cycle is issued, else *stall* (waiting for
the output FIFO/consumer, a residual beat, a patch, or weights still streaming in). After the last
issue, DRAIN cycles (pipeline emptying, output FIFO draining, and the output max pool holding no
beat: ``out_idle``) are *idle*. ``done`` pulses once the last output beat has been accepted;
busy + stall + idle = cycles from ``start`` to ``done``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .counters import COUNTER_WIDTH, PerformanceCounters
from .post_processor import PostProcessor
from .target import area_first


class Sequencer(wiring.Component):
    RELEASE_DELAY = 3
    """Cycles from the last issue of a group to releasing its patch buffer (its last patch read
    happens 2 cycles after issue)."""

    def __init__(self, config, lookahead: bool | None = None):
        """``lookahead``: the loop-end flags and the credit verdict are registers set a cycle
        ahead (True: ``issue`` reaches the counters' enables through gates only) or compares of
        the counters (False: fewer cells). None: False where
        :func:`~psconv.hw.target.area_first`, else True. Same cycles, same issue order."""
        self.config = config
        self.lookahead = lookahead
        depth = PostProcessor.FIFO_DEPTH
        self.fifo_depth = depth
        super().__init__({
            "start": In(1),   # ignored unless idle
            "out_channels": In(range(config.max_out_channels + 1)),
            "out_height": In(range(config.max_height + 1)),
            "out_width": In(range(config.max_width + 1)),
            "period": In(range(config.max_period + 1)),
            "residual": In(1),
            "cycles_per_output": In(range(config.weight_depth + 1)),
            "passes": In(range(config.max_passes + 1)),
            "full_pass_cycles": In(range(config.weight_depth + 1)),
            "last_pass_cycles": In(range(config.weight_depth + 1)),
            "setup_ready": In(1),
            "patch_full": In(2),
            "weights_loaded": In(range(config.max_out_channels + 1)),
            "quant_loaded": In(range(config.max_out_channels + 1)),
            "out_level": In(range(depth + 1)),
            "written": In(1),
            "out_idle": In(1),
            "residual_level": In(range(depth + 1)),
            "residual_popped": In(1),
            "macs_add": In(range(config.tm * config.tn + 1)),
            "issue": Out(1),
            "first": Out(1),
            "last": Out(1),
            "out_mod": Out(range(config.max_period)),
            "out_channel": Out(range(config.max_out_channels)),
            "first_pass": Out(1),
            "last_pass": Out(1),
            "weight_addr": Out(range(config.weight_depth)),
            "buffer": Out(1),
            "pixels": Out(config.tm),
            "patch_release": Out(2),
            "accept_start": Out(1),
            "begin": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "busy_cycles": Out(COUNTER_WIDTH),
            "stall_cycles": Out(COUNTER_WIDTH),
            "idle_cycles": Out(COUNTER_WIDTH),
            "macs": Out(COUNTER_WIDTH),
        })

    @staticmethod
    def max_busy_cycles(config) -> int:
        """Most slot cycles one layer issues: per pixel group (at most ``max_height`` rows x
        ``ceil(max_width / tm)`` column blocks) every output channel issues its words of every
        pass once, ``C_out * cycles_per_output <= weight_depth`` (a descriptor that passes
        :meth:`psconv.protocol.descriptor.LayerSpec.check`, the engine's input contract). Sizes the
        busy and MAC counters (:mod:`psconv.hw.counters`)."""
        return config.max_height * -(-config.max_width // config.tm) * config.weight_depth

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm
        counters = m.submodules.counters = PerformanceCounters(tm * cfg.tn,
                                                               self.max_busy_cycles(cfg))

        cycle = Signal(range(cfg.weight_depth + 1))
        first = Signal(init=1)                                 # cycle == 0
        channel = self.out_channel
        pass_index = Signal(range(cfg.max_passes + 1))
        out_mod = self.out_mod
        waddr = self.weight_addr
        channel_start = Signal(range(cfg.weight_depth + 1))   # word of (pass, channel) cycle 0
        pass_start = Signal(range(cfg.weight_depth + 1))      # word of (pass, channel 0) cycle 0
        buf = self.buffer
        x0 = Signal(range(cfg.max_width + tm + 1))
        y = Signal(range(cfg.max_height + 1))
        inflight = Signal(range(self.fifo_depth + 2))
        res_pending = Signal(range(self.fifo_depth + 2))

        pass_cycles = Signal.like(self.full_pass_cycles)
        # ``first`` (cycle == 0) is kept as a register beside ``cycle``: it gates ``issue`` and
        # selects the address generator's lane restart, so no comparator may sit before it.
        # With ``lookahead``, ``last`` and the loop-end flags below are registers too, each set
        # one cycle ahead from the counters' next values (``ahead``), so that ``issue`` reaches
        # the loop counters' enables through gates only (no add-then-compare after it).
        lookahead = self.lookahead if self.lookahead is not None else not area_first(platform)
        last = Signal()                                  # cycle + 1 == pass_cycles
        channel_last = Signal()                          # channel + 1 == out_channels
        x0_last = Signal()                               # x0 + tm >= out_width
        y_last = Signal()                                # y + 1 == out_height

        def ahead(*assignments):
            if lookahead:
                m.d.sync += list(assignments)

        m.d.comb += [self.first.eq(first), self.last.eq(last)]
        # cycles of the pass after this one, with the next pixel group's first pass after the last
        first_pass_cycles = Mux(self.passes == 1, self.last_pass_cycles, self.full_pass_cycles)
        if cfg.multi_pass:
            # with ``lookahead``: registers beside ``pass_index``, set a cycle ahead where it
            # changes (LOAD, the end of a pass), so no add-and-compare sits between the pass
            # index and the loop counters' enables
            first_pass, last_pass = Signal(init=1), Signal()
            if lookahead:
                m.d.comb += [self.first_pass.eq(first_pass), self.last_pass.eq(last_pass)]
            else:
                m.d.comb += [self.first_pass.eq(pass_index == 0),
                             self.last_pass.eq(pass_index + 1 == self.passes)]
            m.d.comb += pass_cycles.eq(Mux(self.last_pass, self.last_pass_cycles,
                                           self.full_pass_cycles))
            next_pass_cycles = Mux(self.last_pass, first_pass_cycles,
                                   Mux(pass_index + 2 == self.passes, self.last_pass_cycles,
                                       self.full_pass_cycles))
        else:
            # One pass (C_in <= max_in_channels <= patch_channels): every pass is the first and
            # the last, and its cycles are the output channel's (the address generator gives
            # passes = 1 and last_pass_cycles = cycles_per_output).
            m.d.comb += [self.first_pass.eq(1), self.last_pass.eq(1),
                         pass_cycles.eq(self.last_pass_cycles)]
            first_pass_cycles = next_pass_cycles = self.last_pass_cycles
        m.d.comb += self.pixels.eq(Cat(*[(x0 + r) < self.out_width for r in range(tm)]))
        if not lookahead:
            m.d.comb += [last.eq(cycle + 1 == pass_cycles),
                         channel_last.eq(channel + 1 == self.out_channels),
                         x0_last.eq(x0 + tm >= self.out_width), y_last.eq(y + 1 == self.out_height)]
        # A buffer this sequencer has finished with stays "full" until its delayed release lands;
        # a pass shorter than that must not be mistaken for the next build of the buffer.
        consumed = Signal(2)
        # Output FIFO room and the residual beat matter only in the last pass (the only one
        # that produces a result). With ``lookahead`` both are judged on the last cycle's
        # counts, registered (the FIFO levels' adders and compares stay off the issue path):
        # since then FIFO room and buffered residual beats fell only by the beat claimed then,
        # if one was (a beat read out or a residual beat arriving only adds), so the verdict for
        # "one more than the counts" is taken when the last cycle claimed a beat. Exact but for
        # arrivals in the last cycle, seen one cycle late: that never binds while the output is
        # read and the residual stream fed as fast as the engine uses them (the FIFOs stay far
        # from full, resp. empty).
        def credit(margin):
            return ((self.out_level + inflight + margin < self.fifo_depth)
                    & (~self.residual | (self.residual_level > res_pending + margin)))

        claimed = Signal()
        if lookahead:
            credit_now, credit_after_claim = Signal(), Signal()
            m.d.sync += [credit_now.eq(credit(0)), credit_after_claim.eq(credit(1))]
            credit_ok = Mux(claimed, credit_after_claim, credit_now)
        else:
            credit_ok = credit(0)
        ready_to_start = Signal()
        m.d.comb += ready_to_start.eq(
            (self.patch_full & ~consumed).bit_select(buf, 1)
            & (channel < self.weights_loaded) & (channel < self.quant_loaded)
            & (~self.last_pass | credit_ok))

        running = Signal()
        start_new = self.issue & self.first
        result_new = start_new & self.last_pass
        pass_done = self.issue & last & channel_last
        with m.FSM(name="phase") as phase:
            with m.State("IDLE"):
                m.d.comb += self.accept_start.eq(self.start)
                with m.If(self.start):
                    m.next = "BEGIN"
            with m.State("BEGIN"):
                m.d.comb += self.begin.eq(1)
                # the blocks reset their load state this cycle; wait one cycle for fresh status
                m.d.sync += [cycle.eq(0), first.eq(1), channel.eq(0), out_mod.eq(0), waddr.eq(0),
                             buf.eq(0), x0.eq(0), y.eq(0), pass_index.eq(0), channel_start.eq(0),
                             pass_start.eq(0)]
                m.next = "LOAD"
            with m.State("LOAD"):
                # the loop-end flags of the first issue (the address generator's cycles and
                # passes are valid from setup_ready, before the last LOAD cycle)
                ahead(last.eq(first_pass_cycles == 1), channel_last.eq(self.out_channels == 1),
                      x0_last.eq(tm >= self.out_width), y_last.eq(self.out_height == 1))
                if cfg.multi_pass:
                    ahead(first_pass.eq(1), last_pass.eq(self.passes == 1))
                with m.If(self.setup_ready & self.patch_full[0] & (self.weights_loaded != 0)
                          & (self.quant_loaded != 0)):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.issue.eq(~self.first | ready_to_start)]
                with m.If(self.issue):
                    with m.If(last):
                        m.d.sync += [cycle.eq(0), first.eq(1)]
                        with m.If(channel_last):
                            # end of a pass: the next pass (or pixel group) uses the other buffer
                            m.d.sync += [channel.eq(0), out_mod.eq(0), buf.eq(~buf)]
                            ahead(last.eq(next_pass_cycles == 1),
                                  channel_last.eq(self.out_channels == 1))
                            with m.If(~self.last_pass):
                                next_pass = pass_start + self.full_pass_cycles
                                m.d.sync += [pass_index.eq(pass_index + 1), pass_start.eq(next_pass),
                                             channel_start.eq(next_pass), waddr.eq(next_pass)]
                                if cfg.multi_pass:
                                    ahead(first_pass.eq(0),
                                          last_pass.eq(pass_index + 2 == self.passes))
                            with m.Else():
                                m.d.sync += [pass_index.eq(0), pass_start.eq(0), channel_start.eq(0),
                                             waddr.eq(0)]
                                if cfg.multi_pass:
                                    ahead(first_pass.eq(1), last_pass.eq(self.passes == 1))
                                with m.If(x0_last):
                                    m.d.sync += [x0.eq(0), y.eq(y + 1)]
                                    ahead(x0_last.eq(tm >= self.out_width),
                                          y_last.eq(y + 2 == self.out_height))
                                    with m.If(y_last):
                                        m.next = "DRAIN"
                                with m.Else():
                                    m.d.sync += x0.eq(x0 + tm)
                                    ahead(x0_last.eq(x0 + 2 * tm >= self.out_width))
                        with m.Else():
                            m.d.sync += [channel.eq(channel + 1),
                                         out_mod.eq(Mux(out_mod + 1 == self.period, 0, out_mod + 1))]
                            ahead(last.eq(pass_cycles == 1),
                                  channel_last.eq(channel + 2 == self.out_channels))
                            if cfg.multi_pass:
                                # next output channel: its words start cycles_per_output further on
                                next_channel = channel_start + self.cycles_per_output
                                m.d.sync += [channel_start.eq(next_channel), waddr.eq(next_channel)]
                            else:
                                # one pass: the words of channel o + 1 follow o's last word
                                m.d.sync += waddr.eq(waddr + 1)
                    with m.Else():
                        m.d.sync += [cycle.eq(cycle + 1), first.eq(0), waddr.eq(waddr + 1)]
                        ahead(last.eq(cycle + 2 == pass_cycles))
            with m.State("DRAIN"):
                with m.If((inflight == 0) & (self.out_level == 0) & self.out_idle):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~phase.ongoing("IDLE") | self.start)
        with m.If(self.done):
            m.d.sync += self.done.eq(0)

        # Credits: beats started but not yet in the output FIFO; residual beats claimed.
        m.d.sync += [inflight.eq(inflight + result_new - self.written), claimed.eq(result_new)]
        m.d.sync += res_pending.eq(res_pending + (result_new & self.residual) - self.residual_popped)

        m.d.sync += consumed.eq((consumed & self.patch_full) | Mux(pass_done, Mux(buf, 0b10, 0b01), 0))

        # Release a patch buffer after the last read of its pass.
        release = Signal(2)
        m.d.comb += release.eq(Mux(pass_done, Mux(buf, 0b10, 0b01), 0))
        for k in range(self.RELEASE_DELAY):
            d = Signal(2, name=f"release_d{k + 1}")
            m.d.sync += d.eq(release)
            release = d
        m.d.comb += self.patch_release.eq(release)

        counting = ~phase.ongoing("IDLE") | self.accept_start
        m.d.comb += [
            counters.clear.eq(self.accept_start),
            counters.count_busy.eq(self.issue),
            counters.count_stall.eq(running & ~self.issue),
            counters.count_idle.eq(counting & ~running),
            counters.macs_add.eq(self.macs_add),
            self.busy_cycles.eq(counters.busy_cycles),
            self.stall_cycles.eq(counters.stall_cycles),
            self.idle_cycles.eq(counters.idle_cycles),
            self.macs.eq(counters.macs),
        ]
        return m
