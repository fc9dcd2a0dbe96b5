"""Protocol layer: CRC, frame encoding, the incremental parser, and the host/device rules."""

import random
import struct

import pytest

from psconv.errors import PsconvError
from psconv.firmware.link import LinkClient, LinkNak, LinkProtocolError, LinkTimeout
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.frame import (MAX_PAYLOAD, SYNC, Frame, FrameError, FrameParser, Response,
                                   crc16_ccitt, encode_frame)
from psconv.protocol.payloads import read_output_payload
from psconv.sim.device_link import DeviceLink
from psconv.firmware.transport import LoopbackTransport, Transport, VirtualClock

from link_reference_device import IDENTITY, ReferenceDevice


def test_crc_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc16_ccitt(b"") == 0xFFFF
    # incremental use gives the same result
    assert crc16_ccitt(b"6789", crc16_ccitt(b"12345")) == 0x29B1


def test_crc_matches_bitwise_definition():
    def bitwise(data):
        crc = 0xFFFF
        for byte in data:
            crc ^= byte << 8
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        return crc
    rng = random.Random(1)
    for n in (1, 2, 7, 64, 300):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert crc16_ccitt(data) == bitwise(data)


def test_encode_frame_layout():
    # the worked example of docs/protocol.md: IDENTIFY, seq 0, no payload
    assert encode_frame(0, Command.IDENTIFY) == bytes.fromhex("a55a00010000f0b3")
    frame = encode_frame(0x12, Command.WRITE_MASKS, b"\x01\x02\x03")
    assert frame[:2] == SYNC
    assert frame[2:6] == bytes([0x12, 0x03, 0x03, 0x00])
    assert frame[6:9] == b"\x01\x02\x03"
    assert struct.unpack("<H", frame[9:])[0] == crc16_ccitt(frame[2:9])
    assert len(encode_frame(1, 2, bytes(MAX_PAYLOAD))) == MAX_PAYLOAD + 8


@pytest.mark.parametrize("args, match", [
    ((256, 1, b""), "seq 256"),
    ((0, 300, b""), "code 300"),
    ((0, 1, bytes(MAX_PAYLOAD + 1)), "1025 bytes: at most 1024"),
])
def test_encode_frame_refuses_bad_fields(args, match):
    with pytest.raises(PsconvError, match=match):
        encode_frame(*args)


def test_parser_byte_by_byte_and_garbage_between_frames():
    frames = [Frame(i, Command.WRITE_FMAP, bytes(range(i * 7 % 50))) for i in range(10)]
    rng = random.Random(2)
    stream = b""
    for f in frames:
        # noise, including lone sync halves, between frames
        stream += bytes([0xA5, 0x00, 0x5A]) + bytes(rng.getrandbits(8) & 0x7F for _ in range(5))
        stream += encode_frame(f.seq, f.code, f.payload)
    parser = FrameParser()
    events = []
    for b in stream:
        events += parser.feed(bytes([b]))
    assert events == frames
    assert parser.garbage_bytes == 8 * len(frames)


def test_parser_errors_and_resync():
    good = encode_frame(5, Command.START)
    bad = bytearray(encode_frame(6, Command.WRITE_MASKS, b"abc"))
    bad[7] ^= 0x10
    oversize = SYNC + struct.pack("<BBH", 7, 2, MAX_PAYLOAD + 1)
    for rescan in (True, False):
        events = FrameParser(rescan=rescan).feed(bytes(bad) + oversize + good)
        assert events == [FrameError(NakReason.BAD_CRC, 6), FrameError(NakReason.BAD_LENGTH, 7),
                          Frame(5, Command.START)]


def test_parser_timeout_reports_seq_only_when_known():
    parser = FrameParser()
    assert parser.feed(encode_frame(9, Command.START)[:5]) == []
    assert parser.mid_frame
    assert parser.expire() == [FrameError(NakReason.TIMEOUT, 9)]
    assert not parser.mid_frame
    parser.feed(SYNC)
    assert parser.expire() == []   # no seq byte yet: nothing to NAK


def test_parser_rescan_finds_frame_swallowed_by_a_truncated_one():
    good = encode_frame(3, Status.ACK)
    stream = encode_frame(2, Status.DATA, bytes(40))[:10] + good   # truncated, then a good frame
    for rescan, expected in ((True, [FrameError(NakReason.TIMEOUT, 2), Frame(3, Status.ACK)]),
                             (False, [FrameError(NakReason.TIMEOUT, 2)])):   # False: like the gateware
        parser = FrameParser(rescan=rescan)
        assert parser.feed(stream) == []      # still waiting for the 40-byte payload
        assert parser.expire() == expected
        assert not parser.mid_frame


def _client(device=None, **kw):
    device = device or ReferenceDevice()
    transport = LoopbackTransport(device.link)
    return device, LinkClient(transport, timeout_s=0.05, retries=3, **kw)


def test_client_request_and_seq_increment():
    device, client = _client()
    assert client.request(Command.IDENTIFY) == Response(1, Status.DATA, IDENTITY)  # seq 0: sync
    assert client.request(Command.WRITE_FMAP, b"xyz").status == Status.ACK
    assert client.next_seq == 3
    assert bytes(device.memories[Command.WRITE_FMAP]) == b"xyz"


def test_client_seq_wraps_and_duplicates_are_replayed_not_executed():
    device, client = _client(first_seq=250)
    for i in range(20):
        client.request(Command.WRITE_QUANT, bytes([i]))
    assert bytes(device.memories[Command.WRITE_QUANT]) == bytes(range(20))
    # a retransmission of the last frame: answered from the stored response, not executed
    last_seq = (client.next_seq - 1) % 256
    reply = device.link.receive(encode_frame(last_seq, Command.WRITE_QUANT, b"\x13"), 10.0)
    assert reply == encode_frame(last_seq, Status.ACK)
    assert bytes(device.memories[Command.WRITE_QUANT]) == bytes(range(20))
    assert device.link.stats.replays == 1


