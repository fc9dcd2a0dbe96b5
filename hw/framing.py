"""Link framing in gateware: CRC-16, frame receiver, frame transmitter, and the link layer.

The frame format is :mod:`psconv.protocol.frame`'s and the exactly-once rules
:mod:`psconv.firmware.link`'s (docs/protocol.md)::

    0xA5 0x5A | seq:u8 | code:u8 | len:u16 LE | payload[len] | crc:u16 LE

with CRC-16/CCITT-FALSE over ``seq .. payload``. Every block moves one byte per cycle at most,
far above any UART rate, and uses ``amaranth.lib.stream`` valid/ready handshakes.

Why the receiver buffers each payload: the CRC arrives after the payload, and a write must not
reach the engine before its CRC has been checked (a corrupted WRITE_WEIGHTS streamed straight
into the weight buffer could not be taken back). So :class:`FrameReceiver` writes the payload
into a ``max_payload``-byte ``Memory`` and releases header and payload only after the CRC
matched; a damaged frame never produces a single payload beat. The cost is one block RAM
(1 KiB by default) and a frame's worth of latency, which the UART dominates anyway.

:class:`LinkLayer` puts receiver, transmitter and the device-side retransmission rules together
(seq dedupe with stored-response replay, NAKs for damaged frames), so the command processor only
ever sees fresh, CRC-valid commands exactly once and only has to answer each of them.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.protocol.codes import NakReason, Status
from psconv.protocol.frame import CRC_ALGORITHM, MAX_PAYLOAD, SYNC
from psconv.protocol.payloads import LINK_COUNTERS

from .block_ram import collision_free_memory, read_port

#: FrameReceiver.frame / LinkLayer.command: the header of a CRC-valid frame. ``code`` is any
#: byte the host sent (an unknown one is NAKed), so it is a plain 8 bits, not a Command.
FRAME_HEADER = data.StructLayout({"seq": 8, "code": 8, "length": 16})
#: One payload byte; ``last`` marks the final byte of the frame's payload.
PAYLOAD_BYTE = data.StructLayout({"data": 8, "last": 1})
#: FrameReceiver.error: a frame that must be NAKed (``reason`` is a NakReason).
FRAME_ERROR = data.StructLayout({"seq": 8, "reason": 8})
#: FrameTransmitter.response: the header of a device frame to send.
RESPONSE_HEADER = data.StructLayout({"seq": 8, "status": Status, "length": 16})
#: LinkLayer.reply: the command processor's answer (the link layer fills in the seq).
REPLY_HEADER = data.StructLayout({"status": Status, "length": 16})


def command_port_members() -> dict:
    """The command side of a processor (what :class:`LinkLayer` drives): the
    streamed and the resident command processors both have it."""
    return {
        "command": In(stream.Signature(FRAME_HEADER)),
        "command_payload": In(stream.Signature(PAYLOAD_BYTE)),
        "reply": Out(stream.Signature(REPLY_HEADER)),
        "reply_payload": Out(stream.Signature(8)),
    }


DEFAULT_TIMEOUT_CYCLES = 240_000   # 5 ms at 48 MHz: far above USB-serial gaps inside a frame


class CRC16(wiring.Component):
    """The frame CRC (:data:`psconv.protocol.frame.CRC_ALGORITHM`), one byte per cycle.

    Ports: ``data`` In(8), ``valid`` In(1), ``clear`` In(1), ``crc`` Out(16).
    ``crc`` is registered: a byte with ``valid`` is included from the next cycle on. ``clear``
    restarts from 0xFFFF; callers never raise it with ``valid``. Feeding ``b"123456789"``
    gives 0x29B1. The XOR network is ``amaranth.lib.crc``'s; this only names the ports.
    """

    def __init__(self):
        super().__init__({"data": In(8), "valid": In(1), "clear": In(1), "crc": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.processor = processor = CRC_ALGORITHM(data_width=8).create()
        m.d.comb += [processor.start.eq(self.clear), processor.valid.eq(self.valid),
                     processor.data.eq(self.data), self.crc.eq(processor.crc)]
        return m


def check_max_payload(max_payload: int) -> int:
    """``max_payload`` if it is a valid frame payload limit (1..65535 bytes), else an error."""
    if not isinstance(max_payload, int) or not 1 <= max_payload <= 0xFFFF:
        raise PsconvError(f"max_payload {max_payload!r} must be an integer in 1..65535 "
                          f"(the protocol uses {MAX_PAYLOAD})")
    return max_payload


def _stream_from_memory(m, port, depth, start, length, out_valid, out_ready, out_data, out_last):
    """Drive a read ``port`` to stream ``mem[0:length]`` after a ``start`` pulse, 1 byte/cycle.

    ``length`` (>= 1) must hold from ``start`` until the last byte is fetched. The synchronous
    read port has one cycle of latency, so a byte is fetched whenever the output register is
    empty or being taken; ``port.data`` holds while ``port.en`` is low, so it is the output
    payload itself. The first beat is valid 2 cycles after ``start``. The end is found by
    comparing the incremented address with ``length`` (no second, down-counting register).
    """
    addr = Signal(range(depth + 1))
    next_addr = Signal(range(depth + 1))
    running = Signal()
    valid = Signal()
    last = Signal()
    fetch = Signal()
    m.d.comb += [
        next_addr.eq(addr + 1),
        fetch.eq(running & (~valid | out_ready)),
        port.addr.eq(addr),
        port.en.eq(fetch),
        out_valid.eq(valid),
        out_data.eq(port.data),
        out_last.eq(last),
    ]
    with m.If(valid & out_ready):
        m.d.sync += valid.eq(0)
    with m.If(fetch):
        m.d.sync += [addr.eq(next_addr), valid.eq(1), last.eq(next_addr == length)]
        with m.If(next_addr == length):
            m.d.sync += running.eq(0)
    with m.If(start):
        m.d.sync += [addr.eq(0), running.eq(1), valid.eq(0)]


class FrameReceiver(wiring.Component):
    """Byte stream in -> CRC-checked frames out (header, then payload), or an error to NAK.

    Ports:

    * ``rx_data`` In(stream.Signature(8)): bytes from the UART.
    * ``frame`` Out(stream.Signature(FRAME_HEADER)): ``{seq, code, length}`` of a frame whose
      CRC matched; valid the cycle after its last CRC byte.
    * ``payload`` Out(stream.Signature(PAYLOAD_BYTE)): that frame's ``length`` bytes, ``last``
      on the final one, starting 2 cycles after ``frame`` is taken, then up to one per cycle.
      Nothing for a zero-length frame. The consumer must take every beat.
    * ``error`` Out(stream.Signature(FRAME_ERROR)): ``{seq, reason}`` for a frame to NAK:
      BAD_CRC (CRC mismatch), BAD_LENGTH (``len > max_payload``, flagged right after the length
      field) or TIMEOUT (no byte for ``timeout_cycles`` after its seq byte arrived). ``seq`` is
      the frame's unverified seq byte.

    It hunts for ``A5 5A`` (``A5 A5 5A`` works; anything else is skipped); a frame stopping
    before its seq byte is dropped silently. After an error it hunts from the next byte (it never
    rescans the failed frame: firmware's ``FrameParser(rescan=False)`` is the same machine).
    While a header, payload or error waits to be taken, ``rx_data.ready`` is low: the host is
    stop-and-wait, so only retransmissions or noise can arrive meanwhile.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES):
        self.max_payload = check_max_payload(max_payload)
        if not isinstance(timeout_cycles, int) or timeout_cycles < 2:
            raise PsconvError(f"timeout_cycles {timeout_cycles!r} must be an integer >= 2 "
                              f"(clock cycles without a byte before a frame is dropped)")
        self.timeout_cycles = timeout_cycles
        #: the CRC unit, an attribute so that properties (:mod:`.framing_properties`) can
        #: watch what it is fed
        self.crc = CRC16()
        super().__init__({
            "rx_data": In(stream.Signature(8)),
            "frame": Out(stream.Signature(FRAME_HEADER)),
            "payload": Out(stream.Signature(PAYLOAD_BYTE)),
            "error": Out(stream.Signature(FRAME_ERROR)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.max_payload
        # written only while a frame comes in, read only while a checked one drains: a read
        # never meets a write (psconv.hw.block_ram)
        m.submodules.buffer = buffer = collision_free_memory(shape=8, depth=depth)
        wr = buffer.write_port()
        rd = read_port(m, buffer, "buffer_read")
        m.submodules.crc = crc = self.crc

        byte = self.rx_data.payload
        got = Signal()
        m.d.comb += got.eq(self.rx_data.valid & self.rx_data.ready)

        seq = Signal(8)
        code = Signal(8)
        # at most max_payload once checked (the low byte is kept whole for the check)
        length = Signal(max(8, depth.bit_length()))
        count = Signal(range(depth + 1))
        crc_lo = Signal(8)
        reason = Signal(8)
        idle = Signal(range(self.timeout_cycles))
        timed_out = Signal()
        start_drain = Signal()

        m.d.comb += [
            self.frame.payload.seq.eq(seq),
            self.frame.payload.code.eq(code),
            self.frame.payload.length.eq(length),
            self.error.payload.seq.eq(seq),
            self.error.payload.reason.eq(reason),
            crc.data.eq(byte),
            wr.addr.eq(count),
            wr.data.eq(byte),
            timed_out.eq(idle == self.timeout_cycles - 1),
        ]
        _stream_from_memory(m, rd, depth, start_drain, length, self.payload.valid,
                            self.payload.ready, self.payload.payload.data, self.payload.payload.last)

        # inter-byte timeout: counts cycles without a byte while inside a frame
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(self.rx_data.ready & ~timed_out):
            m.d.sync += idle.eq(idle + 1)

        def fail(why):
            m.d.sync += reason.eq(why)
            m.next = "ERROR"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.clear.eq(1)]
                m.d.sync += idle.eq(0)
                with m.If(got & (byte == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.clear.eq(1)]
                with m.If(got):
                    with m.If(byte == SYNC[1]):
                        m.next = "SEQ"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "HUNT"
                with m.Elif(timed_out):
                    m.next = "HUNT"
            with m.State("SEQ"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += seq.eq(byte)
                    m.next = "CODE"
                with m.Elif(timed_out):
                    m.next = "HUNT"       # no seq yet: nothing to NAK
            with m.State("CODE"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += code.eq(byte)
                    m.next = "LEN_LO"
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("LEN_LO"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += length[:8].eq(byte)
                    m.next = "LEN_HI"
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("LEN_HI"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.valid.eq(got)]
                with m.If(got):
                    m.d.sync += [length[8:].eq(byte), count.eq(0)]
                    with m.If(Cat(length[:8], byte) > self.max_payload):
                        fail(NakReason.BAD_LENGTH)
                    with m.Elif(Cat(length[:8], byte) == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("PAYLOAD"):
                m.d.comb += [self.rx_data.ready.eq(1), crc.valid.eq(got), wr.en.eq(got)]
                with m.If(got):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == length):
                        m.next = "CRC_LO"
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("CRC_LO"):
                m.d.comb += self.rx_data.ready.eq(1)
                with m.If(got):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("CRC_HI"):
                m.d.comb += self.rx_data.ready.eq(1)
                with m.If(got):
                    with m.If(crc.crc == Cat(crc_lo, byte)):
                        m.next = "HEADER"
                    with m.Else():
                        fail(NakReason.BAD_CRC)
                with m.Elif(timed_out):
                    fail(NakReason.TIMEOUT)
            with m.State("HEADER"):
                m.d.comb += self.frame.valid.eq(1)
                with m.If(self.frame.ready):
                    m.d.comb += start_drain.eq(length != 0)
                    with m.If(length == 0):
                        m.next = "HUNT"
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.payload.valid & self.payload.ready & self.payload.payload.last):
                    m.next = "HUNT"
            with m.State("ERROR"):
                m.d.comb += self.error.valid.eq(1)
                with m.If(self.error.ready):
                    m.next = "HUNT"
        return m


class FrameTransmitter(wiring.Component):
    """Response header + payload bytes in -> framed bytes out, CRC appended.

    Ports:

    * ``response`` In(stream.Signature(RESPONSE_HEADER)): ``{seq, status, length}``; taken
      only when idle.
    * ``payload`` In(stream.Signature(8)): exactly ``length`` bytes, taken after the header's
      six bytes have gone out. ``length`` must be <= ``max_payload``.
    * ``tx_data`` Out(stream.Signature(8)): ``A5 5A seq status len_lo len_hi payload crc_lo
      crc_hi``, the first byte valid the cycle after ``response`` was taken, then up to one byte
      per cycle; payload bytes pass through combinationally (``tx_data.valid`` follows
      ``payload.valid``).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = check_max_payload(max_payload)
        super().__init__({
            "response": In(stream.Signature(RESPONSE_HEADER)),
            "payload": In(stream.Signature(8)),
            "tx_data": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16()
        seq = Signal(8)
        status = Signal(Status)
        # bytes still to send: the length field, then counted down in PAYLOAD (no byte counter)
        left = Signal(max(8, self.max_payload.bit_length()))
        sent = Signal()
        m.d.comb += [
            sent.eq(self.tx_data.valid & self.tx_data.ready),
            crc.data.eq(self.tx_data.payload),
        ]

        def emit(value, next_state, *, checked=True):
            m.d.comb += [self.tx_data.valid.eq(1), self.tx_data.payload.eq(value)]
            if checked:
                m.d.comb += crc.valid.eq(sent)
            with m.If(sent):
                m.next = next_state

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.response.ready.eq(1), crc.clear.eq(1)]
                with m.If(self.response.valid):
                    m.d.sync += [seq.eq(self.response.payload.seq),
                                 status.eq(self.response.payload.status),
                                 left.eq(self.response.payload.length)]
                    m.next = "SYNC0"
            with m.State("SYNC0"):
                emit(SYNC[0], "SYNC1", checked=False)
            with m.State("SYNC1"):
                emit(SYNC[1], "SEQ", checked=False)
            with m.State("SEQ"):
                emit(seq, "STATUS")
            with m.State("STATUS"):
                emit(status, "LEN_LO")
            with m.State("LEN_LO"):
                emit(left[:8], "LEN_HI")
            with m.State("LEN_HI"):
                emit(left[8:], "CRC_LO")
                with m.If(sent & (left != 0)):
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [
                    self.tx_data.valid.eq(self.payload.valid),
                    self.tx_data.payload.eq(self.payload.payload),
                    self.payload.ready.eq(self.tx_data.ready),
                    crc.valid.eq(sent),
                ]
                with m.If(sent):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                emit(crc.crc[:8], "CRC_HI", checked=False)
            with m.State("CRC_HI"):
                emit(crc.crc[8:], "IDLE", checked=False)
        return m


class LinkLayer(wiring.Component):
    """Receiver + transmitter + the device-side rules: the command processor's whole link.

    Ports toward the UART: ``rx_data`` In(stream.Signature(8)), ``tx_data``
    Out(stream.Signature(8)). Toward the command processor:

    * ``command`` Out(stream.Signature(FRAME_HEADER)): a fresh CRC-valid frame
      ``{seq, code, length}``; each host command arrives here exactly once.
    * ``command_payload`` Out(stream.Signature(PAYLOAD_BYTE)): its ``length`` bytes (``last``
      on the final one), available after ``command`` is taken.
    * ``reply`` In(stream.Signature(REPLY_HEADER)): the answer ``{status, length}`` (ACK,
      DATA, or NAK with a 1-byte reason payload), one per command, taken after ``command``.
    * ``reply_payload`` In(stream.Signature(8)): exactly ``length`` bytes after ``reply``.
    * ``counters`` Out(LINK_COUNTERS).

    Rules it implements (docs/protocol.md): a damaged frame (BAD_CRC, BAD_LENGTH, TIMEOUT from
    the receiver) is NAKed with its seq and never reaches the processor. The processor's reply
    to a command is sent with that command's seq and stored (header and payload, in a
    ``max_payload`` memory); a later frame with the stored seq is answered with the stored
    reply and not passed on. The processor may answer before it has read the whole command
    payload; any bytes it leaves are discarded after the reply. One command is in flight at a
    time: frames arriving meanwhile wait in the receiver.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES):
        self.max_payload = check_max_payload(max_payload)
        self.timeout_cycles = timeout_cycles
        #: its parts, attributes so that properties (:mod:`.framing_properties`) can watch
        #: their handshakes
        self.receiver = FrameReceiver(self.max_payload, timeout_cycles)
        self.transmitter = FrameTransmitter(self.max_payload)
        super().__init__({
            "rx_data": In(stream.Signature(8)),
            "tx_data": Out(stream.Signature(8)),
            "command": Out(stream.Signature(FRAME_HEADER)),
            "command_payload": Out(stream.Signature(PAYLOAD_BYTE)),
            "reply": In(stream.Signature(REPLY_HEADER)),
            "reply_payload": In(stream.Signature(8)),
            "counters": Out(LINK_COUNTERS),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.max_payload
        m.submodules.receiver = rx = self.receiver
        m.submodules.transmitter = tx = self.transmitter
        # written only while a fresh command's reply goes out, read only while a stored one is
        # replayed (never both): a read never meets a write (psconv.hw.block_ram)
        m.submodules.replay_buffer = replay_buffer = collision_free_memory(shape=8, depth=depth)
        wr = replay_buffer.write_port()
        rd = read_port(m, replay_buffer, "replay_read")

        wiring.connect(m, wiring.flipped(self.rx_data), rx.rx_data)
        wiring.connect(m, wiring.flipped(self.tx_data), tx.tx_data)

        # the stored answer: its seq is set when a fresh command is taken (nothing replays
        # while that command executes, and it is always answered), so it is also the seq of
        # the reply being sent; a reply is at most max_payload bytes long
        stored_valid = Signal()
        stored_seq = Signal(8)
        stored_status = Signal(Status)
        stored_length = Signal(range(depth + 1))
        nak = Signal(FRAME_ERROR)
        reply_count = Signal(range(depth + 1))
        payload_open = Signal()     # the current command still has payload beats in the receiver
        replay_start = Signal()
        replay_valid = Signal()
        replay_data = Signal(8)
        replay_last = Signal()
        counters = self.counters

        _stream_from_memory(m, rd, depth, replay_start, stored_length, replay_valid,
                            tx.payload.ready, replay_data, replay_last)
        m.d.comb += [
            self.command.payload.eq(rx.frame.payload),
            self.command_payload.payload.eq(rx.payload.payload),
            wr.addr.eq(reply_count),
            wr.data.eq(self.reply_payload.payload),
        ]

        def forward_command_payload():
            m.d.comb += [self.command_payload.valid.eq(rx.payload.valid),
                         rx.payload.ready.eq(self.command_payload.ready)]
            with m.If(rx.payload.valid & rx.payload.ready & rx.payload.payload.last):
                m.d.sync += payload_open.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx.error.valid):
                    m.d.comb += rx.error.ready.eq(1)
                    m.d.sync += nak.eq(rx.error.payload)
                    with m.Switch(rx.error.payload.reason):
                        with m.Case(NakReason.BAD_CRC):
                            m.d.sync += counters.crc_errors.eq(counters.crc_errors + 1)
                        with m.Case(NakReason.BAD_LENGTH):
                            m.d.sync += counters.length_errors.eq(counters.length_errors + 1)
                        with m.Default():
                            m.d.sync += counters.timeouts.eq(counters.timeouts + 1)
                    m.next = "NAK_HEADER"
                with m.Elif(rx.frame.valid & stored_valid & (rx.frame.payload.seq == stored_seq)):
                    m.d.comb += rx.frame.ready.eq(1)
                    m.d.sync += counters.replays.eq(counters.replays + 1)
                    with m.If(rx.frame.payload.length != 0):
                        m.next = "DISCARD_DUPLICATE"
                    with m.Else():
                        m.next = "REPLAY_HEADER"
                with m.Elif(rx.frame.valid):
                    m.d.comb += [self.command.valid.eq(1), rx.frame.ready.eq(self.command.ready)]
                    with m.If(self.command.ready):
                        m.d.sync += [stored_valid.eq(1), stored_seq.eq(rx.frame.payload.seq),
                                     payload_open.eq(rx.frame.payload.length != 0),
                                     counters.commands.eq(counters.commands + 1)]
                        m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.If(payload_open):
                    forward_command_payload()
                m.d.comb += [
                    tx.response.valid.eq(self.reply.valid),
                    tx.response.payload.seq.eq(stored_seq),
                    tx.response.payload.status.eq(self.reply.payload.status),
                    tx.response.payload.length.eq(self.reply.payload.length),
                    self.reply.ready.eq(tx.response.ready),
                ]
                with m.If(self.reply.valid & self.reply.ready):
                    m.d.sync += [stored_status.eq(self.reply.payload.status),
                                 stored_length.eq(self.reply.payload.length),
                                 reply_count.eq(0)]
                    with m.If(self.reply.payload.length != 0):
                        m.next = "REPLY_PAYLOAD"
                    with m.Else():
                        m.next = "FINISH"
            with m.State("REPLY_PAYLOAD"):
                with m.If(payload_open):
                    forward_command_payload()
                m.d.comb += [
                    tx.payload.valid.eq(self.reply_payload.valid),
                    tx.payload.payload.eq(self.reply_payload.payload),
                    self.reply_payload.ready.eq(tx.payload.ready),
                    wr.en.eq(self.reply_payload.valid & self.reply_payload.ready),
                ]
                with m.If(self.reply_payload.valid & self.reply_payload.ready):
                    m.d.sync += reply_count.eq(reply_count + 1)
                    with m.If(reply_count + 1 == stored_length):
                        m.next = "FINISH"
            with m.State("FINISH"):
                # drop what the processor did not read of the command payload
                with m.If(payload_open):
                    m.d.comb += rx.payload.ready.eq(1)
                    with m.If(rx.payload.valid & rx.payload.payload.last):
                        m.d.sync += payload_open.eq(0)
                        m.next = "IDLE"
                with m.Else():
                    m.next = "IDLE"
            with m.State("DISCARD_DUPLICATE"):
                m.d.comb += rx.payload.ready.eq(1)
                with m.If(rx.payload.valid & rx.payload.payload.last):
                    m.next = "REPLAY_HEADER"
            with m.State("REPLAY_HEADER"):
                m.d.comb += [tx.response.valid.eq(1), tx.response.payload.seq.eq(stored_seq),
                             tx.response.payload.status.eq(stored_status),
                             tx.response.payload.length.eq(stored_length)]
                with m.If(tx.response.ready):
                    m.d.comb += replay_start.eq(stored_length != 0)
                    with m.If(stored_length != 0):
                        m.next = "REPLAY_PAYLOAD"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("REPLAY_PAYLOAD"):
                m.d.comb += [tx.payload.valid.eq(replay_valid), tx.payload.payload.eq(replay_data)]
                with m.If(replay_valid & tx.payload.ready & replay_last):
                    m.next = "IDLE"
            with m.State("NAK_HEADER"):
                m.d.comb += [tx.response.valid.eq(1),
                             tx.response.payload.seq.eq(nak.seq),
                             tx.response.payload.status.eq(Status.NAK),
                             tx.response.payload.length.eq(1)]
                with m.If(tx.response.ready):
                    m.next = "NAK_PAYLOAD"
            with m.State("NAK_PAYLOAD"):
                m.d.comb += [tx.payload.valid.eq(1), tx.payload.payload.eq(nak.reason)]
                with m.If(tx.payload.ready):
                    m.next = "IDLE"
        return m
