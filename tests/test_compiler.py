"""The layer program compiler, checked end to end with the functional engine model."""

import pytest
import torch

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.firmware.compiler import compile_model
from psconv.firmware.execute import execute_program
from psconv.nn.default import default_images, default_quantized_model
from psconv.sim import engine_model
from psconv.sim.golden.network import run_golden
from psconv.sim.golden.ops import quantize_input


@pytest.fixture(scope="module")
def model():
    return default_quantized_model("PSD1_P16", width=8)


@pytest.mark.parametrize("tn,weight_depth,patch_channels", [
    (16, 8192, None), (4, 40, None), (7, 23, None),
    (16, 8192, 16),   # width-8 ResNet18 has 8..64 channels: 1-4 input-channel passes
    (5, 60, 32),      # passes and output-channel tiles together
])
def test_program_is_bit_exact_at_every_layer(model, tn, weight_depth, patch_channels):
    config = EngineConfig(tm=4, tn=tn, weight_depth=weight_depth, patch_channels=patch_channels)
    program = compile_model(model, config)
    if weight_depth < 100:
        assert any(step.tiles > 1 for step in program.engine_steps)
    if patch_channels:
        assert any(step.descriptor.in_channels > patch_channels for step in program.engine_steps)
    image = quantize_input(default_images(1)[0], model.input_scale)
    golden = run_golden(model, image)
    result = execute_program(program, image,
                             lambda step, x, r: engine_model.run_step(step, x, r, config.tn, config.patch_channels))
    for name, expected in golden.outputs.items():
        assert torch.equal(result.outputs[name], expected), name
    assert torch.equal(result.logits, golden.logits)


def test_program_is_deterministic(model):
    config = EngineConfig()
    assert compile_model(model, config).digest() == compile_model(model, config).digest()
    other = default_quantized_model("PSD1_P16", width=8, seed=5)
    assert compile_model(other, config).digest() != compile_model(model, config).digest()


def test_layer_too_large_is_refused_with_its_name(model):
    with pytest.raises(PsconvError, match="'stem'.*feature-map buffer"):
        compile_model(model, EngineConfig(fmap_depth=1000))
    with pytest.raises(PsconvError, match="layer1.0.conv1.*period is 16; allowed: 1..8"):
        from psconv.families import paper_family
        compile_model(model, EngineConfig(family=paper_family(4, 8)))


def test_output_channel_tiles_are_balanced():
    from psconv.families import family_by_name
    from psconv.firmware.compiler import output_channel_tiles
    from psconv.firmware.packing import rotated_masks

    masks = rotated_masks(family_by_name("PSD1_P16"))
    config = EngineConfig()                 # 48 words per output channel at C_in = 512
    assert output_channel_tiles(config, masks, 512, 512) == [128, 128, 128, 128]
    assert output_channel_tiles(config, masks, 512, 130) == [130]
    tiles = output_channel_tiles(config.replace(weight_depth=48 * 100), masks, 512, 512)
    assert tiles == [86, 86, 85, 85, 85, 85] and sum(tiles) == 512      # 6 tiles of <= 100
    with pytest.raises(PsconvError, match="needs 48 weight words.*weight_depth is 40"):
        output_channel_tiles(config.replace(weight_depth=40), masks, 512, 8, "layer4.1.conv2")


def test_full_resnet18_compiles_for_the_ulx3s_board():
    """The ULX3S-85F engine (128 channels per patch buffer, 2048 weight words) takes every layer
    of the full-width ResNet18: 256/512-channel layers in input-channel passes, large weight
    sets in output-channel tiles. (Bit-exactness of passes: the tests above, tests/hw and
    tests/rtl; the whole network on this config's gateware: `psconv bench e2e --board ulx3s-85f`.)"""
    from psconv.rtl_gen.boards import get_board

    config = get_board("ulx3s-85f").engine_config()
    program = compile_model(default_quantized_model("PSD1_P16", width=64), config)
    passes = {s.layer: -(-s.descriptor.in_channels // config.patch_channels)
              for s in program.engine_steps}
    assert passes["layer3.1.conv2"] == 2 and passes["layer4.1.conv2"] == 4 and passes["stem"] == 1
    for step in program.engine_steps:
        step.descriptor.check(config, step.masks)
        assert step.weight_words.shape[0] <= config.weight_depth
