"""Amaranth-simulator helpers shared by every test folder: run a design, drive and take streams.

Importable as ``sim_helpers`` from any test (``pythonpath = ["tests"]`` in pyproject.toml).
Folder-specific helpers (``tests/hw/hw_sim_helpers.py``, ``tests/link/link_sim.py``,
``tests/e2e/e2e_helpers.py``) build on these.

The stream helpers loop on single ``ctx.tick()`` awaits rather than ``.until()``/``.repeat()``:
a background testbench left waiting inside those async generators when the simulation ends
makes Python warn at teardown.
"""

from amaranth.sim import Simulator

CLOCK_PERIOD = 1e-6


def raw(value):
    """The plain Value under a data.View (ctx.set/get on it take/give integers)."""
    return value.as_value() if hasattr(value, "as_value") else value


def run(dut, *testbenches, background=(), max_cycles=None, vcd=None):
    """Simulate ``dut`` until every testbench (``async def tb(ctx)``) has returned.

    ``background`` testbenches (monitors, responders, sinks) run alongside but do not keep the
    simulation going. ``max_cycles``: fail if the testbenches take longer, so a stream that never
    hands over is a clear failure instead of a hung test run (None: no limit). ``vcd``: a path to
    write the waveforms to. The clock period is ``CLOCK_PERIOD``.
    """
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    if max_cycles is not None:
        async def watchdog(ctx):
            for _ in range(max_cycles):
                await ctx.tick()
            raise AssertionError(f"testbenches did not finish within {max_cycles} cycles")

        sim.add_testbench(watchdog, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


async def stream_put(ctx, s, payload, *, gap=0.0, rng=None):
    """Offer ``payload`` on stream ``s`` until it is taken (one handshake); ``valid`` is low after.

    An int sets the payload's bits whatever its shape (a ``data.View`` too); anything else (a
    mapping for a struct) goes through the payload's layout. ``gap``: before offering, ``valid``
    is withheld for a cycle with this probability, again and again (``rng.random()`` draws).
    """
    while gap and rng.random() < gap:
        ctx.set(s.valid, 0)
        await ctx.tick()
    ctx.set(s.valid, 1)
    ctx.set(raw(s.payload) if isinstance(payload, int) else s.payload, payload)
    while True:
        _, _, ready = await ctx.tick().sample(s.ready)
        if ready:
            break
    ctx.set(s.valid, 0)


async def stream_get(ctx, s, *, stall=0.0, rng=None):
    """Take one payload from stream ``s`` (waits for ``valid``); ``ready`` is low after.

    Returns the payload as sampled: an int, or a ``data.Const`` for a layout (``.as_bits()``
    gives its bits). ``stall``: each cycle ``ready`` is withheld with this probability
    (``rng.random()`` draws).
    """
    while True:
        ready = not (stall and rng.random() < stall)
        ctx.set(s.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(s.valid, s.payload)
        if valid and ready:
            break
    ctx.set(s.ready, 0)
    return payload
