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

A separate module from the other properties because the command processor changes often.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring

from psconv.protocol.codes import Command
from psconv.protocol.payloads import DATA_COMMANDS, smallest_max_payload

from .address_generator_properties import formal_config
from .command_processor import CommandProcessor

FORMAL_OUTPUT_FIFO_DEPTH = 2


def _processor(m, cfg):
    """The processor with every input free; returns it and its ``max_payload``."""
    max_payload = smallest_max_payload(cfg)
    m.submodules.cp = cp = CommandProcessor(cfg, output_fifo_depth=FORMAL_OUTPUT_FIFO_DEPTH,
                                            max_payload=max_payload)
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