def test_session_sync_survives_a_device_holding_the_same_seq():
    device = ReferenceDevice()
    _, old = _client(device)
    old.request(Command.WRITE_MASKS, b"old")       # the device now remembers seq 1
    new = LinkClient(LoopbackTransport(device.link), timeout_s=0.05, retries=2, first_seq=1)
    new.request(Command.WRITE_MASKS, b"new")       # seq 1 is the sync; this one is seq 2
    assert bytes(device.memories[Command.WRITE_MASKS]) == b"oldnew"


def test_client_raises_nak_with_command_seq_reason():
    device, client = _client()
    with pytest.raises(LinkNak, match=r"READ_OUTPUT \(seq 1\) refused by the device: NAK BAD_STATE") as e:
        client.request(Command.READ_OUTPUT, read_output_payload(16))
    assert e.value.reason == NakReason.BAD_STATE and e.value.attempts == 1
    with pytest.raises(LinkNak, match="UNKNOWN_COMMAND"):
        client.request(0x77)
    # a command-level BAD_LENGTH is replayed on every retransmission, then reported
    with pytest.raises(LinkNak, match=r"WRITE_LAYER \(seq 3\).*BAD_LENGTH.*all 4 attempts"):
        client.request(Command.WRITE_LAYER, b"short")
    assert device.executed[Command.WRITE_LAYER] == 0


class _SilentTransport(Transport):
    def __init__(self):
        self.clock = VirtualClock()
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))

    def read(self, max_bytes, timeout_s):
        self.clock.sleep(timeout_s)
        return b""


def test_client_timeout_names_command_seq_and_attempts():
    transport = _SilentTransport()
    client = LinkClient(transport, timeout_s=0.1, retries=2, synchronize=False)
    with pytest.raises(LinkTimeout, match=r"START \(seq 0\): no valid response after 3 attempts") as e:
        client.request(Command.START)
    assert e.value.attempts == 3
    assert len(set(transport.written)) == 1 and len(transport.written) == 3  # same frame, resent
    assert client.stats.timeouts == 3 and client.stats.retransmissions == 2


class _ScriptedTransport(_SilentTransport):
    """Answers the n-th write with script[n] (bytes)."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self._rx = b""

    def write(self, data):
        super().write(data)
        self._rx += self.script.pop(0) if self.script else b""

    def read(self, max_bytes, timeout_s):
        if self._rx:
            data, self._rx = self._rx, b""
            return data
        return super().read(max_bytes, timeout_s)


def test_client_drops_stale_and_retries_on_damaged_response():
    damaged = bytearray(encode_frame(0, Status.DATA, b"good"))
    damaged[-3] ^= 1
    transport = _ScriptedTransport([
        encode_frame(255, Status.ACK) + bytes(damaged),                   # stale, then damaged
        encode_frame(0, Status.NAK, bytes([NakReason.BAD_CRC])),         # retryable NAK
        encode_frame(0, Status.DATA, b"good"),
    ])
    client = LinkClient(transport, timeout_s=0.1, retries=5, synchronize=False)
    assert client.request(Command.READ_COUNTERS).payload == b"good"
    assert client.stats.stale_responses == 1
    assert client.stats.damaged_responses["BAD_CRC"] == 1
    assert client.stats.naks["BAD_CRC"] == 1
    assert client.stats.retransmissions == 2


def test_client_refuses_unknown_status():
    transport = _ScriptedTransport([encode_frame(0, 0x42, b"")])
    client = LinkClient(transport, timeout_s=0.1, retries=1, synchronize=False)
    with pytest.raises(LinkProtocolError, match="unknown status 0x42"):
        client.request(Command.START)


def test_device_link_naks_damage_and_times_out_truncated_frames():
    device = ReferenceDevice(inter_byte_timeout_s=0.01)
    link = device.link
    bad = bytearray(encode_frame(4, Command.WRITE_FMAP, b"data"))
    bad[8] ^= 0x80
    assert link.receive(bytes(bad), 0.0) == encode_frame(4, Status.NAK, bytes([NakReason.BAD_CRC]))
    assert link.receive(encode_frame(5, Command.WRITE_FMAP, b"data")[:7], 1.0) == b""
    assert link.next_deadline() == pytest.approx(1.01)
    assert link.poll(1.005) == b""
    assert link.poll(1.02) == encode_frame(5, Status.NAK, bytes([NakReason.TIMEOUT]))
    assert bytes(device.memories[Command.WRITE_FMAP]) == b""
    # a NAKed (link-level) seq is not remembered: the good retransmission executes
    assert link.receive(encode_frame(5, Command.WRITE_FMAP, b"data"), 2.0) == encode_frame(5, Status.ACK)
    assert bytes(device.memories[Command.WRITE_FMAP]) == b"data"


def test_worked_examples_in_docs_are_valid_frames():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    block = text.split("```frames\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) >= 8
    for line in lines:
        raw = bytes.fromhex(line.split(":", 1)[1])
        (frame,) = FrameParser().feed(raw)
        assert isinstance(frame, Frame), line
        assert encode_frame(frame.seq, frame.code, frame.payload) == raw, line
        name = line.split(",")[0].split()[0]
        assert name in Command.__members__ or name in Status.__members__, line
        assert frame.code == (Command.__members__.get(name) or Status[name]), line
        assert f"seq {frame.seq}" in line
