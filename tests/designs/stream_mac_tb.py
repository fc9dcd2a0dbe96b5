"""cocotb bench for ``StreamMac`` (tests/designs/stream_mac.py), run by tests/test_sim_infra.py.

The packets, the bias, the expected results and the port map come from the JSON file that
``psconv.sim.runner.run(data=...)`` passes through ``PSCONV_TB_DATA``; payloads are packed and
unpacked with the port map's field offsets, so this also checks those offsets against the RTL.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from psconv.rtl_gen.verilog import find_port, pack_fields, unpack_fields
from psconv.sim.runner import tb_data


async def reset(dut, bias=0):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.operands__valid.value = 0
    dut.operands__payload.value = 0
    dut.results__ready.value = 0
    dut.bias.value = bias
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def test_reset_state(dut):
    await reset(dut)
    await ReadOnly()
    assert int(dut.results__valid.value) == 0
    assert int(dut.packets.value) == 0
    assert int(dut.operands__ready.value) == 1


@cocotb.test()
async def test_packets_with_backpressure(dut):
    data = tb_data()
    ports = data["ports"]
    operand_port = find_port(ports, "operands__payload")
    result_port = find_port(ports, "results__payload")
    pair_port = find_port(ports, "last_pair")
    rng = random.Random(data["seed"])
    await reset(dut, data["bias"])

    beats = []
    for packet in data["packets"]:
        for index, (a, b) in enumerate(packet):
            beats.append({"a": a, "b": b, "last": int(index == len(packet) - 1)})
    expected = data["expected"]
    received = []
    current = None
    last_sent = None
    for _cycle in range(40 * len(beats) + 100):
        # Drive for this cycle (just after the rising edge), then sample the settled handshake.
        if current is None and beats and rng.random() < 0.7:
            current = beats.pop(0)
        dut.operands__valid.value = int(current is not None)
        dut.operands__payload.value = pack_fields(operand_port, current or {})
        dut.results__ready.value = int(rng.random() < 0.5)
        await ReadOnly()
        sent = current is not None and int(dut.operands__ready.value) == 1
        if int(dut.results__valid.value) and int(dut.results__ready.value):
            received.append(unpack_fields(result_port, int(dut.results__payload.value)))
        await RisingEdge(dut.clk)
        if sent:
            last_sent, current = current, None
        if len(received) == len(expected):
            break
    assert received == expected, f"got {received}, expected {expected}"
    await ReadOnly()
    assert int(dut.packets.value) == len(expected)
    pair = unpack_fields(pair_port, int(dut.last_pair.value))
    assert (pair["0"], pair["1"]) == (last_sent["a"], last_sent["b"])
    # A signed payload read through cocotb 2.x's LogicArray API agrees with the port map.
    assert dut.bias.value.to_signed() == data["bias"]
