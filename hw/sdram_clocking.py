"""The SDRAM chip's clock on an ECP5 board: ``sync`` from the PLL and a copy 90 degrees later.

:class:`SDRAMClocking` makes the ``sync`` domain from the board oscillator with an ECP5
``EHXPLLL`` (output CLKOP, also its feedback) and a second output CLKOS at the same frequency
90 degrees later, which clocks the SDRAM chip through a DDR output register (D0 = 1, D1 = 0:
the pin is a copy of the shifted clock, launched from an I/O cell like the command and data
pins). This is the LiteX ULX3S target's arrangement: the chip samples each command a quarter
period after the controller's I/O flip-flops launched it, and the controller's input
flip-flops sample read data three quarters of a period after the chip launched it.
``sync`` is held in reset until the PLL locks.
"""

from amaranth import ClockDomain, ClockSignal, Module, Signal
from amaranth.hdl import Instance
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import Out

from psconv.errors import PsconvError


def pll_phase(divider: int, degrees: float) -> tuple[int, int]:
    """ECP5 ``CLKOS_CPHASE``/``CLKOS_FPHASE`` for an output of ``divider`` VCO cycles per
    period shifted by ``degrees`` from CLKOP (whose ``CPHASE`` is ``divider - 1``): whole VCO
    cycles, then eighths of one."""
    eighths = round(degrees / 360 * divider * 8)
    return divider - 1 + eighths // 8, eighths % 8


class SDRAMClocking(wiring.Component):
    """``sync`` at ``pll["out_hz"]`` and the SDRAM clock pin 90 degrees behind it.

    ``pll``: the ECP5 dividers of :func:`psconv.rtl_gen.clocking.plan_clock`'s plan
    (``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``, ``out_hz``); ``clock_resource``: the
    oscillator; ``sdram_clk_pin``: the SDRAM resource's ``clk`` pin (``dir="-"``).
    ``locked`` is the PLL's lock.
    """

    locked: Out(1)

    def __init__(self, pll: dict, oscillator_hz: float, clock_resource: str, sdram_clk_pin):
        if pll.get("primitive") != "EHXPLLL":
            raise PsconvError(f"SDRAM clocking: needs an ECP5 EHXPLLL plan, got {pll!r}")
        self.pll = pll
        self.oscillator_hz = oscillator_hz
        self.clock_resource = clock_resource
        self.sdram_clk_pin = sdram_clk_pin
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        pll = self.pll
        clk, clk_90 = Signal(name="pll_clk"), Signal(name="pll_clk_90")
        pad = platform.request(self.clock_resource, 0, dir="-")
        m.submodules.clk_buf = clk_in = io.Buffer("i", pad)
        cphase, fphase = pll_phase(pll["CLKOP_DIV"], 90)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.oscillator_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{pll['out_hz'] / 1e6:g}",
            a_FREQUENCY_PIN_CLKOS=f"{pll['out_hz'] / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_CLKOP_ENABLE="ENABLED", p_CLKOS_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=pll["CLKI_DIV"], p_CLKFB_DIV=pll["CLKFB_DIV"],
            p_CLKOP_DIV=pll["CLKOP_DIV"], p_CLKOP_CPHASE=pll["CLKOP_DIV"] - 1,
            p_CLKOP_FPHASE=0, p_CLKOS_DIV=pll["CLKOP_DIV"], p_CLKOS_CPHASE=cphase,
            p_CLKOS_FPHASE=fphase,
            i_CLKI=clk_in.i, i_CLKFB=clk, o_CLKOP=clk, o_CLKOS=clk_90, o_LOCK=self.locked,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
            i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        )
        platform.add_clock_constraint(clk, pll["out_hz"])
        m.domains.sync = ClockDomain("sync")
        m.domains.sdram_90 = ClockDomain("sdram_90", reset_less=True)
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("sdram_90").eq(clk_90)]
        m.submodules.reset_sync = ResetSynchronizer(~self.locked, domain="sync")
        m.submodules.sdram_clk = clk_out = io.DDRBuffer("o", self.sdram_clk_pin,
                                                       o_domain="sdram_90")
        m.d.comb += [clk_out.o[0].eq(1), clk_out.o[1].eq(0)]
        return m
