"""SDR SDRAM behind stream ports: the generated LiteDRAM core plus its init sequencer.

:class:`SDRAM` instances the Verilog core that :func:`psconv.rtl_gen.litedram.generate_core`
wrote (module ``litedram_core``; its file must be added to the build or simulation beside
this component's Verilog) and an :class:`~psconv.hw.sdram_init.SDRAMInit` that plays the init
program on the core's control bus, so no CPU is needed.

Interface contract (all in the ``sync`` domain, which clocks the core; the SDRAM chip's clock
is the same frequency, 90 degrees later, see :mod:`psconv.rtl_gen.sdram_board`):

* ``ready`` (out): the core finished init; before that ``cmd`` and ``wdata`` are not accepted
  (their ``ready`` stays low) and nothing comes out of ``rdata``.
* ``cmd`` (in stream): ``addr`` (``address_width`` bits) is a *word* address, one word being
  ``data_width`` = 16 bits (2 bytes): byte address = 2 x ``addr``. LiteDRAM maps it as
  row | bank | column (high to low bits), so consecutive words share a row. ``write`` 1 is a
  write, 0 a read.
* ``wdata`` (in stream): one beat per write command, in command order: ``data`` and
  ``enable`` (one bit per byte, 1 = write that byte). A write command is taken together with
  its beat (its ``cmd.ready`` needs ``wdata.valid``; ``wdata.ready`` is high exactly when a
  write command is taken), so offer the beat no later than its command.
* ``rdata`` (out stream): one beat per read command, in command order, ``data_width`` bits.
  LiteDRAM's ports have no back-pressure, so a read command is accepted only while fewer than
  ``read_fifo_depth`` reads are in flight or unread; holding ``rdata.ready`` low eventually
  stalls reads in ``cmd`` (writes still go). Latency grows with row misses and refreshes.
* Commands to the same bank execute in order, so a read after a write to the same address
  returns the written data. Commands to different banks may overlap.

Inside: the core has a native port per bank (:data:`BANK_PORTS`): a
command goes to its bank's port (a write's beat into that port's FIFO), and the read data comes
back out of per-bank FIFOs in the order the reads were issued (a FIFO of their banks). One port
for all banks would drain each bank's queue before the next bank could start (LiteDRAM's
crossbar lock), so a row switch in one bank could not hide behind data in another: the output
scatter of resident mode, a plane per beat, ran at a row switch per two words.

Pins: ``pins="sim"`` adds an ``sdram`` port (the chip's pins, with DQ split into ``dq_o``,
``dq_oe`` and ``dq_i`` for a simulator, matching the core's ``sim`` variant); otherwise pass
the object of ``platform.request("sdram", 0, dir="-")`` (amaranth-boards names) and the
core's ``board`` variant, and the core's I/O buffers drive the pads. The chip clock pin is
not driven here (see :mod:`psconv.rtl_gen.sdram_board`).
"""

from __future__ import annotations

from amaranth import ClockSignal, Module, ResetSignal, Signal
from amaranth.hdl import Array, Instance, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

from .sdram_init import SDRAMInit, init_program


BANK_PORTS = 4
"""Native user ports, one per bank of the SDR modules (all have 4): LiteDRAM's crossbar locks a
port to one bank until that bank's command queue drains (so read data stays in order), which on
a single port serialises every bank switch; with a port per bank the controller opens a row in
one bank while another moves data (:class:`SDRAM` routes by bank and puts the read data back in
order). Port ``bank<k>`` only ever addresses bank k."""


