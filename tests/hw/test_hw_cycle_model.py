"""sim/cycle_model.py against the engine's cycle counts in the Amaranth simulator."""

import pytest

from psconv.config import EngineConfig
from psconv.families import dense_family, paper_family, pointwise_family
from psconv.protocol.descriptor import LayerSpec
from psconv.sim.cycle_model import predict_cycles

from hw_sim_helpers import (golden_output, random_layer, simulate_engine, simulate_engine_layers,
                            small_config)

PSD1_P16 = paper_family(1, 16, dense_kernel=True)
PSD1_P4 = paper_family(1, 4, dense_kernel=True)

CASES = [
    # default engine (tm=4, tn=16): compute-bound, patch-build-bound, weight-wait-bound loads
    ("default", PSD1_P16, LayerSpec(64, 16, 8, 8, stride=1, kernel=3, period=16)),
    ("default", PSD1_P16, LayerSpec(32, 2, 4, 8, stride=1, kernel=3, period=16)),
    ("default", PSD1_P16, LayerSpec(20, 5, 5, 7, stride=2, kernel=3, period=16)),
    ("default", dense_family(), LayerSpec(3, 8, 8, 8, stride=1, kernel=3, period=1)),
    ("small", PSD1_P4, LayerSpec(7, 3, 3, 4, stride=1, kernel=3, period=4)),
    ("small", pointwise_family(), LayerSpec(4, 9, 4, 6, stride=1, kernel=1, period=1)),
    ("small", dense_family(), LayerSpec(16, 2, 8, 8, stride=2, kernel=3, period=1)),
    ("small", dense_family(), LayerSpec(1, 3, 5, 4, stride=1, kernel=3, period=1)),
    # input-channel passes of 4 channels: 4 + 3, then 4 + 4 + 1 (a one-channel build)
    ("passes", PSD1_P4, LayerSpec(7, 3, 3, 4, stride=1, kernel=3, period=4)),
    ("passes", PSD1_P4, LayerSpec(9, 5, 4, 5, stride=2, kernel=3, period=4)),
    ("passes", pointwise_family(), LayerSpec(13, 1, 4, 3, stride=1, kernel=1, period=1)),
    # the output max pool: the last beat completes a pooled beat (H_out even) or is dropped
    # (H_out odd; W_out = 9 on tm = 4: the lone last column block holds no kept column)
    ("default", PSD1_P16, LayerSpec(20, 5, 8, 8, stride=1, kernel=3, period=16, pool=True)),
    ("default", PSD1_P16, LayerSpec(20, 5, 7, 5, stride=1, kernel=3, period=16, pool=True)),
    ("default", PSD1_P16, LayerSpec(20, 3, 8, 9, stride=1, kernel=3, period=16, pool=True)),
    ("small", PSD1_P4, LayerSpec(7, 1, 7, 7, stride=1, kernel=3, period=4, pool=True)),
    ("passes", PSD1_P4, LayerSpec(9, 5, 8, 7, stride=2, kernel=3, period=4, pool=True)),
]

CONFIGS = {"default": lambda: EngineConfig(family=PSD1_P16),
           "small": lambda: small_config(family=PSD1_P4),
           "passes": lambda: small_config(family=PSD1_P4, patch_channels=4)}


@pytest.mark.parametrize("which,family,spec", CASES, ids=lambda v: getattr(v, "name", None))
def test_model_matches_rtl(which, family, spec):
    config = CONFIGS[which]()
    layer = random_layer(config, family, spec, seed=spec.in_channels)
    res = simulate_engine(config, family, spec, layer)
    assert (res["out"] == golden_output(spec, layer)).all()
    model = predict_cycles(config, spec, family)
    counters = res["counters"]
    assert model["busy"] == counters["busy_cycles"]
    assert model["macs"] == counters["macs"]
    # The schedule is deterministic with ideal streams: the model is exact (the contract is 2 %).
    assert model["total"] == res["cycles"]
    assert model["load"] == res["load"]
    assert model["stall"] == counters["stall_cycles"]
    assert model["idle"] == counters["idle_cycles"]


