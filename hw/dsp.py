"""A signed multiplier with registered inputs and a registered product (latency 2).

``p`` in cycle t + 2 is ``a * b`` of cycle t. In simulation and in generic Verilog the two
register stages are ordinary flip-flops around a ``*``. On an ECP5 platform that opts in
(:func:`use_ecp5_dsp`: the ULX3S board builds and :class:`psconv.rtl_gen.fmax.FmaxTop`'s
measurement platform do) it is one ``MULT18X18D`` with its input A/B registers and its output
register enabled: Yosys 0.70's ``synth_ecp5`` maps a ``$mul`` to a ``MULT18X18D`` with every
register bypassed and does not pack neighbouring flip-flops into it, so a fabric flip-flop ->
DSP -> fabric flip-flop path costs the whole combinational multiply (an earlier 64-multiplier
array topped out at 108 MHz on that path). With the DSP's own registers the multiply is a
register-to-register path inside the block.

Widths: ``a`` and ``b`` at most 18 bits signed, ``p`` at most 36 bits; the instance sign-extends
its operands to 18 bits and ``p`` takes the low bits of the 36-bit product.

The instance is checked, not just reviewed: ``sim/ecp5_mult18x18d.v`` models the primitive in
the configuration used here, and :mod:`psconv.sim.ecp5_dsp` (``tests/hw/test_hw_ecp5_dsp.py``)
proves the instance equal to the generic form for 8-bit operands and compares the two on the
engine's wider products; the parameters pass ``ecppack``.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

LATENCY = 2


def use_ecp5_dsp(platform) -> bool:
    """Instantiate the primitive only where asked for (``platform.psconv_dsp_primitives``; the
    board builds set it from :attr:`psconv.rtl_gen.boards.Board.dsp_primitives`). Elsewhere (the
    simulators, generic Verilog, a platform that does not ask) the generic form stands."""
    return (getattr(platform, "family", None) == "ecp5"
            and bool(getattr(platform, "psconv_dsp_primitives", False)))


class RegisteredMultiplier(wiring.Component):
    """``fused_add_safe=True`` gives the product register a synchronous reset (the product is 0
    after reset; nothing else changes). Use it on one of two products that meet in an adder, as
    in the PE array's adder tree: Yosys 0.70's ``ice40_dsp`` fuses such an adder into one
    product's ``SB_MAC16`` and absorbs the other product's register a second time, leaving that
    operand undriven (the netlist then drops a lane). Its patterns take only plain flip-flops, so
    the reset keeps this product's register in the fabric (16 flip-flops on the iCE40; free on an
    ECP5, whose flip-flops have a reset input), where the fused adder reads it as an ordinary
    input. ``tests/hw/test_hw_ice40_dsp.py`` checks the mapped netlist. The ECP5 instance ignores
    it: its product register has no reset, like the generic form without ``fused_add_safe``
    (every other multiplier of the engine).

    The instance's parameters: registers on ``CLK0``/``CE0``/``RST0`` with ``CE0`` high and
    ``RST0`` low, ``SIGNEDA``/``SIGNEDB`` high, ``SOURCEA``/``SOURCEB`` low with ``SOURCEB_MODE``
    ``"B_SHIFT"`` (the parallel B input; the only legal values are those of the prjtrellis
    database, and ``ecppack`` fails on any other)."""

    def __init__(self, a_width: int, b_width: int, p_width: int | None = None, *,
                 fused_add_safe: bool = False):
        if not (1 <= a_width <= 18 and 1 <= b_width <= 18):
            raise ValueError(f"RegisteredMultiplier: operands are {a_width} and {b_width} bits; "
                             f"allowed: 1..18 bits each (one MULT18X18D)")
        self.a_width, self.b_width = a_width, b_width
        self.p_width = p_width if p_width is not None else a_width + b_width
        self.fused_add_safe = fused_add_safe
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "p": Out(signed(self.p_width))})

    def elaborate(self, platform):
        m = Module()
        if use_ecp5_dsp(platform):
            a18 = Signal(signed(18))
            b18 = Signal(signed(18))
            p36 = Signal(signed(36))
            m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36)]
            ports = {}
            for k in range(18):
                ports[f"i_A{k}"] = a18[k]
                ports[f"i_B{k}"] = b18[k]
                ports[f"i_C{k}"] = Const(0, 1)
            for k in range(36):
                ports[f"o_P{k}"] = p36[k]
            m.submodules.mult = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
                p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
                p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
                p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
                p_RESETMODE="SYNC",
                i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
                i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
                i_CLK0=ClockSignal("sync"), i_CLK1=Const(0, 1), i_CLK2=Const(0, 1), i_CLK3=Const(0, 1),
                i_CE0=Const(1, 1), i_CE1=Const(0, 1), i_CE2=Const(0, 1), i_CE3=Const(0, 1),
                i_RST0=Const(0, 1), i_RST1=Const(0, 1), i_RST2=Const(0, 1), i_RST3=Const(0, 1),
                **ports)
        else:
            a1 = Signal(signed(self.a_width), reset_less=True)
            b1 = Signal(signed(self.b_width), reset_less=True)
            m.d.sync += [a1.eq(self.a), b1.eq(self.b)]
            p = Signal(signed(self.p_width), reset_less=not self.fused_add_safe)
            m.d.sync += p.eq(a1 * b1)
            m.d.comb += self.p.eq(p)
        return m
