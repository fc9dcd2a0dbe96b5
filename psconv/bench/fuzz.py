"""Fuzz: random bytes, random frames and random descriptors into the simulated board.

The board (the board top with memory in Verilator) gets a reduced ResNet18 loaded resident, then
bursts of fuzz: random bytes (fake sync bytes and headers among them), frames with valid CRCs
carrying any command code and random payloads (memory writes, reads, CRCs, model checks,
inferences, layer writes, starts), and ``WRITE_LAYER`` descriptors, half within the engine's
limits and half random bits. After every burst a fresh host session must get the board's
identity (the board never hangs and always answers) and ABORT its step. At the end the model in
memory must be unchanged (its CRC-32), unless a fuzz frame validly wrote into it, and a model
the board still marks valid must match its CRC; then one inference must be bit-exact.
"""

from __future__ import annotations

import random
import struct
import time
from collections import Counter

from psconv.errors import PsconvError
from psconv.outputs import output_folder

from .results import write_results

DEFAULT_BYTES = 1_000_000
BURST_BYTES = 4096
KINDS = ("noise", "frames", "descriptors")


class FuzzFailure(PsconvError):
    """The board broke an invariant under fuzz (named in the message)."""


def _random_descriptor(rng: random.Random, config) -> bytes:
    """A ``WRITE_LAYER`` payload: half the time a descriptor the host's checks admit, else random
    bits."""
    from psconv.protocol.descriptor import LayerSpec
    from psconv.protocol.payloads import descriptor_bytes

    size = descriptor_bytes(config)
    if rng.random() < 0.5:
        spec = LayerSpec(in_channels=rng.randint(1, config.max_in_channels),
                         out_channels=rng.randint(1, config.max_out_channels),
                         in_height=rng.randint(1, config.max_height),
                         in_width=rng.randint(1, config.max_width), stride=rng.choice((1, 2)),
                         kernel=rng.choice((1, 3)), relu=rng.random() < 0.5,
                         residual=rng.random() < 0.5, period=rng.randint(1, config.max_period))
        try:
            spec.check(config)                 # the descriptor rules the board checks too
            return spec.encode(config).to_bytes(size, "little")
        except PsconvError:
            pass
    return bytes(rng.randrange(256) for _ in range(size))


def make_burst(rng: random.Random, config, model_bytes: int, max_payload: int,
               burst_bytes: int = BURST_BYTES) -> tuple[bytes, Counter, bool]:
    """One burst of fuzz; returns its bytes, how many of each kind, and whether a frame in it
    may validly write into ``[0, model_bytes)`` (the model)."""
    from psconv.protocol.codes import Command
    from psconv.protocol.frame import SYNC, encode_frame

    burst, kinds, touches_model = bytearray(), Counter(), False
    codes = [int(c) for c in Command] + [0x00, 0x7F, 0xFF]
    while len(burst) < burst_bytes:
        kind = rng.choice(KINDS)
        kinds[kind] += 1
        if kind == "noise":
            chunk = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 200)))
            if rng.random() < 0.3:                    # a fake sync and header inside
                at = rng.randrange(len(chunk))
                chunk[at:at] = SYNC + bytes(rng.randrange(256) for _ in range(4))
            burst += chunk
            continue
        if kind == "descriptors":
            payload = _random_descriptor(rng, config)
            code = int(Command.WRITE_LAYER)
            if rng.random() < 0.5:                    # and start it
                burst += encode_frame(rng.randrange(256), code, payload)
                code, payload = int(Command.START), b""
        else:
            code = rng.choice(codes)
            payload = bytes(rng.randrange(256) for _ in range(rng.choice(
                (0, 1, 4, 8, 12, rng.randint(0, 64), rng.randint(0, max_payload)))))
            if code == Command.WRITE_MEM and len(payload) > 4:
                address = struct.unpack("<I", payload[:4])[0]
                # mostly the maps, now and then the model, else anywhere (mostly outside memory)
                pick = rng.random()
                if pick < 0.8:
                    address = model_bytes + rng.randrange(1 << 16)
                elif pick < 0.85:
                    address = rng.randrange(model_bytes)
                payload = struct.pack("<I", address) + payload[4:]
                touches_model |= address < model_bytes
        burst += encode_frame(rng.randrange(256), code, payload, max_payload=1 << 16)
    return bytes(burst), kinds, touches_model


def _drain(transport, quiet_s: float = 0.05) -> int:
    """Read whatever the board sends until it is quiet for ``quiet_s``; returns the bytes."""
    total = 0
    while True:
        data = transport.read(1 << 16, quiet_s)
        if not data:
            return total
        total += len(data)


