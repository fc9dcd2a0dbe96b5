"""``psconv run``: images through a quantized ResNet18 or VGG16 on a board (or the simulated board),
checked bit-exactly against the golden model.

A thin front over :func:`psconv.firmware.driver.run_on_board` (``--mode streamed``: one image,
layer by layer over the link, every layer checked) and
:func:`psconv.firmware.resident.run_resident` (``--mode resident``: the model loaded into the
board's memory once, then ``--images`` images through it; the logits checked, every layer with
``--check-layers``). It compiles the model for the engine configuration, opens the transport,
runs with a progress bar, then prints the table, the logits, the golden logits and the verdict.
Exit status 1 when anything differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from psconv.errors import PsconvError
from psconv.outputs import output_file

from .engine_choice import add_engine_arguments, engine_config_from_args
from .golden import add_model_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a quantized ResNet18 or VGG16 on the board (or the simulated board), "
                    "bit-exact check",
        description="Run a quantized ResNet18 or VGG16 on the accelerator (streamed layer by layer over the host "
                    "link, or resident in the board's memory) and compare the layers and the "
                    "logits with the integer golden model. "
                    "Without --model it uses the embedded default (seeded PSD1_P16 ResNet18, "
                    "width 16 on 32x32 images); when the engine cannot hold that (e.g. --board "
                    "icebreaker: 16 channels, 8x8 maps), the width and image size you leave out "
                    "become the largest that fit, and a line says what was chosen and why. "
                    "--network vgg16 runs VGG16: its max pools run as passes over the board's "
                    "memory resident, in the engine's output max pool streamed (each fused "
                    "into the convolution before it).")
    add_model_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--mode", choices=("auto", "streamed", "resident"), default="auto",
                        help="streamed: send every layer's weights and maps over the link; "
                             "resident: load the model into the board's memory once, then send "
                             "only images and read results; auto (default): resident where the "
                             "board has memory (the simulated board, the ULX3S's SDRAM), "
                             "streamed on a board without (--board icebreaker, a --transport to "
                             "a board of unknown build)")
    parser.add_argument("--transport", default="sim", metavar="SPEC",
                        help="sim (the board top in Verilator), resident-ref[:BYTES] (a software "
                             "resident board, --mode resident), serial:/dev/ttyUSB0[@baud] or "
                             "tcp:HOST:PORT (default: %(default)s)")
    parser.add_argument("--image-seed", type=int, default=0,
                        help="seed of the first input image (the same image as `psconv golden "
                             "--seed`; image k has seed S+k; default: %(default)s)")
    parser.add_argument("--images", type=int, default=1, metavar="N",
                        help="--mode resident: run N seeded images through the model loaded "
                             "once (default: %(default)s)")
    parser.add_argument("--check-layers", action="store_true",
                        help="--mode resident: read every layer's map back from the board's "
                             "memory and compare it with the golden model, not only the logits "
                             "(the streamed mode always checks every layer)")
    parser.add_argument("--faults", type=float, default=0.0, metavar="RATE",
                        help="inject link faults (bit flips, drops, duplicates, truncation, delays, "
                             "garbage) with this probability per frame, split evenly (default: "
                             "%(default)s, none)")
    parser.add_argument("--fault-seed", type=int, default=0,
                        help="seed of the injected faults (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds to wait for each answer before resending (default 1, 0.3 "
                             "with --faults)")
    parser.add_argument("--retries", type=int, default=None,
                        help="resends per command before giving up (default 8, 20 with --faults)")
    parser.add_argument("--json", metavar="FILE", type=output_file("--json"),
                        help="also write the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load_program(args, count: int = 1):
    """The model (file or embedded default, sized for the engine: see
    :func:`~psconv.commands.golden.load_or_default`), its compiled program and a list of
    ``count`` seeded images at the model's input size (image k has seed ``--image-seed`` + k)."""
    from psconv.commands.golden import load_or_default
    from psconv.firmware.compiler import compile_model
    from psconv.nn.default import model_images

    config = engine_config_from_args(args)
    model = load_or_default(args, config)
    images = [model_images(model, 1, seed=1000 + args.image_seed + k)[0] for k in range(count)]
    return compile_model(model, config), images


def print_report(report, stream=None) -> None:
    """The report's table and summary on ``stream`` (default: ``sys.stdout`` at call time, not
    the one bound when this module was imported)."""
    stream = sys.stdout if stream is None else stream
    print(report.table(), file=stream)
    for line in report.summary_lines():
        print(line, file=stream)


def choose_mode(args) -> str:
    """``--mode``, with ``auto`` resolved: resident on a board with memory (a ``--board`` with
    SDRAM, or a local board: the simulated or reference one), else streamed."""
    if args.mode != "auto":
        return args.mode
    if args.board:
        from psconv.rtl_gen.boards import get_board

        return "resident" if get_board(args.board).sdram_module else "streamed"
    from psconv.firmware.driver import LOCAL_BOARDS

    return "resident" if args.transport in LOCAL_BOARDS else "streamed"


def run(args) -> int:
    args.mode = choose_mode(args)
    if not 0.0 <= args.faults <= 1.0:
        raise PsconvError(f"--faults is {args.faults}; allowed: a probability per frame, 0..1")
    if args.images < 1:
        raise PsconvError(f"--images is {args.images}; allowed: 1 or more")
    if args.mode == "streamed" and args.images != 1:
        raise PsconvError(f"--images {args.images} needs --mode resident (the streamed mode runs "
                          f"one image)")
    program, images = load_program(args, args.images)
    model = program.model
    print(f"psconv {getattr(args, 'command', None) or 'run'}: {model.arch} {model.family_name} "
          f"width {model.conv_layers[0].out_channels} on {'x'.join(str(n) for n in model.input_shape[1:])} images, "
          f"{len(program.engine_steps)} engine steps "
          + (f"+ {len(program.pool_steps)} max-pool steps " if program.pool_steps else "")
          + f"+ {len(program.steps) - len(program.device_steps)} host steps, engine "
          f"Tm={program.config.tm} Tn={program.config.tn}"
          + (f" ({program.config.patch_channels}-channel passes)" if program.config.multi_pass
             else "")
          + f", {args.mode} mode, transport {args.transport}"
          + (f", faults {args.faults:g} per frame" if args.faults else ""), flush=True)
    link = dict(faults=args.faults, fault_seed=args.fault_seed, timeout_s=args.timeout,
                retries=args.retries, progress=not args.no_progress)
    if args.mode == "resident":
        from psconv.firmware.resident import run_resident

        report = run_resident(program, images, args.transport,
                              check_layers=args.check_layers, **link)
    else:
        from psconv.firmware.driver import run_on_board

        report = run_on_board(program, images[0], args.transport, **link)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return 0 if report.bit_exact else 1
