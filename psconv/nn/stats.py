"""Parameter and MAC counts of periodic-sparse models, dense and effective.

Counting rules (per image, from forward hooks on one zero input, so shapes come from the model
itself; no ptflops needed, and models on the meta device work):

* conv: output elements x (in_channels / groups x kernel taps), plus one per output element if
  it has a bias. *Effective*: output positions x the layer's kept weights (+ bias), i.e. only the
  taps the family keeps (padding taps included, as in the dense count).
* linear: input features x output features per row, plus the bias.
* BatchNorm: 2 ops per input element if affine, else 1; ReLU: 1 per output element; max, average
  and adaptive average pooling: 1 per input element. The residual add and flatten count nothing.

These are ptflops' rules for those module types, so ``dense_macs`` is what ptflops reports for
the model (it cannot see masks): 0.5572 G for the CIFAR ResNet18, of which 0.5554 G are conv+fc.
The paper quotes 0.559 G (0.3 % more; its exact model code for ResNet18 is not published).

``effective_macs`` counts only multiply-accumulates, conv and fc, on kept taps: the work a
periodic-sparse engine does. BN folds into the int8 weights and ReLU into requantization, so they
are not MACs there. The reduction ``mac_reduction`` = ``conv_fc_macs / effective_macs`` compares
like with like and reproduces the paper's 5.6x for ResNet18 PSD1_P16.
"""

from __future__ import annotations

import torch
from torch import nn

from ..families import paper_family
from .models import ARCHITECTURES, build_model
from .sparse_conv import PeriodicSparseConv2d

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _kept_weights(module: nn.Module) -> int:
    if isinstance(module, PeriodicSparseConv2d):
        return module.nonzero_weights()
    return module.weight.numel()


def _bias_count(module: nn.Module) -> int:
    return module.bias.numel() if getattr(module, "bias", None) is not None else 0


def model_stats(model: nn.Module, input_size=(3, 32, 32)) -> dict:
    """Counts for one image of ``input_size`` (C, H, W); see the module docstring for the rules.

    Keys: ``parameters`` (all, incl. BN and fc), ``weight_parameters`` (conv and fc weights),
    ``nonzero_weight_parameters`` (those the masks keep), ``nonzero_parameters`` (all parameters
    less the pruned taps), ``conv_fc_macs`` (dense), ``elementwise_ops`` (BN, ReLU, pooling),
    ``dense_macs`` (their sum, the ptflops figure), ``effective_macs`` (conv and fc on kept taps).
    """
    counts = {"conv_fc_macs": 0, "effective_macs": 0, "elementwise_ops": 0}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            positions = output.numel() // module.out_channels
            bias = output.numel() if module.bias is not None else 0
            counts["conv_fc_macs"] += output.numel() * module.weight[0].numel() + bias
            counts["effective_macs"] += positions * _kept_weights(module) + bias
        elif isinstance(module, nn.Linear):
            macs = inputs[0].numel() * module.out_features + (output.numel() if module.bias is not None else 0)
            counts["conv_fc_macs"] += macs
            counts["effective_macs"] += macs
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            counts["elementwise_ops"] += inputs[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, nn.ReLU):
            counts["elementwise_ops"] += output.numel()
        elif isinstance(module, _POOLS):
            counts["elementwise_ops"] += inputs[0].numel()

    counted = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.ReLU) + _POOLS
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()  # no BN running-statistics update from the probe
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = sum(m.weight.numel() for m in weighted)
    kept = sum(_kept_weights(m) for m in weighted)
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "parameters": parameters,
        "weight_parameters": weights,
        "nonzero_weight_parameters": kept,
        "nonzero_parameters": parameters - (weights - kept),
        "conv_fc_macs": counts["conv_fc_macs"],
        "elementwise_ops": counts["elementwise_ops"],
        "dense_macs": counts["conv_fc_macs"] + counts["elementwise_ops"],
        "effective_macs": counts["effective_macs"],
    }


def _row(model: nn.Module, stats: dict, baseline: dict) -> dict:
    return {
        "name": model.family.name,
        **stats,
        "param_reduction_percent": 100.0 * (1 - stats["nonzero_parameters"] / baseline["parameters"]),
        "mac_reduction": baseline["conv_fc_macs"] / stats["effective_macs"],
        "family": model.family.to_json(),
    }


def variant_table(arch: str, ks=(1, 2, 3, 4), periods=(4, 8, 16), dense_kernel=(False, True),
                  input_size=(3, 32, 32)) -> list[dict]:
    """Rows of :func:`model_stats` for the dense baseline, then every PS (``dense_kernel`` False)
    and PSD (True) family over ``ks`` x ``periods``, each with ``name``, the reductions against the
    dense baseline (``param_reduction_percent``: nonzero parameters fewer, in %;
    ``mac_reduction``: times fewer conv+fc MACs) and ``family`` (its masks and offset).

    Models are built on the meta device: counts need shapes and masks' tap counts, not values.
    """
    if arch not in ARCHITECTURES:
        build_model(arch)  # raises the error naming the allowed architectures
    with torch.device("meta"):
        families = [None] + [paper_family(k, p, dense_kernel=d)
                             for d in dense_kernel for k in ks for p in periods]
        rows = []
        baseline = None
        for family in families:
            model = build_model(arch) if family is None else ARCHITECTURES[arch](family)
            stats = model_stats(model, input_size)
            baseline = baseline or stats
            rows.append(_row(model, stats, baseline))
    return rows
