"""The quantized-model file: what the quantizer writes and the golden model, compiler and driver
read.

A quantized network is an ordered list of :class:`QLayer` operations over named int8 tensors
(``"input"`` is the quantized image). Integer parameters follow sim/golden/ops.py exactly; the float
scales are kept only so a float fake-quant model can be rebuilt for comparison.

On disk (format version 1) it is one ``.npz`` file: the array ``__manifest__`` holds UTF-8 JSON
(format, version, arch, family, input scale, and per layer its fields without tensors) and every
tensor is stored as ``<layer name>/<field>`` in a fixed dtype (weights int8, bias int32,
multiplier/shift/residual_multiplier int64, weight_scale float64).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import PsconvError
from .families import PatternFamily

FORMAT_NAME = "psconv-quantized-model"
FORMAT_VERSION = 1
OPS = ("conv", "avgpool", "fc")

_TENSOR_FIELDS = {
    "weight": np.int8,
    "bias": np.int32,
    "multiplier": np.int64,
    "shift": np.int64,
    "residual_multiplier": np.int64,
    "weight_scale": np.float64,
}


@dataclass
class QLayer:
    """One integer operation of a quantized network.

    ``op``: ``conv`` (3x3 padding 1 or 1x1 padding 0, stride 1 or 2, then
    :func:`~psconv.sim.golden.ops.requantize`), ``avgpool`` (whole-map average, per-tensor
    multiplier/shift stored as 1-element tensors) or ``fc`` (int logits, no requantization).
    ``input`` and ``residual`` name earlier layers' outputs (or ``"input"``); a layer's output is
    named by its ``name``.
    """

    name: str
    op: str
    input: str
    relu: bool = False
    residual: str | None = None
    stride: int = 1
    kernel_size: int = 3
    family: PatternFamily | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    multiplier: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    residual_multiplier: torch.Tensor | None = None
    input_scale: float = 1.0
    output_scale: float = 1.0
    residual_scale: float | None = None
    weight_scale: torch.Tensor | None = None

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0]) if self.weight is not None else 0

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) if self.weight is not None else 0

    def manifest(self) -> dict:
        return {
            "name": self.name, "op": self.op, "input": self.input, "relu": self.relu,
            "residual": self.residual, "stride": self.stride, "kernel_size": self.kernel_size,
            "family": self.family.to_json() if self.family is not None else None,
            "input_scale": self.input_scale, "output_scale": self.output_scale,
            "residual_scale": self.residual_scale,
        }


@dataclass
class QuantizedModel:
    """An ordered list of integer layers plus the image quantization scale."""

    arch: str
    family_name: str
    input_scale: float
    layers: list[QLayer]
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 32, 32)
    notes: dict = field(default_factory=dict)

    def layer(self, name: str) -> QLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise PsconvError(f"quantized model: no layer named {name!r}; layers: "
                          f"{', '.join(l.name for l in self.layers)}")

    @property
    def conv_layers(self) -> list[QLayer]:
        return [l for l in self.layers if l.op == "conv"]

    def save(self, path) -> Path:
        path = Path(path)
        manifest = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": self.arch,
            "family": self.family_name, "input_scale": self.input_scale,
            "num_classes": self.num_classes, "input_shape": list(self.input_shape),
            "notes": self.notes, "layers": [l.manifest() for l in self.layers],
        }
        arrays = {"__manifest__": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)}
        for layer in self.layers:
            for name, dtype in _TENSOR_FIELDS.items():
                value = getattr(layer, name)
                if value is not None:
                    arrays[f"{layer.name}/{name}"] = value.detach().cpu().numpy().astype(dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "QuantizedModel":
        path = Path(path)
        if not path.exists():
            raise PsconvError(f"quantized model: {path} does not exist")
        if not path.is_file():
            raise PsconvError(f"quantized model: {path} is not a file")
        try:
            data = np.load(path, allow_pickle=False)
            manifest = json.loads(bytes(data["__manifest__"]).decode())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise PsconvError(f"quantized model: {path} is not a psconv quantized model ({e})") from None
        if manifest.get("format") != FORMAT_NAME:
            raise PsconvError(f"quantized model: {path} has format {manifest.get('format')!r}, "
                              f"expected {FORMAT_NAME!r}")
        if manifest.get("version") != FORMAT_VERSION:
            raise PsconvError(f"quantized model: {path} is format version {manifest.get('version')!r}; "
                              f"this psconv reads version {FORMAT_VERSION}")
        layers = []
        for entry in manifest["layers"]:
            if entry["op"] not in OPS:
                raise PsconvError(f"quantized model: layer {entry['name']!r} has op {entry['op']!r}; "
                                  f"allowed: {', '.join(OPS)}")
            tensors = {}
            for name in _TENSOR_FIELDS:
                key = f"{entry['name']}/{name}"
                if key in data.files:
                    tensors[name] = torch.from_numpy(np.array(data[key]))
            family = entry.get("family")
            layers.append(QLayer(
                name=entry["name"], op=entry["op"], input=entry["input"], relu=bool(entry["relu"]),
                residual=entry.get("residual"), stride=int(entry["stride"]),
                kernel_size=int(entry["kernel_size"]),
                family=PatternFamily.from_json(family) if family else None,
                input_scale=float(entry["input_scale"]), output_scale=float(entry["output_scale"]),
                residual_scale=entry.get("residual_scale"), **tensors))
        return cls(arch=manifest["arch"], family_name=manifest["family"],
                   input_scale=float(manifest["input_scale"]), layers=layers,
                   num_classes=int(manifest["num_classes"]),
                   input_shape=tuple(manifest["input_shape"]), notes=manifest.get("notes", {}))
