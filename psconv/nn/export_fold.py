"""A ``torch.export`` program (a ``.pt2`` file) becomes the BatchNorm-folded float graph, by the
same rules as a traced ``nn.Module`` (:class:`~psconv.nn.fold.GraphFolder`, whose module docstring
says what is supported).

The file is what ``torch.export.save(torch.export.export(model, (example,)), "MODEL.pt2")``
writes, with or without ``run_decompositions()``. Its graph holds ATen ops; each maps onto the
module op it comes from:

* ``conv2d``; ``convolution`` (not transposed): ``Conv2d``;
* ``batch_norm``; ``_native_batch_norm_legit_no_training`` (and the other
  ``*batch_norm*`` forms, when not training): ``BatchNorm2d``;
* ``relu``, ``relu_``: ReLU;
* ``add.Tensor``, ``add_.Tensor`` (``alpha`` 1): residual add;
* ``max_pool2d``; ``max_pool2d_with_indices`` (indices unread): max pooling;
* ``adaptive_avg_pool2d``, ``avg_pool2d``; ``mean.dim``: global average pooling;
* ``flatten``; ``view``, ``reshape``, ``_unsafe_view``: flatten;
* ``dropout`` (not training); ``clone``, ``alias``, ``detach``: no-ops;
* ``linear``; ``addmm``/``mm`` of a transposed weight: ``Linear``.

``getitem`` takes output 0 of a BatchNorm or max pool. Parameters, buffers and constants are
inputs of the graph; every node computed from them alone (a ``PeriodicSparseConv2d``'s
``weight * mask``, a Linear weight's transpose) is evaluated here, so an op's weight is whatever
tensor it reads. A program holds no modules, so every 3x3 convolution's family is recognised from
its weights (:func:`~psconv.families.recognise_family`), a ``PeriodicSparseConv2d``'s included:
the shortest table that describes the layer, which is the declared one when the layer is wide
enough to show its whole period (PS4_P8, the four corners twice over, comes back as PS4_P4; the
``FILE.py:FACTORY`` form keeps a declared family). A layer is named by the module its op ran in
(the node's ``nn_module_stack``), as the fx front end names it by its module path.

The plain export is the friendlier form to read messages against: one ATen node per module call
(``conv2d``, ``batch_norm``, ``linear``, ``max_pool2d``); ``run_decompositions()`` turns a Linear
into ``permute`` + ``addmm`` and a max pool into ``max_pool2d_with_indices`` + ``getitem``. Both
are read as they are, so a message names the node the user's own graph has.
"""

from __future__ import annotations

import logging
import operator
from pathlib import Path

import torch
import torch.fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from psconv.errors import PsconvError

from .fold import MAX_POOL_ALLOWED, UNSUPPORTED, BatchNormStatistics, FloatLayer, GraphFolder

aten = torch.ops.aten

CONV_OPS = (aten.conv2d, aten.convolution)
BATCH_NORM_OPS = (aten.batch_norm, aten._native_batch_norm_legit_no_training,
                  aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
                  aten.native_batch_norm)   # all but _no_training take a training flag
