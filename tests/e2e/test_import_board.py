"""An imported network on the simulated board: a ResNet20-style CIFAR network written as a user
would (plain ``nn.Conv2d``, 3x3 weights pruned to PSD1_P16 by hand, 1x1 stride-2 shortcuts),
imported with ``psconv import``'s library call, runs bit-exact against the golden model at
every layer and at the logits. Reduced width (8/16/32 channels) and 8x8 images keep it short; the
board is the e2e tests' SIM_CONFIG build, shared with them (cached under build/rtl)."""

import pytest
import torch
from torch import nn

from psconv.families import family_by_name
from psconv.firmware.compiler import compile_model
from psconv.firmware.driver import Driver
from psconv.firmware.resident import run_resident
from psconv.nn.importer import import_model
from psconv.sim.bridge import SimBoard, build_board
from psconv.sim.golden.network import run_golden
from psconv.sim.golden.ops import quantize_input

from e2e_helpers import SIM_CONFIG

pytestmark = pytest.mark.rtl


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, stride in enumerate((1, 2, 2)):
            for index in range(3):
                blocks.append(Block(cin, width << stage, stride if index == 0 else 1))
                cin = width << stage
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(cin, 10)

    def forward(self, x):
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        out = nn.functional.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


def reduced_resnet20():
    """Width 8, every 3x3 weight after the first pruned to PSD1_P16, BN statistics measured."""
    torch.manual_seed(20)
    model = ResNet20(width=8)
    family = family_by_name("PSD1_P16")
    with torch.no_grad():
        for conv in [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]:
            if conv.kernel_size == (3, 3):
                conv.weight.mul_(family.weight_mask(conv.out_channels, conv.in_channels))
        for bn in [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]:
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.momentum = None
        model.train()(torch.rand(32, 3, 8, 8))
    return model.eval()


def test_imported_resnet20_is_bit_exact_on_the_simulated_board():
    build_board(SIM_CONFIG)
    quantized, layers = import_model(reduced_resnet20(), torch.rand(8, 3, 8, 8), SIM_CONFIG,
                                     "resnet20")
    convs = [l for l in layers if l.op == "conv"]
    assert len(convs) == 21 and sum(l.kernel_size == 1 for l in convs) == 2
    # layers wide enough to show a 16-entry table twice (in + out >= 32) are recognised exactly
    wide = [l for l in convs[1:] if l.kernel_size == 3 and sum(l.weight.shape[:2]) >= 32]
    assert len(wide) == 11
    assert all(l.family == family_by_name("PSD1_P16") for l in wide)
    assert "PSD1_P16" in quantized.family_name.split("+")
    program = compile_model(quantized, SIM_CONFIG)
    report = run_streamed(program, quantize_input(torch.rand(3, 8, 8), quantized.input_scale))
    assert len(report.steps) == 21
    assert report.bit_exact, report.first_mismatch
    assert report.logits == report.golden_logits


def run_streamed(program, image):
    """``program`` streamed on the simulated board (SIM_CONFIG) for one int8 image: the report."""
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        report = Driver(transport, SIM_CONFIG, timeout_s=2.0).run_program(program, image,
                                                                          progress=False)
        transport.close()
    return report


class SmallPoolingCNN(nn.Module):
    """A user's small CNN: two 3x3 stages each followed by 2x2 max pooling (14 -> 7 -> 3: the
    second pool drops an odd row and column), a 1x1 layer, global average pool, one Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.linear(torch.flatten(out, 1))


def imported_pooling_cnn():
    """:class:`SmallPoolingCNN` with measured BN statistics, imported for SIM_CONFIG."""
    torch.manual_seed(21)
    model = SmallPoolingCNN()
    with torch.no_grad():
        for bn in [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]:
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.momentum = None
        model.train()(torch.rand(32, 3, 14, 14))
    quantized, layers = import_model(model.eval(), torch.rand(8, 3, 14, 14), SIM_CONFIG,
                                     "pooling-cnn")
    assert [l.op for l in layers].count("maxpool") == 2
    return quantized


def test_imported_cnn_with_max_pooling_is_bit_exact_streamed_on_the_simulated_board():
    """Streamed, each max pool runs in the engine's output max pool, fused into the
    convolution before it: 14x14 -> 7x7 (even) and 7x7 -> 3x3 (odd row and column dropped)."""
    build_board(SIM_CONFIG)
    quantized = imported_pooling_cnn()
    program = compile_model(quantized, SIM_CONFIG)
    report = run_streamed(program, quantize_input(torch.rand(3, 14, 14), quantized.input_scale))
    pools = [l.name for l in quantized.layers if l.op == "maxpool"]
    assert [s.shape.endswith("+maxpool") for s in report.steps] == [True, True, False]
    assert report.bit_exact, report.first_mismatch
    assert all(report.layers[name] is None for name in pools)
    assert report.logits == report.golden_logits


def test_imported_cnn_with_max_pooling_is_bit_exact_resident_on_the_simulated_board():
    quantized = imported_pooling_cnn()
    program = compile_model(quantized, SIM_CONFIG)
    images = [quantize_input(torch.rand(3, 14, 14), quantized.input_scale) for _ in range(2)]
    report = run_resident(program, images, transport="sim", check_layers=True, progress=False)
    assert report.bit_exact, report.first_mismatch
    pools = [l.name for l in quantized.layers if l.op == "maxpool"]
    golden = run_golden(quantized, images[0])
    assert [tuple(golden.outputs[name].shape) for name in pools] == [(8, 7, 7), (16, 3, 3)]
    for inference in report.inferences:
        assert inference.logits == inference.golden_logits
        assert all(name in inference.layers and inference.layers[name] is None for name in pools)
