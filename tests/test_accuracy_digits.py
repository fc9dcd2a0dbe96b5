"""Digits end to end, reduced (`psconv bench accuracy` is the full run): a width-2 PS4_P8 ResNet18
trained for 10 epochs on the fixed train split, quantized with calibration on train images only,
then the held-out split through the float network, the int8 golden model and the iCEBreaker's
engine on the simulated board, which must equal the golden model on every image."""

import json

import pytest
import torch

from psconv.cli import main
from psconv.nn.datasets import DIGITS_TEST_IMAGES, load_digits_dataset
from psconv.nn.evaluate import BoardSession, evaluate
from psconv.nn.quantize import quantize_resnet
from psconv.nn.train import MODEL_FILE, TrainSpec, load_checkpoint, masked_nonzeros, recipe_for, train

pytest.importorskip("sklearn")

FAMILY = "PS4_P8"
EPOCHS = 10
FLOAT_FLOOR = 0.85          # measured 92.0 % after these 10 epochs
BOARD_IMAGES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = load_digits_dataset()
        folder = tmp_path_factory.mktemp("digits")
        spec = TrainSpec(arch="resnet18", family=FAMILY, width=2, dataset="digits", image_size=8,
                         num_classes=10, recipe=recipe_for("digits", epochs=EPOCHS, milestones=(6,)))
        train(spec, dataset, folder, progress=False, device="cpu", log=lambda line: None)
        model = load_checkpoint(folder / MODEL_FILE, FAMILY, 2)
        quantized = quantize_resnet(model, dataset.train_images[:128], FAMILY)
        quantized.save(folder / "model.npz")
        yield dataset, folder, model, quantized
    finally:
        torch.set_num_threads(threads)


def test_the_split_is_fixed_and_disjoint():
    a, b = load_digits_dataset(), load_digits_dataset()
    assert (len(a.train_labels), len(a.test_labels)) == (1797 - DIGITS_TEST_IMAGES, DIGITS_TEST_IMAGES)
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.train_labels, b.train_labels)
    assert a.train_images.shape[1:] == (3, 8, 8)
    assert torch.equal(a.train_images[:, 0], a.train_images[:, 2])       # grey replicated
    # no test image is a train image (pixel for pixel)
    train_rows = {tuple(row.tolist()) for row in a.train_images[:, 0].reshape(len(a.train_labels), -1)}
    shared = sum(tuple(row.tolist()) in train_rows
                 for row in a.test_images[:, 0].reshape(len(a.test_labels), -1))
    assert shared == 0


def test_float_and_int8_accuracy_on_the_held_out_split(trained):
    dataset, _, model, quantized = trained
    assert masked_nonzeros(model) == 0
    result = evaluate(dataset.test_images, dataset.test_labels, model, quantized, progress=False)
    assert result["images"] == DIGITS_TEST_IMAGES
    assert result["float_accuracy"] >= FLOAT_FLOOR, result["float_accuracy"]
    assert result["int8_accuracy"] >= result["float_accuracy"] - 0.02, result
    assert sum(map(sum, result["confusion"]["int8"])) == DIGITS_TEST_IMAGES
    assert result["board_accuracy"] is None and result["board_golden_mismatches"] is None


@pytest.mark.rtl
def test_icebreaker_engine_equals_the_golden_model_on_every_image(trained, tmp_path, capsys):
    from psconv.firmware.compiler import compile_model
    from psconv.rtl_gen.boards import get_board
    from psconv.sim.golden.network import run_golden
    from psconv.sim.golden.ops import quantize_input

    dataset, folder, _, quantized = trained
    report_path = tmp_path / "evaluate.json"
    assert main(["evaluate", "--checkpoint", str(folder / MODEL_FILE), "--model",
                 str(folder / "model.npz"), "--images", str(BOARD_IMAGES), "--transport", "sim",
                 "--board", "icebreaker", "--json", str(report_path), "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    assert report["images"] == BOARD_IMAGES and report["board_golden_mismatches"] == 0
    assert report["board_accuracy"] == report["int8_accuracy"]
    assert report["confusion"]["board"] == report["confusion"]["int8"]
    assert report["network"] == {"arch": "resnet18", "family": FAMILY, "width": 2}
    assert "bit-exact on every image" in capsys.readouterr().out
    # and element for element, by hand, on two images: every layer and the logits
    session = BoardSession(compile_model(quantized, get_board("icebreaker").engine_config()), "sim")
    try:
        for image in dataset.test_images[:2]:
            image_q = quantize_input(image, quantized.input_scale)
            golden = run_golden(quantized, image_q)
            run = session.run(image_q, golden)
            assert torch.equal(torch.tensor(run.logits), golden.logits.reshape(-1))
            assert all(problem is None for problem in run.layers.values()), run.layers
            assert len(run.layers) == len(quantized.layers)
    finally:
        session.close()
