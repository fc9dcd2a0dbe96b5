"""``psconv import``: a user's nn.Module becomes the same quantized-model file the built-in path
writes, plain Conv2d weights are recognised as periodic-sparse, and every unsupported graph is
refused in one line naming the node, its op and why.

(The ResNet20-style network runs bit-exact on the simulated board in
tests/e2e/test_import_board.py; VGG16 needs max pooling, which the engine does not run yet.)
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
    "max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.MaxPool2d(2), *classifier(4)),
                    "node '_3' (MaxPool2d 3): max pooling is not supported on the engine yet"),
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
