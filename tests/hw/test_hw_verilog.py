"""The top converts to Verilog with flat, documented top-level ports."""

import re

from amaranth.back import verilog

from psconv.hw.engine import PeriodicSparseEngine
from psconv.protocol.descriptor import QUANT_ENTRY_LAYOUT, layer_descriptor_layout

from hw_sim_helpers import small_config


def test_top_level_ports():
    config = small_config()
    text = verilog.convert(PeriodicSparseEngine(config), name="psconv_engine")
    top = text[text.index("module psconv_engine("):]
    top = top[:top.index("endmodule")]
    ports = {}
    for direction, width, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", top, re.M):
        ports[name] = (direction, int(width) + 1 if width else 1)
    b, tm, tn = 8, config.tm, config.tn
    expected = {
        "clk": ("input", 1), "rst": ("input", 1),
        "layer": ("input", layer_descriptor_layout(config).size),
        "start": ("input", 1), "keep_map": ("input", 1), "busy": ("output", 1),
        "done": ("output", 1),
        "mask_in__valid": ("input", 1), "mask_in__ready": ("output", 1), "mask_in__payload": ("input", 9),
        "quant_in__valid": ("input", 1), "quant_in__ready": ("output", 1),
        "quant_in__payload": ("input", QUANT_ENTRY_LAYOUT.size),
        "weight_in__valid": ("input", 1), "weight_in__ready": ("output", 1), "weight_in__payload": ("input", b * tn),
        "fmap_in__valid": ("input", 1), "fmap_in__ready": ("output", 1), "fmap_in__payload": ("input", b * tn),
        "residual_in__valid": ("input", 1), "residual_in__ready": ("output", 1),
        "residual_in__payload": ("input", b * tm),
        "out__valid": ("output", 1), "out__ready": ("input", 1), "out__payload": ("output", b * tm),
        "busy_cycles": ("output", 48), "stall_cycles": ("output", 48), "idle_cycles": ("output", 48),
        "macs": ("output", 48),
    }
    assert ports == expected
