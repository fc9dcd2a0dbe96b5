"""A pure-Python stand-in for the board's command processor, for link-layer tests.

It implements the command table of psconv.protocol on byte buffers, with state that makes
a duplicated or lost command visible: every WRITE_* appends its payload (so a write applied
twice shows), READ_OUTPUT consumes output bytes (so a replayed read must not consume twice),
and READ_COUNTERS reports how many times each command was executed.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter

from psconv.protocol.codes import Command, NakReason
from psconv.protocol.frame import Response
from psconv.sim.device_link import DeviceLink

WRITE_COMMANDS = (Command.WRITE_LAYER, Command.WRITE_MASKS, Command.WRITE_QUANT,
                  Command.WRITE_WEIGHTS, Command.WRITE_FMAP, Command.WRITE_RESIDUAL)
LAYER_BYTES = 16          # WRITE_LAYER must carry exactly this many bytes (else BAD_LENGTH)
OUTPUT_BYTES = 700        # bytes a START produces
BUSY_POLLS = 2            # READ_STATUS polls a START stays busy for
IDENTITY = b"psconv-reference-device v1\x00"


def expected_output(memories: dict[int, bytes]) -> bytes:
    """What START produces from the written buffers: a hash stream (any write error shows)."""
    seed = hashlib.sha256(b"".join(struct.pack("<I", len(memories[c])) + bytes(memories[c])
                                   for c in WRITE_COMMANDS)).digest()
    out = bytearray()
    while len(out) < OUTPUT_BYTES:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:OUTPUT_BYTES])


def encode_counters(executed: Counter) -> bytes:
    return b"".join(struct.pack("<I", executed[c]) for c in Command)


class ReferenceDevice:
    """Command model: ``handle(code, payload) -> Response``; ``link`` is its DeviceLink."""

    def __init__(self, inter_byte_timeout_s: float = 0.005):
        self.memories = {c: bytearray() for c in WRITE_COMMANDS}
        self.executed: Counter = Counter()   # command -> times executed (ACK/DATA)
        self.output = b""
        self.output_pos = 0
        self.started = False
        self.busy_polls = 0
        self.link = DeviceLink(self.handle, inter_byte_timeout_s=inter_byte_timeout_s)

    def handle(self, code: int, payload: bytes) -> Response:
        try:
            command = Command(code)
        except ValueError:
            return Response.nak(NakReason.UNKNOWN_COMMAND)
        busy = self.busy_polls > 0
        if command in WRITE_COMMANDS:
            if busy:
                return Response.nak(NakReason.BUSY)
            if command == Command.WRITE_LAYER and len(payload) != LAYER_BYTES:
                return Response.nak(NakReason.BAD_LENGTH)
            self.memories[command] += payload
            response = Response.ack()
        elif command == Command.START:
            if busy:
                return Response.nak(NakReason.BUSY)
            self.output = expected_output(self.memories)
            self.output_pos = 0
            self.started = True
            self.busy_polls = BUSY_POLLS
            response = Response.ack()
        elif command == Command.READ_OUTPUT:
            if len(payload) != 2:
                return Response.nak(NakReason.BAD_LENGTH)
            if not self.started:
                return Response.nak(NakReason.BAD_STATE)
            (max_bytes,) = struct.unpack("<H", payload)
            take = 0 if busy else min(max_bytes, len(self.output) - self.output_pos)
            response = Response.data(self.output[self.output_pos:self.output_pos + take])
            self.output_pos += take
        elif command == Command.READ_STATUS:
            done = self.started and not busy
            response = Response.data(bytes([int(busy), int(done)]))
            if busy:
                self.busy_polls -= 1
        elif command == Command.READ_COUNTERS:
            response = Response.data(encode_counters(self.executed))
        else:
            response = Response.data(IDENTITY)
        self.executed[command] += 1
        return response
