"""cocotb side of the simulated board: a TCP socket on 127.0.0.1 <-> ``BoardTop(bridge=True)``.

Started by :class:`psconv.sim.bridge.SimBoard` (never by hand); its session file
(``PSCONV_TB_DATA``) names ``port_file``, where the ephemeral port is written once the socket
listens, plus ``beat_bytes`` (the top's ``bridge_beat_bytes``), ``fifo_beats``,
``accept_timeout_s``, ``clock_period_ns`` and ``max_idle_cycles``.

The top is built with the wide bridge: ``rx_beats`` / ``tx_beats`` carry up to ``beat_bytes``
bytes per beat (``count << 8 * beat_bytes | int.from_bytes(chunk, "little")``), and gearboxes in
gateware (:class:`~psconv.hw.byte_gearbox.BeatsToBytes` /
:class:`~psconv.hw.byte_gearbox.BytesToBeats`, each with a FIFO of ``fifo_beats`` beats) feed
the link layer one byte per cycle at most. Python (tens of microseconds per wake-up) runs once
per beat, not once per byte, and the clock toggles in C++ (cocotb's ``impl="gpi"`` clock), so
Verilator runs alone between wake-ups.

Shuttling. The bench wakes at rising edges. Under Verilator the values read there are those of
the cycle that just ended (sampled at the edge, before the design's registers update), so a beat
moved at this edge exactly when valid and ready were both high in that cycle; the bench then
drives the next cycle. While beats move it stays awake every cycle, offering the next host beat
on ``rx_beats`` and holding ``tx_beats__ready`` high. After a cycle in which nothing moved it
drops valid and ready, so nothing can move unseen, and lets Verilator run alone until
``tx_beats__valid`` rises or a number of cycles passes: half the rx FIFO's worth of bytes while
host bytes wait for room, ``4 * beat_bytes`` after a full answer beat (the answer may go on),
otherwise 64 cycles after activity, doubling up to ``max_idle_cycles``. The wait ends mid-cycle
(a Timer, not ``ClockCycles``, which would wake Python at every edge), then the bench drives
again.

Host bytes are sent as soon as an answer's last beat arrives (a beat that is not full: the
gearbox closes a beat after a few quiet cycles), when a wait after a full beat ends with nothing
new, or once 4 KiB have gathered; the socket is polled (without blocking) before every wait.

Waiting for the host. When everything the host sent has gone in, an answer has gone out and
the board has stayed quiet for 64 cycles since, the host is next: unless the engine is computing
(the top's ``engine_active`` hint), the bench blocks on the socket for up to ``HOST_WAIT_S``
instead of letting idle cycles pile up while the host thinks (then it runs a chunk and looks
again). Device cycle counts then hardly depend on the host's speed or the machine's load.

Shutdown: the host closing the connection (or dying: the kernel closes it) ends the test and the
simulator; no connection within ``accept_timeout_s`` ends it too.
"""

import os
import select
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from psconv.sim.runner import tb_data

MIN_IDLE_CYCLES = 64
HOST_WAIT_S = 0.01      # longest the simulator stands still waiting for the host's next frame
SEND_AT = 4096          # host bytes gathered before they are sent even mid-answer


def _write_port_file(path, port):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)   # the host never sees a half-written file


