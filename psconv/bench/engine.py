"""Engine efficiency benchmark: ResNet18-CIFAR layer shapes on the engine, per layer and per network.

Every distinct convolution shape of CIFAR ResNet18 runs for each chosen family and for the dense
baseline configuration with the same number of multipliers (K = 9, P = 1), either on the engine's
Verilog (Verilator, every output checked bit-exact against the golden model) or through the
analytical cycle model (``sim/cycle_model.py``); each row says which (``source``). By default the
families of ``--rtl-families`` are simulated and the others come from the model; every RTL row
also carries the model's prediction and error, so a run states on which families and layers the
model was validated and the largest error seen.

Figures per layer: cycles (start to done, all output-channel tiles, input loads included), MACs
issued (the ``macs`` counter: kept taps only), multiplier utilization (MACs / (multipliers x
cycles)), dense-equivalent MACs per multiplier per cycle (the dense layer's MACs / (multipliers x
cycles)), the family's ideal 9P/T (1 for the dense stem and the 1x1 shortcuts) and the share of it
reached, the speedup over the dense configuration. One ``network`` row per family sums the 20
convolutions of the whole network (each shape weighted by how often it occurs, ``count``): its
ideal is the throughput at which every layer reached its own ideal, and ``worst_3x3_*`` names the
3x3 layer (stem excluded: it is dense in every family) furthest from its ideal.

When a layer's weights exceed the weight buffer the compiler splits it into output-channel tiles
that run one after the other, each reloading the input map; the benchmark runs each distinct tile
size once and multiplies by its tile count (the table says ``tiles``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psconv.config import EngineConfig
from psconv.families import dense_family, family_by_name, pointwise_family
from psconv.firmware.compiler import output_channel_tiles
from psconv.firmware.packing import rotated_masks
from psconv.outputs import output_folder

from .results import format_table, write_results

TARGET_PCT = 90.0

#: The paper's families, K = 1..4 without (PS, balanced: every kernel keeps K taps) and with (PSD)
#: the dense kernel, at P = 8 and P = 16.
PAPER_FAMILIES = tuple(f"PS{k}_P{p}" for k in (1, 2, 3, 4) for p in (8, 16)) + tuple(
    f"PSD{k}_P{p}" for k in (1, 2, 3, 4) for p in (8, 16))

#: Families simulated on the RTL by default (``dense`` = the dense baseline configuration): the
#: paper's K = 4 families and its headline ResNet18 family, about 7 minutes on 2 cores (all 16
#: families on RTL would take about half an hour).
DEFAULT_RTL_FAMILIES = ("PS4_P8", "PSD4_P8", "PSD1_P16", "dense")


@dataclass(frozen=True)
class LayerShape:
    name: str
    in_channels: int
    out_channels: int
    size: int
    stride: int
    kernel: int
    count: int = 1          # how many convolutions of ResNet18-CIFAR have this shape

    @property
    def out_size(self) -> int:
        return (self.size - 1) // self.stride + 1

    @property
    def dense_macs(self) -> int:
        return self.out_channels * self.in_channels * self.kernel ** 2 * self.out_size ** 2

    def text(self) -> str:
        return (f"{self.in_channels}x{self.size}x{self.size}->{self.out_channels}"
                f"{' 1x1' if self.kernel == 1 else ''} s{self.stride}")


RESNET18_SHAPES = (
    LayerShape("stem", 3, 64, 32, 1, 3),
    LayerShape("layer1 conv", 64, 64, 32, 1, 3, count=4),
    LayerShape("layer2.0.conv1", 64, 128, 32, 2, 3),
    LayerShape("layer2.0.shortcut", 64, 128, 32, 2, 1),
    LayerShape("layer2 conv", 128, 128, 16, 1, 3, count=3),
    LayerShape("layer3.0.conv1", 128, 256, 16, 2, 3),
    LayerShape("layer3.0.shortcut", 128, 256, 16, 2, 1),
    LayerShape("layer3 conv", 256, 256, 8, 1, 3, count=3),
    LayerShape("layer4.0.conv1", 256, 512, 8, 2, 3),
    LayerShape("layer4.0.shortcut", 256, 512, 8, 2, 1),
    LayerShape("layer4 conv", 512, 512, 4, 1, 3, count=3),
)


def layer_family(shape: LayerShape, family_name: str):
    """The family a layer runs with: the stem stays dense, 1x1 layers use the pointwise table."""
    if shape.kernel == 1:
        return pointwise_family()
    if shape.in_channels == 3:
        return dense_family()
    return family_by_name(family_name)


def layer_ideal(shape: LayerShape, family) -> float:
    """Dense-equivalent MACs per multiplier per cycle at full utilization: 9P/T for 3x3 layers
    (1 for the dense stem), 1 for 1x1 layers."""
    return family.ideal_dense_equivalent if shape.kernel == 3 else 1.0


def is_sparse_3x3(shape: LayerShape) -> bool:
    """The layers the per-layer target applies to: 3x3 and running the family (not the stem)."""
    return shape.kernel == 3 and shape.in_channels != 3


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
    import torch

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
    rtl = generator = None
    if use_rtl:
        import torch

        from psconv.sim.engine_rtl import EngineRTL

        generator = torch.Generator().manual_seed(seed)
        rtl = EngineRTL(config)
    figures = []
    for shape in progress(shapes, desc=f"{'RTL' if use_rtl else 'model'} {family_name}"):
        family = layer_family(shape, family_name)
        tiles = _tiles(shape, family, config)
        total = {"cycles": 0, "macs": 0, "model_cycles": 0}
        for channels in sorted(set(tiles)):
            count = tiles.count(channels)
            layer = {"in_channels": shape.in_channels, "out_channels": channels,
                     "in_height": shape.size, "in_width": shape.size, "stride": shape.stride,
                     "kernel": shape.kernel}
            predicted = predict_cycles(config, layer, family)
            if rtl is not None:
                from psconv.sim.engine_rtl import mismatch_report

                case = _case(shape, family, config, channels, generator)
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
        figures.append({"shape": shape, "tiles": len(tiles),
                        "ideal": layer_ideal(shape, family), **total})
    return figures


def _layer_row(family_name, entry, base, multipliers, source):
    shape = entry["shape"]
    cycles = entry["cycles"]
    dense_equivalent = shape.dense_macs / (multipliers * cycles)
    rtl = source == "rtl"
    return {
        "family": family_name, "layer": shape.name, "shape": shape.text(), "count": shape.count,
        "tiles": entry["tiles"], "source": source, "cycles": cycles, "macs": entry["macs"],
        "utilization": entry["macs"] / (multipliers * cycles),
        "dense_eq_per_mult_cycle": dense_equivalent, "ideal": entry["ideal"],
        "pct_of_ideal": 100 * dense_equivalent / entry["ideal"],
        "speedup_vs_dense": base["cycles"] / cycles,
        "model_cycles": entry["model_cycles"],
        "model_error_pct": 100 * (entry["model_cycles"] - cycles) / cycles if rtl else None,
        "worst_3x3_layer": None, "worst_3x3_pct_of_ideal": None,
    }


def _network_row(family_name, figures, dense, layer_rows, multipliers):
    """The whole network: every shape weighted by its ``count``."""
    cycles = sum(f["shape"].count * f["cycles"] for f in figures)
    macs = sum(f["shape"].count * f["macs"] for f in figures)
    model_cycles = sum(f["shape"].count * f["model_cycles"] for f in figures)
    dense_cycles = sum(f["shape"].count * f["cycles"] for f in dense)
    dense_macs = sum(f["shape"].count * f["shape"].dense_macs for f in figures)
    ideal_cycles = sum(f["shape"].count * f["shape"].dense_macs / (multipliers * f["ideal"])
                       for f in figures)
    ideal = dense_macs / (multipliers * ideal_cycles)
    dense_equivalent = dense_macs / (multipliers * cycles)
    sources = {r["source"] for r in layer_rows}
    rtl = sources == {"rtl"}
    sparse = [r for r, f in zip(layer_rows, figures) if is_sparse_3x3(f["shape"])]
    worst = min(sparse, key=lambda r: r["pct_of_ideal"]) if sparse else None
    return {
        "family": family_name, "layer": "network", "shape": f"{len(figures)} shapes",
        "count": sum(f["shape"].count for f in figures),
        "tiles": sum(f["shape"].count * f["tiles"] for f in figures),
        "source": sources.pop() if len(sources) == 1 else "mixed",
        "cycles": cycles, "macs": macs, "utilization": macs / (multipliers * cycles),
        "dense_eq_per_mult_cycle": dense_equivalent, "ideal": ideal,
        "pct_of_ideal": 100 * dense_equivalent / ideal,
        "speedup_vs_dense": dense_cycles / cycles, "model_cycles": model_cycles,
        "model_error_pct": 100 * (model_cycles - cycles) / cycles if rtl else None,
        "worst_3x3_layer": worst["layer"] if worst else None,
        "worst_3x3_pct_of_ideal": worst["pct_of_ideal"] if worst else None,
    }


def run(families, shapes=RESNET18_SHAPES, tm: int = 4, tn: int = 16, use_rtl: bool = True,
        outdir=None, seed: int = 0, progress: bool = True, rtl_families=None):
    """Benchmark ``families`` against the dense configuration; returns the results folder.

    ``rtl_families`` (names, ``dense`` for the baseline) selects what runs on the RTL; ``None``
    means everything when ``use_rtl`` and nothing otherwise. ``progress``: a progress bar on
    stderr when it is a terminal (never in a log).
    """
    from tqdm import tqdm

    def bar(items, desc):
        return tqdm(items, desc=desc, unit="layer", disable=None if progress else True,
                    leave=False)

    if rtl_families is None:
        rtl_families = set(families) | {"dense"} if use_rtl else set()
    rtl_families = set(rtl_families)
    order = ["dense"] + [f for f in dict.fromkeys(families) if f != "dense"]
    multipliers = tm * tn

    started = time.perf_counter()
    measured = {}
    for family_name in order:
        measured[family_name] = _measure(shapes, family_name, tm, tn,
                                         family_name in rtl_families, seed, bar)
    dense = measured["dense"]
    rows, totals = [], []
    for family_name in order:
        source = "rtl" if family_name in rtl_families else "model"
        layer_rows = [_layer_row(family_name, entry, base, multipliers, source)
                      for entry, base in zip(measured[family_name], dense)]
        total = _network_row(family_name, measured[family_name], dense, layer_rows, multipliers)
        rows += layer_rows + [total]
        totals.append(total)

    layer_rows = [r for r in rows if r["layer"] != "network"]
    rtl_rows = [r for r in layer_rows if r["source"] == "rtl"]
    sparse_names = {s.name for s in shapes if is_sparse_3x3(s)}
    sparse_rows = [r for r in layer_rows if r["layer"] in sparse_names and r["family"] != "dense"]
    worst = min(sparse_rows, key=lambda r: r["pct_of_ideal"]) if sparse_rows else None
    below_layer = sorted({r["family"] for r in sparse_rows if r["pct_of_ideal"] < TARGET_PCT})
    below_network = [t["family"] for t in totals if t["utilization"] * 100 < TARGET_PCT]
    rtl_names = [f for f in order if f in rtl_families]
    summary = {
        "multipliers": multipliers,
        "families": len(order) - 1,
        "source": (f"RTL simulation (Verilator, bit-exact checked): {', '.join(rtl_names) or 'none'}; "
                   f"analytical model: {', '.join(f for f in order if f not in rtl_families) or 'none'}"),
        "model validated against RTL on": (
            f"{', '.join(rtl_names)} x {len({r['layer'] for r in rtl_rows})} layer shapes "
            f"({len(rtl_rows)} layer runs)" if rtl_rows else "nothing (no RTL rows in this run)"),
        "max |model error| on RTL rows": (
            f"{max(abs(r['model_error_pct']) for r in rtl_rows):.3f} %" if rtl_rows else "n/a"),
        "worst 3x3 layer vs ideal": (f"{worst['pct_of_ideal']:.1f} % ({worst['family']}, "
                                     f"{worst['layer']})") if worst else "n/a",
        f"families below {TARGET_PCT:.0f} % of ideal on some 3x3 layer":
            ", ".join(below_layer) or "none",
        f"families below {TARGET_PCT:.0f} % whole-network utilization":
            ", ".join(below_network) or "none",
        "seconds": round(time.perf_counter() - started, 1),
    }
    layer_names = [s.name for s in shapes]

    def plot(path):
        import matplotlib.pyplot as plt

        _plot_layers(plt, path, rows, order, layer_names, multipliers)
        _plot_ideal(plt, path.with_name(path.stem + "_ideal.png"), totals, multipliers)

    folder = write_results("engine", rows, outdir, summary, plot)
    print()
    convolutions = sum(s.count for s in shapes)
    print(f"Per family, summed over {convolutions} convolutions"
          f"{' (the whole ResNet18-CIFAR)' if tuple(shapes) == RESNET18_SHAPES else ' (--layers subset)'}:")
    print(format_table([{
        "family": t["family"], "source": t["source"], "cycles": t["cycles"],
        "utilization": t["utilization"], "dense_eq": t["dense_eq_per_mult_cycle"],
        "ideal": t["ideal"], "pct_of_ideal": t["pct_of_ideal"],
        "worst_3x3_pct": t["worst_3x3_pct_of_ideal"] if t["worst_3x3_pct_of_ideal"] is not None
        else "", "worst_3x3_layer": t["worst_3x3_layer"] or "",
        "speedup_vs_dense": t["speedup_vs_dense"]} for t in totals]))
    return folder


def _plot_layers(plt, path, rows, order, layer_names, multipliers):
    """Heat map: share of ideal per family and layer, annotated with the dense-equivalent MACs
    per multiplier per cycle; RTL-measured families marked."""
    import numpy as np

    columns = layer_names + ["network"]
    table = {(r["family"], r["layer"]): r for r in rows}
    share = np.array([[table[f, c]["pct_of_ideal"] for c in columns] for f in order])
    fig, ax = plt.subplots(figsize=(0.95 * len(columns) + 3, 0.42 * len(order) + 2.2))
    image = ax.imshow(share, cmap="RdYlGn", vmin=80, vmax=100, aspect="auto")
    for y, f in enumerate(order):
        for x, c in enumerate(columns):
            r = table[f, c]
            ax.text(x, y, f"{r['dense_eq_per_mult_cycle']:.2f}\n{r['pct_of_ideal']:.0f}%",
                    ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right", fontsize=8)
    labels = [f"{f} ({table[f, 'network']['source']})" for f in order]
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    ax.axvline(len(columns) - 1.5, color="black", linewidth=1)
    fig.colorbar(image, ax=ax, label="% of ideal dense-equivalent throughput (9P/T)", shrink=0.8)
    ax.set_title(f"ResNet18-CIFAR on the engine ({multipliers} multipliers): dense-equivalent "
                 "MACs/multiplier/cycle and % of ideal", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _plot_ideal(plt, path, totals, multipliers):
    """Per family: whole-network and worst 3x3 layer's share of ideal (bars) and whole-network
    multiplier utilization (marker), against the 90 % target."""
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(totals) + 2), 4.2))
    xs = range(len(totals))
    network = [t["pct_of_ideal"] for t in totals]
    worst = [t["worst_3x3_pct_of_ideal"] or t["pct_of_ideal"] for t in totals]
    utilization = [100 * t["utilization"] for t in totals]
    width = 0.38
    ax.bar([x - width / 2 for x in xs], network, width, label="whole network, % of ideal")
    ax.bar([x + width / 2 for x in xs], worst, width, label="worst 3x3 layer, % of ideal")
    ax.plot([x - width / 2 for x in xs], utilization, "k_", markersize=12, markeredgewidth=2,
            label="whole-network multiplier utilization")
    ax.axhline(TARGET_PCT, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_PCT:.0f} %")
    ax.set_xticks(list(xs), [f"{t['family']}{'*' if t['source'] == 'rtl' else ''}" for t in totals],
                  rotation=45, ha="right", fontsize=8)
    low = min(network + worst + utilization)
    ax.set_ylim(max(0, 5 * int(low / 5) - 5), 101)
    ax.set_ylabel("%  (axis does not start at 0)")
    ax.set_title(f"Share of ideal 9P/T per family, ResNet18-CIFAR, {multipliers} multipliers "
                 "(* = RTL, else model)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def register(benches) -> None:
    parser = benches.add_parser(
        "engine", help="ResNet18 layer shapes on the engine: cycles, utilization, speedup vs dense",
        description=__doc__.split("\n\n")[0] + " Full channel counts; one output-channel tile is "
                    "run per distinct tile size when the compiler would tile a layer.")
    parser.add_argument("--families", nargs="+", default=list(PAPER_FAMILIES),
                        help="families to compare with the dense configuration (default: the "
                             "paper's PS1..4 and PSD1..4 at P = 8 and 16)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--source", choices=("auto", "rtl", "model"), default="auto",
                        help="auto (default): RTL for --rtl-families, the model for the rest; "
                             "rtl: every family and the dense baseline on RTL; model: none")
    source.add_argument("--model-only", action="store_true",
                        help="same as --source model: the analytical cycle model only (fast)")
    parser.add_argument("--rtl-families", nargs="+", default=list(DEFAULT_RTL_FAMILIES),
                        metavar="FAMILY",
                        help="families simulated on RTL with --source auto ('dense': the "
                             f"baseline); default: {' '.join(DEFAULT_RTL_FAMILIES)}")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="subset of layer names (default: all distinct ResNet18 shapes)")
    parser.add_argument("--tm", type=int, default=4,
                        help="PE rows of the engine benchmarked (default: %(default)s)")
    parser.add_argument("--tn", type=int, default=16,
                        help="PE lanes of the engine benchmarked (default: %(default)s)")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/engine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    families = [family_by_name(name).name for name in args.families]
    rtl_names = {family_by_name(name).name for name in args.rtl_families}
    source = "model" if args.model_only else args.source
    if source == "model":
        rtl_families = set()
    elif source == "rtl":
        rtl_families = set(families) | {"dense"}
    else:
        rtl_families = rtl_names
    run(families, shapes, args.tm, args.tn, outdir=args.out, rtl_families=rtl_families,
        progress=not args.no_progress)
    return 0
