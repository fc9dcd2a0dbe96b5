"""Netlist benchmark: the engine's Yosys netlist (iCE40 or ECP5) on a small network, several images.

Yosys' netlist of the engine (:mod:`psconv.sim.engine_netlist`: ``synth_ice40``/``synth_ecp5``
with the board build's options, simulated in Verilator with the cell models), elaborated for
``--board`` (default icebreaker; ``ulx3s-85f``: the ECP5 netlist with its MULT18X18D and DP16KD),
runs every engine step of a PSD1_P16 ResNet18 on 8x8 images, for ``--images`` images, and each
step's output is compared with the golden model element for element. ``--engine small`` (the
default) is the iCEBreaker's engine configuration with the width-2 network; ``--engine board`` is
the board's own engine (the ULX3S's Tm=4 Tn=16 with 128-channel passes) with a width-32 network,
whose 256-channel layers run in input-channel passes. ``--fault`` adds a deliberately broken netlist or cell model (it must
differ). Times: synthesis and Verilator build (0 when cached under build/netlist; ``--fresh``
builds in a temporary folder), then simulation per image.
"""

from __future__ import annotations

import tempfile
import time

from psconv.outputs import output_folder

from .results import write_results


NETLIST_ENGINES = ("small", "board")
BOARD_ENGINE_WIDTH = 32      # layers of 256 input channels: passes on the ULX3S's 128-channel patches


def run(images: int = 8, faults=(), fresh: bool = False, outdir=None, board: str = "icebreaker",
        engine: str = "small"):
    from psconv.firmware.compiler import compile_model
    from psconv.errors import PsconvError
    from psconv.nn.default import (check_network_fits, default_quantized_model, fitting_default,
                                   model_images)
    from psconv.rtl_gen.boards import get_board
    from psconv.sim.engine_netlist import EngineNetlist
    from psconv.sim.engine_rtl import program_cases

    if engine == "board":
        config = get_board(board).engine_config()
        try:
            check_network_fits(config, "PSD1_P16", BOARD_ENGINE_WIDTH, 8)
            width, image_size = BOARD_ENGINE_WIDTH, 8
        except PsconvError:          # a small board's own engine: the largest network it holds
            width, image_size, _ = fitting_default(config, image_size=8)
    else:
        config = get_board("icebreaker").engine_config()
        width, image_size, _ = fitting_default(config)
    family = {"ice40": "iCE40", "ecp5": "ECP5"}[get_board(board).family]
    model = default_quantized_model("PSD1_P16", width, image_size=image_size)
    program = compile_model(model, config)
    per_image = [program_cases(program, image) for image in model_images(model, images, seed=1000)]
    steps = len(per_image[0])
    rows, summary, first_image = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="psconv-netlist-") as scratch:
        for fault in (None, *faults):
            label = family if fault is None else f"{family}, fault {fault}"
            started = time.perf_counter()
            netlist = EngineNetlist(config, build_root=scratch if fresh else None, fault=fault,
                                    board=board)
            summary[f"{label}: synthesis s"] = round(netlist.synthesis_seconds, 1)
            summary[f"{label}: Verilator build s"] = (
                "cached" if netlist.build.cached else round(netlist.build.seconds, 1))
            summary[f"{label}: prepared in s"] = round(time.perf_counter() - started, 1)
            summary[f"{label}: cells"] = netlist.cells
            for k, cases in enumerate(per_image):
                started = time.perf_counter()
                runs = netlist.run(cases)
                seconds = time.perf_counter() - started
                differing = [run.mismatches for run in runs]
                rows.append({"netlist": label, "image": k, "steps": len(runs),
                             "cycles": sum(run.cycles for run in runs),
                             "steps_differing": sum(d > 0 for d in differing),
                             "elements_differing": sum(differing),
                             "elements": sum(run.case.expected.numel() for run in runs),
                             "sim_seconds": round(seconds, 2),
                             "bit_exact": not any(differing)})
                if k == 0:
                    first_image[label] = [(run.case.name, d / run.case.expected.numel())
                                          for run, d in zip(runs, differing)]
    summary["network"] = (f"resnet18 PSD1_P16 width {width} on {image_size}x{image_size} "
                          f"images, {steps} engine steps, "
                          f"{'the board' if engine == 'board' else 'the iCEBreaker'}'s engine "
                          f"Tm={config.tm} Tn={config.tn} ({config.patch_channels}-channel "
                          f"patches) elaborated for {board}")

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 5))
        names = [name for name, _ in next(iter(first_image.values()))]
        height = 0.8 / len(first_image)
        for j, (label, values) in enumerate(first_image.items()):
            ax.barh([i + j * height for i in range(len(names))], [100 * f for _, f in values],
                    height=height, label=label)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("% of the step's output elements that differ from the golden model")
        ax.set_title(f"{family} netlist vs golden model, image 0 (0 everywhere: bit-exact)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return write_results("netlist", rows, outdir, summary, plot)


NETLIST_BOARDS = ("icebreaker", "ulx3s-85f")


def register(benches) -> None:
    parser = benches.add_parser("netlist", help="the engine's Yosys netlist (iCE40 or ECP5), "
                                                "bit-exact on a small network",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images to run (default 8)")
    parser.add_argument("--fault", action="append", metavar="NAME",
                        help="also run a deliberately broken netlist or cell model (it must differ): "
                             "a name of psconv.sim.engine_netlist.FAULTS or MODEL_FAULTS, e.g. "
                             "unsafe-fused-add, dp16kd-outreg (ECP5)")
    parser.add_argument("--board", choices=NETLIST_BOARDS, default="icebreaker",
                        help="the platform the engine is elaborated "
                             "and synthesized for: icebreaker (iCE40) or ulx3s-85f (ECP5) "
                             "(default icebreaker)")
    parser.add_argument("--engine", choices=NETLIST_ENGINES, default="small",
                        help="small: the iCEBreaker's engine configuration with a width-2 "
                             "network (default); board: the board's own engine configuration "
                             "(ULX3S: Tm=4 Tn=16, 128-channel passes) with a width-32 network, "
                             "whose 256-channel layers run in passes (several minutes to "
                             "synthesize and build once, then cached)")
    parser.add_argument("--fresh", action="store_true",
                        help="synthesize and build in a temporary folder (times without cache)")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/netlist)")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.errors import PsconvError

    from psconv.rtl_gen.boards import get_board
    from psconv.sim.engine_netlist import faults_for

    if args.images < 1:
        raise PsconvError(f"--images is {args.images}; allowed: 1 or more")
    allowed = faults_for(get_board(args.board).family)
    for fault in args.fault or ():
        if fault not in allowed:
            raise PsconvError(f"--fault {fault}: not a fault of the {args.board} netlist; "
                              f"allowed: {', '.join(allowed)}")
    run(args.images, args.fault or (), args.fresh, args.out, args.board, args.engine)
    return 0
