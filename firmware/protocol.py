"""The host <-> board link protocol: frames, CRC, parser, and both ends of the retransmission rules.

Frame layout (both directions; docs/protocol.md has the byte diagrams and worked examples)::

    0xA5 0x5A | seq:u8 | code:u8 | len:u16 LE | payload[len] | crc:u16 LE

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no xorout) over
``seq .. payload``. Host frames carry a :class:`Command` in ``code``; device frames a
:class:`Status` (ACK: no payload, NAK: one :class:`NakReason` byte, DATA: data).

Exactly-once rules (the link is stop-and-wait over a FIFO byte pipe such as a UART):

* The device answers every well-formed host frame exactly once with the same ``seq``.
* The device remembers the ``seq`` of the last frame its command processor answered and that
  answer (ACK, DATA, or a command-level NAK). A CRC-valid frame with that same ``seq`` is not
  executed again: the stored answer is re-sent. Link-level NAKs (BAD_CRC, TIMEOUT, oversize
  BAD_LENGTH) answer frames whose header cannot be trusted and are never stored.
* The host uses a new ``seq`` (``+1 mod 256``) for every new command and re-sends the *same*
  bytes on timeout, on NAK BAD_CRC / TIMEOUT / BAD_LENGTH, and on a damaged response. Responses
  with another ``seq`` are stale and dropped.

This module is pure Python with no I/O: :class:`LinkClient` talks to a
:class:`psconv.firmware.transport.Transport`; :class:`DeviceLink` is the device side in software
(the reference the gateware ``hw/framing.py:LinkLayer`` mirrors), used by in-process test
devices.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

from psconv.errors import PsconvError

SYNC = b"\xA5\x5A"
HEADER_LEN = 6          # sync(2) seq(1) code(1) len(2)
CRC_LEN = 2
FRAME_OVERHEAD = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 1024      # bytes; the gateware takes it as a parameter (hw/framing.py)
SEQ_MODULUS = 256


class Command(enum.IntEnum):
    """Host -> device ``code``. The gateware command processor implements these."""
    IDENTIFY = 0x01        # -> DATA: engine identity blob
    WRITE_LAYER = 0x02     # layer registers
    WRITE_MASKS = 0x03     # P-entry mask table
    WRITE_QUANT = 0x04     # bias / requantization tables
    WRITE_WEIGHTS = 0x05   # packed nonzero weights
    WRITE_FMAP = 0x06      # input feature map
    WRITE_RESIDUAL = 0x07  # residual feature map
    START = 0x08           # start the layer
    READ_OUTPUT = 0x09     # payload u16 LE max bytes -> DATA with 0..max output bytes
    READ_COUNTERS = 0x0A   # -> DATA: performance counters
    READ_STATUS = 0x0B     # -> DATA: busy / done flags


class Status(enum.IntEnum):
    """Device -> host ``code``."""
    ACK = 0x00   # no payload
    NAK = 0x01   # payload: one NakReason byte
    DATA = 0x02  # payload: data


class NakReason(enum.IntEnum):
    """The one payload byte of a NAK."""
    BAD_CRC = 0x01          # CRC mismatch (length field was plausible)
    BAD_LENGTH = 0x02       # len > MAX_PAYLOAD, or wrong for the command
    UNKNOWN_COMMAND = 0x03
    BUSY = 0x04
    BAD_STATE = 0x05        # e.g. READ_OUTPUT before START
    OVERFLOW = 0x06
    TIMEOUT = 0x07          # frame truncated: inter-byte timeout on the device


# NAK reasons that mean "your frame was damaged on the way": the host re-sends the same frame.
# BAD_LENGTH is here because the length field is not protected until the CRC arrives: a
# corrupted length above MAX_PAYLOAD is NAKed BAD_LENGTH before any CRC can be checked, and the
# host never sends such a frame itself. A genuine command-level BAD_LENGTH is stored by the
# device and replayed, so it repeats on every attempt and surfaces as LinkNak after the retries.
RETRYABLE_NAKS = frozenset({NakReason.BAD_CRC, NakReason.TIMEOUT, NakReason.BAD_LENGTH})


def _name(enum_type, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return f"0x{value:02X}"


# --- CRC ---------------------------------------------------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``: poly 0x1021, init 0xFFFF, MSB first, no xorout.

    ``crc16_ccitt(b"123456789") == 0x29B1``. Pass a previous result as ``crc`` to continue.
    """
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


