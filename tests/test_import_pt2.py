"""``psconv import MODEL.pt2``: a ``torch.export`` program becomes the same quantized model as the
module it was exported from, through the same folding rules, exported plain or decomposed; every
unsupported node is refused in one line naming the node, its ATen op and why.
"""

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from psconv import cli
from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.nn.default import calibration_batch, seeded_network
from psconv.nn.export_fold import load_program
from psconv.nn.importer import import_model, import_program
from psconv.nn.quantize import quantize_network
from psconv.qmodel_check import TENSOR_DTYPES
from test_import import classifier, conv_bn_relu

CALIBRATION = torch.rand(2, 3, 8, 8)


def exported(tmp_path, model, example, decompose=False):
    """``model`` exported on ``example``, written with ``torch.export.save`` and read back as
    ``psconv import`` reads it."""
    program = torch.export.export(model.eval(), (example,))
    if decompose:
        program = program.run_decompositions()
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    return load_program(path)


def assert_same_model(got, expected, rename=lambda name: name):
    """Equal layer for layer: every manifest field (layer names through ``rename``) and every
    integer tensor."""
    assert len(got.layers) == len(expected.layers)
    for a, b in zip(got.layers, expected.layers):
        manifest = a.manifest()
        manifest.update(name=rename(a.name), input=rename(a.input),
                        residual=a.residual and rename(a.residual))
        assert manifest == b.manifest()
        for field in TENSOR_DTYPES:
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), (a.name, field)
    assert (got.family_name, got.input_scale, got.input_shape) == (
        expected.family_name, expected.input_scale, expected.input_shape)


@pytest.mark.parametrize("arch, family, width, size, decompose", [
    ("resnet18", "PSD1_P16", 16, 8, False),
    ("vgg16", "PSD4_P8", 8, 32, True),
])
def test_builtin_network_exported_equals_the_builtin_quantize_path(tmp_path, arch, family, width,
                                                                   size, decompose):
    """ResNet18 exported plain (conv2d, batch_norm, linear) and VGG16 decomposed (convolution,
    _native_batch_norm_legit_no_training, max_pool2d_with_indices, addmm): the same integer model
    as `psconv quantize`, layer names aside (a program has module paths, not the network's
    quantized_layer_names). Widths where every sparse layer shows its whole period, so the
    recognised family is the declared one."""
    model = seeded_network(arch, family, width, image_size=size)
    images = calibration_batch(2, image_size=size)
    imported, _ = import_program(exported(tmp_path, model, images[:1], decompose), images,
                                 EngineConfig(), arch)
    builtin = quantize_network(model, images, family, arch)
    names = model.quantized_layer_names()
    assert_same_model(imported, builtin, lambda name: names.get(name, name))
    assert imported.family_name == family


