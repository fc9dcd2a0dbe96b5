"""What a run on the board reports: per engine step and for a whole program.

:class:`StepReport` holds one step's link bytes, device counters and verdict; :class:`RunReport`
a whole program's steps, per-layer and logit verdicts, and the printable table and summary that
``psconv run`` shows. Filled in by :class:`psconv.firmware.driver.Driver`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepReport:
    """One engine step as run on the board."""

    layer: str
    tile: int
    tiles: int
    shape: str
    wire_bytes_sent: int          # frames to the board, retransmissions included
    wire_bytes_received: int      # frames from the board
    payload_bytes_sent: int       # what the engine was given: descriptor, masks, quant, weights, fmap, residual
    payload_bytes_received: int   # output bytes
    requests: int
    busy_cycles: int
    stall_cycles: int
    idle_cycles: int
    macs: int
    useful_macs: int
    multipliers: int
    wall_s: float
    bit_exact: bool | None = None
    mismatch: str | None = None

    @property
    def name(self) -> str:
        return self.layer if self.tiles == 1 else f"{self.layer}[{self.tile}/{self.tiles}]"

    @property
    def cycles(self) -> int:
        """Device cycles from START to done (busy + stall + idle)."""
        return self.busy_cycles + self.stall_cycles + self.idle_cycles

    @property
    def utilization(self) -> float:
        """MACs / (multipliers x device cycles): includes the time spent waiting for the link."""
        return self.macs / (self.multipliers * self.cycles) if self.cycles else 0.0

    @property
    def compute_utilization(self) -> float:
        """MACs / (multipliers x busy cycles): the engine while it had work."""
        return self.macs / (self.multipliers * self.busy_cycles) if self.busy_cycles else 0.0

    def to_json(self) -> dict:
        return {"layer": self.layer, "tile": self.tile, "tiles": self.tiles, "shape": self.shape,
                "wire_bytes_sent": self.wire_bytes_sent,
                "wire_bytes_received": self.wire_bytes_received,
                "payload_bytes_sent": self.payload_bytes_sent,
                "payload_bytes_received": self.payload_bytes_received,
                "requests": self.requests, "busy_cycles": self.busy_cycles,
                "stall_cycles": self.stall_cycles, "idle_cycles": self.idle_cycles,
                "cycles": self.cycles, "macs": self.macs, "useful_macs": self.useful_macs,
                "utilization": self.utilization, "compute_utilization": self.compute_utilization,
                "wall_s": self.wall_s, "bit_exact": self.bit_exact, "mismatch": self.mismatch}


@dataclass
class RunReport:
    """A whole program on the board, checked against the golden model."""

    model: str
    multipliers: int
    steps: list = field(default_factory=list)
    layers: dict = field(default_factory=dict)   # layer name -> mismatch text or None (bit-exact)
    logits: list | None = None
    golden_logits: list | None = None
    wall_s: float = 0.0
    link_summary: str = ""
    device_link: dict = field(default_factory=dict)
    transport: str = ""
    faults_injected: int = 0
    fault_summary: str = ""

    @property
    def logits_bit_exact(self) -> bool:
        return self.logits is not None and self.logits == self.golden_logits

    @property
    def bit_exact(self) -> bool:
        return (self.logits_bit_exact and all(s.bit_exact for s in self.steps)
                and all(v is None for v in self.layers.values()))

    @property
    def first_mismatch(self) -> str | None:
        for name, problem in self.layers.items():
            if problem:
                return problem
        if not self.logits_bit_exact:
            return f"logits {self.logits} differ from the golden logits {self.golden_logits}"
        return None

    def total(self, attribute: str) -> int:
        return sum(getattr(s, attribute) for s in self.steps)

    @property
    def cycles(self) -> int:
        return self.total("cycles")

    @property
    def utilization(self) -> float:
        """Whole network: MACs / (multipliers x device cycles of all steps)."""
        cycles = self.cycles
        return self.total("macs") / (self.multipliers * cycles) if cycles else 0.0

    @property
    def compute_utilization(self) -> float:
        busy = self.total("busy_cycles")
        return self.total("macs") / (self.multipliers * busy) if busy else 0.0

    def table(self) -> str:
        """The per-step table: bytes, device cycles, utilization, wall time, bit-exact."""
        head = (f"{'step':<22} {'shape':<24} {'sent B':>9} {'recv B':>8} {'cycles':>9} "
                f"{'stall':>8} {'util':>6} {'busy util':>9} {'wall s':>7}  bit-exact")
        lines = [head, "-" * len(head)]
        for s in self.steps:
            lines.append(
                f"{s.name:<22} {s.shape:<24} {s.wire_bytes_sent:>9} {s.wire_bytes_received:>8} "
                f"{s.cycles:>9} {s.stall_cycles:>8} {100 * s.utilization:>5.1f}% "
                f"{100 * s.compute_utilization:>8.1f}% {s.wall_s:>7.2f}  "
                f"{'yes' if s.bit_exact else 'NO'}")
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<22} {'':<24} {self.total('wire_bytes_sent'):>9} "
            f"{self.total('wire_bytes_received'):>8} {self.cycles:>9} "
            f"{self.total('stall_cycles'):>8} {100 * self.utilization:>5.1f}% "
            f"{100 * self.compute_utilization:>8.1f}% {self.total('wall_s'):>7.2f}  "
            f"{'yes' if all(s.bit_exact for s in self.steps) else 'NO'}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"model": self.model, "multipliers": self.multipliers,
                "steps": [s.to_json() for s in self.steps], "layers": self.layers,
                "logits": self.logits, "golden_logits": self.golden_logits,
                "bit_exact": self.bit_exact, "utilization": self.utilization,
                "compute_utilization": self.compute_utilization, "cycles": self.cycles,
                "wall_s": self.wall_s, "link": self.link_summary, "device_link": self.device_link,
                "transport": self.transport, "faults_injected": self.faults_injected,
                "fault_summary": self.fault_summary}

    def summary_lines(self) -> list[str]:
        """Logits, verdict, utilization and link figures as printable lines."""
        lines = [f"logits (board):  {self.logits}", f"logits (golden): {self.golden_logits}"]
        bad = [name for name, problem in self.layers.items() if problem]
        if self.bit_exact:
            lines.append(f"verdict: BIT-EXACT: all {len(self.layers)} layers and the logits equal "
                         f"the golden model")
        else:
            lines.append(f"verdict: NOT bit-exact: {len(bad)} layer(s) differ; first: "
                         f"{self.first_mismatch}")
        lines.append(
            f"multiplier utilization: {100 * self.utilization:.1f} % of {self.multipliers} "
            f"multipliers over {self.cycles} device cycles (START to done, waiting for the link "
            f"included); {100 * self.compute_utilization:.1f} % over the engine's busy cycles")
        lines.append(f"link: {self.link_summary}")
        if self.device_link:
            lines.append("device link counters: " + ", ".join(
                f"{k}={v}" for k, v in self.device_link.items()))
        if self.fault_summary:
            lines.append(f"faults injected: {self.faults_injected} ({self.fault_summary}); "
                         + ("all survived (bit-exact)" if self.bit_exact else "result NOT bit-exact"))
        lines.append(f"wall time: {self.wall_s:.1f} s over {self.transport or 'the link'}")
        return lines
