"""The engine's schedule arithmetic: passes, cycles per output channel, buffer capacities.

Plain functions of the :class:`~psconv.config.EngineConfig` (or its ``tn`` and
``patch_channels``) and a layer's mask table. The compiler, the descriptor check, the cycle and
engine models and the gateware's budgets all compute these numbers, so they are written once,
here (see :mod:`psconv.firmware.packing` for the weight order they count).
"""

from __future__ import annotations

import math

from psconv.errors import PsconvError


def output_size(size: int, stride: int) -> int:
    """Output height/width of a 3x3 padding-1 or 1x1 padding-0 layer: ``(size - 1) // s + 1``."""
    return (size - 1) // stride + 1


def fmap_rows_capacity(config) -> int:
    """Input rows (one channel, one row each) the feature-map buffer holds: C_in * H <= this."""
    return config.fmap_depth // config.max_width


def entries_per_output_channel(masks, in_channels: int) -> int:
    """Stream slots per output channel in the engine: whole periods, the last one padded."""
    return math.ceil(in_channels / len(masks)) * sum(bin(m).count("1") for m in masks)


def input_channel_passes(in_channels: int, patch_channels: int | None = None) -> list[tuple[int, int]]:
    """``(first channel, channel count)`` of each input-channel pass of a layer on an engine whose
    patch buffer holds ``patch_channels`` channels (``None``: one pass).

    Why passes: the patch memory is copied for every lane, so its depth decides whether an engine
    fits an FPGA; a layer with more input channels is accumulated over several passes per pixel
    group, the partial sums staying in the PE array (:mod:`psconv.hw.pe_array`).
    """
    step = patch_channels or in_channels
    return [(first, min(step, in_channels - first)) for first in range(0, in_channels, step)]


def pass_periods(patch_channels: int, max_period: int) -> tuple[int, ...]:
    """The periods 1..``max_period`` a layer split into input-channel passes may have: those
    dividing ``patch_channels`` (so each pass starts on a period boundary and kernel (o, i) keeps
    mask ``(o + i) % P``)."""
    return tuple(p for p in range(1, max_period + 1) if patch_channels % p == 0)


def check_passes(period: int, in_channels: int, patch_channels: int | None,
                 what: str = "layer") -> None:
    """A layer split into passes needs a period of :func:`pass_periods`. ``what`` names the
    layer in the error."""
    passes = len(input_channel_passes(in_channels, patch_channels))
    if passes > 1 and period not in pass_periods(patch_channels, period):
        raise PsconvError(
            f"{what}: {in_channels} input channels need {passes} passes of {patch_channels} "
            f"channels, but its period P = {period} does not divide patch_channels; allowed: "
            f"a period dividing {patch_channels}, or at most {patch_channels} input channels")


def pass_cycles(masks, in_channels: int, tn: int, patch_channels: int | None = None) -> list[int]:
    """Engine cycles (weight words) of each pass of one output channel: whole periods of the
    pass's channels, padded to a whole number of ``tn``-slot cycles."""
    return [math.ceil(entries_per_output_channel(masks, count) / tn)
            for _, count in input_channel_passes(in_channels, patch_channels)]


def words_per_output_channel(masks, in_channels: int, tn: int, patch_channels: int | None = None) -> int:
    """Weight words one output channel occupies in the engine's weight buffer."""
    return sum(pass_cycles(masks, in_channels, tn, patch_channels))


def cycles_per_output_channel(config, masks, in_channels: int) -> int:
    """Engine cycles (weight words) per output channel over all input-channel passes; one pass:
    ceil(ceil(C_in / P) * T / tn)."""
    return words_per_output_channel(masks, in_channels, config.tn, config.patch_channels)
