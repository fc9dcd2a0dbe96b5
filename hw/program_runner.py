"""The resident-mode program runner: whole inferences from the board's memory, no host per layer.

It walks a program in memory (:mod:`psconv.protocol.memory`: a header, then one step record
per engine invocation) and, for each step, drives the engine the way the host driver does over
the link, only from memory: the mask table read once to check it (every mask keeps a tap, see
:data:`~psconv.protocol.memory.BAD_MASKS`), descriptor and ``start``; the mask table, quantization entries,
the CHW input map and the weight words streamed in that order (the engine computes its first
pixel group while the weights arrive). The input map is not loaded when the engine already holds
it (its ``keep_map``): the step's map has the address, length, C, H and W of the last map this
run loaded, and no store of the run has touched that region since (output-channel tiles of one
layer, and ResNet's downsample beside its strided convolution, read one map). Then, while the engine computes,
the residual gathered from its CHW map and every output beat scattered into the output's CHW
map (:class:`~psconv.hw.pixel_order.PixelOrderAddress`), so the next step reads its input as an
ordinary CHW map. A step ends when its last output byte is in memory and the engine is idle.
After the last step, a header that asks for it has the runner average-pool a map (the golden
model's ``global_avgpool_int``: a serial multiply and shift per channel, no DSP).

Ports: ``start`` In(1) with ``program_address`` In(32) (a pulse, taken while not
``running``); ``running`` Out(1); ``done`` Out(1) (set when a program finishes, cleared by
``start``); ``bad_rule`` Out(8) (:data:`~psconv.protocol.memory.NO_BAD_RULE`, or the rule a
step record's descriptor broke, or ``BAD_MAX_POOL`` / ``BAD_MASKS`` for its ``max_pool`` field or
its mask table: the run stopped before starting that step, the engine idle, ``done`` low);
``steps_done`` Out(16); ``cycles``, ``memory_reads``, ``memory_writes`` Out(48)
(this inference: cycles from ``start``, bytes loaded, bytes stored); ``input_free`` Out(1)
(running, this run's header read, and no step left reads the input image: the header's
``input_steps`` are done; never the previous run's region while the new header loads)
with the header's ``input_address`` and ``input_bytes`` Out(32); ``memory``
Out(:func:`~psconv.hw.memory_port.memory_port_signature`); ``engine``: the engine's ports,
flipped (connect it to a :class:`~psconv.hw.engine.PeriodicSparseEngine`). The engine's
``layer`` is driven from the step record, which holds still until the engine is idle again.

Sequential loads (header, records, tables, maps, the pooled map) move a 2-byte word per cycle
at any byte alignment; the residual gather and the output scatter move the two pixels of a beat
that share a word in one request, else one byte (output stores first, the gather up to
:data:`GATHER_LOADS_IN_FLIGHT` loads ahead).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from psconv.protocol.beats import fmap_beat_bytes
from psconv.protocol.descriptor import MASK_BITS, QUANT_ENTRY_LAYOUT
from psconv.protocol.memory import (BAD_MASKS, BAD_MAX_POOL, MAX_POOL_2X2, NO_BAD_RULE,
                                    PROGRAM_HEADER_LAYOUT, RUN_STATUS_LAYOUT, step_record_layout)
from psconv.protocol.payloads import MASK_BYTES, QUANT_BYTES, layout_bytes

from .arith import output_size_value, times_constant
from .command_processor import engine_signature
from .descriptor_check import DescriptorCheck
from .memory_port import byte_lane, byte_store, memory_port_signature
from .pixel_order import PixelOrderAddress

COUNT_WIDTH = RUN_STATUS_LAYOUT["cycles"].shape.width
"""Bits of the runner's cycle and memory-byte counters: what RUN_STATUS reports."""
GATHER_LOADS_IN_FLIGHT = 16
"""Residual pixels the gather may run ahead of its collector (covers an SDRAM's read latency)."""
POOL_SUM_WIDTH = 8 + PROGRAM_HEADER_LAYOUT["pool_plane"].shape.width + 1
"""Bits of a pooled channel's signed sum (every plane the header can name, of int8 values)."""


