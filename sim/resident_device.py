"""A software resident board: memory, the resident commands and a program runner, in Python.

The reference the gateware's resident mode mirrors (:mod:`psconv.protocol.memory` is the
contract), and a board the resident driver's tests and ``psconv run --mode resident
--transport resident-ref`` run against with no Verilator build.

:class:`ResidentDevice` holds ``memory_bytes`` of memory (a ``bytearray``) and answers
``handle(code, payload)``:

* ``IDENTIFY``: ``identity_blob(config)``.
* ``WRITE_MEM`` / ``READ_MEM`` / ``CRC_MEM``: on the memory; a region outside it, or a payload
  of the wrong size (``WRITE_MEM`` with no data, ``READ_MEM`` over the link's max payload),
  is NAKed BAD_LENGTH. A ``WRITE_MEM`` touching the checked model region clears the mark.
  While a program runs they are NAKed BUSY, except a ``WRITE_MEM`` inside the header's input
  region once the program's first ``input_steps`` steps are done.
* ``CHECK_MODEL``: sets the validity mark (and remembers the region) only if the region's
  CRC-32 equals the host's; a mismatch clears the mark and is NAKed MODEL_CRC.
* ``INFER``: NAK BUSY while running, NAK NO_MODEL without the mark or when the program address
  lies outside the checked region. The program is then decoded and checked (header magic,
  version and config hash; every step's descriptor, mask table and regions): a program the
  runner cannot run is NAKed BAD_STATE before anything runs (the gateware runner instead
  starts and stops at the first step record that breaks a rule, naming it in ``bad_rule``). Then it runs: by default the whole inference inside ``INFER``, so the first
  ``RUN_STATUS`` reports done; with ``steps_per_poll=n`` each ``RUN_STATUS`` runs ``n`` more
  steps first (how the host's polling and its timeout are tested).
* ``RUN_STATUS``: :data:`~psconv.protocol.memory.RUN_STATUS_LAYOUT`. ``cycles`` is an
  *estimate* for the gateware runner's 2-byte memory port, per step: a cycle per word of its
  sequential loads (record, tables, input map), a cycle per residual and output byte, plus the
  engine's compute cycles (:func:`psconv.sim.cycle_model.predict_cycles` ``compute``), nothing
  overlapped, and for the average pool a cycle per word plus the serial multiply and shift; a
  max-pool step (:data:`~psconv.protocol.memory.MAX_POOL_2X2`) costs exactly what the gateware
  runner with block-RAM memory takes (:func:`psconv.sim.cycle_model.runner_max_pool_cycles`). On
  the reduced ResNet18 of the resident tests' gateware check it reads 10,157 cycles where the
  gateware counts 9,258 (pairs of pixels in one request and the overlaps are not modelled).
  ``memory_reads`` counts every byte the runner reads (header, step records, masks (twice),
  quantization entries, weights, input map, residual), ``memory_writes`` every output byte.
  A step whose input map the engine holds is not loaded (the gateware runner's rule,
  :mod:`psconv.hw.program_runner`: the address, length, C, H and W of the last map loaded in
  this run, and no store of the run into it since): it computes on the held copy, and neither
  the map's bytes nor their cycles are counted.
* ``READ_STATUS`` (what the host's link sends at session start): the runner's running and
  done flags as ``busy`` and ``done``.
* Anything else: NAK UNKNOWN_COMMAND (this board has no streamed command set).

Each step runs :func:`psconv.sim.engine_model.run_step` on what it reads from memory, so the
outputs are those of the engine the tables describe, not of the host's program objects.
:meth:`reset` clears the mark and the run status and keeps the memory (as a board reset leaves
its SDRAM).

:func:`open_reference` puts a fresh device behind a
:class:`~psconv.firmware.transport.LoopbackTransport` (``transport.board`` is the device);
importing this module registers the transport spec ``resident-ref[:CONFIG.json][@MEMORY_BYTES]``
(or ``resident-ref:MEMORY_BYTES``).
"""

from __future__ import annotations

