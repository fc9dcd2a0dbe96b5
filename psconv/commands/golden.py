"""``psconv golden``: run the integer golden model and print per-layer shapes, nonzeros, checksums."""

from __future__ import annotations

import json

import torch

from psconv.errors import PsconvError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "golden", help="run the integer golden model on a quantized ResNet18",
        description="Run the pure-integer golden model on one image and print every layer's "
                    "shape, nonzero count and checksum, then the logits. Without --model it uses "
                    "the embedded default: a seeded PSD1_P16 ResNet18 and a seeded input.")
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the default input image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def add_model_arguments(parser) -> None:
    """--model FILE, or the embedded default's --family/--width (read by :func:`load_or_default`)."""
    from psconv.nn.default import DEFAULT_FAMILY, DEFAULT_WIDTH
    from psconv.nn.models import MAX_WIDTH

    parser.add_argument("--model", help="quantized model file (.npz from `psconv quantize`)")
    parser.add_argument("--family", default=None,
                        help=f"family of the embedded default (default {DEFAULT_FAMILY})")
    parser.add_argument("--width", type=int, default=None,
                        help=f"base width of the embedded default ResNet18, 1..{MAX_WIDTH} "
                             f"(default {DEFAULT_WIDTH}; {MAX_WIDTH} is full)")


def load_or_default(args):
    """The quantized model the user named, or the embedded default."""
    from psconv.nn.default import DEFAULT_FAMILY, DEFAULT_WIDTH, default_quantized_model
    from psconv.nn.models import check_width
    from psconv.qmodel import QuantizedModel

    if args.model:
        if args.family or args.width is not None:
            raise PsconvError("--family/--width describe the embedded default; they cannot be "
                              "combined with --model")
        return QuantizedModel.load(args.model)
    width = DEFAULT_WIDTH if args.width is None else args.width
    check_width(width)
    return default_quantized_model(args.family or DEFAULT_FAMILY, width)


def run(args) -> int:
    from psconv.nn.default import default_images
    from psconv.sim.golden.network import checksum, run_golden
    from psconv.sim.golden.ops import quantize_input

    model = load_or_default(args)
    image = quantize_input(default_images(1, seed=1000 + args.seed)[0], model.input_scale)
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
    print(f"golden model: {model.arch} {model.family_name}, input 3x32x32 int8 "
          f"(scale {model.input_scale:.5f}), {len(model.conv_layers)} conv layers")
    print(f"{'layer':<20} {'op':<8} {'shape':<14} {'nonzeros':>10} {'checksum':>12}")
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"])
        print(f"{row['layer']:<20} {row['op']:<8} {shape:<14} "
              f"{row['nonzeros']:>6}/{row['elements']:<6} {row['checksum']:>10}")
    print(f"logits: {result.logits.tolist()}")
    print(f"prediction: class {result.prediction}")
    return 0
