"""A reduced VGG16 resident: its max pools are step records of the memory image, the reference
board runs them from memory bit-exact at every layer and at the logits, and refuses a malformed
pool record before anything runs."""

import argparse
import struct

import pytest
import torch

from psconv.cli import main
from psconv.config import EngineConfig
from psconv.firmware.compiler import PoolStep, compile_model, pool_descriptor
from psconv.firmware.memory_image import build_memory_image
from psconv.firmware.resident import run_resident
from psconv.nn.default import default_quantized_model, model_images
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.memory import (MAX_POOL_2X2, MEM_ADDRESS_LAYOUT, MODEL_CHECK_LAYOUT,
                                    PROGRAM_HEADER_LAYOUT, RUN_STATUS_LAYOUT, memory_crc,
                                    step_record_layout)
from psconv.protocol.payloads import decode_payload, encode_payload, layout_bytes
from psconv.sim.cycle_model import runner_max_pool_cycles
from psconv.sim.golden.network import run_golden
from psconv.sim.resident_device import ResidentDevice

CONFIG = EngineConfig()
MEMORY_BYTES = 1 << 17


@pytest.fixture(scope="module")
def program():
    model = default_quantized_model("PSD4_P8", width=2, calibration_images=2, arch="vgg16")
    return compile_model(model, CONFIG)


@pytest.fixture(scope="module")
def image(program):
    return build_memory_image(program, MEMORY_BYTES)


def _records(image):
    layout = step_record_layout(CONFIG)
    size, start = layout_bytes(layout), layout_bytes(PROGRAM_HEADER_LAYOUT)
    count = len(image.step_names)
    return [decode_payload(layout, image.model_bytes[start + k * size:start + (k + 1) * size], "t")
            for k in range(count)]


