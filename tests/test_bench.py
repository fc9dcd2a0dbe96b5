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
    assert (tmp_path / "engine_ideal.png").stat().st_size > 1000
    assert len(rows) == 3 * 12  # dense baseline + 2 families, 11 shapes + the network row each
    for row in document["rows"]:
        assert 0 < row["utilization"] <= 1.0
        assert row["dense_eq_per_mult_cycle"] <= row["ideal"] + 1e-9
        assert row["source"] == "model"
        assert row["model_error_pct"] is None  # nothing to validate against
    network = {r["family"]: r for r in document["rows"] if r["layer"] == "network"}
    assert set(network) == {"dense", "PS4_P8", "PSD1_P16"}
    assert network["dense"]["speedup_vs_dense"] == 1.0
    psd = network["PSD1_P16"]
    assert psd["count"] == 20  # every convolution of ResNet18-CIFAR
    layers = [r for r in document["rows"] if r["family"] == "PSD1_P16" and r["layer"] != "network"]
    assert psd["cycles"] == sum(r["count"] * r["cycles"] for r in layers)
    sparse = [r for r in layers if r["layer"] != "stem" and "1x1" not in r["shape"]]
    assert psd["worst_3x3_pct_of_ideal"] == min(r["pct_of_ideal"] for r in sparse)
    assert 1.0 < psd["ideal"] < 6.0  # the dense stem and the 1x1 shortcuts have ideal 1
    assert "model validated against RTL on" in document["summary"]


def test_engine_bench_source_model_is_model_only(tmp_path):
    assert main(["bench", "engine", "--source", "model", "--families", "PSD2_P8",
                 "--layers", "layer2 conv", "--out", str(tmp_path)]) == 0
    document, _ = _read(tmp_path, "engine")
    assert {r["source"] for r in document["rows"]} == {"model"}


def test_shapes_cover_resnet18():
    from psconv.bench.engine import RESNET18_SHAPES
    from psconv.families import family_by_name
    from psconv.nn.models import resnet18_cifar
    from psconv.nn.sparse_conv import PeriodicSparseConv2d

    model = resnet18_cifar(family_by_name("PSD1_P16"), width=64)
    convs = [(m.in_channels, m.out_channels, m.stride[0], m.kernel_size[0])
             for m in model.modules() if isinstance(m, PeriodicSparseConv2d)]
    expected = {}
    for s in RESNET18_SHAPES:
        key = (s.in_channels, s.out_channels, s.stride, s.kernel)
        expected[key] = expected.get(key, 0) + s.count
    found = {}
    for key in convs:
        found[key] = found.get(key, 0) + 1
    assert found == expected


def test_engine_bench_mixed_rtl_and_model_tiny(tmp_path):
    """--rtl-families: PSD1_P16 on the RTL (bit-exact, model checked), the rest from the model."""
    assert main(["bench", "engine", "--families", "PSD1_P16", "PS2_P8",
                 "--rtl-families", "PSD1_P16", "--layers", "layer4.0.shortcut",
                 "--tm", "2", "--tn", "4", "--out", str(tmp_path)]) == 0
    document, rows = _read(tmp_path, "engine")
    by_key = {(r["family"], r["layer"]): r for r in document["rows"]}
    row = by_key["PSD1_P16", "layer4.0.shortcut"]
    assert row["source"] == "rtl"
    assert abs(row["model_error_pct"]) < 2.0
    assert row["macs"] == 512 * 256 * 4 * 4
    assert by_key["PS2_P8", "layer4.0.shortcut"]["source"] == "model"
    assert by_key["dense", "layer4.0.shortcut"]["source"] == "model"
    assert by_key["PSD1_P16", "network"]["source"] == "rtl"
    summary = document["summary"]
    assert "PSD1_P16" in summary["model validated against RTL on"]
    assert summary["max |model error| on RTL rows"].endswith("%")


def test_unknown_layer_is_a_clear_error(capsys):
    assert main(["bench", "engine", "--layers", "layer9"]) == 2
    assert "unknown layer" in capsys.readouterr().err


def test_contradictory_source_options_are_refused(tmp_path, capsys):
    """--model-only is --source model: with --source rtl it would silently drop the RTL runs."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "engine", "--source", "rtl", "--model-only", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --model-only: not allowed with argument --source" in capsys.readouterr().err
    assert not (tmp_path / "engine.json").exists()
