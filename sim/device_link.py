"""The device end of the link in software: the reference the gateware link layer mirrors.

:class:`DeviceLink` applies the same rules as :class:`psconv.hw.framing.LinkLayer` (see
:mod:`psconv.firmware.link` for the exactly-once rules) to bytes in Python, so in-process test
devices answer exactly as the board does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from psconv.protocol.codes import Status
from psconv.protocol.frame import MAX_PAYLOAD, FrameError, FrameParser, ParseEvent, Response, encode_frame


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
