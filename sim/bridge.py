"""The simulated board: ``BoardTop(bridge=True)`` in Verilator behind a TCP socket on 127.0.0.1.

:class:`SimBoard` (``config``) builds the board top's Verilog in bridge mode with the wide bridge
(the UART replaced by ``BEAT_BYTES``-byte beat streams and gearboxes that feed the link layer one
byte per cycle, see :mod:`psconv.hw.board_top`) and compiles it with Verilator through
:mod:`psconv.sim.runner` (cached under ``build/rtl/<config key>/board_bridge_<beat>x<fifo>/``,
the key covering the configuration and the gateware sources, as for the engine's own builds),
with only the top's ports visible to cocotb (:func:`_ports_only_public`). It then starts the
cocotb bench :mod:`psconv.sim.tb.board_bridge_tb` in a child process, which listens on an
ephemeral loopback port and passes the port back through a file. :meth:`SimBoard.connect`
returns a :class:`SimTransport` (a :class:`~psconv.firmware.transport.SocketTransport`): the
driver sees a byte pipe exactly like a serial port.

Lifetime: closing the transport closes the connection; the bench sees the end of the stream,
finishes, and the simulator exits (:meth:`SimBoard.close` waits for it, and kills the child's
process group only if it does not end). If the host dies, the kernel closes the socket and the
simulator ends the same way; if nobody connects within ``accept_timeout_s`` it ends by itself.
Each session gets its own directory (session file, simulator log, results) so several boards can
run side by side.

``transport_from_spec("sim")`` opens a fresh board with the default :class:`EngineConfig`
(``"sim:CONFIG.json"`` with that configuration); :func:`open_sim` takes a config object.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.firmware.transport import SocketTransport, register_transport

DEFAULT_BUILD_ROOT = Path("build") / "rtl"
TB_MODULE = "psconv.sim.tb.board_bridge_tb"
TOP = "psconv_board"
LINK_TIMEOUT_CYCLES = 20_000      # the device's inter-byte timeout, in simulated cycles
BEAT_BYTES = 64                   # bytes per bridge beat: the bench wakes per beat, not per byte
FIFO_BEATS = 16                   # beats in each gearbox FIFO (1 KiB: about one full frame)
MAX_IDLE_CYCLES = 1024            # longest Verilator runs alone before the bench looks again
SIM_PERIOD_NS = 10                # simulated time per cycle (only cycles matter)
STARTUP_TIMEOUT_S = 120.0
ACCEPT_TIMEOUT_S = 300.0
SHUTDOWN_TIMEOUT_S = 30.0


def build_board(config: EngineConfig, build_root=None, waves: bool | None = None,
                quiet: bool = False, memory_bytes: int = 0, sdram_module: str | None = None):
    """Generate (if stale) and Verilate the bridge-mode board top for ``config``; returns the
    :class:`~psconv.sim.runner.SimBuild`. ``memory_bytes`` > 0 gives the board that much
    on-chip memory and the resident-mode blocks (:class:`~psconv.hw.board_top.BoardTop`);
    ``sdram_module`` (e.g. ``MT48LC16M16``) gives it that SDRAM instead: the LiteDRAM
    controller at :data:`~psconv.sim.sdram_rtl.SIM_BOARD_SDRAM_CLOCK_HZ` and the datasheet chip
    model at its pins, whose timing checks end the simulation on any violation."""
    from psconv.hw.board_top import BoardTop
    from psconv.rtl_gen.verilog import generate_verilog
    from psconv.sim import runner
    from psconv.sim.engine_rtl import _config_key   # the project's one build key: config + hw/ sources

    core = None
    if sdram_module:
        from psconv.rtl_gen.litedram import LiteDRAMConfig, generate_core
        from psconv.sim.sdram_rtl import SIM_BOARD_SDRAM_CLOCK_HZ

        core = generate_core(LiteDRAMConfig(module=sdram_module,
                                            sys_clk_hz=SIM_BOARD_SDRAM_CLOCK_HZ), "sim")
    # the bridge's width and the memory are not under hw/, so they name the directory
    memory = (f"_{core.directory.name}" if core else f"_mem{memory_bytes}" if memory_bytes
              else "")
    root = (Path(build_root or DEFAULT_BUILD_ROOT) / _config_key(config)
            / f"board_bridge_{BEAT_BYTES}x{FIFO_BEATS}{memory}")
    verilog = root / "verilog" / f"{TOP}.v"
    waves = runner.waves_requested(waves)
    build_dir = root / ("sim-waves" if waves else "sim")
    fresh = verilog.is_file()
    if (not fresh or not (build_dir / runner.MANIFEST).is_file()) and not quiet:
        print(f"simulated board: building {TOP} (Tm={config.tm} Tn={config.tn}) with "
              f"Verilator under {root}; this takes a minute or two once, then it is cached",
              file=sys.stderr, flush=True)
    if not fresh:
        # the board's default clock and baud (nominal here: validated like a real board's, the
        # UART then bypassed)
        top = BoardTop(config, bridge=True, timeout_cycles=LINK_TIMEOUT_CYCLES,
                       bridge_beat_bytes=BEAT_BYTES, bridge_fifo_beats=FIFO_BEATS,
                       memory_bytes=memory_bytes, sdram_core=core, external_memory=True)
        memory_line = (f"SDRAM {sdram_module} (LiteDRAM controller and chip model)" if core
                       else f"{memory_bytes} bytes of on-chip memory")
        header = [*config.summary_lines(),
                  f"board top in bridge mode: rx_beats/tx_beats ({BEAT_BYTES} bytes per beat, "
                  f"{FIFO_BEATS}-beat gearbox FIFOs) replace the UART; link timeout "
                  f"{LINK_TIMEOUT_CYCLES} cycles; resident memory: {memory_line}"]
        if core:
            from psconv.sim.sdram_chip import model_verilog
            from psconv.sim.sdram_rtl import board_with_chip

            text = "\n".join(["`timescale 1ns / 1ps",
                              generate_verilog(board_with_chip(top, core), TOP, header),
                              core.verilog_text(), model_verilog()])
        else:
            from psconv.hw.memory_port import WORD_MEMORY_VERILOG

            text = generate_verilog(top, TOP, header) + (WORD_MEMORY_VERILOG if memory_bytes
                                                         else "")
        verilog.parent.mkdir(parents=True, exist_ok=True)
        tmp = verilog.with_suffix(f".v.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(verilog)        # never a half-written file for the next run to trust
    public_ports = _ports_only_public(verilog).resolve()
    return runner.build(verilog, TOP, build_dir, waves=waves,
                        build_args=["--no-public-flat-rw", str(public_ports)])


def _ports_only_public(verilog: Path) -> Path:
    """A Verilator control file making only the top's ports visible to VPI (cocotb).

    cocotb's runner builds with ``--public-flat-rw``: every signal writable from VPI, so
    Verilator must treat each like an input, re-evaluates nearly all combinational logic at every
    evaluation (twice a cycle) and cannot optimize across signals; the bench only touches ports.
    (``--no-public-flat-rw`` after it undoes it; the control file then names the ports.) The
    file's name carries a hash of its text, so another port list is another build key."""
    from psconv.rtl_gen.verilog import verilog_ports

    ports = sorted(verilog_ports(verilog.read_text(), TOP))
    text = "`verilator_config\n" + "".join(
        f'public_flat_rw -module "{TOP}" -var "{port}"\n' for port in ports)
    path = verilog.parent / f"ports-{hashlib.sha256(text.encode()).hexdigest()[:10]}.vlt"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".vlt.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


