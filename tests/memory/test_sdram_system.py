"""LiteDRAM (GENSDRPHY, generated here) + psconv.hw.sdram.SDRAM + the datasheet chip model at
the pins, in Verilator: random writes (some with byte masks) and reads over every bank and
several rows per bank, read data must equal what was written, the run spans dozens of
refreshes, and the chip model must see no timing violation from power-up on (so the init
sequencer and the controller both obey the datasheet)."""

import random
from pathlib import Path

import pytest

from psconv.sim.sdram_chip import Violation
from psconv.sim.sdram_rtl import SDRAMSystemRTL

pytestmark = pytest.mark.rtl

CLK_HZ = 50e6
CACHE = Path("build") / "litedram"


def _ops(core, count, seed):
    """``count`` operations: writes then reads of written words, row hits and misses in all
    banks; returns the ops and the read data expected, in command order."""
    rng = random.Random(seed)
    col_bits, bank_bits = core.info["colbits"], core.info["bankbits"]
    rows = {bank: [0, core.info["nrows"] - 1] + rng.sample(range(1, core.info["nrows"] - 1), 4)
            for bank in range(1 << bank_bits)}
    memory, ops, expected = {}, [], []
    for _ in range(count):
        if memory and rng.random() < 0.45:
            address = rng.choice(list(memory))
            ops.append(["R", address])
            expected.append(memory[address])
            continue
        bank = rng.randrange(1 << bank_bits)
        row = rng.choice(rows[bank])
        column = rng.randrange(1 << col_bits)
        address = (row << (bank_bits + col_bits)) | (bank << col_bits) | column
        word = rng.randrange(1 << 16)
        enable = 0b11 if address not in memory else rng.choice([0b01, 0b10, 0b11])
        old = memory.get(address, 0)
        memory[address] = ((word if enable & 1 else old) & 0x00FF) | \
                          ((word if enable & 2 else old) & 0xFF00)
        ops.append(["W", address, word, enable])
    tail = [address for address in memory]
    rng.shuffle(tail)
    for address in tail:
        ops.append(["R", address])
        expected.append(memory[address])
    return ops, expected


@pytest.mark.parametrize("module", ["MT48LC16M16", "AS4C32M16_7"])
def test_random_traffic_reads_back_without_violations(module):
    system = SDRAMSystemRTL(module, CLK_HZ, cache_dir=CACHE)
    ops, expected = _ops(system.core, 1500, seed=len(module))
    run = system.run(ops, seed=1, rdata_stall=0.25, tail_cycles=2000)
    assert run.violation == Violation.NONE, (
        f"{module}: chip model violation {run.rule} at cycle {run.violation_cycle}")
    mismatches = [(i, hex(a), hex(b)) for i, (a, b) in enumerate(zip(run.reads, expected)) if a != b]
    assert len(run.reads) == len(expected) and not mismatches, mismatches[:5]
    counts = run.counts
    refresh_due = (run.cycles + 2000) / (7812.5 / (1e9 / CLK_HZ))  # after init
    assert counts["refresh_count"] >= refresh_due - 4, (counts, refresh_due)
    assert counts["refresh_count"] >= 20
    assert counts["read_count"] == len(expected)
    assert counts["write_count"] == sum(op[0] == "W" for op in ops)
    assert counts["activate_count"] > 4 * 6  # row misses in every bank
    print(f"{module}: init {run.init_cycles} cycles, traffic {run.cycles} cycles for "
          f"{len(ops)} ops, {counts}, {run.seconds:.1f} s")


def test_litedram_timings_of_the_faster_grade_break_trcd():
    """LiteDRAM's own AS4C32M16 module carries the -6 grade's tRCD (18 ns: 1 clock at 50 MHz)
    while the ULX3S part is a -7 (21 ns): the chip model names the broken rule."""
    system = SDRAMSystemRTL("AS4C32M16", CLK_HZ, cache_dir=CACHE)
    row = 1 << (system.core.info["bankbits"] + system.core.info["colbits"])
    run = system.run([["R", 5], ["R", 5 + row], ["R", 5 + 2 * row]])
    assert run.violation == Violation.tRCD, run.rule


def test_memory_port_through_the_sdram_bridge():
    """The resident-mode memory port (psconv.hw.memory_port.WordMemoryBridge) in front of the
    SDRAM: byte stores (one lane enabled) and word stores land in their lanes only, loads return
    the word that holds their address, in order."""
    system = SDRAMSystemRTL("MT48LC16M16", CLK_HZ, cache_dir=CACHE, port_client=True)
    rng = random.Random(5)
    row_bytes = 2 << (system.core.info["bankbits"] + system.core.info["colbits"])
    bases = [row * row_bytes for row in (0, 1, 77, 8191)]
    memory, ops, expected = {}, [], []

    def word(address):
        even = address & ~1
        return memory.get(even, 0) | memory.get(even + 1, 0) << 8

    for _ in range(1200):
        address = rng.choice(bases) + rng.randrange(row_bytes)
        if address in memory and rng.random() < 0.5:
            ops.append(["R", address])
            expected.append(word(address))
        else:
            value, enable = rng.randrange(1 << 16), rng.choice((1, 2, 3))
            for lane in range(2):
                if (enable >> lane) & 1:
                    memory[(address & ~1) + lane] = (value >> (8 * lane)) & 0xFF
            ops.append(["W", address, value, enable])
    for address in sorted(memory):
        ops.append(["R", address])
        expected.append(word(address))
    run = system.run(ops, rdata_stall=0.2)
    assert run.violation == Violation.NONE, run.rule
    mismatches = [(i, a, b) for i, (a, b) in enumerate(zip(run.reads, expected)) if a != b]
    assert len(run.reads) == len(expected) and not mismatches, mismatches[:5]


def test_sequential_throughput_is_measured():
    """4096 sequential word writes, then 4096 sequential reads: data back, no violation, and
    the sustained rate printed (the 16-bit bus peaks at one word per clock)."""
    system = SDRAMSystemRTL("MT48LC16M16", CLK_HZ, cache_dir=CACHE)
    base = 3 << 20
    writes = [["W", base + i, (i * 40503) & 0xFFFF, 3] for i in range(4096)]
    reads = [["R", base + i] for i in range(4096)]
    run = system.run(writes + reads)
    assert run.violation == Violation.NONE, run.rule
    assert run.reads == [op[2] for op in writes]
    words_per_clock = 2 * 4096 / run.cycles
    assert words_per_clock > 0.5
    print(f"sequential: {2 * 4096} words in {run.cycles} clocks = {words_per_clock:.2f} "
          f"words/clock = {words_per_clock * 2 * CLK_HZ / 1e6:.0f} MB/s at "
          f"{CLK_HZ / 1e6:g} MHz (mixed write-then-read stream)")
