"""The SDRAM on a real ECP5 board: a small exerciser top whose place-and-route report gives the
controller's size and Fmax (the chip's clocking is :mod:`psconv.hw.sdram_clocking`).

:func:`build_exerciser` places and routes :class:`SDRAMExerciser` (the clocking, the
LiteDRAM core, :class:`psconv.hw.sdram.SDRAM` and an LFSR traffic source whose read data
folds into an LED, so nothing is optimised away) for a ULX3S with the project's PyPI flow.
"""


import json
from pathlib import Path

from amaranth import Module, Signal
from amaranth.lib import io, wiring

from psconv.errors import PsconvError
from psconv.hw.sdram_clocking import SDRAMClocking


class SDRAMExerciser(wiring.Component):
    """Board top: :class:`SDRAMClocking`, the SDRAM and an LFSR issuing writes and reads at
    random addresses; the XOR of all read data drives LED 0 (so the read path is kept)."""

    def __init__(self, core, board, clock_mhz: float):
        from psconv.rtl_gen.clocking import plan_clock

        self.core = core
        self.board = board
        self.plan = plan_clock(board, clock_mhz)
        if self.plan.pll is None:
            raise PsconvError("SDRAM exerciser: the SDRAM clock needs the PLL; pick a clock "
                              "other than the oscillator's")
        super().__init__({})

    def elaborate(self, platform):
        from psconv.hw.sdram import SDRAM

        m = Module()
        platform.add_file("litedram_core.v", self.core.verilog.read_text())
        pins = platform.request("sdram", 0, dir="-")
        m.submodules.clocking = SDRAMClocking(self.plan.pll, self.board.clock_hz,
                                              self.board.clock_resource, pins.clk)
        m.submodules.sdram = sdram = SDRAM.from_core(self.core, pins=pins)
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]))
        fold = Signal()
        m.d.comb += [
            sdram.cmd.valid.eq(sdram.ready),
            sdram.cmd.payload.addr.eq(lfsr),
            sdram.cmd.payload.write.eq(lfsr[7]),
            sdram.wdata.valid.eq(sdram.ready),
            sdram.wdata.payload.data.eq(lfsr[8:24]),
            sdram.wdata.payload.enable.eq(lfsr[24:26]),
            sdram.rdata.ready.eq(1),
        ]
        with m.If(sdram.rdata.valid):
            m.d.sync += fold.eq(fold ^ sdram.rdata.payload.xor())
        led = platform.request("led", 0, dir="-")
        m.submodules.led = led_buf = io.Buffer("o", led)
        m.d.comb += led_buf.o.eq(fold)
        return m


def build_exerciser(outdir, board: str = "ulx3s-85f", module: str | None = None,
                    clock_mhz: float = 50.0, progress: bool = False) -> dict:
    """Place and route :class:`SDRAMExerciser` (no bitstream programming) and return
    nextpnr's figures: ``luts``, ``ffs``, ``fmax_mhz`` (the ``sync`` clock) and the report."""
    from psconv.rtl_gen.boards import get_board
    from psconv.rtl_gen.build import build_bitstream
    from psconv.rtl_gen.litedram import LiteDRAMConfig, generate_core

    board = get_board(board)
    core = generate_core(LiteDRAMConfig.for_board(board, module, clock_mhz * 1e6), "board")
    top = SDRAMExerciser(core, board, clock_mhz)
    report = build_bitstream(top, board, outdir, clock_mhz=None, progress=progress)
    raw = json.loads((Path(outdir) / "nextpnr_report.json").read_text())
    util = raw.get("utilization", {})
    fmax = {name: v.get("achieved") for name, v in raw.get("fmax", {}).items()}
    return {"luts": util.get("TRELLIS_COMB", {}).get("used"),
            "ffs": util.get("TRELLIS_FF", {}).get("used"),
            "fmax_mhz": fmax, "report": report}
