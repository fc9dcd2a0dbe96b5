"""End-to-end benchmark: a full CIFAR ResNet18 through the simulated board, bit-exact checked.

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

from psconv.outputs import output_folder

from .results import write_results

UART_BYTES_PER_S = 3_000_000 / 10       # 8N1 at 3 Mbaud


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


def run(width: int = 64, family: str = "PSD1_P16", config=None, image_seed: int = 0,
        outdir=None, progress: bool = True):
    """Run the benchmark; returns the results folder."""
    from psconv.config import EngineConfig
    from psconv.firmware.compiler import compile_model
    from psconv.firmware.driver import run_on_board
    from psconv.nn.default import default_images, default_quantized_model
    from psconv.sim.golden.ops import quantize_input

    config = config or EngineConfig()
    started = time.perf_counter()
    model = default_quantized_model(family, width)
    image = quantize_input(default_images(1, seed=1000 + image_seed)[0], model.input_scale)
    program = compile_model(model, config)
    prepared = time.perf_counter()
    report = run_on_board(program, image, "sim", progress=progress)
    finished = time.perf_counter()

    rows = []
    for s in report.steps:
        rows.append({
            "step": s.name, "shape": s.shape, "wire_bytes_sent": s.wire_bytes_sent,
            "wire_bytes_received": s.wire_bytes_received,
            "payload_bytes_sent": s.payload_bytes_sent,
            "payload_bytes_received": s.payload_bytes_received,
            "cycles": s.cycles, "busy": s.busy_cycles, "stall": s.stall_cycles,
            "idle": s.idle_cycles, "macs": s.macs,
            "utilization": s.utilization, "busy_utilization": s.compute_utilization,
            "wall_s": round(s.wall_s, 2), "bit_exact": s.bit_exact,
        })
    kinds = offchip_bytes(program)
    wire = report.total("wire_bytes_sent") + report.total("wire_bytes_received")
    summary = {
        "network": f"ResNet18-CIFAR {family} width {width}, engine Tm={config.tm} Tn={config.tn} "
                   f"({config.multipliers} multipliers)",
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
    }
    if not report.bit_exact:
        summary["first mismatch"] = report.first_mismatch

    def plot(path):
        import matplotlib.pyplot as plt

        names = [r["step"] for r in rows]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
        top.bar(names, [100 * r["utilization"] for r in rows], label="over device cycles")
        top.plot(names, [100 * r["busy_utilization"] for r in rows], "k.", label="over busy cycles")
        top.set_ylabel("multiplier utilization %")
        top.legend(fontsize=8)
        top.set_title(summary["network"] + " on the simulated board")
        bottom.bar(names, [r["wire_bytes_sent"] / 1e3 for r in rows], label="sent")
        bottom.bar(names, [r["wire_bytes_received"] / 1e3 for r in rows],
                   bottom=[r["wire_bytes_sent"] / 1e3 for r in rows], label="received")
        bottom.set_ylabel("kB on the link")
        bottom.legend(fontsize=8)
        bottom.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    folder = write_results("e2e", rows, outdir, summary, plot)
    return folder, report


def register(benches) -> None:
    from psconv.commands.engine_choice import add_engine_arguments
    from psconv.nn.models import MAX_WIDTH

    parser = benches.add_parser(
        "e2e", help="full ResNet18 through the simulated board: bytes, cycles, utilization",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--width", type=int, default=MAX_WIDTH,
                        help=f"ResNet18 base width, 1..{MAX_WIDTH} (default: %(default)s, the full "
                             f"network)")
    parser.add_argument("--family", default="PSD1_P16",
                        help="pattern family of the seeded ResNet18 (default: %(default)s)")
    add_engine_arguments(parser)
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
    config = engine_config_from_args(args)
    _, report = run(args.width, args.family, config, args.image_seed, args.out,
                    progress=not args.no_progress)
    return 0 if report.bit_exact else 1
