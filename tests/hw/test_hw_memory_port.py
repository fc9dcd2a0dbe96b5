"""The resident-mode memory port: on-chip memory and the SDRAM bridge, random traffic.

Each test issues random word loads and stores with random byte enables at odd and even byte
addresses, back to back (with random gaps and read-data stalls), and checks every loaded word
against a Python model of the memory.
"""

import random

from psconv.hw.memory_port import OnChipMemory, WordMemoryBridge

from sim_helpers import run, stream_get, stream_put

DEPTH = 64


def traffic(seed, count=300):
    rng = random.Random(seed)
    return [(rng.randrange(DEPTH), rng.random() < 0.5, rng.randrange(1 << 16), rng.randrange(4))
            for _ in range(count)]


def client(port, accesses, rng, loads):
    """The client: issue ``accesses``; the expected word of each load goes to ``loads``."""
    async def client(ctx):
        model = bytearray(DEPTH)
        for address, write, value, enable in accesses:
            await stream_put(ctx, port.request, {"address": address, "write": int(write),
                                                 "data": value, "enable": enable},
                             gap=0.3, rng=rng)
            word = address & ~1
            if write:
                for lane in range(2):
                    if (enable >> lane) & 1:
                        model[word + lane] = (value >> (8 * lane)) & 0xFF
            else:
                loads.append(model[word] | model[word + 1] << 8)
    return client


def check_port(dut, port, seed, extra=()):
    rng = random.Random(seed + 100)
    accesses = traffic(seed)
    expected, got = [], []
    count = sum(1 for _, write, _, _ in accesses if not write)

    async def reader(ctx):
        for _ in range(count):
            got.append(await stream_get(ctx, port.read_data, stall=0.3, rng=rng))

    run(dut, client(port, accesses, rng, expected), reader, background=extra,
        max_cycles=20_000)
    assert got == expected and len(got) == count


def test_on_chip_memory_returns_what_was_stored():
    dut = OnChipMemory(DEPTH)
    check_port(dut, dut.port, seed=1)


def test_sdram_bridge_passes_words_and_byte_enables():
    bridge = WordMemoryBridge(address_width=8)
    rng = random.Random(7)
    words = [0] * (DEPTH // 2)
    pending = []

    async def word_memory(ctx):
        """Takes commands when it likes (a write together with its beat, which must be
        offered with it), answers reads after a random delay, in order."""
        while True:
            ready = rng.random() < 0.7
            ctx.set(bridge.cmd.ready, ready)
            ctx.set(bridge.rdata.valid, bool(pending) and pending[0][0] <= 0)
            if pending:
                ctx.set(bridge.rdata.payload, pending[0][1])
            _, _, cmd_valid, cmd, wdata_valid, beat, rdata_ready = await ctx.tick().sample(
                bridge.cmd.valid, bridge.cmd.payload, bridge.wdata.valid, bridge.wdata.payload,
                bridge.rdata.ready)
            if pending and pending[0][0] <= 0 and rdata_ready:
                pending.pop(0)
            for entry in pending:
                entry[0] -= 1
            if cmd_valid:
                assert wdata_valid == cmd.write, "a write's beat comes with its command only"
            if cmd_valid and ready:
                address = cmd.addr
                if cmd.write:
                    for lane in range(2):
                        if (beat.enable >> lane) & 1:
                            byte = (beat.data >> (8 * lane)) & 0xFF
                            words[address] = (words[address] & ~(0xFF << 8 * lane)) | (byte << 8 * lane)
                else:
                    pending.append([rng.randrange(1, 6), words[address]])

    check_port(bridge, bridge.port, seed=3, extra=[word_memory])


def test_sdram_bridge_passes_a_request_every_cycle():
    """Back-to-back loads against a memory that is always ready reach it one per cycle (a
    bridge FIFO that passed one every other cycle once halved every sequential SDRAM load)."""
    bridge = WordMemoryBridge(address_width=8)
    loads = 64
    cycles_with_command = []

    async def memory(ctx):
        ctx.set(bridge.cmd.ready, 1)
        ctx.set(bridge.rdata.valid, 0)
        cycle = 0
        while True:
            _, _, valid = await ctx.tick().sample(bridge.cmd.valid)
            cycle += 1
            if valid:
                cycles_with_command.append(cycle)

    async def client(ctx):
        ctx.set(bridge.port.request.valid, 1)
        ctx.set(bridge.port.request.payload, {"address": 0, "write": 0, "data": 0, "enable": 0})
        sent = 0
        while sent < loads:
            _, _, ready = await ctx.tick().sample(bridge.port.request.ready)
            sent += ready
        ctx.set(bridge.port.request.valid, 0)
        await ctx.tick().repeat(10)

    run(bridge, client, background=[memory], max_cycles=1_000)
    assert len(cycles_with_command) == loads
    span = cycles_with_command[-1] - cycles_with_command[0] + 1
    assert span == loads, f"{loads} loads took {span} cycles at the memory"
