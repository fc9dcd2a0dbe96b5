# amaranth: UnusedElaboratable=no
"""The host half against the gateware half: the resident driver loads a memory image into the
board top with memory (``BoardTop(memory_bytes=...)``) in the Amaranth simulator, runs a whole
reduced ResNet18 there, two images with the second written while the first computes, and reads
every layer back bit-exact; the board moves exactly the memory bytes the software resident
board counts.

A width-2 PSD1_P4 ResNet18 on 8x8 images for the tiny engine (about 15 s in the simulator).
"""

import dataclasses
import re
import time

import pytest
import torch

from psconv.firmware.compiler import compile_model
from psconv.firmware.resident import ResidentDriver, ResidentError
from psconv.hw.board_top import BoardTop
from psconv.protocol.codes import Command
from psconv.protocol.memory import BAD_MASKS, MEM_ADDRESS_LAYOUT
from psconv.protocol.payloads import encode_payload
from psconv.nn.default import default_quantized_model, model_images
from psconv.sim.amaranth_transport import SimulatorTransport
from psconv.sim.resident_device import open_reference

from e2e.e2e_helpers import TINY_CONFIG

MEMORY_BYTES = 16384


def test_the_resident_driver_runs_a_resnet18_on_the_gateware(capsys):
    model = default_quantized_model("PSD1_P4", width=2, image_size=8, calibration_images=4)
    program = compile_model(model, TINY_CONFIG)
    images = model_images(model, 2, seed=1000)
    top = BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400,
                   memory_bytes=MEMORY_BYTES)
    driver = ResidentDriver(SimulatorTransport(top, top.rx_data, top.tx_data), program,
                            timeout_s=5e-3, retries=2)
    started = time.perf_counter()
    memory = driver.build_image()
    assert driver.memory_bytes == MEMORY_BYTES and memory.total_bytes <= MEMORY_BYTES
    driver.load(memory, progress=False)
    # the second image goes into the input region while the board runs the first
    report = driver.infer(images[0], check_layers=True, next_image=images[1])
    second = driver.infer(images[1], check_layers=True)
    with capsys.disabled():
        print(f"\n{memory.summary()}; gateware: {report.device_cycles} cycles, "
              f"{time.perf_counter() - started:.1f} s in the Amaranth simulator")
    assert report.bit_exact, report.first_mismatch
    assert second.bit_exact, second.first_mismatch
    assert len(report.layers) == 22 and report.steps == len(program.engine_steps) == 20
    assert report.overlapped_link_bytes == 0
    image_bytes = images[1].numel()
    assert image_bytes < second.overlapped_link_bytes < second.inference_link_bytes

    reference = ResidentDriver(open_reference(TINY_CONFIG, MEMORY_BYTES), program)
    reference.load(reference.build_image(), progress=False)
    expected = reference.infer(images[0])
    assert (report.memory_reads, report.memory_writes) == (expected.memory_reads,
                                                           expected.memory_writes)
    assert report.logits == expected.logits


def test_abort_mid_inference_keeps_memory_and_the_next_inference_exact():
    """ABORT while the runner has loads in flight: the words still on their way are dropped, so
    the next CRC_MEM and READ_MEM see memory, not stale words; the model stays valid and runs."""
    model = default_quantized_model("PSD1_P4", width=2, image_size=8, calibration_images=4)
    program = compile_model(model, TINY_CONFIG)
    images = list(model_images(model, 2, seed=1000))
    top = BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400,
                   memory_bytes=MEMORY_BYTES)
    driver = ResidentDriver(SimulatorTransport(top, top.rx_data, top.tx_data), program,
                            timeout_s=5e-3, retries=2)
    memory = driver.build_image()
    driver.load(memory, progress=False)
    image = images[0].to(torch.int8).numpy().tobytes()
    driver.write_memory(memory.input_region.address, image, "input")
    driver._request(Command.INFER, encode_payload(MEM_ADDRESS_LAYOUT, {"address": 0}), "INFER")
    while driver.run_status()["steps_done"] < 2:
        pass
    driver.abort()
    status = driver.run_status()
    # the runner starts afresh (its counters too); the memory commands keep the model's mark
    assert (status["running"], status["done"], status["steps_done"], status["model_valid"]) == (
        0, 0, 0, 1)
    assert driver.crc_memory(0, len(memory.model_bytes), "model") == memory.model_crc
    assert driver.read_memory(memory.input_region.address, len(image), "input") == image
    report = driver.infer(images[1], check_layers=True)
    assert report.bit_exact, report.first_mismatch


def test_a_step_whose_masks_keep_no_taps_stops_the_run_and_the_driver_names_the_mask():
    """A memory image whose second step has a mask table without taps (as a hostile host could
    load): the runner stops before that step (``bad_rule`` BAD_MASKS, the engine never started)
    and the driver's one-line error reads the table back and names the mask."""
    model = default_quantized_model("PSD1_P4", width=2, image_size=8, calibration_images=4)
    program = compile_model(model, TINY_CONFIG)
    top = BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400,
                   memory_bytes=MEMORY_BYTES)
    driver = ResidentDriver(SimulatorTransport(top, top.rx_data, top.tx_data), program,
                            timeout_s=5e-3, retries=2)
    memory = driver.build_image()
    masks = memory.records[1]["masks_address"]
    period = program.engine_steps[1].descriptor.period
    model_bytes = bytearray(memory.model_bytes)
    model_bytes[masks:masks + 2 * period] = bytes(2 * period)
    driver.load(dataclasses.replace(memory, model_bytes=bytes(model_bytes)), progress=False)
    name = re.escape(memory.step_names[1])
    with pytest.raises(ResidentError, match=rf": the board stopped before step 2 \({name}\): mask 0 "
                                            r"of its mask table is 0x0000; allowed: a mask that "
                                            r"keeps at least one of its 9 taps \(1\.\.511\)$"):
        driver.infer(model_images(model, 1, seed=1000)[0])
    status = driver.run_status()
    assert (status["running"], status["steps_done"], status["bad_rule"]) == (0, 1, BAD_MASKS)
