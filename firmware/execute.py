"""Run a compiled :class:`~psconv.firmware.compiler.LayerProgram` step by step.

The engine steps go to a caller-supplied backend (the RTL over a link, or the functional
engine model); host steps and max-pool steps (a resident board's memory pass) run the golden
model's integer ops. Tiles of one layer are stitched
back along the channel axis. Every layer's output is kept so callers can compare each layer
with the golden model, not only the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from psconv.errors import PsconvError
from psconv.firmware.compiler import EngineStep, HostStep, LayerProgram, PoolStep
from psconv.sim.golden.network import run_layer
from psconv.sim.golden.ops import maxpool2d_int

StepBackend = Callable[[EngineStep, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``backend(step, input_map, residual_or_None) -> output (tile channels, H_out, W_out)``
(halved by a fused max pool: ``step.descriptor.pool``)."""


@dataclass
class ExecutionResult:
    outputs: dict[str, torch.Tensor]
    logits: torch.Tensor
    step_records: list = field(default_factory=list)


def execute_program(program: LayerProgram, image: torch.Tensor, backend: StepBackend,
                    on_step: Callable | None = None) -> ExecutionResult:
    """Run ``program`` on one int8 CHW image; ``on_step(step, output)`` is called after each step."""
    tensors = {"input": image.to(torch.int64)}
    partial: dict[str, list[torch.Tensor]] = {}
    for step in program.steps:
        if isinstance(step, HostStep):
            tensors[step.layer.name] = run_layer(step.layer, tensors)
            if on_step:
                on_step(step, tensors[step.layer.name])
            continue
        if step.input not in tensors:
            raise PsconvError(f"execute: step {step.layer!r} reads {step.input!r} before it exists")
        if isinstance(step, PoolStep):      # the resident runner's pass, the golden op's values
            tensors[step.layer] = maxpool2d_int(tensors[step.input])
            if on_step:
                on_step(step, tensors[step.layer])
            continue
        residual = None
        if step.residual is not None:
            residual = tensors[step.residual][step.channel_slice]
        out = backend(step, tensors[step.input], residual)
        # a step with a fused max pool returns the pool layer's map (its conv's is never seen)
        partial.setdefault(step.output_layer, []).append(out.to(torch.int64))
        if on_step:
            on_step(step, out)
        if step.tile == step.tiles - 1:
            tensors[step.output_layer] = torch.cat(partial.pop(step.output_layer), dim=0)
    last = program.steps[-1]
    last_name = (last.layer.name if isinstance(last, HostStep)
                 else last.output_layer if isinstance(last, EngineStep) else last.layer)
    outputs = {name: t for name, t in tensors.items() if name != "input"}
    return ExecutionResult(outputs=outputs, logits=tensors[last_name])
