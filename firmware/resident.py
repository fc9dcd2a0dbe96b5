"""Resident driver: load a model into the board's memory once, then run whole inferences there.

The board side is :mod:`psconv.protocol.memory` (the commands and the memory image's contract);
the image itself is :func:`psconv.firmware.memory_image.build_memory_image`.

:meth:`ResidentDriver.load` writes the model with ``WRITE_MEM`` in chunks of
``max_payload - 4`` bytes (a tqdm bar on a terminal), then ``CHECK_MODEL`` has the board compute
the model's CRC-32 and mark it valid. A load that fails part way (a :class:`LinkTimeout`) is
*resumable*: the driver records how many bytes of which model the board has acknowledged (the
chunks go in address order, so that is a prefix); the next ``load`` of the same image asks the
board for the CRC-32 of that prefix (one ``CRC_MEM``) and, if it matches, writes only the rest.
If it does not (the board was reset or written in between), it starts over.

:meth:`ResidentDriver.infer` writes one image into the input region, sends ``INFER``, polls
``RUN_STATUS`` until done (at most ``infer_timeout_s`` on the transport's clock, else an error
naming the step reached), reads the result region back (the average pool's C bytes when the
board pools, else the last engine layer's map) and runs the remaining host steps (the
classifier) with the golden model's integer ops. The logits, and with
``check_layers`` every layer read back from memory, are compared with
:func:`~psconv.sim.golden.network.run_golden`. A NAK surfaces as a one-line
:class:`~psconv.firmware.link.LinkNak` saying what the reason means here.
"""

from __future__ import annotations

import struct
import time

import torch

from psconv.errors import PsconvError
from psconv.firmware.compiler import HostStep, LayerProgram
from psconv.firmware.driver import (DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, LOCAL_BOARDS, BoardClient,
                                    open_link)
from psconv.firmware.link import LinkNak
from psconv.firmware.memory_image import MapRegion, MemoryImage, build_memory_image
from psconv.firmware.reports import InferenceReport, LoadReport, ResidentRunReport
from psconv.firmware.transport import Transport
from psconv.protocol.codes import Command, NakReason
from psconv.protocol.descriptor import describe_rejection
from psconv.protocol.memory import (BAD_MASKS, BAD_MAX_POOL, MAX_POOL_2X2, MEM_ADDRESS_LAYOUT,
                                    MEM_READ_LAYOUT, MEM_REGION_LAYOUT, MODEL_CHECK_LAYOUT,
                                    NO_BAD_RULE, PROGRAM_HEADER_LAYOUT, RUN_STATUS_LAYOUT,
                                    memory_crc, step_record_layout)
from psconv.protocol.payloads import (MASK_BYTES, decode_payload, describe_masks_without_taps,
                                      encode_payload, layout_bytes)
from psconv.sim.golden.network import describe_mismatch, run_golden, run_layer

DEFAULT_INFER_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.001
MAX_POLL_INTERVAL_S = 0.02

NAK_MEANINGS = {
    NakReason.NO_MODEL: "the board holds no checked model (never loaded, reset, or written into "
                        "since it was checked): load the model again",
    NakReason.MODEL_CRC: "the model in the board's memory differs from the image's (a write was "
                         "lost or the memory is faulty): load the model again",
    NakReason.BUSY: "the board is still running an inference",
    NakReason.BAD_LENGTH: "a memory region outside the board's memory or a malformed payload",
    NakReason.BAD_STATE: "the board cannot run the program in its memory (wrong engine or a "
                         "damaged program)",
    NakReason.UNKNOWN_COMMAND: "this board has no resident mode (a bitstream without memory): "
                               "use --mode streamed",
}


class ResidentError(PsconvError):
    """The resident board did something the driver cannot continue from (named in the message)."""


LOCAL_BOARD_INFER_TIMEOUT_S = 3600.0
"""How long :func:`run_resident` waits for one inference on a local (simulated or reference)
board: a full-width dense network takes minutes in Verilator."""

SLOWEST_BOARD_BYTES_PER_S = 50_000
"""Memory bytes per second of host time that the slowest board reads for a CRC (the simulated
board: one byte per cycle at tens of thousands of cycles per second; a real board does
millions), so a CRC over a whole model gets the time it needs before the host re-sends."""


