"""Two drivers, one engine: the streamed command processor or the resident program runner."""

from __future__ import annotations

from amaranth.hdl import Mux

GATED = ("valid", "ready", "done")
"""Engine outputs the driver that does not own the engine sees as 0 (no handshake, no done)."""


def _member(interface, path):
    for name in path:
        interface = getattr(interface, name)
    return interface


def connect_engine_owners(m, engine, streamed, resident, resident_owns) -> None:
    """Wire ``engine`` to ``streamed`` (``resident_owns`` low) or ``resident`` (high).

    ``streamed`` and ``resident`` are the two drivers' flipped engine ports. The engine's
    inputs come from the owner. Its outputs reach both, except handshakes and ``done``, which
    the other driver sees as 0, and ``busy``, which the streamed driver sees as 1 while the
    runner owns the engine (so the command processor refuses ``WRITE_LAYER`` and ``START``
    with BUSY). ``resident_owns`` may change only while the engine is idle.
    """
    for path, member in engine.signature.members.flatten():
        if not member.is_port:
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
