"""Fault injection on a transport: bit flips, drops, duplicates, truncation, delays, garbage.

:class:`FaultInjectingTransport` wraps any :class:`~psconv.firmware.transport.Transport` and,
in each direction, picks at most one fault per frame (frames are found by their sync and length
field; bytes between frames pass untouched). It models what a serial line can do, keeping the
line a FIFO (nothing is reordered, which stop-and-wait with one remembered seq relies on):

* ``bitflip``: 1..3 bits flipped anywhere in the frame (CRC-16/CCITT detects every such error
  in frames under 4 kB: its Hamming distance is 4 there).
* ``drop``: the frame vanishes.
* ``duplicate``: the frame arrives twice back to back.
* ``truncate``: only a prefix arrives, then the line is silent for ``silence_s`` (longer than
  the receivers' inter-byte timeouts, as when a cable or a device glitches).
* ``delay``: the frame (and everything after it) arrives up to ``max_delay_s`` late.
* ``garbage``: 1..12 random bytes, sometimes with a fake sync and header, before the frame.

``injected`` counts every fault by ``(direction, kind)``; ``direction`` is ``"to_device"`` or
``"to_host"``. Timing uses the inner transport's clock, so with a LoopbackTransport delays and
silences cost no real time.
"""

from __future__ import annotations

import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, fields

from psconv.errors import PsconvError
from psconv.firmware.transport import Transport, VirtualClock
from psconv.protocol.frame import CRC_LEN, HEADER_LEN, MAX_PAYLOAD, SYNC

FAULT_KINDS = ("bitflip", "drop", "duplicate", "truncate", "delay", "garbage")
DIRECTIONS = ("to_device", "to_host")


@dataclass(frozen=True)
class FaultRates:
    """Probability per frame of each fault (at most one per frame, so they must sum to <= 1)."""
    bitflip: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    truncate: float = 0.0
    delay: float = 0.0
    garbage: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise PsconvError(f"fault rate {f.name}={value} must be within 0..1")
        if self.total > 1.0:
            raise PsconvError(f"fault rates sum to {self.total:.3f}: at most 1 allowed "
                              f"(one fault per frame at most)")

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def pick(self, rng: random.Random) -> str | None:
        x = rng.random()
        for kind in FAULT_KINDS:
            x -= getattr(self, kind)
            if x < 0:
                return kind
        return None


def flip_bits(frame: bytes, rng: random.Random, max_bits: int = 3) -> bytes:
    """``frame`` with 1..max_bits distinct bits inverted at random positions."""
    data = bytearray(frame)
    for bit in rng.sample(range(len(data) * 8), rng.randint(1, min(max_bits, len(data) * 8))):
        data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def truncate_frame(frame: bytes, rng: random.Random) -> bytes:
    """A strict, non-empty prefix of ``frame``."""
    return frame[:rng.randint(1, len(frame) - 1)]


def garbage_bytes(rng: random.Random) -> bytes:
    """1..12 random line-noise bytes; one time in three it starts with a sync and a fake header."""
    noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 12)))
    if rng.random() < 1 / 3:
        return SYNC + noise
    return noise


class FrameSplitter:
    """Cuts a byte stream into frames (by sync and length; the CRC is not checked) and gaps.

    ``feed`` returns ``(bytes, is_frame)`` units completed so far; ``flush`` returns the
    incomplete rest as one non-frame unit.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        buf = self._buf
        buf += data
        units: list[tuple[bytes, bool]] = []
        while buf:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1] == SYNC[0] else 0
                if len(buf) > keep:
                    units.append((bytes(buf[:len(buf) - keep]), False))
                    del buf[:len(buf) - keep]
                break
            if start:
                units.append((bytes(buf[:start]), False))
                del buf[:start]
            if len(buf) < HEADER_LEN:
                break
            (length,) = struct.unpack_from("<H", buf, 4)
            if length > self.max_payload:
                units.append((bytes(buf[:2]), False))
                del buf[:2]
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(buf) < total:
                break
            units.append((bytes(buf[:total]), True))
            del buf[:total]
        return units

    def flush(self) -> list[tuple[bytes, bool]]:
        rest, self._buf = bytes(self._buf), bytearray()
        return [(rest, False)] if rest else []


class _Direction:
    """One direction's splitter, schedule and FIFO state."""

    def __init__(self, name: str, rates: FaultRates):
        self.name = name
        self.rates = rates
        self.splitter = FrameSplitter()
        self.queue: deque[tuple[float, bytes]] = deque()   # (release time, bytes), FIFO
        self.not_before = 0.0                              # FIFO + silence after truncation

    def next_release(self) -> float | None:
        return self.queue[0][0] if self.queue else None