RELU_OPS = (aten.relu, aten.relu_)
ADD_OPS = (aten.add, aten.add_)
MAX_POOL_OPS = (aten.max_pool2d, aten.max_pool2d_with_indices)
AVERAGE_OPS = (aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.mean, aten.avg_pool2d)
FLATTEN_OPS = (aten.flatten, aten.view, aten.reshape, aten._unsafe_view)
ALIAS_OPS = (aten.clone, aten.alias, aten.detach)
MATMUL_OPS = (aten.addmm, aten.mm)
LIFTED_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def load_program(path) -> ExportedProgram:
    """The program ``torch.export.save`` wrote to ``path``; one line if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise PsconvError(f"model {str(path)!r}: not a file; allowed: FILE.py:FACTORY or a "
                          f"torch.export archive (MODEL.pt2)")
    # torch logs, as warnings, the traceback of each format it tries and unused shape symbols
    loggers = [logging.getLogger(name)
               for name in ("torch.export", "torch._export.serde.serialize")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        return torch.export.load(path)
    except Exception as e:      # a zip of something else, a pickle, text: torch raises many types
        first = str(e).splitlines()[0] if str(e) else ""
        raise PsconvError(f"model {str(path)!r}: not a torch.export archive (written by "
                          f"torch.export.save): {type(e).__name__}: {first}") from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _arguments(node: torch.fx.Node) -> dict:
    """The ATen call's arguments by schema name, defaults filled in."""
    values = {}
    for index, argument in enumerate(node.target._schema.arguments):
        if index < len(node.args):
            values[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def _module_of(node: torch.fx.Node) -> tuple[str, str] | None:
    """``(path, class name)`` of the innermost module whose forward made ``node`` (not the
    exported module itself), else ``None``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, kind = list(stack.values())[-1]
    kind = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    return (path, kind.rsplit(".", 1)[-1]) if path else None


class _ProgramFolder(GraphFolder):
    """The ``torch.export`` front end: ATen ops over lifted parameters."""

    def __init__(self, program: ExportedProgram):
        super().__init__(program.graph)
        self.program = program
        self.specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs
                      if hasattr(spec.arg, "name")}
        self.constants: dict[torch.fx.Node, object] = {}

    def describe(self, node: torch.fx.Node) -> str:
        if node.op != "call_function":
            return node.op
        target = node.target
        name = str(target) if isinstance(target, torch._ops.OpOverload) else (
            f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}")
        module = _module_of(node)
        return f"{name} in {module[1]} {module[0]}" if module else name

    def layer_name(self, node: torch.fx.Node, kind: str, default: str) -> str:
        """The path of the module the op ran in when that module is a ``kind`` (``Conv``,
        ``Pool``, ``Linear``), else ``default``."""
        module = _module_of(node)
        return module[0] if module and kind in module[1] else default

    def tensor(self, node: torch.fx.Node, arg, role: str) -> torch.Tensor | None:
        """The parameter ``node`` reads as ``role`` (``None`` stays ``None``)."""
        if arg is None:
            return None
        if not isinstance(arg, torch.fx.Node) or not isinstance(self.constants.get(arg),
                                                                  torch.Tensor):
            raise self.fail(node, f"its {role} {arg!r} is not a parameter or buffer (it is "
                                  f"computed from the image); allowed: a fixed tensor")
        return self.constants[arg]

    def visit(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            self.placeholder(node)
        elif node.op == "output":
            returned = node.args[0]
            if len(returned) != 1:
                raise self.fail(node, f"returns {len(returned)} values; allowed: the final "
                                      f"Linear's output alone")
            self.output(node, returned[0])
        elif node.op != "call_function":
            raise self.fail(node, UNSUPPORTED)
        elif all(n in self.constants for n in node.all_input_nodes):
            self.evaluate(node)
        elif not isinstance(node.meta.get("val"), (torch.Tensor, tuple, list)):
            return      # no tensor: shape arithmetic (sym_size) or a runtime assertion
        elif node.target is operator.getitem:
            self.getitem(node)
        else:
            self.call(node, getattr(node.target, "overloadpacket", None))

    def placeholder(self, node: torch.fx.Node) -> None:
        spec = self.specs.get(node.name)
        if spec is None or spec.kind == InputKind.USER_INPUT:
            self.input(node)
        elif spec.kind in LIFTED_KINDS:
            value = self.program.state_dict.get(spec.target,
                                                self.program.constants.get(spec.target))
            if value is None:
                raise self.fail(node, f"the program holds no tensor {spec.target!r}")
            self.constants[node] = value
        else:
            raise self.fail(node, f"a {spec.kind.name.lower()} input; allowed: one image "
                                  f"tensor, parameters, buffers and constants")

    def evaluate(self, node: torch.fx.Node) -> None:
        """A node of parameters alone (``weight * mask``, ``weight.t()``) is computed now."""
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), self.constants.__getitem__)
        try:
            with torch.no_grad():
                self.constants[node] = node.target(*args, **kwargs)
        except Exception as e:      # whatever the op raises on these tensors
            raise self.fail(node, f"computing it from the parameters failed: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                            ) from None

    def getitem(self, node: torch.fx.Node) -> None:
        source, index = node.args
        if index == 0:
            self.alias(node, source)
        elif node.users:
            raise self.fail(node, f"reads output {index} of {source.name!r} (max pooling "
                                  f"indices, BatchNorm statistics); allowed: output 0")

    def call(self, node: torch.fx.Node, op) -> None:
        values = _arguments(node) if op is not None else {}
        first = next(iter(values.values()), None)
        if op in CONV_OPS:
            self.convolution(node, values)
        elif op in BATCH_NORM_OPS and values.get("training", False):
            raise self.fail(node, "BatchNorm2d in training mode; allowed: eval mode (export "
                                  "after model.eval())")
        elif op in BATCH_NORM_OPS:
            self.batchnorm(node, first, BatchNormStatistics(
                *(self.tensor(node, values[n], n)
                  for n in ("weight", "bias", "running_mean", "running_var")),
                values["eps"]))
        elif op in RELU_OPS:
            self.relu(node, first)
        elif op in ADD_OPS and node.target in (aten.add.Tensor, aten.add_.Tensor):
            self.add(node, (values["self"], values["other"]), scaled=values["alpha"] != 1)
        elif op in MAX_POOL_OPS:
            indices = any(u.target is operator.getitem and u.args[1] == 1 and u.users
                          for u in node.users)
            self.maxpool(node, first, self.layer_name(node, "Pool", "maxpool"),
                         values["kernel_size"], values["stride"] or values["kernel_size"],
                         values["padding"], values["dilation"], values["ceil_mode"], indices)
        elif op in (aten.adaptive_max_pool2d,):
            raise self.fail(node, f"adaptive max pooling; {MAX_POOL_ALLOWED}")
        elif op in AVERAGE_OPS:
            self.avgpool(node, first, self.layer_name(node, "Pool", "avgpool"),
                         values["kernel_size"] if op is aten.avg_pool2d else None)
        elif op in FLATTEN_OPS:
            self.flatten(node, first)
        elif op is aten.dropout and values["train"]:
            raise self.fail(node, "Dropout in training mode; allowed: eval mode (export after "
                                  "model.eval())")
        elif op is aten.dropout or op in ALIAS_OPS:
            self.alias(node, first)
        elif op is aten.linear:
            self.linear(node, first, self.layer_name(node, "Linear", node.name),
                        self.tensor(node, values["weight"], "weight"),
                        self.tensor(node, values["bias"], "bias"))
        elif op in MATMUL_OPS:
            self.matmul(node, op, values)
        else:
            raise self.fail(node, UNSUPPORTED)

    def convolution(self, node: torch.fx.Node, values: dict) -> None:
        weight = self.tensor(node, values["weight"], "weight")
        if weight.dim() != 4 or values.get("transposed", False):
            kind = "transposed" if values.get("transposed", False) else f"{weight.dim() - 2}-D"
            raise self.fail(node, f"a {kind} convolution; allowed: Conv2d")
        self.conv(node, values["input"], self.layer_name(node, "Conv", node.name), weight,
                  self.tensor(node, values["bias"], "bias"), values["stride"],
                  values["padding"], values["dilation"], values["groups"])

    def matmul(self, node: torch.fx.Node, op, values: dict) -> None:
        """``addmm(bias, x, w.T)`` or ``mm(x, w.T)``: a decomposed Linear."""
        if values.get("beta", 1) != 1 or values.get("alpha", 1) != 1:
            raise self.fail(node, f"a scaled matrix product (beta {values['beta']}, alpha "
                                  f"{values['alpha']}); allowed: a Linear layer")
        transposed = self.tensor(node, values["mat2"], "weight")
        bias = self.tensor(node, values["self"], "bias") if op is aten.addmm else None
        if bias is not None and tuple(bias.shape) != (transposed.shape[-1],):
            raise self.fail(node, f"adds a {tuple(bias.shape)} bias; allowed: a Linear layer's "
                                  f"({transposed.shape[-1]},)")
        self.linear(node, values["mat1"] if op is aten.addmm else values["self"],
                    self.layer_name(node, "Linear", node.name), transposed.t(), bias)


def program_input_shape(program: ExportedProgram) -> tuple[int, int, int]:
    """(C, H, W) of the images ``program`` was exported for; one line unless it takes one NCHW
    tensor of fixed C, H and W."""
    inputs = [spec for spec in program.graph_signature.input_specs
              if spec.kind == InputKind.USER_INPUT]
    value = None
    if len(inputs) == 1:
        node = next(n for n in program.graph.nodes if n.name == inputs[0].arg.name)
        value = node.meta.get("val")
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape is None or len(shape) != 4 or not all(isinstance(n, int) for n in shape[1:]):
        found = (f"{len(inputs)} inputs" if len(inputs) != 1
                 else f"an input of shape {shape}" if shape is not None else "a non-tensor input")
        raise PsconvError(f"the program takes {found}; allowed: one N x C x H x W image tensor "
                          f"with C, H and W fixed at export")
    return shape[1:]


def fold_program(program: ExportedProgram) -> list[FloatLayer]:
    """The folded float graph of an exported ``program`` (see the module docstring)."""
    return _ProgramFolder(program).fold()
