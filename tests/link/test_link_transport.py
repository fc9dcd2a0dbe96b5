"""Transports: serial (pyserial URL and a real pty), errors, the spec factory, virtual time."""

import errno
import os
import select
import threading
import time

import pytest
import serial

from psconv.errors import PsconvError
from psconv.firmware import transport as tr
from psconv.firmware.link import LinkClient
from psconv.protocol.codes import Command, Status
from psconv.protocol.frame import Response
from psconv.firmware.transport import (
    LoopbackTransport, SerialTransport, VirtualClock, register_transport, transport_from_spec,
)

from link_reference_device import IDENTITY, ReferenceDevice


def test_serial_transport_loop_url_reads_what_was_written():
    with transport_from_spec("serial:loop://@115200") as t:
        assert isinstance(t, SerialTransport) and t.baud == 115200
        t.write(b"hello")
        assert t.read(3, 0.5) == b"hel"
        assert t.read(100, 0.5) == b"lo"
        start = time.monotonic()
        assert t.read(10, 0.05) == b""
        assert time.monotonic() - start >= 0.04


def test_missing_serial_port_names_it_and_suggests_listing():
    with pytest.raises(PsconvError, match=r"serial port /dev/ttyUSB97 does not exist.*ls /dev/ttyUSB\*"):
        transport_from_spec("serial:/dev/ttyUSB97")
    with pytest.raises(PsconvError, match="ttyUSB98 does not exist"):
        transport_from_spec("/dev/ttyUSB98@115200")


def test_permission_denied_is_explained(monkeypatch, tmp_path):
    port = tmp_path / "ttyUSB0"
    port.touch()

    def deny(*args, **kwargs):
        raise serial.SerialException(errno.EACCES, f"could not open port {port}: Permission denied")
    monkeypatch.setattr(serial, "serial_for_url", deny)
    with pytest.raises(PsconvError, match=f"permission denied opening serial port {port}.*dialout"):
        SerialTransport(str(port))


@pytest.mark.parametrize("spec, match", [
    ("serial:", "needs a port"),
    ("serial:/dev/ttyUSB0@fast", "baud rate 'fast' is not an integer"),
    ("carrier-pigeon:x", "unknown transport 'carrier-pigeon:x'.*serial"),
    ("tcp:nohostport", "must be 'tcp:HOST:PORT'"),
])
def test_bad_specs_are_refused_clearly(spec, match):
    with pytest.raises(PsconvError, match=match):
        transport_from_spec(spec)


def test_sim_scheme_is_a_registration_hook(monkeypatch):
    # as if the plugin had never been imported (another test may have imported psconv.sim.bridge)
    monkeypatch.setattr(tr, "TRANSPORT_FACTORIES",
                        {k: v for k, v in tr.TRANSPORT_FACTORIES.items() if k != "sim"})
    monkeypatch.setitem(tr.TRANSPORT_PLUGINS, "sim", "psconv.sim.no_such_bridge_module")
    with pytest.raises(PsconvError, match="'sim' is provided by module psconv.sim.no_such_bridge_module"):
        transport_from_spec("sim")
    device = ReferenceDevice()
    register_transport("sim", lambda rest: LoopbackTransport(device.link))
    with transport_from_spec("sim:anything") as t:
        assert LinkClient(t, timeout_s=0.1).request(Command.IDENTIFY).payload == IDENTITY


def test_loopback_read_times_out_in_virtual_time():
    clock = VirtualClock()
    t = LoopbackTransport(ReferenceDevice().link, clock)
    start = time.monotonic()
    assert t.read(10, 1000.0) == b""
    assert clock.now() == pytest.approx(1000.0)
    assert time.monotonic() - start < 1.0


def _pty_device(master_fd, device, stop):
    """Serve ``device`` on the master side of a pty with wall-clock time."""
    link = device.link
    while not stop.is_set():
        ready, _, _ = select.select([master_fd], [], [], 0.002)
        now = time.monotonic()
        out = link.receive(os.read(master_fd, 4096), now) if ready else link.poll(now)
        if out:
            os.write(master_fd, out)


def test_link_over_a_real_tty():
    master, slave = os.openpty()
    device, stop = ReferenceDevice(inter_byte_timeout_s=0.05), threading.Event()
    server = threading.Thread(target=_pty_device, args=(master, device, stop), daemon=True)
    server.start()
    try:
        with SerialTransport(os.ttyname(slave), 115200) as t:
            client = LinkClient(t, timeout_s=0.5, retries=2)
            assert client.request(Command.IDENTIFY) == Response(1, Status.DATA, IDENTITY)
            payload = bytes(range(256)) * 4
            assert client.request(Command.WRITE_WEIGHTS, payload).status == Status.ACK
            assert bytes(device.memories[Command.WRITE_WEIGHTS]) == payload
            assert client.stats.retransmissions == 0
    finally:
        stop.set()
        server.join()
        os.close(master)
        os.close(slave)
