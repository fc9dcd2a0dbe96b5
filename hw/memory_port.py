"""The board memory as the resident-mode blocks see it: one request/response port of 2-byte words.

Why 2 bytes: the ULX3S's SDRAM is 16 bits wide, so a word per cycle is what it can move, and
the runner's sequential loads (tables, weights, maps: almost all of an inference's memory
traffic) take both bytes. The scatter of output pixels into a CHW map and the memory commands
store and load single bytes at computed addresses: a store enables one byte lane, a load keeps
the lane its address names (:func:`byte_store`, :func:`byte_lane`).

:data:`MEMORY_REQUEST`: ``address`` (32 bits, a byte address), ``write`` (1: store; 0: load),
``data`` (16 bits; byte 0 is the even address), ``enable`` (2 bits, one per byte of ``data``).
A request acts on the word that holds ``address`` (its bit 0 is ignored): a load returns the
whole word, a store writes the bytes whose ``enable`` bit is set. :func:`memory_port_signature`
(the client's view, Out):

* ``request`` Out(stream MEMORY_REQUEST): one access per accepted beat, in order.
* ``read_data`` In(stream 16): one word per accepted load, in the order of the loads; a store
  answers nothing. The client must take read data it asked for (the memory may hold further
  requests back until it does).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

MEMORY_WORD_BYTES = 2
"""Bytes per memory word: what one request loads or may store."""
MEMORY_REQUEST = data.StructLayout({"address": 32, "write": 1, "data": 8 * MEMORY_WORD_BYTES,
                                    "enable": MEMORY_WORD_BYTES})


def memory_port_signature() -> wiring.Signature:
    """The client side of a memory port (see the module docstring)."""
    return wiring.Signature({
        "request": Out(stream.Signature(MEMORY_REQUEST)),
        "read_data": In(stream.Signature(8 * MEMORY_WORD_BYTES)),
    })


def byte_store(payload, address, byte) -> list:
    """Assignments that make request ``payload`` store one ``byte`` at byte ``address``."""
    return [payload.address.eq(address), payload.write.eq(1),
            payload.data.eq(Cat(*[byte] * MEMORY_WORD_BYTES)),
            payload.enable.eq(1 << address[0])]


def byte_lane(word, address):
    """The byte at byte ``address`` of the loaded ``word`` that holds it."""
    return word.word_select(address[0], 8)


WORD_MEMORY_MODULE = "psconv_word_memory"
WORD_MEMORY_VERILOG = f"""
// A RAM of 2-byte words with byte enables and no initial value, for simulators
// (psconv.hw.memory_port).
module {WORD_MEMORY_MODULE} #(parameter DEPTH = 2, parameter ADDRESS_BITS = 1) (
    input clk, input [ADDRESS_BITS-1:0] addr, input [15:0] wdata, input [1:0] we, input re,
    output reg [15:0] rdata);
  reg [7:0] low [0:DEPTH-1];
  reg [7:0] high [0:DEPTH-1];
  always @(posedge clk) begin
    if (we[0]) low[addr] <= wdata[7:0];
    if (we[1]) high[addr] <= wdata[15:8];
    if (re) rdata <= {{high[addr], low[addr]}};
  end
