"""Command, status and NAK codes: 8-bit enums the gateware uses as shapes and the host as ints."""

from __future__ import annotations

from amaranth.lib import enum


class Command(enum.IntEnum, shape=8):
    """Host -> device ``code``. The gateware command processor implements these."""
    IDENTIFY = 0x01        # -> DATA: engine identity blob
    WRITE_LAYER = 0x02     # layer registers
    WRITE_MASKS = 0x03     # P-entry mask table
    WRITE_QUANT = 0x04     # bias / requantization tables
    WRITE_WEIGHTS = 0x05   # packed nonzero weights
    WRITE_FMAP = 0x06      # input feature map
    WRITE_RESIDUAL = 0x07  # residual feature map
    START = 0x08           # start the layer
    READ_OUTPUT = 0x09     # payload u16 LE max bytes -> DATA with 0..max output bytes
    READ_COUNTERS = 0x0A   # -> DATA: performance counters
    READ_STATUS = 0x0B     # -> DATA: busy / done flags
    # resident mode (boards with memory; psconv.protocol.memory): others answer UNKNOWN_COMMAND
    WRITE_MEM = 0x0C       # address u32, data -> ACK
    READ_MEM = 0x0D        # address u32, length u16 -> DATA
    CRC_MEM = 0x0E         # address u32, length u32 -> DATA: CRC-32 u32
    CHECK_MODEL = 0x0F     # address u32, length u32, crc u32 -> ACK (model valid) or NAK MODEL_CRC
    INFER = 0x10           # program address u32 -> ACK (running), NAK NO_MODEL / BUSY
    RUN_STATUS = 0x11      # -> DATA: the resident runner's status
    ABORT = 0x12           # none -> ACK; then engine, processor and runner return to idle


class Status(enum.IntEnum, shape=8):
    """Device -> host ``code``."""
    ACK = 0x00   # no payload
    NAK = 0x01   # payload: one NakReason byte
    DATA = 0x02  # payload: data


class NakReason(enum.IntEnum, shape=8):
    """The one payload byte of a NAK."""
    BAD_CRC = 0x01          # CRC mismatch (length field was plausible)
    BAD_LENGTH = 0x02       # len > MAX_PAYLOAD, or wrong for the command
    UNKNOWN_COMMAND = 0x03
    BUSY = 0x04
    BAD_STATE = 0x05        # e.g. READ_OUTPUT before START
    OVERFLOW = 0x06
    TIMEOUT = 0x07          # frame truncated: inter-byte timeout on the device
    MODEL_CRC = 0x08        # CHECK_MODEL: the region's CRC-32 differs from the host's
    NO_MODEL = 0x09         # INFER: no checked model in memory (never checked, reset, or overwritten)
    BAD_DESCRIPTOR = 0x0A   # WRITE_LAYER: a second NAK byte is the broken rule's index in
                            # psconv.protocol.descriptor.DESCRIPTOR_RULES
    NO_TAPS = 0x0B          # WRITE_MASKS: a mask keeps none of its 9 taps (the address generator
                            # needs T >= 1); that mask and the rest of the payload were not taken


# NAK reasons that mean "your frame was damaged on the way": the host re-sends the same frame.
# BAD_LENGTH is here because the length field is not protected until the CRC arrives: a
# corrupted length above MAX_PAYLOAD is NAKed BAD_LENGTH before any CRC can be checked, and the
# host never sends such a frame itself. A genuine command-level BAD_LENGTH is stored by the
# device and replayed, so it repeats on every attempt and surfaces as LinkNak after the retries.
RETRYABLE_NAKS = frozenset({NakReason.BAD_CRC, NakReason.TIMEOUT, NakReason.BAD_LENGTH})


def code_name(enum_type, value: int) -> str:
    """``value``'s member name in ``enum_type``, or its hex for a code the enum lacks."""
    try:
        return enum_type(value).name
    except ValueError:
        return f"0x{value:02X}"
