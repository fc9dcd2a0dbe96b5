"""End-to-end benchmark: a full CIFAR ResNet18 through the simulated board, bit-exact checked.

``--mode streamed`` streams every layer over the link as below; ``--mode resident`` loads the
model into the board's memory once and runs the inference there (the simulated board with
memory by default; ``--transport resident-ref`` is the software reference board, whose cycles
are an estimate), and adds an energy estimate per inference against a dense baseline
(:mod:`psconv.bench.energy`); ``--mode both`` (the default) runs both. Per mode the results JSON's ``modes`` gives ``clock_mhz``,
``device_cycles_per_inference``, ``link_bytes_per_inference``, ``memory_bytes_per_inference``,
``inferences_per_s`` (device cycles at the clock plus the link bytes at 3 Mbaud 8N1) and
``bit_exact``.

The seeded PSD1_P16 ResNet18 (width 64 by default: the full network) is compiled for the default
engine (Tm=4 Tn=16; ``--board`` picks a board's engine instead) and streamed layer by layer by
the host driver over the socket bridge into ``BoardTop(bridge=True)`` in Verilator: link layer, command processor and
engine are the gateware, the link moves one byte per cycle each way. Every layer and the logits
are compared with the golden model.

Per step it reports the bytes on the wire (frames, both ways), the device's cycle counters
(START to done: busy, stall, idle) and MACs, the multiplier utilization over those cycles (the
engine waits for the link too) and over busy cycles only, and the wall time. The summary has the
whole-network figures, the off-chip bytes of one inference by kind (what the engine must be sent
and returns; the framing overhead on top), and what the same bytes would cost on the real
board's 3 Mbaud UART.
"""

from __future__ import annotations

import time

from psconv.errors import PsconvError
from psconv.outputs import output_folder

from .energy import ENERGY_PJ, ENERGY_SOURCE, energy_per_inference, engine_activity, plot_energy
from .results import write_results

UART_BYTES_PER_S = 3_000_000 / 10       # 8N1 at 3 Mbaud
DEFAULT_CLOCK_MHZ = 60.0                # the ULX3S build's clock (rtl_gen.boards link_clock_mhz)
MODES = ("streamed", "resident", "both")


