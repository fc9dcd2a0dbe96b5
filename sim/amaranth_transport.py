"""A :class:`~psconv.firmware.transport.Transport` whose far end is a design in the Amaranth simulator.

Why: the link, the command processor and the driver can then be tested together in-process, on
simulated time, without Verilator: the same ``LinkClient`` / ``Driver`` code that talks to a
serial port talks to a byte-stream design (e.g. ``BoardTop(bridge=True)`` or a bare
``LinkLayer``) cycle by cycle.
"""

from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from psconv.firmware.transport import Clock, Transport


class SimulatorTransport(Transport):
    """A Transport whose far end is a byte-stream design running in the Amaranth simulator.

    ``write`` queues bytes for the design's ``rx`` stream (one per cycle at most); ``read``
    advances the simulation until the design's ``tx`` stream has produced bytes or the timeout
    passes. Time is simulated: ``clock.now()`` is cycles x ``clk_period``, so host timeouts are
    measured in design cycles. ``testbenches`` (e.g. a command processor) run in the background.
    """

    def __init__(self, dut, rx, tx, testbenches=(), clk_period=1e-6):
        transport = self
        self.cycles = 0
        self._to_dut = deque()
        self._from_dut = bytearray()

        class CycleClock(Clock):
            def now(self):
                return transport.cycles * clk_period

            def sleep(self, seconds):
                transport._run_until(self.now() + seconds)

        self.clock = CycleClock()

        async def feeder(ctx):
            while True:
                if self._to_dut:
                    ctx.set(rx.valid, 1)
                    ctx.set(rx.payload, self._to_dut[0])
                    _, _, ready = await ctx.tick().sample(rx.ready)
                    if ready:
                        self._to_dut.popleft()
                else:
                    ctx.set(rx.valid, 0)
                    await ctx.tick()

        async def collector(ctx):
            ctx.set(tx.ready, 1)
            async for _, _, valid, byte in ctx.tick().sample(tx.valid, tx.payload):
                self.cycles += 1
                if valid:
                    self._from_dut.append(byte)

        self.sim = Simulator(dut)
        self.sim.add_clock(clk_period)
        for tb in (feeder, collector, *testbenches):
            self.sim.add_testbench(tb, background=True)

    def _run_until(self, t, stop_on_data=False):
        while self.clock.now() < t and not (stop_on_data and self._from_dut):
            self.sim.advance()

    def write(self, data):
        self._to_dut.extend(data)

    def read(self, max_bytes, timeout_s):
        self._run_until(self.clock.now() + timeout_s, stop_on_data=True)
        data = bytes(self._from_dut[:max_bytes])
        del self._from_dut[:max_bytes]
        return data
