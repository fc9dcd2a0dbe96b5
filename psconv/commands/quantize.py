"""``psconv quantize``: build or load a ResNet18, fold BatchNorm, calibrate, export a model file."""

from __future__ import annotations

from pathlib import Path

import torch

from psconv.errors import PsconvError
from psconv.outputs import output_file


def register(subparsers) -> None:
    from psconv.nn.cifar import MAX_IMAGE_SIZE
    from psconv.nn.default import (DEFAULT_CALIBRATION_IMAGES, DEFAULT_FAMILY,
                                   DEFAULT_IMAGE_SIZE, DEFAULT_SEED, DEFAULT_WIDTH)
    from psconv.nn.models import MAX_WIDTH

    parser = subparsers.add_parser(
        "quantize", help="quantize a periodic-sparse ResNet18 to a model file",
        description="Fold BatchNorm, calibrate int8 activation scales and write the versioned "
                    "quantized model (.npz) that `psconv golden`, the compiler and the driver read. "
                    "Without --checkpoint the seeded embedded-default network is used; with the "
                    "default --seed and --calibration-images that is exactly the embedded default "
                    "of `psconv golden`, `run` and `demo` with the same --family, --width and "
                    "--image-size.")
    parser.add_argument("-o", "--out", required=True, type=output_file("-o/--out"),
                        help="output file (.npz)")
    parser.add_argument("--family", default=DEFAULT_FAMILY,
                        help="pattern family, e.g. PS4_P8, PSD1_P16, dense (default: %(default)s)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                        help=f"ResNet18 base width, 1..{MAX_WIDTH} ({MAX_WIDTH} = full; "
                             f"default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, metavar="N",
                        help=f"side of the square input images, 1..{MAX_IMAGE_SIZE}: the seeded "
                             f"statistics and calibration images are drawn at that size (not "
                             f"downsampled) and the "
                             f"file records it as the model's input shape (default: %(default)s, "
                             f"CIFAR-10's; --cifar needs {DEFAULT_IMAGE_SIZE}); e.g. 8 with "
                             f"--width 2 for the iCEBreaker engine")
    parser.add_argument("--checkpoint", help="state_dict (.pt) of psconv's resnet18_cifar with this family/width")
    parser.add_argument("--cifar", help="CIFAR-10 python-format directory for calibration images")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="images to calibrate activation scales on (default: "
                                          "%(default)s, as the embedded default)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the embedded-default network and of the synthetic "
                             "calibration images (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from psconv.families import family_by_name
    from psconv.nn.cifar import IMAGE_SIZE, check_image_size, load_cifar10
    from psconv.nn.default import calibration_batch, seeded_resnet18
    from psconv.nn.models import check_width, resnet18_cifar
    from psconv.nn.quantize import quantize_resnet

    if args.calibration_images < 1:
        raise PsconvError(f"--calibration-images is {args.calibration_images}; allowed: >= 1")
    check_width(args.width)
    check_image_size(args.image_size)
    if args.cifar and args.image_size != IMAGE_SIZE:
        raise PsconvError(f"--image-size is {args.image_size} but CIFAR-10 images (--cifar) are "
                          f"{IMAGE_SIZE}x{IMAGE_SIZE}; allowed with --cifar: {IMAGE_SIZE}")
    if args.checkpoint:
        model = resnet18_cifar(family_by_name(args.family), width=args.width)
        try:
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:    # torch.load raises many types for a file that is not a checkpoint
            raise PsconvError(f"cannot read checkpoint {args.checkpoint} as a PyTorch state dict: "
                              f"{type(e).__name__}: {e}") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PsconvError(f"checkpoint {args.checkpoint} does not match resnet18_cifar("
                              f"{args.family}, width={args.width}): missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
        model.eval()
    else:
        model = seeded_resnet18(args.family, args.width, args.seed, image_size=args.image_size)
    if args.cifar:
        images = load_cifar10(args.cifar, train=True)[0][:args.calibration_images]
    else:
        images = calibration_batch(args.calibration_images, args.seed, args.image_size)
    quantized = quantize_resnet(model, images, args.family)
    path = quantized.save(Path(args.out))
    print(f"wrote {path}: {quantized.arch} {quantized.family_name}, {len(quantized.layers)} layers, "
          f"input {'x'.join(str(n) for n in quantized.input_shape)}, "
          f"input scale {quantized.input_scale:.5f}")
    return 0
