"""The ``psconv`` console command: a thin front over library functions the tests also call.

Each subcommand lives in its own module under :mod:`psconv.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code). Bad input surfaces as :class:`~psconv.errors.PsconvError` and is printed
as one line, never a traceback. A reader that closes stdout early (``psconv model-stats | head``)
ends the command quietly with exit status 141, as a shell tool killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys

from .errors import PsconvError
from .outputs import check_outputs

EXIT_BROKEN_PIPE = 128 + 13   # 128 + SIGPIPE, what a shell reports for `yes | head -1`

COMMAND_MODULES = (
    "demo",
    "golden",
    "train",
    "evaluate",
    "quantize",
    "import_model",
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


def _stdout_reader_gone() -> bool:
    """True if stdout is a pipe or socket whose reader has closed it (not, say, a dead link to the
    simulated board, whose BrokenPipeError must still be seen)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_outputs(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()      # a closed pipe shows here if the output was still buffered
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # Python flushes stdout again at exit; point it at devnull so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except PsconvError as e:
        print(f"psconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"psconv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
