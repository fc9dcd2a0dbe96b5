"""``psconv import FILE.py:FACTORY | MODEL.pt2``: a user's PyTorch network to the quantized-model
file."""

from __future__ import annotations

from pathlib import Path

from psconv.errors import PsconvError
from psconv.outputs import output_file

from .engine_choice import add_engine_arguments, engine_config_from_args
from .quantize import add_calibration_arguments, calibration_images


def register(subparsers) -> None:
    from psconv.nn.default import DEFAULT_SEED

    parser = subparsers.add_parser(
        "import", help="import your own PyTorch network (FILE.py:FACTORY or a torch.export "
                       "MODEL.pt2) to a model file",
        description="Fold BatchNorm, calibrate and quantize your network exactly as `psconv "
                    "quantize` does the built-in ResNet18, and write the same quantized model "
                    "(.npz) every other command reads. Two forms: FILE.py:FACTORY traces the "
                    "nn.Module that FACTORY() returns with torch.fx; MODEL.pt2 reads the program "
                    "torch.export.save wrote (exported from an eval-mode model, decomposed or "
                    "not; calibration images take its exported image size). Supported: Conv2d "
                    "and PeriodicSparseConv2d (3x3 padding 1 or 1x1 padding 0, stride 1 or 2), "
                    "BatchNorm2d, ReLU, residual add, 2x2 max pooling at stride 2 (resident: a pass "
                    "of the board's program runner; streamed: the engine's output max pool after "
                    "a convolution without a residual), global average pooling, flatten, one final Linear. A plain "
                    "3x3 Conv2d whose zeros follow a known pattern family runs as that family, "
                    "otherwise dense; in a .pt2 every 3x3 convolution's family is recognised so "
                    "(it holds no modules). Anything else is refused naming the graph node. "
                    "Prints one line per layer.")
    parser.add_argument("model", metavar="FILE.py:FACTORY | MODEL.pt2",
                        help="a Python file and the name of a function in it that returns an "
                             "nn.Module (called with no arguments), or a .pt2 file written by "
                             "torch.export.save(torch.export.export(model, (example,)), ...)")
    parser.add_argument("-o", "--out", required=True, type=output_file("-o/--out"),
                        help="output file (.npz)")
    parser.add_argument("--checkpoint", help="state_dict (.pt) to load into the module "
                                             "(FILE.py:FACTORY only: a .pt2 holds its weights)")
    add_calibration_arguments(parser)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the synthetic calibration images (default: %(default)s, "
                             "as `psconv quantize`)")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from psconv.nn.importer import (import_model, import_program, load_factory, load_state,
                                    summary_lines)

    config = engine_config_from_args(args)
    if args.model.endswith(".pt2"):
        from psconv.nn.export_fold import load_program, program_input_shape

        if args.checkpoint:
            raise PsconvError(f"--checkpoint with {args.model}: a torch.export archive holds its "
                              f"own weights; allowed: load the state dict before exporting, or "
                              f"FILE.py:FACTORY --checkpoint")
        program = load_program(args.model)
        shape = program_input_shape(program)
        if args.image_size is None and args.dataset is None and not args.cifar:
            args.image_size = shape[1]      # the exported size (a wrong one is refused below)
        images = calibration_images(args, args.seed)
        quantized, layers = import_program(program, images, config, Path(args.model).stem)
    else:
        model, factory = load_factory(args.model)
        if args.checkpoint:
            load_state(model, args.checkpoint)
        images = calibration_images(args, args.seed)
        quantized, layers = import_model(model, images, config, factory)
    print("\n".join(summary_lines(quantized, layers)))
    path = quantized.save(Path(args.out))
    print(f"wrote {path}: {quantized.arch} {quantized.family_name}, {len(quantized.layers)} layers, "
          f"input {'x'.join(str(n) for n in quantized.input_shape)}, "
          f"input scale {quantized.input_scale:.5f}")
    return 0