def sdram_pin_signature(row_bits: int = 13, bank_bits: int = 2, data_width: int = 16):
    """The chip's pins as a simulator sees them (directions from the controller's side)."""
    return wiring.Signature({
        "a": Out(row_bits), "ba": Out(bank_bits), "ras_n": Out(1), "cas_n": Out(1),
        "we_n": Out(1), "cs_n": Out(1), "cke": Out(1), "dm": Out(data_width // 8),
        "dq_o": Out(data_width), "dq_oe": Out(1), "dq_i": In(data_width),
    })


def command_layout(address_width: int) -> data.StructLayout:
    return data.StructLayout({"addr": address_width, "write": 1})


def write_layout(data_width: int = 16) -> data.StructLayout:
    return data.StructLayout({"data": data_width, "enable": data_width // 8})


def _pad(port):
    """The raw pad of a requested pin, without the resource's inversion: the core's outputs
    are already active-low (``sdram_cs_n`` ...) and registered in the I/O cell."""
    return port.io


class SDRAM(wiring.Component):
    """The LiteDRAM core and its init sequencer (see the module docstring for the contract).

    ``address_width``, ``data_width``: the core's native port. ``program``: list of
    :class:`~psconv.hw.sdram_init.InitWrite`. ``row_bits``/``bank_bits``: the chip's address
    and bank pins. ``pins``: ``"sim"`` or the requested board resource. ``read_fifo_depth``:
    read beats buffered (and so reads in flight).
    """

    def __init__(self, *, address_width: int, program, data_width: int = 16,
                 row_bits: int = 13, bank_bits: int = 2, col_bits: int = 9, pins="sim",
                 read_fifo_depth: int = 16):
        if data_width != 16:
            raise PsconvError(f"SDRAM: data width {data_width} not supported; allowed: 16 "
                              f"(the ULX3S's x16 chip at 1:1 rate)")
        if 1 << bank_bits != BANK_PORTS:
            raise PsconvError(f"SDRAM: {1 << bank_bits} banks not supported; allowed: "
                              f"{BANK_PORTS} (the core has a native port per bank)")
        self.address_width = address_width
        self.data_width = data_width
        self.row_bits = row_bits
        self.bank_bits = bank_bits
        self.col_bits = col_bits
        self.program = list(program)
        self.pins = pins
        if read_fifo_depth < 2:
            raise PsconvError(f"SDRAM: read_fifo_depth {read_fifo_depth} too small; allowed: 2 "
                              f"or more (16 covers the read latency at full rate)")
        self.read_fifo_depth = read_fifo_depth
        members = {
            "cmd": In(stream.Signature(command_layout(address_width))),
            "wdata": In(stream.Signature(write_layout(data_width))),
            "rdata": Out(stream.Signature(data_width)),
            "ready": Out(1),
        }
        if pins == "sim":
            members["sdram"] = Out(sdram_pin_signature(row_bits, bank_bits, data_width))
        super().__init__(members)

    @classmethod
    def from_core(cls, core, pins="sim", power_up_us: float | None = None):
        """For a :class:`psconv.rtl_gen.litedram.LiteDRAMCore` of the matching variant."""
        want = "sim" if pins == "sim" else "board"
        if core.variant != want:
            raise PsconvError(f"SDRAM: a core of variant {core.variant!r} cannot drive "
                              f"{'simulated' if want == 'sim' else 'board'} pins; generate "
                              f"the {want!r} variant")
        kwargs = {} if power_up_us is None else {"power_up_us": power_up_us}
        program = init_program(core.init_sequence, core.csrs, core.config.sys_clk_hz,
                               core.info["controller_cycles"], **kwargs)
        return cls(address_width=core.address_width, data_width=core.data_width,
                   row_bits=core.info["rowbits"], bank_bits=core.info["bankbits"],
                   col_bits=core.info["colbits"], program=program, pins=pins)

    def elaborate(self, platform):
        m = Module()
        m.submodules.init = init = SDRAMInit(self.program)
        init_done = Signal()
        depth = self.read_fifo_depth
        cmd, write = self.cmd.payload, self.cmd.payload.write
        bank = cmd.addr[self.col_bits:self.col_bits + self.bank_bits]
        # the banks of the reads in flight or unread, in issue order: the read data leaves
        # through the FIFO of the bank at the head. Each bank's FIFO is as deep as this one,
        # so none can overflow (LiteDRAM's read data cannot wait). Buffered: its head is a
        # register (a read takes 10 cycles and more, so the extra cycle is never waited for),
        # not a LUT-RAM read in front of the read data's multiplexer
        m.submodules.read_order = order = SyncFIFOBuffered(width=self.bank_bits, depth=depth)
        core_ready = Signal(BANK_PORTS)  # the core's port k would take a command
        port_ready = Signal(BANK_PORTS)  # ... and, for a write, its bank has room for the beat
        may_issue = Mux(write, self.wdata.valid, order.w_rdy)
        taken = self.cmd.valid & self.cmd.ready
        m.d.comb += [
            self.cmd.ready.eq(port_ready.bit_select(bank, 1) & may_issue),
            self.wdata.ready.eq(taken & write),
            order.w_en.eq(taken & ~write),
            order.w_data.eq(bank),
        ]
        port = dict(
            i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"),
            o_init_done=init_done, o_init_error=Signal(), o_user_clk=Signal(),
            o_user_rst=Signal(),
            i_wb_ctrl_adr=init.bus.adr, i_wb_ctrl_dat_w=init.bus.dat_w,
            i_wb_ctrl_sel=init.bus.sel, i_wb_ctrl_cyc=init.bus.cyc, i_wb_ctrl_stb=init.bus.stb,
            i_wb_ctrl_we=init.bus.we, o_wb_ctrl_ack=init.bus.ack, i_wb_ctrl_cti=0,
            i_wb_ctrl_bte=0, o_wb_ctrl_dat_r=Signal(32), o_wb_ctrl_err=Signal(),
        )
        heads = []
        for k in range(BANK_PORTS):
            # a write's beat waits here until the controller executes it (LiteDRAM takes the
            # data some cycles after the command)
            writes = SyncFIFOBuffered(width=self.wdata.payload.shape().size, depth=4)
            reads = SyncFIFOBuffered(width=self.data_width, depth=depth)
            m.submodules[f"bank{k}_writes"] = writes
            m.submodules[f"bank{k}_reads"] = reads
            heads.append(reads)
            mine = bank == k
            wdata = data.View(write_layout(self.data_width), writes.r_data)
            room = ~write | writes.w_rdy     # a write's beat has a place in this bank's FIFO
            m.d.comb += [writes.w_data.eq(self.wdata.payload),
                         writes.w_en.eq(taken & write & mine),
                         port_ready[k].eq(core_ready[k] & room)]
            name = f"user_port_bank{k}"
            port.update({
                f"i_{name}_cmd_valid": self.cmd.valid & mine & may_issue & room,
                f"o_{name}_cmd_ready": core_ready[k],
                f"i_{name}_cmd_we": write,
                f"i_{name}_cmd_addr": cmd.addr,
                f"i_{name}_wdata_valid": writes.r_rdy,
                f"o_{name}_wdata_ready": writes.r_en,
                f"i_{name}_wdata_data": wdata.data,
                f"i_{name}_wdata_we": wdata.enable,
                f"o_{name}_rdata_valid": reads.w_en,
                f"i_{name}_rdata_ready": 1,
                f"o_{name}_rdata_data": reads.w_data,
            })
        head = order.r_data
        m.d.comb += [
            self.rdata.valid.eq(order.r_rdy & Array(r.r_rdy for r in heads)[head]),
            self.rdata.payload.eq(Array(r.r_data for r in heads)[head]),
            order.r_en.eq(self.rdata.valid & self.rdata.ready),
        ]
        for k, reads in enumerate(heads):
            m.d.comb += reads.r_en.eq(self.rdata.valid & self.rdata.ready & (head == k))
        dq_oe = Signal(self.data_width)
        if self.pins == "sim":
            pins = self.sdram
            port.update(
                o_sdram_a=pins.a, o_sdram_ba=pins.ba, o_sdram_ras_n=pins.ras_n,
                o_sdram_cas_n=pins.cas_n, o_sdram_we_n=pins.we_n, o_sdram_cs_n=pins.cs_n,
                o_sdram_cke=pins.cke, o_sdram_dm=pins.dm, o_sdram_dq_o=pins.dq_o,
                o_sdram_dq_oe=dq_oe, i_sdram_dq_i=pins.dq_i)
            m.d.comb += pins.dq_oe.eq(dq_oe[0])
        else:
            pins = self.pins
            port.update(
                o_sdram_a=_pad(pins.a), o_sdram_ba=_pad(pins.ba), o_sdram_ras_n=_pad(pins.ras),
                o_sdram_cas_n=_pad(pins.cas), o_sdram_we_n=_pad(pins.we),
                o_sdram_cs_n=_pad(pins.cs), o_sdram_cke=_pad(pins.clk_en),
                o_sdram_dm=_pad(pins.dqm), io_sdram_dq=_pad(pins.dq))
        m.submodules.core = Instance("litedram_core", **port)
        m.d.comb += self.ready.eq(init_done)
        return m
