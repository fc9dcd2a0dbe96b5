"""The software resident board at the command level (no link): memory commands and their NAKs,
the validity mark, and a whole inference run from memory, bit-exact at every layer."""

import struct

import pytest
import torch

from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.memory import (MEM_ADDRESS_LAYOUT, MEM_READ_LAYOUT, MEM_REGION_LAYOUT,
                                    MODEL_CHECK_LAYOUT, PROGRAM_HEADER_LAYOUT, RUN_STATUS_LAYOUT,
                                    memory_crc, step_record_layout)
from psconv.protocol.payloads import encode_payload, identity_blob, layout_bytes
from psconv.sim.golden.network import run_golden
from psconv.sim.resident_device import ResidentDevice

from conftest import MEMORY_BYTES, RESIDENT_CONFIG


def address(a):
    return encode_payload(MEM_ADDRESS_LAYOUT, {"address": a})


def write(device, a, data):
    return device.handle(Command.WRITE_MEM, address(a) + data)


def read(device, a, length):
    return device.handle(Command.READ_MEM, encode_payload(MEM_READ_LAYOUT, {"address": a, "length": length}))


def check(device, image, crc=None):
    return device.handle(Command.CHECK_MODEL, encode_payload(MODEL_CHECK_LAYOUT, {
        "address": 0, "length": len(image.model_bytes),
        "crc": image.model_crc if crc is None else crc}))


def status(device):
    answer = device.handle(Command.RUN_STATUS, b"")
    assert answer.status == Status.DATA and len(answer.payload) == layout_bytes(RUN_STATUS_LAYOUT)
    view = RUN_STATUS_LAYOUT.from_bits(int.from_bytes(answer.payload, "little"))
    return {name: view[name] for name, _ in RUN_STATUS_LAYOUT}


def loaded(memory_image, image=None, **options):
    device = ResidentDevice(RESIDENT_CONFIG, MEMORY_BYTES, **options)
    for offset in range(0, len(memory_image.model_bytes), 1000):
        assert write(device, offset, memory_image.model_bytes[offset:offset + 1000]).status == Status.ACK
    assert check(device, memory_image).status == Status.ACK
    if image is not None:
        region = memory_image.input_region
        assert write(device, region.address, image.to(torch.int8).numpy().tobytes()).status == Status.ACK
    return device


def region_map(device, region):
    data = read(device, region.address, region.size).payload
    return torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(region.tensor_shape).to(torch.int64)


def test_identify_and_memory_commands():
    device = ResidentDevice(RESIDENT_CONFIG, 4096)
    assert device.handle(Command.IDENTIFY, b"").payload == identity_blob(RESIDENT_CONFIG)
    assert write(device, 4090, b"abcdef").status == Status.ACK
    assert read(device, 4090, 6).payload == b"abcdef"
    crc = device.handle(Command.CRC_MEM, encode_payload(MEM_REGION_LAYOUT, {"address": 4090, "length": 6}))
    assert struct.unpack("<I", crc.payload)[0] == memory_crc(b"abcdef")
    refused = {
        "write past the end": write(device, 4091, b"abcdef"),
        "write without data": device.handle(Command.WRITE_MEM, address(0)),
        "read past the end": read(device, 4095, 2),
        "read over the max payload": read(device, 0, 1025),
        "crc past the end": device.handle(Command.CRC_MEM, encode_payload(
            MEM_REGION_LAYOUT, {"address": 1, "length": 4096})),
        "short READ_MEM payload": device.handle(Command.READ_MEM, address(0)),
        "RUN_STATUS with a payload": device.handle(Command.RUN_STATUS, b"\x00"),
    }
    for what, answer in refused.items():
        assert answer.reason == NakReason.BAD_LENGTH, what
    assert device.handle(Command.START, b"").reason == NakReason.UNKNOWN_COMMAND
    assert status(device)["memory_bytes"] == 4096


def test_the_validity_mark(memory_image):
    fresh = ResidentDevice(RESIDENT_CONFIG, MEMORY_BYTES)
    assert fresh.handle(Command.INFER, address(0)).reason == NakReason.NO_MODEL
    device = loaded(memory_image)
    assert status(device)["model_valid"] == 1
    # a write outside the model (the input image) keeps the mark; a write into it clears it
    assert write(device, memory_image.input_region.address, b"\x01").status == Status.ACK
    assert status(device)["model_valid"] == 1
    last = len(memory_image.model_bytes) - 1
    assert write(device, last, memory_image.model_bytes[last:]).status == Status.ACK
    assert status(device)["model_valid"] == 0
    assert device.handle(Command.INFER, address(0)).reason == NakReason.NO_MODEL
    assert check(device, memory_image).status == Status.ACK        # same bytes: valid again
    assert check(device, memory_image, crc=memory_image.model_crc ^ 1).reason == NakReason.MODEL_CRC
    assert status(device)["model_valid"] == 0
    assert check(device, memory_image).status == Status.ACK
    device.reset()
    assert status(device)["model_valid"] == 0
    assert device.handle(Command.INFER, address(0)).reason == NakReason.NO_MODEL
    # INFER outside the checked region
    assert check(device, memory_image).status == Status.ACK
    assert device.handle(Command.INFER, address(len(memory_image.model_bytes))).reason == NakReason.NO_MODEL


