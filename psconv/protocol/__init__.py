"""The wire protocol between the host and the board: the one description both sides import.

Side-free on purpose: this package imports neither the gateware (``psconv.hw``) nor the host
(``psconv.firmware``), only the configuration and Amaranth's ``lib`` (enums, layouts, CRC), so
the gateware uses these definitions as signal shapes and the host uses the same ones to encode
and decode bytes. docs/protocol.md describes the protocol for users.

* :mod:`.codes` — the command, status and NAK codes (8-bit ``amaranth.lib.enum`` enums).
* :mod:`.frame` — frame constants, the CRC, frame encoding and the frame parser.
* :mod:`.descriptor` — the layer descriptor and the quantization entry (WRITE_LAYER, WRITE_QUANT).
* :mod:`.beats` — how feature maps, weights and outputs are cut into the engine's stream beats.
* :mod:`.payloads` — every other payload layout (identity, status, counters) and its codecs.
"""
