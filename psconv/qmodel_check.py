"""Validation of quantized models (:mod:`psconv.qmodel`): every field and tensor, before anything
runs on them and before one is written.

The limits are the integer contract of :mod:`psconv.sim.golden.ops` (int8 weights, int32 bias,
multiplier and shift ranges), the pattern-family contract of :mod:`psconv.families` (a weight
is zero wherever its mask prunes the tap) and the network's own shapes: every tensor must agree
with the manifest (channels, kernel size, the outputs of the layers it reads), so a file the
quantizer did not write ends in one :class:`PsconvError` naming the layer, the field, the value
or dtype found and what is allowed, instead of a traceback or a quiet wrong answer.

:func:`check_manifest` checks the JSON manifest and the stored array names of a file (types and
presence, so the loader can build the model); :func:`check_model` checks the values of a built
model (what :meth:`~psconv.qmodel.QuantizedModel.save` writes and
:meth:`~psconv.qmodel.QuantizedModel.load` returns).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import PsconvError
from .families import PatternFamily
from .sim.golden.ops import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, MAX_POOL_KERNEL,
                             MAX_POOL_STRIDE, MULTIPLIER_LIMIT, SHIFT_MAX, SHIFT_MIN, check_range)

FORMAT_NAME = "psconv-quantized-model"
FORMAT_VERSION = 1
OPS = ("conv", "avgpool", "maxpool", "fc")

TENSOR_DTYPES = {
    "weight": np.int8,
    "bias": np.int32,
    "multiplier": np.int64,
    "shift": np.int64,
    "residual_multiplier": np.int64,
    "weight_scale": np.float64,
}
"""The dtype each per-layer tensor is stored (and held) in."""

_ALLOWED_VALUES = {
    "weight": f"int8 {INT8_MIN}..{INT8_MAX}",
    "bias": f"int32 {INT32_MIN}..{INT32_MAX}",
    "multiplier": f"int64 0..{MULTIPLIER_LIMIT - 1}",
    "shift": f"int64 {SHIFT_MIN}..{SHIFT_MAX}",
    "residual_multiplier": f"int64 0..{MULTIPLIER_LIMIT - 1}",
    "weight_scale": "float64, finite and > 0",
}

_RANGES = {
    "multiplier": (0, MULTIPLIER_LIMIT - 1),
    "shift": (SHIFT_MIN, SHIFT_MAX),
    "residual_multiplier": (0, MULTIPLIER_LIMIT - 1),
}

REQUIRED_TENSORS = {
    "conv": ("weight", "bias", "multiplier", "shift", "weight_scale"),
    "avgpool": ("multiplier", "shift"),
    "maxpool": (),
    "fc": ("weight", "bias", "weight_scale"),
}
"""Tensors every layer of an op has; a conv with a residual also has ``residual_multiplier``."""

_MANIFEST_TYPES = {
    "arch": (str, "a string"), "family": (str, "a string"), "input_scale": (float, "a number"),
    "num_classes": (int, "an integer"), "input_shape": (list, "a list [C, H, W]"),
    "layers": (list, "a list of layers"),
}
_LAYER_TYPES = {
    "name": (str, "a string"), "op": (str, "a string"), "input": (str, "a string"),
    "relu": (bool, "true or false"), "stride": (int, "an integer"),
    "kernel_size": (int, "an integer"), "input_scale": (float, "a number"),
    "output_scale": (float, "a number"),
}
_LAYER_OPTIONAL = {
    "residual": (str, "a layer name or null"), "family": (dict, "a family object or null"),
    "residual_scale": (float, "a number or null"),
}


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _check_types(entry: dict, types: dict, optional: dict, where: str) -> None:
    for key, (kind, allowed) in types.items():
        if key not in entry:
            raise PsconvError(f"{where}: field {key!r} is missing; allowed: {allowed}")
    for key, (kind, allowed) in {**types, **optional}.items():
        value = entry.get(key)
        if (key in types or value is not None) and not _is(value, kind):
            raise PsconvError(f"{where}: field {key!r} is {value!r}; allowed: {allowed}")


def check_manifest(manifest, array_names, source) -> None:
    """Raise unless ``manifest`` (parsed JSON) and the file's array names form a version-1 model
    whose fields have the types the loader needs (values are :func:`check_model`'s)."""
    where = f"quantized model {source}"
    if not isinstance(manifest, dict):
        raise PsconvError(f"{where}: the manifest is {type(manifest).__name__}; allowed: a JSON "
                          f"object")
    if manifest.get("format") != FORMAT_NAME:
        raise PsconvError(f"{where}: format is {manifest.get('format')!r}, expected "
                          f"{FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise PsconvError(f"{where}: format version {manifest.get('version')!r}; this psconv "
                          f"reads version {FORMAT_VERSION}")
    _check_types(manifest, _MANIFEST_TYPES, {"notes": (dict, "an object")}, where)
    names = set()
    for index, entry in enumerate(manifest["layers"]):
        if not isinstance(entry, dict):
            raise PsconvError(f"{where}: layer {index} is {entry!r}; allowed: a JSON object")
        label = f"layer {index}" + (f" ({entry['name']!r})" if isinstance(entry.get("name"), str)
                                    else "")
        _check_types(entry, _LAYER_TYPES, _LAYER_OPTIONAL, f"{where}: {label}")
        names.add(entry["name"])
    for array in array_names:
        if array == "__manifest__":
            continue
        layer, _, field = array.rpartition("/")
        if layer not in names or field not in TENSOR_DTYPES:
            raise PsconvError(f"{where}: tensor {array!r} is no layer's field; allowed: "
                              f"<layer name>/<{'|'.join(TENSOR_DTYPES)}>")


def check_stored_dtype(array: np.ndarray, layer: str, field: str, source) -> None:
    """Raise unless the stored ``array`` of ``layer``'s ``field`` has the format's dtype."""
    if array.dtype != TENSOR_DTYPES[field]:
        raise PsconvError(_dtype_message(f"quantized model {source}: layer {layer!r}", field,
                                         array.dtype.name, array))


def _dtype_message(where: str, field: str, found: str, values) -> str:
    """``<where> <field>: dtype <found> (values lo..hi); allowed: ...`` (the span for integers)."""
    if isinstance(values, torch.Tensor):
        integer = not (values.is_floating_point() or values.is_complex()
                       or values.dtype == torch.bool)
        count = values.numel()
    else:
        integer = isinstance(values, np.ndarray) and values.dtype.kind in "iu"
        count = getattr(values, "size", 0)
    seen = f" (values {int(values.min())}..{int(values.max())})" if integer and count else ""
    return f"{where} {field}: dtype {found}{seen}; allowed: {_ALLOWED_VALUES[field]}"


def _positive_finite(value, what: str) -> None:
    if not _is(value, float) or not math.isfinite(value) or value <= 0:
        raise PsconvError(f"{what} is {value!r}; allowed: a finite number > 0")


class _Shapes:
    """The shape of every named tensor computed so far, from the model's input shape on."""

    def __init__(self, input_shape):
        self.shapes = {"input": tuple(input_shape)}

    def read(self, where: str, name: str, role: str):
        if name not in self.shapes:
            raise PsconvError(f"{where} {role}: {name!r} is no earlier layer's output; allowed: "
                              f"{', '.join(repr(n) for n in self.shapes)}")
        return self.shapes[name]


def check_model(model, source) -> None:
    """Raise :class:`PsconvError` at the first field or tensor of ``model`` (a
    :class:`~psconv.qmodel.QuantizedModel`) outside the format's contract (see module doc)."""
    from .nn.cifar import check_image_size

    where = f"quantized model {source}"
    _positive_finite(model.input_scale, f"{where}: input_scale")
    if not _is(model.num_classes, int) or model.num_classes < 1:
        raise PsconvError(f"{where}: num_classes is {model.num_classes!r}; allowed: an integer "
                          f">= 1")
    shape = tuple(model.input_shape)
    if len(shape) != 3 or not all(_is(n, int) for n in shape) or shape[0] < 1:
        raise PsconvError(f"{where}: input_shape is {list(shape)}; allowed: [C, H, W], integers")
    check_image_size(shape[1], f"{where}: input_shape height")
    check_image_size(shape[2], f"{where}: input_shape width")
    if not model.layers:
        raise PsconvError(f"{where}: field 'layers' is empty; allowed: at least one layer "
                          f"(the last one the fc classifier)")
    shapes = _Shapes(shape)
    for layer in model.layers:
        if not layer.name or "/" in layer.name or layer.name in shapes.shapes:
            raise PsconvError(f"{where}: layer name {layer.name!r} is empty, repeated, 'input' or "
                              f"holds '/'; allowed: a new name without '/'")
        shapes.shapes[layer.name] = _check_layer(layer, shapes, f"{where}: layer {layer.name!r}")
    last = model.layers[-1]
    if last.op != "fc" or last.out_channels != model.num_classes:
        raise PsconvError(f"{where}: the last layer {last.name!r} is {last.op} with "
                          f"{last.out_channels} outputs; allowed: the fc classifier with "
                          f"num_classes = {model.num_classes} outputs")


def _check_layer(layer, shapes: _Shapes, where: str) -> tuple:
    """Check one layer against the contract; returns its output shape."""
    if layer.op not in OPS:
        raise PsconvError(f"{where}: op is {layer.op!r}; allowed: {', '.join(OPS)}")
    required = REQUIRED_TENSORS[layer.op] + (
        ("residual_multiplier",) if layer.op == "conv" and layer.residual is not None else ())
    for field in TENSOR_DTYPES:
        present = getattr(layer, field) is not None
        if present != (field in required):
            kind = f"{layer.op} layers" + ("" if layer.op != "conv" else (
                f" {'with' if layer.residual is not None else 'without'} a residual"))
            raise PsconvError(f"{where} ({layer.op}): tensor {field!r} is "
                              f"{'present' if present else 'missing'}; {kind} have: "
                              f"{', '.join(required)}")
    for field in required:
        tensor = getattr(layer, field)
        dtype = getattr(torch, TENSOR_DTYPES[field].__name__)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype:
            found = str(getattr(tensor, "dtype", type(tensor).__name__)).removeprefix("torch.")
            raise PsconvError(_dtype_message(where, field, found, tensor))
        if field in _RANGES:
            check_range(tensor, *_RANGES[field], f"{where} {field}")
    for name in ("input_scale", "output_scale"):
        _positive_finite(getattr(layer, name), f"{where}: {name}")
    if not isinstance(layer.relu, bool):
        raise PsconvError(f"{where}: relu is {layer.relu!r}; allowed: True or False")
    x = shapes.read(where, layer.input, "input")
    if layer.op == "avgpool":
        return _check_avgpool(layer, x, where)
    if layer.op == "maxpool":
        return _check_maxpool(layer, x, where)
    if layer.op == "fc":
        return _check_fc(layer, x, where)
    return _check_conv(layer, x, shapes, where)


def _check_vectors(layer, fields, length: int, where: str) -> None:
    for field in fields:
        got = tuple(getattr(layer, field).shape)
        if got != (length,):
            raise PsconvError(f"{where} {field}: shape {got}; allowed: ({length},)")


def _check_avgpool(layer, x, where: str) -> tuple:
    if len(x) != 3:
        raise PsconvError(f"{where}: input {layer.input!r} has shape {x}; allowed: a C x H x W map")
    _check_vectors(layer, ("multiplier", "shift"), 1, where)
    return x[:1]


def _check_maxpool(layer, x, where: str) -> tuple:
    """A 2x2 stride-2 max pool: no ReLU, residual or family; it keeps its input's scale (the
    integers pass unchanged); its input map is at least 2x2."""
    expected = {"kernel_size": (layer.kernel_size, MAX_POOL_KERNEL),
                "stride": (layer.stride, MAX_POOL_STRIDE), "relu": (layer.relu, False),
                "residual": (layer.residual, None), "family": (layer.family, None)}
    for field, (value, allowed) in expected.items():
        if value != allowed or isinstance(value, bool) != isinstance(allowed, bool):
            raise PsconvError(f"{where} (maxpool): {field} is {value!r}; allowed: {allowed!r}")
    if layer.output_scale != layer.input_scale:
        raise PsconvError(f"{where} (maxpool): output_scale is {layer.output_scale!r}; allowed: "
                          f"the input_scale {layer.input_scale!r} (max pooling keeps the scale)")
    if len(x) != 3 or x[1] < MAX_POOL_KERNEL or x[2] < MAX_POOL_KERNEL:
        raise PsconvError(f"{where}: input {layer.input!r} has shape {x}; allowed: a C x H x W "
                          f"map of at least {MAX_POOL_KERNEL}x{MAX_POOL_KERNEL}")
    return (x[0], x[1] // MAX_POOL_STRIDE, x[2] // MAX_POOL_STRIDE)


def _check_fc(layer, x, where: str) -> tuple:
    weight = layer.weight
    if weight.dim() != 2 or weight.shape[1] != math.prod(x) or weight.shape[0] < 1:
        raise PsconvError(f"{where} weight: shape {tuple(weight.shape)}; allowed: (classes, "
                          f"{math.prod(x)}), the values of input {layer.input!r} {x}")
    _check_vectors(layer, ("bias", "weight_scale"), weight.shape[0], where)
    _check_weight_scale(layer, where)
    return (weight.shape[0],)


def _check_weight_scale(layer, where: str) -> None:
    scale = layer.weight_scale
    if not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        bad = [float(v) for v in scale if not (math.isfinite(v) and v > 0)][0]
        raise PsconvError(f"{where} weight_scale: value {bad}; allowed: "
                          f"{_ALLOWED_VALUES['weight_scale']}")


def _check_conv(layer, x, shapes: _Shapes, where: str) -> tuple:
    if layer.kernel_size not in (1, 3):
        raise PsconvError(f"{where}: kernel_size is {layer.kernel_size!r}; allowed: 1 or 3")
    if layer.stride not in (1, 2):
        raise PsconvError(f"{where}: stride is {layer.stride!r}; allowed: 1 or 2")
    if not isinstance(layer.family, PatternFamily):
        raise PsconvError(f"{where}: family is {layer.family!r}; allowed: a pattern family")
    if layer.family.kernel_size != layer.kernel_size:
        raise PsconvError(f"{where}: kernel_size is {layer.kernel_size} but family "
                          f"{layer.family.name!r} is for {layer.family.kernel_size}x"
                          f"{layer.family.kernel_size} kernels; allowed: equal kernel sizes")
    k = layer.kernel_size
    if len(x) != 3:
        raise PsconvError(f"{where}: input {layer.input!r} has shape {x}; allowed: a C x H x W map")
    weight = layer.weight
    expected = f"(out channels, {x[0]}, {k}, {k}): input {layer.input!r} has {x[0]} channels"
    if weight.dim() != 4 or tuple(weight.shape[1:]) != (x[0], k, k) or weight.shape[0] < 1:
        raise PsconvError(f"{where} weight: shape {tuple(weight.shape)}; allowed: {expected}")
    out_channels = weight.shape[0]
    fields = ("bias", "multiplier", "shift", "weight_scale") + (
        ("residual_multiplier",) if layer.residual is not None else ())
    _check_vectors(layer, fields, out_channels, where)
    _check_weight_scale(layer, where)
    layer.family.check_weight(weight, f"{where} weight")
    height, width = ((n + 2 * (k // 2) - k) // layer.stride + 1 for n in x[1:])
    out = (out_channels, height, width)
    if layer.residual is not None:
        residual = shapes.read(where, layer.residual, "residual")
        if residual != out:
            raise PsconvError(f"{where}: residual {layer.residual!r} has shape {residual}; "
                              f"allowed: the layer's output shape {out}")
        _positive_finite(layer.residual_scale, f"{where}: residual_scale")
    return out
