# amaranth: UnusedElaboratable=no
"""Frame gateware in the Amaranth simulator, checked against psconv.protocol.frame.

FrameReceiver is compared event for event with ``FrameParser(rescan=False)`` (the same machine
in Python) on good frames, damaged frames, truncation, oversize lengths and garbage; the
transmitter's bytes must equal ``encode_frame``; LinkLayer must apply the dedupe rules.
(Line 1 silences Amaranth's unused-elaboratable warning for constructors expected to refuse.)
"""

import random

import pytest

from psconv.errors import PsconvError
from psconv.firmware.faults import flip_bits, garbage_bytes, truncate_frame
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.frame import SYNC, Frame, FrameError, FrameParser, crc16_ccitt, encode_frame
from amaranth import Module
from amaranth.lib import wiring

from psconv.hw.framing import CRC16, FrameReceiver, FrameTransmitter, LinkLayer
from psconv.hw.uart import UART

from link_sim import give_reply, take_payload
from sim_helpers import run, stream_get, stream_put

MAX = 64          # small buffers keep the simulations short; one test uses the real 1024
TIMEOUT = 24      # inter-byte timeout in cycles


def test_crc16_gateware_matches_software():
    dut = CRC16()
    rng = random.Random(5)
    vectors = [b"123456789"] + [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20)))
                                for _ in range(8)]
    results = []

    async def bench(ctx):
        for v in vectors:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.valid, 1)
            for b in v:
                ctx.set(dut.data, b)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            results.append(ctx.get(dut.crc))

    run(dut, bench, max_cycles=200_000)
    assert results[0] == 0x29B1
    assert results == [crc16_ccitt(v) for v in vectors]


def receiver_events(chunks, *, max_payload=MAX, ready_prob=1.0, seed=0):
    """Feed ``chunks`` (bytes, or an int = idle cycles) to a FrameReceiver; return its events."""
    dut = FrameReceiver(max_payload, TIMEOUT)
    events = []
    total = sum(len(c) if isinstance(c, bytes) else c for c in chunks)

    async def driver(ctx):
        for chunk in chunks:
            if isinstance(chunk, int):
                await ctx.tick().repeat(chunk)
            else:
                for b in chunk:
                    await stream_put(ctx, dut.rx_data, b)
        # the last frame's payload drains at the consumer's pace
        await ctx.tick().repeat(int((max_payload + 10) / ready_prob) + 2 * TIMEOUT)

    async def collector(ctx):
        rng = random.Random(seed)
        header, payload = None, bytearray()
        async for _, _, fv, fr, f, pv, pr, p, ev, er, e in ctx.tick().sample(
                dut.frame.valid, dut.frame.ready, dut.frame.payload,
                dut.payload.valid, dut.payload.ready, dut.payload.payload,
                dut.error.valid, dut.error.ready, dut.error.payload):
            if fv and fr:
                assert header is None, "header before the previous payload finished"
                if f.length == 0:
                    events.append(Frame(f.seq, f.code, b""))
                else:
                    header, payload = f, bytearray()
            if pv and pr:
                assert header is not None, "payload beat without a header"
                payload.append(p.data)
                assert bool(p.last) == (len(payload) == header.length), "last misplaced"
                if p.last:
                    events.append(Frame(header.seq, header.code, bytes(payload)))
                    header = None
            if ev and er:
                events.append(FrameError(NakReason(e.reason), e.seq))
            for port in (dut.frame, dut.payload, dut.error):
                ctx.set(port.ready, rng.random() < ready_prob)

    run(dut, driver, background=[collector], max_cycles=20 * total + 10_000)
    return events


def software_events(chunks, max_payload=MAX):
    """The same input through FrameParser(rescan=False); an idle chunk >= TIMEOUT expires it."""
    parser = FrameParser(max_payload, rescan=False)
    events = []
    for chunk in chunks:
        if isinstance(chunk, int):
            if chunk >= TIMEOUT:
                events += parser.expire()
        else:
            events += parser.feed(chunk)
    return events + parser.expire()


