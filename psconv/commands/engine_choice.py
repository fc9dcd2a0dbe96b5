"""The ``--config FILE`` / ``--board NAME`` choice of engine configuration, shared by the commands
that compile a model for an engine (``psconv run``, ``psconv bench e2e``).

Without either option the default :class:`~psconv.config.EngineConfig` (Tm=4, Tn=16, one
input-channel pass for every ResNet18 layer) is used: that is the simulated board's engine. A
real board runs its own configuration (``psconv build --list-boards``), so ``--board`` is what
a serial run needs; a mismatch is refused by the driver's IDENTIFY check anyway.
"""

from __future__ import annotations


def add_engine_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE.json",
                        help="engine configuration (EngineConfig JSON, or the .json `psconv "
                             "generate` writes; default: the default engine, Tm=4 Tn=16, the "
                             "simulated board's)")
    source.add_argument("--board", metavar="BOARD",
                        help="use that board's engine configuration, e.g. ulx3s-85f (Tm=4 Tn=16, "
                             "128 channels per pass) or icebreaker (Tm=1 Tn=2, 16 channels, 8x8 "
                             "maps); needed for a real board")


def engine_config_from_args(args):
    """The :class:`~psconv.config.EngineConfig` the arguments name."""
    from psconv.config import EngineConfig

    if args.board:
        from psconv.rtl_gen.boards import get_board

        return get_board(args.board).engine_config()
    return EngineConfig.load(args.config) if args.config else EngineConfig()
