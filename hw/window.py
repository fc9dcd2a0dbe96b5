"""Feature-map buffer and window generator: input rows in, one patch word per channel per cycle.

**Feature-map buffer (line buffers).** The layer's whole input map is stored, one memory word per
input row of one channel (``max_width`` bytes). Row y of channel c is *linear row*
``L = c*H + y + 1`` and lives in bank ``L mod 3`` at address ``L div 3``. Any three consecutive
linear rows sit in three different banks, so the three input rows a 3x3 window needs
(y*s - 1, y*s, y*s + 1 of one channel) are read in one cycle, and the banks are packed with no
holes whatever H is (C_in * H <= ``fmap_depth // max_width`` rows). The ``+ 1`` keeps the row above
the map (padding) at a non-negative address. A small buffer (see :func:`bank_columns`) splits
each bank into J column memories of 16-bit words of the left-padded row and reads, per bank, only
the J words that hold the window (``2*J`` bytes instead of ``max_width``): on an iCE40, whose
block RAMs are at most 16 bits wide, the tiny configuration needs 6 block RAMs instead of 12.

**Loading.** ``fmap_in`` carries the map in CHW order as a flat byte stream, ``tn`` bytes per beat
(element 0 in bits 7:0), only the last beat zero-padded. A gearbox writes, each cycle, the bytes
of the current beat that belong to the current row, ``min(beat bytes left, row bytes left)``, into
the row's word with byte enables (column-split banks: into the J words those bytes fall in, plus
the padding zero at a row's start; whole-row banks write it a cycle later, from registers); a
beat spanning a row end takes one more cycle. Cycles:
``C*H + beats - 1 - (C*H*W - 1) // lcm(W, tn)`` (one per row/beat piece).

**Keeping the map.** ``keep_map`` at ``start`` skips the load: the banks still hold the map of
the previous layer, and the caller promises it is this layer's (same C, H, W and bytes; the
resident runner checks that, :mod:`psconv.hw.program_runner`). Building starts once the H divmod
3 division is done.

**Window generator.** For each pixel group (output row y, column block xb, x = xb*tm + r), in the
order y, xb, it builds one *patch word* per input channel c holding, for each of the tm pixels, the
9 taps ``xpad[c, y*s + dy, x*s + dx]`` (t = 3*dy + dx), zero for padding rows/columns (layout:
:func:`patch_layout`). A 1x1 layer is built the same way (its centre tap t = 4 is
``x[c, y*s, x*s]``; its mask table selects only that tap). Per cycle: read 3 banks (R0), register the rows
(R1), cut a ``2*tm + 1``-byte window out of each row at column ``x0*s - 1`` (a mux over
``max_width / tm`` block positions, or over the window's offset in the J words read) and zero padding rows and
columns (R1b), rotate the banks into dy order (R2), write the patch word (R3). The patch word is
those three windows, not the tm x 9 taps: the taps of neighbouring pixels overlap, so the word is
``3 * (2*tm + 1)`` bytes instead of ``9*tm`` (27 against 36 at tm = 4), and the PE array picks
pixel r's tap (dy, dx) at window column ``r*s + dx``. The taps of pixels x >= W_out are left as
they are (map columns or zeros): the post-processor outputs 0 for them. One channel per cycle; a
group's buffer is flagged full C_in + 4 cycles after its first read. With input-channel passes
(C_in > ``patch_channels``) a group is built once per pass, each build reading the pass's channels
(the next build continues where the last stopped) into the next buffer.

**Double-buffered patch memory.** Patch words go to buffer ``b mod 2`` (b counts builds) of the PE
array's patch memory at address ``(b mod 2) * patch_channels + (c mod patch_channels)``. ``patch_full[b]`` is set when
buffer b holds a complete group and cleared by ``patch_release[b]`` (the compute side is done
reading it); the generator fills the other buffer meanwhile, so the next group's patch is ready
when the current group's output channels finish.
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from psconv.families import NUM_TAPS
from psconv.protocol.beats import fmap_beat_bytes
from psconv.schedule import fmap_rows_capacity

from .arith import SerialDivider
from .block_ram import collision_free_memory, read_port


def patch_layout(config) -> data.ArrayLayout:
    """A patch word: ``patch[dy][k] = xpad[c, y*s + dy, x0*s + k]``, int8 (``xpad`` the map with
    its padding border, so k = 0 is column ``x0*s - 1``), k < ``2*tm + 1``: the window rows of a
    pixel group, which pixel r reads at ``k = r*s + dx`` for tap ``t = 3*dy + dx``. Bytes past
    the map are zero."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), patch_window_bytes(config)), 3)


