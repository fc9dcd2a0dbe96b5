"""``psconv import FILE.py:FACTORY``: a user's PyTorch network to the quantized-model file."""

from __future__ import annotations

from pathlib import Path

from psconv.outputs import output_file

from .engine_choice import add_engine_arguments, engine_config_from_args
from .quantize import add_calibration_arguments, calibration_images


def register(subparsers) -> None:
    from psconv.nn.default import DEFAULT_SEED

    parser = subparsers.add_parser(
        "import", help="import your own PyTorch network (FILE.py:FACTORY) to a model file",
        description="Trace the nn.Module that FACTORY() in FILE.py returns with torch.fx, fold "
                    "BatchNorm, calibrate and quantize it exactly as `psconv quantize` does the "
                    "built-in ResNet18, and write the same quantized model (.npz) every other "
                    "command reads. Supported: Conv2d and PeriodicSparseConv2d (3x3 padding 1 "
                    "or 1x1 padding 0, stride 1 or 2), BatchNorm2d, ReLU, residual add, global "
                    "average pooling, flatten, one final Linear. A plain 3x3 Conv2d whose zeros "
                    "follow a known pattern family runs as that family, otherwise dense. "
                    "2x2 stride-2 max pooling runs resident in the board's memory, streamed "
                    "in the engine's output max pool (after a convolution without a residual). "
                    "Anything else is refused naming the graph node. Prints one line per layer.")
    parser.add_argument("model", metavar="FILE.py:FACTORY",
                        help="a Python file and the name of a function in it that returns an "
                             "nn.Module (called with no arguments)")
    parser.add_argument("-o", "--out", required=True, type=output_file("-o/--out"),
                        help="output file (.npz)")
    parser.add_argument("--checkpoint", help="state_dict (.pt) to load into the module")
    add_calibration_arguments(parser)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the synthetic calibration images (default: %(default)s, "
                             "as `psconv quantize`)")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from psconv.nn.importer import import_model, load_factory, load_state, summary_lines

    model, factory = load_factory(args.model)
    if args.checkpoint:
        load_state(model, args.checkpoint)
    images = calibration_images(args, args.seed)
    quantized, layers = import_model(model, images, engine_config_from_args(args), factory)
    print("\n".join(summary_lines(quantized, layers)))
    path = quantized.save(Path(args.out))
    print(f"wrote {path}: {quantized.arch} {quantized.family_name}, {len(quantized.layers)} layers, "
          f"input {'x'.join(str(n) for n in quantized.input_shape)}, "
          f"input scale {quantized.input_scale:.5f}")
    return 0
