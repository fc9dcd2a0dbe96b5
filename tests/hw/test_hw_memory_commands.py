"""The resident memory commands' processor on its own (the board-level tests are in
tests/e2e/test_resident_gateware.py; its formal properties in tests/formal)."""

from psconv.hw.memory_commands import MemoryCommandProcessor
from psconv.protocol.codes import Command, Status

from sim_helpers import run, stream_get, stream_put


def test_read_mem_of_zero_bytes_answers_empty_data_and_is_ready_again():
    """READ_MEM of length 0 (inside the memory): DATA with no bytes, then idle again (it used to
    wait for a load it never issued, refusing every later resident command)."""
    dut = MemoryCommandProcessor(memory_bytes=64, max_payload=32)
    payload = (5).to_bytes(4, "little") + (0).to_bytes(2, "little")   # address 5, length 0
    replies = []

    async def link(ctx):
        for _ in range(2):                          # twice: the second needs it idle again
            await stream_put(ctx, dut.command, {"seq": 0, "code": Command.READ_MEM,
                                                "length": len(payload)})
            for i, byte in enumerate(payload):
                await stream_put(ctx, dut.command_payload,
                                 {"data": byte, "last": int(i == len(payload) - 1)})
            replies.append(await stream_get(ctx, dut.reply))

    run(dut, link, max_cycles=200)
    assert [(r["status"], r["length"]) for r in replies] == [(Status.DATA, 0)] * 2
