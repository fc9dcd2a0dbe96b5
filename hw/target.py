"""What the gateware may assume about the FPGA it is elaborated for (the ``platform`` argument).

Blocks whose best structure differs between families ask here, so the choice is made in one
place and the simulator tests can force either structure through the block's own parameter.
Without a platform (simulation, ``psconv generate``) the answers describe a generic FPGA.
"""

from __future__ import annotations


def family(platform) -> str | None:
    """``"ecp5"``, ``"ice40"`` or ``None``: amaranth's platform ``family`` in lower case (its
    Lattice platforms say ``"ecp5"``, its SiliconBlue ones ``"iCE40"``)."""
    name = getattr(platform, "family", None)
    return name.lower() if isinstance(name, str) else None


def has_lut_ram(platform) -> bool:
    """Small memories can live in LUT RAM (an ECP5; the iCE40 has none, so there they take a
    block RAM or become flip-flops and multiplexers)."""
    return family(platform) == "ecp5"


def area_first(platform) -> bool:
    """Logic cells, not clock speed, are what the design runs out of (an iCE40UP5K: 5,280 cells,
    a 12 MHz link clock): a pipeline register goes where it costs the fewest flip-flops, even if
    that puts more logic in front of it. Elsewhere registers sit where they shorten paths."""
    return family(platform) == "ice40"
