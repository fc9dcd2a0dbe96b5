"""Whole-engine integration in the Amaranth simulator, bit-exact against sim/golden/ops.py."""

import pytest
import torch

from psconv.families import dense_family, paper_family, pointwise_family
from psconv.protocol.descriptor import LayerSpec

from hw_sim_helpers import golden_output, random_layer, simulate_engine, small_config

SPARSE = paper_family(1, 4, dense_kernel=True)      # unbalanced: T = 9 + 3 = 12


def check(config, family, spec, seed, **kw):
    """Run ``spec`` on the engine and compare every output with the golden model."""
    layer = random_layer(config, family, spec, seed)
    res = simulate_engine(config, family, spec, layer, seed=seed, **kw)
    want = golden_output(spec, layer)
    assert res["beats"] == spec.output_beats(config)
    mismatch = (res["out"] != want).nonzero()
    assert mismatch.numel() == 0, f"{mismatch.shape[0]} mismatches, first at {mismatch[0].tolist()}: " \
        f"got {int(res['out'][tuple(mismatch[0])])}, want {int(want[tuple(mismatch[0])])}"
    # the test data must exercise saturation both ways (or ReLU's floor)
    assert int(want.max()) == 127 and int(want.min()) in (-128, 0)
    return res, layer


def expected_mac_count(family, spec):
    mask = family.weight_mask(spec.out_channels, spec.in_channels)
    return int(mask.sum()) * spec.out_height * spec.out_width


def test_sparse_3x3_stride1_counters():
    config = small_config(family=SPARSE)
    spec = LayerSpec(5, 3, 4, 5, stride=1, kernel=3, relu=False, period=SPARSE.period)
    res, _ = check(config, SPARSE, spec, seed=1)
    counters = res["counters"]
    groups = spec.out_height * spec.column_blocks(config)
    cycles_per_o = 6          # ceil(ceil(5/4) * 12 / 4)
    assert counters["busy_cycles"] == groups * spec.out_channels * cycles_per_o
    assert counters["stall_cycles"] == 0
    assert counters["busy_cycles"] + counters["stall_cycles"] + counters["idle_cycles"] == res["cycles"]
    assert counters["macs"] == expected_mac_count(SPARSE, spec)


def test_sparse_3x3_stride2_with_backpressure():
    config = small_config(family=SPARSE)
    spec = LayerSpec(5, 3, 5, 7, stride=2, kernel=3, relu=False, period=SPARSE.period)
    res, _ = check(config, SPARSE, spec, seed=2, input_gaps=0.3, output_stalls=0.9)
    counters = res["counters"]
    assert counters["busy_cycles"] + counters["stall_cycles"] + counters["idle_cycles"] == res["cycles"]
    assert counters["macs"] == expected_mac_count(SPARSE, spec)


def test_pointwise_1x1_stride2():
    family = pointwise_family()
    config = small_config(family=SPARSE)
    spec = LayerSpec(6, 5, 5, 6, stride=2, kernel=1, relu=False, period=1)
    res, _ = check(config, family, spec, seed=3)
    assert res["counters"]["macs"] == expected_mac_count(family, spec)


def test_pointwise_one_cycle_per_channel_output_backpressure():
    """cycles per output channel = 1 (C_in <= tn): a result every cycle; a slow consumer must
    stall issue (counted) without losing or reordering beats."""
    family = pointwise_family()
    config = small_config(family=SPARSE)
    spec = LayerSpec(4, 9, 4, 6, stride=1, kernel=1, relu=False, period=1)
    res, _ = check(config, family, spec, seed=8, output_stalls=0.7)
    counters = res["counters"]
    assert counters["stall_cycles"] > 0
    assert counters["busy_cycles"] == spec.output_beats(config)
    assert counters["busy_cycles"] + counters["stall_cycles"] + counters["idle_cycles"] == res["cycles"]


def test_residual_relu_dense_sequential_host():
    family = dense_family()
    config = small_config(family=SPARSE)
    spec = LayerSpec(3, 4, 4, 5, stride=1, kernel=3, relu=True, residual=True, period=1)
    check(config, family, spec, seed=4, order="sequential")


def test_residual_relu_sparse_with_stalls():
    config = small_config(family=SPARSE)
    spec = LayerSpec(7, 3, 3, 4, stride=1, kernel=3, relu=True, residual=True, period=SPARSE.period)
    check(config, SPARSE, spec, seed=5, input_gaps=0.4, output_stalls=0.3)


def test_two_layers_back_to_back():
    """A second layer on the same engine (state from the first must not leak)."""
    config = small_config(family=SPARSE)
    spec1 = LayerSpec(5, 3, 4, 5, stride=2, kernel=3, relu=True, residual=True, period=SPARSE.period)
    spec2 = LayerSpec(4, 6, 3, 3, stride=1, kernel=1, relu=False, period=1)
    check(config, SPARSE, spec1, seed=6)
    check(config, pointwise_family(), spec2, seed=7)


