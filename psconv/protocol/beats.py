"""How maps, weights and outputs travel as the engine's stream beats (and as payload bytes).

A beat is an integer whose byte k is element k (little-endian, int8 two's complement):
``fmap_in`` beats carry ``tn`` bytes of the flat CHW input map, ``weight_in`` beats one
``tn``-byte row of the weight buffer image, ``out`` and ``residual_in`` beats ``tm`` pixels of
one output row and channel. The gateware, its tests, the cocotb bench and the host driver share
these encoders so nobody re-derives the order.
"""

from __future__ import annotations

import math

from psconv.errors import PsconvError


def fmap_beat_bytes(config) -> int:
    """Bytes per ``fmap_in`` beat: ``tn`` (the input map loads at ``tn`` bytes per cycle)."""
    return config.tn


def pack_bytes(values) -> int:
    """Little-endian packing of int8 values (element 0 in bits 7:0) into one beat integer."""
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & 0xFF) << (8 * k)
    return word


def unpack_bytes(word: int, count: int) -> list[int]:
    """Inverse of :func:`pack_bytes`: ``count`` signed int8 values."""
    out = []
    for k in range(count):
        b = (word >> (8 * k)) & 0xFF
        out.append(b - 256 if b >= 128 else b)
    return out


def fmap_beats(config, fmap) -> list[int]:
    """``fmap_in`` beats of a CHW int8 map: the flat CHW byte stream, ``tn`` bytes per beat,
    only the last beat zero-padded."""
    flat = [int(v) for v in fmap.reshape(-1).tolist()]
    b = fmap_beat_bytes(config)
    flat += [0] * (-len(flat) % b)
    return [pack_bytes(flat[k:k + b]) for k in range(0, len(flat), b)]


def weight_beats(words) -> list[int]:
    """``weight_in`` beats from :func:`psconv.firmware.packing.engine_weight_words` rows."""
    return [pack_bytes(row) for row in words.tolist()]


def pixel_beats(config, tensor) -> list[int]:
    """Beats of a (C, H_out, W_out) int8 tensor in ``out``/``residual_in`` order: for each output
    row y, each column block xb, each channel o, the ``tm`` pixels x = xb*tm + r (0 beyond W)."""
    channels, height, width = tensor.shape
    tm = config.tm
    beats = []
    for y in range(height):
        for x0 in range(0, width, tm):
            for o in range(channels):
                row = [int(tensor[o, y, x]) if x < width else 0 for x in range(x0, x0 + tm)]
                beats.append(pack_bytes(row))
    return beats


def beats_to_pixels(config, beats, channels: int, height: int, width: int):
    """Inverse of :func:`pixel_beats`: a (C, H_out, W_out) int64 tensor; also checks that the
    padding pixels beyond W are 0."""
    import torch   # only the host decodes whole maps; the gateware never needs torch

    tm = config.tm
    blocks = math.ceil(width / tm)
    if len(beats) != height * blocks * channels:
        raise PsconvError(f"output: {len(beats)} beats; expected {height * blocks * channels}")
    out = torch.zeros((channels, height, width), dtype=torch.int64)
    k = 0
    for y in range(height):
        for xb in range(blocks):
            for o in range(channels):
                values = unpack_bytes(beats[k], tm)
                k += 1
                for r, v in enumerate(values):
                    x = xb * tm + r
                    if x < width:
                        out[o, y, x] = v
                    elif v != 0:
                        raise PsconvError(f"output: padding pixel x={x} of row {y}, channel {o} is {v}, not 0")
    return out
