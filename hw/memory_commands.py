"""Resident-mode commands in gateware: memory load, read-back, CRC, model check, inference start.

:class:`MemoryCommandProcessor` answers ``WRITE_MEM``, ``READ_MEM``, ``CRC_MEM``,
``CHECK_MODEL``, ``INFER`` and ``RUN_STATUS`` (:mod:`psconv.protocol.memory` is the contract:
payloads, answers, the model-validity rule). It sits beside the streamed
:class:`~psconv.hw.command_processor.CommandProcessor` behind a :class:`CommandRouter`, which
hands it exactly these codes. Every refusal is a NAK made before any side effect.

While the runner runs, the memory belongs to it: memory commands are NAKed BUSY, ``RUN_STATUS``
still answers, and ``WRITE_MEM`` may store the next image into the input region once no step
left reads it (the runner's ``input_free``; its stores go before the runner's requests). Regions are checked against ``memory_bytes`` (NAK BAD_LENGTH), ``READ_MEM``
lengths against ``max_payload``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.memory import (MEM_ADDRESS_LAYOUT, MEM_READ_LAYOUT, MEM_REGION_LAYOUT,
                                    MEMORY_CRC, MODEL_CHECK_LAYOUT, RUN_STATUS_LAYOUT)
from psconv.protocol.payloads import layout_bytes

from .framing import FRAME_HEADER, command_port_members
from .memory_port import byte_lane, byte_store, memory_port_signature
from .program_runner import COUNT_WIDTH

MEMORY_COMMANDS = (Command.WRITE_MEM, Command.READ_MEM, Command.CRC_MEM, Command.CHECK_MODEL,
                   Command.INFER, Command.RUN_STATUS)


class MemoryCommandProcessor(wiring.Component):
    """Executes the resident-mode commands (see the module docstring).

    Ports: the command side (:func:`command_port_members`); ``memory``
    Out(:func:`~psconv.hw.memory_port.memory_port_signature`), used only while the runner is
    idle; ``infer`` Out(1), a pulse with ``program_address`` Out(32) to start the runner; the
    runner's ``running``, ``done``, ``steps_done``, ``cycles``, ``memory_reads``,
    ``memory_writes`` In, ``engine_busy`` In(1) (INFER waits for no streamed layer), and the
    runner's ``bad_rule``, ``input_free``, ``input_address``, ``input_bytes`` In (the status;
    WRITE_MEM while it runs).
    """

    def __init__(self, memory_bytes: int, max_payload: int):
        if not isinstance(memory_bytes, int) or not 1 <= memory_bytes <= 1 << 32:
            raise PsconvError(f"memory commands: memory_bytes {memory_bytes!r}; allowed 1..2**32")
        self.memory_bytes = memory_bytes
        self.max_payload = max_payload
        super().__init__({
            **command_port_members(),
            "memory": Out(memory_port_signature()),
            "infer": Out(1),
            "program_address": Out(32),
            "running": In(1),
            "done": In(1),
            "steps_done": In(16),
            "cycles": In(COUNT_WIDTH),
            "memory_reads": In(COUNT_WIDTH),
            "memory_writes": In(COUNT_WIDTH),
            "engine_busy": In(1),
            "bad_rule": In(8),
            "input_free": In(1),
            "input_address": In(32),
            "input_bytes": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        request, read_data = self.memory.request, self.memory.read_data
        payload = self.command_payload

        header = Signal(FRAME_HEADER)
        code, length = header.code, header.length
        status_bytes = layout_bytes(RUN_STATUS_LAYOUT)
        gather_bytes = layout_bytes(MODEL_CHECK_LAYOUT)
        shreg = Signal(8 * max(status_bytes, gather_bytes))
        gathered = Signal(range(gather_bytes + 1))
        gather_target = Signal(range(gather_bytes + 1))

        def fields(layout):
            return data.View(layout, shreg[len(shreg) - 8 * layout_bytes(layout):])

        address = Signal(33)
        left = Signal(33)                 # loads still to issue / bytes still to store
        to_receive = Signal(33)           # loads still to arrive
        model_valid = Signal()
        model_start = Signal(33)
        model_end = Signal(33)
        reply_status = Signal(Status)
        reply_length = Signal(16)
        nak_reason = Signal(8)
        crc_lane = Signal()               # the byte lane of the next word a CRC load returns
        write_refused = Signal()          # WRITE_MEM's verdicts, registered in EXECUTE
        write_into_model = Signal()
        m.submodules.crc = crc = MEMORY_CRC(data_width=8).create()
        m.d.comb += [crc.data.eq(byte_lane(read_data.payload, crc_lane)),
                     self.program_address.eq(
            fields(MEM_ADDRESS_LAYOUT).address)]

        status = Signal(RUN_STATUS_LAYOUT)
        m.d.comb += [status.running.eq(self.running), status.done.eq(self.done),
                     status.model_valid.eq(model_valid), status.steps_done.eq(self.steps_done),
                     status.cycles.eq(self.cycles), status.memory_reads.eq(self.memory_reads),
                     status.memory_writes.eq(self.memory_writes),
                     status.memory_bytes.eq(min(self.memory_bytes, (1 << 32) - 1)),
                     status.bad_rule.eq(self.bad_rule)]

        def reply(status_, length_, next_state):
            m.d.sync += [reply_status.eq(status_), reply_length.eq(length_)]
            m.next = next_state

        def offer_reply(status_, length_, next_state):
            """Offer the reply header; go to ``next_state`` once it is taken."""
            m.d.comb += [self.reply.valid.eq(1), self.reply.payload.status.eq(status_),
                         self.reply.payload.length.eq(length_)]
            with m.If(self.reply.ready):
                m.next = next_state

        def nak(reason):
            m.d.sync += nak_reason.eq(reason)
            reply(Status.NAK, 1, "REPLY_NAK")

        def outside(start, count):
            return start + count > self.memory_bytes

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.command.ready.eq(1)
                with m.If(self.command.valid):
                    m.d.sync += [header.eq(self.command.payload), gathered.eq(0)]
                    m.next = "DECODE"

            with m.State("DECODE"):
                sizes = {Command.WRITE_MEM: MEM_ADDRESS_LAYOUT, Command.READ_MEM: MEM_READ_LAYOUT,
                         Command.CRC_MEM: MEM_REGION_LAYOUT,
                         Command.CHECK_MODEL: MODEL_CHECK_LAYOUT, Command.INFER: MEM_ADDRESS_LAYOUT}
                with m.Switch(code):
                    with m.Case(Command.RUN_STATUS):
                        with m.If(length != 0):
                            nak(NakReason.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += shreg.eq(status.as_value())
                            reply(Status.DATA, status_bytes, "REPLY_BLOB")
                    for command, layout in sizes.items():
                        with m.Case(command):
                            need = layout_bytes(layout)
                            wrong = (length <= need) if command == Command.WRITE_MEM else (length != need)
                            with m.If(self.running & (command != Command.INFER)
                                      & (command != Command.WRITE_MEM)):
                                nak(NakReason.BUSY)
                            with m.Elif(wrong):
                                nak(NakReason.BAD_LENGTH)
                            with m.Else():
                                m.d.sync += gather_target.eq(need)
                                m.next = "GATHER"
                    with m.Default():
                        nak(NakReason.UNKNOWN_COMMAND)

            with m.State("GATHER"):
                m.d.comb += payload.ready.eq(1)
                with m.If(payload.valid):
                    m.d.sync += [shreg.eq(Cat(shreg[8:], payload.payload.data)),
                                 gathered.eq(gathered + 1)]
                    with m.If(gathered + 1 == gather_target):
                        m.next = "EXECUTE"

            with m.State("EXECUTE"):
                with m.Switch(code):
                    with m.Case(Command.WRITE_MEM):
                        # the region's checks end in registers, which STORE acts on (the adds
                        # and compares and the reply decision in one cycle missed 75 MHz)
                        start = fields(MEM_ADDRESS_LAYOUT).address
                        count = length - layout_bytes(MEM_ADDRESS_LAYOUT)
                        # while the runner runs: inside the input region it has freed
                        input_writable = Signal()
                        m.d.comb += input_writable.eq(
                            self.input_free & (start >= self.input_address)
                            & (start + count <= self.input_address + self.input_bytes))
                        refused_outside = outside(start, count)
                        m.d.sync += [write_refused.eq(refused_outside
                                                      | (self.running & ~input_writable)),
                                     nak_reason.eq(Mux(refused_outside, NakReason.BAD_LENGTH,
                                                       NakReason.BUSY)),
                                     write_into_model.eq((start < model_end)
                                                         & (start + count > model_start)),
                                     address.eq(start)]
                        m.next = "STORE"
                    with m.Case(Command.READ_MEM):
                        region = fields(MEM_READ_LAYOUT)
                        with m.If(outside(region.address, region.length)
                                  | (region.length > self.max_payload)):
                            nak(NakReason.BAD_LENGTH)
                        with m.Elif(region.length == 0):
                            reply(Status.DATA, 0, "REPLY_HEADER")   # nothing to load
                        with m.Else():
                            m.d.sync += [address.eq(region.address), left.eq(region.length),
                                         to_receive.eq(region.length)]
                            reply(Status.DATA, region.length, "REPLY_HEADER_THEN_READ")
                    with m.Case(Command.CRC_MEM, Command.CHECK_MODEL):
                        m.next = "CRC_CHECK_REGION"
                    with m.Case(Command.INFER):
                        with m.If(self.running | self.engine_busy):
                            nak(NakReason.BUSY)
                        with m.Elif(~model_valid | (self.program_address < model_start)
                                    | (self.program_address >= model_end)):
                            nak(NakReason.NO_MODEL)
                        with m.Else():
                            m.d.comb += self.infer.eq(1)
                            reply(Status.ACK, 0, "REPLY_HEADER")

            with m.State("CRC_CHECK_REGION"):
                # CRC_MEM's fields are the first 8 of CHECK_MODEL's 12 bytes, so both read the
                # region from where their own layout puts it
                region = Mux(code == Command.CHECK_MODEL, fields(MODEL_CHECK_LAYOUT).as_value()[:64],
                             fields(MEM_REGION_LAYOUT).as_value())
                start, count = region[:32], region[32:64]
                with m.If(outside(start, count)):
                    nak(NakReason.BAD_LENGTH)
                with m.Else():
                    m.d.comb += crc.start.eq(1)
                    m.d.sync += [address.eq(start), left.eq(count), to_receive.eq(count),
                                 crc_lane.eq(start[0])]
                    m.next = "CRC"

            with m.State("STORE"):
                with m.If(write_refused):
                    # the NAK's header straight from here, as REPLY_NAK would offer it
                    offer_reply(Status.NAK, 1, "SEND_NAK")
                with m.Else():
                    with m.If(write_into_model):
                        m.d.sync += model_valid.eq(0)
                    m.d.comb += [request.valid.eq(payload.valid),
                                 *byte_store(request.payload, address, payload.payload.data),
                                 payload.ready.eq(request.ready)]
                    with m.If(payload.valid & request.ready):
                        m.d.sync += address.eq(address + 1)
                        with m.If(payload.payload.last):
                            reply(Status.ACK, 0, "REPLY_HEADER")

            with m.State("CRC"):
                m.d.comb += [request.valid.eq(left != 0), request.payload.address.eq(address),
                             read_data.ready.eq(1), crc.valid.eq(read_data.valid)]
                with m.If(request.valid & request.ready):
                    m.d.sync += [address.eq(address + 1), left.eq(left - 1)]
                with m.If(read_data.valid):
                    m.d.sync += [to_receive.eq(to_receive - 1), crc_lane.eq(~crc_lane)]
                with m.If(to_receive == 0):
                    m.next = "CRC_DONE"

            with m.State("CRC_DONE"):
                check = fields(MODEL_CHECK_LAYOUT)
                with m.If(code == Command.CHECK_MODEL):
                    with m.If(crc.crc == check.crc):
                        m.d.sync += [model_valid.eq(1), model_start.eq(check.address),
                                     model_end.eq(check.address + check.length)]
                        reply(Status.ACK, 0, "REPLY_HEADER")
                    with m.Else():
                        m.d.sync += model_valid.eq(0)
                        nak(NakReason.MODEL_CRC)
                with m.Else():
                    m.d.sync += shreg.eq(crc.crc)
                    reply(Status.DATA, 4, "REPLY_BLOB")

            # ---- replies ----
            for state, after in (("REPLY_HEADER", "IDLE"), ("REPLY_NAK", "SEND_NAK"),
                                 ("REPLY_BLOB", "SEND_BLOB"),
                                 ("REPLY_HEADER_THEN_READ", "SEND_READ")):
                with m.State(state):
                    offer_reply(reply_status, reply_length, after)
            with m.State("SEND_NAK"):
                m.d.comb += [self.reply_payload.valid.eq(1), self.reply_payload.payload.eq(nak_reason)]
                with m.If(self.reply_payload.ready):
                    m.next = "IDLE"
            with m.State("SEND_BLOB"):
                m.d.comb += [self.reply_payload.valid.eq(1), self.reply_payload.payload.eq(shreg[:8])]
                with m.If(self.reply_payload.ready):
                    m.d.sync += [shreg.eq(shreg >> 8), reply_length.eq(reply_length - 1)]
                    with m.If(reply_length == 1):
                        m.next = "IDLE"
            with m.State("SEND_READ"):
                # one load at a time: each byte goes straight to the link (the load in flight
                # was for address - 1)
                m.d.comb += [request.valid.eq((left != 0) & (left == to_receive)),
                             request.payload.address.eq(address),
                             self.reply_payload.valid.eq(read_data.valid),
                             self.reply_payload.payload.eq(byte_lane(read_data.payload, ~address)),
                             read_data.ready.eq(self.reply_payload.ready)]
                with m.If(request.valid & request.ready):
                    m.d.sync += [address.eq(address + 1), left.eq(left - 1)]
                with m.If(read_data.valid & read_data.ready):
                    m.d.sync += to_receive.eq(to_receive - 1)
                    with m.If(to_receive == 1):
                        m.next = "IDLE"
        return m


class CommandRouter(wiring.Component):
    """Hands each command to one of two processors by its code, and its reply back.

    ``link`` Out(:func:`command_port_members`): toward the link layer it looks like a
    processor; ``streamed`` and ``resident`` In (the same, flipped): toward each processor it
    looks like the link layer. Commands in
    :data:`MEMORY_COMMANDS` go to ``resident``, all others to ``streamed``. One command is in
    flight at a time (the link layer guarantees it); the choice holds until that command's reply
    header and its ``length`` payload bytes have passed.
    """

    def __init__(self):
        members = command_port_members()
        super().__init__({
            "link": Out(wiring.Signature(members)),
            "streamed": In(wiring.Signature(members)),
            "resident": In(wiring.Signature(members)),
        })

    def elaborate(self, platform):
        m = Module()
        link = self.link
        to_resident = Signal()
        busy = Signal()                   # a command is out; its reply not finished
        reply_left = Signal(17)
        header_sent = Signal()
        is_memory = Signal()
        m.d.comb += is_memory.eq(Cat(*(link.command.payload.code == c for c in MEMORY_COMMANDS)).any())

        for name, chosen in (("streamed", ~to_resident), ("resident", to_resident)):
            target = getattr(self, name)
            m.d.comb += [
                target.command.payload.eq(link.command.payload),
                target.command_payload.payload.eq(link.command_payload.payload),
                target.command_payload.valid.eq(busy & chosen & link.command_payload.valid),
                target.reply.ready.eq(busy & chosen & link.reply.ready),
                target.reply_payload.ready.eq(busy & chosen & link.reply_payload.ready),
            ]
        m.d.comb += [
            link.command_payload.ready.eq(busy & Mux(to_resident, self.resident.command_payload.ready,
                                                     self.streamed.command_payload.ready)),
            link.reply.valid.eq(busy & Mux(to_resident, self.resident.reply.valid,
                                           self.streamed.reply.valid)),
            link.reply.payload.eq(Mux(to_resident, self.resident.reply.payload,
                                      self.streamed.reply.payload)),
            link.reply_payload.valid.eq(busy & Mux(to_resident, self.resident.reply_payload.valid,
                                                   self.streamed.reply_payload.valid)),
            link.reply_payload.payload.eq(Mux(to_resident, self.resident.reply_payload.payload,
                                              self.streamed.reply_payload.payload)),
        ]

        with m.If(~busy):
            # the header goes to the processor its code names, in the cycle it is taken
            m.d.comb += [
                self.resident.command.valid.eq(link.command.valid & is_memory),
                self.streamed.command.valid.eq(link.command.valid & ~is_memory),
                link.command.ready.eq(Mux(is_memory, self.resident.command.ready,
                                          self.streamed.command.ready)),
            ]
            with m.If(link.command.valid & link.command.ready):
                m.d.sync += [busy.eq(1), to_resident.eq(is_memory), header_sent.eq(0)]
        with m.Else():
            with m.If(link.reply.valid & link.reply.ready):
                m.d.sync += [header_sent.eq(1), reply_left.eq(link.reply.payload.length)]
                with m.If(link.reply.payload.length == 0):
                    m.d.sync += busy.eq(0)
            with m.If(header_sent & link.reply_payload.valid & link.reply_payload.ready):
                m.d.sync += reply_left.eq(reply_left - 1)
                with m.If(reply_left == 1):
                    m.d.sync += busy.eq(0)
        return m
