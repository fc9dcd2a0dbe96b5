"""Payload layouts of the commands and replies, and the host's encoders and decoders for them.

Each fixed-format payload is one ``data.StructLayout``: the gateware builds the reply as a
signal of that layout, the host encodes and decodes bytes with the same layout (fields from bit
0 upward, bytes little-endian). Variable-length payloads (masks, quantization entries, beats) are
sequences of fixed-size items; :mod:`.descriptor` and :mod:`.beats` define the items.

==================  =================================================  =======================
command             payload                                            answer
==================  =================================================  =======================
``IDENTIFY``        none                                               DATA: :data:`IDENTITY_LAYOUT`
``WRITE_LAYER``     the layer descriptor, exactly                      ACK
                    ``ceil(bits / 8)`` bytes (:func:`layer_payload`)
``START``           none                                               ACK
``WRITE_MASKS``     2 bytes per mask (9 bits used)                     ACK
``WRITE_QUANT``     13 bytes per 98-bit quantization entry             ACK
``WRITE_WEIGHTS``   ``tn`` bytes per ``weight_in`` beat                ACK
``WRITE_FMAP``      ``tn`` bytes per ``fmap_in`` beat                  ACK
``WRITE_RESIDUAL``  ``tm`` bytes per ``residual_in`` beat              ACK
``READ_OUTPUT``     u16: at most this many bytes                       DATA: whole ``tm``-byte
                                                                       output beats, maybe none
``READ_COUNTERS``   none                                               DATA: :data:`COUNTERS_LAYOUT`
``READ_STATUS``     none                                               DATA: :data:`STATUS_LAYOUT`
==================  =================================================  =======================
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

from amaranth.hdl import unsigned
from amaranth.lib import data

from psconv.errors import PsconvError
from psconv.families import DENSE_MASK

from .beats import fmap_beat_bytes
from .codes import Command
from .descriptor import QUANT_ENTRY_LAYOUT, layer_descriptor_layout
from .frame import MAX_PAYLOAD

OUTPUT_FIFO_DEPTH = 256
"""Output beats a board buffers between the engine and ``READ_OUTPUT`` by default (also the
residual window of the deadlock rule); the board reports its own value in ``IDENTIFY``."""

MASK_BYTES = 2
QUANT_BYTES = math.ceil(QUANT_ENTRY_LAYOUT.size / 8)   # 98 bits -> 13 bytes

DATA_COMMANDS = (Command.WRITE_MASKS, Command.WRITE_QUANT, Command.WRITE_WEIGHTS,
                 Command.WRITE_FMAP, Command.WRITE_RESIDUAL)

IDENTITY_MAGIC = b"PSCV"
IDENTITY_VERSION = 2
"""The protocol's version, in ``IDENTIFY``'s answer: 2 added the layer descriptor's ``pool``
field (:mod:`.descriptor`)."""
IDENTITY_LAYOUT = data.StructLayout({
    "magic": unsigned(32), "version": unsigned(8), "tm": unsigned(8), "tn": unsigned(8),
    "max_period": unsigned(8), "acc_width": unsigned(8), "data_width": unsigned(8),
    "max_in_channels": unsigned(16), "max_out_channels": unsigned(16),
    "max_height": unsigned(16), "max_width": unsigned(16),
    "fmap_depth": unsigned(32), "weight_depth": unsigned(32),
    "output_fifo_depth": unsigned(16), "max_payload": unsigned(16), "config_hash": unsigned(32),
})
"""``IDENTIFY``'s answer: what engine and link the board was built with (34 bytes)."""

STATUS_LAYOUT = data.StructLayout({
    "busy": unsigned(8), "done": unsigned(8), "output_beats": unsigned(16),
    "residual_window": unsigned(16),
})
"""``READ_STATUS``'s answer: busy and done flags (0 or 1), output beats waiting, and residual
beats the window still admits (saturated at 0xFFFF)."""

COUNTER_WIDTH = 48
"""Bits of each engine performance counter on the wire."""

ENGINE_COUNTERS = ("busy_cycles", "stall_cycles", "idle_cycles", "macs")

