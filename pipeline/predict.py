"""Apply one trained model to a user's images: colorize, stylize (a CycleGAN direction or ACE with
style exemplars) or classify.

Sizes. The translators are fully convolutional and were trained on 32 px patches of photos whose
long side was shrunk to ``prepare.photos.max_side`` (256), so an image is shrunk to a long side of
at most ``size`` (never enlarged), padded by reflection to a multiple of the backbone's reduction
(8; 32 on the ImageNet stem), translated whole and cropped back. A colorized image keeps the input's own L channel at full resolution, with the
predicted ab upsampled to it; a stylized one is resized back to the input's size. Classifier
inputs are resized to ``size`` x ``size`` (the digits are 32 px) and read as luminance.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pipeline.color import lab_to_rgb, rgb_to_lab
from pipeline.data.sources import IMAGE_SUFFIXES, BadImages, read_image_file
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError
from pipeline.io import atomic_dir, atomic_file
from pipeline.model_files import ModelFile
from pipeline.models.resnet import reduction

TASKS = {"colorize": ("colorizer",), "stylize": ("stylizer", "ace"), "classify": ("classifier",)}
DEFAULT_SIZE = {"colorize": 256, "stylize": 256, "classify": 32}
MIN_SIDE = 8
EXEMPLAR_SIZE = 32  # ACE style exemplars: centre squares at the patch size the models were trained on


class BadFiles(BadImages):
    """``on_bad_image`` for predict: 'skip' counts and warns, 'fail' stops at the first with one line."""

    def __call__(self, path: Path, reason: str) -> None:
        if self.policy == "fail":
            raise UserError(f"bad image {path}: {reason} (pass --on-bad-image skip to skip such files)")
        super().__call__(path, reason)


def find_images(inputs: Iterable[str | Path], bad: BadImages) -> list[tuple[Path, str]]:
    """[(file, relative name)] of every file under ``inputs`` (folders walked, sorted); files with a
    suffix that is not an image's are bad. A missing input or no file at all is a one-line error."""
    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise UserError(f"input not found: {item}")
        files = (
            sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith("."))
            if item.is_dir()
            else [item]
        )
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                bad(f, "not an image file type")
                continue
            found.append((f, f.relative_to(item).as_posix() if item.is_dir() else f.name))
    if not found:
        raise UserError(f"no image files in {', '.join(map(str, inputs))}")
    return found


def read_images(files: list[tuple[Path, str]], bad: BadImages, progress: str) -> Iterator[tuple[str, np.ndarray]]:
    """(relative name, uint8 (H, W, 3)) for every readable file at least MIN_SIDE px a side, with a progress bar."""
    for path, name in tqdm(files, desc=progress, unit="img", disable=None):
        try:
            image = read_image_file(path)
        except ValueError as exc:
            bad(path, str(exc))
            continue
        if min(image.shape[:2]) < MIN_SIDE:
            bad(path, f"{image.shape[1]}x{image.shape[0]} px is smaller than {MIN_SIDE} px a side")
            continue
        yield name, image


def to_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    return to_tensor([image]).to(device)


def to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def shrink(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) so that its long side is at most ``size`` (area filter; never enlarged)."""
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    if scale >= 1:
        return x
    return F.interpolate(x, size=(max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale))), mode="area")


def run_padded(module: torch.nn.Module, x: torch.Tensor, *extra: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """``module(x, *extra)`` on ``x`` padded to a multiple of ``multiple`` a side (reflected, or
    replicated where the image is smaller than the padding), cropped back to (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    mode = "reflect" if ph < h and pw < w else "replicate"
    padded = F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x
    return module(padded, *extra)[..., :h, :w]


def colorize(module: torch.nn.Module, x: torch.Tensor, size: int, multiple: int) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, H, W): the input's L at full size, ab predicted at the shrunk size and upsampled."""
    small = run_padded(module, shrink(x, size), multiple=multiple)
    ab = rgb_to_lab(small)[:, 1:]
    if ab.shape[-2:] != x.shape[-2:]:
        ab = F.interpolate(ab, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat([rgb_to_lab(x)[:, :1], ab], 1))


