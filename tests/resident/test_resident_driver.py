"""The resident driver against the software resident board over a LoopbackTransport: whole
inferences bit-exact at every layer, a model load through a faulty link, an interrupted load
resumed, and every way the board refuses to run a stale or damaged model, each as one line."""

import re

import pytest
import torch

from psconv.errors import PsconvError
from psconv.firmware.driver import EngineMismatch
from psconv.firmware.faults import FaultInjectingTransport, uniform_fault_rates
from psconv.firmware.link import LinkNak, LinkTimeout
from psconv.firmware.resident import ResidentDriver, ResidentError
from psconv.firmware.transport import LoopbackTransport, Transport
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.frame import Response
from psconv.protocol.memory import MEM_ADDRESS_LAYOUT
from psconv.protocol.payloads import encode_payload
from psconv.sim.golden.network import run_golden
from psconv.sim.device_link import DeviceLink
from psconv.sim.resident_device import ResidentDevice

from conftest import MEMORY_BYTES, RESIDENT_CONFIG


def board(program, **options):
    device = ResidentDevice(RESIDENT_CONFIG, MEMORY_BYTES, **options)
    return device, LoopbackTransport(device.link)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_two_images_are_bit_exact_at_every_layer_and_the_logits(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    assert driver.build_image().model_bytes == memory_image.model_bytes
    load = driver.load(memory_image, progress=False)
    assert (load.model_bytes, load.bytes_written, load.crc) == (
        len(memory_image.model_bytes), len(memory_image.model_bytes), memory_image.model_crc)
    for index, image in enumerate(images):
        report = driver.infer(image, check_layers=True)
        golden = run_golden(program.model, image)
        assert report.logits == [int(v) for v in golden.logits.tolist()] == report.golden_logits
        assert set(report.layers) == set(golden.outputs) and len(report.layers) == 22
        assert report.bit_exact, report.first_mismatch
        assert report.image == index and report.steps == len(program.engine_steps)
        assert report.device_cycles > 0 and report.memory_reads > report.memory_writes > 0
    # a second image costs only the image and the logits' map on the link, not the model
    plain = driver.infer(images[1])
    assert plain.layers == {} and plain.bit_exact
    out = memory_image.output_region.size
    assert memory_image.input_region.size < plain.link_bytes_sent < memory_image.input_region.size + 200
    assert out < plain.link_bytes_received < out + 200


def test_the_driver_notices_wrong_device_results(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    driver.load(memory_image, progress=False)
    region = memory_image.regions["layer3.0.conv1"]
    original = device._run

    def corrupting_run(spec, fields):          # the board writes a wrong pixel into one layer
        original(spec, fields)
        if fields["output_address"] == region.address:
            device.memory[region.address + 5] ^= 0x40
    device._run = corrupting_run
    report = driver.infer(images[0], check_layers=True)
    assert not report.bit_exact
    assert report.first_mismatch.startswith("layer3.0.conv1: 1 of 256 elements differ")


def test_a_model_loaded_through_a_faulty_link_is_bit_exact(program, images, memory_image):
    device, transport = board(program)
    faulty = FaultInjectingTransport(transport, seed=3, rates=uniform_fault_rates(0.15),
                                     max_delay_s=0.1, silence_s=0.05)
    driver = ResidentDriver(faulty, program, timeout_s=0.3, retries=20)
    driver.load(memory_image, progress=False)
    assert sum(faulty.injected.values()) >= 3 and driver.link.stats.retransmissions >= 3
    assert bytes(device.memory[:len(memory_image.model_bytes)]) == memory_image.model_bytes
    report = driver.infer(images[0], check_layers=True)
    assert report.bit_exact, report.first_mismatch


class CuttableTransport(Transport):
    """Passes bytes through until ``cut`` is set; then the line is dead both ways."""

    def __init__(self, inner):
        self.inner, self.clock, self.cut = inner, inner.clock, False
        self.frames_before_cut = None

    def write(self, data):
        if self.frames_before_cut is not None:
            self.frames_before_cut -= 1
            self.cut = self.cut or self.frames_before_cut < 0
        if not self.cut:
            self.inner.write(data)

    def read(self, max_bytes, timeout_s):
        if self.cut:
            self.clock.sleep(timeout_s)
            return b""
        return self.inner.read(max_bytes, timeout_s)


@pytest.mark.parametrize("board_reset_in_between", [False, True])
def test_an_interrupted_load_resumes(program, images, memory_image, board_reset_in_between):
    device, transport = board(program)
    line = CuttableTransport(transport)
    driver = ResidentDriver(line, program, timeout_s=0.05, retries=1)
    driver.identify()
    line.frames_before_cut = 8                    # the line dies during the 8th chunk
    with pytest.raises(LinkTimeout, match="loading the model: WRITE_MEM"):
        driver.load(memory_image, progress=False)
    acknowledged = driver._acknowledged[1]
    assert 0 < acknowledged < len(memory_image.model_bytes)
    line.cut, line.frames_before_cut = False, None
    if board_reset_in_between:                     # the board lost what it had
        device.memory[:acknowledged] = bytes(acknowledged)
    load = driver.load(memory_image, progress=False)
    expected = 0 if board_reset_in_between else acknowledged
    assert load.resumed_from == expected
    assert load.bytes_written == len(memory_image.model_bytes) - expected
    assert driver.infer(images[0]).bit_exact


def test_a_model_written_into_after_loading_is_refused(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    driver.load(memory_image, progress=False)
    inside = 1000
    assert inside < len(memory_image.model_bytes)
    device.handle(Command.WRITE_MEM, encode_payload(MEM_ADDRESS_LAYOUT, {"address": inside})
                  + bytes([memory_image.model_bytes[inside] ^ 1]))
    with pytest.raises(LinkNak) as error:
        driver.infer(images[0])
    assert error.value.reason == NakReason.NO_MODEL
    assert re.search(r"image 0: INFER: INFER \(seq \d+\) refused by the device: NAK NO_MODEL .*"
                     r"\(the board holds no checked model .*load the model again\)", one_line(error))
    with pytest.raises(LinkNak) as error:
        driver.check_model(memory_image)           # the old CRC no longer matches
    assert error.value.reason == NakReason.MODEL_CRC
    assert "NAK MODEL_CRC" in one_line(error) and "differs from the image's" in one_line(error)
    assert driver.load(memory_image, progress=False).resumed_from == 0
    assert driver.infer(images[0]).bit_exact


def test_a_model_damaged_in_memory_fails_its_check(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    driver.load(memory_image, progress=False)
    device.memory[2000] ^= 0x10                    # a fault in the memory itself, no write
    with pytest.raises(LinkNak) as error:
        driver.check_model(memory_image)
    assert error.value.reason == NakReason.MODEL_CRC and "MODEL_CRC" in one_line(error)
    with pytest.raises(LinkNak) as error:           # the failed check cleared the mark
        driver.infer(images[0])
    assert error.value.reason == NakReason.NO_MODEL


def test_a_reset_board_holds_no_model(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    driver.load(memory_image, progress=False)
    device.reset()
    with pytest.raises(LinkNak) as error:
        driver.infer(images[0])
    assert error.value.reason == NakReason.NO_MODEL and "NO_MODEL" in one_line(error)
    driver.check_model(memory_image)               # the memory survived the reset: re-check it
    assert driver.infer(images[0]).bit_exact


def test_an_inference_that_does_not_finish_names_the_step_reached(program, images, memory_image):
    device, transport = board(program, steps_per_poll=1)
    driver = ResidentDriver(transport, program, infer_timeout_s=0.0035)
    driver.load(memory_image, progress=False)
    with pytest.raises(ResidentError) as error:
        driver.infer(images[0])
    steps = len(program.engine_steps)
    assert re.fullmatch(rf"image 0: INFER: not done after 0.0035 s: step (\d+) of {steps} "
                        rf"\(([^)]+)\) reached", one_line(error))
    reached = int(re.search(r"step (\d+) of", str(error.value)).group(1))
    assert 2 <= reached < steps
    assert program.engine_steps[reached - 1].name in str(error.value)
    driver.infer_timeout_s = 10.0
    assert driver.infer(images[1]).bit_exact        # the next waits for the unfinished run first


def test_a_board_with_another_engine_is_refused(program, memory_image):
    other = ResidentDevice(RESIDENT_CONFIG.__class__(tm=4, tn=16), MEMORY_BYTES)
    driver = ResidentDriver(LoopbackTransport(other.link), program)
    with pytest.raises(EngineMismatch, match="tn: board 16, program 8"):
        driver.load(memory_image, progress=False)


def test_infer_before_load_and_a_wrong_image_shape_are_refused(program, images, memory_image):
    device, transport = board(program)
    driver = ResidentDriver(transport, program)
    with pytest.raises(ResidentError, match="no model loaded"):
        driver.infer(images[0])
    driver.load(memory_image, progress=False)
    with pytest.raises(ResidentError, match=r"shape \(3, 8, 8\); the model takes \(3, 16, 16\)"):
        driver.infer(torch.zeros((3, 8, 8), dtype=torch.int64))


def test_a_board_without_resident_mode_is_named(program, memory_image):
    device = ResidentDevice(RESIDENT_CONFIG, MEMORY_BYTES)

    def streamed_only(code, payload):        # a board whose bitstream has no memory
        if code >= Command.WRITE_MEM:
            return Response.nak(NakReason.UNKNOWN_COMMAND)
        return device.handle(code, payload)
    driver = ResidentDriver(LoopbackTransport(DeviceLink(streamed_only)), program)
    with pytest.raises(LinkNak) as error:
        driver.load(memory_image, progress=False)
    assert error.value.reason == NakReason.UNKNOWN_COMMAND
    assert "identifying the board: RUN_STATUS" in one_line(error)
    assert "this board has no resident mode" in one_line(error)
