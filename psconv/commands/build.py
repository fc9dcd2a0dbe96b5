"""``psconv build``: a bitstream for a real board with the open flow from PyPI, and its report.

A thin front over :func:`psconv.rtl_gen.build.build_bitstream`. The default design is the
engine's board top (``psconv.hw.board_top.BoardTop``: UART, command processor, engine) with the
board's engine configuration or ``--config``; ``--design mac-demo`` builds the small UART MAC
demo instead, which checks the flow, the board's clock and UART pins and its DSPs.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psconv.errors import PsconvError
from psconv.outputs import output_folder
from psconv.rtl_gen import DEFAULT_ECP5_PLACER, DEFAULT_ECP5_ROUTER, ECP5_PLACERS, ECP5_ROUTERS

if TYPE_CHECKING:
    from psconv.config import EngineConfig
    from psconv.rtl_gen.boards import Board

DESIGNS = ("engine", "mac-demo")
DEFAULT_BAUD = 3_000_000   # psconv run --transport serial:... uses the same default


def register(subparsers) -> None:
    from psconv.rtl_gen.boards import DEFAULT_BOARD, board_names

    parser = subparsers.add_parser(
        "build", help="build a bitstream for a board (yowasp Yosys + nextpnr) and report it",
        description="Synthesize, place and route a design for a real board with Yosys and "
                    "nextpnr from PyPI (yowasp-*), pack the bitstream, and print utilization "
                    "(LUTs, flip-flops, DSPs, block RAMs against the device's totals) and "
                    "nextpnr's Fmax per clock against the target. nextpnr runs with "
                    "--timing-allow-fail: a design that misses timing still gets a bitstream, "
                    "and the report says timing was missed.")
    parser.add_argument("--board", default=DEFAULT_BOARD, metavar="BOARD",
                        help=f"target board, one of: {', '.join(board_names())} "
                             f"(default {DEFAULT_BOARD})")
    parser.add_argument("--config", metavar="FILE.json",
                        help="engine configuration (EngineConfig JSON, or the .json `psconv "
                             "generate` writes; default: the board's own, see --list-boards)")
    parser.add_argument("--clock-mhz", type=float, default=None, metavar="N",
                        help="sync clock in MHz; other than the board oscillator's it comes from "
                             "the FPGA's PLL (default: one the 3 Mbaud link divides exactly: "
                             "60 MHz from the PLL on ULX3S, the 12 MHz oscillator on iCEBreaker)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"UART baud rate of the host link (default {DEFAULT_BAUD})")
    parser.add_argument("--router", choices=ECP5_ROUTERS, default=DEFAULT_ECP5_ROUTER,
                        help=f"nextpnr-ecp5 router on ECP5 boards (default {DEFAULT_ECP5_ROUTER}: "
                             f"router2 stalled on the congested engine board tops here, see "
                             f"docs/fpga.md)")
    parser.add_argument("--placer", choices=ECP5_PLACERS, default=DEFAULT_ECP5_PLACER,
                        help=f"nextpnr-ecp5 placer on ECP5 boards (default {DEFAULT_ECP5_PLACER}: "
                             f"it spreads the cells out; the congested engine builds route "
                             f"sooner than after heap, at about the same Fmax, see docs/fpga.md)")
    parser.add_argument("--design", choices=DESIGNS, default="engine",
                        help="engine: the accelerator's board top (default); mac-demo: a UART "
                             "multiply-accumulate demo that checks the flow")
    parser.add_argument("--memory", choices=("auto", "sdram", "none"), default="auto",
                        help="the engine's resident memory: sdram (the board's SDRAM through a "
                             "LiteDRAM controller: the model lives on the board, see psconv run "
                             "--mode resident), none (streamed mode only), auto (default: sdram "
                             "on boards that have one, i.e. the ULX3S)")
    parser.add_argument("-o", "--outdir", default=None, metavar="DIR",
                        type=output_folder("-o/--outdir"),
                        help="build directory (default build/BOARD)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not show the build's progress on stderr")
    parser.add_argument("--list-boards", action="store_true",
                        help="list the supported boards and exit")
    parser.set_defaults(func=run)


def board_top_class():
    """``psconv.hw.board_top.BoardTop``, or a :class:`PsconvError` saying it is not there yet."""
    try:
        module = importlib.import_module("psconv.hw.board_top")
    except ModuleNotFoundError as e:
        if e.name in ("psconv.hw.board_top", "psconv.hw"):
            raise PsconvError(
                "the engine's board top (psconv.hw.board_top.BoardTop: UART, command processor "
                "and engine) is not implemented yet, so there is no engine bitstream to build; "
                "`psconv build --design mac-demo` checks the flow with a small UART MAC "
                "design") from None
        raise
    top = getattr(module, "BoardTop", None)
    if top is None:
        raise PsconvError("psconv.hw.board_top has no BoardTop class; the engine's board top is "
                          "not implemented yet (`psconv build --design mac-demo` checks the flow)")
    return top


def make_top(design: str, board, config, clk_freq: float, baud: int, memory: str = "none"):
    """The design to build: the engine's board top or the MAC demo, for ``clk_freq`` Hz;
    ``memory="sdram"`` gives the engine's top the board's SDRAM and resident mode."""
    from psconv.hw.mac_demo import UartMacDemo

    if design == "mac-demo":
        from psconv.rtl_gen.boards import get_board

        return UartMacDemo(get_board(board), clk_freq=clk_freq, baud=baud)
    if design != "engine":
        raise PsconvError(f"--design is {design!r}; allowed: {', '.join(DESIGNS)}")
    if memory == "sdram":
        from psconv.rtl_gen.boards import get_board
        from psconv.rtl_gen.litedram import LiteDRAMConfig, generate_core

        core = generate_core(LiteDRAMConfig.for_board(get_board(board), sys_clk_hz=clk_freq),
                             "board")
        return board_top_class()(config, clk_freq, baud, sdram_core=core)
    return board_top_class()(config, clk_freq, baud)


def _board_table() -> str:
    from psconv.rtl_gen.boards import BOARDS

    lines = [f"{'board':<12} {'device':<11} {'clock':>7} {'LUTs':>7} {'DSPs':>5} "
             f"{'BRAMs':>6}  engine"]
    for board in BOARDS.values():
        r, c = board.resources, board.engine_config()
        clock = board.link_clock_mhz or board.clock_mhz
        lines.append(f"{board.name:<12} {board.device:<11} {clock:>4g} MHz "
                     f"{r.luts:>7} {r.dsps:>5} {r.brams:>6}  Tm={c.tm} Tn={c.tn} "
                     f"({c.multipliers} mult), C_in<={c.max_in_channels} "
                     f"({c.patch_channels} per pass)")
    return "\n".join(lines)


@dataclass(frozen=True)
class BoardBuild:
    """One board build, every choice made: what :func:`plan_board_build` returns and
    :func:`build_board` builds (``psconv build`` and ``psconv bench impl`` both)."""

    board: Board
    config: EngineConfig
    clock_mhz: float | None     # None: the board's oscillator
    baud: int
    design: str
    memory: str                 # "sdram" or "none"
    placer: str
    router: str

    def inputs(self) -> dict:
        """The build's record in ``build_report.json`` (``inputs``): equal records, same build."""
        ecp5 = self.board.family == "ecp5"
        return json.loads(json.dumps({
            "board": self.board.name, "design": self.design,
            "config": self.config.to_json() if self.design == "engine" else None,
            "clock_mhz": self.clock_mhz, "baud": self.baud, "memory": self.memory,
            "sdram_module": self.board.sdram_module if self.memory == "sdram" else None,
            "placer": self.placer if ecp5 else None, "router": self.router if ecp5 else None}))