def test_a_program_the_runner_cannot_run_is_refused(memory_image):
    device = loaded(memory_image)
    record = step_record_layout(RESIDENT_CONFIG)
    at = (layout_bytes(PROGRAM_HEADER_LAYOUT) + 5 * layout_bytes(record)      # step 5's plane_bytes
          + record["plane_bytes"].offset // 8)
    device.memory[at:at + 4] = struct.pack("<I", 1)
    assert check(device, memory_image, crc=memory_crc(bytes(device.memory[:len(memory_image.model_bytes)]))).status == Status.ACK
    assert device.handle(Command.INFER, address(0)).reason == NakReason.BAD_STATE
    assert status(device)["running"] == 0


def test_an_inference_from_memory_is_bit_exact_at_every_layer(program, images, memory_image):
    device = loaded(memory_image, images[0])
    assert device.handle(Command.INFER, address(0)).status == Status.ACK
    done = status(device)
    steps = program.engine_steps
    assert (done["running"], done["done"], done["steps_done"]) == (0, 1, len(steps))
    golden = run_golden(program.model, images[0])
    for name, region in memory_image.regions.items():
        if name != "input":
            assert torch.equal(region_map(device, region), golden.outputs[name]), name
    # what the runner moved: header, records and tables (the masks twice: checked, then
    # streamed), maps in (not for a step on the map the step before it loaded: the engine
    # keeps it; this program writes no map a later step reads twice), maps out, then the pool
    record = layout_bytes(step_record_layout(RESIDENT_CONFIG))
    pooled = memory_image.regions[memory_image.output_layer]
    pool_input = memory_image.regions[steps[-1].layer]
    loaded_maps = [k == 0 or s.input != steps[k - 1].input for k, s in enumerate(steps)]
    assert 0 < loaded_maps.count(False) < len(steps)     # some steps keep the map, not all
    reads = layout_bytes(PROGRAM_HEADER_LAYOUT) + pool_input.size + sum(
        record + 2 * 2 * len(s.masks) + 13 * s.descriptor.out_channels + s.weight_words.numel()
        + (memory_image.regions[s.input].size if loads else 0)
        + (s.descriptor.out_channels * s.descriptor.out_height * s.descriptor.out_width
           if s.residual else 0) for s, loads in zip(steps, loaded_maps))
    writes = pooled.size + sum(memory_image.regions[s.layer].size for s in steps if s.tile == 0)
    assert (done["memory_reads"], done["memory_writes"]) == (reads, writes)
    assert done["cycles"] > 0


def test_infer_while_running_is_busy_and_status_shows_progress(program, images, memory_image):
    device = loaded(memory_image, images[0], steps_per_poll=3)
    assert device.handle(Command.INFER, address(0)).status == Status.ACK
    first = status(device)
    assert (first["running"], first["done"], first["steps_done"]) == (1, 0, 3)
    assert device.handle(Command.INFER, address(0)).reason == NakReason.BUSY
    while status(device)["running"]:
        pass
    assert status(device)["steps_done"] == len(program.engine_steps)


def test_only_the_input_region_takes_writes_while_running_and_only_once_it_is_free(
        program, images, memory_image):
    """The next image may go in while this one computes, once no step left reads the input;
    nothing else is written or read while the program runs."""
    device = loaded(memory_image, images[0], steps_per_poll=1)
    region = memory_image.input_region
    readers = [k for k, s in enumerate(program.engine_steps) if "input" in (s.input, s.residual)]
    assert readers == [0]
    next_image = images[1].to(torch.int8).numpy().tobytes()
    assert device.handle(Command.INFER, address(0)).status == Status.ACK
    assert write(device, region.address, next_image).reason == NakReason.BUSY   # step 0 pending
    assert status(device)["steps_done"] == 1
    assert write(device, region.address, next_image).status == Status.ACK
    assert write(device, region.address - 1, b"\0").reason == NakReason.BUSY   # outside it
    assert write(device, region.end, b"\0").reason == NakReason.BUSY
    assert read(device, 0, 4).reason == NakReason.BUSY
    while status(device)["running"]:
        pass
    golden = run_golden(program.model, images[0])
    pooled = memory_image.output_region
    assert torch.equal(region_map(device, pooled), golden.outputs[pooled.name])
    assert device.handle(Command.INFER, address(0)).status == Status.ACK
    while status(device)["running"]:
        pass
    golden = run_golden(program.model, images[1])
    assert torch.equal(region_map(device, pooled), golden.outputs[pooled.name])
