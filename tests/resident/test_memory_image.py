"""The memory image: every part inside memory, aligned and disjoint, the step records pointing
at exactly the bytes the streamed driver sends, the CRC the device will compute, and a clear
refusal when the board's memory is too small."""

import binascii
import dataclasses

import pytest
import torch

from psconv.errors import PsconvError
from psconv.firmware.memory_image import ALIGN, build_memory_image
from psconv.protocol.beats import weight_beats
from psconv.protocol.descriptor import encode_quant_entry
from psconv.protocol.memory import PROGRAM_HEADER_LAYOUT, memory_crc, step_record_layout
from psconv.protocol.payloads import beats_payload, layout_bytes, mask_payload, quant_payload

from conftest import MEMORY_BYTES, RESIDENT_CONFIG


def test_parts_are_inside_memory_aligned_and_disjoint(memory_image):
    parts = [(row["part"], row["address"], row["end"]) for row in memory_image.memory_map()
             if row["bytes"]]
    assert len(parts) == 1 + 3 * len(memory_image.records) + len(memory_image.regions)
    for name, start, end in parts[1:]:
        assert start % ALIGN == 0, name
    ordered = sorted(parts, key=lambda p: p[1])
    for (a, _, a_end), (b, b_start, _) in zip(ordered, ordered[1:]):
        assert a_end <= b_start, f"{a} overlaps {b}"
    model_end = len(memory_image.model_bytes)
    assert all(r.address >= model_end for r in memory_image.regions.values())
    assert ordered[-1][2] == memory_image.total_bytes <= MEMORY_BYTES
    assert parts[0] == ("program", 0, layout_bytes(PROGRAM_HEADER_LAYOUT)
                        + len(memory_image.records) * layout_bytes(step_record_layout(RESIDENT_CONFIG)))


def test_model_crc_is_the_crc32_of_the_model_bytes(memory_image):
    assert memory_image.model_crc == memory_crc(memory_image.model_bytes)
    assert memory_image.model_crc == binascii.crc32(memory_image.model_bytes)


def test_records_point_at_the_streamed_drivers_bytes(program, memory_image):
    model = memory_image.model_bytes
    layout = step_record_layout(RESIDENT_CONFIG)
    size = layout_bytes(layout)
    header = layout_bytes(PROGRAM_HEADER_LAYOUT)
    tiled = [s for s in program.engine_steps if s.first_channel]
    assert tiled, "the test engine must tile some layer"
    for k, step in enumerate(program.engine_steps):
        raw = model[header + k * size:header + (k + 1) * size]
        record = layout.from_bits(int.from_bytes(raw, "little"))
        assert record.descriptor.as_value().value == step.descriptor.encode(RESIDENT_CONFIG)
        masks = mask_payload(step.masks)
        quant = quant_payload([encode_quant_entry(int(b), int(m), int(s), int(r)) for b, m, s, r
                               in zip(step.bias, step.multiplier, step.shift, step.residual_multiplier)])
        weights = beats_payload(weight_beats(step.weight_words), RESIDENT_CONFIG.tn)
        assert model[record.masks_address:record.masks_address + len(masks)] == masks
        assert model[record.quant_address:record.quant_address + len(quant)] == quant
        assert record.weight_bytes == len(weights)
        assert model[record.weights_address:record.weights_address + len(weights)] == weights
        source = memory_image.regions[step.input]
        out = memory_image.regions[step.layer]
        spec = step.descriptor
        assert (record.fmap_address, record.fmap_bytes) == (source.address, source.size)
        assert record.plane_bytes == spec.out_height * spec.out_width == out.plane_bytes
        assert record.output_address == out.address + step.first_channel * out.plane_bytes
        if step.residual is None:
            assert record.residual_address == 0
        else:
            assert record.residual_address == (memory_image.regions[step.residual].address
                                               + step.first_channel * out.plane_bytes)
    # the board pools the last engine layer (the header's pool fields); the classifier is the host's
    last = memory_image.regions[program.engine_steps[-1].layer]
    pool_layer = next(s.layer for s in program.steps if getattr(s, "layer", None) is not None
                      and getattr(s.layer, "op", None) == "avgpool")
    header = PROGRAM_HEADER_LAYOUT.from_bits(int.from_bytes(model[:header], "little"))
    pooled = memory_image.regions[pool_layer.name]
    assert memory_image.output_layer == pool_layer.name and pooled.shape == (last.shape[0], 1, 1)
    assert (header.pool_channels, header.pool_plane, header.pool_input, header.pool_output) == (
        last.shape[0], last.plane_bytes, last.address, pooled.address)
    assert (header.pool_multiplier, header.pool_shift) == (int(pool_layer.multiplier.reshape(-1)[0]),
                                                           int(pool_layer.shift.reshape(-1)[0]))
    assert memory_image.regions["input"].shape == tuple(program.model.input_shape)


def test_a_too_small_memory_is_refused_naming_the_sizes(program, memory_image):
    needed = memory_image.total_bytes
    assert build_memory_image(program, needed).total_bytes == needed
    with pytest.raises(PsconvError) as error:
        build_memory_image(program, needed - 1)
    message = str(error.value)
    assert "\n" not in message
    assert f"needs {needed} bytes" in message and f"has {needed - 1} bytes" in message


def test_a_host_step_before_an_engine_step_is_refused(program):
    steps = list(program.steps)
    steps.insert(3, steps.pop())       # the classifier among the engine steps
    reordered = dataclasses.replace(program, steps=steps)
    with pytest.raises(PsconvError, match="host step 'fc' comes before engine step"):
        build_memory_image(reordered, MEMORY_BYTES)
