"""Formal properties of :class:`~psconv.hw.framing.LinkLayer` (docs/formal.md).

Each ``*_harness`` function returns an elaboratable without ports for
:func:`psconv.rtl_gen.formal.check`: a small ``LinkLayer`` whose every input is free
(``AnySeq``: any byte sequence from the host, any handshake from the UART and the command
processor), monitors built from the link's ports and from the handshakes of its receiver and
transmitter, and the ``Assert`` statements of one property. The command processor is free but
keeps its side of the contract (:func:`_environment`): a reply only with a length the link can
store.

* :func:`bad_crc_harness`: a frame the receiver delivers (to the processor or to replay) is the
  last ``len + 8`` bytes taken from the UART, ``A5 5A seq code len payload crc``, and ``crc`` is
  the CRC of ``seq .. payload``. The check recomputes the CRC from the byte history with its own
  ``CRC_ALGORITHM`` processors, one per payload length, so a receiver that skips or botches its
  check delivers a frame the monitor rejects.
* :func:`repeated_seq_harness`: two consecutive commands handed to the processor never have the
  same sequence number (a retransmission is replayed, never executed again).
* :func:`one_reply_harness`: every frame the receiver hands on (fresh, duplicate or damaged) is
  answered by exactly one response header carrying its sequence number before the next frame
  is taken: a frame is taken only when none is owed, a response is sent only when one is owed.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Cat, Module, Mux, ResetSignal, Signal

from psconv.protocol.frame import SYNC

from .framing import LinkLayer

#: The link the proofs use: payloads of up to 1 byte and a 2-cycle inter-byte timeout keep
#: frames short (9 bytes at most), so a bounded check covers several whole frames and an
#: induction step of 20 cycles reaches back past a whole frame.
FORMAL_MAX_PAYLOAD = 1
FORMAL_TIMEOUT_CYCLES = 2


def _free(m, *signals):
    for signal in signals:
        m.d.comb += signal.eq(AnySeq(len(signal)))


def _environment(m, link):
    """Every input of ``link`` free, the reset low, and the processor's contract assumed."""
    m.d.comb += Assume(~ResetSignal())
    _free(m, link.rx_data.valid, link.rx_data.payload, link.tx_data.ready,
          link.command.ready, link.command_payload.ready,
          link.reply.valid, link.reply.payload.as_value(),
          link.reply_payload.valid, link.reply_payload.payload)
    m.d.comb += Assume(~link.reply.valid | (link.reply.payload.length <= link.max_payload))


def _link(m, max_payload, timeout_cycles):
    m.submodules.link = link = LinkLayer(max_payload, timeout_cycles)
    _environment(m, link)
    return link


def bad_crc_harness(max_payload: int = FORMAL_MAX_PAYLOAD,
                    timeout_cycles: int = FORMAL_TIMEOUT_CYCLES) -> Module:
    """A frame with a bad CRC (or a header other than its bytes) is never delivered."""
    m = Module()
    link = _link(m, max_payload, timeout_cycles)
    rx = link.receiver
    history_bytes = max_payload + 8
    history = Signal(8 * history_bytes)       # byte k (0: the newest) at bits 8k..8k+7
    with m.If(link.rx_data.valid & link.rx_data.ready):
        m.d.sync += history.eq(Cat(link.rx_data.payload, history[:-8]))

    # what the receiver's CRC unit has been fed since it was last cleared
    unit = rx.crc
    covered_bytes = max_payload + 4
    fed = Signal(8 * covered_bytes)           # byte k (0: the last fed) at bits 8k..8k+7
    fed_count = Signal(range(covered_bytes + 2))
    m.d.comb += Assert(~(unit.clear & unit.valid), "CRC unit cleared and fed at once")
    with m.If(unit.clear):
        m.d.sync += fed_count.eq(0)
    with m.Elif(unit.valid):
        m.d.sync += [fed.eq(Cat(unit.data, fed[:-8])),
                     fed_count.eq(Mux(fed_count == covered_bytes + 1, fed_count, fed_count + 1))]

    def byte(k):
        return history.word_select(k, 8)

    length = rx.frame.payload.length
    with m.If(rx.frame.valid):
        m.d.comb += Assert(length <= max_payload, "delivered frame longer than max_payload")
        m.d.comb += Assert(unit.crc == Cat(byte(1), byte(0)),
                           "delivered frame's CRC field is not its CRC")
    for n in range(max_payload + 1):
        with m.If(rx.frame.valid & (length == n)):
            m.d.comb += Assert((byte(n + 7) == SYNC[0]) & (byte(n + 6) == SYNC[1])
                               & (rx.frame.payload.seq == byte(n + 5))
                               & (rx.frame.payload.code == byte(n + 4))
                               & (length == Cat(byte(n + 3), byte(n + 2))),
                               "delivered header is not the frame's bytes")
            m.d.comb += Assert((fed_count == n + 4) & (fed[:8 * (n + 4)] == history[16:8 * (n + 6)]),
                               "the CRC did not cover exactly seq .. payload")
    return m


def repeated_seq_harness(max_payload: int = FORMAL_MAX_PAYLOAD,
                         timeout_cycles: int = FORMAL_TIMEOUT_CYCLES) -> Module:
    """A repeated sequence number is never applied twice."""
    m = Module()
    link = _link(m, max_payload, timeout_cycles)
    applied_any = Signal()
    applied_seq = Signal(8)
    with m.If(link.command.valid):
        m.d.comb += Assert(~applied_any | (link.command.payload.seq != applied_seq),
                           "the previous command's seq handed to the processor again")
    with m.If(link.command.valid & link.command.ready):
        m.d.sync += [applied_any.eq(1), applied_seq.eq(link.command.payload.seq)]
    return m


def one_reply_harness(max_payload: int = FORMAL_MAX_PAYLOAD,
                      timeout_cycles: int = FORMAL_TIMEOUT_CYCLES) -> Module:
    """Every frame taken from the receiver gets exactly one response, with its seq."""
    m = Module()
    link = _link(m, max_payload, timeout_cycles)
    rx, tx = link.receiver, link.transmitter
    frame_taken = rx.frame.valid & rx.frame.ready
    error_taken = rx.error.valid & rx.error.ready
    answered = tx.response.valid & tx.response.ready
    owed = Signal()
    owed_seq = Signal(8)
    with m.If(frame_taken | error_taken):
        m.d.comb += Assert(~owed, "a frame taken while the previous one is unanswered")
        m.d.sync += owed.eq(1)
        with m.If(frame_taken):
            m.d.sync += owed_seq.eq(rx.frame.payload.seq)
        with m.Else():
            m.d.sync += owed_seq.eq(rx.error.payload.seq)
    with m.If(answered):
        m.d.comb += Assert(owed & (tx.response.payload.seq == owed_seq),
                           "a response without a frame, a second one, or with another seq")
        m.d.sync += owed.eq(0)
    return m
