"""Accuracy benchmark: float to int8 to board, on real images (scikit-learn's 8x8 digits).

For each family (default: PS4_P8 and the dense baseline, both width 2, the widest ResNet18 the
iCEBreaker's engine holds): train with the digits recipe (:data:`~psconv.nn.train.DIGITS_RECIPE`,
seeded), quantize with calibration on train-split images only, then classify the held-out test
split with the float network, the int8 golden model and each board's engine on the simulated
board (its gateware in Verilator behind the wire protocol), counting images where board and
golden model differ anywhere. Parameters and MACs are per 3x8x8 image
(:func:`~psconv.nn.stats.model_stats`: nonzero parameters, effective MACs on kept taps).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from psconv.outputs import output_folder

from .results import DEFAULT_RESULTS, write_results

DEFAULT_FAMILIES = ("PS4_P8", "dense")
DEFAULT_BOARDS = ("icebreaker", "ulx3s-85f")
DEFAULT_WIDTH = 2
DEFAULT_CALIBRATION_IMAGES = 256


def measure_family(family: str, width: int, dataset, folder: Path, epochs: int | None,
                   calibration_images: int, images: int | None, boards, progress: bool,
                   log=print) -> dict:
    """Train, quantize and evaluate one family; the table row (evaluation JSONs in ``folder``)."""
    from psconv.nn.evaluate import evaluate
    from psconv.nn.quantize import quantize_resnet
    from psconv.nn.stats import model_stats
    from psconv.nn.train import TrainSpec, load_checkpoint, masked_nonzeros, recipe_for, train
    from psconv.rtl_gen.boards import get_board

    spec = TrainSpec(arch="resnet18", family=family, width=width, dataset=dataset.name,
                     image_size=dataset.image_size, num_classes=dataset.num_classes,
                     recipe=recipe_for(dataset.name, epochs=epochs))
    info = train(spec, dataset, folder, progress=progress, device="cpu", log=log)
    model = load_checkpoint(folder / "model.pt", family, width)
    stats = model_stats(model, tuple(dataset.test_images.shape[1:]))
    quantized = quantize_resnet(model, dataset.train_images[:calibration_images], family)
    quantized.save(folder / "model.npz")
    count = len(dataset.test_labels) if images is None else min(images, len(dataset.test_labels))
    test_images, test_labels = dataset.test_images[:count], dataset.test_labels[:count]
    row = {"family": family, "width": width, "parameters": stats["nonzero_parameters"],
           "macs": stats["effective_macs"], "epochs": spec.recipe.epochs,
           "train_s": round(info["train_seconds"], 1), "images": count,
           "masked_nonzeros": masked_nonzeros(model)}
    result = evaluate(test_images, test_labels, model, quantized, progress=progress)
    row.update(float_acc=100 * result["float_accuracy"], int8_acc=100 * result["int8_accuracy"],
               float_int8_disagree=result["float_int8_disagreements"])
    (folder / "evaluate.json").write_text(json.dumps(result, indent=1))
    for board in boards:
        started = time.perf_counter()
        on_board = evaluate(test_images, test_labels, None, quantized,
                            get_board(board).engine_config(), "sim", progress=progress)
        (folder / f"evaluate_{board}.json").write_text(json.dumps(on_board, indent=1))
        row[f"{board}_acc"] = 100 * on_board["board_accuracy"]
        row[f"{board}_mismatches"] = on_board["board_golden_mismatches"]
        row[f"{board}_s"] = round(time.perf_counter() - started, 1)
        log(f"{family}: {board} {row[f'{board}_acc']:.2f} %, "
            f"{row[f'{board}_mismatches']} images differ from the golden model")
    return row


def run(families=DEFAULT_FAMILIES, width: int = DEFAULT_WIDTH, epochs: int | None = None,
        calibration_images: int = DEFAULT_CALIBRATION_IMAGES, images: int | None = None,
        boards=DEFAULT_BOARDS, outdir=None, progress: bool = True) -> Path:
    from psconv.families import family_by_name
    from psconv.nn.datasets import load_digits_dataset
    from psconv.nn.models import check_width

    check_width(width)
    for family in families:
        family_by_name(family)
    if boards:
        from psconv.rtl_gen.boards import get_board

        for board in boards:
            get_board(board)
    dataset = load_digits_dataset()
    folder = Path(outdir) if outdir else DEFAULT_RESULTS / "accuracy"
    rows = [measure_family(family, width, dataset, folder / family, epochs, calibration_images,
                           images, boards, progress, log=lambda s: print(s, flush=True))
            for family in families]

    def plot(path):
        import matplotlib.pyplot as plt

        paths = [("float_acc", "float"), ("int8_acc", "int8 golden")] + [
            (f"{b}_acc", f"{b} (sim)") for b in boards]
        fig, ax = plt.subplots(figsize=(7, 4))
        bar = 0.8 / len(paths)
        for k, (key, label) in enumerate(paths):
            xs = [i + k * bar for i in range(len(rows))]
            ax.bar(xs, [r[key] for r in rows], bar, label=label)
            for x, r in zip(xs, rows):
                ax.text(x, r[key] + 0.1, f"{r[key]:.1f}", ha="center", fontsize=7, rotation=90)
        ax.set_xticks([i + 0.4 - bar / 2 for i in range(len(rows))],
                      [f"{r['family']} w{r['width']}\n{r['parameters']:,} params, "
                       f"{r['macs']:,} MACs" for r in rows])
        low = min(r[key] for r in rows for key, _ in paths)
        ax.set_ylim(max(0.0, low - 5), 100.5)
        ax.set_ylabel(f"top-1 accuracy, % of {rows[0]['images']} test images")
        ax.set_title("ResNet18 on 8x8 digits: float, int8, board")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    summary = {
        "data": f"scikit-learn digits, {len(dataset.train_labels)} train / "
                f"{len(dataset.test_labels)} test images (fixed seeded split), 8x8 replicated "
                f"to 3 channels",
        "targets": "float >= 95 %, int8 within 1 point of float, board == golden on every image",
        "board/golden mismatches": sum(r.get(f"{b}_mismatches", 0) for r in rows for b in boards),
    }
    return write_results("accuracy", rows, folder, summary, plot)


def register(benches) -> None:
    from psconv.nn.models import MAX_WIDTH
    from psconv.nn.train import add_threads_argument

    parser = benches.add_parser("accuracy", help="digits: train, quantize, float/int8/board accuracy",
                                description="Train a width-2 ResNet18 per family on "
                                "scikit-learn's 8x8 digits with the seeded digits recipe, "
                                "quantize it with calibration on train images only, and classify "
                                "the 450 held-out test images with the float network, the int8 "
                                "golden model and each board's engine on the simulated board, "
                                "counting images where board and golden model differ. Writes "
                                "the table, JSON and a plot to results/accuracy/.")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), metavar="FAMILY",
                        help=f"families to train (default: {' '.join(DEFAULT_FAMILIES)})")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                        help=f"ResNet18 base width, 1..{MAX_WIDTH} (default: %(default)s; the "
                             f"iCEBreaker's engine holds at most 2)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the digits recipe's)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="train-split images calibrating the int8 activation "
                                          "scales (default: %(default)s)")
    parser.add_argument("--images", type=int, metavar="N",
                        help="evaluate the first N test images (default: all 450)")
    parser.add_argument("--boards", nargs="*", default=list(DEFAULT_BOARDS), metavar="BOARD",
                        help=f"boards whose engines run the test images on the simulated board; "
                             f"none for golden only (default: {' '.join(DEFAULT_BOARDS)})")
    add_threads_argument(parser)
    parser.add_argument("--out", type=output_folder("--out"),
                        help="results folder (default results/accuracy)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_args)


def _run_args(args) -> int:
    from psconv.nn.evaluate import check_counts
    from psconv.nn.train import set_threads

    set_threads(args.threads)
    check_counts(args.images, args.calibration_images)
    run(args.families, args.width, args.epochs, args.calibration_images, args.images,
        args.boards, args.out, progress=not args.no_progress)
    return 0