import struct

import torch

from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.firmware.compiler import EngineStep
from psconv.firmware.transport import LoopbackTransport, register_transport
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.descriptor import QUANT_ENTRY_LAYOUT, LayerSpec
from psconv.protocol.frame import MAX_PAYLOAD, Response
from psconv.protocol.memory import (MAX_POOL_2X2, MEM_ADDRESS_LAYOUT, MEM_READ_LAYOUT,
                                    MEM_REGION_LAYOUT, MODEL_CHECK_LAYOUT, NO_BAD_RULE, PROGRAM_HEADER_LAYOUT, PROGRAM_MAGIC,
                                    PROGRAM_VERSION, RUN_STATUS_LAYOUT, memory_crc,
                                    step_record_layout)
from psconv.protocol.payloads import (MASK_BYTES, QUANT_BYTES, STATUS_LAYOUT, config_hash,
                                      decode_payload, encode_payload, identity_blob,
                                      layout_bytes)
from psconv.sim.cycle_model import predict_cycles, runner_max_pool_cycles
from psconv.sim.device_link import DeviceLink
from psconv.sim.engine_model import run_step
from psconv.sim.golden.ops import global_avgpool_int, maxpool2d_int

DEFAULT_MEMORY_BYTES = 32 << 20
"""32 MiB: the ULX3S's SDR SDRAM (MT48LC16M16 geometry)."""


class ProgramError(PsconvError):
    """The program in memory cannot run (INFER answers NAK BAD_STATE)."""


def _fields(layout, payload: bytes):
    return decode_payload(layout, bytes(payload), "memory")