def _random_frames(rng, n, max_payload=MAX):
    return [Frame(rng.getrandbits(8), rng.randint(1, 11),
                  bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 2, rng.randint(0, max_payload)]))))
            for _ in range(n)]


def test_good_frames_back_to_back_with_back_pressure():
    rng = random.Random(11)
    frames = _random_frames(rng, 12) + [Frame(7, 5, bytes(range(MAX)))]
    stream = b"".join(encode_frame(f.seq, f.code, f.payload) for f in frames)
    assert receiver_events([stream]) == frames
    assert receiver_events([stream], ready_prob=0.4, seed=3) == frames


def test_full_size_payload():
    frame = Frame(0x42, Command.WRITE_WEIGHTS, bytes(random.Random(1).getrandbits(8) for _ in range(1024)))
    assert receiver_events([encode_frame(frame.seq, frame.code, frame.payload)], max_payload=1024) == [frame]


def test_corrupted_byte_is_flagged_bad_crc_and_never_delivered():
    good = encode_frame(3, Command.WRITE_FMAP, b"feature map bytes")
    for position in (3, 6, 10, len(good) - 2, len(good) - 1):   # code, payload, crc bytes
        bad = bytearray(good)
        bad[position] ^= 0x04
        events = receiver_events([bytes(bad), encode_frame(4, Command.START)])
        assert events == [FrameError(NakReason.BAD_CRC, 3), Frame(4, Command.START)], position


def test_truncated_frame_times_out_with_its_seq():
    good = encode_frame(9, Command.WRITE_MASKS, bytes(20))
    for cut in (2, 3, 4, 6, 15, len(good) - 1):
        chunks = [good[:cut], TIMEOUT + 5, encode_frame(10, Command.START)]
        # a NAK only once the seq byte arrived (cut >= 3)
        expected = ([FrameError(NakReason.TIMEOUT, 9)] if cut >= 3 else []) + [Frame(10, Command.START)]
        assert receiver_events(chunks) == expected, cut
        assert software_events(chunks) == expected, cut


def test_oversize_length_is_flagged_right_after_the_length_field():
    oversize = SYNC + bytes([0x21, Command.WRITE_WEIGHTS]) + (MAX + 1).to_bytes(2, "little")
    chunks = [oversize, encode_frame(0x22, Command.IDENTIFY)]
    expected = [FrameError(NakReason.BAD_LENGTH, 0x21), Frame(0x22, Command.IDENTIFY)]
    assert receiver_events(chunks) == expected == software_events(chunks)


def test_garbage_between_frames_is_skipped():
    rng = random.Random(8)
    frames = _random_frames(rng, 6)
    chunks = []
    for f in frames:
        chunks += [bytes([0xA5, 0xA5, 0x00, 0x5A, 0x13]) + bytes(rng.getrandbits(7) for _ in range(6)),
                   encode_frame(f.seq, f.code, f.payload)]
    assert receiver_events(chunks) == frames


def test_receiver_flags_every_frame_the_fault_injector_damages():
    """Dozens of damaged frames: none is delivered, each with intact sync and seq is flagged,
    the good frame after each is received, and gateware and FrameParser agree on every event."""
    rng = random.Random(2024)
    chunks, damaged, expect_flag = [], 0, 0
    for i in range(40):
        frame = encode_frame(i, rng.randint(1, 11), bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 30))))
        kind = ("bitflip", "truncate", "garbage")[i % 3]
        if kind == "bitflip":
            bad = flip_bits(frame, rng)
            chunks += [bad, TIMEOUT + 5]           # a flipped length can leave it incomplete
            expect_flag += bad[:2] == SYNC
        elif kind == "truncate":
            bad = truncate_frame(frame, rng)
            chunks += [bad, TIMEOUT + 5]
            expect_flag += len(bad) >= 3
        else:
            chunks += [garbage_bytes(rng), TIMEOUT + 5]
        damaged += kind != "garbage"
        chunks.append(encode_frame(100 + i, Command.READ_STATUS))
    hw = receiver_events(chunks)
    assert hw == software_events(chunks)
    good = [e for e in hw if isinstance(e, Frame)]
    assert good == [Frame(100 + i, Command.READ_STATUS) for i in range(40)]   # nothing damaged got through
    flagged = [e for e in hw if isinstance(e, FrameError) and e.seq < 40]
    assert len(flagged) >= expect_flag and damaged == 27