endmodule
"""
"""The Verilog of :class:`OnChipMemory` with ``external=True`` (add it to the simulator's
sources)."""


class OnChipMemory(wiring.Component):
    """``depth`` bytes of block RAM behind a memory port: the simulated board's memory, and a
    board's own RAM where it has no external memory.

    Ports: ``port`` In(:func:`memory_port_signature`). A request is taken when the one-entry
    read-data register is empty or being emptied; a load's word is valid the next cycle. Any
    address bit above ``depth`` is ignored (the command processor checks regions first).

    ``external=True`` instances :data:`WORD_MEMORY_MODULE` (:data:`WORD_MEMORY_VERILOG`) for
    the storage instead of an Amaranth memory: the same timing, and no initial value for Yosys
    to write out word by word, which for the megabytes of a simulated board's memory would take
    longer than the simulation (Verilator only; the Amaranth simulator needs the default).
    """

    def __init__(self, depth: int, external: bool = False):
        if not isinstance(depth, int) or depth < 2:
            raise PsconvError(f"on-chip memory: depth {depth!r}; allowed: an integer >= 2 (bytes)")
        self.depth = depth
        self.external = external
        super().__init__({"port": In(memory_port_signature())})

    def elaborate(self, platform):
        m = Module()
        words = -(-self.depth // MEMORY_WORD_BYTES)
        bits = max(1, (words - 1).bit_length())
        request = self.port.request
        address = request.payload.address[1:1 + bits]
        out = self.port.read_data
        take = Signal()
        write_enable = Signal(MEMORY_WORD_BYTES)
        read_enable, read_data = Signal(), Signal(8 * MEMORY_WORD_BYTES)
        if self.external:
            m.submodules.storage = Instance(
                WORD_MEMORY_MODULE, p_DEPTH=words, p_ADDRESS_BITS=bits,
                i_clk=ClockSignal(), i_addr=address, i_wdata=request.payload.data,
                i_we=write_enable, i_re=read_enable, o_rdata=read_data)
        else:
            m.submodules.storage = storage = memory.Memory(
                shape=8 * MEMORY_WORD_BYTES, depth=words, init=[])
            write = storage.write_port(granularity=8)
            read = storage.read_port(transparent_for=[write])
            m.d.comb += [write.addr.eq(address), write.data.eq(request.payload.data),
                         write.en.eq(write_enable), read.addr.eq(address),
                         read.en.eq(read_enable), read_data.eq(read.data)]
        m.d.comb += [
            request.ready.eq(~out.valid | out.ready),
            take.eq(request.valid & request.ready),
            write_enable.eq(Mux(take & request.payload.write, request.payload.enable, 0)),
            read_enable.eq(take & ~request.payload.write),
            out.payload.eq(read_data),
        ]
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(take & ~request.payload.write):
            m.d.sync += out.valid.eq(1)
        return m


class MemoryPortArbiter(wiring.Component):
    """Shares the memory between the memory commands and the program runner.

    Ports: ``commands`` and ``runner`` In(:func:`memory_port_signature`), ``memory``
    Out(the same), ``running`` In(1). While ``running`` the commands may only store (the memory
    commands NAK anything else BUSY then); otherwise the runner issues nothing and the commands
    have the port. Command requests go first: they pass a two-entry FIFO (registered ready, so
    the runner's request never reaches back into the command side in the same cycle) and come at
    most one per UART byte, so the runner loses few cycles to an image the host writes while it
    computes. Read data goes to whoever issued the load, in order: the arbiter counts the
    runner's loads still to come back (at most ``loads_in_flight``: the memories here hold 18
    at most), and if the runner stops with some outstanding (an ABORT resets it mid-step) it
    drops them, so the commands never receive a stale word.
    """

    def __init__(self, loads_in_flight: int = 64):
        self.loads_in_flight = loads_in_flight
        super().__init__({
            "commands": In(memory_port_signature()),
            "runner": In(memory_port_signature()),
            "memory": Out(memory_port_signature()),
            "running": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        commands, runner, port = self.commands, self.runner, self.memory
        m.submodules.queue = queue = SyncFIFOBuffered(width=MEMORY_REQUEST.size, depth=2)
        m.d.comb += [
            queue.w_data.eq(commands.request.payload),
            queue.w_en.eq(commands.request.valid),
            commands.request.ready.eq(queue.w_rdy),
            port.request.valid.eq(queue.r_rdy | runner.request.valid),
            port.request.payload.eq(Mux(queue.r_rdy, queue.r_data, runner.request.payload)),
            queue.r_en.eq(port.request.ready),
            runner.request.ready.eq(port.request.ready & ~queue.r_rdy),
        ]
        runner_loads = Signal(range(self.loads_in_flight + 1))     # issued, not yet back
        issued = runner.request.valid & runner.request.ready & ~runner.request.payload.write
        returned = port.read_data.valid & port.read_data.ready
        owned = runner_loads != 0
        with m.If(issued & ~(returned & owned)):
            m.d.sync += runner_loads.eq(runner_loads + 1)
        with m.Elif(~issued & returned & owned):
            m.d.sync += runner_loads.eq(runner_loads - 1)
        for client, chosen in ((commands, ~owned), (runner, owned & self.running)):
            m.d.comb += [client.read_data.payload.eq(port.read_data.payload),
                         client.read_data.valid.eq(chosen & port.read_data.valid)]
        m.d.comb += port.read_data.ready.eq(
            Mux(owned, runner.read_data.ready | ~self.running, commands.read_data.ready))
        return m


class WordMemoryBridge(wiring.Component):
    """A memory port onto the SDRAM's native port (16-bit words, word addresses).

    ``port`` In(:func:`memory_port_signature`). Toward the memory, with ``address_width``-bit
    word addresses: ``cmd`` Out(stream ``{addr, write}``), ``wdata`` Out(stream ``{data,
    enable}``: a write's beat is offered with its command, and the memory takes both together,
    as :class:`psconv.hw.sdram.SDRAM` does), ``rdata`` In(stream of words, one per read
    command in order; the memory limits the reads in flight). Requests pass a three-entry FIFO
    (one cycle more latency, no combinational path from the memory's ready back to the client;
    one request per cycle sustained).
    """

    def __init__(self, address_width: int):
        self.address_width = address_width
        super().__init__({
            "port": In(memory_port_signature()),
            "cmd": Out(stream.Signature(data.StructLayout({"addr": address_width, "write": 1}))),
            "wdata": Out(stream.Signature(data.StructLayout({
                "data": 8 * MEMORY_WORD_BYTES, "enable": MEMORY_WORD_BYTES}))),
            "rdata": In(stream.Signature(8 * MEMORY_WORD_BYTES)),
        })

    def elaborate(self, platform):
        m = Module()
        # the client's requests enter a FIFO first: its ready is a register, so the memory's
        # handshake never reaches back into the client's logic in the same cycle. Depth 3: a
        # buffered FIFO of depth 2 passes only one entry every other cycle, which halved every
        # sequential load from the SDRAM
        m.submodules.requests = requests = SyncFIFOBuffered(width=MEMORY_REQUEST.size, depth=3)
        m.d.comb += [requests.w_data.eq(self.port.request.payload),
                     requests.w_en.eq(self.port.request.valid),
                     self.port.request.ready.eq(requests.w_rdy)]
        payload = data.View(MEMORY_REQUEST, requests.r_data)
        write = payload.write
        m.d.comb += [
            self.cmd.payload.addr.eq(payload.address[1:]),
            self.cmd.payload.write.eq(write),
            self.cmd.valid.eq(requests.r_rdy),
            requests.r_en.eq(self.cmd.valid & self.cmd.ready),
            self.wdata.payload.data.eq(payload.data),
            self.wdata.payload.enable.eq(payload.enable),
            self.wdata.valid.eq(requests.r_rdy & write),
            self.port.read_data.valid.eq(self.rdata.valid),
            self.port.read_data.payload.eq(self.rdata.payload),
            self.rdata.ready.eq(self.port.read_data.ready),
        ]
        return m
