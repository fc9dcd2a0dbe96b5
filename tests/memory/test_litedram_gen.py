"""LiteDRAM core generation (rtl_gen/litedram.py): ports, fixes, init program, cache."""

import pytest

from psconv.errors import PsconvError
from psconv.rtl_gen.litedram import (BANK_PORTS, LiteDRAMConfig, generate_core,
                                     parse_init_sequence, _port_widths)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("litedram-cache")


def test_board_core_ports_and_inout_dq(cache):
    core = generate_core(LiteDRAMConfig(module="MT48LC16M16"), "board", cache_dir=cache)
    text = core.verilog.read_text()
    assert "inout  wire   [15:0] sdram_dq," in text
    ports = _port_widths(text)
    assert ports["sdram_a"] == 13 and ports["sdram_ba"] == 2 and ports["sdram_dm"] == 2
    for bank in range(BANK_PORTS):  # a native port per bank, each seeing all 32 MB
        assert ports[f"user_port_bank{bank}_cmd_addr"] == 24  # 32 MB in 16-bit words
        assert ports[f"user_port_bank{bank}_wdata_we"] == 2
    assert f"user_port_bank{BANK_PORTS}_cmd_addr" not in ports and ports["wb_ctrl_adr"] == 30
    assert core.info["cl"] == 2 and core.info["ncols"] == 512
    assert text.count("TRELLIS_IO") >= 16  # the dq buffers stay for the FPGA flow


def test_sim_core_splits_dq_and_caches(cache):
    config = LiteDRAMConfig(module="AS4C32M16_7")
    core = generate_core(config, "sim", cache_dir=cache)
    assert core.info["controller_cycles"]["tRCD"] == 2  # 21 ns at 50 MHz
    ports = core.info["ports"]
    assert (ports["sdram_dq_i"], ports["sdram_dq_o"], ports["sdram_dq_oe"]) == (16, 16, 16)
    assert "sdram_dq" not in ports and core.address_width == 25  # 64 MB
    assert "module OFS1P3BX" in core.verilog_text()
    again = generate_core(config, "sim", cache_dir=cache)
    assert again.cached and again.directory == core.directory
    assert not core.cached and core.seconds < 30


def test_init_sequence_from_header(cache):
    core = generate_core(LiteDRAMConfig(), "board", cache_dir=cache)
    commands = [s.command for s in core.init_sequence if s.command]
    assert commands == ["PRECHARGE_ALL", "MODE_REGISTER", "PRECHARGE_ALL", "AUTO_REFRESH",
                        "AUTO_REFRESH", "MODE_REGISTER"]
    final_mode = [s for s in core.init_sequence if s.csr == "sdram_dfii_pi0_address"][-1]
    assert final_mode.value == 0x20  # CL 2 (A6:4), burst length 1
    assert [s.csr for s in core.init_sequence[-3:]] == [
        "sdram_dfii_control", "ddrctrl_init_error", "ddrctrl_init_done"]
    assert core.csrs["ddrctrl_init_done"] == 0 and core.csrs["sdram_dfii_control"] == 0x800


def test_errors_name_the_problem(cache):
    with pytest.raises(PsconvError, match="allowed: AS4C32M16_7, AS4C32M16, MT48LC16M16, IS42S16160"):
        LiteDRAMConfig(module="W9825G6KH")
    with pytest.raises(PsconvError, match="allowed: board, sim"):
        generate_core(LiteDRAMConfig(), "fpga", cache_dir=cache)
    with pytest.raises(PsconvError, match="unexpected statement"):
        parse_init_sequence("static inline void init_sequence(void)\n{\n\tsdram_poke();\n}\n")


def test_pll_phase_for_90_degrees():
    from psconv.hw.sdram_clocking import pll_phase

    assert pll_phase(12, 90) == (14, 0)   # 3 whole VCO cycles after CLKOP's CPHASE 11
    assert pll_phase(10, 90) == (11, 4)   # 2.5 VCO cycles: 2 whole, 4 eighths
    assert pll_phase(12, 0) == (11, 0)


def test_board_option_selects_the_module():
    config = LiteDRAMConfig.for_board("ulx3s-85f")
    assert config.module == "MT48LC16M16" and config.device == "LFE5U-85F-6BG381C"
    assert LiteDRAMConfig.for_board("ulx3s-85f", "AS4C32M16_7").module == "AS4C32M16_7"
    with pytest.raises(PsconvError, match="has no SDRAM"):
        LiteDRAMConfig.for_board("icebreaker")
