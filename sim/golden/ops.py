"""Integer golden model: the exact arithmetic the hardware must reproduce, element for element.

Everything here is pure integer arithmetic on ``torch.int64`` tensors; no floating point is
involved anywhere. Tensors are CHW (one image, no batch dimension) unless stated.

Definitions (these formulas are the contract; hardware, compiler and driver call or mirror them,
they never re-derive them):

Convolution (3x3 with padding 1, or 1x1 with padding 0; stride 1 or 2)::

    acc[o, y, x] = sum_{i, dy, dx} w[o, i, dy, dx] * xpad[i, y*s + dy, x*s + dx]

  ``xpad`` is the input with ``padding`` zero rows/columns on every side; output size is
  ``(H + 2*padding - k) // s + 1``. ``w`` and ``x`` are int8, ``acc`` is exact (int64 here; the
  engine's accumulator width is derived so it never overflows, see ``psconv.config``).

Requantization, per output channel o, with multiplier ``M[o]``, shift ``S[o]``, bias ``b[o]``
(int32), optional residual ``r`` (int8, same shape as the output) with multiplier ``R[o]``::

    v = (acc + b[o]) * M[o] + r * R[o]           (exact; |v| < 2**63 by the ranges below)
    y = (v + 2**(S[o] - 1)) >> S[o]              (arithmetic shift: round half toward +inf)
    y = max(y, 0)                  if ReLU
    y = min(max(y, -128), 127)     (saturate to int8)

  Allowed ranges: ``0 <= M, R < 2**30``, ``1 <= S <= 62``, ``b`` int32. With no residual,
  ``R`` is ignored (the term is 0).

Average pool over the whole map (ResNet's final pool)::

    s[c] = sum_{y, x} x[c, y, x];   y[c] = sat8((s[c] * M + 2**(S-1)) >> S)

Max pool, 2x2 windows at stride 2, no padding (VGG's pool)::

    y[c, y, x] = max_{dy, dx in 0..1} x[c, 2*y + dy, 2*x + dx]

  Output size ``H // 2`` x ``W // 2`` (an odd last row or column is dropped, as
  ``torch.nn.functional.max_pool2d``). Exact on int8: no rounding, the output range is the
  input's, so the layer keeps its input's scale.

Fully connected (the classifier)::

    logits[k] = sum_c w[k, c] * x[c] + b[k]        (int32 result, no requantization)

Input quantization (host side, float image to int8)::

    x_q = sat8(round_half_even(x / scale))
"""

from __future__ import annotations

import math

import torch

from psconv.errors import PsconvError

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
MULTIPLIER_LIMIT = 1 << 30
SHIFT_MIN, SHIFT_MAX = 1, 62


