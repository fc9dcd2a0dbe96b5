"""The engine's generated Verilog in Verilator (cocotb), bit-exact against the golden model.

Each configuration is built once; all its cases run in one simulator launch. The mask table is
loaded per layer, so one build runs every family up to its ``max_period``: the balanced
PS4_P8, the paper's reference PSD4_P8, the headline PSD1_P16 and the dense baseline (K = 9,
P = 1), plus the dense first layer and 1x1 shortcuts. A separate dense-baseline build
(``family=dense``, ``max_period=1``) is checked as well. The ``passes16`` configuration holds 16
channels per patch buffer, so most cases run in 2-3 input-channel passes with on-chip partial
sums (the last pass shorter than the others).
"""

import time

import pytest
import torch

from psconv.config import EngineConfig
from psconv.families import dense_family, family_by_name, pointwise_family
from psconv.sim.engine_rtl import EngineRTL, make_case, mismatch_report, random_int8, random_weight

FAMILIES = ["PS4_P8", "PSD4_P8", "PSD1_P16", "dense"]

CONFIGS = {
    "tm4_tn16": EngineConfig(tm=4, tn=16, family=family_by_name("PSD1_P16"), max_in_channels=64,
                             max_out_channels=64, fmap_depth=32 * 64 * 32, weight_depth=1024),
    "tm3_tn5": EngineConfig(tm=3, tn=5, family=family_by_name("PSD1_P16"), max_in_channels=32,
                            max_out_channels=32, fmap_depth=32 * 32 * 32, weight_depth=2048),
    "tm4_tn16_passes16": EngineConfig(tm=4, tn=16, family=family_by_name("PSD1_P16"),
                                      max_in_channels=64, patch_channels=16, max_out_channels=64,
                                      fmap_depth=32 * 64 * 32, weight_depth=1024),
}


def _cases(config, seed):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for name in FAMILIES:
        fam = family_by_name(name)
        cases.append(make_case(f"{name} 3x3 s1 relu", random_weight(fam, 13, 20, g), fam,
                               random_int8((20, 9, 11), g), config, relu=True,
                               bias=random_int8((13,), g, -5000, 5000)))
        cases.append(make_case(f"{name} 3x3 s2", random_weight(fam, 10, 24, g), fam,
                               random_int8((24, 12, 9), g), config, stride=2))
        residual_in = random_int8((11, 7, 6), g)
        cases.append(make_case(f"{name} residual relu", random_weight(fam, 11, 17, g), fam,
                               random_int8((17, 7, 6), g), config, relu=True,
                               residual=residual_in,
                               residual_multiplier=torch.randint(0, 1 << 29, (11,), generator=g)))
    point = pointwise_family()
    cases.append(make_case("1x1 s2 shortcut", random_weight(point, 24, 16, g), point,
                           random_int8((16, 8, 8), g), config, stride=2))
    dense = dense_family()
    cases.append(make_case("first layer", random_weight(dense, 16, 3, g), dense,
                           random_int8((3, 32, 32), g), config, relu=True))
    fam = family_by_name("PSD1_P16")
    cases.append(make_case("2x2 map", random_weight(fam, 7, 9, g), fam,
                           random_int8((9, 2, 2), g), config))
    cases.append(make_case("32x32 map", random_weight(fam, 5, 6, g), fam,
                           random_int8((6, 32, 32), g), config, stride=1))
    # extremes: every input and weight -128, then requantization saturating both ways
    extreme_w = random_weight(fam, 6, 32, g, -128, -128)
    extreme_x = torch.full((32, 5, 5), -128, dtype=torch.int64)
    big = torch.full((6,), (1 << 30) - 1, dtype=torch.int64)
    cases.append(make_case("extreme -128, saturate +", extreme_w, fam, extreme_x, config,
                           multiplier=big, shift=torch.full((6,), 20, dtype=torch.int64)))
    cases.append(make_case("extreme, saturate -", extreme_w, fam, extreme_x, config,
                           multiplier=big, shift=torch.full((6,), 20, dtype=torch.int64),
                           bias=torch.full((6,), -(1 << 31), dtype=torch.int64)))
    cases.append(make_case("127 inputs, relu", random_weight(fam, 6, 32, g, 127, 127), fam,
                           torch.full((32, 4, 4), 127, dtype=torch.int64), config, relu=True))
    cases.append(make_case("back-pressure and gaps", random_weight(fam, 9, 21, g), fam,
                           random_int8((21, 6, 10), g), config, relu=True,
                           residual=random_int8((9, 6, 10), g),
                           residual_multiplier=torch.full((9,), 1 << 28, dtype=torch.int64),
                           input_gap_probability=0.3, output_backpressure=0.4))
    # the output max pool at odd sizes: odd last row and column dropped, a lone last column block
    # (W_out = 9 with tm = 4), one output channel (the left memory read the cycle after its
    # write), with back-pressure
    cases.append(make_case("pool 7x5", random_weight(fam, 5, 6, g), fam, random_int8((6, 7, 5), g),
                           config, relu=False, pool=True))
    cases.append(make_case("pool 9x9 1 channel", random_weight(fam, 1, 4, g), fam,
                           random_int8((4, 9, 9), g), config, pool=True,
                           output_backpressure=0.5))
    cases.append(make_case("pool s2 10x10 relu", random_weight(fam, 12, 8, g), fam,
                           random_int8((8, 19, 20), g), config, stride=2, relu=True, pool=True))
    if config.multi_pass:
        # one output channel whose passes are one cycle each: a partial sum is read back the
        # cycle after it is written
        cases.append(make_case("1 output, 1-cycle passes", random_weight(point, 1, 20, g), point,
                               random_int8((20, 3, 5), g), config))
        cases.append(make_case("4 passes, residual", random_weight(fam, 6, 64, g), fam,
                               random_int8((64, 4, 4), g), config, relu=True,
                               residual=random_int8((6, 4, 4), g),
                               residual_multiplier=torch.full((6,), 1 << 27, dtype=torch.int64)))
    return cases


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_engine_is_bit_exact(config_name, tmp_path_factory):
    config = CONFIGS[config_name]
    rtl = EngineRTL(config)
    runs = rtl.run(_cases(config, seed=len(config_name)))
    failures = [report for run in runs if (report := mismatch_report(run.case, run.actual))]
    assert not failures, "\n".join(failures)
    for run in runs:
        assert run.counters["macs"] == run.case.useful_macs, run.case.name
        assert run.cycles > 0
    assert len(runs) == 3 * len(FAMILIES) + 11 + (2 if config.multi_pass else 0)


