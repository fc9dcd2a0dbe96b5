"""``psconv train``: train a periodic-sparse ResNet18 or VGG16 on CIFAR-10 or the digits."""

from __future__ import annotations

from psconv.outputs import output_folder

DEFAULT_WIDTHS = {"cifar10": 64, "digits": 2}
"""Per data set: the paper's full network for CIFAR-10; for the digits the widest ResNet18 every
board engine holds (the iCEBreaker's: 16 channels in layer4)."""
DEFAULT_FAMILIES = {"cifar10": "PSD1_P16", "digits": "PS4_P8"}
"""Per data set: the paper's headline family for CIFAR-10; for the width-2 digits network
PS4_P8 (4 of 9 taps), as PSD1_P16's one-tap kernels leave a 2..16-channel network at 94.9 %
(docs/accuracy.md)."""


def register(subparsers) -> None:
    from psconv.nn.datasets import add_dataset_arguments
    from psconv.nn.models import MAX_WIDTH
    from psconv.nn.train import CIFAR10_RECIPE, DIGITS_RECIPE, add_threads_argument

    def both(field, fmt=str):
        return (f"cifar10: {fmt(getattr(CIFAR10_RECIPE, field))}, "
                f"digits: {fmt(getattr(DIGITS_RECIPE, field))}")

    parser = subparsers.add_parser(
        "train", help="train a periodic-sparse network (CIFAR-10 or the digits)",
        description="Train a periodic-sparse ResNet18 or VGG16 with SGD. The defaults for "
                    "CIFAR-10 are the paper's recipe; those for the digits are the measured "
                    "recipe of docs/accuracy.md. Writes OUT/model.pt (the state dict `psconv "
                    "quantize --checkpoint` and `psconv evaluate --checkpoint` read), "
                    "OUT/train_state.pt (for --resume) and OUT/train.json after every epoch. "
                    "Uses the GPU when one is present; seeded and reproducible on the CPU.")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        type=output_folder("-o/--out"),
                        help="output folder for the checkpoints and train.json")
    add_dataset_arguments(parser)
    parser.add_argument("--arch", choices=("resnet18", "vgg16"), default="resnet18",
                        help="network (default: %(default)s; vgg16 needs 32x32 images)")
    parser.add_argument("--family", default=None,
                        help="pattern family, e.g. PS4_P8, PSD1_P16, dense (default: "
                             + ", ".join(f"{k}: {v}" for k, v in DEFAULT_FAMILIES.items()) + ")")
    parser.add_argument("--width", type=int, default=None,
                        help=f"ResNet18 base width (VGG16: channels x WIDTH/64), 1..{MAX_WIDTH} "
                             f"(default: " + ", ".join(f"{k}: {v}" for k, v in
                                                       DEFAULT_WIDTHS.items()) + ")")
    parser.add_argument("--epochs", type=int, help=f"epochs (default: {both('epochs')})")
    parser.add_argument("--batch-size", type=int,
                        help=f"images per SGD step (default: {both('batch_size')})")
    parser.add_argument("--lr", type=float, help=f"initial learning rate (default: {both('lr')})")
    parser.add_argument("--momentum", type=float, help=f"SGD momentum (default: {both('momentum')})")
    parser.add_argument("--weight-decay", type=float,
                        help=f"SGD weight decay (default: {both('weight_decay')})")
    parser.add_argument("--milestones", type=int, nargs="*", metavar="EPOCH",
                        help="epochs after which the learning rate is multiplied by --gamma "
                             f"(default: {both('milestones', lambda m: ' '.join(map(str, m)))})")
    parser.add_argument("--gamma", type=float,
                        help=f"learning-rate factor at each milestone (default: {both('gamma')})")
    parser.add_argument("--crop-padding", type=int, metavar="PIXELS",
                        help="random-crop augmentation: pad by this many black pixels, crop "
                             f"back; 0 for none (default: {both('crop_padding')})")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="random horizontal flips (default: cifar10 on, digits off)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                        help="no horizontal flips")
    parser.add_argument("--seed", type=int, help="seed of the initialization, batch order and "
                                                 "augmentation (default: 0)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when "
                                         "present, else cpu)")
    add_threads_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/train_state.pt: the same settings, except "
                             "that --epochs may ask for more")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def spec_from_args(args):
    """The :class:`~psconv.nn.train.TrainSpec` and the :class:`~psconv.nn.datasets.Dataset`
    the options name."""
    from psconv.families import family_by_name
    from psconv.nn.datasets import dataset_from_args, dataset_name
    from psconv.nn.models import check_width
    from psconv.nn.train import TrainSpec, recipe_for, set_threads

    name = dataset_name(args)
    width = DEFAULT_WIDTHS[name] if args.width is None else args.width
    check_width(width)
    family = args.family or DEFAULT_FAMILIES[name]
    family_by_name(family)                     # an unknown family fails before data is read
    set_threads(args.threads)
    recipe = recipe_for(name, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        momentum=args.momentum, weight_decay=args.weight_decay,
                        milestones=None if args.milestones is None else tuple(args.milestones),
                        gamma=args.gamma, crop_padding=args.crop_padding, flip=args.flip,
                        seed=args.seed)
    dataset = dataset_from_args(args)
    spec = TrainSpec(arch=args.arch, family=family, width=width, dataset=name,
                     image_size=dataset.image_size, num_classes=dataset.num_classes,
                     recipe=recipe)
    return spec, dataset


def run(args) -> int:
    from psconv.nn.train import MODEL_FILE, train

    spec, dataset = spec_from_args(args)
    print(f"psconv train: {spec.arch} {spec.family} width {spec.width} on {spec.dataset} "
          f"({len(dataset.train_labels)} train / {len(dataset.test_labels)} test images, "
          f"{spec.image_size}x{spec.image_size}), {spec.recipe}", flush=True)
    info = train(spec, dataset, args.out, resume=args.resume, progress=not args.no_progress,
                 device=args.device, log=lambda line: print(line, flush=True))
    last = info["history"][-1] if info["history"] else None
    print(f"wrote {args.out}/{MODEL_FILE}: "
          + (f"test accuracy {100 * last['test_accuracy']:.2f} % after {last['epoch']} epochs, "
             f"{info['train_seconds']:.0f} s of training" if last else "no epochs to run"))
    return 0
