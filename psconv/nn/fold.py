"""A network's graph becomes the BatchNorm-folded float graph the quantizer takes (a list of
:class:`FloatLayer`, the graph form of :class:`~psconv.qmodel.QLayer`).

Two front ends feed one set of rules (:class:`GraphFolder`): an ``nn.Module`` traced with
``torch.fx`` (:func:`fold_model`, behind ``psconv quantize`` and ``psconv import FILE.py:FACTORY``)
and a ``torch.export`` program (:mod:`psconv.nn.export_fold`, behind ``psconv import MODEL.pt2``).
Each front end only says what a graph node is (a convolution with these weights, a BatchNorm with
these statistics, a ReLU, ...); what the engine and the host run, and so what a graph may hold, is
decided here:

* ``nn.Conv2d`` (``PeriodicSparseConv2d`` included): 3x3 with padding 1 or 1x1 with padding 0,
  stride 1 or 2, no groups or dilation; optionally followed by ``BatchNorm2d`` (folded:
  ``w' = w * g / sqrt(var + eps)``, ``b' = beta + (b - mean) * g / sqrt(var + eps)``), a residual
  add of any earlier map of the same shape, then ReLU, in that order (the engine's
  post-processor). A ``PeriodicSparseConv2d`` keeps its family; a plain 3x3 ``Conv2d`` gets the
  family its zero pattern follows (:func:`~psconv.families.recognise_family`) or runs dense;
  1x1 convolutions run as the pointwise family.
* max pooling over 2x2 windows at stride 2 without padding (``nn.MaxPool2d(2)``,
  ``F.max_pool2d(x, 2)``; dilation 1, no ``ceil_mode`` or indices) of a convolution's or
  another pool's map: a ``maxpool`` layer;
* global average pooling (``AdaptiveAvgPool2d(1)``, ``AvgPool2d`` over the whole map,
  ``mean`` over H and W), flatten (``torch.flatten``, ``nn.Flatten``, ``view``/``reshape`` to
  (N, -1)), ``Identity`` and ``Dropout`` (no-ops in eval mode);
* one final ``nn.Linear``, whose output is the network's output.

Anything else is refused with one line naming the graph node, its op and why. A fused step
(BatchNorm, add, ReLU) must be the only reader of the value it modifies, so folding never changes
a value another node reads. Layers are named by their module path (a conv by the conv's), unless
the model maps module paths to names itself (``quantized_layer_names()``, as psconv's ResNet18
does to keep its files' names).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from psconv.errors import PsconvError
from psconv.families import PatternFamily, pointwise_family, recognise_family
from psconv.qmodel import GraphLayer


@dataclass
class FloatLayer(GraphLayer):
    """A BatchNorm-folded float layer, in the same graph form as :class:`QLayer`.

    ``node`` names the graph node it came from (for messages); ``family_source`` says where a
    conv's family came from: ``module`` (a ``PeriodicSparseConv2d``), ``recognised`` (a plain
    Conv2d's zeros), ``dense`` (a plain 3x3 Conv2d that follows no family) or ``pointwise`` (1x1).
    """

    node: str = ""
    family_source: str = ""


@dataclass(frozen=True)
class BatchNormStatistics:
    """What an eval-mode ``BatchNorm2d`` computes: ``(x - mean) / sqrt(var + eps) * weight + bias``
    per channel; ``weight`` and ``bias`` are ``None`` without affine parameters."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    mean: torch.Tensor | None
    var: torch.Tensor | None
    eps: float

    @classmethod
    def of(cls, bn: nn.BatchNorm2d) -> "BatchNormStatistics":
        return cls(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None,
                   bn: BatchNormStatistics | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded (weight, bias) in float64 of ``bn(conv(x))`` for a convolution with ``weight``
    (a ``PeriodicSparseConv2d``'s already masked) and ``bias`` (``None``: zero); ``conv(x)``'s
    own without ``bn``."""
    weight = weight.detach().double()
    bias = (bias.detach().double() if bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64))
    if bn is None:
        return weight, bias
    gamma = (bn.weight.detach().double() if bn.weight is not None
             else torch.ones(weight.shape[0], dtype=torch.float64))
    beta = (bn.bias.detach().double() if bn.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64))
    scale = gamma / torch.sqrt(bn.var.detach().double() + bn.eps)
    return (weight * scale[:, None, None, None],
            beta + (bias - bn.mean.detach().double()) * scale)


def conv_family(family: PatternFamily | None, weight: torch.Tensor) -> tuple[PatternFamily, str]:
    """``(family, family_source)`` of a conv with folded ``weight``: the declared ``family`` of a
    ``PeriodicSparseConv2d``, else pointwise (1x1) or the family its 3x3 zeros follow."""
    if family is not None:
        return family, "module"
    if weight.shape[-1] == 1:
        return pointwise_family(), "pointwise"
    family = recognise_family(weight)
    return family, "dense" if family.period == 1 and family.name == "dense" else "recognised"


UNSUPPORTED = ("unsupported op; allowed: Conv2d, BatchNorm2d, ReLU, residual add, 2x2 max "
               "pooling, global average pooling, flatten, one final Linear")
MAX_POOL_ALLOWED = ("allowed: 2x2 max pooling at stride 2 without padding (nn.MaxPool2d(2), "
                    "F.max_pool2d(x, 2))")


def pair(value) -> tuple:
    """``(v, v)`` of an int or a one-element list (torch's shorthand), else the tuple."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    return value * 2 if len(value) == 1 else value


class GraphFolder:
    """The rules of the module docstring over one ``torch.fx`` graph, whatever made it.

    A front end subclasses it: :meth:`visit` says what each node is by calling one of the op
    methods (:meth:`conv`, :meth:`batchnorm`, :meth:`relu`, :meth:`add`, :meth:`alias`,
    :meth:`flatten`, :meth:`avgpool`, :meth:`maxpool`, :meth:`linear`, :meth:`input`,
    :meth:`output`) with plain values, or raises :meth:`fail`; :meth:`describe` names a node's op
    for messages. Values are tracked per node: ``values[node]`` is the layer (or ``"input"``)
    whose output the node holds.
    """

    def __init__(self, graph: torch.fx.Graph):
        self.graph = graph
        self.values: dict[torch.fx.Node, str] = {}
        self.layers: dict[str, dict] = {}       # name -> fields, in execution order
        self.classifier: torch.fx.Node | None = None

    # --- what a front end provides

    def visit(self, node: torch.fx.Node) -> None:
        raise NotImplementedError

    def describe(self, node: torch.fx.Node) -> str:
        raise NotImplementedError

    # --- shared helpers

    def fail(self, node: torch.fx.Node, why: str) -> PsconvError:
        return PsconvError(f"node {node.name!r} ({self.describe(node)}): {why}")

    def where(self, node: torch.fx.Node) -> str:
        return f"node {node.name!r} ({self.describe(node)})"

    def shape(self, node) -> tuple | None:
        """The tensor shape a node holds (fx ``tensor_meta`` or export ``val``), else ``None``."""
        if not isinstance(node, torch.fx.Node):
            return None
        meta = node.meta.get("tensor_meta")
        if meta is None and isinstance(node.meta.get("val"), torch.Tensor):
            meta = node.meta["val"]
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def new_name(self, node: torch.fx.Node, preferred: str) -> str:
        """``preferred``, or the node's own name where that is taken."""
        return node.name if preferred in self.layers or preferred in ("input", "") else preferred

    def value(self, node: torch.fx.Node, arg, role: str = "input") -> str:
        if not isinstance(arg, torch.fx.Node) or arg not in self.values:
            raise self.fail(node, f"its {role} {arg!r} is not a tensor the engine computes")
        return self.values[arg]

    def conv_layer(self, node: torch.fx.Node, arg, stages, what: str) -> dict:
        """The conv layer ``node`` fuses into: ``arg``'s, still in one of ``stages``, and read by
        ``node`` alone."""
        name = self.value(node, arg)
        layer = self.layers.get(name)
        if layer is None or layer["op"] != "conv" or layer["stage"] not in stages:
            raise self.fail(node, f"{what}")
        if len(arg.users) != 1:
            raise self.fail(node, f"{what}; {arg.name!r} is also read by "
                                  f"{', '.join(repr(u.name) for u in arg.users if u is not node)}")
        return layer

    def fold(self) -> list[FloatLayer]:
        for node in self.graph.nodes:
            if self.classifier is not None and node.op != "output":
                raise self.fail(node, f"comes after the final Linear {self.classifier.name!r}; "
                                      f"allowed: one Linear classifier, last")
            self.visit(node)
        return self.float_layers()

    # --- the ops

    def input(self, node: torch.fx.Node) -> None:
        if "input" in self.values.values():
            raise self.fail(node, "a second network input; allowed: one image tensor")
        self.values[node] = "input"

    def alias(self, node: torch.fx.Node, arg) -> None:
        """``node`` holds ``arg``'s value unchanged (Identity, eval-mode Dropout)."""
        self.values[node] = self.value(node, arg)

    def conv(self, node: torch.fx.Node, arg, name: str, weight: torch.Tensor,
             bias: torch.Tensor | None, stride, padding, dilation, groups: int,
             padding_mode: str = "zeros", family: PatternFamily | None = None) -> None:
        """A 2-D convolution of ``arg`` (``weight``: out x in x kh x kw; ``padding`` a pair or
        ``"same"``/``"valid"``); ``family`` for a ``PeriodicSparseConv2d``."""
        k = tuple(weight.shape[2:])
        if len(k) != 2 or k[0] != k[1] or k[0] not in (1, 3):
            raise self.fail(node, f"kernel size {'x'.join(map(str, k))}; allowed: 3x3 or 1x1")
        if isinstance(padding, str):
            padding = {"same": k[0] // 2, "valid": 0}.get(padding, padding)
        padding = pair(padding)
        if padding != (k[0] // 2,) * 2 or padding_mode != "zeros":
            raise self.fail(node, f"padding {padding} ({padding_mode}) on a {k[0]}x{k[0]} "
                                  f"kernel; allowed: zero padding {k[0] // 2} "
                                  f"(the map keeps its size at stride 1)")
        stride = pair(stride)
        if stride[0] != stride[1] or stride[0] not in (1, 2):
            raise self.fail(node, f"stride {stride[0]}x{stride[1]}; allowed: 1 or 2")
        if groups != 1 or pair(dilation) != (1, 1):
            raise self.fail(node, f"groups {groups}, dilation {pair(dilation)}; "
                                  f"allowed: groups 1, dilation 1")
        source = self.value(node, arg)
        if source != "input" and self.layers[source]["op"] not in ("conv", "maxpool"):
            raise self.fail(node, f"reads {source!r}, a {self.layers[source]['op']} output; "
                                  f"allowed: an image, a convolution's or a max pool's map")
        name = self.new_name(node, name)
        self.layers[name] = dict(name=name, op="conv", input=source, weight=weight, bias=bias,
                                 stride=stride[0], kernel_size=k[0], family=family, bn=None,
                                 relu=False, residual=None, stage="conv", node=self.where(node))
        self.values[node] = name

    def batchnorm(self, node: torch.fx.Node, arg, statistics: BatchNormStatistics) -> None:
        layer = self.conv_layer(node, arg, ("conv",),
                                "BatchNorm2d must directly follow a convolution")
        if statistics.mean is None or statistics.var is None:
            raise self.fail(node, "BatchNorm2d without running statistics; allowed: an eval-mode "
                                  "BatchNorm2d that tracks them (track_running_stats=True)")
        layer["bn"], layer["stage"] = statistics, "bn"
        self.values[node] = layer["name"]

    def relu(self, node: torch.fx.Node, arg) -> None:
        layer = self.conv_layer(node, arg, ("conv", "bn", "add"),
                                "ReLU must follow a convolution (and its BatchNorm and residual "
                                "add), once")
        layer["relu"], layer["stage"] = True, "relu"
        self.values[node] = layer["name"]

    def add(self, node: torch.fx.Node, operands, scaled: bool = False) -> None:
        """``operands[0] + operands[1]`` (``scaled``: torch's ``alpha`` or more arguments)."""
        if len(operands) != 2 or scaled:
            raise self.fail(node, "an add with other arguments than two tensors; allowed: x + y")
        left, right = operands
        for fused, residual in ((left, right), (right, left)):
            try:
                layer = self.conv_layer(node, fused, ("conv", "bn"), "")
            except PsconvError:
                continue
            source = self.value(node, residual, "residual")
            if source != "input" and self.layers[source]["op"] != "conv":
                continue
            if self.shape(fused) != self.shape(residual):
                raise self.fail(node, f"adds shapes {self.shape(fused)} and "
                                      f"{self.shape(residual)}; allowed: equal shapes")
            layer["residual"], layer["stage"] = source, "add"
            # the conv that takes the residual runs after the residual's source
            self.layers[layer["name"]] = self.layers.pop(layer["name"])
            self.values[node] = layer["name"]
            return
        raise self.fail(node, "a residual add needs one operand to be a convolution's output "
                              "(after its BatchNorm, before ReLU) that nothing else reads and the "
                              "other an earlier map")

    def flatten(self, node: torch.fx.Node, arg) -> None:
        before, after = self.shape(arg), self.shape(node)
        if before is None or after is None or len(after) != 2 or after[0] != before[0]:
            raise self.fail(node, f"reshapes {before} to {after}; allowed: flatten to "
                                  f"(N, features), e.g. torch.flatten(x, 1)")
        self.values[node] = self.value(node, arg)

    def avgpool(self, node: torch.fx.Node, arg, name: str, kernel=None) -> None:
        """Average pooling of ``arg`` (``kernel``: an ``AvgPool2d``'s, which must cover the map)."""
        before, after = self.shape(arg), self.shape(node)
        whole_map = before is not None and len(before) == 4 and after is not None and (
            after in ((before[0], before[1]), (before[0], before[1], 1, 1)))
        if kernel is not None:
            whole_map = whole_map and pair(kernel) == tuple(before[2:])
        if not whole_map:
            raise self.fail(node, f"average pooling {before} to {after}; allowed: global "
                                  f"average pooling (every map to 1x1)")
        source = self.value(node, arg)
        name = self.new_name(node, name)
        self.layers[name] = dict(name=name, op="avgpool", input=source, stage="done",
                                 node=self.where(node))
        self.values[node] = name

    def maxpool(self, node: torch.fx.Node, arg, name: str, kernel_size, stride, padding,
                dilation, ceil_mode, return_indices) -> None:
        """Max pooling of ``arg`` with torch's arguments (``stride`` already defaulted)."""
        found = (f"kernel {pair(kernel_size)}, stride {pair(stride)}, padding "
                 f"{pair(padding)}, dilation {pair(dilation)}"
                 + (", ceil_mode" if ceil_mode else "") + (", return_indices" if return_indices
                                                            else ""))
        if (pair(kernel_size) != (2, 2) or pair(stride) != (2, 2) or pair(padding) != (0, 0)
                or pair(dilation) != (1, 1) or ceil_mode or return_indices):
            raise self.fail(node, f"max pooling with {found}; {MAX_POOL_ALLOWED}")
        source = self.value(node, arg)
        before = self.shape(arg)
        if source == "input" or self.layers[source]["op"] not in ("conv", "maxpool"):
            raise self.fail(node, f"max pooling reads {source!r}; allowed: a convolution's or "
                                  f"another max pool's map")
        if before is None or len(before) != 4 or min(before[2:]) < 2:
            raise self.fail(node, f"max pooling of a {before} tensor; allowed: an N x C x H x W "
                                  f"map of at least 2x2")
        name = self.new_name(node, name)
        self.layers[name] = dict(name=name, op="maxpool", input=source, stage="done",
                                 node=self.where(node))
        self.values[node] = name

    def linear(self, node: torch.fx.Node, arg, name: str, weight: torch.Tensor,
               bias: torch.Tensor | None) -> None:
        """``arg @ weight.T + bias`` (``weight``: out x in), the network's last op."""
        shape = self.shape(arg)
        if shape is None or len(shape) != 2:
            raise self.fail(node, f"reads a {shape} tensor; allowed: (N, features), flattened")
        name = self.new_name(node, name)
        weight = weight.detach().double()
        bias = (bias.detach().double() if bias is not None
                else torch.zeros(weight.shape[0], dtype=torch.float64))
        self.layers[name] = dict(name=name, op="fc", input=self.value(node, arg),
                                 stage="done", weight=weight, bias=bias, node=self.where(node))
        self.values[node] = name
        self.classifier = node

    def output(self, node: torch.fx.Node, returned) -> None:
        if self.classifier is None:
            raise self.fail(node, "the network ends without a Linear classifier; allowed: one "
                                  "final nn.Linear whose output is the network's output")
        if returned is not self.classifier:
            raise self.fail(node, f"returns {returned!r}; allowed: the final Linear's "
                                  f"output alone")

    def float_layers(self) -> list[FloatLayer]:
        layers = []
        for entry in self.layers.values():
            if entry["op"] == "conv":
                weight, bias = fold_batchnorm(entry["weight"], entry["bias"], entry["bn"])
                family, family_source = conv_family(entry["family"], weight)
                layers.append(FloatLayer(
                    name=entry["name"], op="conv", input=entry["input"], relu=entry["relu"],
                    residual=entry["residual"], stride=entry["stride"],
                    kernel_size=entry["kernel_size"], family=family, weight=weight, bias=bias,
                    node=entry["node"], family_source=family_source))
            elif entry["op"] == "maxpool":
                layers.append(FloatLayer(name=entry["name"], op="maxpool", input=entry["input"],
                                         kernel_size=2, stride=2, node=entry["node"]))
            else:
                layers.append(FloatLayer(name=entry["name"], op=entry["op"], input=entry["input"],
                                         weight=entry.get("weight"), bias=entry.get("bias"),
                                         node=entry["node"]))
        return layers


class _Tracer(torch.fx.Tracer):
    """Keeps every convolution (``PeriodicSparseConv2d`` too) one node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.Conv2d) or super().is_leaf_module(module, qualified_name)


RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
FLATTEN_FUNCTIONS = (torch.flatten, torch.reshape)
FLATTEN_METHODS = ("flatten", "view", "reshape")
MEAN_FUNCTIONS = (torch.mean, F.adaptive_avg_pool2d, F.avg_pool2d)
MAX_POOL_FUNCTIONS = (F.max_pool2d, F.adaptive_max_pool2d, torch.max_pool2d)


def _max_pool_arguments(node: torch.fx.Node) -> tuple:
    """``(kernel_size, stride, padding, dilation, ceil_mode, return_indices)`` of a traced
    ``max_pool2d`` call, with torch's defaults (``stride`` defaults to ``kernel_size``)."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
             "return_indices")
    values = dict(zip(names, node.args))
    values.update(node.kwargs)
    kernel = values.get("kernel_size")
    stride = values.get("stride")
    return (kernel, kernel if stride in (None, [], ()) else stride, values.get("padding", 0),
            values.get("dilation", 1), values.get("ceil_mode", False),
            values.get("return_indices", False))


def _function_name(function) -> str:
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__name__", repr(function))
    return f"{module}.{name}" if module else name


class _ModuleFolder(GraphFolder):
    """The ``torch.fx`` front end: modules and the functions and methods a forward calls."""

    def __init__(self, model: nn.Module, graph_module: torch.fx.GraphModule):
        super().__init__(graph_module.graph)
        self.modules = dict(model.named_modules())
        self.names = model.quantized_layer_names() if hasattr(model, "quantized_layer_names") else {}

    def describe(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            return f"{type(self.modules[node.target]).__name__} {node.target}"
        if node.op == "call_function":
            return _function_name(node.target)
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        return f"{node.op} {node.target}"

    def layer_name(self, node: torch.fx.Node, default: str) -> str:
        return self.names.get(node.target, node.target) if node.op == "call_module" else default

    def visit(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            self.input(node)
        elif node.op == "output":
            self.output(node, node.args[0])
        elif node.op == "get_attr":
            raise self.fail(node, "reads a parameter or buffer outside a supported module; "
                                  "allowed: weights inside nn.Conv2d, BatchNorm2d, Linear")
        elif node.op == "call_module":
            self.call_module(node, self.modules[node.target])
        elif self.shape(node) is not None:  # else no tensor: shape arithmetic such as x.size(0)
            self.call_function(node)

    def call_module(self, node, module) -> None:
        name = self.layer_name(node, node.target)
        if isinstance(module, nn.Conv2d):
            mask = getattr(module, "mask", None)
            weight = module.weight.detach().double()
            self.conv(node, node.args[0], name,
                      weight * mask.double() if mask is not None else weight, module.bias,
                      module.stride, module.padding, module.dilation, module.groups,
                      module.padding_mode, getattr(module, "family", None))
        elif isinstance(module, nn.BatchNorm2d):
            self.batchnorm(node, node.args[0], BatchNormStatistics.of(module))
        elif isinstance(module, nn.ReLU):
            self.relu(node, node.args[0])
        elif isinstance(module, (nn.Identity, nn.Dropout)):
            self.alias(node, node.args[0])
        elif isinstance(module, nn.Flatten):
            self.flatten(node, node.args[0])
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            self.avgpool(node, node.args[0], name)
        elif isinstance(module, nn.AvgPool2d):
            self.avgpool(node, node.args[0], name, module.kernel_size)
        elif isinstance(module, nn.MaxPool2d):
            self.maxpool(node, node.args[0], name, module.kernel_size, module.stride,
                         module.padding, module.dilation, module.ceil_mode, module.return_indices)
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            raise self.fail(node, f"adaptive max pooling; {MAX_POOL_ALLOWED}")
        elif isinstance(module, nn.Linear):
            self.linear(node, node.args[0], name, module.weight, module.bias)
        else:
            raise self.fail(node, UNSUPPORTED)

    def call_function(self, node) -> None:
        target, method = node.target, node.op == "call_method"
        if method and target in ("relu", "relu_") or target in RELU_FUNCTIONS:
            self.relu(node, node.args[0])
        elif method and target in ("add", "add_") or target in ADD_FUNCTIONS:
            self.add(node, node.args, scaled=bool(node.kwargs))
        elif method and target in FLATTEN_METHODS or target in FLATTEN_FUNCTIONS:
            self.flatten(node, node.args[0])
        elif method and target == "mean" or target in MEAN_FUNCTIONS:
            self.avgpool(node, node.args[0], "avgpool",
                         node.args[1] if target is F.avg_pool2d else None)
        elif target in MAX_POOL_FUNCTIONS and target is not F.adaptive_max_pool2d:
            self.maxpool(node, node.args[0], "maxpool", *_max_pool_arguments(node))
        elif target in MAX_POOL_FUNCTIONS:
            raise self.fail(node, f"adaptive max pooling; {MAX_POOL_ALLOWED}")
        else:
            raise self.fail(node, UNSUPPORTED)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` as a ``torch.fx`` graph with every convolution one node; a model that cannot be
    traced symbolically (data-dependent control flow) is refused in one line."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:      # fx raises many types for code it cannot trace
        raise PsconvError(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return torch.fx.GraphModule(model, graph)


def fold_model(model: nn.Module, input_shape) -> list[FloatLayer]:
    """The folded float graph of the eval-mode ``model`` on (C, H, W) ``input_shape`` images."""
    model = model.eval()
    dtype = next(model.parameters(), torch.zeros(())).dtype
    graph_module = trace(model)
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(torch.zeros(1, *input_shape, dtype=dtype))
    except Exception as e:      # the user's model fails on such an input
        raise PsconvError(f"{type(model).__name__} fails on a {'x'.join(map(str, input_shape))} "
                          f"input: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from None
    return _ModuleFolder(model, graph_module).fold()
