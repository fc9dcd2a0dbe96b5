"""``psconv evaluate`` (and ``psconv train`` on CIFAR-10 batches): the JSON and plot it writes,
its defaults from train.json, and its one-line errors."""

import json

import pytest
import torch

from psconv.cli import main
from psconv.nn.evaluate import confusion_matrix

from test_cifar import make_folder

pytest.importorskip("sklearn")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    assert main(["train", "-o", str(folder), "--epochs", "1", "--no-progress"]) == 0
    return folder


def test_confusion_matrix_counts_true_by_predicted():
    labels, predictions = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0])
    assert confusion_matrix(labels, predictions, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_checkpoint_float_and_int8_with_json_and_plot(digits_run, tmp_path, capsys):
    out, plot = tmp_path / "e.json", tmp_path / "c.png"
    assert main(["evaluate", "--checkpoint", str(digits_run / "model.pt"), "--images", "40",
                 "--json", str(out), "--confusion", str(plot), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "float accuracy:" in printed and "int8 accuracy:" in printed
    result = json.loads(out.read_text())
    for key in ("float_accuracy", "int8_accuracy", "board_accuracy", "images",
                "board_golden_mismatches"):
        assert key in result
    assert result["images"] == 40 and result["board_accuracy"] is None
    assert result["network"] == {"arch": "resnet18", "family": "PS4_P8", "width": 2}
    expected_float = sum(result["confusion"]["float"][k][k] for k in range(10)) / 40
    assert result["float_accuracy"] == pytest.approx(expected_float)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_one_line(digits_run, tmp_path, capsys):
    bare = tmp_path / "bare.pt"
    bare.write_bytes((digits_run / "model.pt").read_bytes())       # no train.json beside it
    q32 = tmp_path / "q32.npz"
    assert main(["quantize", "-o", str(q32), "--width", "2", "--calibration-images", "2"]) == 0
    capsys.readouterr()
    cases = [
        (["evaluate"], "nothing to evaluate"),
        (["evaluate", "--checkpoint", str(bare)], "--family and --width needed"),
        (["evaluate", "--checkpoint", str(bare), "--family", "PS4_P8", "--width", "4"],
         "does not match resnet18(PS4_P8, width=4)"),
        (["evaluate", "--model", str(q32)], "takes 3x32x32 images; digits images are 3x8x8"),
        (["evaluate", "--model", str(q32), "--board", "icebreaker"], "add --transport"),
        (["evaluate", "--checkpoint", str(digits_run / "model.pt"), "--images", "0"],
         "--images is 0"),
        (["evaluate", "--model", str(q32), "--dataset", "digits", "--cifar", str(tmp_path)],
         "--cifar is given with --dataset digits"),
        (["evaluate", "--model", str(q32), "--json", str(tmp_path)], "is a directory"),
        (["train", "-o", str(q32)], "is a file; allowed: a folder"),
        (["bench", "accuracy", "--images", "0"], "--images is 0"),
        (["bench", "accuracy", "--families", "PQ9", "--out", str(tmp_path / "r")], "PQ9"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)


def test_cifar10_batches_train_vgg16_and_resnet18(tmp_path, capsys):
    """The CIFAR-10 path (paper recipe: crop with padding 4 and flips) on six tiny batch files."""
    cifar = tmp_path / "cifar"
    make_folder(cifar)
    for arch in ("vgg16", "resnet18"):
        run = tmp_path / arch
        assert main(["train", "-o", str(run), "--cifar", str(cifar), "--arch", arch, "--width",
                     "4", "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
        info = json.loads((run / "train.json").read_text())
        assert (info["dataset"], info["image_size"], info["recipe"]["crop_padding"],
                info["recipe"]["flip"], info["recipe"]["lr"]) == ("cifar10", 32, 4, True, 0.1)
        assert len(info["history"]) == 1
        capsys.readouterr()
        # the data set comes from train.json too: CIFAR-10, whose folder must be named
        assert main(["evaluate", "--checkpoint", str(run / "model.pt")]) == 2
        assert "data set cifar10 needs --cifar DIR" in capsys.readouterr().err
        assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--cifar", str(cifar),
                     "--json", str(run / "e.json"), "--no-progress"]) == 0
        result = json.loads((run / "e.json").read_text())
        assert result["images"] == 4 and result["float_accuracy"] is not None
        # the quantizer takes ResNet18 only: a VGG16 checkpoint is evaluated in float alone
        assert (result["int8_accuracy"] is None) == (arch == "vgg16")
