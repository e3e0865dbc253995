"""Where images come from: photos that ship inside installed packages, user folders, torchvision.

Every loader returns :class:`NamedImage` items: a uint8 array (H, W, 3) or (H, W), a name
that identifies the source image, and a label (-1 when none). Nothing here downloads,
except torchvision CIFAR when the user sets ``download: true``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


@dataclass
class NamedImage:
    image: np.ndarray
    name: str
    label: int = -1


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: left view only

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


EMBEDDED_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "colorwheel": _skimage("colorwheel"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
}

# Grey images whose classes differ by texture and shape, not colour: the kNN probe.
EMBEDDED_TEXTURES: dict[str, Callable[[], np.ndarray]] = {
    name: _skimage(name)
    for name in ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "cell", "clock")
}


def load_embedded(table: dict[str, Callable[[], np.ndarray]]) -> list[NamedImage]:
    return [NamedImage(np.ascontiguousarray(load()), name) for name, load in table.items()]


class BadImages:
    """Counts skipped files, or fails on the first, by ``on_bad_image``."""

    def __init__(self, on_bad_image: str) -> None:
        self.policy = on_bad_image
        self.skipped: list[str] = []

    def __call__(self, path: Path, reason: str) -> None:
        if self.policy == "fail":
            raise UserError(f"bad image {path}: {reason} (set prepare.on_bad_image: skip to skip such files)")
        self.skipped.append(str(path))
        print(f"warning: skipped bad image {path}: {reason}", file=sys.stderr)


def to_rgb8(img: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a decoded PIL image, whatever its mode.

    - EXIF orientation is applied, so a photo stands as the camera showed it;
    - 16-bit (``I;16*``, ``I``) is scaled to 8 bits (``v / 257``), not clipped at 255, and float
      (``F``) is read as [0, 1] when it stays there, else as [0, 255];
    - alpha (``RGBA``, ``LA``, palette transparency) is composited over white;
    - palette, CMYK, YCbCr, bilevel and greyscale go through PIL's own conversion.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
        else:
            scale = 1 / 257
        grey = np.clip(np.rint(np.nan_to_num(a) * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"))


def read_image_file(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB (see :func:`to_rgb8`), or raise ValueError naming why the file is not an image."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(str(exc).split("\n")[0] or type(exc).__name__) from None


def load_folder(
    path: str | Path, bad: BadImages, labeled: bool = True, exclude: tuple[str, ...] = ()
) -> list[NamedImage]:
    """Images under ``path``: its files (label -1) and, with ``labeled``, each sub-folder not in
    ``exclude`` as a class (sorted names -> 0, 1, ...)."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude) if labeled else []
    groups = [(-1, root), *enumerate(subdirs)]
    out: list[NamedImage] = []
    for label, folder in groups:
        for file in sorted(p for p in folder.iterdir() if p.is_file()):
            if file.name.startswith("."):
                continue
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                bad(file, "not an image file type")
                continue
            try:
                image = read_image_file(file)
            except ValueError as exc:
                bad(file, str(exc))
                continue
            out.append(NamedImage(image, str(file.relative_to(root)), label))
    if not out:
        raise UserError(f"no readable images in {root}")
    return out


def load_cyclegan_folder(path: str | Path, bad: BadImages) -> dict[str, list[NamedImage]]:
    """A CycleGAN-style folder: ``{'trainA': [...], 'trainB': ..., 'testA': ..., 'testB': ...}``."""
    root = Path(path)
    missing = [p for p in ("trainA", "trainB", "testA", "testB") if not (root / p).is_dir()]
    if missing:
        raise UserError(f"{root} is not a CycleGAN-style folder: missing {', '.join(missing)}")
    return {part: load_folder(root / part, bad, labeled=False) for part in ("trainA", "trainB", "testA", "testB")}


def load_cifar(name: str, root: str | Path | None, download: bool, train: bool) -> list[NamedImage]:
    """torchvision CIFAR10/CIFAR100 from ``root``; downloads only when ``download`` is true."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root = Path(root or "data/downloads")
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as exc:
        raise UserError(
            f"{name} not found under {root} ({exc}); set prepare.photos.download: true to fetch it"
        ) from None
    split = "train" if train else "test"
    return [
        NamedImage(np.asarray(img), f"{name}/{split}/{i}", int(t))
        for i, (img, t) in enumerate(zip(ds.data, ds.targets))
    ]
