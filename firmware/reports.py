"""What a run on the board reports: streamed (per engine step, whole program) and resident.

Streamed (filled in by :class:`psconv.firmware.driver.Driver`): :class:`StepReport` holds one
step's link bytes, device counters and verdict; :class:`RunReport` a whole program's steps,
per-layer and logit verdicts, and the printable table and summary that ``psconv run`` shows.

Resident (filled in by :class:`psconv.firmware.resident.ResidentDriver`): :class:`LoadReport`
for loading the model once, :class:`InferenceReport` per image, :class:`ResidentRunReport` for a
``psconv run --mode resident``. Both kinds judge layers and logits with :class:`Verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def closing_lines(report) -> list[str]:
    """The fault-injection and wall-time lines that end a run report (streamed or resident):
    ``report`` has ``fault_summary``, ``faults_injected``, ``bit_exact``, ``wall_s``, ``transport``."""
    lines = []
    if report.fault_summary:
        lines.append(f"faults injected: {report.faults_injected} ({report.fault_summary}); "
                     + ("all survived (bit-exact)" if report.bit_exact else "result NOT bit-exact"))
    lines.append(f"wall time: {report.wall_s:.1f} s over {report.transport or 'the link'}")
    return lines


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


@dataclass(kw_only=True)
class Verdicts:
    """Layers and logits compared with the golden model: ``layers`` maps each layer checked to
    its mismatch text (None: bit-exact); ``logits`` and ``golden_logits`` are int lists."""

    layers: dict = field(default_factory=dict)
    logits: list | None = None
    golden_logits: list | None = None

    @property
    def logits_bit_exact(self) -> bool:
        return self.logits is not None and self.logits == self.golden_logits

    @property
    def bit_exact(self) -> bool:
        return self.logits_bit_exact and all(v is None for v in self.layers.values())

    @property
    def first_mismatch(self) -> str | None:
        for name, problem in self.layers.items():
            if problem:
                return problem
        if not self.logits_bit_exact:
            return f"logits {self.logits} differ from the golden logits {self.golden_logits}"
        return None

    def verdict_line(self) -> str:
        if self.bit_exact:
            checked = f"all {len(self.layers)} layers and the logits" if self.layers else "the logits"
            return f"verdict: BIT-EXACT: {checked} equal the golden model"
        bad = [name for name, problem in self.layers.items() if problem]
        return (f"verdict: NOT bit-exact: {len(bad)} layer(s) differ; first: "
                f"{self.first_mismatch}")


@dataclass
class RunReport(Verdicts):
    """A whole program on the board, checked against the golden model."""

    model: str
    multipliers: int
    steps: list = field(default_factory=list)
    wall_s: float = 0.0
    link_summary: str = ""
    device_link: dict = field(default_factory=dict)
    transport: str = ""
    faults_injected: int = 0
    fault_summary: str = ""

    @property
    def bit_exact(self) -> bool:
        return super().bit_exact and all(s.bit_exact for s in self.steps)

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
        lines = [f"logits (board):  {self.logits}", f"logits (golden): {self.golden_logits}",
                 self.verdict_line()]
        lines.append(
            f"multiplier utilization: {100 * self.utilization:.1f} % of {self.multipliers} "
            f"multipliers over {self.cycles} device cycles (START to done, waiting for the link "
            f"included); {100 * self.compute_utilization:.1f} % over the engine's busy cycles")
        lines.append(f"link: {self.link_summary}")
        if self.device_link:
            lines.append("device link counters: " + ", ".join(
                f"{k}={v}" for k, v in self.device_link.items()))
        return lines + closing_lines(self)


@dataclass
class LoadReport:
    """Loading a model into a resident board's memory (:meth:`ResidentDriver.load`)."""

    model_bytes: int            # bytes of the model (program + tables) in memory
    bytes_written: int          # bytes this load wrote (less when it resumed an earlier load)
    resumed_from: int           # model bytes already there from an earlier, interrupted load
    crc: int                    # the CRC-32 the board verified (CHECK_MODEL)
    wire_bytes_sent: int
    wire_bytes_received: int
    seconds: float

    def line(self) -> str:
        resumed = (f", resumed at byte {self.resumed_from}" if self.resumed_from else "")
        return (f"model loaded: {self.model_bytes} bytes ({self.bytes_written} written{resumed}), "
                f"CRC-32 0x{self.crc:08x} verified by the board, {self.wire_bytes_sent} + "
                f"{self.wire_bytes_received} bytes on the link, {self.seconds:.2f} s")

    def to_json(self) -> dict:
        return {"model_bytes": self.model_bytes, "bytes_written": self.bytes_written,
                "resumed_from": self.resumed_from, "crc": f"0x{self.crc:08x}",
                "wire_bytes_sent": self.wire_bytes_sent,
                "wire_bytes_received": self.wire_bytes_received, "seconds": self.seconds}


