"""Functional model of one engine invocation, reading exactly what the hardware is sent.

Why: it checks the compiler and driver (and the stream orders they depend on) bit for bit
without RTL, and gives the cocotb benches the engine's expected output beats. It interprets the
weight image slot by slot as the address generator does (slot ``s`` of output channel ``o``:
period ``p, e = divmod(s, T)``, tap-sequence entry ``(q, t) = seq[e]``, input channel
``i = p * P + (q - o) % P``, ignored when ``i >= C_in``; with several input-channel passes the
same within each pass's channels) and applies the golden requantization.
"""

from __future__ import annotations

import math

import torch

from psconv.errors import PsconvError
from psconv.families import mask_taps
from psconv.schedule import input_channel_passes, pass_cycles
from psconv.sim.golden.ops import maxpool2d_int, requantize


def _patches(x: torch.Tensor, stride: int, out_h: int, out_w: int) -> torch.Tensor:
    """(C, 9, out_h, out_w): tap t of every output pixel, from the input padded by 1."""
    xpad = torch.nn.functional.pad(x, (1, 1, 1, 1))
    taps = []
    for t in range(9):
        dy, dx = divmod(t, 3)
        taps.append(xpad[:, dy:dy + stride * (out_h - 1) + 1:stride,
                         dx:dx + stride * (out_w - 1) + 1:stride])
    return torch.stack(taps, dim=1)


def run_step(step, x: torch.Tensor, residual: torch.Tensor | None, tn: int,
             patch_channels: int | None = None) -> torch.Tensor:
    """Outputs (C_out of the tile, H_out, W_out; halved by the descriptor's ``pool``) of one
    :class:`EngineStep` on input ``x`` (CHW), for an engine with ``tn`` lanes and
    ``patch_channels`` channels per input-channel pass."""
    d = step.descriptor
    x = x.to(torch.int64)
    if tuple(x.shape) != (d.in_channels, d.in_height, d.in_width):
        raise PsconvError(f"engine model: step {step.layer!r} expects input "
                          f"{(d.in_channels, d.in_height, d.in_width)}, got {tuple(x.shape)}")
    seq = [(q, t) for q, m in enumerate(step.masks) for t in mask_taps(m)]
    period = len(step.masks)
    passes = input_channel_passes(d.in_channels, patch_channels)
    cycles = pass_cycles(step.masks, d.in_channels, tn, patch_channels)
    rows = step.weight_words.shape[0] // d.out_channels
    if rows != sum(cycles):
        raise PsconvError(f"engine model: step {step.layer!r} weight image has {rows} rows per "
                          f"channel, its table needs {sum(cycles)}")
    patches = _patches(x, d.stride, d.out_height, d.out_width)
    q_of = torch.tensor([entry[0] for entry in seq])
    t_of = torch.tensor([entry[1] for entry in seq])
    acc = torch.zeros((d.out_channels, d.out_height, d.out_width), dtype=torch.int64)
    row0 = 0
    for (first, count), pass_rows in zip(passes, cycles):
        slots = math.ceil(count / period) * len(seq)
        s = torch.arange(slots)
        p, e = s // len(seq), s % len(seq)
        q, t = q_of[e], t_of[e]
        for o in range(d.out_channels):
            words = step.weight_words[o * rows + row0:o * rows + row0 + pass_rows]
            weights = words.reshape(-1)[:slots].to(torch.int64)
            i = p * period + (q - o) % period
            valid = i < count
            gathered = patches[first + i[valid], t[valid]]
            acc[o] += torch.einsum("s,shw->hw", weights[valid], gathered)
        row0 += pass_rows
    res = residual.to(torch.int64) if d.residual else None
    out = requantize(acc, step.bias, step.multiplier, step.shift, d.relu, res,
                     step.residual_multiplier if d.residual else None)
    # the output max pool (descriptor ``pool``): the golden op on the requantized map
    return maxpool2d_int(out) if d.pool else out
