"""A small self-contained board top that exercises the FPGA flow without the engine.

:class:`UartMacDemo` feeds int8 multiply-accumulates (:class:`MacArray`) through the project's
one UART (:class:`psconv.hw.uart.UART`), so a build checks the flow, the board's clock and UART
pins and its DSPs (``psconv build --design mac-demo``).
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Elaboratable, Module, Signal, signed
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.hw.uart import UART, uart_divisor


class MacArray(wiring.Component):
    """``n`` signed int8 multipliers and a registered adder tree: ``dot = sum(a[i] * w[i])``.

    Latency: ``valid_out`` follows ``valid_in`` by ``2 + ceil(log2 n)`` cycles (an input
    register, a product register, one register per tree level), and ``dot`` holds that
    vector's sum from then until the next result.
    """

    def __init__(self, n: int):
        self.n = n
        self.levels = max(1, math.ceil(math.log2(n))) if n > 1 else 0
        self.latency = 2 + self.levels
        super().__init__({
            "a": In(signed(8)).array(n), "w": In(signed(8)).array(n), "valid_in": In(1),
            "dot": Out(signed(16 + self.levels)), "valid_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        a = [Signal(signed(8), name=f"a_reg{i}") for i in range(self.n)]
        w = [Signal(signed(8), name=f"w_reg{i}") for i in range(self.n)]
        m.d.sync += [x.eq(y) for x, y in zip(a + w, list(self.a) + list(self.w))]
        level = []
        for i in range(self.n):
            p = Signal(signed(16), name=f"prod{i}")
            m.d.sync += p.eq(a[i] * w[i])
            level.append(p)
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for j in range(0, len(level), 2):
                s = Signal(signed(16 + depth), name=f"sum{depth}_{j // 2}")
                m.d.sync += s.eq(level[j] + level[j + 1] if j + 1 < len(level) else level[j])
                nxt.append(s)
            level = nxt
        m.d.comb += self.dot.eq(level[0])
        valid = Signal(self.latency)
        m.d.sync += valid.eq(Cat(self.valid_in, valid[:-1]))
        m.d.comb += self.valid_out.eq(valid[-1])
        return m


class UartMacDemo(Elaboratable):
    """A board top that exercises the flow: UART in, ``n`` int8 MACs, UART out.

    Protocol (8N1 at ``baud``): the host sends ``2n`` bytes, ``a[0..n-1]`` then ``w[0..n-1]``
    (signed int8); the board adds ``sum(a[i] * w[i])`` to a 32-bit accumulator and answers with
    the accumulator, 4 bytes little-endian. ``sync`` runs at ``clk_freq`` (from
    :func:`psconv.rtl_gen.clocking.plan_clock`); the UART is the board's FTDI UART
    (``board.uart_resource``), or the ``rx``/``tx`` signals when elaborated without a platform
    (simulation). ``board`` is a :class:`psconv.rtl_gen.boards.Board` (its DSP count, clock and
    UART resource; passed in, so the gateware does not depend on the board catalogue).
    """

    def __init__(self, board, n_mult: int | None = None, clk_freq: float | None = None,
                 baud: int = 115200):
        self.board = board
        self.n_mult = n_mult or min(16, self.board.resources.dsps)
        if not isinstance(self.n_mult, int) or self.n_mult < 1:
            raise PsconvError(f"demo: n_mult is {n_mult!r}; allowed: an integer >= 1")
        self.clk_freq = float(clk_freq or self.board.clock_hz)
        self.baud = baud
        self.divisor = uart_divisor(self.clk_freq, baud)
        self.rx = Signal(init=1)   # the UART lines when elaborated without a platform
        self.tx = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        n = self.n_mult
        m.submodules.uart = uart = UART(divisor=self.divisor)
        m.submodules.mac = mac = MacArray(n)
        if platform is not None:
            pins = platform.request(self.board.uart_resource, self.board.uart_number, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", pins.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", pins.tx)
            m.d.comb += [uart.rx.eq(rx_buf.i), tx_buf.o.eq(uart.tx)]
        else:  # simulation: the UART lines are this object's rx/tx signals
            m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx)]
        rx = uart.rx_data
        tx = uart.tx_data

        vector = Signal(16 * n)           # a[0..n-1] then w[0..n-1], first byte lowest
        count = Signal(range(2 * n + 1))
        m.d.comb += rx.ready.eq(1)
        m.d.comb += mac.valid_in.eq(0)
        with m.If(rx.valid):
            m.d.sync += vector.eq(Cat(vector[8:], rx.payload))
            m.d.sync += count.eq(count + 1)
        with m.If(count == 2 * n):
            m.d.sync += count.eq(0)
            m.d.comb += mac.valid_in.eq(1)
        for i in range(n):
            m.d.comb += [mac.a[i].eq(vector[8 * i:8 * i + 8]),
                         mac.w[i].eq(vector[8 * (n + i):8 * (n + i) + 8])]

        acc = Signal(signed(32))
        out = Signal(32)
        left = Signal(range(5))
        with m.If(mac.valid_out):
            m.d.sync += acc.eq(acc + mac.dot)
            m.d.sync += out.eq(acc + mac.dot)
            m.d.sync += left.eq(4)
        m.d.comb += [tx.payload.eq(out[:8]), tx.valid.eq(left != 0)]
        with m.If(tx.valid & tx.ready & ~mac.valid_out):
            m.d.sync += [out.eq(out >> 8), left.eq(left - 1)]
        return m