class ResidentDriver(BoardClient):
    """Runs ``program`` resident on the board behind ``transport`` (see the module docstring).

    ``timeout_s`` and ``retries`` are the link's; ``infer_timeout_s`` bounds one inference's
    ``RUN_STATUS`` polling. :meth:`identify` (automatic before the first command) checks the
    engine and reads the board's memory size from ``RUN_STATUS``.
    """

    def __init__(self, transport: Transport, program: LayerProgram,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES, *,
                 infer_timeout_s: float = DEFAULT_INFER_TIMEOUT_S):
        super().__init__(transport, program.config, timeout_s, retries)
        self.program = program
        self.infer_timeout_s = infer_timeout_s
        self.memory_bytes: int | None = None
        self.image: MemoryImage | None = None           # the model the board holds, once loaded
        self._acknowledged: tuple[int, int] = (0, 0)    # (model CRC, bytes the board has ACKed)
        self._inferences = 0
        self._unfinished = False       # an INFER whose wait timed out: the board may still run it
        self._preloaded = None         # (image, its upload's wire bytes, sent while running)
        self.poll_bytes = self.polls = 0   # status polls of the last wait (see _wait)

    # -- link ---------------------------------------------------------------------------------

    def _request(self, command, payload: bytes = b"", context: str = "",
                 timeout_s: float | None = None):
        try:
            return super()._request(command, payload, context, timeout_s)
        except LinkNak as e:
            meaning = NAK_MEANINGS.get(e.reason)
            if meaning is None:
                raise
            raise LinkNak(f"{e} ({meaning})", command=e.command, seq=e.seq,
                          attempts=e.attempts, reason=e.reason) from None

    def identify(self) -> dict:
        fields = super().identify()
        self.memory_bytes = self.run_status("identifying the board")["memory_bytes"]
        return fields

    def _ready(self) -> None:
        if self.identity is None:
            self.identify()

    def run_status(self, context: str = "RUN_STATUS") -> dict:
        payload = self._request(Command.RUN_STATUS, context=context).payload
        view = decode_payload(RUN_STATUS_LAYOUT, payload, f"{context}: RUN_STATUS")
        return {name: view[name] for name, _ in RUN_STATUS_LAYOUT}

    def write_memory(self, address: int, data: bytes, context: str, on_chunk=None) -> None:
        """``data`` at ``address`` in WRITE_MEM frames of ``max_payload - 4`` bytes, in address
        order; ``on_chunk(end)`` after each acknowledged chunk (``end``: bytes of ``data`` done)."""
        self._ready()
        head = layout_bytes(MEM_ADDRESS_LAYOUT)
        chunk = self.max_payload - head
        for offset in range(0, len(data), chunk):
            part = data[offset:offset + chunk]
            self._request(Command.WRITE_MEM, encode_payload(
                MEM_ADDRESS_LAYOUT, {"address": address + offset}) + part, context)
            if on_chunk:
                on_chunk(offset + len(part))

    def read_memory(self, address: int, length: int, context: str) -> bytes:
        """``length`` bytes from ``address`` in READ_MEM requests of at most ``max_payload``."""
        self._ready()
        data = bytearray()
        while len(data) < length:
            want = min(self.max_payload, length - len(data))
            part = self._request(Command.READ_MEM, encode_payload(
                MEM_READ_LAYOUT, {"address": address + len(data), "length": want}), context).payload
            if len(part) != want:
                raise ResidentError(f"{context}: READ_MEM of {want} bytes at "
                                    f"{address + len(data)} answered {len(part)} bytes")
            data += part
        return bytes(data)

    def _crc_timeout(self, length: int) -> float:
        """The answer timeout of a command that makes the board read ``length`` bytes before it
        answers (CRC_MEM, CHECK_MODEL): the link's, or longer for a long region at the slowest
        board's pace (:data:`SLOWEST_BOARD_BYTES_PER_S`)."""
        return max(self.link.timeout_s, length / SLOWEST_BOARD_BYTES_PER_S)

    def crc_memory(self, address: int, length: int, context: str) -> int:
        payload = self._request(Command.CRC_MEM, encode_payload(
            MEM_REGION_LAYOUT, {"address": address, "length": length}), context,
            timeout_s=self._crc_timeout(length)).payload
        if len(payload) != 4:
            raise ResidentError(f"{context}: CRC_MEM answered {len(payload)} bytes; expected 4")
        return struct.unpack("<I", payload)[0]

    # -- the model ----------------------------------------------------------------------------

    def build_image(self) -> MemoryImage:
        """The program's memory image for this board's memory size."""
        self._ready()
        return build_memory_image(self.program, self.memory_bytes)

    def load(self, image: MemoryImage, progress: bool = True) -> LoadReport:
        """Write ``image``'s model into the board and have the board check it (see the module
        docstring for resuming an interrupted load)."""
        from tqdm import tqdm

        self._ready()
        if image.total_bytes > self.memory_bytes:
            raise ResidentError(f"the memory image needs {image.total_bytes} bytes; the board has "
                                f"{self.memory_bytes}")
        started = time.perf_counter()
        wire = (self.transport.bytes_written, self.transport.bytes_read)
        model, crc = image.model_bytes, image.model_crc
        self.image = None
        resume = self._acknowledged[1] if self._acknowledged[0] == crc else 0
        if resume and self.crc_memory(0, resume, "resuming the model load") != memory_crc(model[:resume]):
            resume = 0
        bar = tqdm(total=len(model), initial=resume, desc="model", unit="B", unit_scale=True,
                   disable=None if progress else True, leave=False)

        def acknowledged(end):
            bar.update(resume + end - bar.n)
            self._acknowledged = (crc, resume + end)

        try:
            self.write_memory(image.program_address + resume, model[resume:], "loading the model",
                              acknowledged)
        finally:
            bar.close()
        self.check_model(image)
        return LoadReport(model_bytes=len(model), bytes_written=len(model) - resume,
                          resumed_from=resume, crc=crc,
                          wire_bytes_sent=self.transport.bytes_written - wire[0],
                          wire_bytes_received=self.transport.bytes_read - wire[1],
                          seconds=time.perf_counter() - started)

    def check_model(self, image: MemoryImage) -> None:
        """Have the board check that its memory holds ``image``'s model (CHECK_MODEL) and use it
        from then on; :class:`LinkNak` MODEL_CRC if it does not (then the next :meth:`load`
        starts over; the board clears its validity mark, so INFER answers NO_MODEL until a
        load). Also how a board loaded earlier (by another process) is taken over."""
        self._ready()
        try:
            self._request(Command.CHECK_MODEL, encode_payload(MODEL_CHECK_LAYOUT, {
                "address": image.program_address, "length": len(image.model_bytes),
                "crc": image.model_crc}), "checking the model in memory",
                timeout_s=self._crc_timeout(len(image.model_bytes)))
        except LinkNak:
            self._acknowledged = (0, 0)
            raise
        self.image = image

    # -- inference ----------------------------------------------------------------------------

    def _read_map(self, region: MapRegion) -> torch.Tensor:
        data = self.read_memory(region.address, region.size, f"reading map {region.name!r}")
        return torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(region.tensor_shape).to(torch.int64)

    def _wait(self, context: str, until=None) -> dict:
        """Poll RUN_STATUS until done, every :data:`POLL_INTERVAL_S` at first and then less often
        (up to :data:`MAX_POLL_INTERVAL_S`), or, back to back, until ``until(status)`` holds.
        The wire bytes of every poll but the last are added to ``self.poll_bytes``: they measure
        how slow the board is (a simulated one is thousands of times slower than real time), not
        what an inference moves."""
        clock = self.transport.clock
        deadline = clock.now() + self.infer_timeout_s
        # waiting for the input to be free is waiting for the first steps (a small share of an
        # inference), so those polls go back to back
        interval = 0 if until is not None else POLL_INTERVAL_S
        while True:
            before = self.transport.bytes_written + self.transport.bytes_read
            status = self.run_status(context)
            poll = self.transport.bytes_written + self.transport.bytes_read - before
            if status["done"] and not status["running"]:
                self._unfinished = False
                return status
            if not status["running"]:
                if status["bad_rule"] != NO_BAD_RULE:
                    raise ResidentError(self._bad_step(context, status))
                raise ResidentError(f"{context}: the board reports neither running nor done after "
                                    f"INFER ({status['steps_done']} steps done)")
            if until is not None and until(status):
                self.poll_bytes += poll
                self.polls += 1
                return status
            if clock.now() >= deadline:
                self._unfinished = True
                names = self.image.step_names
                reached = status["steps_done"]
                where = f" ({names[reached]})" if reached < len(names) else ""
                raise ResidentError(f"{context}: not done after {self.infer_timeout_s:g} s: step "
                                    f"{reached + 1} of {len(names)}{where} reached")
            self.poll_bytes += poll
            self.polls += 1
            if interval:
                clock.sleep(interval)
                interval = min(2 * interval, MAX_POLL_INTERVAL_S)

    def _bad_step(self, context: str, status: dict) -> str:
        """The message for a run the board stopped at a step record that breaks a rule, with the
        descriptor the board read from its memory."""
        step = status["steps_done"]
        names = self.image.step_names
        name = f" ({names[step]})" if step < len(names) else ""
        layout = step_record_layout(self.config)
        size = layout_bytes(layout)
        at = self.image.program_address + layout_bytes(PROGRAM_HEADER_LAYOUT) + step * size
        record = decode_payload(layout, self.read_memory(at, size, f"{context}: step record"),
                                f"{context}: step record")
        stopped = f"{context}: the board stopped before step {step + 1}{name}:"
        where = f"{stopped} its step record's"
        if status["bad_rule"] == BAD_MAX_POOL:
            return (f"{where} max_pool is {record.max_pool}; allowed: 0 (an engine step) or "
                    f"{MAX_POOL_2X2} (a 2x2 stride-2 max pool)")
        if status["bad_rule"] == BAD_MASKS:
            table = self.read_memory(record.masks_address, MASK_BYTES * record.descriptor.period,
                                     f"{context}: mask table")
            return f"{stopped} " + describe_masks_without_taps(table, "of its mask table")
        descriptor = record.descriptor.as_value().value
        return f"{where} descriptor {describe_rejection(self.config, status['bad_rule'], descriptor)}"

    def _wire(self) -> tuple[int, int]:
        return self.transport.bytes_written, self.transport.bytes_read

    def _write_input(self, image: torch.Tensor, context: str) -> None:
        region = self.image.input_region
        if tuple(image.shape) != region.shape:
            raise ResidentError(f"{context}: shape {tuple(image.shape)}; the model takes {region.shape}")
        self.write_memory(region.address, image.to(torch.int8).numpy().tobytes(), f"{context}: input")

    def _send_next_input(self, image: torch.Tensor, context: str) -> None:
        """While the board runs, write the next image as soon as no step left reads the input
        (RUN_STATUS' ``steps_done`` reaches the program's input steps; the board NAKs an earlier
        write BUSY). The write's wire bytes go to the next inference's report. If the board
        refuses (a program without an input region), the next inference writes it instead."""
        steps = self.image.input_steps
        status = self._wait(f"{context}: waiting for the input to be free",
                            until=lambda s: steps and s["steps_done"] >= steps)
        before = self._wire()
        try:
            self._write_input(image, f"{context}: the next image")
        except LinkNak as e:
            if e.reason != NakReason.BUSY:
                raise
            return
        after = self._wire()
        self._preloaded = (image, (after[0] - before[0], after[1] - before[1]), status["running"])

    def infer(self, image: torch.Tensor, check_layers: bool = False, golden=None,
              next_image: torch.Tensor | None = None) -> InferenceReport:
        """Run one int8 CHW ``image`` through the loaded model; see the module docstring.
        ``golden``: a precomputed :class:`GoldenResult` of ``image``, optional. ``next_image``:
        the image to run next, written while this one computes (so its upload overlaps this
        inference; the next call must then pass that image)."""
        if self.image is None:
            raise ResidentError("no model loaded by this driver: call load(image) first")
        memory = self.image
        index = self._inferences
        self._inferences += 1
        context = f"image {index}"
        started = time.perf_counter()
        wire = self._wire()
        self.poll_bytes = self.polls = 0
        preloaded, self._preloaded = self._preloaded, None
        sent_before = received_before = overlapped = 0
        if preloaded is not None and torch.equal(preloaded[0], image):
            _, (sent_before, received_before), while_running = preloaded
            overlapped = sent_before + received_before if while_running else 0
        else:
            if self._unfinished:           # never overwrite the input of a run still going
                self._wait(f"{context}: waiting for the unfinished inference")
            self._write_input(image, context)
        self._request(Command.INFER, encode_payload(MEM_ADDRESS_LAYOUT, {
            "address": memory.program_address}), f"{context}: INFER")
        if next_image is not None:
            self._send_next_input(next_image, context)
        status = self._wait(f"{context}: INFER")
        names = list(memory.regions)[1:] if check_layers else [memory.output_layer]
        tensors = {name: self._read_map(memory.regions[name]) for name in names}
        for step in self.program.steps:      # what the board did not run (the classifier)
            if isinstance(step, HostStep) and step.layer.name not in tensors:
                tensors[step.layer.name] = run_layer(step.layer, tensors)
        last = self.program.steps[-1]
        logits = tensors[last.layer.name if isinstance(last, HostStep) else last.layer]
        wall_s = time.perf_counter() - started
        if golden is None:
            golden = run_golden(self.program.model, image)
        layers = ({name: describe_mismatch(name, golden.outputs[name], tensors[name])
                   for name in golden.outputs} if check_layers else {})
        # this inference's own bytes: its image (sent earlier when preloaded), INFER, the
        # status and the result; not the next image's upload, which is the next one's
        next_upload = self._preloaded[1] if self._preloaded is not None else (0, 0)
        end = self._wire()
        return InferenceReport(
            image=index, device_cycles=status["cycles"], steps=status["steps_done"],
            link_bytes_sent=end[0] - wire[0] - next_upload[0] + sent_before,
            link_bytes_received=end[1] - wire[1] - next_upload[1] + received_before,
            status_polls=self.polls, status_poll_bytes=self.poll_bytes,
            overlapped_link_bytes=overlapped,
            memory_reads=status["memory_reads"], memory_writes=status["memory_writes"],
            wall_s=wall_s, layers=layers,
            logits=[int(v) for v in logits.reshape(-1).tolist()],
            golden_logits=[int(v) for v in golden.logits.reshape(-1).tolist()])