def plan_board_build(board, config=None, clock_mhz: float | None = None,
                     baud: int = DEFAULT_BAUD, design: str = "engine", memory: str = "auto",
                     placer: str = DEFAULT_ECP5_PLACER,
                     router: str = DEFAULT_ECP5_ROUTER) -> BoardBuild:
    """The build of ``board`` with its defaults filled in (the board's engine configuration,
    its link clock, ``memory`` "auto": the SDRAM where the board has one) and every choice
    checked, before any tool runs."""
    from psconv.rtl_gen import ecp5_place_route_args
    from psconv.rtl_gen.boards import BOARDS, get_board
    from psconv.rtl_gen.clocking import plan_clock

    board = get_board(board)
    if not isinstance(baud, int) or baud <= 0:
        raise PsconvError(f"--baud is {baud!r}; allowed: a positive integer")
    if design not in DESIGNS:
        raise PsconvError(f"--design is {design!r}; allowed: {', '.join(DESIGNS)}")
    ecp5_place_route_args(placer, router)
    config = config if config is not None else board.engine_config()
    clock_mhz = clock_mhz if clock_mhz is not None else board.link_clock_mhz
    plan_clock(board, clock_mhz)
    if memory == "auto":
        memory = "sdram" if board.sdram_module and design == "engine" else "none"
    if memory not in ("sdram", "none"):
        raise PsconvError(f"--memory is {memory!r}; allowed: auto, sdram, none")
    if memory == "sdram" and design != "engine":
        raise PsconvError("--memory sdram: only the engine's board top has a resident memory; "
                          "allowed with --design engine")
    if memory == "sdram" and not board.sdram_module:
        raise PsconvError(f"--memory sdram: {board.name} has no SDRAM; allowed on "
                          f"{', '.join(n for n, b in BOARDS.items() if b.sdram_module)}")
    return BoardBuild(board, config, clock_mhz, baud, design, memory, placer, router)


def build_board(build: BoardBuild, outdir, progress=True):
    """Build ``build`` in ``outdir``: the :class:`~psconv.rtl_gen.reports.BuildReport`, whose
    ``inputs`` (also in ``build_report.json``) are :meth:`BoardBuild.inputs`. ``progress``: as
    :func:`~psconv.rtl_gen.build.build_bitstream` takes it (a bool, or a callable that hears
    the stage)."""
    from psconv.rtl_gen.build import build_bitstream
    from psconv.rtl_gen.clocking import plan_clock

    board, config = build.board, build.config
    plan = plan_clock(board, build.clock_mhz)
    if build.design == "engine" and config.multipliers > board.resources.dsps:
        print(f"psconv build: warning: the config has {config.multipliers} multipliers but "
              f"{board.device} has {board.resources.dsps} DSPs; the rest become LUT multipliers "
              f"(if they fit)", file=sys.stderr)
    top = make_top(build.design, board, config, plan.actual_hz, build.baud, build.memory)
    return build_bitstream(top, board, outdir, clock_mhz=build.clock_mhz, progress=progress,
                           router=build.router, placer=build.placer, inputs=build.inputs())


def run(args) -> int:
    from psconv.config import EngineConfig
    from psconv.rtl_gen.boards import get_board

    if args.list_boards:
        print(_board_table())
        return 0
    get_board(args.board)                  # an unknown board is named before a bad --config
    config = EngineConfig.load(args.config) if args.config else None
    build = plan_board_build(args.board, config, args.clock_mhz, args.baud, args.design,
                             args.memory, args.placer, args.router)
    report = build_board(build, args.outdir or f"build/{build.board.name}",
                         progress=not args.no_progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.format())
    return 0
