"""Thousands of requests through a FaultInjectingTransport: every one ends right, exactly once.

The host keeps its own model of what the device must hold (every write appended once, every
output byte read once, every command counted once) and compares it with the reference device
and with every response. A fault that slipped through (a write applied twice or lost, a replayed
read consuming output twice, a corrupted payload accepted) makes the comparison fail.
"""

import random
import struct
from collections import Counter

import pytest

from psconv.firmware.faults import (
    DIRECTIONS, FAULT_KINDS, FaultInjectingTransport, FaultRates, FrameSplitter, flip_bits,
    truncate_frame,
)
from psconv.firmware.link import LinkClient, LinkNak
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.frame import MAX_PAYLOAD, FrameParser, crc16_ccitt, encode_frame
from psconv.protocol.payloads import read_output_payload
from psconv.firmware.transport import LoopbackTransport
from psconv.errors import PsconvError
from psconv.hw.framing import LinkLayer
from psconv.sim.amaranth_transport import SimulatorTransport

from link_sim import give_reply, take_payload
from sim_helpers import stream_get
from link_reference_device import (
    BUSY_POLLS, IDENTITY, LAYER_BYTES, OUTPUT_BYTES, WRITE_COMMANDS, ReferenceDevice,
    encode_counters, expected_output,
)

RATES = FaultRates(bitflip=0.03, drop=0.02, duplicate=0.02, truncate=0.02, delay=0.03, garbage=0.02)


def _payload(rng, cap=MAX_PAYLOAD):
    size = rng.choice([0, 1, 2, 5, 16, 40, 100, 255, 300, MAX_PAYLOAD]) if rng.random() < 0.3 \
        else rng.randint(0, 64)
    return bytes(rng.getrandbits(8) for _ in range(min(size, cap)))


def _run_session(seed, n_requests, device, inner, *, timeout_s, inter_byte_timeout_s,
                 max_delay_s, silence_s, payload_cap=MAX_PAYLOAD, read_sizes=(0, 1, 33, 256, MAX_PAYLOAD)):
    """Drive ``n_requests`` random commands through a fault injector over ``inner`` to
    ``device`` (a ReferenceDevice behind some link), checking every answer and the end state."""
    rng = random.Random(seed)
    faulty = FaultInjectingTransport(inner, seed=seed, rates=RATES, max_delay_s=max_delay_s,
                                     silence_s=silence_s)
    client = LinkClient(faulty, timeout_s=timeout_s, retries=12,
                        inter_byte_timeout_s=inter_byte_timeout_s)

    memories = {c: bytearray() for c in WRITE_COMMANDS}
    executed = Counter({Command.READ_STATUS: 1})   # the client's session-start sync
    output, output_read, busy_polls, started = b"", bytearray(), 0, False
    refusals = Counter()

    def ok(code, payload=b""):
        response = client.request(code, payload)
        executed[Command(code)] += 1
        return response

    with pytest.raises(LinkNak, match="BAD_STATE"):
        client.request(Command.READ_OUTPUT, read_output_payload(64))
    refusals["BAD_STATE"] += 1
    for _ in range(n_requests):
        x = rng.random()
        if x < 0.45:
            command = rng.choice(WRITE_COMMANDS)
            payload = rng.getrandbits(8 * LAYER_BYTES).to_bytes(LAYER_BYTES, "little") \
                if command == Command.WRITE_LAYER else _payload(rng, payload_cap)
            if busy_polls and rng.random() < 0.2:
                with pytest.raises(LinkNak) as e:
                    client.request(command, payload)
                assert e.value.reason == NakReason.BUSY
                refusals["BUSY"] += 1
                continue
            if busy_polls:
                continue
            assert ok(command, payload).status == Status.ACK
            memories[command] += payload
        elif x < 0.52:
            if busy_polls:
                continue
            assert ok(Command.START).status == Status.ACK
            output, output_read, busy_polls, started = expected_output(memories), bytearray(), BUSY_POLLS, True
        elif x < 0.70:
            if not started:
                with pytest.raises(LinkNak, match="BAD_STATE"):
                    client.request(Command.READ_OUTPUT, read_output_payload(64))
                refusals["BAD_STATE"] += 1
                continue
            want = rng.choice(read_sizes)
            data = ok(Command.READ_OUTPUT, read_output_payload(want)).payload
            if busy_polls:
                assert data == b""
            else:
                expect = output[len(output_read):len(output_read) + want]
                assert data == expect
                output_read += data
        elif x < 0.85:
            response = ok(Command.READ_STATUS)
            assert response.payload == bytes([int(busy_polls > 0), int(started and not busy_polls)])
            busy_polls = max(0, busy_polls - 1)
        elif x < 0.93:
            response = ok(Command.READ_COUNTERS)
            executed[Command.READ_COUNTERS] -= 1        # counters are taken before this command
            assert response.payload == encode_counters(executed)
            executed[Command.READ_COUNTERS] += 1
        elif x < 0.98:
            assert ok(Command.IDENTIFY).payload == IDENTITY
        else:
            with pytest.raises(LinkNak, match="UNKNOWN_COMMAND"):
                client.request(0x40 + rng.randint(0, 15))
            refusals["UNKNOWN_COMMAND"] += 1

    # the device holds exactly what the host meant, each write and each command exactly once
    assert {c: bytes(v) for c, v in device.memories.items()} == {c: bytes(v) for c, v in memories.items()}
    assert +device.executed == +executed
    assert device.output_pos == len(output_read)
    return device, faulty, client, refusals


