"""``psconv import``: a user's nn.Module becomes the same quantized-model file the built-in path
writes, plain Conv2d weights are recognised as periodic-sparse, and every unsupported graph is
refused in one line naming the node, its op and why.

(The ResNet20-style network runs bit-exact on the simulated board in
tests/e2e/test_import_board.py; an imported VGG16 with its max pools runs on the reference
resident board in tests/resident/test_vgg16_resident.py.)
"""

import textwrap

import pytest
import torch
from torch import nn

from psconv import cli
from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.families import family_by_name, paper_family
from psconv.nn.importer import import_model, load_factory

CALIBRATION = torch.rand(2, 3, 8, 8)


def conv_bn_relu(cin, cout, k=3, stride=1, padding=None):
    padding = k // 2 if padding is None else padding
    return [nn.Conv2d(cin, cout, k, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def classifier(channels):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]


def test_builtin_resnet18_imported_gives_the_same_file_as_quantize(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(textwrap.dedent("""
        from psconv.nn.default import seeded_resnet18
        def resnet18():
            return seeded_resnet18("PSD1_P16", 4, image_size=8)
    """))
    common = ["--image-size", "8", "--calibration-images", "4"]
    assert cli.main(["import", f"{source}:resnet18", "-o", str(tmp_path / "i.npz"), *common]) == 0
    assert cli.main(["quantize", "--family", "PSD1_P16", "--width", "4", "-o",
                     str(tmp_path / "q.npz"), *common]) == 0
    assert (tmp_path / "i.npz").read_bytes() == (tmp_path / "q.npz").read_bytes()


def test_plain_conv2d_weights_are_recognised_as_their_family():
    torch.manual_seed(0)
    model = nn.Sequential(*conv_bn_relu(3, 16), *conv_bn_relu(16, 16), *conv_bn_relu(16, 16),
                          *classifier(16)).eval()
    sparse = paper_family(4, 8, offset=3)
    with torch.no_grad():
        model[3].weight.mul_(family_by_name("PSD1_P16").weight_mask(16, 16))
        model[6].weight.mul_(sparse.weight_mask(16, 16))
    quantized, layers = import_model(model, CALIBRATION, EngineConfig(), "custom")
    families = [(l.family.name, l.family.offset, l.family_source) for l in layers if l.op == "conv"]
    # PS4_P8 is PS4_P4 twice over: the shorter table describes every kernel alike
    assert families == [("dense", 0, "dense"), ("PSD1_P16", 1, "recognised"),
                        ("PS4_P4", 3, "recognised")]
    assert quantized.family_name == "PS4_P4+PSD1_P16"


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(3, 4), *classifier(4))
        self.head = nn.Linear(10, 10)

    def forward(self, x):
        return self.head(self.features(x))


class SigmoidFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(*classifier(4))

    def forward(self, x):
        return self.head(torch.sigmoid(self.conv(x)))


class ReluThenAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(*conv_bn_relu(3, 4))
        self.b = nn.Sequential(*conv_bn_relu(4, 4))
        self.head = nn.Sequential(*classifier(4))

    def forward(self, x):
        x = self.a(x)
        return self.head(self.b(x) + x)


class FunctionalPool(nn.Module):
    """conv-BN-ReLU, ``F.max_pool2d(x, kernel, stride)``, conv-BN-ReLU, global pool, Linear."""

    def __init__(self, kernel=2, stride=None):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.a = nn.Sequential(*conv_bn_relu(3, 4))
        self.b = nn.Sequential(*conv_bn_relu(4, 8))
        self.head = nn.Sequential(*classifier(8))

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(self.a(x), self.kernel, self.stride)
        return self.head(self.b(x))


REJECTIONS = {
    "sigmoid": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.Sigmoid(), *classifier(4)),
                "node '_3' (Sigmoid 3): unsupported op"),
    "torch function": (SigmoidFunction, "node 'sigmoid' (torch.sigmoid): unsupported op"),
    "5x5 kernel": (lambda: nn.Sequential(*conv_bn_relu(3, 4, k=5), *classifier(4)),
                   "node '_0' (Conv2d 0): kernel size 5x5; allowed: 3x3 or 1x1"),
    "3x3 without padding": (lambda: nn.Sequential(*conv_bn_relu(3, 4, padding=0), *classifier(4)),
                            "node '_0' (Conv2d 0): padding (0, 0) (zeros) on a 3x3 kernel; "
                            "allowed: zero padding 1"),
    "stride 3": (lambda: nn.Sequential(*conv_bn_relu(3, 4, stride=3), *classifier(4)),
                 "node '_0' (Conv2d 0): stride 3x3; allowed: 1 or 2"),
    "too large": (lambda: nn.Sequential(*conv_bn_relu(3, 2048), *conv_bn_relu(2048, 4),
                                        *classifier(4)),
                  "node '_3' (Conv2d 3): layer '3' does not fit the engine: "),
    "two Linear": (TwoLinear, "node 'head' (Linear head): comes after the final Linear "
                              "'features_5'; allowed: one Linear classifier, last"),
    "3x3 max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.MaxPool2d(3),
                                              *classifier(4)),
                        "node '_3' (MaxPool2d 3): max pooling with kernel (3, 3), stride (3, 3), "
                        "padding (0, 0), dilation (1, 1); allowed: 2x2 max pooling at stride 2 "
                        "without padding"),
    "max pooling at stride 1": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.MaxPool2d(2, 1),
                                                      *classifier(4)),
                                "node '_3' (MaxPool2d 3): max pooling with kernel (2, 2), "
                                "stride (1, 1)"),
    "padded max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.MaxPool2d(2, padding=1),
                                                 *classifier(4)),
                           "node '_3' (MaxPool2d 3): max pooling with kernel (2, 2), stride "
                           "(2, 2), padding (1, 1)"),
    "ceil_mode max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4),
                                                    nn.MaxPool2d(2, ceil_mode=True),
                                                    *classifier(4)),
                              "node '_3' (MaxPool2d 3): max pooling with kernel (2, 2), stride "
                              "(2, 2), padding (0, 0), dilation (1, 1), ceil_mode; allowed"),
    "functional 3x3 max pooling": (lambda: FunctionalPool(3, 2),
                                   "node 'max_pool2d' (torch.nn.functional.max_pool2d): max "
                                   "pooling with kernel (3, 3), stride (2, 2)"),
    "adaptive max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.AdaptiveMaxPool2d(1),
                                                   nn.Flatten(), nn.Linear(4, 10)),
                             "node '_3' (AdaptiveMaxPool2d 3): adaptive max pooling; allowed: "
                             "2x2 max pooling"),
    "max pooling of the image": (lambda: nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(3, 4),
                                                       *classifier(4)),
                                 "node '_0' (MaxPool2d 0): max pooling reads 'input'; allowed: "
                                 "a convolution's or another max pool's map"),
    "ReLU before the add": (ReluThenAdd, "node 'add' (_operator.add): a residual add needs one "
                                         "operand to be a convolution's output"),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_unsupported_graph_is_refused_naming_the_node(case):
    build, message = REJECTIONS[case]
    with pytest.raises(PsconvError) as error:
        import_model(build().eval(), CALIBRATION, EngineConfig(), "custom")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_missing_factory_is_refused(tmp_path):
    source = tmp_path / "net.py"
    source.write_text("import torch\ndef tiny():\n    return torch.nn.Identity()\n")
    with pytest.raises(PsconvError, match=r"net.py has no function 'resnet20'; its functions and "
                                          r"classes: tiny$"):
        load_factory(f"{source}:resnet20")


