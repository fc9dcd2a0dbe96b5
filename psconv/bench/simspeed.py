"""Simulation speed benchmark: Verilator build time and simulated cycles per second.

For each configuration the engine's Verilog is built from scratch in a temporary folder (so the
build cache does not hide the cost) and then runs two layers through the cocotb bench: a
compute-bound one (few stream beats per cycle: measures Verilator itself) and a stream-bound one
(a beat every cycle: measures the cocotb driving cost). Cycles are the engine's own counters;
seconds are wall time of the simulation step only.
"""

from __future__ import annotations

import tempfile
import time

import torch

from psconv.config import EngineConfig
from psconv.families import family_by_name
from psconv.outputs import output_folder

from .results import write_results

CONFIGS = {
    "tm4_tn16": dict(tm=4, tn=16),
    "tm2_tn8": dict(tm=2, tn=8),
}


def _config(tm: int, tn: int) -> EngineConfig:
    return EngineConfig(tm=tm, tn=tn, family=family_by_name("PSD1_P16"), max_in_channels=256,
                        max_out_channels=256, fmap_depth=65536, weight_depth=8192)


def run(configs=tuple(CONFIGS), outdir=None):
    from psconv.sim.engine_rtl import EngineRTL, make_case, random_int8, random_weight

    rows = []
    family = family_by_name("PSD1_P16")
    for name in configs:
        config = _config(**CONFIGS[name])
        with tempfile.TemporaryDirectory(prefix="psconv-simspeed-") as root:
            started = time.perf_counter()
            rtl = EngineRTL(config, build_root=root)
            build_seconds = time.perf_counter() - started
            g = torch.Generator().manual_seed(0)
            cases = {
                "compute-bound 256x8x8->128": make_case(
                    "compute", random_weight(family, 128, 256, g), family,
                    random_int8((256, 8, 8), g), config),
                "stream-bound 16x32x32->16": make_case(
                    "stream", random_weight(family, 16, 16, g), family,
                    random_int8((16, 32, 32), g), config),
            }
            for label, case in cases.items():
                started = time.perf_counter()
                (run_,) = rtl.run([case])
                seconds = time.perf_counter() - started
                rows.append({"config": name, "multipliers": config.multipliers,
                             "build_seconds": round(build_seconds, 1), "layer": label,
                             "cycles": run_.cycles, "sim_seconds": round(seconds, 2),
                             "cycles_per_second": round(run_.cycles / seconds),
                             "bench_python_cycles": run_.bench_cycles,
                             "bit_exact": run_.mismatches == 0})

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{r['config']}\n{r['layer']}" for r in rows]
        ax.barh(labels, [r["cycles_per_second"] / 1e3 for r in rows])
        ax.set_xlabel("simulated kcycles per second (wall)")
        ax.set_title("Verilator + cocotb simulation speed")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return write_results("simspeed", rows, outdir, {"note": "build from scratch; 2-core machine"}, plot)


def register(benches) -> None:
    parser = benches.add_parser("simspeed", help="Verilator build time and simulated cycles per second",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS),
                        help=f"engine configurations to build and run (default: "
                             f"{' '.join(sorted(CONFIGS))})")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/simspeed)")
    parser.set_defaults(func=lambda args: run(args.configs, args.out) and 0)
