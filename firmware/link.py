"""Host end of the link: one command in flight, retransmission, duplicate and stale filtering.

Exactly-once rules (the link is stop-and-wait over a FIFO byte pipe such as a UART):

* The device answers every well-formed host frame exactly once with the same ``seq``.
* The device remembers the ``seq`` of the last frame its command processor answered and that
  answer (ACK, DATA, or a command-level NAK). A CRC-valid frame with that same ``seq`` is not
  executed again: the stored answer is re-sent. Link-level NAKs (BAD_CRC, TIMEOUT, oversize
  BAD_LENGTH) answer frames whose header cannot be trusted and are never stored.
* The host uses a new ``seq`` (``+1 mod 256``) for every new command and re-sends the *same*
  bytes on timeout, on NAK BAD_CRC / TIMEOUT / BAD_LENGTH, and on a damaged response. Responses
  with another ``seq`` are stale and dropped.

Pure Python with no I/O of its own: :class:`LinkClient` talks to a
:class:`psconv.firmware.transport.Transport`. The frame format is :mod:`psconv.protocol.frame`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from psconv.errors import PsconvError
from psconv.protocol.codes import RETRYABLE_NAKS, Command, Status, code_name
from psconv.protocol.frame import SEQ_MODULUS, FrameError, FrameParser, ParseEvent, Response, encode_frame


class LinkError(PsconvError):
    """The link to the board failed; the message names the command, seq and what happened."""


class LinkTimeout(LinkError):
    """No valid response after all attempts. The command may or may not have been executed."""

    def __init__(self, message: str, *, command: int, seq: int, attempts: int):
        super().__init__(message)
        self.command, self.seq, self.attempts = command, seq, attempts


class LinkNak(LinkError):
    """The device refused the command (``reason``); it was not executed. ``detail`` is a
    ``BAD_DESCRIPTOR`` NAK's rule index (:attr:`~psconv.protocol.frame.Response.detail`)."""

    def __init__(self, message: str, *, command: int, seq: int, attempts: int, reason: int,
                 detail: int | None = None):
        super().__init__(message)
        self.command, self.seq, self.attempts, self.reason = command, seq, attempts, reason
        self.detail = detail


class LinkProtocolError(LinkError):
    """A CRC-valid response that breaks the protocol (unknown status, malformed NAK)."""


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
        command = code_name(Command, code)
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
                        f"(payload {outcome.payload.hex() or 'empty'}; expected one reason byte, "
                        f"two for BAD_DESCRIPTOR)")
                self.stats.naks[reason.name] += 1
                if reason not in RETRYABLE_NAKS:
                    raise LinkNak(
                        f"{command} (seq {seq}) refused by the device: NAK {reason.name} "
                        f"(0x{reason:02X}) after {attempts} attempt(s); the command was not executed",
                        command=code, seq=seq, attempts=attempts, reason=reason,
                        detail=outcome.detail)
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
