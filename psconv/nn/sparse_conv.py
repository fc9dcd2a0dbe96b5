"""Convolutions whose kernels follow a fixed periodic-sparse pattern family.

:class:`PeriodicSparseConv2d` is an ``nn.Conv2d`` whose kernel (o, i) may only use the taps of
``family.masks[(o + i + offset) % P]`` (the pSConv contract, :mod:`psconv.families`). The mask is
fixed for the layer's life, and three things keep pruned taps at exactly zero in ``conv.weight``
itself, so an int8 exporter can read the stored weight without re-masking it:

* the stored weight is multiplied by the mask at construction (and after ``reset_parameters`` and
  ``load_state_dict``);
* ``forward`` convolves with ``weight * mask``, so the effective weight is masked whatever the
  stored one holds;
* a gradient hook on ``weight`` zeroes the gradient of pruned taps, whatever else touches the
  weight in the loss. With zero weight and zero gradient, SGD's weight decay and momentum and
  Adam's moments stay zero there, so no optimizer step moves a pruned tap.

The mask is a non-persistent buffer: it is a function of the family, so the state dict has the
same keys as a plain ``nn.Conv2d``'s.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PsconvError
from ..families import PatternFamily


def kernels_per_mask(family: PatternFamily, out_channels: int, in_channels: int) -> tuple[int, ...]:
    """How many of the ``out_channels * in_channels`` kernels use each of the P masks.

    Counted from residues, not from a mask tensor, so it also works for layers built on the meta
    device (where tensor values do not exist).
    """
    period = family.period

    def per_residue(n: int) -> list[int]:
        return [n // period + (1 if r < n % period else 0) for r in range(period)]

    outs, ins = per_residue(out_channels), per_residue(in_channels)
    counts = [0] * period
    for r_out, n_out in enumerate(outs):
        for r_in, n_in in enumerate(ins):
            counts[(r_out + r_in + family.offset) % period] += n_out * n_in
    return tuple(counts)


def _check_kernel(conv: nn.Conv2d, family: PatternFamily) -> None:
    k_h, k_w = conv.kernel_size
    where = f"PeriodicSparseConv2d({conv.in_channels}->{conv.out_channels}, {k_h}x{k_w})"
    if k_h != k_w or k_h not in (1, 3):
        raise PsconvError(f"{where}: kernel_size is {k_h}x{k_w}; allowed: 1x1 or 3x3")
    if family.kernel_size != k_h:
        raise PsconvError(
            f"{where}: family {family.name!r} has kernel_size {family.kernel_size}; allowed: a family "
            f"with kernel_size {k_h} (3x3 layers: a paper family or dense; 1x1 layers: pointwise)")


def _remask_after_load(conv: "PeriodicSparseConv2d", _incompatible_keys) -> None:
    # A checkpoint from a dense or differently masked model must not smuggle in pruned taps.
    conv._apply_mask_to_weight()


class _MaskGradient:
    """Gradient hook multiplying by the owning layer's mask (a class, so a module holding it pickles)."""

    def __init__(self, conv: "PeriodicSparseConv2d"):
        self.conv = conv

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.conv.mask


class PeriodicSparseConv2d(nn.Conv2d):
    """A square convolution (groups 1) restricted to a pattern family.

    ``family.kernel_size`` must equal ``kernel_size``: 3x3 layers take a 3x3 family (a paper
    family, or :func:`~psconv.families.dense_family` for dense layers), 1x1 layers take
    :func:`~psconv.families.pointwise_family`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 family: PatternFamily | None = None, bias: bool = False):
        if not isinstance(family, PatternFamily):
            raise PsconvError(
                f"PeriodicSparseConv2d({in_channels}->{out_channels}): family is {family!r}; "
                f"allowed: a psconv.families.PatternFamily")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        _check_kernel(self, family)
        self.family = family
        mask = family.weight_mask(out_channels, in_channels)
        self.register_buffer("mask", mask.to(device=self.weight.device, dtype=self.weight.dtype),
                             persistent=False)
        self._apply_mask_to_weight()
        self._hook_weight_gradient()
        self.register_load_state_dict_post_hook(_remask_after_load)

    def _apply_mask_to_weight(self) -> None:
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def _hook_weight_gradient(self) -> None:
        if self.weight.requires_grad:  # a frozen weight cannot take a hook (nor needs one)
            self.weight.register_hook(_MaskGradient(self))

    def __setstate__(self, state):
        # deepcopy and pickling rebuild the Parameter without its hooks: re-attach ours.
        super().__setstate__(state)
        self._hook_weight_gradient()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if "mask" in self._buffers:  # absent while nn.Conv2d.__init__ runs
            self._apply_mask_to_weight()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight * self.mask, self.bias)

    def nonzero_weights(self) -> int:
        """Weights the family keeps: sum over kernels of their mask's tap count."""
        return sum(n * taps for n, taps in
                   zip(kernels_per_mask(self.family, self.out_channels, self.in_channels),
                       self.family.tap_counts))

    def nonzero_parameters(self) -> int:
        """Kept weights plus the bias, if any: the layer's parameter count once pruned taps go."""
        return self.nonzero_weights() + (self.bias.numel() if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, family={self.family.name}"
