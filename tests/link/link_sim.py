"""Amaranth-simulator helpers for the link tests: stream put/get and a run with a watchdog.

``SimulatorTransport`` (a Transport to a design in the simulator) lives in
:mod:`psconv.sim.amaranth_transport`, which the end-to-end tests use too; it is re-exported here.

The helpers loop on single ``ctx.tick()`` awaits rather than ``.until()``/``.repeat()``: a
background testbench left waiting inside those async generators when the simulation ends makes
Python warn at teardown.
"""

from amaranth.sim import Simulator

from psconv.sim.amaranth_transport import SimulatorTransport  # noqa: F401 (re-exported)

CLOCK_PERIOD = 1e-6


async def stream_put(ctx, s, payload):
    """Offer ``payload`` on stream ``s`` until it is taken (one handshake)."""
    ctx.set(s.valid, 1)
    ctx.set(s.payload, payload)
    while True:
        _, _, ready = await ctx.tick().sample(s.ready)
        if ready:
            break
    ctx.set(s.valid, 0)


async def stream_get(ctx, s):
    """Take one payload from stream ``s`` (waits for valid)."""
    ctx.set(s.ready, 1)
    while True:
        _, _, valid, payload = await ctx.tick().sample(s.valid, s.payload)
        if valid:
            break
    ctx.set(s.ready, 0)
    return payload


def run(dut, testbenches, background=(), max_cycles=200_000):
    """Run until every foreground testbench has returned; fail if that takes over ``max_cycles``.

    A testbench that hangs (a stream that never hands over) becomes a clear failure instead of a
    hung test run.
    """
    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise AssertionError(f"testbenches did not finish within {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in (*background, watchdog):
        sim.add_testbench(tb, background=True)
    sim.run()