def _as_int64(t, what: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise PsconvError(f"golden model: {what} has dtype {t.dtype}; an integer tensor is required")
    return t.to(torch.int64)


def check_range(t: torch.Tensor, low: int, high: int, what: str) -> None:
    """Raise naming ``what`` and the first value outside [low, high]."""
    if t.numel() == 0:
        return
    bad = (t < low) | (t > high)
    if bool(bad.any()):
        index = tuple(int(v) for v in torch.nonzero(bad)[0])
        raise PsconvError(
            f"{what}: value {int(t[index])} at index {index} is outside {low}..{high}")


def saturate_int8(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(INT8_MIN, INT8_MAX)


def conv2d_int(x, w, stride: int = 1, padding: int | None = None) -> torch.Tensor:
    """Exact integer convolution of one CHW int8 map with (O, I, k, k) int8 weights.

    Returns the int64 accumulator (no bias). ``padding`` defaults to ``k // 2``.
    """
    x = _as_int64(x, "conv input")
    w = _as_int64(w, "conv weight")
    if x.dim() != 3 or w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise PsconvError(
            f"golden conv: input must be CHW and weight (O, I, k, k); got {tuple(x.shape)} "
            f"and {tuple(w.shape)}")
    if w.shape[1] != x.shape[0]:
        raise PsconvError(
            f"golden conv: weight has {w.shape[1]} input channels, input has {x.shape[0]}")
    if stride not in (1, 2):
        raise PsconvError(f"golden conv: stride is {stride!r}; allowed: 1 or 2")
    k = w.shape[2]
    pad = k // 2 if padding is None else padding
    _, height, width = x.shape
    out_h = (height + 2 * pad - k) // stride + 1
    out_w = (width + 2 * pad - k) // stride + 1
    if out_h < 1 or out_w < 1:
        raise PsconvError(f"golden conv: input {height}x{width} is too small for k={k}, padding={pad}")
    xpad = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    acc = torch.zeros((w.shape[0], out_h, out_w), dtype=torch.int64)
    for dy in range(k):
        for dx in range(k):
            window = xpad[:, dy:dy + stride * (out_h - 1) + 1:stride,
                          dx:dx + stride * (out_w - 1) + 1:stride]
            acc += torch.einsum("oi,ihw->ohw", w[:, :, dy, dx], window)
    return acc


def requantize(acc, bias, multiplier, shift, relu: bool, residual=None, residual_multiplier=None):
    """Apply bias, per-channel multiplier/shift, residual, ReLU and int8 saturation (see module doc).

    ``acc`` is (O, H, W); ``bias``, ``multiplier``, ``shift``, ``residual_multiplier`` are (O,).
    """
    acc = _as_int64(acc, "accumulator")
    channels = acc.shape[0]
    bias = _as_int64(bias, "bias").reshape(-1)
    multiplier = _as_int64(multiplier, "multiplier").reshape(-1)
    shift = _as_int64(shift, "shift").reshape(-1)
    for name, t in (("bias", bias), ("multiplier", multiplier), ("shift", shift)):
        if t.numel() != channels:
            raise PsconvError(f"requantize: {name} has {t.numel()} entries, the output has {channels} channels")
    check_range(bias, INT32_MIN, INT32_MAX, "requantize bias")
    check_range(multiplier, 0, MULTIPLIER_LIMIT - 1, "requantize multiplier")
    check_range(shift, SHIFT_MIN, SHIFT_MAX, "requantize shift")
    view = (channels,) + (1,) * (acc.dim() - 1)
    v = (acc + bias.view(view)) * multiplier.view(view)
    if residual is not None:
        residual = _as_int64(residual, "residual")
        if residual.shape != acc.shape:
            raise PsconvError(
                f"requantize: residual shape {tuple(residual.shape)} differs from output {tuple(acc.shape)}")
        check_range(residual, INT8_MIN, INT8_MAX, "requantize residual")
        residual_multiplier = _as_int64(residual_multiplier, "residual multiplier").reshape(-1)
        check_range(residual_multiplier, 0, MULTIPLIER_LIMIT - 1, "requantize residual multiplier")
        v = v + residual * residual_multiplier.view(view)
    s = shift.view(view)
    y = (v + (1 << (s - 1))) >> s
    if relu:
        y = y.clamp(min=0)
    return saturate_int8(y)


def global_avgpool_int(x, multiplier: int, shift: int) -> torch.Tensor:
    """Whole-map average pool of a CHW int8 map to C int8 values (see module doc)."""
    x = _as_int64(x, "avgpool input")
    check_range(torch.tensor([multiplier]), 0, MULTIPLIER_LIMIT - 1, "avgpool multiplier")
    check_range(torch.tensor([shift]), SHIFT_MIN, SHIFT_MAX, "avgpool shift")
    total = x.sum(dim=(1, 2))
    return saturate_int8((total * multiplier + (1 << (shift - 1))) >> shift)


MAX_POOL_KERNEL = 2
MAX_POOL_STRIDE = 2


def maxpool2d_int(x, kernel_size: int = MAX_POOL_KERNEL, stride: int = MAX_POOL_STRIDE) -> torch.Tensor:
    """Max pool of a CHW int8 map over ``kernel_size`` x ``kernel_size`` windows at ``stride``
    (see module doc; only 2x2 at stride 2 is the contract). Returns int8 values in int64."""
    x = _as_int64(x, "maxpool input")
    if (kernel_size, stride) != (MAX_POOL_KERNEL, MAX_POOL_STRIDE):
        raise PsconvError(f"golden maxpool: kernel_size {kernel_size!r}, stride {stride!r}; "
                          f"allowed: kernel_size {MAX_POOL_KERNEL}, stride {MAX_POOL_STRIDE}")
    if x.dim() != 3:
        raise PsconvError(f"golden maxpool: input must be CHW; got {tuple(x.shape)}")
    check_range(x, INT8_MIN, INT8_MAX, "maxpool input")
    channels, height, width = x.shape
    out_h, out_w = height // stride, width // stride
    if out_h < 1 or out_w < 1:
        raise PsconvError(f"golden maxpool: input {height}x{width} is smaller than its "
                          f"{kernel_size}x{kernel_size} window")
    x = x[:, :out_h * stride, :out_w * stride]
    return x.reshape(channels, out_h, stride, out_w, stride).amax(dim=(2, 4))


def linear_int(x, w, bias) -> torch.Tensor:
    """Integer fully connected layer: int64 logits = w @ x + bias (see module doc)."""
    x = _as_int64(x, "fc input").reshape(-1)
    w = _as_int64(w, "fc weight")
    bias = _as_int64(bias, "fc bias")
    if w.dim() != 2 or w.shape[1] != x.numel():
        raise PsconvError(f"golden fc: weight {tuple(w.shape)} does not match input of {x.numel()} values")
    return w @ x + bias


def quantize_input(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Float CHW image to int8 (round half to even, saturate)."""
    if not (math.isfinite(scale) and scale > 0):     # NaN passes `scale <= 0`
        raise PsconvError(f"quantize_input: scale is {scale}; allowed: a finite number > 0")
    return saturate_int8(torch.round(x.double() / scale).to(torch.int64))
