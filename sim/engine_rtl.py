"""Run layers on the engine's generated Verilog (Verilator + cocotb) and check them bit-exactly.

Build once per configuration (cached under ``build/rtl/<config hash>``), run many layers per
simulator launch. Each :class:`LayerCase` carries what the engine is sent (already in the
engine's formats) and the golden model's expected output; :func:`check_run` compares element by
element and, on a mismatch, names the layer kind, the first differing (channel, row, column),
expected and actual values, and how many elements differ.

Waves: pass ``waves=True`` or set ``PSCONV_WAVES=1``; the trace path is printed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from psconv.config import EngineConfig
from psconv.families import PatternFamily
from psconv.firmware.packing import engine_weight_words, pack_layer, rotated_masks
from psconv.protocol.beats import fmap_beats, pixel_beats, weight_beats
from psconv.protocol.descriptor import LayerSpec, encode_quant_entry
from psconv.sim.golden.network import describe_mismatch
from psconv.sim.golden.ops import conv2d_int, maxpool2d_int, requantize

DEFAULT_BUILD_ROOT = Path("build") / "rtl"
TB_MODULE = "psconv.sim.tb.engine_tb"


@dataclass
class LayerCase:
    """One engine invocation (its layer registers ``spec`` and every stream's contents) and the
    golden model's expected output (C_out, H_out, W_out)."""

    name: str
    kind: str
    spec: LayerSpec
    masks: tuple[int, ...]
    weight_words: torch.Tensor
    bias: torch.Tensor
    multiplier: torch.Tensor
    shift: torch.Tensor
    residual_multiplier: torch.Tensor | None
    fmap: torch.Tensor
    residual: torch.Tensor | None
    expected: torch.Tensor
    useful_macs: int = 0
    dense_macs: int = 0
    options: dict = field(default_factory=dict)

    def shape_text(self) -> str:
        s = self.spec
        return (f"{self.kind} {s.in_channels}x{s.in_height}x{s.in_width} -> "
                f"{s.out_channels}, stride {s.stride}")


def make_case(name: str, weight: torch.Tensor, family: PatternFamily, fmap: torch.Tensor,
              config: EngineConfig, *, stride: int = 1, relu: bool = False, bias=None,
              multiplier=None, shift=None, residual=None, residual_multiplier=None,
              kind: str | None = None, pool: bool = False, **options) -> LayerCase:
    """A case from an int8 weight of ``family`` and an int8 CHW input, expected from the golden
    model (``conv2d_int`` then ``requantize``, then ``maxpool2d_int`` with ``pool``). Unspecified
    requantization parameters default to a mild per-channel scale so outputs span the int8
    range."""
    c_out, c_in, k, _ = weight.shape
    packed = pack_layer(weight.to(torch.int8), family, name)
    if bias is None:
        bias = torch.zeros(c_out, dtype=torch.int64)
    if multiplier is None:
        multiplier = torch.full((c_out,), 1 << 20, dtype=torch.int64)
    if shift is None:
        shift = torch.full((c_out,), 30, dtype=torch.int64)
    acc = conv2d_int(fmap, weight, stride, k // 2)
    expected = requantize(acc, bias, multiplier, shift, relu, residual, residual_multiplier)
    h_out, w_out = expected.shape[1:]
    if pool:
        expected = maxpool2d_int(expected)
    kept = int(family.weight_mask(c_out, c_in).sum())
    if kind is None:
        kind = "1x1" if k == 1 else ("first layer" if c_in == 3 else f"3x3 {family.name}")
    spec = LayerSpec(in_channels=c_in, out_channels=c_out, in_height=fmap.shape[1],
                     in_width=fmap.shape[2], stride=stride, kernel=k, relu=relu,
                     residual=residual is not None, period=family.period, pool=pool)
    return LayerCase(
        name=name, kind=kind, spec=spec, masks=rotated_masks(family),
        weight_words=engine_weight_words(packed, config.tn, config.patch_channels), bias=torch.as_tensor(bias),
        multiplier=torch.as_tensor(multiplier), shift=torch.as_tensor(shift),
        residual_multiplier=None if residual is None else torch.as_tensor(residual_multiplier),
        fmap=fmap, residual=residual, expected=expected,
        useful_macs=kept * h_out * w_out, dense_macs=c_out * c_in * k * k * h_out * w_out,
        options=options)


def case_from_step(step, fmap: torch.Tensor, residual, expected) -> LayerCase:
    """A case for one compiled :class:`~psconv.firmware.compiler.EngineStep`."""
    d = step.descriptor
    kind = "1x1" if d.kernel == 1 else ("first layer" if d.in_channels == 3 else "3x3")
    return LayerCase(
        name=f"{step.layer}[{step.tile}]", kind=kind, spec=d, masks=step.masks,
        weight_words=step.weight_words, bias=step.bias, multiplier=step.multiplier,
        shift=step.shift, residual_multiplier=step.residual_multiplier if d.residual else None,
        fmap=fmap, residual=residual, expected=expected, useful_macs=step.useful_macs,
        dense_macs=d.out_channels * d.in_channels * d.kernel ** 2 * d.out_height * d.out_width)


def program_cases(program, image: torch.Tensor) -> list[LayerCase]:
    """Every engine step of a compiled ``program`` on one int8 CHW ``image`` as a case: its
    input map, residual and expected output are the golden model's layer outputs
    (:func:`~psconv.sim.golden.network.run_golden`).

    Why golden inputs: then all steps run in one simulator launch, and a backend that is
    bit-exact on every case computes the whole network bit-exactly (each step reads only
    outputs of earlier steps, which equal the golden model's)."""
    from psconv.sim.golden.network import run_golden

    golden = run_golden(program.model, image)
    tensors = {"input": image.to(torch.int64),
               **{name: t.to(torch.int64) for name, t in golden.outputs.items()}}
    cases = []
    for step in program.engine_steps:
        residual = None if step.residual is None else tensors[step.residual][step.channel_slice]
        cases.append(case_from_step(step, tensors[step.input], residual,
                                    tensors[step.layer][step.channel_slice]))
    return cases


def encode_case(case: LayerCase, config: EngineConfig) -> dict:
    """The bench's view of a case: every stream's beats as integers."""
    spec = case.spec
    spec.check(config, case.masks)
    quant = [encode_quant_entry(int(case.bias[o]), int(case.multiplier[o]), int(case.shift[o]),
                                int(case.residual_multiplier[o]) if case.residual is not None else 0)
             for o in range(spec.out_channels)]
    beats = {
        "mask_in": list(case.masks),
        "quant_in": quant,
        "weight_in": weight_beats(case.weight_words),
        "fmap_in": fmap_beats(config, case.fmap),
    }
    if case.residual is not None:
        beats["residual_in"] = pixel_beats(config, case.residual)
    output_beats = spec.output_beats(config)
    budget = 20 * (len(beats["weight_in"]) + len(beats["fmap_in"]) + output_beats
                   + case.weight_words.shape[0] * spec.out_height * spec.column_blocks(config)) + 20000
    return {"name": case.name, "descriptor": spec.encode(config), "beats": beats,
            "output_beats": output_beats, "cycle_budget": budget, **case.options}


@dataclass
class LayerRun:
    """What the RTL produced for one case."""

    case: LayerCase
    actual: torch.Tensor
    counters: dict
    bench_cycles: int
    seconds: float

    @property
    def cycles(self) -> int:
        c = self.counters
        return c["busy_cycles"] + c["stall_cycles"] + c["idle_cycles"]

    @property
    def mismatches(self) -> int:
        return int((self.actual != self.case.expected).sum())


def mismatch_report(case: LayerCase, actual: torch.Tensor) -> str | None:
    """None if bit-exact, else a message naming the layer, the first difference and the count."""
    return describe_mismatch(f"{case.name} ({case.shape_text()})", case.expected, actual)


def check_run(run: LayerRun) -> None:
    report = mismatch_report(run.case, run.actual)
    if report:
        raise AssertionError(report)


def _config_key(config: EngineConfig) -> str:
    """Cache key of a build: the configuration and the gateware sources that generate it (hw/
    and the wire-protocol package it takes its layouts, codes and descriptor rules from), so an
    edit to either never reruns stale Verilog."""
    import psconv.hw
    import psconv.protocol

    h = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    for package in (psconv.hw, psconv.protocol):
        folder = Path(package.__file__).parent
        for source in sorted(folder.glob("*.py")):
            h.update(f"{folder.name}/{source.name}".encode())
            h.update(source.read_bytes())
    return h.hexdigest()[:12]


class EngineRTL:
    """The engine's Verilog for ``config``, built once, ready to run layer cases."""

    def __init__(self, config: EngineConfig, build_root=None, waves: bool | None = None):
        from psconv.rtl_gen.verilog import write_engine_outputs
        from psconv.sim import runner

        self.config = config
        self.waves = runner.waves_requested(waves)
        root = Path(build_root or DEFAULT_BUILD_ROOT) / _config_key(config)
        self.root = root
        verilog_dir = root / "verilog"
        files = None
        if not (verilog_dir / "psconv_engine.v").exists():
            files = write_engine_outputs(config, verilog_dir)
        self.verilog = verilog_dir / "psconv_engine.v"
        self.top = files.top if files is not None else "psconv_engine"
        self.build = runner.build(self.verilog, self.top, root / ("sim-waves" if self.waves else "sim"),
                                  waves=self.waves)

    def run(self, cases: list[LayerCase], seed: int = 0) -> list[LayerRun]:
        """Run ``cases`` in one simulator launch; returns their outputs and counters."""
        from psconv.protocol.beats import beats_to_pixels
        from psconv.sim import runner

        if not cases:
            return []
        results_path = self.build.build_dir.parent / "engine_results.json"
        if results_path.exists():
            results_path.unlink()
        data = {"seed": seed, "results_path": str(results_path.resolve()),
                "cases": [encode_case(case, self.config) for case in cases]}
        runner.run(TB_MODULE, build_dir=self.build.build_dir, data=data, waves=self.waves)
        with open(results_path) as f:
            results = json.load(f)["results"]
        runs = []
        for case, result in zip(cases, results):
            spec = case.spec
            actual = beats_to_pixels(self.config, result["outputs"], spec.out_channels,
                                     spec.result_height, spec.result_width)
            runs.append(LayerRun(case=case, actual=actual, counters=result["counters"],
                                 bench_cycles=result["bench_cycles"], seconds=result["seconds"]))
        return runs


def random_int8(shape, generator, low=-128, high=127) -> torch.Tensor:
    return torch.randint(low, high + 1, tuple(shape), generator=generator, dtype=torch.int64)


def random_weight(family: PatternFamily, c_out: int, c_in: int, generator, low=-128, high=127):
    mask = family.weight_mask(c_out, c_in).to(torch.int64)
    return random_int8(mask.shape, generator, low, high) * mask
