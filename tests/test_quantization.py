"""Quantization: BatchNorm folding, integer golden network vs float fake-quant, file format."""

import numpy as np
import pytest
import torch

from psconv.errors import PsconvError
from psconv.nn.default import default_images, default_quantized_model, seeded_resnet18
from psconv.nn.fold import fold_model
from psconv.nn.quantize import run_float
from psconv.qmodel import QuantizedModel
from psconv.sim.golden.fake_quant import run_fake_quant
from psconv.sim.golden.network import run_golden
from psconv.sim.golden.ops import quantize_input


@pytest.fixture(scope="module")
def quantized():
    return default_quantized_model("PSD1_P16", width=16)


def test_folded_graph_equals_pytorch_model():
    model = seeded_resnet18("PS4_P8", width=8).double()
    images = default_images(4)
    folded = run_float(fold_model(model, (3, 32, 32)), images)
    with torch.no_grad():
        reference = model(images.double())
    assert torch.allclose(folded["fc"], reference, rtol=1e-9, atol=1e-9)


def test_folding_keeps_pruned_taps_zero():
    model = seeded_resnet18("PSD1_P16", width=8)
    for layer in fold_model(model, (3, 32, 32)):
        if layer.op == "conv" and layer.family.kernel_size == 3:
            mask = layer.family.weight_mask(*layer.weight.shape[:2]).double()
            assert torch.all(layer.weight[mask == 0] == 0), layer.name


def test_integer_model_agrees_with_fake_quant_on_200_inputs(quantized):
    images = default_images(200, seed=123)
    same_top1 = 0
    within, total = 0, 0
    for image in images:
        golden = run_golden(quantized, quantize_input(image, quantized.input_scale))
        fake, logits = run_fake_quant(quantized, image)
        same_top1 += int(golden.prediction == int(torch.argmax(logits)))
        for layer in quantized.layers[:-1]:
            diff = (golden.outputs[layer.name].double() - fake[layer.name]).abs()
            within += int((diff <= 1).sum())
            total += diff.numel()
    print(f"top-1 agreement {same_top1}/200, activations within 1 LSB {within}/{total}")
    assert same_top1 >= 198
    assert within >= 0.99 * total


def test_integer_parameters_are_in_contract_ranges(quantized):
    for layer in quantized.conv_layers:
        assert layer.weight.dtype == torch.int8 and int(layer.weight.abs().max()) <= 127
        assert layer.bias.dtype == torch.int32
        assert int(layer.multiplier.min()) >= 0 and int(layer.multiplier.max()) < 2 ** 30
        assert int(layer.shift.min()) >= 1 and int(layer.shift.max()) <= 62
        mask = layer.family.weight_mask(layer.out_channels, layer.in_channels)
        assert torch.all(layer.weight[mask == 0] == 0), layer.name
        real = layer.weight_scale * layer.input_scale / layer.output_scale
        approx = layer.multiplier.double() / torch.pow(2.0, layer.shift.double())
        assert torch.allclose(approx, real, rtol=1e-6)


def test_save_load_round_trip(tmp_path, quantized):
    path = quantized.save(tmp_path / "model.npz")
    loaded = QuantizedModel.load(path)
    assert [l.name for l in loaded.layers] == [l.name for l in quantized.layers]
    image = quantize_input(default_images(1)[0], quantized.input_scale)
    a, b = run_golden(quantized, image), run_golden(loaded, image)
    assert torch.equal(a.logits, b.logits)
    for name in a.outputs:
        assert torch.equal(a.outputs[name], b.outputs[name])
    for before, after in zip(quantized.layers, loaded.layers):
        assert before.family == after.family
        if before.weight is not None:
            assert torch.equal(before.weight, after.weight) and after.weight.dtype == torch.int8


def test_load_rejects_other_files_and_versions(tmp_path):
    with pytest.raises(PsconvError, match="does not exist"):
        QuantizedModel.load(tmp_path / "missing.npz")
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, x=np.zeros(3))
    with pytest.raises(PsconvError, match="not a psconv quantized model"):
        QuantizedModel.load(bogus)
    future = tmp_path / "future.npz"
    np.savez(future, __manifest__=np.frombuffer(
        b'{"format": "psconv-quantized-model", "version": 99}', dtype=np.uint8))
    with pytest.raises(PsconvError, match="version 99"):
        QuantizedModel.load(future)


def test_golden_rejects_bad_images(quantized):
    with pytest.raises(PsconvError, match="shape"):
        run_golden(quantized, torch.zeros((3, 16, 16), dtype=torch.int64))
    with pytest.raises(PsconvError, match="outside -128..127"):
        run_golden(quantized, torch.full((3, 32, 32), 300, dtype=torch.int64))