def transmitter_bytes(responses, *, ready_prob=1.0, valid_prob=1.0, seed=0):
    dut = FrameTransmitter(MAX)
    out = bytearray()
    total = sum(len(p) + 8 for _, _, p in responses)

    async def producer(ctx):
        rng = random.Random(seed + 1)
        for seq, status, payload in responses:
            await stream_put(ctx, dut.response, {"seq": seq, "status": status, "length": len(payload)})
            for b in payload:
                await stream_put(ctx, dut.payload, b, gap=1 - valid_prob, rng=rng)

    async def consumer(ctx):
        rng = random.Random(seed)
        while len(out) < total:
            out.append(await stream_get(ctx, dut.tx_data, stall=1 - ready_prob, rng=rng))

    run(dut, producer, consumer, max_cycles=50 * total + 1000)
    return bytes(out)


def test_transmitter_frames_equal_encode_frame():
    rng = random.Random(4)
    responses = [(rng.getrandbits(8), rng.choice(list(Status)),
                  bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, MAX]))))
                 for _ in range(10)]
    expected = b"".join(encode_frame(*r) for r in responses)
    assert transmitter_bytes(responses) == expected
    assert transmitter_bytes(responses, ready_prob=0.5, valid_prob=0.6, seed=9) == expected


def test_parameters_are_validated():
    with pytest.raises(PsconvError, match="max_payload 0 must be an integer in 1..65535"):
        FrameReceiver(0)
    with pytest.raises(PsconvError, match="timeout_cycles 1 must be an integer >= 2"):
        FrameReceiver(64, 1)


def test_link_layer_executes_once_replays_duplicates_and_naks_damage():
    """A command processor testbench behind LinkLayer: commands, duplicates, damage, leftovers."""
    dut = LinkLayer(MAX, TIMEOUT)
    write = encode_frame(1, Command.WRITE_FMAP, b"abc")
    damaged = bytearray(encode_frame(2, Command.WRITE_FMAP, b"xyz"))
    damaged[8] ^= 1
    host_bytes = [
        write,                                              # executed: ACK
        write,                                              # duplicate: stored ACK, not executed
        bytes(damaged),                                     # NAK BAD_CRC seq 2
        encode_frame(2, Command.WRITE_FMAP, b"xyz"),       # executed
        encode_frame(3, Command.READ_OUTPUT, b"\x05\x00"),  # DATA, 5 bytes
        encode_frame(3, Command.READ_OUTPUT, b"\x05\x00"),  # replayed DATA, output not consumed again
        encode_frame(4, Command.WRITE_LAYER, bytes(10)),   # processor NAKs without reading payload
        encode_frame(4, Command.WRITE_LAYER, bytes(10)),   # the stored NAK is replayed
        encode_frame(5, Command.START)[:5],                 # truncated: NAK TIMEOUT seq 5
    ]
    executed = []
    output = bytearray(b"0123456789")
    rx = bytearray()

    async def host(ctx):
        for chunk in host_bytes:
            for b in chunk:
                await stream_put(ctx, dut.rx_data, b)
            await ctx.tick().repeat(3 * TIMEOUT)

    async def line(ctx):
        while True:
            rx.append(await stream_get(ctx, dut.tx_data))

    async def processor(ctx):
        while True:
            header = await stream_get(ctx, dut.command)
            code = Command(header.code)
            if code == Command.WRITE_LAYER:   # refuse at once, leave the payload to the link
                status, reply = Status.NAK, bytes([NakReason.BAD_LENGTH])
                payload = b""
            else:
                payload = await take_payload(ctx, dut, header.length)
                if code == Command.READ_OUTPUT:
                    n = payload[0]
                    status, reply = Status.DATA, bytes(output[:n])
                    del output[:n]
                else:
                    status, reply = Status.ACK, b""
            executed.append((header.seq, code, payload))
            await give_reply(ctx, dut, status, reply)

    run(dut, host, background=[line, processor], max_cycles=20_000)
    assert executed == [(1, Command.WRITE_FMAP, b"abc"), (2, Command.WRITE_FMAP, b"xyz"),
                        (3, Command.READ_OUTPUT, b"\x05\x00"), (4, Command.WRITE_LAYER, b"")]
    responses = FrameParser(rescan=False).feed(bytes(rx))
    ack = lambda s: Frame(s, Status.ACK)
    nak = lambda s, r: Frame(s, Status.NAK, bytes([r]))
    assert responses == [ack(1), ack(1), nak(2, NakReason.BAD_CRC), ack(2),
                         Frame(3, Status.DATA, b"01234"), Frame(3, Status.DATA, b"01234"),
                         nak(4, NakReason.BAD_LENGTH), nak(4, NakReason.BAD_LENGTH),
                         nak(5, NakReason.TIMEOUT)]
    assert bytes(output) == b"56789"


