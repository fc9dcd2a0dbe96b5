"""Testbench pieces for the link tests: the command-processor side of a ``LinkLayer``.

The generic simulator helpers (``run``, ``stream_put``, ``stream_get``) are in
``tests/sim_helpers.py``.
"""

from sim_helpers import stream_get, stream_put


async def take_payload(ctx, link, length):
    """The ``length`` payload bytes of the command whose header was just taken from ``link``."""
    payload = bytearray()
    for _ in range(length):
        payload.append((await stream_get(ctx, link.command_payload)).data)
    return bytes(payload)


async def give_reply(ctx, link, status, payload=b""):
    """Answer the current command on ``link``: the reply header, then ``payload`` byte by byte."""
    await stream_put(ctx, link.reply, {"status": status, "length": len(payload)})
    for b in payload:
        await stream_put(ctx, link.reply_payload, b)
