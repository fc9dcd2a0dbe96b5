"""Resident mode on the simulated board: the board's gateware in Verilator, with memory.

The host loads a reduced ResNet18 once (through the fault-injecting transport: the load must
survive damaged, dropped and duplicated frames), then runs two images in a row; every layer is
read back from the board's memory and compared with the golden model on every element, and the
board's memory traffic equals the software reference board's exactly.
"""

import pytest

from psconv.firmware.compiler import compile_model
from psconv.firmware.resident import ResidentDriver, local_board_memory, run_resident
from psconv.nn.default import default_quantized_model, model_images
from psconv.sim.resident_device import open_reference

from e2e_helpers import SIM_CONFIG


@pytest.fixture(scope="module")
def width8():
    model = default_quantized_model("PSD1_P16", width=8, image_size=16, calibration_images=4)
    return compile_model(model, SIM_CONFIG), model_images(model, 2, seed=2000)


def test_two_images_bit_exact_at_every_layer_after_a_faulty_load(width8, capsys):
    program, images = width8
    report = run_resident(program, images, transport="sim", check_layers=True, faults=0.05,
                          fault_seed=3, progress=False)
    with capsys.disabled():
        print("\n" + "\n".join(report.summary_lines()))
    assert report.faults_injected > 0
    assert report.bit_exact, report.first_mismatch
    assert len(report.inferences) == 2
    for inference in report.inferences:
        assert inference.bit_exact and len(inference.layers) == 22
        assert inference.logits == inference.golden_logits and len(inference.logits) == 10
        assert inference.device_cycles > 0
    assert report.inferences[0].logits != report.inferences[1].logits

    reference = ResidentDriver(open_reference(SIM_CONFIG, local_board_memory(program)), program)
    reference.load(reference.build_image(), progress=False)
    for image, board in zip(images, report.inferences):
        expected = reference.infer(image)
        assert (board.memory_reads, board.memory_writes) == (expected.memory_reads,
                                                             expected.memory_writes)
        assert board.logits == expected.logits


def test_the_board_on_its_sdram_controller_and_chip_model(capsys):
    """The same resident flow with the board's memory being the SDRAM: the LiteDRAM controller
    and the datasheet chip model at its pins (any timing violation ends the simulation)."""
    model = default_quantized_model("PSD1_P16", width=4, image_size=16, calibration_images=4)
    program = compile_model(model, SIM_CONFIG)
    images = model_images(model, 2, seed=3000)
    report = run_resident(program, images, transport="sim-sdram", check_layers=True,
                          progress=False)
    with capsys.disabled():
        print("\n" + "\n".join(report.summary_lines()))
    assert report.bit_exact, report.first_mismatch
    assert [len(inference.layers) for inference in report.inferences] == [22, 22]
    assert report.memory_summary.endswith(f"of {32 << 20} bytes")   # the 32 MB SDRAM


def test_a_reduced_vgg16_with_its_max_pools_on_the_board_gateware(capsys):
    """VGG16 (13 convolutions, 5 max pools as memory passes of the program runner) resident on
    the simulated board: bit-exact at every layer and the logits, and the same memory traffic as
    the software reference board."""
    model = default_quantized_model("PSD4_P8", width=2, calibration_images=2, arch="vgg16")
    program = compile_model(model, SIM_CONFIG)
    images = model_images(model, 1, seed=4000)
    report = run_resident(program, images, transport="sim", check_layers=True, progress=False)
    with capsys.disabled():
        print("\n" + "\n".join(report.summary_lines()))
    assert report.bit_exact, report.first_mismatch
    inference = report.inferences[0]
    assert len(inference.layers) == 19 and inference.logits == inference.golden_logits
    assert sum(layer.op == "maxpool" for layer in model.layers) == 5

    reference = ResidentDriver(open_reference(SIM_CONFIG, local_board_memory(program)), program)
    reference.load(reference.build_image(), progress=False)
    expected = reference.infer(images[0])
    assert (inference.memory_reads, inference.memory_writes) == (expected.memory_reads,
                                                                 expected.memory_writes)
