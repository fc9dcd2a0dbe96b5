"""Parameter and MAC counts reproduce the paper's figures; ``psconv model-stats`` reports them."""

import json

import pytest
import torch
from torch import nn

from psconv.cli import main
from psconv.families import family_by_name, paper_family
from psconv.nn.models import build_model, resnet18_cifar, vgg16_cifar
from psconv.nn.sparse_conv import PeriodicSparseConv2d
from psconv.nn.stats import model_stats, variant_table

# CIFAR ResNet18 conv MACs by hand: stem 32*32*64*27; stage 1: 4 * 32*32*64*576; stages 2-4 each
# 134,217,728 (one strided conv, three full convs, one 1x1 shortcut); fc 512*10 + 10 bias.
RESNET18_CONV_FC_MACS = 32 * 32 * 64 * 27 + 4 * 32 * 32 * 64 * 576 + 3 * 134_217_728 + 5120 + 10


def test_dense_resnet18_matches_ptflops_figure():
    stats = model_stats(resnet18_cifar(family_by_name("dense")))
    print(f"dense ResNet18: {stats['dense_macs'] / 1e9:.4f} GMac (paper 0.559), "
          f"{stats['parameters']:,} parameters")
    assert stats["conv_fc_macs"] == RESNET18_CONV_FC_MACS
    assert stats["dense_macs"] == pytest.approx(0.559e9, rel=0.01)
    assert stats["parameters"] == 11_173_962  # the usual CIFAR ResNet18 figure
    assert stats["effective_macs"] == stats["conv_fc_macs"]
    assert stats["nonzero_parameters"] == stats["parameters"]


def test_vgg16_with_reference_biases_has_reference_parameter_count():
    stats = model_stats(vgg16_cifar(family_by_name("dense")))
    assert stats["parameters"] == 14_728_266  # the paper's reference VGG16 (biased convs)
    assert model_stats(vgg16_cifar(family_by_name("dense"), conv_bias=False))["parameters"] == 14_728_266 - 4224


def test_psd1_p16_resnet18_reductions_match_paper():
    rows = {r["name"]: r for r in variant_table("resnet18", ks=(1,), periods=(16,))}
    row = rows["PSD1_P16"]
    print(f"ResNet18 PSD1_P16: {row['nonzero_parameters']:,} nonzero parameters "
          f"({row['param_reduction_percent']:.1f} % fewer; paper 82 %), "
          f"{row['effective_macs'] / 1e6:.1f} M effective MACs ({row['mac_reduction']:.2f}x fewer; paper 5.6x)")
    assert row["param_reduction_percent"] == pytest.approx(82, abs=0.5)
    assert row["mac_reduction"] == pytest.approx(5.6, abs=0.05)


def test_counts_follow_the_stated_rules_on_a_small_model():
    family = paper_family(2, 4, dense_kernel=True)  # taps per period: 9 + 2 + 2 + 2
    conv = PeriodicSparseConv2d(4, 6, 3, 2, 1, family, bias=True)
    model = nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 3))
    stats = model_stats(model, input_size=(4, 8, 8))
    kept = 6 * 4 // 4 * (9 + 2 + 2 + 2)  # 24 kernels, each mask used by 6 of them
    positions = 4 * 4
    assert stats["weight_parameters"] == 6 * 4 * 9 + 6 * 3
    assert stats["nonzero_weight_parameters"] == kept + 18
    assert stats["nonzero_parameters"] == stats["parameters"] - (6 * 4 * 9 - kept)
    assert stats["conv_fc_macs"] == positions * 6 * 36 + positions * 6 + 6 * 3 + 3
    assert stats["effective_macs"] == positions * kept + positions * 6 + 6 * 3 + 3
    assert stats["elementwise_ops"] == 2 * 96 + 96 + 96  # BN (affine), ReLU, pool input
    assert stats["dense_macs"] == stats["conv_fc_macs"] + stats["elementwise_ops"]


def test_counted_nonzero_weights_equal_the_weights_a_real_model_keeps():
    model = build_model("resnet18", "PS3_P8", width=16)
    stats = model_stats(model)
    kept = sum(int(m.mask.sum()) for m in model.modules() if isinstance(m, PeriodicSparseConv2d))
    assert stats["nonzero_weight_parameters"] == kept + model.fc.weight.numel()
    assert stats["nonzero_weight_parameters"] < stats["weight_parameters"]


def test_model_stats_leaves_training_mode_and_bn_statistics_alone():
    model = build_model("vgg16", "PS4_P8", width_scale=0.125)
    before = model.features[0].bn.running_mean.clone()
    model.train()
    model_stats(model)
    assert model.training
    assert torch.equal(model.features[0].bn.running_mean, before)
    assert not any(m._forward_hooks for m in model.modules())


def test_variant_table_rows_and_order():
    rows = variant_table("vgg16", ks=(1, 4), periods=(8,))
    assert [r["name"] for r in rows] == ["dense", "PS1_P8", "PS4_P8", "PSD1_P8", "PSD4_P8"]
    assert rows[0]["param_reduction_percent"] == 0 and rows[0]["mac_reduction"] == 1
    assert all(r["dense_macs"] == rows[0]["dense_macs"] for r in rows)  # ptflops ignores masks
    assert rows[1]["effective_macs"] < rows[3]["effective_macs"] < rows[2]["effective_macs"]


def test_cli_json_has_every_row(capsys):
    assert main(["model-stats", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    names = ["dense"] + [f"{kind}{k}_P{p}" for kind in ("PS", "PSD") for k in (1, 2, 3, 4) for p in (4, 8, 16)]
    for arch in ("resnet18", "vgg16"):
        assert [r["name"] for r in tables[arch]] == names
    psd = next(r for r in tables["resnet18"] if r["name"] == "PSD1_P16")
    assert psd["mac_reduction"] == pytest.approx(5.59, abs=0.01)


def test_cli_table_and_bad_input(capsys):
    assert main(["model-stats", "--arch", "resnet18", "--k", "1", "--periods", "16"]) == 0
    out = capsys.readouterr().out
    assert "PSD1_P16" in out and "5.59x" in out and "81.9 %" in out and "VGG16" not in out
    assert main(["model-stats", "--k", "0"]) == 2
    assert "K is 0; allowed: an integer 1..9" in capsys.readouterr().err
