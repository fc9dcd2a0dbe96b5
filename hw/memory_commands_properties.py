"""Formal properties of :class:`~psconv.hw.memory_commands.MemoryCommandProcessor` (docs/formal.md).

Each harness returns an elaboratable without ports for :func:`psconv.rtl_gen.formal.check`: a
``MemoryCommandProcessor`` of :data:`FORMAL_MEMORY_BYTES` bytes and the smallest
``max_payload`` its status reply fits in, with the program runner cut out (``running``,
``done``, the counters, ``engine_busy``, ``bad_rule``, ``input_free``, ``input_address``,
``input_bytes``: free) and every other input free too (any command header, any payload byte
values and timing, any memory handshake), apart from the contracts its neighbours keep:

* the link layer: a header's ``length`` is at most ``max_payload`` (it refuses longer frames);
  a command's payload is its ``length`` bytes, ``last`` on the final one, none outside a
  command (the link drains what a processor leaves when it answers early);
* the memory: one read word per load taken, none without one (``read_data.valid`` only while a
  load is outstanding);
* the runner: ``running`` rises only the cycle after an ``infer`` pulse (it starts on nothing
  else) or, more than the runner does (so that a run is reached within a short BMC, without a
  model loaded and checked first), the cycle after the processor was idle; ``input_free`` only while ``running``, and once it is set it stays set with the same
  ``input_address`` and ``input_bytes`` until ``running`` falls (the header's region, and
  ``steps_done`` only grows). ``running`` may fall at any time (done, abort).

:func:`memory_bounds_harness` asserts that every write request has an address below
``memory_bytes``, and that while ``running`` the processor issues no load and a store only with
``input_free`` inside ``input_address .. input_address + input_bytes`` (with the payload bytes
back to back, as the link releases a buffered frame).

:func:`memory_replies_harness` asserts the link contract (as the streamed command processor's
harness does): exactly one reply header per command taken, before the next command; a reply's
payload exactly ``length <= max_payload`` bytes; back in idle the cycle after an answer is
complete.

:func:`memory_prompt_reply_harness` adds the link's promise that a frame's payload bytes are
there and asserts a reply header within :data:`PROMPT_REPLY_CYCLES` of every command but an
in-range ``WRITE_MEM``, ``CRC_MEM`` or ``CHECK_MODEL`` (those wait for the payload or the
memory). :func:`memory_data_reply_harness` bounds every command, those included, per payload
byte and per byte read (:func:`memory_reply_bound`), when the memory takes a request every cycle
and answers each load the next.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Cat, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring

from psconv.protocol.codes import Command
from psconv.protocol.memory import RUN_STATUS_LAYOUT
from psconv.protocol.payloads import layout_bytes

from .command_processor_properties import assert_one_reply_per_command
from .memory_commands import MemoryCommandProcessor

FORMAL_MEMORY_BYTES = 64
FORMAL_MAX_PAYLOAD = layout_bytes(RUN_STATUS_LAYOUT)   # the status reply fits, nothing less


def _processor(m, memory_bytes=FORMAL_MEMORY_BYTES, max_payload=FORMAL_MAX_PAYLOAD):
    """The processor with every input free but for its neighbours' contracts."""
    m.submodules.mc = mc = MemoryCommandProcessor(memory_bytes, max_payload)
    m.d.comb += Assume(~ResetSignal())
    for path, member, value in mc.signature.flatten(mc):
        if member.flow == wiring.In:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(len(value)))

    # the link: length <= max_payload; exactly length payload bytes, last on the final one
    payload_left = Signal(16)
    with m.If(mc.command.valid):
        m.d.comb += Assume(mc.command.payload.length <= max_payload)
    with m.If(mc.command.valid & mc.command.ready):
        m.d.sync += payload_left.eq(mc.command.payload.length)
    with m.Elif(mc.command_payload.valid & mc.command_payload.ready):
        m.d.sync += payload_left.eq(payload_left - 1)
    with m.If(mc.command_payload.valid):
        m.d.comb += Assume((payload_left != 0)
                           & (mc.command_payload.payload.last == (payload_left == 1)))

    # the memory: a word only for a load outstanding
    request, read_data = mc.memory.request, mc.memory.read_data
    loads = Signal(8)
    load_taken = request.valid & request.ready & ~request.payload.write
    word_taken = read_data.valid & read_data.ready
    m.d.sync += loads.eq(loads + load_taken - word_taken)
    m.d.comb += Assume(~read_data.valid | (loads != 0))

    # the runner: starts only after infer (or, more freely, after an idle cycle); the input
    # region fixed once free, until it stops
    was_running, was_free, infer_pulsed, was_idle = Signal(), Signal(), Signal(), Signal()
    was_address, was_bytes = Signal(32), Signal(32)
    m.d.sync += [was_running.eq(mc.running), was_free.eq(mc.input_free),
                 infer_pulsed.eq(mc.infer), was_idle.eq(mc.command.ready),
                 was_address.eq(mc.input_address), was_bytes.eq(mc.input_bytes)]
    m.d.comb += [Assume(~mc.running | was_running | infer_pulsed | was_idle),
                 Assume(~mc.input_free | mc.running)]
    with m.If(was_free & mc.running):
        m.d.comb += Assume(mc.input_free & (mc.input_address == was_address)
                           & (mc.input_bytes == was_bytes))
    return mc, payload_left


