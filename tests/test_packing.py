"""Compressed weight format: round trip, refusal of off-mask weights, metadata size, engine image."""

import math

import pytest
import torch

from psconv.errors import PsconvError
from psconv.families import dense_family, paper_family, pointwise_family
from psconv import schedule
from psconv.firmware import packing

FAMILIES = [paper_family(4, 8), paper_family(4, 8, True), paper_family(1, 16, True),
            paper_family(2, 8, True), paper_family(3, 4), dense_family(), pointwise_family()]


def _weight(family, c_out, c_in, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = family.weight_mask(c_out, c_in).to(torch.int64)
    return (torch.randint(-128, 128, tuple(mask.shape), generator=g) * mask).to(torch.int8)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 19), (33, 64)])
def test_round_trip_is_identity(family, shape):
    w = _weight(family, *shape)
    packed = packing.pack_layer(w, family, "conv")
    assert torch.equal(packing.unpack_layer(packed), w)
    # nonzero weights only: one stored value per kept tap
    assert packed.weight_bytes == int(family.weight_mask(*shape).sum())


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_metadata_is_the_mask_table_alone(family):
    packed = packing.pack_layer(_weight(family, 64, 64), family, "conv")
    assert packed.masks == tuple(family.masks[(q + family.offset) % family.period]
                                 for q in range(family.period))
    assert packed.metadata_bytes == math.ceil(9 * family.period / 8)
    report = packing.storage_report(packed)
    assert report.ours_metadata == packed.metadata_bytes
    assert report.metadata_fraction < 0.001 or packed.weight_bytes < 1000 * packed.metadata_bytes


def test_stream_order_follows_the_documented_loop():
    family = paper_family(1, 16, True)
    w = _weight(family, 3, 21, seed=3)
    packed = packing.pack_layer(w, family, "conv")
    masks = packed.masks
    expected = []
    for o in range(3):
        for p in range(math.ceil(21 / 16)):
            for q, m in enumerate(masks):
                i = p * 16 + (q - o) % 16
                for t in range(9):
                    if m >> t & 1 and i < 21:
                        expected.append(int(w.reshape(3, 21, 9)[o, i, t]))
    assert packed.weights.tolist() == expected


def test_off_mask_weight_is_refused_with_its_position():
    family = paper_family(4, 8)
    w = _weight(family, 4, 8)
    pruned = (family.weight_mask(4, 8) == 0).nonzero()[5]
    o, i, dy, dx = (int(v) for v in pruned)
    w[o, i, dy, dx] = 9
    with pytest.raises(PsconvError) as error:
        packing.pack_layer(w, family, "layer2.0.conv1")
    message = str(error.value)
    assert "layer2.0.conv1" in message
    assert f"output channel {o}, input channel {i}, tap {dy * 3 + dx}" in message


def test_float_and_wrong_kernel_are_refused():
    with pytest.raises(PsconvError, match="int8"):
        packing.pack_layer(torch.zeros((1, 1, 3, 3)), dense_family(), "x")
    with pytest.raises(PsconvError, match="1x1"):
        packing.pack_layer(torch.zeros((1, 1, 3, 3), dtype=torch.int8), pointwise_family(), "x")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("tn", [1, 4, 16])
def test_engine_words_hold_the_stream_in_tn_banks(family, tn):
    c_out, c_in = 5, 21
    w = _weight(family, c_out, c_in, seed=tn)
    packed = packing.pack_layer(w, family, "conv")
    words = packing.engine_weight_words(packed, tn)
    slots = schedule.entries_per_output_channel(packed.masks, c_in)
    cycles = math.ceil(slots / tn)
    assert words.shape == (c_out * cycles, tn)
    seq = packed.tap_sequence
    taps = w.reshape(c_out, c_in, -1) if w.shape[2] == 3 else None
    for o in range(c_out):
        flat = words[o * cycles:(o + 1) * cycles].reshape(-1)
        for slot in range(cycles * tn):
            if slot >= slots:
                assert flat[slot] == 0
                continue
            p, e = divmod(slot, len(seq))
            q, t = seq[e]
            i = p * packed.period + (q - o) % packed.period
            if i >= c_in:
                expected = 0
            elif taps is None:
                expected = int(w[o, i, 0, 0])
            else:
                expected = int(taps[o, i, t])
            assert int(flat[slot]) == expected


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_engine_words_with_input_channel_passes(family):
    """Passes of 16 channels: each output channel's rows are the passes' streams one after the
    other, each pass padded to whole rows; every kept weight appears exactly once."""
    c_out, c_in, tn, patch = 3, 37, 5, 16
    w = _weight(family, c_out, c_in, seed=7)
    packed = packing.pack_layer(w, family, "conv")
    words = packing.engine_weight_words(packed, tn, patch)
    assert schedule.input_channel_passes(c_in, patch) == [(0, 16), (16, 16), (32, 5)]
    cycles = schedule.pass_cycles(packed.masks, c_in, tn, patch)
    rows = schedule.words_per_output_channel(packed.masks, c_in, tn, patch)
    assert rows == sum(cycles) and words.shape == (c_out * rows, tn)
    seq = packed.tap_sequence
    taps = w.reshape(c_out, c_in, -1)
    for o in range(c_out):
        row0 = o * rows
        for (first, count), pass_rows in zip(schedule.input_channel_passes(c_in, patch), cycles):
            flat = words[row0:row0 + pass_rows].reshape(-1)
            for slot in range(pass_rows * tn):
                p, e = divmod(slot, len(seq))
                q, t = seq[e]
                i = p * packed.period + (q - o) % packed.period
                inside = slot < math.ceil(count / packed.period) * len(seq) and i < count
                expected = int(taps[o, first + i, 0 if w.shape[2] == 1 else t]) if inside else 0
                assert int(flat[slot]) == expected
            row0 += pass_rows
    assert words.to(torch.int64).abs().sum() == w.to(torch.int64).abs().sum()


def test_passes_need_a_period_dividing_patch_channels():
    family = paper_family(2, 6)
    packed = packing.pack_layer(_weight(family, 2, 20), family, "conv6")
    with pytest.raises(PsconvError, match="conv6.*period P = 6 does not divide patch_channels"):
        packing.engine_weight_words(packed, 4, 16)
    assert packing.engine_weight_words(packed, 4, 32).shape[1] == 4   # one pass: any period


def test_storage_report_compares_formats():
    family = paper_family(1, 16, True)
    report = packing.storage_report(packing.pack_layer(_weight(family, 64, 64), family, "c"))
    assert report.ours_weights == 64 * 64 * 24 // 16
    assert report.dense_int8 == 64 * 64 * 9
    assert report.ours_total < report.bitmap < report.csr
    assert report.ours_total < report.dense_int8