class ResidentDevice:
    """A resident board in software (see the module docstring)."""

    def __init__(self, config: EngineConfig, memory_bytes: int = DEFAULT_MEMORY_BYTES, *,
                 steps_per_poll: int | None = None, max_payload: int = MAX_PAYLOAD,
                 inter_byte_timeout_s: float = 0.005):
        self.config = config
        self.memory = bytearray(memory_bytes)
        self.max_payload = max_payload
        self.steps_per_poll = steps_per_poll
        self.link = DeviceLink(self.handle, max_payload=max_payload,
                               inter_byte_timeout_s=inter_byte_timeout_s)
        self.reset()

    def reset(self) -> None:
        """Clear the validity mark and the run status; the memory keeps its contents."""
        self.model: tuple[int, int] | None = None     # the checked (address, length), when valid
        self.running = self.done = False
        self.steps_done = self.cycles = self.memory_reads = self.memory_writes = 0
        self._queue: list[tuple[LayerSpec, dict]] = []
        self._input = (0, 0, 0)      # the running program's input region and its last reader
        self._held: dict | None = None   # the input map the engine holds (see _run)

    # -- commands -----------------------------------------------------------------------------

    def handle(self, code: int, payload: bytes) -> Response:
        try:
            command = Command(code)
        except ValueError:
            return Response.nak(NakReason.UNKNOWN_COMMAND)
        handler = {
            Command.IDENTIFY: self._identify, Command.WRITE_MEM: self._write_mem,
            Command.READ_MEM: self._read_mem, Command.CRC_MEM: self._crc_mem,
            Command.CHECK_MODEL: self._check_model, Command.INFER: self._infer,
            Command.RUN_STATUS: self._run_status, Command.READ_STATUS: self._read_status,
        }.get(command)
        if handler is None:
            return Response.nak(NakReason.UNKNOWN_COMMAND)
        if self.running and command in (Command.READ_MEM, Command.CRC_MEM, Command.CHECK_MODEL):
            return Response.nak(NakReason.BUSY)
        return handler(payload)

    def _inside(self, address: int, length: int) -> bool:
        return address + length <= len(self.memory)

    def _identify(self, payload: bytes) -> Response:
        if payload:
            return Response.nak(NakReason.BAD_LENGTH)
        return Response.data(identity_blob(self.config, max_payload=self.max_payload))

    def _write_mem(self, payload: bytes) -> Response:
        head = layout_bytes(MEM_ADDRESS_LAYOUT)
        if len(payload) <= head:
            return Response.nak(NakReason.BAD_LENGTH)
        address = _fields(MEM_ADDRESS_LAYOUT, payload[:head]).address
        data = payload[head:]
        if not self._inside(address, len(data)):
            return Response.nak(NakReason.BAD_LENGTH)
        if self.running:        # only the input region, once no step reads it any more
            start, length, steps = self._input
            if not (start <= address and address + len(data) <= start + length
                    and self.steps_done >= steps):
                return Response.nak(NakReason.BUSY)
        if self.model is not None:
            start, length = self.model
            if address < start + length and start < address + len(data):
                self.model = None
        self.memory[address:address + len(data)] = data
        return Response.ack()

    def _region(self, layout, payload: bytes, max_length: int | None = None):
        """``payload`` decoded with ``layout`` if it has that size and its ``address`` and
        ``length`` lie inside the memory (and ``length <= max_length``), else None (BAD_LENGTH)."""
        if len(payload) != layout_bytes(layout):
            return None
        request = _fields(layout, payload)
        if max_length is not None and request.length > max_length:
            return None
        return request if self._inside(request.address, request.length) else None

    def _read_mem(self, payload: bytes) -> Response:
        request = self._region(MEM_READ_LAYOUT, payload, self.max_payload)
        if request is None:
            return Response.nak(NakReason.BAD_LENGTH)
        return Response.data(bytes(self.memory[request.address:request.address + request.length]))

    def _crc_mem(self, payload: bytes) -> Response:
        region = self._region(MEM_REGION_LAYOUT, payload)
        if region is None:
            return Response.nak(NakReason.BAD_LENGTH)
        crc = memory_crc(bytes(self.memory[region.address:region.address + region.length]))
        return Response.data(struct.pack("<I", crc))

    def _check_model(self, payload: bytes) -> Response:
        check = self._region(MODEL_CHECK_LAYOUT, payload)
        if check is None:
            return Response.nak(NakReason.BAD_LENGTH)
        region = bytes(self.memory[check.address:check.address + check.length])
        if memory_crc(region) != check.crc:
            self.model = None
            return Response.nak(NakReason.MODEL_CRC)
        self.model = (check.address, check.length)
        return Response.ack()

    def _infer(self, payload: bytes) -> Response:
        if len(payload) != layout_bytes(MEM_ADDRESS_LAYOUT):
            return Response.nak(NakReason.BAD_LENGTH)
        if self.running:
            return Response.nak(NakReason.BUSY)
        address = _fields(MEM_ADDRESS_LAYOUT, payload).address
        if self.model is None or not self.model[0] <= address < sum(self.model):
            return Response.nak(NakReason.NO_MODEL)
        try:
            queue = self._decode_program(address)
        except ProgramError:
            return Response.nak(NakReason.BAD_STATE)
        self.running, self.done = True, False
        self.steps_done = self.cycles = self.memory_writes = 0
        self.memory_reads = layout_bytes(PROGRAM_HEADER_LAYOUT)
        self._held = None
        self._queue = queue
        header = _fields(PROGRAM_HEADER_LAYOUT, self.memory[address:address + layout_bytes(
            PROGRAM_HEADER_LAYOUT)])
        self._input = (header.input_address, header.input_bytes, header.input_steps)
        if self.steps_per_poll is None:
            self._advance(len(queue))
        return Response.ack()

    def _read_status(self, payload: bytes) -> Response:
        """The streamed engine's status (the link client's session start asks for it): the
        runner's running and done flags, no output beats."""
        return Response.data(encode_payload(STATUS_LAYOUT, {
            "busy": int(self.running), "done": int(self.done), "output_beats": 0,
            "residual_window": 0}))

    def _run_status(self, payload: bytes) -> Response:
        if payload:
            return Response.nak(NakReason.BAD_LENGTH)
        if self.running and self.steps_per_poll is not None:
            self._advance(self.steps_per_poll)
        return Response.data(encode_payload(RUN_STATUS_LAYOUT, {
            "running": int(self.running), "done": int(self.done),
            "model_valid": int(self.model is not None), "steps_done": self.steps_done,
            "cycles": self.cycles, "memory_reads": self.memory_reads,
            "memory_writes": self.memory_writes, "memory_bytes": len(self.memory),
            "bad_rule": NO_BAD_RULE}))

    # -- the runner ---------------------------------------------------------------------------

    def _decode_program(self, address: int) -> list[tuple[LayerSpec, dict]]:
        """Every step's descriptor and record fields, checked so the run cannot fail."""
        config = self.config
        header_bytes = layout_bytes(PROGRAM_HEADER_LAYOUT)
        header = _fields(PROGRAM_HEADER_LAYOUT, self.memory[address:address + header_bytes])
        if (header.magic != int.from_bytes(PROGRAM_MAGIC, "little")
                or header.version != PROGRAM_VERSION or header.config_hash != config_hash(config)):
            raise ProgramError(f"no program for this engine at {address}")
        layout = step_record_layout(config)
        size = layout_bytes(layout)
        steps = []
        for k in range(header.steps):
            at = address + header_bytes + k * size
            record = _fields(layout, self.memory[at:at + size])
            d = record.descriptor
            spec = LayerSpec(in_channels=d.in_channels, out_channels=d.out_channels,
                             in_height=d.in_height, in_width=d.in_width, stride=d.stride,
                             kernel=d.kernel, relu=bool(d.relu), residual=bool(d.residual),
                             period=d.period, pool=bool(d.pool))
            fields = {name: record[name] for name, _ in layout if name.endswith(("_address", "_bytes"))}
            if record.max_pool:
                fields["record_address"] = at
                steps.append((spec, self._check_max_pool(k, spec, record.max_pool, fields)))
                continue
            fields["masks"] = self._masks(fields["masks_address"], spec.period)
            try:
                spec.check(config, fields["masks"])
            except PsconvError as e:
                raise ProgramError(f"step {k}: {e}") from None
            planes = spec.result_height * spec.result_width     # the pooled map with ``pool``
            regions = [(fields["masks_address"], MASK_BYTES * spec.period),
                       (fields["quant_address"], QUANT_BYTES * spec.out_channels),
                       (fields["weights_address"], fields["weight_bytes"]),
                       (fields["fmap_address"], fields["fmap_bytes"]),
                       (fields["output_address"], fields["plane_bytes"] * spec.out_channels)]
            if spec.residual:
                regions.append((fields["residual_address"], fields["plane_bytes"] * spec.out_channels))
            if (fields["fmap_bytes"] != spec.in_channels * spec.in_height * spec.in_width
                    or fields["plane_bytes"] < planes or fields["weight_bytes"] % config.tn
                    or not all(self._inside(a, n) for a, n in regions)):
                raise ProgramError(f"step {k}: sizes or regions do not fit")
            steps.append((spec, fields))
        if header.pool_channels:
            pool = {name: header[name] for name, _ in PROGRAM_HEADER_LAYOUT if name.startswith("pool_")}
            if not (self._inside(pool["pool_input"], pool["pool_channels"] * pool["pool_plane"])
                    and self._inside(pool["pool_output"], pool["pool_channels"])
                    and 1 <= pool["pool_shift"] <= 62 and pool["pool_multiplier"] < 1 << 30):
                raise ProgramError("the average pool's regions or factors do not fit")
            steps.append((None, pool))
        return steps

    def _check_max_pool(self, k: int, spec: LayerSpec, kind: int, fields: dict) -> dict:
        """A max-pool step's record (see :mod:`psconv.protocol.memory`), checked; its fields
        with ``max_pool`` set."""
        if kind != MAX_POOL_2X2:
            raise ProgramError(f"step {k}: max_pool {kind}; allowed 0 or {MAX_POOL_2X2}")
        try:
            spec.check(self.config)
        except PsconvError as e:
            raise ProgramError(f"step {k}: {e}") from None
        if (spec.kernel, spec.stride, spec.period, spec.relu, spec.residual, spec.pool) \
                != (1, 2, 1, False, False, False) or spec.out_channels != spec.in_channels:
            raise ProgramError(f"step {k}: a max-pool step's descriptor is not a 1x1 stride-2 "
                               f"layer with out_channels = in_channels, period 1, no pool")
        out = (spec.in_channels, spec.in_height // 2, spec.in_width // 2)
        if (fields["fmap_bytes"] != spec.in_channels * spec.in_height * spec.in_width
                or fields["plane_bytes"] != out[1] * out[2] or min(out) < 1
                or not self._inside(fields["fmap_address"], fields["fmap_bytes"])
                or not self._inside(fields["output_address"], out[0] * fields["plane_bytes"])):
            raise ProgramError(f"step {k}: the max pool's sizes or regions do not fit")
        return {**fields, "max_pool": kind}

    def _masks(self, address: int, period: int) -> tuple[int, ...]:
        data = self.memory[address:address + MASK_BYTES * period]
        return tuple(int.from_bytes(data[k:k + MASK_BYTES], "little")
                     for k in range(0, len(data), MASK_BYTES))

    def _read(self, address: int, length: int) -> bytes:
        self.memory_reads += length
        return bytes(self.memory[address:address + length])

    def _map(self, address: int, plane_bytes: int, shape) -> torch.Tensor:
        """A (C, H, W) int8 map whose channel c starts at ``address + c * plane_bytes``."""
        channels, height, width = shape
        data = b"".join(self._read(address + c * plane_bytes, height * width) for c in range(channels))
        return torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(shape).to(torch.int64)

    def _store(self, address: int, data: bytes) -> None:
        """The runner stores ``data`` at ``address``: an engine-held map it touches is dropped."""
        self.memory[address:address + len(data)] = data
        self.memory_writes += len(data)
        held = self._held
        if held and address < held["address"] + held["bytes"] and held["address"] < address + len(data):
            self._held = None

    def _advance(self, count: int) -> None:
        for _ in range(min(count, len(self._queue))):
            spec, fields = self._queue.pop(0)
            if spec is None:
                self._pool(fields)
            elif fields.get("max_pool"):
                self._max_pool(spec, fields)
            else:
                self._run(spec, fields)
        if not self._queue:
            self.running, self.done = False, True

    def _pool(self, f: dict) -> None:
        """The whole-map average pool after the last step (see :mod:`psconv.protocol.memory`);
        cycles: a word per cycle in, then the gateware's serial multiply and shift."""
        channels, plane = f["pool_channels"], f["pool_plane"]
        x = self._map(f["pool_input"], plane, (channels, 1, plane))
        pooled = global_avgpool_int(x, f["pool_multiplier"], f["pool_shift"])
        self._store(f["pool_output"], pooled.to(torch.int8).numpy().tobytes())
        multiply = max(1, f["pool_multiplier"].bit_length())
        self.cycles += channels * (-(-plane // 2) + multiply + f["pool_shift"] + 3)

    def _max_pool(self, spec: LayerSpec, f: dict) -> None:
        """A 2x2 stride-2 max-pool step from memory into memory (the golden op's values);
        cycles: the block-RAM gateware runner's, exactly (:func:`runner_max_pool_cycles`)."""
        record = layout_bytes(step_record_layout(self.config))
        self.memory_reads += record
        shape = (spec.in_channels, spec.in_height, spec.in_width)
        x = self._map(f["fmap_address"], spec.in_height * spec.in_width, shape)
        self._store(f["output_address"], maxpool2d_int(x).to(torch.int8).numpy().tobytes())
        self.cycles += runner_max_pool_cycles(self.config, *shape, f["fmap_address"],
                                              f["record_address"])
        self.steps_done += 1

    def _run(self, spec: LayerSpec, f: dict) -> None:
        """One engine step from memory into memory (see the module docstring)."""
        cfg = self.config
        moved = self.memory_reads + self.memory_writes
        # the mask table twice: the runner checks it before it starts the engine
        self.memory_reads += layout_bytes(step_record_layout(cfg)) + 2 * MASK_BYTES * spec.period
        quant = self._read(f["quant_address"], QUANT_BYTES * spec.out_channels)
        entries = [QUANT_ENTRY_LAYOUT.from_bits(int.from_bytes(quant[k:k + QUANT_BYTES], "little"))
                   for k in range(0, len(quant), QUANT_BYTES)]
        weights = self._read(f["weights_address"], f["weight_bytes"])
        step = EngineStep(
            layer=f"memory step {self.steps_done}", tile=0, tiles=1, first_channel=0,
            descriptor=spec, masks=f["masks"],
            weight_words=torch.frombuffer(bytearray(weights), dtype=torch.int8).reshape(-1, cfg.tn),
            bias=torch.tensor([e.bias for e in entries], dtype=torch.int32),
            multiplier=torch.tensor([e.multiplier for e in entries], dtype=torch.int64),
            shift=torch.tensor([e.shift for e in entries], dtype=torch.int64),
            residual_multiplier=torch.tensor([e.residual_multiplier for e in entries], dtype=torch.int64),
            input="memory", residual=None, useful_macs=0)
        shape = (spec.in_channels, spec.in_height, spec.in_width)
        key = {"address": f["fmap_address"], "bytes": f["fmap_bytes"], "shape": shape}
        keep_map = self._held is not None and all(self._held[k] == v for k, v in key.items())
        if keep_map:
            x = self._held["x"]
        else:
            x = self._map(f["fmap_address"], spec.in_height * spec.in_width, shape)
            self._held = {**key, "x": x}
        out_shape = (spec.out_channels, spec.out_height, spec.out_width)
        before_residual, moved_single = self.memory_reads, self.memory_writes
        residual = (self._map(f["residual_address"], f["plane_bytes"], out_shape)
                    if spec.residual else None)
        out = run_step(step, x, residual, cfg.tn, cfg.patch_channels)
        planes = spec.result_height * spec.result_width     # the pooled map with ``pool``
        data = out.to(torch.int8).reshape(spec.out_channels, planes).numpy().tobytes()
        for c in range(spec.out_channels):
            self._store(f["output_address"] + c * f["plane_bytes"],
                        data[c * planes:(c + 1) * planes])
        # a word per cycle for the sequential loads, a byte per gather load and output store
        single = self.memory_writes + (self.memory_reads - before_residual) - moved_single
        sequential = self.memory_reads + self.memory_writes - moved - single
        self.cycles += (-(-sequential // 2) + single
                        + predict_cycles(cfg, spec, f["masks"], keep_map=keep_map)["compute"])
        self.steps_done += 1


def open_reference(config: EngineConfig | None = None,
                   memory_bytes: int = DEFAULT_MEMORY_BYTES, **options) -> LoopbackTransport:
    """A :class:`LoopbackTransport` to a fresh :class:`ResidentDevice` (``transport.board``)."""
    device = ResidentDevice(config or EngineConfig(), memory_bytes, **options)
    transport = LoopbackTransport(device.link)
    transport.board = device
    return transport


def _open_reference_spec(rest: str) -> LoopbackTransport:
    """``rest``: empty, ``MEMORY_BYTES``, ``CONFIG.json`` or ``CONFIG.json@MEMORY_BYTES``."""
    config_path, _, size_text = rest.rpartition("@") if "@" in rest else ("", "", rest)
    if not size_text.isdigit():
        config_path, size_text = rest, ""
    memory_bytes = int(size_text) if size_text else DEFAULT_MEMORY_BYTES
    if memory_bytes <= 0:
        raise PsconvError(f"resident-ref memory size {memory_bytes}: allowed a positive number "
                          f"of bytes, e.g. 'resident-ref:33554432'")
    config = EngineConfig.load(config_path) if config_path else EngineConfig()
    return open_reference(config, memory_bytes)


register_transport("resident-ref", _open_reference_spec)
