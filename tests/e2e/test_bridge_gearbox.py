# amaranth: UnusedElaboratable=no
"""The wide bridge's gearboxes in the Amaranth simulator: byte streams must survive them exactly.

``BeatsToBytes`` (host beats -> the link layer's bytes) and ``BytesToBeats`` (the link layer's
bytes -> host beats) sit between the cocotb bench and ``LinkLayer`` in the simulated board
(``BoardTop(bridge=True, bridge_beat_bytes=N)``). Random partial beats, random gaps and random
back-pressure on both sides; the bytes out must equal the bytes in (nothing dropped, duplicated
or reordered), at most one per cycle, with no gap while the FIFO is fed, and the end of a short
answer must come out ``flush_cycles + 3`` cycles after its last byte.
"""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.firmware.link import LinkClient, LinkNak
from psconv.protocol.codes import Command
from psconv.protocol.payloads import read_output_payload
from psconv.hw.board_top import BoardTop
from psconv.hw.byte_gearbox import BeatsToBytes, BytesToBeats
from psconv.protocol.payloads import identity_blob
from psconv.sim.amaranth_transport import SimulatorTransport

from e2e_helpers import TINY_CONFIG
from sim_helpers import run, stream_get, stream_put

BEAT = 8


def _beats_of(rng, stream, *, min_count=0):
    """Random beats (count 0..BEAT) covering ``stream``; the unused data bytes are noise."""
    beats, pos = [], 0
    while pos < len(stream):
        count = rng.randint(min_count, BEAT)
        chunk = stream[pos:pos + count]
        noise = bytes(rng.randrange(256) for _ in range(BEAT - len(chunk)))
        beats.append((int.from_bytes(chunk + noise, "little"), len(chunk)))
        pos += len(chunk)
    return beats


@pytest.mark.parametrize("seed, gap, pressure", [(1, 0.0, 0.0), (2, 0.5, 0.3), (3, 0.1, 0.8)])
def test_beats_to_bytes_keeps_every_byte_in_order(seed, gap, pressure):
    rng = random.Random(seed)
    stream = bytes(rng.randrange(256) for _ in range(3000))
    beats = _beats_of(rng, stream)
    assert any(count == 0 for _, count in beats) and any(count == BEAT for _, count in beats)
    dut = BeatsToBytes(BEAT, fifo_beats=4)
    out = bytearray()

    async def consumer(ctx):
        while len(out) < len(stream):
            out.append(await stream_get(ctx, dut.bytes, stall=pressure, rng=rng))
        # nothing more comes out, ever
        ctx.set(dut.bytes.ready, 1)
        for _ in range(3 * BEAT):
            _, _, valid = await ctx.tick().sample(dut.bytes.valid)
            assert not valid, "a byte came out after the whole stream had (duplicate?)"

    async def producer(ctx):
        for word, count in beats:
            await stream_put(ctx, dut.beats, {"data": word, "count": count}, gap=gap, rng=rng)

    run(dut, consumer, background=[producer], max_cycles=200_000)
    assert bytes(out) == stream


def test_beats_to_bytes_sends_a_byte_every_cycle_while_fed():
    stream = bytes(range(256)) * 2
    dut = BeatsToBytes(BEAT, fifo_beats=2)
    seen = []     # cycle of each byte

    async def consumer(ctx):
        ctx.set(dut.bytes.ready, 1)
        cycle = 0
        while len(seen) < len(stream):
            _, _, valid, byte = await ctx.tick().sample(dut.bytes.valid, dut.bytes.payload)
            if valid:
                assert byte == stream[len(seen)]
                seen.append(cycle)
            cycle += 1

    async def producer(ctx):
        for k in range(0, len(stream), BEAT):
            chunk = stream[k:k + BEAT]
            await stream_put(ctx, dut.beats, {"data": int.from_bytes(chunk, "little"), "count": len(chunk)})

    run(dut, consumer, background=[producer], max_cycles=200_000)
    assert seen[0] == 3                                   # taken in cycle 0, offered in 3
    assert seen == list(range(seen[0], seen[0] + len(stream)))    # then never a gap


@pytest.mark.parametrize("seed, pressure", [(4, 0.0), (5, 0.4), (6, 0.9)])
def test_bytes_to_beats_keeps_every_byte_in_order(seed, pressure):
    rng = random.Random(seed)
    flush = 5
    # answers of random lengths, separated by random gaps, some shorter than the flush delay
    answers = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, BEAT, 2 * BEAT + 1,
                                                                  rng.randrange(1, 80)])))
               for _ in range(120)]
    gaps = [rng.choice([0, 1, flush - 1, flush, 3 * flush]) for _ in answers]
    stream = b"".join(answers)
    dut = BytesToBeats(BEAT, fifo_beats=3, flush_cycles=flush)
    beats = []

    async def producer(ctx):
        for answer, gap in zip(answers, gaps):
            for byte in answer:
                await stream_put(ctx, dut.bytes, byte)
                # bytes inside an answer may come with short gaps too
                if rng.random() < 0.1:
                    await ctx.tick().repeat(rng.randrange(1, flush))
            if gap:
                await ctx.tick().repeat(gap)

    async def consumer(ctx):
        while sum(count for _, count in beats) < len(stream):
            beat = await stream_get(ctx, dut.beats, stall=pressure, rng=rng)
            beats.append((int(beat.data), int(beat.count)))
        ctx.set(dut.beats.ready, 1)
        for _ in range(4 * flush):
            _, _, valid = await ctx.tick().sample(dut.beats.valid)
            assert not valid, "a beat came out after the whole stream had (duplicate?)"

    run(dut, consumer, background=[producer], max_cycles=200_000)
    assert all(1 <= count <= BEAT for _, count in beats)
    out = b"".join(word.to_bytes(BEAT, "little")[:count] for word, count in beats)
    assert out == stream
    full = sum(count == BEAT for _, count in beats)
    assert full >= len(stream) // BEAT // 3, "beats should mostly be full while bytes flow"


