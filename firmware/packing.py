"""Compressed weight format: the P-entry mask table plus the nonzero weights only.

Why this format: in a periodic-sparse layer the position of every kept weight follows from the
mask table, so the table is the only metadata (``ceil(9 * P / 8)`` bytes per layer, against
bits or indices per weight for bitmap, CSR and 2:4 formats).

The table is stored *rotated* so the offset disappears: ``masks[q] = family.masks[(q + offset) % P]``
and kernel (o, i) uses ``masks[(o + i) % P]``.

Weight order (the contract the engine's address generator is built to; "stream order")::

    for o in range(C_out):                       # one output channel after the other
        for p in range(ceil(C_in / P)):          # periods of P input channels
            for q, t in tap_sequence:            # q = 0..P-1 ascending, then kept taps t ascending
                i = p * P + (q - o) % P          # the channel whose kernel uses mask q
                if i < C_in:
                    emit w[o, i, t]              # t is the row-major 3x3 tap (1x1 layers: t = 4)

Every output channel visits the same T-entry tap sequence per period; only the input channel
each entry reads rotates with ``o``. That is what lets a lane run the same sequence for every
output channel whatever the per-kernel K is (DESIGN.md section 4, scheduling by whole periods).

:func:`engine_weight_words` lays this stream into the engine's ``tn``-bank weight buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psconv.errors import PsconvError
from psconv.families import CENTRE_MASK, NUM_TAPS, PatternFamily, mask_taps
from psconv.schedule import check_passes, entries_per_output_channel, input_channel_passes

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackedLayer:
    """A packed layer: rotated mask table (offset 0), shape, and nonzero weights in stream order."""

    name: str
    masks: tuple[int, ...]
    out_channels: int
    in_channels: int
    kernel_size: int
    weights: torch.Tensor  # int8, 1-D, stream order

    @property
    def period(self) -> int:
        return len(self.masks)

    @property
    def tap_sequence(self) -> tuple[tuple[int, int], ...]:
        return tuple((q, t) for q, m in enumerate(self.masks) for t in mask_taps(m))

    @property
    def metadata_bytes(self) -> int:
        """The mask table, 9 bits per entry, packed."""
        return math.ceil(NUM_TAPS * self.period / 8)

    @property
    def weight_bytes(self) -> int:
        return int(self.weights.numel())


def rotated_masks(family: PatternFamily) -> tuple[int, ...]:
    """The family's table rotated by its offset, so kernel (o, i) uses entry (o + i) % P."""
    p = family.period
    return tuple(family.masks[(q + family.offset) % p] for q in range(p))


def stream_positions(masks, out_channels: int, in_channels: int):
    """(o, i, t) of every stream entry, in stream order, as three int64 tensors."""
    p = len(masks)
    seq = [(q, t) for q, m in enumerate(masks) for t in mask_taps(m)]
    periods = math.ceil(in_channels / p)
    q = torch.tensor([e[0] for e in seq], dtype=torch.int64)
    t = torch.tensor([e[1] for e in seq], dtype=torch.int64)
    o = torch.arange(out_channels, dtype=torch.int64)[:, None, None]
    per = torch.arange(periods, dtype=torch.int64)[None, :, None]
    i = per * p + (q[None, None, :] - o) % p
    shape = i.shape
    o_all = o.expand(shape).reshape(-1)
    t_all = t[None, None, :].expand(shape).reshape(-1)
    i_all = i.reshape(-1)
    keep = i_all < in_channels
    return o_all[keep], i_all[keep], t_all[keep]


def _weight_taps(weight: torch.Tensor, name: str) -> torch.Tensor:
    """(O, I, k, k) weight as (O, I, 9) over 3x3 tap positions (1x1 on the centre)."""
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] not in (1, 3):
        raise PsconvError(f"pack layer {name!r}: weight shape {tuple(weight.shape)}; "
                          f"allowed: (C_out, C_in, 3, 3) or (C_out, C_in, 1, 1)")
    o, i, k, _ = weight.shape
    if k == 3:
        return weight.reshape(o, i, NUM_TAPS)
    taps = torch.zeros((o, i, NUM_TAPS), dtype=weight.dtype)
    taps[:, :, 4] = weight[:, :, 0, 0]
    return taps


def pack_layer(weight: torch.Tensor, family: PatternFamily, name: str = "layer") -> PackedLayer:
    """Pack an int8 (C_out, C_in, k, k) weight of ``family`` into the compressed format.

    Refuses (PsconvError naming layer, output channel, input channel and tap) a weight that is
    nonzero where its mask is zero, and values outside int8.
    """
    if weight.is_floating_point():
        raise PsconvError(f"pack layer {name!r}: weight dtype {weight.dtype}; an int8 tensor is required")
    weight = weight.to(torch.int64)
    k = weight.shape[2] if weight.dim() == 4 else None
    if k is not None and k != family.kernel_size:
        raise PsconvError(f"pack layer {name!r}: weight kernel is {k}x{k} but family "
                          f"{family.name!r} is for {family.kernel_size}x{family.kernel_size}")
    taps = _weight_taps(weight, name)
    if bool(((taps < -128) | (taps > 127)).any()):
        o, i, t = (int(v) for v in torch.nonzero((taps < -128) | (taps > 127))[0])
        raise PsconvError(f"pack layer {name!r}: weight[{o}, {i}] tap {t} is {int(taps[o, i, t])}; "
                          f"allowed: int8 -128..127")
    family.check_weight(weight, f"pack layer {name!r}")
    masks = rotated_masks(family)
    c_out, c_in = taps.shape[:2]
    o_idx, i_idx, t_idx = stream_positions(masks, c_out, c_in)
    values = taps[o_idx, i_idx, t_idx].to(torch.int8)
    return PackedLayer(name=name, masks=masks, out_channels=c_out, in_channels=c_in,
                       kernel_size=family.kernel_size, weights=values)


