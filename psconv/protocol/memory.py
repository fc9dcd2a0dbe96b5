"""Resident mode: the board holds the model in its memory and runs whole inferences itself.

Streaming every layer's weights and maps over a 3 Mbaud UART makes a board link-bound by two
orders of magnitude, so a board with memory keeps the compiled model there: the host loads a
*memory image* once, checks it, then per inference writes one image and reads the result back.

Commands (all little-endian; a NAK means nothing happened):

==================  ==================================================  ========================
command             payload                                             answer
==================  ==================================================  ========================
``WRITE_MEM``       :data:`MEM_ADDRESS_LAYOUT`, then 1.. data bytes     ACK
``READ_MEM``        :data:`MEM_READ_LAYOUT` (address, length <=         DATA: ``length`` bytes
                    the link's max payload)
``CRC_MEM``         :data:`MEM_REGION_LAYOUT`                           DATA: CRC-32 u32
``CHECK_MODEL``     :data:`MODEL_CHECK_LAYOUT` (region and its CRC-32)  ACK, or NAK MODEL_CRC
``INFER``           :data:`MEM_ADDRESS_LAYOUT` (the program's address)  ACK (it runs; poll
                                                                        ``RUN_STATUS``), NAK
                                                                        NO_MODEL / BUSY
``RUN_STATUS``      none                                                DATA: :data:`RUN_STATUS_LAYOUT`
==================  ==================================================  ========================

The model's validity (why a stale or damaged model never runs): ``CHECK_MODEL`` computes the
CRC-32 of the region on the device and, only if it equals the host's, marks the model valid
(a mismatch clears the mark); reset clears it, and so does any ``WRITE_MEM`` that touches the
checked region (the per-image input and the activations lie outside it). ``INFER`` refuses to
start without the mark, or with a program address outside the checked region (NAK NO_MODEL).
While a program runs the memory belongs to it: ``READ_MEM``, ``CRC_MEM`` and ``CHECK_MODEL``
are NAKed BUSY, ``RUN_STATUS`` answers, and ``WRITE_MEM`` is NAKed BUSY unless it lies inside
the header's input region and the program has finished its first ``input_steps`` steps (the
last that read the input): so the host sends the next image while this one computes. CRC-32 is ISO-HDLC (:data:`MEMORY_CRC`: ``binascii.crc32`` on the host,
``amaranth.lib.crc`` in gateware).

A WRITE_MEM, READ_MEM or CRC_MEM region must lie inside the board's memory (``memory_bytes``
in :data:`RUN_STATUS_LAYOUT`), else NAK BAD_LENGTH.

Memory image (laid out by :mod:`psconv.firmware.memory_image`; byte addresses)::

    program:  PROGRAM_HEADER_LAYOUT, then ``steps`` x step_record_layout(config)
    tables:   per engine step its masks (2 bytes each), quantization entries (13 bytes each)
              and weight words (tn bytes each), in the streams' beat order
    maps:     the input image and every layer's output, each a CHW int8 map

The device runs the steps in order. Step ``k`` (one engine invocation, :class:`.descriptor.
LayerSpec` in ``descriptor``) streams ``P`` masks from ``masks_address``, ``C_out`` entries from
``quant_address``, ``weight_bytes`` from ``weights_address`` and ``fmap_bytes`` (exactly
C_in x H x W) of CHW map from ``fmap_address`` (the device zero-pads the last ``tn``-byte beat) into the engine, then, while the engine
computes, gathers the residual (when the descriptor says so) from the CHW map at
``residual_address`` and scatters the output into the CHW map at ``output_address``: output
beat (y, xb, o) pixel r goes to ``output_address + o * plane_bytes + y * W_out + xb * tm + r``
for ``xb * tm + r < W_out`` (``plane_bytes`` = H_out * W_out; an output-channel tile's
addresses already include its first channel's offset; with the descriptor's ``pool`` the output
is the pooled map, H_out // 2 x W_out // 2 per channel, ``plane_bytes`` its plane). The residual
is read in the same order.
A step whose ``max_pool`` is not 0 is no engine step but a max pool (:data:`MAX_POOL_2X2`: 2x2
windows, stride 2, no padding, the golden model's ``maxpool2d_int``): the device reads the CHW map
of ``fmap_bytes`` at ``fmap_address`` whose shape the descriptor's ``in_channels``,
``in_height`` and ``in_width`` give, and writes the C x (H // 2) x (W // 2) map at
``output_address`` (contiguous, ``plane_bytes`` = (H // 2) x (W // 2); an odd last row or
column is dropped). Its descriptor is that of a 1x1 stride-2 layer with ``out_channels`` =
``in_channels``, period 1, no ReLU, no residual, no ``pool`` (it keeps the descriptor rules
like every step); the other addresses are 0.
After the last step, a header with ``pool_channels`` > 0 has the device average-pool a map
(ResNet's final pool), so an inference returns C bytes instead of the last C x H x W map.
"""

from __future__ import annotations

import binascii

from amaranth.hdl import unsigned
from amaranth.lib import data
from amaranth.lib.crc import catalog

from .descriptor import layer_descriptor_layout
from .payloads import encode_payload

MEMORY_CRC = catalog.CRC32_ISO_HDLC
"""The memory region CRC: CRC-32 as ``binascii.crc32`` (reflected 0x04C11DB7, init and xorout
0xFFFFFFFF)."""

