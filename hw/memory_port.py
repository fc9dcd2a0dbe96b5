"""The board memory as the resident-mode blocks see it: one byte-wide request/response port.

Why bytes: the runner moves int8 maps and byte tables, and the scatter of output pixels into a
CHW map writes single bytes at computed addresses, so a byte port keeps every client simple. A
wider memory (the ULX3S's 16-bit SDRAM) sits behind an adapter with byte masks.

:data:`MEMORY_REQUEST`: ``address`` (32 bits, a byte address), ``write`` (1: store ``data``;
0: load), ``data`` (8 bits). :func:`memory_port_signature` (the client's view, Out):

* ``request`` Out(stream MEMORY_REQUEST): one access per accepted beat, in order.
* ``read_data`` In(stream 8): one byte per accepted load, in the order of the loads; a write
  answers nothing. The client must take read data it asked for (the memory may hold further
  requests back until it does).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

MEMORY_REQUEST = data.StructLayout({"address": 32, "write": 1, "data": 8})


def memory_port_signature() -> wiring.Signature:
    """The client side of a memory port (see the module docstring)."""
    return wiring.Signature({
        "request": Out(stream.Signature(MEMORY_REQUEST)),
        "read_data": In(stream.Signature(8)),
    })


BYTE_MEMORY_MODULE = "psconv_byte_memory"
BYTE_MEMORY_VERILOG = f"""
// A byte-wide synchronous RAM without an initial value, for simulators (psconv.hw.memory_port).
module {BYTE_MEMORY_MODULE} #(parameter DEPTH = 2, parameter ADDRESS_BITS = 1) (
    input clk, input [ADDRESS_BITS-1:0] addr, input [7:0] wdata, input we, input re,
    output reg [7:0] rdata);
  reg [7:0] bytes [0:DEPTH-1];
  always @(posedge clk) begin
    if (we) bytes[addr] <= wdata;
    if (re) rdata <= bytes[addr];
  end
endmodule
"""
"""The Verilog of :class:`OnChipMemory` with ``external=True`` (add it to the simulator's
sources)."""


class OnChipMemory(wiring.Component):
    """``depth`` bytes of block RAM behind a memory port: the simulated board's memory, and a
    board's own RAM where it has no external memory.

    Ports: ``port`` In(:func:`memory_port_signature`). A request is taken when the one-entry
    read-data register is empty or being emptied; a load's byte is valid the next cycle. Any
    address bit above ``depth`` is ignored (the command processor checks regions first).

    ``external=True`` instances :data:`BYTE_MEMORY_MODULE` (:data:`BYTE_MEMORY_VERILOG`) for
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
        bits = max(1, (self.depth - 1).bit_length())
        request = self.port.request
        address = request.payload.address[:bits]
        out = self.port.read_data
        take = Signal()
        write_enable, read_enable, read_data = Signal(), Signal(), Signal(8)
        if self.external:
            m.submodules.storage = Instance(
                BYTE_MEMORY_MODULE, p_DEPTH=self.depth, p_ADDRESS_BITS=bits,
                i_clk=ClockSignal(), i_addr=address, i_wdata=request.payload.data,
                i_we=write_enable, i_re=read_enable, o_rdata=read_data)
        else:
            m.submodules.storage = storage = memory.Memory(shape=8, depth=self.depth, init=[])
            write = storage.write_port()
            read = storage.read_port(transparent_for=[write])
            m.d.comb += [write.addr.eq(address), write.data.eq(request.payload.data),
                         write.en.eq(write_enable), read.addr.eq(address),
                         read.en.eq(read_enable), read_data.eq(read.data)]
        m.d.comb += [
            request.ready.eq(~out.valid | out.ready),
            take.eq(request.valid & request.ready),
            write_enable.eq(take & request.payload.write),
            read_enable.eq(take & ~request.payload.write),
            out.payload.eq(read_data),
        ]
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(take & ~request.payload.write):
            m.d.sync += out.valid.eq(1)
        return m


def memory_port_mux(m, select, first, second, memory_port) -> None:
    """Connect client ``first`` (``select`` low) or ``second`` (``select`` high) to
    ``memory_port`` (the memory's In side). ``select`` may change only while neither client has
    a load outstanding; the other client sees a port that is never ready."""
    for client, chosen in ((first, ~select), (second, select)):
        m.d.comb += [client.request.ready.eq(chosen & memory_port.request.ready),
                     client.read_data.payload.eq(memory_port.read_data.payload),
                     client.read_data.valid.eq(chosen & memory_port.read_data.valid)]
    m.d.comb += [
        memory_port.request.valid.eq(Mux(select, second.request.valid, first.request.valid)),
        memory_port.request.payload.eq(Mux(select, second.request.payload, first.request.payload)),
        memory_port.read_data.ready.eq(Mux(select, second.read_data.ready, first.read_data.ready)),
    ]