class FaultInjectingTransport(Transport):
    """A transport that damages frames in both directions (see the module docstring).

    ``rates`` applies to both directions unless ``to_host`` gives the device->host rates.
    ``max_delay_s`` bounds a delay; ``silence_s`` is the quiet time after a truncated frame and
    must exceed the inter-byte timeouts of both ends.
    """

    def __init__(self, inner: Transport, seed: int = 0, rates: FaultRates = FaultRates(), *,
                 to_host: FaultRates | None = None, max_delay_s: float = 0.1,
                 silence_s: float = 0.05):
        self.inner = inner
        self.clock = inner.clock
        self.rng = random.Random(seed)
        self.max_delay_s = max_delay_s
        self.silence_s = silence_s
        self._out = _Direction("to_device", rates)
        self._in = _Direction("to_host", rates if to_host is None else to_host)
        self.injected: Counter = Counter()   # (direction, kind) -> count
        self.frames: Counter = Counter()     # direction -> frames seen

    def summary(self) -> str:
        parts = []
        for direction in DIRECTIONS:
            counts = ", ".join(f"{k}={self.injected[(direction, k)]}" for k in FAULT_KINDS)
            parts.append(f"{direction}: {self.frames[direction]} frames, {counts}")
        return "; ".join(parts)

    # -- scheduling --

    def _schedule(self, d: _Direction, units: list[tuple[bytes, bool]]) -> None:
        now = self.clock.now()
        for data, is_frame in units:
            if not is_frame:
                d.not_before = max(now, d.not_before)
                d.queue.append((d.not_before, data))
                continue
            self.frames[d.name] += 1
            kind = d.rates.pick(self.rng)
            if kind is not None:
                self.injected[(d.name, kind)] += 1
            release = max(now, d.not_before)
            if kind == "drop":
                continue
            if kind == "bitflip":
                data = flip_bits(data, self.rng)
            elif kind == "duplicate":
                data = data + data
            elif kind == "garbage":
                data = garbage_bytes(self.rng) + data
            elif kind == "delay":
                release = max(release, now + self.rng.uniform(0, self.max_delay_s))
            d.queue.append((release, data if kind != "truncate" else truncate_frame(data, self.rng)))
            d.not_before = release + (self.silence_s if kind == "truncate" else 0.0)

    def _release_to_device(self, now: float) -> None:
        q = self._out.queue
        while q and q[0][0] <= now:
            self.inner.write(q.popleft()[1])

    def _take_to_host(self, now: float, max_bytes: int) -> bytes:
        q = self._in.queue
        out = bytearray()
        while q and q[0][0] <= now and len(out) < max_bytes:
            release, data = q.popleft()
            room = max_bytes - len(out)
            out += data[:room]
            if len(data) > room:
                q.appendleft((release, data[room:]))
        return bytes(out)

    # -- Transport --

    def write(self, data: bytes) -> None:
        self._schedule(self._out, self._out.splitter.feed(bytes(data)) + self._out.splitter.flush())
        self._release_to_device(self.clock.now())

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        deadline = self.clock.now() + max(timeout_s, 0)
        while True:
            now = self.clock.now()
            self._release_to_device(now)
            out = self._take_to_host(now, max_bytes)
            if out:
                return out
            if now >= deadline:
                return b""
            wake = min(t for t in (deadline, self._out.next_release(), self._in.next_release())
                       if t is not None)
            data = self.inner.read(4096, max(wake - now, 0.0))
            if data:
                self._schedule(self._in, self._in.splitter.feed(data))
            else:
                self._schedule(self._in, self._in.splitter.flush())
                if isinstance(self.clock, VirtualClock):
                    self.clock.advance_to(wake)   # rounding must not stall simulated time

    def close(self) -> None:
        self.inner.close()


def uniform_fault_rates(rate: float):
    """:class:`~psconv.firmware.faults.FaultRates` with ``rate`` (per frame) split evenly over
    every fault kind."""
    if not 0.0 <= rate <= 1.0:
        raise PsconvError(f"fault rate {rate} must be within 0..1 (probability per frame)")
    return FaultRates(**{kind: rate / len(FAULT_KINDS) for kind in FAULT_KINDS})
