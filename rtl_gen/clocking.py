"""The ``sync`` clock of a board build: the oscillator itself or a PLL made to a requested rate.

:func:`plan_clock` says which frequency a build will really get before the top is built, so a
top that divides its clock (a UART's baud divisor) is constructed for it; :func:`make_platform`
gives the board's amaranth platform whose missing ``sync`` domain follows that plan. With a
PLL (ECP5 ``EHXPLLL``, iCE40 ``SB_PLL40_PAD``) ``sync`` is held in reset until the PLL locks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from psconv.errors import PsconvError

from .boards import Board, get_board


@dataclass(frozen=True)
class ClockPlan:
    """How the ``sync`` domain is clocked on a board.

    ``pll`` is ``None`` when ``sync`` is the oscillator itself; otherwise the PLL primitive's
    name and parameters. ``actual_hz`` is what the top must be built for.
    """

    board_hz: float
    requested_hz: float
    actual_hz: float
    pll: dict | None = None

    @property
    def actual_mhz(self) -> float:
        return self.actual_hz / 1e6

    @property
    def requested_mhz(self) -> float:
        return self.requested_hz / 1e6

    def to_json(self) -> dict:
        return {"board_hz": self.board_hz, "requested_hz": self.requested_hz,
                "actual_hz": self.actual_hz, "pll": self.pll}


# ECP5 sysCLOCK PLL limits (FPGA-TN-02200; the same as Project Trellis' ecppll).
_ECP5_PFD_HZ = (3.125e6, 400e6)
_ECP5_VCO_HZ = (400e6, 800e6)
_ECP5_OUT_HZ = (3.125e6, 400e6)
# iCE40 PLL limits (iCE40 sysCLOCK PLL design guide; the same as icepll).
_ICE40_PFD_HZ = (10e6, 133e6)
_ICE40_VCO_HZ = (533e6, 1066e6)
_ICE40_OUT_HZ = (16e6, 275e6)

_PLL_TOLERANCE = 0.01
"""A PLL plan must land within 1 % of the requested frequency."""


def _ecp5_pll(fin: float, fout: float) -> dict | None:
    best = None
    for clki_div in range(1, 129):
        fpfd = fin / clki_div
        if not _ECP5_PFD_HZ[0] <= fpfd <= _ECP5_PFD_HZ[1]:
            continue
        for clkfb_div in range(1, 81):
            f = fpfd * clkfb_div
            if not _ECP5_OUT_HZ[0] <= f <= _ECP5_OUT_HZ[1]:
                continue
            for clkop_div in range(1, 129):
                fvco = f * clkop_div
                if not _ECP5_VCO_HZ[0] <= fvco <= _ECP5_VCO_HZ[1]:
                    continue
                # Prefer the smallest error, then the highest VCO (lower jitter).
                key = (abs(f - fout), -fvco)
                if best is None or key < best[0]:
                    best = (key, {"primitive": "EHXPLLL", "CLKI_DIV": clki_div,
                                  "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                                  "vco_hz": fvco, "out_hz": f})
    return best[1] if best else None


def _ice40_pll(fin: float, fout: float) -> dict | None:
    best = None
    for divr in range(16):
        fpfd = fin / (divr + 1)
        if not _ICE40_PFD_HZ[0] <= fpfd <= _ICE40_PFD_HZ[1]:
            continue
        for divf in range(128):
            fvco = fpfd * (divf + 1)          # FEEDBACK_PATH "SIMPLE"
            if not _ICE40_VCO_HZ[0] <= fvco <= _ICE40_VCO_HZ[1]:
                continue
            for divq in range(1, 7):
                f = fvco / (1 << divq)
                if not _ICE40_OUT_HZ[0] <= f <= _ICE40_OUT_HZ[1]:
                    continue
                key = (abs(f - fout), -fvco)
                if best is None or key < best[0]:
                    filter_range = next((i + 1 for i, limit in enumerate(
                        (17e6, 26e6, 44e6, 66e6, 101e6)) if fpfd < limit), 6)
                    best = (key, {"primitive": "SB_PLL40_PAD", "DIVR": divr, "DIVF": divf,
                                  "DIVQ": divq, "FILTER_RANGE": filter_range,
                                  "vco_hz": fvco, "out_hz": f})
    return best[1] if best else None


def plan_clock(board, clock_mhz: float | None = None) -> ClockPlan:
    """The ``sync`` clock a build for ``board`` at ``clock_mhz`` will have.

    ``None`` (or the oscillator's own frequency) uses the oscillator directly; anything else
    needs the device's PLL and gets its closest achievable frequency (within 1 %).
    """
    board = get_board(board)
    fin = board.clock_hz
    if clock_mhz is None:
        return ClockPlan(fin, fin, fin)
    if (isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float))
            or not math.isfinite(clock_mhz) or clock_mhz <= 0):
        raise PsconvError(f"clock: {clock_mhz!r} MHz is not a positive number")
    fout = float(clock_mhz) * 1e6
    if abs(fout - fin) <= 1e-6 * fin:
        return ClockPlan(fin, fout, fin)
    low, high = _ECP5_OUT_HZ if board.family == "ecp5" else _ICE40_OUT_HZ
    if not low <= fout <= high:
        raise PsconvError(
            f"clock: {clock_mhz:g} MHz cannot be made on {board.name}: its PLL outputs "
            f"{low / 1e6:g}..{high / 1e6:g} MHz (or use the {board.clock_mhz:g} MHz oscillator "
            f"itself)")
    pll = _ecp5_pll(fin, fout) if board.family == "ecp5" else _ice40_pll(fin, fout)
    if pll is None or abs(pll["out_hz"] - fout) > _PLL_TOLERANCE * fout:
        got = f"; the closest is {pll['out_hz'] / 1e6:.3f} MHz" if pll else ""
        raise PsconvError(
            f"clock: the {board.name} PLL cannot make {clock_mhz:g} MHz from "
            f"{board.clock_mhz:g} MHz within {_PLL_TOLERANCE:.0%}{got}")
    return ClockPlan(fin, fout, pll["out_hz"], pll)


class _PllDomain(Elaboratable):
    """The ``sync`` domain from the board's PLL; reset is held until the PLL locks."""

    def __init__(self, board: Board, plan: ClockPlan):
        self.board = board
        self.plan = plan

    def elaborate(self, platform):
        m = Module()
        pll = self.plan.pll
        clk = Signal(name="pll_clk")
        locked = Signal(name="pll_locked")
        if pll["primitive"] == "EHXPLLL":
            clk_pad = platform.request(self.board.clock_resource, 0, dir="-")
            m.submodules.clk_buf = clk_in = io.Buffer("i", clk_pad)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self.plan.board_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.plan.actual_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
                p_CLKI_DIV=pll["CLKI_DIV"], p_CLKFB_DIV=pll["CLKFB_DIV"],
                p_CLKOP_DIV=pll["CLKOP_DIV"],
                p_CLKOP_CPHASE=pll["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0,
                i_CLKI=clk_in.i, i_CLKFB=clk, o_CLKOP=clk, o_LOCK=locked,
                i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
                i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            )
        else:
            # SB_PLL40_PAD takes the pad itself: request the oscillator pin without a buffer.
            pad = platform.request(self.board.clock_resource, 0, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=pll["DIVR"], p_DIVF=pll["DIVF"], p_DIVQ=pll["DIVQ"],
                p_FILTER_RANGE=pll["FILTER_RANGE"],
                i_PACKAGEPIN=pad.io, o_PLLOUTGLOBAL=clk, o_LOCK=locked,
                i_RESETB=1, i_BYPASS=0,
            )
        platform.add_clock_constraint(clk, self.plan.actual_hz)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return m


def make_platform(board, plan: ClockPlan | None = None):
    """A fresh platform for ``board`` whose missing ``sync`` domain follows ``plan``.

    The instance carries ``psconv_board`` and ``psconv_clock`` (the :class:`ClockPlan`) for tops
    that want to know where they run, and ``psconv_dsp_primitives`` (the board's
    :attr:`~psconv.rtl_gen.boards.Board.dsp_primitives`, read by :mod:`psconv.hw.dsp`).
    """
    board = get_board(board)
    plan = plan or plan_clock(board)
    base = board.platform_class

    class PsconvPlatform(base):
        def create_missing_domain(self, name):
            if name == "sync" and plan.pll is not None:
                return _PllDomain(board, plan)
            return super().create_missing_domain(name)

    PsconvPlatform.__name__ = PsconvPlatform.__qualname__ = f"Psconv{base.__name__}"
    platform = PsconvPlatform()
    platform.psconv_board = board
    platform.psconv_clock = plan
    platform.psconv_dsp_primitives = board.dsp_primitives
    return platform

