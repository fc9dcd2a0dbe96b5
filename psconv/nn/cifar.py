"""CIFAR-10 from the official "python version" batches, and seeded look-alike data.

:func:`load_cifar10` reads ``data_batch_1`` .. ``data_batch_5`` (train) or ``test_batch`` (test)
from a directory the user names: either the extracted ``cifar-10-batches-py`` folder or its parent
(torchvision's ``root``). Nothing is downloaded. Each batch is a pickled dict with ``b"data"``, a
uint8 array (N, 3072) holding per image the 1024 red, then green, then blue pixels, row-major, and
``b"labels"``, N ints 0..9. Unpickling only admits the numpy classes such a file needs, so a
malicious file cannot run code.

Images come back as float32 (N, 3, 32, 32): ``(pixel / 255 - mean) / std`` per channel with
:data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`, the constants of the paper's reference code (and of
most CIFAR training code), so models trained with that code see the inputs they expect.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import PsconvError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
NUM_CLASSES = 10
IMAGE_SIZE = 32
"""Height and width of a CIFAR-10 image."""
MAX_IMAGE_SIZE = 256
"""The largest height/width of a seeded image (``--image-size``): ResNet18 is fully
convolutional, but larger maps than this only cost memory and time."""
IMAGE_BYTES = 3 * 32 * 32
TRAIN_BATCHES = tuple(f"data_batch_{n}" for n in range(1, 6))
TEST_BATCHES = ("test_batch",)
EXTRACTED_FOLDER = "cifar-10-batches-py"

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def check_image_size(size, what: str = "--image-size") -> None:
    """Raise :class:`PsconvError` unless ``size`` is an integer 1..:data:`MAX_IMAGE_SIZE`."""
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise PsconvError(f"{what} is {size!r}; allowed: an integer 1..{MAX_IMAGE_SIZE} "
                          f"({IMAGE_SIZE} is CIFAR-10's)")


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) pixels to the normalized float32 space models are trained in."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (pixels.to(torch.float32) / 255 - mean) / std


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise PsconvError(f"CIFAR-10: batch file {path} is missing; a CIFAR-10 python-version "
                          f"folder holds {', '.join(TRAIN_BATCHES + TEST_BATCHES)}")
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means the same thing to the user
        raise PsconvError(f"CIFAR-10: batch file {path} is not a CIFAR-10 python batch ({e})") from None
    if not isinstance(batch, dict):
        raise PsconvError(f"CIFAR-10: batch file {path} holds a {type(batch).__name__}; "
                          f"expected a dict with b'data' and b'labels'")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != IMAGE_BYTES:
        shown = ("missing" if data is None else f"{data.dtype} array {data.shape}"
                 if isinstance(data, np.ndarray) else f"a {type(data).__name__}")
        raise PsconvError(f"CIFAR-10: batch file {path}: b'data' is {shown}; expected a uint8 "
                          f"array (N, {IMAGE_BYTES})")
    try:
        labels = np.asarray(labels, dtype=np.int64)
        valid = labels.shape == (data.shape[0],) and bool(np.all((labels >= 0) & (labels < NUM_CLASSES)))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise PsconvError(f"CIFAR-10: batch file {path}: b'labels' must be {data.shape[0]} "
                          f"integers 0..{NUM_CLASSES - 1}, one per image")
    return data, labels


def load_cifar10(directory, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, 3, 32, 32) normalized, labels int64 (N,)) of the train or test split."""
    root = Path(directory)
    if not root.is_dir():
        raise PsconvError(f"CIFAR-10: directory {root} does not exist; name the extracted "
                          f"'{EXTRACTED_FOLDER}' folder (or its parent)")
    if (root / EXTRACTED_FOLDER).is_dir():
        root = root / EXTRACTED_FOLDER
    batches = [_read_batch(root / name) for name in (TRAIN_BATCHES if train else TEST_BATCHES)]
    data = np.concatenate([d for d, _ in batches])
    labels = np.concatenate([lab for _, lab in batches])
    pixels = torch.from_numpy(data).view(-1, 3, 32, 32)
    return normalize_pixels(pixels), torch.from_numpy(labels)


def synthetic_cifar_like(n: int, seed: int = 0,
                         image_size: int | tuple[int, int] = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded random images and labels typed and normalized like :func:`load_cifar10`'s
    (pixels are whole uint8 values, so the value grid is the real one).

    ``image_size`` (``S`` or ``(H, W)``; default 32, CIFAR-10's) sets the images' height and
    width: the pixels are drawn at that size (not downsampled from 32x32, which would average
    them towards grey), so a 32x32 batch is the same as before the option existed."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise PsconvError(f"synthetic CIFAR-10: n is {n!r}; allowed: an integer >= 1")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PsconvError(f"synthetic CIFAR-10: seed is {seed!r}; allowed: an integer")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    check_image_size(height, "synthetic CIFAR-10: image height")
    check_image_size(width, "synthetic CIFAR-10: image width")
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, height, width), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator, dtype=torch.int64)
    return normalize_pixels(pixels), labels
