"""Byte transports between the host and a board (real, simulated, or in-process).

Every transport has the same small interface, so the driver cannot tell them apart:

* ``write(data)``: queue bytes for the device (returns when handed to the OS / device).
* ``read(max_bytes, timeout_s) -> bytes``: return as soon as at least one byte is available
  (up to ``max_bytes``), or ``b""`` after ``timeout_s`` seconds with nothing.
* ``close()``; transports are context managers.
* ``clock``: the :class:`Clock` timeouts are measured on. Real transports use wall time; the
  in-process :class:`LoopbackTransport` uses a :class:`VirtualClock`, so thousands of timeouts
  in a fault-injection test cost no real time.

:func:`transport_from_spec` turns ``"serial:/dev/ttyUSB0[@baud]"``, ``"tcp:HOST:PORT"`` or a
registered scheme (``"sim"`` is registered by the Verilator bridge) into a transport.
"""

from __future__ import annotations

import abc
import errno
import importlib
import math
import os
import socket
import time
from typing import Callable

from psconv.errors import PsconvError

DEFAULT_BAUD = 3_000_000


class Clock:
    """Wall time (``time.monotonic``)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock(Clock):
    """Simulated time: ``sleep`` advances ``now`` instantly."""

    def __init__(self, start: float = 0.0):
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    def advance_to(self, t: float) -> None:
        self._now = max(self._now, t)


class Transport(abc.ABC):
    """A bidirectional byte pipe to one device (see the module docstring for the contract)."""

    clock: Clock = Clock()

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def read(self, max_bytes: int, timeout_s: float) -> bytes: ...

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialTransport(Transport):
    """A serial port through pyserial (the FTDI UART of ULX3S / iCEBreaker), 8N1.

    ``port`` is a device path (``/dev/ttyUSB0``, ``COM3``) or a pyserial URL (``loop://``).
    Opening discards stale input. Errors say which port is missing or not permitted.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        import serial  # pyserial

        self.port, self.baud = port, baud
        self.clock = Clock()
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, bytesize=8, parity="N",
                                                 stopbits=1, timeout=0, write_timeout=5)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PsconvError(_serial_open_message(port, baud, e)) from None
        self._serial.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._serial.write(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        ser = self._serial
        ser.timeout = max(timeout_s, 0)
        first = ser.read(1)
        if not first:
            return b""
        waiting = min(ser.in_waiting, max_bytes - 1)
        return first + (ser.read(waiting) if waiting > 0 else b"")

    def close(self) -> None:
        self._serial.close()


def _serial_open_message(port: str, baud: int, e: Exception) -> str:
    code = getattr(e, "errno", None)
    text = str(e)
    if "://" not in port and (code == errno.ENOENT or not os.path.exists(port)):
        return (f"serial port {port} does not exist: is the board plugged in and powered? "
                f"List candidates with `ls /dev/ttyUSB* /dev/ttyACM*` or "
                f"`python -m serial.tools.list_ports`")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return (f"permission denied opening serial port {port}: add your user to the port's "
                f"group (`sudo usermod -aG dialout $USER`, then log in again) or check "
                f"`ls -l {port}`")
    if code == errno.EBUSY or "busy" in text.lower():
        return f"serial port {port} is busy: another program (a terminal, openFPGALoader) holds it"
    return f"cannot open serial port {port} at {baud} baud: {text}"


class SocketTransport(Transport):
    """A TCP byte stream (e.g. to a simulator's socket bridge): ``tcp:HOST:PORT``."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0):
        self.host, self.port = host, port
        self.clock = Clock()
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        except OSError as e:
            raise PsconvError(f"cannot connect to {host}:{port}: {e.strerror or e} "
                              f"(is the simulator bridge running?)") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        self._sock.settimeout(max(timeout_s, 1e-6))
        try:
            data = self._sock.recv(max_bytes)
        except socket.timeout:
            return b""
        if not data:
            raise PsconvError(f"connection to {self.host}:{self.port} closed by the other side")
        return data

    def close(self) -> None:
        self._sock.close()


class LoopbackTransport(Transport):
    """In-process transport to a device model, on a :class:`VirtualClock`.

    ``device`` has ``receive(data, now) -> bytes``, ``poll(now) -> bytes`` and
    ``next_deadline() -> float | None`` (:class:`psconv.sim.device_link.DeviceLink` has them).
    Bytes written reach the device at once; ``read`` advances virtual time to the device's next
    deadline (so truncated frames time out on the device) or to ``timeout_s``.
    """

    def __init__(self, device, clock: VirtualClock | None = None):
        self.device = device
        self.clock = clock or VirtualClock()
        self._rx = bytearray()
        self.bytes_to_device = 0
        self.bytes_from_device = 0

    def write(self, data: bytes) -> None:
        self.bytes_to_device += len(data)
        self._rx += self.device.receive(bytes(data), self.clock.now())

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        now = self.clock.now()
        # at least one ulp of progress, so callers looping on a tiny remainder always converge
        deadline = max(now + timeout_s, math.nextafter(now, math.inf)) if timeout_s > 0 else now
        while True:
            self._rx += self.device.poll(self.clock.now())
            if self._rx:
                data = bytes(self._rx[:max_bytes])
                del self._rx[:max_bytes]
                self.bytes_from_device += len(data)
                return data
            if self.clock.now() >= deadline:
                return b""
            event = self.device.next_deadline()
            self.clock.advance_to(deadline if event is None else min(deadline, event))


# --- factory -----------------------------------------------------------------------------------

TransportFactory = Callable[[str], Transport]

#: scheme -> factory(rest of the spec after "scheme:"). Add one with :func:`register_transport`.
TRANSPORT_FACTORIES: dict[str, TransportFactory] = {}

#: scheme -> module that calls ``register_transport(scheme, ...)`` when imported. The Verilator
#: socket bridge provides "sim", the software resident board "resident-ref"; edit this if they
#: live elsewhere.
TRANSPORT_PLUGINS: dict[str, str] = {"sim": "psconv.sim.bridge",
                                     "resident-ref": "psconv.sim.resident_device"}


def register_transport(scheme: str, factory: TransportFactory) -> None:
    """Make ``transport_from_spec(f"{scheme}:...")`` (or just ``scheme``) call ``factory(rest)``."""
    TRANSPORT_FACTORIES[scheme] = factory


def _open_serial(rest: str) -> Transport:
    port, sep, baud_text = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not port:
        raise PsconvError("serial transport needs a port: 'serial:/dev/ttyUSB0' or "
                          "'serial:/dev/ttyUSB0@3000000'")
    baud = DEFAULT_BAUD
    if sep:
        try:
            baud = int(baud_text)
        except ValueError:
            raise PsconvError(f"serial baud rate {baud_text!r} is not an integer "
                              f"(e.g. 'serial:{port}@3000000')") from None
        if baud <= 0:
            raise PsconvError(f"serial baud rate {baud} must be positive")
    return SerialTransport(port, baud)


def _open_tcp(rest: str) -> Transport:
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise PsconvError(f"tcp transport spec 'tcp:{rest}' must be 'tcp:HOST:PORT'")
    return SocketTransport(host, int(port_text))


register_transport("serial", _open_serial)
register_transport("tcp", _open_tcp)


def transport_from_spec(spec: str) -> Transport:
    """Open a transport: ``serial:/dev/ttyUSB0[@baud]``, ``tcp:HOST:PORT``, ``sim[:...]``, ...

    A bare device path (``/dev/ttyUSB0``, ``COM3``) means ``serial:``.
    """
    if spec.startswith("/dev/") or (spec.upper().startswith("COM") and spec[3:].isdigit()):
        spec = "serial:" + spec
    scheme, _, rest = spec.partition(":")
    if scheme not in TRANSPORT_FACTORIES and scheme in TRANSPORT_PLUGINS:
        try:
            importlib.import_module(TRANSPORT_PLUGINS[scheme])
        except ModuleNotFoundError as e:
            if e.name != TRANSPORT_PLUGINS[scheme]:
                raise
    factory = TRANSPORT_FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(TRANSPORT_FACTORIES))
        hint = (f" (scheme {scheme!r} is provided by module {TRANSPORT_PLUGINS[scheme]}, "
                f"which is not installed yet)" if scheme in TRANSPORT_PLUGINS else "")
        raise PsconvError(f"unknown transport {spec!r}{hint}: use one of {known}, e.g. "
                          f"'serial:/dev/ttyUSB0@3000000'")
    return factory(rest)


class CountingTransport(Transport):
    """Passes everything through to ``inner`` and counts the bytes each way (wire bytes)."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.clock = inner.clock
        self.bytes_written = 0
        self.bytes_read = 0

    def write(self, data: bytes) -> None:
        self.bytes_written += len(data)
        self.inner.write(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        data = self.inner.read(max_bytes, timeout_s)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self.inner.close()
