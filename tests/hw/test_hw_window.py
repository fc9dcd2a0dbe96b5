"""Feature-map buffer + window generator vs a direct Python computation of the patches."""

import random

import pytest
import torch

from psconv.protocol.beats import fmap_beats, unpack_bytes
from psconv.schedule import output_size
from psconv.hw.window import (WindowGenerator, bank_columns, patch_address_bits, patch_tap_column,
                              patch_window_bytes)

from hw_sim_helpers import small_config
from sim_helpers import raw, run, stream_put


def reference_patch(x, y, x0, c, stride, tm, out_w):
    """tm x 9 taps of channel c for output pixels (y, x0 + r): xpad[c, y*s + dy, x*s + dx]."""
    _, height, width = x.shape
    patch = []
    for r in range(tm):
        px = x0 + r
        for t in range(9):
            dy, dx = divmod(t, 3)
            iy, ix = y * stride - 1 + dy, px * stride - 1 + dx
            ok = px < out_w and 0 <= iy < height and 0 <= ix < width
            patch.append(int(x[c, iy, ix]) if ok else 0)
    return patch


def reference_window(x, y, x0, c, stride, win):
    """The patch word as stored: rows y*s - 1 + dy, columns x0*s - 1 + k (k < win), 0 outside."""
    _, height, width = x.shape
    word = []
    for dy in range(3):
        for k in range(win):
            iy, ix = y * stride - 1 + dy, x0 * stride - 1 + k
            word.append(int(x[c, iy, ix]) if 0 <= iy < height and 0 <= ix < width else 0)
    return word


def taps_of(word, stride, tm, win, out_w, x0):
    """tm x 9 taps read out of a stored word as the PE array does, 0 for pixels >= out_w."""
    taps = []
    for r in range(tm):
        for t in range(9):
            dy, k = patch_tap_column(r, t, stride)
            taps.append(word[dy * win + k] if x0 + r < out_w else 0)
    return taps


