"""The memory image of a resident program: where the model and the maps lie in the board's memory.

:func:`build_memory_image` lays a compiled :class:`~psconv.firmware.compiler.LayerProgram` out
as :mod:`psconv.protocol.memory` defines it, byte addresses from 0::

    0                program header (PROGRAM_HEADER_LAYOUT, 38 bytes)
    38               step records, one per device step (step_record_layout(config)): engine
                     steps and max-pool steps, in program order
    (4-aligned)      tables, per engine step in program order, each 4-aligned:
                     masks (2 bytes each), quantization entries (13 bytes each),
                     weight words (tn bytes each)
    model_length     ---- end of the model: CHECK_MODEL covers [0, model_length) ----
    (4-aligned)      the input image region (CHW int8)
    (4-aligned)      one region per engine or max-pool layer, in program order: its whole
                     output, CHW int8
    (4-aligned)      the average pool's output (C int8), when the device pools

The tables hold exactly the bytes the streamed driver sends (:mod:`psconv.firmware.driver`), so
the device feeds the engine the same beats. Every map region is reserved in whole
``lcm(4, tn)``-byte units, so a reader that fetches whole ``tn``-byte beats never leaves it;
``fmap_bytes`` in a step record is the exact ``C*H*W`` (the device zero-pads the last beat).

An output-channel tile of a layer writes its channel slice of the layer's region
(``output_address = region + first_channel * plane_bytes``) and, when it adds a residual, reads
the same slice of the residual's region. ``fmap_address`` is the region of the step's input
(another layer's region, or the input image). A max-pool step (``max_pool`` =
:data:`~psconv.protocol.memory.MAX_POOL_2X2`, a :class:`~psconv.firmware.compiler.PoolStep`)
has no tables: its record names its input's region (``fmap_address``, ``fmap_bytes``) and its
output's (``output_address``, ``plane_bytes`` = (H // 2) x (W // 2)), the other addresses 0. Host steps (average pool, classifier) must all
come after the last engine step. A whole-map average pool that reads the last engine layer runs
on the device (the header's ``pool_*`` fields), so an inference returns C bytes, not the last
C x H x W map; the rest (the classifier) stays on the host and reads
:attr:`MemoryImage.output_layer`'s region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from psconv.errors import PsconvError
from psconv.firmware.compiler import EngineStep, HostStep, LayerProgram, PoolStep
from psconv.protocol.beats import weight_beats
from psconv.protocol.descriptor import encode_quant_entry
from psconv.protocol.memory import (MAX_POOL_2X2, PROGRAM_HEADER_LAYOUT, memory_crc,
                                    program_header, step_record, step_record_layout)
from psconv.protocol.payloads import (beats_payload, config_hash, layout_bytes, mask_payload,
                                      quant_payload)

ALIGN = 4
"""Every table and map region starts at a multiple of this many bytes."""

INPUT_REGION = "input"
"""Name of the input image's region (the name steps use for the network input)."""

ADDRESS_LIMIT = 1 << 32


