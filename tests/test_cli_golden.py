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


def test_malformed_files_and_zero_width_are_one_line_errors(tmp_path, capsys):
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(b"PK\x03\x04 not the rest of a zip archive")
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello\n")
    config_list = tmp_path / "config.json"
    config_list.write_text("[1, 2]")
    cases = [
        (["golden", "--model", str(truncated)], "is not a psconv quantized model"),
        (["golden", "--model", str(tmp_path)], "is not a file"),
        (["golden", "--width", "0"], "--width is 0"),
        (["bench", "storage", "--width", "0"], "--width is 0"),
        (["quantize", "-o", str(tmp_path / "q.npz"), "--checkpoint", str(not_a_checkpoint)],
         "cannot read checkpoint"),
        (["run", "--config", str(config_list)], "the JSON is a list"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_run_board_option_compiles_for_the_boards_engine(capsys):
    """``--board`` picks the board's engine (ULX3S: input-channel passes of 128), not the
    simulated board's default (one pass)."""
    assert main(["run", "--board", "ulx3s-85f", "--width", "8", "--no-progress",
                 "--transport", "serial:/dev/psconv-no-such-port"]) == 2
    captured = capsys.readouterr()
    assert "engine Tm=4 Tn=16 (128-channel passes)" in captured.out
    assert "/dev/psconv-no-such-port does not exist" in captured.err


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
