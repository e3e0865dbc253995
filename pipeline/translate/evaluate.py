"""Scores of the final generators on the held-out test photos, beside the trivial baselines
(ab = 0 for colorization, the identity for style transfer)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.color import grey_of
from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.metrics.image import batched, image_scores, kernel_inception_distance, l1, l1_luma_chroma
from pipeline.models.features import feature_net
from pipeline.plots import rgb_images
from pipeline.translate.data import domain_to_rgb, load_test, painted_twins, photo_to_domain
from pipeline.translate.training import TranslateJob, generators_from_state, translate_batched


def evaluate_colorization(models: dict[str, nn.Module] | None, params: Params, data_root: str | Path) -> dict[str, Any]:
    """Scores on the test photos (held-out sources). ``models=None`` scores the trivial ab = 0 baseline.

    ab L1 is in the ab / 110 scale (the network's), RGB L1 / PSNR / SSIM in [0, 1] RGB with the true L.
    """
    rgb, src = load_test(data_root, "photos")
    lab = photo_to_domain(rgb, "colorize")
    x = grey_of(lab)
    pred = x if models is None else translate_batched(models["G"], x)
    pred = torch.cat([lab[:, :1], pred[:, 1:]], 1)
    pred_rgb = domain_to_rgb(pred, "colorize")
    tr = params.translate
    feats = feature_net(tr.fd_features, rgb, tr.inception_weights)
    scores = {
        "l1_ab": l1(pred[:, 1:], lab[:, 1:]),
        **image_scores(pred_rgb, rgb, feats, tr.kid_subset_size, tr.kid_subsets),
    }
    photos = sorted({s.split(":")[0] for s in src})
    scores["l1_ab_by_photo"] = {
        p: l1(pred[idx, 1:], lab[idx, 1:])
        for p in photos
        for idx in [[i for i, s in enumerate(src) if s.split(":")[0] == p]]
    }
    scores["samples"] = (x, pred, lab)
    return scores


def score_paintings(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, params: Params) -> dict[str, float]:
    """L1 (and its luminance and colour parts), PSNR, SSIM, FD, KID of translated test photos
    against their painted twins."""
    tr = params.translate
    feats = feature_net(tr.fd_features, target_rgb, tr.inception_weights)
    luma, chroma = l1_luma_chroma(pred_rgb, target_rgb)
    return {
        **image_scores(pred_rgb, target_rgb, feats, tr.kid_subset_size, tr.kid_subsets),
        "l1_luma": luma,
        "l1_chroma": chroma,
    }


def evaluate_stylization(models: dict[str, nn.Module] | None, params: Params, data_root: str | Path) -> dict[str, Any]:
    """Photo -> painting on the test photos against their exact painted twins; ``None`` = identity
    baseline, which also gets the KID between two halves of the twins (what "indistinguishable" scores)."""
    rgb, target_rgb = painted_twins(data_root)
    x = photo_to_domain(rgb, "stylize")
    pred = x if models is None else translate_batched(models["G"], x)
    pred_rgb = domain_to_rgb(pred, "stylize")
    scores: dict[str, Any] = score_paintings(pred_rgb, target_rgb, params)
    scores["moved"] = l1(pred_rgb, rgb)
    if models is None:  # the floor: KID between two halves of the paintings themselves
        tr = params.translate
        feats = feature_net(tr.fd_features, target_rgb, tr.inception_weights)
        half = np.random.default_rng(0).permutation(len(target_rgb))
        a, b = batched(feats, target_rgb[half[::2]]), batched(feats, target_rgb[half[1::2]])
        scores["kid_paintings_split_half"] = kernel_inception_distance(
            a, b, min(tr.kid_subset_size, len(b)), tr.kid_subsets
        )[0]
    else:
        back = domain_to_rgb(translate_batched(models["F"], pred), "stylize")
        scores["cycle_l1"] = l1(back, rgb)
    scores["samples"] = (x, pred, photo_to_domain(target_rgb, "stylize"))
    return scores


def evaluate_painter(
    paint: Callable[[torch.Tensor], torch.Tensor], params: Params, data_root: str | Path
) -> dict[str, Any]:
    """A fixed photo -> painting map (RGB (N, 3, H, W) in [0, 1] -> the same), scored like a
    stylizer: for the oracles that know the renderer (see :func:`pipeline.data.painting.palette_rgb`)."""
    rgb, target_rgb = painted_twins(data_root)
    pred_rgb = paint(rgb)
    return {**score_paintings(pred_rgb, target_rgb, params), "moved": l1(pred_rgb, rgb)}


MIN_MOVE = 1e-3  # mean |G(x) - x| in RGB [0, 1]: below a tenth of a grey level per pixel is no translation
D_CHANCE = (
    0.24,
    0.26,
)  # LSGAN discriminator loss of a D that cannot separate real from fake: 0.25 (a constant 0.5 output)


def check_stylizer(scores: dict[str, Any], history: list[dict[str, float]], stage: str) -> None:
    """Stop a stylizer that sits in the trivial solution: it returns its input on the test photos
    (``scores['moved']`` < MIN_MOVE), or both discriminators ended at chance (the last epoch's
    ``loss_d_x`` and ``loss_d_y`` within D_CHANCE), so nothing pushed it towards the paintings."""
    if scores["moved"] < MIN_MOVE:
        raise UserError(
            f"{stage}: the stylizer returns its input (mean |G(x) - x| = {scores['moved']:.1e} < {MIN_MOVE}); no model is written"
        )
    last = history[-1]
    lo, hi = D_CHANCE
    if all(lo <= last[k] <= hi for k in ("loss_d_x", "loss_d_y")):
        raise UserError(
            f"{stage}: both discriminators stayed at chance (LSGAN loss {last['loss_d_x']:.3f} and {last['loss_d_y']:.3f}, "
            f"0.25 = no separation): the domains look alike to them; no model is written"
        )


def sample_rows(samples: tuple[torch.Tensor, ...], task: str, n: int = 8) -> dict[str, list[np.ndarray]]:
    """input | output | target rows of uint8 images for :func:`pipeline.plots.image_grid`."""
    names = ("input", "output", "target")

    return {name: rgb_images(domain_to_rgb(x[:n], task)) for name, x in zip(names, samples)}


def score_seeds(
    runs: list[tuple[TranslateJob, dict[str, Any]]], params: Params, data_root: str | Path, stage: str
) -> tuple[dict[str, dict[str, Any]], tuple[torch.Tensor, ...]]:
    """Score the final generators of every seed of a translation stage on the test photos
    (``train``'s [(job, final state)]); return ({seed: scores}, the first seed's sample images).

    One-line errors for a loss that became NaN and for a stylizer stuck at the identity."""
    per_seed, first_samples = {}, None
    for job, state in runs:
        history = state["history"]
        if not all(math.isfinite(r["loss_g"]) and math.isfinite(r["loss_d"]) for r in history):
            raise UserError(f"{stage}: a loss became NaN or infinite (seed {job.seed}); lower translate.lr")
        evaluate = evaluate_colorization if job.task == "colorize" else evaluate_stylization
        scores = evaluate(generators_from_state(job, state), params, data_root)
        if job.task == "stylize":
            check_stylizer(scores, history, f"{stage} seed {job.seed}")
        samples = scores.pop("samples")
        first_samples = first_samples or samples
        per_seed[str(job.seed)] = {**scores, "val_l1_last_epoch": history[-1]["val_l1"],
                                   "steps_per_s": history[-1]["steps_per_s"], "resumed_at_epochs": state["starts"][1:]}  # fmt: skip
    return per_seed, first_samples
