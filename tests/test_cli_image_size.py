"""``--image-size`` and the engine-sized embedded default, as a user meets them without a
simulator: which default an engine gets, the shape-only fit check against the compiler, the
one-line errors, and the quantize/golden round trip at 8x8. The Verilator run of the iCEBreaker
engine is tests/e2e/test_icebreaker_run.py."""

import json

import pytest

from psconv.cli import build_parser, main
from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.firmware.compiler import compile_model
from psconv.nn.default import check_resnet18_fits, default_quantized_model, fitting_default
from psconv.qmodel import QuantizedModel
from psconv.rtl_gen.boards import get_board

ICEBREAKER = get_board("icebreaker").engine_config()


def test_fitting_default_keeps_the_default_where_it_fits_and_shrinks_it_where_not():
    assert fitting_default(EngineConfig()) == (16, 32, None)
    assert fitting_default(get_board("ulx3s-85f").engine_config()) == (16, 32, None)
    width, size, why = fitting_default(ICEBREAKER)
    assert (width, size) == (2, 8)
    assert "layer 'stem'" in why and "in_height is 32; allowed: 1..8" in why
    # the value the user gave is kept, the other one chosen around it
    assert fitting_default(ICEBREAKER, width=1)[:2] == (1, 8)
    assert fitting_default(ICEBREAKER, image_size=4)[:2] == (2, 4)
    # nothing fits: the nearest miss is named (width 4 on the largest image the engine takes)
    with pytest.raises(PsconvError, match=r"layer 'layer4\.0\.conv2' .*in_channels is 32; "
                                          r"allowed: 1\.\.16"):
        fitting_default(ICEBREAKER, width=4)


@pytest.mark.parametrize("width, image_size", [(2, 8), (1, 4), (3, 8), (2, 16), (16, 8)])
def test_shape_check_agrees_with_the_compiler(width, image_size):
    """check_resnet18_fits reads only shapes; it must accept and refuse exactly as the compiler
    does on the quantized network, with the same message."""
    model = default_quantized_model(width=width, calibration_images=2, image_size=image_size)
    assert tuple(model.input_shape) == (3, image_size, image_size)
    try:
        compile_model(model, ICEBREAKER)
        compiled = None
    except PsconvError as e:
        compiled = str(e)
    try:
        check_resnet18_fits(ICEBREAKER, width=width, image_size=image_size)
        checked = None
    except PsconvError as e:
        checked = str(e)
    assert checked == compiled
    assert (compiled is None) == ((width, image_size) in ((2, 8), (1, 4)))


@pytest.mark.parametrize("argv, layer, value, limit", [
    (["--width", "16", "--image-size", "8"], "layer2.0.conv2", "in_channels is 32", "1..16"),
    (["--image-size", "32"], "stem", "in_height is 32", "1..8"),
    (["--width", "4"], "layer4.0.conv2", "in_channels is 32", "1..16"),
])
def test_a_model_the_icebreaker_cannot_hold_is_one_line(argv, layer, value, limit, capsys):
    assert main(["run", "--board", "icebreaker", "--no-progress"] + argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"layer {layer!r} does not fit the engine" in err
    assert f"{value}; allowed: {limit}" in err
    assert "the largest embedded default this engine holds: --width 2 --image-size 8" in err
    assert "engine steps" not in captured.out         # refused before anything was run


def test_the_icebreaker_gets_the_largest_default_it_holds_and_says_why(capsys):
    """No --width/--image-size: one line names the choice and the reason; the run then reaches
    the transport (a missing serial port here, so no simulator is needed)."""
    assert main(["run", "--board", "icebreaker", "--no-progress",
                 "--transport", "serial:/dev/psconv-no-such-port"]) == 2
    captured = capsys.readouterr()
    assert ("embedded default: width 2 on 8x8 images, the largest this engine holds (width 16 "
            "on 32x32 does not: compile: layer 'stem'") in captured.out
    assert "width 2 on 8x8 images, 20 engine steps" in captured.out
    assert "engine Tm=1 Tn=2" in captured.out
    assert "/dev/psconv-no-such-port does not exist" in captured.err
    # on an engine that holds the default nothing is chosen and nothing is said
    assert main(["run", "--width", "2", "--image-size", "8", "--no-progress",
                 "--transport", "serial:/dev/psconv-no-such-port"]) == 2
    out = capsys.readouterr().out
    assert "embedded default:" not in out and "width 2 on 8x8 images" in out


@pytest.mark.parametrize("argv", [["golden"], ["pack"], ["run", "--no-progress"],
                                  ["quantize", "-o", "unused.npz"]])
@pytest.mark.parametrize("size", ["0", "100000"])
def test_image_size_is_bounded(argv, size, capsys):
    assert main(argv + ["--image-size", size]) == 2
    err = capsys.readouterr().err
    assert f"--image-size is {size}; allowed: an integer 1..256" in err and "Traceback" not in err


def test_image_size_conflicts_are_one_line(tmp_path, capsys):
    path = tmp_path / "m.npz"
    assert main(["quantize", "-o", str(path), "--width", "2", "--image-size", "8",
                 "--calibration-images", "2"]) == 0
    capsys.readouterr()
    assert main(["golden", "--model", str(path), "--image-size", "8"]) == 2
    assert "cannot be combined with --model" in capsys.readouterr().err
    assert main(["quantize", "-o", str(tmp_path / "c.npz"), "--image-size", "8",
                 "--cifar", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--image-size is 8 but CIFAR-10 images (--cifar) are 32x32; allowed with --cifar: 32" in err
    # an unknown family is named as such, not reported as a network the engine cannot hold
    assert main(["run", "--board", "icebreaker", "--family", "PQ7"]) == 2
    err = capsys.readouterr().err
    assert "'PQ7' not understood" in err and "engine" not in err


def test_quantize_at_8x8_then_golden_is_the_embedded_default(tmp_path, capsys):
    """The file records its 3x8x8 input; golden draws its image at that size, and the file's
    network and results equal the embedded default of the same width and size."""
    path = tmp_path / "ice.npz"
    assert main(["quantize", "-o", str(path), "--width", "2", "--image-size", "8"]) == 0
    assert "input 3x8x8" in capsys.readouterr().out
    assert QuantizedModel.load(path).input_shape == (3, 8, 8)
    assert main(["golden", "--model", str(path), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["golden", "--width", "2", "--image-size", "8", "--json"]) == 0
    embedded = json.loads(capsys.readouterr().out)
    assert from_file == embedded
    shapes = {row["layer"]: row["shape"] for row in from_file["layers"]}
    assert shapes["stem"] == [2, 8, 8] and shapes["layer4.1.conv2"] == [16, 1, 1]
    assert all(row["nonzeros"] > 0 for row in from_file["layers"])
    assert main(["golden", "--width", "2", "--image-size", "8"]) == 0
    assert "input 3x8x8 int8" in capsys.readouterr().out


def test_help_documents_image_size():
    sub = {name: p for action in build_parser()._actions if hasattr(action, "choices")
           and isinstance(action.choices, dict) for name, p in action.choices.items()}
    for command in ("run", "golden", "quantize", "pack"):
        text = " ".join(sub[command].format_help().split())
        assert "--image-size N" in text and "1..256" in text and "not downsampled" in text, command
    assert "icebreaker" in " ".join(sub["run"].format_help().split())
