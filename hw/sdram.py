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
  ``enable`` (one bit per byte, 1 = write that byte). A beat may be offered before or with
  its command; the core takes it when it executes the write.
* ``rdata`` (out stream): one beat per read command, in command order, ``data_width`` bits,
  through a ``read_fifo_depth``-entry FIFO (LiteDRAM's own port has no back-pressure). A read
  command is accepted only while fewer than ``read_fifo_depth`` reads are in flight or
  unread, so holding ``rdata.ready`` low eventually stalls reads in ``cmd`` (writes still go).
  Latency grows with row misses and refreshes; measured figures are in the tests' output.
* Commands to the same bank execute in order, so a read after a write to the same address
  returns the written data.

Pins: ``pins="sim"`` adds an ``sdram`` port (the chip's pins, with DQ split into ``dq_o``,
``dq_oe`` and ``dq_i`` for a simulator, matching the core's ``sim`` variant); otherwise pass
the object of ``platform.request("sdram", 0, dir="-")`` (amaranth-boards names) and the
core's ``board`` variant, and the core's I/O buffers drive the pads. The chip clock pin is
not driven here (see :mod:`psconv.rtl_gen.sdram_board`).
"""

from __future__ import annotations

from amaranth import ClockSignal, Module, ResetSignal, Signal
from amaranth.hdl import Instance
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError

from .sdram_init import SDRAMInit, init_program


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
                 row_bits: int = 13, bank_bits: int = 2, pins="sim",
                 read_fifo_depth: int = 16):
        if data_width != 16:
            raise PsconvError(f"SDRAM: data width {data_width} not supported; allowed: 16 "
                              f"(the ULX3S's x16 chip at 1:1 rate)")
        self.address_width = address_width
        self.data_width = data_width
        self.row_bits = row_bits
        self.bank_bits = bank_bits
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
                   program=program, pins=pins)

    def elaborate(self, platform):
        m = Module()
        m.submodules.init = init = SDRAMInit(self.program)
        init_done = Signal()
        # LiteDRAM's native port ignores rdata.ready (data comes at a fixed latency), so read
        # data lands in a FIFO and a read is issued only while the FIFO has a free entry for
        # it counting every read still in flight.
        depth = self.read_fifo_depth
        m.submodules.read_fifo = fifo = SyncFIFOBuffered(width=self.data_width, depth=depth)
        reserved = Signal(range(depth + 1))
        core_cmd_ready = Signal()
        may_issue = Signal()
        m.d.comb += [
            may_issue.eq(self.cmd.payload.write | (reserved < depth)),
            self.cmd.ready.eq(core_cmd_ready & may_issue),
            self.rdata.valid.eq(fifo.r_rdy),
            self.rdata.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.rdata.ready),
        ]
        read_issued = self.cmd.valid & self.cmd.ready & ~self.cmd.payload.write
        read_taken = self.rdata.valid & self.rdata.ready
        with m.If(read_issued & ~read_taken):
            m.d.sync += reserved.eq(reserved + 1)
        with m.Elif(read_taken & ~read_issued):
            m.d.sync += reserved.eq(reserved - 1)
        dq_oe = Signal(self.data_width)
        port = dict(
            i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"),
            o_init_done=init_done, o_init_error=Signal(), o_user_clk=Signal(),
            o_user_rst=Signal(),
            i_wb_ctrl_adr=init.bus.adr, i_wb_ctrl_dat_w=init.bus.dat_w,
            i_wb_ctrl_sel=init.bus.sel, i_wb_ctrl_cyc=init.bus.cyc, i_wb_ctrl_stb=init.bus.stb,
            i_wb_ctrl_we=init.bus.we, o_wb_ctrl_ack=init.bus.ack, i_wb_ctrl_cti=0,
            i_wb_ctrl_bte=0, o_wb_ctrl_dat_r=Signal(32), o_wb_ctrl_err=Signal(),
            i_user_port_primary_cmd_valid=self.cmd.valid & may_issue,
            o_user_port_primary_cmd_ready=core_cmd_ready,
            i_user_port_primary_cmd_we=self.cmd.payload.write,
            i_user_port_primary_cmd_addr=self.cmd.payload.addr,
            i_user_port_primary_wdata_valid=self.wdata.valid,
            o_user_port_primary_wdata_ready=self.wdata.ready,
            i_user_port_primary_wdata_data=self.wdata.payload.data,
            i_user_port_primary_wdata_we=self.wdata.payload.enable,
            o_user_port_primary_rdata_valid=fifo.w_en,
            i_user_port_primary_rdata_ready=1,
            o_user_port_primary_rdata_data=fifo.w_data,
        )
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

