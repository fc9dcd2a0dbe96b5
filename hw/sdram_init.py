"""SDRAM init sequencer: the CPU-less stand-in for LiteX's ``sdram_init()`` on an SDR PHY.

A LiteDRAM core generated without a CPU powers up with its DFI in software control and its
user ports blocked (``init_done`` low). This component plays the init program through the
core's control bus (``wb_ctrl``, 32-bit Wishbone classic, word addresses), one CSR write per
step, exactly as ``init_sequence()`` in the generated ``sdram_phy.h`` would (CKE high, wait,
PRECHARGE ALL, LOAD MODE, PRECHARGE ALL, 2 x AUTO REFRESH, LOAD MODE), then hands the DFI to
the controller (``dfii_control`` = SEL) and sets ``ddrctrl_init_done``.

Contract:

* ``program`` is a sequence of :class:`InitWrite` (byte address on the control bus, value,
  cycles to wait after the write is acknowledged). :func:`init_program` builds it from the
  parsed header, stretching every wait to what the SDRAM needs: the power-up time after CKE
  rises, tRP after a precharge, tRFC after a refresh, tMRD after a mode-register load (the
  header's own ``cdelay`` counts CPU loop iterations, not clocks).
* After reset the sequencer starts at once; ``done`` rises after the last write and stays
  high. ``bus`` holds ``cyc``/``stb`` high from the start of a write until ``ack``.
"""

import math
from dataclasses import dataclass

from amaranth import Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

WISHBONE_CTRL = wiring.Signature({
    "adr": Out(30), "dat_w": Out(32), "sel": Out(4), "cyc": Out(1), "stb": Out(1),
    "we": Out(1), "ack": In(1),
})
"""The write side of a 32-bit Wishbone classic master (word addresses), as LiteDRAM's
``wb_ctrl`` slave takes it; reads are never needed for init."""

SDR_TMRD_CLOCKS = 2
"""tMRD of the supported SDR parts: 2 clocks (Micron), 14 ns (Alliance: 2 clocks at 143 MHz)."""

POWER_UP_US = 200.0
"""Wait after CKE rises before the first command. Micron's datasheet asks for 100 us; twice
that is taken as margin for other vendors' parts (it costs 0.2 ms once per power-up)."""

@dataclass(frozen=True)
class InitWrite:
    """One control-bus write: ``address`` (bytes), ``value``, then ``wait`` idle clocks."""

    address: int
    value: int
    wait: int = 0
    comment: str = ""

def init_program(steps, csrs: dict, clk_hz: float, controller_cycles: dict,
                 power_up_us: float = POWER_UP_US) -> list[InitWrite]:
    """Writes for :class:`SDRAMInit` from parsed init ``steps`` (objects with ``csr``,
    ``value``, ``cdelay``, ``command``, ``comment``, e.g. ``rtl_gen.litedram.InitStep``),
    the CSR map (name -> byte address) and the controller's timings in clocks (``tRP``,
    ``tRFC`` as LiteDRAM computed them for the module)."""
    minimum = {
        "PRECHARGE_ALL": int(controller_cycles["tRP"]),
        "AUTO_REFRESH": int(controller_cycles["tRFC"]),
        "MODE_REGISTER": SDR_TMRD_CLOCKS,
    }
    power_up = math.ceil(power_up_us * 1e-6 * clk_hz)
    program = []
    for step in steps:
        if step.csr not in csrs:
            raise PsconvError(f"SDRAM init: register {step.csr!r} is not in the CSR map "
                              f"({', '.join(sorted(csrs))})")
        wait = int(step.cdelay)
        if step.command is not None:
            wait = max(wait, minimum[step.command])
        if step.csr == "sdram_dfii_control" and step.value & 0x2 and not step.value & 0x1:
            wait = max(wait, power_up)  # CKE high in software control: the power-up wait
        program.append(InitWrite(csrs[step.csr], int(step.value), wait, step.comment))
    return program

class SDRAMInit(wiring.Component):
    """Plays ``program`` (a list of :class:`InitWrite`) on ``bus``; ``done`` when finished."""

    bus: Out(WISHBONE_CTRL)
    done: Out(1)

    def __init__(self, program):
        program = list(program)
        if not program:
            raise PsconvError("SDRAM init: the program is empty")
        for write in program:
            if write.address % 4 or not 0 <= write.address < 1 << 32:
                raise PsconvError(f"SDRAM init: CSR address {write.address:#x} is not a "
                                  f"32-bit word address")
        self.program = program
        wait_bits = max(1, max(w.wait for w in program).bit_length())
        self.entry = data.StructLayout({"adr": 30, "value": 32, "wait": wait_bits})
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        n = len(self.program)
        rom = Memory(shape=self.entry, depth=n, init=[
            {"adr": w.address >> 2, "value": w.value, "wait": w.wait} for w in self.program])
        m.submodules.rom = rom
        read = rom.read_port(domain="comb")
        index = Signal(range(n + 1))
        countdown = Signal(self.entry["wait"].shape)
        m.d.comb += read.addr.eq(index)
        entry = read.data

        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [
                    self.bus.cyc.eq(1), self.bus.stb.eq(1), self.bus.we.eq(1),
                    self.bus.sel.eq(0xF), self.bus.adr.eq(entry.adr),
                    self.bus.dat_w.eq(entry.value),
                ]
                with m.If(self.bus.ack):
                    m.d.sync += countdown.eq(entry.wait)
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(countdown != 0):
                    m.d.sync += countdown.eq(countdown - 1)
                with m.Elif(index == n - 1):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += index.eq(index + 1)
                    m.next = "WRITE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
        return m