class PoolingCNN(nn.Module):
    """conv-BN-ReLU, conv-BN + residual + ReLU, MaxPool2d(2), 1x1 conv with bias, ReLU,
    F.max_pool2d(x, 2), Dropout, global pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, 8))
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Sequential(*classifier(16))

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.bn(self.conv(x)) + x)
        x = F.max_pool2d(torch.relu(self.pointwise(self.pool(x))), 2)
        return self.head(self.drop(x))


@pytest.mark.parametrize("decompose", [False, True])
def test_small_cnn_with_max_pooling_round_trips(tmp_path, decompose):
    """The program imports to the model `psconv import FILE.py:FACTORY` makes of the module,
    names included."""
    torch.manual_seed(2)
    model = PoolingCNN().eval()
    with torch.no_grad():   # statistics away from the defaults, so folding is exercised
        for bn in (model.stem[1], model.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    images = torch.rand(3, 3, 16, 16)
    imported, layers = import_program(exported(tmp_path, model, images[:1], decompose), images,
                                      EngineConfig(), "custom")
    traced, _ = import_model(model, images, EngineConfig(), "custom")
    assert_same_model(imported, traced)
    assert [(l.name, l.op, l.input, l.residual) for l in imported.layers] == [
        ("stem.0", "conv", "input", None), ("conv", "conv", "stem.0", "stem.0"),
        ("pool", "maxpool", "conv", None), ("pointwise", "conv", "pool", None),
        ("maxpool", "maxpool", "pointwise", None), ("head.0", "avgpool", "maxpool", None),
        ("head.2", "fc", "head.0", None)]
    assert layers[0].node == ("node 'convolution' (aten.convolution.default in Conv2d stem.0)"
                              if decompose else "node 'conv2d' (aten.conv2d.default in Conv2d "
                                                "stem.0)")


class ScaledAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(*conv_bn_relu(3, 4))
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(*classifier(4))

    def forward(self, x):
        x = self.a(x)
        return self.head(torch.relu(torch.add(self.b(x), x, alpha=2)))


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(*conv_bn_relu(3, 4), *classifier(4))

    def forward(self, x):
        y = self.net(x)
        return y, y


REJECTIONS = {
    "5x5 kernel": (lambda: nn.Sequential(*conv_bn_relu(3, 4, k=5), *classifier(4)), False,
                   "node 'conv2d' (aten.conv2d.default in Conv2d 0): kernel size 5x5; allowed: "
                   "3x3 or 1x1"),
    "sigmoid": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.Sigmoid(), *classifier(4)), False,
                "node 'sigmoid' (aten.sigmoid.default in Sigmoid 3): unsupported op; allowed: "
                "Conv2d, BatchNorm2d, ReLU"),
    "3x3 without padding": (lambda: nn.Sequential(*conv_bn_relu(3, 4, padding=0), *classifier(4)),
                            True, "node 'convolution' (aten.convolution.default in Conv2d 0): "
                                  "padding (0, 0) (zeros) on a 3x3 kernel; allowed: zero "
                                  "padding 1"),
    "stride 3": (lambda: nn.Sequential(*conv_bn_relu(3, 4, stride=3), *classifier(4)), False,
                 "node 'conv2d' (aten.conv2d.default in Conv2d 0): stride 3x3; allowed: 1 or 2"),
    "3x3 max pooling": (lambda: nn.Sequential(*conv_bn_relu(3, 4), nn.MaxPool2d(3),
                                              *classifier(4)), True,
                        "node 'max_pool2d_with_indices' (aten.max_pool2d_with_indices.default in "
                        "MaxPool2d 3): max pooling with kernel (3, 3), stride (3, 3), padding "
                        "(0, 0), dilation (1, 1); allowed: 2x2 max pooling"),
    "scaled add": (ScaledAdd, False, "node 'add' (aten.add.Tensor): an add with other arguments "
                                     "than two tensors; allowed: x + y"),
    "two outputs": (TwoOutputs, False, "node 'output' (output): returns 2 values; allowed: the "
                                       "final Linear's output alone"),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_unsupported_program_is_refused_naming_the_node(tmp_path, case):
    build, decompose, message = REJECTIONS[case]
    assert_refused(build().eval(), decompose, message)


def assert_refused(model, decompose, message):
    program = torch.export.export(model, (CALIBRATION[:1],))
    if decompose:
        program = program.run_decompositions()
    with pytest.raises(PsconvError) as error:
        import_program(program, CALIBRATION, EngineConfig(), "custom")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("decompose, node", [
    (False, "node 'batch_norm' (aten.batch_norm.default in BatchNorm2d 1)"),
    (True, "node '_native_batch_norm_legit_functional' "
           "(aten._native_batch_norm_legit_functional.default in BatchNorm2d 1)"),
])
def test_a_program_exported_in_training_mode_is_refused(decompose, node):
    model = nn.Sequential(*conv_bn_relu(3, 4), *classifier(4)).train()
    assert_refused(model, decompose, f"{node}: BatchNorm2d in training mode; allowed: eval mode "
                                     f"(export after model.eval())")


@pytest.mark.parametrize("content, message", [
    (None, "not a file; allowed: FILE.py:FACTORY or a torch.export archive (MODEL.pt2)"),
    (b"not a zip\n", "not a torch.export archive (written by torch.export.save): "),
    ("state dict", "not a torch.export archive (written by torch.export.save): "),
])
def test_a_file_that_is_not_an_export_archive_is_one_line(tmp_path, capfd, content, message):
    path = tmp_path / "model.pt2"
    if content == "state dict":
        torch.save(nn.Linear(2, 2).state_dict(), path)     # a zip, but torch.save's
    elif content is not None:
        path.write_bytes(content)
    assert cli.main(["import", str(path), "-o", str(tmp_path / "m.npz")]) == 2
    err = capfd.readouterr().err    # torch's own warnings (tracebacks of formats tried) too
    assert err.startswith(f"psconv import: error: model {str(path)!r}: {message}"), err
    assert err.count("\n") == 1


def test_cli_imports_a_program_to_the_file_the_python_form_writes(tmp_path, capsys):
    """`psconv import net.pt2` (calibrated at the exported 16x16 by default) and `psconv import
    net.py:net --image-size 16` of the same module write the same bytes."""
    source = tmp_path / "net.py"
    source.write_text(textwrap.dedent("""
        import torch
        from test_import_pt2 import PoolingCNN
        def net():
            torch.manual_seed(3)
            return PoolingCNN().eval()
    """))
    torch.manual_seed(3)
    program = torch.export.export(PoolingCNN().eval(), (torch.zeros(1, 3, 16, 16),))
    torch.export.save(program, tmp_path / "net.pt2")
    common = ["--calibration-images", "2"]
    assert cli.main(["import", str(tmp_path / "net.pt2"), "-o", str(tmp_path / "e.npz"),
                     *common]) == 0
    out = capsys.readouterr().out
    assert "node 'conv2d' (aten.conv2d.default in Conv2d stem.0)" in out
    assert f"wrote {tmp_path / 'e.npz'}: net dense, 7 layers, input 3x16x16" in out
    assert cli.main(["import", f"{source}:net", "-o", str(tmp_path / "f.npz"),
                     "--image-size", "16", *common]) == 0
    assert (tmp_path / "e.npz").read_bytes() == (tmp_path / "f.npz").read_bytes()


def test_cli_refuses_a_checkpoint_and_a_wrong_image_size_for_a_program(tmp_path, capsys):
    model = nn.Sequential(*conv_bn_relu(3, 4), *classifier(4)).eval()
    torch.export.save(torch.export.export(model, (CALIBRATION[:1],)), tmp_path / "m.pt2")
    argv = ["import", str(tmp_path / "m.pt2"), "-o", str(tmp_path / "m.npz")]
    assert cli.main(argv + ["--checkpoint", "ck.pt"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint with " in err and "a torch.export archive holds its own weights" in err
    assert cli.main(argv + ["--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert ("the program was exported for 3x8x8 images but the calibration images are 3x16x16"
            in err) and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "m.npz").exists()


def test_import_help_names_both_forms():
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["import"]
                         .format_help().split())
    assert "FILE.py:FACTORY | MODEL.pt2" in help_text
    assert "torch.export.save" in help_text and "torch.fx" in help_text
