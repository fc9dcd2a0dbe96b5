"""Formal properties of :class:`~psconv.hw.command_processor.CommandProcessor` (docs/formal.md).

:func:`command_processor_harness` returns an elaboratable without ports for
:func:`psconv.rtl_gen.formal.check`: a ``CommandProcessor`` of a tiny engine
(:func:`psconv.hw.address_generator_properties.formal_config`) with a 2-beat output FIFO, the
engine cut out (every engine port the processor reads is free: any busy/done, any output beat,
any stream handshake) and every link-side input free too (any command header and any payload
byte sequence, not only what the link layer would deliver). Its assertions are the processor's
side of the link contract:

* every command taken is answered by exactly one reply header before the next command is
  taken (the processor is back in its idle state, ready for a command, only after answering);
  no reply without a command;
* a reply's payload is exactly ``length`` bytes, sent before the next command is taken, and
  ``length`` is at most ``max_payload``: nothing is written past the end of the link's reply
  buffer;
* the cycle after an answer is complete the processor is back in idle (``command.ready``).

:func:`prompt_reply_harness` adds the link's promise that a frame's payload bytes are there
(it releases a frame only once it is buffered) and asserts a reply header within
:data:`PROMPT_REPLY_CYCLES` of every command that neither moves engine data nor reads outputs.

:func:`data_reply_harness` bounds the others, per payload byte (:func:`data_reply_bound`), with
the link's contract and the engine's (it takes each beat; ``busy`` rises only with ``start``
and holds while a data write waits) assumed and the layer budgets free (:class:`FreeLayerBudget`).

A separate module from the other properties because the command processor changes often.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring

from psconv.protocol.codes import Command
from psconv.protocol.payloads import DATA_COMMANDS, smallest_max_payload

from .address_generator_properties import formal_config
from .command_processor import CommandProcessor
from .layer_budget import LayerBudget

FORMAL_OUTPUT_FIFO_DEPTH = 2


def _processor(m, cfg, budget=None):
    """The processor with every input free (``budget``: its layer budgets, default the real
    ones); returns it and its ``max_payload``."""
    max_payload = smallest_max_payload(cfg)
    m.submodules.cp = cp = CommandProcessor(cfg, output_fifo_depth=FORMAL_OUTPUT_FIFO_DEPTH,
                                            max_payload=max_payload, budget=budget)
    m.d.comb += Assume(~ResetSignal())
    for path, member, value in cp.signature.flatten(cp):
        if member.flow == wiring.In:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(len(value)))
    return cp, max_payload


def assert_one_reply_per_command(m, processor, max_payload: int) -> None:
    """Add to ``m`` the reply contract of a command processor (its ``command``, ``reply`` and
    ``reply_payload`` streams): every command taken gets exactly one reply header before the next
    is taken, no reply without a command, a reply's payload is exactly ``length`` bytes and
    ``length <= max_payload``, and the cycle after an answer is complete it takes commands
    again. Shared by the streamed and the resident (memory) command processors' proofs."""
    command_taken = processor.command.valid & processor.command.ready
    reply_taken = processor.reply.valid & processor.reply.ready
    byte_taken = processor.reply_payload.valid & processor.reply_payload.ready
    owed = Signal()            # a command taken and not answered
    bytes_left = Signal(16)    # payload bytes of the last reply not sent yet
    with m.If(command_taken):
        m.d.comb += Assert(~owed & (bytes_left == 0),
                           "a command taken before the previous one was fully answered")
        m.d.sync += owed.eq(1)
    with m.If(reply_taken):
        m.d.comb += Assert(owed, "a reply without a command, or a second one")
        m.d.comb += Assert(processor.reply.payload.length <= max_payload,
                           "a reply longer than the link's reply buffer")
        m.d.sync += [owed.eq(0), bytes_left.eq(processor.reply.payload.length)]
    with m.If(processor.reply_payload.valid):
        m.d.comb += Assert(~owed & (bytes_left != 0), "a reply byte beyond the reply's length")
    with m.If(byte_taken):
        m.d.sync += bytes_left.eq(bytes_left - 1)
    # back to idle: the cycle after a command's answer is complete, a command is taken
    answered = Signal()
    m.d.sync += answered.eq((reply_taken & (processor.reply.payload.length == 0))
                            | (byte_taken & (bytes_left == 1)))
    with m.If(answered):
        m.d.comb += Assert(processor.command.ready, "not back in idle after answering")


