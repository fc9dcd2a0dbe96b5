"""``psconv quantize``: build or load a ResNet18 or VGG16, fold BatchNorm, calibrate, export a
model file."""

from __future__ import annotations

from pathlib import Path

from psconv.errors import PsconvError
from psconv.outputs import output_file


def register(subparsers) -> None:
    from psconv.nn.default import DEFAULT_FAMILY, DEFAULT_SEED, DEFAULT_WIDTH
    from psconv.nn.models import MAX_WIDTH

    from .golden import add_network_argument

    parser = subparsers.add_parser(
        "quantize", help="quantize a periodic-sparse ResNet18 or VGG16 to a model file",
        description="Fold BatchNorm, calibrate int8 activation scales and write the versioned "
                    "quantized model (.npz) that `psconv golden`, the compiler and the driver read. "
                    "Without --checkpoint the seeded embedded-default network is used; with the "
                    "default --seed and --calibration-images that is exactly the embedded default "
                    "of `psconv golden`, `run` and `demo` with the same --family, --width and "
                    "--image-size. --network vgg16 quantizes VGG16 (13 convolutions, five 2x2 "
                    "max pools, one Linear) the same way.")
    parser.add_argument("-o", "--out", required=True, type=output_file("-o/--out"),
                        help="output file (.npz)")
    add_network_argument(parser)
    parser.add_argument("--family", default=DEFAULT_FAMILY,
                        help="pattern family, e.g. PS4_P8, PSD1_P16, dense (default: %(default)s)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                        help=f"ResNet18 base width, or VGG16's channels x WIDTH/64, "
                             f"1..{MAX_WIDTH} ({MAX_WIDTH} = full; default: %(default)s)")
    parser.add_argument("--checkpoint", help="state_dict (.pt) of psconv's --network with this "
                                             "family/width (a `psconv train` model.pt)")
    add_calibration_arguments(parser)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the embedded-default network and of the synthetic "
                             "calibration images (default: %(default)s)")
    parser.set_defaults(func=run)


def add_calibration_arguments(parser) -> None:
    """--image-size, --cifar, --dataset, --calibration-images: the images a quantizer calibrates
    on (``psconv quantize`` and ``psconv import``); :func:`calibration_images` reads them."""
    from psconv.nn.cifar import MAX_IMAGE_SIZE
    from psconv.nn.datasets import DATASETS
    from psconv.nn.default import DEFAULT_CALIBRATION_IMAGES, DEFAULT_IMAGE_SIZE

    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help=f"side of the square input images, 1..{MAX_IMAGE_SIZE}: the seeded "
                             f"statistics and calibration images are drawn at that size (not "
                             f"downsampled) and the "
                             f"file records it as the model's input shape (default: "
                             f"{DEFAULT_IMAGE_SIZE}, CIFAR-10's, or the size of --dataset's "
                             f"images, which is the only size it allows); e.g. 8 with "
                             f"--width 2 for the iCEBreaker engine (quantize)")
    parser.add_argument("--cifar", help="CIFAR-10 python-format directory for calibration images")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="calibrate on the first --calibration-images images of this data "
                             "set's train split (digits: scikit-learn's 8x8 digits; cifar10: "
                             "needs --cifar) (default: cifar10 with --cifar, else seeded "
                             "synthetic images)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="images to calibrate activation scales on (default: "
                                          "%(default)s, as the embedded default)")


def calibration_images(args, seed: int):
    """The NCHW float images ``args`` (:func:`add_calibration_arguments`) name: the first
    --calibration-images of --dataset's train split, else seeded synthetic ones of ``seed``."""
    from psconv.nn.cifar import check_image_size
    from psconv.nn.datasets import load_dataset, native_image_size
    from psconv.nn.default import DEFAULT_IMAGE_SIZE, calibration_batch

    if args.calibration_images < 1:
        raise PsconvError(f"--calibration-images is {args.calibration_images}; allowed: >= 1")
    dataset = args.dataset or ("cifar10" if args.cifar else None)
    if dataset == "digits" and args.cifar:
        raise PsconvError("--cifar is given with --dataset digits; allowed: --cifar with "
                          "--dataset cifar10 (or without --dataset)")
    image_size = args.image_size
    if dataset is not None:
        native = native_image_size(dataset)
        if image_size is not None and image_size != native:
            source = "CIFAR-10 images (--cifar)" if dataset == "cifar10" else f"{dataset} images"
            option = "--cifar" if dataset == "cifar10" else f"--dataset {dataset}"
            raise PsconvError(f"--image-size is {image_size} but {source} are "
                              f"{native}x{native}; allowed with {option}: {native}")
        return load_dataset(dataset, args.cifar).train_images[:args.calibration_images]
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    check_image_size(image_size)
    return calibration_batch(args.calibration_images, seed, image_size)


def run(args) -> int:
    from psconv.families import family_by_name
    from psconv.nn.default import DEFAULT_ARCH, seeded_network
    from psconv.nn.models import check_image_size_for, check_width
    from psconv.nn.quantize import quantize_network
    from psconv.nn.train import load_checkpoint

    arch = args.network or DEFAULT_ARCH
    check_width(args.width)
    family_by_name(args.family)
    images = calibration_images(args, args.seed)
    check_image_size_for(arch, min(images.shape[-2:]), "the calibration images' side")
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, args.family, args.width, arch)
    else:
        model = seeded_network(arch, args.family, args.width, args.seed,
                               image_size=images.shape[-1])
    quantized = quantize_network(model, images, args.family, arch)
    path = quantized.save(Path(args.out))
    print(f"wrote {path}: {quantized.arch} {quantized.family_name}, {len(quantized.layers)} layers, "
          f"input {'x'.join(str(n) for n in quantized.input_shape)}, "
          f"input scale {quantized.input_scale:.5f}")
    return 0