class WordMemoryBridge(wiring.Component):
    """A byte memory port onto a word-wide memory (the SDRAM's native port).

    ``port`` In(:func:`memory_port_signature`): byte accesses. Toward the memory, with
    ``word_bytes`` bytes per word and ``address_width``-bit word addresses: ``cmd``
    Out(stream ``{addr, write}``), ``wdata`` Out(stream ``{data, enable}``: one beat per write
    command, in order, the byte repeated in every lane and only its lane enabled; up to 4 wait
    in a FIFO, so the memory may take a write's data after its command), ``rdata`` In(stream of
    words, one per read command in order). A load's byte lane is remembered in a
    ``reads_in_flight``-entry FIFO, and loads stop while it is full, so the memory may return
    words at any latency. Requests pass a two-entry FIFO (one cycle more latency, no
    combinational path from the memory's ready back to the client).
    """

    def __init__(self, word_bytes: int, address_width: int, reads_in_flight: int = 16):
        if word_bytes & (word_bytes - 1) or word_bytes < 1:
            raise PsconvError(f"word memory bridge: word_bytes {word_bytes}; allowed: a power of 2")
        self.word_bytes = word_bytes
        self.address_width = address_width
        self.reads_in_flight = reads_in_flight
        super().__init__({
            "port": In(memory_port_signature()),
            "cmd": Out(stream.Signature(data.StructLayout({"addr": address_width, "write": 1}))),
            "wdata": Out(stream.Signature(data.StructLayout({"data": 8 * word_bytes,
                                                             "enable": word_bytes}))),
            "rdata": In(stream.Signature(8 * word_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        lane_bits = (self.word_bytes - 1).bit_length()
        # the client's requests enter a two-entry FIFO first: its ready is a register, so the
        # memory's handshake never reaches back into the client's logic in the same cycle
        m.submodules.requests = requests = SyncFIFOBuffered(width=MEMORY_REQUEST.size, depth=2)
        m.d.comb += [requests.w_data.eq(self.port.request.payload),
                     requests.w_en.eq(self.port.request.valid),
                     self.port.request.ready.eq(requests.w_rdy)]
        request = stream.Signature(MEMORY_REQUEST).create()
        m.d.comb += [request.valid.eq(requests.r_rdy), request.payload.eq(requests.r_data),
                     requests.r_en.eq(request.ready)]
        payload = request.payload
        lane = payload.address[:lane_bits] if lane_bits else 0
        m.submodules.lanes = lanes = SyncFIFO(width=max(1, lane_bits), depth=self.reads_in_flight)
        # write bytes wait here for the memory to take their data (which it may do only when
        # it executes the write, after taking the command)
        m.submodules.writes = writes = SyncFIFO(width=8 + max(1, lane_bits), depth=4)
        write = payload.write
        room = Mux(write, writes.w_rdy, lanes.w_rdy)
        taken = request.valid & request.ready
        write_lane = writes.r_data[8:8 + lane_bits] if lane_bits else 0
        m.d.comb += [
            self.cmd.payload.addr.eq(payload.address[lane_bits:]),
            self.cmd.payload.write.eq(write),
            self.cmd.valid.eq(request.valid & room),
            request.ready.eq(self.cmd.ready & room),
            lanes.w_data.eq(lane), lanes.w_en.eq(taken & ~write),
            writes.w_data.eq(Cat(payload.data, lane)), writes.w_en.eq(taken & write),
            self.wdata.valid.eq(writes.r_rdy),
            self.wdata.payload.data.eq(Cat(*[writes.r_data[:8]] * self.word_bytes)),
            self.wdata.payload.enable.eq(1 << write_lane if lane_bits else 1),
            writes.r_en.eq(self.wdata.ready),
            # the oldest load's byte lane picks its byte from the word
            self.port.read_data.valid.eq(self.rdata.valid & lanes.r_rdy),
            self.port.read_data.payload.eq(self.rdata.payload.word_select(lanes.r_data, 8)
                                           if lane_bits else self.rdata.payload),
            self.rdata.ready.eq(self.port.read_data.ready & lanes.r_rdy),
            lanes.r_en.eq(self.rdata.valid & self.port.read_data.ready),
        ]
        return m
