"""Engine efficiency benchmark: ResNet18-CIFAR layer shapes through the RTL simulation.

Every distinct convolution shape of CIFAR ResNet18 runs on the engine's Verilog (Verilator) for
each chosen family and for the dense baseline configuration with the same number of multipliers
(K = 9, P = 1). Figures per layer: cycles (start to done, from the RTL counters), MACs issued
(the ``macs`` counter), multiplier utilization (MACs / (multipliers x cycles)), dense-equivalent
MACs per multiplier per cycle (the dense layer's MACs / (multipliers x cycles)), the family's
ideal 9P/T and the share of it reached, the speedup over the dense configuration, and the
analytical cycle model's prediction and error.

When a layer's weights exceed the weight buffer the compiler splits it into output-channel tiles
that run one after the other with identical schedules; the benchmark simulates one tile and
multiplies by the tile count (the table says ``tiles``), so each row's figures are exactly those
of the whole layer's tiles back to back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from psconv.config import EngineConfig
from psconv.families import dense_family, family_by_name, pointwise_family
from psconv.firmware.compiler import output_channel_tiles
from psconv.firmware.packing import rotated_masks

from .results import write_results


@dataclass(frozen=True)
class LayerShape:
    name: str
    in_channels: int
    out_channels: int
    size: int
    stride: int
    kernel: int

    @property
    def out_size(self) -> int:
        return (self.size - 1) // self.stride + 1


RESNET18_SHAPES = (
    LayerShape("stem", 3, 64, 32, 1, 3),
    LayerShape("layer1 conv", 64, 64, 32, 1, 3),
    LayerShape("layer2.0.conv1", 64, 128, 32, 2, 3),
    LayerShape("layer2.0.shortcut", 64, 128, 32, 2, 1),
    LayerShape("layer2 conv", 128, 128, 16, 1, 3),
    LayerShape("layer3.0.conv1", 128, 256, 16, 2, 3),
    LayerShape("layer3.0.shortcut", 128, 256, 16, 2, 1),
    LayerShape("layer3 conv", 256, 256, 8, 1, 3),
    LayerShape("layer4.0.conv1", 256, 512, 8, 2, 3),
    LayerShape("layer4.0.shortcut", 256, 512, 8, 2, 1),
    LayerShape("layer4 conv", 512, 512, 4, 1, 3),
)


def layer_family(shape: LayerShape, family_name: str):
    """The family a layer runs with: the stem stays dense, 1x1 layers use the pointwise table."""
    if shape.kernel == 1:
        return pointwise_family()
    if shape.in_channels == 3:
        return dense_family()
    return family_by_name(family_name)


def bench_config(family_name: str, tm: int = 4, tn: int = 16) -> EngineConfig:
    """The configuration benchmarked: ResNet18-sized buffers, ``tm * tn`` multipliers.

    Sparse families share one build (mask table of up to 16 entries, loaded per layer); the
    dense baseline is its own configuration (K = 9, P = 1).
    """
    if family_name == "dense":
        family, max_period = dense_family(), 1
    else:
        family, max_period = family_by_name("PSD1_P16"), max(16, family_by_name(family_name).period)
    return EngineConfig(tm=tm, tn=tn, family=family, max_period=max_period,
                        max_in_channels=512, max_out_channels=512, max_height=32, max_width=32,
                        fmap_depth=65536, weight_depth=8192)


def _tiles(shape: LayerShape, family, config: EngineConfig) -> list[int]:
    """Output channels of each tile, exactly as the compiler splits the layer."""
    return output_channel_tiles(config, rotated_masks(family), shape.in_channels,
                                shape.out_channels, shape.name)


def _case(shape: LayerShape, family, config: EngineConfig, channels: int, generator):
    from psconv.sim.engine_rtl import make_case, random_int8, random_weight

    weight = random_weight(family, channels, shape.in_channels, generator)
    fmap = random_int8((shape.in_channels, shape.size, shape.size), generator, 0, 127)
    return make_case(f"{shape.name} ({channels} channels)", weight, family, fmap, config,
                     stride=shape.stride, relu=True,
                     multiplier=torch.full((channels,), 1 << 12, dtype=torch.int64))


def _measure(shapes, family_name, tm, tn, use_rtl, seed, progress):
    """Per-shape totals for one family over all of the layer's tiles: cycles (RTL, or the model
    with ``use_rtl=False``), MACs, and the model's prediction. Each distinct tile size is run once
    (every tile of a size has the same schedule)."""
    from psconv.sim.cycle_model import predict_cycles

    config = bench_config(family_name, tm, tn)
    generator = torch.Generator().manual_seed(seed)
    rtl = None
    if use_rtl:
        from psconv.sim.engine_rtl import EngineRTL

        rtl = EngineRTL(config)
    figures = []
    for shape in progress(shapes, desc=f"{'RTL' if use_rtl else 'model'} {family_name}"):
        family = layer_family(shape, family_name)
        tiles = _tiles(shape, family, config)
        total = {"cycles": 0, "macs": 0, "model_cycles": 0}
        for channels in sorted(set(tiles)):
            count = tiles.count(channels)
            case = _case(shape, family, config, channels, generator)
            predicted = predict_cycles(config, case.spec, case.masks)
            if rtl is not None:
                from psconv.sim.engine_rtl import mismatch_report

                (run,) = rtl.run([case], seed=seed)
                report = mismatch_report(case, run.actual)
                if report:
                    raise AssertionError(f"engine bench: RTL output is not bit-exact: {report}")
                cycles, macs = run.cycles, run.counters["macs"]
            else:
                cycles, macs = predicted["total"], predicted["macs"]
            total["cycles"] += count * cycles
            total["macs"] += count * macs
            total["model_cycles"] += count * predicted["total"]
        ideal = 9 * family.period / family.taps_per_period if shape.kernel == 3 else 1.0
        figures.append({"shape": shape, "tiles": len(tiles), "ideal": ideal, **total})
    return config, figures


def run(families, shapes=RESNET18_SHAPES, tm: int = 4, tn: int = 16, use_rtl: bool = True,
        outdir=None, seed: int = 0, quiet: bool = False):
    """Benchmark ``families`` against the dense configuration; returns the results folder."""
    from tqdm import tqdm

    def progress(items, desc):
        return tqdm(items, desc=desc, unit="layer", disable=quiet, leave=False)


    started = time.perf_counter()
    _, dense = _measure(shapes, "dense", tm, tn, use_rtl, seed, progress)
    rows = []
    for family_name in families:
        config, figures = (_measure(shapes, family_name, tm, tn, use_rtl, seed, progress)
                           if family_name != "dense" else (None, dense))
        for entry, base in zip(figures, dense):
            shape = entry["shape"]
            multipliers = tm * tn
            cycles = entry["cycles"]
            dense_macs = shape.out_channels * shape.in_channels * shape.kernel ** 2 * shape.out_size ** 2
            dense_equivalent = dense_macs / (multipliers * cycles)
            rows.append({
                "family": family_name, "layer": shape.name,
                "shape": f"{shape.in_channels}x{shape.size}x{shape.size}->{shape.out_channels}"
                         f"{' 1x1' if shape.kernel == 1 else ''} s{shape.stride}",
                "tiles": entry["tiles"], "cycles": cycles, "macs": entry["macs"],
                "utilization": entry["macs"] / (multipliers * cycles),
                "dense_eq_per_mult_cycle": dense_equivalent, "ideal": entry["ideal"],
                "pct_of_ideal": 100 * dense_equivalent / entry["ideal"],
                "speedup_vs_dense": base["cycles"] / cycles,
                "model_cycles": entry["model_cycles"],
                "model_error_pct": 100 * (entry["model_cycles"] - cycles) / cycles,
                "source": "rtl" if use_rtl else "model",
            })
    three_by_three = [r for r in rows if "1x1" not in r["shape"] and r["layer"] != "stem"]
    worst = min(three_by_three, key=lambda r: r["pct_of_ideal"]) if three_by_three else None
    summary = {
        "multipliers": tm * tn,
        "source": "RTL simulation (Verilator), bit-exact checked" if use_rtl else "analytical model",
        "worst 3x3 layer vs ideal": (f"{worst['pct_of_ideal']:.1f} % ({worst['family']}, "
                                     f"{worst['layer']})") if worst else "n/a",
        "max |model error|": f"{max(abs(r['model_error_pct']) for r in rows):.2f} %",
        "seconds": round(time.perf_counter() - started, 1),
    }

    def plot(path):
        import matplotlib.pyplot as plt

        names = [s.name for s in shapes]
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / max(1, len(families))
        for k, family_name in enumerate(families):
            values = [r["dense_eq_per_mult_cycle"] for r in rows if r["family"] == family_name]
            ax.bar([x + k * width for x in range(len(names))], values, width, label=family_name)
            ideal = 9 * family_by_name(family_name).period / family_by_name(family_name).taps_per_period
            ax.axhline(ideal, color=ax.patches[-1].get_facecolor(), linestyle=":", linewidth=1)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=35, ha="right")
        ax.set_ylabel("dense-equivalent MACs / multiplier / cycle")
        ax.set_title(f"Engine efficiency on ResNet18-CIFAR layers ({tm * tn} multipliers; dotted: ideal 9P/T)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return write_results("engine", rows, outdir, summary, plot)


def register(benches) -> None:
    parser = benches.add_parser(
        "engine", help="ResNet18 layer shapes on the RTL: cycles, utilization, speedup vs dense",
        description=__doc__.split("\n\n")[0] + " Full channel counts; one output-channel tile is "
                    "simulated per layer when the compiler would tile it.")
    parser.add_argument("--families", nargs="+", default=["PS4_P8", "PSD4_P8", "PSD1_P16"],
                        help="families to compare with the dense configuration")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="subset of layer names (default: all distinct ResNet18 shapes)")
    parser.add_argument("--tm", type=int, default=4)
    parser.add_argument("--tn", type=int, default=16)
    parser.add_argument("--model-only", action="store_true",
                        help="use the analytical cycle model instead of RTL simulation")
    parser.add_argument("--out", help="results folder (default results/engine)")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.errors import PsconvError

    shapes = RESNET18_SHAPES
    if args.layers:
        known = {s.name: s for s in RESNET18_SHAPES}
        unknown = [name for name in args.layers if name not in known]
        if unknown:
            raise PsconvError(f"bench engine: unknown layer(s) {unknown}; allowed: {list(known)}")
        shapes = tuple(known[name] for name in args.layers)
    for name in args.families:
        family_by_name(name)
    run(args.families, shapes, args.tm, args.tn, not args.model_only, args.out)
    return 0