def fuzz(total_bytes: int = DEFAULT_BYTES, seed: int = 0, config=None, transport: str = "sim",
         burst_bytes: int = BURST_BYTES, progress: bool = True):
    """Fuzz the board behind ``transport`` with ``total_bytes``; returns ``(rows, summary)``, one
    row per burst. Raises :class:`FuzzFailure` when the board breaks an invariant."""
    from tqdm import tqdm

    from psconv.config import EngineConfig
    from psconv.firmware.compiler import compile_model
    from psconv.firmware.driver import LOCAL_BOARDS, open_link
    from psconv.firmware.link import LinkError
    from psconv.firmware.resident import ResidentDriver, local_board_memory
    from psconv.nn.default import default_quantized_model, model_images

    if total_bytes < 1 or burst_bytes < 1:
        raise PsconvError(f"fuzz: {total_bytes} bytes in bursts of {burst_bytes}; allowed: >= 1")
    config = config or EngineConfig()
    model = default_quantized_model("PSD1_P4", width=2, image_size=8, calibration_images=4)
    program = compile_model(model, config)
    link = open_link(transport, config, memory_bytes=(local_board_memory(program)
                                                      if transport in LOCAL_BOARDS else 0))
    wire = link.transport
    rng = random.Random(seed)
    rows, kinds = [], Counter()
    sent = reloads = 0
    started = time.perf_counter()
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="fuzz",
               disable=None if progress else True)

    def session():
        return ResidentDriver(wire, program, timeout_s=link.timeout_s, retries=link.retries)

    try:
        host = session()
        memory = host.build_image()
        host.load(memory, progress=False)
        model_bytes = len(memory.model_bytes)
        while sent < total_bytes:
            burst, burst_kinds, touches = make_burst(rng, config, model_bytes, host.max_payload,
                                                     burst_bytes)
            kinds.update(burst_kinds)
            began = time.perf_counter()
            wire.write(burst)
            answered = _drain(wire)
            where = f"fuzz burst {len(rows)} (seed {seed})"
            # a new host session must get answers: identity, ABORT of whatever fuzz started,
            # the run status and the model's CRC-32
            host = session()
            try:
                host.identify()
                host.abort(f"{where}: ABORT")
                status = host.run_status(f"{where}: RUN_STATUS")
                crc = host.crc_memory(0, model_bytes, f"{where}: the model's CRC-32")
            except LinkError as e:
                raise FuzzFailure(f"{where}: the board did not answer a new session: {e}") from None
            if crc != memory.model_crc:
                if not touches:
                    raise FuzzFailure(f"{where}: the model's CRC-32 is 0x{crc:08x}, loaded "
                                      f"0x{memory.model_crc:08x}, though no frame wrote into it")
                if status["model_valid"]:
                    raise FuzzFailure(f"{where}: the board marks a changed model valid")
                host.load(memory, progress=False)        # a valid write changed it: reload
                reloads += 1
            sent += len(burst)
            bar.update(len(burst))
            rows.append({"burst": len(rows), "bytes": len(burst), **dict(burst_kinds),
                         "bytes answered": answered, "model rewritten": int(crc != memory.model_crc),
                         "wall_s": round(time.perf_counter() - began, 2)})
        bar.close()
        # a fuzz CHECK_MODEL may have cleared the mark: the model is intact (checked above),
        # so this load writes it again only where needed and checks it
        host = session()
        host.load(memory, progress=False)
        image = model_images(model, 1, seed=seed)[0]
        report = host.infer(image, check_layers=True)
        if not report.bit_exact:
            raise FuzzFailure(f"fuzz (seed {seed}): the inference after the fuzz is not "
                              f"bit-exact: {report.first_mismatch}")
    finally:
        bar.close()
        wire.close()
    summary = {"bytes": sent, "bursts": len(rows), "sessions answered": len(rows),
               **{f"{k} pieces": v for k, v in kinds.items()},
               "model rewritten by a valid fuzz frame (reloaded)": reloads,
               "model changed without a write into it": 0,
               "inference after the fuzz": "bit-exact", "seed": seed,
               "total wall time": f"{time.perf_counter() - started:.1f} s"}
    return rows, summary


def run(outdir=None, **options):
    """:func:`fuzz`, then the table, CSV, JSON and plot; returns ``(folder, summary)``."""
    rows, summary = fuzz(**options)

    def plot(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        xs = [r["burst"] for r in rows]
        ax.plot(xs, [r["bytes answered"] for r in rows], "k.", label="bytes the board answered")
        ax.set_xlabel("burst")
        ax.set_ylabel("bytes")
        ax.set_title(f"{summary['bytes']} fuzz bytes, every session answered")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    columns = ["burst", "bytes", *KINDS, "bytes answered", "model rewritten", "wall_s"]
    folder = write_results("fuzz", rows, outdir, summary, plot, columns)
    return folder, summary


def register(benches) -> None:
    from psconv.commands.engine_choice import add_engine_arguments

    parser = benches.add_parser(
        "fuzz", help="random bytes, frames and descriptors into the simulated board: it must "
                     "always answer, keep its model and stay bit-exact",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--bytes", type=int, default=DEFAULT_BYTES,
                        help="fuzz bytes to send (default: %(default)s)")
    parser.add_argument("--burst", type=int, default=BURST_BYTES,
                        help="bytes between two checks that the board answers (default: "
                             "%(default)s)")
    parser.add_argument("--transport", default="sim", metavar="SPEC",
                        help="the board (default: %(default)s, the gateware in Verilator)")
    add_engine_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="fuzz seed")
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/fuzz)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    from psconv.commands.engine_choice import engine_config_from_args

    run(outdir=args.out, total_bytes=args.bytes, burst_bytes=args.burst,
                    transport=args.transport, seed=args.seed,
                    config=engine_config_from_args(args), progress=not args.no_progress)
    return 0
