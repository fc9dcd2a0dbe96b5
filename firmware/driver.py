"""Host driver: runs a compiled program layer by layer on a board (real or simulated) over the link.

:class:`Driver` speaks the command set of :mod:`psconv.protocol` through a
:class:`~psconv.firmware.link.LinkClient` on any :class:`~psconv.firmware.transport.Transport`
(serial port, the Verilator socket bridge, the Amaranth simulator, with or without fault
injection): it cannot tell them apart.

One engine step (:meth:`Driver.run_step`)::

    WRITE_LAYER descriptor, START,
    WRITE_MASKS (P entries), WRITE_QUANT (C_out entries), WRITE_WEIGHTS, WRITE_FMAP
        (each in frames of at most MAX_PAYLOAD bytes, whole beats only),
    then until every output byte is in:
        WRITE_RESIDUAL chunk, only while residual beats sent <= output beats read + window
        READ_OUTPUT (up to MAX_PAYLOAD bytes; an empty answer just means "not yet")
    READ_STATUS (the engine must be idle and done), READ_COUNTERS (cycles, MACs).

The *window* (``output_fifo_depth`` from ``IDENTIFY``) is the deadlock rule of
docs/protocol.md section 8: the engine consumes residual beats in lockstep with its outputs, so
the host never sends more residual beats than the device's output FIFO can absorb before it
reads outputs.

:meth:`Driver.run_program` runs a whole :class:`~psconv.firmware.compiler.LayerProgram` with
:func:`~psconv.firmware.execute.execute_program` (avgpool and the classifier run on the host with
the golden model's integer ops), compares every layer and the logits with
:func:`~psconv.sim.golden.network.run_golden`, and returns a
:class:`~psconv.firmware.reports.RunReport`.

Recovery. A host that died mid-step leaves the board busy: its engine waits for data that
never comes (until the board's watchdog gives up on it, docs/protocol.md section 10). A
:class:`Driver` whose first step meets ``NAK BUSY`` on ``WRITE_LAYER`` therefore
:meth:`~Driver.recover` s (``IDENTIFY``, then ``ABORT``: the board discards the half-done step)
and runs the step again; ``recover=False`` makes that BUSY an error instead.

Errors are :class:`~psconv.errors.PsconvError` s naming what failed: :class:`EngineMismatch`
(the board's engine is not the one the program was compiled for, with the differing fields),
:class:`~psconv.firmware.link.LinkNak` / :class:`~psconv.firmware.link.LinkTimeout`
(with the step, command, seq and reason; a refused descriptor names the field, its value and
what the board allows), :class:`DriverError` (no progress, wrong state).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from psconv.errors import PsconvError
from psconv.firmware.compiler import EngineStep, LayerProgram, check_streamable, streamed_program
from psconv.firmware.link import LinkClient, LinkNak, LinkTimeout
from psconv.firmware.reports import RunReport, StepReport
from psconv.firmware.transport import CountingTransport, Transport
from psconv.protocol.beats import beats_to_pixels, fmap_beat_bytes, fmap_beats, pixel_beats, weight_beats
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.descriptor import LayerSpec, describe_rejection, encode_quant_entry
from psconv.protocol.frame import MAX_PAYLOAD
from psconv.protocol.payloads import (IDENTITY_LAYOUT, IDENTITY_VERSION, MASK_BYTES, QUANT_BYTES,
                                      beats_payload, describe_masks_without_taps, identity_fields,
                                      layer_payload, mask_payload, output_beats, parse_counters,
                                      parse_identity, parse_status, quant_payload,
                                      read_output_payload)

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 8
DEFAULT_OUTPUT_STALL_S = 60.0

# the identity fields that come from the EngineConfig (the others describe the board's link)
CONFIG_IDENTITY_FIELDS = tuple(f for f, _ in IDENTITY_LAYOUT
                               if f not in ("magic", "version", "output_fifo_depth", "max_payload"))


class DriverError(PsconvError):
    """The board did something the driver cannot continue from (named in the message)."""


class EngineMismatch(DriverError):
    """The board's engine differs from the program's configuration; ``fields`` maps each
    differing identity field to ``(board, program)``."""

    def __init__(self, message: str, fields: dict):
        super().__init__(message)
        self.fields = fields


def _with_context(error: PsconvError, context: str, after: str = "") -> PsconvError:
    """The same kind of link error with ``context`` (which step) in front of its message and
    ``after`` behind it."""
    message = f"{context}: {error}{after}" if context else f"{error}{after}"
    if isinstance(error, LinkNak):
        return LinkNak(message, command=error.command, seq=error.seq, attempts=error.attempts,
                       reason=error.reason, detail=error.detail)
    if isinstance(error, LinkTimeout):
        return LinkTimeout(message, command=error.command, seq=error.seq, attempts=error.attempts)
    return type(error)(message)


class BoardClient:
    """The link to one board for a program's engine: what the streamed :class:`Driver` and the
    resident driver (:mod:`psconv.firmware.resident`) share.

    ``config`` is the program's :class:`~psconv.config.EngineConfig`; :meth:`identify` checks the
    board has exactly that engine. ``timeout_s`` and ``retries`` are the link's per-request
    answer timeout and retransmissions. ``transport`` is wrapped in a
    :class:`~psconv.firmware.transport.CountingTransport` (wire bytes both ways).
    """

    def __init__(self, transport: Transport, config, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES):
        self.config = config
        self.transport = CountingTransport(transport)
        self.link = LinkClient(self.transport, timeout_s=timeout_s, retries=retries)
        self.identity: dict | None = None
        self.max_payload = MAX_PAYLOAD

    def _request(self, command, payload: bytes = b"", context: str = "",
                 timeout_s: float | None = None):
        try:
            return self.link.request(command, payload, timeout_s=timeout_s)
        except LinkNak as e:
            if e.reason == NakReason.NO_TAPS and command == Command.WRITE_MASKS:
                raise _with_context(e, context, ": " + describe_masks_without_taps(payload)) from None
            if e.reason != NakReason.BAD_DESCRIPTOR:
                raise _with_context(e, context) from None
            sent = (int.from_bytes(payload, "little") if command == Command.WRITE_LAYER
                    else None)
            raise _with_context(e, context, ": the descriptor's "
                                + describe_rejection(self.config, e.detail, sent)) from None
        except PsconvError as e:
            raise (_with_context(e, context) if context else e) from None

    def abort(self, context: str = "aborting the board's step") -> None:
        """``ABORT``: the board's engine and command processor (and a resident run) return to
        idle, whatever they were doing; the half-done work is discarded."""
        self._request(Command.ABORT, context=context)

    def recover(self) -> dict:
        """Make a board left busy (by a host that died mid-step) ready again: ``IDENTIFY`` (it
        must be this program's engine), then ``ABORT``. Returns the identity."""
        fields = self.identify()
        self.abort("recovering a board left busy")
        return fields

    def identify(self) -> dict:
        """Ask the board who it is; raise :class:`EngineMismatch` unless it runs ``config``."""
        fields = parse_identity(
            self._request(Command.IDENTIFY, context="identifying the board").payload)
        if fields["version"] != IDENTITY_VERSION:
            raise EngineMismatch(
                f"the board reports identity format {fields['version']}; this driver speaks "
                f"{IDENTITY_VERSION}: rebuild the bitstream or update psconv",
                {"version": (fields["version"], IDENTITY_VERSION)})
        expected = identity_fields(self.config)
        differ = {name: (fields[name], expected[name]) for name in CONFIG_IDENTITY_FIELDS
                  if fields[name] != expected[name]}
        if differ:
            listed = "; ".join(
                f"{name}: board {board:#010x}, program {program:#010x}" if name == "config_hash"
                else f"{name}: board {board}, program {program}"
                for name, (board, program) in differ.items())
            only_hash = set(differ) == {"config_hash"}
            hint = (" (the sizes agree, so another field differs, e.g. the pattern family, "
                    "its offset or whether the engine has its output max pool)" if only_hash else "")
            raise EngineMismatch(
                f"the board's engine is not the one the program was compiled for: {listed}"
                f"{hint}. Compile the model for the board's configuration or build the "
                f"bitstream from the program's (`psconv build --config ...`)", differ)
        self.identity = fields
        self.max_payload = min(fields["max_payload"], MAX_PAYLOAD)
        return fields


class Driver(BoardClient):
    """Runs engine steps on the board behind ``transport`` (see the module docstring).

    :meth:`identify` runs automatically before the first step (see :class:`BoardClient` for
    ``config``, ``timeout_s`` and ``retries``); ``output_stall_s`` is how long the driver waits
    for the next output byte before giving up; ``recover`` (default True): a board busy at the
    first step is recovered (:meth:`recover`) instead of refused (module docstring).
    """

    def __init__(self, transport: Transport, config, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, *, output_stall_s: float = DEFAULT_OUTPUT_STALL_S,
                 recover: bool = True):
        super().__init__(transport, config, timeout_s, retries)
        self.output_stall_s = output_stall_s
        self.recover_busy = recover
        self.recoveries = 0           # boards found busy at the start and recovered
        self._steps_started = 0
        self.window = 0
        self.last_counters: dict = {}
        self._payload_sent = 0
        self._payload_received = 0

    def _send(self, command, data: bytes, beat: int, context: str) -> None:
        """``data`` in frames of at most ``max_payload`` bytes, each a whole number of beats."""
        chunk = (self.max_payload // beat) * beat
        for offset in range(0, len(data), chunk):
            self._request(command, data[offset:offset + chunk], context)
        self._payload_sent += len(data)

    def identify(self) -> dict:
        fields = super().identify()
        self.window = fields["output_fifo_depth"]
        return fields

    def status(self, context: str = "READ_STATUS") -> dict:
        return parse_status(self._request(Command.READ_STATUS, context=context).payload)

    def counters(self, context: str = "READ_COUNTERS") -> dict:
        self.last_counters = parse_counters(self._request(Command.READ_COUNTERS, context=context).payload)
        return self.last_counters

    # -- one engine invocation ----------------------------------------------------------------

    def run_step(self, step: EngineStep, input_map: torch.Tensor,
                 residual: torch.Tensor | None) -> torch.Tensor:
        """Run one engine step; returns its (C_out tile, H_out, W_out) int64 output (the pooled
        size when the step has a fused max pool)."""
        out, _ = self._run_step(step, input_map, residual)
        return out

    def _run_step(self, step: EngineStep, input_map, residual):
        if self.identity is None:
            self.identify()
        cfg = self.config
        tm, tn = cfg.tm, cfg.tn
        spec: LayerSpec = step.descriptor
        spec.check(cfg, step.masks)
        context = step.name
        if spec.residual != (residual is not None):
            raise DriverError(f"{context}: the step {'needs' if spec.residual else 'takes no'} "
                              f"residual input")
        started = time.perf_counter()
        wire = (self.transport.bytes_written, self.transport.bytes_read)
        requests = self.link.stats.requests
        self._payload_sent = self._payload_received = 0

        descriptor = layer_payload(cfg, spec)
        try:
            self._request(Command.WRITE_LAYER, descriptor, context)
        except LinkNak as e:
            # only a board left busy by an earlier host answers this driver's first step BUSY
            if e.reason != NakReason.BUSY or not self.recover_busy or self._steps_started:
                raise
            self.recover()
            self.recoveries += 1
            self._request(Command.WRITE_LAYER, descriptor, context)
        self._steps_started += 1
        self._payload_sent += len(descriptor)
        self._request(Command.START, b"", context)
        self._send(Command.WRITE_MASKS, mask_payload(step.masks), MASK_BYTES, context)
        entries = [encode_quant_entry(int(b), int(m), int(s), int(r)) for b, m, s, r in
                   zip(step.bias, step.multiplier, step.shift, step.residual_multiplier)]
        self._send(Command.WRITE_QUANT, quant_payload(entries), QUANT_BYTES, context)
        self._send(Command.WRITE_WEIGHTS, beats_payload(weight_beats(step.weight_words), tn), tn,
                   context)
        fmap_bytes = fmap_beat_bytes(cfg)
        self._send(Command.WRITE_FMAP, beats_payload(fmap_beats(cfg, input_map), fmap_bytes),
                   fmap_bytes, context)

        residual_data = (beats_payload(pixel_beats(cfg, residual), tm) if residual is not None
                         else b"")
        expected = spec.output_beats(cfg) * tm
        received = bytearray()
        residual_sent = 0            # bytes
        read_chunk = (self.max_payload // tm) * tm
        last_progress = time.monotonic()
        while len(received) < expected:
            if residual_sent < len(residual_data):
                room = (len(received) // tm + self.window) * tm - residual_sent
                n = min(room, len(residual_data) - residual_sent, read_chunk)
                if n > 0:
                    self._request(Command.WRITE_RESIDUAL,
                                  residual_data[residual_sent:residual_sent + n], context)
                    residual_sent += n
                    self._payload_sent += n
            want = min(read_chunk, expected - len(received))
            data = self._request(Command.READ_OUTPUT, read_output_payload(want), context).payload
            if len(data) % tm or len(data) > want:
                raise DriverError(f"{context}: READ_OUTPUT({want}) answered {len(data)} bytes; "
                                  f"expected whole {tm}-byte beats, at most {want}")
            received += data
            if data:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.output_stall_s:
                status = self.status(context)
                raise DriverError(
                    f"{context}: no output for {self.output_stall_s:g} s after {len(received)} of "
                    f"{expected} bytes (residual sent {residual_sent}/{len(residual_data)} bytes); "
                    f"device status {status}")
        self._payload_received += len(received)
        # With the output max pool the last row of an odd-height map is computed but dropped,
        # so the engine may still be busy after its last output beat: wait for it to finish.
        status = self.status(context)
        finishing = time.monotonic()
        while (spec.pool and status["busy"] and not status["output_beats"]
               and time.monotonic() - finishing < self.output_stall_s):
            status = self.status(context)
        if status["busy"] or not status["done"] or status["output_beats"]:
            raise DriverError(f"{context}: all {expected} output bytes read but the device "
                              f"reports {status}; expected an idle, done engine with no output left")
        counters = self.counters(context)
        out = beats_to_pixels(cfg, output_beats(cfg, bytes(received)), spec.out_channels,
                              spec.result_height, spec.result_width)
        report = StepReport(
            layer=step.layer, tile=step.tile, tiles=step.tiles,
            shape=(f"{spec.in_channels}x{spec.in_height}x{spec.in_width}->{spec.out_channels}"
                   f"{' 1x1' if spec.kernel == 1 else ''} s{spec.stride}"
                   f"{' +res' if spec.residual else ''}{' +maxpool' if spec.pool else ''}"),
            wire_bytes_sent=self.transport.bytes_written - wire[0],
            wire_bytes_received=self.transport.bytes_read - wire[1],
            payload_bytes_sent=self._payload_sent, payload_bytes_received=self._payload_received,
            requests=self.link.stats.requests - requests,
            busy_cycles=counters["busy_cycles"], stall_cycles=counters["stall_cycles"],
            idle_cycles=counters["idle_cycles"], macs=counters["macs"],
            useful_macs=step.useful_macs, multipliers=cfg.multipliers,
            wall_s=time.perf_counter() - started)
        return out, report

    # -- a whole program ----------------------------------------------------------------------

    def run_program(self, program: LayerProgram, image: torch.Tensor, progress: bool = True,
                    golden=None) -> RunReport:
        """Run ``program`` on one int8 CHW ``image``; every layer and the logits are compared
        with the golden model (``golden``: a precomputed :class:`GoldenResult`, optional)."""
        from tqdm import tqdm

        from psconv.firmware.execute import execute_program
        from psconv.sim.golden.network import describe_mismatch, run_golden

        if program.config != self.config:
            raise DriverError("the program was compiled for another engine configuration than "
                              "this driver's; create the Driver with program.config")
        program = streamed_program(program)      # max pools fused into the engine steps
        if golden is None:
            golden = run_golden(program.model, image)
        started = time.perf_counter()
        if self.identity is None:
            self.identify()
        report = RunReport(model=f"{program.model.arch} {program.model.family_name}",
                           multipliers=self.config.multipliers)
        bar = tqdm(total=len(program.steps), desc="layers", unit="step",
                   disable=None if progress else True, leave=False)

        def backend(step, input_map, residual):
            bar.set_postfix_str(step.name, refresh=True)
            out, step_report = self._run_step(step, input_map, residual)
            problem = describe_mismatch(step.name,
                                        golden.outputs[step.output_layer][step.channel_slice], out)
            step_report.bit_exact = problem is None
            step_report.mismatch = problem
            report.steps.append(step_report)
            return out

        def on_step(step, output):
            bar.update(1)

        try:
            result = execute_program(program, image, backend, on_step)
        finally:
            bar.close()
        for layer in program.model.layers:
            if layer.name in result.outputs:   # a convolution with a fused max pool has none
                report.layers[layer.name] = describe_mismatch(
                    layer.name, golden.outputs[layer.name], result.outputs[layer.name])
        report.logits = [int(v) for v in result.logits.reshape(-1).tolist()]
        report.golden_logits = [int(v) for v in golden.logits.reshape(-1).tolist()]
        report.wall_s = time.perf_counter() - started
        report.link_summary = self.link.stats.summary()
        report.device_link = {k[len("link_"):]: v for k, v in self.last_counters.items()
                              if k.startswith("link_")}
        return report


LOCAL_BOARDS = {"sim": ("psconv.sim.bridge", "open_sim"),
                "sim-sdram": ("psconv.sim.bridge", "open_sim_sdram"),
                "resident-ref": ("psconv.sim.resident_device", "open_reference")}
"""Bare specs that open a fresh in-process or simulated board with the program's configuration:
spec -> (module, function(config) -> Transport)."""


def open_transport(spec: str, config, memory_bytes: int = 0) -> Transport:
    """A bare ``"sim"`` (the board top in Verilator) or ``"resident-ref"`` (the software resident
    board) is a fresh board with ``config`` (the program's) and, if ``memory_bytes``, that much
    resident memory; anything else goes to
    :func:`~psconv.firmware.transport.transport_from_spec`."""
    import importlib

    from psconv.firmware.transport import transport_from_spec

    if spec in LOCAL_BOARDS:
        module, function = LOCAL_BOARDS[spec]
        options = {"memory_bytes": memory_bytes} if memory_bytes else {}
        return getattr(importlib.import_module(module), function)(config, **options)
    return transport_from_spec(spec)


@dataclass
class OpenedLink:
    """A transport opened by :func:`open_link`: ``transport`` to give a driver (the fault
    injector when there is one), ``injector`` (or None), and the link's ``timeout_s`` and
    ``retries``."""

    transport: Transport
    injector: object | None
    timeout_s: float
    retries: int

    def fault_summary(self) -> tuple[int, str]:
        """(faults injected, their summary), or (0, "") without fault injection."""
        if self.injector is None:
            return 0, ""
        return sum(self.injector.injected.values()), self.injector.summary()


def open_link(spec: str, config, *, faults: float = 0.0, fault_seed: int = 0,
              timeout_s: float | None = None, retries: int | None = None,
              memory_bytes: int = 0) -> OpenedLink:
    """Open the transport ``spec`` (:func:`open_transport`), optionally wrapped in a
    :class:`~psconv.firmware.faults.FaultInjectingTransport` with ``faults`` per frame; with
    faults the default answer timeout is shorter (0.3 s) and the retries more (20).
    ``memory_bytes``: the resident memory of a local board (see :func:`open_transport`)."""
    from psconv.firmware.faults import FaultInjectingTransport, uniform_fault_rates

    inner = open_transport(spec, config, memory_bytes)
    injector = None
    if faults:
        # a dropped frame costs a host timeout, so keep it short; a delay stays below it
        timeout_s = timeout_s or 0.3
        injector = FaultInjectingTransport(inner, seed=fault_seed, rates=uniform_fault_rates(faults),
                                           max_delay_s=timeout_s / 3, silence_s=0.05)
    return OpenedLink(transport=injector or inner, injector=injector,
                      timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
                      retries=retries if retries is not None else (20 if faults else DEFAULT_RETRIES))


def run_on_board(program: LayerProgram, image: torch.Tensor, transport: str = "sim", *,
                 faults: float = 0.0, fault_seed: int = 0, timeout_s: float | None = None,
                 retries: int | None = None, progress: bool = True) -> RunReport:
    """Open ``transport`` (a spec) with :func:`open_link`, run ``program`` on ``image`` and return
    the :class:`RunReport` (what ``psconv run`` prints); a program the engine cannot run
    streamed (a max pool it cannot fuse, :func:`~psconv.firmware.compiler.streamed_program`) is
    refused before the link opens."""
    check_streamable(program)
    link = open_link(transport, program.config, faults=faults, fault_seed=fault_seed,
                     timeout_s=timeout_s, retries=retries)
    driver = Driver(link.transport, program.config, timeout_s=link.timeout_s, retries=link.retries)
    try:
        report = driver.run_program(program, image, progress=progress)
    finally:
        link.transport.close()
    report.transport = transport
    report.faults_injected, report.fault_summary = link.fault_summary()
    return report
