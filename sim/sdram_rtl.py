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


# -- the controller and the chip together ------------------------------------------------------

SYSTEM_TB = "psconv.sim.tb.sdram_system_tb"
SYSTEM_TOP = "sdram_system"


def system_top(core, part: str | None = None, port_client: bool = False):
    """An Amaranth top: :class:`psconv.hw.sdram.SDRAM` for ``core`` (``sim`` variant) wired at
    the pins to the chip model with the datasheet timing of ``part`` (default: the part the
    core's module is simulated as) at the core's clock.

    Ports: the wrapper's ``cmd``, ``wdata``, ``rdata``, ``ready``; ``sdram_clk`` (in: the
    chip's clock, the bench drives it 90 degrees after ``clk``); the chip's ``violation``,
    ``violation_code``, ``violation_cycle``, ``chip_ready``, ``refresh_count``,
    ``activate_count``, ``read_count``, ``write_count``. With ``port_client`` the top's client
    side is instead ``port`` (:func:`psconv.hw.memory_port.memory_port_signature`, word
    and byte accesses) through :class:`psconv.hw.memory_port.WordMemoryBridge`, as the resident-mode
    blocks will use the SDRAM.
    """
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from psconv.hw.memory_port import WordMemoryBridge
    from psconv.hw.sdram import SDRAM

    from .sdram_chip import chip_parameters

    timing = part_timing(part or core.config.module)
    params = chip_parameters(timing, core.config.sys_clk_hz)
    if (params["ROW_BITS"], params["BANK_BITS"]) != (core.info["rowbits"], core.info["bankbits"]):
        raise PsconvError(f"SDRAM system: part {timing.part} geometry differs from module "
                          f"{core.config.module}")

    class SystemTop(wiring.Component):
        def __init__(self):
            self.sdram = SDRAM.from_core(core, pins="sim")
            members = {name: member for name, member in self.sdram.signature.members.items()
                       if name not in ("sdram", *(("cmd", "wdata", "rdata") if port_client else ()))}
            if port_client:
                self.bridge = WordMemoryBridge(self.sdram.address_width)
                members["port"] = self.bridge.signature.members["port"]
            members.update({
                "sdram_clk": In(1), "violation": Out(1), "violation_code": Out(5),
                "violation_cycle": Out(32), "chip_ready": Out(1), "refresh_count": Out(32),
                "activate_count": Out(32), "read_count": Out(32), "write_count": Out(32),
            })
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            m.submodules.sdram = sdram = self.sdram
            client = self
            if port_client:
                m.submodules.bridge = client = self.bridge
                wiring.connect(m, wiring.flipped(self.port), self.bridge.port)
            for name in ("cmd", "wdata", "rdata"):
                if port_client:
                    wiring.connect(m, getattr(client, name), getattr(sdram, name))
                else:
                    wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(sdram, name))
            m.d.comb += self.ready.eq(sdram.ready)
            chip = chip_model(m, sdram.sdram, self.sdram_clk, params)
            m.d.comb += [getattr(self, "chip_ready" if name == "ready" else name).eq(value)
                         for name, value in chip.items() if name != "cycle_count"]
            return m

    return SystemTop()


CHIP_OUTPUTS = {"violation": 1, "violation_code": 5, "violation_cycle": 32, "ready": 1,
                "refresh_count": 32, "activate_count": 32, "read_count": 32, "write_count": 32,
                "cycle_count": 32}
"""The chip model's outputs and their widths (see ``sdram_chip.v``)."""


def chip_model(m, pins, sdram_clk, params: dict) -> dict:
    """Instance the chip model (Verilog parameters ``params``, clocked by ``sdram_clk``) at the
    controller's simulation pins ``pins`` (:func:`psconv.hw.sdram.sdram_pin_signature`): the DQ
    bus carries the chip's word while it drives, else the controller's. Returns the model's
    outputs by name (:data:`CHIP_OUTPUTS`)."""
    from amaranth import Mux, Signal
    from amaranth.hdl import Instance

    from .sdram_chip import MODEL_MODULE

    chip_dq, chip_oe = Signal(16), Signal()
    outputs = {name: Signal(width, name=f"chip_{name}") for name, width in CHIP_OUTPUTS.items()}
    m.d.comb += pins.dq_i.eq(Mux(chip_oe, chip_dq, pins.dq_o))
    m.submodules.chip = Instance(
        MODEL_MODULE, **{f"p_{k}": v for k, v in params.items()},
        i_clk=sdram_clk, i_cke=pins.cke, i_cs_n=pins.cs_n, i_ras_n=pins.ras_n,
        i_cas_n=pins.cas_n, i_we_n=pins.we_n, i_ba=pins.ba, i_a=pins.a, i_dqm=pins.dm,
        i_dq_i=pins.dq_o, i_dq_i_driven=pins.dq_oe, o_dq_o=chip_dq, o_dq_oe=chip_oe,
        **{f"o_{name}": signal for name, signal in outputs.items()})
    return outputs


