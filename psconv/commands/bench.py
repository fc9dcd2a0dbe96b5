"""``psconv bench``: benchmarks that print figures and write CSV/JSON/PNG to a results folder."""

from __future__ import annotations

PAPER_FAMILIES = ("dense",) + tuple(f"PS{k}_P8" for k in (1, 2, 3, 4)) + tuple(
    f"PSD{k}_P{p}" for k in (1, 2, 3, 4) for p in (8, 16))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmarks: engine efficiency, storage, implementation, sim speed, e2e",
        description="Each benchmark prints a table and writes CSV, JSON and a PNG plot to "
                    "results/<benchmark>/ (or --out).")
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    storage = benches.add_parser("storage", help="weight bytes: ours vs dense, bitmap, CSR, 2:4")
    storage.add_argument("--arch", choices=("resnet18", "vgg16"), default="resnet18")
    storage.add_argument("--families", nargs="+", default=list(PAPER_FAMILIES))
    storage.add_argument("--width", type=int, default=None, help="base width (default: full)")
    storage.add_argument("--out", help="results folder")
    storage.set_defaults(func=run_storage)
    for module in ("engine",):
        try:
            __import__(f"psconv.bench.{module}")
        except ModuleNotFoundError:
            continue
        getattr(__import__(f"psconv.bench.{module}", fromlist=["register"]), "register")(benches)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_storage(args) -> int:
    from psconv.bench import storage

    storage.run(args.families, args.arch, args.width, args.out)
    return 0
