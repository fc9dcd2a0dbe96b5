"""Shared fixtures of the resident-mode tests: a reduced ResNet18 compiled for a small engine.

Width 4 on 16x16 images (5 s to build, once per session). The engine (Tm=4, Tn=8, 64 weight
words) is small enough that the layer4 convolutions run in 2 and 4 output-channel tiles, so the
memory image's channel offsets are exercised, and Tm does not divide layer4's 2-pixel rows.
"""

import pytest

from psconv.config import EngineConfig
from psconv.families import family_by_name
from psconv.firmware.compiler import compile_model
from psconv.firmware.memory_image import build_memory_image
from psconv.nn.default import default_quantized_model, model_images

RESIDENT_CONFIG = EngineConfig(tm=4, tn=8, family=family_by_name("PSD1_P16"), max_in_channels=64,
                               patch_channels=16, max_out_channels=64, max_height=16,
                               max_width=16, fmap_depth=4096, weight_depth=64)
MEMORY_BYTES = 1 << 16


@pytest.fixture(scope="session")
def program():
    model = default_quantized_model("PSD1_P16", width=4, calibration_images=4, image_size=16)
    return compile_model(model, RESIDENT_CONFIG)


@pytest.fixture(scope="session")
def images(program):
    return model_images(program.model, 2, seed=1000)


@pytest.fixture(scope="session")
def memory_image(program):
    return build_memory_image(program, MEMORY_BYTES)
