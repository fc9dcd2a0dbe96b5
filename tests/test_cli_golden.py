"""The golden and quantize commands as a user runs them."""

import json

from psconv.cli import main


def test_golden_default_prints_every_layer(capsys):
    assert main(["golden", "--width", "8"]) == 0
    out = capsys.readouterr().out
    for name in ("stem", "layer1.0.conv1", "layer2.0.shortcut", "layer4.1.conv2", "avgpool", "fc"):
        assert f"\n{name} " in out
    assert "prediction: class" in out


def test_quantize_then_golden_from_file(tmp_path, capsys):
    path = tmp_path / "m.npz"
    assert main(["quantize", "-o", str(path), "--family", "PS4_P8", "--width", "8",
                 "--calibration-images", "8"]) == 0
    capsys.readouterr()
    assert main(["golden", "--model", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["family"] == "PS4_P8"
    assert len(summary["layers"]) == 22
    assert summary["layers"][0]["shape"] == [8, 32, 32]


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["golden", "--model", str(tmp_path / "nope.npz")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["golden", "--family", "PQ7"]) == 2
    assert "not understood" in capsys.readouterr().err


def test_pack_reports_formats_and_metadata_share(capsys):
    assert main(["pack", "--width", "8", "--json"]) == 0
    import json as _json
    report = _json.loads(capsys.readouterr().out)
    assert len(report["layers"]) == 20
    total = report["total"]
    assert total["ours_total"] == total["ours_weights"] + total["ours_metadata"]
    assert total["ours_total"] < total["bitmap"] < total["dense_int8"]
    # metadata is the mask tables alone: ceil(9 * P / 8) bytes per layer
    assert total["ours_metadata"] == 16 * 18 + 4 * 2
