"""The board top: host link (UART or a simulation byte bridge), link layer, command processor, engine.

::

    FTDI UART pins ──► UART ──► LinkLayer ──► CommandProcessor ──► PeriodicSparseEngine
           ◄──────────────────┘   (frames, CRC,   (commands, budgets,
                                   dedupe/replay)  output FIFO)

``BoardTop(config, clk_freq, baud)`` is what ``psconv build`` builds (it requests the board's
``uart`` 0 and buffers its ``rx``/``tx`` pins; ULX3S's ``uart_tx_enable`` is left alone).
Elaborated without a platform (simulation) the UART's lines are the top's ``rx``/``tx`` ports.

``bridge=True`` replaces the UART with a **stream bridge** for simulation
(:mod:`psconv.sim.bridge`): the link layer's byte streams become the top's ports ``rx_data``
In(stream 8) and ``tx_data`` Out(stream 8). The bytes are exactly those the UART would carry, at
up to one byte per cycle each way instead of one per ``10 * divisor`` cycles; everything behind
the UART is the same gateware, so the driver cannot tell the simulated board from a real one.

Clock and baud. The UART needs ``clk_freq / baud`` within 2 % of an integer
(:func:`psconv.hw.uart.uart_divisor`). iCEBreaker's 12 MHz oscillator gives 3 Mbaud exactly
(divisor 4). ULX3S's 25 MHz cannot make 3 Mbaud (divisor 8 is 4.2 % off), so on ULX3S the
``sync`` domain comes from the PLL (:data:`RECOMMENDED_LINK`): 45 MHz exactly (25 x 9 / 5) gives
3 Mbaud with divisor 15 and fits today's engine, which closes timing at about 60 MHz on the
ECP5-85F (``psconv build --board ulx3s-85f --clock-mhz 45 --baud 3000000``); 75 MHz (divisor 25)
is the pair to use once the engine is faster. Any pair that :func:`~psconv.hw.uart.uart_divisor`
accepts works, e.g. the oscillator's 25 MHz at 115200 baud (divisor 217, ``psconv build``'s
default; the host then opens ``serial:/dev/ttyUSB0@115200``).

The link's inter-byte timeout is ``timeout_cycles`` (default 5 ms of ``clk_freq``).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.firmware.protocol import MAX_PAYLOAD

from .command_processor import OUTPUT_FIFO_DEPTH, CommandProcessor
from .engine import PeriodicSparseEngine
from .framing import LinkLayer
from .uart import DEFAULT_BAUD, UART, uart_divisor

DEFAULT_CLK_FREQ = 45_000_000
"""The default ``sync`` clock: ULX3S through its PLL, 3 Mbaud at divisor 15."""

RECOMMENDED_LINK = {
    "ulx3s": (45_000_000, 3_000_000),      # PLL 25 -> 45 MHz, divisor 15 (75 MHz / 25 later)
    "icebreaker": (12_000_000, 3_000_000),  # the oscillator, divisor 4
}
"""Board family -> (sync clock Hz, baud) pairs with an exact integer UART divisor."""


class BoardTop(wiring.Component):
    """UART (or bridge) + :class:`~psconv.hw.framing.LinkLayer` + :class:`CommandProcessor` + engine.

    Ports: ``rx`` In(1) and ``tx`` Out(1) (the UART lines, idle high; used when elaborated
    without a platform), or with ``bridge=True`` ``rx_data`` In(stream 8) and ``tx_data``
    Out(stream 8) (see the module docstring). ``clk_freq`` (Hz) must be the real ``sync``
    frequency: it sets the UART divisor and the link timeout, and ``psconv build`` checks it
    against the board's clock plan.
    """

    def __init__(self, config: EngineConfig | None = None, clk_freq: float = DEFAULT_CLK_FREQ,
                 baud: int = DEFAULT_BAUD, *, bridge: bool = False,
                 timeout_cycles: int | None = None, output_fifo_depth: int = OUTPUT_FIFO_DEPTH):
        self.config = config if config is not None else EngineConfig()
        if not isinstance(self.config, EngineConfig):
            raise PsconvError(f"board top: config is {config!r}; allowed: an EngineConfig")
        if not clk_freq or clk_freq <= 0:
            raise PsconvError(f"board top: clk_freq {clk_freq!r} must be a positive frequency in Hz")
        self.clk_freq = clk_freq
        self.baud = baud
        self.bridge = bool(bridge)
        # validated even in bridge mode, so a simulated board is one that could be built
        self.divisor = uart_divisor(clk_freq, baud)
        self.timeout_cycles = int(timeout_cycles if timeout_cycles is not None
                                  else max(2, clk_freq // 200))
        self.output_fifo_depth = output_fifo_depth
        if self.bridge:
            members = {"rx_data": In(stream.Signature(8)), "tx_data": Out(stream.Signature(8))}
        else:
            members = {"rx": In(1, init=1), "tx": Out(1, init=1)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = LinkLayer(MAX_PAYLOAD, timeout_cycles=self.timeout_cycles)
        m.submodules.processor = processor = CommandProcessor(
            self.config, output_fifo_depth=self.output_fifo_depth, max_payload=MAX_PAYLOAD)
        m.submodules.engine = engine = PeriodicSparseEngine(self.config)

        if self.bridge:
            wiring.connect(m, wiring.flipped(self.rx_data), link.rx_data)
            wiring.connect(m, wiring.flipped(self.tx_data), link.tx_data)
        else:
            m.submodules.uart = uart = UART(divisor=self.divisor)
            wiring.connect(m, uart.rx_data, link.rx_data)
            wiring.connect(m, link.tx_data, uart.tx_data)
            m.d.comb += self.tx.eq(uart.tx)
            if platform is not None:
                pins = platform.request("uart", 0, dir="-")
                m.submodules.rx_buffer = rx_buffer = io.Buffer("i", pins.rx)
                m.submodules.tx_buffer = tx_buffer = io.Buffer("o", pins.tx)
                m.d.comb += [uart.rx.eq(rx_buffer.i), tx_buffer.o.eq(uart.tx)]
            else:
                m.d.comb += uart.rx.eq(self.rx)

        wiring.connect(m, link.command, processor.command)
        wiring.connect(m, link.command_payload, processor.command_payload)
        wiring.connect(m, processor.reply, link.reply)
        wiring.connect(m, processor.reply_payload, link.reply_payload)
        m.d.comb += processor.link_counters.eq(link.counters)
        wiring.connect(m, processor.engine, engine)
        return m
