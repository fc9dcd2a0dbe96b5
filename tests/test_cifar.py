"""CIFAR-10 python-version batches load exactly; bad folders and files give named errors."""

import pickle

import numpy as np
import pytest
import torch

from psconv.errors import PsconvError
from psconv.nn.cifar import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, synthetic_cifar_like

IMAGES_PER_BATCH = 4


def write_batch(path, data, labels):
    """A batch as the official files hold it: protocol-2 pickle, bytes keys, and numpy globals
    under their pre-2.0 module name ``numpy.core.multiarray``."""
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
             b"filenames": [b"img_%d.png" % n for n in range(len(labels))]}
    raw = pickle.dumps(batch, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw)


def make_folder(folder, seed=0):
    """Writes all six batches with random pixels; returns {file name: (data, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (IMAGES_PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, IMAGES_PER_BATCH)]
        write_batch(folder / name, data, labels)
        written[name] = (data, labels)
    return written


def test_train_split_concatenates_batches_with_exact_layout_and_normalization(tmp_path):
    written = make_folder(tmp_path)
    data, labels = written["data_batch_2"]
    data[1, :] = 0
    data[1, 1024 + 32 * 2 + 5] = 255  # green channel, row 2, column 5
    data[1, 2048 + 32 * 31] = 128  # blue channel, row 31, column 0
    write_batch(tmp_path / "data_batch_2", data, labels)

    images, got_labels = load_cifar10(tmp_path, train=True)
    assert images.shape == (5 * IMAGES_PER_BATCH, 3, 32, 32) and images.dtype == torch.float32
    assert got_labels.dtype == torch.int64
    assert got_labels.tolist() == sum((written[f"data_batch_{n}"][1] for n in range(1, 6)), [])
    image = images[IMAGES_PER_BATCH + 1]
    zero = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])
    assert torch.allclose(image[0], zero[0].expand(32, 32))
    assert image[1, 2, 5] == pytest.approx((1 - CIFAR10_MEAN[1]) / CIFAR10_STD[1], rel=1e-6)
    assert image[2, 31, 0] == pytest.approx((128 / 255 - CIFAR10_MEAN[2]) / CIFAR10_STD[2], rel=1e-6)
    assert torch.count_nonzero(image - zero.view(3, 1, 1)) == 2


def test_test_split_and_torchvision_root_layout(tmp_path):
    written = make_folder(tmp_path / "cifar-10-batches-py")
    images, labels = load_cifar10(tmp_path, train=False)
    data, expected_labels = written["test_batch"]
    assert labels.tolist() == expected_labels
    pixels = images * torch.tensor(CIFAR10_STD).view(3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    restored = torch.round(pixels * 255).to(torch.uint8).reshape(len(labels), 3072)
    assert torch.equal(restored, torch.from_numpy(data))


def test_missing_directory_and_batch_are_named(tmp_path):
    with pytest.raises(PsconvError, match="directory .*nowhere does not exist"):
        load_cifar10(tmp_path / "nowhere", train=True)
    make_folder(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(PsconvError, match="data_batch_4 is missing"):
        load_cifar10(tmp_path, train=True)
    load_cifar10(tmp_path, train=False)  # the test split does not need it


@pytest.mark.parametrize("content,message", [
    (b"not a pickle", "test_batch is not a CIFAR-10 python batch"),
    (pickle.dumps([1, 2, 3], protocol=2), "test_batch holds a list"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, protocol=2),
     "b'data' is float32 array"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
     r"b'data' is uint8 array \(2, 100\)"),
    (pickle.dumps({b"labels": [0, 1]}, protocol=2), "b'data' is missing"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, protocol=2),
     "b'labels' must be 2 integers 0..9"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2),
     "b'labels' must be 2 integers"),
])
def test_malformed_batch_is_named(tmp_path, content, message):
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(PsconvError, match=message):
        load_cifar10(tmp_path, train=False)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_batch_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(str(target))}, protocol=2))
    with pytest.raises(PsconvError, match="refusing to load"):
        load_cifar10(tmp_path, train=False)
    assert not target.exists()


def test_synthetic_data_is_seeded_and_on_the_real_value_grid():
    images, labels = synthetic_cifar_like(6, seed=3)
    again, again_labels = synthetic_cifar_like(6, seed=3)
    other, _ = synthetic_cifar_like(6, seed=4)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    assert not torch.equal(images, other)
    pixels = (images * torch.tensor(CIFAR10_STD).view(3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    assert pixels.min() > -0.5 and pixels.max() < 255.5
    with pytest.raises(PsconvError, match="n is 0"):
        synthetic_cifar_like(0, seed=1)
