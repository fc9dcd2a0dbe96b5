"""The ``psconv`` console command: a thin front over library functions the tests also call.

Each subcommand lives in its own module under :mod:`psconv.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code). Bad input surfaces as :class:`~psconv.errors.PsconvError` and is printed
as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PsconvError

COMMAND_MODULES = (
    "demo",
    "golden",
    "quantize",
    "model_stats",
    "pack",
    "generate",
    "build",
    "program",
    "run",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psconv",
        description="Periodic-sparse (pSConv) convolution accelerators: models, integer golden "
                    "model, Verilog generation, simulation and benchmarks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"psconv.commands.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PsconvError as e:
        print(f"psconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"psconv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
