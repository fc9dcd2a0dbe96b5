"""The boards psconv builds bitstreams for, and what each one holds.

A :class:`Board` names everything the build and program steps need about one board: the
amaranth-boards platform class, the FPGA (family, device, package, speed grade), the on-board
oscillator, the FTDI UART resource the host link uses, the device's resource totals (so a
build report can state utilization in percent) and the :class:`~psconv.config.EngineConfig`
that fits the device.

Supported boards (:data:`BOARDS`, in this order):

* ``ulx3s-85f`` (the reference board), ``ulx3s-45f``, ``ulx3s-25f``, ``ulx3s-12f``: Radiona
  ULX3S with an ECP5 LFE5U-xxF in caBGA381, speed grade 6, 25 MHz oscillator, FTDI FT231X
  UART (``uart`` 0: ``rx``/``tx``, plus ``rts``/``dtr`` inputs). The platform also lists
  ``uart_tx_enable`` (pin L3, wired to the FT231X's TXDEN): leave it unrequested; the host
  link needs only ``rx``/``tx``.
* ``icebreaker``: 1BitSquared iCEBreaker, iCE40UP5K-SG48, 12 MHz oscillator, FTDI FT2232H
  channel B UART (``uart`` 0), 8 SB_MAC16 DSPs. Its host link takes frames of at most 512
  payload bytes (:attr:`Board.link_max_payload`): each of the link's two buffers is then one
  4 kbit block RAM instead of two.

Totals are the datasheet figures (Lattice FPGA-DS-02012 for ECP5, FPGA-DS-02008 for iCE40
UltraPlus). On ECP5 every slice pairs two LUT4s with two flip-flops, so flip-flops = LUTs.
The 12F is a 25F die that nextpnr models in full (its report says 24k LUTs available); the
registry keeps the 12F's licensed totals (the datasheet's nominal "12K" LUTs, 32 EBRs, 28
multipliers), which are what utilization must be measured against.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.protocol.frame import MAX_PAYLOAD


@dataclass(frozen=True)
class DeviceResources:
    """Resource totals of one FPGA device (what utilization percentages are measured against).

    * ``luts``: 4-input LUTs (ECP5 ``TRELLIS_COMB`` / iCE40 ``ICESTORM_LC``).
    * ``ffs``: flip-flops.
    * ``dsps``: hard multipliers: ECP5 ``MULT18X18D`` (18x18), iCE40 ``SB_MAC16`` (16x16).
    * ``brams``: block RAMs: ECP5 ``DP16KD`` (18 kbit EBR), iCE40 ``SB_RAM40_4K`` (4 kbit).
    * ``sprams``: iCE40 UltraPlus ``SB_SPRAM256KA`` (256 kbit single-port RAM); 0 on ECP5.
    """

    luts: int
    ffs: int
    dsps: int
    brams: int
    sprams: int = 0

    def to_json(self) -> dict:
        return {"luts": self.luts, "ffs": self.ffs, "dsps": self.dsps, "brams": self.brams,
                "sprams": self.sprams}


def _ulx3s_engine_config() -> EngineConfig:
    """Every ResNet18-CIFAR layer shape on 64 multipliers (Tm=4, Tn=16) with 128 channels per
    patch buffer (deeper layers run in input-channel passes) and 4096 weight words (64 KiB, as
    many bytes as the 32-multiplier engine's 8192): the 16 lane copies of the patch memory
    (window-row words, 6 DP16KD each) and the 64 KiB feature-map buffer fit beside the board
    top's SDRAM controller and link in 189 of the 85F's 208 DP16KD (area and timing:
    docs/fpga.md)."""
    return EngineConfig(tn=16, patch_channels=128, weight_depth=4096)


def _ulx3s_45f_engine_config() -> EngineConfig:
    """For the 45F (72 MULT18X18D, 108 EBRs): 32 multipliers (Tm=4, Tn=8), 128 channels per
    pass, a 32 KiB feature-map buffer and 2048 weight words: 92 EBRs and 60 MULT18X18D of engine
    by Yosys' mapping (tests/hw/test_hw_ecp5_dp16kd.py; not placed and routed here). Full-width
    ResNet18-CIFAR's 64 KiB maps do not fit the buffer; width 32 does."""
    return EngineConfig(tn=8, patch_channels=128, fmap_depth=32768, weight_depth=2048)


def _ulx3s_25f_engine_config() -> EngineConfig:
    """For the 25F (28 MULT18X18D, 56 EBRs): 8 multipliers (Tm=2, Tn=4), 256 channels, a 16 KiB
    feature-map buffer and 2048 weight words: 50 EBRs and 23 MULT18X18D of engine by Yosys'
    mapping (not placed and routed here)."""
    return EngineConfig(tm=2, tn=4, max_in_channels=256, max_out_channels=256,
                        fmap_depth=16384, weight_depth=2048)


def _ulx3s_12f_engine_config() -> EngineConfig:
    """For the 12F (28 MULT18X18D, 32 EBRs): 4 multipliers (Tm=1, Tn=4), 128 channels, 16x16
    maps, an 8 KiB feature-map buffer and 2048 weight words: 28 EBRs of engine by Yosys'
    mapping, 31 of 32 in the built board top (docs/fpga.md)."""
    return EngineConfig(tm=1, tn=4, max_in_channels=128, max_out_channels=128, max_height=16,
                        max_width=16, fmap_depth=8192, weight_depth=2048)


def _icebreaker_engine_config() -> EngineConfig:
    """iCE40UP5K (5,280 logic cells, 30 x 4 kbit block RAM, 8 SB_MAC16): 2 multipliers (Tm=1,
    Tn=2), 16 channels, 8x8 maps, a 1 KiB feature-map buffer and 256 weight words. Enough for a
    width-2 PSD1_P16 ResNet18 on 8x8 images (every layer of it, bit-exact); the post-processor
    takes the other 6 DSPs. Measured in docs/fpga.md. No output max-pool block: the board is
    full (5,259 of 5,280 logic cells without it)."""
    return EngineConfig(tm=1, tn=2, max_in_channels=16, max_out_channels=16,
                        max_height=8, max_width=8, fmap_depth=1024, weight_depth=256,
                        max_pool=False)


@dataclass(frozen=True)
class Board:
    """One supported board. ``platform()`` returns a fresh amaranth-boards platform instance."""

    name: str
    description: str
    platform_module: str
    platform_class_name: str
    family: str                 # "ecp5" or "ice40": selects PLL primitive and report cell names
    device: str                 # as nextpnr/amaranth name it, e.g. "LFE5U-85F", "iCE40UP5K"
    package: str
    speed_grade: str | None
    clock_resource: str         # the oscillator's resource name, e.g. "clk25"
    clock_hz: float
    uart_resource: str          # the FTDI UART: platform.request(uart_resource, uart_number)
    uart_number: int
    resources: DeviceResources
    bitstream_suffix: str       # ".bit" (ECP5, SRAM load) or ".bin" (iCE40)
    openfpgaloader_board: str   # openFPGALoader -b NAME
    engine_config_factory: Callable[[], EngineConfig]
    link_clock_mhz: float | None = None
    """Default ``sync`` clock of a build (None: the oscillator): a clock the 3 Mbaud host link
    divides exactly (ULX3S: 60 MHz from the PLL, divisor 20; iCEBreaker: 12 MHz, divisor 4)."""
    link_max_payload: int = MAX_PAYLOAD
    """Largest frame payload the board's link takes (reported by ``IDENTIFY``; the driver sends
    and reads in frames of at most this). The link's receive and replay buffers hold this many
    bytes each: on the iCE40, 512 bytes is one block RAM per buffer, ``MAX_PAYLOAD`` two."""
    gateware_guards: bool = True
    """Whether the board top has the descriptor check and the host watchdog
    (:meth:`psconv.hw.board_top.BoardTop.guards`). False on the iCEBreaker: its iCE40UP5K is
    full (the two take about 60 logic cells), so its host checks descriptors and a board left
    busy waits for ``ABORT``, which it keeps."""
    sdram_module: str | None = None
    """The board's SDR SDRAM as :data:`psconv.rtl_gen.litedram.SDRAM_MODULES` names it (None:
    none). ULX3S: ``MT48LC16M16`` (32 MB); boards with the 64 MB AS4C32M16SB-7 take
    ``AS4C32M16_7`` as the build's ``module`` option instead."""
    dsp_primitives: bool = False
    """Whether a build instantiates the multipliers as ``MULT18X18D`` with their own input and
    output registers (ECP5 only; :func:`psconv.hw.dsp.use_ecp5_dsp`) rather than leaving them to
    Yosys' mapping, which packs no registers into the DSP. The instance is checked against the
    generic registered ``*`` with a model of the primitive (``tests/hw/test_hw_ecp5_dsp.py``)."""

    @property
    def platform_class(self):
        """The amaranth-boards platform class (imported on first use)."""
        module = importlib.import_module(self.platform_module)
        return getattr(module, self.platform_class_name)

    def platform(self):
        return self.platform_class()

    def engine_config(self) -> EngineConfig:
        """The engine configuration that fits this board's device."""
        return self.engine_config_factory()

    @property
    def clock_mhz(self) -> float:
        return self.clock_hz / 1e6

    def to_json(self) -> dict:
        return {
            "name": self.name, "description": self.description,
            "platform": f"{self.platform_module}.{self.platform_class_name}",
            "family": self.family, "device": self.device, "package": self.package,
            "speed_grade": self.speed_grade, "clock_resource": self.clock_resource,
            "clock_hz": self.clock_hz,
            "uart": {"resource": self.uart_resource, "number": self.uart_number},
            "resources": self.resources.to_json(),
            "bitstream_suffix": self.bitstream_suffix,
            "openfpgaloader_board": self.openfpgaloader_board,
            "link_max_payload": self.link_max_payload,
            "gateware_guards": self.gateware_guards,
            "dsp_primitives": self.dsp_primitives,
        }


def _ulx3s(size: str, luts: int, dsps: int, brams: int, config_factory) -> Board:
    return Board(
        name=f"ulx3s-{size.lower()}",
        description=f"Radiona ULX3S, ECP5 LFE5U-{size} (caBGA381, speed grade 6), 25 MHz, FTDI UART",
        platform_module="amaranth_boards.ulx3s",
        platform_class_name=f"ULX3S_{size}_Platform",
        family="ecp5", device=f"LFE5U-{size}", package="BG381", speed_grade="6",
        clock_resource="clk25", clock_hz=25e6,
        uart_resource="uart", uart_number=0,
        resources=DeviceResources(luts=luts, ffs=luts, dsps=dsps, brams=brams),
        bitstream_suffix=".bit", openfpgaloader_board="ulx3s",
        engine_config_factory=config_factory,
        link_clock_mhz=60.0,
        sdram_module="MT48LC16M16",
        dsp_primitives=True,
    )


BOARDS: dict[str, Board] = {
    board.name: board for board in (
        _ulx3s("85F", luts=83640, dsps=156, brams=208, config_factory=_ulx3s_engine_config),
        _ulx3s("45F", luts=43848, dsps=72, brams=108, config_factory=_ulx3s_45f_engine_config),
        _ulx3s("25F", luts=24288, dsps=28, brams=56, config_factory=_ulx3s_25f_engine_config),
        _ulx3s("12F", luts=12000, dsps=28, brams=32, config_factory=_ulx3s_12f_engine_config),
        Board(
            name="icebreaker",
            description="1BitSquared iCEBreaker, iCE40UP5K (SG48), 12 MHz, FTDI UART",
            platform_module="amaranth_boards.icebreaker",
            platform_class_name="ICEBreakerPlatform",
            family="ice40", device="iCE40UP5K", package="SG48", speed_grade=None,
            clock_resource="clk12", clock_hz=12e6,
            uart_resource="uart", uart_number=0,
            resources=DeviceResources(luts=5280, ffs=5280, dsps=8, brams=30, sprams=4),
            bitstream_suffix=".bin", openfpgaloader_board="ice40_generic",
            engine_config_factory=_icebreaker_engine_config,
            link_max_payload=512,
            gateware_guards=False,
        ),
    )
}
"""Every supported board by name; the first is the default."""

DEFAULT_BOARD = "ulx3s-85f"


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name) -> Board:
    """The board called ``name`` (case-insensitive), or a :class:`PsconvError` listing the allowed."""
    if isinstance(name, Board):
        return name
    key = str(name).strip().lower()
    if key not in BOARDS:
        raise PsconvError(f"board {name!r} is not supported; allowed: {', '.join(BOARDS)}")
    return BOARDS[key]
