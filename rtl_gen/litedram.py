"""LiteDRAM SDR SDRAM controller cores, generated at build time and cached.

:func:`generate_core` writes a ``litedram_gen`` YAML for a :class:`LiteDRAMConfig` (GENSDRPHY,
one SDR module, no CPU, one native user port per bank: :data:`psconv.hw.sdram.BANK_PORTS`), runs LiteDRAM's ``litedram_gen`` in a
subprocess (after adding :data:`SDRAM_MODULES` entries LiteDRAM lacks to its module table), post-processes the Verilog and caches the result under
``<cache root>/<key>/``, the key being a SHA-256 of the YAML, the variant, this module's
post-processing revision and the versions of litedram, litex and migen. The cache root is
``$PSCONV_CACHE_DIR/litedram`` if set, else ``$XDG_CACHE_HOME/psconv/litedram`` (default
``~/.cache/psconv/litedram``). Generation takes about one second; a cache hit is a file read.

Variants (the ``variant`` argument):

* ``"board"``: for an FPGA build. The generator declares ``sdram_dq`` as ``input`` although
  its ``TRELLIS_IO`` buffers drive it; it is rewritten to ``inout``.
* ``"sim"``: for Verilator with a chip model at the pins. Verilator cannot resolve a
  tristate bus across the core's boundary, so every ``TRELLIS_IO`` on ``sdram_dq`` is replaced
  by plain assignments and the port becomes three: ``sdram_dq_i`` (in), ``sdram_dq_o`` and
  ``sdram_dq_oe`` (out, one enable per bit). The ECP5 I/O flip-flops the PHY instances
  (``OFS1P3BX``, ``IFS1P3BX``) then need :data:`ECP5_IO_SIM_MODELS` beside the core.

What a core carries besides its Verilog (:class:`LiteDRAMCore`): the CSR map (``csr.csv``),
the SDR init sequence from the generated ``sdram_phy.h`` (:func:`parse_init_sequence`), and
the module's geometry and the controller's timings as LiteDRAM computed them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from psconv.errors import PsconvError
from psconv.hw.sdram import BANK_PORTS

SDRAM_MODULES = {
    "AS4C32M16_7": "64 MB, 8192 rows x 1024 columns x 4 banks x 16 bit, speed grade -7 "
                   "(AS4C32M16SB-7, recent ULX3S boards)",
    "AS4C32M16": "64 MB, as AS4C32M16_7 but LiteDRAM's own timings (the -6 grade's: tRCD and "
                 "tRP 18 ns, too short for a -7 part at 50 MHz)",
    "MT48LC16M16": "32 MB, 8192 rows x 512 columns x 4 banks x 16 bit",
    "IS42S16160": "32 MB, 8192 rows x 512 columns x 4 banks x 16 bit",
}
"""SDR modules a build may name (``--sdram-module``), as LiteDRAM's ``modules.py`` calls them."""

DEFAULT_MODULE = "MT48LC16M16"

VARIANTS = ("board", "sim")

POSTPROCESS_REVISION = 4
"""Bumped whenever the Verilog post-processing or the module table below changes, so cached
cores regenerate."""

CACHE_ENV = "PSCONV_CACHE_DIR"

ECP5_IO_SIM_MODELS = """\
// Behavioural models of the ECP5 flip-flops a LiteDRAM GENSDRPHY core instances, for
// simulation only (the FPGA flow maps the real primitives). SP is the clock enable, PD an
// asynchronous preset (tied off by the PHY; the reset synchroniser's FD1S3BX uses it).
module OFS1P3BX (input D, input SP, input SCLK, input PD, output reg Q);
    initial Q = 1'b1;
    always @(posedge SCLK or posedge PD)
        if (PD) Q <= 1'b1; else if (SP) Q <= D;
endmodule

module IFS1P3BX (input D, input SP, input SCLK, input PD, output reg Q);
    initial Q = 1'b1;
    always @(posedge SCLK or posedge PD)
        if (PD) Q <= 1'b1; else if (SP) Q <= D;
endmodule

module FD1S3BX (input D, input CK, input PD, output reg Q);
    initial Q = 1'b1;
    always @(posedge CK or posedge PD)
        if (PD) Q <= 1'b1; else Q <= D;
endmodule
"""
"""Verilog simulation models of ``OFS1P3BX``/``IFS1P3BX`` (I/O registers) and ``FD1S3BX``."""


