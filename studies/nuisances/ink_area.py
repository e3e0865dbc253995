"""How far MUNIT's styles move the `dil` nuisance: the ink area (fraction of pixels >= 128) of each
tail-class training image, spread over 4 random MUNIT styles against 4 fresh draws of the true
nuisance on its clean image, as many as ``augment.per_image``. Run in a workspace of the `dil` run
(params.yaml, models/munit.pt, data/prepared)."""

import numpy as np
import torch

from pipeline.config import load_params
from pipeline.data.shards import decode_png, read_table
from pipeline.data.transforms import apply_nuisance, draw_nuisance
from pipeline.invariance.munit import load_digits, load_munit, tail_classes, to_uint8


def ink(image: np.ndarray) -> float:
    return float((image >= 128).mean())


def main() -> None:
    augment = load_params("params.yaml").augment
    threshold, n = augment.threshold, augment.per_image
    model = load_munit("models/munit.pt").eval()
    x, labels, _ = load_digits("data/prepared", "train")
    clean = [
        decode_png(b) for b in read_table("data/prepared/digits_lt", "train", ["clean"]).column("clean").to_pylist()
    ]
    rng = np.random.default_rng(0)
    sd_munit, sd_true, mean_munit, mean_stored, mean_true = [], [], [], [], []
    with torch.no_grad():
        for r in [r for c in tail_classes(labels, threshold) for r in np.flatnonzero(labels == c)]:
            content, _ = model.encode(x[r : r + 1])
            styles = [
                torch.randn(1, model.style_dim, generator=torch.Generator().manual_seed(int(r) * 10 + k))
                for k in range(n)
            ]
            restyled = [ink(to_uint8(model.decode(content, s)[0])) for s in styles]
            drawn = [ink(apply_nuisance(clean[r], draw_nuisance("dil", rng))) for _ in range(n)]
            sd_munit.append(np.std(restyled, ddof=1))
            sd_true.append(np.std(drawn, ddof=1))
            mean_munit.append(np.mean(restyled))
            mean_true.append(np.mean(drawn))
            mean_stored.append(ink(to_uint8(x[r])))
    print(
        f"tail images {len(sd_munit)}; ink-area sd over {n} styles: MUNIT {np.mean(sd_munit):.4f}, true dil {np.mean(sd_true):.4f} "
        f"({np.mean(sd_munit) / np.mean(sd_true):.0%}); mean ink MUNIT {np.mean(mean_munit):.3f}, stored {np.mean(mean_stored):.3f}, "
        f"true draws {np.mean(mean_true):.3f}"
    )


if __name__ == "__main__":
    main()
