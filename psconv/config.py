"""The engine configuration: the single source of truth for gateware, golden model, compiler
and driver.

:class:`EngineConfig` is frozen and validated on construction; every invalid value raises one
:class:`~psconv.errors.PsconvError` naming the field, the value and what is allowed. The
accumulator width is derived from the largest layer the configuration admits
(:func:`required_accumulator_width`) rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from .errors import PsconvError
from .families import MAX_PERIOD, NUM_TAPS, PatternFamily, family_by_name, paper_family

DATA_WIDTH = 8
"""Activations and weights are int8 (see :mod:`psconv.sim.golden.quant`)."""

CONFIG_VERSION = 1


def required_accumulator_width(max_in_channels: int, data_width: int = DATA_WIDTH) -> int:
    """Bits a signed accumulator needs for the worst-case dot product of a dense 3x3 layer.

    The worst case is every product at its extreme, (-2**(w-1)) * (-2**(w-1)) = 2**(2w-2), summed
    over ``9 * max_in_channels`` terms (a dense kernel over all input channels). The bias is not
    in the accumulator: the post-processor adds it in 64-bit arithmetic.
    """
    worst = NUM_TAPS * max_in_channels * (1 << (2 * data_width - 2))
    return worst.bit_length() + 1


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _positive_int(name, value, low=1, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"
        raise PsconvError(f"engine config: {name} is {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one periodic-sparse convolution engine.

    * ``tm``: PE rows; each row computes one output pixel, so ``tm`` adjacent output pixels of
      one output channel are computed in parallel and share every weight.
    * ``tn``: PE lanes; each lane takes one entry of the layer's tap sequence per cycle (one
      nonzero weight and the matching input tap), so a period of T taps costs ``T / tn`` cycles
      whatever each kernel's K is. Multipliers: ``tm * tn``.
    * ``family``: the pattern family the engine is built and named for. The mask table itself
      is loaded per layer (up to ``max_period`` entries), so the same engine also runs the dense
      first convolution and the 1x1 shortcuts.
    * ``data_width``: 8 (int8 activations and weights); the only value supported.
    * ``acc_width``: accumulator bits; ``None`` derives :func:`required_accumulator_width`.
    * ``max_in_channels``, ``max_out_channels``, ``max_height``, ``max_width``: the largest layer
      one engine invocation accepts (larger layers are tiled by the compiler).
    * ``patch_channels``: input channels one patch buffer holds (a power of two; ``None``: the
      smallest power of two >= ``max_in_channels``, so every layer runs in one pass). A layer
      with more input channels runs ``ceil(C_in / patch_channels)`` *input-channel passes* per
      pixel group, keeping partial sums on chip. The patch memory is copied for every lane, so
      this is the parameter that decides whether an engine fits an FPGA's block RAM.
    * ``fmap_depth``: input feature-map buffer capacity in bytes (C * H * W of one invocation).
      The buffer holds ``fmap_depth // max_width`` input rows of ``max_width`` bytes, so it must
      be at least ``max_width`` (the smallest layer, one channel of one row, needs one row).
    * ``weight_depth``: weight buffer capacity in ``tn``-byte words (1 holds the smallest layer:
      one output channel of a 1x1 layer over one input channel).
    * ``max_pool``: the engine has a 2x2 stride-2 max-pool block in its output path
      (:mod:`psconv.hw.output_pool`), so a layer whose descriptor sets ``pool`` returns its
      output max-pooled. It costs two block memories (``max_out_channels * tm`` bytes and
      ``max_out_channels * ceil((max_width // 2) / tm) * tm`` bytes) and a few hundred LUTs;
      a board too small for it (the iCEBreaker) leaves it out and its networks run max pools
      resident only, or not at all.
    """

    tm: int = 4
    tn: int = 16
    family: PatternFamily = field(default_factory=lambda: paper_family(1, 16, dense_kernel=True))
    max_period: int | None = None
    data_width: int = DATA_WIDTH
    acc_width: int | None = None
    max_in_channels: int = 512
    max_out_channels: int = 512
    max_height: int = 32
    max_width: int = 32
    patch_channels: int | None = None
    fmap_depth: int = 65536
    weight_depth: int = 8192
    max_pool: bool = True

    def __post_init__(self):
        _positive_int("tm", self.tm, 1, 64)
        _positive_int("tn", self.tn, 1, 64)
        if not isinstance(self.family, PatternFamily):
            raise PsconvError(
                f"engine config: family is {self.family!r}; allowed: a PatternFamily "
                f"(see psconv.families)")
        if self.family.kernel_size != 3:
            raise PsconvError(
                f"engine config: family {self.family.name!r} is a 1x1 family; the engine's "
                f"family must be a 3x3 family (1x1 layers use the pointwise table at run time)")
        if self.max_period is None:
            object.__setattr__(self, "max_period", self.family.period)
        _positive_int("max_period", self.max_period, 1, MAX_PERIOD)
        if self.max_period < self.family.period:
            raise PsconvError(
                f"engine config: max_period is {self.max_period}; it must be at least the "
                f"family's period P = {self.family.period}")
        if self.data_width != DATA_WIDTH:
            raise PsconvError(
                f"engine config: data_width is {self.data_width!r}; allowed: {DATA_WIDTH} (int8)")
        _positive_int("max_in_channels", self.max_in_channels, 1, 4096)
        _positive_int("max_out_channels", self.max_out_channels, 1, 4096)
        _positive_int("max_height", self.max_height, 1, 1024)
        _positive_int("max_width", self.max_width, 1, 1024)
        one_pass = _next_power_of_two(self.max_in_channels)
        if self.patch_channels is None:
            object.__setattr__(self, "patch_channels", one_pass)
        if (not isinstance(self.patch_channels, int) or isinstance(self.patch_channels, bool)
                or self.patch_channels < 1 or self.patch_channels > one_pass
                or self.patch_channels & (self.patch_channels - 1)):
            raise PsconvError(
                f"engine config: patch_channels is {self.patch_channels!r}; allowed: a power of "
                f"two 1..{one_pass} (max_in_channels = {self.max_in_channels})")
        _positive_int("fmap_depth", self.fmap_depth, 1)
        if self.fmap_depth < self.max_width:
            raise PsconvError(
                f"engine config: fmap_depth is {self.fmap_depth}; allowed: at least max_width = "
                f"{self.max_width} (the buffer stores rows of max_width bytes; with less it holds "
                f"no row and no layer fits)")
        _positive_int("weight_depth", self.weight_depth, 1)
        if not isinstance(self.max_pool, bool):
            raise PsconvError(f"engine config: max_pool is {self.max_pool!r}; allowed: true or "
                              f"false (whether the engine has its output max-pool block)")
        needed = required_accumulator_width(self.max_in_channels, self.data_width)
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", needed)
        elif not isinstance(self.acc_width, int) or self.acc_width < needed or self.acc_width > 48:
            raise PsconvError(
                f"engine config: acc_width is {self.acc_width!r}; with max_in_channels = "
                f"{self.max_in_channels} the worst-case dot product needs {needed} bits; "
                f"allowed: {needed}..48")

    @property
    def multipliers(self) -> int:
        return self.tm * self.tn

    @property
    def max_passes(self) -> int:
        """Input-channel passes of the deepest layer the config admits."""
        return -(-self.max_in_channels // self.patch_channels)

    @property
    def multi_pass(self) -> bool:
        """True if a layer may need several input-channel passes (partial sums on chip)."""
        return self.max_passes > 1

    def replace(self, **changes) -> "EngineConfig":
        """A new validated config with ``changes`` applied."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "family" in changes and "max_period" not in changes:
            values["max_period"] = None
        if "max_in_channels" in changes and "acc_width" not in changes:
            values["acc_width"] = None
        if ("max_in_channels" in changes and "patch_channels" not in changes
                and self.patch_channels == _next_power_of_two(self.max_in_channels)):
            values["patch_channels"] = None
        values.update(changes)
        return EngineConfig(**values)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["family"] = self.family.to_json()
        data["version"] = CONFIG_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict) -> "EngineConfig":
        """The config of :meth:`to_json`'s object, or of the ``<name>.json`` document
        ``psconv generate`` writes (it holds that object under ``config``, next to ``ports``)."""
        if isinstance(data, dict) and "config" in data and "ports" in data:
            data = data["config"]
        if not isinstance(data, dict):
            raise PsconvError(f"engine config: the JSON is a {type(data).__name__}; allowed: an "
                              f"object of EngineConfig fields (EngineConfig.to_json) or the "
                              f".json `psconv generate` writes")
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise PsconvError(
                f"engine config: version {version!r} not supported; allowed: {CONFIG_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PsconvError(
                f"engine config: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        family = data.get("family")
        if isinstance(family, str):
            data["family"] = family_by_name(family)
        elif isinstance(family, dict):
            data["family"] = PatternFamily.from_json(family)
        return cls(**data)

    @classmethod
    def load(cls, path) -> "EngineConfig":
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise PsconvError(f"engine config: cannot read {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise PsconvError(f"engine config: {path} is not valid JSON: {e}") from None
        return cls.from_json(data)

    def summary_lines(self) -> list[str]:
        """Human-readable parameter lines (the generated Verilog's header comment)."""
        fam = self.family
        return [
            f"psconv engine: Tm={self.tm} Tn={self.tn} ({self.multipliers} multipliers)",
            f"family {fam.name}: P={fam.period} offset={fam.offset} T={fam.taps_per_period} "
            f"masks={[f'{m:#05x}' for m in fam.masks]} max_period={self.max_period}",
            f"data_width={self.data_width} acc_width={self.acc_width}",
            f"max layer: C_in<={self.max_in_channels} C_out<={self.max_out_channels} "
            f"H<={self.max_height} W<={self.max_width}; fmap_depth={self.fmap_depth} bytes; "
            f"weight_depth={self.weight_depth} words of {self.tn} bytes; "
            f"patch_channels={self.patch_channels}",
            f"output max pool (2x2, stride 2): {'yes' if self.max_pool else 'no'}",
        ]
