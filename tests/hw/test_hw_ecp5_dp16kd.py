"""The behavioural DP16KD model (``sim/ecp5_dp16kd.v``) reads and writes what the Amaranth memories
it stands for read and write, in every configuration ``synth_ecp5`` makes of them; a model that is
wrong in its write mode or its narrow-width bit layout fails; a configuration it does not model
stops the build.

Why: the ECP5 engine netlist (tests/rtl/test_engine_netlist.py) is simulated with this model as
its block RAM; Yosys ships no behaviour for the primitive. Each comparison synthesizes the memories
and builds a Verilator bench (about 40 s on 2 busy cores; :mod:`psconv.sim.ecp5_dp16kd`).
"""

import os
import subprocess

import pytest

from psconv.sim.ecp5_dp16kd import MEMORIES, MODEL_PATH, compare_with_rtl
from psconv.sim.engine_netlist import MODEL_CHECKS_FATAL
from psconv.sim.verilator import verilator_binary, verilator_env

pytestmark = pytest.mark.rtl


def _variant(tmp_path, *replacements):
    text = MODEL_PATH.read_text()
    for old, new in replacements:
        assert text.count(old) >= 1, old
        text = text.replace(old, new)
    path = tmp_path / "wrong_dp16kd.v"
    path.write_text(text)
    return path


def test_model_matches_the_amaranth_memories(tmp_path):
    check = compare_with_rtl(tmp_path, cycles=20000)
    print(f"\n{check.cells}; mismatching cycles per memory: {check.mismatches}")
    assert check.equal, check.mismatches
    assert check.cells["DP16KD"] == len(MEMORIES)    # every memory is a block RAM
    widths = {int(p[k].split("'d")[-1]) for p in check.parameters
              for k in ("DATA_WIDTH_A", "DATA_WIDTH_B")}
    assert widths == {1, 2, 4, 9, 18, 36}
    modes = {p["WRITEMODE_A"] for p in check.parameters if "WRITEMODE_A" in p}
    assert modes == {"NORMAL", "WRITETHROUGH", "READBEFOREWRITE"}
    # the engine's configuration: x18, port A writes, port B reads (old data on a collision)
    assert any(p["DATA_WIDTH_A"] == p["DATA_WIDTH_B"] == "32'd18" and p["WEB"] == "1'h0"
               and p.get("WRITEMODE_B") == "READBEFOREWRITE" for p in check.parameters)


# block RAMs of the board top beside the engine: the link's receive and replay buffers and the
# output FIFO (docs/fpga.md, "Where the DP16KD go")
BOARD_TOP_BLOCK_RAMS = 3


@pytest.mark.parametrize("board", ["ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f"])
def test_every_block_ram_configuration_of_the_ulx3s_engines_is_checked(tmp_path, board):
    """The configurations of the bitstream's block RAMs (each ULX3S engine configuration's own,
    through synth_ecp5's block-RAM mapping) are among those the comparison above exercises, and
    there are few enough of them for the board's device."""
    from psconv.rtl_gen.boards import get_board
    from psconv.rtl_gen.clocking import make_platform
    from psconv.sim.ecp5_dp16kd import (_memory_modes, configurations, dp16kd_parameters,
                                        engine_block_rams)
    from psconv.sim.engine_netlist import synthesize

    netlist = engine_block_rams(board, tmp_path / "engine")
    engine = configurations(netlist)
    design, _, _ = _memory_modes()
    checked = configurations(synthesize(design, tmp_path / "modes", make_platform(board), "ecp5",
                                        name="gate").read_text())
    blocks = len(dp16kd_parameters(netlist))
    print(f"\n{board}: {blocks} DP16KD, {len(engine)} configurations: {sorted(engine)}")
    assert engine and engine <= checked, engine - checked
    assert blocks + BOARD_TOP_BLOCK_RAMS <= get_board(board).resources.brams


def test_a_model_with_swapped_write_modes_is_caught(tmp_path):
    wrong = _variant(tmp_path, ('WRITEMODE_A == "READBEFOREWRITE"', 'WRITEMODE_A == "@"'),
                     ('WRITEMODE_A == "WRITETHROUGH"', 'WRITEMODE_A == "READBEFOREWRITE"'),
                     ('WRITEMODE_A == "@"', 'WRITEMODE_A == "WRITETHROUGH"'))
    check = compare_with_rtl(tmp_path / "check", cycles=2000, model=wrong)
    print(f"\nmismatching cycles per memory: {check.mismatches}")
    wrong_modes = {"x18_bytes_new", "x4_new", "x9_old", "x1_old", "x18_no_change"}
    assert all(check.mismatches[name] > 0 for name in wrong_modes - {"x18_no_change"})
    assert check.mismatches["x18_separate"] == 0     # its port A only writes


def test_a_model_without_the_parity_bit_gap_is_caught(tmp_path):
    """The narrow widths skip bits 8 and 17; a model that packs them densely reads the initial
    contents (INITVAL) wrongly."""
    wrong = _variant(tmp_path, ("(k >= 8 ? 1 : 0)", "0"), ("(k >= 4 ? 1 : 0)", "0"),
                     ("(k >= 2 ? 1 : 0)", "0"))
    check = compare_with_rtl(tmp_path / "check", cycles=2000, model=wrong)
    print(f"\nmismatching cycles per memory: {check.mismatches}")
    assert all(check.mismatches[name] > 0 for name in ("x4_new", "x2_separate", "x1_old"))
    assert check.mismatches["x18_separate"] == check.mismatches["x9_old"] == 0


def test_model_refuses_a_configuration_it_does_not_model(tmp_path):
    (tmp_path / "top.v").write_text(
        'module top(input a, output p); DP16KD #(.WRITEMODE_A("BYPASS")) m(.ADA0(a), .DOA0(p));'
        " endmodule\n")
    """With the netlist build's flags (``-Wno-fatal`` and :data:`MODEL_CHECKS_FATAL`)."""
    done = subprocess.run([str(verilator_binary()), "--lint-only", "-Wno-fatal", "-Wno-lint",
                           *MODEL_CHECKS_FATAL, "--top-module", "top", "top.v", str(MODEL_PATH)],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **verilator_env()})
    assert done.returncode != 0
    assert "WRITEMODE_A/B must be NORMAL, WRITETHROUGH or READBEFOREWRITE" in done.stderr
