"""Pattern families: the P-entry mask tables of periodic-sparse (pSConv) kernels.

A family is a table of P masks over the 3x3 window. Taps are numbered row-major, 0..8
(tap t sits at row t // 3, column t % 3); a mask is a 9-bit integer whose bit t is set when tap t
is kept. The kernel connecting output channel ``o`` to input channel ``i`` uses mask
``masks[(o + i + offset) % P]`` — the pSConv contract every part of psconv relies on
(:meth:`PatternFamily.mask_index`).

Naming follows the paper (Kundu et al., IEEE TC 2020):

* ``pSC-K``   K taps per kernel, patterns cycling with a period, no dense kernel (``pSC-9`` is the
  dense baseline);
* ``PS-K_P``  K-tap kernels cycling through P patterns;
* ``PSD-K_P`` as PS-K_P, but one kernel in every period is fully dense (the reference code's
  "with 3x3" variants). Its headline ResNet18 is PSD-1_16.

Which taps the K-tap patterns keep (the paper fixes only K = 2 and K = 4 in its code):

* K = 4: the four 2x2 corner blocks {0,1,3,4}, {1,2,4,5}, {3,4,6,7}, {4,5,7,8};
* K = 2: the six horizontal pairs {0,1}, {1,2}, {3,4}, {4,5}, {6,7}, {7,8} (reference VGG code);
* K = 1: the nine single taps 0..8;
* K = 3: our choice, rows then columns: {0,1,2}, {3,4,5}, {6,7,8}, {0,3,6}, {1,4,7}, {2,5,8};
* K = 5..8: our choice, the first K taps of a ring starting at the centre (see ``_base_patterns``).

Entry q of a family without the dense kernel is ``base[q % len(base)]``; with it, entry 0 is
dense and entry q >= 1 is ``base[(q - 1) % len(base)]``. With offset 1 and P = 8 this is exactly
the reference code's table (its mask for ``(o + i + 1) % 8 == 0`` is the dense kernel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PsconvError

NUM_TAPS = 9
DENSE_MASK = (1 << NUM_TAPS) - 1
CENTRE_MASK = 1 << 4

MAX_PERIOD = 64
"""The largest period P (mask-table entries) a family may have: the engine's mask table holds
at most this many entries (``EngineConfig.max_period``), and the paper's families use P <= 16."""

_RING_FROM_CENTRE = (4, 1, 3, 5, 7, 0, 2, 6, 8)


def _taps_mask(taps) -> int:
    mask = 0
    for tap in taps:
        mask |= 1 << tap
    return mask


def _base_patterns(k: int) -> tuple[int, ...]:
    if k == 1:
        return tuple(1 << t for t in range(NUM_TAPS))
    if k == 2:
        return tuple(_taps_mask(p) for p in ((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8)))
    if k == 3:
        return tuple(_taps_mask(p) for p in ((0, 1, 2), (3, 4, 5), (6, 7, 8),
                                             (0, 3, 6), (1, 4, 7), (2, 5, 8)))
    if k == 4:
        return tuple(_taps_mask(p) for p in ((0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8)))
    if k == 9:
        return (DENSE_MASK,)
    return (_taps_mask(_RING_FROM_CENTRE[:k]),)


def mask_taps(mask: int) -> tuple[int, ...]:
    """The kept taps of ``mask``, ascending (row-major tap numbers)."""
    return tuple(t for t in range(NUM_TAPS) if mask >> t & 1)


def mask_to_grid(mask: int) -> list[list[int]]:
    """``mask`` as a 3x3 list of 0/1, row-major."""
    return [[mask >> (3 * r + c) & 1 for c in range(3)] for r in range(3)]


