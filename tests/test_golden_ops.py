"""The integer golden model against independent references."""

import random

import pytest
import torch

from psconv.errors import PsconvError
from psconv.families import dense_family, paper_family, pointwise_family
from psconv.sim.golden import ops

FAMILIES = [paper_family(k, p, d) for k in (1, 2, 3, 4) for p in (4, 8, 16) for d in (False, True)]
FAMILIES += [dense_family(), pointwise_family()]


def _random_layer(rng: random.Random, family):
    c_in, c_out = rng.randint(1, 64), rng.randint(1, 64)
    height, width = rng.randint(1, 32), rng.randint(1, 32)
    stride = rng.choice((1, 2))
    g = torch.Generator().manual_seed(rng.randrange(1 << 31))
    x = torch.randint(-128, 128, (c_in, height, width), generator=g)
    mask = family.weight_mask(c_out, c_in).to(torch.int64)
    w = torch.randint(-128, 128, tuple(mask.shape), generator=g) * mask
    return x, w, stride


@pytest.mark.parametrize("case", range(60))
def test_conv_equals_float64_conv2d(case):
    """Exact equality with float64 torch conv2d on the same integers, over random shapes."""
    rng = random.Random(1000 + case)
    family = FAMILIES[case % len(FAMILIES)]
    x, w, stride = _random_layer(rng, family)
    padding = w.shape[2] // 2
    acc = ops.conv2d_int(x, w, stride, padding)
    reference = torch.nn.functional.conv2d(x[None].double(), w.double(), stride=stride,
                                           padding=padding)[0]
    assert acc.dtype == torch.int64
    assert torch.equal(acc, reference.to(torch.int64))


def test_conv_extreme_values_are_exact():
    x = torch.full((64, 8, 8), -128)
    w = torch.full((4, 64, 3, 3), -128)
    acc = ops.conv2d_int(x, w)
    assert int(acc[0, 4, 4]) == 64 * 9 * 128 * 128
    assert int(acc[0, 0, 0]) == 64 * 4 * 128 * 128  # corner: 4 taps inside the map


def _requant_reference(acc, bias, m, s, relu, residual=None, r=None):
    """Python big-int version of the docstring formula, element by element."""
    out = torch.empty_like(acc)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in acc.shape]):
        o, y, x = (int(v) for v in index)
        v = (int(acc[o, y, x]) + int(bias[o])) * int(m[o])
        if residual is not None:
            v += int(residual[o, y, x]) * int(r[o])
        q = (v + (1 << (int(s[o]) - 1))) // (1 << int(s[o]))  # floor division = arithmetic shift
        if relu:
            q = max(q, 0)
        out[o, y, x] = min(max(q, -128), 127)
    return out


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_requantize_matches_bigint_formula(relu, with_residual):
    g = torch.Generator().manual_seed(7)
    acc = torch.randint(-(1 << 26), 1 << 26, (5, 3, 4), generator=g)
    bias = torch.randint(-(1 << 31), (1 << 31) - 1, (5,), generator=g)
    m = torch.randint(0, 1 << 30, (5,), generator=g)
    s = torch.randint(1, 63, (5,), generator=g)
    residual = torch.randint(-128, 128, acc.shape, generator=g) if with_residual else None
    r = torch.randint(0, 1 << 30, (5,), generator=g) if with_residual else None
    got = ops.requantize(acc, bias, m, s, relu, residual, r)
    assert torch.equal(got, _requant_reference(acc, bias, m, s, relu, residual, r))


def test_requantize_rounds_half_up_and_saturates_both_ways():
    one = torch.ones(1, dtype=torch.int64)
    acc = torch.tensor([[[3, -3, 5, -5, 1000, -1000]]])
    # multiplier 1, shift 1: y = (acc + 1) >> 1 -> 2, -1, 3, -2 and saturation at 127/-128
    got = ops.requantize(acc, 0 * one, one, one, relu=False)
    assert got.tolist() == [[[2, -1, 3, -2, 127, -128]]]
    got = ops.requantize(acc, 0 * one, one, one, relu=True)
    assert got.tolist() == [[[2, 0, 3, 0, 127, 0]]]


def test_requantize_rejects_out_of_range_parameters():
    acc = torch.zeros((2, 1, 1), dtype=torch.int64)
    with pytest.raises(PsconvError, match="multiplier"):
        ops.requantize(acc, torch.zeros(2, dtype=torch.int64), torch.tensor([1, 1 << 30]), torch.ones(2, dtype=torch.int64), False)
    with pytest.raises(PsconvError, match="shift"):
        ops.requantize(acc, torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64), torch.tensor([1, 63]), False)


def test_conv_rejects_float_and_mismatched_channels():
    with pytest.raises(PsconvError, match="integer"):
        ops.conv2d_int(torch.zeros((1, 2, 2)), torch.zeros((1, 1, 3, 3), dtype=torch.int64))
    with pytest.raises(PsconvError, match="input channels"):
        ops.conv2d_int(torch.zeros((2, 4, 4), dtype=torch.int64), torch.zeros((1, 3, 3, 3), dtype=torch.int64))


def test_avgpool_and_linear():
    x = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    pooled = ops.global_avgpool_int(x, multiplier=1, shift=4)  # /16, round half up
    assert pooled.tolist() == [8, 24]  # 7.5 -> 8, 23.5 -> 24
    w = torch.tensor([[1, -1], [2, 3]])
    assert ops.linear_int(pooled, w, torch.tensor([5, -5])).tolist() == [-11, 83]


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_quantize_input_refuses_a_scale_that_is_not_finite_and_positive(scale):
    """NaN passes ``scale <= 0`` and would quantize every image to one constant."""
    with pytest.raises(PsconvError, match=f"scale is {scale}; allowed: a finite number > 0"):
        ops.quantize_input(torch.ones((3, 2, 2)), scale)