MEM_ADDRESS_LAYOUT = data.StructLayout({"address": unsigned(32)})
MEM_READ_LAYOUT = data.StructLayout({"address": unsigned(32), "length": unsigned(16)})
MEM_REGION_LAYOUT = data.StructLayout({"address": unsigned(32), "length": unsigned(32)})
MODEL_CHECK_LAYOUT = data.StructLayout({"address": unsigned(32), "length": unsigned(32),
                                        "crc": unsigned(32)})

RUN_STATUS_LAYOUT = data.StructLayout({
    "running": unsigned(8),       # 1 from INFER until the last step's output is in memory
    "done": unsigned(8),          # 1 once an inference finished (cleared by INFER)
    "model_valid": unsigned(8),   # 1 after a matching CHECK_MODEL, until reset or a write into it
    "steps_done": unsigned(16),   # engine steps finished in the current/last inference
    "cycles": unsigned(48),       # device cycles from INFER to done (or so far)
    "memory_reads": unsigned(48),   # bytes the runner read from memory in that inference
    "memory_writes": unsigned(48),  # bytes the runner wrote to memory in that inference
    "memory_bytes": unsigned(32),   # the board's memory size
    "bad_rule": unsigned(8),        # NO_BAD_RULE, or the rule of DESCRIPTOR_RULES that the
                                    # descriptor of step steps_done broke (BAD_MAX_POOL,
                                    # BAD_MASKS: its record or its masks): the run stopped there
})
"""``RUN_STATUS``' answer (28 bytes)."""

MAX_POOL_2X2 = 2
"""``max_pool`` of a 2x2 stride-2 max-pool step (0: an engine step)."""

NO_BAD_RULE = 0xFF
"""``bad_rule`` of a run whose step records all kept the descriptor rules."""

BAD_MAX_POOL = 0xFE
"""``bad_rule`` of a run stopped at a step record whose ``max_pool`` is neither 0 nor
:data:`MAX_POOL_2X2`."""

BAD_MASKS = 0xFD
"""``bad_rule`` of a run stopped at a step whose mask table has a mask that keeps none of its 9
taps (the engine's address generator needs every table to keep some: T >= 1)."""

PROGRAM_MAGIC = b"PSPG"
PROGRAM_VERSION = 4
"""4: the step record's descriptor has the ``pool`` field (:mod:`.descriptor`)."""
PROGRAM_HEADER_LAYOUT = data.StructLayout({
    "magic": unsigned(32), "version": unsigned(8), "steps": unsigned(16),
    "config_hash": unsigned(32),
    # the whole-map average pool after the last step (0 channels: none), the golden model's
    # global_avgpool_int: each of pool_channels planes of pool_plane int8 bytes from pool_input
    # summed, times pool_multiplier, rounded right shift by pool_shift, saturated to int8, one
    # byte per channel at pool_output
    "pool_channels": unsigned(16), "pool_plane": unsigned(16), "pool_multiplier": unsigned(32),
    "pool_shift": unsigned(8), "pool_input": unsigned(32), "pool_output": unsigned(32),
    # the input image's region; no step after the first input_steps reads it, so from then on
    # the host may write the next image there while the program still runs
    "input_address": unsigned(32), "input_bytes": unsigned(32), "input_steps": unsigned(16),
})
"""The program header at the address ``INFER`` names; step records follow it directly."""


def step_record_layout(config) -> data.StructLayout:
    """One engine step of a resident program (see the module docstring); the descriptor first,
    in a whole number of bytes, then the addresses and sizes."""
    descriptor = layer_descriptor_layout(config)
    return data.StructLayout({
        "descriptor": descriptor,
        "descriptor_pad": unsigned(-descriptor.size % 8),
        "masks_address": unsigned(32),
        "quant_address": unsigned(32),
        "weights_address": unsigned(32),
        "weight_bytes": unsigned(32),
        "fmap_address": unsigned(32),
        "fmap_bytes": unsigned(32),
        "residual_address": unsigned(32),
        "output_address": unsigned(32),
        "plane_bytes": unsigned(32),
        "max_pool": unsigned(8),
    })


def memory_crc(data_bytes: bytes) -> int:
    """:data:`MEMORY_CRC` of ``data_bytes`` (what ``CRC_MEM`` and ``CHECK_MODEL`` compute)."""
    return binascii.crc32(data_bytes) & 0xFFFFFFFF


def program_header(config_hash: int, steps: int, pool: dict | None = None,
                   input_region: dict | None = None) -> bytes:
    """The bytes of :data:`PROGRAM_HEADER_LAYOUT` for a program of ``steps`` step records;
    ``pool``: its ``pool_*`` fields (None: no pool on the device); ``input_region``: its
    ``input_*`` fields (None: no write while it runs)."""
    return encode_payload(PROGRAM_HEADER_LAYOUT, {
        "magic": int.from_bytes(PROGRAM_MAGIC, "little"), "version": PROGRAM_VERSION,
        "steps": steps, "config_hash": config_hash, **(pool or {}), **(input_region or {})})


def step_record(config, spec, **addresses) -> bytes:
    """The bytes of one :func:`step_record_layout` item: ``spec`` is the step's
    :class:`~.descriptor.LayerSpec`; ``addresses`` its other fields (masks_address,
    quant_address, weights_address, weight_bytes, fmap_address, fmap_bytes, residual_address,
    output_address, plane_bytes, and max_pool for a pool step)."""
    layout = step_record_layout(config)
    descriptor = layout["descriptor"].shape.from_bits(spec.encode(config))
    return encode_payload(layout, {"descriptor": descriptor, **addresses})
