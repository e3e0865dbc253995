"""Build every data set of the study as :class:`~pipeline.data.shards.Record` streams.

Sets (folder names under the output root):
- ``photos``: patches of colour photos, split train/test by source image.
- ``photos_full``: the whole photos (long side <= max_side), for fresh SSL crops.
- ``painting``: painterly-filtered patches; train from other regions than the photo side's,
  test = the filtered twin of every test photo patch (same ``source``), exact ground truth.
- ``probe``: a labelled kNN probe, ``bank`` and ``query`` splits cut from disjoint halves.
- ``digits_lt``: long-tailed digits with one fixed nuisance draw per training image.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import PrepareParams
from pipeline.data import sources
from pipeline.data.longtail import assign_counts, class_counts
from pipeline.data.painting import painterly
from pipeline.data.shards import Record
from pipeline.data.transforms import apply_nuisance, draw_nuisance, random_patches, resize, resize_max_side
from pipeline.errors import UserError


@dataclass
class PreparedSets:
    """Records per set, plus facts for the metrics file."""

    sets: dict[str, list[Record]] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, -1)
    return image[..., :3]


def _is_grey(image: np.ndarray) -> bool:
    return image.ndim == 2 or bool(np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2]))


def split_photos(
    photos: list[sources.NamedImage], test_sources: list[str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list, list]:
    """Train/test by source image: the names in ``test_sources`` (each must exist); with none named,
    the files under a ``test/`` sub-folder, or else ``test_fraction`` of the files drawn with ``seed``."""
    names = [p.name for p in photos]
    if test_sources:
        unknown = sorted(set(test_sources) - set(names))
        if unknown:
            raise UserError(f"prepare.photos.test_sources: unknown source(s) {unknown} (available: {', '.join(names)})")
        held_out = set(test_sources)
    elif any(n.startswith("test/") for n in names):
        held_out = {n for n in names if n.startswith("test/")}
    else:
        order = np.random.default_rng(seed).permutation(len(names))
        held_out = {names[i] for i in order[: max(1, round(test_fraction * len(names)))]}
    train = [p for p in photos if p.name not in held_out]
    test = [p for p in photos if p.name in held_out]
    if not train or not test:
        raise UserError(f"the photo split leaves {len(train)} train and {len(test)} test photos: both need at least one "
                        "(prepare.photos.test_sources, a test/ sub-folder or prepare.photos.test_fraction)")  # fmt: skip
    return train, test


def load_user_folder(path: str | Path, bad: sources.BadImages) -> list[sources.NamedImage]:
    """A user's photo folder: its files and class sub-folders, and a ``test/`` sub-folder (flat or
    with the same class folders) whose images are named ``test/...`` (the test split by default)."""
    root = Path(path)
    photos = sources.load_folder(root, bad, exclude=("test",))
    if (root / "test").is_dir():
        photos += [
            sources.NamedImage(ph.image, f"test/{ph.name}", ph.label) for ph in sources.load_folder(root / "test", bad)
        ]
    return photos


def usable_photos(
    photos: list[sources.NamedImage], patch_size: int, bad: sources.BadImages, root: str | Path
) -> list[sources.NamedImage]:
    """The photos at least ``patch_size`` a side; smaller ones go to ``bad`` (skipped and counted, or the one-line stop)."""
    keep = []
    for ph in photos:
        if min(ph.image.shape[:2]) < patch_size:
            bad(
                Path(root) / ph.name,
                f"{ph.image.shape[1]}x{ph.image.shape[0]} px is smaller than prepare.photos.patch_size={patch_size}",
            )
        else:
            keep.append(ph)
    return keep


def warn_empty_classes(root: str | Path, photos: list[sources.NamedImage]) -> list[str]:
    """Class sub-folders of a user folder with no usable image (a warning each); returns their names."""
    folders = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    used = {ph.name.split("/")[0] for ph in photos if "/" in ph.name}
    empty = [f for f in folders if f not in used]
    for name in empty:
        print(f"warning: class folder {Path(root) / name} has no usable image", file=sys.stderr)
    return empty


def build_photo_sets(params: PrepareParams, bad: sources.BadImages) -> PreparedSets:
    """photos, photos_full and painting from the configured photo source."""
    p = params.photos
    rng = np.random.default_rng(params.seed)
    if p.source == "cyclegan":
        parts = sources.load_cyclegan_folder(p.path, bad)
        return _cyclegan_sets(parts, params, rng)
    if p.source in ("cifar10", "cifar100"):
        train = sources.load_cifar(p.source, p.path, p.download, train=True)
        test = sources.load_cifar(p.source, p.path, p.download, train=False)
    else:
        photos = (
            sources.load_embedded(sources.EMBEDDED_PHOTOS) if p.source == "embedded" else load_user_folder(p.path, bad)
        )
        photos = [sources.NamedImage(resize_max_side(_rgb(ph.image), p.max_side), ph.name, ph.label) for ph in photos]
        if p.source == "folder":
            photos = usable_photos(photos, p.patch_size, bad, p.path)
            warn_empty_classes(p.path, photos)
            if not photos:
                raise UserError(f"no usable photo in {p.path} ({len(bad.skipped)} skipped)")
        train, test = split_photos(photos, p.test_sources, p.test_fraction, params.seed)
    if all(_is_grey(ph.image) for ph in train + test):
        raise UserError("the photo source holds only grey images: colour photos are needed")
    for ph in train + test:
        if min(ph.image.shape[:2]) < p.patch_size:
            raise UserError(
                f"photo '{ph.name}' is {ph.image.shape[1]}x{ph.image.shape[0]}, smaller than "
                f"prepare.photos.patch_size={p.patch_size}"
            )

    split_x = params.painting.region_split
    photos_rec, full_rec, paint_rec = [], [], []
    for split, group in (("train", train), ("test", test)):
        for ph in tqdm(group, desc=f"photos {split}", unit="photo", disable=None):
            full_rec.append(Record(ph.image, "photo", split, ph.name, ph.label))
            small = ph.image.shape[0] == p.patch_size and ph.image.shape[1] == p.patch_size
            # Train photo patches come from the left region, train paintings from the right one:
            # the two domains never show the same place. Test photos give both, paired.
            x_range = (0.0, split_x) if split == "train" and not small else (0.0, 1.0)
            patches = (
                [(ph.image, 0, 0, p.patch_size)]
                if small
                else random_patches(ph.image, p.patches_per_image, p.patch_size, tuple(p.scale), rng, x_range)
            )
            for patch, y, x, side in patches:
                src = f"{ph.name}:{y}:{x}:{side}"
                photos_rec.append(Record(patch, "photo", split, src, ph.label))
                if split == "test":
                    paint_rec.append(Record(_paint(patch, params), "painting", "test", src, ph.label))
            if split == "train" and not small:
                for patch, y, x, side in random_patches(
                    ph.image, p.patches_per_image, p.patch_size, tuple(p.scale), rng, (split_x, 1.0)
                ):
                    paint_rec.append(
                        Record(_paint(patch, params), "painting", "train", f"{ph.name}:{y}:{x}:{side}", ph.label)
                    )
    return PreparedSets(
        sets={"photos": photos_rec, "photos_full": full_rec, "painting": paint_rec},
        info={"photo_train_sources": [t.name for t in train], "photo_test_sources": [t.name for t in test]},
    )


def _paint(patch: np.ndarray, params: PrepareParams) -> np.ndarray:
    pp = params.painting
    return painterly(patch, pp.kuwahara_radius, pp.stroke_length, pp.saturation, pp.levels, pp.edge_darkening)


def _cyclegan_sets(
    parts: dict[str, list[sources.NamedImage]], params: PrepareParams, rng: np.random.Generator
) -> PreparedSets:
    """User domains A (photo) and B (painting): patches of each, no paired ground truth."""
    p = params.photos
    recs: dict[str, list[Record]] = {"photos": [], "photos_full": [], "painting": []}
    for part, images in parts.items():
        split = "train" if part.startswith("train") else "test"
        domain_set = "photos" if part.endswith("A") else "painting"
        domain = "photo" if part.endswith("A") else "painting"
        for im in images:
            img = resize_max_side(im.image, p.max_side)
            if min(img.shape[:2]) < p.patch_size:
                raise UserError(f"image '{part}/{im.name}' is smaller than prepare.photos.patch_size={p.patch_size}")
            if domain == "photo":
                recs["photos_full"].append(Record(img, domain, split, im.name))
            for patch, y, x, side in random_patches(img, p.patches_per_image, p.patch_size, tuple(p.scale), rng):
                recs[domain_set].append(Record(patch, domain, split, f"{part}/{im.name}:{y}:{x}:{side}"))
    return PreparedSets(sets=recs)


def build_probe(params: PrepareParams, photo_test: list[sources.NamedImage]) -> PreparedSets:
    """kNN probe: label = source image; bank from the left half, queries from the right half."""
    rng = np.random.default_rng(params.seed + 1)
    size = params.photos.patch_size
    if params.probe.kind == "textures":
        images = sources.load_embedded(sources.EMBEDDED_TEXTURES)
    else:
        images = photo_test
    recs = []
    for label, im in enumerate(images):
        img = _rgb(im.image.astype(np.uint8) if im.image.dtype != bool else (im.image * 255).astype(np.uint8))
        for split, xr in (("bank", (0.0, 0.5)), ("query", (0.5, 1.0))):
            for patch, y, x, side in random_patches(img, params.probe.per_class, size, (0.15, 0.5), rng, xr):
                recs.append(Record(patch, params.probe.kind, split, f"{im.name}:{y}:{x}:{side}", label))
    return PreparedSets(
        sets={"probe": recs}, info={"probe_kind": params.probe.kind, "probe_classes": [im.name for im in images]}
    )


def build_digits_lt(params: PrepareParams) -> PreparedSets:
    """Long-tailed digits: one fixed nuisance draw per training image, clean class-balanced test."""
    from sklearn.datasets import load_digits

    d = params.digits_lt
    rng = np.random.default_rng(params.seed + 2)
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels = digits.target.astype(np.int64)
    counts = assign_counts(labels, class_counts(d.profile, 10, d.n_max, d.n_min, d.zipf_a), rng)
    recs: list[Record] = []
    table = []
    for c in sorted(counts):
        idx = rng.permutation(np.flatnonzero(labels == c))
        need = counts[c] + d.test_per_class
        if len(idx) < need:
            raise UserError(
                f"digit class {c} has {len(idx)} images, fewer than n={counts[c]} train + "
                f"test_per_class={d.test_per_class}: lower prepare.digits_lt.n_max or test_per_class"
            )
        for i in idx[: counts[c]]:
            clean = resize(images[i], d.size)
            seed = int(rng.integers(0, 2**31 - 1))
            tparams = draw_nuisance(d.transform, np.random.default_rng(seed))
            recs.append(
                Record(apply_nuisance(clean, tparams), "digits", "train", f"digits/{i}", int(c), clean, tparams, seed)
            )
        for i in idx[counts[c] : need]:
            recs.append(Record(resize(images[i], d.size), "digits", "test", f"digits/{i}", int(c)))
        table.append({"class": int(c), "train": counts[c], "test": d.test_per_class})
    return PreparedSets(sets={"digits_lt": recs}, info={"digits_lt_counts": table, "digits_lt_transform": d.transform})


def build_simgan_digits(params: PrepareParams) -> PreparedSets:
    """SimGAN's sets: ``synthetic_digits`` (train: digits rendered from matplotlib's fonts) and
    ``real_digits`` (a class-balanced train / test split of the scikit-learn digits), one size."""
    from sklearn.datasets import load_digits

    from pipeline.data.synthetic import render_digits

    d = params.simgan_digits
    images, labels, fonts = render_digits(d.synthetic_per_class, d.size, params.seed + 3)
    synthetic = [
        Record(im, "synthetic", "train", f"font/{font}/{i}", int(y))
        for i, (im, y, font) in enumerate(zip(images, labels, fonts))
    ]
    rng = np.random.default_rng(params.seed + 4)
    digits = load_digits()
    real_images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    real = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        for split, part in (("train", idx[: d.real_train_per_class]),
                            ("test", idx[d.real_train_per_class : d.real_train_per_class + d.real_test_per_class])):  # fmt: skip
            real += [Record(resize(real_images[i], d.size), "digits", split, f"digits/{i}", c) for i in part]
    info = {"simgan_digits": {"synthetic": len(synthetic), "real_train": 10 * d.real_train_per_class,
                              "real_test": 10 * d.real_test_per_class}}  # fmt: skip
    return PreparedSets(sets={"synthetic_digits": synthetic, "real_digits": real}, info=info)
