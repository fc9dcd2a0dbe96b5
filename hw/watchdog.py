"""The host watchdog: a step left half done by a host that went silent is abandoned.

:class:`Watchdog` counts the cycles in which a streamed step is in progress (``armed``) and
nothing moves on the link (``activity`` low: no byte received, none waiting to be sent). After
``cycles`` such cycles in a row it pulses ``expired``, which the board top treats like an
``ABORT`` (:mod:`psconv.hw.board_top`): the engine and the command processor return to idle.
Any activity, or the step ending, starts the count again. While the link moves bytes the
processor is answering or about to, so an expiry never cuts a reply short.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError


def check_watchdog_cycles(cycles) -> int:
    """``cycles`` if it is a watchdog period (an integer >= 2), else a :class:`PsconvError`."""
    if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 2:
        raise PsconvError(f"watchdog: cycles {cycles!r}; allowed: an integer >= 2 (the silent "
                          f"cycles after which a step is abandoned)")
    return cycles


class Watchdog(wiring.Component):
    """Ports: ``armed`` In(1), ``activity`` In(1), ``expired`` Out(1) (a one-cycle pulse after
    ``cycles`` consecutive cycles armed without activity; see the module docstring).
    ``cycles`` >= 2."""

    def __init__(self, cycles: int):
        self.cycles = check_watchdog_cycles(cycles)
        super().__init__({"armed": In(1), "activity": In(1), "expired": Out(1)})

    def elaborate(self, platform):
        m = Module()
        quiet = Signal(range(self.cycles))
        with m.If(~self.armed | self.activity):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet == self.cycles - 1):
            m.d.comb += self.expired.eq(1)
            m.d.sync += quiet.eq(0)
        with m.Else():
            m.d.sync += quiet.eq(quiet + 1)
        return m
