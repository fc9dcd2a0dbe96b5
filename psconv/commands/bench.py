"""``psconv bench``: benchmarks that print figures and write CSV/JSON/PNG to a results folder.

Each sub-benchmark is a module of :mod:`psconv.bench` exposing ``register(benches)``.
"""

from __future__ import annotations

import importlib

SUB_BENCHMARKS = ("engine", "storage", "simspeed", "e2e", "impl", "accuracy", "soak", "fuzz",
                  "netlist")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmarks: engine efficiency, storage, sim speed, end to end",
        description="Each benchmark prints a table and writes CSV, JSON and a PNG plot to "
                    "results/<benchmark>/ (or --out). Long runs live here, not in the tests.")
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for name in SUB_BENCHMARKS:
        importlib.import_module(f"psconv.bench.{name}").register(benches)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
