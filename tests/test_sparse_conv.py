"""PeriodicSparseConv2d and the models built from it keep the pSConv contract exactly."""

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from psconv.errors import PsconvError
from psconv.families import (dense_family, family_by_name, mask_taps, paper_family,
                             pointwise_family)
from psconv.nn.cifar import synthetic_cifar_like
from psconv.nn.models import build_model, resnet18_cifar, vgg16_cifar
from psconv.nn.sparse_conv import PeriodicSparseConv2d


def expected_taps(family, out_channels, in_channels, kernel_size):
    """Boolean (out, in, k, k): kernel (o, i) keeps the taps of masks[(o + i + offset) % P]."""
    q = (np.arange(out_channels)[:, None] + np.arange(in_channels)[None, :] + family.offset) % family.period
    bits = np.array([[(m >> t) & 1 for t in range(9)] for m in family.masks], dtype=bool)
    taps = bits[q].reshape(out_channels, in_channels, 3, 3)
    return torch.from_numpy(taps if kernel_size == 3 else taps[:, :, 1:2, 1:2].copy())


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def check_layer_families(model, family, n_convs, conv_bias=False):
    layers = convs(model)
    assert len(layers) == n_convs
    assert all(isinstance(c, PeriodicSparseConv2d) for c in layers)
    assert layers[0].in_channels == 3 and layers[0].family == dense_family()
    for conv in layers[1:]:
        if conv.kernel_size == (1, 1):
            assert conv.family == pointwise_family()
        else:
            assert conv.family == family
    assert all((c.bias is not None) == conv_bias for c in layers)


def check_periodic(conv):
    expected = expected_taps(conv.family, conv.out_channels, conv.in_channels, conv.kernel_size[0])
    assert torch.equal(conv.mask.bool(), expected)
    assert torch.all(conv.weight[~expected] == 0)
    assert (conv.weight[expected] != 0).float().mean() > 0.999  # random init: kept taps live
    assert conv.nonzero_weights() == int(expected.sum())


@pytest.mark.parametrize("name", ["PSD1_P16", "PS4_P8", "PS2_P4"])
def test_resnet18_every_conv_is_periodic(name):
    family = family_by_name(name)
    model = resnet18_cifar(family)
    check_layer_families(model, family, n_convs=20)  # stem + 16 3x3 + 3 shortcuts
    assert sum(c.kernel_size == (1, 1) for c in convs(model)) == 3
    for conv in convs(model):
        check_periodic(conv)


@pytest.mark.parametrize("name", ["PSD4_P8", "PSD2_P8", "PS3_P16"])
def test_vgg16_every_conv_is_periodic(name):
    family = family_by_name(name)
    model = vgg16_cifar(family)
    check_layer_families(model, family, n_convs=13, conv_bias=True)   # the paper's code's biases
    for conv in convs(model):
        check_periodic(conv)


def test_reduced_width_kernels_match_family_table_one_by_one():
    family = paper_family(3, 8, dense_kernel=True)
    model = resnet18_cifar(family, width=8)
    for conv in convs(model)[1:]:
        if conv.kernel_size != (3, 3):
            continue
        for o in range(conv.out_channels):
            for i in range(conv.in_channels):
                kept = torch.nonzero(conv.weight[o, i].flatten()).flatten().tolist()
                assert tuple(kept) == mask_taps(family.masks[(o + i + family.offset) % family.period])


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_sgd_momentum_weight_decay_keeps_pruned_taps_zero(arch):
    torch.manual_seed(0)
    kwargs = {"width": 8} if arch == "resnet18" else {"width_scale": 0.125}
    model = build_model(arch, "PSD1_P16", **kwargs)
    images, labels = synthetic_cifar_like(16, seed=1)
    sparse = [c for c in convs(model) if c.family.name == "PSD1_P16"]
    before = [c.weight.detach().clone() for c in sparse]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    for conv, old in zip(sparse, before):
        kept = conv.mask.bool()
        assert torch.all(conv.weight[~kept] == 0), "a pruned tap moved"
        assert torch.all(conv.weight[kept] != old[kept]), "a kept tap did not train"


def test_gradient_hook_masks_gradients_from_any_use_of_the_weight():
    conv = PeriodicSparseConv2d(6, 10, 3, 1, 1, paper_family(2, 8, dense_kernel=True))
    conv.weight.sum().backward()  # bypasses forward's masking
    assert torch.equal(conv.weight.grad, conv.mask)


def test_gradient_hook_survives_deepcopy_and_pickling():
    conv = PeriodicSparseConv2d(6, 10, 3, 1, 1, paper_family(4, 4))
    buffer = io.BytesIO()
    torch.save(conv, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(conv), torch.load(buffer, weights_only=False)):
        clone.weight.sum().backward()
        assert torch.equal(clone.weight.grad, clone.mask)


def test_forward_uses_masked_weight_even_if_stored_weight_is_dense():
    conv = PeriodicSparseConv2d(4, 8, 3, 2, 1, paper_family(1, 4))
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.randn(2, 4, 9, 9)
    expected = nn.functional.conv2d(x, conv.mask, stride=2, padding=1)
    assert torch.allclose(conv(x), expected)
    assert not torch.allclose(conv(x), nn.functional.conv2d(x, torch.ones_like(conv.mask), stride=2, padding=1))


def test_load_state_dict_from_dense_conv_remasks_and_keys_match():
    dense = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    conv = PeriodicSparseConv2d(8, 8, 3, 1, 1, paper_family(4, 8))
    assert conv.state_dict().keys() == dense.state_dict().keys()
    conv.load_state_dict(dense.state_dict())
    assert torch.all(conv.weight[~conv.mask.bool()] == 0)
    assert torch.equal(conv.weight[conv.mask.bool()], dense.weight[conv.mask.bool()])


@pytest.mark.parametrize("name,out_channels,in_channels,bias",
                         [("PSD1_P16", 37, 23, False), ("PS3_P8", 5, 70, True), ("dense", 4, 3, True)])
def test_nonzero_parameters_counts_kept_taps_and_bias(name, out_channels, in_channels, bias):
    conv = PeriodicSparseConv2d(in_channels, out_channels, 3, 1, 1, family_by_name(name), bias=bias)
    assert conv.nonzero_parameters() == int(conv.mask.sum()) + (out_channels if bias else 0)


def test_family_kernel_mismatch_is_a_clear_error():
    with pytest.raises(PsconvError, match=r"1x1.*'PS4_P8' has kernel_size 3"):
        PeriodicSparseConv2d(8, 8, 1, 1, 0, paper_family(4, 8))
    with pytest.raises(PsconvError, match=r"3x3.*'pointwise' has kernel_size 1"):
        PeriodicSparseConv2d(8, 8, 3, 1, 1, pointwise_family())
    with pytest.raises(PsconvError, match="kernel_size is 5x5"):
        PeriodicSparseConv2d(8, 8, 5, 1, 2, dense_family())
    with pytest.raises(PsconvError, match="family is None"):
        PeriodicSparseConv2d(8, 8, 3, 1, 1, None)
    with pytest.raises(PsconvError, match="'pointwise' is for 1x1"):
        resnet18_cifar(pointwise_family())


def test_build_model_rejects_unknown_arch_and_width():
    with pytest.raises(PsconvError, match="arch is 'resnet50'; allowed: resnet18, vgg16"):
        build_model("resnet50", "PSD1_P16")
    with pytest.raises(PsconvError, match="width is 0"):
        build_model("resnet18", None, width=0)
