"""Post-training quantization of a folded float graph (:mod:`psconv.nn.fold`: psconv's ResNet18 or
VGG16, or an imported network) into a :class:`QuantizedModel`.

Steps, each the textbook choice so results are predictable:

1. BatchNorm folding (:func:`~psconv.nn.fold.fold_batchnorm`): ``w' = w * g / sqrt(var + eps)``,
   ``b' = beta - mean * g / sqrt(var + eps)``. Pruned taps stay exactly zero (folding scales
   whole output channels).
2. Weights: int8 symmetric per output channel, ``s_w[o] = max|w'[o]| / 127``, values in -127..127.
   The classifier uses one scale for all classes so integer logits rank like float ones.
3. Activations: int8 symmetric per tensor, ``s = max|x| / 127`` over the calibration images
   (max calibration); outputs after ReLU are therefore in 0..127. A max pool keeps its input's
   scale (the max of int8 values is one of them), so it needs no requantization.
4. Integer parameters: ``bias = round(b' / (s_w * s_x))`` (int32); multiplier/shift chosen per
   output channel so ``M / 2**S ~= s_w * s_x / s_y`` and ``R / 2**S ~= s_r / s_y`` with
   ``M, R < 2**30`` and the largest ``S <= 62`` allowed (:func:`choose_shift`). The integer
   arithmetic that uses them is defined once, in :mod:`psconv.sim.golden.ops`.
"""

from __future__ import annotations

import math
import torch
from torch import nn

from psconv.errors import PsconvError
from psconv.qmodel import QLayer, QuantizedModel
from psconv.sim.golden.ops import MULTIPLIER_LIMIT, SHIFT_MAX, SHIFT_MIN, quantize_input

from .fold import FloatLayer, fold_model

INT8_LIMIT = 127