def build_patches(config, x, stride, release_delay=(0, 6), seed=0):
    dut = WindowGenerator(config)
    channels, height, width = x.shape
    out_h, out_w = output_size(height, stride), output_size(width, stride)
    groups = out_h * -(-out_w // config.tm)
    abits = patch_address_bits(config)
    rng = random.Random(seed)
    writes = []
    done = {"flag": False}

    async def feeder(ctx):
        ctx.set(dut.in_channels, channels)
        ctx.set(dut.in_height, height)
        ctx.set(dut.in_width, width)
        ctx.set(dut.stride, stride)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for beat in fmap_beats(config, x):
            await stream_put(ctx, dut.fmap_in, beat)
        for _ in range(20):
            await ctx.tick()
        assert ctx.get(dut.loaded)

    async def consumer(ctx):
        # Plays the compute side: takes each full buffer after a random delay, then releases it.
        expect_buf = 0
        for g in range(groups):
            while not (ctx.get(dut.patch_full) >> expect_buf & 1):
                await ctx.tick()
            for _ in range(rng.randint(*release_delay)):
                await ctx.tick()
            ctx.set(dut.patch_release, 1 << expect_buf)
            await ctx.tick()
            ctx.set(dut.patch_release, 0)
            expect_buf ^= 1
        for _ in range(10):
            await ctx.tick()
        done["flag"] = True

    async def monitor(ctx):
        while not done["flag"]:
            _, _, en, addr, data, full = await ctx.tick().sample(dut.patch_en, dut.patch_addr,
                                                            raw(dut.patch_data), dut.patch_full)
            if en:
                buf = addr >> abits
                assert not (full >> buf & 1), "patch written into a buffer still in use"
                writes.append((addr, unpack_bytes(data, 3 * patch_window_bytes(config))))

    run(dut, feeder, consumer, monitor)
    return writes, out_h, out_w


CASES = [
    # (C, H, W, stride, tn (beat bytes), max_width)
    (3, 5, 7, 1, 4, 8),      # rows straddle 4-byte beats; W_out % tm != 0
    (4, 6, 9, 2, 4, 16),     # stride 2, odd width
    (2, 1, 3, 1, 4, 8),      # one input row: top and bottom padding in every window
    (5, 4, 2, 2, 8, 8),      # several rows per beat
    (2, 7, 16, 1, 8, 16),    # rows exactly two beats, full max_width
    (1, 3, 5, 1, 4, 8),      # one channel: the last row is known from the first
    (1, 1, 3, 1, 8, 8),      # the whole map in one padded beat
]


def check_patches(config, channels, height, width, stride):
    """Every patch write of a random map, in order: the stored word against
    :func:`reference_window`, and the taps the PE array reads out of it against the direct
    :func:`reference_patch`."""
    torch.manual_seed(channels * 100 + height * 10 + width)
    x = torch.randint(-128, 128, (channels, height, width))
    writes, out_h, out_w = build_patches(config, x, stride, seed=channels)
    abits, tm, win = patch_address_bits(config), config.tm, patch_window_bytes(config)
    expected = []
    g = 0
    for y in range(out_h):
        for x0 in range(0, out_w, tm):
            for c in range(channels):
                expected.append(((g % 2) << abits | c, x0,
                                 reference_window(x, y, x0, c, stride, win),
                                 reference_patch(x, y, x0, c, stride, tm, out_w)))
            g += 1
    assert len(writes) == len(expected)
    for k, ((addr, word), (want_addr, x0, want_word, want_taps)) in enumerate(zip(writes, expected)):
        assert addr == want_addr, f"write {k}: address differs"
        assert word == want_word, f"write {k}: patch word differs"
        assert taps_of(word, stride, tm, win, out_w, x0) == want_taps, f"write {k}: taps differ"


@pytest.mark.parametrize("channels,height,width,stride,tn,max_width", CASES)
def test_patches_match_reference(channels, height, width, stride, tn, max_width):
    check_patches(small_config(tn=tn, max_width=max_width, max_height=8), channels, height, width,
                  stride)


COLUMN_CASES = [
    # (tm, tn, max_width, columns, C, H, W, stride): banks split into 16-bit column memories
    (1, 2, 8, 2, 3, 5, 7, 1),     # the iCEBreaker shape; rows straddle beats
    (1, 2, 8, 2, 2, 6, 8, 2),     # full max_width, stride 2: windows past the row end
    (1, 1, 8, 2, 2, 3, 8, 1),     # one byte per beat: every piece at a new column offset
    (1, 2, 8, 2, 3, 4, 1, 1),     # one-pixel rows: each piece writes padding and pixel
    (2, 4, 16, 4, 2, 5, 13, 1),   # windows of 5 bytes over 4 columns
    (3, 2, 16, 4, 2, 4, 16, 2),   # tm not a power of two: window offsets step by 1 mod 8
    (2, 4, 32, 4, 1, 3, 29, 2),   # 8 words per row and column memory
]


@pytest.mark.parametrize("tm,tn,max_width,columns,channels,height,width,stride", COLUMN_CASES)
def test_column_split_banks(tm, tn, max_width, columns, channels, height, width, stride):
    config = small_config(tm=tm, tn=tn, max_width=max_width, max_height=8)
    assert bank_columns(config)[0] == columns
    check_patches(config, channels, height, width, stride)


def test_wide_rows_when_columns_would_not_be_narrower():
    """The column split is only taken when it reads fewer bytes than a row and stays one
    block RAM deep; the ULX3S shape (683-word banks) keeps whole rows."""
    assert bank_columns(small_config(tm=2, tn=4, max_width=8)) == (0, 0)
    assert bank_columns(small_config(tm=4, tn=8, max_width=32, fmap_depth=65536,
                                     max_height=32)) == (0, 0)


def test_pointwise_centre_tap_is_the_strided_pixel():
    """A 1x1 layer reads only tap 4: it must be x[c, y*s, x*s] (padding 0 geometry)."""
    config = small_config(tn=4, max_width=8)
    x = torch.randint(-128, 128, (2, 5, 6), generator=torch.Generator().manual_seed(3))
    writes, out_h, out_w = build_patches(config, x, 2)
    tm, win = config.tm, patch_window_bytes(config)
    k = 0
    for y in range(out_h):
        for x0 in range(0, out_w, tm):
            for c in range(2):
                taps = taps_of(writes[k][1], 2, tm, win, out_w, x0)
                k += 1
                for r in range(tm):
                    if x0 + r < out_w:
                        assert taps[9 * r + 4] == int(x[c, 2 * y, 2 * (x0 + r)])