@pytest.mark.parametrize("length", [1, 5, BEAT, BEAT + 3])
def test_bytes_to_beats_does_not_hold_back_a_short_answer(length):
    flush = 6
    dut = BytesToBeats(BEAT, fifo_beats=4, flush_cycles=flush)
    answer = bytes(range(10, 10 + length))
    marks = {}

    async def producer(ctx):
        for byte in answer:
            await stream_put(ctx, dut.bytes, byte)

    async def consumer(ctx):
        ctx.set(dut.beats.ready, 1)
        got = bytearray()
        cycle = 0
        while len(got) < len(answer):
            _, _, valid, beat, byte_valid, byte_ready = await ctx.tick().sample(
                dut.beats.valid, dut.beats.payload, dut.bytes.valid, dut.bytes.ready)
            if byte_valid and byte_ready:
                marks["last byte"] = cycle
            if valid:
                got += int(beat.data).to_bytes(BEAT, "little")[:int(beat.count)]
                marks["beat"] = cycle
            cycle += 1
        assert bytes(got) == answer

    run(dut, consumer, background=[producer], max_cycles=1000)
    assert marks["beat"] - marks["last byte"] == (3 if length % BEAT == 0 else flush + 3)


def test_gearbox_and_board_parameters_are_checked():
    with pytest.raises(PsconvError, match=r"bridge beat width 0 must be an integer >= 1"):
        BeatsToBytes(0)
    with pytest.raises(PsconvError, match=r"bridge FIFO depth 1 must be an integer >= 2"):
        BytesToBeats(8, fifo_beats=1)
    with pytest.raises(PsconvError, match=r"bridge_beat_bytes=16 needs bridge=True"):
        BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge_beat_bytes=16)
    wide = BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge=True, bridge_beat_bytes=16)
    assert set(wide.signature.members) == {"rx_beats", "tx_beats", "engine_active"}
    narrow = BoardTop(TINY_CONFIG, 12_000_000, 3_000_000, bridge=True)
    assert set(narrow.signature.members) == {"rx_data", "tx_data"}


class WideBridgeHarness(wiring.Component):
    """``BoardTop(bridge=True, bridge_beat_bytes=BEAT)`` with host-side gearboxes back to bytes,
    so the same ``LinkClient`` that talks to a serial port talks to the wide ports."""

    def __init__(self, config):
        self.board = BoardTop(config, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400,
                              bridge_beat_bytes=BEAT, bridge_fifo_beats=2)
        super().__init__({"rx_data": In(stream.Signature(8)), "tx_data": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = board = self.board
        m.submodules.host_tx = host_tx = BytesToBeats(BEAT, fifo_beats=2, flush_cycles=1)
        m.submodules.host_rx = host_rx = BeatsToBytes(BEAT, fifo_beats=2)
        wiring.connect(m, wiring.flipped(self.rx_data), host_tx.bytes)
        wiring.connect(m, host_tx.beats, board.rx_beats)
        wiring.connect(m, board.tx_beats, host_rx.beats)
        wiring.connect(m, host_rx.bytes, wiring.flipped(self.tx_data))
        return m


def test_board_top_answers_through_its_wide_ports():
    dut = WideBridgeHarness(TINY_CONFIG)
    transport = SimulatorTransport(dut, dut.rx_data, dut.tx_data)
    client = LinkClient(transport, timeout_s=5e-3, retries=1)
    assert client.request(Command.IDENTIFY).payload == identity_blob(TINY_CONFIG)
    with pytest.raises(LinkNak, match=r"READ_OUTPUT \(seq \d+\) refused by the device: NAK BAD_ST"):
        client.request(Command.READ_OUTPUT, read_output_payload(16))
    # a frame many times the rx FIFO (2 beats): back-pressure, nothing lost (else BAD_CRC)
    with pytest.raises(LinkNak, match=r"WRITE_FMAP \(seq \d+\) refused by the device: NAK BAD_ST"):
        client.request(Command.WRITE_FMAP, bytes(range(200)))
    assert client.request(Command.IDENTIFY).payload == identity_blob(TINY_CONFIG)
    assert client.stats.retransmissions == 0