def command_processor_harness(config=None) -> Module:
    """The command processor with every input free and its reply assertions."""
    cfg = config or formal_config()
    m = Module()
    cp, max_payload = _processor(m, cfg)

    assert_one_reply_per_command(m, cp, max_payload)
    return m


#: Cycles from taking a command to offering its reply header, for every command that neither
#: moves engine data nor reads the output FIFO (those wait for the engine, the layer budgets or
#: the divider): the descriptor's bytes, at most, then decode and answer.
PROMPT_REPLY_CYCLES = 8


def prompt_reply_harness(config=None) -> Module:
    """A reply within :data:`PROMPT_REPLY_CYCLES` for every command but the data writes and
    ``READ_OUTPUT``, whatever the engine does, when the link has the payload bytes ready (it
    releases a frame only once all of it is buffered)."""
    cfg = config or formal_config()
    m = Module()
    cp, _ = _processor(m, cfg)
    m.d.comb += Assume(cp.command_payload.valid)
    waited = Signal(range(PROMPT_REPLY_CYCLES + 2))
    prompt = Signal()
    with m.If(cp.command.valid & cp.command.ready):
        m.d.sync += [waited.eq(0),
                     prompt.eq(~cp.command.payload.code.matches(*DATA_COMMANDS,
                                                                Command.READ_OUTPUT))]
    with m.Elif(cp.reply.valid):
        m.d.sync += prompt.eq(0)
    with m.Elif(prompt & (waited <= PROMPT_REPLY_CYCLES)):
        m.d.sync += waited.eq(waited + 1)
    m.d.comb += Assert(~prompt | (waited <= PROMPT_REPLY_CYCLES),
                       f"no reply within {PROMPT_REPLY_CYCLES} cycles")
    return m



#: Reply-time bound of a data write or ``READ_OUTPUT``, not counting the cycles the layer budgets
#: run (once per layer, after the last mask), proved as per-gap bounds between what the harness
#: sees (:func:`data_reply_harness`): a data write's first payload byte (or its reply) within
#: ``FIRST_BYTE_CYCLES`` of taking it (decode and the serial divider), ``READ_OUTPUT``'s within
#: ``OUTPUT_FIRST_CYCLES``; each further byte within ``BYTE_CYCLES`` of the one before (a byte
#: in, and a cycle to push each finished beat); the reply within ``DATA_LAST_CYCLES`` of a data
#: write's last byte (its last beat pushed) and ``OUTPUT_LAST_CYCLES`` of ``READ_OUTPUT``'s (the
#: divider). Together (:func:`data_reply_bound`): a data write of N bytes is answered within
#: 2N + 18 cycles, ``READ_OUTPUT`` within 22. Each window is tight (one less fails).
FIRST_BYTE_CYCLES = 18
OUTPUT_FIRST_CYCLES = 1
BYTE_CYCLES = 2
DATA_LAST_CYCLES = 2
OUTPUT_LAST_CYCLES = 19


def data_reply_bound(output: bool, length: int) -> int:
    """The cycles :func:`data_reply_harness` proves for a data write (``output`` False) or
    ``READ_OUTPUT`` of ``length`` payload bytes (a refusal comes sooner)."""
    first = OUTPUT_FIRST_CYCLES if output else FIRST_BYTE_CYCLES
    last = OUTPUT_LAST_CYCLES if output else DATA_LAST_CYCLES
    return first + BYTE_CYCLES * (length - 1) + last if length else first


class FreeLayerBudget(LayerBudget):
    """A :class:`LayerBudget` whose outputs are free (any value, any timing, any order): the data
    reply harness runs the processor with it, so what is proved holds whatever budgets are
    computed and however long they take, and a BMC reaches data writes with the budgets in a few
    cycles instead of the ~100 the real one takes."""

    def elaborate(self, platform):
        m = Module()
        for path, member, value in self.signature.flatten(self):
            if member.flow == wiring.Out:
                value = Value.cast(value)
                m.d.comb += value.eq(AnySeq(len(value)))
        return m


