"""Run a whole quantized network through the integer golden model.

The layer semantics are those of :mod:`psconv.sim.golden.ops`; this module only walks the
:class:`~psconv.qmodel.QuantizedModel` graph in order, keeping every named int8 tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psconv.errors import PsconvError
from psconv.qmodel import QLayer, QuantizedModel

from . import ops


@dataclass
class GoldenResult:
    """Every layer's integer output (int8 values in int64 tensors; ``fc`` gives int logits)."""

    outputs: dict[str, torch.Tensor]
    logits: torch.Tensor

    @property
    def prediction(self) -> int:
        return int(torch.argmax(self.logits))


def run_layer(layer: QLayer, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """One layer's integer output given the named tensors computed so far."""
    if layer.input not in tensors:
        raise PsconvError(f"golden model: layer {layer.name!r} reads {layer.input!r}, which no "
                          f"earlier layer produced")
    x = tensors[layer.input]
    if layer.op == "conv":
        padding = 1 if layer.kernel_size == 3 else 0
        acc = ops.conv2d_int(x, layer.weight, layer.stride, padding)
        residual = None
        if layer.residual is not None:
            if layer.residual not in tensors:
                raise PsconvError(f"golden model: layer {layer.name!r} adds residual "
                                  f"{layer.residual!r}, which no earlier layer produced")
            residual = tensors[layer.residual]
        return ops.requantize(acc, layer.bias, layer.multiplier, layer.shift, layer.relu,
                              residual=residual, residual_multiplier=layer.residual_multiplier)
    if layer.op == "avgpool":
        return ops.global_avgpool_int(x, int(layer.multiplier.reshape(-1)[0]),
                                      int(layer.shift.reshape(-1)[0]))
    if layer.op == "maxpool":
        return ops.maxpool2d_int(x, layer.kernel_size, layer.stride)
    if layer.op == "fc":
        return ops.linear_int(x, layer.weight, layer.bias)
    raise PsconvError(f"golden model: layer {layer.name!r} has unknown op {layer.op!r}")


def run_golden(model: QuantizedModel, image: torch.Tensor) -> GoldenResult:
    """Run ``model`` on one int8 CHW ``image``; returns every layer's output and the logits."""
    image = torch.as_tensor(image)
    if tuple(image.shape) != tuple(model.input_shape):
        raise PsconvError(f"golden model: image shape {tuple(image.shape)}; the model expects "
                          f"{tuple(model.input_shape)}")
    if image.is_floating_point():
        raise PsconvError("golden model: the image must be int8 values (use ops.quantize_input)")
    ops.check_range(image.to(torch.int64), ops.INT8_MIN, ops.INT8_MAX, "golden model input")
    tensors = {"input": image.to(torch.int64)}
    for layer in model.layers:
        tensors[layer.name] = run_layer(layer, tensors)
    logits = tensors[model.layers[-1].name]
    outputs = {name: t for name, t in tensors.items() if name != "input"}
    return GoldenResult(outputs=outputs, logits=logits)


def describe_mismatch(label: str, expected: torch.Tensor, actual: torch.Tensor) -> str | None:
    """None if ``actual`` equals ``expected`` element for element; else a message with how many
    elements differ and the first one, as (channel, row, column) for CHW maps."""
    expected = expected.to(torch.int64)
    actual = actual.to(torch.int64)
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{label}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    differ = actual != expected
    count = int(differ.sum())
    if count == 0:
        return None
    index = tuple(int(v) for v in torch.nonzero(differ)[0])
    where = (f"channel {index[0]}, row {index[1]}, column {index[2]}" if len(index) == 3
             else f"index {index}")
    return (f"{label}: {count} of {expected.numel()} elements differ; first at ({where}): "
            f"expected {int(expected[index])}, got {int(actual[index])}")


def checksum(t: torch.Tensor) -> int:
    """A position-sensitive 32-bit checksum of an integer tensor (for printing and comparing)."""
    flat = t.reshape(-1).to(torch.int64)
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.int64) % 65521
    return int(((flat * weights).sum() + flat.numel()) % (1 << 32))