@cocotb.test()
async def serve(dut):
    session = tb_data()
    # in whole picoseconds, a multiple of 4 (the SDRAM clock's quarter-period offset below), so
    # any clock (60 MHz: 16.668 ns) is exact at the simulator's 1 ps precision
    quarter_ps = round(1000 * session.get("clock_period_ns", 10) / 4)
    period_ps = 4 * quarter_ps
    max_idle = int(session.get("max_idle_cycles", 4096))
    beat_bytes = int(session["beat_bytes"])
    refill_cycles = max(1, int(session["fifo_beats"]) // 2 * beat_bytes)
    answer_gap_cycles = 4 * beat_bytes
    clk = dut.clk
    # the clock toggles in C++ (cocotb's Python clock would wake Python twice a cycle)
    Clock(clk, period_ps, unit="ps", impl="gpi").start()
    sdram = hasattr(dut, "sdram_clk")
    if sdram:
        # the SDRAM chip's clock, 90 degrees after the controller's (as the ULX3S PLL makes it)
        await Timer(quarter_ps, unit="ps")
        Clock(dut.sdram_clk, period_ps, unit="ps", impl="gpi").start()

    def check_memory():
        """A simulated SDRAM's broken timing rule ends the run, named."""
        if sdram and int(dut.sdram_violation.value):
            from psconv.sim.sdram_chip import violation_name

            raise AssertionError(
                f"SDRAM timing violation: {violation_name(int(dut.sdram_violation_code.value))} "
                f"at chip cycle {int(dut.sdram_violation_cycle.value)}")
    rx_valid, rx_ready, rx_payload = dut.rx_beats__valid, dut.rx_beats__ready, dut.rx_beats__payload
    tx_valid, tx_ready, tx_payload = dut.tx_beats__valid, dut.tx_beats__ready, dut.tx_beats__payload
    engine_active = dut.engine_active
    count_shift = 8 * beat_bytes
    width = count_shift + beat_bytes.bit_length()
    if len(rx_payload) != width or len(tx_payload) != width:
        raise RuntimeError(f"bridge: the top's beats are {len(rx_payload)} bits, the session says "
                           f"{beat_bytes} bytes per beat ({width} bits): a stale build?")
    data_mask = (1 << count_shift) - 1
    rx_valid.value = 0
    tx_ready.value = 0
    await ClockCycles(clk, 8)     # past the top's own power-on reset (its rst input is unused)

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(session.get("accept_timeout_s", 120))
    _write_port_file(session["port_file"], server.getsockname()[1])
    try:
        conn, _ = server.accept()
    except socket.timeout:
        dut._log.warning("bridge: no host connected; stopping")
        return
    finally:
        server.close()
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    edge = RisingEdge(clk)
    tx_rise = RisingEdge(tx_valid)
    rx = bytearray()       # host bytes not yet taken by the board
    tx = bytearray()       # board bytes not yet sent to the host
    offered = 0            # bytes in the rx beat driven during the cycle now ending (0: none)
    rx_on = False          # rx_beats__valid as driven
    tx_open = False        # tx_beats__ready as driven during the cycle now ending
    answer_open = False    # the last tx beat was full: more of that answer may follow
    host_next = False      # the host's bytes are all in and an answer went out: its turn
    idle_cycles = MIN_IDLE_CYCLES
    stats = {"to_board": 0, "to_host": 0, "rx_beats": 0, "tx_beats": 0, "waits": 0,
             "host_waits": 0}
    started = time.perf_counter()

    def poll():
        """New host bytes (b"" if none yet); None when the host has gone."""
        try:
            data = conn.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""
        except OSError:
            return None
        stats["to_board"] += len(data)
        return data if data else None

    def flush():
        nonlocal host_next
        if tx:
            try:
                conn.sendall(tx)
            except OSError:
                return False
            stats["to_host"] += len(tx)
            tx.clear()
            host_next = not rx
        return True

    def drive():
        """Drive the next cycle: the next host beat (if any) and tx ready."""
        nonlocal offered, rx_on, tx_open
        if not offered and rx:
            chunk = rx[:beat_bytes]
            offered = len(chunk)
            rx_payload.value = offered << count_shift | int.from_bytes(chunk, "little")
            if not rx_on:
                rx_valid.value = 1
                rx_on = True
        elif not offered and rx_on:
            rx_valid.value = 0
            rx_on = False
        if not tx_open:
            tx_ready.value = 1
            tx_open = True

    while True:
        await edge
        # Values read at the edge are those of the cycle that just ended: a beat moved at this
        # edge iff valid and ready were both high in it.
        moved = False
        if tx_open and int(tx_valid.value):
            beat = tx_payload.value.to_unsigned()
            count = beat >> count_shift
            tx += (beat & data_mask).to_bytes(beat_bytes, "little")[:count]
            answer_open = count == beat_bytes
            host_next = False
            stats["tx_beats"] += 1
            moved = True
        if offered and int(rx_ready.value):
            del rx[:offered]
            offered = 0
            stats["rx_beats"] += 1
            moved = True
        if moved:
            idle_cycles = MIN_IDLE_CYCLES
            drive()
            if len(tx) >= SEND_AT and not flush():
                break
            continue

        # nothing moved: send what the host is waiting for, poll, let Verilator run alone
        check_memory()
        if not answer_open and not flush():
            break
        data = poll()
        if (not data and host_next and idle_cycles > MIN_IDLE_CYCLES and not offered
                and not int(engine_active.value)):
            # The host is next (an answer went out after its last byte went in, and the board
            # has been quiet for MIN_IDLE_CYCLES since) and the engine is not computing: stand
            # still until it sends, rather than pile up idle cycles while the host thinks.
            stats["host_waits"] += 1
            if select.select([conn], [], [], HOST_WAIT_S)[0]:
                data = poll()
        if data is None:
            break
        if data:
            host_next = False
        rx += data
        if data and not offered:
            drive()                       # new host bytes and room for them: feed at once
            continue
        if offered:                       # the rx FIFO is full: let it drain half-way
            rx_valid.value = 0
            rx_on = False
            offered = 0
            wait = refill_cycles
        elif answer_open:
            wait = answer_gap_cycles      # a slow answer's next beat, or its end on a full beat
        else:
            wait = idle_cycles
            idle_cycles = min(2 * idle_cycles, max_idle)
        tx_ready.value = 0
        tx_open = False
        stats["waits"] += 1
        # A Timer, not ClockCycles (which wakes Python at every edge). It ends mid-cycle, so the
        # beats driven now are seen by the next rising edge and that edge is the one awaited next.
        fired = await First(tx_rise, Timer(wait * period_ps - 2 * quarter_ps, unit="ps"))
        if fired is not tx_rise and answer_open:
            answer_open = False           # the answer's last beat happened to be full
            if not flush():
                break
        drive()
    flush()
    conn.close()
    check_memory()
    stats["cycles"] = int(get_sim_time(unit="ps") // period_ps)
    dut._log.info(f"bridge: host closed the connection after "
                  f"{time.perf_counter() - started:.1f} s; {stats}")
