# amaranth: UnusedElaboratable=no
"""The board top in the Amaranth simulator: the Driver runs layers on it through the real link.

``BoardTop(bridge=True)`` (link layer, command processor and the real engine, small config) is
driven by the same ``Driver`` that talks to a serial port, over ``SimulatorTransport``; every
layer kind must come back bit-exact. A second test goes through the UART pins (a host-side UART
on the board's rx/tx lines), as on a real board.
"""

import pytest
import torch
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from psconv.errors import PsconvError
from psconv.families import dense_family, paper_family, pointwise_family
from psconv.firmware.driver import Driver
from psconv.sim.golden.network import describe_mismatch
from psconv.firmware.link import LinkClient, LinkNak
from psconv.protocol.codes import Command
from psconv.protocol.frame import MAX_PAYLOAD
from psconv.protocol.payloads import read_output_payload
from psconv.hw.board_top import BoardTop
from psconv.protocol.payloads import identity_blob
from psconv.hw.uart import UART
from psconv.sim.amaranth_transport import SimulatorTransport

from e2e_helpers import TINY_CONFIG, make_step

CFG = TINY_CONFIG


def test_driver_runs_every_layer_kind_on_the_gateware():
    g = torch.Generator().manual_seed(11)
    steps = [
        make_step("first layer (dense, 3 channels)", dense_family(), 3, 4, 6, g),
        make_step("3x3 PSD1_P4 residual relu", paper_family(1, 4, dense_kernel=True), 6, 5, 5, g,
                  residual=True),
        make_step("3x3 PS2_P4 stride 2", paper_family(2, 4), 7, 3, 7, g, stride=2, relu=False),
        make_step("1x1 stride 2 shortcut", pointwise_family(), 5, 6, 6, g, stride=2, relu=False),
    ]
    top = BoardTop(CFG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400)
    transport = SimulatorTransport(top, top.rx_data, top.tx_data)
    driver = Driver(transport, CFG, timeout_s=5e-3, retries=2)
    assert driver.identify()["tn"] == CFG.tn
    for step, x, res, expected in steps:
        out, report = driver._run_step(step, x, res)
        assert describe_mismatch(step.layer, expected, out) is None
        assert report.macs > 0 and report.cycles == report.busy_cycles + report.stall_cycles + report.idle_cycles
        assert report.payload_bytes_received == step.descriptor.output_beats(CFG) * CFG.tm
    assert driver.link.stats.retransmissions == 0


def test_a_small_max_payload_is_reported_enforced_and_kept_to_by_the_driver(monkeypatch):
    """``BoardTop(max_payload=48)``: IDENTIFY reports 48, the link takes a 48-byte frame and
    NAKs a 49-byte one (BAD_LENGTH), the driver sends every write in frames of at most 48 bytes,
    and a READ_OUTPUT asking for 1000 bytes is answered with at most 48 (the driver refuses a
    longer answer), all bit-exact through a residual layer."""
    import psconv.firmware.driver as driver_module

    small = 48
    top = BoardTop(CFG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400, max_payload=small)
    assert top.link_max_payload() == small
    transport = SimulatorTransport(top, top.rx_data, top.tx_data)
    sent = []                                  # payload bytes of every frame the host sends
    write = transport.write
    monkeypatch.setattr(transport, "write", lambda frame: (sent.append(len(frame) - 8), write(frame)))
    driver = Driver(transport, CFG, timeout_s=5e-3, retries=1)
    assert driver.identify()["max_payload"] == small and driver.max_payload == small
    with pytest.raises(LinkNak, match="BAD_STATE"):      # 48 bytes pass the link
        driver.link.request(Command.WRITE_FMAP, bytes(small))
    with pytest.raises(LinkNak, match="BAD_LENGTH"):     # 49 do not
        driver.link.request(Command.WRITE_FMAP, bytes(small + 1))
    assert driver.link.stats.retransmissions == 1        # the link NAK is retried, as documented

    g = torch.Generator().manual_seed(3)
    sent.clear()
    step, x, res, expected = make_step("3x3 PSD1_P4 residual", paper_family(1, 4, dense_kernel=True),
                                       6, 5, 6, g, residual=True)
    out, report = driver._run_step(step, x, res)
    assert describe_mismatch(step.layer, expected, out) is None
    assert max(sent) == small       # the fmap (6 x 36 bytes) went in full 48-byte frames

    # every READ_OUTPUT asks for 1000 bytes, the first only once the engine is done: its whole
    # output (5 x 6 x 3 beats, 180 bytes) waits in the FIFO
    reads = []

    def ask_1000(n):
        if not reads:
            transport.clock.sleep(0.005)
        reads.append(n)
        return read_output_payload(1000)

    monkeypatch.setattr(driver_module, "read_output_payload", ask_1000)
    step, x, res, expected = make_step("3x3 dense", dense_family(), 4, 5, 6, g)
    out, report = driver._run_step(step, x, res)
    assert describe_mismatch(step.layer, expected, out) is None
    assert report.payload_bytes_received == 180 and len(reads) >= 180 // small