class SimTransport(SocketTransport):
    """A socket to a :class:`SimBoard`; ``close()`` also shuts the board down if it owns it."""

    def __init__(self, board: "SimBoard", *, owns_board: bool):
        super().__init__("127.0.0.1", board.port)
        self.board = board
        self.owns_board = owns_board

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        try:
            return super().read(max_bytes, timeout_s)
        except PsconvError as e:
            raise PsconvError(f"simulated board: {e}; the simulator's log "
                              f"({self.board.log}) ends:\n{self.board._log_tail()}") from None

    def close(self) -> None:
        super().close()
        if self.owns_board:
            self.board.close()


class SimBoard:
    """``BoardTop(bridge=True)`` of ``config`` running in Verilator, reachable on a loopback port.

    See the module docstring. Use as a context manager or call :meth:`close`. ``waves`` records
    an FST/VCD trace of the whole session into the session directory (slow; for debugging).
    """

    def __init__(self, config: EngineConfig | None = None, *, build_root=None,
                 waves: bool | None = None, accept_timeout_s: float = ACCEPT_TIMEOUT_S,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S, max_idle_cycles: int = MAX_IDLE_CYCLES,
                 quiet: bool = False, memory_bytes: int = 0, sdram_module: str | None = None):
        self.config = config if config is not None else EngineConfig()
        self.memory_bytes = memory_bytes
        self.build = build_board(self.config, build_root, waves, quiet, memory_bytes, sdram_module)
        period_ns = SIM_PERIOD_NS
        if sdram_module:
            from psconv.sim.sdram_rtl import SIM_BOARD_SDRAM_CLOCK_HZ

            period_ns = 1e9 / SIM_BOARD_SDRAM_CLOCK_HZ
        self.session_dir = Path(tempfile.mkdtemp(prefix="psconv-simboard-"))
        self.port_file = self.session_dir / "port"
        self.log = self.session_dir / "sim.log"
        self.session_file = self.session_dir / "session.json"
        self.session_file.write_text(json.dumps({
            "build_dir": str(self.build.build_dir), "session_dir": str(self.session_dir),
            "port_file": str(self.port_file), "accept_timeout_s": accept_timeout_s,
            "clock_period_ns": period_ns, "max_idle_cycles": max_idle_cycles,
            "waves": self.build.waves, "beat_bytes": BEAT_BYTES, "fifo_beats": FIFO_BEATS,
        }))
        self._closed = False
        self.port = None
        with open(self.session_dir / "launcher.log", "wb") as launcher_log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "psconv.sim.bridge", str(self.session_file)],
                stdout=launcher_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)   # its own process group: close() can end the simulator too
        try:
            self.port = self._wait_for_port(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.port_file.is_file():
                return int(self.port_file.read_text())
            if self.process.poll() is not None:
                raise PsconvError(f"simulated board: the simulator exited (status "
                                  f"{self.process.returncode}) before listening\n{self._log_tail()}")
            time.sleep(0.05)
        raise PsconvError(f"simulated board: the simulator did not listen within {timeout_s:g} s"
                          f"\n{self._log_tail()}")

    def _log_tail(self, lines: int = 25) -> str:
        texts = []
        for path in (self.session_dir / "launcher.log", self.log):
            try:
                texts += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(texts) or "(no log)"

    def connect(self, *, owns_board: bool = False) -> SimTransport:
        """A transport to the board (one connection per board session)."""
        if self._closed or self.port is None:
            raise PsconvError("simulated board: already closed")
        return SimTransport(self, owns_board=owns_board)

    def close(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Wait for the simulator to end (it does once the connection is closed); then clean up."""
        if self._closed:
            return
        self._closed = True
        if self.port is not None:
            # a board nobody connected to would wait for accept_timeout_s: connect and leave
            try:
                SocketTransport("127.0.0.1", self.port, connect_timeout_s=1.0).close()
            except PsconvError:
                pass
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)   # our child's group: launcher + simulator
            except ProcessLookupError:
                pass
            self.process.wait()
        if self.process.returncode == 0:
            shutil.rmtree(self.session_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_sim(config: EngineConfig | None = None, **options) -> SimTransport:
    """A transport to a fresh :class:`SimBoard`; closing it shuts the board down."""
    return SimBoard(config, **options).connect(owns_board=True)


def _open_sim_spec(rest: str) -> SimTransport:
    config = EngineConfig.load(rest) if rest else EngineConfig()
    return open_sim(config)


register_transport("sim", _open_sim_spec)


SDRAM_SIM_MODULE = "MT48LC16M16"
"""The SDRAM of the ``sim-sdram`` board: the 32 MB part of most ULX3S boards."""


def open_sim_sdram(config: EngineConfig | None = None, memory_bytes: int = 0,
                   **options) -> SimTransport:
    """A transport to a fresh :class:`SimBoard` whose resident memory is the SDRAM
    (:data:`SDRAM_SIM_MODULE`) behind LiteDRAM, with the chip model at its pins;
    ``memory_bytes`` is ignored (the SDRAM has its own size)."""
    return SimBoard(config, sdram_module=SDRAM_SIM_MODULE, **options).connect(owns_board=True)


def _serve(session_file: str) -> int:
    """Child process: run the bridge bench on the session's build until the host goes away."""
    from cocotb_tools.runner import get_runner

    from psconv.sim import runner
    from psconv.sim.verilator import verilator_environment

    session = json.loads(Path(session_file).read_text())
    build = runner.load_build(session["build_dir"])
    session_dir = Path(session["session_dir"])
    test_args = []
    if session.get("waves"):
        test_args = ["--trace-file", str(session_dir / f"waves.{build.wave_format or 'vcd'}")]
    env = {runner.TB_DATA_ENV: session_file}
    # a shared lock on the build: nobody rebuilds it under a running session
    with verilator_environment({**env, "WAVES": "1" if session.get("waves") else "0"}), \
            runner._locked(build.build_dir, shared=True):
        get_runner("verilator").test(
            test_module=TB_MODULE, hdl_toplevel=build.top, hdl_toplevel_lang="verilog",
            build_dir=build.build_dir, test_dir=session_dir, extra_env=env,
            results_xml=str(session_dir / "results.xml"), log_file=session_dir / "sim.log",
            test_args=test_args, waves=bool(session.get("waves")))
    results = runner.parse_results(session_dir / "results.xml")
    failed = [t for t in results if t.status == "failed"]
    for test in failed:
        print(f"bridge bench failed: {test.message}\n{test.traceback}", file=sys.stderr)
    if failed or not results:
        return 1
    # done: the host may be gone (then nobody else would clean up); a failed session keeps its logs
    shutil.rmtree(session_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m psconv.sim.bridge SESSION.json (started by SimBoard)")
    sys.exit(_serve(sys.argv[1]))
