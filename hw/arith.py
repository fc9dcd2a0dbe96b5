"""Small arithmetic helpers for per-layer setup.

:func:`output_size_value` is :func:`psconv.schedule.output_size` in gateware.

:class:`SerialDivider` computes the few per-layer quotients (periods of the input channels, cycles
per output channel, lane start positions, rows modulo the 3 line-buffer banks) one bit per cycle.
Setup runs once per layer while the input map is still loading, so a restoring divider (``width``
cycles) costs nothing and keeps the long carry chains of a combinational divider out of the
critical path.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SerialDivider(wiring.Component):
    """Unsigned restoring divider: ``dividend // divisor`` and ``dividend % divisor``.

    Pulse ``start`` with ``dividend`` and ``divisor`` valid (they are latched); ``done`` rises
    ``dividend_width + 1`` cycles later and stays high with ``quotient`` and ``remainder`` until
    the next ``start``. A zero divisor gives quotient all ones and remainder = dividend.
    """

    def __init__(self, dividend_width: int, divisor_width: int):
        self.dividend_width = dividend_width
        self.divisor_width = divisor_width
        super().__init__({
            "start": In(1),
            "dividend": In(dividend_width),
            "divisor": In(divisor_width),
            "quotient": Out(dividend_width),
            "remainder": Out(divisor_width),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.dividend_width
        shift = Signal(width)          # dividend bits not yet brought down, MSB first
        rem = Signal(self.divisor_width + 1)
        divisor = Signal(self.divisor_width)
        count = Signal(range(width + 1))
        running = Signal()

        trial = Signal(self.divisor_width + 2)
        m.d.comb += trial.eq((rem << 1) | shift[width - 1])

        with m.If(self.start):
            m.d.sync += [
                shift.eq(self.dividend), rem.eq(0), divisor.eq(self.divisor),
                count.eq(width), running.eq(1), self.done.eq(0), self.quotient.eq(0),
            ]
        with m.Elif(running):
            fits = trial >= divisor
            m.d.sync += [
                shift.eq(shift << 1),
                rem.eq(trial - Mux(fits, divisor, 0)),
                self.quotient.eq((self.quotient << 1) | fits),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        m.d.comb += self.remainder.eq(rem)
        return m


def output_size_value(size, stride):
    """:func:`psconv.schedule.output_size` in gateware (``stride`` is a 1|2 value): a shift and
    an add."""
    return Mux(stride == 2, ((size - 1) >> 1) + 1, size)


def times_constant(value, constant: int):
    """``value * constant`` as a sum of shifts: no multiplier cell (the DSPs belong to the engine)."""
    terms = [value << k for k in range(constant.bit_length()) if (constant >> k) & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
