# amaranth: UnusedElaboratable=no
"""Resident mode in the Amaranth simulator: the board top with memory runs steps from memory.

A hand-laid memory image (program header, step records, tables, maps) is loaded over the real
link with WRITE_MEM, checked with CHECK_MODEL, run with INFER; each step's output is read back
with READ_MEM and compared with the golden model on every element. The NAK rules of
psconv.protocol.memory (no model, wrong CRC, a write into the model, regions outside memory)
are checked on the same board.
"""

import struct

import pytest
import torch

from psconv.families import dense_family, paper_family, pointwise_family
from psconv.firmware.link import LinkClient, LinkNak
from psconv.hw.board_top import BoardTop
from psconv.protocol.codes import Command, NakReason, Status
from psconv.protocol.memory import (BAD_MASKS, BAD_MAX_POOL, MAX_POOL_2X2, MEM_READ_LAYOUT,
                                    MEM_REGION_LAYOUT, MODEL_CHECK_LAYOUT, NO_BAD_RULE,
                                    PROGRAM_HEADER_LAYOUT, RUN_STATUS_LAYOUT, memory_crc,
                                    program_header, step_record, step_record_layout)
from psconv.protocol.descriptor import (DESCRIPTOR_RULES, LayerSpec, describe_rejection,
                                        encode_quant_entry, layer_descriptor_layout)
from psconv.protocol.payloads import (beats_payload, config_hash, decode_payload, encode_payload,
                                      layout_bytes, mask_payload, quant_payload)
from psconv.protocol.beats import weight_beats
from psconv.sim.amaranth_transport import SimulatorTransport
from psconv.sim.cycle_model import runner_max_pool_cycles
from psconv.sim.golden.network import describe_mismatch
from psconv.sim.resident_device import ResidentDevice

from e2e_helpers import TINY_CONFIG, make_step

CFG = TINY_CONFIG
MEMORY = 8192
RECORD_LAYOUT = step_record_layout(CFG)
RECORD_BYTES = layout_bytes(RECORD_LAYOUT)


def record_address(step: int) -> int:
    """Where step ``step``'s record lies in a program at address 0 (after the header)."""
    return layout_bytes(PROGRAM_HEADER_LAYOUT) + step * RECORD_BYTES


def read_record(image, step: int):
    """Step ``step``'s record in ``image``, decoded."""
    at = record_address(step)
    return decode_payload(RECORD_LAYOUT, bytes(image.blob[at:at + RECORD_BYTES]), "record")


def chw_bytes(tensor) -> bytes:
    return bytes((int(v) & 0xFF) for v in tensor.reshape(-1).tolist())


def from_chw(data: bytes, shape) -> torch.Tensor:
    return torch.tensor([b - 256 if b >= 128 else b for b in data], dtype=torch.int64).reshape(shape)


