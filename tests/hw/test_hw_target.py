"""The platform questions behind the per-family structures (hw/target.py) on the real boards'
platforms: if amaranth stopped naming the family, an iCE40 build would silently get the ECP5
structures (and not fit)."""

from psconv.hw.target import area_first, family, has_lut_ram
from psconv.rtl_gen.boards import BOARDS


def test_board_platforms_answer_by_family():
    for board in BOARDS.values():
        platform = board.platform()
        assert family(platform) == board.family
        assert area_first(platform) == (board.family == "ice40")
        assert has_lut_ram(platform) == (board.family == "ecp5")


def test_no_platform_is_generic():
    assert family(None) is None and not area_first(None) and not has_lut_ram(None)