@dataclass
class InferenceReport(Verdicts):
    """One image through a resident model (:meth:`ResidentDriver.infer`). ``layers`` is empty
    unless every layer was read back and checked (``check_layers``)."""

    image: int
    device_cycles: int          # RUN_STATUS cycles, INFER to done
    steps: int                  # engine steps the board ran
    link_bytes_sent: int        # wire bytes, frames and retransmissions included
    link_bytes_received: int
    memory_reads: int           # bytes the board's runner read from its memory
    memory_writes: int
    wall_s: float
    status_polls: int = 0       # RUN_STATUS polls before the one that saw done, and their
    status_poll_bytes: int = 0  # wire bytes (within link_bytes_*): a slow board polls more
    overlapped_link_bytes: int = 0  # wire bytes of this image's upload sent while the board
                                    # still ran the previous one (within link_bytes_*)

    @property
    def inference_link_bytes(self) -> int:
        """Wire bytes of the inference itself: the image, INFER, the final status and the
        result, without the polls that only measure how long the board took."""
        return self.link_bytes_sent + self.link_bytes_received - self.status_poll_bytes

    def to_json(self) -> dict:
        return {"image": self.image, "device_cycles": self.device_cycles, "steps": self.steps,
                "link_bytes_sent": self.link_bytes_sent,
                "link_bytes_received": self.link_bytes_received,
                "status_polls": self.status_polls, "status_poll_bytes": self.status_poll_bytes,
                "inference_link_bytes": self.inference_link_bytes,
                "overlapped_link_bytes": self.overlapped_link_bytes,
                "memory_reads": self.memory_reads, "memory_writes": self.memory_writes,
                "wall_s": self.wall_s, "logits": self.logits, "golden_logits": self.golden_logits,
                "layers": self.layers, "bit_exact": self.bit_exact}


@dataclass
class ResidentRunReport:
    """``psconv run --mode resident``: one model load, then images through it."""

    model: str
    transport: str
    load: LoadReport
    inferences: list = field(default_factory=list)
    memory_map: list = field(default_factory=list)   # MemoryImage.memory_map() rows
    memory_summary: str = ""
    link_summary: str = ""
    link_stats: object = None      # the link's LinkStats (retransmissions, timeouts, NAKs, ...)
    faults_injected: int = 0
    fault_summary: str = ""
    wall_s: float = 0.0

    @property
    def bit_exact(self) -> bool:
        return bool(self.inferences) and all(r.bit_exact for r in self.inferences)

    def table(self) -> str:
        """One row per image: device cycles, link and memory bytes, wall time, verdict."""
        head = (f"{'image':>5} {'cycles':>10} {'link sent':>10} {'link recv':>10} "
                f"{'overlapped':>10} {'mem read':>10} {'mem write':>10} {'wall s':>7}  bit-exact")
        lines = [head, "-" * len(head)]
        for r in self.inferences:
            checked = f"yes ({len(r.layers)} layers + logits)" if r.layers else "yes (logits)"
            lines.append(f"{r.image:>5} {r.device_cycles:>10} {r.link_bytes_sent:>10} "
                         f"{r.link_bytes_received:>10} {r.overlapped_link_bytes:>10} "
                         f"{r.memory_reads:>10} {r.memory_writes:>10} "
                         f"{r.wall_s:>7.2f}  {checked if r.bit_exact else 'NO'}")
        lines.append("(overlapped: link bytes of the image's upload sent while the board still "
                     "ran the previous image)")
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        lines = [self.memory_summary, self.load.line()] if self.memory_summary else [self.load.line()]
        for r in self.inferences:
            lines.append(f"image {r.image}: logits {r.logits}; golden {r.golden_logits}")
            if not r.bit_exact:
                lines.append(f"image {r.image}: {r.verdict_line()}")
        if self.bit_exact:
            lines.append(f"verdict: BIT-EXACT: {len(self.inferences)} image(s) equal the golden "
                         f"model" + (" at every layer and" if all(r.layers for r in self.inferences)
                                     else " at") + " the logits")
        else:
            lines.append("verdict: NOT bit-exact (see the images above)")
        lines.append(f"link: {self.link_summary}")
        return lines + closing_lines(self)

    def to_json(self) -> dict:
        return {"mode": "resident", "model": self.model, "transport": self.transport,
                "load": self.load.to_json(), "inferences": [r.to_json() for r in self.inferences],
                "memory": self.memory_summary, "memory_map": self.memory_map,
                "bit_exact": self.bit_exact,
                "link": self.link_summary, "faults_injected": self.faults_injected,
                "fault_summary": self.fault_summary, "wall_s": self.wall_s}