@pytest.mark.parametrize("tm,tn,family", [
    (1, 1, dense_family()),                  # one multiplier; dense-only engine (max_period 1)
    (3, 5, paper_family(2, 6)),              # odd sizes; P = 6 not a power of two
    (4, 3, paper_family(1, 4, dense_kernel=True)),
], ids=["1x1-dense", "3x5-PS2_P6", "4x3-PSD1_P4"])
def test_odd_engine_shapes(tm, tn, family):
    config = small_config(tm=tm, tn=tn, family=family)
    spec = LayerSpec(5, 3, 4, 7, stride=2, kernel=3, relu=True, residual=True, period=family.period)
    check(config, family, spec, seed=tm * 10 + tn)


@pytest.mark.parametrize("c_in,c_out", [(1, 2), (4, 1), (5, 1)])
def test_groups_shorter_than_the_buffer_release(c_in, c_out):
    """Pixel groups of 1-2 cycles and builds of 1-2 channels: a buffer just finished with must
    not be taken for its next build (regression: rows came out shifted by one group)."""
    family = pointwise_family()
    config = small_config(family=SPARSE)
    spec = LayerSpec(c_in, c_out, 4, 3, stride=1, kernel=1, relu=False, period=1)
    layer = random_layer(config, family, spec, seed=c_in)
    res = simulate_engine(config, family, spec, layer)
    assert (res["out"] == golden_output(spec, layer)).all()


@pytest.mark.parametrize("c_in,family,residual", [
    (7, SPARSE, True),                 # passes of 4 + 3 channels
    (9, SPARSE, False),                # 4 + 4 + 1: a one-channel pass
    (13, pointwise_family(), False),   # 1x1, one cycle per pass
    (16, dense_family(), True),        # four full passes
], ids=["4+3-residual", "4+4+1", "1x1-4x1-cycle", "dense-4x4"])
def test_input_channel_passes(c_in, family, residual):
    """Layers deeper than the patch buffer (patch_channels = 4) accumulate partial sums on chip
    over several passes per pixel group."""
    config = small_config(family=SPARSE, patch_channels=4)
    kernel = family.kernel_size
    spec = LayerSpec(c_in, 3, 4, 5, stride=1, kernel=kernel, relu=residual, residual=residual,
                     period=family.period)
    layer = random_layer(config, family, spec, seed=c_in)
    res = simulate_engine(config, family, spec, layer, input_gaps=0.2, output_stalls=0.2, seed=c_in)
    assert (res["out"] == golden_output(spec, layer)).all()
    assert res["counters"]["macs"] == expected_mac_count(family, spec)


@pytest.mark.parametrize("spec", [
    LayerSpec(16, 16, 8, 8, stride=1, kernel=3, relu=True, residual=True, period=16),
    LayerSpec(3, 2, 8, 8, stride=1, kernel=3, relu=True, period=1),
    LayerSpec(8, 16, 4, 4, stride=2, kernel=1, relu=False, period=1),
], ids=["3x3-residual-full", "first-conv-dense", "1x1-stride2"])
def test_icebreaker_engine_as_built_for_the_ice40(spec):
    """The iCEBreaker's engine elaborated as for an iCE40 (the area-first structures of
    psconv.hw.target: tap-early PE, entry straight from the block RAM, shared tap sequence),
    bit-exact on the largest layer it holds and the ResNet18 layer kinds."""
    from psconv.families import family_by_name
    from psconv.rtl_gen.boards import get_board

    config = get_board("icebreaker").engine_config()
    family = {16: family_by_name("PSD1_P16"), 1: dense_family() if spec.kernel == 3
              else pointwise_family()}[spec.period]
    layer = random_layer(config, family, spec, seed=spec.in_channels)
    res = simulate_engine(config, family, spec, layer, family_of_fpga="iCE40", input_gaps=0.1,
                          output_stalls=0.1, seed=spec.in_channels)
    assert (res["out"] == golden_output(spec, layer)).all()
    assert res["counters"]["macs"] == expected_mac_count(family, spec)


@pytest.mark.parametrize("tm,spec", [
    (2, LayerSpec(3, 3, 7, 5, stride=1, kernel=3, relu=False, period=4, pool=True)),
    (4, LayerSpec(4, 1, 9, 9, stride=1, kernel=3, relu=True, period=4, pool=True)),
    (3, LayerSpec(5, 6, 8, 7, stride=2, kernel=3, relu=False, period=4, pool=True)),
    (1, LayerSpec(2, 2, 5, 6, stride=1, kernel=3, relu=False, period=4, pool=True)),
], ids=["7x5-tm2", "9x9-1channel-tm4", "s2-4x4-tm3", "5x6-tm1"])
def test_output_max_pool(tm, spec):
    """A layer with ``pool`` returns maxpool2d_int of its output (odd rows and columns dropped),
    through input gaps and output back-pressure; the MACs are the unpooled layer's."""
    config = small_config(family=SPARSE, tm=tm, max_height=9, max_width=9)
    layer = random_layer(config, SPARSE, spec, seed=tm)
    res = simulate_engine(config, SPARSE, spec, layer, input_gaps=0.2, output_stalls=0.3, seed=tm)
    want = golden_output(spec, layer)
    assert want.shape[1:] == (spec.out_height // 2, spec.out_width // 2)
    assert res["beats"] == spec.output_beats(config)
    assert torch.equal(res["out"], want)
    assert res["counters"]["macs"] == expected_mac_count(SPARSE, spec)
