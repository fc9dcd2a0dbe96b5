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

``bridge_beat_bytes=N`` (N > 1, bridge mode only) widens the bridge so a testbench touches its
ports once per N bytes instead of once per byte (Python per cycle is what makes a cocotb bench
slow): the ports become ``rx_beats`` In(stream of
:func:`~psconv.hw.byte_gearbox.bridge_beat_layout`) and ``tx_beats`` Out(the same), and two
gearboxes in gateware (:mod:`psconv.hw.byte_gearbox`), each with a FIFO of ``bridge_fifo_beats``
beats, turn them into the link layer's byte streams.
The link layer still receives and sends one byte per cycle at most, the same bytes in the same
order; only the bench side is wide. Two more differences serve Verilator's speed and nothing
on the board sees them: the logic runs in a local ``board`` domain on ``sync``'s clock, reset by
a :data:`POWER_ON_RESET_CYCLES` counter (the ``rst`` input is left unconnected: a reset input
would put every register's next-state logic among what Verilator re-evaluates on each input
change), and the output ``engine_active`` tells the bench the engine is still computing
(:data:`ENGINE_ACTIVE_CYCLES`), so it keeps the clock running while the host is silent.

Clock and baud. The UART needs ``clk_freq / baud`` within 2 % of an integer
(:func:`psconv.hw.uart.uart_divisor`). iCEBreaker's 12 MHz oscillator gives 3 Mbaud exactly
(divisor 4). ULX3S's 25 MHz cannot make 3 Mbaud (divisor 8 is 4.2 % off), so on ULX3S the
``sync`` domain comes from the PLL (:data:`RECOMMENDED_LINK`): 60 MHz exactly (25 x 12 / 5) gives
3 Mbaud with divisor 20 (``psconv build``'s default on ULX3S); 45 MHz (divisor 15) has more
timing margin, 75 MHz (divisor 25) is the pair to use once the engine closes timing there. Any pair that :func:`~psconv.hw.uart.uart_divisor` accepts
works, e.g. the oscillator's 25 MHz at 115200 baud (divisor 217: ``--clock-mhz 25 --baud
115200``; the host then opens ``serial:/dev/ttyUSB0@115200``).

The link's inter-byte timeout is ``timeout_cycles`` (default 5 ms of ``clk_freq``).

Largest payload. ``max_payload`` sizes the link's receive and replay buffers and is what
``IDENTIFY`` reports (the driver then sends and reads in frames of at most that). Left at None,
it is the board's :attr:`~psconv.rtl_gen.boards.Board.link_max_payload` when ``psconv build``
elaborates the top (its platform carries ``psconv_board``: 512 bytes on iCEBreaker, where a
buffer is then one block RAM instead of two) and ``MAX_PAYLOAD`` otherwise (ULX3S, simulation).

Abort and watchdog. The ``ABORT`` command's ACK pulses the command processor's ``abort``; so
does the :class:`~psconv.hw.watchdog.Watchdog` when a streamed step is in progress and the link
has been silent for ``watchdog_cycles`` (default :data:`DEFAULT_WATCHDOG_S` seconds of
``clk_freq``; 0: no watchdog; :meth:`BoardTop.guards` names the boards without one). The pulse
resets the command processor (its output FIFO, budgets and descriptor), the engine and the
resident runner, so whatever was half done is discarded and the next ``WRITE_LAYER`` starts
afresh. None of them knows about it: they run in a local ``abortable`` domain on ``sync``'s
clock whose reset is ``sync``'s reset or the pulse (one gate in all, where a ``ResetInserter``
around each would give every flip-flop a second reset for synthesis to merge). The link layer is
not reset: the ACK, taken by the link in the cycle of the pulse, still goes out, and dedupe
keeps working. The resident memory and its commands (the model's validity mark) are kept.

Descriptor check. ``check_descriptor`` gives the command processor its
:class:`~psconv.hw.descriptor_check.DescriptorCheck`: a ``WRITE_LAYER`` outside the engine's
limits is NAKed ``BAD_DESCRIPTOR`` naming the rule, and nothing starts. Both guards are on by
default (:meth:`BoardTop.guards`) except on a board whose
:attr:`~psconv.rtl_gen.boards.Board.gateware_guards` is False: the iCEBreaker, whose device is
full, keeps ``ABORT`` (a driver still recovers it) but leaves out the descriptor check (its host
checks every descriptor before sending it) and the watchdog (a board left busy waits for an
``ABORT``).

Resident mode (docs/architecture.md section 10). ``memory_bytes=N`` adds N bytes of block RAM
as the board's memory, the program runner and the memory commands (the simulated board uses
this); ``sdram_core`` (a generated LiteDRAM core, :mod:`psconv.rtl_gen.litedram`) uses the
board's SDRAM instead, clocked 90 degrees behind ``sync``, which the top then makes itself from
the PLL of ``psconv build``'s clock plan. A core of the ``sim`` variant makes the controller's
pins the top's ``sdram`` port instead, for a chip model beside it (:mod:`psconv.sim.bridge`).
Without either the board is streamed-only and answers the memory commands UNKNOWN_COMMAND.
``external_memory`` makes the block RAM of ``memory_bytes`` a Verilog module of its own
(:data:`~psconv.hw.memory_port.WORD_MEMORY_VERILOG`), as the Verilator-simulated board uses it.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.protocol.frame import MAX_PAYLOAD
from psconv.protocol.payloads import OUTPUT_FIFO_DEPTH, smallest_max_payload

