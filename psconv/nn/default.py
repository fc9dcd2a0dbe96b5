"""The embedded default: a seeded periodic-sparse ResNet18, quantized, and a seeded input.

Why: the README's main command and the tests need a realistic quantized network without any
download or training run. BatchNorm statistics are measured on seeded CIFAR-like images (so
every layer's activations are well scaled, as after training) and BatchNorm affine parameters
are randomized, so folding is exercised with non-trivial values.
"""

from __future__ import annotations

import torch
from torch import nn

from psconv.families import family_by_name
from psconv.qmodel import QuantizedModel

from .cifar import synthetic_cifar_like
from .models import resnet18_cifar
from .quantize import quantize_resnet

DEFAULT_FAMILY = "PSD1_P16"
DEFAULT_WIDTH = 16
DEFAULT_SEED = 0
DEFAULT_CALIBRATION_IMAGES = 32
"""Images the embedded default is calibrated on; ``psconv quantize`` without ``--checkpoint``
uses the same count by default, so its file holds the same integer model as the default."""


def seeded_resnet18(family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                    seed: int = DEFAULT_SEED, statistics_images: int = 64) -> nn.Module:
    """A deterministic eval-mode CIFAR ResNet18 with measured BatchNorm statistics."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = resnet18_cifar(family_by_name(family_name), num_classes=10, width=width)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.2, 0.2)
                module.momentum = None  # cumulative average over the statistics pass
                module.reset_running_stats()
        images = synthetic_cifar_like(statistics_images, seed=seed + 1)[0]
        model.train()
        with torch.no_grad():
            model(images)
        return model.eval()
    finally:
        torch.random.set_rng_state(generator_state)


def calibration_batch(count: int = DEFAULT_CALIBRATION_IMAGES,
                      seed: int = DEFAULT_SEED) -> torch.Tensor:
    """The seeded CIFAR-like images (NCHW) the model of ``seed`` is calibrated on."""
    return synthetic_cifar_like(count, seed=seed + 2)[0]


def default_quantized_model(family_name: str = DEFAULT_FAMILY, width: int = DEFAULT_WIDTH,
                            seed: int = DEFAULT_SEED,
                            calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> QuantizedModel:
    """The seeded model above, quantized with max calibration on seeded images."""
    model = seeded_resnet18(family_name, width, seed)
    quantized = quantize_resnet(model, calibration_batch(calibration_images, seed), family_name)
    quantized.notes.update({"source": "psconv embedded default", "seed": seed, "width": width})
    return quantized


def default_images(count: int = 1, seed: int = DEFAULT_SEED + 3) -> torch.Tensor:
    """Seeded float CIFAR-like images (NCHW) for the default model."""
    return synthetic_cifar_like(count, seed=seed)[0]
