"""The embedded default: a seeded periodic-sparse ResNet18 (or VGG16), quantized, and a seeded input.

Why: the README's main command and the tests need a realistic quantized network without any
download or training run. BatchNorm statistics are measured on seeded CIFAR-like images (so
every layer's activations are well scaled, as after training) and BatchNorm affine parameters
are randomized, so folding is exercised with non-trivial values.

``image_size`` (default 32, CIFAR-10's) is the side of the seeded square images the statistics,
the calibration and the inputs use: ResNet18 is fully convolutional with a global average pool,
so the same network runs on any size, and a small engine (the iCEBreaker's 8x8 maps) takes the
network on 8x8 images. VGG16 (``arch="vgg16"``; ``width`` is its channels as a share of 64)
needs images of at least 32x32 for its five 2x2 max pools. :func:`fitting_default` picks the
largest default an engine holds.
"""

from __future__ import annotations

import torch
from torch import nn

from psconv.families import family_by_name
from psconv.qmodel import QuantizedModel

from .cifar import IMAGE_SIZE, synthetic_cifar_like
from .models import MIN_IMAGE_SIZES, build_network, check_image_size_for
from .quantize import quantize_network

DEFAULT_ARCH = "resnet18"
NETWORKS = ("resnet18", "vgg16")
"""The built-in networks a command's ``--network`` names."""
DEFAULT_FAMILY = "PSD1_P16"
DEFAULT_WIDTH = 16
DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = IMAGE_SIZE
DEFAULT_CALIBRATION_IMAGES = 32
"""Images the embedded default is calibrated on; ``psconv quantize`` without ``--checkpoint``
uses the same count by default, so its file holds the same integer model as the default."""


def seeded_network(arch: str = DEFAULT_ARCH, family_name: str = DEFAULT_FAMILY,
                   width: int = DEFAULT_WIDTH, seed: int = DEFAULT_SEED,
                   statistics_images: int = 64, image_size: int = DEFAULT_IMAGE_SIZE) -> nn.Module:
    """A deterministic eval-mode CIFAR ``arch`` (:data:`NETWORKS`) with BatchNorm statistics
    measured on seeded ``image_size`` x ``image_size`` images."""
    check_image_size_for(arch, image_size)
    family_by_name(family_name)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_network(arch, family_name, width)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.2, 0.2)
                module.momentum = None  # cumulative average over the statistics pass
                module.reset_running_stats()
        images = synthetic_cifar_like(statistics_images, seed=seed + 1, image_size=image_size)[0]
        model.train()
        with torch.no_grad():
            model(images)
        return model.eval()
    finally:
        torch.random.set_rng_state(generator_state)


def seeded_resnet18(family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                    seed: int = DEFAULT_SEED, statistics_images: int = 64,
                    image_size: int = DEFAULT_IMAGE_SIZE) -> nn.Module:
    """:func:`seeded_network` of ResNet18."""
    return seeded_network("resnet18", family_name, width, seed, statistics_images, image_size)


