"""Verilog, bitstreams and board platforms (kept free of heavy imports: the CLI reads it)."""

import math
import time

# nextpnr-ecp5's placers and routers (docs/fpga.md). The static (electrostatic) placer spreads
# the engine out enough for router1 to route the 64-multiplier builds, which after the heap
# placer still had half their arcs unrouted after an hour; 16 and 32 multipliers routed in less
# time, at Fmax from 1.7 % lower to 8 % higher. router2 stalled on the congested engine builds
# (thousands of overused wires for tens of iterations), router1 converged.
ECP5_PLACERS = ("heap", "static")
DEFAULT_ECP5_PLACER = "static"
ECP5_ROUTERS = ("router1", "router2")
DEFAULT_ECP5_ROUTER = "router1"


def ecp5_place_route_args(placer: str, router: str) -> list[str]:
    """nextpnr-ecp5's ``--placer``/``--router`` arguments; an unknown name is refused here,
    before any tool runs."""
    from psconv.errors import PsconvError

    for what, value, allowed in (("placer", placer, ECP5_PLACERS),
                                 ("router", router, ECP5_ROUTERS)):
        if value not in allowed:
            raise PsconvError(f"nextpnr {what} {value!r}; allowed: {', '.join(allowed)}")
    return ["--placer", placer, "--router", router]


def progress_due(tty: bool):
    """A ``due()`` for a long build's progress details: true at most every 5 s on a terminal (a
    line refreshing in place), every 2 minutes otherwise (each refresh is more text in a CI
    log)."""
    interval = 5.0 if tty else 120.0
    last = -math.inf

    def due() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < interval:
            return False
        last = now
        return True
    return due
