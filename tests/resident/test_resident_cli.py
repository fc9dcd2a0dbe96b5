"""``psconv run --mode resident`` against the software resident board (transport resident-ref)."""

import json

from psconv import cli


def test_psconv_run_resident_two_images_bit_exact(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = cli.main(["run", "--mode", "resident", "--transport", "resident-ref", "--width", "4",
                     "--image-size", "16", "--images", "2", "--check-layers", "--no-progress",
                     "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "resident mode, transport resident-ref" in text
    assert "verdict: BIT-EXACT: 2 image(s) equal the golden model at every layer and the logits" in text
    assert "memory: model " in text and "CRC-32 0x" in text
    document = json.loads(out.read_text())
    assert document["mode"] == "resident" and document["bit_exact"] is True
    assert [r["bit_exact"] for r in document["inferences"]] == [True, True]
    assert len(document["inferences"][1]["layers"]) == 22
    assert document["inferences"][0]["logits"] != document["inferences"][1]["logits"]


def test_psconv_run_refuses_images_in_streamed_mode(capsys):
    assert cli.main(["run", "--mode", "streamed", "--images", "2", "--transport",
                     "resident-ref"]) == 2
    assert capsys.readouterr().err.strip() == (
        "psconv run: error: --images 2 needs --mode resident (the streamed mode runs one image)")


def test_psconv_run_help_describes_the_resident_options(capsys):
    try:
        cli.main(["run", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--mode {auto,streamed,resident}", "--images N", "--check-layers",
                   "resident-ref"):
        assert option in text
