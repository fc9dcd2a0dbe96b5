"""Float fake-quant reference: the quantized model evaluated in float64 with float scales.

Why it exists: it is an independent check of the integer golden model's *requantization*. It
uses only the float scales (never M, S, R) and round-half-to-even, so it agrees with the integer
path up to the fixed-point approximation of the scales: within 1 LSB on nearly every element.
"""

from __future__ import annotations

import torch

from psconv.qmodel import QuantizedModel

from .ops import quantize_input


def _requant_float(y: torch.Tensor, scale: float, relu: bool) -> torch.Tensor:
    q = torch.round(y / scale)
    if relu:
        q = q.clamp(min=0)
    return q.clamp(-128, 127)


def run_fake_quant(model: QuantizedModel, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run one float CHW image; returns every layer's int8-valued output (float64) and float logits."""
    tensors = {"input": quantize_input(image, model.input_scale).double()[None]}
    logits = None
    for layer in model.layers:
        x = tensors[layer.input] * layer.input_scale
        if layer.op == "conv":
            w = layer.weight.double() * layer.weight_scale.view(-1, 1, 1, 1)
            b = layer.bias.double() * layer.weight_scale * layer.input_scale
            y = torch.nn.functional.conv2d(x, w, b, stride=layer.stride,
                                           padding=layer.kernel_size // 2)
            if layer.residual is not None:
                y = y + tensors[layer.residual] * layer.residual_scale
            tensors[layer.name] = _requant_float(y, layer.output_scale, layer.relu)
        elif layer.op == "avgpool":
            tensors[layer.name] = _requant_float(x.mean(dim=(2, 3)), layer.output_scale, False)
        else:
            w = layer.weight.double() * layer.weight_scale.view(-1, 1)
            b = layer.bias.double() * layer.weight_scale * layer.input_scale
            logits = (x.reshape(1, -1) @ w.T + b)[0]
            tensors[layer.name] = logits
    outputs = {name: t[0] if t.dim() > 1 else t for name, t in tensors.items() if name != "input"}
    return outputs, logits