# (config, [(family, spec, keep_map)]): layers in turn on one engine, all on one input map (the
# same C, H, W and seed, so the same bytes) except where a layer loads a new one
KEPT_MAPS = [
    # a stride-2 3x3 convolution, then the 1x1 downsample and a second output-channel tile on its
    # map (the resident runner's reuse in ResNet18), then a new map loaded again
    ("default", [(PSD1_P16, LayerSpec(20, 5, 5, 7, stride=2, kernel=3, period=16), False),
                 (pointwise_family(), LayerSpec(20, 6, 5, 7, stride=2, kernel=1, period=1), True),
                 (PSD1_P16, LayerSpec(20, 3, 5, 7, stride=1, kernel=3, period=16, pool=True), True),
                 (PSD1_P16, LayerSpec(3, 4, 6, 6, stride=1, kernel=3, period=16), False)]),
    # input-channel passes, a residual layer on the kept map
    ("passes", [(PSD1_P4, LayerSpec(9, 5, 4, 5, stride=2, kernel=3, period=4), False),
                (PSD1_P4, LayerSpec(9, 3, 4, 5, stride=1, kernel=3, period=4, residual=True,
                                    relu=True), True)]),
    # a map so small that the kept layer's first build waits for the H divmod 3, not the load
    ("small", [(PSD1_P4, LayerSpec(1, 2, 2, 3, stride=1, kernel=3, period=4), False),
               (PSD1_P4, LayerSpec(1, 3, 2, 3, stride=1, kernel=3, period=4), True)]),
]


@pytest.mark.parametrize("which,runs", KEPT_MAPS, ids=["downsample", "passes", "tiny"])
def test_kept_map_is_bit_exact_and_modelled(which, runs):
    """``keep_map``: a layer computes on the map the last one loaded, bit-exact, and the model
    (``keep_map=True``) gives its cycles exactly; a load after it is unaffected."""
    config = CONFIGS[which]()
    layers = []
    for family, spec, keep in runs:
        seed = 100 * spec.in_channels + spec.in_height + spec.in_width    # the map's bytes
        layers.append((family, spec, random_layer(config, family, spec, seed), keep))
    for (_, spec, layer, keep), kept in zip(layers[1:], layers):
        if keep:
            assert (layer["x"] == kept[2]["x"]).all()
    results = simulate_engine_layers(config, layers)
    for (family, spec, layer, keep), res in zip(layers, results):
        assert (res["out"] == golden_output(spec, layer)).all(), (spec, keep)
        model = predict_cycles(config, spec, family, keep_map=keep)
        assert (model["total"], model["load"]) == (res["cycles"], res["load"]), (spec, keep)
        assert model["busy"] == res["counters"]["busy_cycles"]


RESNET18_3X3 = [  # (C_in, C_out, H=W, stride)
    (64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (128, 256, 16, 2),
    (256, 256, 8, 1), (256, 512, 8, 2), (512, 512, 4, 1),
]


@pytest.mark.parametrize("family", [PSD1_P16, paper_family(4, 8, dense_kernel=True), paper_family(4, 8)],
                         ids=lambda f: f.name)
def test_resnet18_layers_reach_90_percent_of_ideal(family):
    config = EngineConfig(family=family)
    for c_in, c_out, size, stride in RESNET18_3X3:
        shape = dict(in_channels=c_in, out_channels=c_out, in_height=size, in_width=size, stride=stride)
        p = predict_cycles(config, shape, family)
        ratio = p["dense_equivalent_macs_per_multiplier_per_cycle"] / p["ideal_dense_equivalent"]
        assert ratio >= 0.9, (family.name, shape, ratio)
        assert p["ideal_dense_equivalent"] == pytest.approx(family.ideal_dense_equivalent)
