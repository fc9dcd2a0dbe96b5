"""``psconv evaluate``: accuracy of a checkpoint and/or quantized model on a data set's test
split: float, int8 golden model and (with ``--transport``) the board or simulated board."""

from __future__ import annotations

import json
from pathlib import Path

from psconv.errors import PsconvError
from psconv.outputs import output_file

from .engine_choice import add_engine_arguments, engine_config_from_args


def register(subparsers) -> None:
    from psconv.nn.datasets import add_dataset_arguments
    from psconv.nn.default import DEFAULT_CALIBRATION_IMAGES
    from psconv.nn.models import MAX_WIDTH
    from psconv.nn.train import add_threads_argument

    parser = subparsers.add_parser(
        "evaluate", help="accuracy: float, int8 golden model and board, on a test split",
        description="Top-1 accuracy on the test split of a data set: the float network of "
                    "--checkpoint, the int8 golden model (the --model file, or --checkpoint "
                    "quantized with calibration on the train split), and with --transport the "
                    "board or simulated board, counting the images on which the board differs "
                    "from the golden model anywhere (must be 0). --arch, --family and --width "
                    "(and --dataset) default to the train.json that `psconv train` wrote next to "
                    "the checkpoint.")
    parser.add_argument("--checkpoint", metavar="FILE.pt",
                        help="state dict (model.pt of `psconv train`) of the float network")
    parser.add_argument("--model", metavar="FILE.npz",
                        help="quantized model file (`psconv quantize`); default: --checkpoint "
                             "quantized here (resnet18 only)")
    add_dataset_arguments(parser)
    parser.add_argument("--arch", choices=("resnet18", "vgg16"),
                        help="network of --checkpoint (default: train.json's, else resnet18)")
    parser.add_argument("--family", help="pattern family of --checkpoint (default: train.json's)")
    parser.add_argument("--width", type=int,
                        help=f"width of --checkpoint, 1..{MAX_WIDTH} (default: train.json's)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="train-split images that calibrate the activation "
                                          "scales when quantizing --checkpoint (default: "
                                          "%(default)s)")
    parser.add_argument("--images", type=int, metavar="N",
                        help="evaluate only the first N test images (default: all)")
    parser.add_argument("--transport", metavar="SPEC",
                        help="also run every image on the board: sim (the simulated board), "
                             "serial:/dev/ttyUSB0[@baud] or tcp:HOST:PORT (default: no board)")
    add_engine_arguments(parser)
    parser.add_argument("--json", metavar="FILE", type=output_file("--json"),
                        help="write the results as JSON")
    parser.add_argument("--confusion", metavar="FILE.png", type=output_file("--confusion"),
                        help="plot the confusion matrix of each path evaluated")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _network_settings(args) -> dict:
    """arch/family/width (and the data set, unless --dataset or --cifar name one): the options
    given, else train.json beside the checkpoint."""
    from psconv.nn.train import INFO_FILE, read_info

    settings = {"arch": args.arch, "family": args.family, "width": args.width}
    info_path = Path(args.checkpoint).parent / INFO_FILE
    info = read_info(info_path.parent) if info_path.is_file() else {}
    for key in settings:
        if settings[key] is None:
            settings[key] = info.get(key)
    if settings["arch"] is None:
        settings["arch"] = "resnet18"
    if args.dataset is None and not args.cifar:
        args.dataset = info.get("dataset")
    missing = [f"--{k}" for k in ("family", "width") if settings[k] is None]
    if missing:
        raise PsconvError(f"{' and '.join(missing)} needed: {args.checkpoint} has no {INFO_FILE} "
                          f"beside it to read them from")
    return settings


def run(args) -> int:
    from psconv.nn.datasets import dataset_from_args
    from psconv.nn.evaluate import check_counts, evaluate, plot_confusion
    from psconv.nn.models import check_width
    from psconv.nn.quantize import quantize_resnet
    from psconv.nn.train import load_checkpoint, set_threads
    from psconv.qmodel import QuantizedModel

    if not args.checkpoint and not args.model:
        raise PsconvError("nothing to evaluate: give --checkpoint FILE.pt and/or --model FILE.npz")
    check_counts(args.images, args.calibration_images)
    set_threads(args.threads)
    if args.transport is None and (args.board or args.config):
        raise PsconvError("--board/--config name the board's engine; add --transport (e.g. sim) "
                          "to run on it")
    float_model = quantized = settings = None
    if args.checkpoint:
        settings = _network_settings(args)
        check_width(settings["width"])
    dataset = dataset_from_args(args)
    if args.checkpoint:
        float_model = load_checkpoint(args.checkpoint, settings["family"], settings["width"],
                                      settings["arch"], dataset.num_classes)
    if args.model:
        quantized = QuantizedModel.load(args.model)
    elif settings is not None and settings["arch"] == "resnet18":
        quantized = quantize_resnet(float_model,
                                    dataset.train_images[:args.calibration_images],
                                    settings["family"])
    if quantized is not None and tuple(quantized.input_shape) != tuple(dataset.test_images.shape[1:]):
        raise PsconvError(f"the quantized model takes {'x'.join(map(str, quantized.input_shape))} "
                          f"images; {dataset.name} images are "
                          f"{'x'.join(map(str, dataset.test_images.shape[1:]))}")
    if args.transport is not None and quantized is None:
        raise PsconvError("--transport needs an int8 model: --model, or a resnet18 --checkpoint")
    count = len(dataset.test_labels) if args.images is None else min(args.images,
                                                                      len(dataset.test_labels))
    images, labels = dataset.test_images[:count], dataset.test_labels[:count]
    config = engine_config_from_args(args) if args.transport is not None else None
    where = f", board {args.board or args.config or 'default engine'} over {args.transport}" \
        if args.transport else ""
    print(f"psconv evaluate: {count} {dataset.name} test images{where}", flush=True)
    result = evaluate(images, labels, float_model, quantized, config, args.transport,
                      progress=not args.no_progress, classes=dataset.num_classes)
    result.update({"dataset": dataset.name, "checkpoint": args.checkpoint, "model": args.model,
                   "network": settings, "board": args.board or args.config})
    for path in ("float", "int8", "board"):
        if result[f"{path}_accuracy"] is not None:
            print(f"{path:>5} accuracy: {100 * result[f'{path}_accuracy']:.2f} % "
                  f"({result['seconds'][path]:.1f} s)")
    if result["float_int8_disagreements"] is not None:
        print(f"float/int8 top-1 disagreements: {result['float_int8_disagreements']} of {count}")
    if result["board_golden_mismatches"] is not None:
        print(f"board/golden mismatches: {result['board_golden_mismatches']} of {count} images"
              + (f" (first: {result['first_board_mismatch']})"
                 if result["first_board_mismatch"] else " (bit-exact on every image)"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.confusion:
        Path(args.confusion).parent.mkdir(parents=True, exist_ok=True)
        plot_confusion(result, args.confusion, f"{dataset.name}, {count} test images")
    return 1 if result["board_golden_mismatches"] else 0