def system_verilog(core, part: str | None = None, port_client: bool = False) -> str:
    """One Verilog text: the Amaranth top of :func:`system_top`, the LiteDRAM core (with its
    I/O flip-flop models) and the chip model."""
    from amaranth.back import verilog

    from .sdram_chip import model_verilog

    top = system_top(core, part, port_client)
    ports = verilog.convert(top, name=SYSTEM_TOP, emit_src=False)
    # one timescale for every module (the core declares one, Amaranth's output none)
    return "\n".join(["`timescale 1ns / 1ps", ports, core.verilog_text(), model_verilog()])


@dataclass
class SystemRun:
    """One scenario on the controller + chip: read data in command order, the chip's first
    violation, and its command counters."""

    reads: list
    violation: Violation
    violation_cycle: int
    counts: dict
    init_cycles: int
    cycles: int
    seconds: float

    @property
    def rule(self) -> str:
        return violation_name(self.violation)


class SDRAMSystemRTL:
    """LiteDRAM core + :class:`~psconv.hw.sdram.SDRAM` + chip model, built once."""

    def __init__(self, module: str = "MT48LC16M16", clk_hz: float = 50e6, part: str | None = None,
                 build_root=None, cache_dir=None, port_client: bool = False):
        from psconv.rtl_gen.litedram import LiteDRAMConfig, generate_core
        from psconv.sim import runner

        self.core = generate_core(LiteDRAMConfig(module=module, sys_clk_hz=clk_hz), "sim",
                                  cache_dir=cache_dir)
        self.clk_hz = clk_hz
        self.port_client = port_client
        name = f"sdram-system-{module}-{clk_hz / 1e6:g}MHz{'-port' if port_client else ''}"
        root = Path(build_root or DEFAULT_BUILD_ROOT) / name
        root.mkdir(parents=True, exist_ok=True)
        path = root / "sdram_system.v"
        text = system_verilog(self.core, part, port_client)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        self.build = runner.build(path, SYSTEM_TOP, root / "sim")

    def run(self, ops: list, seed: int = 0, rdata_stall: float = 0.0,
            tail_cycles: int = 0) -> SystemRun:
        """Stream ``ops`` (``["W", addr, data, enable]`` or ``["R", addr]``; with
        ``port_client``: ``["W", byte address, data, enable]`` or ``["R", byte address]``) through the
        top's ports as fast as they are taken (read data refused with probability
        ``rdata_stall``), then idle ``tail_cycles`` clocks."""
        from psconv.sim import runner

        results = self.build.build_dir.parent / "system_results.json"
        results.unlink(missing_ok=True)
        runner.run(SYSTEM_TB, "run_port_ops" if self.port_client else "run_ops",
                   build_dir=self.build.build_dir,
                   data={"ops": ops, "seed": seed, "rdata_stall": rdata_stall,
                         "tail_cycles": tail_cycles, "period_ns": 1e9 / self.clk_hz,
                         "results_path": str(results.resolve())})
        r = json.loads(results.read_text())
        return SystemRun(reads=r["reads"],
                         violation=Violation(r["code"]) if r["violation"] else Violation.NONE,
                         violation_cycle=r["violation_cycle"], counts=r["counts"],
                         init_cycles=r["init_cycles"], cycles=r["cycles"], seconds=r["seconds"])


SIM_BOARD_SDRAM_CLOCK_HZ = 60e6
"""The simulated board's clock when it carries the SDRAM (the core and the chip timing are made
for it; the bench's clock period follows): the ULX3S build's clock
(:attr:`psconv.rtl_gen.boards.Board.link_clock_mhz`), so the SDRAM's timings cost the cycles they
would cost on the board, whose cycle counts the benchmarks convert at that clock."""


def board_with_chip(board, core, part: str | None = None):
    """A top holding ``board`` (a :class:`psconv.hw.board_top.BoardTop` in wide bridge mode
    built with ``core``, a ``sim`` variant LiteDRAM core) and the chip model at its ``sdram``
    pins, with the datasheet timing of ``part`` (default: the core module's part) at the core's
    clock. Ports: the board's, less ``sdram``; ``sdram_clk`` In(1) (the bench drives it 90
    degrees after ``clk``); ``sdram_violation`` Out(1), ``sdram_violation_code`` Out(5),
    ``sdram_violation_cycle`` Out(32): the chip model's first broken rule."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from .sdram_chip import chip_parameters

    params = chip_parameters(part_timing(part or core.config.module), core.config.sys_clk_hz)
    board_members = {name: member for name, member in board.signature.members.items()
                     if name != "sdram"}

    class BoardWithChip(wiring.Component):
        def __init__(self):
            super().__init__({**board_members, "sdram_clk": In(1), "sdram_violation": Out(1),
                              "sdram_violation_code": Out(5), "sdram_violation_cycle": Out(32)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.board = board
            for name, member in board_members.items():
                outer, inner = getattr(self, name), getattr(board, name)
                if member.is_port:
                    m.d.comb += inner.eq(outer) if member.flow == In else outer.eq(inner)
                elif member.flow == In:
                    wiring.connect(m, wiring.flipped(outer), inner)
                else:
                    wiring.connect(m, inner, wiring.flipped(outer))
            chip = chip_model(m, board.sdram, self.sdram_clk, params)
            m.d.comb += [self.sdram_violation.eq(chip["violation"]),
                         self.sdram_violation_code.eq(chip["violation_code"]),
                         self.sdram_violation_cycle.eq(chip["violation_cycle"])]
            return m

    return BoardWithChip()