def offchip_bytes(program) -> dict:
    """Bytes the engine is sent and returns for one inference, by kind (exact, from the program)."""
    from psconv.protocol.payloads import MASK_BYTES, QUANT_BYTES, descriptor_bytes
    from psconv.protocol.beats import fmap_beat_bytes

    cfg = program.config
    kinds = {"weights": 0, "input maps": 0, "residuals": 0, "outputs": 0,
             "descriptors, masks, quantization": 0}
    for step in program.engine_steps:
        spec = step.descriptor
        out_bytes = spec.output_beats(cfg) * cfg.tm
        fmap = spec.in_channels * spec.in_height * spec.in_width
        kinds["weights"] += step.weight_words.numel()
        kinds["input maps"] += -(-fmap // fmap_beat_bytes(cfg)) * fmap_beat_bytes(cfg)
        kinds["residuals"] += out_bytes if spec.residual else 0
        kinds["outputs"] += out_bytes
        kinds["descriptors, masks, quantization"] += (
            descriptor_bytes(cfg) + MASK_BYTES * len(step.masks) + QUANT_BYTES * spec.out_channels)
    kinds["total"] = sum(kinds.values())
    return kinds


def mode_figures(mode: str, clock_mhz: float, device_cycles: int, link_bytes: int,
                 memory_bytes: int, bit_exact: bool, overlapped_link_bytes: int = 0,
                 busy_cycles: int | None = None) -> dict:
    """One mode's figures per inference. ``inferences_per_s`` counts the device cycles at
    ``clock_mhz`` and the link bytes at 3 Mbaud 8N1 one after the other, except the
    ``overlapped_link_bytes`` (the next image, sent while the board computes), which hide behind
    the device time up to its length; ``link_share`` is the exposed link time's share of an
    inference. ``time_split`` says where an inference's time goes: the engine computing
    (``busy_cycles``), the rest of the device cycles (memory, setup, drain) and the exposed link."""
    device_s = device_cycles / (clock_mhz * 1e6)
    link_s = link_bytes / UART_BYTES_PER_S
    hidden_s = min(overlapped_link_bytes / UART_BYTES_PER_S, device_s)
    seconds = device_s + link_s - hidden_s
    figures = {"mode": mode, "clock_mhz": clock_mhz, "device_cycles_per_inference": device_cycles,
               "link_bytes_per_inference": link_bytes,
               "overlapped_link_bytes_per_inference": overlapped_link_bytes,
               "memory_bytes_per_inference": memory_bytes,
               "inferences_per_s": 1 / seconds,
               "inferences_per_s_without_overlap": 1 / (device_s + link_s),
               "link_share": (link_s - hidden_s) / seconds, "bit_exact": bit_exact}
    if busy_cycles is not None:
        figures["time_split"] = {
            "compute_s": busy_cycles / (clock_mhz * 1e6),
            "memory_setup_drain_s": (device_cycles - busy_cycles) / (clock_mhz * 1e6),
            "link_exposed_s": link_s - hidden_s}
    return figures


NETWORK_NAMES = {"resnet18": "ResNet18-CIFAR", "vgg16": "VGG16-CIFAR"}


def _prepare(family: str, width: int, config, image_seed: int, images: int = 1,
             arch: str = "resnet18"):
    from psconv.firmware.compiler import compile_model
    from psconv.nn.default import default_images, default_quantized_model
    from psconv.sim.golden.ops import quantize_input

    model = default_quantized_model(family, width, arch=arch)
    batch = [quantize_input(x, model.input_scale)
             for x in default_images(images, seed=1000 + image_seed)]
    return compile_model(model, config), batch[0] if images == 1 else batch


def run(width: int = 64, family: str = "PSD1_P16", config=None, image_seed: int = 0,
        outdir=None, progress: bool = True, mode: str = "both", transport: str | None = None,
        clock_mhz: float = DEFAULT_CLOCK_MHZ, baseline: str | None = "dense",
        arch: str = "resnet18"):
    """Run the benchmark; returns ``(results folder, report)``: the streamed
    :class:`~psconv.firmware.reports.RunReport` when streamed ran, else the resident report.
    ``transport``: the board of the resident runs (default ``sim``; streamed always runs on
    ``sim``, or on ``transport`` in streamed mode);
    ``baseline``: the family the resident energy is compared with (None: none); ``arch``: the
    seeded network (``vgg16``: streamed, its max pools run in the engine's output max pool,
    resident as passes of the board's runner)."""
    from psconv.config import EngineConfig

    if mode not in MODES:
        raise PsconvError(f"e2e mode {mode!r}; allowed: {', '.join(MODES)}")
    config = config or EngineConfig()
    started = time.perf_counter()
    program, image = _prepare(family, width, config, image_seed, arch=arch)
    if mode != "resident":
        from psconv.firmware.compiler import check_streamable

        check_streamable(program)       # streamed, each max pool fuses into its convolution
    network = (f"{NETWORK_NAMES[arch]} {family} width {width}, engine Tm={config.tm} Tn={config.tn} "
               f"({config.multipliers} multipliers)")
    if mode == "streamed":
        return _streamed(program, image, network, outdir, progress, transport or "sim",
                         clock_mhz, started)
    modes, rows, report = {}, [], None
    if mode == "both":
        report = _run_streamed(program, image, "sim", progress)
        modes["streamed"] = _streamed_figures(report, clock_mhz)
        rows.append({"model": family, **modes["streamed"]})
    resident, energies, reports = _resident(program, image, transport or "sim",
                                            progress, clock_mhz, baseline, width, image_seed,
                                            arch)
    modes["resident"] = resident[family]
    rows += [{"model": name, **figures} for name, figures in resident.items()]
    summary = {"network": network, "modes": modes, "energy per inference": energies,
               "energy figures (pJ)": {**ENERGY_PJ, "source": ENERGY_SOURCE},
               "total wall time": f"{time.perf_counter() - started:.1f} s"}

    def plot(path):
        if report is not None:
            _plot_steps(path, report, network)
            path = path.with_name(f"{path.stem}_energy.png")
        plot_energy(path, energies)

    columns = ["model", "mode", "clock_mhz", "device_cycles_per_inference",
               "link_bytes_per_inference", "memory_bytes_per_inference", "inferences_per_s",
               "bit_exact"]
    folder = write_results("e2e", rows, outdir, summary, plot, columns)
    return folder, report or reports[family]


def _run_streamed(program, image, transport: str, progress: bool):
    from psconv.firmware.driver import run_on_board

    return run_on_board(program, image, transport, progress=progress)


def _streamed_figures(report, clock_mhz: float) -> dict:
    """Device cycles: busy + stall of every step (the idle cycles waiting for the simulated link
    are left out: the link time at 3 Mbaud is added instead)."""
    wire = report.total("wire_bytes_sent") + report.total("wire_bytes_received")
    cycles = report.total("busy_cycles") + report.total("stall_cycles")
    return mode_figures("streamed", clock_mhz, cycles, wire, 0, report.bit_exact)


def _resident(program, image, transport: str, progress: bool, clock_mhz: float,
              baseline: str | None, width: int, image_seed: int, arch: str = "resnet18"):
    """Resident figures and the energy estimate of ``program`` and of the ``baseline`` family.
    Each runs two images and reports the second: its upload went in while the first computed,
    as in a stream of images."""
    from psconv.firmware.resident import run_resident

    family = program.model.family_name
    programs = {family: _prepare(family, width, program.config, image_seed, 2, arch)}
    if baseline:
        programs[baseline] = _prepare(baseline, width, program.config, image_seed, 2, arch)
    figures, energies, reports = {}, {}, {}
    for name, (prog, images) in programs.items():
        report = reports[name] = run_resident(prog, images, transport, progress=progress)
        inference = report.inferences[-1]
        memory = inference.memory_reads + inference.memory_writes
        activity = engine_activity(prog)
        # the status polls while the simulated board computes are left out: they count how slow
        # the simulation is (the JSON keeps them), not what the inference moves
        figures[name] = mode_figures(
            "resident", clock_mhz, inference.device_cycles, inference.inference_link_bytes,
            memory, report.bit_exact, inference.overlapped_link_bytes, activity["busy_cycles"])
        figures[name]["status_poll_bytes_in_simulation"] = inference.status_poll_bytes
        energies[name] = energy_per_inference(memory, activity)
    return figures, energies, reports


def _step_rows(report) -> list[dict]:
    return [{
        "step": s.name, "shape": s.shape, "wire_bytes_sent": s.wire_bytes_sent,
        "wire_bytes_received": s.wire_bytes_received,
        "payload_bytes_sent": s.payload_bytes_sent,
        "payload_bytes_received": s.payload_bytes_received,
        "cycles": s.cycles, "busy": s.busy_cycles, "stall": s.stall_cycles,
        "idle": s.idle_cycles, "macs": s.macs,
        "utilization": s.utilization, "busy_utilization": s.compute_utilization,
        "wall_s": round(s.wall_s, 2), "bit_exact": s.bit_exact,
    } for s in report.steps]


def _streamed(program, image, network: str, outdir, progress: bool, transport: str,
              clock_mhz: float, started: float):
    """``--mode streamed``: one row per engine step, the link and utilization summary."""
    prepared = time.perf_counter()
    report = _run_streamed(program, image, transport, progress)
    finished = time.perf_counter()
    rows = _step_rows(report)
    from psconv.firmware.compiler import streamed_program

    kinds = offchip_bytes(streamed_program(program))
    wire = report.total("wire_bytes_sent") + report.total("wire_bytes_received")
    summary = {
        "network": network,
        "bit-exact (every layer and the logits)": report.bit_exact,
        "total wall time": f"{finished - started:.1f} s ({finished - prepared:.1f} s on the "
                           f"simulated board, {prepared - started:.1f} s model and compile)",
        "device cycles (all steps)": report.cycles,
        "whole-network multiplier utilization": f"{100 * report.utilization:.1f} % over device "
                                                f"cycles (link waits included), "
                                                f"{100 * report.compute_utilization:.1f} % over "
                                                f"busy cycles",
        "off-chip bytes per inference": f"{kinds['total']} payload bytes ("
        + ", ".join(f"{k} {v}" for k, v in kinds.items() if k != "total")
        + f"); {wire} bytes on the wire with framing and polling",
        "on a 3 Mbaud UART": f"{wire / UART_BYTES_PER_S:.1f} s of link time per inference",
        "link": report.link_summary,
        "modes": {"streamed": _streamed_figures(report, clock_mhz)},
    }
    if not report.bit_exact:
        summary["first mismatch"] = report.first_mismatch
    folder = write_results("e2e", rows, outdir, summary,
                           lambda path: _plot_steps(path, report, network))
    return folder, report


def _plot_steps(path, report, network: str) -> None:
    """Per step: multiplier utilization and link kilobytes."""
    import matplotlib.pyplot as plt

    rows = _step_rows(report)
    names = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    top.bar(names, [100 * r["utilization"] for r in rows], label="over device cycles")
    top.plot(names, [100 * r["busy_utilization"] for r in rows], "k.", label="over busy cycles")
    top.set_ylabel("multiplier utilization %")
    top.legend(fontsize=8)
    top.set_title(network + " on the simulated board")
    bottom.bar(names, [r["wire_bytes_sent"] / 1e3 for r in rows], label="sent")
    bottom.bar(names, [r["wire_bytes_received"] / 1e3 for r in rows],
               bottom=[r["wire_bytes_sent"] / 1e3 for r in rows], label="received")
    bottom.set_ylabel("kB on the link")
    bottom.legend(fontsize=8)
    bottom.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(benches) -> None:
    from psconv.commands.engine_choice import add_engine_arguments
    from psconv.nn.models import MAX_WIDTH

    parser = benches.add_parser(
        "e2e", help="full ResNet18 (or VGG16) through the simulated board: bytes, cycles, "
                    "utilization; "
                    "streamed or resident, with an energy estimate",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--network", choices=tuple(NETWORK_NAMES), default="resnet18",
                        help="seeded network: resnet18 or vgg16 (VGG16's max pools run in the "
                             "engine's output max pool streamed, in the board's memory resident) "
                             "(default: %(default)s)")
    parser.add_argument("--width", type=int, default=MAX_WIDTH,
                        help=f"ResNet18 base width, or VGG16's channels x WIDTH/64, "
                             f"1..{MAX_WIDTH} (default: %(default)s, the full network)")
    parser.add_argument("--family", default="PSD1_P16",
                        help="pattern family of the seeded network (default: %(default)s)")
    add_engine_arguments(parser)
    parser.add_argument("--mode", choices=MODES, default="both",
                        help="streamed: every layer over the link (Verilator board); resident: "
                             "the model in the board's memory, plus the energy estimate; both "
                             "(default: %(default)s)")
    parser.add_argument("--transport", metavar="SPEC", default=None,
                        help="the board of --mode streamed, or of the resident runs (default: sim, "
                             "the board's gateware in Verilator; resident-ref: the software "
                             "resident board, whose cycles are an estimate)")
    parser.add_argument("--clock-mhz", type=float, default=DEFAULT_CLOCK_MHZ, metavar="MHZ",
                        help="clock the device cycles are counted at for inferences_per_s "
                             "(default: %(default)s, the ULX3S build's)")
    parser.add_argument("--baseline", default="dense", metavar="FAMILY",
                        help="family the resident energy estimate is compared with; 'none' for "
                             "no baseline (default: %(default)s)")
    parser.add_argument("--image-seed", type=int, default=0,
                        help="seed of the input image, as `psconv run --image-seed` "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/e2e)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.commands.engine_choice import engine_config_from_args
    from psconv.families import family_by_name
    from psconv.nn.models import check_width

    check_width(args.width)
    family_by_name(args.family)
    baseline = None if args.baseline.lower() == "none" else args.baseline
    if baseline:
        family_by_name(baseline)
    if args.clock_mhz <= 0:
        raise PsconvError(f"--clock-mhz is {args.clock_mhz}; allowed: a positive frequency")
    config = engine_config_from_args(args)
    _, report = run(args.width, args.family, config, args.image_seed, args.out,
                    progress=not args.no_progress, mode=args.mode, transport=args.transport,
                    clock_mhz=args.clock_mhz, baseline=baseline, arch=args.network)
    return 0 if report.bit_exact else 1
