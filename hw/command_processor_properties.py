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
  buffer.

A separate module from the other properties because the command processor changes often.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring

from psconv.protocol.payloads import smallest_max_payload

from .address_generator_properties import formal_config
from .command_processor import CommandProcessor

FORMAL_OUTPUT_FIFO_DEPTH = 2


def command_processor_harness(config=None) -> Module:
    """The command processor with every input free and its reply assertions."""
    cfg = config or formal_config()
    max_payload = smallest_max_payload(cfg)
    m = Module()
    m.submodules.cp = cp = CommandProcessor(cfg, output_fifo_depth=FORMAL_OUTPUT_FIFO_DEPTH,
                                            max_payload=max_payload)
    m.d.comb += Assume(~ResetSignal())
    for path, member, value in cp.signature.flatten(cp):
        if member.flow == wiring.In:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(len(value)))

    command_taken = cp.command.valid & cp.command.ready
    reply_taken = cp.reply.valid & cp.reply.ready
    byte_taken = cp.reply_payload.valid & cp.reply_payload.ready
    owed = Signal()            # a command taken and not answered
    bytes_left = Signal(16)    # payload bytes of the last reply not sent yet
    with m.If(command_taken):
        m.d.comb += Assert(~owed & (bytes_left == 0),
                           "a command taken before the previous one was fully answered")
        m.d.sync += owed.eq(1)
    with m.If(reply_taken):
        m.d.comb += Assert(owed, "a reply without a command, or a second one")
        m.d.comb += Assert(cp.reply.payload.length <= max_payload,
                           "a reply longer than the link's reply buffer")
        m.d.sync += [owed.eq(0), bytes_left.eq(cp.reply.payload.length)]
    with m.If(cp.reply_payload.valid):
        m.d.comb += Assert(~owed & (bytes_left != 0), "a reply byte beyond the reply's length")
    with m.If(byte_taken):
        m.d.sync += bytes_left.eq(bytes_left - 1)
    return m