def unpack_layer(packed: PackedLayer) -> torch.Tensor:
    """The int8 (C_out, C_in, k, k) weight a packed layer encodes (inverse of :func:`pack_layer`)."""
    o_idx, i_idx, t_idx = stream_positions(packed.masks, packed.out_channels, packed.in_channels)
    if o_idx.numel() != packed.weights.numel():
        raise PsconvError(
            f"unpack layer {packed.name!r}: {packed.weights.numel()} weights stored, the mask table "
            f"and shape ({packed.out_channels}x{packed.in_channels}) need {o_idx.numel()}")
    taps = torch.zeros((packed.out_channels, packed.in_channels, NUM_TAPS), dtype=torch.int8)
    taps[o_idx, i_idx, t_idx] = packed.weights.to(torch.int8)
    if packed.kernel_size == 1:
        return taps[:, :, 4].reshape(packed.out_channels, packed.in_channels, 1, 1).clone()
    return taps.reshape(packed.out_channels, packed.in_channels, 3, 3)


def engine_weight_words(packed: PackedLayer, tn: int, patch_channels: int | None = None) -> torch.Tensor:
    """The weight buffer image for an engine with ``tn`` lanes: (C_out * words, tn) int8.

    Output channel o occupies rows ``o * words .. (o + 1) * words - 1``
    (:func:`psconv.schedule.words_per_output_channel`): for each input-channel pass in order
    (:func:`psconv.schedule.input_channel_passes`), ``cycles`` rows holding the pass's stream slots, ``c * tn ..
    c * tn + tn - 1`` in row c. A pass's slots are the stream order of the module docstring over
    its own channels ``first + p * P + (q - o) % P`` *without* skipping channels past the pass's
    end (those slots, and the tail of the pass's last row, hold 0). With one pass this is simply
    ``ceil(entries_per_output_channel / tn)`` rows per output channel. Lane l reads column l, so
    bank l of the buffer holds column l.
    """
    p = packed.period
    seq = packed.tap_sequence
    check_passes(packed.period, packed.in_channels, patch_channels, f"layer {packed.name!r}")
    taps = _weight_taps(unpack_layer(packed), packed.name).to(torch.int64)
    q = torch.tensor([e[0] for e in seq], dtype=torch.int64)
    t = torch.tensor([e[1] for e in seq], dtype=torch.int64)
    o = torch.arange(packed.out_channels)[:, None, None]
    blocks = []
    for first, count in input_channel_passes(packed.in_channels, patch_channels):
        slots = entries_per_output_channel(packed.masks, count)
        cycles = math.ceil(slots / tn)
        i = torch.arange(math.ceil(count / p))[None, :, None] * p + (q[None, None, :] - o) % p
        valid = i < count
        values = taps[o.expand(i.shape), (first + i).clamp(max=packed.in_channels - 1), t.expand(i.shape)]
        values = torch.where(valid, values, torch.zeros_like(values)).reshape(packed.out_channels, slots)
        words = torch.zeros((packed.out_channels, cycles * tn), dtype=torch.int64)
        words[:, :slots] = values
        blocks.append(words.reshape(packed.out_channels, cycles, tn))
    return torch.cat(blocks, dim=1).reshape(-1, tn).to(torch.int8)


@dataclass(frozen=True)
class StorageReport:
    """Bytes of one layer in our format and in common sparse formats, for comparison."""

    name: str
    ours_weights: int
    ours_metadata: int
    dense_int8: int
    bitmap: int
    csr: int
    two_four: int

    @property
    def ours_total(self) -> int:
        return self.ours_weights + self.ours_metadata

    @property
    def metadata_fraction(self) -> float:
        return self.ours_metadata / max(1, self.ours_weights)


def storage_report(packed: PackedLayer) -> StorageReport:
    """Bytes for ``packed`` in: ours (weights + mask table), dense int8, bitmap (1 bit per dense
    position + nonzeros), CSR (per output channel: nonzeros, a 16-bit column index each, 32-bit row
    pointers) and 2:4 structured sparsity (half the dense values + 2-bit index each; 2:4 can only
    hold layers at most 50 % dense, so it is a reference figure, not a drop-in)."""
    nnz = packed.weight_bytes
    dense_values = packed.out_channels * packed.in_channels * packed.kernel_size ** 2
    kept = dense_values // 2
    return StorageReport(
        name=packed.name,
        ours_weights=nnz,
        ours_metadata=packed.metadata_bytes,
        dense_int8=dense_values,
        bitmap=nnz + math.ceil(dense_values / 8),
        csr=nnz + 2 * nnz + 4 * (packed.out_channels + 1),
        two_four=kept + math.ceil(2 * kept / 8),
    )
