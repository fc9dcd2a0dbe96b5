"""Run the SDRAM chip model in Verilator: alone (driven at its pins by a command script), or
behind the LiteDRAM controller and :class:`psconv.hw.sdram.SDRAM` (see :class:`SDRAMSystemRTL`).

Builds go through :func:`psconv.sim.runner.build` (cached by Verilog text) under
``build/rtl/sdram-*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from psconv.errors import PsconvError

from .sdram_chip import SdramTiming, Violation, part_timing, standalone_top, violation_name

DEFAULT_BUILD_ROOT = Path("build") / "rtl"
CHIP_TB = "psconv.sim.tb.sdram_chip_tb"


def mode_register(cl: int = 2, burst_length: int = 1) -> int:
    """LOAD MODE REGISTER address bits: burst length (A2:0), sequential (A3 = 0), CL (A6:4)."""
    codes = {1: 0, 2: 1, 4: 2, 8: 3}
    if burst_length not in codes:
        raise PsconvError(f"burst length {burst_length} not allowed; allowed: 1, 2, 4, 8")
    return codes[burst_length] | (cl << 4)


def init_steps(timing: SdramTiming, clk_hz: float, cl: int = 2, burst_length: int = 1) -> list:
    """The datasheet init sequence as chip-model steps, each spaced by exactly its rule:
    power-up wait, PRECHARGE ALL, tRP, AUTO REFRESH, tRFC, AUTO REFRESH, tRFC, LOAD MODE, tMRD."""
    c = timing.cycles(clk_hz)
    return [
        {"cmd": "NOP", "wait": c["power_up"]},
        {"cmd": "PRE", "a": 1 << 10, "wait": c["tRP"] - 1},
        {"cmd": "REF", "wait": c["tRFC"] - 1},
        {"cmd": "REF", "wait": c["tRFC"] - 1},
        {"cmd": "LMR", "a": mode_register(cl, burst_length), "wait": c["tMRD"] - 1},
    ]


@dataclass
class ChipRun:
    """What one scenario did: the first violation (``Violation.NONE`` if none), read data by
    edge, and the edge each step's command was registered on."""

    violation: Violation
    violation_cycle: int
    reads: dict
    edges: list
    refresh_count: int
    ready: bool

    @property
    def rule(self) -> str:
        return violation_name(self.violation)


class ChipModelRTL:
    """The chip model for one part at one clock, built once, running command scenarios."""

    def __init__(self, part: str = "MT48LC16M16A2-75", clk_hz: float = 50e6, build_root=None):
        from psconv.sim import runner

        self.timing = part_timing(part)
        self.clk_hz = clk_hz
        self.cycles = self.timing.cycles(clk_hz)
        root = Path(build_root or DEFAULT_BUILD_ROOT) / f"sdram-chip-{self.timing.part}-{clk_hz / 1e6:g}MHz"
        root.mkdir(parents=True, exist_ok=True)
        verilog = root / "sdram_chip_top.v"
        text = standalone_top(self.timing, clk_hz)
        if not verilog.is_file() or verilog.read_text() != text:
            verilog.write_text(text)
        self.root = root
        self.build = runner.build(verilog, "sdram_chip_top", root / "sim")

    def run(self, steps: list) -> ChipRun:
        """Drive ``steps`` (see :mod:`psconv.sim.tb.sdram_chip_tb`) and report."""
        from psconv.sim import runner

        results = self.build.build_dir.parent / "chip_results.json"
        results.unlink(missing_ok=True)
        runner.run(CHIP_TB, build_dir=self.build.build_dir,
                   data={"steps": steps, "period_ns": 1e9 / self.clk_hz,
                         "results_path": str(results.resolve())})
        r = json.loads(results.read_text())
        return ChipRun(violation=Violation(r["code"]) if r["violation"] else Violation.NONE,
                       violation_cycle=r["violation_cycle"],
                       reads={edge: value for edge, value in r["reads"]}, edges=r["edges"],
                       refresh_count=r["refresh_count"], ready=bool(r["ready"]))