def run_float(layers: list[FloatLayer], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float64 forward of the folded graph on an NCHW batch; every layer's output."""
    tensors = {"input": images.double()}
    for layer in layers:
        x = tensors[layer.input]
        if layer.op == "conv":
            y = torch.nn.functional.conv2d(x, layer.weight, layer.bias, stride=layer.stride,
                                           padding=layer.kernel_size // 2)
            if layer.residual is not None:
                y = y + tensors[layer.residual]
            tensors[layer.name] = torch.relu(y) if layer.relu else y
        elif layer.op == "avgpool":
            tensors[layer.name] = x.mean(dim=(2, 3))
        elif layer.op == "maxpool":
            tensors[layer.name] = torch.nn.functional.max_pool2d(x, layer.kernel_size,
                                                                 layer.stride)
        else:
            tensors[layer.name] = x.flatten(1) @ layer.weight.T + layer.bias
    return tensors


def choose_shift(real_multipliers: torch.Tensor) -> torch.Tensor:
    """Largest S in 1..62 per row with every ``round(m * 2**S) < 2**30``.

    ``real_multipliers`` is (channels, k): all real factors that share one shift.
    """
    largest = real_multipliers.max(dim=1).values
    shifts = []
    for value in largest.tolist():
        shift = SHIFT_MAX if value <= 0 else min(SHIFT_MAX, 29 - math.floor(math.log2(value)))
        while shift >= SHIFT_MIN and round(value * 2.0 ** shift) >= MULTIPLIER_LIMIT:
            shift -= 1
        if shift < SHIFT_MIN:
            raise PsconvError(f"quantize: rescale factor {value:.3g} is too large for a 30-bit "
                              f"multiplier with shift >= 1 (allowed: < 2**28)")
        shifts.append(shift)
    return torch.tensor(shifts, dtype=torch.int64)


def _fixed_point(real: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return torch.round(real * torch.pow(2.0, shift.double())).to(torch.int64)


def _activation_scale(t: torch.Tensor, name: str) -> float:
    peak = float(t.abs().max())
    if not math.isfinite(peak):
        raise PsconvError(f"quantize: layer {name!r} produced non-finite values during calibration")
    return peak / INT8_LIMIT if peak > 0 else 1.0


def quantize_graph(layers: list[FloatLayer], calibration: torch.Tensor, arch: str,
                   family_name: str) -> QuantizedModel:
    """Quantize a folded float graph with activation scales calibrated on ``calibration`` (NCHW)."""
    if calibration.dim() != 4 or calibration.shape[0] < 1:
        raise PsconvError(f"quantize: calibration images must be NCHW with N >= 1, got "
                          f"{tuple(calibration.shape)}")
    with torch.no_grad():
        floats = run_float(layers, calibration)
    scales = {"input": _activation_scale(floats["input"], "input")}
    for layer in layers:
        if layer.op == "maxpool":       # the max of int8 values is one of them: same scale
            scales[layer.name] = scales[layer.input]
        elif layer.op != "fc":
            scales[layer.name] = _activation_scale(floats[layer.name], layer.name)
    qlayers = []
    for layer in layers:
        s_x = scales[layer.input]
        if layer.op == "avgpool":
            hw = floats[layer.input].shape[2] * floats[layer.input].shape[3]
            real = torch.tensor([[s_x / (hw * scales[layer.name])]], dtype=torch.float64)
            shift = choose_shift(real)
            qlayers.append(QLayer(name=layer.name, op="avgpool", input=layer.input,
                                  multiplier=_fixed_point(real[:, 0], shift), shift=shift,
                                  input_scale=s_x, output_scale=scales[layer.name]))
            continue
        if layer.op == "maxpool":
            qlayers.append(QLayer(name=layer.name, op="maxpool", input=layer.input,
                                  kernel_size=layer.kernel_size, stride=layer.stride,
                                  input_scale=s_x, output_scale=s_x))
            continue
        weight = layer.weight
        if layer.op == "fc":
            peak = float(weight.abs().max())
            s_w = torch.full((weight.shape[0],), peak / INT8_LIMIT if peak > 0 else 1.0,
                             dtype=torch.float64)
        else:
            peak = weight.abs().amax(dim=tuple(range(1, weight.dim())))
            s_w = torch.where(peak > 0, peak / INT8_LIMIT, torch.ones_like(peak))
        view = (-1,) + (1,) * (weight.dim() - 1)
        w_q = torch.round(weight / s_w.view(view)).clamp(-INT8_LIMIT, INT8_LIMIT).to(torch.int8)
        bias_q = torch.round(layer.bias / (s_w * s_x)).clamp(-(2 ** 31), 2 ** 31 - 1).to(torch.int32)
        common = dict(name=layer.name, op=layer.op, input=layer.input, weight=w_q, bias=bias_q,
                      weight_scale=s_w, input_scale=s_x)
        if layer.op == "fc":
            qlayers.append(QLayer(**common, output_scale=float(s_w[0]) * s_x))
            continue
        s_y = scales[layer.name]
        real_m = s_w * s_x / s_y
        real_r = None
        columns = [real_m]
        if layer.residual is not None:
            real_r = torch.full_like(real_m, scales[layer.residual] / s_y)
            columns.append(real_r)
        shift = choose_shift(torch.stack(columns, dim=1))
        qlayers.append(QLayer(
            **common, relu=layer.relu, residual=layer.residual, stride=layer.stride,
            kernel_size=layer.kernel_size, family=layer.family,
            multiplier=_fixed_point(real_m, shift), shift=shift,
            residual_multiplier=_fixed_point(real_r, shift) if real_r is not None else None,
            output_scale=s_y,
            residual_scale=scales[layer.residual] if layer.residual is not None else None))
    return QuantizedModel(arch=arch, family_name=family_name, input_scale=scales["input"],
                          layers=qlayers, num_classes=int(layers[-1].weight.shape[0]),
                          input_shape=tuple(calibration.shape[1:]))


def quantize_network(model: nn.Module, calibration: torch.Tensor, family_name: str,
                     arch: str = "resnet18") -> QuantizedModel:
    """BatchNorm-fold, calibrate and quantize one of psconv's CIFAR networks (``arch``:
    ``resnet18`` or ``vgg16``; eval-mode statistics), the same path ``psconv import`` takes."""
    return quantize_graph(fold_model(model, tuple(calibration.shape[1:])), calibration,
                          arch, family_name)


def quantize_resnet(model: nn.Module, calibration: torch.Tensor, family_name: str) -> QuantizedModel:
    """:func:`quantize_network` of a psconv CIFAR ResNet18."""
    return quantize_network(model, calibration, family_name, "resnet18")


def quantize_images(model: QuantizedModel, images: torch.Tensor) -> torch.Tensor:
    """Float NCHW (or CHW) images to the int8 the quantized model takes."""
    return quantize_input(images, model.input_scale)