def test_each_maxpool_is_a_pool_step_record(program, image):
    records = _records(image)
    steps = program.device_steps
    assert image.step_names == [s.name for s in steps]
    pools = [k for k, s in enumerate(steps) if isinstance(s, PoolStep)]
    assert [steps[k].layer for k in pools] == [f"pool{n}" for n in range(1, 6)]
    assert [r.max_pool for r in records] == [MAX_POOL_2X2 if k in pools else 0
                                             for k in range(len(steps))]
    for k in pools:
        record, step = records[k], steps[k]
        source, out = image.regions[step.input], image.regions[step.layer]
        c, h, w = source.shape
        assert out.shape == (c, h // 2, w // 2)
        assert (record.fmap_address, record.fmap_bytes) == (source.address, c * h * w)
        assert (record.output_address, record.plane_bytes) == (out.address, (h // 2) * (w // 2))
        assert (record.masks_address, record.quant_address, record.weights_address,
                record.weight_bytes, record.residual_address) == (0, 0, 0, 0, 0)
        expected = pool_descriptor(c, h, w)
        assert record.descriptor.as_value().value == expected.encode(CONFIG)
        d = record.descriptor
        assert (d.in_channels, d.out_channels, d.kernel, d.stride, d.period, d.relu,
                d.residual) == (c, c, 1, 2, 1, 0, 0)
    assert image.output_layer == "pool5" and image.regions["pool5"].shape == (16, 1, 1)


def _loaded(image, x, **options):
    device = ResidentDevice(CONFIG, MEMORY_BYTES, **options)
    device.memory[:len(image.model_bytes)] = image.model_bytes
    device.memory[image.input_region.address:image.input_region.address + x.numel()] = (
        x.to(torch.int8).numpy().tobytes())
    answer = device.handle(Command.CHECK_MODEL, encode_payload(MODEL_CHECK_LAYOUT, {
        "address": 0, "length": len(image.model_bytes),
        "crc": memory_crc(bytes(device.memory[:len(image.model_bytes)]))}))
    assert answer.status == Status.ACK
    return device


def _status(device):
    answer = device.handle(Command.RUN_STATUS, b"")
    view = RUN_STATUS_LAYOUT.from_bits(int.from_bytes(answer.payload, "little"))
    return {name: view[name] for name, _ in RUN_STATUS_LAYOUT}


def test_reference_board_runs_the_pools_from_memory_bit_exact(program, image):
    x = model_images(program.model, 1, seed=1000)[0]
    device = _loaded(image, x, steps_per_poll=1)
    assert device.handle(Command.INFER, encode_payload(MEM_ADDRESS_LAYOUT, {"address": 0})
                         ).status == Status.ACK
    record = layout_bytes(step_record_layout(CONFIG))
    # each RUN_STATUS runs one more step, then answers
    before = {"cycles": 0, "memory_reads": layout_bytes(PROGRAM_HEADER_LAYOUT), "memory_writes": 0}
    for k, step in enumerate(program.device_steps):
        after = _status(device)
        assert after["steps_done"] == k + 1
        if isinstance(step, PoolStep):
            source = image.regions[step.input]
            out = image.regions[step.layer]
            # the block-RAM gateware runner's cycles (tests/e2e/test_resident_gateware.py
            # checks the model against it)
            assert after["cycles"] - before["cycles"] == runner_max_pool_cycles(
                CONFIG, *source.shape, source.address,
                layout_bytes(PROGRAM_HEADER_LAYOUT) + k * record)
            assert after["memory_reads"] - before["memory_reads"] == record + source.size
            assert after["memory_writes"] - before["memory_writes"] == out.size
        before = after
    assert (before["running"], before["done"]) == (0, 1)
    golden = run_golden(program.model, x)
    for name, region in image.regions.items():
        if name != "input":
            data = bytes(device.memory[region.address:region.address + region.size])
            got = torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(region.shape)
            assert torch.equal(got.to(torch.int64), golden.outputs[name].reshape(region.shape)), name


def test_the_resident_driver_checks_every_layer_and_the_logits(program):
    images = model_images(program.model, 2, seed=1000)
    report = run_resident(program, images, "resident-ref", check_layers=True, progress=False)
    assert report.bit_exact
    for inference in report.inferences:
        assert set(inference.layers) >= {f"pool{n}" for n in range(1, 6)}
        assert all(problem is None for problem in inference.layers.values())
        assert inference.logits == inference.golden_logits


@pytest.mark.parametrize("field, value", [("max_pool", 3), ("plane_bytes", 7),
                                          ("fmap_bytes", 5), ("output_address", MEMORY_BYTES)])
def test_a_malformed_pool_record_is_refused_before_anything_runs(program, image, field, value):
    layout = step_record_layout(CONFIG)
    k = next(k for k, s in enumerate(program.device_steps) if isinstance(s, PoolStep))
    at = layout_bytes(PROGRAM_HEADER_LAYOUT) + k * layout_bytes(layout) + layout[field].offset // 8
    width = layout[field].shape.width // 8
    x = model_images(program.model, 1, seed=1000)[0]
    device = _loaded(image, x)
    device.memory[at:at + width] = value.to_bytes(width, "little")
    device.handle(Command.CHECK_MODEL, encode_payload(MODEL_CHECK_LAYOUT, {
        "address": 0, "length": len(image.model_bytes),
        "crc": memory_crc(bytes(device.memory[:len(image.model_bytes)]))}))
    answer = device.handle(Command.INFER, encode_payload(MEM_ADDRESS_LAYOUT, {"address": 0}))
    assert answer.reason == NakReason.BAD_STATE
    assert _status(device)["steps_done"] == 0


def test_run_network_vgg16_resident_on_the_reference_board(capsys):
    assert main(["run", "--network", "vgg16", "--width", "2", "--transport", "resident-ref",
                 "--check-layers", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "vgg16 PSD1_P16 width 2 on 32x32 images, 13 engine steps + 5 max-pool steps + 1 " \
           "host steps" in out and "resident mode" in out
    assert "BIT-EXACT" in out


def test_auto_mode_is_resident_where_the_board_has_memory():
    from psconv.commands.run import choose_mode

    def mode(board, transport="sim"):
        return choose_mode(argparse.Namespace(mode="auto", board=board, transport=transport))

    assert mode("ulx3s-85f") == "resident"
    assert mode(None, "resident-ref") == "resident"
    assert mode("icebreaker") == "streamed"


def test_bench_e2e_vgg16_runs_resident_and_refuses_streaming_without_the_pool_block(tmp_path,
                                                                                    capsys):
    from psconv.bench import e2e
    from psconv.config import EngineConfig
    from psconv.errors import PsconvError

    folder, report = e2e.run(width=2, mode="resident", outdir=tmp_path / "e2e", progress=False,
                             transport="resident-ref", arch="vgg16", baseline=None)
    assert report.bit_exact and report.model.startswith("vgg16")
    assert "VGG16-CIFAR PSD1_P16 width 2" in (folder / "e2e.json").read_text()
    with pytest.raises(PsconvError, match=r"layer 'pool1' is a max pool that cannot run "
                                          r"streamed: the engine has no output max-pool block"):
        e2e.run(width=2, mode="both", outdir=tmp_path / "both", progress=False, arch="vgg16",
                config=EngineConfig(max_pool=False))