def _align(value: int, unit: int = ALIGN) -> int:
    return -(-value // unit) * unit


@dataclass(frozen=True)
class MapRegion:
    """A CHW int8 map in memory: the input image or one engine layer's whole output."""

    name: str
    address: int
    shape: tuple[int, int, int]     # (C, H, W)
    reserved: int                   # bytes set aside (``size`` rounded up to whole beats)
    vector: bool = False            # a pooled (C, 1, 1) map the golden model holds as (C,)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The shape of the golden model's tensor for this map."""
        return self.shape[:1] if self.vector else self.shape

    @property
    def plane_bytes(self) -> int:
        return self.shape[1] * self.shape[2]

    @property
    def size(self) -> int:
        return self.shape[0] * self.plane_bytes

    @property
    def end(self) -> int:
        return self.address + self.reserved


@dataclass
class MemoryImage:
    """A program laid out for a board's memory (see the module docstring).

    ``model_bytes`` is what the host loads and ``CHECK_MODEL`` covers, from address 0
    (:attr:`program_address`); ``regions`` the maps by name (``"input"`` first, then every
    engine layer in program order); ``records`` each step record's fields but the descriptor
    (the step's ``LayerSpec``).
    """

    memory_bytes: int
    model_bytes: bytes
    regions: dict[str, MapRegion]
    output_layer: str
    program_bytes: int
    step_names: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    tables: list[tuple[str, int, int]] = field(default_factory=list)   # (what, address, bytes)
    pool: dict | None = None        # the header's pool fields when the device pools, else None
    input_steps: int = 0            # steps that read the input: after them it takes the next image

    program_address = 0

    @property
    def model_crc(self) -> int:
        return memory_crc(self.model_bytes)

    @property
    def input_region(self) -> MapRegion:
        return self.regions[INPUT_REGION]

    @property
    def output_region(self) -> MapRegion:
        return self.regions[self.output_layer]

    @property
    def total_bytes(self) -> int:
        """Bytes of memory the image uses, from address 0 to the end of the last region."""
        return max([len(self.model_bytes), *(r.end for r in self.regions.values())])

    def summary(self) -> str:
        """One line: the model, the maps and the total against the board's memory."""
        maps = self.total_bytes - self.input_region.address
        return (f"memory: model {len(self.model_bytes)} bytes (program {self.program_bytes}, "
                f"tables {len(self.model_bytes) - self.program_bytes}) + {len(self.regions)} maps "
                f"{maps} bytes = {self.total_bytes} of {self.memory_bytes} bytes")

    def memory_map(self) -> list[dict]:
        """One row per part (program, each step's tables, each map region), in address order:
        ``part``, ``address``, ``bytes``, ``end`` (exclusive) and ``what`` it holds."""
        rows = [{"part": "program", "address": 0, "bytes": self.program_bytes,
                 "what": f"header + {len(self.records)} step records"}]
        rows += [{"part": what, "address": address, "bytes": size, "what": "table"}
                 for what, address, size in self.tables]
        rows.append({"part": "(model end)", "address": len(self.model_bytes), "bytes": 0,
                     "what": f"CHECK_MODEL covers [0, {len(self.model_bytes)}), "
                             f"CRC-32 0x{self.model_crc:08x}"})
        rows += [{"part": f"map {r.name}", "address": r.address, "bytes": r.reserved,
                  "what": "x".join(map(str, r.shape)) + " int8"} for r in self.regions.values()]
        for row in rows:
            row["end"] = row["address"] + row["bytes"]
        return rows


def _map_shapes(program: LayerProgram) -> dict[str, tuple[int, int, int]]:
    """The input's and every engine or max-pool layer's whole output shape, from the steps'
    descriptors."""
    shapes = {INPUT_REGION: tuple(int(n) for n in program.model.input_shape)}
    channels: dict[str, int] = {}
    for step in program.device_steps:
        if isinstance(step, PoolStep):
            shapes[step.layer] = step.output_shape
            continue
        spec = step.descriptor
        channels[step.layer] = channels.get(step.layer, 0) + spec.out_channels
        shapes[step.layer] = (channels[step.layer], spec.out_height, spec.out_width)
    return shapes


def _check_host_steps_last(program: LayerProgram) -> str:
    """The last engine layer; refuses a program whose host steps do not all follow it and read
    only it (or each other)."""
    engine = program.device_steps
    if not engine:
        raise PsconvError("memory image: the program has no engine step; nothing runs on the board")
    last = engine[-1].layer
    last_index = program.steps.index(engine[-1])
    host_names = set()
    for index, step in enumerate(program.steps):
        if not isinstance(step, HostStep):
            continue
        name = step.layer.name
        if index < last_index:
            raise PsconvError(f"memory image: host step {name!r} comes before engine step "
                              f"{engine[-1].name!r}; resident mode runs host steps only "
                              f"after the board's program")
        if step.layer.input != last and step.layer.input not in host_names:
            raise PsconvError(f"memory image: host step {name!r} reads {step.layer.input!r}; "
                              f"allowed: the last engine layer {last!r} or an earlier host step")
        host_names.add(name)
    return last


def _device_pool(program: LayerProgram, last_engine_layer: str):
    """The host step the device runs after its steps: the first host step when it is a
    whole-map average pool of the last engine layer (else None)."""
    hosts = [s for s in program.steps if isinstance(s, HostStep)]
    if hosts and hosts[0].layer.op == "avgpool" and hosts[0].layer.input == last_engine_layer:
        return hosts[0].layer
    return None


def build_memory_image(program: LayerProgram, memory_bytes: int) -> MemoryImage:
    """Lay ``program`` out for a board with ``memory_bytes`` of memory (see the module
    docstring); :class:`PsconvError` if it does not fit."""
    config = program.config
    if not 0 < memory_bytes <= ADDRESS_LIMIT:
        raise PsconvError(f"memory image: memory_bytes {memory_bytes}; allowed 1..{ADDRESS_LIMIT} "
                          f"(32-bit addresses)")
    output_layer = _check_host_steps_last(program)
    pool_layer = _device_pool(program, output_layer)
    steps = program.device_steps
    record_layout = step_record_layout(config)
    header_bytes = layout_bytes(PROGRAM_HEADER_LAYOUT)
    program_bytes = header_bytes + len(steps) * layout_bytes(record_layout)

    # tables: each step's masks, quantization entries and weights, in the driver's byte order
    tables = bytearray()
    table_rows: list[tuple[str, int, int]] = []
    addresses: list[dict] = []       # per device step: its tables (none for a max pool)

    def place(what: str, data: bytes) -> int:
        tables.extend(bytes(_align(program_bytes + len(tables)) - program_bytes - len(tables)))
        address = program_bytes + len(tables)
        tables.extend(data)
        table_rows.append((what, address, len(data)))
        return address

    for step in steps:
        if isinstance(step, PoolStep):
            addresses.append({"masks_address": 0, "quant_address": 0, "weights_address": 0,
                              "weight_bytes": 0})
            continue
        name = step.name
        entries = [encode_quant_entry(int(b), int(m), int(s), int(r)) for b, m, s, r in
                   zip(step.bias, step.multiplier, step.shift, step.residual_multiplier)]
        weights = beats_payload(weight_beats(step.weight_words), config.tn)
        addresses.append({
            "masks_address": place(f"{name} masks", mask_payload(step.masks)),
            "quant_address": place(f"{name} quant", quant_payload(entries)),
            "weights_address": place(f"{name} weights", weights),
            "weight_bytes": len(weights),
        })
    model_length = program_bytes + len(tables)

    # maps: the input image and each engine layer's whole output
    beat_unit = math.lcm(ALIGN, config.tn)
    regions: dict[str, MapRegion] = {}
    cursor = _align(model_length)
    shapes = _map_shapes(program)
    if pool_layer is not None:
        shapes[pool_layer.name] = (shapes[output_layer][0], 1, 1)
    for name, shape in shapes.items():
        region = MapRegion(name, cursor, shape, _align(shape[0] * shape[1] * shape[2], beat_unit),
                           vector=pool_layer is not None and name == pool_layer.name)
        regions[name] = region
        cursor = _align(region.end)
    if cursor > memory_bytes:
        raise PsconvError(f"memory image: the program needs {cursor} bytes (model "
                          f"{model_length}, maps {cursor - _align(model_length)}) but the board "
                          f"has {memory_bytes} bytes of memory")

    records = []
    for step, placed in zip(steps, addresses):
        spec = step.descriptor
        source = regions[step.input]
        if source.shape != (spec.in_channels, spec.in_height, spec.in_width):
            raise PsconvError(f"memory image: step {step.name!r} reads {step.input!r} of "
                              f"shape {source.shape}; its descriptor expects "
                              f"{(spec.in_channels, spec.in_height, spec.in_width)}")
        out = regions[step.layer]
        if isinstance(step, PoolStep):
            records.append({**placed, "fmap_address": source.address, "fmap_bytes": source.size,
                            "residual_address": 0, "output_address": out.address,
                            "plane_bytes": out.plane_bytes, "max_pool": MAX_POOL_2X2})
            continue
        offset = step.first_channel * out.plane_bytes
        residual_address = 0
        if step.residual is not None:
            residual = regions[step.residual]
            if residual.shape != out.shape:
                raise PsconvError(f"memory image: step {step.name!r} adds {step.residual!r} "
                                  f"of shape {residual.shape}; its output is {out.shape}")
            residual_address = residual.address + offset
        records.append({
            **placed, "fmap_address": source.address, "fmap_bytes": source.size,
            "residual_address": residual_address, "output_address": out.address + offset,
            "plane_bytes": out.plane_bytes, "max_pool": 0,
        })

    pool = None
    if pool_layer is not None:
        source = regions[output_layer]
        pool = {"pool_channels": source.shape[0], "pool_plane": source.plane_bytes,
                "pool_multiplier": int(pool_layer.multiplier.reshape(-1)[0]),
                "pool_shift": int(pool_layer.shift.reshape(-1)[0]),
                "pool_input": source.address, "pool_output": regions[pool_layer.name].address}
        limit = 1 << PROGRAM_HEADER_LAYOUT["pool_plane"].shape.width
        if source.plane_bytes >= limit or source.shape[0] >= 1 << 16:
            raise PsconvError(f"memory image: average pool {pool_layer.name!r} of "
                              f"{source.shape}; allowed: planes under {limit} bytes and under "
                              f"65536 channels")
        output_layer = pool_layer.name
    input_map = regions[INPUT_REGION]
    readers = [k for k, step in enumerate(steps)
               if INPUT_REGION in (step.input, step.residual)]
    input_region = {"input_address": input_map.address, "input_bytes": input_map.reserved,
                    "input_steps": max(readers) + 1 if readers else 0}
    program_image = program_header(config_hash(config), len(steps), pool, input_region) + b"".join(
        step_record(config, step.descriptor, **r) for step, r in zip(steps, records))
    return MemoryImage(memory_bytes=memory_bytes, model_bytes=program_image + bytes(tables),
                       regions=regions, output_layer=output_layer, program_bytes=program_bytes,
                       step_names=[s.name for s in steps], records=records,
                       tables=table_rows, pool=pool, input_steps=input_region["input_steps"])
