"""Storage benchmark: bytes per layer and per network, our format against common sparse formats.

For each family the network's convolutions are packed (random int8 values on the family's
kept taps: sizes depend only on the structure) and measured with
:func:`psconv.firmware.packing.storage_report`. Off-chip bytes the driver actually sends per
inference come from ``psconv bench e2e`` (they include feature maps and tables).
"""

from __future__ import annotations

import torch

from psconv.families import family_by_name
from psconv.firmware.packing import pack_layer, storage_report
from psconv.outputs import output_folder

from .results import write_results

FORMATS = ("ours_total", "dense_int8", "bitmap", "csr", "two_four")


def network_reports(arch: str, family_name: str, width: int | None = None):
    """Storage reports of every convolution of ``arch`` built with ``family_name``."""
    from psconv.nn.models import check_width, resnet18_cifar, vgg16_cifar

    if width is not None:
        check_width(width)
    from psconv.nn.sparse_conv import PeriodicSparseConv2d

    family = family_by_name(family_name)
    if arch == "resnet18":
        model = resnet18_cifar(family, width=64 if width is None else width)
    else:
        model = vgg16_cifar(family, width_scale=(64 if width is None else width) / 64)
    generator = torch.Generator().manual_seed(0)
    reports = []
    for name, module in model.named_modules():
        if isinstance(module, PeriodicSparseConv2d):
            mask = module.mask.to(torch.int64)
            values = torch.randint(-127, 128, tuple(mask.shape), generator=generator) * mask
            reports.append(storage_report(pack_layer(values.to(torch.int8), module.family, name)))
    return reports


def run(families, arch: str = "resnet18", width: int | None = None, outdir=None):
    rows = []
    for family_name in families:
        reports = network_reports(arch, family_name, width)
        weights = sum(r.ours_weights for r in reports)
        metadata = sum(r.ours_metadata for r in reports)
        row = {"family": family_name, "layers": len(reports), "weights": weights,
               "metadata": metadata, "metadata_pct": 100.0 * metadata / weights}
        for fmt in FORMATS:
            row[fmt] = sum(getattr(r, fmt) for r in reports)
        row["vs_dense"] = row["dense_int8"] / row["ours_total"]
        rows.append(row)

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.5))
        labels = [r["family"] for r in rows]
        width_bar = 0.16
        for k, fmt in enumerate(FORMATS):
            ax.bar([x + k * width_bar for x in range(len(rows))],
                   [r[fmt] / 1e6 for r in rows], width_bar, label=fmt)
        ax.set_xticks([x + 2 * width_bar for x in range(len(rows))], labels, rotation=45)
        ax.set_ylabel("MB per network")
        ax.set_title(f"{arch} weight storage by format")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    worst = max(rows, key=lambda r: r["metadata_pct"])
    summary = {"target": "metadata < 0.1 % of weight bytes",
               "worst metadata share": f"{worst['metadata_pct']:.4f} % ({worst['family']})"}
    return write_results("storage", rows, outdir, summary, plot)


PAPER_FAMILIES = ("dense",) + tuple(f"PS{k}_P8" for k in (1, 2, 3, 4)) + tuple(
    f"PSD{k}_P{p}" for k in (1, 2, 3, 4) for p in (8, 16))


def register(benches) -> None:
    from psconv.nn.models import MAX_WIDTH

    parser = benches.add_parser("storage", help="weight bytes: ours vs dense, bitmap, CSR, 2:4",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("resnet18", "vgg16"), default="resnet18",
                        help="network (default: %(default)s)")
    parser.add_argument("--families", nargs="+", default=list(PAPER_FAMILIES), metavar="FAMILY",
                        help=f"families to pack (default: {' '.join(PAPER_FAMILIES)})")
    parser.add_argument("--width", type=int, default=None,
                        help=f"base width, 1..{MAX_WIDTH} (default: {MAX_WIDTH}, the full "
                             f"network; VGG16's channels are scaled by WIDTH/{MAX_WIDTH})")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/storage)")
    parser.set_defaults(func=lambda args: run(args.families, args.arch, args.width, args.out) and 0)