def _pooling_cnn():
    return nn.Sequential(*conv_bn_relu(3, 8), nn.MaxPool2d(2), *conv_bn_relu(8, 16),
                         nn.MaxPool2d(kernel_size=2, stride=2, padding=0), nn.Flatten(),
                         nn.Linear(16 * 3 * 3, 10))


def test_small_cnn_with_max_pooling_imports_and_its_golden_model_matches_float():
    """MaxPool2d(2) and F.max_pool2d(x, 2) become maxpool layers that keep their input's scale;
    an odd map (7x7 -> 3x3) drops its last row and column as torch does; the integer model ranks
    like the float one."""
    torch.manual_seed(1)
    model = _pooling_cnn().eval()
    calibration = torch.rand(4, 3, 14, 14)
    quantized, layers = import_model(model, calibration, EngineConfig(), "custom")
    assert [(l.op, l.input) for l in quantized.layers] == [
        ("conv", "input"), ("maxpool", "0"), ("conv", "3"), ("maxpool", "4"), ("fc", "7")]
    pool = quantized.layers[1]
    assert (pool.kernel_size, pool.stride, pool.input_scale, pool.output_scale) == (
        2, 2, quantized.layers[0].output_scale, quantized.layers[0].output_scale)
    from psconv.nn.quantize import quantize_images
    from psconv.sim.golden.network import run_golden

    result = run_golden(quantized, quantize_images(quantized, calibration[0]))
    assert tuple(result.outputs["7"].shape) == (16, 3, 3)
    with torch.no_grad():
        expected = model(calibration[:1])[0]
    got = result.logits.double() * quantized.layers[-1].output_scale
    assert torch.allclose(got, expected.double(), atol=0.1 * float(expected.abs().max()))

    from psconv.nn.importer import summary_lines

    rows = [line.split()[:3] for line in summary_lines(quantized, layers)[1:]]
    assert rows == [["0", "conv3x3/1", "relu"], ["3", "maxpool2x2/2", "8x7x7"],
                    ["4", "conv3x3/1", "relu"], ["7", "maxpool2x2/2", "16x3x3"], ["9", "fc", "10"]]

    functional, _ = import_model(FunctionalPool().eval(), CALIBRATION, EngineConfig(), "custom")
    assert [l.op for l in functional.layers] == ["conv", "maxpool", "conv", "avgpool", "fc"]


def test_builtin_vgg16_imported_equals_the_builtin_quantize_path(tmp_path):
    """The same seeded VGG16 through `psconv import` and through `psconv quantize --network
    vgg16`: equal tensors, layer for layer, and the same file."""
    from psconv.qmodel import QuantizedModel
    from psconv.qmodel_check import TENSOR_DTYPES

    source = tmp_path / "vgg.py"
    source.write_text(textwrap.dedent("""
        from psconv.nn.default import seeded_network
        def vgg16():
            return seeded_network("vgg16", "PS4_P8", 4)
    """))
    common = ["--calibration-images", "2"]
    assert cli.main(["import", f"{source}:vgg16", "-o", str(tmp_path / "i.npz"), *common]) == 0
    assert cli.main(["quantize", "--network", "vgg16", "--family", "PS4_P8", "--width", "4",
                     "-o", str(tmp_path / "q.npz"), *common]) == 0
    imported = QuantizedModel.load(tmp_path / "i.npz")
    builtin = QuantizedModel.load(tmp_path / "q.npz")
    assert [l.manifest() for l in imported.layers] == [l.manifest() for l in builtin.layers]
    assert [l.op for l in builtin.layers].count("maxpool") == 5
    for a, b in zip(imported.layers, builtin.layers):
        for field in TENSOR_DTYPES:
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), (a.name, field)
    assert imported.family_name == builtin.family_name == "PS4_P8"
