"""Command processor: the board's answer to every host command, between the link and the engine.

:class:`CommandProcessor` takes fresh, CRC-checked commands from
:class:`psconv.hw.framing.LinkLayer` (``command`` / ``command_payload``), executes them on the
:class:`psconv.hw.engine.PeriodicSparseEngine` and answers each exactly once (``reply`` /
``reply_payload``): ACK, DATA, or NAK with one :class:`~psconv.firmware.protocol.NakReason` byte.
A NAK always means *nothing happened*: every check is made before the first side effect.

Payload layouts (all little-endian; docs/protocol.md section 8 has the tables). This module is
their single description: the gateware below and the host helpers next to it
(:func:`layer_payload`, :func:`mask_payload`, :func:`quant_payload`, :func:`beats_payload`,
:func:`output_beats`, :func:`identity_blob`, :func:`parse_identity`, :func:`parse_status`,
:func:`parse_counters`, used by :mod:`psconv.firmware.driver`) are the only code that knows the
byte positions.

==================  =================================================  =======================
command             payload                                            answer
==================  =================================================  =======================
``IDENTIFY``        none                                               DATA: identity (34 B)
``WRITE_LAYER``     the ``layer`` descriptor, exactly                  ACK
                    ``ceil(bits / 8)`` bytes (:func:`layer_payload`)
``START``           none                                               ACK
``WRITE_MASKS``     2 bytes per mask (9 bits used)                     ACK
``WRITE_QUANT``     13 bytes per 98-bit quantization entry             ACK
``WRITE_WEIGHTS``   ``tn`` bytes per ``weight_in`` beat                ACK
``WRITE_FMAP``      ``tn`` bytes per ``fmap_in`` beat                  ACK
``WRITE_RESIDUAL``  ``tm`` bytes per ``residual_in`` beat              ACK
``READ_OUTPUT``     u16: at most this many bytes                       DATA: whole ``tm``-byte
                                                                       output beats, maybe none
``READ_COUNTERS``   none                                               DATA: 4 x u48 engine
                                                                       counters, 5 x u16 link
``READ_STATUS``     none                                               DATA: busy u8, done u8,
                                                                       output beats u16,
                                                                       residual window u16
==================  =================================================  =======================

Rules (each refusal is a NAK, with no side effect):

* ``WRITE_LAYER`` / ``START`` while the engine is busy: BUSY. ``START`` before any
  ``WRITE_LAYER``: BAD_STATE. A fixed-size payload of the wrong length: BAD_LENGTH.
* ``WRITE_*`` data while the engine is not busy (before ``START`` or after ``done``):
  BAD_STATE. A payload that is not a whole number of beats: BAD_LENGTH. The mask table comes
  first: any other data before all P masks are in is BAD_STATE.
* **Budgets.** From the descriptor and the mask table the processor derives how many beats each
  stream of this layer takes (masks P, quant C_out, fmap ceil(C*H*W / tn), weights
  C_out * ceil(ceil(C_in / P) * T / tn), residual H_out * ceil(W_out / tm) * C_out or 0); a write
  beyond what is left is OVERFLOW. The engine would never accept those beats, and the processor,
  which blocks while it pushes a payload into a stream, would hang.
* **Residual window (deadlock rule).** The engine consumes residual beats in lockstep with its
  outputs, and outputs wait in a :attr:`output_fifo_depth`-beat FIFO until ``READ_OUTPUT``
  takes them. A residual beat the engine cannot take would block the processor, and with it the
  ``READ_OUTPUT`` that would make room. So residual beats accepted since ``START`` may exceed
  output beats read since ``START`` by at most ``output_fifo_depth`` (the *window*); a
  ``WRITE_RESIDUAL`` beyond the window is OVERFLOW. Inside the window no push can block for
  good: an engine holding a residual beat back has at least ``output_fifo_depth`` unread outputs
  ahead of it, which is more than the window allows.
* ``READ_OUTPUT`` before the first ``START``: BAD_STATE. ``START`` empties the output FIFO.

Timing: one payload byte per cycle in; a beat is pushed to its engine stream the cycle after its
last byte and waits there for ``ready`` (the ACK goes out once every beat is in the engine).
Budgets take ~15 serial steps after the last mask (136 cycles for the iCEBreaker configuration,
209 for the default one); data writes arriving meanwhile wait for them. Replies stream one byte
per cycle.

Size (the iCE40UP5K has 5,280 logic cells, so every flip-flop and LUT here counts): reply data
and payload bytes share one byte shift register (a command never needs both), loaded with one
2-way choice per bit; the weight, fmap and residual budgets are checked with one subtractor
against a counter selected a cycle ahead and charged for the whole write at the check (the
pushes that follow cannot be stopped, so the end state is the one per-beat counting gives);
:class:`LayerBudget` is a single shift-add register.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.firmware.protocol import MAX_PAYLOAD, Command, NakReason, Status

from .arith import SerialDivider
from .block_ram import BlockRamFIFO
from .counters import COUNTER_WIDTH
from .engine import PeriodicSparseEngine
from .framing import FRAME_HEADER, LINK_COUNTERS, PAYLOAD_BYTE, REPLY_HEADER
from .layer import MASK_BITS, QUANT_ENTRY_LAYOUT, fmap_beat_bytes, layer_descriptor_layout, output_size_value

OUTPUT_FIFO_DEPTH = 256
"""Output beats buffered between the engine and ``READ_OUTPUT`` (also the residual window)."""

MASK_BYTES = 2
QUANT_BYTES = math.ceil(QUANT_ENTRY_LAYOUT.size / 8)   # 98 bits -> 13 bytes

IDENTITY_MAGIC = b"PSCV"
IDENTITY_VERSION = 1
IDENTITY_FORMAT = "<4sBBBBBBHHHHIIHHI"
IDENTITY_FIELDS = ("magic", "version", "tm", "tn", "max_period", "acc_width", "data_width",
                   "max_in_channels", "max_out_channels", "max_height", "max_width",
                   "fmap_depth", "weight_depth", "output_fifo_depth", "max_payload", "config_hash")
IDENTITY_BYTES = struct.calcsize(IDENTITY_FORMAT)

ENGINE_COUNTERS = ("busy_cycles", "stall_cycles", "idle_cycles", "macs")
COUNTER_BYTES = COUNTER_WIDTH // 8
LINK_COUNTER_NAMES = tuple(name for name, _ in LINK_COUNTERS)
COUNTERS_BYTES = len(ENGINE_COUNTERS) * COUNTER_BYTES + 2 * len(LINK_COUNTER_NAMES)

STATUS_FORMAT = "<BBHH"
STATUS_FIELDS = ("busy", "done", "output_beats", "residual_window")
STATUS_BYTES = struct.calcsize(STATUS_FORMAT)

DATA_COMMANDS = (Command.WRITE_MASKS, Command.WRITE_QUANT, Command.WRITE_WEIGHTS,
                 Command.WRITE_FMAP, Command.WRITE_RESIDUAL)
WIDE_BUDGETS = (Command.WRITE_WEIGHTS, Command.WRITE_FMAP, Command.WRITE_RESIDUAL)


# --- the formats, host side ----------------------------------------------------------------------

def descriptor_bytes(config) -> int:
    """``WRITE_LAYER`` payload length: the descriptor's bits rounded up to whole bytes."""
    return math.ceil(layer_descriptor_layout(config).size / 8)