from .byte_gearbox import (BRIDGE_FIFO_BEATS, BRIDGE_FLUSH_CYCLES, BeatsToBytes, BytesToBeats,
                           bridge_beat_layout, check_beat_bytes, check_fifo_beats)
from .command_processor import CommandProcessor
from .engine import PeriodicSparseEngine
from .engine_owner import connect_engine_owners
from .framing import LinkLayer, check_max_payload
from .memory_commands import CommandRouter, MemoryCommandProcessor
from .memory_port import MemoryPortArbiter, OnChipMemory, WordMemoryBridge
from .program_runner import ProgramRunner
from .sdram import SDRAM, sdram_pin_signature
from .sdram_clocking import SDRAMClocking
from .target import area_first
from .uart import DEFAULT_BAUD, UART, uart_divisor
from .watchdog import Watchdog, check_watchdog_cycles

DEFAULT_CLK_FREQ = 60_000_000
"""The default ``sync`` clock: ULX3S through its PLL, 3 Mbaud at divisor 20."""

RECOMMENDED_LINK = {
    "ulx3s": (60_000_000, 3_000_000),      # PLL 25 -> 60 MHz, divisor 20 (75 MHz / 25 later)
    "icebreaker": (12_000_000, 3_000_000),  # the oscillator, divisor 4
}
"""Board family -> (sync clock Hz, baud) pairs with an exact integer UART divisor."""

ENGINE_ACTIVE_CYCLES = 64
"""The wide-bridge top's ``engine_active`` stays high this many cycles after the engine's last
issue cycle."""

DEFAULT_WATCHDOG_S = 10
"""Seconds of link silence in the middle of a streamed step after which the board abandons the
step (the default ``watchdog_cycles`` is this many seconds of ``clk_freq``). Far above what a
live host leaves: its longest silence is one answer timeout (1 s by default) before it
re-sends."""

POWER_ON_RESET_CYCLES = 4
"""Cycles the wide-bridge top holds its own reset after time 0 (it ignores the ``rst`` input)."""


