"""Byte-stream gearboxes of the simulated board's wide bridge (:mod:`psconv.hw.board_top`).

Why: a cocotb bench pays Python time per cycle it touches the design, so the simulated board's
bench moves up to ``beat_bytes`` bytes per beat while the link layer behind these gearboxes still
sees one byte per cycle at most, the same bytes in the same order as over the UART.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

BRIDGE_FIFO_BEATS = 16
"""Default depth (in beats) of each wide-bridge gearbox's FIFO."""

BRIDGE_FLUSH_CYCLES = 8
"""Default quiet cycles after which :class:`BytesToBeats` sends a partly filled beat."""


def bridge_beat_layout(beat_bytes: int) -> data.StructLayout:
    """One wide-bridge beat: ``data`` (``8 * beat_bytes`` bits, byte ``i`` in bits ``8i..8i+7``,
    the first byte on the wire in the low bits) and ``count``, how many of those bytes are used
    (0..``beat_bytes``; ``data`` above them is ignored). In Verilog the port is one vector:
    ``count << 8 * beat_bytes | int.from_bytes(chunk, "little")``."""
    return data.StructLayout({"data": 8 * beat_bytes, "count": range(beat_bytes + 1)})


def _integer_at_least(what: str, value, low: int, note: str = "") -> int:
    """``value`` if it is an integer (not a bool) >= ``low``, else the error naming ``what``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise PsconvError(f"{what} {value!r} must be an integer >= {low}{note}")
    return value


def check_beat_bytes(beat_bytes) -> int:
    return _integer_at_least("bridge beat width", beat_bytes, 1,
                             " (bytes per beat; 1 is the plain byte-stream bridge)")


def check_fifo_beats(fifo_beats) -> int:
    return _integer_at_least("bridge FIFO depth", fifo_beats, 2, " (beats)")


class BeatsToBytes(wiring.Component):
    """Wide beats in -> bytes out, in order, at most one byte per cycle (the bridge's rx side).

    Ports: ``beats`` In(stream of :func:`bridge_beat_layout` (``beat_bytes``)), ``bytes``
    Out(stream.Signature(8)).

    Beats go into a ``fifo_beats``-deep FIFO (``beats.ready`` is high while it has room); the
    head beat is shifted out byte 0 first. A beat taken in cycle ``t`` into an empty gearbox has
    its first byte offered in cycle ``t + 3``; after that a new beat follows the previous one's
    last byte with no gap, so with the FIFO fed the output carries one byte every cycle
    ``bytes.ready`` is high. A beat with ``count == 0`` is taken and produces nothing.
    """

    def __init__(self, beat_bytes: int, fifo_beats: int = BRIDGE_FIFO_BEATS):
        self.beat_bytes = check_beat_bytes(beat_bytes)
        self.fifo_beats = check_fifo_beats(fifo_beats)
        self.layout = bridge_beat_layout(self.beat_bytes)
        super().__init__({"beats": In(stream.Signature(self.layout)),
                          "bytes": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.layout.size, depth=self.fifo_beats)
        m.d.comb += [fifo.w_data.eq(self.beats.payload.as_value()),
                     fifo.w_en.eq(self.beats.valid), self.beats.ready.eq(fifo.w_rdy)]
        head = data.View(self.layout, fifo.r_data)

        shifter = Signal(8 * self.beat_bytes)
        left = Signal(range(self.beat_bytes + 1))      # bytes of the current beat not yet sent
        sent = self.bytes.valid & self.bytes.ready
        load = fifo.r_rdy & ((left == 0) | (sent & (left == 1)))
        m.d.comb += [self.bytes.valid.eq(left != 0), self.bytes.payload.eq(shifter[:8]),
                     fifo.r_en.eq(load)]
        with m.If(load):
            m.d.sync += [shifter.eq(head.data), left.eq(head.count)]
        with m.Elif(sent):
            m.d.sync += [shifter.eq(shifter >> 8), left.eq(left - 1)]
        return m


class BytesToBeats(wiring.Component):
    """Bytes in -> wide beats out, in order (the bridge's tx side).

    Ports: ``bytes`` In(stream.Signature(8)), ``beats`` Out(stream of
    :func:`bridge_beat_layout` (``beat_bytes``)); every beat has ``count >= 1``.

    Bytes fill a beat from byte 0 (one per cycle at most); the beat goes into a
    ``fifo_beats``-deep FIFO as soon as it is full, or once ``flush_cycles`` cycles have passed
    with no new byte, so the end of a short answer is never held back: with ``beats.ready`` high,
    a beat whose last byte is taken in cycle ``t`` is offered in cycle ``t + 3`` if full, else in
    ``t + flush_cycles + 3``. While the FIFO is full the beat waits and ``bytes.ready`` is low
    (nothing is dropped).
    """

    def __init__(self, beat_bytes: int, fifo_beats: int = BRIDGE_FIFO_BEATS,
                 flush_cycles: int = BRIDGE_FLUSH_CYCLES):
        self.beat_bytes = check_beat_bytes(beat_bytes)
        self.fifo_beats = check_fifo_beats(fifo_beats)
        self.flush_cycles = _integer_at_least("bridge flush_cycles", flush_cycles, 1)
        self.layout = bridge_beat_layout(self.beat_bytes)
        super().__init__({"bytes": In(stream.Signature(8)),
                          "beats": Out(stream.Signature(self.layout))})

    def elaborate(self, platform):
        m = Module()
        n = self.beat_bytes
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.layout.size, depth=self.fifo_beats)
        m.d.comb += [self.beats.payload.as_value().eq(fifo.r_data),
                     self.beats.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.beats.ready)]

        gathered = Signal(self.layout)
        quiet = Signal(range(self.flush_cycles + 1))    # cycles since the last byte, saturating
        emit = (gathered.count == n) | ((gathered.count != 0) & (quiet == self.flush_cycles))
        emitted = emit & fifo.w_rdy
        # while a beat waits for FIFO room it must not change: no byte is taken
        m.d.comb += [fifo.w_en.eq(emit), fifo.w_data.eq(gathered.as_value()),
                     self.bytes.ready.eq(~emit | fifo.w_rdy)]
        taken = self.bytes.valid & self.bytes.ready
        with m.If(taken):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.flush_cycles):
            m.d.sync += quiet.eq(quiet + 1)
        with m.If(emitted):
            m.d.sync += gathered.count.eq(taken)
            with m.If(taken):
                m.d.sync += gathered.data[:8].eq(self.bytes.payload)
        with m.Elif(taken):
            m.d.sync += [gathered.data.word_select(gathered.count, 8).eq(self.bytes.payload),
                         gathered.count.eq(gathered.count + 1)]
        return m
