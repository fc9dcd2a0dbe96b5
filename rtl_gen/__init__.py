"""Verilog, bitstreams and board platforms (kept free of heavy imports: the CLI reads it)."""

# nextpnr-ecp5's routers. router1 is the default everywhere: router2 stalled on the congested
# engine builds here (thousands of overused wires for tens of iterations), router1 converged
# (docs/fpga.md).
ECP5_ROUTERS = ("router1", "router2")
DEFAULT_ECP5_ROUTER = "router1"
