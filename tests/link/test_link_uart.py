# amaranth: UnusedElaboratable=no
"""UART gateware in the Amaranth simulator: loopback, bit timing, framing errors, back-pressure."""

import random

import pytest
from amaranth import Module

from psconv.errors import PsconvError
from psconv.hw.uart import UART, UARTReceiver, UARTTransmitter, uart_divisor

from sim_helpers import run, stream_get, stream_put


def test_divisor_rules():
    assert uart_divisor(48_000_000, 3_000_000) == 16
    assert uart_divisor(25_000_000, 115_200) == 217
    with pytest.raises(PsconvError, match="at least 4"):
        uart_divisor(12_000_000, 6_000_000)
    with pytest.raises(PsconvError, match="off; at most 2% allowed"):
        uart_divisor(25_000_000, 3_000_000)   # divisor 8 -> 3.125 Mbaud, 4.2 % off
    with pytest.raises(PsconvError, match="divisor 2 must be an integer >= 4"):
        UARTReceiver(2)


@pytest.mark.parametrize("divisor, count", [(4, 64), (16, 12)])
def test_loopback_random_bytes(divisor, count):
    rng = random.Random(divisor)
    data = [rng.getrandbits(8) for _ in range(count)]
    m = Module()
    m.submodules.uart = uart = UART(divisor=divisor)
    m.d.comb += uart.rx.eq(uart.tx)
    received, errors = [], []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, uart.tx_data, byte)

    async def consumer(ctx):
        for _ in data:
            received.append(await stream_get(ctx, uart.rx_data))

    async def monitor(ctx):
        async for _ in ctx.tick():
            if ctx.get(uart.framing_error) or ctx.get(uart.overrun):
                errors.append("error")

    run(m, producer, consumer, background=[monitor], max_cycles=count * 10 * divisor + 200)
    assert received == data
    assert errors == []


async def _send_bits(ctx, pin, byte, divisor, *, stop=1, rate_error=0.0):
    """Drive one 8N1 character on ``pin``; bit edges follow a clock off by ``rate_error``."""
    bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    period = divisor * (1 + rate_error)
    elapsed = 0
    for k, b in enumerate(bits):
        ctx.set(pin, b)
        until = round((k + 1) * period)
        await ctx.tick().repeat(until - elapsed)
        elapsed = until
    ctx.set(pin, 1)


def _receiver_bench(divisor, script, take=True):
    """Run UARTReceiver on ``script(ctx, pin)``; return received bytes and error pulse counts."""
    dut = UARTReceiver(divisor)
    got, pulses = [], {"framing_error": 0, "overrun": 0}

    async def line(ctx):
        await ctx.tick().repeat(5)
        await script(ctx, dut.rx)
        await ctx.tick().repeat(4 * divisor)

    async def monitor(ctx):
        ctx.set(dut.data.ready, int(take))
        async for _ in ctx.tick():
            for name in pulses:
                pulses[name] += ctx.get(getattr(dut, name))
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                got.append(ctx.get(dut.data.payload))

    run(dut, line, background=[monitor], max_cycles=200_000)
    return dut, got, pulses


@pytest.mark.parametrize("rate_error", [-0.035, 0.0, 0.035])
def test_receiver_samples_mid_bit(rate_error):
    data = [0x00, 0xFF, 0x55, 0xAA, 0xA5, 0x5A, 0x01, 0x80]

    async def script(ctx, pin):
        for byte in data:
            await _send_bits(ctx, pin, byte, 16, rate_error=rate_error)

    _, got, pulses = _receiver_bench(16, script)
    assert got == data
    assert pulses == {"framing_error": 0, "overrun": 0}


def test_bad_stop_bit_drops_byte_and_flags_it():
    async def script(ctx, pin):
        await _send_bits(ctx, pin, 0x3C, 8)
        await _send_bits(ctx, pin, 0x99, 8, stop=0)     # framing error
        ctx.set(pin, 0)                                  # line held low (break) a while
        await ctx.tick().repeat(30)
        ctx.set(pin, 1)
        await ctx.tick().repeat(20)
        await _send_bits(ctx, pin, 0xC3, 8)

    _, got, pulses = _receiver_bench(8, script)
    assert got == [0x3C, 0xC3]
    assert pulses == {"framing_error": 1, "overrun": 0}


def test_start_glitch_is_ignored():
    async def script(ctx, pin):
        ctx.set(pin, 0)
        await ctx.tick().repeat(2)          # shorter than half a bit
        ctx.set(pin, 1)
        await ctx.tick().repeat(40)
        await _send_bits(ctx, pin, 0x42, 8)

    _, got, pulses = _receiver_bench(8, script)
    assert got == [0x42] and pulses["framing_error"] == 0


def test_receiver_back_pressure_holds_one_byte_and_flags_overrun():
    async def script(ctx, pin):
        for byte in (0x11, 0x22, 0x33):
            await _send_bits(ctx, pin, byte, 4)

    dut, got, pulses = _receiver_bench(4, script, take=False)
    assert got == [] and pulses == {"framing_error": 0, "overrun": 2}
    # the first byte is still held for the consumer
    result = []

    async def check(ctx):
        await ctx.tick().repeat(5)
        for byte in (0x11, 0x22, 0x33):
            await _send_bits(ctx, dut.rx, byte, 4)
        await ctx.tick().repeat(20)
        assert ctx.get(dut.data.valid)
        result.append(ctx.get(dut.data.payload))
    run(dut, check, max_cycles=200_000)
    assert result == [0x11]


def test_transmitter_waveform_and_back_pressure():
    divisor = 5
    data = [0x81, 0x3C, 0xFF]
    dut = UARTTransmitter(divisor)
    samples = []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.data, byte)
            assert ctx.get(dut.data.ready) == 0     # busy until the last stop-bit cycle
        await ctx.tick().repeat(10 * divisor)          # let the last character finish

    async def recorder(ctx):
        async for _ in ctx.tick():
            samples.append(ctx.get(dut.tx))

    run(dut, producer, background=[recorder], max_cycles=10_000)
    # decode the waveform every `divisor` cycles, from the middle of the first start bit
    start = samples.index(0)
    expected = []
    for byte in data:
        expected += [0] + [(byte >> i) & 1 for i in range(8)]
        if byte != data[-1]:
            expected += [1]
    line = samples[start + divisor // 2::divisor][:len(expected)]
    assert line == expected                     # back to back: exactly 10 bits per byte
    assert all(s == 1 for s in samples[:start])