class SerialHarness(wiring.Component):
    """The board top on its UART pins, with a host-side UART (the FTDI chip) in front."""

    def __init__(self, config, clk_freq, baud):
        self.board = BoardTop(config, clk_freq, baud)
        super().__init__({"rx_data": In(stream.Signature(8)), "tx_data": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = board = self.board
        m.submodules.ftdi = ftdi = UART(divisor=board.divisor)
        m.d.comb += [board.rx.eq(ftdi.tx), ftdi.rx.eq(board.tx)]
        wiring.connect(m, wiring.flipped(self.rx_data), ftdi.tx_data)
        wiring.connect(m, ftdi.rx_data, wiring.flipped(self.tx_data))
        return m


def test_identify_and_nak_over_the_uart_pins():
    dut = SerialHarness(CFG, 4_000_000, 1_000_000)      # divisor 4: 40 cycles per byte
    assert dut.board.divisor == 4 and dut.board.timeout_cycles == 20_000
    transport = SimulatorTransport(dut, dut.rx_data, dut.tx_data)
    client = LinkClient(transport, timeout_s=8e-3, retries=1)
    assert client.request(Command.IDENTIFY).payload == identity_blob(CFG)
    with pytest.raises(LinkNak, match=r"READ_OUTPUT \(seq \d+\) refused by the device: NAK BAD_STATE"):
        client.request(Command.READ_OUTPUT, read_output_payload(16))
    assert client.stats.retransmissions == 0


@pytest.mark.parametrize("board, clock_mhz, constraints", [
    ("icebreaker", None, "top.pcf"),
    ("ulx3s-85f", 45, "top.lpf"),
])
def test_board_top_requests_only_the_uart_and_takes_the_planned_clock(board, clock_mhz,
                                                                     constraints, tmp_path):
    """What ``psconv build`` elaborates (no tools run): the FTDI UART's rx/tx pins, nothing else
    (ULX3S's uart_tx_enable stays unrequested), in a sync domain at the planned clock."""
    from psconv.rtl_gen.clocking import make_platform, plan_clock

    plan = plan_clock(board, clock_mhz)
    top = BoardTop(CFG, plan.actual_hz, 3_000_000)
    assert top.divisor == {"icebreaker": 4, "ulx3s-85f": 15}[board]
    files = make_platform(board, plan).build(top, name="top", build_dir=str(tmp_path),
                                             do_build=False).files
    pins = files[constraints]
    assert "uart_0__rx__io" in pins and "uart_0__tx__io" in pins
    assert "uart_tx_enable" not in pins and "led" not in pins


def test_psconv_build_gives_the_icebreaker_top_its_smaller_link_buffers(tmp_path):
    """Left at None, max_payload is the board's when ``psconv build`` elaborates the top (its
    platform carries the board), MAX_PAYLOAD elsewhere; an explicit one wins."""
    from psconv.rtl_gen.boards import get_board
    from psconv.rtl_gen.clocking import make_platform

    top = BoardTop(CFG, 12_000_000, 3_000_000)
    icebreaker = make_platform("icebreaker")
    assert get_board("icebreaker").link_max_payload == 512
    assert top.link_max_payload(icebreaker) == 512
    assert top.link_max_payload(make_platform("ulx3s-85f")) == MAX_PAYLOAD
    assert top.link_max_payload() == MAX_PAYLOAD
    assert BoardTop(CFG, 12_000_000, 3_000_000, max_payload=256).link_max_payload(icebreaker) == 256
    rtlil = icebreaker.build(top, name="top", build_dir=str(tmp_path), do_build=False).files["top.il"]
    assert "memory width 8 size 512 \\replay_buffer" in rtlil
    assert "memory width 8 size 512 \\buffer" in rtlil      # the receiver's


def test_board_top_refuses_a_max_payload_the_processor_cannot_answer_in():
    with pytest.raises(PsconvError, match=r"max_payload 33 is too small .* allowed: 34\.\.65535"):
        BoardTop(CFG, 12_000_000, 3_000_000, max_payload=33)
    with pytest.raises(PsconvError, match=r"max_payload 65536 must be an integer in 1\.\.65535"):
        BoardTop(CFG, 12_000_000, 3_000_000, max_payload=65536)


def test_board_top_refuses_a_baud_its_clock_cannot_make():
    with pytest.raises(PsconvError, match=r"3000000 at 25000000 Hz: divisor 8 .*4\.2% off"):
        BoardTop(CFG, 25_000_000, 3_000_000)
    assert BoardTop(CFG, 25_000_000, 115_200).divisor == 217
