"""The iCEBreaker's engine on the simulated board: a width-2 PSD1_P16 ResNet18 on 8x8 images.

``get_board("icebreaker").engine_config()`` (Tm=1, Tn=2, 16 channels, 8x8 maps, 1 KiB feature
map, 256 weight words) cannot hold the 32x32 network; :func:`psconv.nn.default.fitting_default`
picks width 2 on 8x8 images, whose every layer (3->2 channels at 8x8 ... 16 channels at 1x1)
runs on the engine. The board top for that configuration runs in Verilator behind the socket
bridge (built once, about 40 s, then cached under build/rtl like the other simulated-board
tests); every layer's output and the logits read back from it are compared with the integer
golden model element for element, then ``psconv run --board icebreaker`` and ``--config`` are
run as a user would.
"""

import json
import time

import pytest
import torch

from psconv import cli
from psconv.firmware.compiler import compile_model
from psconv.firmware.driver import Driver
from psconv.firmware.execute import execute_program
from psconv.nn.default import default_quantized_model, fitting_default, model_images
from psconv.rtl_gen.boards import get_board
from psconv.sim.bridge import SimBoard, build_board
from psconv.sim.golden.network import run_golden

pytestmark = pytest.mark.rtl

ICEBREAKER = get_board("icebreaker").engine_config()


@pytest.fixture(scope="module")
def board_build():
    start = time.perf_counter()
    build = build_board(ICEBREAKER)
    print(f"\niCEBreaker simulated board build: "
          f"{'cached' if build.cached else f'{time.perf_counter() - start:.0f} s'}")
    return build


@pytest.fixture(scope="module")
def width2_on_8x8():
    width, image_size, _ = fitting_default(ICEBREAKER)
    assert (width, image_size) == (2, 8)
    model = default_quantized_model("PSD1_P16", width, image_size=image_size)
    image = model_images(model, 1, seed=1000)[0]
    return compile_model(model, ICEBREAKER), image


def test_width2_resnet18_on_8x8_is_bit_exact_at_every_layer(board_build, width2_on_8x8, capsys):
    program, image = width2_on_8x8
    model = program.model
    assert tuple(image.shape) == (3, 8, 8) and -128 <= int(image.min()) < int(image.max()) <= 127
    golden = run_golden(model, image)
    started = time.perf_counter()
    with SimBoard(ICEBREAKER) as board:
        transport = board.connect()
        driver = Driver(transport, ICEBREAKER, timeout_s=2.0)
        board_result = execute_program(program, image, driver.run_step)
        report = driver.run_program(program, image, progress=False, golden=golden)
        transport.close()
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n{report.table()}\n" + "\n".join(report.summary_lines())
              + f"\nwidth-2 ResNet18 on 8x8 images, iCEBreaker engine, simulated board: "
                f"{seconds:.1f} s (two passes)")

    # every layer of the network ran on the engine: 20 convolutions, none tiled away from it
    assert len(program.engine_steps) == 20 and len(model.layers) == 22
    shapes = {name: tuple(t.shape) for name, t in golden.outputs.items()}
    assert shapes["stem"] == (2, 8, 8) and shapes["layer4.1.conv2"] == (16, 1, 1)
    assert max(s.descriptor.in_channels for s in program.engine_steps) == ICEBREAKER.max_in_channels
    # the board's integers equal the golden model's, element for element, at every layer
    for layer in model.layers:
        expected = golden.outputs[layer.name].to(torch.int64)
        actual = board_result.outputs[layer.name]
        assert int(expected.count_nonzero()) > 0, layer.name      # no layer compared trivially
        assert actual.shape == expected.shape, layer.name
        assert actual.reshape(-1).tolist() == expected.reshape(-1).tolist(), layer.name
    board_logits = board_result.logits.reshape(-1).tolist()
    assert len(board_logits) == 10
    assert board_logits == golden.logits.reshape(-1).tolist()
    # the driver's own check and counters agree
    assert report.bit_exact, report.first_mismatch
    assert report.logits == report.golden_logits == board_logits
    for step, engine_step in zip(report.steps, program.engine_steps):
        assert step.cycles > 0 and step.macs == engine_step.useful_macs
    assert driver.link.stats.retransmissions == 0


def test_psconv_run_board_and_config(board_build, tmp_path, capsys):
    """``psconv run --board icebreaker`` and ``--config`` with that configuration's JSON pick the
    width-2 network on 8x8 images, say so, and end bit-exact."""
    config = tmp_path / "icebreaker.json"
    config.write_text(json.dumps(ICEBREAKER.to_json()))
    for source in (["--board", "icebreaker"], ["--config", str(config)]):
        report = tmp_path / "report.json"
        # the iCEBreaker is streamed-only (--board picks that; --config says nothing of the
        # board, so the mode is named)
        code = cli.main(["run", *source, "--mode", "streamed", "--transport", "sim",
                         "--no-progress", "--json", str(report)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "embedded default: width 2 on 8x8 images" in out
        assert "resnet18 PSD1_P16 width 2 on 8x8 images, 20 engine steps" in out
        assert "verdict: BIT-EXACT" in out and "layer4.1.conv2" in out
        data = json.loads(report.read_text())
        assert data["bit_exact"] is True and len(data["steps"]) == 20
        assert data["logits"] == data["golden_logits"]
