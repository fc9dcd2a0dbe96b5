"""The SDR SDRAM chip model (sim/sdram_chip.v) driven directly at its pins in Verilator.

At 100 MHz every rule tested here is at least 2 clocks for the MT48LC16M16A2-75 table, so a
command one clock early is a violation while the same script at the minimum spacing is clean.
Each scenario is one simulator launch of one shared build.
"""

import pytest

from psconv.errors import PsconvError
from psconv.sim.sdram_chip import PARTS, Violation, chip_parameters, model_verilog, part_timing
from psconv.sim.sdram_rtl import ChipModelRTL, init_steps

pytestmark = pytest.mark.rtl

CLK_HZ = 100e6
ROW, BANK = 0x155, 2


@pytest.fixture(scope="module")
def chip():
    return ChipModelRTL("MT48LC16M16A2-75", CLK_HZ)


def _init(chip):
    return init_steps(chip.timing, CLK_HZ)


def test_timing_table_in_cycles():
    c = part_timing("MT48LC16M16").cycles(CLK_HZ)
    assert (c["tRCD"], c["tRP"], c["tRAS"], c["tRC"], c["tWR"], c["tRFC"], c["tMRD"]) == \
        (2, 2, 5, 7, 2, 7, 2)
    assert c["power_up"] == 10_000 and c["tREFI"] == pytest.approx(781.25)
    a = part_timing("AS4C32M16").cycles(50e6)
    assert (a["tRCD"], a["tRP"], a["tRAS"], a["tRC"], a["tWR"], a["tRFC"], a["tMRD"]) == \
        (2, 2, 3, 4, 1, 4, 1)
    assert chip_parameters(PARTS["AS4C32M16SB-7"], 50e6)["COL_BITS"] == 10
    # model_verilog raises if the Verilog's V_* codes and the Violation enum disagree
    assert "module psconv_sdram_chip" in model_verilog()
    with pytest.raises(PsconvError, match="no timing table"):
        part_timing("W9825G6KH")


def test_clean_script_at_minimum_spacing_reads_back(chip):
    c = chip.cycles
    steps = _init(chip) + [
        {"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRCD"] - 1},
        {"cmd": "WRITE", "ba": BANK, "a": 7, "data": 0xBEEF},
        {"cmd": "WRITE", "ba": BANK, "a": 8, "data": 0x1234, "dqm": 0b10},
        {"cmd": "READ", "ba": BANK, "a": 7},
        {"cmd": "READ", "ba": BANK, "a": 8, "wait": c["tRAS"]},
        {"cmd": "PRE", "ba": BANK, "wait": c["tRP"] - 1},
        {"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRCD"] - 1},
        {"cmd": "READ", "ba": BANK, "a": 7, "wait": 3},
        {"cmd": "PRE", "a": 1 << 10, "wait": c["tRP"] - 1},
        {"cmd": "REF", "wait": c["tRFC"] - 1},
        {"cmd": "ACT", "ba": 0, "a": 1},
    ]
    run = chip.run(steps)
    assert run.violation == Violation.NONE, run.rule
    read1, read2, read3 = (run.edges[i] for i in (8, 9, 12))
    # CAS latency 2: data on the bus at the second edge after READ, nowhere else
    assert run.reads == {read1 + 2: 0xBEEF, read2 + 2: 0x0034, read3 + 2: 0xBEEF}
    assert run.refresh_count == 3 and run.ready


def _early(chip, steps):
    run = chip.run(_init(chip) + steps)
    return run.violation


def test_trcd_read_one_clock_early(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRCD"] - 2},
                         {"cmd": "READ", "ba": BANK, "a": 0}]) == Violation.tRCD


def test_trp_activate_one_clock_early(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRAS"] - 1},
                         {"cmd": "PRE", "ba": BANK, "wait": c["tRP"] - 2},
                         {"cmd": "ACT", "ba": BANK, "a": ROW}]) == Violation.tRP


