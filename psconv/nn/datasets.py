"""Labelled image data sets for training and evaluation: CIFAR-10 and scikit-learn's digits.

Both come back as a :class:`Dataset` of float32 NCHW images with **3 channels** (the stem of
:func:`~psconv.nn.models.resnet18_cifar`, the quantized-model file, the compiler and every board
engine take a 3-channel image) and int64 labels, split into train and test.

* ``cifar10``: :func:`~psconv.nn.cifar.load_cifar10` on the folder the user names (the
  python-format batches; nothing is downloaded), 50,000 train and 10,000 test 32x32 images.
* ``digits``: :func:`sklearn.datasets.load_digits`, 1,797 8x8 grey images of the digits 0..9
  with pixel values 0..16, shipped inside scikit-learn (no download). A fixed seeded
  permutation (seed :data:`DIGITS_SPLIT_SEED`) puts :data:`DIGITS_TEST_IMAGES` images in the
  test split and the other 1,347 in the train split, always the same ones. Pixels map to
  ``p / 8 - 1`` (-1..1, zero-centred like normalized CIFAR) and the grey channel is replicated
  to 3 channels. Why replicate rather than build a 1-channel stem: the network, the checkpoint
  ``psconv quantize --checkpoint`` reads, the model file and the engines stay exactly the
  CIFAR ones, for 3x the stem's multiplies (at width 2 on 8x8 images 3,456 instead of 1,152,
  out of 18,858 MACs for PS4_P8).
  The 17 pixel levels stay 17 distinct int8 values after input quantization
  (``round(127 * (p / 8 - 1))`` with the max-calibrated scale 1/127), so quantizing the input
  loses nothing.

scikit-learn is an optional dependency (the ``test`` extras); without it ``digits`` raises a
one-line :class:`~psconv.errors.PsconvError` saying how to install it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PsconvError
from .cifar import IMAGE_SIZE as CIFAR_IMAGE_SIZE
from .cifar import NUM_CLASSES, load_cifar10, normalize_pixels

DATASETS = ("cifar10", "digits")
DIGITS_IMAGE_SIZE = 8
DIGITS_TEST_IMAGES = 450
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_PIXEL = 16


@dataclass
class Dataset:
    """Float32 (N, 3, S, S) images and int64 (N,) labels 0..``num_classes - 1`` per split."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    background: torch.Tensor
    """(3,) float32: a black pixel in the images' normalized space (what crop padding adds)."""
    num_classes: int = NUM_CLASSES

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of ``"train"`` or ``"test"``."""
        if name not in ("train", "test"):
            raise PsconvError(f"data set split is {name!r}; allowed: train, test")
        return ((self.train_images, self.train_labels) if name == "train"
                else (self.test_images, self.test_labels))


def _digits_arrays():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PsconvError('--dataset digits needs scikit-learn, which is not installed; '
                          'install it with pip install scikit-learn (or pip install -e ".[test]")'
                          ) from None
    digits = load_digits()
    return digits.data, digits.target


def load_digits_dataset() -> Dataset:
    """scikit-learn's digits, split and scaled as the module docstring says."""
    data, target = _digits_arrays()
    pixels = torch.as_tensor(data, dtype=torch.float32).view(-1, 1, DIGITS_IMAGE_SIZE,
                                                               DIGITS_IMAGE_SIZE)
    images = (pixels / (DIGITS_MAX_PIXEL / 2) - 1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = order[:DIGITS_TEST_IMAGES], order[DIGITS_TEST_IMAGES:]
    return Dataset("digits", images[train], labels[train], images[test], labels[test],
                   background=torch.full((3,), -1.0))


def load_dataset(name: str, cifar_dir=None) -> Dataset:
    """``name`` in :data:`DATASETS`; ``cifar10`` reads ``cifar_dir`` (required for it)."""
    if name == "digits":
        return load_digits_dataset()
    if name == "cifar10":
        if not cifar_dir:
            raise PsconvError("data set cifar10 needs --cifar DIR: the folder of the CIFAR-10 "
                              "python-format batches (nothing is downloaded)")
        train_images, train_labels = load_cifar10(cifar_dir, train=True)
        test_images, test_labels = load_cifar10(cifar_dir, train=False)
        black = normalize_pixels(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).view(3)
        return Dataset("cifar10", train_images, train_labels, test_images, test_labels, black)
    raise PsconvError(f"--dataset is {name!r}; allowed: {', '.join(DATASETS)}")


def native_image_size(name: str) -> int:
    """The side of the data set's images (``--image-size`` must equal it)."""
    return DIGITS_IMAGE_SIZE if name == "digits" else CIFAR_IMAGE_SIZE


def add_dataset_arguments(parser) -> None:
    """``--dataset`` and ``--cifar`` (``--cifar DIR`` alone means ``--dataset cifar10``)."""
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="data set: digits (scikit-learn's 8x8 digits, in the package; needs "
                             "scikit-learn) or cifar10 (needs --cifar) (default: cifar10 with "
                             "--cifar, else digits)")
    parser.add_argument("--cifar", metavar="DIR",
                        help="CIFAR-10 python-format folder (cifar-10-batches-py or its parent); "
                             "implies --dataset cifar10")


def dataset_name(args) -> str:
    """The data set ``--dataset``/``--cifar`` name (see :func:`add_dataset_arguments`)."""
    if args.dataset is None:
        return "cifar10" if args.cifar else "digits"
    if args.dataset == "digits" and args.cifar:
        raise PsconvError("--cifar is given with --dataset digits; allowed: --cifar with "
                          "--dataset cifar10 (or without --dataset)")
    return args.dataset


def dataset_from_args(args) -> Dataset:
    """The :class:`Dataset` ``--dataset``/``--cifar`` name."""
    return load_dataset(dataset_name(args), args.cifar)
