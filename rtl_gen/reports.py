"""What Yosys and nextpnr say about a design, read into figures: the one reader of their output.

* :func:`yosys_cell_counts`: the cell counts of Yosys' last ``stat`` (in a log or a
  ``tee -o`` listing).
* :func:`read_nextpnr_report`: nextpnr's ``--report`` JSON (utilization, Fmax per clock net,
  critical paths) as a :class:`NextpnrReport`.
* :func:`routing_detail`, :func:`estimated_fmax_mhz`: what nextpnr's log says while it routes
  and after placement only.
* :func:`parse_nextpnr_report`: the :class:`BuildReport` of a board build (utilization against
  the board's datasheet totals, Fmax per clock domain, the clock plan, the files).

The board flow (:mod:`psconv.rtl_gen.build`) and the engine's Fmax measurement
(:mod:`psconv.rtl_gen.fmax`) both read the tools' output here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from psconv.errors import PsconvError

from .boards import get_board
from .clocking import ClockPlan

DESIGN_NAME = "top"
"""Base name of every file of a board build (``top.il``, ``top.tim``, ``top.bit``...): the flow
names its files with it, the report finds the bitstream by it."""


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
    inputs: dict = field(default_factory=dict)
    """What the build was made from, as its caller recorded it (``psconv build``: the design,
    engine configuration, memory, clock, baud, placer and router): the same record means the
    same build, so a finished build folder can be reused (``psconv bench impl --reuse``)."""

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
            "inputs": self.inputs,
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


def yosys_cell_counts(path) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (``top.rpt``) or in the listing
    ``tee -o FILE stat`` writes, e.g. ``{"LUT4": 12406, "DP16KD": 121}``; empty if the file is
    missing or has no ``stat``.

    Reads both the pre-0.50 layout (``Number of cells: N`` then ``NAME COUNT`` lines) and the
    newer one (``COUNT NAME`` lines under a ``=== top ===`` header).
    """
    try:
        text = Path(path).read_text(errors="replace")
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


@dataclass(frozen=True)
class NextpnrReport:
    """nextpnr's ``--report`` JSON: the parts the flows take their figures from."""

    path: Path
    utilization: dict
    """Cell type -> ``{"used": N, "available": M}``."""
    fmax: dict
    """Clock net -> ``{"achieved": MHz, "constraint": MHz}``, in the file's order."""
    critical_paths: list
    """nextpnr's ``critical_paths`` entries, each a ``path`` of timed steps."""

    def used(self, cell: str | None) -> int:
        """How many ``cell`` cells the design uses (0 when there are none, or for ``None``)."""
        return int(self.utilization.get(cell, {}).get("used", 0)) if cell else 0

    def critical_path(self) -> list[tuple[float, str, str]]:
        """The longest of the critical paths as ``(delay_ns, "type:from cell", "to cell")``
        steps, in path order; empty when the report has none."""
        best = None
        for p in self.critical_paths:
            total = sum(step.get("delay", 0.0) for step in p.get("path", []))
            if best is None or total > best[0]:
                best = (total, p)
        if best is None:
            return []
        rows = []
        for step in best[1]["path"]:
            src = step.get("from", {}).get("cell", "?")
            dst = step.get("to", {}).get("cell", "?")
            rows.append((step.get("delay", 0.0), f"{step.get('type', '')}:{src}", dst))
        return rows


def read_nextpnr_report(path) -> NextpnrReport:
    """Read nextpnr's ``--report`` JSON; a missing or broken file raises :class:`PsconvError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PsconvError(f"build report: cannot read nextpnr's report {path}: {e}") from None
    return NextpnrReport(path=path, utilization=data.get("utilization", {}),
                         fmax=data.get("fmax", {}), critical_paths=data.get("critical_paths", []))


def estimated_fmax_mhz(nextpnr_log) -> float | None:
    """The last ``Max frequency for clock`` figure in nextpnr's log, or ``None``. After
    placement only (``--no-route``) the report has no timing; the log has the estimate."""
    text = Path(nextpnr_log).read_text(errors="replace")
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", text)
    return float(found[-1]) if found else None


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


_CELLS = {
    # family: (luts, ffs, dsps, brams, sprams) cell names in nextpnr's utilization report
    "ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", None),
    "ice40": ("ICESTORM_LC", "ICESTORM_LC", "ICESTORM_DSP", "ICESTORM_RAM", "ICESTORM_SPRAM"),
}


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
    nextpnr = read_nextpnr_report(path)
    used = nextpnr.used
    lut_cell, ff_cell, dsp_cell, bram_cell, spram_cell = _CELLS[board.family]
    totals = board.resources
    luts = ResourceUse("LUTs", lut_cell, used(lut_cell), totals.luts)
    if board.family == "ice40":
        counts = yosys_cell_counts(yosys_log) if yosys_log else {}
        ff_used = sum(n for name, n in counts.items() if name.startswith("SB_DFF"))
        ffs = ResourceUse("flip-flops", "SB_DFF*", ff_used, totals.ffs)
    else:
        ffs = ResourceUse("flip-flops", ff_cell, used(ff_cell), totals.ffs)
    dsps = ResourceUse("DSPs", dsp_cell, used(dsp_cell), totals.dsps)
    brams = ResourceUse("block RAMs", bram_cell, used(bram_cell), totals.brams)
    sprams = (ResourceUse("SPRAMs", spram_cell, used(spram_cell), totals.sprams)
              if spram_cell else None)

    clocks = []
    for net, entry in sorted(nextpnr.fmax.items()):
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
        bitstream=(Path(bitstream) if bitstream
                   else nextpnr.path.with_name(DESIGN_NAME + board.bitstream_suffix)),
        outdir=nextpnr.path.parent, build_seconds=build_seconds,
        cells={cell: dict(entry) for cell, entry in sorted(nextpnr.utilization.items())
               if isinstance(entry, dict) and entry.get("used")},
    )


def _clock_domain(net: str) -> str | None:
    """The Amaranth clock domain a nextpnr clock net belongs to (``$glbnet$cd_sync.clk`` ->
    ``sync``), or ``None`` for a net that is not a domain's clock."""
    match = re.search(r"(?:^|[$.])cd_([A-Za-z0-9_]+)\.clk$", net)
    return match.group(1) if match else None

