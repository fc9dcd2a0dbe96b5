"""Each benchmark runs on a tiny configuration and writes well-formed CSV, JSON and PNG."""

import csv
import json

from psconv.cli import main


def _read(folder, name):
    with open(folder / f"{name}.json") as f:
        document = json.load(f)
    with open(folder / f"{name}.csv") as f:
        rows = list(csv.DictReader(f))
    assert (folder / f"{name}.png").stat().st_size > 1000
    assert len(rows) == len(document["rows"]) > 0
    assert document["machine"]["cpus"] >= 1
    return document, rows


def test_storage_bench(tmp_path):
    assert main(["bench", "storage", "--families", "dense", "PSD1_P16", "--width", "8",
                 "--out", str(tmp_path)]) == 0
    document, rows = _read(tmp_path, "storage")
    by_family = {r["family"]: r for r in document["rows"]}
    assert by_family["PSD1_P16"]["ours_total"] < by_family["dense"]["ours_total"]
    assert 0.999 < by_family["dense"]["vs_dense"] <= 1.0  # dense pays only its mask tables


def test_engine_bench_model_only(tmp_path):
    assert main(["bench", "engine", "--model-only", "--families", "PS4_P8", "PSD1_P16",
                 "--out", str(tmp_path)]) == 0
    document, rows = _read(tmp_path, "engine")
    assert len(rows) == 2 * 11
    for row in document["rows"]:
        assert 0 < row["utilization"] <= 1.0
        assert row["dense_eq_per_mult_cycle"] <= row["ideal"] + 1e-9
        assert row["source"] == "model"


def test_engine_bench_on_rtl_tiny(tmp_path):
    assert main(["bench", "engine", "--families", "PSD1_P16", "--layers", "layer4.0.shortcut",
                 "--tm", "2", "--tn", "4", "--out", str(tmp_path)]) == 0
    document, rows = _read(tmp_path, "engine")
    (row,) = document["rows"]
    assert row["source"] == "rtl"
    assert abs(row["model_error_pct"]) < 2.0
    assert row["macs"] == 512 * 256 * 4 * 4


def test_unknown_layer_is_a_clear_error(capsys):
    assert main(["bench", "engine", "--layers", "layer9"]) == 2
    assert "unknown layer" in capsys.readouterr().err