class Image:
    """A memory image laid out by hand: program first, then each step's tables and maps."""

    def __init__(self, steps):
        self.blob = bytearray(MEMORY)
        self.maps = 2048                    # the program and the tables below, maps from here
        self.outputs = []
        records = []
        cursor = 512
        for step, x, res, expected in steps:
            if step == "maxpool":                 # a max-pool step of the map x
                channels, height, width = x.shape
                fmap = self.place(chw_bytes(x), odd=res)
                output = self.place(bytes(expected.numel()))
                spec = LayerSpec(channels, channels, height, width, stride=2, kernel=1)
                records.append(step_record(
                    CFG, spec, fmap_address=fmap[0], fmap_bytes=fmap[1],
                    output_address=output[0], plane_bytes=(height // 2) * (width // 2),
                    max_pool=MAX_POOL_2X2))
                self.outputs.append((output[0], tuple(expected.shape), expected, "maxpool"))
                continue
            spec = step.descriptor
            tables = {}
            for name, payload in (
                    ("masks", mask_payload(step.masks)),
                    ("quant", quant_payload(encode_quant_entry(int(b), int(m), int(s), int(r))
                                            for b, m, s, r in zip(step.bias, step.multiplier,
                                                                  step.shift,
                                                                  step.residual_multiplier))),
                    ("weights", beats_payload(weight_beats(step.weight_words), CFG.tn))):
                self.blob[cursor:cursor + len(payload)] = payload
                tables[name] = (cursor, len(payload))
                cursor += len(payload)
            fmap = self.place(chw_bytes(x))
            residual = self.place(chw_bytes(res))[0] if res is not None else 0
            output = self.place(bytes(expected.numel()))
            plane = spec.result_height * spec.result_width     # the pooled map with ``pool``
            records.append(step_record(
                CFG, spec, masks_address=tables["masks"][0], quant_address=tables["quant"][0],
                weights_address=tables["weights"][0], weight_bytes=tables["weights"][1],
                fmap_address=fmap[0], fmap_bytes=fmap[1], residual_address=residual,
                output_address=output[0], plane_bytes=plane))
            self.outputs.append((output[0], tuple(expected.shape), expected, step.layer))
        program = program_header(config_hash(CFG), len(records)) + b"".join(records)
        assert len(program) <= 512 and cursor <= 2048
        self.blob[:len(program)] = program
        self.blob = self.blob[:self.maps]
        self.model = bytes(self.blob[:cursor])

    def place(self, data: bytes, odd: bool = False):
        """``data`` at the next free word-aligned address (``odd``: one byte past it)."""
        address = self.maps + int(bool(odd))
        self.blob[address:address + len(data)] = data
        self.maps = (address + len(data) + 3) & ~3
        return address, len(data)


class WatchedBoard(BoardTop):
    """The board top, its program runner kept as ``runner`` when elaborated (for a testbench)."""

    def _resident_mode(self, *args):
        self.runner = super()._resident_mode(*args)
        return self.runner


def board(step_ends=None):
    """A link to a fresh simulated board; a list ``step_ends`` receives the runner's ``cycles``
    counter each time a step is counted done."""
    top = WatchedBoard(CFG, 12_000_000, 3_000_000, bridge=True, timeout_cycles=400,
                       memory_bytes=MEMORY)
    testbenches = ()
    if step_ends is not None:
        async def watch(ctx):
            async for (steps,) in ctx.changed(top.runner.steps_done):
                if steps:
                    step_ends.append(ctx.get(top.runner.cycles))

        testbenches = (watch,)
    transport = SimulatorTransport(top, top.rx_data, top.tx_data, testbenches)
    return LinkClient(transport, timeout_s=5e-3, retries=2)


def write_memory(link, address, data, chunk=256):
    for offset in range(0, len(data), chunk):
        link.request(Command.WRITE_MEM, struct.pack("<I", address + offset) + data[offset:offset + chunk])


def read_memory(link, address, length, chunk=256):
    out = bytearray()
    for offset in range(0, length, chunk):
        n = min(chunk, length - offset)
        out += link.request(Command.READ_MEM, encode_payload(
            MEM_READ_LAYOUT, {"address": address + offset, "length": n})).payload
    return bytes(out)


def run_status(link) -> dict:
    payload = link.request(Command.RUN_STATUS).payload
    view = decode_payload(RUN_STATUS_LAYOUT, payload, "RUN_STATUS")
    return {name: view[name] for name, _ in RUN_STATUS_LAYOUT}


def check_model(link, length, crc):
    return link.request(Command.CHECK_MODEL, encode_payload(
        MODEL_CHECK_LAYOUT, {"address": 0, "length": length, "crc": crc}))


def nak_reason(call) -> int:
    with pytest.raises(LinkNak) as info:
        call()
    return info.value.reason


def run_on_reference_board(image):
    """The image's program on the software reference board: (the device, its RUN_STATUS)."""
    device = ResidentDevice(CFG, MEMORY)
    device.memory[:len(image.blob)] = image.blob
    for code, payload in ((Command.CHECK_MODEL, encode_payload(MODEL_CHECK_LAYOUT, {
                               "address": 0, "length": len(image.model),
                               "crc": memory_crc(image.model)})),
                          (Command.INFER, bytes(4))):
        assert device.handle(code, payload).status == Status.ACK
    status = decode_payload(RUN_STATUS_LAYOUT, device.handle(Command.RUN_STATUS, b"").payload,
                            "RUN_STATUS")
    return device, status


def test_runner_executes_every_layer_kind_from_memory_bit_exact():
    g = torch.Generator().manual_seed(5)
    steps = [
        make_step("3x3 PSD1_P4 residual relu", paper_family(1, 4, dense_kernel=True), 6, 5, 5, g,
                  residual=True),
        make_step("first layer (dense, 3 channels)", dense_family(), 3, 4, 6, g),
        make_step("3x3 PS2_P4 stride 2", paper_family(2, 4), 7, 3, 7, g, stride=2, relu=False),
        make_step("1x1 stride 2 shortcut", pointwise_family(), 5, 6, 6, g, stride=2, relu=False),
    ]
    image = Image(steps)
    link = board()
    assert nak_reason(lambda: link.request(Command.INFER, bytes(4))) == NakReason.NO_MODEL
    write_memory(link, 0, bytes(image.blob))
    assert read_memory(link, 0, len(image.blob)) == bytes(image.blob)
    crc = link.request(Command.CRC_MEM, encode_payload(
        MEM_REGION_LAYOUT, {"address": 0, "length": len(image.model)})).payload
    assert int.from_bytes(crc, "little") == memory_crc(image.model)
    assert nak_reason(lambda: check_model(link, len(image.model), memory_crc(image.model) ^ 1)) \
        == NakReason.MODEL_CRC
    check_model(link, len(image.model), memory_crc(image.model))
    assert run_status(link)["model_valid"] == 1
    # a program address outside the checked model is no model either
    assert nak_reason(lambda: link.request(Command.INFER, struct.pack(
        "<I", len(image.model)))) == NakReason.NO_MODEL
    link.request(Command.INFER, bytes(4))
    for _ in range(200):
        status = run_status(link)
        if status["done"]:
            break
    assert status["done"] == 1 and status["running"] == 0 and status["steps_done"] == len(steps)
    assert status["memory_writes"] == sum(e.numel() for _, _, e, _ in image.outputs)
    for address, shape, expected, name in image.outputs:
        out = from_chw(read_memory(link, address, expected.numel()), shape)
        assert describe_mismatch(name, expected, out) is None
    # a write into the checked model withdraws it; outside it does not
    write_memory(link, image.maps, b"\x01")
    assert run_status(link)["model_valid"] == 1
    write_memory(link, 600, b"\x00")
    assert run_status(link)["model_valid"] == 0
    assert nak_reason(lambda: link.request(Command.INFER, bytes(4))) == NakReason.NO_MODEL


def test_memory_commands_refuse_regions_outside_memory_and_bad_lengths():
    link = board()
    assert nak_reason(lambda: write_memory(link, MEMORY - 1, b"ab")) == NakReason.BAD_LENGTH
    assert nak_reason(lambda: read_memory(link, MEMORY - 4, 8)) == NakReason.BAD_LENGTH
    assert nak_reason(lambda: link.request(Command.CRC_MEM, encode_payload(
        MEM_REGION_LAYOUT, {"address": 1, "length": MEMORY}))) == NakReason.BAD_LENGTH
    assert nak_reason(lambda: link.request(Command.READ_MEM, bytes(5))) == NakReason.BAD_LENGTH
    assert nak_reason(lambda: link.request(Command.WRITE_MEM, bytes(4))) == NakReason.BAD_LENGTH
    assert nak_reason(lambda: link.request(Command.RUN_STATUS, b"x")) == NakReason.BAD_LENGTH
    write_memory(link, MEMORY - 2, b"yz")
    assert read_memory(link, MEMORY - 2, 2) == b"yz"
    # an empty read answers no bytes, and the next resident command is still taken
    assert link.request(Command.READ_MEM, encode_payload(
        MEM_READ_LAYOUT, {"address": MEMORY - 2, "length": 0})).payload == b""
    assert run_status(link)["memory_bytes"] == MEMORY


def run_to_end(link, image):
    """Load ``image`` into the board's memory, check it, run it; the status once it stopped."""
    model = bytes(image.blob[:len(image.model)])
    write_memory(link, 0, bytes(image.blob))
    check_model(link, len(model), memory_crc(model))
    link.request(Command.INFER, bytes(4))
    for _ in range(400):
        status = run_status(link)
        if not status["running"]:
            return status
    raise AssertionError("the run did not end")


def test_a_step_record_that_breaks_a_descriptor_rule_stops_the_run_there():
    """The runner checks each record's descriptor with the host's rules before it starts the
    engine: step 1 with stride 3 stops the run after step 0, naming the rule."""
    g = torch.Generator().manual_seed(7)
    steps = [make_step("3x3 dense", dense_family(), 3, 4, 6, g),
             make_step("3x3 PS2_P4", paper_family(2, 4), 4, 3, 6, g)]
    image = Image(steps)
    size, at = RECORD_BYTES, record_address(1)
    stride = layer_descriptor_layout(CFG)["stride"]
    record = int.from_bytes(image.blob[at:at + size], "little")
    record |= 3 << stride.offset                      # stride 1 -> 3 (the field is 2 bits)
    image.blob[at:at + size] = record.to_bytes(size, "little")
    link = board()
    status = run_to_end(link, image)
    rule = next(i for i, r in enumerate(DESCRIPTOR_RULES) if r.name == "stride")
    assert (status["running"], status["done"], status["steps_done"]) == (0, 0, 1)
    assert status["bad_rule"] == rule
    address, shape, expected, name = image.outputs[0]
    assert describe_mismatch(name, expected, from_chw(read_memory(link, address, expected.numel()),
                                                     shape)) is None
    # the next run starts afresh (step 0 again) and stops at the same record
    link.request(Command.INFER, bytes(4))
    first = run_status(link)
    while run_status(link)["running"]:
        pass
    again = run_status(link)
    assert (first["running"], first["bad_rule"]) == (1, NO_BAD_RULE)
    assert (again["steps_done"], again["bad_rule"]) == (1, rule)


def test_a_pooled_step_whose_pooled_map_is_empty_stops_the_run_naming_the_rule():
    """A record whose descriptor sets ``pool`` over a map one row high (nothing to pool) stops
    the run before that step's engine starts, naming the rule the host's check names."""
    g = torch.Generator().manual_seed(8)
    steps = [make_step("3x3 dense", dense_family(), 3, 4, 6, g),
             make_step("3x3 PS2_P4 pooled", paper_family(2, 4), 4, 3, 6, g, pool=True)]
    image = Image(steps)
    size, at = RECORD_BYTES, record_address(1)
    layout = layer_descriptor_layout(CFG)
    height = layout["in_height"]
    record = int.from_bytes(image.blob[at:at + size], "little")
    record &= ~(((1 << height.shape.width) - 1) << height.offset)
    record |= 1 << height.offset                      # in_height 6 -> 1
    image.blob[at:at + size] = record.to_bytes(size, "little")
    descriptor = record & ((1 << layout.size) - 1)
    fields = layout.from_bits(descriptor)
    rule = LayerSpec(**{name: int(fields[name]) for name in layout.members}).broken_rule(CFG)
    assert "pool is 1; allowed: only 0 (the pooled map would be empty" in describe_rejection(
        CFG, rule, descriptor)
    link = board()
    status = run_to_end(link, image)
    assert (status["running"], status["done"], status["steps_done"], status["bad_rule"]) == (
        0, 0, 1, rule)
    address, shape, expected, name = image.outputs[0]
    assert describe_mismatch(name, expected, from_chw(read_memory(link, address, expected.numel()),
                                                     shape)) is None


def max_pool_step(x, odd_address=False):
    """A max-pool step of the CHW map ``x``, its expected output by torch's max_pool2d (floor:
    an odd last row or column is dropped; a map under 2 rows or columns pools to nothing)."""
    c, h, w = x.shape
    if h < 2 or w < 2:
        return ("maxpool", x, odd_address, torch.zeros((c, h // 2, w // 2), dtype=torch.int64))
    expected = torch.nn.functional.max_pool2d(x.to(torch.float64)[None], 2, 2)[0].to(torch.int64)
    return ("maxpool", x, odd_address, expected)


def test_max_pool_steps_are_bit_exact_on_odd_sizes_and_alignments():
    """2x2 stride-2 max-pool steps in the runner: even and odd map sizes (an odd last row or
    column is dropped), maps at even and odd addresses, int8 extremes, after an engine step; a
    map of one row pools to nothing. Each step takes the cycles the cycle model gives
    (runner_max_pool_cycles: records at odd and even addresses, rows at both alignments)."""
    g = torch.Generator().manual_seed(11)

    def random_map(c, h, w):
        x = torch.randint(-128, 128, (c, h, w), generator=g)
        x.view(-1)[0], x.view(-1)[-1] = -128, 127
        return x

    conv = make_step("3x3 dense", dense_family(), 3, 4, 6, g)
    steps = [conv, max_pool_step(conv[3]),
             max_pool_step(random_map(3, 7, 5)),
             max_pool_step(random_map(2, 8, 8), odd_address=True),
             max_pool_step(random_map(5, 5, 8), odd_address=True),
             max_pool_step(random_map(1, 3, 3)),
             max_pool_step(random_map(2, 1, 5), odd_address=True)]
    image = Image(steps)
    step_ends = []
    link = board(step_ends)
    status = run_to_end(link, image)
    assert (status["done"], status["steps_done"], status["bad_rule"]) == (1, len(steps),
                                                                         NO_BAD_RULE)
    assert status["memory_writes"] == sum(e.numel() for _, _, e, _ in image.outputs)
    for index, (address, shape, expected, name) in enumerate(image.outputs):
        out = from_chw(read_memory(link, address, expected.numel()), shape)
        assert describe_mismatch(f"step {index} ({name})", expected, out) is None
    # every max-pool step (all follow a step) from the previous step's end to its own
    assert len(step_ends) == len(steps)
    measured, predicted = [], []
    for k in range(1, len(steps)):
        _, x, odd, _ = steps[k]
        record = read_record(image, k)
        assert record.fmap_address % 2 == int(odd)
        measured.append(step_ends[k] - step_ends[k - 1])
        predicted.append(runner_max_pool_cycles(CFG, *x.shape, record.fmap_address,
                                                record_address(k)))
    assert measured == predicted, (measured, predicted)


def test_a_step_record_with_an_unknown_max_pool_kind_stops_the_run():
    g = torch.Generator().manual_seed(12)
    steps = [make_step("3x3 dense", dense_family(), 3, 4, 6, g),
             max_pool_step(torch.randint(-128, 128, (2, 4, 4), generator=g))]
    image = Image(steps)
    image.blob[record_address(1) + RECORD_LAYOUT["max_pool"].offset // 8] = 3
    status = run_to_end(board(), image)
    assert (status["done"], status["steps_done"], status["bad_rule"]) == (0, 1, BAD_MAX_POOL)


def test_engine_steps_with_the_output_max_pool_store_the_pooled_map_bit_exact():
    """Resident, an engine step whose descriptor sets ``pool`` scatters the pooled map (H_out // 2
    x W_out // 2 per channel, an odd last row or column dropped; planes of odd size, so channels
    start at odd addresses) equal to conv + requantize + maxpool2d_int: on the gateware runner
    and on the software reference board, from the same memory image; an unpooled step after."""
    g = torch.Generator().manual_seed(13)
    steps = [
        make_step("3x3 PSD1_P4 7x7 pooled", paper_family(1, 4, dense_kernel=True), 5, 3, 7, g,
                  pool=True),
        make_step("first layer (dense) 5x8 pooled", dense_family(), 3, 4, (5, 8), g, pool=True),
        make_step("3x3 PS2_P4 stride 2 6x7 pooled", paper_family(2, 4), 4, 5, (6, 7), g,
                  stride=2, relu=False, pool=True),
        make_step("1x1 3x6 pooled", pointwise_family(), 6, 2, (3, 6), g, relu=False, pool=True),
        make_step("3x3 dense unpooled", dense_family(), 2, 3, 5, g),
    ]
    assert [tuple(e.shape) for _, _, _, e in steps] == [(3, 3, 3), (4, 2, 4), (5, 1, 2),
                                                         (2, 1, 3), (3, 5, 5)]
    image = Image(steps)
    written = sum(e.numel() for _, _, e, _ in image.outputs)
    link = board()
    status = run_to_end(link, image)
    assert (status["done"], status["steps_done"], status["bad_rule"]) == (1, len(steps),
                                                                         NO_BAD_RULE)
    assert status["memory_writes"] == written
    for address, shape, expected, name in image.outputs:
        out = from_chw(read_memory(link, address, expected.numel()), shape)
        assert describe_mismatch(f"gateware {name}", expected, out) is None

    device, reference = run_on_reference_board(image)
    assert (reference.done, reference.steps_done, reference.memory_writes) == (
        1, len(steps), written)
    for address, shape, expected, name in image.outputs:
        out = from_chw(bytes(device.memory[address:address + expected.numel()]), shape)
        assert describe_mismatch(f"reference board {name}", expected, out) is None


def test_a_step_whose_mask_table_keeps_no_taps_stops_the_run_with_the_engine_idle():
    """T = 0 would make the address generator divide by 0: the runner reads each step's mask
    table before it starts the engine and stops at a mask whose 9 tap bits are 0 (here every
    mask of step 1, each with only bits above the nine set), naming BAD_MASKS; the engine was
    never started, so the next INFER runs (not BUSY) and stops there again."""
    g = torch.Generator().manual_seed(13)
    steps = [make_step("3x3 dense", dense_family(), 3, 4, 6, g),
             make_step("3x3 PS2_P4", paper_family(2, 4), 4, 3, 6, g)]
    image = Image(steps)
    table = read_record(image, 1).masks_address
    image.blob[table:table + 8] = mask_payload((0x200, 0x400, 0xFE00, 0x8000))
    link = board()
    status = run_to_end(link, image)
    assert (status["done"], status["steps_done"], status["bad_rule"]) == (0, 1, BAD_MASKS)
    address, shape, expected, name = image.outputs[0]
    assert describe_mismatch(name, expected, from_chw(read_memory(link, address, expected.numel()),
                                                     shape)) is None
    link.request(Command.INFER, bytes(4))
    while run_status(link)["running"]:
        pass
    assert (run_status(link)["steps_done"], run_status(link)["bad_rule"]) == (1, BAD_MASKS)


def retarget(image, step, **addresses):
    """Point step ``step``'s record at other memory: ``fmap_address=...``, ``output_address=...``."""
    for field, address in addresses.items():
        offset = RECORD_LAYOUT[field].offset
        assert offset % 8 == 0 and RECORD_LAYOUT[field].shape.width == 32
        at = record_address(step) + offset // 8
        image.blob[at:at + 4] = struct.pack("<I", address)
    image.model = bytes(image.blob[:len(image.model)])


def test_a_step_on_the_map_the_engine_holds_keeps_it_until_a_store_touches_the_map():
    """Steps on the same map (address, length, C, H, W) as the last one loaded keep it in the
    engine, bit-exact, reading none of its bytes; a store of the run into that map (an engine
    step's output, a max-pool step's) makes the next step load it again, with the stored bytes.
    The gateware runner and the software reference board read the same bytes."""
    g = torch.Generator().manual_seed(21)
    psd = paper_family(1, 4, dense_kernel=True)
    m0 = torch.randint(-128, 128, (4, 6, 6), generator=g)

    def stored_over(x, values):
        """``x`` with its first CHW bytes replaced by ``values`` (a map stored over it)."""
        flat = x.reshape(-1).clone()
        flat[:values.numel()] = values.reshape(-1)
        return flat.reshape(x.shape)

    a = make_step("A loads M", psd, 4, 3, 6, g, x=m0)
    b = make_step("B 1x1 stride 2 keeps M", pointwise_family(), 4, 2, 6, g, stride=2, relu=False,
                  x=m0)
    c = make_step("C keeps M, stores into M", paper_family(2, 4), 4, 3, 6, g, stride=2, x=m0)
    m1 = stored_over(m0, c[3])
    d = make_step("D loads M again", dense_family(), 4, 2, 6, g, x=m1)
    e = max_pool_step(torch.randint(-128, 128, (2, 4, 4), generator=g))
    m2 = stored_over(m1, e[3])
    f = make_step("F loads M again", psd, 4, 2, 6, g, x=m2)
    h = make_step("G keeps M", pointwise_family(), 4, 3, 6, g, relu=False, x=m2)
    steps = [a, b, c, d, e, f, h]
    image = Image(steps)
    records = [read_record(image, k) for k in range(len(steps))]
    shared = records[0].fmap_address
    for k in (1, 2, 3, 5, 6):
        retarget(image, k, fmap_address=shared)
    retarget(image, 2, output_address=shared)
    retarget(image, 4, output_address=shared)
    loads = [True, False, False, True, None, True, False]     # None: the max-pool step
    reads = layout_bytes(PROGRAM_HEADER_LAYOUT) + sum(
        RECORD_BYTES + (e[1].numel() if load is None else
                        4 * len(step.masks) + 13 * step.descriptor.out_channels
                        + record.weight_bytes + (record.fmap_bytes if load else 0))
        for (step, *_), record, load in zip(steps, records, loads))

    link = board()
    status = run_to_end(link, image)
    assert (status["done"], status["steps_done"], status["bad_rule"]) == (1, len(steps),
                                                                         NO_BAD_RULE)
    assert status["memory_reads"] == reads
    for index in (0, 1, 3, 5, 6):
        address, shape, expected, name = image.outputs[index]
        out = from_chw(read_memory(link, address, expected.numel()), shape)
        assert describe_mismatch(f"gateware {name}", expected, out) is None
    assert torch.equal(from_chw(read_memory(link, shared, m2.numel()), m2.shape), m2)

    device, reference = run_on_reference_board(image)
    assert (reference.done, reference.memory_reads) == (1, reads)
    for index in (0, 1, 3, 5, 6):
        address, shape, expected, name = image.outputs[index]
        out = from_chw(bytes(device.memory[address:address + expected.numel()]), shape)
        assert describe_mismatch(f"reference board {name}", expected, out) is None