class ProgramRunner(wiring.Component):
    """Runs a resident program for the engine of ``config`` (ports and contract: the module
    docstring)."""

    def __init__(self, config):
        self.config = config
        self.record_layout = step_record_layout(config)
        self.record_bytes = layout_bytes(self.record_layout)
        self.header_bytes = layout_bytes(PROGRAM_HEADER_LAYOUT)
        super().__init__({
            "start": In(1),
            "program_address": In(32),
            "running": Out(1),
            "done": Out(1),
            "steps_done": Out(16),
            "cycles": Out(COUNT_WIDTH),
            "memory_reads": Out(COUNT_WIDTH),
            "memory_writes": Out(COUNT_WIDTH),
            "bad_rule": Out(8, init=NO_BAD_RULE),
            "input_free": Out(1),
            "input_address": Out(32),
            "input_bytes": Out(32),
            "memory": Out(memory_port_signature()),
            "engine": In(engine_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm
        eng = self.engine
        mem = self.memory
        request, read_data = mem.request, mem.read_data

        # ---- the step record (and, before the first step, the program header) ----
        record_bits = 8 * max(self.record_bytes, self.header_bytes)
        record_raw = Signal(record_bits)
        record = data.View(self.record_layout, record_raw[record_bits - 8 * self.record_bytes:])
        header = data.View(PROGRAM_HEADER_LAYOUT, record_raw[record_bits - 8 * self.header_bytes:])
        d = record.descriptor
        m.d.comb += eng.layer.eq(d)
        # the step record's descriptor against the engine's limits (the rules the host and the
        # streamed command processor check): a record that breaks one stops the run
        m.submodules.descriptor_check = check = DescriptorCheck(cfg)
        m.d.comb += check.descriptor.eq(d)
        steps = Signal(16)
        record_address = Signal(32)
        kept = Signal(PROGRAM_HEADER_LAYOUT)      # the header, kept after it (pool, input)
        header_kept = Signal()                    # ``kept`` is this run's (not the last run's)
        m.d.comb += [self.input_free.eq(self.running & header_kept
                                        & (self.steps_done >= kept.input_steps)),
                     self.input_address.eq(kept.input_address),
                     self.input_bytes.eq(kept.input_bytes)]

        # ---- sequential loads: ``count`` bytes from ``address`` (any alignment), a word per
        # request; the receive side knows which lanes of each word are wanted ----
        issue_address = Signal(32)
        issue_left = Signal(32)          # word requests still to issue
        receive_left = Signal(32)        # bytes still to arrive
        # min(receive_left, 3), kept beside it: the FSM's "all arrived" and the one-byte-left
        # test compare two bits, not 32 (their compares and the next load's address mux were
        # one path)
        receive_few = Signal(2)
        receive_lane = Signal()          # the first wanted lane of the next word (1 only first)
        sequential = Signal()            # the issue side below drives the port
        m.d.comb += [request.payload.address.eq(issue_address), request.payload.write.eq(0)]
        with m.If(sequential):
            m.d.comb += request.valid.eq(issue_left != 0)
            with m.If(request.valid & request.ready):
                m.d.sync += [issue_address.eq(issue_address + 2), issue_left.eq(issue_left - 1)]

        def begin_loads(address, count):
            count = Value.cast(count)
            words = Mux(count == 0, 0, (address[0] + count + 1) >> 1)
            m.d.sync += [issue_address.eq(address), issue_left.eq(words),
                         receive_left.eq(count), receive_lane.eq(address[0]),
                         receive_few.eq(Mux(count > 3, 3, count[:2]))]

        # what the word arriving now brings: one byte (its high lane first, or the last byte)
        # or two, oldest first
        word = read_data.payload
        two = ~receive_lane & (receive_few != 1)
        first_byte = Mux(receive_lane, word[8:], word[:8])
        received = Signal(2)             # bytes the sequential consumer took this cycle

        def take_word():
            """The sequential consumer takes the arriving word (call under read_data.valid)."""
            m.d.comb += [read_data.ready.eq(1), received.eq(Mux(two, 2, 1))]
            left = receive_left - Mux(two, 2, 1)
            m.d.sync += [receive_left.eq(left), receive_lane.eq(0),
                         receive_few.eq(Mux(left > 3, 3, left[:2]))]

        # ---- beats for the engine's input streams: bytes shift in at the top; ``fill`` bytes
        # not yet moved out, the oldest ``fill`` places below the top. A whole beat moves into
        # ``engine_beat``, a register the engine's payload comes from (no logic between the two:
        # the engine writes it into block RAM through logic of its own) ----
        beat_sizes = {"mask": MASK_BYTES, "quant": QUANT_BYTES, "weight": cfg.tn,
                      "fmap": fmap_beat_bytes(cfg)}
        beat_width = max(beat_sizes.values()) + 2
        beat = Signal(8 * beat_width)
        fill = Signal(range(beat_width + 1))
        engine_beat = Signal(8 * max(beat_sizes.values()))
        engine_beat_valid = Signal()
        streams = {"mask": eng.mask_in, "quant": eng.quant_in, "weight": eng.weight_in,
                   "fmap": eng.fmap_in}
        payload_bits = {"mask": MASK_BITS, "quant": QUANT_ENTRY_LAYOUT.size,
                        "weight": 8 * cfg.tn, "fmap": 8 * beat_sizes["fmap"]}
        for name, stream_ in streams.items():
            m.d.comb += stream_.payload.eq(engine_beat[:payload_bits[name]])

        def oldest_beat(size):
            """The oldest ``size`` bytes: 0, 1 or 2 bytes more may sit above them."""
            windows = [beat[8 * (beat_width - size - extra):][:8 * size] for extra in range(3)]
            return Mux(fill == size + 2, windows[2], Mux(fill == size + 1, windows[1], windows[0]))

        mask_without_taps = Signal()     # the step's mask table has a mask with no taps

        # ---- residual gather and output scatter (the OUTPUT phase) ----
        m.submodules.gather = gather = PixelOrderAddress(tm)
        m.submodules.scatter = scatter = PixelOrderAddress(tm)
        # the output size, registered once per step (GEOMETRY): the walkers compare against it
        # every cycle, and an adder from the record there would sit on the memory request path
        out_height = Signal.like(d.in_height)
        out_width = Signal.like(d.in_width)
        for walker, base in ((gather, record.residual_address), (scatter, record.output_address)):
            m.d.comb += [walker.base.eq(base), walker.plane.eq(record.plane_bytes),
                         walker.width.eq(out_width), walker.height.eq(out_height),
                         walker.channels.eq(d.out_channels)]
        residual_beat = Signal(8 * tm)
        residual_full = Signal()
        residual_fill = Signal(range(tm))
        # one token per residual load or padding pixel, in order: bit 0 a word will come (0:
        # padding), bit 1 the lane of its byte, bit 2 both its bytes are pixels (a pair)
        m.submodules.tokens = tokens = SyncFIFO(width=3, depth=GATHER_LOADS_IN_FLIGHT)
        out_beat = Signal(8 * tm)
        out_held = Signal()
        m.d.comb += [eng.residual_in.payload.eq(residual_beat),
                     eng.residual_in.valid.eq(residual_full)]

        # ---- the pool: per channel a sum, then a serial multiply and a serial shift ----
        pool_channel = Signal(16)
        pool_input = Signal(32)          # the current channel's plane
        pool_sum = Signal(signed(POOL_SUM_WIDTH))
        product_width = POOL_SUM_WIDTH + len(kept.pool_multiplier)
        product = Signal(signed(product_width))
        multiplicand = Signal(signed(product_width))
        multiplier = Signal(len(kept.pool_multiplier))
        shift_left = Signal(len(kept.pool_shift))
        pooled = Signal(8)

        # ---- the max-pool step: per channel, per output row, two input rows loaded in turn;
        # each pair of columns of the first row leaves its max in ``row_max``, the second row's
        # pair maxima fold into it, then the pooled row is stored a byte at a time ----
        half_width = cfg.max_width // 2
        row_max = Array(Signal(signed(8), name=f"row_max_{k}") for k in range(max(half_width, 1)))
        pool_column = Signal(range(cfg.max_width + 2))   # the column of the next byte to arrive
        pool_held = Signal(signed(8))                    # an even column's byte, awaiting its pair
        pool_second = Signal()                           # loading the second row of the pair
        pool_index = Signal(range(max(half_width, 1) + 1))
        pool_row = Signal.like(d.in_height)
        pool_channels_left = Signal.like(d.in_channels)
        pool_in = Signal(32)
        pool_out = Signal(32)

        # a pair's maximum is registered with its slot, and folded into ``row_max`` the next
        # cycle (the memory's read data, a compare and the row register's write decoder on one
        # path missed the ULX3S's 60 MHz)
        pair_valid = Signal()
        pair_value = Signal(signed(8))
        pair_slot = Signal(range(max(half_width, 1)))
        pair_second = Signal()
        m.d.sync += pair_valid.eq(0)
        with m.If(pair_valid):
            slot = row_max[pair_slot]
            m.d.sync += slot.eq(Mux(pair_second & (slot > pair_value), slot, pair_value))

        def fold_pair(column, value):
            """The pair ending at odd ``column`` has maximum ``value``: into ``row_max``, next
            cycle."""
            m.d.sync += [pair_valid.eq(1), pair_value.eq(value), pair_slot.eq(column >> 1),
                         pair_second.eq(pool_second)]

        def pool_bytes():
            """Take the arriving word's 1 or 2 bytes of the current row into the pair maxima."""
            m.d.comb += sequential.eq(1)
            with m.If(read_data.valid):
                take_word()
                b0 = first_byte.as_signed()
                b1 = word[8:].as_signed()
                odd = pool_column[0]
                with m.If(two):
                    m.d.sync += pool_column.eq(pool_column + 2)
                    with m.If(odd):
                        fold_pair(pool_column, Mux(pool_held > b0, pool_held, b0))
                        m.d.sync += pool_held.eq(b1)
                    with m.Else():
                        fold_pair(pool_column + 1, Mux(b0 > b1, b0, b1))
                with m.Else():
                    m.d.sync += pool_column.eq(pool_column + 1)
                    with m.If(odd):
                        fold_pair(pool_column, Mux(pool_held > b0, pool_held, b0))
                    with m.Else():
                        m.d.sync += pool_held.eq(b0)

        # ---- counters ----
        gather_bytes = Signal(2)         # residual bytes that arrived this cycle
        with m.If(request.valid & request.ready & request.payload.write):
            m.d.sync += self.memory_writes.eq(self.memory_writes + request.payload.enable[0]
                                              + request.payload.enable[1])
        m.d.sync += self.memory_reads.eq(self.memory_reads + received + gather_bytes)
        with m.If(self.running):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # ---- the input map the engine holds: a step whose map is the same bytes (address,
        # length and C, H, W equal to the last map loaded in this run, and no store of the run
        # into that region since) keeps it instead of loading it again (the engine's
        # ``keep_map``): output-channel tiles of a layer, and a downsample beside its 3x3
        # convolution, read one map. Stores are checked a cycle late, from registers (the
        # memory request path stays as it was); a step decides in GEOMETRY, cycles after the
        # last store of the step before ----
        map_held = Signal()
        held_address = Signal(32)
        held_end = Signal(33)
        held_bytes = Signal.like(record.fmap_bytes)
        held_shape = Signal(len(Cat(d.in_channels, d.in_height, d.in_width)))
        keep_map = Signal()
        stored = Signal()
        stored_first = Signal(32)
        stored_end = Signal(33)
        m.d.sync += [stored.eq(request.valid & request.ready & request.payload.write),
                     stored_first.eq(request.payload.address),
                     stored_end.eq(request.payload.address + 1 + request.payload.enable.all())]
        with m.If(stored & (stored_first < held_end) & (stored_end > held_address)):
            m.d.sync += map_held.eq(0)
        m.d.comb += eng.keep_map.eq(keep_map)
        # the engine's busy a cycle late: a step ends a cycle after the engine's done (its busy
        # came from the sequencer through the engine owner into the runner's next-state logic)
        engine_busy = Signal()
        m.d.sync += engine_busy.eq(eng.busy)

        def load_record(next_state):
            """Shift the loaded bytes into the record register, then go on."""
            m.d.comb += sequential.eq(1)
            with m.If(read_data.valid):
                take_word()
                with m.If(two):
                    m.d.sync += record_raw.eq(Cat(record_raw[16:], word))
                with m.Else():
                    m.d.sync += record_raw.eq(Cat(record_raw[8:], first_byte))
            with m.If(receive_few == 0):
                m.next = next_state

        def stream_phase(name, next_state, next_address=None, next_count=None, inspect=None,
                         skip=None):
            """The loads set up before this phase go into ``name``'s engine stream, the last beat
            zero-padded; then set up ``next_state``'s loads. With ``inspect`` the beats go to
            ``inspect(beat)`` instead (called while one is held, a cycle each), not the engine.
            ``skip``: (condition, state): go to ``state`` instead where ``condition`` holds."""
            stream_ = streams[name]
            size = beat_sizes[name]
            m.d.comb += sequential.eq(1)
            if inspect is None:
                taken = stream_.ready
                m.d.comb += stream_.valid.eq(engine_beat_valid)
            else:
                taken = 1
                with m.If(engine_beat_valid):
                    inspect(engine_beat[:payload_bits[name]])
            move = (fill >= size) & (~engine_beat_valid | taken)
            with m.If(move):
                m.d.sync += [engine_beat.eq(oldest_beat(size)), engine_beat_valid.eq(1)]
            with m.Elif(taken):
                m.d.sync += engine_beat_valid.eq(0)
            moved = Mux(move, size, 0)
            # room for a whole word whatever moves out this cycle
            with m.If(read_data.valid & (fill <= size)):
                take_word()
                with m.If(two):
                    m.d.sync += [beat.eq(Cat(beat[16:], word)), fill.eq(fill + 2 - moved)]
                with m.Else():
                    m.d.sync += [beat.eq(Cat(beat[8:], first_byte)), fill.eq(fill + 1 - moved)]
            with m.Elif((receive_few == 0) & (fill != 0) & (fill < size)):
                m.d.sync += [beat.eq(Cat(beat[8:], 0)), fill.eq(fill + 1)]
            with m.Else():
                m.d.sync += fill.eq(fill - moved)
            with m.If((receive_few == 0) & (fill == 0) & ~engine_beat_valid):
                if next_address is not None:
                    begin_loads(next_address, next_count)
                m.next = next_state
                if skip is not None:
                    with m.If(skip[0]):
                        m.next = skip[1]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.running.eq(1), self.done.eq(0), self.steps_done.eq(0),
                                 header_kept.eq(0), map_held.eq(0),
                                 self.bad_rule.eq(NO_BAD_RULE),
                                 self.cycles.eq(0), self.memory_reads.eq(0),
                                 self.memory_writes.eq(0),
                                 record_address.eq(self.program_address + self.header_bytes)]
                    begin_loads(self.program_address, self.header_bytes)
                    m.next = "HEADER"
            with m.State("HEADER"):
                load_record("FIRST_STEP")
            with m.State("FIRST_STEP"):
                m.d.sync += [steps.eq(header.steps), kept.eq(header), header_kept.eq(1)]
                begin_loads(record_address, self.record_bytes)
                m.next = "RECORD"
                with m.If(header.steps == 0):
                    m.next = "POOL_START"
            with m.State("RECORD"):
                load_record("CHECK_STEP_1" if DescriptorCheck.LATENCY > 1 else "GEOMETRY")
            # the record is complete since the last cycle of RECORD: the check's registered
            # verdict is ready DescriptorCheck.LATENCY cycles from then, in GEOMETRY
            for wait in range(1, DescriptorCheck.LATENCY):
                with m.State(f"CHECK_STEP_{wait}"):
                    last = wait == DescriptorCheck.LATENCY - 1
                    m.next = "GEOMETRY" if last else f"CHECK_STEP_{wait + 1}"
            with m.State("GEOMETRY"):
                # the engine's output map: halved by its output max pool (descriptor ``pool``)
                conv_height = output_size_value(d.in_height, d.stride)
                conv_width = output_size_value(d.in_width, d.stride)
                m.d.sync += [out_height.eq(Mux(d.pool, conv_height >> 1, conv_height)),
                             out_width.eq(Mux(d.pool, conv_width >> 1, conv_width)),
                             fill.eq(0), engine_beat_valid.eq(0), mask_without_taps.eq(0),
                             keep_map.eq(map_held & (record.fmap_address == held_address)
                                         & (record.fmap_bytes == held_bytes)
                                         & (Cat(d.in_channels, d.in_height, d.in_width)
                                            == held_shape))]
                begin_loads(record.masks_address, d.period * MASK_BYTES)
                m.next = "CHECK_MASKS"
                with m.If(record.max_pool == MAX_POOL_2X2):
                    m.d.sync += [pool_in.eq(record.fmap_address),
                                 pool_out.eq(record.output_address),
                                 pool_channels_left.eq(d.in_channels), pool_row.eq(0)]
                    m.next = "MAX_POOL_ROW"
                    with m.If((d.in_height < 2) | (d.in_width < 2)):
                        m.next = "STEP_DONE"       # nothing to pool: an empty output map
                with m.Elif(record.max_pool != 0):
                    m.d.sync += [self.bad_rule.eq(BAD_MAX_POOL), self.running.eq(0)]
                    m.next = "IDLE"
                with m.If(~check.ok):
                    m.d.sync += [self.bad_rule.eq(check.rule), self.running.eq(0)]
                    m.next = "IDLE"
            # The mask table is read once before the engine starts: a mask that keeps no taps
            # (T = 0 for a table of them: the address generator divides by T) stops the run
            # with the engine still idle, as a broken descriptor does.
            with m.State("CHECK_MASKS"):
                def inspect(mask):
                    with m.If(mask == 0):
                        m.d.sync += mask_without_taps.eq(1)
                stream_phase("mask", "MASKS_CHECKED", inspect=inspect)
            with m.State("MASKS_CHECKED"):
                m.next = "START_ENGINE"
                with m.If(mask_without_taps):
                    m.d.sync += [self.bad_rule.eq(BAD_MASKS), self.running.eq(0)]
                    m.next = "IDLE"
            with m.State("START_ENGINE"):
                # the engine is idle here (INFER checked it, and a step ends only when it is);
                # its busy follows start combinationally, so start must not depend on it
                m.d.comb += [eng.start.eq(1), gather.start.eq(1), scatter.start.eq(1)]
                m.d.sync += [residual_full.eq(0), residual_fill.eq(0), out_held.eq(0),
                             fill.eq(0), engine_beat_valid.eq(0)]
                begin_loads(record.masks_address, d.period * MASK_BYTES)
                with m.If(~keep_map):
                    # this step loads its map: it is the one held from now on
                    m.d.sync += [map_held.eq(1), held_address.eq(record.fmap_address),
                                 held_end.eq(record.fmap_address + record.fmap_bytes),
                                 held_bytes.eq(record.fmap_bytes),
                                 held_shape.eq(Cat(d.in_channels, d.in_height, d.in_width))]
                m.next = "MASKS"
            with m.State("MASKS"):
                stream_phase("mask", "QUANT", record.quant_address,
                             times_constant(d.out_channels, QUANT_BYTES))
            with m.State("QUANT"):
                stream_phase("quant", "FMAP",
                             Mux(keep_map, record.weights_address, record.fmap_address),
                             Mux(keep_map, record.weight_bytes, record.fmap_bytes),
                             skip=(keep_map, "WEIGHTS"))
            with m.State("FMAP"):
                stream_phase("fmap", "WEIGHTS", record.weights_address, record.weight_bytes)
            with m.State("WEIGHTS"):
                stream_phase("weight", "OUTPUT")
            with m.State("OUTPUT"):
                # the scatter: take a beat, store its pixels that lie inside the map
                m.d.comb += eng.out.ready.eq(~out_held)
                with m.If(eng.out.valid & ~out_held):
                    m.d.sync += [out_beat.eq(eng.out.payload), out_held.eq(1)]
                # two adjacent pixels of the beat whose first byte is even go as one word
                write_now = out_held & scatter.inside
                write_pair = write_now & scatter.pair_inside & ~scatter.address[0]
                with m.If(write_now):
                    m.d.comb += [request.valid.eq(1),
                                 *byte_store(request.payload, scatter.address, out_beat[:8])]
                    with m.If(write_pair):
                        m.d.comb += [request.payload.data.eq(out_beat[:16]),
                                     request.payload.enable.eq(0b11)]
                with m.If(out_held & (~scatter.inside | request.ready)):
                    with m.If(write_pair):
                        m.d.comb += scatter.advance_pair.eq(1)
                        m.d.sync += out_beat.eq(out_beat >> 16)
                        with m.If(scatter.pair_end):
                            m.d.sync += out_held.eq(0)
                    with m.Else():
                        m.d.comb += scatter.advance.eq(1)
                        m.d.sync += out_beat.eq(out_beat >> 8)
                        with m.If(scatter.beat_end):
                            m.d.sync += out_held.eq(0)
                # the gather (residual layers only), writes first: the walker issues a load per
                # pixel inside the map (per pair, as for the scatter) and a token per load or
                # padding pixel; the collector builds beats from the tokens in order, so loads
                # may overlap
                load_pair = gather.inside & gather.pair_inside & ~gather.address[0]
                with m.If(d.residual & ~gather.finished & ~write_now & tokens.w_rdy):
                    with m.If(gather.inside):
                        m.d.comb += [request.valid.eq(1),
                                     request.payload.address.eq(gather.address)]
                        with m.If(request.ready):
                            m.d.comb += [tokens.w_en.eq(1),
                                         tokens.w_data.eq(Cat(1, gather.address[0], load_pair)),
                                         gather.advance.eq(~load_pair),
                                         gather.advance_pair.eq(load_pair)]
                    with m.Else():
                        m.d.comb += [tokens.w_en.eq(1), tokens.w_data.eq(0), gather.advance.eq(1)]
                token_pair = tokens.r_data[2]
                with m.If(tokens.r_rdy & ~residual_full):
                    with m.If(tokens.r_data[0]):
                        m.d.comb += read_data.ready.eq(1)
                        with m.If(read_data.valid):
                            m.d.comb += [tokens.r_en.eq(1), gather_bytes.eq(Mux(token_pair, 2, 1))]
                            with m.If(token_pair):
                                m.d.sync += residual_beat.eq(Cat(residual_beat[16:], word))
                            with m.Else():
                                m.d.sync += residual_beat.eq(
                                    Cat(residual_beat[8:], byte_lane(word, tokens.r_data[1])))
                    with m.Else():
                        m.d.comb += tokens.r_en.eq(1)
                        m.d.sync += residual_beat.eq(Cat(residual_beat[8:], 0))
                    with m.If(tokens.r_en):
                        step = Mux(tokens.r_data[0] & token_pair, 2, 1)
                        m.d.sync += residual_fill.eq(residual_fill + step)
                        with m.If(residual_fill + step == tm):
                            m.d.sync += [residual_fill.eq(0), residual_full.eq(1)]
                with m.If(eng.residual_in.valid & eng.residual_in.ready):
                    m.d.sync += residual_full.eq(0)
                with m.If(scatter.finished & ~engine_busy):
                    m.next = "STEP_DONE"

            # ---- a max-pool step (2x2, stride 2): no engine ----
            with m.State("MAX_POOL_ROW"):
                begin_loads(pool_in, d.in_width)
                m.d.sync += [pool_column.eq(0), pool_second.eq(0)]
                m.next = "MAX_POOL_FIRST"
            with m.State("MAX_POOL_FIRST"):
                pool_bytes()
                with m.If(receive_few == 0):
                    begin_loads(pool_in + d.in_width, d.in_width)
                    m.d.sync += [pool_column.eq(0), pool_second.eq(1)]
                    m.next = "MAX_POOL_SECOND"
            with m.State("MAX_POOL_SECOND"):
                pool_bytes()
                with m.If(receive_few == 0):
                    m.d.sync += [pool_in.eq(pool_in + (d.in_width << 1)), pool_index.eq(0)]
                    m.next = "MAX_POOL_FOLD"
            with m.State("MAX_POOL_FOLD"):
                m.next = "MAX_POOL_STORE"            # the row's last pair is folded in now
            with m.State("MAX_POOL_STORE"):
                m.d.comb += [request.valid.eq(1),
                             *byte_store(request.payload, pool_out, row_max[pool_index])]
                with m.If(request.ready):
                    m.d.sync += [pool_out.eq(pool_out + 1), pool_index.eq(pool_index + 1)]
                    with m.If(pool_index + 1 == d.in_width >> 1):
                        m.d.sync += pool_row.eq(pool_row + 1)
                        m.next = "MAX_POOL_ROW"
                        with m.If(pool_row + 1 == d.in_height >> 1):
                            # the channel is done; an odd last row is skipped
                            m.d.sync += [pool_row.eq(0),
                                         pool_channels_left.eq(pool_channels_left - 1),
                                         pool_in.eq(pool_in + Mux(d.in_height[0], d.in_width, 0))]
                            with m.If(pool_channels_left == 1):
                                m.next = "STEP_DONE"

            with m.State("STEP_DONE"):
                m.d.sync += [self.steps_done.eq(self.steps_done + 1),
                             record_address.eq(record_address + self.record_bytes)]
                m.next = "NEXT_STEP"
            with m.State("NEXT_STEP"):
                with m.If(self.steps_done == steps):
                    m.next = "POOL_START"
                with m.Else():
                    begin_loads(record_address, self.record_bytes)
                    m.next = "RECORD"

            # ---- the average pool, a channel at a time ----
            with m.State("POOL_START"):
                m.d.sync += [pool_channel.eq(0), pool_input.eq(kept.pool_input)]
                m.next = "POOL_CHANNEL"
                with m.If(kept.pool_channels == 0):
                    m.next = "FINISH"
            with m.State("POOL_CHANNEL"):
                begin_loads(pool_input, kept.pool_plane)
                m.d.sync += pool_sum.eq(0)
                m.next = "POOL_SUM"
            with m.State("POOL_SUM"):
                m.d.comb += sequential.eq(1)
                with m.If(read_data.valid):
                    take_word()
                    low = first_byte.as_signed()
                    m.d.sync += pool_sum.eq(pool_sum + Mux(two, low + word[8:].as_signed(), low))
                with m.If(receive_few == 0):
                    m.d.sync += [product.eq(0), multiplicand.eq(pool_sum),
                                 multiplier.eq(kept.pool_multiplier),
                                 shift_left.eq(kept.pool_shift - 1)]
                    m.next = "POOL_MULTIPLY"
            with m.State("POOL_MULTIPLY"):
                # product = sum * multiplier, one multiplier bit per cycle
                with m.If(multiplier[0]):
                    m.d.sync += product.eq(product + multiplicand)
                m.d.sync += [multiplicand.eq(multiplicand << 1), multiplier.eq(multiplier >> 1)]
                with m.If(multiplier == 0):
                    m.next = "POOL_SHIFT"
            with m.State("POOL_SHIFT"):
                # (v + 2**(S-1)) >> S == ((v >> (S-1)) + 1) >> 1: S-1 arithmetic shifts first
                with m.If(shift_left != 0):
                    m.d.sync += [product.eq(product >> 1), shift_left.eq(shift_left - 1)]
                with m.Else():
                    rounded = (product + 1) >> 1
                    m.d.sync += pooled.eq(Mux(rounded > 127, 127,
                                              Mux(rounded < -128, -128, rounded[:8])))
                    m.next = "POOL_STORE"
            with m.State("POOL_STORE"):
                m.d.comb += [request.valid.eq(1),
                             *byte_store(request.payload, kept.pool_output + pool_channel, pooled)]
                with m.If(request.ready):
                    m.d.sync += [pool_channel.eq(pool_channel + 1),
                                 pool_input.eq(pool_input + kept.pool_plane)]
                    m.next = "POOL_CHANNEL"
                    with m.If(pool_channel + 1 == kept.pool_channels):
                        m.next = "FINISH"
            with m.State("FINISH"):
                m.d.sync += [self.running.eq(0), self.done.eq(1)]
                m.next = "IDLE"
        return m
