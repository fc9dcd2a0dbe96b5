"""Analytical cycle model of the periodic-sparse engine (:mod:`psconv.hw.engine`).

``predict_cycles(config, shape, masks)`` predicts, for one layer on one engine invocation with
every input stream always valid and the output always ready, the cycles the RTL takes from
``start`` to ``done`` and how they split, plus the useful MACs and the utilization figures.

The model is the engine's schedule written out (see docs/architecture.md), not a fit:

* **Setup** (address generator): the P masks are expanded at 9 cycles each, then three serial
  divisions (``w + 2`` cycles each, ``w`` = divider width), two multiplies and ``tn`` cycles of
  lane start positions: ready ``2 + 9P + 3w + 8 + tn`` cycles after ``start``. Weights stream in
  from then on, one word per cycle.
* **Input map**: ``C*H + beats - 1 - (C*H*W - 1) // lcm(W, tn)`` cycles (one per row/beat
  piece), from cycle 2; with ``keep_map`` none, the first build waiting for the window
  generator's H divmod 3 instead (:func:`height_division_cycles`).
* **Patch builds**: group g's build reads C_in channels from cycle ``S_g``; its buffer is full
  (visible to the sequencer) at ``F_g = S_g + C_in + 4``. The next build starts at
  ``max(S_g + C_in + 1, E_{g-1} + 4)`` (the buffer it overwrites is released 4 cycles after the
  last issue of the group two back, ``E`` = cycle after a group's last issue).
* **Issue**: the first group starts one cycle after its patch is full and the first output
  channel's weights are in; group g starts at ``max(E_{g-1}, F_g)`` and issues
  ``C_out * cycles`` back-to-back slot cycles (``cycles = ceil(ceil(C_in/P) * T / tn)``).
* **Input-channel passes** (C_in > ``patch_channels``): every pixel group is built and issued
  once per pass, so the recurrences above run over (group, pass) with each pass's channel count
  and cycles (:func:`psconv.schedule.pass_cycles`); the first output channel's weights
  are all its passes' words; setup takes two more divisions and a multiply.
* **Drain**: ``done`` is visible ``issue_to_output_latency + DRAIN_CYCLES`` cycles after the last
  issue; with ``pool`` (the output max pool, :mod:`psconv.hw.output_pool`) :func:`pool_drain_cycles`
  more: the pool holds the last beat two cycles, four if it completes a pooled beat.

The resident program runner's max-pool step (:mod:`psconv.hw.program_runner`, record
``max_pool`` = ``MAX_POOL_2X2``) has no engine in it: :func:`runner_max_pool_cycles` gives its
exact cycles from the runner's state machine (one state per row load, fold and store).

Definitions of the returned figures: ``load`` = cycles before the first issue; ``compute`` =
first issue to ``done``; ``total`` = ``load + compute`` (= busy + stall + idle counters);
``macs`` = useful multiply-accumulates (kept taps x output pixels, what the ``macs`` counter
counts); ``utilization`` = macs / (multipliers * compute);
``dense_equivalent_macs_per_multiplier_per_cycle`` = C_out*C_in*k*k*H_out*W_out /
(multipliers * compute); ``ideal_dense_equivalent`` = k*k*P/T, its limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from psconv.protocol.memory import step_record_layout
from psconv.protocol.payloads import layout_bytes
from psconv.schedule import input_channel_passes, pass_cycles

NUM_TAPS = 9
PE_FIXED_STAGES = 6          # patch read + register, tap mux, multiplier input, product, accumulate
ADDRESS_LATENCY = 2          # psconv.hw.address_generator.AddressGenerator.LATENCY
POST_LATENCY = 8             # psconv.hw.post_processor.PostProcessor.LATENCY
START_CYCLES = 2             # start cycle + BEGIN cycle before the blocks run
BUILD_TAIL = 4               # patch word written / buffer flagged full after the last read
RELEASE_TO_BUILD = 4         # last issue of a group -> the builder may overwrite its buffer
DRAIN_CYCLES = 3             # last beat into the output FIFO (a SyncFIFOBuffered) -> empty, done seen
POOL_HOLD_CYCLES = 2         # output max pool: the last beat in its stage-1 and stage-2 registers
POOL_EMIT_CYCLES = 2         # ... and two more if it completes a pooled beat (stage 3, output register)


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


def _field(shape, name, default=None):
    if isinstance(shape, Mapping):
        return shape.get(name, default)
    return getattr(shape, name, default)


def _rotated_masks(masks):
    """A PatternFamily -> its rotated table (kernel (o, i) uses entry (o+i) % P); a sequence of
    ints is taken as already rotated (the engine's ``mask_in`` beats)."""
    if hasattr(masks, "masks") and hasattr(masks, "offset"):
        p = len(masks.masks)
        return tuple(masks.masks[(q + masks.offset) % p] for q in range(p))
    return tuple(int(m) for m in masks)


def issue_to_output_latency(config) -> int:
    levels = math.ceil(math.log2(config.tn)) if config.tn > 1 else 0
    return ADDRESS_LATENCY + PE_FIXED_STAGES + levels + POST_LATENCY


def setup_ready_cycle(config, period: int, passes: int = 1) -> int:
    """Cycle (after ``start``) at which the address generator is ready and weights may load
    (several input-channel passes add a second periods/cycles division and a multiply)."""
    div_width = max(_bits(config.max_in_channels + config.max_period),
                    _bits(NUM_TAPS * (config.max_in_channels + config.max_period) + config.tn))
    extra = 0 if passes == 1 else 2 * (div_width + 2) + 2
    return START_CYCLES + NUM_TAPS * period + 3 * (div_width + 2) + 2 + config.tn + extra


def fmap_load_cycles(config, channels: int, height: int, width: int) -> int:
    """Cycles of the input-map gearbox: one per (row, beat) piece of the CHW byte stream."""
    beat = config.tn
    total = channels * height * width
    beats = math.ceil(total / beat)
    lcm = width * beat // math.gcd(width, beat)
    return channels * height + beats - 1 - (total - 1) // lcm


def height_division_cycles(config) -> int:
    """Cycles of the window generator's H divmod 3 (its serial divider's dividend width): with
    ``keep_map`` nothing loads, and the first build waits for this instead."""
    return _bits(config.max_height)


def pool_drain_cycles(config, out_height: int, out_width: int) -> int:
    """Cycles the output max pool adds before ``done`` for an H_out x W_out output: the last
    input beat (row H_out - 1, the last column block) completes a pooled beat only when that row
    is odd and its pooled block holds a pixel of the W_out // 2 kept columns."""
    tm = config.tm
    last_block = -(-out_width // tm) - 1
    completes = out_height % 2 == 0 and (last_block // 2) * tm < out_width // 2
    return POOL_HOLD_CYCLES + (POOL_EMIT_CYCLES if completes else 0)


def useful_macs(masks, in_channels: int, out_channels: int, out_pixels: int) -> int:
    rotated = _rotated_masks(masks)
    p = len(rotated)
    counts = [bin(m).count("1") for m in rotated]
    per_o = [sum(counts[(o + i) % p] for i in range(in_channels)) for o in range(out_channels)]
    return sum(per_o) * out_pixels


def predict_cycles(config, shape, masks, keep_map: bool = False) -> dict:
    """Predicted cycles and efficiency of one layer (see module docstring).

    ``shape``: a :class:`psconv.protocol.descriptor.LayerSpec` or a mapping with ``in_channels``,
    ``out_channels``, ``in_height``, ``in_width``, optional ``stride`` (1), ``kernel`` (3) and
    ``pool`` (False: the output max pool, which changes only the drain).
    ``masks``: the layer's :class:`~psconv.families.PatternFamily` or its rotated mask table.
    ``keep_map``: the engine's ``keep_map`` (no input map load: the first build starts after
    :func:`height_division_cycles`).
    """
    c_in = int(_field(shape, "in_channels"))
    c_out = int(_field(shape, "out_channels"))
    height = int(_field(shape, "in_height"))
    width = int(_field(shape, "in_width"))
    stride = int(_field(shape, "stride", 1))
    kernel = int(_field(shape, "kernel", 3))
    pool = bool(_field(shape, "pool", False))
    rotated = _rotated_masks(masks)
    period = len(rotated)
    taps = sum(bin(m).count("1") for m in rotated)
    tm, tn = config.tm, config.tn

    out_h = (height - 1) // stride + 1
    out_w = (width - 1) // stride + 1
    groups = out_h * math.ceil(out_w / tm)
    passes = input_channel_passes(c_in, config.patch_channels)
    cycles = pass_cycles(rotated, c_in, tn, config.patch_channels)
    cycles_per_o = sum(cycles)

    setup = setup_ready_cycle(config, period, len(passes))
    weights_ready = setup + cycles_per_o
    # Builds (one per pixel group and pass, alternating buffers) and issue phases.
    work = [(count, c_out * pass_cyc) for _ in range(groups)
            for (_, count), pass_cyc in zip(passes, cycles)]
    starts, ends, builds, fulls = [], [], [], []
    for b, (count, issue_cycles) in enumerate(work):
        if b == 0:
            map_cycles = (height_division_cycles(config) if keep_map
                          else fmap_load_cycles(config, c_in, height, width))
            build = START_CYCLES + map_cycles + 1
        else:
            build = builds[b - 1] + work[b - 1][0] + 1
            if b >= 2:
                build = max(build, ends[b - 2] + RELEASE_TO_BUILD)
        builds.append(build)
        fulls.append(build + count + BUILD_TAIL)
        if b == 0:
            # Output channel o may start once all its passes' words are in: with several passes
            # the first pass of the first group outruns the weight stream.
            begin = max(fulls[b], weights_ready) + 1
            end = begin
            for o in range(c_out):
                end = max(end, setup + (o + 1) * cycles_per_o) + cycles[0]
        else:
            begin = max(ends[b - 1], fulls[b])
            end = begin + issue_cycles
        starts.append(begin)
        ends.append(end)

    load = starts[0]
    total = ends[-1] + issue_to_output_latency(config) + DRAIN_CYCLES
    if pool:
        total += pool_drain_cycles(config, out_h, out_w)
    compute = total - load
    busy = groups * c_out * cycles_per_o
    stall = ends[-1] - starts[0] - busy
    macs = useful_macs(rotated, c_in, c_out, out_h * out_w)
    dense_macs = c_out * c_in * kernel * kernel * out_h * out_w
    mults = config.multipliers
    return {
        "load": load,
        "compute": compute,
        "total": total,
        "busy": busy,
        "stall": stall,
        "idle": total - busy - stall,
        "cycles_per_output_channel": cycles_per_o,
        "groups": groups,
        "macs": macs,
        "dense_macs": dense_macs,
        "utilization": macs / (mults * compute),
        "dense_equivalent_macs_per_multiplier_per_cycle": dense_macs / (mults * compute),
        "ideal_dense_equivalent": kernel * kernel * period / taps,
    }


def predict_network(config, layers) -> dict:
    """Whole-network figures from ``layers`` = iterable of (shape, masks) pairs: summed cycles,
    MACs, and utilization = useful MACs / (multipliers * summed compute cycles)."""
    per_layer = [predict_cycles(config, shape, masks) for shape, masks in layers]
    compute = sum(p["compute"] for p in per_layer)
    total = sum(p["total"] for p in per_layer)
    macs = sum(p["macs"] for p in per_layer)
    dense = sum(p["dense_macs"] for p in per_layer)
    mults = config.multipliers
    return {
        "layers": per_layer,
        "compute": compute,
        "total": total,
        "macs": macs,
        "dense_macs": dense,
        "utilization": macs / (mults * compute),
        "utilization_with_load": macs / (mults * total),
        "dense_equivalent_macs_per_multiplier_per_cycle": dense / (mults * compute),
    }


# ---- the program runner's max-pool step (psconv.hw.program_runner) ----
BLOCK_RAM_READ_LATENCY = 1   # psconv.hw.memory_port.OnChipMemory: a load's word the next cycle
RUNNER_LOAD_TAIL = 1         # a sequential load's state sees its last byte taken one cycle later
RUNNER_CHECK_CYCLES = 2      # the record's DescriptorCheck verdict (LATENCY): CHECK_STEP, GEOMETRY
RUNNER_ROW_CYCLES = 2        # per pooled row: MAX_POOL_ROW (first load set up), MAX_POOL_FOLD
RUNNER_STEP_CYCLES = 2       # NEXT_STEP (the record's load set up), STEP_DONE


def runner_load_cycles(address: int, count: int,
                       read_latency: int = BLOCK_RAM_READ_LATENCY) -> int:
    """Cycles of one of the runner's sequential-load states: ``count`` bytes from byte
    ``address`` as 2-byte words, one request per cycle (an odd address costs the word holding
    its first byte), then ``read_latency`` for the last word and a cycle to see it taken."""
    words = (address % 2 + count + 1) // 2
    return words + read_latency + RUNNER_LOAD_TAIL


def runner_max_pool_cycles(config, channels: int, height: int, width: int, fmap_address: int,
                           record_address: int,
                           read_latency: int = BLOCK_RAM_READ_LATENCY) -> int:
    """Exact cycles of a max-pool step of the resident program runner over a ``channels`` x
    ``height`` x ``width`` CHW map at byte ``fmap_address``, its step record at
    ``record_address``: from the cycle after the previous step ended (or the header was read) to
    the cycle the step is counted done, so a program's steps add up in ``RUN_STATUS``
    ``cycles``.

    The step: the record's load (:func:`runner_load_cycles`), its descriptor check and the
    output geometry (:data:`RUNNER_CHECK_CYCLES`), then per channel and per pooled row (H // 2;
    an odd last row is skipped without a load) the two input rows loaded in turn (W bytes each,
    at their own byte alignment), a fold cycle and one store cycle per pooled byte (W // 2); a
    map with H < 2 or W < 2 pools nothing. One cycle each to start the step and to end it.

    Exact for a memory that takes a request every cycle and answers each load ``read_latency``
    cycles later with nobody else on the port: the board's block-RAM memory
    (:class:`psconv.hw.memory_port.OnChipMemory`, latency 1), which the tests check it against.
    An SDRAM's refreshes, row changes and bridge FIFO stall the runner in ways this does not
    count: there it is a lower bound.
    """
    record = runner_load_cycles(record_address, layout_bytes(step_record_layout(config)),
                                read_latency)
    cycles = RUNNER_STEP_CYCLES + record + RUNNER_CHECK_CYCLES
    if height < 2 or width < 2:
        return cycles
    plane = height * width
    for channel in range(channels):
        for row in range(0, height - 1, 2):
            first = fmap_address + channel * plane + row * width
            cycles += (RUNNER_ROW_CYCLES + width // 2
                       + runner_load_cycles(first, width, read_latency)
                       + runner_load_cycles(first + width, width, read_latency))
    return cycles
