"""Weight buffer: loads exactly C_out * cycles words of engine_weight_words, reads them back."""

import torch

from psconv.families import paper_family
from psconv.firmware.packing import engine_weight_words, pack_layer
from psconv.protocol.beats import unpack_bytes, weight_beats
from psconv.hw.weight_buffer import WeightBuffer

from hw_sim_helpers import small_config
from sim_helpers import raw, run, stream_put


def test_load_count_and_readback():
    config = small_config(tn=4)
    family = paper_family(1, 4, dense_kernel=True)
    c_out, c_in = 5, 6
    g = torch.Generator().manual_seed(11)
    weight = torch.randint(-128, 128, (c_out, c_in, 3, 3), generator=g) * family.weight_mask(c_out, c_in).to(torch.int64)
    words = engine_weight_words(pack_layer(weight.to(torch.int8), family), config.tn, config.patch_channels)
    cycles = words.shape[0] // c_out
    beats = weight_beats(words)
    dut = WeightBuffer(config)
    progress = []

    async def tb(ctx):
        ctx.set(dut.out_channels, c_out)
        ctx.set(dut.cycles_per_output, cycles)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert not ctx.get(dut.weight_in.ready), "must not load before load_enable"
        ctx.set(dut.load_enable, 1)
        for k, beat in enumerate(beats):
            await stream_put(ctx, dut.weight_in, beat)
            progress.append(ctx.get(dut.loaded_channels))
        # one beat too many: must not be accepted
        ctx.set(dut.weight_in.valid, 1)
        ctx.set(raw(dut.weight_in.payload), 0x7F7F7F7F)
        for _ in range(3):
            await ctx.tick()
            assert not ctx.get(dut.weight_in.ready)
        ctx.set(dut.weight_in.valid, 0)
        for addr in range(len(beats)):
            ctx.set(dut.read_addr, addr)
            await ctx.tick()
            got = unpack_bytes(ctx.get(raw(dut.read_data)), config.tn)
            assert got == words[addr].tolist(), f"word {addr}"

    run(dut, tb)
    assert progress == [(k + 1) // cycles for k in range(len(beats))]
