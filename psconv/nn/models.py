"""CIFAR-10 ResNet18 and VGG16 built from periodic-sparse convolutions.

Every 3x3 convolution takes the network's pattern family, except the first one (3 input channels),
which stays dense (:func:`~psconv.families.dense_family`, K = 9, P = 1); 1x1 shortcut convolutions
use :func:`~psconv.families.pointwise_family`. This is the paper's arrangement and the one the
engine runs. Every convolution is a :class:`PeriodicSparseConv2d` without bias, followed by
``BatchNorm2d``, so a quantizer folds BN into the conv and finds no other bias.

Structure a quantizer walks (module order is execution order):

* ResNet18: ``stem`` (``conv``, ``bn``, ``relu``); ``layers``, a flat list of 8 ``BasicBlock``s,
  each with ``conv1, bn1, relu1, conv2, bn2``, ``shortcut`` (``None`` for identity, else a
  sequential with ``conv`` and ``bn``) and ``relu2`` applied after the residual add; ``pool``
  (global average); ``fc``.
* VGG16: ``features``, a list of units, each either a ``ConvBNReLU`` (``conv``, ``bn``, ``relu``)
  or an ``nn.MaxPool2d(2)``; ``classifier`` (one ``Linear``).

ReLUs are modules (not ``inplace``) so forward hooks see every activation unmodified, which both
calibration and the MAC counter in :mod:`psconv.nn.stats` rely on.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import PsconvError
from ..families import PatternFamily, dense_family, family_by_name, pointwise_family
from .sparse_conv import PeriodicSparseConv2d

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")

MAX_WIDTH = 64
"""The largest base width a command's ``--width`` accepts: 64 is the paper's full network
(stages of 64..512 channels); a wider one is not the paper's and soon exhausts memory."""


def check_width(width) -> None:
    """Raise :class:`PsconvError` unless ``width`` (a command's ``--width``: the ResNet18 base
    width, or VGG16's width as a share of 64) is an integer 1..:data:`MAX_WIDTH`."""
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_WIDTH:
        raise PsconvError(f"--width is {width!r}; allowed: an integer 1..{MAX_WIDTH} "
                          f"({MAX_WIDTH} is the full network)")


def _check_network_family(family) -> None:
    if not isinstance(family, PatternFamily):
        raise PsconvError(f"model: family is {family!r}; allowed: a psconv.families.PatternFamily")
    if family.kernel_size != 3:
        raise PsconvError(
            f"model: family {family.name!r} is for 1x1 convolutions; the network's 3x3 layers need a "
            f"3x3 family (PS<K>_P<P>, PSD<K>_P<P>, pSC-<K> or dense)")


def _check_positive(name: str, value, kind=int) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise PsconvError(f"model: {name} is {value!r}; allowed: a positive {kind.__name__}")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int,
            family: PatternFamily, relu: bool, conv_bias: bool = False) -> nn.Sequential:
    """``conv`` (padding keeps the size at stride 1) then ``bn``, then ``relu`` if asked."""
    parts = OrderedDict(
        conv=PeriodicSparseConv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                  family, bias=conv_bias),
        bn=nn.BatchNorm2d(out_channels))
    if relu:
        parts["relu"] = nn.ReLU()
    return nn.Sequential(parts)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    The shortcut is the identity when shape is kept, else a strided 1x1 conv (pointwise family)
    and BN.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, family: PatternFamily):
        super().__init__()
        self.conv1 = PeriodicSparseConv2d(in_channels, out_channels, 3, stride, 1, family)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = PeriodicSparseConv2d(out_channels, out_channels, 3, 1, 1, family)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride, pointwise_family(),
                                    relu=False)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + residual)