def beat_bytes(config, command) -> int:
    """Bytes per beat of a data command's payload."""
    return {Command.WRITE_MASKS: MASK_BYTES, Command.WRITE_QUANT: QUANT_BYTES,
            Command.WRITE_WEIGHTS: config.tn, Command.WRITE_FMAP: fmap_beat_bytes(config),
            Command.WRITE_RESIDUAL: config.tm}[Command(command)]


def layer_payload(config, spec) -> bytes:
    """``WRITE_LAYER`` payload of a :class:`psconv.hw.layer.LayerSpec`."""
    return spec.encode(config).to_bytes(descriptor_bytes(config), "little")


def mask_payload(masks) -> bytes:
    return b"".join(int(m).to_bytes(MASK_BYTES, "little") for m in masks)


def quant_payload(entries) -> bytes:
    """``WRITE_QUANT`` payload of :func:`psconv.hw.layer.encode_quant_entry` integers."""
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


def config_hash(config) -> int:
    """32-bit hash of ``config.to_json()`` (canonical JSON, SHA-256, first 4 bytes LE)."""
    text = json.dumps(config.to_json(), sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def identity_fields(config, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                    max_payload: int = MAX_PAYLOAD) -> dict:
    """What ``IDENTIFY`` reports for an engine built from ``config``."""
    return {
        "magic": IDENTITY_MAGIC, "version": IDENTITY_VERSION, "tm": config.tm, "tn": config.tn,
        "max_period": config.max_period, "acc_width": config.acc_width,
        "data_width": config.data_width, "max_in_channels": config.max_in_channels,
        "max_out_channels": config.max_out_channels, "max_height": config.max_height,
        "max_width": config.max_width, "fmap_depth": config.fmap_depth,
        "weight_depth": config.weight_depth, "output_fifo_depth": output_fifo_depth,
        "max_payload": max_payload, "config_hash": config_hash(config),
    }


def identity_blob(config, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                  max_payload: int = MAX_PAYLOAD) -> bytes:
    fields = identity_fields(config, output_fifo_depth, max_payload)
    return struct.pack(IDENTITY_FORMAT, *(fields[name] for name in IDENTITY_FIELDS))


def parse_identity(payload: bytes) -> dict:
    if len(payload) != IDENTITY_BYTES or not payload.startswith(IDENTITY_MAGIC):
        raise PsconvError(f"IDENTIFY answer {payload[:40].hex()} is not a psconv engine identity "
                          f"({IDENTITY_BYTES} bytes starting with {IDENTITY_MAGIC!r}): is this "
                          f"board running the psconv bitstream?")
    return dict(zip(IDENTITY_FIELDS, struct.unpack(IDENTITY_FORMAT, payload)))


def parse_status(payload: bytes) -> dict:
    if len(payload) != STATUS_BYTES:
        raise PsconvError(f"READ_STATUS answer has {len(payload)} bytes; expected {STATUS_BYTES}")
    return dict(zip(STATUS_FIELDS, struct.unpack(STATUS_FORMAT, payload)))


def parse_counters(payload: bytes) -> dict:
    """``READ_COUNTERS`` data: the engine's four u48 counters, then the link's five u16."""
    if len(payload) != COUNTERS_BYTES:
        raise PsconvError(f"READ_COUNTERS answer has {len(payload)} bytes; expected {COUNTERS_BYTES}")
    values = {}
    offset = 0
    for name in ENGINE_COUNTERS:
        values[name] = int.from_bytes(payload[offset:offset + COUNTER_BYTES], "little")
        offset += COUNTER_BYTES
    for name in LINK_COUNTER_NAMES:
        values[f"link_{name}"] = int.from_bytes(payload[offset:offset + 2], "little")
        offset += 2
    return values


# --- gateware ------------------------------------------------------------------------------------

def _times_constant(value, constant: int):
    """``value * constant`` as a sum of shifts: no multiplier cell (the DSPs belong to the engine)."""
    terms = [value << k for k in range(constant.bit_length()) if (constant >> k) & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class LayerBudget(wiring.Component):
    """How many beats each engine stream of a layer takes, from its descriptor and mask table.

    Inputs (held from ``start`` until ``done``): ``descriptor`` fields in_channels, out_channels,
    in_height, in_width, stride, residual, period, and ``taps`` (T, kept taps of the P masks).
    After a ``start`` pulse it computes

    * ``fmap_beats`` = ceil(C_in * H * W / tn)
    * ``residual_beats`` = H_out * ceil(W_out / tm) * C_out if ``residual`` else 0
    * ``weight_beats`` = C_out * ceil(ceil(C_in / P) * T / tn)

    (the formulas of :meth:`psconv.hw.layer.LayerSpec.output_beats`,
    :func:`psconv.hw.layer.cycles_per_output_channel` and :func:`psconv.hw.layer.fmap_beats`)
    and hands each out once, in that order: in the cycle ``store_fmap`` / ``store_residual`` /
    ``store_weights`` is high, ``value`` is that stream's beats (nothing holds them here: the
    consumer's counters are the only copy). ``done`` rises after the last one and holds until the
    next ``start``; a ``start`` during a run restarts it. ``width`` bits hold every product the
    descriptor's field widths allow, so nothing wraps.

    How (small on purpose: this runs once per layer): one ``width``-bit register ``q`` holds the
    running value, and a shift-add multiplier built around it (``{hi, q}`` shifts right one bit a
    cycle while ``hi`` adds the small factor, ``width`` cycles per product) computes
    ``q * f + c``; ceil(x / 2**k) is that with ``f`` = 1, ``c`` = 2**k - 1 and k more shifts.
    A :class:`~psconv.hw.arith.SerialDivider` does ceil(C_in / P) (a narrow one) and, only for a
    ``tn`` or ``tm`` that is not a power of two, the divisions by them. About 7 ``width``-cycle
    products in all: ~150 cycles for the small configurations, ~250 for the default one.
    """

    def __init__(self, config):
        self.config = config
        self.layout = layer_descriptor_layout(config)
        bits = {name: field.shape.width for name, field in self.layout}
        self.taps_width = (9 * ((1 << bits["period"]) - 1)).bit_length()
        self.width = 1 + max(
            bits["in_channels"] + bits["in_height"] + bits["in_width"],
            bits["in_height"] + bits["in_width"] + bits["out_channels"],
            bits["in_channels"] + self.taps_width + bits["out_channels"])
        self.factor_width = max(bits["in_height"], bits["in_width"], bits["out_channels"],
                                self.taps_width)
        pow2 = all(n & (n - 1) == 0 for n in (config.tn, config.tm))
        if pow2:          # the divider only does ceil(C_in / P)
            self.dividend_width = max(bits["in_channels"], bits["period"]) + 1
            self.divisor_width = bits["period"]
        else:
            self.dividend_width = self.width
            self.divisor_width = max(config.tn, config.tm, (1 << bits["period"]) - 1).bit_length()
        super().__init__({
            "start": In(1),
            "descriptor": In(self.layout),
            "taps": In(self.taps_width),
            "value": Out(self.width),
            "store_fmap": Out(1),
            "store_residual": Out(1),
            "store_weights": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        d = self.descriptor
        width = self.width
        m.submodules.divider = div = SerialDivider(self.dividend_width, self.divisor_width)
        q = Signal(width)
        hi = Signal(max(self.factor_width, (max(cfg.tn, cfg.tm) - 1).bit_length()))
        factor = Signal(self.factor_width)
        count = Signal(range(max(width, 7)))
        m.d.comb += self.value.eq(q)
        out_height = output_size_value(d.in_height, d.stride)
        out_width = output_size_value(d.in_width, d.stride)

        def ceil_div(n):
            """Steps for q = q // n (the caller has added n - 1 to q: a ceiling division)."""
            if n & (n - 1) == 0:
                return [("shift", n.bit_length() - 1)] if n > 1 else []
            return [("div", q, n)]

        def times_then_ceil(f, n):
            """q = ceil(q * f / n): the ``+ n - 1`` rides on the product (q * f + c)."""
            return [("mul", f, n - 1)] + ceil_div(n)

        steps = (
            [("load", d.in_channels), ("mul", d.in_height, 0)]
            + times_then_ceil(d.in_width, cfg.tn) + [("store", self.store_fmap)]
            + [("load", out_width + (cfg.tm - 1))] + ceil_div(cfg.tm)
            + [("mul", out_height, 0), ("mul", Mux(d.residual, d.out_channels, 0), 0),
               ("store", self.store_residual)]
            + [("div", d.in_channels + d.period - 1, d.period)]
            + times_then_ceil(self.taps, cfg.tn)
            + [("mul", d.out_channels, 0), ("store", self.store_weights)])
        # ("mul", f, c, n): n cycles of the multiply datapath; a product is n = width, a shift
        # right by k is n = k with f = c = 0
        steps = [("mul", 0, 0, step[1]) if step[0] == "shift"
                 else step + (width,) if step[0] == "mul" else step for step in steps]

        def enter(k):
            """Go to step ``k`` (its first cycle is the next one)."""
            if k == len(steps):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
                return
            kind, *args = steps[k]
            if kind == "mul":
                m.d.sync += [hi.eq(args[1]), count.eq(args[2] - 1)]
            m.next = f"STEP_{k}"

        # {hi, q} >> 1 after hi += factor (if q[0]): q * factor + hi, one bit a cycle
        total = Signal(len(hi) + 1)
        m.d.comb += total.eq(hi + Mux(q[0], factor, 0))

        def restart():
            with m.If(self.start):
                m.d.sync += self.done.eq(0)
                enter(0)

        with m.FSM():
            with m.State("IDLE"):
                restart()
            for k, (kind, *args) in enumerate(steps):
                with m.State(f"STEP_{k}"):
                    if kind == "load":
                        m.d.sync += q.eq(args[0])
                        enter(k + 1)
                    elif kind == "mul":
                        m.d.comb += factor.eq(args[0])
                        m.d.sync += [q.eq(Cat(q[1:], total[0])), hi.eq(total[1:]),
                                     count.eq(count - 1)]
                        with m.If(count == 0):
                            enter(k + 1)
                    elif kind == "store":
                        m.d.comb += args[0].eq(1)
                        enter(k + 1)
                    else:   # div: issue, then wait
                        m.d.comb += [div.start.eq(1), div.dividend.eq(args[0]),
                                     div.divisor.eq(args[1])]
                        m.next = f"WAIT_{k}"
                    restart()
                if kind == "div":
                    with m.State(f"WAIT_{k}"):
                        with m.If(div.done):
                            m.d.sync += q.eq(div.quotient)
                            enter(k + 1)
                        restart()
        return m


def smallest_max_payload(config) -> int:
    """The smallest link payload limit a processor for ``config`` works with: every DATA blob,
    the layer descriptor and one beat of each data command must fit one frame."""
    return max(IDENTITY_BYTES, COUNTERS_BYTES, STATUS_BYTES, descriptor_bytes(config),
               *(beat_bytes(config, c) for c in DATA_COMMANDS))


def engine_signature(config) -> wiring.Signature:
    """The signature of ``PeriodicSparseEngine(config)`` (read from an instance that is never
    elaborated, so the engine's port list is stated once, in :mod:`psconv.hw.engine`)."""
    engine = PeriodicSparseEngine(config)
    engine._MustUse__silence = True   # built only for its signature: no "never used" warning
    return engine.signature


class CommandProcessor(wiring.Component):
    """Executes link commands on the engine (see the module docstring for commands and rules).

    Ports:

    * ``command`` In(stream FRAME_HEADER), ``command_payload`` In(stream PAYLOAD_BYTE),
      ``reply`` Out(stream REPLY_HEADER), ``reply_payload`` Out(stream 8): to
      :class:`~psconv.hw.framing.LinkLayer` (its ports of the same names, flipped). As the
      link guarantees, ``command_payload`` carries exactly ``length`` bytes with ``last`` on the
      final one: a data write ends with the beat that holds that byte.
    * ``link_counters`` In(LINK_COUNTERS): reported by ``READ_COUNTERS``.
    * ``engine`` In(PeriodicSparseEngine(config).signature): the engine's ports, flipped, so
      ``wiring.connect(m, processor.engine, engine)`` wires them all.

    ``output_fifo_depth`` (>= 2) is the output FIFO and the residual window in beats; ``max_payload``
    the link's largest payload: no answer is longer (a ``READ_OUTPUT`` asking for more gets at
    most ``max_payload // tm`` beats, since the link could neither send nor store a longer one),
    and it must hold every DATA blob, the descriptor and a whole beat of every data command.
    Both are reported by ``IDENTIFY``.
    """

    def __init__(self, config, *, output_fifo_depth: int = OUTPUT_FIFO_DEPTH,
                 max_payload: int = MAX_PAYLOAD):
        if not isinstance(output_fifo_depth, int) or not 2 <= output_fifo_depth <= 0xFFFF:
            raise PsconvError(f"command processor: output_fifo_depth {output_fifo_depth!r}; "
                              f"allowed: an integer 2..65535 (beats)")
        self.config = config
        self.output_fifo_depth = output_fifo_depth
        self.max_payload = max_payload
        self.descriptor_layout = layer_descriptor_layout(config)
        self.descriptor_bytes = descriptor_bytes(config)
        smallest = smallest_max_payload(config)
        if not isinstance(max_payload, int) or not smallest <= max_payload <= 0xFFFF:
            raise PsconvError(f"command processor: max_payload {max_payload!r}; allowed: an "
                              f"integer {smallest}..65535 (bytes: every answer blob, the layer "
                              f"descriptor and one beat of each data command must fit a frame)")
        super().__init__({
            "command": In(stream.Signature(FRAME_HEADER)),
            "command_payload": In(stream.Signature(PAYLOAD_BYTE)),
            "reply": Out(stream.Signature(REPLY_HEADER)),
            "reply_payload": Out(stream.Signature(8)),
            "link_counters": In(LINK_COUNTERS),
            "engine": In(engine_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm = cfg.tm
        eng = self.engine
        depth = self.output_fifo_depth
        beat_sizes = {c: beat_bytes(cfg, c) for c in DATA_COMMANDS}
        max_beat = max(beat_sizes.values())

        # ---- output FIFO (emptied by START) ----
        flush = Signal()
        out_fifo = BlockRamFIFO(width=8 * tm, depth=depth)
        m.submodules.output_fifo = ResetInserter({"sync": flush})(out_fifo)
        m.d.comb += [out_fifo.w_data.eq(eng.out.payload), out_fifo.w_en.eq(eng.out.valid),
                     eng.out.ready.eq(out_fifo.w_rdy)]

        # ---- state the host sees ----
        busy = eng.busy
        descriptor = Signal(self.descriptor_layout)
        have_descriptor = Signal()
        started = Signal()
        done_since_start = Signal()
        m.d.comb += eng.layer.eq(descriptor)
        with m.If(eng.done):
            m.d.sync += done_since_start.eq(1)

        budget = m.submodules.budget = LayerBudget(cfg)
        count_width = budget.width + 1
        masks_left = Signal(range(cfg.max_period + 2))
        quant_left = Signal(range(cfg.max_out_channels + 2))
        weights_left = Signal(count_width)
        fmap_left = Signal(count_width)
        residual_left = Signal(count_width)
        window = Signal(count_width)       # residual beats the host may still send
        budget_pending = Signal()          # START seen, budgets not started yet
        budget_valid = Signal()
        taps = Signal(budget.taps_width)
        m.d.comb += [budget.descriptor.eq(descriptor), budget.taps.eq(taps)]
        # the budgets start once the whole mask table is in (T is its tap count); data writes
        # other than masks wait for them
        with m.If(budget_pending & (masks_left == 0)):
            m.d.comb += budget.start.eq(1)
            m.d.sync += budget_pending.eq(0)
        with m.If(~budget_pending):
            for store, left in ((budget.store_fmap, fmap_left),
                                (budget.store_weights, weights_left),
                                (budget.store_residual, residual_left)):
                with m.If(store):
                    m.d.sync += left.eq(budget.value)
        with m.If(budget.done & ~budget_valid & ~budget_pending & started & busy):
            m.d.sync += budget_valid.eq(1)

        # ---- the command being executed ----
        header = Signal(FRAME_HEADER)
        code, length = header.code, header.length
        nak_reason = Signal(8)
        reply_status = Signal(8)
        reply_length = Signal(16)
        reply_kind = Signal(2)             # what follows the reply header
        KIND_NONE, KIND_NAK, KIND_BLOB, KIND_OUTPUT = range(4)

        # One byte shift register serves both directions, since a command never needs both at
        # once: payload bytes shift in at the top (``gather``: a beat, the descriptor or the
        # READ_OUTPUT maximum ends in its top bytes) and reply data (``blob``: identity, status
        # or counters, loaded in DECODE, a snapshot) shifts out at the bottom. Both move by
        # Cat(shreg[8:], byte in), so each bit is a 2-way choice (load or shift): one LUT (two
        # for the 48 status bits, which have a third source).
        blob_bytes = max(IDENTITY_BYTES, COUNTERS_BYTES, STATUS_BYTES)
        gather_bytes = max(max_beat, self.descriptor_bytes, 2)
        shreg = Signal(8 * max(blob_bytes, gather_bytes))
        shift_in = Signal()                # shreg takes the payload byte at the top this cycle
        m.d.comb += self.reply_payload.payload.eq(shreg[:8])
        with m.If(shift_in):
            m.d.sync += shreg.eq(Cat(shreg[8:], self.command_payload.payload.data))
        blob_left = Signal(range(blob_bytes + 1))

        m.submodules.divider = div = SerialDivider(16, max(max_beat, tm).bit_length())
        gathered = Signal(range(gather_bytes + 1))
        final_beat = Signal()              # the beat in shreg ends the payload (its last byte)
        take = Signal(range(depth + 1))    # min(FIFO level, asked): at most the FIFO depth
        out_shift = Signal(8 * tm)         # the output beat being sent (registered: the FIFO's
        out_byte = Signal(range(tm + 1))   # block RAM output goes to a flip-flop, not the link)

        identity = identity_blob(cfg, depth, self.max_payload)

        def reply(status, length_value, kind):
            m.d.sync += [reply_status.eq(status), reply_length.eq(length_value), reply_kind.eq(kind)]
            m.next = "REPLY_HEADER"

        def nak(reason):
            m.d.sync += nak_reason.eq(reason)
            reply(Status.NAK, 1, KIND_NAK)

        def ack():
            reply(Status.ACK, 0, KIND_NONE)

        def gather_byte():
            """Take the next payload byte into ``shreg`` (shifted in at the top) and count it;
            returns the condition under which a byte is taken this cycle."""
            m.d.comb += [self.command_payload.ready.eq(1), shift_in.eq(self.command_payload.valid)]
            with m.If(self.command_payload.valid):
                m.d.sync += gathered.eq(gathered + 1)
            return self.command_payload.valid

        def data_blob(nbytes):
            # shreg and blob_left were loaded in DECODE
            reply(Status.DATA, nbytes, KIND_BLOB)

        def payload_stream(command):
            return {Command.WRITE_MASKS: eng.mask_in, Command.WRITE_QUANT: eng.quant_in,
                    Command.WRITE_WEIGHTS: eng.weight_in, Command.WRITE_FMAP: eng.fmap_in,
                    Command.WRITE_RESIDUAL: eng.residual_in}[command]

        def left_counter(command):
            return {Command.WRITE_MASKS: masks_left, Command.WRITE_QUANT: quant_left,
                    Command.WRITE_WEIGHTS: weights_left, Command.WRITE_FMAP: fmap_left,
                    Command.WRITE_RESIDUAL: residual_left}[command]

        # each data stream's payload is the top bytes of the shift register
        for command in DATA_COMMANDS:
            port = payload_stream(command)
            m.d.comb += port.payload.eq(shreg[len(shreg) - 8 * beat_sizes[command]:])

        # The budget check compares the quotient with one register: this command's counter,
        # chosen a cycle ahead (one comparator instead of one per stream, and no wide mux in
        # front of it). CHECK_DATA waits >= 17 cycles for the divider; meanwhile only the budget
        # stores write a counter, and budget_valid follows the last of them by two cycles.
        left_of_code = Signal(count_width)
        with m.Switch(code):
            for command in DATA_COMMANDS:
                with m.Case(command):
                    m.d.sync += left_of_code.eq(left_counter(command))
        is_residual = code == Command.WRITE_RESIDUAL
        # wide enough for any quotient (a 16-bit length), so the top bit is a true borrow
        diff_width = max(count_width, len(div.quotient)) + 1
        left_after = Signal(diff_width)          # top bit: the borrow, i.e. beats > left
        window_after = Signal(diff_width)        # likewise for the residual window
        m.d.comb += [left_after.eq(left_of_code - div.quotient),
                     window_after.eq(window - div.quotient)]

        level16 = Signal(16)
        window16 = Signal(16)
        m.d.comb += [level16.eq(out_fifo.level), window16.eq(Mux(window > 0xFFFF, 0xFFFF, window))]
        status_value = Cat(busy, Const(0, 7), done_since_start, Const(0, 7), level16, window16)
        counters_value = Cat(eng.busy_cycles, eng.stall_cycles, eng.idle_cycles, eng.macs,
                             *(getattr(self.link_counters, name) for name in LINK_COUNTER_NAMES))
        is_identity = Signal()   # registered with the header: a select shared by 272 bits must
        is_status = Signal()     # not be an 8-bit compare that synthesis copies into each bit
        # above the status bytes the status choice repeats the counters (those bytes are never
        # sent for READ_STATUS): a zero there would make every bit a 3-way choice
        blob_value = Mux(is_identity, int.from_bytes(identity, "little"),
                         Mux(is_status, Cat(status_value, counters_value[len(status_value):]),
                             counters_value))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.command.ready.eq(1)
                with m.If(self.command.valid):
                    m.d.sync += [header.eq(self.command.payload),
                                 is_identity.eq(self.command.payload.code == Command.IDENTIFY),
                                 is_status.eq(self.command.payload.code == Command.READ_STATUS)]
                    m.next = "DECODE"

            with m.State("DECODE"):
                # whatever the command, the blob snapshot is taken now (used by the three that
                # answer with one): a single load source per bit
                m.d.sync += [shreg.eq(blob_value),
                             blob_left.eq(Mux(is_status, STATUS_BYTES,
                                              Mux(is_identity, IDENTITY_BYTES, COUNTERS_BYTES)))]
                with m.Switch(code):
                    with m.Case(Command.IDENTIFY):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(IDENTITY_BYTES)
                    with m.Case(Command.READ_STATUS):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(STATUS_BYTES)
                    with m.Case(Command.READ_COUNTERS):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            data_blob(COUNTERS_BYTES)
                    with m.Case(Command.WRITE_LAYER):
                        with m.If(busy):
                            nak(NakReason.BUSY)
                        with m.Elif(length != self.descriptor_bytes):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += gathered.eq(0)
                            m.next = "RECEIVE_LAYER"
                    with m.Case(Command.START):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Elif(busy):
                            nak(NakReason.BUSY)
                        with m.Elif(~have_descriptor):
                            nak(NakReason.BAD_STATE)
                        with m.Else():
                            m.next = "START_ENGINE"
                    with m.Case(Command.READ_OUTPUT):
                        with m.If(length != 2):
                            nak(NakReason.BAD_LENGTH)
                        with m.Elif(~started):
                            nak(NakReason.BAD_STATE)
                        with m.Else():
                            m.d.sync += gathered.eq(0)
                            m.next = "RECEIVE_MAX"
                    for command in DATA_COMMANDS:
                        with m.Case(command):
                            with m.If(~busy):
                                nak(NakReason.BAD_STATE)
                            if command != Command.WRITE_MASKS:
                                with m.Elif(masks_left != 0):
                                    nak(NakReason.BAD_STATE)
                            with m.Else():
                                m.d.comb += [div.start.eq(1), div.dividend.eq(length),
                                             div.divisor.eq(beat_sizes[command])]
                                m.next = "CHECK_DATA"
                    with m.Default():
                        nak(NakReason.UNKNOWN_COMMAND)

            with m.State("START_ENGINE"):
                # a state of its own: the engine's busy follows start combinationally, so start
                # must not depend on the busy check made in DECODE
                m.d.comb += [eng.start.eq(1), flush.eq(1)]
                m.d.sync += [
                    started.eq(1), done_since_start.eq(0),
                    masks_left.eq(descriptor.period), quant_left.eq(descriptor.out_channels),
                    weights_left.eq(0), fmap_left.eq(0), residual_left.eq(0),
                    window.eq(depth), taps.eq(0), budget_pending.eq(1), budget_valid.eq(0),
                ]
                ack()

            with m.State("CHECK_DATA"):
                with m.If(div.done & (budget_valid | (code == Command.WRITE_MASKS))):
                    beats = div.quotient
                    with m.If(div.remainder != 0):
                        nak(NakReason.BAD_LENGTH)
                    with m.Elif(left_after[-1] | (is_residual & window_after[-1])):
                        nak(NakReason.OVERFLOW)
                    with m.Elif(beats == 0):
                        ack()
                    with m.Else():
                        with m.If(is_residual):
                            m.d.sync += window.eq(window_after[:count_width])
                        # the wide budgets are charged for the whole write now (nothing can stop
                        # the pushes that follow, so the end state is the same as per beat)
                        with m.Switch(code):
                            for command in WIDE_BUDGETS:
                                with m.Case(command):
                                    m.d.sync += left_counter(command).eq(left_after[:count_width])
                        m.d.sync += gathered.eq(0)
                        m.next = "GATHER"

            with m.State("GATHER"):
                with m.If(gather_byte()):
                    # the payload is a whole number of beats (checked), so the beat holding the
                    # byte marked ``last`` is the final one: no beat counter needed
                    m.d.sync += final_beat.eq(self.command_payload.payload.last)
                    with m.Switch(code):
                        for command in DATA_COMMANDS:
                            with m.Case(command):
                                with m.If(gathered == beat_sizes[command] - 1):
                                    m.next = "PUSH"

            with m.State("PUSH"):
                with m.Switch(code):
                    for command in DATA_COMMANDS:
                        with m.Case(command):
                            port = payload_stream(command)
                            left = left_counter(command)
                            m.d.comb += port.valid.eq(1)
                            with m.If(port.ready):
                                m.d.sync += gathered.eq(0)
                                if command not in WIDE_BUDGETS:
                                    # masks and quant entries count per beat: the budgets start
                                    # only once the last mask is in the engine (T is complete)
                                    m.d.sync += left.eq(left - 1)
                                if command == Command.WRITE_MASKS:
                                    m.d.sync += taps.eq(taps + sum(
                                        port.payload[k] for k in range(MASK_BITS)))
                                with m.If(final_beat):
                                    ack()
                                with m.Else():
                                    m.next = "GATHER"

            with m.State("RECEIVE_LAYER"):
                with m.If(gather_byte()):
                    with m.If(gathered == self.descriptor_bytes - 1):
                        m.next = "LOAD_LAYER"
            with m.State("LOAD_LAYER"):
                m.d.sync += [descriptor.eq(shreg[len(shreg) - 8 * self.descriptor_bytes:]),
                             have_descriptor.eq(1)]
                ack()

            with m.State("RECEIVE_MAX"):
                with m.If(gather_byte()):
                    with m.If(gathered == 1):
                        m.next = "DIVIDE_MAX"
            with m.State("DIVIDE_MAX"):
                asked = shreg[len(shreg) - 16:]
                if depth * tm > self.max_payload:
                    # a full FIFO would not fit one answer: ask for at most max_payload bytes
                    asked = Mux(asked > self.max_payload, self.max_payload, asked)
                m.d.comb += [div.start.eq(1), div.dividend.eq(asked), div.divisor.eq(tm)]
                m.next = "CHECK_OUTPUT"
            with m.State("CHECK_OUTPUT"):
                with m.If(div.done):
                    level = out_fifo.level
                    beats = Mux(level < div.quotient, level, div.quotient)
                    m.d.sync += [take.eq(beats), window.eq(window + beats)]
                    reply(Status.DATA, _times_constant(beats, tm), KIND_OUTPUT)

            with m.State("REPLY_HEADER"):
                m.d.comb += [self.reply.valid.eq(1), self.reply.payload.status.eq(reply_status),
                             self.reply.payload.length.eq(reply_length)]
                with m.If(self.reply.ready):
                    with m.Switch(reply_kind):
                        with m.Case(KIND_NAK):
                            m.next = "SEND_NAK"
                        with m.Case(KIND_BLOB):
                            m.next = "SEND_BLOB"
                        with m.Case(KIND_OUTPUT):
                            with m.If(take == 0):
                                m.next = "IDLE"
                            with m.Else():
                                m.next = "POP_OUTPUT"
                        with m.Default():
                            m.next = "IDLE"

            with m.State("SEND_NAK"):
                m.d.comb += [self.reply_payload.valid.eq(1), self.reply_payload.payload.eq(nak_reason)]
                with m.If(self.reply_payload.ready):
                    m.next = "IDLE"

            with m.State("SEND_BLOB"):
                m.d.comb += self.reply_payload.valid.eq(1)
                with m.If(self.reply_payload.ready):
                    m.d.comb += shift_in.eq(1)
                    m.d.sync += blob_left.eq(blob_left - 1)
                    with m.If(blob_left == 1):
                        m.next = "IDLE"

            with m.State("POP_OUTPUT"):
                m.d.comb += out_fifo.r_en.eq(1)
                with m.If(out_fifo.r_rdy):
                    m.d.sync += [out_shift.eq(out_fifo.r_data), out_byte.eq(0)]
                    m.next = "SEND_OUTPUT"
            with m.State("SEND_OUTPUT"):
                m.d.comb += [self.reply_payload.valid.eq(1),
                             self.reply_payload.payload.eq(out_shift[:8])]
                with m.If(self.reply_payload.ready):
                    m.d.sync += [out_shift.eq(out_shift >> 8), out_byte.eq(out_byte + 1)]
                    with m.If(out_byte == tm - 1):
                        m.d.sync += take.eq(take - 1)
                        with m.If(take == 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "POP_OUTPUT"
        return m
