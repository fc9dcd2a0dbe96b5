"""The whole job on the simulated board: ResNet18 through ``BoardTop(bridge=True)`` in Verilator.

A reduced-width (8) seeded PSD1_P16 ResNet18, all 20 convolutions on the engine and the
classifier on the host, streamed by the ``Driver`` over the socket bridge and compared with the
golden model at every layer and at the logits; the same through a fault-injecting link; and the
error paths a user meets (wrong engine, missing serial port, silent device, NAK), plus the
``psconv run`` command and the simulator's shutdown when the host dies.

The engine configuration is smaller than the ULX3S one (Tm=4, Tn=8, 64 channels, 16 per patch
buffer, so the deeper layers run in input-channel passes as on the ULX3S) so the Verilator build
takes well under a minute the first time; it is cached under build/rtl.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from psconv import cli
from psconv.errors import PsconvError
from psconv.firmware.compiler import compile_model
from psconv.firmware.driver import Driver, EngineMismatch
from psconv.firmware.faults import uniform_fault_rates
from psconv.firmware.faults import FAULT_KINDS, FaultInjectingTransport
from psconv.firmware.link import LinkNak, LinkTimeout
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.payloads import mask_payload
from psconv.protocol.descriptor import DESCRIPTOR_RULES
from psconv.firmware.transport import SocketTransport, transport_from_spec
from psconv.families import family_by_name
from psconv.nn.default import default_images, default_quantized_model
from psconv.sim.bridge import SimBoard, SimTransport, build_board
from psconv.sim.golden.ops import quantize_input

from e2e_helpers import SIM_CONFIG, DyingHost, HostDied, breaking_descriptors, descriptor_payload

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def board_build():
    start = time.perf_counter()
    build = build_board(SIM_CONFIG)
    print(f"\nsimulated board build: {'cached' if build.cached else f'{time.perf_counter() - start:.0f} s'}")
    return build


@pytest.fixture(scope="module")
def width8():
    model = default_quantized_model("PSD1_P16", 8)
    image = quantize_input(default_images(1, seed=1000)[0], model.input_scale)
    return compile_model(model, SIM_CONFIG), image


def test_reduced_resnet18_is_bit_exact_on_the_simulated_board(board_build, width8, capsys):
    program, image = width8
    started = time.perf_counter()
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        driver = Driver(transport, SIM_CONFIG, timeout_s=2.0)
        report = driver.run_program(program, image, progress=False)
        transport.close()
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n{report.table()}\n" + "\n".join(report.summary_lines())
              + f"\nreduced ResNet18 (width 8) on the simulated board: {seconds:.1f} s")
    assert len(report.steps) == 20 and len(report.layers) == 22      # 20 conv + avgpool + fc
    assert max(s.descriptor.in_channels for s in program.engine_steps) == 4 * SIM_CONFIG.patch_channels
    assert sum(layer.op in ("conv", "fc") for layer in program.model.layers) == 21
    assert report.bit_exact, report.first_mismatch
    assert all(s.bit_exact for s in report.steps)
    assert report.logits == report.golden_logits and len(report.logits) == 10
    # the device counted every cycle and the MACs the compiler expected
    for step, engine_step in zip(report.steps, program.engine_steps):
        assert step.cycles > 0 and step.macs == engine_step.useful_macs
    assert 0 < report.utilization <= report.compute_utilization <= 1
    # a clean link: no retransmission, no device-side error
    assert driver.link.stats.retransmissions == 0
    assert report.device_link["crc_errors"] == report.device_link["replays"] == 0


def test_faulty_link_still_bit_exact(board_build, width8, capsys):
    program, image = width8
    with SimBoard(SIM_CONFIG) as board:
        injector = FaultInjectingTransport(board.connect(), seed=7, rates=uniform_fault_rates(0.1),
                                           max_delay_s=0.1, silence_s=0.05)
        driver = Driver(injector, SIM_CONFIG, timeout_s=0.3, retries=20)
        started = time.perf_counter()
        report = driver.run_program(program, image, progress=False)
        seconds = time.perf_counter() - started
        injector.close()
    kinds = {kind: sum(injector.injected[(d, kind)] for d in ("to_device", "to_host"))
             for kind in FAULT_KINDS}
    injected = sum(kinds.values())
    with capsys.disabled():
        print(f"\nfaulty link: {injected} faults injected and survived ({injector.summary()})\n"
              f"host saw: {driver.link.stats.summary()}\ndevice: {report.device_link}\n"
              f"width-8 ResNet18 through the faulty link: {seconds:.1f} s, "
              f"bit-exact: {report.bit_exact}")
    assert report.bit_exact, report.first_mismatch
    assert injected >= 40 and all(count >= 1 for count in kinds.values()), kinds
    assert driver.link.stats.retransmissions >= 10
    assert report.device_link["replays"] >= 1 and report.device_link["crc_errors"] >= 1


def test_errors_name_the_problem(board_build):
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        # another engine size: the differing fields are named
        with pytest.raises(EngineMismatch, match=r"tn: board 8, program 16") as e:
            Driver(transport, SIM_CONFIG.replace(tn=16)).identify()
        assert set(e.value.fields) == {"tn", "config_hash"}
        # same sizes, another family: only the hash can tell
        other = SIM_CONFIG.replace(family=family_by_name("PSD2_P16"))
        with pytest.raises(EngineMismatch, match=r"config_hash: .*pattern family"):
            Driver(transport, other).identify()
        # a NAK names the step, the command, its seq and the reason
        driver = Driver(transport, SIM_CONFIG)
        driver.identify()
        with pytest.raises(LinkNak, match=r"layer3 tile 1/2: WRITE_FMAP \(seq \d+\) refused by "
                                          r"the device: NAK BAD_STATE") as e:
            driver._request(Command.WRITE_FMAP, bytes(SIM_CONFIG.tn), "layer3 tile 1/2")
        assert e.value.reason == NakReason.BAD_STATE
        transport.close()
    # a serial port that is not there
    with pytest.raises(PsconvError, match="serial port /dev/ttyUSB_psconv_none does not exist"):
        transport_from_spec("serial:/dev/ttyUSB_psconv_none@3000000")


def test_every_descriptor_field_past_each_limit_is_naked_naming_it_and_nothing_starts(board_build):
    cases = list(breaking_descriptors(SIM_CONFIG))
    # every rule the gateware checks for this engine (all but the one its output max pool
    # implies), each field broken on both sides
    live = {index for index, rule in enumerate(DESCRIPTOR_RULES)
            if rule.implied is None or not rule.implied(SIM_CONFIG)}
    assert {index for index, _ in cases} == live
    assert len(live) == len(DESCRIPTOR_RULES) - 1
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        driver = Driver(transport, SIM_CONFIG)
        driver.identify()
        for index, fields in cases:
            rule = DESCRIPTOR_RULES[index]
            with pytest.raises(LinkNak, match=rf"NAK BAD_DESCRIPTOR .*: the descriptor's "
                                              rf"{re.escape(rule.name)} is \d+; allowed: ") as e:
                driver._request(Command.WRITE_LAYER, descriptor_payload(SIM_CONFIG, fields))
            assert (e.value.reason, e.value.detail) == (NakReason.BAD_DESCRIPTOR, index), fields
            assert driver.status()["busy"] == 0
        # none was taken: there is no layer to start
        with pytest.raises(LinkNak) as e:
            driver._request(Command.START)
        assert e.value.reason == NakReason.BAD_STATE
        # the limits themselves are taken
        largest = dict(in_channels=SIM_CONFIG.patch_channels, out_channels=SIM_CONFIG.max_out_channels,
                       in_height=SIM_CONFIG.max_height, in_width=SIM_CONFIG.max_width, stride=2,
                       kernel=1, relu=1, residual=1, period=SIM_CONFIG.max_period)
        driver._request(Command.WRITE_LAYER, descriptor_payload(SIM_CONFIG, largest))
        driver._request(Command.WRITE_LAYER, descriptor_payload(SIM_CONFIG, {
            **largest, "residual": 0, "pool": 1}))
        # and the smallest maps that pool to something: 2x2 at stride 1, 3x3 at stride 2
        for size, stride in ((2, 1), (3, 2)):
            driver._request(Command.WRITE_LAYER, descriptor_payload(SIM_CONFIG, {
                **largest, "in_height": size, "in_width": size, "stride": stride,
                "residual": 0, "pool": 1}))
        transport.close()


def test_a_mask_table_without_taps_is_naked_naming_the_mask(board_build):
    """A hostile host's table of masks that keep no taps (T = 0: the address generator would
    divide by it) is refused at its first mask, named in one line; the board still answers and
    the layer is ABORTed."""
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        driver = Driver(transport, SIM_CONFIG)
        driver.identify()
        layer = dict(in_channels=4, out_channels=4, in_height=4, in_width=4, stride=1, kernel=3,
                     relu=0, residual=0, period=2)
        driver._request(Command.WRITE_LAYER, descriptor_payload(SIM_CONFIG, layer))
        driver._request(Command.START)
        with pytest.raises(LinkNak, match=r"^WRITE_MASKS \(seq \d+\) refused by the device: NAK "
                                          r"NO_TAPS .*: mask 0 of the payload is 0xFE00; allowed: a "
                                          r"mask that keeps at least one of its 9 taps \(1\.\.511\)$"
                           ) as e:
            driver._request(Command.WRITE_MASKS, mask_payload((0xFE00, 0x0000)))
        assert e.value.reason == NakReason.NO_TAPS
        assert driver.status()["busy"] == 1
        driver.abort()
        assert driver.status()["busy"] == 0
        transport.close()


def test_a_host_killed_mid_layer_leaves_the_board_busy_and_the_next_host_recovers_it(
        board_build, width8):
    program, image = width8
    with SimBoard(SIM_CONFIG) as board:
        transport = board.connect()
        # the first host dies in the middle of its second layer's input map
        dying = Driver(DyingHost(transport, bytes_left=12_000), SIM_CONFIG, timeout_s=2.0)
        with pytest.raises(HostDied):
            dying.run_program(program, image, progress=False)
        assert dying._steps_started >= 2
        # a new host on the same line: BUSY, so identify, abort, rerun; bit-exact to the logits
        successor = Driver(transport, SIM_CONFIG, timeout_s=2.0)
        assert successor.status()["busy"] == 1
        report = successor.run_program(program, image, progress=False)
        transport.close()
    assert successor.recoveries == 1
    assert report.bit_exact, report.first_mismatch
    assert report.logits == report.golden_logits


def test_a_silent_device_times_out_with_the_command_named():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    transport = SocketTransport("127.0.0.1", port)
    driver = Driver(transport, SIM_CONFIG, timeout_s=0.05, retries=1)
    # the session-start READ_STATUS is the first command that goes unanswered
    with pytest.raises(LinkTimeout, match=r"identifying the board: READ_STATUS \(seq 0\): no "
                                          r"valid response after 2 attempts.*Is the board connected"):
        driver.identify()
    transport.close()
    server.close()


def test_psconv_run_command(board_build, tmp_path, capsys):
    config = tmp_path / "engine.json"
    config.write_text(json.dumps(SIM_CONFIG.to_json()))
    report = tmp_path / "report.json"
    code = cli.main(["run", "--mode", "streamed", "--config", str(config), "--width", "4",
                     "--no-progress", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: BIT-EXACT" in out and "multiplier utilization" in out
    assert "layer4.1.conv2" in out and "logits (golden)" in out
    data = json.loads(report.read_text())
    assert data["bit_exact"] is True and len(data["steps"]) == 20
    # --faults: the same network through a fault-injecting link, still bit-exact
    code = cli.main(["run", "--mode", "streamed", "--config", str(config), "--width", "4",
                     "--no-progress", "--faults", "0.05", "--fault-seed", "3", "--json",
                     str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: BIT-EXACT" in out and "faults injected: " in out
    data = json.loads(report.read_text())
    assert data["faults_injected"] > 5 and "to_device" in data["fault_summary"]
    # the transport spec of a missing device: one line, exit status 2
    code = cli.main(["run", "--config", str(config), "--width", "4", "--no-progress",
                     "--transport", "serial:/dev/ttyUSB_psconv_none"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def _alive(pid):
    """Running (an exited process nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_sim_transport_spec_and_shutdown_when_the_host_dies(board_build, tmp_path):
    config = tmp_path / "engine.json"
    config.write_text(json.dumps(SIM_CONFIG.to_json()))
    transport = transport_from_spec(f"sim:{config}")
    assert isinstance(transport, SimTransport)
    process = transport.board.process
    Driver(transport, SIM_CONFIG).identify()
    transport.close()
    assert process.poll() is not None          # close() waited for the simulator to end

    # a host killed mid-session: its simulator must notice and end by itself
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{os.path.dirname(__file__)!r}, {os.path.dirname(os.path.dirname(__file__))!r}]
        from e2e_helpers import SIM_CONFIG, DyingHost, HostDied, breaking_descriptors, descriptor_payload
        from psconv.sim.bridge import SimBoard
        board = SimBoard(SIM_CONFIG, quiet=True)
        transport = board.connect()
        print(board.process.pid, flush=True)
        os._exit(1)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120)
    pid = int(child.stdout.split()[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        pytest.fail(f"the simulator (launcher pid {pid}) outlived its dead host by 30 s")


def test_bench_e2e_writes_its_results(board_build, tmp_path, capsys):
    from psconv.bench import e2e

    folder, report = e2e.run(width=4, config=SIM_CONFIG, outdir=tmp_path / "e2e", progress=False,
                             mode="streamed")
    out = capsys.readouterr().out
    assert report.bit_exact
    data = json.loads((folder / "e2e.json").read_text())
    assert len(data["rows"]) == 20 and data["summary"]["bit-exact (every layer and the logits)"]
    kinds = e2e.offchip_bytes(compile_model(default_quantized_model("PSD1_P16", 4), SIM_CONFIG))
    assert str(kinds["total"]) in data["summary"]["off-chip bytes per inference"]
    assert kinds["weights"] > 0 and kinds["residuals"] > 0
    assert (folder / "e2e.csv").is_file() and (folder / "e2e.png").is_file()
    assert "whole-network multiplier utilization" in out