class ResNet18Cifar(nn.Module):
    """ResNet18 for 32x32 inputs: 3x3 stem at stride 1, no max-pool, stages of widths
    w, 2w, 4w, 8w at strides 1, 2, 2, 2 (two BasicBlocks each), global average pool, Linear."""

    def __init__(self, family: PatternFamily, num_classes: int = 10, width: int = 64):
        super().__init__()
        _check_network_family(family)
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        self.family = family
        self.stem = conv_bn(3, width, 3, 1, dense_family(), relu=True)
        blocks = []
        in_channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out_channels = width << stage
            for block_stride in (stride, 1):
                blocks.append(BasicBlock(in_channels, out_channels, block_stride, family))
                in_channels = out_channels
        self.layers = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def quantized_layer_names(self) -> dict[str, str]:
        """Module path -> layer name in the quantized-model file (:mod:`psconv.nn.fold`):
        ``stem``, ``layer<stage>.<block>.conv1|conv2|shortcut``, ``avgpool``, ``fc``."""
        names = {"stem.conv": "stem", "pool": "avgpool", "fc": "fc"}
        for index in range(len(self.layers)):
            prefix = f"layer{index // 2 + 1}.{index % 2}"
            for conv in ("conv1", "conv2"):
                names[f"layers.{index}.{conv}"] = f"{prefix}.{conv}"
            names[f"layers.{index}.shortcut.conv"] = f"{prefix}.shortcut"
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.layers:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class VGG16Cifar(nn.Module):
    """VGG16 for 32x32 inputs: 13 conv3x3-BN-ReLU units and 5 max-pools (to 1x1), then a single
    ``Linear(512 * width_scale, num_classes)`` classifier, as in the paper's reference code and
    most CIFAR VGG code (not ImageNet VGG's three-layer classifier). The convolutions keep a
    bias as the reference code's do (``conv_bias``; BatchNorm folding absorbs it). The
    reference code's no-op ``AvgPool2d(1, 1)`` is left out."""

    def __init__(self, family: PatternFamily, num_classes: int = 10, width_scale: float = 1.0,
                 conv_bias: bool = True):
        super().__init__()
        _check_network_family(family)
        _check_positive("num_classes", num_classes)
        if isinstance(width_scale, bool) or not isinstance(width_scale, (int, float)) or width_scale <= 0:
            raise PsconvError(f"model: width_scale is {width_scale!r}; allowed: a number > 0")
        self.family = family
        units = []
        in_channels = 3
        for entry in VGG16_LAYOUT:
            if entry == "M":
                units.append(nn.MaxPool2d(2))
                continue
            out_channels = max(1, round(entry * width_scale))
            units.append(conv_bn(in_channels, out_channels, 3, 1,
                                 family if units else dense_family(),
                                 relu=True, conv_bias=conv_bias))
            in_channels = out_channels
        self.features = nn.Sequential(*units)
        self.classifier = nn.Linear(in_channels, num_classes)

    def quantized_layer_names(self) -> dict[str, str]:
        """Module path -> layer name in the quantized-model file (:mod:`psconv.nn.fold`):
        ``conv1``..``conv13``, ``pool1``..``pool5``, ``fc``."""
        names = {"classifier": "fc"}
        convs = pools = 0
        for index, unit in enumerate(self.features):
            if isinstance(unit, nn.MaxPool2d):
                pools += 1
                names[f"features.{index}"] = f"pool{pools}"
            else:
                convs += 1
                names[f"features.{index}.conv"] = f"conv{convs}"
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def resnet18_cifar(family: PatternFamily, num_classes: int = 10, width: int = 64) -> ResNet18Cifar:
    """CIFAR ResNet18 with every 3x3 layer but the first in ``family`` (see module docstring)."""
    return ResNet18Cifar(family, num_classes=num_classes, width=width)


def vgg16_cifar(family: PatternFamily, num_classes: int = 10, width_scale: float = 1.0,
                conv_bias: bool = True) -> VGG16Cifar:
    """CIFAR VGG16 (single-Linear classifier) with every 3x3 layer but the first in ``family``.

    Convolutions keep a bias, as in the paper's reference code (redundant before BatchNorm, which
    folds it in; 4,224 parameters at full width). ``conv_bias=False`` leaves it out.
    """
    return VGG16Cifar(family, num_classes=num_classes, width_scale=width_scale, conv_bias=conv_bias)


ARCHITECTURES = {"resnet18": resnet18_cifar, "vgg16": vgg16_cifar}


MIN_IMAGE_SIZES = {"resnet18": 1, "vgg16": 32}
"""The smallest image side each architecture takes: VGG16's five 2x2 max pools need 32."""


def check_image_size_for(arch: str, image_size: int, what: str = "--image-size") -> None:
    """Raise :class:`PsconvError` if ``arch`` cannot run on ``image_size`` images."""
    if arch not in ARCHITECTURES:
        raise PsconvError(f"model: arch is {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    least = MIN_IMAGE_SIZES[arch]
    if image_size < least:
        raise PsconvError(f"{what} is {image_size} but {arch} needs images of at least "
                          f"{least}x{least} (five 2x2 max pools); allowed: {least} or more")


def build_network(arch: str, family_name: str | None, width: int, num_classes: int = 10
                  ) -> nn.Module:
    """``arch`` at a command's ``--width``: ResNet18's base width, or VGG16's channels as a
    share of 64 (``width_scale = width / 64``); ``family_name`` ``None`` or ``"dense"`` for the
    dense baseline."""
    family = None if family_name == "dense" else family_name
    if arch == "vgg16":
        return build_model(arch, family, num_classes, width_scale=width / 64)
    return build_model(arch, family, num_classes, width=width)


def build_model(arch: str, family_name: str | None = None, num_classes: int = 10, **kwargs) -> nn.Module:
    """``arch`` in ``ARCHITECTURES``; ``family_name`` as :func:`~psconv.families.family_by_name`
    reads it, ``None`` or ``"dense"`` for the dense baseline. ``kwargs`` go to the constructor
    (``width`` for resnet18, ``width_scale``/``conv_bias`` for vgg16)."""
    if arch not in ARCHITECTURES:
        raise PsconvError(f"model: arch is {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    family = dense_family() if family_name is None else family_by_name(family_name)
    return ARCHITECTURES[arch](family, num_classes=num_classes, **kwargs)