class BoardTop(wiring.Component):
    """UART (or bridge) + :class:`~psconv.hw.framing.LinkLayer` + :class:`CommandProcessor` + engine.

    Ports: ``rx`` In(1) and ``tx`` Out(1) (the UART lines, idle high; used when elaborated
    without a platform), or with ``bridge=True`` ``rx_data`` In(stream 8) and ``tx_data``
    Out(stream 8), or with ``bridge=True, bridge_beat_bytes=N`` (N > 1) ``rx_beats`` /
    ``tx_beats`` (streams of :func:`bridge_beat_layout` (N)) and ``engine_active`` Out(1) (see
    the module docstring).
    ``clk_freq`` (Hz) must be the real ``sync`` frequency: it sets the UART divisor and the link
    timeout, and ``psconv build`` checks it against the board's clock plan. ``max_payload``:
    see :meth:`link_max_payload`. ``watchdog_cycles`` (0: none) and ``check_descriptor``: see
    the module docstring.
    """

    def __init__(self, config: EngineConfig | None = None, clk_freq: float = DEFAULT_CLK_FREQ,
                 baud: int = DEFAULT_BAUD, *, bridge: bool = False,
                 timeout_cycles: int | None = None, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                 bridge_beat_bytes: int = 1, bridge_fifo_beats: int = BRIDGE_FIFO_BEATS,
                 bridge_flush_cycles: int = BRIDGE_FLUSH_CYCLES, max_payload: int | None = None,
                 memory_bytes: int = 0, sdram_core=None, external_memory: bool = False,
                 watchdog_cycles: int | None = None, check_descriptor: bool | None = None):
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
        if watchdog_cycles:
            check_watchdog_cycles(watchdog_cycles)
        self.watchdog_cycles = watchdog_cycles
        self.check_descriptor = check_descriptor
        if max_payload is not None:
            smallest = smallest_max_payload(self.config)
            if check_max_payload(max_payload) < smallest:
                raise PsconvError(f"board top: max_payload {max_payload} is too small for this "
                                  f"engine; allowed: {smallest}..65535 bytes (every answer blob, "
                                  f"the layer descriptor and one beat of each data command)")
        self.max_payload = max_payload
        if not isinstance(memory_bytes, int) or memory_bytes < 0:
            raise PsconvError(f"board top: memory_bytes {memory_bytes!r}; allowed: 0 (streamed "
                              f"mode only) or the resident memory's size in bytes")
        self.sdram_core = sdram_core
        self.external_memory = external_memory
        if sdram_core is not None:
            memory_bytes = (sdram_core.data_width // 8) << sdram_core.address_width
        self.memory_bytes = memory_bytes
        self.bridge_beat_bytes = check_beat_bytes(bridge_beat_bytes)
        self.bridge_fifo_beats = check_fifo_beats(bridge_fifo_beats)
        self.bridge_flush_cycles = bridge_flush_cycles
        if self.bridge_beat_bytes > 1 and not self.bridge:
            raise PsconvError(f"board top: bridge_beat_bytes={bridge_beat_bytes} needs "
                              f"bridge=True (the UART build has no wide ports)")
        if self.bridge and self.bridge_beat_bytes > 1:
            beat = stream.Signature(bridge_beat_layout(self.bridge_beat_bytes))
            members = {"rx_beats": In(beat), "tx_beats": Out(beat), "engine_active": Out(1)}
        elif self.bridge:
            members = {"rx_data": In(stream.Signature(8)), "tx_data": Out(stream.Signature(8))}
        else:
            members = {"rx": In(1, init=1), "tx": Out(1, init=1)}
        if sdram_core is not None and sdram_core.variant == "sim":
            # a simulated board's SDRAM: the controller's pins are ports, for a chip model
            members["sdram"] = Out(sdram_pin_signature(sdram_core.info["rowbits"],
                                                       sdram_core.info["bankbits"]))
        super().__init__(members)

    def link_max_payload(self, platform=None) -> int:
        """The link's largest payload when elaborated for ``platform``: ``max_payload`` if given,
        else the board's (a ``psconv build`` platform's ``psconv_board.link_max_payload``), else
        ``MAX_PAYLOAD``."""
        if self.max_payload is not None:
            return self.max_payload
        board = getattr(platform, "psconv_board", None)
        return board.link_max_payload if board is not None else MAX_PAYLOAD

    def guards(self, platform=None) -> tuple[bool, int]:
        """(descriptor check, watchdog cycles or 0) when elaborated for ``platform``: the
        constructor's values if given, else on (:data:`DEFAULT_WATCHDOG_S` of ``clk_freq``)
        unless the platform's board leaves them out
        (:attr:`~psconv.rtl_gen.boards.Board.gateware_guards`: the iCEBreaker, which is full)."""
        board = getattr(platform, "psconv_board", None)
        default = board is None or board.gateware_guards
        check = self.check_descriptor if self.check_descriptor is not None else default
        cycles = (self.watchdog_cycles if self.watchdog_cycles is not None
                  else int(DEFAULT_WATCHDOG_S * self.clk_freq) if default else 0)
        return bool(check), cycles

    def elaborate(self, platform):
        m = Module()
        max_payload = self.link_max_payload(platform)
        check_descriptor, watchdog_cycles = self.guards(platform)
        m.submodules.link = link = LinkLayer(max_payload, timeout_cycles=self.timeout_cycles)
        processor = CommandProcessor(self.config, output_fifo_depth=self.output_fifo_depth,
                                     max_payload=max_payload,
                                     check_descriptor=check_descriptor)
        # the engine keeps its own copy of the descriptor except where cells are what runs out:
        # on the ULX3S the drivers' descriptor registers lie far from the engine, behind the
        # owners' multiplexer, and the descriptor's fields feed compares all over the engine
        engine = PeriodicSparseEngine(self.config, layer_held=area_first(platform))
        # ABORT and the watchdog reset these (and the runner) from outside: they run in an
        # ``abortable`` domain, sync's clock with reset = sync's reset | abort, so each flip-flop
        # keeps a single synchronous reset (one more gate in all, not one per flip-flop). The
        # abort is registered first: the reset reaches every flip-flop of the engine, and the
        # link's handshake that raises it must not be the start of that path (one cycle later
        # changes nothing: the ACK is out, and the next command is a whole frame away)
        abort = Signal()
        abort_registered = Signal()
        m.d.sync += abort_registered.eq(abort)
        m.domains.abortable = abortable = ClockDomain("abortable", local=True)
        m.d.comb += [abortable.clk.eq(ClockSignal("sync")),
                     abortable.rst.eq(ResetSignal("sync") | abort_registered)]
        m.submodules.processor = DomainRenamer("abortable")(processor)
        m.submodules.engine = DomainRenamer("abortable")(engine)

        if self.bridge and self.bridge_beat_bytes > 1:
            m.submodules.bridge_rx = bridge_rx = BeatsToBytes(self.bridge_beat_bytes,
                                                              self.bridge_fifo_beats)
            m.submodules.bridge_tx = bridge_tx = BytesToBeats(
                self.bridge_beat_bytes, self.bridge_fifo_beats, self.bridge_flush_cycles)
            wiring.connect(m, wiring.flipped(self.rx_beats), bridge_rx.beats)
            wiring.connect(m, bridge_rx.bytes, link.rx_data)
            wiring.connect(m, link.tx_data, bridge_tx.bytes)
            wiring.connect(m, bridge_tx.beats, wiring.flipped(self.tx_beats))
        elif self.bridge:
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

        m.d.comb += processor.link_counters.eq(link.counters)
        runner = None
        if self.memory_bytes:
            runner = self._resident_mode(m, platform, link, processor, engine, max_payload)
        else:
            wiring.connect(m, link.command, processor.command)
            wiring.connect(m, link.command_payload, processor.command_payload)
            wiring.connect(m, processor.reply, link.reply)
            wiring.connect(m, processor.reply_payload, link.reply_payload)
            wiring.connect(m, processor.engine, engine)
        expired = 0
        if watchdog_cycles:
            # a streamed step (not a resident run, which needs no host) with a silent link
            m.submodules.watchdog = watchdog = Watchdog(watchdog_cycles)
            m.d.comb += [
                watchdog.armed.eq(engine.busy & ~(runner.running if runner is not None else 0)),
                watchdog.activity.eq(link.rx_data.valid | link.tx_data.valid),
            ]
            expired = watchdog.expired
        m.d.comb += abort.eq(processor.abort | expired)
        if self.bridge and self.bridge_beat_bytes > 1:
            # a hint for the bench, read by nothing on the board: the engine is computing (its
            # busy counter moved in the last ENGINE_ACTIVE_CYCLES cycles), so the clock must run
            # even while the host is silent
            busy_before = Signal.like(engine.busy_cycles)
            active_for = Signal(range(ENGINE_ACTIVE_CYCLES + 1))
            m.d.sync += busy_before.eq(engine.busy_cycles)
            with m.If(engine.busy_cycles != busy_before):
                m.d.sync += active_for.eq(ENGINE_ACTIVE_CYCLES)
            with m.Elif(active_for != 0):
                m.d.sync += active_for.eq(active_for - 1)
            running = runner.running if runner is not None else 0
            m.d.comb += self.engine_active.eq((active_for != 0) | running)
            return self._with_power_on_reset(m)
        return m

    def _resident_mode(self, m, platform, link, processor, engine, max_payload):
        """The memory, the program runner (in the ``abortable`` domain) and the resident
        commands beside the streamed processor (:mod:`psconv.hw.memory_commands`); returns the
        runner."""
        m.submodules.router = router = CommandRouter()
        m.submodules.memory_commands = memory_commands = MemoryCommandProcessor(
            self.memory_bytes, max_payload)
        runner = ProgramRunner(self.config)
        m.submodules.runner = DomainRenamer("abortable")(runner)
        memory_port = self._memory(m, platform)
        wiring.connect(m, link.command, router.link.command)
        wiring.connect(m, link.command_payload, router.link.command_payload)
        wiring.connect(m, router.link.reply, link.reply)
        wiring.connect(m, router.link.reply_payload, link.reply_payload)
        for name in ("command", "command_payload"):
            wiring.connect(m, getattr(router.streamed, name), getattr(processor, name))
            wiring.connect(m, getattr(router.resident, name), getattr(memory_commands, name))
        for name in ("reply", "reply_payload"):
            wiring.connect(m, getattr(processor, name), getattr(router.streamed, name))
            wiring.connect(m, getattr(memory_commands, name), getattr(router.resident, name))
        m.d.comb += [
            runner.start.eq(memory_commands.infer),
            runner.program_address.eq(memory_commands.program_address),
            memory_commands.running.eq(runner.running), memory_commands.done.eq(runner.done),
            memory_commands.steps_done.eq(runner.steps_done),
            memory_commands.cycles.eq(runner.cycles),
            memory_commands.memory_reads.eq(runner.memory_reads),
            memory_commands.memory_writes.eq(runner.memory_writes),
            memory_commands.engine_busy.eq(engine.busy),
        ]
        m.submodules.memory_arbiter = arbiter = MemoryPortArbiter()
        wiring.connect(m, memory_commands.memory, arbiter.commands)
        wiring.connect(m, runner.memory, arbiter.runner)
        wiring.connect(m, arbiter.memory, memory_port)
        m.d.comb += [arbiter.running.eq(runner.running),
                     memory_commands.bad_rule.eq(runner.bad_rule),
                     memory_commands.input_free.eq(runner.input_free),
                     memory_commands.input_address.eq(runner.input_address),
                     memory_commands.input_bytes.eq(runner.input_bytes)]
        connect_engine_owners(m, engine, processor.engine, runner.engine, runner.running,
                              domain="abortable")
        return runner

    def _memory(self, m, platform):
        """The resident memory's port: the board's SDRAM (its LiteDRAM core, the init
        sequencer, the chip clock 90 degrees behind ``sync``, which this top then makes from
        the PLL) or ``memory_bytes`` of block RAM."""
        core = self.sdram_core
        if core is None:
            m.submodules.memory = memory = OnChipMemory(self.memory_bytes, self.external_memory)
            return memory.port
        if core.variant == "sim":
            m.submodules.sdram = sdram = SDRAM.from_core(core, pins="sim")
            wiring.connect(m, sdram.sdram, wiring.flipped(self.sdram))
            return self._word_bridge(m, core, sdram)
        plan = getattr(platform, "psconv_clock", None)
        if plan is None or plan.pll is None:
            raise PsconvError("board top: the SDRAM needs a board build whose clock comes from "
                              "the PLL (psconv build); for simulation use memory_bytes")
        platform.add_file("litedram_core.v", core.verilog_text())
        pins = platform.request("sdram", 0, dir="-")
        m.submodules.clocking = SDRAMClocking(plan.pll, plan.board_hz,
                                              platform.psconv_board.clock_resource, pins.clk)
        m.submodules.sdram = sdram = SDRAM.from_core(core, pins=pins)
        return self._word_bridge(m, core, sdram)

    @staticmethod
    def _word_bridge(m, core, sdram):
        """The memory port onto the SDRAM's 16-bit native port."""
        m.submodules.sdram_bridge = bridge = WordMemoryBridge(core.address_width)
        for name in ("cmd", "wdata"):
            wiring.connect(m, getattr(bridge, name), getattr(sdram, name))
        wiring.connect(m, sdram.rdata, bridge.rdata)
        return bridge.port

    @staticmethod
    def _with_power_on_reset(core):
        """``core`` in a local ``board`` domain on ``sync``'s clock, reset for
        :data:`POWER_ON_RESET_CYCLES` after time 0 instead of by ``sync``'s reset input (see the
        module docstring: an input reaching every next-state function slows Verilator down)."""
        m = Module()
        m.submodules.core = DomainRenamer("board")(core)
        m.domains.board = board = ClockDomain("board", local=True)
        powering_up = Signal(range(POWER_ON_RESET_CYCLES + 1), init=POWER_ON_RESET_CYCLES,
                             reset_less=True)
        with m.If(powering_up != 0):
            m.d.sync += powering_up.eq(powering_up - 1)
        m.d.comb += [board.clk.eq(ClockSignal("sync")), board.rst.eq(powering_up != 0)]
        return m