LINK_COUNTERS = data.StructLayout({
    "commands": 16,        # fresh frames handed to the command processor
    "replays": 16,         # duplicates answered from the stored response
    "crc_errors": 16,      # NAK BAD_CRC sent
    "length_errors": 16,   # NAK BAD_LENGTH sent (len > max_payload)
    "timeouts": 16,        # NAK TIMEOUT sent (truncated frames)
})
"""The link layer's wrapping 16-bit event counts."""

COUNTERS_LAYOUT = data.StructLayout({
    **{name: unsigned(COUNTER_WIDTH) for name in ENGINE_COUNTERS},
    "link": LINK_COUNTERS,
})
"""``READ_COUNTERS``' answer: the engine's four counters, then the link's five."""

IDENTITY_BYTES = IDENTITY_LAYOUT.size // 8
STATUS_BYTES = STATUS_LAYOUT.size // 8
COUNTERS_BYTES = COUNTERS_LAYOUT.size // 8


def layout_bytes(layout: data.StructLayout) -> int:
    """Bytes of one ``layout`` item on the wire or in memory (its bits rounded up)."""
    return -(-layout.size // 8)


def encode_payload(layout: data.StructLayout, fields: dict) -> bytes:
    """``fields`` as the bytes of ``layout`` (little-endian, field order from bit 0)."""
    return layout.const(fields).as_value().value.to_bytes(layout_bytes(layout), "little")


def decode_payload(layout: data.StructLayout, payload: bytes, what: str) -> data.Const:
    """The fields of ``payload``, one ``layout`` item; ``what`` names the answer in the error
    when its length is wrong."""
    if len(payload) != layout_bytes(layout):
        raise PsconvError(f"{what} answer has {len(payload)} bytes; expected "
                          f"{layout_bytes(layout)}")
    return layout.from_bits(int.from_bytes(payload, "little"))


def descriptor_bytes(config) -> int:
    """``WRITE_LAYER`` payload length: the descriptor's bits rounded up to whole bytes."""
    return math.ceil(layer_descriptor_layout(config).size / 8)


def beat_bytes(config, command) -> int:
    """Bytes per beat of a data command's payload."""
    return {Command.WRITE_MASKS: MASK_BYTES, Command.WRITE_QUANT: QUANT_BYTES,
            Command.WRITE_WEIGHTS: config.tn, Command.WRITE_FMAP: fmap_beat_bytes(config),
            Command.WRITE_RESIDUAL: config.tm}[Command(command)]


def smallest_max_payload(config) -> int:
    """The smallest link payload limit a board for ``config`` works with: every DATA reply,
    the layer descriptor and one beat of each data command must fit one frame."""
    return max(IDENTITY_BYTES, COUNTERS_BYTES, STATUS_BYTES, descriptor_bytes(config),
               *(beat_bytes(config, c) for c in DATA_COMMANDS))


def layer_payload(config, spec) -> bytes:
    """``WRITE_LAYER`` payload of a :class:`~.descriptor.LayerSpec`."""
    return spec.encode(config).to_bytes(descriptor_bytes(config), "little")


def mask_payload(masks) -> bytes:
    return b"".join(int(m).to_bytes(MASK_BYTES, "little") for m in masks)


def describe_masks_without_taps(table: bytes, where: str = "of the payload") -> str:
    """For an error message: the first mask of ``table`` (``MASK_BYTES`` each, as in a
    ``WRITE_MASKS`` payload or a resident step's table) whose 9 tap bits are all 0, and what is
    allowed (the board's NAK NO_TAPS and ``bad_rule`` BAD_MASKS)."""
    masks = [int.from_bytes(table[k:k + MASK_BYTES], "little")
             for k in range(0, len(table) - MASK_BYTES + 1, MASK_BYTES)]
    empty = [q for q, mask in enumerate(masks) if mask & DENSE_MASK == 0]
    found = (f"mask {empty[0]} {where} is 0x{masks[empty[0]]:04X}" if empty
             else f"a mask {where} keeps none of its 9 taps")
    return f"{found}; allowed: a mask that keeps at least one of its 9 taps (1..{DENSE_MASK})"


def quant_payload(entries) -> bytes:
    """``WRITE_QUANT`` payload of :func:`~.descriptor.encode_quant_entry` integers."""
    return b"".join(int(e).to_bytes(QUANT_BYTES, "little") for e in entries)


def beats_payload(beats, nbytes: int) -> bytes:
    """Beat integers (element 0 in bits 7:0) as ``nbytes`` little-endian bytes each."""
    return b"".join(int(b).to_bytes(nbytes, "little") for b in beats)


def output_beats(config, payload: bytes) -> list[int]:
    """``READ_OUTPUT`` data back to ``out`` beat integers (``tm`` bytes each)."""
    tm = config.tm
    if len(payload) % tm:
        raise PsconvError(f"READ_OUTPUT answer of {len(payload)} bytes is not whole {tm}-byte beats")
    return [int.from_bytes(payload[k:k + tm], "little") for k in range(0, len(payload), tm)]


def read_output_payload(max_bytes: int) -> bytes:
    """READ_OUTPUT's payload: the u16 LE maximum number of output bytes to return."""
    if not 0 <= max_bytes <= MAX_PAYLOAD:
        raise PsconvError(f"READ_OUTPUT max_bytes {max_bytes} is out of range: allowed 0..{MAX_PAYLOAD}")
    return struct.pack("<H", max_bytes)


def config_hash(config) -> int:
    """32-bit hash of ``config.to_json()`` (canonical JSON, SHA-256, first 4 bytes LE)."""
    text = json.dumps(config.to_json(), sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def identity_fields(config, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                    max_payload: int = MAX_PAYLOAD) -> dict:
    """What ``IDENTIFY`` reports for an engine built from ``config`` (``magic`` as bytes)."""
    return {
        "magic": IDENTITY_MAGIC, "version": IDENTITY_VERSION, "tm": config.tm, "tn": config.tn,
        "max_period": config.max_period, "acc_width": config.acc_width,
        "data_width": config.data_width, "max_in_channels": config.max_in_channels,
        "max_out_channels": config.max_out_channels, "max_height": config.max_height,
        "max_width": config.max_width, "fmap_depth": config.fmap_depth,
        "weight_depth": config.weight_depth, "output_fifo_depth": output_fifo_depth,
        "max_payload": max_payload, "config_hash": config_hash(config),
    }


def identity_const(config, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                   max_payload: int = MAX_PAYLOAD) -> data.Const:
    """:func:`identity_fields` as a constant of :data:`IDENTITY_LAYOUT` (the gateware's reply)."""
    fields = identity_fields(config, output_fifo_depth, max_payload)
    return IDENTITY_LAYOUT.const({**fields, "magic": int.from_bytes(fields["magic"], "little")})


def identity_blob(config, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                  max_payload: int = MAX_PAYLOAD) -> bytes:
    """The bytes of ``IDENTIFY``'s answer for ``config``."""
    return (identity_const(config, output_fifo_depth, max_payload).as_value().value
            .to_bytes(IDENTITY_BYTES, "little"))


def parse_identity(payload: bytes) -> dict:
    if len(payload) != IDENTITY_BYTES or not payload.startswith(IDENTITY_MAGIC):
        raise PsconvError(f"IDENTIFY answer {payload[:40].hex()} is not a psconv engine identity "
                          f"({IDENTITY_BYTES} bytes starting with {IDENTITY_MAGIC!r}): is this "
                          f"board running the psconv bitstream?")
    view = decode_payload(IDENTITY_LAYOUT, payload, "IDENTIFY")
    fields = {name: view[name] for name, _ in IDENTITY_LAYOUT}
    fields["magic"] = IDENTITY_MAGIC
    return fields


def parse_status(payload: bytes) -> dict:
    view = decode_payload(STATUS_LAYOUT, payload, "READ_STATUS")
    return {name: view[name] for name, _ in STATUS_LAYOUT}


def parse_counters(payload: bytes) -> dict:
    """``READ_COUNTERS`` data: the engine counters by name, the link's as ``link_<name>``."""
    view = decode_payload(COUNTERS_LAYOUT, payload, "READ_COUNTERS")
    values = {name: view[name] for name in ENGINE_COUNTERS}
    values.update({f"link_{name}": view.link[name] for name, _ in LINK_COUNTERS})
    return values
