"""``psconv train``: masks survive SGD with momentum and weight decay, seeded runs and resumed runs
are bit-identical on the CPU, the checkpoint feeds ``psconv quantize --checkpoint`` unchanged,
and bad input is one line."""

import json
import sys

import pytest
import torch

from psconv.cli import main
from psconv.errors import PsconvError
from psconv.nn.datasets import Dataset, load_digits_dataset
from psconv.nn.sparse_conv import PeriodicSparseConv2d
from psconv.nn.train import (CIFAR10_RECIPE, DIGITS_RECIPE, MODEL_FILE, TrainSpec, augment,
                             masked_nonzeros, new_model, recipe_for, train)

pytest.importorskip("sklearn")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_digits():
    """256 train and 64 test images of the digits: enough to train a step, quick to run."""
    full = load_digits_dataset()
    return Dataset("digits", full.train_images[:256], full.train_labels[:256],
                   full.test_images[:64], full.test_labels[:64], full.background)


def test_paper_recipe_is_the_cifar10_default():
    assert (CIFAR10_RECIPE.lr, CIFAR10_RECIPE.momentum, CIFAR10_RECIPE.weight_decay) == (0.1, 0.9, 5e-4)
    assert CIFAR10_RECIPE.milestones == (40, 80, 100, 115, 130, 140) and CIFAR10_RECIPE.gamma == 0.2
    assert (CIFAR10_RECIPE.epochs, CIFAR10_RECIPE.batch_size) == (150, 128)
    assert (CIFAR10_RECIPE.crop_padding, CIFAR10_RECIPE.flip) == (4, True)
    assert recipe_for("cifar10", lr=0.05, flip=None).lr == 0.05
    assert recipe_for("cifar10", lr=0.05, flip=None).flip is True


@pytest.mark.parametrize("family", ["PS4_P8", "PSD1_P16"])
def test_masked_weights_stay_exactly_zero_through_sgd_with_momentum_and_weight_decay(family):
    model = new_model("resnet18", family, 4, 10, seed=3, image_size=8)
    convs = [m for m in model.modules() if isinstance(m, PeriodicSparseConv2d)
             and bool((m.mask == 0).any())]
    assert convs, "the family must prune some taps"
    before = [c.weight.detach().clone() for c in convs]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(5):
        x = torch.randn(16, 3, 8, 8, generator=generator)
        y = torch.randint(0, 10, (16,), generator=generator)
        # an extra term straight on the raw weights: its gradient reaches pruned taps too
        penalty = sum((c.weight ** 2).sum() for c in convs)
        loss = torch.nn.functional.cross_entropy(model(x), y) + 1e-3 * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert masked_nonzeros(model) == 0
    for conv, old in zip(convs, before):
        pruned = conv.mask.expand_as(conv.weight) == 0
        assert torch.equal(conv.weight.detach()[pruned], torch.zeros(int(pruned.sum())))
        momentum = optimizer.state[conv.weight]["momentum_buffer"]
        assert torch.equal(momentum[pruned], torch.zeros(int(pruned.sum())))
        kept = ~pruned
        assert not torch.equal(conv.weight.detach()[kept], old[kept]), "kept taps must train"


def _spec(epochs, **recipe):
    return TrainSpec(arch="resnet18", family="PS4_P8", width=2, dataset="digits", image_size=8,
                     num_classes=10, recipe=recipe_for("digits", epochs=epochs, **recipe))


def _state(folder):
    return torch.load(folder / MODEL_FILE, weights_only=True)