def patch_window_bytes(config) -> int:
    """Bytes of one window row: the columns ``tm`` pixels span at stride 2 (stride 1 uses the
    first ``tm + 2``)."""
    return 2 * config.tm + 1


def patch_tap_column(r: int, tap: int, stride: int) -> tuple[int, int]:
    """``(dy, k)``: where pixel r's tap t sits in a patch word at stride 1|2."""
    dy, dx = divmod(tap, NUM_TAPS // 3)
    return dy, r * stride + dx


def patch_address_bits(config) -> int:
    """Channel bits of a patch address (buffer select is the bit above): the channel within its
    input-channel pass, ``patch_channels`` per buffer."""
    return max(1, ceil_log2(config.patch_channels))


COLUMN_WORD_BYTES = 2
"""Word of a column memory: 16 bits, the widest iCE40 block RAM port."""
COLUMN_MAX_DEPTH = 256
"""Words of one block RAM at that width. A deeper column memory would put a multiplexer between
the block RAM outputs and the R1 register, so deeper banks keep whole rows."""


def bank_columns(config) -> tuple[int, int]:
    """``(J, D)``: each feature-map bank is J column memories of D words per row, or ``(0, 0)``
    for one memory of whole-row words.

    A column-split bank stores the padded row (byte 0 the left padding zero, then the row) as
    ``COLUMN_WORD_BYTES``-byte words, word w in column ``w mod J`` at address ``row * D + w div J``
    (J and D powers of two). Any ``J * COLUMN_WORD_BYTES`` consecutive padded bytes are in J
    different columns, so one access per column reaches a window at any offset, or a loader piece
    (a beat's bytes, plus the padding byte at a row start) at any offset. Chosen when that reads
    fewer bytes than a whole row and the columns stay one block RAM deep: on an iCE40 the block
    RAM count is set by the bits read per cycle, not by capacity."""
    ww, beat, win = COLUMN_WORD_BYTES, fmap_beat_bytes(config), patch_window_bytes(config)
    bank_depth = (fmap_rows_capacity(config) + 1) // 3 + 1
    columns = 1 << ceil_log2(-(-max(beat + ww - 1, beat + 1, win + ww - 1) // ww))
    slots = 1 << ceil_log2(-(-(config.max_width + 1) // (ww * columns)))
    if columns * ww >= config.max_width or bank_depth * slots > COLUMN_MAX_DEPTH:
        return 0, 0
    return columns, slots


class WindowGenerator(wiring.Component):
    def __init__(self, config):
        self.config = config
        self.beat_bytes = fmap_beat_bytes(config)
        self.rows_capacity = fmap_rows_capacity(config)
        self.bank_depth = (self.rows_capacity + 1) // 3 + 1
        self.window_bytes = patch_window_bytes(config)
        self.patch_layout = patch_layout(config)
        self.columns, self.row_slots = bank_columns(config)
        super().__init__({
            "start": In(1),
            "in_channels": In(range(config.max_in_channels + 1)),
            "in_height": In(range(config.max_height + 1)),
            "in_width": In(range(config.max_width + 1)),
            "stride": In(2),
            "keep_map": In(1),
            "fmap_in": In(stream.Signature(data.ArrayLayout(signed(8), self.beat_bytes))),
            "loaded": Out(1),
            "patch_full": Out(2),
            "patch_release": In(2),
            "patch_addr": Out(patch_address_bits(config) + 1),
            "patch_data": Out(self.patch_layout),
            "patch_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        tm, maxw, beat = cfg.tm, cfg.max_width, self.beat_bytes
        win = self.window_bytes
        row_bits = maxw * 8

        columns, ww = self.columns, COLUMN_WORD_BYTES
        span = columns * ww                      # padded row bytes one column-split access sees
        sbits, wbits, jbits = ceil_log2(span), ceil_log2(ww), ceil_log2(max(columns, 1))
        slot_bits = ceil_log2(max(self.row_slots, 1))
        # banks[k][j]: (write port, read port) of column j of bank k (one column: whole rows).
        # A bank is written only while loading (whole rows: and in the cycle after, the last
        # piece's write) and read (its register enabled) only outside it; the builder's first
        # read comes two cycles after loading ends, so no read it uses meets a write: read
        # ports without collision logic (psconv.hw.block_ram).
        banks = []
        for k in range(3):
            ports = []
            for j in range(max(columns, 1)):
                if columns:
                    mem = collision_free_memory(shape=unsigned(8 * ww),
                                                depth=self.bank_depth * self.row_slots)
                    m.submodules[f"bank{k}_col{j}"] = mem
                else:
                    mem = collision_free_memory(shape=unsigned(row_bits), depth=self.bank_depth)
                    m.submodules[f"bank{k}"] = mem
                ports.append((mem.write_port(granularity=8), read_port(m, mem, f"bank_read{k}_{j}")))
            banks.append(ports)

        def column_slot(word, j):
            """Address within its row of the one word among ``word .. word + J - 1`` that lives
            in column j."""
            return (word[jbits:] + (word[:jbits] > j))[:slot_bits]

        height, width, stride = self.in_height, self.in_width, self.stride

        # H divmod 3: the linear-row step between channels, split into bank address and bank.
        div = m.submodules.divider = SerialDivider(ceil_log2(cfg.max_height + 1) or 1, 2)
        m.d.comb += [div.start.eq(self.start), div.dividend.eq(height), div.divisor.eq(3)]
        height_q, height_r = div.quotient, div.remainder

        # ---------------- loading: CHW byte stream -> row words ----------------
        # ld_x/ld_j (row and beat positions) drive the shifts; row_left/beat_left and the
        # last_y/last_c flags are kept alongside them so that the beat/row-end decisions, and
        # ``fmap_in.ready`` with them, are one comparison of registers (no add-then-compare).
        loading = Signal()
        ld_c = Signal(range(cfg.max_in_channels + 1))
        ld_y = Signal(range(cfg.max_height + 1))
        ld_x = Signal(range(maxw + 1))
        ld_j = Signal(range(beat + 1))
        ld_q = Signal(range(self.bank_depth + 1))
        ld_r = Signal(range(3))
        row_left = Signal(range(maxw + 1))       # width - ld_x
        beat_left = Signal(range(beat + 1))      # beat - ld_j
        last_y = Signal()                        # ld_y + 1 == height
        last_c = Signal()                        # ld_c + 1 == in_channels
        row_end = Signal()                       # the row's bytes left fit in this beat
        beat_end = Signal()                      # the beat's bytes left fit in this row
        m.d.comb += [row_end.eq(row_left <= beat_left), beat_end.eq(beat_left <= row_left)]
        last_row = row_end & last_y & last_c
        take = loading & self.fmap_in.valid
        m.d.comb += self.fmap_in.ready.eq(loading & (beat_end | last_row))
        if not columns:
            # The piece taken is written a cycle later, from registers: the piece (the beat
            # shifted down to its first byte, ``ld_j``), its position and its end (the row-end
            # compare, the byte-enable compares and the banks' write enables were one path; the
            # two byte shifts, down by ``ld_j`` and up by ``ld_x``, were 9 LUT levels on the
            # ULX3S, so the first is done before the register). The builder reads a bank two
            # cycles after ``loaded`` at the earliest, after the last write.
            row_stop = Signal(range(maxw + 1))       # ld_x + min(beat_left, row_left)
            m.d.comb += row_stop.eq(Mux(row_end, width, ld_x + beat_left))
            w_piece = Signal(8 * beat, name="write_piece")
            w_x, w_stop = Signal.like(ld_x), Signal.like(row_stop)
            w_q, w_bank = Signal.like(ld_q), Signal(3)
            m.d.sync += [w_piece.eq(self.fmap_in.payload.as_value() >> Cat(C(0, 3), ld_j)),
                         w_x.eq(ld_x), w_stop.eq(row_stop), w_q.eq(ld_q),
                         w_bank.eq(Cat(*[take & (ld_r == k) for k in range(3)]))]
            shifted = Signal(row_bits)
            m.d.comb += shifted.eq(w_piece << Cat(C(0, 3), w_x))
            for k, [(wp, _)] in enumerate(banks):
                m.d.comb += [wp.addr.eq(w_q), wp.data.eq(shifted)]
                with m.If(w_bank[k]):
                    for b in range(maxw):
                        m.d.comb += wp.en[b].eq((w_x <= b) & (b < w_stop))
        else:
            # Padded bytes first .. first + count - 1 are written (a row's first piece also
            # writes the padding zero, byte 0); padded byte p goes to byte p mod span of the
            # rotated beat, i.e. column (p div ww) mod J.
            pad = Signal()
            first = Signal(range(maxw + 1))
            count = Signal(range(beat + 2))
            m.d.comb += [pad.eq(ld_x == 0), first.eq(Mux(pad, 0, ld_x + 1)),
                         count.eq(Mux(row_end, row_left, beat_left) + pad)]
            # The beat repeated to span bytes: a written byte's source index is below beat in
            # any case, and the repetition makes the rotation a mux over beat, not span, sources.
            beat_word = Cat(*[self.fmap_in.payload[i % beat] for i in range(span)])
            rotated = Signal(8 * span)
            m.d.comb += rotated.eq((Cat(beat_word, beat_word)
                                    >> Cat(C(0, 3), (ld_j - ld_x - 1)[:sbits]))[:8 * span])
            data = Cat(Mux(pad, 0, rotated[:8]), rotated[8:])
            byte_en = Cat(*[(C(q, sbits) - first[:sbits])[:sbits] < count for q in range(span)])
            for k, ports in enumerate(banks):
                for j, (wp, _) in enumerate(ports):
                    m.d.comb += [wp.addr.eq(Cat(column_slot(first[wbits:], j), ld_q)),
                                 wp.data.eq(data.word_select(j, 8 * ww))]
                    with m.If(take & (ld_r == k)):
                        m.d.comb += wp.en.eq(byte_en.word_select(j, ww))
        with m.If(self.start):
            m.d.sync += [loading.eq(~self.keep_map), self.loaded.eq(self.keep_map),
                         ld_c.eq(0), ld_y.eq(0), ld_x.eq(0), ld_j.eq(0), ld_q.eq(0), ld_r.eq(1), row_left.eq(width),
                         beat_left.eq(beat), last_y.eq(height == 1),
                         last_c.eq(self.in_channels == 1)]
        with m.Elif(take):
            with m.If(self.fmap_in.ready):
                m.d.sync += [ld_j.eq(0), beat_left.eq(beat)]
            with m.Else():      # the row ends inside this beat: row_left bytes taken
                m.d.sync += [ld_j.eq(ld_j + row_left), beat_left.eq(beat_left - row_left)]
            with m.If(row_end):
                m.d.sync += [ld_x.eq(0), row_left.eq(width)]
                with m.If(ld_r == 2):
                    m.d.sync += [ld_r.eq(0), ld_q.eq(ld_q + 1)]
                with m.Else():
                    m.d.sync += ld_r.eq(ld_r + 1)
                with m.If(last_y):
                    m.d.sync += [ld_y.eq(0), ld_c.eq(ld_c + 1), last_y.eq(height == 1),
                                 last_c.eq(ld_c + 2 == self.in_channels)]
                with m.Else():
                    m.d.sync += [ld_y.eq(ld_y + 1), last_y.eq(ld_y + 2 == height)]
                with m.If(last_row):
                    m.d.sync += [loading.eq(0), self.loaded.eq(1)]
            with m.Else():      # the beat ends inside this row: beat_left bytes taken
                m.d.sync += [ld_x.eq(ld_x + beat_left), row_left.eq(row_left - beat_left)]

        # ---------------- patch building ----------------
        # Output rows and columns are tracked only as input positions: output y (x) is the last
        # when (y + 1) * s >= H (W), and pixel x exists when x * s < W.
        g_ys = Signal(range(2 * cfg.max_height + 2))     # y * s
        g_ysq = Signal(range(cfg.max_height + 1))        # (y * s) divmod 3
        g_ysr = Signal(range(3))
        g_x0s = Signal(range(2 * cfg.max_width + 2 * tm + 1))  # x0 * s, x0 the block's first column
        n_blocks = (maxw - 1) // tm + 1
        g_blk = Signal(range(2 * n_blocks + 2))          # x0 * s / tm
        # The window's position at R1b: the block x0*s/tm for whole rows; for column-split
        # banks x0*s mod span (in steps of gcd(tm, span), the only offsets that occur).
        step_bits = min((tm & -tm).bit_length() - 1, sbits)
        win_pos = g_x0s[step_bits:sbits] if columns else g_blk
        g_buf = Signal()
        rd_c = Signal(range(cfg.max_in_channels + 1))
        rd_q = Signal(range(cfg.max_in_channels * (cfg.max_height // 3 + 1) + 2))
        rd_r = Signal(range(3))
        building = Signal()
        all_built = Signal()
        resume = Signal()        # the next build is the next pass of the same pixel group
        pass_bits = (cfg.patch_channels - 1).bit_length()

        # R0 -> R1 pipeline registers
        v1 = Signal()
        last1 = Signal()
        c1 = Signal.like(rd_c)
        buf1 = Signal()
        r1 = Signal(range(3))
        blk1 = Signal(len(win_pos))
        top_ok1 = Signal()
        bottom_ok1 = Signal()
        col_ok1 = Signal(win)

        def delayed(suffix, *signals):
            """Registered copies of ``signals`` (one pipeline stage further)."""
            copies = [Signal.like(s, name=f"{s.name}_{suffix}") for s in signals]
            m.d.sync += [c.eq(s) for c, s in zip(copies, signals)]
            return copies

        # R1 -> R1b: the same, one cycle later (the bank rows are registered at R1)
        (v1r, last1r, c1r, buf1r, r1r, blk1r, top_ok1r, bottom_ok1r, col_ok1r) = delayed(
            "r", v1, last1, c1, buf1, r1, blk1, top_ok1, bottom_ok1, col_ok1)
        # R1b -> R2
        v2, last2, c2, buf2, r2 = delayed("2", v1r, last1r, c1r, buf1r, r1r)
        last3, buf3 = Signal(), Signal()                    # R2 -> R3

        for k, ports in enumerate(banks):
            row_addr = rd_q + (k < rd_r)
            for j, (_, rp) in enumerate(ports):
                if columns:
                    m.d.comb += rp.addr.eq(Cat(column_slot(g_x0s[wbits:], j), row_addr))
                else:
                    m.d.comb += rp.addr.eq(row_addr)

        # A build of 1-2 channels can end before the one two builds back (same buffer) has set
        # its full flag: do not start on a buffer whose flag is still on its way.
        flag_pending = Signal()
        m.d.comb += flag_pending.eq((v1 & last1 & (buf1 == g_buf)) | (v1r & last1r & (buf1r == g_buf))
                                    | (v2 & last2 & (buf2 == g_buf)) | (last3 & (buf3 == g_buf)))
        m.d.sync += [v1.eq(0)]
        with m.If(self.start):
            m.d.sync += [g_ys.eq(0), g_ysq.eq(0), g_ysr.eq(0), g_x0s.eq(0),
                         g_blk.eq(0), g_buf.eq(0), building.eq(0), all_built.eq(0), resume.eq(0)]
        with m.Elif(~building & ~all_built & self.loaded & div.done
                    & ~self.patch_full.bit_select(g_buf, 1) & ~flag_pending):
            m.d.sync += building.eq(1)
            with m.If(~resume):
                m.d.sync += [rd_c.eq(0), rd_q.eq(g_ysq), rd_r.eq(g_ysr)]
        with m.Elif(building):
            last = rd_c + 1 == self.in_channels
            pass_end = rd_c[:pass_bits].all() if pass_bits else C(1, 1)
            m.d.sync += [
                v1.eq(1), last1.eq(last | pass_end), c1.eq(rd_c), buf1.eq(g_buf), r1.eq(rd_r), blk1.eq(win_pos),
                top_ok1.eq(g_ys != 0), bottom_ok1.eq(g_ys + 1 < height),
                # A group is built only for x0 < W_out, so x0*s <= W - 1: window bytes 0 and 1
                # (columns x0*s - 1 and x0*s) need no comparator.
                col_ok1.eq(Cat(C(0b11, 2), *[(g_x0s + k) <= width for k in range(2, win)])),
                rd_c.eq(rd_c + 1),
            ]
            with m.If(rd_r + height_r >= 3):
                m.d.sync += [rd_r.eq(rd_r + height_r - 3), rd_q.eq(rd_q + height_q + 1)]
            with m.Else():
                m.d.sync += [rd_r.eq(rd_r + height_r), rd_q.eq(rd_q + height_q)]
            with m.If(pass_end & ~last):
                # end of an input-channel pass: the next build continues with the next channel
                m.d.sync += [building.eq(0), g_buf.eq(~g_buf), resume.eq(1)]
            with m.If(last):
                m.d.sync += [building.eq(0), g_buf.eq(~g_buf), resume.eq(0)]
                next_x0s = g_x0s + Mux(stride == 2, 2 * tm, tm)
                with m.If(next_x0s >= width):
                    m.d.sync += [g_x0s.eq(0), g_blk.eq(0), g_ys.eq(g_ys + stride)]
                    with m.If(g_ysr + stride >= 3):
                        m.d.sync += [g_ysr.eq(g_ysr + stride - 3), g_ysq.eq(g_ysq + 1)]
                    with m.Else():
                        m.d.sync += g_ysr.eq(g_ysr + stride)
                    with m.If(g_ys + stride >= height):
                        m.d.sync += all_built.eq(1)
                with m.Else():
                    m.d.sync += [g_x0s.eq(next_x0s), g_blk.eq(g_blk + stride)]

        # R1: the bank rows registered (nothing after a block RAM output but a flip-flop). The
        # words read (``bank_read``) are the block RAM's own output register.
        rows1 = []
        for k, ports in enumerate(banks):
            words = []
            for j, (_, rp) in enumerate(ports):
                m.d.comb += rp.en.eq(~loading)
                words.append(rp.data)
            row = Signal(len(Cat(*words)), name=f"bank_row{k}", reset_less=True)
            m.d.sync += row.eq(Cat(*words))
            rows1.append(row)

        # R1b: cut a window out of each registered row (one mux -> register), zeroing padding
        # rows and columns there: bank k holds row dy = (k - r) mod 3, so the top padding row
        # (dy 0) is bank r and the bottom one (dy 2) bank r + 2. A zeroed byte is a register
        # clear, not a gate on the data path.
        ext_bytes = 8 * (maxw + 1)
        bank_windows = []
        for k, row in enumerate(rows1):
            row_ok = ~((r1r == k) & ~top_ok1r) & ~((r1r == (k + 1) % 3) & ~bottom_ok1r)
            candidates = []
            if columns:      # padded byte p is row byte p mod span; bytes past W are masked
                for o in range(0, span, 1 << step_bits):
                    candidates.append(Cat(*[row.word_select((o + i) % span, 8) for i in range(win)]))
            else:
                ext = Cat(C(0, 8), row)          # ext byte e = row byte e - 1 (e = 0: left padding)
                for b in range(n_blocks):    # x0*s <= W - 1 < max_width: blocks 0..n_blocks-1
                    lo = b * tm * 8
                    piece = ext[lo:min(lo + win * 8, ext_bytes)]
                    candidates.append(Cat(piece, C(0, win * 8 - len(piece))))
            w = Signal(win * 8, name=f"bank_window{k}")
            picked = Array(candidates)[blk1r]
            m.d.sync += [w.word_select(i, 8).eq(Mux(row_ok & col_ok1r[i], picked.word_select(i, 8),
                                                    0))
                         for i in range(win)]
            bank_windows.append(w)

        # R2: rotate the banks into dy order.
        rows = []
        for dy in range(3):
            sel = Signal(range(3), name=f"bank_of_dy{dy}")
            m.d.comb += sel.eq(Mux(r2 + dy >= 3, r2 + dy - 3, r2 + dy))
            w = Signal(win * 8, name=f"window_dy{dy}")
            m.d.comb += w.eq(Array(bank_windows)[sel])
            rows.append(w)
        patch = Signal(self.patch_layout)
        m.d.comb += [patch[dy].eq(rows[dy]) for dy in range(3)]

        # R3: write the patch word.
        abits = patch_address_bits(cfg)
        m.d.sync += [
            self.patch_en.eq(v2),
            self.patch_addr.eq(Cat((c2 & (cfg.patch_channels - 1))[:abits], buf2)),
            self.patch_data.eq(patch),
        ]
        m.d.sync += [last3.eq(v2 & last2), buf3.eq(buf2)]

        full = Signal(2)
        set_mask = Mux(last3, Mux(buf3, 0b10, 0b01), 0)
        with m.If(self.start):
            m.d.sync += full.eq(0)
        with m.Else():
            m.d.sync += full.eq((full | set_mask) & ~self.patch_release)
        m.d.comb += self.patch_full.eq(full)
        return m
