"""The bitstream's engine computes what the RTL computes: Yosys' iCE40 netlist of the iCEBreaker
engine, simulated with Yosys' cell models (:mod:`psconv.sim.engine_netlist`), runs every layer of
the width-2 PSD1_P16 ResNet18 on 8x8 images bit-exactly against the golden model; the netlist of
the old ``ice40_dsp`` failure (a PE lane dropped) fails the same comparison. The same engine
configuration elaborated for the ULX3S (ECP5: its MULT18X18D instances, DP16KD block RAM, LUT RAM)
and mapped by ``synth_ecp5`` is bit-exact too, with this project's DP16KD and MULT18X18D models;
with a DP16KD model one read cycle late it is not.

Each netlist is synthesized and built once (~1 min on 2 cores), then cached under build/netlist.
"""

import time

import pytest
import torch

from psconv.errors import PsconvError
from psconv.families import family_by_name
from psconv.firmware.compiler import compile_model
from psconv.nn.default import default_quantized_model, fitting_default, model_images
from psconv.rtl_gen.boards import get_board
from psconv.sim.engine_netlist import EngineNetlist
from psconv.sim.engine_rtl import (make_case, mismatch_report, program_cases, random_int8,
                                   random_weight)

pytestmark = pytest.mark.rtl

ICEBREAKER = get_board("icebreaker").engine_config()


@pytest.fixture(scope="module")
def network_cases():
    """Every engine step of the width-2 ResNet18 on 8x8 (the network the iCEBreaker runs): the
    stem (3 input channels), 3x3 PSD1_P16 layers at stride 1 and 2, the 1x1 stride-2 shortcuts
    and the residual adds with ReLU."""
    width, image_size, _ = fitting_default(ICEBREAKER)
    model = default_quantized_model("PSD1_P16", width, image_size=image_size)
    image = model_images(model, 1, seed=1000)[0]
    return program_cases(compile_model(model, ICEBREAKER), image)


def _edge_cases():
    """The post-processor's DSP paths at their extremes (every product -128 x -128, saturation
    both ways, 127 with ReLU) and the streams under back-pressure and input gaps."""
    g = torch.Generator().manual_seed(7)
    fam = family_by_name("PSD1_P16")
    weight = random_weight(fam, 6, 16, g, -128, -128)
    x = torch.full((16, 5, 5), -128, dtype=torch.int64)
    big = torch.full((6,), (1 << 30) - 1, dtype=torch.int64)
    shift = torch.full((6,), 20, dtype=torch.int64)
    return [
        make_case("extreme -128, saturate +", weight, fam, x, ICEBREAKER, multiplier=big,
                  shift=shift),
        make_case("extreme, saturate -", weight, fam, x, ICEBREAKER, multiplier=big, shift=shift,
                  bias=torch.full((6,), -(1 << 31), dtype=torch.int64)),
        make_case("127 inputs, relu", random_weight(fam, 6, 16, g, 127, 127), fam,
                  torch.full((16, 4, 4), 127, dtype=torch.int64), ICEBREAKER, relu=True),
        make_case("back-pressure and gaps", random_weight(fam, 9, 13, g), fam,
                  random_int8((13, 6, 7), g), ICEBREAKER, relu=True,
                  residual=random_int8((9, 6, 7), g),
                  residual_multiplier=torch.full((9,), 1 << 28, dtype=torch.int64),
                  input_gap_probability=0.3, output_backpressure=0.4),
    ]


def _built(fault=None, board="icebreaker"):
    started = time.perf_counter()
    netlist = EngineNetlist(ICEBREAKER, fault=fault, board=board)
    print(f"\n{board} netlist{f' with fault {fault}' if fault else ''}: synthesis "
          f"{netlist.synthesis_seconds:.0f} s, Verilator build "
          f"{'cached' if netlist.build.cached else f'{netlist.build.seconds:.0f} s'}, "
          f"{time.perf_counter() - started:.0f} s in all; cells {netlist.cells}")
    return netlist


def _run_bit_exact(netlist, network_cases):
    """The network's steps and the edge cases on ``netlist``, every output element equal to the
    golden model's; returns the runs."""
    started = time.perf_counter()
    runs = netlist.run(network_cases + _edge_cases())
    print(f"{len(network_cases)} engine steps and 4 edge cases on the netlist: "
          f"{time.perf_counter() - started:.1f} s, {sum(run.cycles for run in runs)} cycles")
    failures = [report for run in runs if (report := mismatch_report(run.case, run.actual))]
    assert not failures, "\n".join(failures)
    return runs


def test_icebreaker_netlist_runs_the_network_bit_exact(network_cases):
    kinds = {case.kind for case in network_cases}
    assert kinds == {"first layer", "3x3", "1x1"}
    assert {case.spec.stride for case in network_cases} == {1, 2}
    assert any(case.residual is not None for case in network_cases)
    netlist = _built()
    # all 8 SB_MAC16 of the UP5K: the PE array's 2 and the post-processor's 6
    assert netlist.cells["SB_MAC16"] == 8
    runs = _run_bit_exact(netlist, network_cases)
    for run in runs[:len(network_cases)]:
        assert int(run.case.expected.count_nonzero()) > 0, run.case.name
    for run in runs:
        assert run.counters["macs"] == run.case.useful_macs, run.case.name
    saturated = [run.case.expected.unique().tolist() for run in runs[len(network_cases):][:2]]
    assert saturated == [[127], [-128]]


def test_netlist_that_drops_a_pe_lane_fails_the_comparison(network_cases):
    netlist = _built("unsafe-fused-add")
    assert netlist.cells["SB_MAC16"] == 7
    runs = netlist.run(network_cases)
    failures = [report for run in runs if (report := mismatch_report(run.case, run.actual))]
    print(f"{len(failures)} of {len(runs)} steps differ; first: {failures[:1]}")
    assert len(failures) > len(runs) // 2


def test_ulx3s_netlist_runs_the_network_bit_exact(network_cases):
    """The iCEBreaker configuration on the ULX3S-85F platform: small enough that synth_ecp5 and
    the Verilator build take about a minute on 2 busy cores (the ULX3S's own 64-multiplier
    engine is most of a board top of 189 DP16KD and 34k LUTs)."""
    netlist = _built(board="ulx3s-85f")
    # the instances of psconv.hw.dsp (the PE array's 2 products, the post-processor's 6) and 2
    # unregistered ones synth_ecp5 maps from the address generator's multiplies; 7 block RAMs
    # (the weight buffer's and the window generator's 6 banks)
    assert netlist.cells["MULT18X18D"] == 10
    assert netlist.cells["DP16KD"] == 7
    runs = _run_bit_exact(netlist, network_cases)
    for run in runs:
        assert run.counters["macs"] == run.case.useful_macs, run.case.name


def test_ulx3s_netlist_with_a_late_block_ram_model_fails_the_comparison(network_cases):
    netlist = _built("dp16kd-outreg", board="ulx3s-85f")
    runs = netlist.run(network_cases)
    failures = [report for run in runs if (report := mismatch_report(run.case, run.actual))]
    print(f"{len(failures)} of {len(runs)} steps differ; first: {failures[:1]}")
    assert len(failures) > len(runs) // 2


def test_known_faults_only():
    with pytest.raises(PsconvError, match="unknown fault 'nope' for icebreaker; allowed: "
                                          "unsafe-fused-add$"):
        EngineNetlist(ICEBREAKER, fault="nope")
    with pytest.raises(PsconvError, match="allowed: unsafe-fused-add, dp16kd-outreg$"):
        EngineNetlist(ICEBREAKER, fault="nope", board="ulx3s-85f")
