"""``psconv demo``: the README's main job on the embedded default, no board and no files needed."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job on the embedded default (seeded PSD1_P16 ResNet18)",
        description="Quantize the seeded embedded-default ResNet18 (PSD1_P16, width 16) and run it "
                    "through the integer golden model, printing every layer.")
    parser.set_defaults(func=run)


def run(args) -> int:
    from . import golden

    return golden.run(argparse.Namespace(model=None, family=None, width=None, seed=0, json=False))
