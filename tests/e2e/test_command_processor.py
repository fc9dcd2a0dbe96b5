# amaranth: UnusedElaboratable=no
"""CommandProcessor behind the real LinkLayer, in the Amaranth simulator, with a mock engine.

The host side is the real ``LinkClient`` over ``SimulatorTransport``, so every check goes
through the wire format. The mock engine records every beat the processor pushes, which is
compared with the encoders of :mod:`psconv.protocol` (the same ones the driver uses): a byte
order, beat size or budget mistake in the gateware fails here.
"""

import dataclasses
import random

import pytest
import torch

from psconv.config import EngineConfig
from psconv.firmware.link import LinkClient, LinkNak
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.frame import encode_frame
from psconv.protocol.payloads import read_output_payload
from psconv.hw.layer_budget import LayerBudget
from psconv.protocol.payloads import (COUNTERS_BYTES, beats_payload, identity_blob, layer_payload,
                                      mask_payload, output_beats, parse_counters, parse_identity,
                                      parse_status, quant_payload)
from psconv.protocol.beats import fmap_beats, pack_bytes, pixel_beats
from psconv.protocol.descriptor import LayerSpec, encode_quant_entry
from psconv.schedule import cycles_per_output_channel, fmap_rows_capacity
from psconv.sim.amaranth_transport import SimulatorTransport

from e2e_helpers import TINY_CONFIG, MockEngine, ProcessorHarness
from sim_helpers import run

CFG = TINY_CONFIG
MASKS = (0x010, 0x1FF, 0x003, 0x110)   # T = 1 + 9 + 2 + 2 = 14
SPEC = LayerSpec(in_channels=5, out_channels=3, in_height=4, in_width=5, stride=1, kernel=3,
                 relu=True, residual=True, period=len(MASKS))


def _session(depth=256):
    dut = ProcessorHarness(CFG, output_fifo_depth=depth)
    engine = MockEngine(dut)
    transport = SimulatorTransport(dut, dut.rx_data, dut.tx_data, [engine.run])
    client = LinkClient(transport, timeout_s=2e-3, retries=2)
    return engine, client


def _nak(client, command, payload=b""):
    with pytest.raises(LinkNak) as e:
        client.request(command, payload)
    return NakReason(e.value.reason)


