"""Frames: the byte format both ends send, its CRC, and the incremental parser.

Frame layout (both directions; docs/protocol.md has the byte diagrams and worked examples)::

    0xA5 0x5A | seq:u8 | code:u8 | len:u16 LE | payload[len] | crc:u16 LE

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, MSB first, no xorout) over
``seq .. payload``: :data:`CRC_ALGORITHM` is that catalog entry of ``amaranth.lib.crc``, which
the gateware instantiates; the host computes the same value with ``binascii.crc_hqx`` (C code).
Host frames carry a :class:`~.codes.Command` in ``code``; device frames a :class:`~.codes.Status`
(ACK: no payload, NAK: one :class:`~.codes.NakReason` byte, two for ``BAD_DESCRIPTOR``,
DATA: data).
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from typing import Union

from amaranth.lib.crc import catalog

from psconv.errors import PsconvError

from .codes import NakReason, Status

SYNC = b"\xA5\x5A"
HEADER_LEN = 6          # sync(2) seq(1) code(1) len(2)
CRC_LEN = 2
FRAME_OVERHEAD = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 1024      # bytes; the gateware takes it as a parameter (a board may use less)
SEQ_MODULUS = 256

CRC_ALGORITHM = catalog.CRC16_CCITT_FALSE
"""The frame CRC: ``CRC_ALGORITHM(data_width=8).create()`` is the gateware's one-byte-a-cycle
CRC; ``CRC_ALGORITHM(data_width=8).compute(data)`` equals :func:`crc16_ccitt`."""


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (:data:`CRC_ALGORITHM`), by the standard library's C code.

    ``crc16_ccitt(b"123456789") == 0x29B1``. Pass a previous result as ``crc`` to continue.
    """
    return binascii.crc_hqx(data, crc)


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


@dataclass(frozen=True)
class Response:
    """A device answer: ``status`` (ACK / NAK / DATA), ``payload``, and the ``seq`` it answers."""
    seq: int
    status: Status
    payload: bytes = b""

    @property
    def reason(self) -> NakReason | None:
        """The NAK reason, or None for ACK / DATA or a malformed NAK (one reason byte; two for
        ``BAD_DESCRIPTOR``, whose second byte is :attr:`detail`)."""
        if self.status != Status.NAK or not self.payload:
            return None
        try:
            reason = NakReason(self.payload[0])
        except ValueError:
            return None
        expected = 2 if reason == NakReason.BAD_DESCRIPTOR else 1
        return reason if len(self.payload) == expected else None

    @property
    def detail(self) -> int | None:
        """A ``BAD_DESCRIPTOR`` NAK's second byte (the broken rule's index in
        :data:`psconv.protocol.descriptor.DESCRIPTOR_RULES`), else None."""
        return self.payload[1] if self.reason == NakReason.BAD_DESCRIPTOR else None

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