def local_board_memory(program: LayerProgram) -> int:
    """Memory for a fresh local board (simulated or reference) to run ``program``: its memory
    image rounded up to a power of two (at least 64 KiB), so boards for similar models share one
    simulator build."""
    needed = build_memory_image(program, 1 << 32).total_bytes
    return max(1 << 16, 1 << (needed - 1).bit_length())


def run_resident(program: LayerProgram, images, transport: str = "resident-ref", *,
                 check_layers: bool = False, faults: float = 0.0, fault_seed: int = 0,
                 timeout_s: float | None = None, retries: int | None = None,
                 progress: bool = True) -> ResidentRunReport:
    """Open ``transport`` (a spec; :func:`~psconv.firmware.driver.open_link`), load ``program``
    once, run each int8 CHW image of ``images`` through it and return the report (what
    ``psconv run --mode resident`` prints)."""
    from tqdm import tqdm

    link = open_link(transport, program.config, faults=faults, fault_seed=fault_seed,
                     timeout_s=timeout_s, retries=retries,
                     memory_bytes=local_board_memory(program) if transport in LOCAL_BOARDS else 0)
    started = time.perf_counter()
    # a simulated board computes thousands of times slower than a real one
    driver = ResidentDriver(link.transport, program, timeout_s=link.timeout_s, retries=link.retries,
                            infer_timeout_s=(LOCAL_BOARD_INFER_TIMEOUT_S if transport in LOCAL_BOARDS
                                             else DEFAULT_INFER_TIMEOUT_S))
    try:
        image = driver.build_image()
        load = driver.load(image, progress=progress)
        report = ResidentRunReport(model=f"{program.model.arch} {program.model.family_name}",
                                   transport=transport, load=load, memory_map=image.memory_map(),
                                   memory_summary=image.summary())
        images = list(images)
        for k, x in enumerate(tqdm(images, desc="images", unit="image",
                                   disable=None if progress else True, leave=False)):
            following = images[k + 1] if k + 1 < len(images) else None
            report.inferences.append(driver.infer(x, check_layers=check_layers,
                                                  next_image=following))
    finally:
        link.transport.close()
    report.link_summary = driver.link.stats.summary()
    report.link_stats = driver.link.stats
    report.faults_injected, report.fault_summary = link.fault_summary()
    report.wall_s = time.perf_counter() - started
    return report