def memory_bounds_harness(memory_bytes=FORMAL_MEMORY_BYTES) -> Module:
    """No store outside the memory; while the runner runs, no load and a store only inside
    the freed input region."""
    m = Module()
    mc, payload_left = _processor(m, memory_bytes)
    # values that only ever reach reply bytes or the CRC (not an address, not a decision: a
    # CHECK_MODEL still matches or not as the payload's CRC field says) are fixed, to keep the
    # solver's work small
    m.d.comb += Assume((mc.memory.read_data.payload == 0) & (mc.cycles == 0)
                       & (mc.memory_reads == 0) & (mc.memory_writes == 0)
                       & (mc.steps_done == 0) & (mc.bad_rule == 0))
    # the payload bytes back to back, as the link releases a buffered frame (half the time)
    m.d.comb += Assume(mc.command_payload.valid == (payload_left != 0))
    request = mc.memory.request
    address = request.payload.address
    with m.If(request.valid & request.payload.write):
        m.d.comb += Assert(address < memory_bytes, "a store outside the memory")
    with m.If(request.valid & mc.running):
        m.d.comb += Assert(request.payload.write, "a load while the runner runs")
        m.d.comb += Assert(mc.input_free, "a store before the runner freed the input region")
        m.d.comb += Assert((address >= mc.input_address)
                           & (address < mc.input_address + mc.input_bytes),
                           "a store outside the input region while the runner runs")
    return m


def memory_replies_harness() -> Module:
    """Exactly one reply per command, of its length's bytes; idle again after answering."""
    m = Module()
    mc, _ = _processor(m)
    assert_one_reply_per_command(m, mc, mc.max_payload)
    return m


#: Cycles from taking a command to offering its reply header, for every command but an
#: in-range ``WRITE_MEM``, ``CRC_MEM`` or ``CHECK_MODEL``: decode, at most the 12 bytes of
#: ``CHECK_MODEL``'s payload, the region check, the answer.
PROMPT_REPLY_CYCLES = 15
CAPTURE_CYCLES = 12


def memory_prompt_reply_harness(memory_bytes=FORMAL_MEMORY_BYTES) -> Module:
    """A reply header within :data:`PROMPT_REPLY_CYCLES` of every command but the in-range
    ``WRITE_MEM``, ``CRC_MEM`` and ``CHECK_MODEL`` (``RUN_STATUS``, ``INFER`` and its refusals,
    ``READ_MEM``'s header or refusal, a wrong length, an unknown code, an out-of-range region),
    whatever the runner and the memory do, when the link has the payload bytes ready (it
    releases a frame only once all of it is buffered)."""
    m = Module()
    mc, payload_left = _processor(m, memory_bytes)
    m.d.comb += Assume(mc.command_payload.valid == (payload_left != 0))

    waited = Signal(range(PROMPT_REPLY_CYCLES + 2))
    # the first 8 payload bytes: a region's address and length (little-endian), taken within
    # CAPTURE_CYCLES of the command (as they are: decode, then a byte a cycle), so that what
    # decides the bound never changes once it could matter (for the induction step)
    region_address, region_length = Signal(32), Signal(32)
    taken = Signal(4)
    code, length = Signal(8), Signal(16)
    byte = mc.command_payload.payload.data
    with m.If(mc.command.valid & mc.command.ready):
        m.d.sync += [taken.eq(0), code.eq(mc.command.payload.code),
                     length.eq(mc.command.payload.length)]
    with m.Elif(mc.command_payload.valid & mc.command_payload.ready & (taken < 8)
                & (waited < CAPTURE_CYCLES)):
        m.d.sync += taken.eq(taken + 1)
        with m.If(taken < 4):
            m.d.sync += region_address.eq(Cat(region_address[8:], byte))
        with m.Else():
            m.d.sync += region_length.eq(Cat(region_length[8:], byte))
    # WRITE_MEM: address, then length - 4 data bytes; CRC_MEM, CHECK_MODEL: address, length
    write_inside = (length > 4) & (region_address + (length - 4) <= memory_bytes)
    region_inside = region_address + region_length <= memory_bytes
    exempt = Signal()
    m.d.comb += exempt.eq(
        ((code == Command.WRITE_MEM) & write_inside)
        | ((code == Command.CRC_MEM) & (length == 8) & region_inside)
        | ((code == Command.CHECK_MODEL) & (length == 12) & region_inside))

    pending = Signal()
    with m.If(mc.command.valid & mc.command.ready):
        m.d.sync += [waited.eq(0), pending.eq(1)]
    with m.Elif(mc.reply.valid):
        m.d.sync += pending.eq(0)
    with m.Elif(pending & (waited <= PROMPT_REPLY_CYCLES)):
        m.d.sync += waited.eq(waited + 1)
    m.d.comb += Assert(~pending | exempt | (waited <= PROMPT_REPLY_CYCLES),
                       f"no reply within {PROMPT_REPLY_CYCLES} cycles")
    return m