def data_reply_harness(config=None) -> Module:
    """The reply-time bound of every data write and ``READ_OUTPUT`` (:func:`data_reply_bound`),
    not counting the cycles the layer budgets run, when the link keeps its contract (``length <=
    max_payload``, exactly ``length`` payload bytes, ``last`` on the final one, there as soon as
    asked for: it releases a frame only once it is buffered) and the engine keeps its own: it
    takes every beat it is offered, ``busy`` rises only with ``start`` and does not fall while a
    data write waits (an engine finishes only after every beat of its layer, and the processor
    takes no beat past the layer's budgets).

    ``allowed`` is the cycle (counted from the command) by which the next byte or the reply is
    due, moved on at each byte; ``waited <= allowed`` is the assertion, and ``allowed`` never
    exceeds the bound for the bytes taken so far. Checked gap by gap, a BMC of a few dozen
    cycles meets every kind of gap of every command (the budgets are :class:`FreeLayerBudget`,
    so a data write with its budgets in is reached within ~35 cycles of reset), not only
    whole short commands."""
    cfg = config or formal_config()
    m = Module()
    cp, max_payload = _processor(m, cfg, budget=FreeLayerBudget(cfg))
    eng = cp.engine
    command_taken = cp.command.valid & cp.command.ready
    byte_taken = cp.command_payload.valid & cp.command_payload.ready
    # the link
    payload_left, length = Signal(16), Signal(16)
    with m.If(cp.command.valid):
        m.d.comb += Assume(cp.command.payload.length <= max_payload)
    with m.If(command_taken):
        m.d.sync += [payload_left.eq(cp.command.payload.length),
                     length.eq(cp.command.payload.length)]
    with m.Elif(byte_taken):
        m.d.sync += payload_left.eq(payload_left - 1)
    m.d.comb += Assume((cp.command_payload.valid == (payload_left != 0))
                       & (cp.command_payload.payload.last == (payload_left == 1)))
    m.d.comb += Assert((length <= max_payload) & (payload_left <= length))
    # the engine
    for stream_ in (eng.mask_in, eng.quant_in, eng.weight_in, eng.fmap_in, eng.residual_in):
        m.d.comb += Assume(stream_.ready)
    data_pending, was_busy = Signal(), Signal()
    m.d.sync += was_busy.eq(eng.busy)
    m.d.comb += Assume(~eng.busy | was_busy | eng.start)
    with m.If(data_pending):
        m.d.comb += Assume(~was_busy | eng.busy)

    top = data_reply_bound(False, max_payload) + OUTPUT_LAST_CYCLES
    waited, allowed = Signal(range(top + 2)), Signal(range(top + 2))
    budget_running = Signal()      # the budgets between their start and their done
    with m.If(cp.budget.start):
        m.d.sync += budget_running.eq(1)
    with m.Elif(cp.budget.done):
        m.d.sync += budget_running.eq(0)
    pending, output = Signal(), Signal()
    counting = pending & ~budget_running
    with m.If(command_taken):
        code = cp.command.payload.code
        m.d.sync += [waited.eq(0),
                     allowed.eq(Mux(code == Command.READ_OUTPUT, OUTPUT_FIRST_CYCLES,
                                    FIRST_BYTE_CYCLES)),
                     data_pending.eq(code.matches(*DATA_COMMANDS)),
                     output.eq(code == Command.READ_OUTPUT),
                     pending.eq(code.matches(*DATA_COMMANDS, Command.READ_OUTPUT))]
    with m.Elif(cp.reply.valid):
        m.d.sync += [pending.eq(0), data_pending.eq(0)]
    with m.Elif(pending):
        with m.If(counting & (waited <= allowed)):
            m.d.sync += waited.eq(waited + 1)
        with m.If(byte_taken):
            last_gap = Mux(output, OUTPUT_LAST_CYCLES, DATA_LAST_CYCLES)
            m.d.sync += allowed.eq(waited + Mux(payload_left == 1, last_gap, BYTE_CYCLES))
    taken = length - payload_left
    # the due cycle after ``taken`` bytes: first + BYTE * taken, or with all N in,
    # first + BYTE * (N - 1) + last
    all_in = (taken != 0) & (payload_left == 0)
    bound_so_far = (Mux(output, OUTPUT_FIRST_CYCLES, FIRST_BYTE_CYCLES)
                    + BYTE_CYCLES * Mux(all_in, taken - 1, taken)
                    + Mux(all_in, Mux(output, OUTPUT_LAST_CYCLES, DATA_LAST_CYCLES), 0))
    with m.If(pending):
        m.d.comb += [Assert(waited <= allowed, "a data write or READ_OUTPUT overran its bound"),
                     Assert(allowed <= bound_so_far)]
    return m