def test_thousands_of_requests_survive_every_fault_kind(capsys):
    device = ReferenceDevice(inter_byte_timeout_s=0.004)
    device, faulty, client, refusals = _run_session(
        2024, 10000, device, LoopbackTransport(device.link), timeout_s=0.05,
        inter_byte_timeout_s=0.01, max_delay_s=0.08, silence_s=0.03)
    report = (f"injected: {faulty.summary()}\n"
              f"host saw: {client.stats.summary()}\n"
              f"device: {device.link.stats}\nrefusals checked: {dict(refusals)}")
    with capsys.disabled():
        print("\n" + report)
    for direction in DIRECTIONS:
        for kind in FAULT_KINDS:
            assert faulty.injected[(direction, kind)] >= 10, (direction, kind, report)
    stats = client.stats
    # every request the host made is accounted for: executed once, or refused on purpose
    assert stats.requests == sum(device.executed.values()) - 1 + sum(refusals.values())
    assert refusals["BUSY"] and refusals["BAD_STATE"] and refusals["UNKNOWN_COMMAND"]
    assert stats.retransmissions > 100 and stats.stale_responses > 10
    assert stats.naks["BAD_CRC"] > 10 and stats.naks["TIMEOUT"] > 10
    assert device.link.stats.replays > 50   # lost answers recovered without re-executing


def test_fault_free_session_needs_no_retransmission():
    device = ReferenceDevice()
    faulty = FaultInjectingTransport(LoopbackTransport(device.link), seed=1)
    client = LinkClient(faulty, timeout_s=0.05, retries=0)
    for i in range(50):
        client.request(Command.WRITE_WEIGHTS, bytes([i]) * i)
    assert client.stats.retransmissions == 0 and sum(faulty.injected.values()) == 0
    assert bytes(device.memories[Command.WRITE_WEIGHTS]) == b"".join(bytes([i]) * i for i in range(50))


def test_small_bit_errors_never_pass_the_crc():
    rng = random.Random(7)
    parser = FrameParser(rescan=False)
    for _ in range(3000):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        frame = encode_frame(rng.getrandbits(8), rng.randint(1, 11), payload)
        damaged = flip_bits(frame, rng)
        assert damaged != frame
        events = parser.feed(damaged) + parser.expire()
        assert all(e.__class__.__name__ == "FrameError" for e in events), (frame.hex(), damaged.hex())


def test_splitter_and_truncation():
    rng = random.Random(3)
    frames = [encode_frame(i, 2, bytes(i)) for i in range(5)]
    units = FrameSplitter().feed(b"\x00\x01" + b"".join(frames) + b"\xA5")
    assert units == [(b"\x00\x01", False)] + [(f, True) for f in frames]
    for f in frames:
        t = truncate_frame(f, rng)
        assert 0 < len(t) < len(f) and f.startswith(t)


def test_fault_rates_are_validated():
    with pytest.raises(PsconvError, match="drop=1.5 must be within 0..1"):
        FaultRates(drop=1.5)
    with pytest.raises(PsconvError, match="sum to 1.200"):
        FaultRates(drop=0.6, bitflip=0.6)


def _reference_processor(dut, device):
    """A command processor testbench: LinkLayer command streams -> ReferenceDevice.handle."""
    async def processor(ctx):
        while True:
            header = await stream_get(ctx, dut.command)
            response = device.handle(header.code, await take_payload(ctx, dut, header.length))
            await give_reply(ctx, dut, response.status, response.payload)
    return processor


def test_gateware_link_layer_survives_faults(capsys):
    """The same fault storm against the gateware LinkLayer (Amaranth simulator, 1 us cycles):
    its dedupe and NAK rules keep every command executed exactly once."""
    device = ReferenceDevice()
    dut = LinkLayer(MAX_PAYLOAD, timeout_cycles=40)
    inner = SimulatorTransport(dut, dut.rx_data, dut.tx_data, [_reference_processor(dut, device)])
    device, faulty, client, refusals = _run_session(
        7, 500, device, inner, timeout_s=600e-6, inter_byte_timeout_s=60e-6, max_delay_s=800e-6,
        silence_s=100e-6, payload_cap=48, read_sizes=(0, 1, 33, 48))
    with capsys.disabled():
        print(f"\ngateware link: injected {faulty.summary()}\nhost saw: {client.stats.summary()}\n"
              f"{inner.cycles} cycles")
    assert sum(faulty.injected.values()) >= 100
    assert client.stats.retransmissions >= 30
