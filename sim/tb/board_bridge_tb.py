"""cocotb side of the simulated board: a TCP socket on 127.0.0.1 <-> ``BoardTop(bridge=True)``.

Started by :class:`psconv.sim.bridge.SimBoard` (never by hand); its session file
(``PSCONV_TB_DATA``) names ``port_file``, where the ephemeral port is written once the socket
listens, plus ``accept_timeout_s``, ``clock_period_ns`` and ``max_idle_cycles``.

Shuttling. While bytes flow, one Python iteration per clock cycle. At each rising edge the bench
reads ``rx_data__ready``, ``tx_data__valid`` and ``tx_data__payload``: under Verilator these are
the values of the cycle that just ended (sampled at the edge, before the design's registers
update), so a byte moved at this edge exactly when valid and ready were both high in that cycle.
It then drives the next cycle: the next host byte on ``rx_data`` and ``tx_data__ready`` high.
When nothing flows (no host byte pending, nothing offered on ``tx_data``) for ``FLUSH_AFTER``
cycles in a row (the short gaps between output beats inside one answer do not count), it sends
the collected bytes to the host and polls the socket without blocking; after ``IDLE_AFTER`` such
cycles with an empty socket it drops ``tx_data__ready`` and lets Verilator run alone until
``tx_data__valid`` rises or a chunk of cycles passes (64 cycles after activity, doubling up to
``max_idle_cycles``): the engine computes at Verilator speed and a new command is still noticed
quickly. With ready low no byte can move while Python is not looking; the cycle after waking is
sampled with ready low, then ready goes high again.

Shutdown: the host closing the connection (or dying: the kernel closes it) ends the test and the
simulator; no connection within ``accept_timeout_s`` ends it too.
"""

import os
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from psconv.sim.runner import tb_data

MIN_IDLE_CYCLES = 64
POLL_EVERY = 4096       # cycles between socket polls while host bytes are still being fed in
FLUSH_AFTER = 4         # quiet cycles before the collected bytes go to the host
IDLE_AFTER = 16         # quiet cycles (and an empty socket) before Verilator runs alone


def _write_port_file(path, port):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)   # the host never sees a half-written file


@cocotb.test()
async def serve(dut):
    session = tb_data()
    period_ns = session.get("clock_period_ns", 10)
    max_idle = int(session.get("max_idle_cycles", 4096))
    clk = dut.clk
    cocotb.start_soon(Clock(clk, period_ns, unit="ns").start())
    rx_valid, rx_ready, rx_payload = dut.rx_data__valid, dut.rx_data__ready, dut.rx_data__payload
    tx_valid, tx_ready, tx_payload = dut.tx_data__valid, dut.tx_data__ready, dut.tx_data__payload
    rx_valid.value = 0
    tx_ready.value = 0
    dut.rst.value = 1
    await ClockCycles(clk, 4)
    dut.rst.value = 0

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
    rx = bytearray()
    pos = 0
    tx = bytearray()
    offering = False      # rx_data__valid as driven during the cycle now ending
    driven = -1           # index in rx of the byte on rx_data__payload
    tx_open = False       # tx_data__ready as driven during the cycle now ending
    idle_cycles = MIN_IDLE_CYCLES
    since_poll = 0
    quiet = 0             # cycles in a row with nothing to send either way
    stats = {"to_board": 0, "to_host": 0}
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
        if tx:
            try:
                conn.sendall(tx)
            except OSError:
                return False
            stats["to_host"] += len(tx)
            tx.clear()
        return True

    while True:
        await edge
        # Values read at the edge are those of the cycle that just ended: a byte moved at this
        # edge iff valid and ready were both high in it.
        sending = int(tx_valid.value)
        if sending and tx_open:
            tx.append(int(tx_payload.value))
        if offering and int(rx_ready.value):
            pos += 1
        # drive the next cycle
        if pos == len(rx) and not sending:
            quiet += 1
            if pos:
                rx.clear()
                pos = 0
                driven = -1
            # a cycle or two of silence inside an answer (between output beats) is not the end
            # of it: only after FLUSH_AFTER quiet cycles are the bytes sent and the socket polled
            if quiet >= FLUSH_AFTER:
                if not flush():
                    break
                data = poll()
                if data is None:
                    break
                rx += data
                if not rx and quiet >= IDLE_AFTER:
                    # nothing flows: Verilator runs alone, tx ready low so no byte goes unseen
                    if offering:
                        rx_valid.value = 0
                        offering = False
                    tx_ready.value = 0
                    tx_open = False
                    await First(RisingEdge(tx_valid), Timer(idle_cycles * period_ns, unit="ns"))
                    idle_cycles = min(2 * idle_cycles, max_idle)
                    continue
                if rx:
                    quiet = 0
        else:
            quiet = 0
        idle_cycles = MIN_IDLE_CYCLES
        if not tx_open:
            tx_ready.value = 1
            tx_open = True
        if pos < len(rx):
            if pos != driven:       # a byte was taken (or new bytes came): drive the next one
                rx_payload.value = rx[pos]
                driven = pos
            if not offering:
                rx_valid.value = 1
                offering = True
            since_poll += 1
            if since_poll >= POLL_EVERY:
                since_poll = 0
                data = poll()
                if data is None:
                    break
                rx += data
        elif offering:
            rx_valid.value = 0
            offering = False
        if len(tx) >= 4096 and not flush():
            break
    flush()
    conn.close()
    stats["cycles"] = int(get_sim_time(unit="ns") // period_ns)
    dut._log.info(f"bridge: host closed the connection after {time.perf_counter() - started:.1f} s; "
                  f"{stats}")