#: Reply-time bound of every memory command, in per-gap windows between what the harness sees
#: (:func:`memory_data_reply_harness`): the first payload byte (or the reply) within
#: ``MEMORY_FIRST_CYCLES`` of taking the command; each further payload byte within
#: ``MEMORY_BYTE_CYCLES`` of the one before (a ``WRITE_MEM`` stores one a cycle, after a cycle
#: to check its region); the first read word of a ``CRC_MEM`` / ``CHECK_MODEL`` (or the reply)
#: within ``MEMORY_AFTER_CYCLES`` of the last payload byte (the region check and the first
#: load); each further word, and the reply after the last, within ``MEMORY_WORD_CYCLES`` of the
#: word before. Together (:func:`memory_reply_bound`): a command of N payload bytes that reads R
#: bytes of memory is answered within 2N + 5 + 3R cycles. Each window is tight (one less fails).
MEMORY_FIRST_CYCLES = 2
MEMORY_BYTE_CYCLES = 2
MEMORY_AFTER_CYCLES = 5
MEMORY_WORD_CYCLES = 3


def memory_reply_bound(length: int, read_bytes: int = 0) -> int:
    """The cycles :func:`memory_data_reply_harness` proves for a command of ``length`` payload
    bytes that reads ``read_bytes`` of memory (0 but for ``CRC_MEM`` and ``CHECK_MODEL``)."""
    if not length:
        return MEMORY_FIRST_CYCLES
    return (MEMORY_FIRST_CYCLES + MEMORY_BYTE_CYCLES * (length - 1) + MEMORY_AFTER_CYCLES
            + MEMORY_WORD_CYCLES * read_bytes)


def memory_data_reply_harness(memory_bytes=FORMAL_MEMORY_BYTES) -> Module:
    """The reply-time bound of every memory command (:func:`memory_reply_bound`), the in-range
    ``WRITE_MEM``, ``CRC_MEM`` and ``CHECK_MODEL`` included, whatever the runner does, when the
    link has the payload bytes ready (it releases a frame only once it is buffered) and the
    memory takes a request every cycle and answers each load the next cycle.

    ``allowed`` is the cycle (counted from the command) by which the next payload byte, read
    word or the reply is due, moved on at each; ``waited <= allowed`` is the assertion, and
    ``allowed`` never exceeds the bound for what was taken so far. Checked gap by gap, a short
    BMC meets every kind of gap of every command, not only whole short ones."""
    m = Module()
    mc, payload_left = _processor(m, memory_bytes)
    m.d.comb += Assume(mc.command_payload.valid == (payload_left != 0))
    request, read_data = mc.memory.request, mc.memory.read_data
    loads = Signal(8)
    m.d.sync += loads.eq(loads + (request.valid & request.ready & ~request.payload.write)
                         - (read_data.valid & read_data.ready))
    m.d.comb += Assume(request.ready & (read_data.valid == (loads != 0)))

    command_taken = mc.command.valid & mc.command.ready
    byte_taken = mc.command_payload.valid & mc.command_payload.ready
    word_taken = read_data.valid & read_data.ready
    top = memory_reply_bound(mc.max_payload, memory_bytes)
    waited, allowed = Signal(range(top + 2)), Signal(range(top + 2))
    length, taken_bytes, words = Signal(16), Signal(16), Signal(range(memory_bytes + 2))
    pending = Signal()
    with m.If(command_taken):
        m.d.sync += [waited.eq(0), allowed.eq(MEMORY_FIRST_CYCLES), pending.eq(1),
                     length.eq(mc.command.payload.length), taken_bytes.eq(0), words.eq(0)]
    with m.Elif(mc.reply.valid):
        m.d.sync += pending.eq(0)
    with m.Elif(pending):
        with m.If(waited <= allowed):
            m.d.sync += waited.eq(waited + 1)
        with m.If(byte_taken):
            m.d.sync += [taken_bytes.eq(taken_bytes + 1),
                         allowed.eq(waited + Mux(payload_left == 1, MEMORY_AFTER_CYCLES,
                                                 MEMORY_BYTE_CYCLES))]
        with m.Elif(word_taken & (words <= memory_bytes)):
            m.d.sync += [words.eq(words + 1), allowed.eq(waited + MEMORY_WORD_CYCLES)]
    all_in = (taken_bytes != 0) & (payload_left == 0)
    bound_so_far = (MEMORY_FIRST_CYCLES
                    + MEMORY_BYTE_CYCLES * Mux(all_in, taken_bytes - 1, taken_bytes)
                    + Mux(all_in, MEMORY_AFTER_CYCLES + MEMORY_WORD_CYCLES * words, 0))
    with m.If(pending):
        m.d.comb += [Assert(waited <= allowed, "a memory command overran its bound"),
                     Assert(allowed <= bound_so_far),
                     Assert(words <= memory_bytes, "more words read than the memory holds")]
    return m
