"""The quantized-model file: what the quantizer writes and the golden model, compiler and driver
read.

A quantized network is an ordered list of :class:`QLayer` operations over named int8 tensors
(``"input"`` is the quantized image). Integer parameters follow sim/golden/ops.py exactly; the float
scales are kept only so a float fake-quant model can be rebuilt for comparison.

On disk (format version 1) it is one ``.npz`` file: the array ``__manifest__`` holds UTF-8 JSON
(format, version, arch, family, input scale, and per layer its fields without tensors) and every
tensor is stored as ``<layer name>/<field>`` in a fixed dtype (weights int8, bias int32,
multiplier/shift/residual_multiplier int64, weight_scale float64). :mod:`psconv.qmodel_check`
holds the contract: :meth:`QuantizedModel.load` refuses a file and :meth:`QuantizedModel.save` a
model that breaks it.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import PsconvError
from .families import PatternFamily
from .outputs import check_output_file
from .qmodel_check import (FORMAT_NAME, FORMAT_VERSION, TENSOR_DTYPES, check_manifest, check_model,
                           check_stored_dtype)


@dataclass
class GraphLayer:
    """One operation of a network in psconv's graph form, float (the folded network) or integer
    (:class:`QLayer`): ``input`` and ``residual`` name earlier layers' outputs (or
    ``"input"``); a layer's output is named by its ``name``."""

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


@dataclass
class QLayer(GraphLayer):
    """One integer operation of a quantized network.

    ``op``: ``conv`` (3x3 padding 1 or 1x1 padding 0, stride 1 or 2, then
    :func:`~psconv.sim.golden.ops.requantize`), ``avgpool`` (whole-map average, per-tensor
    multiplier/shift stored as 1-element tensors), ``maxpool`` (2x2 windows at stride 2,
    :func:`~psconv.sim.golden.ops.maxpool2d_int`: ``kernel_size`` 2, ``stride`` 2, no tensors,
    output scale = input scale) or ``fc`` (int logits, no requantization).
    """

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
        """Write the model to ``path`` (``.npz``) after :func:`~psconv.qmodel_check.check_model`:
        a model outside the format's contract is refused, never written."""
        path = check_output_file(path, "quantized model")
        check_model(self, path)
        manifest = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": self.arch,
            "family": self.family_name, "input_scale": self.input_scale,
            "num_classes": self.num_classes, "input_shape": list(self.input_shape),
            "notes": self.notes, "layers": [l.manifest() for l in self.layers],
        }
        arrays = {"__manifest__": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)}
        for layer in self.layers:
            for name in TENSOR_DTYPES:
                value = getattr(layer, name)
                if value is not None:
                    arrays[f"{layer.name}/{name}"] = value.detach().cpu().numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "QuantizedModel":
        """Read a model file, refusing (one :class:`PsconvError` naming the layer and field) any
        field or tensor outside the format's contract before anything can run on it."""
        path = Path(path)
        if not path.exists():
            raise PsconvError(f"quantized model: {path} does not exist")
        if not path.is_file():
            raise PsconvError(f"quantized model: {path} is not a file")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("it holds one .npy array, not an .npz archive")
            with data:
                manifest = json.loads(bytes(data["__manifest__"]).decode())
                check_manifest(manifest, data.files, path)
                arrays = {key: np.array(data[key]) for key in data.files if key != "__manifest__"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            if isinstance(e, PsconvError):
                raise
            reason = "it is empty" if path.stat().st_size == 0 else e
            raise PsconvError(f"quantized model: {path} is not a psconv quantized model "
                              f"({reason})") from None
        layers = []
        for entry in manifest["layers"]:
            tensors = {}
            for name in TENSOR_DTYPES:
                array = arrays.get(f"{entry['name']}/{name}")
                if array is not None:
                    check_stored_dtype(array, entry["name"], name, path)
                    tensors[name] = torch.from_numpy(array)
            try:
                family = PatternFamily.from_json(entry["family"]) if entry.get("family") else None
            except (PsconvError, KeyError, TypeError, ValueError) as e:
                raise PsconvError(f"quantized model {path}: layer {entry['name']!r} family "
                                  f"{entry['family']!r}: {e}") from None
            layers.append(QLayer(
                name=entry["name"], op=entry["op"], input=entry["input"], relu=entry["relu"],
                residual=entry.get("residual"), stride=entry["stride"],
                kernel_size=entry["kernel_size"], family=family,
                input_scale=entry["input_scale"], output_scale=entry["output_scale"],
                residual_scale=entry.get("residual_scale"), **tensors))
        model = cls(arch=manifest["arch"], family_name=manifest["family"],
                    input_scale=manifest["input_scale"], layers=layers,
                    num_classes=manifest["num_classes"],
                    input_shape=tuple(manifest["input_shape"]), notes=manifest.get("notes", {}))
        check_model(model, path)
        return model
