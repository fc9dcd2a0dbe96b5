"""Training a periodic-sparse network: the recipe, the loop, checkpoints and resuming.

:class:`Recipe` holds every training choice. :data:`CIFAR10_RECIPE` is the paper's (SGD, lr 0.1,
momentum 0.9, weight decay 5e-4, batch 128, MultiStepLR at epochs 40, 80, 100, 115, 130, 140
with gamma 0.2, 150 epochs, random crop with padding 4 and horizontal flip);
:data:`DIGITS_RECIPE` is the one measured on scikit-learn's 8x8 digits (docs/accuracy.md): 60
epochs of batch 32, lr 0.05, no augmentation (the digits are centred, and a mirrored digit is
another glyph).

Determinism: the model is initialized after ``torch.manual_seed(recipe.seed)``, and epoch ``e``
draws its batch order and augmentation from a generator seeded with ``(seed, e)`` alone, so a
run resumed from a checkpoint continues exactly as the uninterrupted run would (on the CPU;
CUDA kernels are not bitwise deterministic). Training batches are whole (the last partial
batch of an epoch is dropped, as BatchNorm statistics of a handful of images are noise).

Masks: every :class:`~psconv.nn.sparse_conv.PeriodicSparseConv2d` keeps its pruned taps at
exactly zero through SGD with momentum and weight decay (zero weight and zero gradient give a
zero update); :func:`masked_nonzeros` counts violations and :func:`train` checks it after every
epoch.

Files in the output folder, rewritten after every epoch (each written whole, then renamed):

* ``model.pt``: the model's ``state_dict``, what ``psconv quantize --checkpoint`` and
  ``psconv evaluate --checkpoint`` read;
* ``train_state.pt``: model, optimizer and scheduler states and the epoch, for ``--resume``
  (which may ask for more epochs; every other setting must be the same);
* ``train.json``: arch, family, width, data set, recipe, per-epoch history and wall time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import PsconvError
from .datasets import Dataset
from .models import build_network
from .sparse_conv import PeriodicSparseConv2d

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
INFO_FILE = "train.json"


@dataclass(frozen=True)
class Recipe:
    """Every training choice; see the module docstring for the two defaults."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    crop_padding: int
    flip: bool
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PsconvError(f"--{name.replace('_', '-')} is {value!r}; allowed: an integer >= 1")
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise PsconvError(f"--crop-padding is {self.crop_padding!r}; allowed: an integer >= 0")
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                raise PsconvError(f"--{name} is {getattr(self, name)!r}; allowed: a number > 0")
        for name in ("momentum", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise PsconvError(f"--{name.replace('_', '-')} is {getattr(self, name)!r}; "
                                  f"allowed: a number >= 0")
        if list(self.milestones) != sorted(set(self.milestones)) or any(
                not isinstance(m, int) or m < 1 for m in self.milestones):
            raise PsconvError(f"--milestones is {list(self.milestones)}; allowed: increasing "
                              f"epoch numbers >= 1")


CIFAR10_RECIPE = Recipe(epochs=150, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                        milestones=(40, 80, 100, 115, 130, 140), gamma=0.2, crop_padding=4,
                        flip=True)
DIGITS_RECIPE = Recipe(epochs=60, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
                       milestones=(30, 45), gamma=0.2, crop_padding=0, flip=False)
RECIPES = {"cifar10": CIFAR10_RECIPE, "digits": DIGITS_RECIPE}


def recipe_for(dataset_name: str, **overrides) -> Recipe:
    """The data set's default recipe with the ``overrides`` that are not ``None``."""
    return replace(RECIPES[dataset_name], **{k: v for k, v in overrides.items() if v is not None})


def new_model(arch: str, family_name: str, width: int, num_classes: int, seed: int,
              image_size: int) -> nn.Module:
    """The untrained network, initialized after ``torch.manual_seed(seed)``; ``width`` is the
    ResNet18 base width or VGG16's channels as a share of 64."""
    if arch == "vgg16" and image_size < 32:
        raise PsconvError(f"--arch vgg16 needs images of at least 32x32 (five 2x2 max-pools); "
                          f"these are {image_size}x{image_size}; allowed: resnet18")
    torch.manual_seed(seed)
    return build_network(arch, family_name, width, num_classes)


def masked_nonzeros(model: nn.Module) -> int:
    """Weights of pruned taps that are not exactly zero, over every periodic-sparse conv."""
    return sum(int(((m.weight.detach() != 0) & (m.mask == 0)).sum())
               for m in model.modules() if isinstance(m, PeriodicSparseConv2d))


def augment(images: torch.Tensor, padding: int, flip: bool, background: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """Per image: a random ``H x W`` crop of the image padded by ``padding`` pixels of
    ``background`` (per channel), then a mirror with probability 1/2 if ``flip``."""
    n, c, h, w = images.shape
    if padding:
        padded = background.view(1, c, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding:padding + h, padding:padding + w] = images
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        images = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                        rows, cols]
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(3), images)
    return images


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``'s batch order and augmentation (see module docstring)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Eval-mode top-1 classes of ``images`` (NCHW) as a CPU int64 tensor."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def add_threads_argument(parser) -> None:
    """``--threads N`` (read back with :func:`set_threads`)."""
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice)")


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (``None``: leave torch's choice)."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise PsconvError(f"--threads is {threads!r}; allowed: an integer >= 1")
    torch.set_num_threads(threads)


def choose_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` (``--device``) checked, or the GPU when one is present, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PsconvError(f"--device is {name!r}; allowed: cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PsconvError(f"--device is {name!r} but torch sees no GPU here; allowed: cpu")
    if device.type not in ("cpu", "cuda"):
        raise PsconvError(f"--device is {name!r}; allowed: cpu, cuda or cuda:N")
    return device


def _save_atomic(obj, path: Path, as_json: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if as_json:
        tmp.write_text(json.dumps(obj, indent=1))
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class TrainSpec:
    """What is trained, on what: recorded in ``train.json`` and checked on ``--resume``."""

    arch: str
    family: str
    width: int
    dataset: str
    image_size: int
    num_classes: int
    recipe: Recipe

    def to_json(self) -> dict:
        info = asdict(self)
        info["recipe"]["milestones"] = list(self.recipe.milestones)
        return info


def read_info(folder) -> dict:
    """The ``train.json`` of a training output folder."""
    path = Path(folder) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PsconvError(f"cannot read {path} (written by psconv train): {e}") from None


def train(spec: TrainSpec, dataset: Dataset, out, resume: bool = False, progress: bool = True,
          device: torch.device | str | None = None, log=print) -> dict:
    """Train ``spec``'s network on ``dataset`` into the folder ``out`` (see module docstring);
    returns the ``train.json`` content. ``resume`` continues from ``out/train_state.pt``."""
    from tqdm import tqdm

    recipe = spec.recipe
    device = choose_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = new_model(spec.arch, spec.family, spec.width, spec.num_classes, recipe.seed,
                      spec.image_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones),
                                                     recipe.gamma)
    info = {**spec.to_json(), "device": str(device), "history": [], "train_seconds": 0.0}
    start = 0
    if resume:
        start, info = _resume(out, spec, model, optimizer, scheduler, device)
    images, labels = dataset.train_images, dataset.train_labels
    batches = len(labels) // recipe.batch_size
    if batches == 0:
        raise PsconvError(f"--batch-size is {recipe.batch_size} but the train split has only "
                          f"{len(labels)} images; allowed: at most {len(labels)}")
    background = dataset.background
    for epoch in range(start, recipe.epochs):
        started = time.perf_counter()
        generator = epoch_generator(recipe.seed, epoch)
        order = torch.randperm(len(labels), generator=generator)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(batches), desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                   disable=None if progress else True, leave=False)
        for b in bar:
            index = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            x = augment(images[index], recipe.crop_padding, recipe.flip, background, generator)
            y = labels[index].to(device)
            logits = model(x.to(device))
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(index)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        scheduler.step()
        violations = masked_nonzeros(model)
        if violations:
            raise PsconvError(f"train: {violations} pruned weights became nonzero in epoch "
                              f"{epoch + 1}; the masks must keep them at exactly zero")
        test_images, test_labels = dataset.test_images, dataset.test_labels
        test_accuracy = float((predict(model, test_images, device=device) == test_labels)
                              .float().mean())
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "test_accuracy": test_accuracy, "seconds": seconds}
        info["history"].append(row)
        info["train_seconds"] += seconds
        log(f"epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}, train accuracy "
            f"{100 * row['train_accuracy']:.2f} %, test accuracy {100 * test_accuracy:.2f} % "
            f"({seconds:.1f} s)")
        _save_atomic({k: v.cpu() for k, v in model.state_dict().items()}, out / MODEL_FILE)
        _save_atomic({"epoch": epoch + 1, "model": model.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                     out / STATE_FILE)
        _save_atomic(info, out / INFO_FILE, as_json=True)
    return info


def _resume(out: Path, spec: TrainSpec, model, optimizer, scheduler, device):
    state_path = out / STATE_FILE
    if not state_path.is_file():
        raise PsconvError(f"--resume: {state_path} does not exist; train into {out} first "
                          f"(without --resume)")
    info = read_info(out)
    wanted = spec.to_json()
    # more (or fewer) epochs may be asked for on resuming; every other setting must match
    wanted["recipe"]["epochs"] = info.get("recipe", {}).get("epochs")
    differ = [k for k in wanted if info.get(k) != wanted[k]]
    if differ:
        raise PsconvError(f"--resume: {out} was trained with other settings ("
                          + "; ".join(f"{k}: {info.get(k)!r} there, {wanted[k]!r} now"
                                      for k in differ) + "); allowed: the same settings")
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except Exception as e:   # a truncated or foreign file: say which
        raise PsconvError(f"--resume: cannot read {state_path}: {type(e).__name__}: {e}") from None
    info["history"] = info["history"][:state["epoch"]]
    info["recipe"]["epochs"] = spec.recipe.epochs
    return state["epoch"], info


def read_state_dict(path) -> dict:
    """The state dict saved in ``path`` (``torch.load``, tensors only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:    # torch.load raises many types for a file that is not a checkpoint
        reason = str(e).splitlines()[0] if str(e) else ""
        raise PsconvError(f"cannot read checkpoint {path} as a PyTorch state dict: "
                          f"{type(e).__name__}: {reason}") from None
    if not isinstance(state, dict):
        raise PsconvError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_checkpoint(path, family_name: str, width: int, arch: str = "resnet18",
                    num_classes: int = 10) -> nn.Module:
    """The eval-mode network of ``arch``/``family_name``/``width`` with the state dict in
    ``path`` (a ``model.pt`` of :func:`train`, or any state dict of the same network)."""
    model = build_network(arch, family_name, width, num_classes)
    state = read_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same keys, other shapes: another width
        raise PsconvError(f"checkpoint {path} does not match {arch}({family_name}, width={width}): "
                          f"{str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise PsconvError(f"checkpoint {path} does not match {arch}({family_name}, "
                          f"width={width}): missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