def _budget(spec, masks, cfg=CFG):
    """What the processor must allow per stream (the engine's exact beat counts)."""
    tn = cfg.tn
    return {
        "mask_in": spec.period, "quant_in": spec.out_channels,
        "weight_in": spec.out_channels * cycles_per_output_channel(cfg, masks, spec.in_channels),
        "fmap_in": -(-spec.in_channels * spec.in_height * spec.in_width // tn),
        "residual_in": spec.output_beats(cfg) if spec.residual else 0,
    }


def test_identify_and_refusals_before_start():
    engine, client = _session()
    blob = client.request(Command.IDENTIFY).payload
    assert blob == identity_blob(CFG)
    fields = parse_identity(blob)
    assert (fields["tm"], fields["tn"], fields["output_fifo_depth"]) == (2, 4, 256)
    assert _nak(client, Command.IDENTIFY, b"x") == NakReason.BAD_LENGTH
    assert _nak(client, Command.READ_OUTPUT, read_output_payload(8)) == NakReason.BAD_STATE
    assert _nak(client, Command.START) == NakReason.BAD_STATE          # no descriptor yet
    assert _nak(client, Command.WRITE_FMAP, bytes(CFG.tn)) == NakReason.BAD_STATE
    assert _nak(client, Command.WRITE_LAYER, b"\x01\x02") == NakReason.BAD_LENGTH
    assert _nak(client, 0x3C) == NakReason.UNKNOWN_COMMAND
    status = parse_status(client.request(Command.READ_STATUS).payload)
    assert status == {"busy": 0, "done": 0, "output_beats": 0, "residual_window": 0}
    assert not engine.starts and not any(engine.beats.values())


def test_a_layer_through_the_processor():
    engine, client = _session()
    g = torch.Generator().manual_seed(5)
    client.request(Command.WRITE_LAYER, layer_payload(CFG, SPEC))
    client.request(Command.START)
    assert engine.starts == [SPEC.encode(CFG)]
    assert _nak(client, Command.START) == NakReason.BUSY
    assert _nak(client, Command.WRITE_LAYER, layer_payload(CFG, SPEC)) == NakReason.BUSY
    # the mask table comes first
    assert _nak(client, Command.WRITE_QUANT, bytes(13)) == NakReason.BAD_STATE
    assert _nak(client, Command.WRITE_MASKS, b"\x10") == NakReason.BAD_LENGTH
    client.request(Command.WRITE_MASKS, mask_payload(MASKS[:3]))
    assert _nak(client, Command.WRITE_MASKS, mask_payload(MASKS[:2])) == NakReason.OVERFLOW
    client.request(Command.WRITE_MASKS, mask_payload(MASKS[3:]))
    assert engine.beats["mask_in"] == list(MASKS)

    budget = _budget(SPEC, MASKS)
    entries = [encode_quant_entry(int(torch.randint(-2**31, 2**31 - 1, (), generator=g)),
                                  (1 << 30) - 1 - k, 1 + 20 * k, 12345 * k + 1)
               for k in range(SPEC.out_channels)]
    assert _nak(client, Command.WRITE_QUANT, quant_payload(entries) + bytes(5)) == NakReason.BAD_LENGTH
    assert _nak(client, Command.WRITE_QUANT, quant_payload(entries + entries[:1])) == NakReason.OVERFLOW
    client.request(Command.WRITE_QUANT, quant_payload(entries))
    assert engine.beats["quant_in"] == entries

    words = torch.randint(-128, 128, (budget["weight_in"], CFG.tn), generator=g)
    weight_beats = [pack_bytes(row) for row in words.tolist()]
    assert _nak(client, Command.WRITE_WEIGHTS,
                beats_payload(weight_beats + weight_beats[:1], CFG.tn)) == NakReason.OVERFLOW
    client.request(Command.WRITE_WEIGHTS, beats_payload(weight_beats[:5], CFG.tn))
    client.request(Command.WRITE_WEIGHTS, beats_payload(weight_beats[5:], CFG.tn))
    assert engine.beats["weight_in"] == weight_beats

    fmap = torch.randint(-128, 128, (SPEC.in_channels, SPEC.in_height, SPEC.in_width), generator=g)
    beats = fmap_beats(CFG, fmap)
    assert len(beats) == budget["fmap_in"]
    assert _nak(client, Command.WRITE_FMAP, beats_payload(beats, CFG.tn)[:-1]) == NakReason.BAD_LENGTH
    client.request(Command.WRITE_FMAP, beats_payload(beats, CFG.tn))
    assert engine.beats["fmap_in"] == beats
    assert _nak(client, Command.WRITE_FMAP, bytes(CFG.tn)) == NakReason.OVERFLOW

    residual = torch.randint(-128, 128, (SPEC.out_channels, SPEC.out_height, SPEC.out_width), generator=g)
    res_beats = pixel_beats(CFG, residual)
    assert len(res_beats) == budget["residual_in"]
    client.request(Command.WRITE_RESIDUAL, beats_payload(res_beats[:7], CFG.tm))

    # outputs: only whole beats, at most what was asked, possibly none
    assert client.request(Command.READ_OUTPUT, read_output_payload(64)).payload == b""
    out = [random.Random(k).getrandbits(8 * CFG.tm) for k in range(5)]
    engine.outputs += out
    status = parse_status(client.request(Command.READ_STATUS).payload)
    assert status == {"busy": 1, "done": 0, "output_beats": 5, "residual_window": 256 - 7}
    data = client.request(Command.READ_OUTPUT, read_output_payload(3 * CFG.tm + 1)).payload
    assert output_beats(CFG, data) == out[:3]
    assert client.request(Command.READ_OUTPUT, read_output_payload(1)).payload == b""
    data = client.request(Command.READ_OUTPUT, read_output_payload(1024)).payload
    assert output_beats(CFG, data) == out[3:]
    client.request(Command.WRITE_RESIDUAL, beats_payload(res_beats[7:], CFG.tm))
    assert engine.beats["residual_in"] == res_beats
    assert _nak(client, Command.WRITE_RESIDUAL, bytes(CFG.tm)) == NakReason.OVERFLOW

    engine.counters.update(busy_cycles=123456789012, stall_cycles=7, idle_cycles=2**48 - 1, macs=99)
    counters = client.request(Command.READ_COUNTERS).payload
    assert len(counters) == COUNTERS_BYTES
    values = parse_counters(counters)
    assert {k: values[k] for k in engine.counters} == engine.counters
    # each BAD_LENGTH was resent twice (retries=2) and answered from the stored NAK: 3 x 2
    assert values["link_commands"] > 20 and values["link_replays"] == 6

    engine.finish()
    status = parse_status(client.request(Command.READ_STATUS).payload)
    assert (status["busy"], status["done"]) == (0, 1)
    assert _nak(client, Command.WRITE_RESIDUAL, bytes(CFG.tm)) == NakReason.BAD_STATE
    # a new layer starts clean: done cleared, output FIFO emptied
    engine.outputs.append(0x1234)
    client.request(Command.READ_STATUS)
    client.request(Command.START)
    status = parse_status(client.request(Command.READ_STATUS).payload)
    assert (status["busy"], status["done"], status["output_beats"]) == (1, 0, 0)


def test_a_mask_without_taps_never_reaches_the_engine():
    """A table whose masks keep no taps (T = 0) would make the address generator divide by 0:
    every mask beat whose 9 tap bits are 0 (whatever its 7 unused bits) is NAKed NO_TAPS and
    not pushed; one after valid masks in the same payload leaves those in, and the table goes
    on from it."""
    engine, client = _session()
    client.request(Command.WRITE_LAYER, layer_payload(CFG, SPEC))
    client.request(Command.START)
    assert _nak(client, Command.WRITE_MASKS, mask_payload((0,) * len(MASKS))) == NakReason.NO_TAPS
    assert _nak(client, Command.WRITE_MASKS, mask_payload((0xFE00,))) == NakReason.NO_TAPS
    assert engine.beats["mask_in"] == []
    assert _nak(client, Command.WRITE_QUANT, bytes(13)) == NakReason.BAD_STATE   # no table yet
    bad = (MASKS[0], MASKS[1], 0x200, MASKS[3])
    assert _nak(client, Command.WRITE_MASKS, mask_payload(bad)) == NakReason.NO_TAPS
    assert engine.beats["mask_in"] == list(MASKS[:2])
    client.request(Command.WRITE_MASKS, mask_payload(MASKS[2:]))
    assert engine.beats["mask_in"] == list(MASKS)
    assert _nak(client, Command.WRITE_MASKS, mask_payload(MASKS[:1])) == NakReason.OVERFLOW


def test_residual_window_prevents_deadlock():
    """With a 4-beat output FIFO the host may run at most 4 residual beats ahead of its reads;
    a bigger write is refused (nothing pushed) instead of blocking the processor."""
    engine, client = _session(depth=4)
    spec = LayerSpec(in_channels=1, out_channels=4, in_height=4, in_width=4, residual=True, period=1)
    client.request(Command.WRITE_LAYER, layer_payload(CFG, spec))
    client.request(Command.START)
    client.request(Command.WRITE_MASKS, mask_payload([0x010]))
    engine.accepting["residual_in"] = False     # the engine holds residual beats back
    assert _nak(client, Command.WRITE_RESIDUAL, bytes(5 * CFG.tm)) == NakReason.OVERFLOW
    assert engine.beats["residual_in"] == []
    engine.accepting["residual_in"] = True
    client.request(Command.WRITE_RESIDUAL, bytes(4 * CFG.tm))
    assert _nak(client, Command.WRITE_RESIDUAL, bytes(CFG.tm)) == NakReason.OVERFLOW
    engine.outputs += [1, 2]
    client.request(Command.READ_STATUS)
    assert output_beats(CFG, client.request(Command.READ_OUTPUT, read_output_payload(8)).payload) == [1, 2]
    client.request(Command.WRITE_RESIDUAL, bytes(2 * CFG.tm))     # two reads made room for two
    assert len(engine.beats["residual_in"]) == 6


@pytest.mark.parametrize("tm, tn, base", [(2, 4, CFG), (1, 2, CFG), (3, 5, CFG),
                                          (4, 16, EngineConfig())])
def test_layer_budget_matches_the_engine_formulas(tm, tn, base):
    """LayerBudget (serial arithmetic) against the Python formulas for random descriptors and
    the largest one the configuration admits (every field at its maximum, dense masks); (1, 2) is
    the iCEBreaker configuration's, (3, 5) takes the divider for tm and tn, the last one is the
    default engine (512 channels, 32 x 32 maps: the widest values)."""
    cfg = dataclasses.replace(base, tm=tm, tn=tn)
    budget = LayerBudget(cfg)
    rng = random.Random(3)
    cases = []
    for _ in range(12):
        period = rng.randint(1, cfg.max_period)
        masks = tuple(rng.randint(1, 511) for _ in range(period))
        spec = LayerSpec(in_channels=rng.randint(1, 16), out_channels=rng.randint(1, 16),
                         in_height=rng.randint(1, 8), in_width=rng.randint(1, 8),
                         stride=rng.choice((1, 2)), residual=rng.random() < 0.5, period=period)
        cases.append((spec, masks))
    in_channels = min(cfg.max_in_channels, fmap_rows_capacity(cfg) // cfg.max_height)
    largest = LayerSpec(in_channels=in_channels, out_channels=cfg.max_out_channels,
                        in_height=cfg.max_height, in_width=cfg.max_width, stride=1, residual=True,
                        period=cfg.max_period)
    cases.append((largest, (511,) * cfg.max_period))
    got = []

    async def bench(ctx):
        for spec, masks in cases:
            ctx.set(budget.descriptor.as_value(), spec.encode(cfg))
            ctx.set(budget.taps, sum(bin(m).count("1") for m in masks))
            ctx.set(budget.start, 1)
            await ctx.tick()
            ctx.set(budget.start, 0)
            values = {}
            for _ in range(2000):
                # each stream's beats appear once, in ``value``, while its store strobe is high
                for name, store in (("fmap_in", budget.store_fmap),
                                    ("weight_in", budget.store_weights),
                                    ("residual_in", budget.store_residual)):
                    if ctx.get(store):
                        assert name not in values
                        values[name] = ctx.get(budget.value)
                if ctx.get(budget.done):
                    break
                await ctx.tick()
            assert ctx.get(budget.done)
            got.append(values)

    run(budget, bench)
    for (spec, masks), values in zip(cases, got):
        expected = {k: v for k, v in _budget(spec, masks, cfg).items()
                    if k in ("fmap_in", "weight_in", "residual_in")}
        assert values == expected, spec


def test_read_counters_puts_every_link_counter_in_its_place():
    """Each link counter moves by a different amount between two READ_COUNTERS, so a byte of
    the answer's tail (fed in while its head goes out) in the wrong place fails here."""
    engine, client = _session()
    transport = client.transport

    def raw(frame):
        transport.write(frame)
        while transport.read(256, 1e-3):       # the answer, then 1 ms of silence
            pass

    before = parse_counters(client.request(Command.READ_COUNTERS).payload)
    bad_crc = bytearray(encode_frame(0x70, Command.IDENTIFY))
    bad_crc[-1] ^= 0x01
    raw(bytes(bad_crc))
    for _ in range(2):
        raw(bytes([0xA5, 0x5A, 0x71, Command.IDENTIFY, 0xFF, 0xFF]))    # len > max_payload
    for _ in range(3):
        raw(bytes([0xA5, 0x5A, 0x72, Command.IDENTIFY]))                # then silence
    for _ in range(5):                                                  # 1 fresh + 4 replays
        raw(encode_frame(0x73, Command.READ_STATUS))
    after = parse_counters(client.request(Command.READ_COUNTERS).payload)
    moved = {k[5:]: after[k] - before[k] for k in after if k.startswith("link_")}
    assert moved == {"commands": 2, "replays": 4, "crc_errors": 1, "length_errors": 2,
                     "timeouts": 3}


def test_the_processor_refuses_a_max_payload_its_answers_do_not_fit():
    from psconv.errors import PsconvError
    from psconv.hw.command_processor import CommandProcessor

    with pytest.raises(PsconvError, match=r"max_payload 33; allowed: an integer 34\.\.65535"):
        CommandProcessor(CFG, max_payload=33)
    assert CommandProcessor(CFG, max_payload=34).max_payload == 34
