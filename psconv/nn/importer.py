"""Import a user's PyTorch network into the quantized-model file every other command reads.

Two forms. ``FILE.py:FACTORY`` names a Python file and a function in it that returns an
``nn.Module`` (an optional state dict is loaded into it); it is traced and folded by
:func:`~psconv.nn.fold.fold_model`. ``MODEL.pt2`` is a ``torch.export`` archive, folded by
:func:`~psconv.nn.export_fold.fold_program`. Both front ends feed the same rules
(:mod:`psconv.nn.fold`'s docstring lists what is supported); from the folded graph on there is
one path (:func:`import_layers`): checked against the engine's buffers
(:func:`~psconv.firmware.compiler.check_fits`) and quantized exactly as the built-in ResNet18 is
(:func:`~psconv.nn.quantize.quantize_graph`). Every refusal is one line naming the graph node,
its op and why.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from psconv.errors import PsconvError
from psconv.qmodel import QuantizedModel

from .fold import FloatLayer, fold_model
from .quantize import quantize_graph


def load_factory(spec: str) -> tuple[nn.Module, str]:
    """``(module, FACTORY)`` of ``FILE.py:FACTORY``: the file is run as a module and
    ``FACTORY()`` must return an ``nn.Module``."""
    path, _, factory = spec.rpartition(":")
    if not path or not factory or not path.endswith(".py"):
        raise PsconvError(f"model {spec!r}: allowed: FILE.py:FACTORY, a Python file and the name "
                          f"of a function in it that returns an nn.Module, or MODEL.pt2, a "
                          f"torch.export archive")
    if not Path(path).is_file():
        raise PsconvError(f"model {spec!r}: {path} is not a file")
    module_spec = importlib.util.spec_from_file_location(f"psconv_import_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module   # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:      # the user's file may raise anything
        raise PsconvError(f"model {spec!r}: running {path} failed: {type(e).__name__}: {e}"
                          ) from None
    function = getattr(module, factory, None)
    if not callable(function):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise PsconvError(f"model {spec!r}: {path} has no function {factory!r}; its functions "
                          f"and classes: {', '.join(found) or 'none'}")
    try:
        model = function()
    except Exception as e:
        raise PsconvError(f"model {spec!r}: {factory}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise PsconvError(f"model {spec!r}: {factory}() returned a {type(model).__name__}; "
                          f"allowed: an nn.Module")
    return model, factory


def load_state(model: nn.Module, path) -> None:
    """Load the state dict in ``path`` into ``model`` (every key, every shape)."""
    from .train import read_state_dict

    try:
        model.load_state_dict(read_state_dict(path))
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise PsconvError(f"checkpoint {path} does not match the model: {' '.join(lines[1:3])}"
                          ) from None


def network_family_name(layers: list[FloatLayer]) -> str:
    """The families of the 3x3 sparse layers, ``+``-joined (``dense`` when there are none)."""
    names = sorted({l.family.name for l in layers
                    if l.op == "conv" and l.kernel_size == 3 and l.family.name != "dense"})
    return "+".join(names) or "dense"


def check_engine_fits(layers: list[FloatLayer], input_shape, config) -> None:
    """Raise, naming the graph node, if a layer does not fit ``config``'s buffers."""
    from psconv.firmware.compiler import check_fits

    for index, layer in enumerate(layers):
        if layer.op != "conv":
            continue
        try:
            check_fits(layers[:index + 1], input_shape, config)
        except PsconvError as e:
            raise PsconvError(f"{layer.node}: {str(e).removeprefix('compile: ')}") from None


def import_layers(layers: list[FloatLayer], calibration: torch.Tensor, config, arch: str
                  ) -> tuple[QuantizedModel, list[FloatLayer]]:
    """Check the folded ``layers`` against ``config`` and quantize them with activation scales
    calibrated on ``calibration`` (NCHW); returns the model and ``layers`` (for a summary)."""
    check_engine_fits(layers, tuple(calibration.shape[1:]), config)
    return quantize_graph(layers, calibration, arch, network_family_name(layers)), layers


def import_model(model: nn.Module, calibration: torch.Tensor, config, arch: str
                 ) -> tuple[QuantizedModel, list[FloatLayer]]:
    """:func:`import_layers` of ``model`` traced and folded on ``calibration``'s image shape."""
    return import_layers(fold_model(model, tuple(calibration.shape[1:])), calibration, config,
                         arch)


def import_program(program, calibration: torch.Tensor, config, arch: str
                   ) -> tuple[QuantizedModel, list[FloatLayer]]:
    """:func:`import_layers` of a ``torch.export`` ``program``, whose image shape
    ``calibration``'s must be."""
    from .export_fold import fold_program, program_input_shape

    exported, given = program_input_shape(program), tuple(calibration.shape[1:])
    if given != exported:
        raise PsconvError(f"the program was exported for {'x'.join(map(str, exported))} images "
                          f"but the calibration images are {'x'.join(map(str, given))}; "
                          f"allowed: images of the exported size (export on an example of the "
                          f"size you calibrate on)")
    return import_layers(fold_program(program), calibration, config, arch)


FAMILY_SOURCES = {
    "module": "{family} (PeriodicSparseConv2d)",
    "recognised": "{family} (recognised from the weights)",
    "dense": "dense (no known pattern family in the weights)",
    "pointwise": "pointwise (1x1)",
}


def summary_lines(quantized: QuantizedModel, layers: list[FloatLayer]) -> list[str]:
    """One line per layer: name, op, output shape, family (where it came from) and graph node."""
    from psconv.schedule import output_size

    shapes = {"input": tuple(quantized.input_shape)}
    rows = [("layer", "op", "output", "family", "from")]
    for qlayer, layer in zip(quantized.layers, layers):
        x = shapes[qlayer.input]
        if qlayer.op == "conv":
            shapes[qlayer.name] = (qlayer.out_channels, *(output_size(n, qlayer.stride)
                                                          for n in x[1:]))
            family = FAMILY_SOURCES[layer.family_source].format(family=qlayer.family.name)
            op = f"conv{qlayer.kernel_size}x{qlayer.kernel_size}/{qlayer.stride}" + (
                " +residual" if qlayer.residual else "") + (" relu" if qlayer.relu else "")
        elif qlayer.op == "maxpool":
            shapes[qlayer.name] = (x[0], x[1] // qlayer.stride, x[2] // qlayer.stride)
            family, op = "-", f"maxpool{qlayer.kernel_size}x{qlayer.kernel_size}/{qlayer.stride}"
        else:
            shapes[qlayer.name] = (x[0],) if qlayer.op == "avgpool" else (qlayer.out_channels,)
            family, op = "-", qlayer.op
        rows.append((qlayer.name, op, "x".join(map(str, shapes[qlayer.name])), family,
                     layer.node))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]
            for row in rows]