@dataclass(frozen=True)
class PatternFamily:
    """A P-entry mask table with its channel offset.

    ``masks[q]`` is a 9-bit tap mask; kernel (o, i) uses ``masks[(o + i + offset) % P]``.
    ``kernel_size`` is 3 for 3x3 families and 1 for the pointwise family (1x1 convolutions,
    whose single tap is the centre of the 3x3 window).
    """

    masks: tuple[int, ...]
    offset: int = 1
    name: str = "custom"
    kernel_size: int = 3

    def __post_init__(self):
        masks = tuple(self.masks)
        object.__setattr__(self, "masks", masks)
        if len(masks) < 1:
            raise PsconvError("pattern family: the mask table is empty; it needs P >= 1 entries")
        check_period(len(masks))
        for q, mask in enumerate(masks):
            if not isinstance(mask, int) or isinstance(mask, bool) or not 1 <= mask <= DENSE_MASK:
                raise PsconvError(
                    f"pattern family {self.name!r}: mask {q} is {mask!r}; a mask is a 9-bit "
                    f"integer 1..{DENSE_MASK} (bit t keeps row-major tap t)")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise PsconvError(
                f"pattern family {self.name!r}: offset is {self.offset!r}; allowed: an integer >= 0")
        if self.kernel_size not in (1, 3):
            raise PsconvError(
                f"pattern family {self.name!r}: kernel_size is {self.kernel_size!r}; allowed: 1 or 3")
        if self.kernel_size == 1 and any(m != CENTRE_MASK for m in masks):
            raise PsconvError(
                f"pattern family {self.name!r}: a 1x1 family may only use the centre tap "
                f"(mask {CENTRE_MASK})")

    @property
    def period(self) -> int:
        """P, the number of masks in the table."""
        return len(self.masks)

    @property
    def taps_per_period(self) -> int:
        """T, the kept taps summed over the table: what one period of input channels costs."""
        return sum(bin(m).count("1") for m in self.masks)

    @property
    def tap_counts(self) -> tuple[int, ...]:
        return tuple(bin(m).count("1") for m in self.masks)

    @property
    def balanced(self) -> bool:
        """True when every mask keeps the same number of taps."""
        return len(set(self.tap_counts)) == 1

    @property
    def max_taps(self) -> int:
        return max(self.tap_counts)

    @property
    def ideal_dense_equivalent(self) -> float:
        """9 * P / T: dense-equivalent MACs per multiplier per cycle at full utilization."""
        return NUM_TAPS * self.period / self.taps_per_period

    def mask_index(self, out_channel: int, in_channel: int) -> int:
        """Index into ``masks`` of kernel (out_channel, in_channel): (o + i + offset) % P."""
        return (out_channel + in_channel + self.offset) % self.period

    def mask(self, out_channel: int, in_channel: int) -> int:
        return self.masks[self.mask_index(out_channel, in_channel)]

    def tap_sequence(self) -> tuple[tuple[int, int], ...]:
        """The T (mask index, tap) pairs of one period, mask index then tap ascending.

        This is the order in which the engine visits one period of input channels and in which
        the compressed weight format stores them (see :mod:`psconv.firmware.packing`).
        """
        return tuple((q, t) for q, m in enumerate(self.masks) for t in mask_taps(m))

    def weight_mask(self, out_channels: int, in_channels: int):
        """The (out, in, k, k) 0/1 float tensor of this family for a layer of that shape."""
        import torch

        q = (torch.arange(out_channels)[:, None] + torch.arange(in_channels)[None, :]
             + self.offset) % self.period
        table = torch.tensor([[m >> t & 1 for t in range(NUM_TAPS)] for m in self.masks],
                             dtype=torch.float32)
        full = table[q].reshape(out_channels, in_channels, 3, 3)
        if self.kernel_size == 1:
            return full[:, :, 1:2, 1:2].contiguous()
        return full

    def check_weight(self, weight, what: str) -> None:
        """Raise :class:`PsconvError` (naming ``what``, output channel, input channel and tap) if
        the (out, in, k, k) ``weight`` is nonzero where its kernel's mask prunes the tap."""
        out_channels, in_channels = weight.shape[:2]
        violating = (weight != 0) & (self.weight_mask(out_channels, in_channels) == 0)
        if bool(violating.any()):
            o, i, row, column = (int(v) for v in violating.nonzero()[0])
            tap = 4 if self.kernel_size == 1 else 3 * row + column
            q = self.mask_index(o, i)
            raise PsconvError(
                f"{what}: output channel {o}, input channel {i}, tap {tap} (row {tap // 3}, "
                f"column {tap % 3}) holds {int(weight[o, i, row, column])} but mask {q} "
                f"({self.masks[q]:#05x}) of family {self.name!r} prunes that tap; "
                f"{int(violating.sum())} such weight(s) in this layer")

    def to_json(self) -> dict:
        return {"name": self.name, "masks": list(self.masks), "offset": self.offset,
                "kernel_size": self.kernel_size}

    @classmethod
    def from_json(cls, data: dict) -> "PatternFamily":
        return cls(masks=tuple(data["masks"]), offset=int(data.get("offset", 1)),
                   name=str(data.get("name", "custom")), kernel_size=int(data.get("kernel_size", 3)))


def check_taps(k, what="K") -> None:
    """Raise :class:`PsconvError` unless ``k`` (named ``what`` in the message) is 1..9 taps."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= NUM_TAPS:
        raise PsconvError(f"pattern family: {what} is {k!r}; allowed: an integer 1..9")


def check_period(p) -> None:
    """Raise :class:`PsconvError` unless ``p`` is a period 1..:data:`MAX_PERIOD`."""
    if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= MAX_PERIOD:
        raise PsconvError(f"pattern family: P is {p!r}; allowed: an integer 1..{MAX_PERIOD}")


def paper_family(k: int, period: int, dense_kernel: bool = False, offset: int = 1) -> PatternFamily:
    """The paper's PS-K_P (``dense_kernel=False``) or PSD-K_P (``True``) family."""
    check_taps(k)
    check_period(period)
    if dense_kernel and period < 2:
        raise PsconvError(
            f"pattern family: PSD needs P >= 2 (one dense kernel plus K-tap kernels); got P = {period}")
    base = _base_patterns(k)
    if dense_kernel:
        masks = (DENSE_MASK,) + tuple(base[(q - 1) % len(base)] for q in range(1, period))
        name = f"PSD{k}_P{period}"
    else:
        masks = tuple(base[q % len(base)] for q in range(period))
        name = f"PS{k}_P{period}" if k != NUM_TAPS else "dense"
    return PatternFamily(masks=masks, offset=offset, name=name)


