"""Soak: thousands of injected link faults across model loads and inferences on the simulated board.

Round after round, a fresh simulated board (the board top with memory in Verilator) gets a
reduced ResNet18 loaded resident through a fault-injecting link (every fault kind of
:mod:`psconv.firmware.faults`, both directions) and runs a few images with every layer read back
and compared with the golden model, until ``--faults`` faults have been injected. Per round and
in total it reports the faults injected, how the link recovered (retransmissions, timeouts,
NAKs, damaged answers), rounds that ended in an error the driver raised (a fault the link could
not hide, reported, not silent) and silent corruptions: an inference that finished as if all was
well but differs from the golden model anywhere. Silent corruptions must be 0.
"""

from __future__ import annotations

import time
from collections import Counter

from psconv.errors import PsconvError
from psconv.outputs import output_folder

from .results import write_results

DEFAULT_FAULTS = 10_000
DEFAULT_RATE = 0.3                 # faults per frame, spread evenly over the kinds


def soak(faults: int = DEFAULT_FAULTS, rate: float = DEFAULT_RATE, images: int = 3,
         width: int = 2, image_size: int = 8, family: str = "PSD1_P4", config=None,
         transport: str = "sim", seed: int = 0, progress: bool = True):
    """Run rounds until ``faults`` faults are injected; returns ``(rows, summary)``."""
    from tqdm import tqdm

    from psconv.config import EngineConfig
    from psconv.firmware.compiler import compile_model
    from psconv.firmware.resident import run_resident
    from psconv.nn.default import default_quantized_model, model_images

    if faults < 1 or not 0 < rate <= 1 or images < 1:
        raise PsconvError(f"soak: faults {faults}, rate {rate}, images {images}; allowed: "
                          f"faults >= 1, 0 < rate <= 1, images >= 1")
    model = default_quantized_model(family, width=width, image_size=image_size,
                                    calibration_images=4)
    program = compile_model(model, config or EngineConfig())
    rows, totals = [], Counter()
    bar = tqdm(total=faults, unit="fault", desc="soak", disable=None if progress else True)
    started = time.perf_counter()
    round_ = 0
    while totals["faults injected"] < faults:
        batch = model_images(model, images, seed=seed + 1000 * round_)
        began = time.perf_counter()
        row = {"round": round_, "images": images}
        try:
            report = run_resident(program, list(batch), transport, check_layers=True,
                                  faults=rate, fault_seed=seed + round_, progress=False)
        except PsconvError as e:     # raised, so reported: not silent
            row.update({"faults injected": 0, "outcome": f"error: {e}"})
            totals["rounds ended by a reported error"] += 1
        else:
            stats = report.link_stats
            silent = sum(1 for r in report.inferences if not r.bit_exact)
            row.update({
                "faults injected": report.faults_injected,
                "retransmissions": stats.retransmissions, "timeouts": stats.timeouts,
                "naks": sum(stats.naks.values()),
                "damaged answers": sum(stats.damaged_responses.values()),
                "silent corruptions": silent,
                "outcome": "bit-exact" if report.bit_exact else "NOT bit-exact"})
            totals["faults injected"] += report.faults_injected
            totals["faults in bit-exact rounds"] += report.faults_injected if report.bit_exact else 0
            totals["inferences"] += len(report.inferences)
            totals["silent corruptions"] += silent
            for key in ("retransmissions", "timeouts", "naks", "damaged answers"):
                totals[key] += row[key]
            bar.update(report.faults_injected)
        row["wall_s"] = round(time.perf_counter() - began, 1)
        rows.append(row)
        round_ += 1
    bar.close()
    summary = {"rounds": round_, **totals, "fault rate per frame": rate,
               "network": f"ResNet18 {family} width {width} on {image_size}x{image_size} images",
               "total wall time": f"{time.perf_counter() - started:.1f} s"}
    return rows, summary


def run(outdir=None, **options):
    """:func:`soak`, then the table, CSV, JSON and plot; returns ``(folder, summary)``."""
    rows, summary = soak(**options)

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        xs = [r["round"] for r in rows]
        ax.bar(xs, [r.get("faults injected", 0) for r in rows], label="faults injected")
        ax.plot(xs, [r.get("retransmissions", 0) for r in rows], "k.", label="retransmissions")
        ax.set_xlabel("round (fresh board, model load, images)")
        ax.set_ylabel("per round")
        ax.set_title(f"{summary['faults injected']} faults, "
                     f"{summary.get('silent corruptions', 0)} silent corruptions")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    columns = ["round", "images", "faults injected", "retransmissions", "timeouts", "naks",
               "damaged answers", "silent corruptions", "outcome", "wall_s"]
    folder = write_results("soak", rows, outdir, summary, plot, columns)
    return folder, summary


def register(benches) -> None:
    from psconv.commands.engine_choice import add_engine_arguments

    parser = benches.add_parser(
        "soak", help="thousands of injected link faults across model loads and inferences on "
                     "the simulated board; silent corruptions must be 0",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--faults", type=int, default=DEFAULT_FAULTS,
                        help="stop after this many injected faults (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="faults per frame, spread over every kind (default: %(default)s)")
    parser.add_argument("--images", type=int, default=3,
                        help="images per round, every layer checked (default: %(default)s)")
    parser.add_argument("--transport", default="sim", metavar="SPEC",
                        help="the board (default: %(default)s, the gateware in Verilator; "
                             "resident-ref: the software reference board)")
    add_engine_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="fault and image seed")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/soak)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.commands.engine_choice import engine_config_from_args

    _, summary = run(outdir=args.out, faults=args.faults, rate=args.rate,
                          images=args.images, transport=args.transport, seed=args.seed,
                          config=engine_config_from_args(args), progress=not args.no_progress)
    return 0 if summary.get("silent corruptions", 0) == 0 else 1