# --- frames ------------------------------------------------------------------------------------

def encode_frame(seq: int, code: int, payload: bytes = b"", *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """The bytes of one frame. Refuses a seq/code outside 0..255 or a payload over ``max_payload``."""
    if not 0 <= seq < SEQ_MODULUS:
        raise PsconvError(f"frame seq {seq} is out of range: allowed 0..255")
    if not 0 <= code <= 0xFF:
        raise PsconvError(f"frame code {code} is out of range: allowed 0..255")
    payload = bytes(payload)
    if len(payload) > max_payload:
        raise PsconvError(f"frame payload is {len(payload)} bytes: at most {max_payload} allowed "
                          f"(MAX_PAYLOAD); split the data into several frames")
    body = struct.pack("<BBH", seq, code, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16_ccitt(body))


@dataclass(frozen=True)
class Frame:
    """A CRC-valid frame. ``code`` is a Command (host->device) or Status (device->host)."""
    seq: int
    code: int
    payload: bytes = b""


@dataclass(frozen=True)
class FrameError:
    """A frame the parser saw start (sync + seq) but could not accept.

    ``reason`` is BAD_CRC, BAD_LENGTH (len > max_payload) or TIMEOUT (truncated). ``seq`` is
    the unverified seq byte of its header (what a device puts in its NAK).
    """
    reason: NakReason
    seq: int


ParseEvent = Union[Frame, FrameError]


class FrameParser:
    """Incremental frame parser: ``feed(bytes)`` returns the frames and errors completed so far.

    Bytes before a sync are garbage and skipped (counted in ``garbage_bytes``). A header whose
    length exceeds ``max_payload`` gives ``FrameError(BAD_LENGTH)``; a CRC mismatch
    ``FrameError(BAD_CRC)``. ``expire()`` is called by the owner when the line has been idle
    longer than its inter-byte timeout: a partial frame gives ``FrameError(TIMEOUT)`` if its seq
    byte arrived, else nothing.

    After an error the parser resumes hunting for ``A5 5A``: with ``rescan=True`` (host side)
    from just after the failed frame's sync, so a good frame swallowed by a damaged one is still
    found; with ``rescan=False`` from after the bytes it consumed, exactly like the gateware
    FrameReceiver (which has no way back), so the two can be compared event for event.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, *, rescan: bool = True):
        self.max_payload = max_payload
        self.rescan = rescan
        self._buf = bytearray()
        self.garbage_bytes = 0

    @property
    def mid_frame(self) -> bool:
        """True while a frame has started (sync seen) but not finished."""
        return bool(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[ParseEvent]:
        self._buf += data
        return self._drain()

    def expire(self) -> list[ParseEvent]:
        """The line went idle: drop a partial frame (TIMEOUT if its seq byte arrived).

        With ``rescan`` the bytes after the dropped frame's sync are searched again, so a
        complete frame that arrived inside a truncated one is still returned.
        """
        buf = self._buf
        events: list[ParseEvent] = []
        while buf:
            if len(buf) >= 3:
                events.append(FrameError(NakReason.TIMEOUT, buf[2]))
            if not self.rescan:
                buf.clear()
                break
            # no more bytes are coming: look for frames inside the one that stopped short
            del buf[:2]
            events += self._drain()
        return events

    def _drain(self) -> list[ParseEvent]:
        buf = self._buf
        events: list[ParseEvent] = []
        while buf:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1] == SYNC[0] else 0   # a lone 0xA5 may be half a sync
                self.garbage_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if start:
                self.garbage_bytes += start
                del buf[:start]
            if len(buf) < HEADER_LEN:
                break
            seq, code, length = struct.unpack_from("<BBH", buf, 2)
            if length > self.max_payload:
                events.append(FrameError(NakReason.BAD_LENGTH, seq))
                del buf[:2 if self.rescan else HEADER_LEN]
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(buf) < total:
                break
            body = bytes(buf[2:HEADER_LEN + length])
            (crc,) = struct.unpack_from("<H", buf, HEADER_LEN + length)
            if crc16_ccitt(body) == crc:
                events.append(Frame(seq, code, body[4:]))
                del buf[:total]
            else:
                events.append(FrameError(NakReason.BAD_CRC, seq))
                del buf[:2 if self.rescan else total]
        return events


# --- responses ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """A device answer: ``status`` (ACK / NAK / DATA), ``payload``, and the ``seq`` it answers."""
    seq: int
    status: Status
    payload: bytes = b""

    @property
    def reason(self) -> NakReason | None:
        """The NAK reason, or None for ACK / DATA."""
        if self.status != Status.NAK or len(self.payload) != 1:
            return None
        try:
            return NakReason(self.payload[0])
        except ValueError:
            return None

    def encode(self) -> bytes:
        return encode_frame(self.seq, self.status, self.payload)

    @classmethod
    def ack(cls, seq: int = 0) -> "Response":
        return cls(seq, Status.ACK)

    @classmethod
    def nak(cls, reason: NakReason, seq: int = 0) -> "Response":
        return cls(seq, Status.NAK, bytes([reason]))

    @classmethod
    def data(cls, payload: bytes, seq: int = 0) -> "Response":
        return cls(seq, Status.DATA, bytes(payload))


def read_output_payload(max_bytes: int) -> bytes:
    """READ_OUTPUT's payload: the u16 LE maximum number of output bytes to return."""
    if not 0 <= max_bytes <= MAX_PAYLOAD:
        raise PsconvError(f"READ_OUTPUT max_bytes {max_bytes} is out of range: allowed 0..{MAX_PAYLOAD}")
    return struct.pack("<H", max_bytes)


# --- errors ------------------------------------------------------------------------------------

class LinkError(PsconvError):
    """The link to the board failed; the message names the command, seq and what happened."""


class LinkTimeout(LinkError):
    """No valid response after all attempts. The command may or may not have been executed."""

    def __init__(self, message: str, *, command: int, seq: int, attempts: int):
        super().__init__(message)
        self.command, self.seq, self.attempts = command, seq, attempts


class LinkNak(LinkError):
    """The device refused the command (``reason``); it was not executed."""

    def __init__(self, message: str, *, command: int, seq: int, attempts: int, reason: int):
        super().__init__(message)
        self.command, self.seq, self.attempts, self.reason = command, seq, attempts, reason


class LinkProtocolError(LinkError):
    """A CRC-valid response that breaks the protocol (unknown status, malformed NAK)."""


# --- host side ---------------------------------------------------------------------------------

@dataclass
class LinkStats:
    """What the host saw: requests, frames sent, and every fault it detected and survived."""
    requests: int = 0
    frames_sent: int = 0
    retransmissions: int = 0
    timeouts: int = 0                       # attempts that ended with no usable response
    naks: Counter = field(default_factory=Counter)            # NakReason name -> count
    damaged_responses: Counter = field(default_factory=Counter)  # BAD_CRC/BAD_LENGTH/TIMEOUT
    stale_responses: int = 0                # valid frames with another seq (duplicates, late)
    garbage_bytes: int = 0

    @property
    def faults_detected(self) -> int:
        return (self.timeouts + sum(self.naks.values()) + sum(self.damaged_responses.values())
                + self.stale_responses)

    def summary(self) -> str:
        naks = ", ".join(f"{k}={v}" for k, v in sorted(self.naks.items())) or "none"
        damaged = ", ".join(f"{k}={v}" for k, v in sorted(self.damaged_responses.items())) or "none"
        return (f"{self.requests} requests, {self.frames_sent} frames sent, "
                f"{self.retransmissions} retransmissions, {self.timeouts} timeouts, NAKs: {naks}, "
                f"damaged responses: {damaged}, {self.stale_responses} stale responses, "
                f"{self.garbage_bytes} garbage bytes")


class LinkClient:
    """Host end of the link: one command in flight, retransmission, duplicate/stale filtering.

    ``request(code, payload)`` sends a frame with a fresh seq and returns the device's ACK or
    DATA :class:`Response`. It re-sends the *same* frame (same seq) when ``timeout_s`` passes
    without a response, on NAK BAD_CRC / TIMEOUT / BAD_LENGTH, or when a damaged response
    arrives, at most ``retries`` times, then raises :class:`LinkTimeout` (or :class:`LinkNak`
    with the last NAK). Any other NAK raises :class:`LinkNak` at once: the device did not
    execute the command. Responses with another seq are stale and dropped.

    Session start: the device may still hold the previous session's last seq, so before the
    first request the client sends one READ_STATUS (no side effects) and discards its answer,
    which may be a replay; from then on the device's record holds a seq this client chose.

    The line is considered idle (a partial response is dropped as truncated) when no byte
    arrives for ``inter_byte_timeout_s``.
    """

    def __init__(self, transport, timeout_s: float = 0.5, retries: int = 5, *,
                 inter_byte_timeout_s: float | None = None, first_seq: int = 0,
                 synchronize: bool = True):
        if timeout_s <= 0:
            raise PsconvError(f"link timeout_s {timeout_s} must be > 0 seconds")
        if retries < 0:
            raise PsconvError(f"link retries {retries} must be >= 0")
        self.transport = transport
        self.timeout_s = timeout_s
        self.retries = retries
        self.inter_byte_timeout_s = (inter_byte_timeout_s if inter_byte_timeout_s is not None
                                     else timeout_s / 4)
        self.stats = LinkStats()
        self._seq = first_seq % SEQ_MODULUS
        self._parser = FrameParser(rescan=True)
        self._pending: deque[ParseEvent] = deque()
        self._synchronized = not synchronize

    @property
    def next_seq(self) -> int:
        return self._seq

    def synchronize(self) -> None:
        """Send the session-start READ_STATUS and discard its (possibly replayed) answer."""
        self._synchronized = True
        try:
            self._exchange(Command.READ_STATUS, b"")
        except LinkNak:
            pass

    def request(self, code: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Response:
        """Send one command and return its ACK/DATA response (see the class docstring)."""
        if not self._synchronized:
            self.synchronize()
        self.stats.requests += 1
        return self._exchange(code, payload, timeout_s)

    def _exchange(self, code: int, payload: bytes, timeout_s: float | None = None) -> Response:
        seq = self._seq
        frame = encode_frame(seq, code, payload)
        self._seq = (seq + 1) % SEQ_MODULUS
        # whatever was parsed but not used belongs to earlier exchanges (this seq is not sent yet)
        self.stats.stale_responses += len(self._pending)
        self._pending.clear()
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        command = _name(Command, code)
        clock = self.transport.clock
        attempts = 0
        last_nak: Response | None = None
        history: list[str] = []
        while attempts <= self.retries:
            if attempts:
                self.stats.retransmissions += 1
            attempts += 1
            self.transport.write(frame)
            self.stats.frames_sent += 1
            outcome = self._await(seq, clock.now() + timeout_s, clock)
            if isinstance(outcome, Response):
                if outcome.status in (Status.ACK, Status.DATA):
                    return outcome
                reason = outcome.reason
                if reason is None:
                    raise LinkProtocolError(
                        f"{command} (seq {seq}): device sent a malformed NAK "
                        f"(payload {outcome.payload.hex() or 'empty'}; expected one reason byte)")
                self.stats.naks[reason.name] += 1
                if reason not in RETRYABLE_NAKS:
                    raise LinkNak(
                        f"{command} (seq {seq}) refused by the device: NAK {reason.name} "
                        f"(0x{reason:02X}) after {attempts} attempt(s); the command was not executed",
                        command=code, seq=seq, attempts=attempts, reason=reason)
                last_nak = outcome
                history.append(f"NAK {reason.name}")
            else:
                history.append(outcome)
        if last_nak is not None and all(h == f"NAK {last_nak.reason.name}" for h in history):
            reason = last_nak.reason
            raise LinkNak(
                f"{command} (seq {seq}): device answered NAK {reason.name} (0x{reason:02X}) "
                f"to all {attempts} attempts; the command was not executed",
                command=code, seq=seq, attempts=attempts, reason=reason)
        raise LinkTimeout(
            f"{command} (seq {seq}): no valid response after {attempts} attempts "
            f"({', '.join(history)}; timeout {timeout_s:g} s each). Is the board connected, "
            f"configured and running at the right baud rate? The command may or may not have "
            f"been executed", command=code, seq=seq, attempts=attempts)

    def _await(self, seq: int, deadline: float, clock) -> Response | str:
        """Read until the response to ``seq``, a reason to re-send (returned as a string), or the deadline."""
        while True:
            while self._pending:
                event = self._pending.popleft()
                if isinstance(event, FrameError):
                    self.stats.damaged_responses[event.reason.name] += 1
                    return f"damaged response ({event.reason.name})"
                if event.seq != seq:
                    self.stats.stale_responses += 1
                    continue
                try:
                    status = Status(event.code)
                except ValueError:
                    raise LinkProtocolError(
                        f"seq {seq}: device answered with unknown status 0x{event.code:02X} "
                        f"(allowed: {', '.join(s.name for s in Status)})") from None
                return Response(event.seq, status, event.payload)
            remaining = deadline - clock.now()
            if remaining <= 0:
                self.stats.timeouts += 1
                return "timeout"
            data = self.transport.read(4096, min(remaining, self.inter_byte_timeout_s))
            garbage_before = self._parser.garbage_bytes
            events = self._parser.feed(data) if data else self._parser.expire()
            self.stats.garbage_bytes += self._parser.garbage_bytes - garbage_before
            self._pending.extend(events)


# --- device side (software) --------------------------------------------------------------------

Handler = Callable[[int, bytes], Response]


@dataclass
class DeviceLinkStats:
    frames: int = 0
    executed: int = 0
    replays: int = 0
    link_naks: Counter = field(default_factory=Counter)   # BAD_CRC / BAD_LENGTH / TIMEOUT


class DeviceLink:
    """Device end of the link in software: the same rules as the gateware LinkLayer.

    Bytes come in with ``receive(data, now)``; the return value is the bytes to send back.
    ``poll(now)`` must be called as time passes so a truncated frame is NAKed TIMEOUT once the
    line has been idle ``inter_byte_timeout_s``. The parser never rescans (like the gateware).

    ``handler(code, payload) -> Response`` is the command processor: it runs once per fresh
    CRC-valid frame; its answer (seq filled in here) is stored with the seq and re-sent, without
    calling the handler, for a frame repeating that seq.
    """

    def __init__(self, handler: Handler, *, max_payload: int = MAX_PAYLOAD,
                 inter_byte_timeout_s: float = 0.005):
        self.handler = handler
        self.inter_byte_timeout_s = inter_byte_timeout_s
        self.parser = FrameParser(max_payload, rescan=False)
        self.stats = DeviceLinkStats()
        self._last_rx = 0.0
        self._stored: tuple[int, bytes] | None = None   # (seq, encoded response)

    def next_deadline(self) -> float | None:
        """When ``poll`` would next expire a partial frame, or None."""
        return self._last_rx + self.inter_byte_timeout_s if self.parser.mid_frame else None

    def poll(self, now: float) -> bytes:
        if self.parser.mid_frame and now >= self._last_rx + self.inter_byte_timeout_s:
            return self._answer(self.parser.expire())
        return b""

    def receive(self, data: bytes, now: float) -> bytes:
        out = self.poll(now)
        self._last_rx = now
        return out + self._answer(self.parser.feed(data))

    def _answer(self, events: Iterable[ParseEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if isinstance(event, FrameError):
                self.stats.link_naks[event.reason.name] += 1
                out += encode_frame(event.seq, Status.NAK, bytes([event.reason]))
                continue
            self.stats.frames += 1
            if self._stored is not None and self._stored[0] == event.seq:
                self.stats.replays += 1
                out += self._stored[1]
                continue
            self.stats.executed += 1
            response = self.handler(event.code, event.payload)
            encoded = encode_frame(event.seq, response.status, response.payload)
            self._stored = (event.seq, encoded)
            out += encoded
        return bytes(out)