@dataclass(frozen=True)
class LiteDRAMConfig:
    """What a generated core depends on.

    ``module``: one of :data:`SDRAM_MODULES`. ``sys_clk_hz``: the controller clock (the
    SDRAM runs at the same rate; LiteDRAM picks CL 2 up to 100 MHz, CL 3 above).
    ``device``: the ECP5 part the generator is told (it only selects the I/O primitives).
    ``cmd_buffer_depth``: commands each bank machine queues.
    """

    module: str = DEFAULT_MODULE
    sys_clk_hz: float = 50e6
    device: str = "LFE5U-85F-6BG381C"
    cmd_buffer_depth: int = 8

    def __post_init__(self):
        if self.module not in SDRAM_MODULES:
            raise PsconvError(
                f"SDRAM module {self.module!r} is not supported; allowed: "
                f"{', '.join(SDRAM_MODULES)}")
        if not 10e6 <= float(self.sys_clk_hz) <= 143e6:
            raise PsconvError(
                f"SDRAM clock {self.sys_clk_hz / 1e6:g} MHz is out of range; allowed: 10 to "
                f"143 MHz (SDR modules of the ULX3S)")
        if not 1 <= int(self.cmd_buffer_depth) <= 64:
            raise PsconvError(f"cmd_buffer_depth {self.cmd_buffer_depth} out of range 1..64")

    @classmethod
    def for_board(cls, board, module: str | None = None, sys_clk_hz: float = 50e6):
        """The core for ``board`` (a :class:`~psconv.rtl_gen.boards.Board` or its name):
        its ``sdram_module`` unless ``module`` overrides it (the 64 MB ULX3S revisions)."""
        from psconv.rtl_gen.boards import get_board

        board = get_board(board)
        module = module or board.sdram_module
        if module is None:
            raise PsconvError(f"board {board.name} has no SDRAM; boards with one: ulx3s-*")
        return cls(module=module, sys_clk_hz=sys_clk_hz,
                   device=f"{board.device}-{board.speed_grade}{board.package}C")

    def yaml_text(self) -> str:
        """The ``litedram_gen`` configuration (YAML flow style, i.e. JSON)."""
        config = {
            "device": self.device,
            "cpu": "None",
            "memtype": "SDR",
            "sdram_module": self.module,
            "sdram_module_nb": 2,
            "sdram_rank_nb": 1,
            "sdram_phy": "GENSDRPHY",
            "sys_clk_freq": float(self.sys_clk_hz),
            "cmd_buffer_depth": int(self.cmd_buffer_depth),
            "user_ports": {f"bank{k}": {"type": "native"} for k in range(BANK_PORTS)},
        }
        return json.dumps(config, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class InitStep:
    """One CSR write of the init sequence: ``csr`` (register name), ``value``, then wait at
    least ``cdelay`` iterations of the software delay loop (0 if the header has none), and
    ``command`` when the write issues a DFI command (its name, e.g. ``"PRECHARGE_ALL"``)."""

    csr: str
    value: int
    cdelay: int = 0
    command: str | None = None
    comment: str = ""


@dataclass
class LiteDRAMCore:
    """A generated core on disk and what the gateware around it needs to know."""

    config: LiteDRAMConfig
    variant: str
    directory: Path
    verilog: Path
    csrs: dict            # register name -> byte address on the wb_ctrl bus
    init_sequence: list   # of InitStep, in order, then the hand-over writes
    info: dict            # geometry, cl, controller timings (cycles), port widths
    cached: bool = False
    seconds: float = 0.0
    extra_verilog: list = field(default_factory=list)

    @property
    def address_width(self) -> int:
        """Native port address width (in data-width words)."""
        return self.info["port_address_width"]

    @property
    def data_width(self) -> int:
        return self.info["port_data_width"]

    def verilog_text(self) -> str:
        """The core plus the simulation models it needs (sim variant)."""
        return self.verilog.read_text() + "".join(self.extra_verilog)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("litedram", "litex", "migen"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            raise PsconvError(
                f"LiteDRAM core generation needs the Python package {package!r}, which is not "
                f"installed; install psconv's dependencies: pip install -e .") from None
    return versions


def cache_root() -> Path:
    """Where generated cores are cached (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "litedram"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "psconv" / "litedram"


def cache_key(config: LiteDRAMConfig, variant: str) -> str:
    material = json.dumps({"yaml": config.yaml_text(), "variant": variant,
                           "revision": POSTPROCESS_REVISION, "tools": _versions()},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


# -- post-processing -------------------------------------------------------------------------

_DQ_PORT = re.compile(r"^(\s*)input\s+wire\s+\[(\d+):0\]\s+sdram_dq,\s*$", re.M)
_TRELLIS_IO = re.compile(
    r"TRELLIS_IO\s*#\(\s*//[^\n]*\n\s*\.DIR\s*\(\"BIDIR\"\)\s*\)\s*(\w+)\s*\((.*?)\);",
    re.S)
_PIN = re.compile(r"\.(\w+)\s*\((.*?)\)\s*,?\s*$", re.M)


def _fix_board(text: str) -> str:
    text, count = _DQ_PORT.subn(r"\1inout  wire   [\2:0] sdram_dq,", text)
    if count != 1:
        raise PsconvError("LiteDRAM core: expected one 'input wire [N:0] sdram_dq' port to "
                          "turn into inout; the generator's output changed")
    return text


def _fix_sim(text: str) -> str:
    match = _DQ_PORT.search(text)
    if match is None:
        raise PsconvError("LiteDRAM core: no 'input wire [N:0] sdram_dq' port to split")
    msb, indent = int(match.group(2)), match.group(1)
    width = msb + 1
    text = text[:match.start()] + (
        f"{indent}input  wire   [{msb}:0] sdram_dq_i,\n"
        f"{indent}output wire   [{msb}:0] sdram_dq_o,\n"
        f"{indent}output wire   [{msb}:0] sdram_dq_oe,") + text[match.end():]
    seen = set()

    def replace(m):
        pins = dict(_PIN.findall(m.group(2)))
        bit = re.fullmatch(r"sdram_dq\[(\d+)\]", pins.get("B", "").strip())
        if bit is None or not {"I", "T", "O"} <= pins.keys():
            raise PsconvError(f"LiteDRAM core: TRELLIS_IO {m.group(1)} is not a dq buffer "
                              f"with B/I/T/O pins: {pins}")
        n = int(bit.group(1))
        seen.add(n)
        return (f"assign sdram_dq_o[{n}] = {pins['I'].strip()};\n"
                f"assign sdram_dq_oe[{n}] = ~{pins['T'].strip()};\n"
                f"assign {pins['O'].strip()} = sdram_dq_i[{n}];")

    text = _TRELLIS_IO.sub(replace, text)
    if seen != set(range(width)):
        raise PsconvError(f"LiteDRAM core: found tristate buffers for dq bits {sorted(seen)}, "
                          f"expected 0..{msb}")
    if "TRELLIS_IO" in re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S):
        raise PsconvError("LiteDRAM core: a TRELLIS_IO other than the dq buffers remains")
    return text


# -- what the generator wrote besides the Verilog ----------------------------------------------

_DFII_COMMANDS = {
    # DFII command bits (CS=1, WE=2, CAS=4, RAS=8) -> SDR command
    0b1011: "PRECHARGE_ALL", 0b1101: "AUTO_REFRESH", 0b1111: "MODE_REGISTER",
}


def parse_csrs(csr_csv: Path) -> dict:
    """``csr_register`` rows of ``csr.csv``: name -> byte address."""
    csrs = {}
    with open(csr_csv) as f:
        for row in csv.reader(line for line in f if not line.startswith("#")):
            if row and row[0] == "csr_register":
                csrs[row[1]] = int(row[2], 0)
    return csrs


def parse_init_sequence(header_text: str, defines: dict | None = None) -> list[InitStep]:
    """The ``init_sequence()`` of a generated ``sdram_phy.h`` as CSR writes, in order.

    ``sdram_dfii_<reg>_write(V)`` becomes a write of ``sdram_dfii_<reg>``; ``command_p0(F)``
    the two writes it expands to (``pi0_command`` = F, then ``pi0_command_issue`` = 1, the
    step that issues the command); ``cdelay(N)`` adds N to the previous step's delay. Flag
    names (``DFII_COMMAND_*``, ``DFII_CONTROL_*``) are resolved from the header's defines.
    """
    body = re.search(r"init_sequence\s*\(\s*void\s*\)\s*\{(.*?)\n\}", header_text, re.S)
    if body is None:
        raise PsconvError("sdram_phy.h: no init_sequence() function found")
    defines = dict(defines or {})
    for name, value in re.findall(r"#define\s+(DFII_\w+)\s+(0x[0-9a-fA-F]+|\d+)", header_text):
        defines[name] = int(value, 0)

    def value_of(expr: str) -> int:
        total = 0
        for term in expr.split("|"):
            term = term.strip()
            if term in defines:
                total |= defines[term]
            else:
                try:
                    total |= int(term, 0)
                except ValueError:
                    raise PsconvError(f"sdram_phy.h: cannot evaluate {term!r} in "
                                      f"init_sequence()") from None
        return total

    steps: list[InitStep] = []
    comment = ""
    for line in body.group(1).splitlines():
        line = line.strip()
        if not line:
            continue
        if m := re.fullmatch(r"/\*\s*(.*?)\s*\*/", line):
            comment = m.group(1)
        elif m := re.fullmatch(r"(sdram_dfii_\w+)_write\((.*)\);", line):
            steps.append(InitStep(m.group(1), value_of(m.group(2)), comment=comment))
        elif m := re.fullmatch(r"command_p0\((.*)\);", line):
            flags = value_of(m.group(1))
            command = _DFII_COMMANDS.get(flags & 0xF)
            if command is None:
                raise PsconvError(f"sdram_phy.h: init command flags {flags:#x} are not a "
                                  f"precharge, refresh or mode-register load")
            steps.append(InitStep("sdram_dfii_pi0_command", flags, comment=comment))
            steps.append(InitStep("sdram_dfii_pi0_command_issue", 1, command=command,
                                  comment=comment))
        elif m := re.fullmatch(r"cdelay\((\d+)\);", line):
            if not steps:
                raise PsconvError("sdram_phy.h: cdelay() before any register write")
            last = steps[-1]
            steps[-1] = InitStep(last.csr, last.value, last.cdelay + int(m.group(1)),
                                 last.command, last.comment)
        else:
            raise PsconvError(f"sdram_phy.h: unexpected statement in init_sequence(): {line!r}")
    return steps


def hand_over_steps(header_text: str) -> list[InitStep]:
    """What LiteX's ``sdram_init`` does after ``init_sequence()`` on an SDR PHY without
    leveling: give the DFI to the controller (``dfii_control`` = SEL) and report success."""
    sel = re.search(r"#define\s+DFII_CONTROL_SEL\s+(0x[0-9a-fA-F]+|\d+)", header_text)
    if sel is None:
        raise PsconvError("sdram_phy.h: DFII_CONTROL_SEL is not defined")
    return [InitStep("sdram_dfii_control", int(sel.group(1), 0), comment="Hardware control"),
            InitStep("ddrctrl_init_error", 0, comment="Init error: none"),
            InitStep("ddrctrl_init_done", 1, comment="Init done")]


_EXTRA_MODULES = r"""
from litedram import modules as _modules
from litedram.modules import SDRModule, _SpeedgradeTimings, _TechnologyTimings


class AS4C32M16_7(SDRModule):
    # Alliance AS4C32M16SB-7 (datasheet table 16, grade -7): LiteDRAM's AS4C32M16 carries the
    # -6 grade's timings.
    nbanks, nrows, ncols = 4, 8192, 1024
    technology_timings = _TechnologyTimings(tREFI=64e6 / 8192, tWTR=(2, None), tCCD=(1, None),
                                            tRRD=(None, 14))
    speedgrade_timings = {"default": _SpeedgradeTimings(tRP=21, tRCD=21, tWR=14,
                                                        tRFC=(None, 63), tFAW=None, tRAS=42)}


_modules.AS4C32M16_7 = AS4C32M16_7

# LiteDRAM restarts its refresh timer when a refresh is issued, and a refresh waits for the
# commands in flight, so under continuous traffic its refreshes come slightly further apart than
# tREFI and fall behind the datasheet's 8192 per 64 ms (the chip model counted 9 overdue after
# 9,209 refreshes of a model load). Every module refreshes REFRESH_MARGIN earlier instead.
REFRESH_MARGIN = 0.9
for _name in ("MT48LC16M16", "IS42S16160", "AS4C32M16", "AS4C32M16_7"):
    _base = getattr(_modules, _name)
    _t = _base.technology_timings
    _margined = type(_name, (_base,), {"technology_timings": _TechnologyTimings(
        tREFI=_t.tREFI * REFRESH_MARGIN, tWTR=_t.tWTR, tCCD=_t.tCCD, tRRD=_t.tRRD,
        tZQCS=_t.tZQCS)})
    setattr(_modules, _name, _margined)
"""
"""SDR module classes psconv adds to ``litedram.modules`` in the generator's process."""

_GEN_SCRIPT = _EXTRA_MODULES + r"""
import sys
from litedram.gen import main
sys.argv = ["litedram_gen", *sys.argv[1:]]
main()
"""

_INFO_SCRIPT = _EXTRA_MODULES + r"""
import json, math, sys
from litedram import modules
from litedram.common import get_default_cl
cfg = json.loads(sys.argv[1])
clk = cfg["sys_clk_freq"]
module = getattr(modules, cfg["sdram_module"])(clk, "1:1")
t, g = module.timing_settings, module.geom_settings
print(json.dumps({
    "nbanks": module.nbanks, "nrows": module.nrows, "ncols": module.ncols,
    "bankbits": g.bankbits, "rowbits": g.rowbits, "colbits": g.colbits,
    "cl": get_default_cl("SDR", 1 / clk),
    "controller_cycles": {k: getattr(t, k) for k in
                          ("tRP", "tRCD", "tWR", "tWTR", "tREFI", "tRFC", "tFAW", "tCCD",
                           "tRRD", "tRC", "tRAS", "tZQCS")},
}))
"""


def _run(command, cwd, what):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise PsconvError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def generate_core(config: LiteDRAMConfig | None = None, variant: str = "board",
                  cache_dir=None, force: bool = False) -> LiteDRAMCore:
    """The LiteDRAM core for ``config`` and ``variant`` (``"board"`` or ``"sim"``), from the
    cache when present (``cached`` True), else generated (``seconds`` says how long).

    ``cache_dir`` overrides :func:`cache_root`; ``force`` regenerates. Raises PsconvError
    naming the problem (bad variant, missing package, generator failure with its log tail,
    generator output this module does not recognise).
    """
    config = config or LiteDRAMConfig()
    if variant not in VARIANTS:
        raise PsconvError(f"LiteDRAM core variant {variant!r} is not supported; allowed: "
                          f"{', '.join(VARIANTS)}")
    key = cache_key(config, variant)
    directory = Path(cache_dir) if cache_dir is not None else cache_root()
    directory = directory / f"{config.module.lower()}-{variant}-{key}"
    manifest = directory / "core.json"
    if not force and manifest.is_file():
        return _load(config, variant, directory, cached=True)

    start = time.monotonic()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="litedram-", dir=directory.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "core.yml").write_text(config.yaml_text())
        _run([sys.executable, "-c", _GEN_SCRIPT, "core.yml", "--output-dir", "out",
              "--no-compile"], tmp, "litedram_gen")
        info = json.loads(_run([sys.executable, "-c", _INFO_SCRIPT,
                                json.dumps(json.loads(config.yaml_text()))], tmp,
                               "LiteDRAM module timing query"))
        out = tmp / "out"
        text = (out / "gateware" / "litedram_core.v").read_text()
        text = _fix_board(text) if variant == "board" else _fix_sim(text)
        ports = _port_widths(text)
        if 1 << info["bankbits"] != BANK_PORTS:
            raise PsconvError(f"LiteDRAM core: module {config.module} has "
                              f"{1 << info['bankbits']} banks; the SDRAM wrapper needs "
                              f"{BANK_PORTS} (one native port each)")
        info["port_address_width"] = ports["user_port_bank0_cmd_addr"]
        info["port_data_width"] = ports["user_port_bank0_wdata_data"]
        info["ports"] = ports
        staging = tmp / "core"
        staging.mkdir()
        (staging / "litedram_core.v").write_text(text)
        (staging / "core.yml").write_text(config.yaml_text())
        for name, source in (("csr.csv", out / "csr.csv"),
                             ("sdram_phy.h", out / "software/include/generated/sdram_phy.h")):
            shutil.copyfile(source, staging / name)
        info["generation_seconds"] = round(time.monotonic() - start, 3)
        info["versions"] = _versions()
        (staging / "core.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    core = _load(config, variant, directory, cached=False)
    core.seconds = time.monotonic() - start
    return core


_PORT_DECL = re.compile(r"^\s*(input|output|inout)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)", re.M)


def _port_widths(text: str) -> dict:
    header = re.search(r"module\s+litedram_core\s*\((.*?)\);", text, re.S)
    if header is None:
        raise PsconvError("LiteDRAM core: no 'module litedram_core' in the generated Verilog")
    return {name: int(msb) + 1 if msb else 1
            for _, msb, name in _PORT_DECL.findall(header.group(1))}


def _load(config, variant, directory: Path, cached: bool) -> LiteDRAMCore:
    info = json.loads((directory / "core.json").read_text())
    header = (directory / "sdram_phy.h").read_text()
    steps = parse_init_sequence(header) + hand_over_steps(header)
    csrs = parse_csrs(directory / "csr.csv")
    missing = sorted({s.csr for s in steps} - csrs.keys())
    if missing:
        raise PsconvError(f"LiteDRAM core in {directory}: init writes CSRs {missing} that "
                          f"csr.csv does not list")
    return LiteDRAMCore(config=config, variant=variant, directory=directory,
                        verilog=directory / "litedram_core.v", csrs=csrs, init_sequence=steps,
                        info=info, cached=cached, seconds=info.get("generation_seconds", 0.0),
                        extra_verilog=[ECP5_IO_SIM_MODELS] if variant == "sim" else [])
