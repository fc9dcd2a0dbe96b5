"""``psconv run``: one image through a quantized ResNet18 on a board (or the simulated board),
layer by layer, checked bit-exactly against the golden model.

A thin front over :func:`psconv.firmware.driver.run_on_board`: compile the model for the engine
configuration, open the transport, run every step with a progress bar, then print the per-layer
table, the logits, the golden logits and the verdict. Exit status 1 when anything differs.
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
        "run", help="run a quantized ResNet18 on the board (or the simulated board), bit-exact check",
        description="Stream a quantized ResNet18 layer by layer into the accelerator over the host "
                    "link and compare every layer and the logits with the integer golden model. "
                    "Without --model it uses the embedded default (seeded PSD1_P16 ResNet18, "
                    "width 16 on 32x32 images); when the engine cannot hold that (e.g. --board "
                    "icebreaker: 16 channels, 8x8 maps), the width and image size you leave out "
                    "become the largest that fit, and a line says what was chosen and why.")
    add_model_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--transport", default="sim", metavar="SPEC",
                        help="sim (the board top in Verilator), serial:/dev/ttyUSB0[@baud] or "
                             "tcp:HOST:PORT (default: %(default)s)")
    parser.add_argument("--image-seed", type=int, default=0,
                        help="seed of the input image (the same image as `psconv golden --seed`; "
                             "default: %(default)s)")
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


def load_program(args):
    """The model (file or embedded default, sized for the engine: see
    :func:`~psconv.commands.golden.load_or_default`), its seeded image at the model's input size
    and its compiled program."""
    from psconv.commands.golden import load_or_default
    from psconv.firmware.compiler import compile_model
    from psconv.nn.default import model_images

    config = engine_config_from_args(args)
    model = load_or_default(args, config)
    image = model_images(model, 1, seed=1000 + args.image_seed)[0]
    return compile_model(model, config), image


def print_report(report, stream=None) -> None:
    """The report's table and summary on ``stream`` (default: ``sys.stdout`` at call time, not
    the one bound when this module was imported)."""
    stream = sys.stdout if stream is None else stream
    print(report.table(), file=stream)
    for line in report.summary_lines():
        print(line, file=stream)


def run(args) -> int:
    from psconv.firmware.driver import run_on_board

    if not 0.0 <= args.faults <= 1.0:
        raise PsconvError(f"--faults is {args.faults}; allowed: a probability per frame, 0..1")
    program, image = load_program(args)
    model = program.model
    print(f"psconv {getattr(args, 'command', None) or 'run'}: {model.arch} {model.family_name} "
          f"width {model.conv_layers[0].out_channels} on {'x'.join(str(n) for n in model.input_shape[1:])} images, "
          f"{len(program.engine_steps)} engine steps "
          f"+ {len(program.steps) - len(program.engine_steps)} host steps, engine "
          f"Tm={program.config.tm} Tn={program.config.tn}, transport {args.transport}"
          + (f", faults {args.faults:g} per frame" if args.faults else ""), flush=True)
    report = run_on_board(program, image, args.transport, faults=args.faults,
                          fault_seed=args.fault_seed, timeout_s=args.timeout,
                          retries=args.retries, progress=not args.no_progress)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return 0 if report.bit_exact else 1