def test_link_layer_counters():
    dut = LinkLayer(MAX, TIMEOUT)
    frames = [encode_frame(1, Command.START), encode_frame(1, Command.START),
              bytearray(encode_frame(2, Command.START)), SYNC + bytes([3, 1]) + (MAX + 5).to_bytes(2, "little"),
              encode_frame(4, Command.START)[:4]]
    frames[2][3] ^= 0x80      # the code byte: BAD_CRC
    seen = {}

    async def host(ctx):
        ctx.set(dut.tx_data.ready, 1)
        for chunk in frames:
            for b in bytes(chunk):
                await stream_put(ctx, dut.rx_data, b)
            await ctx.tick().repeat(3 * TIMEOUT)
        seen.update({k: ctx.get(getattr(dut.counters, k))
                     for k in ("commands", "replays", "crc_errors", "length_errors", "timeouts")})

    async def processor(ctx):
        while True:
            await stream_get(ctx, dut.command)
            await give_reply(ctx, dut, Status.ACK)

    run(dut, host, background=[processor], max_cycles=10_000)
    assert seen == {"commands": 1, "replays": 1, "crc_errors": 1, "length_errors": 1, "timeouts": 1}


def test_uart_and_link_layer_wired_like_the_board_top():
    """Host frames as 8N1 bits on the rx pin -> UART -> LinkLayer -> processor -> tx pin."""
    divisor = 4
    m = Module()
    m.submodules.uart = uart = UART(divisor=divisor)
    m.submodules.link = link = LinkLayer(MAX, TIMEOUT * divisor * 10)
    wiring.connect(m, uart.rx_data, link.rx_data)
    wiring.connect(m, link.tx_data, uart.tx_data)
    requests = [encode_frame(1, Command.IDENTIFY), encode_frame(2, Command.WRITE_FMAP, b"hello")]
    line_out = []

    async def host(ctx):
        ctx.set(uart.rx, 1)
        await ctx.tick().repeat(10)
        for frame in requests:
            for byte in frame:
                for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                    ctx.set(uart.rx, bit)
                    await ctx.tick().repeat(divisor)
            await ctx.tick().repeat(40 * divisor * 10)   # the answer goes out meanwhile

    async def processor(ctx):
        while True:
            header = await stream_get(ctx, link.command)
            await take_payload(ctx, link, header.length)
            reply = b"psconv" if header.code == Command.IDENTIFY else b""
            await give_reply(ctx, link, Status.DATA if reply else Status.ACK, reply)

    async def wire(ctx):
        async for _, _, tx in ctx.tick().sample(uart.tx):
            line_out.append(tx)

    run(m, host, background=[processor, wire], max_cycles=100_000)
    decoded, i = bytearray(), 0
    while i < len(line_out):          # decode 8N1 from the recorded tx pin
        if line_out[i] == 0:
            bits = [line_out[i + divisor // 2 + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1
            decoded.append(sum(b << k for k, b in enumerate(bits[1:9])))
            i += 10 * divisor - divisor // 2
        else:
            i += 1
    assert FrameParser().feed(bytes(decoded)) == [Frame(1, Status.DATA, b"psconv"), Frame(2, Status.ACK)]
