"""``psconv demo``: the README's main job on the embedded default, no board and no files needed.

The whole path of the README, on one seeded image: the embedded-default ResNet18
(PSD1_P16, reduced to width 8 so it runs in well under a minute once the simulator is built)
is quantized, compiled for the default engine (Tm=4 Tn=16, one input-channel pass per layer),
and streamed layer by layer over the host link into the board top simulated in Verilator (UART
replaced by a socket bridge; link layer, command processor and engine are the gateware). Every layer and the
logits are compared with the integer golden model; the verdict and the multiplier utilization
are printed. Exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse

DEMO_WIDTH = 8


def register(subparsers) -> None:
    from psconv.nn.models import MAX_WIDTH

    parser = subparsers.add_parser(
        "demo", help="the main job on the embedded default: a seeded ResNet18 through the "
                     "simulated board, bit-exact against the golden model",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--width", type=int, default=DEMO_WIDTH,
                        help=f"base width of the ResNet18, 1..{MAX_WIDTH} (default {DEMO_WIDTH}; "
                             f"{MAX_WIDTH} is full size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from . import run as run_command

    return run_command.run(argparse.Namespace(
        model=None, family=None, width=args.width, image_size=None, config=None, board=None,
        transport="sim", mode="streamed", images=1, check_layers=False,
        image_seed=0, faults=0.0, fault_seed=0, timeout=None, retries=None, json=None,
        no_progress=args.no_progress))
