"""8N1 UART: a receiver, a transmitter, and ``UART`` combining both, with byte streams.

The link to the host (an FTDI UART on ULX3S / iCEBreaker, or a Verilator bridge) runs at
``clk_freq / divisor`` baud; the default 3 Mbaud at 48 MHz gives divisor 16. Bytes are 8N1: a
start bit (0), eight data bits LSB first, one stop bit (1); the line idles high.

Streams are ``amaranth.lib.stream.Signature(8)`` (valid/ready/payload). The receiver cannot
stall the line, so it holds one received byte; if the next byte completes while that one has
not been taken, the new byte is dropped and ``overrun`` pulses. The frame layer above detects
the missing byte (CRC / timeout) and the host retransmits.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

DEFAULT_CLK_FREQ = 48_000_000
DEFAULT_BAUD = 3_000_000
MIN_DIVISOR = 4
MAX_BAUD_ERROR = 0.02   # both ends' errors must stay well inside 8N1's ~4.5 % budget


def uart_divisor(clk_freq: int = DEFAULT_CLK_FREQ, baud: int = DEFAULT_BAUD) -> int:
    """``clk_freq // baud``; refuses a divisor under 4 or a baud error above 2 %."""
    if clk_freq <= 0 or baud <= 0:
        raise PsconvError(f"UART clk_freq {clk_freq} and baud {baud} must be positive")
    divisor = int(clk_freq // baud)
    if divisor < MIN_DIVISOR:
        raise PsconvError(f"UART baud {baud} is too fast for a {clk_freq} Hz clock: "
                          f"clk_freq // baud = {divisor}, at least {MIN_DIVISOR} needed")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise PsconvError(f"UART baud {baud} at {clk_freq} Hz: divisor {divisor} gives "
                          f"{clk_freq / divisor:.0f} baud ({error:.1%} off; at most "
                          f"{MAX_BAUD_ERROR:.0%} allowed): pick a baud that divides the clock")
    return divisor


def _check_divisor(divisor: int) -> int:
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise PsconvError(f"UART divisor {divisor!r} must be an integer >= {MIN_DIVISOR} "
                          f"(clock cycles per bit)")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 receiver sampling mid-bit, ``divisor`` clock cycles per bit.

    Ports: ``rx`` In(1) (the pin, asynchronous: it goes through a 2-flop synchronizer),
    ``data`` Out(stream.Signature(8)), ``framing_error`` Out(1), ``overrun`` Out(1).

    A falling edge starts a byte; the start bit is sampled again half a bit later and a glitch
    (line high again) is ignored. Data bits are sampled at their middles. A byte with a bad stop
    bit is dropped, ``framing_error`` pulses for one cycle and the receiver waits for the line to
    go high before hunting for the next start bit. ``data.valid`` rises 3 cycles after the
    middle of the stop bit on the pin (2 synchronizer cycles + 1) and stays up until
    ``data.ready``; a byte completing while the previous one is still held is dropped and
    ``overrun`` pulses.
    """

    def __init__(self, divisor: int = DEFAULT_CLK_FREQ // DEFAULT_BAUD):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # the start edge and every later sample pass the same synchronizer, so
                    # waiting d//2 cycles from the edge puts each sample mid-bit
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    with m.If(rx):
                        m.next = "IDLE"   # a glitch, not a start bit
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.data.valid & ~self.data.ready):
                        m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 transmitter, ``divisor`` clock cycles per bit.

    Ports: ``data`` In(stream.Signature(8)), ``tx`` Out(1) (idles high).

    ``data.ready`` is high when idle and in the last cycle of a stop bit, so back-to-back bytes
    go out every ``10 * divisor`` cycles; the start bit begins the cycle after the handshake.
    """

    def __init__(self, divisor: int = DEFAULT_CLK_FREQ // DEFAULT_BAUD):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        bits_left = Signal(range(10))
        shreg = Signal(9)   # data bits then the stop bit, LSB first
        busy = Signal()

        last_cycle = busy & (bits_left == 0) & (timer == 0)
        m.d.comb += self.data.ready.eq(~busy | last_cycle)
        with m.If(busy):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [timer.eq(d - 1), self.tx.eq(shreg[0]), shreg.eq(shreg >> 1),
                             bits_left.eq(bits_left - 1)]
                with m.If(bits_left == 0):
                    m.d.sync += [busy.eq(0), self.tx.eq(1)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), timer.eq(d - 1), bits_left.eq(9),
                         shreg.eq(Cat(self.data.payload, 1))]
        return m


class UART(wiring.Component):
    """Receiver plus transmitter sharing one divisor.

    Ports: ``rx`` In(1) and ``tx`` Out(1) (the pins), ``rx_data`` Out(stream.Signature(8))
    (bytes from the host), ``tx_data`` In(stream.Signature(8)) (bytes to the host),
    ``framing_error`` / ``overrun`` Out(1) (one-cycle pulses from the receiver).
    ``divisor`` defaults to :func:`uart_divisor` of ``clk_freq`` and ``baud``.
    """

    def __init__(self, clk_freq: int = DEFAULT_CLK_FREQ, baud: int = DEFAULT_BAUD, *,
                 divisor: int | None = None):
        self.divisor = _check_divisor(divisor) if divisor is not None else uart_divisor(clk_freq, baud)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "rx_data": Out(stream.Signature(8)),
            "tx_data": In(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UARTReceiver(self.divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self.divisor)
        m.d.comb += [
            receiver.rx.eq(self.rx),
            self.tx.eq(transmitter.tx),
            self.framing_error.eq(receiver.framing_error),
            self.overrun.eq(receiver.overrun),
        ]
        wiring.connect(m, wiring.flipped(self.rx_data), receiver.data)
        wiring.connect(m, wiring.flipped(self.tx_data), transmitter.data)
        return m