def test_seeded_runs_and_a_resumed_run_are_bit_identical(tmp_path, small_digits):
    spec = _spec(2, batch_size=32, crop_padding=1, flip=True)   # augmentation draws too
    info = train(spec, small_digits, tmp_path / "a", progress=False, device="cpu", log=lambda s: None)
    train(spec, small_digits, tmp_path / "b", progress=False, device="cpu", log=lambda s: None)
    train(_spec(1, batch_size=32, crop_padding=1, flip=True), small_digits, tmp_path / "c",
          progress=False, device="cpu", log=lambda s: None)
    resumed = train(spec, small_digits, tmp_path / "c", resume=True, progress=False,
                    device="cpu", log=lambda s: None)
    a, b, c = _state(tmp_path / "a"), _state(tmp_path / "b"), _state(tmp_path / "c")
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], c[key]), key
    assert [row["epoch"] for row in resumed["history"]] == [1, 2]
    for key in ("train_loss", "train_accuracy", "test_accuracy", "lr"):
        assert [r[key] for r in resumed["history"]] == [r[key] for r in info["history"]], key
    on_disk = json.loads((tmp_path / "c" / "train.json").read_text())
    assert on_disk["recipe"]["epochs"] == 2 and len(on_disk["history"]) == 2


def test_augmentation_crops_with_black_padding_and_mirrors():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    background = torch.tensor([-1.0, -2.0, -3.0])
    generator = torch.Generator().manual_seed(5)
    out = augment(images, 2, False, background, generator)
    assert out.shape == images.shape
    for n in range(2):
        # every output is a 4x4 window of the padded image: find where it was cut
        padded = background.view(3, 1, 1).expand(3, 8, 8).clone()
        padded[:, 2:6, 2:6] = images[n]
        assert any(torch.equal(out[n], padded[:, dy:dy + 4, dx:dx + 4])
                   for dy in range(5) for dx in range(5))
    mirrored = augment(images, 0, True, background, torch.Generator().manual_seed(0))
    for n in range(2):
        assert torch.equal(mirrored[n], images[n]) or torch.equal(mirrored[n], images[n].flip(2))


def test_checkpoint_feeds_quantize_unchanged(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "-o", str(out), "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1: loss" in printed and "test accuracy" in printed
    info = json.loads((out / "train.json").read_text())
    assert (info["family"], info["width"], info["dataset"]) == ("PS4_P8", 2, "digits")
    assert info["recipe"]["batch_size"] == 64 and info["recipe"]["lr"] == DIGITS_RECIPE.lr
    assert main(["quantize", "-o", str(tmp_path / "q.npz"), "--checkpoint", str(out / MODEL_FILE),
                 "--family", "PS4_P8", "--width", "2", "--dataset", "digits",
                 "--calibration-images", "16"]) == 0
    assert "input 3x8x8" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    cases = [
        (["train", "-o", str(tmp_path / "x"), "--arch", "vgg16"], "--arch vgg16 needs images of at least 32x32"),
        (["train", "-o", str(tmp_path / "x"), "--family", "PQ9"], "PQ9"),
        (["train", "-o", str(tmp_path / "x"), "--width", "0"], "--width is 0"),
        (["train", "-o", str(tmp_path / "x"), "--epochs", "0"], "--epochs is 0"),
        (["train", "-o", str(tmp_path / "x"), "--milestones", "9", "3"], "--milestones is [9, 3]"),
        (["train", "-o", str(tmp_path / "x"), "--resume"], "train_state.pt does not exist"),
        (["train", "-o", str(tmp_path / "x"), "--dataset", "cifar10"], "needs --cifar DIR"),
        (["train", "-o", str(tmp_path / "x"), "--batch-size", "5000"], "--batch-size is 5000"),
        (["train", "-o", str(tmp_path / "x"), "--device", "toaster"], "--device is 'toaster'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)     # import now fails
    assert main(["train", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--dataset digits needs scikit-learn" in err and err.count("\n") == 1


def test_resume_refuses_other_settings(tmp_path, small_digits):
    train(_spec(1), small_digits, tmp_path, progress=False, device="cpu", log=lambda s: None)
    with pytest.raises(PsconvError, match="trained with other settings.*lr"):
        train(_spec(2, lr=0.01), small_digits, tmp_path, resume=True, progress=False,
              device="cpu", log=lambda s: None)
