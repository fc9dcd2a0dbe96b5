"""Where benchmark results go and how they are written: one folder per benchmark run.

Every benchmark returns rows (dicts with the same keys) plus a description; :func:`write_results`
writes ``<name>.csv``, ``<name>.json`` (rows, the command line, machine facts, time) and the
caller's plot into ``results/<name>/`` (or the folder the user names) and prints the table.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

DEFAULT_RESULTS = Path("results")


def machine_facts() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """An aligned text table; floats get 3 significant decimals."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns),
             "  ".join("-" * widths[c] for c in columns)]
    for row in rows:
        lines.append("  ".join(cell(row.get(c, "")).rjust(widths[c]) for c in columns))
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_results(name: str, rows: list[dict], outdir=None, summary: dict | None = None,
                  plot=None, columns: list[str] | None = None,
                  tables: dict | None = None) -> Path:
    """Write ``rows`` as CSV and JSON (with ``summary``) and ``plot(path)`` as PNG; print the table.

    ``tables``: more tables of the same run whose rows have other columns, ``{key: (rows,
    columns)}``: each is written as ``<name>_<key>.csv``, kept in the JSON under ``key`` beside
    ``rows``, and printed after the main table under its key. Returns the folder written.
    """
    folder = Path(outdir) if outdir else DEFAULT_RESULTS / name
    folder.mkdir(parents=True, exist_ok=True)
    columns = columns or (list(rows[0]) if rows else [])
    tables = {key: (table, cols or (list(table[0]) if table else []))
              for key, (table, cols) in (tables or {}).items()}
    _write_csv(folder / f"{name}.csv", rows, columns)
    for key, (table, cols) in tables.items():
        _write_csv(folder / f"{name}_{key}.csv", table, cols)
    document = {"benchmark": name, "command": " ".join(["psconv"] + sys.argv[1:]),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_facts(),
                "summary": summary or {}, "rows": rows}
    for key, (table, _) in tables.items():
        if key in document:
            raise ValueError(f"write_results: table key {key!r} is taken by the document")
        document[key] = table
    with open(folder / f"{name}.json", "w") as f:
        json.dump(document, f, indent=1, default=str)
    if plot is not None and rows:
        import matplotlib

        matplotlib.use("Agg")
        plot(folder / f"{name}.png")
    if rows or not tables:
        print(format_table(rows, columns))
    for key, (table, cols) in tables.items():
        print(f"\n{key}:")
        print(format_table(table, cols))
    for key, value in (summary or {}).items():
        print(f"{key}: {value}")
    print(f"results written to {folder}/")
    return folder
