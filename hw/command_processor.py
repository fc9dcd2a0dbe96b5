"""Command processor: the board's answer to every host command, between the link and the engine.

:class:`CommandProcessor` takes fresh, CRC-checked commands from
:class:`psconv.hw.framing.LinkLayer` (``command`` / ``command_payload``), executes them on the
:class:`psconv.hw.engine.PeriodicSparseEngine` and answers each exactly once (``reply`` /
``reply_payload``): ACK, DATA, or NAK with one :class:`~psconv.protocol.codes.NakReason` byte.
A NAK always means *nothing happened*: every check is made before the first side effect
(the one exception, NO_TAPS within a payload of several masks, is below).

Payload layouts are :mod:`psconv.protocol.payloads`' (its module docstring has the command
table); the replies below are built as signals of those layouts.

Rules (each refusal is a NAK, with no side effect):

* ``WRITE_LAYER`` / ``START`` while the engine is busy: BUSY. ``START`` before any
  ``WRITE_LAYER``: BAD_STATE. A fixed-size payload of the wrong length: BAD_LENGTH.
* ``WRITE_*`` data while the engine is not busy (before ``START`` or after ``done``):
  BAD_STATE. A payload that is not a whole number of beats: BAD_LENGTH. The mask table comes
  first: any other data before all P masks are in is BAD_STATE.
* **Budgets.** From the descriptor and the mask table the processor derives how many beats each
  stream of this layer takes (masks P, quant C_out, fmap ceil(C*H*W / tn), weights
  C_out * ceil(ceil(C_in / P) * T / tn), residual H_out * ceil(W_out / tm) * C_out or 0); a write
  beyond what is left is OVERFLOW. The engine would never accept those beats, and the processor,
  which blocks while it pushes a payload into a stream, would hang.
* **Residual window (deadlock rule).** The engine consumes residual beats in lockstep with its
  outputs, and outputs wait in a :attr:`output_fifo_depth`-beat FIFO until ``READ_OUTPUT``
  takes them. A residual beat the engine cannot take would block the processor, and with it the
  ``READ_OUTPUT`` that would make room. So residual beats accepted since ``START`` may exceed
  output beats read since ``START`` by at most ``output_fifo_depth`` (the *window*); a
  ``WRITE_RESIDUAL`` beyond the window is OVERFLOW. Inside the window no push can block for
  good: an engine holding a residual beat back has at least ``output_fifo_depth`` unread outputs
  ahead of it, which is more than the window allows.
* **Masks with no taps.** A mask beat whose 9 tap bits are all 0 is NO_TAPS: that beat is not
  pushed, nor the rest of the payload. The address generator divides by T, the table's tap
  count, so it must never see a table of such masks (T = 0); refusing each one, as the host's
  :class:`~psconv.families.PatternFamily` does, refuses such a table at its first mask, which is
  the first beat of its command, so nothing happened. A zero mask after the first beat of a
  payload leaves the masks before it in the engine (``masks_left`` counts them; the table may
  go on with a valid mask, or ``ABORT``). Left out with the descriptor check
  (``check_descriptor=False``).
* ``READ_OUTPUT`` before the first ``START``: BAD_STATE. ``START`` empties the output FIFO.
* ``WRITE_LAYER`` with a descriptor that breaks a rule of
  :data:`~psconv.protocol.descriptor.DESCRIPTOR_RULES` (:class:`DescriptorCheck`, unless built
  with ``check_descriptor=False``): NAK BAD_DESCRIPTOR with a second byte, the rule's index; the
  previous descriptor stays.
* ``ABORT`` (no payload) is ACKed, and ``abort`` pulses in the cycle the link takes that ACK:
  the board top resets the processor, the engine and the resident runner with it
  (:mod:`psconv.hw.board_top`), so the answer is out before anything is reset.

Timing: one payload byte per cycle in; a beat is pushed to its engine stream the cycle after its
last byte and waits there for ``ready`` (the ACK goes out once every beat is in the engine).
Budgets take ~15 serial steps after the last mask (136 cycles for the iCEBreaker configuration,
209 for the default one); data writes arriving meanwhile wait for them. Replies stream one byte
per cycle.

Size (the iCE40UP5K has 5,280 logic cells, so every flip-flop and LUT here counts): reply data
and payload bytes share one byte shift register (a command never needs both), loaded with one
2-way choice per bit; the weight, fmap and residual budgets are checked with one subtractor
against a counter selected a cycle ahead and charged for the whole write at the check (the
pushes that follow cannot be stopped, so the end state is the one per-beat counting gives);
:class:`LayerBudget` is a single shift-add register.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.descriptor import MASK_BITS, layer_descriptor_layout
from psconv.protocol.frame import MAX_PAYLOAD
from psconv.protocol.payloads import (COUNTERS_BYTES, COUNTERS_LAYOUT, DATA_COMMANDS, IDENTITY_BYTES,
                                      LINK_COUNTERS, OUTPUT_FIFO_DEPTH, STATUS_BYTES, STATUS_LAYOUT,
                                      beat_bytes, descriptor_bytes, identity_const,
                                      smallest_max_payload)

from .arith import SerialDivider, times_constant
from .block_ram import BlockRamFIFO
from .descriptor_check import DescriptorCheck
from .engine import PeriodicSparseEngine
from .framing import FRAME_HEADER, command_port_members
from .layer_budget import LayerBudget

WIDE_BUDGETS = (Command.WRITE_WEIGHTS, Command.WRITE_FMAP, Command.WRITE_RESIDUAL)


def engine_signature(config) -> wiring.Signature:
    """The signature of ``PeriodicSparseEngine(config)`` (read from an instance that is never
    elaborated, so the engine's port list is stated once, in :mod:`psconv.hw.engine`)."""
    engine = PeriodicSparseEngine(config)
    engine._MustUse__silence = True   # built only for its signature: no "never used" warning
    return engine.signature


class CommandProcessor(wiring.Component):
    """Executes link commands on the engine (see the module docstring for commands and rules).

    Ports:

    * ``command`` In(stream FRAME_HEADER), ``command_payload`` In(stream PAYLOAD_BYTE),
      ``reply`` Out(stream REPLY_HEADER), ``reply_payload`` Out(stream 8): to
      :class:`~psconv.hw.framing.LinkLayer` (its ports of the same names, flipped). As the
      link guarantees, ``command_payload`` carries exactly ``length`` bytes with ``last`` on the
      final one: a data write ends with the beat that holds that byte.
    * ``link_counters`` In(LINK_COUNTERS): reported by ``READ_COUNTERS``.
    * ``engine`` In(PeriodicSparseEngine(config).signature): the engine's ports, flipped, so
      ``wiring.connect(m, processor.engine, engine)`` wires them all.
    * ``abort`` Out(1): a pulse as the ACK of ``ABORT`` is taken; whoever instantiates the
      processor resets it and the engine with it (nothing inside acts on it).

    ``output_fifo_depth`` (>= 2) is the output FIFO and the residual window in beats; ``max_payload``
    the link's largest payload: no answer is longer (a ``READ_OUTPUT`` asking for more gets at
    most ``max_payload // tm`` beats, since the link could neither send nor store a longer one),
    and it must hold every DATA blob, the descriptor and a whole beat of every data command.
    Both are reported by ``IDENTIFY``. ``check_descriptor=False`` leaves the
    :class:`DescriptorCheck` and the NO_TAPS check out (a board too full for them; the host
    still checks).
    """

    def __init__(self, config, *, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                 max_payload: int = MAX_PAYLOAD, check_descriptor: bool = True, budget=None):
        if not isinstance(output_fifo_depth, int) or not 2 <= output_fifo_depth <= 0xFFFF:
            raise PsconvError(f"command processor: output_fifo_depth {output_fifo_depth!r}; "
                              f"allowed: an integer 2..65535 (beats)")
        self.config = config
        self.output_fifo_depth = output_fifo_depth
        self.max_payload = max_payload
        self.check_descriptor = bool(check_descriptor)
        #: its layer budgets (:class:`LayerBudget` unless given: the properties of
        #: :mod:`.command_processor_properties` give one whose values and timing are free), an
        #: attribute so that they can tell the cycles a data write waits for them
        self.budget = budget
        self.descriptor_layout = layer_descriptor_layout(config)
        self.descriptor_bytes = descriptor_bytes(config)
        smallest = smallest_max_payload(config)
        if not isinstance(max_payload, int) or not smallest <= max_payload <= 0xFFFF:
            raise PsconvError(f"command processor: max_payload {max_payload!r}; allowed: an "
                              f"integer {smallest}..65535 (bytes: every answer blob, the layer "
                              f"descriptor and one beat of each data command must fit a frame)")
        super().__init__({
            **command_port_members(),
            "link_counters": In(LINK_COUNTERS),
            "engine": In(engine_signature(config)),
            "abort": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm
        eng = self.engine
        depth = self.output_fifo_depth
        beat_sizes = {c: beat_bytes(cfg, c) for c in DATA_COMMANDS}
        max_beat = max(beat_sizes.values())

        # ---- output FIFO (emptied by START) ----
        flush = Signal()
        out_fifo = BlockRamFIFO(width=8 * tm, depth=depth)
        m.submodules.output_fifo = ResetInserter({"sync": flush})(out_fifo)
        m.d.comb += [out_fifo.w_data.eq(eng.out.payload), out_fifo.w_en.eq(eng.out.valid),
                     eng.out.ready.eq(out_fifo.w_rdy)]

        # ---- state the host sees ----
        busy = eng.busy
        descriptor = Signal(self.descriptor_layout)
        have_descriptor = Signal()
        started = Signal()
        done_since_start = Signal()
        m.d.comb += eng.layer.eq(descriptor)
        with m.If(eng.done):
            m.d.sync += done_since_start.eq(1)

        budget = m.submodules.budget = (self.budget if self.budget is not None
                                        else LayerBudget(cfg))
        count_width = budget.width + 1
        masks_left = Signal(range(cfg.max_period + 2))
        quant_left = Signal(range(cfg.max_out_channels + 2))
        weights_left = Signal(count_width)
        fmap_left = Signal(count_width)
        residual_left = Signal(count_width)
        window = Signal(count_width)       # residual beats the host may still send
        budget_pending = Signal()          # START seen, budgets not started yet
        budget_valid = Signal()
        taps = Signal(budget.taps_width)
        m.d.comb += [budget.descriptor.eq(descriptor), budget.taps.eq(taps)]
        # the budgets start once the whole mask table is in (T is its tap count); data writes
        # other than masks wait for them
        with m.If(budget_pending & (masks_left == 0)):
            m.d.comb += budget.start.eq(1)
            m.d.sync += budget_pending.eq(0)
        with m.If(~budget_pending):
            for store, left in ((budget.store_fmap, fmap_left),
                                (budget.store_weights, weights_left),
                                (budget.store_residual, residual_left)):
                with m.If(store):
                    m.d.sync += left.eq(budget.value)
        with m.If(budget.done & ~budget_valid & ~budget_pending & started & busy):
            m.d.sync += budget_valid.eq(1)

        # ---- the command being executed ----
        header = Signal(FRAME_HEADER)
        code, length = header.code, header.length
        nak_reason = Signal(8)
        nak_more = Signal()                # a second NAK byte (the broken descriptor rule) follows
        aborting = Signal()                # the reply being sent answers ABORT
        reply_status = Signal(8)
        reply_length = Signal(16)
        reply_kind = Signal(2)             # what follows the reply header
        KIND_NONE, KIND_NAK, KIND_BLOB, KIND_OUTPUT = range(4)

        # One byte shift register serves both directions, since a command never needs both at
        # once: payload bytes shift in at the top (``gather``: a beat, the descriptor or the
        # READ_OUTPUT maximum ends in its top bytes) and reply data (``blob``: identity, status
        # or counters, loaded in DECODE, a snapshot) shifts out at the bottom. Both move by
        # Cat(shreg[8:], byte in), so each bit is a 2-way choice (load or shift): one LUT (two
        # for the 48 status bits, which have a third source).
        blob_bytes = max(IDENTITY_BYTES, COUNTERS_BYTES, STATUS_BYTES)
        gather_bytes = max(max_beat, self.descriptor_bytes, 2)
        shreg = Signal(8 * max(blob_bytes, gather_bytes))
        shift_in = Signal()                # shreg takes the payload byte at the top this cycle
        m.d.comb += self.reply_payload.payload.eq(shreg[:8])
        with m.If(shift_in):
            m.d.sync += shreg.eq(Cat(shreg[8:], self.command_payload.payload.data))
        blob_left = Signal(range(blob_bytes + 1))

        m.submodules.divider = div = SerialDivider(16, max(max_beat, tm).bit_length())
        gathered = Signal(range(gather_bytes + 1))
        final_beat = Signal()              # the beat in shreg ends the payload (its last byte)
        take = Signal(range(depth + 1))    # min(FIFO level, asked): at most the FIFO depth
        out_shift = Signal(8 * tm)         # the output beat being sent (registered: the FIFO's
        out_byte = Signal(range(tm + 1))   # block RAM output goes to a flip-flop, not the link)

        identity = identity_const(cfg, depth, self.max_payload)

        def reply(status, length_value, kind):
            m.d.sync += [reply_status.eq(status), reply_length.eq(length_value), reply_kind.eq(kind)]
            m.next = "REPLY_HEADER"

        def nak(reason):
            m.d.sync += nak_reason.eq(reason)
            reply(Status.NAK, 1, KIND_NAK)

        if self.check_descriptor:
            m.submodules.descriptor_check = check = DescriptorCheck(cfg)
            m.d.comb += check.descriptor.eq(shreg[len(shreg) - 8 * self.descriptor_bytes:])

        def ack():
            reply(Status.ACK, 0, KIND_NONE)

        def gather_byte():
            """Take the next payload byte into ``shreg`` (shifted in at the top) and count it;
            returns the condition under which a byte is taken this cycle."""
            m.d.comb += [self.command_payload.ready.eq(1), shift_in.eq(self.command_payload.valid)]
            with m.If(self.command_payload.valid):
                m.d.sync += gathered.eq(gathered + 1)
            return self.command_payload.valid

        def data_blob(nbytes):
            # shreg and blob_left were loaded in DECODE
            reply(Status.DATA, nbytes, KIND_BLOB)

        def payload_stream(command):
            return {Command.WRITE_MASKS: eng.mask_in, Command.WRITE_QUANT: eng.quant_in,
                    Command.WRITE_WEIGHTS: eng.weight_in, Command.WRITE_FMAP: eng.fmap_in,
                    Command.WRITE_RESIDUAL: eng.residual_in}[command]

        def left_counter(command):
            return {Command.WRITE_MASKS: masks_left, Command.WRITE_QUANT: quant_left,
                    Command.WRITE_WEIGHTS: weights_left, Command.WRITE_FMAP: fmap_left,
                    Command.WRITE_RESIDUAL: residual_left}[command]

        # each data stream's payload is the top bytes of the shift register
        for command in DATA_COMMANDS:
            port = payload_stream(command)
            m.d.comb += port.payload.eq(shreg[len(shreg) - 8 * beat_sizes[command]:])

        # The budget check compares the quotient with one register: this command's counter,
        # chosen a cycle ahead (one comparator instead of one per stream, and no wide mux in
        # front of it). CHECK_DATA waits >= 17 cycles for the divider; meanwhile only the budget
        # stores write a counter, and budget_valid follows the last of them by two cycles.
        left_of_code = Signal(count_width)
        with m.Switch(code):
            for command in DATA_COMMANDS:
                with m.Case(command):
                    m.d.sync += left_of_code.eq(left_counter(command))
        is_residual = code == Command.WRITE_RESIDUAL
        # wide enough for any quotient (a 16-bit length), so the top bit is a true borrow
        diff_width = max(count_width, len(div.quotient)) + 1
        left_after = Signal(diff_width)          # top bit: the borrow, i.e. beats > left
        window_after = Signal(diff_width)        # likewise for the residual window
        m.d.comb += [left_after.eq(left_of_code - div.quotient),
                     window_after.eq(window - div.quotient)]

        status = Signal(STATUS_LAYOUT)
        counters = Signal(COUNTERS_LAYOUT)
        m.d.comb += [
            status.busy.eq(busy), status.done.eq(done_since_start),
            status.output_beats.eq(out_fifo.level),
            status.residual_window.eq(Mux(window > 0xFFFF, 0xFFFF, window)),
            counters.busy_cycles.eq(eng.busy_cycles), counters.stall_cycles.eq(eng.stall_cycles),
            counters.idle_cycles.eq(eng.idle_cycles), counters.macs.eq(eng.macs),
            counters.link.eq(self.link_counters),
        ]
        status_value = status.as_value()
        counters_value = counters.as_value()
        is_identity = Signal()   # registered with the header: a select shared by 272 bits must
        is_status = Signal()     # not be an 8-bit compare that synthesis copies into each bit
        # above the status bytes the status choice repeats the counters (those bytes are never
        # sent for READ_STATUS): a zero there would make every bit a 3-way choice
        blob_value = Mux(is_identity, identity.as_value(),
                         Mux(is_status, Cat(status_value, counters_value[len(status_value):]),
                             counters_value))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.command.ready.eq(1)
                with m.If(self.command.valid):
                    m.d.sync += [header.eq(self.command.payload),
                                 is_identity.eq(self.command.payload.code == Command.IDENTIFY),
                                 is_status.eq(self.command.payload.code == Command.READ_STATUS)]
                    m.next = "DECODE"

            with m.State("DECODE"):
                # whatever the command, the blob snapshot is taken now (used by the three that
                # answer with one): a single load source per bit
                m.d.sync += [shreg.eq(blob_value),
                             blob_left.eq(Mux(is_status, STATUS_BYTES,
                                              Mux(is_identity, IDENTITY_BYTES, COUNTERS_BYTES)))]
                with m.Switch(code):
                    with m.Case(Command.IDENTIFY):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(IDENTITY_BYTES)
                    with m.Case(Command.READ_STATUS):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(STATUS_BYTES)
                    with m.Case(Command.READ_COUNTERS):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(COUNTERS_BYTES)
                    with m.Case(Command.WRITE_LAYER):
                        with m.If(busy):
                            nak(NakReason.BUSY)
                        with m.Elif(length != self.descriptor_bytes):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += gathered.eq(0)
                            m.next = "RECEIVE_LAYER"
                    with m.Case(Command.START):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Elif(busy):
                            nak(NakReason.BUSY)
                        with m.Elif(~have_descriptor):
                            nak(NakReason.BAD_STATE)
                        with m.Else():
                            m.next = "START_ENGINE"
                    with m.Case(Command.READ_OUTPUT):
                        with m.If(length != 2):
                            nak(NakReason.BAD_LENGTH)
                        with m.Elif(~started):
                            nak(NakReason.BAD_STATE)
                        with m.Else():
                            m.d.sync += gathered.eq(0)
                            m.next = "RECEIVE_MAX"
                    for command in DATA_COMMANDS:
                        with m.Case(command):
                            with m.If(~busy):
                                nak(NakReason.BAD_STATE)
                            if command != Command.WRITE_MASKS:
                                with m.Elif(masks_left != 0):
                                    nak(NakReason.BAD_STATE)
                            with m.Else():
                                m.d.comb += [div.start.eq(1), div.dividend.eq(length),
                                             div.divisor.eq(beat_sizes[command])]
                                m.next = "CHECK_DATA"
                    with m.Case(Command.ABORT):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += aborting.eq(1)
                            ack()
                    with m.Default():
                        nak(NakReason.UNKNOWN_COMMAND)

            with m.State("START_ENGINE"):
                # a state of its own: the engine's busy follows start combinationally, so start
                # must not depend on the busy check made in DECODE
                m.d.comb += [eng.start.eq(1), flush.eq(1)]
                m.d.sync += [
                    started.eq(1), done_since_start.eq(0),
                    masks_left.eq(descriptor.period), quant_left.eq(descriptor.out_channels),
                    weights_left.eq(0), fmap_left.eq(0), residual_left.eq(0),
                    window.eq(depth), taps.eq(0), budget_pending.eq(1), budget_valid.eq(0),
                ]
                ack()

            with m.State("CHECK_DATA"):
                with m.If(div.done & (budget_valid | (code == Command.WRITE_MASKS))):
                    beats = div.quotient
                    with m.If(div.remainder != 0):
                        nak(NakReason.BAD_LENGTH)
                    with m.Elif(left_after[-1] | (is_residual & window_after[-1])):
                        nak(NakReason.OVERFLOW)
                    with m.Elif(beats == 0):
                        ack()
                    with m.Else():
                        with m.If(is_residual):
                            m.d.sync += window.eq(window_after[:count_width])
                        # the wide budgets are charged for the whole write now (nothing can stop
                        # the pushes that follow, so the end state is the same as per beat)
                        with m.Switch(code):
                            for command in WIDE_BUDGETS:
                                with m.Case(command):
                                    m.d.sync += left_counter(command).eq(left_after[:count_width])
                        m.d.sync += gathered.eq(0)
                        m.next = "GATHER"

            with m.State("GATHER"):
                with m.If(gather_byte()):
                    # the payload is a whole number of beats (checked), so the beat holding the
                    # byte marked ``last`` is the final one: no beat counter needed
                    m.d.sync += final_beat.eq(self.command_payload.payload.last)
                    with m.Switch(code):
                        for command in DATA_COMMANDS:
                            with m.Case(command):
                                with m.If(gathered == beat_sizes[command] - 1):
                                    m.next = "PUSH"

            with m.State("PUSH"):
                with m.Switch(code):
                    for command in DATA_COMMANDS:
                        with m.Case(command):
                            port = payload_stream(command)
                            left = left_counter(command)
                            pushed = port.ready
                            if command == Command.WRITE_MASKS and self.check_descriptor:
                                # a mask with no taps never reaches the engine: a table of them
                                # has T = 0, which the address generator divides by
                                no_taps = port.payload[:MASK_BITS] == 0
                                with m.If(no_taps):
                                    nak(NakReason.NO_TAPS)
                                pushed = port.ready & ~no_taps
                                m.d.comb += port.valid.eq(~no_taps)
                            else:
                                m.d.comb += port.valid.eq(1)
                            with m.If(pushed):
                                m.d.sync += gathered.eq(0)
                                if command not in WIDE_BUDGETS:
                                    # masks and quant entries count per beat: the budgets start
                                    # only once the last mask is in the engine (T is complete)
                                    m.d.sync += left.eq(left - 1)
                                if command == Command.WRITE_MASKS:
                                    m.d.sync += taps.eq(taps + sum(
                                        port.payload[k] for k in range(MASK_BITS)))
                                with m.If(final_beat):
                                    ack()
                                with m.Else():
                                    m.next = "GATHER"

            with m.State("RECEIVE_LAYER"):
                with m.If(gather_byte()):
                    with m.If(gathered == self.descriptor_bytes - 1):
                        m.next = "CHECK_LAYER" if self.check_descriptor else "LOAD_LAYER"
            if self.check_descriptor:
                # the check's registered verdict is ready DescriptorCheck.LATENCY cycles on
                for wait in range(DescriptorCheck.LATENCY):
                    with m.State("CHECK_LAYER" if wait == 0 else f"CHECK_LAYER_{wait}"):
                        last = wait == DescriptorCheck.LATENCY - 1
                        m.next = "LOAD_LAYER" if last else f"CHECK_LAYER_{wait + 1}"
            with m.State("LOAD_LAYER"):
                def load():
                    m.d.sync += [descriptor.eq(shreg[len(shreg) - 8 * self.descriptor_bytes:]),
                                 have_descriptor.eq(1)]
                    ack()
                if self.check_descriptor:
                    with m.If(check.ok):
                        load()
                    with m.Else():
                        m.d.sync += [nak_reason.eq(NakReason.BAD_DESCRIPTOR), nak_more.eq(1)]
                        reply(Status.NAK, 2, KIND_NAK)
                else:
                    load()

            with m.State("RECEIVE_MAX"):
                with m.If(gather_byte()):
                    with m.If(gathered == 1):
                        m.next = "DIVIDE_MAX"
            with m.State("DIVIDE_MAX"):
                asked = shreg[len(shreg) - 16:]
                if depth * tm > self.max_payload:
                    # a full FIFO would not fit one answer: ask for at most max_payload bytes
                    asked = Mux(asked > self.max_payload, self.max_payload, asked)
                m.d.comb += [div.start.eq(1), div.dividend.eq(asked), div.divisor.eq(tm)]
                m.next = "CHECK_OUTPUT"
            with m.State("CHECK_OUTPUT"):
                with m.If(div.done):
                    level = out_fifo.level
                    beats = Mux(level < div.quotient, level, div.quotient)
                    m.d.sync += [take.eq(beats), window.eq(window + beats)]
                    reply(Status.DATA, times_constant(beats, tm), KIND_OUTPUT)

            with m.State("REPLY_HEADER"):
                m.d.comb += [self.reply.valid.eq(1), self.reply.payload.status.eq(reply_status),
                             self.reply.payload.length.eq(reply_length)]
                with m.If(self.reply.ready):
                    m.d.comb += self.abort.eq(aborting)
                    m.d.sync += aborting.eq(0)
                    with m.Switch(reply_kind):
                        with m.Case(KIND_NAK):
                            m.next = "SEND_NAK"
                        with m.Case(KIND_BLOB):
                            m.next = "SEND_BLOB"
                        with m.Case(KIND_OUTPUT):
                            with m.If(take == 0):
                                m.next = "IDLE"
                            with m.Else():
                                m.next = "POP_OUTPUT"
                        with m.Default():
                            m.next = "IDLE"

            with m.State("SEND_NAK"):
                m.d.comb += [self.reply_payload.valid.eq(1), self.reply_payload.payload.eq(nak_reason)]
                with m.If(self.reply_payload.ready):
                    if self.check_descriptor:
                        # the descriptor is still in shreg, so the check's verdict still holds
                        m.d.sync += [nak_reason.eq(check.rule), nak_more.eq(0)]
                    with m.If(~nak_more):
                        m.next = "IDLE"

            with m.State("SEND_BLOB"):
                m.d.comb += self.reply_payload.valid.eq(1)
                with m.If(self.reply_payload.ready):
                    m.d.comb += shift_in.eq(1)
                    m.d.sync += blob_left.eq(blob_left - 1)
                    with m.If(blob_left == 1):
                        m.next = "IDLE"

            with m.State("POP_OUTPUT"):
                m.d.comb += out_fifo.r_en.eq(1)
                with m.If(out_fifo.r_rdy):
                    m.d.sync += [out_shift.eq(out_fifo.r_data), out_byte.eq(0)]
                    m.next = "SEND_OUTPUT"
            with m.State("SEND_OUTPUT"):
                m.d.comb += [self.reply_payload.valid.eq(1),
                             self.reply_payload.payload.eq(out_shift[:8])]
                with m.If(self.reply_payload.ready):
                    m.d.sync += [out_shift.eq(out_shift >> 8), out_byte.eq(out_byte + 1)]
                    with m.If(out_byte == tm - 1):
                        m.d.sync += take.eq(take - 1)
                        with m.If(take == 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "POP_OUTPUT"
        return m
