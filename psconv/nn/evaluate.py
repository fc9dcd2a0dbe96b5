"""Accuracy of a network on labelled images three ways: float, int8 golden model, board.

* float: the PyTorch network in eval mode (:func:`~psconv.nn.train.predict`);
* int8: each image quantized with the model's input scale and run through the integer golden
  model (:func:`~psconv.sim.golden.network.run_golden`);
* board: the same int8 image through a board or the simulated board with
  :class:`~psconv.firmware.driver.Driver` on one transport opened once for all images. The
  driver compares every layer's output and the logits with the golden model element for
  element; an image counts as a *board/golden mismatch* if anything differs, and
  :func:`evaluate` also compares the board's logits with the golden logits itself.

Top-1 is ``argmax`` of the logits (the first maximum on ties), the same rule for all three.
"""

from __future__ import annotations

import time

import torch

from psconv.qmodel import QuantizedModel

from .cifar import NUM_CLASSES


def check_counts(images: int | None, calibration_images: int) -> None:
    """``--images`` (``None``: the whole split) and ``--calibration-images``: integers >= 1."""
    from psconv.errors import PsconvError

    for option, value in (("--images", images), ("--calibration-images", calibration_images)):
        if value is not None and value < 1:
            raise PsconvError(f"{option} is {value}; allowed: an integer >= 1")


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int) -> list[list[int]]:
    """``m[true][predicted]`` counts."""
    counts = torch.bincount(labels * classes + predictions, minlength=classes * classes)
    return counts.view(classes, classes).tolist()


def accuracy(labels: torch.Tensor, predictions: torch.Tensor) -> float:
    return float((labels == predictions).float().mean())


class BoardSession:
    """One transport to a board (``spec``: ``sim`` or a serial/tcp spec) running ``program``;
    :meth:`run` takes one int8 image and the golden result and returns the driver's report."""

    def __init__(self, program, spec: str):
        from psconv.firmware.driver import Driver, open_transport

        self.program = program
        self.link = open_transport(spec, program.config)
        self.driver = Driver(self.link, program.config)

    def run(self, image: torch.Tensor, golden):
        return self.driver.run_program(self.program, image, progress=False, golden=golden)

    def close(self) -> None:
        self.link.close()


def evaluate(images: torch.Tensor, labels: torch.Tensor, float_model=None,
             quantized: QuantizedModel | None = None, engine_config=None,
             transport: str | None = None, progress: bool = True,
             classes: int = NUM_CLASSES) -> dict:
    """Accuracies of the float network (if given), the int8 golden model (if ``quantized``) and
    the board (if ``transport`` and ``engine_config``) on ``images``/``labels`` (0 ..
    ``classes - 1``).

    Returns ``images``, ``float_accuracy``, ``int8_accuracy``, ``board_accuracy`` (``None``
    where not run), ``board_golden_mismatches`` (images on which the board differs from the
    golden model anywhere), ``float_int8_disagreements`` (top-1), the first mismatch message,
    ``confusion`` (per path) and ``seconds`` (per path).
    """
    from tqdm import tqdm

    from psconv.sim.golden.network import run_golden
    from psconv.sim.golden.ops import quantize_input

    from .train import predict

    result = {"images": len(labels), "float_accuracy": None, "int8_accuracy": None,
              "board_accuracy": None, "board_golden_mismatches": None,
              "float_int8_disagreements": None, "first_board_mismatch": None,
              "confusion": {}, "seconds": {}}
    predictions = {}
    if float_model is not None:
        started = time.perf_counter()
        predictions["float"] = predict(float_model, images)
        result["seconds"]["float"] = time.perf_counter() - started
    if quantized is not None:
        session = None
        if transport is not None:
            from psconv.firmware.compiler import compile_model

            session = BoardSession(compile_model(quantized, engine_config), transport)
        golden_top, board_top, mismatches = [], [], 0
        seconds = {"int8": 0.0, "board": 0.0}
        try:
            for image in tqdm(images, desc="int8" if session is None else "int8 + board",
                              unit="image", disable=None if progress else True, leave=False):
                started = time.perf_counter()
                image_q = quantize_input(image, quantized.input_scale)
                golden = run_golden(quantized, image_q)
                golden_top.append(int(torch.argmax(golden.logits)))
                seconds["int8"] += time.perf_counter() - started
                if session is None:
                    continue
                started = time.perf_counter()
                report = session.run(image_q, golden)
                logits = torch.tensor(report.logits, dtype=torch.int64)
                board_top.append(int(torch.argmax(logits)))
                if not report.bit_exact or not torch.equal(logits, golden.logits.reshape(-1)):
                    mismatches += 1
                    result["first_board_mismatch"] = (result["first_board_mismatch"]
                                                      or report.first_mismatch or "logits differ")
                seconds["board"] += time.perf_counter() - started
        finally:
            if session is not None:
                session.close()
        predictions["int8"] = torch.tensor(golden_top, dtype=torch.int64)
        result["seconds"]["int8"] = seconds["int8"]
        if session is not None:
            predictions["board"] = torch.tensor(board_top, dtype=torch.int64)
            result["board_golden_mismatches"] = mismatches
            result["seconds"]["board"] = seconds["board"]
            result["transport"] = transport
    for path, top in predictions.items():
        result[f"{path}_accuracy"] = accuracy(labels, top)
        result["confusion"][path] = confusion_matrix(labels, top, classes)
    if "float" in predictions and "int8" in predictions:
        result["float_int8_disagreements"] = int((predictions["float"] != predictions["int8"]).sum())
    return result


def plot_confusion(result: dict, path, title: str = "") -> None:
    """One confusion-matrix panel per path evaluated (float, int8, board) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = list(result["confusion"])
    fig, axes = plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 4.2), squeeze=False)
    for ax, name in zip(axes[0], paths):
        matrix = torch.tensor(result["confusion"][name])
        ax.imshow(matrix.tolist(), cmap="Blues")
        for (t, p), count in zip(torch.cartesian_prod(torch.arange(len(matrix)),
                                                      torch.arange(len(matrix))).tolist(),
                                 matrix.reshape(-1).tolist()):
            if count:
                ax.text(p, t, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > matrix.max() / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: {100 * result[f'{name}_accuracy']:.2f} %")
        ax.set_xticks(range(len(matrix)))
        ax.set_yticks(range(len(matrix)))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
