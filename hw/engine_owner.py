"""Two drivers, one engine: the streamed command processor or the resident program runner."""

from __future__ import annotations

from amaranth.hdl import Mux, Signal
from amaranth.lib import stream
from amaranth.lib.wiring import In

GATED = ("valid", "ready", "done")
"""Engine outputs the driver that does not own the engine sees as 0 (no handshake, no done)."""


def _member(interface, path):
    for name in path:
        interface = getattr(interface, name)
    return interface


def _registered_stream(m, domain, port, first, second, resident_owns) -> None:
    """The owner's beats reach the engine's input stream ``port`` through a register (valid and
    payload), and the owner's ``ready`` comes from a register too: a second, skid register takes
    the beat offered while the first is held, and ``ready`` is "the skid register is empty".
    The two drivers lie far from the engine's block RAMs: without the first register their
    payload muxes and the engine's write logic were one path, and without the second the
    engine's ready decision (the window generator's row/beat compares) ran on into the drivers'
    beat and fill logic."""
    valid, skid_valid = Signal(), Signal()
    payload, skid_payload = Signal.like(port.payload), Signal.like(port.payload)
    offered = Mux(resident_owns, second.valid, first.valid)
    offer = Mux(resident_owns, second.payload, first.payload)
    m.d.comb += [port.valid.eq(valid), port.payload.eq(payload),
                 first.ready.eq(~skid_valid & ~resident_owns),
                 second.ready.eq(~skid_valid & resident_owns)]
    with m.If(~valid | port.ready):
        # the first register is free this cycle: the skid beat moves up, else the offer
        m.d[domain] += [valid.eq(skid_valid | offered),
                        payload.eq(Mux(skid_valid, skid_payload, offer)),
                        skid_valid.eq(0)]
    with m.Elif(~skid_valid):
        m.d[domain] += [skid_valid.eq(offered), skid_payload.eq(offer)]


def connect_engine_owners(m, engine, streamed, resident, resident_owns, domain="sync") -> None:
    """Wire ``engine`` to ``streamed`` (``resident_owns`` low) or ``resident`` (high).

    ``streamed`` and ``resident`` are the two drivers' flipped engine ports. The engine's
    inputs come from the owner; its input streams through a register in ``domain`` (one cycle
    more latency, the same throughput; a skid register beside it lets ``ready`` be registered;
    put them in the engine's domain, so a reset clears the beats held there). Its outputs reach
    both, except handshakes and ``done``, which the other driver sees as 0, and ``busy``, which
    the streamed driver sees as 1 while the runner owns the engine (so the command processor
    refuses ``WRITE_LAYER`` and ``START`` with BUSY).
    ``resident_owns`` may change only while the engine is idle (no beat is held then: an idle
    engine has taken every beat of its layer).
    """
    registered = set()
    for name, member in engine.signature.members.items():
        if (member.is_signature and isinstance(member.signature, stream.Signature)
                and member.flow == In):
            _registered_stream(m, domain, getattr(engine, name), getattr(streamed, name),
                               getattr(resident, name), resident_owns)
            registered.add(name)
    for path, member in engine.signature.members.flatten():
        if not member.is_port or path[0] in registered:
            continue
        port = _member(engine, path)
        first, second = _member(streamed, path), _member(resident, path)
        if member.flow.name == "In":
            m.d.comb += port.eq(Mux(resident_owns, second, first))
        elif path[-1] in GATED:
            m.d.comb += [first.eq(port & ~resident_owns), second.eq(port & resident_owns)]
        elif path == ("busy",):
            m.d.comb += [first.eq(port | resident_owns), second.eq(port)]
        else:
            m.d.comb += [first.eq(port), second.eq(port)]
