"""The SDR SDRAM chip model's datasheet timing table and its Verilog (``sim/sdram_chip.v``).

The model is plain Verilog rather than an Amaranth component for three reasons: its storage
is the whole chip (32 or 64 MB), which an Amaranth ``Memory`` would write out as an
initialiser of millions of lines; it prints the broken rule by name with ``$display`` the
moment it happens; and it reads against the datasheet line by line with no generator between.
It is compiled by Verilator into the same simulation as the controller, so it costs no Python
per cycle.

:data:`PARTS` holds each part's AC parameters in nanoseconds as its datasheet states them
(MT48LC16M16A2-75: Micron 256Mb SDR datasheet, speed grade -75; AS4C32M16SB-7: Alliance
datasheet table 16, grade -7). :meth:`SdramTiming.cycles` converts them to clock cycles at
the simulation clock by the datasheets' own rule (divide by tCK, round up), and
:func:`chip_parameters` gives the Verilog parameters. ``tMRD`` is in clocks on Micron parts,
in ns on Alliance parts; the table keeps both forms (``tmrd_ck``, ``tmrd_ns``) and the larger
wins. A WRITE with auto-precharge starts precharging ``twr_auto_ck`` clocks + ``twr_auto_ns``
after its last data (Micron -75: 1 CLK + 7.5 ns; Alliance: tWR); a READ with auto-precharge
when its burst ends; tRP runs from that moment. Whether the chip delays that internal
precharge until tRAS has passed ("tRAS lockout"; Micron: it begins "at the earliest valid
stage") or the controller must ensure tRAS is part-dependent: ``tras_lockout`` (default True)
models the delay; False makes an early auto-precharge a tRAS violation. LiteDRAM relies on the
lockout: at 50 MHz it issues READ with auto-precharge one clock after ACTIVE on a row miss. The refresh rule is the datasheets' "8192 AUTO REFRESH commands every 64 ms": one
refresh falls due every 64 ms / 8192 = 7812.5 ns (counted in picoseconds, so no rounding drift)
from the first AUTO REFRESH on, each AUTO REFRESH pays one, and more than
``refresh_postpone_max`` (8) overdue is a violation.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from pathlib import Path

from psconv.errors import PsconvError

MODEL_PATH = Path(__file__).with_name("sdram_chip.v")
MODEL_MODULE = "psconv_sdram_chip"


class Violation(enum.IntEnum):
    """``violation_code`` values of the model (the ``V_*`` localparams of ``sdram_chip.v``)."""

    NONE = 0
    INIT = 1           # command before power-up wait + PRECHARGE ALL, 2 AUTO REFRESH, LOAD MODE
    tRCD = 2           # READ/WRITE too soon after ACTIVE
    tRP = 3            # ACTIVE/REFRESH/LOAD MODE too soon after PRECHARGE
    tRAS = 4           # PRECHARGE too soon after ACTIVE
    tRC = 5            # ACTIVE too soon after ACTIVE, same bank
    tWR = 6            # PRECHARGE too soon after the last write data
    tRFC = 7           # command too soon after AUTO REFRESH
    tMRD = 8           # command too soon after LOAD MODE REGISTER
    tREFI = 9          # refreshes overdue (8192 per 64 ms)
    tRRD = 10          # ACTIVE too soon after ACTIVE, other bank
    BANK_OPEN = 11     # ACTIVE to a bank with an open row
    BANK_CLOSED = 12   # READ/WRITE to an idle bank
    NOT_IDLE = 13      # AUTO REFRESH / LOAD MODE with a bank open
    MODE = 14          # access without a valid mode register
    CL = 15            # CAS latency too short for tCK
    UNSUPPORTED = 16   # auto-precharge, burst terminate, power-down: not modelled
    tRAS_MAX = 17      # row open longer than tRAS(max)
    BUS = 18           # controller and chip drive DQ on the same edge
    WRITE_DATA = 19    # WRITE with DQ undriven and bytes unmasked


@dataclass(frozen=True)
class SdramTiming:
    """One part's datasheet AC parameters (ns unless named ``_ck`` or ``_us``)."""

    part: str
    rows: int
    columns: int
    banks: int
    tRCD: float
    tRP: float
    tRAS: float
    tRAS_max: float
    tRC: float
    tRRD: float
    tWR: float
    tRFC: float
    tmrd_ns: float
    tmrd_ck: int
    tck_min_cl2: float
    tck_min_cl3: float
    twr_auto_ns: float
    twr_auto_ck: int
    power_up_us: float = 100.0
    refresh_ms: float = 64.0
    refreshes: int = 8192
    refresh_postpone_max: int = 8
    tras_lockout: bool = True

    @property
    def tREFI(self) -> float:
        """Average refresh interval in ns (64 ms / 8192 = 7812.5 ns)."""
        return self.refresh_ms * 1e6 / self.refreshes

    def cycles(self, clk_hz: float) -> dict:
        """Every rule in clocks at ``clk_hz``: ceil(t / tCK); tMRD the larger of its forms."""
        tck = 1e9 / clk_hz

        def ck(ns):
            return max(1, math.ceil(ns / tck - 1e-9))

        return {
            "tRCD": ck(self.tRCD), "tRP": ck(self.tRP), "tRAS": ck(self.tRAS),
            "tRAS_max": int(self.tRAS_max // tck), "tRC": ck(self.tRC), "tRRD": ck(self.tRRD),
            "tWR": ck(self.tWR), "tWR_auto": self.twr_auto_ck + ck(self.twr_auto_ns),
            "tRFC": ck(self.tRFC),
            "tMRD": max(self.tmrd_ck, ck(self.tmrd_ns)),
            "power_up": ck(self.power_up_us * 1000.0),
            "tREFI": self.tREFI / tck,
        }


PARTS = {
    "MT48LC16M16A2-75": SdramTiming(
        part="MT48LC16M16A2-75", rows=8192, columns=512, banks=4,
        tRCD=20, tRP=20, tRAS=44, tRAS_max=120_000, tRC=66, tRRD=15, tWR=15, tRFC=66,
        tmrd_ns=0, tmrd_ck=2, tck_min_cl2=10, tck_min_cl3=7.5, twr_auto_ns=7.5, twr_auto_ck=1),
    "AS4C32M16SB-7": SdramTiming(
        part="AS4C32M16SB-7", rows=8192, columns=1024, banks=4,
        tRCD=21, tRP=21, tRAS=42, tRAS_max=120_000, tRC=63, tRRD=14, tWR=14, tRFC=63,
        tmrd_ns=14, tmrd_ck=0, tck_min_cl2=10, tck_min_cl3=7, twr_auto_ns=14, twr_auto_ck=0),
}
"""Datasheet AC parameters by part (see the module docstring for the sources)."""

MODULE_PARTS = {"MT48LC16M16": "MT48LC16M16A2-75", "IS42S16160": "MT48LC16M16A2-75",
                "AS4C32M16": "AS4C32M16SB-7", "AS4C32M16_7": "AS4C32M16SB-7"}
"""The chip each LiteDRAM module name is simulated as (IS42S16160 has the MT48LC16M16
geometry; its -7 grade is no slower than the Micron -75 table)."""


def part_timing(name: str) -> SdramTiming:
    """The table of a part (``PARTS``) or of a LiteDRAM module name (``MODULE_PARTS``)."""
    name = MODULE_PARTS.get(name, name)
    if name not in PARTS:
        raise PsconvError(f"SDRAM part {name!r} has no timing table; allowed: "
                          f"{', '.join([*PARTS, *MODULE_PARTS])}")
    return PARTS[name]


def chip_parameters(timing: SdramTiming, clk_hz: float) -> dict:
    """Verilog parameters of ``psconv_sdram_chip`` for ``timing`` at ``clk_hz``."""
    c = timing.cycles(clk_hz)
    tck_ps = round(1e12 / clk_hz)
    return {
        "BANK_BITS": int(math.log2(timing.banks)), "ROW_BITS": int(math.log2(timing.rows)),
        "COL_BITS": int(math.log2(timing.columns)),
        "T_RCD": c["tRCD"], "T_RP": c["tRP"], "T_RAS": c["tRAS"], "T_RAS_MAX": c["tRAS_max"],
        "T_RC": c["tRC"], "T_RRD": c["tRRD"], "T_WR": c["tWR"], "T_WR_AUTO": c["tWR_auto"], "T_RFC": c["tRFC"],
        "T_MRD": c["tMRD"], "T_POWERUP": c["power_up"], "TCK_PS": tck_ps,
        "TCK_MIN_CL2_PS": round(timing.tck_min_cl2 * 1000),
        "TCK_MIN_CL3_PS": round(timing.tck_min_cl3 * 1000),
        "TREFI_PS": round(timing.tREFI * 1000),
        "REFRESH_POSTPONE_MAX": timing.refresh_postpone_max,
        "TRAS_LOCKOUT": int(timing.tras_lockout),
    }


def model_verilog() -> str:
    """The model's Verilog text, after checking its codes against :class:`Violation`."""
    text = MODEL_PATH.read_text()
    codes = {name: int(value) for name, value in re.findall(r"V_(\w+)\s*=\s*(\d+)", text)}
    expected = {v.name.upper(): int(v) for v in Violation}
    if codes != expected:
        raise PsconvError(f"{MODEL_PATH.name}: violation codes {codes} differ from "
                          f"psconv.sim.sdram_chip.Violation {expected}")
    return text


def standalone_top(timing: SdramTiming, clk_hz: float, name: str = "sdram_chip_top") -> str:
    """Verilog of a top ``name`` that is the model with ``timing`` at ``clk_hz`` (same ports),
    for driving the chip directly from a testbench."""
    params = ",\n".join(f"    .{k}({v})" for k, v in chip_parameters(timing, clk_hz).items())
    p = chip_parameters(timing, clk_hz)
    ports = ["clk", "cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_i",
             "dq_i_driven", "dq_o", "dq_oe", "violation", "violation_code", "violation_cycle",
             "ready", "refresh_count", "activate_count", "read_count", "write_count",
             "cycle_count"]
    decl = f"""module {name} (
    input wire clk, input wire cke, input wire cs_n, input wire ras_n, input wire cas_n,
    input wire we_n, input wire [{p['BANK_BITS'] - 1}:0] ba, input wire [{p['ROW_BITS'] - 1}:0] a,
    input wire [1:0] dqm, input wire [15:0] dq_i, input wire dq_i_driven,
    output wire [15:0] dq_o, output wire dq_oe, output wire violation,
    output wire [4:0] violation_code, output wire [31:0] violation_cycle, output wire ready,
    output wire [31:0] refresh_count, output wire [31:0] activate_count,
    output wire [31:0] read_count, output wire [31:0] write_count, output wire [31:0] cycle_count
);
{MODEL_MODULE} #(
{params}
) chip (
{",".join(chr(10) + f"    .{port}({port})" for port in ports)}
);
endmodule
"""
    return model_verilog() + "\n" + decl


def violation_name(code: int) -> str:
    """The rule a ``violation_code`` names (``"tRCD"``, ...), or ``"code N"`` if unknown."""
    try:
        return Violation(int(code)).name
    except ValueError:
        return f"code {int(code)}"