def stylize(module: torch.nn.Module, x: torch.Tensor, size: int, multiple: int, *extra: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, H, W): translated at the shrunk size, resized back."""
    out = run_padded(module, shrink(x, size), *extra, multiple=multiple)
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    return out


def square(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre square of (N, C, H, W), resized to ``size`` x ``size``."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return F.interpolate(
        x[..., top : top + s, left : left + s], size=(size, size), mode="area" if s >= size else "bilinear"
    )


def pick_module(model: ModelFile, task: str, seed: int | None, reverse: bool) -> tuple[str, torch.nn.Module]:
    """The serving module of ``model`` for ``task``; one-line errors for a model of another kind."""
    if model.kind not in TASKS[task]:
        raise UserError(f"{model.path} is a {model.kind} model: {task} needs a {' or '.join(TASKS[task])} model")
    modules = model.serving_modules(seed)
    if reverse:
        if "unstylize" not in modules:
            raise UserError(f"--reverse: {model.path} has no painting -> photo generator (only CycleGAN stylizers do)")
        return "unstylize", modules["unstylize"]
    name = {"colorizer": "colorize", "stylizer": "stylize", "ace": "stylize_like", "classifier": "classify"}[model.kind]
    return name, modules[name]


@torch.no_grad()
def predict(
    task: str, model: ModelFile, inputs: list[str | Path], output: str | Path, *, style: str | Path | None = None, seed: int | None = None,
    size: int | None = None, on_bad_image: str = "skip", overwrite: bool = False, reverse: bool = False, device: str = "cpu",
) -> dict[str, object]:  # fmt: skip
    """Apply ``model`` to every image under ``inputs``; write PNGs under the folder ``output``
    (colorize, stylize; same relative names, suffix .png) or a CSV of predicted class and class
    probabilities (classify). The output appears complete or not at all, and an existing one is
    replaced only with ``overwrite``. Returns a summary {task, model, seed, images, skipped, output}."""
    if task not in TASKS:
        raise UserError(f"unknown task '{task}' (allowed: {', '.join(TASKS)})")
    if on_bad_image not in ("skip", "fail"):
        raise UserError(f"--on-bad-image must be skip or fail, got '{on_bad_image}'")
    size = DEFAULT_SIZE[task] if size is None else size
    if size < MIN_SIDE:
        raise UserError(f"--size must be at least {MIN_SIDE}, got {size}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists: pass --overwrite to replace it")
    name, module = pick_module(model, task, seed, reverse)
    if name == "stylize_like" and style is None:
        raise UserError(f"{model.path} is ACE: pass --style FOLDER with exemplar images of the target style")
    if name != "stylize_like" and style is not None:
        raise UserError("--style is for ACE models only")
    dev = torch.device(device)
    module = module.to(dev)
    bad = BadFiles(on_bad_image)
    extra: tuple[torch.Tensor, ...] = ()
    if style is not None:
        exemplars = [
            square(to_batch(im, dev), EXEMPLAR_SIZE)
            for _, im in read_images(find_images([style], bad), bad, "style exemplars")
        ]
        if not exemplars:
            raise UserError(f"no readable style exemplar in {style}")
        extra = (torch.cat(exemplars),)
    files = find_images(inputs, bad)
    count = 0
    if task == "classify":
        with atomic_file(output) as tmp, open(tmp, "w", newline="") as fh:
            writer = None
            for rel, image in read_images(files, bad, "classify"):
                probs = module(square(to_batch(image, dev), size))[0].cpu()
                if writer is None:
                    writer = csv.writer(fh)
                    writer.writerow(["file", "predicted", *(f"p{c}" for c in range(len(probs)))])
                writer.writerow([rel, int(probs.argmax()), *(f"{p:.6f}" for p in probs.tolist())])
                count += 1
            if count == 0:
                raise UserError(f"no usable image in {', '.join(map(str, inputs))} ({len(bad.skipped)} skipped)")
    else:
        multiple = reduction(model.meta["backbone_spec"])
        with atomic_dir(output) as tmp:
            for rel, image in read_images(files, bad, task):
                x = to_batch(image, dev)
                y = (
                    colorize(module, x, size, multiple)
                    if task == "colorize"
                    else stylize(module, x, size, multiple, *extra)
                )
                target = (tmp / rel).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(to_image(y)).save(target)
                count += 1
            if count == 0:
                raise UserError(f"no usable image in {', '.join(map(str, inputs))} ({len(bad.skipped)} skipped)")
    return {"task": task, "model": str(model.path), "kind": model.kind, "seed": model.seeds[0] if seed is None else seed,
            "images": count, "skipped": len(bad.skipped), "output": str(output)}  # fmt: skip
