"""Synthetic digits for SimGAN: the ten digits rendered from the fonts that ship inside matplotlib
(no download), each with a random affine map and stroke width, as bright ink on black like the
scikit-learn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: matplotlib's bundled fonts that draw all ten digits (mpl-data/fonts/ttf)
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
         "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
         "cmtt10.ttf", "cmb10.ttf")  # fmt: skip
CANVAS = 64


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render_digit(digit: int, font: ImageFont.FreeTypeFont, size: int, rng: np.random.Generator) -> np.ndarray:
    """One digit (uint8 (size, size), ink bright on black): drawn on a 64 px canvas with a random
    stroke width (0-3 px), rotated by up to 15 degrees, scaled by 0.8-1.1 and shifted by up to 3 px,
    then shrunk to ``size`` so that the glyph fills the frame as the scikit-learn digits do."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((CANVAS / 2, CANVAS / 2), str(digit), fill=255, font=font, anchor="mm",
              stroke_width=int(rng.integers(0, 4)), stroke_fill=255)  # fmt: skip
    x0, y0, x1, y1 = canvas.getbbox() or (0, 0, CANVAS, CANVAS)
    side = max(x1 - x0, y1 - y0) / float(rng.uniform(0.8, 1.1))
    cx, cy = (x0 + x1) / 2 + rng.uniform(-3, 3), (y0 + y1) / 2 + rng.uniform(-3, 3)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, center=(cx, cy))
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS, box=box))


def render_digits(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``per_class`` renders of each digit 0-9, fonts drawn in turn: images uint8 (N, size, size),
    labels (N,) and each image's font; the same for the same seed."""
    rng = np.random.default_rng(seed)
    fonts = {name: ImageFont.truetype(str(font_dir() / name), 44) for name in FONTS}
    images, labels, names = [], [], []
    for digit in range(10):
        for _ in range(per_class):
            name = FONTS[int(rng.integers(len(FONTS)))]
            images.append(render_digit(digit, fonts[name], size, rng))
            labels.append(digit)
            names.append(name)
    return np.stack(images), np.array(labels, np.int64), names
