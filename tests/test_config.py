"""The configuration object and pattern families: validation and derived values."""

import pytest

from psconv.config import EngineConfig, required_accumulator_width
from psconv.errors import PsconvError
from psconv.families import (DENSE_MASK, custom_family, family_by_name, paper_family,
                             PatternFamily)


def test_reference_code_table_psd2_p8():
    # The paper's reference VGG code: (o + i + 1) % 8 -> 0 dense, 1 {0,1}, 2 {1,2}, 3 {3,4},
    # 4 {4,5}, 5 {6,7}, 6 {7,8}, 7 {0,1}.
    family = paper_family(2, 8, dense_kernel=True)
    assert family.offset == 1
    assert family.masks == (DENSE_MASK, 0b11, 0b110, 0b11000, 0b110000, 0b11000000,
                            0b110000000, 0b11)


@pytest.mark.parametrize("k,p,dense,t", [(4, 8, False, 32), (4, 8, True, 37), (1, 16, True, 24),
                                          (2, 4, False, 8), (3, 16, True, 54)])
def test_taps_per_period_and_ideal(k, p, dense, t):
    family = paper_family(k, p, dense)
    assert family.taps_per_period == t
    assert family.ideal_dense_equivalent == pytest.approx(9 * p / t)
    assert family.balanced == (not dense)


def test_headline_ideal_is_six():
    assert family_by_name("PSD1_P16").ideal_dense_equivalent == 6.0
    assert family_by_name("PS4_P8").ideal_dense_equivalent == 2.25


def test_mask_index_formula():
    family = paper_family(4, 8)
    assert family.mask_index(3, 6) == (3 + 6 + 1) % 8
    mask = family.weight_mask(10, 12)
    for o in range(10):
        for i in range(12):
            m = family.masks[(o + i + family.offset) % 8]
            assert mask[o, i].reshape(-1).tolist() == [m >> t & 1 for t in range(9)]


@pytest.mark.parametrize("kwargs,field", [
    ({"tm": 0}, "tm"), ({"tn": 100}, "tn"), ({"data_width": 4}, "data_width"),
    ({"acc_width": 20}, "acc_width"), ({"max_in_channels": 0}, "max_in_channels"),
    ({"max_period": 4}, "max_period"),
])
def test_config_rejects_with_field_name(kwargs, field):
    with pytest.raises(PsconvError, match=field):
        EngineConfig(**kwargs)


@pytest.mark.parametrize("make,text", [
    (lambda: paper_family(0, 8), "K is 0"),
    (lambda: paper_family(10, 8), "K is 10"),
    (lambda: paper_family(4, 0), "P is 0"),
    (lambda: paper_family(4, 65), "P is 65; allowed: an integer 1..64"),
    (lambda: family_by_name("PS4_P1000000"), "P is 1000000"),
    (lambda: PatternFamily(masks=(1,) * 65), "P is 65"),
    (lambda: custom_family([0b1111, 0b111], taps=4), "keeps 3 taps"),
    (lambda: PatternFamily(masks=(0,)), "mask 0"),
    (lambda: PatternFamily(masks=()), "empty"),
    (lambda: family_by_name("PQ4"), "not understood"),
])
def test_family_rejects_with_value(make, text):
    with pytest.raises(PsconvError, match=text):
        make()


def test_accumulator_width_is_derived_and_proven():
    config = EngineConfig(max_in_channels=512)
    width = config.acc_width
    worst = 9 * 512 * 128 * 128  # every product (-128) * (-128)
    assert worst <= (1 << (width - 1)) - 1            # fits
    assert worst > (1 << (width - 2)) - 1             # and one bit less would not
    assert required_accumulator_width(1) < width


def test_json_round_trip():
    config = EngineConfig(tm=2, tn=8, family=paper_family(1, 16, True))
    assert EngineConfig.from_json(config.to_json()) == config
    with pytest.raises(PsconvError, match="unknown field"):
        EngineConfig.from_json({"tm": 2, "bogus": 1})


def test_fmap_depth_must_hold_one_row():
    """The feature-map buffer stores rows of max_width bytes (fmap_depth // max_width of them);
    the smallest layer (one channel, one row) needs one, so fmap_depth < max_width runs nothing."""
    with pytest.raises(PsconvError, match="fmap_depth is 31; allowed: at least max_width = 32"):
        EngineConfig(max_width=32, fmap_depth=31)
    with pytest.raises(PsconvError, match="fmap_depth is 1"):
        EngineConfig().replace(fmap_depth=1)
    smallest = EngineConfig(max_width=8, max_height=8, fmap_depth=8, weight_depth=1)
    from psconv.protocol.descriptor import LayerSpec
    LayerSpec(in_channels=1, out_channels=1, in_height=1, in_width=8, kernel=1).check(
        smallest, masks=(0x010,))    # one row, one weight word: the minimum really runs a layer


def test_max_period_is_bounded_like_the_families():
    with pytest.raises(PsconvError, match="max_period is 65; allowed: an integer 1..64"):
        EngineConfig(max_period=65)
    assert EngineConfig(max_period=64).max_period == 64