def test_dense_baseline_configuration():
    config = EngineConfig(tm=2, tn=8, family=dense_family(), max_in_channels=32,
                          max_out_channels=32, fmap_depth=16 * 32 * 32, weight_depth=1024)
    g = torch.Generator().manual_seed(3)
    dense = dense_family()
    cases = [make_case("dense 3x3", random_weight(dense, 9, 14, g), dense,
                       random_int8((14, 10, 7), g), config, relu=True),
             make_case("dense 1x1", random_weight(pointwise_family(), 9, 14, g), pointwise_family(),
                       random_int8((14, 10, 7), g), config, stride=2)]
    runs = EngineRTL(config).run(cases)
    failures = [report for run in runs if (report := mismatch_report(run.case, run.actual))]
    assert not failures, "\n".join(failures)


def test_full_size_layer_32x32x64_to_64():
    """The headline family on a ResNet18 layer1 shape, timed (printed, not asserted)."""
    config = CONFIGS["tm4_tn16"]
    started = time.perf_counter()
    rtl = EngineRTL(config)
    built = time.perf_counter()
    g = torch.Generator().manual_seed(11)
    fam = family_by_name("PSD1_P16")
    case = make_case("layer1 PSD1_P16", random_weight(fam, 64, 64, g), fam,
                     random_int8((64, 32, 32), g, 0, 127), config, relu=True,
                     multiplier=torch.full((64,), 1 << 16, dtype=torch.int64))
    (run,) = rtl.run([case])
    assert mismatch_report(case, run.actual) is None, mismatch_report(case, run.actual)
    utilization = case.useful_macs / (config.multipliers * run.cycles)
    print(f"32x32x64->64 PSD1_P16: build {built - started:.1f} s (cached if ~0), "
          f"run {time.perf_counter() - built:.1f} s, {run.cycles} cycles, "
          f"utilization {utilization:.3f}")
    assert run.counters["macs"] == case.useful_macs


def test_mismatch_report_names_first_difference():
    config = CONFIGS["tm3_tn5"]
    g = torch.Generator().manual_seed(0)
    fam = family_by_name("PS4_P8")
    case = make_case("probe", random_weight(fam, 4, 8, g), fam, random_int8((8, 5, 5), g), config)
    actual = case.expected.clone()
    actual[2, 3, 1] += 1
    actual[3, 4, 4] -= 1
    report = mismatch_report(case, actual)
    assert "2 of 100 elements differ" in report
    assert "(channel 2, row 3, column 1)" in report
    assert f"expected {int(case.expected[2, 3, 1])}" in report
    assert mismatch_report(case, case.expected.clone()) is None