def test_tras_precharge_one_clock_early(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRAS"] - 2},
                         {"cmd": "PRE", "ba": BANK}]) == Violation.tRAS


def test_twr_precharge_right_after_write(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRAS"]},
                         {"cmd": "WRITE", "ba": BANK, "a": 3, "data": 1, "wait": c["tWR"] - 2},
                         {"cmd": "PRE", "ba": BANK}]) == Violation.tWR


def test_trfc_activate_one_clock_early(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "REF", "wait": c["tRFC"] - 2},
                         {"cmd": "ACT", "ba": 0, "a": 0}]) == Violation.tRFC


def test_tmrd_activate_right_after_load_mode(chip):
    assert _early(chip, [{"cmd": "LMR", "a": 0x20, "wait": chip.cycles["tMRD"] - 2},
                         {"cmd": "ACT", "ba": 0, "a": 0}]) == Violation.tMRD


def test_refresh_interval_overdue(chip):
    """Init issues its 2 refreshes; after 9 intervals with none, 9 are overdue (> 8)."""
    wait = int(chip.cycles["tREFI"] * 10)
    assert _early(chip, [{"cmd": "NOP", "wait": wait}]) == Violation.tREFI


def test_refresh_every_interval_is_clean(chip):
    interval = int(chip.cycles["tREFI"]) - 1
    run = chip.run(_init(chip) + [{"cmd": "REF", "wait": interval} for _ in range(14)])
    assert run.violation == Violation.NONE, run.rule
    assert run.refresh_count == 16


def test_access_before_init_sequence(chip):
    c = chip.cycles
    steps = [{"cmd": "NOP", "wait": c["power_up"]},
             {"cmd": "PRE", "a": 1 << 10, "wait": c["tRP"]},
             {"cmd": "ACT", "ba": 0, "a": 0}]
    assert chip.run(steps).violation == Violation.INIT
    assert chip.run([{"cmd": "PRE", "a": 1 << 10}]).violation == Violation.INIT  # no power-up wait


def test_read_from_closed_bank_and_bus_contention(chip):
    c = chip.cycles
    assert _early(chip, [{"cmd": "READ", "ba": 1, "a": 0}]) == Violation.BANK_CLOSED
    assert _early(chip, [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRCD"] - 1},
                         {"cmd": "READ", "ba": BANK, "a": 0, "wait": 1},
                         {"cmd": "WRITE", "ba": BANK, "a": 1, "data": 5}]) == Violation.BUS


def test_auto_precharge_waits_for_tras_then_trp(chip):
    """READ with auto-precharge (A10) right at tRCD: the bank precharges once tRAS has passed
    (tRAS lockout), so the next ACTIVE is legal tRP after that, not before."""
    c = chip.cycles
    read_ap = [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRCD"] - 1},
               {"cmd": "READ", "ba": BANK, "a": (1 << 10) | 4,
                "wait": c["tRAS"] - c["tRCD"] + c["tRP"] - 2}]
    assert _early(chip, read_ap + [{"cmd": "ACT", "ba": BANK, "a": ROW}]) == Violation.tRP
    read_ap[1]["wait"] += 1
    assert _early(chip, read_ap + [{"cmd": "ACT", "ba": BANK, "a": ROW}]) == Violation.NONE
    # WRITE with auto-precharge: precharge starts 1 CLK + 7.5 ns after the data (Micron -75)
    write_ap = [{"cmd": "ACT", "ba": BANK, "a": ROW, "wait": c["tRAS"] - 1},
                {"cmd": "WRITE", "ba": BANK, "a": (1 << 10) | 4, "data": 9,
                 "wait": c["tWR_auto"] + c["tRP"] - 2}]
    assert _early(chip, write_ap + [{"cmd": "ACT", "ba": BANK, "a": ROW}]) == Violation.tRP
    assert _early(chip, write_ap + [{"cmd": "READ", "ba": BANK, "a": 4}]) == Violation.BANK_CLOSED