def balanced_family(k: int, period: int, offset: int = 1) -> PatternFamily:
    """A family in which every entry keeps exactly K taps (PS-K_P): the equal-K case."""
    return paper_family(k, period, dense_kernel=False, offset=offset)


def dense_family() -> PatternFamily:
    """K = 9, P = 1: the dense 3x3 baseline (and the first convolution of every network)."""
    return PatternFamily(masks=(DENSE_MASK,), offset=0, name="dense")


def pointwise_family() -> PatternFamily:
    """K = 1, P = 1, centre tap: how the engine runs 1x1 convolutions."""
    return PatternFamily(masks=(CENTRE_MASK,), offset=0, name="pointwise", kernel_size=1)


def custom_family(masks, offset: int = 1, taps: int | None = None, name: str = "custom") -> PatternFamily:
    """A user table; with ``taps`` every mask must keep exactly that many taps."""
    masks = tuple(masks)
    if taps is not None:
        check_taps(taps)
        for q, mask in enumerate(masks):
            if isinstance(mask, int) and bin(mask).count("1") != taps:
                raise PsconvError(
                    f"pattern family {name!r}: mask {q} ({mask:#05x}) keeps "
                    f"{bin(mask).count('1')} taps; the family was declared with K = {taps}")
    return PatternFamily(masks=masks, offset=offset, name=name)


_NAME_RE = re.compile(r"^(?:(PSD|PS)-?(\d)_P?(\d+)|pSC-?(\d)|dense|pointwise)$", re.IGNORECASE)


def family_by_name(name: str) -> PatternFamily:
    """Parse ``PS4_P8``, ``PSD1_P16``, ``PSD-1_16``, ``pSC-9``, ``dense`` or ``pointwise``."""
    match = _NAME_RE.match(name.strip())
    if not match:
        raise PsconvError(
            f"pattern family name {name!r} not understood; allowed: PS<K>_P<P>, PSD<K>_P<P> "
            f"(e.g. PSD1_P16), pSC-<K> (period 8), dense, pointwise")
    kind, k, p, psc_k = match.groups()
    lowered = name.strip().lower()
    if lowered == "dense":
        return dense_family()
    if lowered == "pointwise":
        return pointwise_family()
    if psc_k is not None:
        k = int(psc_k)
        check_taps(k)
        return dense_family() if k == NUM_TAPS else paper_family(k, 8)
    return paper_family(int(k), int(p), dense_kernel=kind.upper() == "PSD")


def recognise_family(weight) -> PatternFamily:
    """The pattern family a plain 3x3 ``weight`` (out, in, 3, 3) follows, or :func:`dense_family`.

    A family fits when every kernel is zero wherever its mask (``masks[(o + i + offset) % P]``)
    prunes a tap. Candidates are the paper's PS-K_P and PSD-K_P tables (K = 1..8, P = 1..
    :data:`MAX_PERIOD`, every offset); of those that fit, the one with the fewest taps per input
    channel (T / P) wins, then the smallest P, then offset 1 (the paper's), then the smallest
    offset. Only periods up to (out + in) / 2 are tried, so every mask is seen on at least two
    of the layer's channel diagonals (o + i): a longer table would fit a small layer by accident.
    A weight that fits no candidate is dense.
    """
    import torch

    out_channels, in_channels = weight.shape[:2]
    kept = (weight.reshape(out_channels, in_channels, NUM_TAPS) != 0).to(torch.int64)
    if bool(kept.all()):
        return dense_family()
    channel_sum = torch.arange(out_channels)[:, None] + torch.arange(in_channels)[None, :]
    diagonals = torch.arange(out_channels + in_channels - 1)
    # kernels on diagonal o + i that keep each tap: the masks depend on the diagonal alone
    on_diagonal = torch.zeros(len(diagonals), NUM_TAPS, dtype=torch.int64).index_add_(
        0, channel_sum.reshape(-1), kept.reshape(-1, NUM_TAPS))
    best, best_key = dense_family(), (float(NUM_TAPS), 1, 0, 0)
    for period in range(1, min(MAX_PERIOD, (out_channels + in_channels) // 2) + 1):
        used_taps = torch.zeros(period, NUM_TAPS, dtype=torch.int64).index_add_(
            0, diagonals % period, on_diagonal) > 0
        used = (used_taps.to(torch.int64) << torch.arange(NUM_TAPS)).sum(dim=1).tolist()  # taps residue r keeps
        for k in range(1, NUM_TAPS):
            for dense_kernel in (False, True):
                if dense_kernel and period < 2:
                    continue
                candidate = paper_family(k, period, dense_kernel)
                density = candidate.taps_per_period / period
                if (density, period) > best_key[:2]:
                    continue    # no offset of it can win
                for offset in range(period):
                    key = (density, period, offset != 1, offset)
                    if key >= best_key:
                        continue
                    if all(used[r] & ~candidate.masks[(r + offset) % period] == 0
                           for r in range(period)):
                        best = paper_family(k, period, dense_kernel, offset)
                        best_key = key
    return best
