"""``psconv golden``: run the integer golden model and print per-layer shapes, nonzeros, checksums."""

from __future__ import annotations

import json

import torch

from psconv.errors import PsconvError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "golden", help="run the integer golden model on a quantized ResNet18 or VGG16",
        description="Run the pure-integer golden model on one image and print every layer's "
                    "shape, nonzero count and checksum, then the logits. Without --model it uses "
                    "the embedded default: a seeded PSD1_P16 ResNet18 (--network vgg16: VGG16) "
                    "and a seeded input (32x32, or --image-size; with --model, the size the "
                    "file records).")
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the default input image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def add_model_arguments(parser) -> None:
    """--model FILE, or the embedded default's --network/--family/--width/--image-size (read by
    :func:`load_or_default`)."""
    from psconv.nn.cifar import MAX_IMAGE_SIZE
    from psconv.nn.default import DEFAULT_FAMILY, DEFAULT_IMAGE_SIZE, DEFAULT_WIDTH
    from psconv.nn.models import MAX_WIDTH

    parser.add_argument("--model", help="quantized model file (.npz from `psconv quantize`; "
                                        "it records its input size)")
    add_network_argument(parser)
    parser.add_argument("--family", default=None,
                        help=f"family of the embedded default (default {DEFAULT_FAMILY})")
    parser.add_argument("--width", type=int, default=None,
                        help=f"width of the embedded default, 1..{MAX_WIDTH}: ResNet18's base "
                             f"width, VGG16's channels x WIDTH/64 (default {DEFAULT_WIDTH}, or "
                             f"for `run` the largest its engine holds; {MAX_WIDTH} is full)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help=f"side of the embedded default's seeded square images, "
                             f"1..{MAX_IMAGE_SIZE} (default {DEFAULT_IMAGE_SIZE}, CIFAR-10's, or "
                             f"for `run` the largest its engine holds); "
                             f"the pixels are drawn at that size, not downsampled, and the "
                             f"network's statistics and calibration use the same size")


def add_network_argument(parser) -> None:
    """--network: the built-in architecture of the embedded default (or of ``quantize``)."""
    from psconv.nn.default import DEFAULT_ARCH, NETWORKS

    parser.add_argument("--network", choices=NETWORKS, default=None,
                        help=f"built-in network: resnet18, or vgg16 (five 2x2 max pools; "
                             f"images of at least 32x32) "
                             f"(default: {DEFAULT_ARCH})")


def load_or_default(args, config=None):
    """The quantized model the user named, or the embedded default.

    With an engine ``config`` (``psconv run``), a default width or image size the user left out
    becomes the largest that fits the engine (:func:`psconv.nn.default.fitting_default`) and a
    line on stdout says what was chosen and why; values the user gave that do not fit end in the
    compiler's one-line error (layer, value, limit) plus the largest default that does fit.
    """
    from psconv.families import family_by_name
    from psconv.nn.cifar import check_image_size
    from psconv.nn.default import (DEFAULT_ARCH, DEFAULT_FAMILY, DEFAULT_IMAGE_SIZE,
                                   DEFAULT_WIDTH, default_quantized_model, fitting_default)
    from psconv.nn.models import check_image_size_for, check_width
    from psconv.qmodel import QuantizedModel

    image_size = getattr(args, "image_size", None)
    network = getattr(args, "network", None)
    if args.model:
        if args.family or args.width is not None or image_size is not None or network:
            raise PsconvError("--network/--family/--width/--image-size describe the embedded "
                              "default; they cannot be combined with --model (the file records "
                              "its network and input size)")
        return QuantizedModel.load(args.model)
    arch = network or DEFAULT_ARCH
    family = args.family or DEFAULT_FAMILY
    family_by_name(family)                      # an unknown name is its own error, not a misfit
    if args.width is not None:
        check_width(args.width)
    if image_size is not None:
        check_image_size(image_size)
        check_image_size_for(arch, image_size)
    width = DEFAULT_WIDTH if args.width is None else args.width
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    if config is not None:
        asked = f"width {width} on {size}x{size}"
        try:
            width, size, why = fitting_default(config, family, args.width, image_size, arch)
        except PsconvError as error:
            raise PsconvError(f"{error}{_largest_fit_hint(config, family, arch)}") from None
        if why is not None:
            print(f"psconv {getattr(args, 'command', None) or 'run'}: embedded default: width "
                  f"{width} on {size}x{size} images, the largest this engine holds ({asked} "
                  f"does not: {why}); --width and --image-size choose", flush=True)
    return default_quantized_model(family, width, image_size=size, arch=arch)


def _largest_fit_hint(config, family: str, arch: str) -> str:
    """``"; this engine holds ..."`` naming the largest embedded default ``config`` takes
    (empty if none does)."""
    from psconv.nn.default import fitting_default

    try:
        width, size, _ = fitting_default(config, family, arch=arch)
    except PsconvError:
        return "; no width of the embedded default fits this engine"
    return f"; the largest embedded default this engine holds: --width {width} --image-size {size}"


def run(args) -> int:
    from psconv.nn.default import model_images
    from psconv.sim.golden.network import checksum, run_golden

    model = load_or_default(args)
    image = model_images(model, 1, seed=1000 + args.seed)[0]
    result = run_golden(model, image)
    rows = []
    for layer in model.layers:
        out = result.outputs[layer.name]
        rows.append({"layer": layer.name, "op": layer.op, "shape": list(out.shape),
                     "nonzeros": int((out != 0).sum()), "elements": out.numel(),
                     "checksum": checksum(out)})
    summary = {"arch": model.arch, "family": model.family_name, "layers": rows,
               "logits": result.logits.tolist(), "prediction": result.prediction}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"golden model: {model.arch} {model.family_name}, input "
          f"{'x'.join(str(n) for n in model.input_shape)} int8 "
          f"(scale {model.input_scale:.5f}), {len(model.conv_layers)} conv layers")
    print(f"{'layer':<20} {'op':<8} {'shape':<14} {'nonzeros':>10} {'checksum':>12}")
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"])
        print(f"{row['layer']:<20} {row['op']:<8} {shape:<14} "
              f"{row['nonzeros']:>6}/{row['elements']:<6} {row['checksum']:>10}")
    print(f"logits: {result.logits.tolist()}")
    print(f"prediction: class {result.prediction}")
    return 0
