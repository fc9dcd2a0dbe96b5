"""``psconv model-stats``: parameters and MACs of the paper's ResNet18/VGG16 variants.

A thin front over :func:`psconv.nn.stats.variant_table`; the counting rules are in
:mod:`psconv.nn.stats`.
"""

from __future__ import annotations

import json

from ..errors import PsconvError
from ..families import MAX_PERIOD, check_period, check_taps
from ..nn.models import ARCHITECTURES
from ..nn.stats import variant_table

_TITLES = {"resnet18": "ResNet18 (CIFAR-10)", "vgg16": "VGG16 (CIFAR-10)"}
_COLUMNS = ("variant", "params", "nonzero params", "params fewer", "dense MACs",
            "effective MACs", "MACs fewer")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model-stats",
        help="parameter and MAC counts of the periodic-sparse ResNet18/VGG16 variants",
        description="Parameters, nonzero parameters and MACs of the dense baseline and every "
                    "PS<K>_P<P> and PSD<K>_P<P> variant, for a 3x32x32 input. 'dense MACs' is "
                    "the ptflops-style count (conv, fc, BN, ReLU, pooling; masks ignored); "
                    "'effective MACs' counts conv and fc multiply-accumulates on kept taps only; "
                    "'MACs fewer' is dense conv+fc MACs over effective MACs.")
    parser.add_argument("--arch", choices=(*ARCHITECTURES, "all"), default="all",
                        help="network (default: all)")
    parser.add_argument("--k", nargs="+", type=int, default=[1, 2, 3, 4], metavar="K",
                        help="taps per sparse kernel (default: 1 2 3 4)")
    parser.add_argument("--periods", nargs="+", type=int, default=[4, 8, 16], metavar="P",
                        help=f"pattern periods, each 1..{MAX_PERIOD} (default: 4 8 16)")
    parser.add_argument("--json", action="store_true",
                        help="print {arch: [rows]} as JSON instead of tables")
    parser.set_defaults(func=run)


def _format_row(row: dict) -> tuple[str, ...]:
    return (row["name"], f"{row['parameters']:,}", f"{row['nonzero_parameters']:,}",
            f"{row['param_reduction_percent']:.1f} %", f"{row['dense_macs'] / 1e6:.2f} M",
            f"{row['effective_macs'] / 1e6:.2f} M", f"{row['mac_reduction']:.2f}x")


def _print_table(arch: str, rows: list[dict]) -> None:
    cells = [_COLUMNS] + [_format_row(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
    dense = rows[0]
    print(f"{_TITLES[arch]}: dense {dense['dense_macs'] / 1e9:.4f} GMac ptflops-style "
          f"= conv+fc {dense['conv_fc_macs'] / 1e9:.4f} G + BN/ReLU/pool "
          f"{dense['elementwise_ops'] / 1e9:.4f} G")
    for i, c in enumerate(cells):
        print("  ".join([c[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(c[1:], widths[1:])]))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def run(args) -> int:
    for option, values, check in (("--k", args.k, check_taps),
                                  ("--periods", args.periods, check_period)):
        for value in values:        # before any model is built: P = 10**6 would never finish
            try:
                check(value)
            except PsconvError as e:
                raise PsconvError(f"{option}: {e}") from None
    archs = list(ARCHITECTURES) if args.arch == "all" else [args.arch]
    tables = {arch: variant_table(arch, ks=tuple(args.k), periods=tuple(args.periods)) for arch in archs}
    if args.json:
        print(json.dumps(tables, indent=2))
        return 0
    for n, arch in enumerate(archs):
        if n:
            print()
        _print_table(arch, tables[arch])
    return 0