def calibration_batch(count: int = DEFAULT_CALIBRATION_IMAGES, seed: int = DEFAULT_SEED,
                      image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """The seeded CIFAR-like images (NCHW) the model of ``seed`` is calibrated on."""
    return synthetic_cifar_like(count, seed=seed + 2, image_size=image_size)[0]


def default_quantized_model(family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                            seed: int = DEFAULT_SEED,
                            calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                            image_size: int = DEFAULT_IMAGE_SIZE,
                            arch: str = DEFAULT_ARCH) -> QuantizedModel:
    """The seeded ``arch`` above, quantized with max calibration on seeded images; its
    ``input_shape`` is ``(3, image_size, image_size)``."""
    model = seeded_network(arch, family_name, width, seed, image_size=image_size)
    quantized = quantize_network(model, calibration_batch(calibration_images, seed, image_size),
                                 family_name, arch)
    quantized.notes.update({"source": "psconv embedded default", "seed": seed, "width": width,
                            "image_size": image_size})
    return quantized


def default_images(count: int = 1, seed: int = DEFAULT_SEED + 3,
                   image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """Seeded float CIFAR-like images (NCHW) for the default model (``image_size``: ``S`` or
    ``(H, W)``, e.g. a model's ``input_shape[1:]``)."""
    return synthetic_cifar_like(count, seed=seed, image_size=image_size)[0]


def model_images(model: QuantizedModel, count: int = 1,
                 seed: int = DEFAULT_SEED + 3) -> torch.Tensor:
    """Seeded int8 CIFAR-like images (NCHW) the size ``model`` takes, quantized with its input
    scale (what ``psconv golden --seed S`` and ``psconv run --image-seed S`` use, seed 1000 + S)."""
    from psconv.sim.golden.ops import quantize_input

    return quantize_input(default_images(count, seed, tuple(model.input_shape[1:])),
                          model.input_scale)


DEFAULT_IMAGE_SIZES = (32, 16, 8, 4, 2, 1)
"""Image sides :func:`fitting_default` tries, largest first."""


def check_network_fits(config, family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                       image_size: int = DEFAULT_IMAGE_SIZE, arch: str = DEFAULT_ARCH) -> None:
    """Raise the compiler's one-line :class:`PsconvError` (first layer that does not fit, its
    value and the engine's limit) unless the ``width`` ``arch`` of ``family_name`` on
    ``image_size`` images fits ``config``; shapes only, nothing is trained or quantized."""
    from psconv.firmware.compiler import check_fits

    from .fold import fold_model

    check_image_size_for(arch, image_size)
    family_by_name(family_name)
    generator_state = torch.random.get_rng_state()
    try:
        layers = fold_model(build_network(arch, family_name, width),
                            (3, image_size, image_size))
    finally:
        torch.random.set_rng_state(generator_state)
    check_fits(layers, (3, image_size, image_size), config)


def check_resnet18_fits(config, family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                        image_size: int = DEFAULT_IMAGE_SIZE) -> None:
    """:func:`check_network_fits` of ResNet18."""
    check_network_fits(config, family_name, width, image_size, "resnet18")


def fitting_default(config, family_name: str = DEFAULT_FAMILY, width: int | None = None,
                    image_size: int | None = None, arch: str = DEFAULT_ARCH
                    ) -> tuple[int, int, str | None]:
    """``(width, image_size, why)`` of the embedded default to run on ``config``.

    Values given are kept; each one left ``None`` becomes the default (width 16, 32x32) if the
    network then fits, else the largest that fits: image sides :data:`DEFAULT_IMAGE_SIZES`
    first (largest first), then widths 16..1. ``why`` is ``None`` when the defaults were kept,
    else the compiler's error for them (the reason for the smaller choice). When nothing fits,
    the compiler's error for the nearest miss is raised: the smallest width tried on the largest
    image the engine's map limits admit.
    """
    from psconv.errors import PsconvError

    wanted = (DEFAULT_WIDTH if width is None else width,
              DEFAULT_IMAGE_SIZE if image_size is None else image_size)
    try:
        check_network_fits(config, family_name, *wanted, arch)
        return wanted[0], wanted[1], None
    except PsconvError as error:
        if width is not None and image_size is not None:
            raise
        why = str(error)
    least = MIN_IMAGE_SIZES[arch]
    sizes = [image_size] if image_size is not None else [
        s for s in DEFAULT_IMAGE_SIZES
        if least <= s <= min(config.max_height, config.max_width)] or [max(least, 1)]
    widths = [width] if width is not None else range(DEFAULT_WIDTH, 0, -1)
    nearest_miss = PsconvError(why)
    for size in sizes:
        for candidate in widths:
            try:
                check_network_fits(config, family_name, candidate, size, arch)
            except PsconvError as error:
                if size == sizes[0]:
                    nearest_miss = error       # ends as the smallest width on the largest image
                continue
            return candidate, size, why
    raise nearest_miss
