"""Generative invariance transfer, part 1: MUNIT on the long-tailed set, and tail augmentation.

MUNIT is trained on the ``digits_lt`` train split as ONE domain (seed 000): images are drawn
class-balanced, the content of x is decoded with a random style, and the adversarial loss asks
that result to look like a training image. Its style space should so learn the nuisance
distribution T(.|x) shared by all classes, which :func:`augment_records` then applies to the
tail classes: content of a real tail image + a random style, label kept.

Images are (N, 1, H, W) in [-1, 1] here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed, storage
from pipeline.config import MunitParams, Params
from pipeline.data.augment import balanced_draw
from pipeline.data.shards import Record, read_images
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError
from pipeline.fingerprint import run_name
from pipeline.loop import Schedule, TrainingRun, seed_for
from pipeline.metrics.seeds import t_interval
from pipeline.model_files import load_model
from pipeline.models import evaluating, frozen
from pipeline.models.gan import PatchDiscriminator, adversarial_loss
from pipeline.models.munit import MUNIT, MunitPass


def load_digits(data_root: str | Path, split: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(N, 1, H, W) images in [-1, 1], labels (N,) and sources of one digits_lt split."""
    images, labels, sources = read_images(storage.join(data_root, "digits_lt"), split)
    return to_tensor(images, channels=1) * 2 - 1, labels, sources


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """An image (1, H, W) in [-1, 1] -> uint8 (H, W)."""
    return ((x[0] + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def build_munit(mp: MunitParams, channels: int = 1) -> tuple[MUNIT, PatchDiscriminator]:
    torch.manual_seed(mp.seed)
    model = MUNIT(channels, mp.dim, mp.style_dim, mp.n_down, mp.n_res, mp.mlp_dim)
    disc = PatchDiscriminator(channels, mp.disc_width, n_layers=3)
    return model, disc


def munit_step(
    gen: torch.nn.Module, disc: torch.nn.Module, opts: tuple, x: torch.Tensor, mp: MunitParams, style_dim: int
) -> dict[str, torch.Tensor]:
    """One MUNIT update on a batch of one domain: D (LSGAN) on real vs restyled, then encoders + decoder.

    ``gen`` is a (possibly DDP-wrapped) :class:`MunitPass`. Losses: gan, recon_x |G(c, s) - x|,
    recon_c |E_c(G(c, s')) - c|, recon_s |E_s(G(c, s')) - s'|, and (weight ``cycle``) the cycle
    |G(E_c(G(c, s')), s) - x|; s' ~ N(0, I).
    """
    opt_g, opt_d = opts
    s_rand = torch.randn(len(x), style_dim, device=x.device)
    out = gen(x, s_rand)
    scores = disc(torch.cat([x, out["x_fake"].detach()]))
    loss_d = (
        mp.gan
        * (  # weighted as the generator's adversarial term, as NVlabs/MUNIT's gan_w
            adversarial_loss(scores[: len(x)], True, "lsgan") + adversarial_loss(scores[len(x) :], False, "lsgan")
        )
    )
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with frozen(disc) as bare_disc:
        gan = adversarial_loss(bare_disc(out["x_fake"]), True, "lsgan")
    losses = {
        "gan": gan,
        "recon_x": F.l1_loss(out["x_rec"], x),
        "recon_c": F.l1_loss(out["c_rec"], out["c"]),
        "recon_s": F.l1_loss(out["s_rec"], s_rand),
    }
    if "x_cyc" in out:
        losses["cycle"] = F.l1_loss(out["x_cyc"], x)
    loss_g = sum(getattr(mp, k) * v for k, v in losses.items())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        **{f"loss_{k}": v.detach() for k, v in losses.items()},
    }


def style_spread(model: MUNIT, x: torch.Tensor, n_styles: int, seed: int = 0) -> torch.Tensor:
    """Per content (N,): mean L1 (in [0, 1] units) between its decodings under different random
    styles, over all style pairs. ~0 means the decoder ignores the style."""
    gen = torch.Generator().manual_seed(seed)
    with evaluating(model):
        c, _ = model.encode(x)
        outs = [model.decode(c, torch.randn(len(x), model.style_dim, generator=gen)) for _ in range(n_styles)]
    pairs = [(outs[i] - outs[j]).abs().mean((1, 2, 3)) / 2 for i in range(n_styles) for j in range(i + 1, n_styles)]
    return torch.stack(pairs).mean(0)


def reconstruction_error(model: MUNIT, x: torch.Tensor) -> torch.Tensor:
    """Per image (N,): |decode(encode(x)) - x| in [0, 1] units, eval mode."""
    with evaluating(model):
        return (model.decode(*model.encode(x)) - x).abs().mean((1, 2, 3)) / 2


def style_diversity(model: MUNIT, x: torch.Tensor, n_styles: int, seed: int = 0) -> float:
    """Style-collapse monitor: :func:`style_spread` averaged over the contents."""
    return float(style_spread(model, x, n_styles, seed).mean())


def reconstruction_l1(model: MUNIT, x: torch.Tensor) -> float:
    return float(reconstruction_error(model, x).mean())


def style_recovery(model: MUNIT, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per content (N,): |E_s(G(c, s')) - s'| for a random style s' ~ N(0, I), and |s'|, the error of
    a style encoder that recovers nothing (predicting 0; E|N(0, 1)| = 0.798 on average). Eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with evaluating(model):
        c, _ = model.encode(x)
        s_rand = torch.randn(len(x), model.style_dim, generator=gen)
        return (model.style_encoder(model.decode(c, s_rand)) - s_rand).abs().mean(1), s_rand.abs().mean(1)


def style_figures(model: MUNIT, x: torch.Tensor, n_styles: int) -> dict[str, Any]:
    """What :func:`check_style_alive` judges, on ``x`` in eval mode: ``style_diversity``, ``recon_l1``,
    ``recon_s`` against ``recon_s_unrecovered`` (predicting 0 on the same draws) with the 95 % t
    interval of their per-content difference, and ``style_margin_per_image`` (style spread -
    reconstruction error, per content)."""
    spread, recon = style_spread(model, x, n_styles), reconstruction_error(model, x)
    rec_s, zero_s = style_recovery(model, x)
    _, lo, hi = t_interval((rec_s - zero_s).tolist())
    return {"style_diversity": float(spread.mean()), "recon_l1": float(recon.mean()), "recon_s": float(rec_s.mean()),
            "recon_s_unrecovered": float(zero_s.mean()), "recon_s_gain_ci95": [-hi, -lo],
            "style_margin_per_image": (spread - recon).tolist()}  # fmt: skip


def check_style_alive(figures: dict[str, Any], name: str = "augment") -> None:
    """The trivial-solution guard of GIT (on :func:`style_figures`): stop with one line when MUNIT's
    style is dead, i.e. when

    - a random restyle moves the image less than the decoder's own reconstruction error
      (``style_diversity`` < ``recon_l1``): the style changes nothing one could tell from noise; or
    - the style encoder's error on a random style is not clearly below that of predicting 0
      (the 95 % interval of the gain ``recon_s_gain_ci95`` reaches 0): the decoder does not carry
      a style that can be read back."""
    if figures["style_diversity"] < figures["recon_l1"]:
        raise UserError(
            f"{name}: MUNIT's style is dead: random styles move the image by {figures['style_diversity']:.4f} (L1), less than "
            f"its reconstruction error {figures['recon_l1']:.4f}; train MUNIT longer or check its AdaIN path"
        )
    if figures["recon_s_gain_ci95"][0] <= 0:
        lo, hi = figures["recon_s_gain_ci95"]
        raise UserError(
            f"{name}: MUNIT's style is dead: its style encoder recovers a random style to L1 {figures['recon_s']:.3f}, not clearly "
            f"below predicting 0 ({figures['recon_s_unrecovered']:.3f}; 95 % CI of the gain [{lo:+.3f}, {hi:+.3f}]); "
            "train MUNIT longer or check its AdaIN path"
        )


def train_loop(config: MunitJob, session: distributed.Session) -> None:
    """Per-worker MUNIT loop (Ray Train); checkpoints every epoch and resumes from the last."""
    mp = config.munit
    w = session.worker(config.cpus_per_worker)
    model, disc = build_munit(mp)
    opt_g = torch.optim.Adam(model.parameters(), lr=mp.lr, betas=tuple(mp.betas), weight_decay=mp.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=mp.lr, betas=tuple(mp.betas), weight_decay=mp.weight_decay)
    schedule = Schedule(
        mp.lr, mp.epochs, kind="step", milestones=(mp.epochs // 2,), gamma=0.5
    )  # MUNIT's step decay, by epoch
    run = TrainingRun(w, mp.epochs, "munit", profile=config.profile)
    run.restore(model=model, disc=disc, opt_g=opt_g, opt_d=opt_d)
    wrapped_g = distributed.prepare_model(MunitPass(model, mp.cycle > 0), w)
    wrapped_d = distributed.prepare_model(disc, w)
    core = distributed.unwrap(wrapped_g).munit

    x_all, labels, _ = load_digits(config.data_root, "train")
    monitor = x_all[balanced_draw(torch.from_numpy(labels), 32, torch.Generator().manual_seed(mp.seed + 7))]
    x_all, labels = x_all.to(w.device), torch.from_numpy(labels).to(w.device)
    batch = max(1, mp.batch_size // w.world_size)
    for epoch in run.epochs():
        g = run.generator(mp.seed, epoch)
        torch.manual_seed(seed_for(mp.seed, epoch, w.rank))
        schedule.apply(opt_d, epoch)
        lr = schedule.apply(opt_g, epoch)
        for _ in range(mp.steps_per_epoch):
            with run.data():
                x = x_all[balanced_draw(labels, batch, g)]
            with distributed.autocast(w, config.mixed_precision):
                run.meter.add(munit_step(wrapped_g, wrapped_d, (opt_g, opt_d), x, mp, model.style_dim))
        row = run.summary(epoch, mp.steps_per_epoch, mp.steps_per_epoch * batch, lr=lr)
        if w.is_main:
            cpu, _ = build_munit(mp)  # a fresh copy: AdaIN keeps non-leaf tensors, which deepcopy refuses
            cpu.load_state_dict({k: v.detach().cpu() for k, v in core.state_dict().items()})
            row["style_diversity"] = style_diversity(cpu, monitor, mp.diversity_styles, seed=epoch)
            row["recon_l1"] = reconstruction_l1(cpu, monitor)
        run.report(
            row,
            ("loss_g", "loss_d", "recon_l1", "style_diversity"),
            model=core,
            disc=distributed.unwrap(wrapped_d),
            opt_g=opt_g,
            opt_d=opt_d,
        )


@dataclass(frozen=True)
class MunitJob:
    """What each MUNIT worker receives."""

    data_root: str
    munit: MunitParams
    cpus_per_worker: float
    mixed_precision: bool
    profile: bool = False  # the step profile's timings (see TrainingRun)


def job_config(params: Params, data_root: str | Path) -> MunitJob:
    """The MUNIT job (after a one-line check of the data, not in a worker)."""
    load_digits(data_root, "train")
    return MunitJob(
        data_root=storage.publish_data(data_root, ["digits_lt"]),
        munit=params.munit,
        cpus_per_worker=params.distributed.cpus_per_worker,
        mixed_precision=params.distributed.mixed_precision,
    )


def train(params: Params, data_root: str | Path, storage: str | Path) -> dict[str, Any]:
    """Train MUNIT through Ray Train; returns the final state (model, history, ...)."""
    job = job_config(params, data_root)
    name = run_name("munit", job, train_loop, [Path(data_root) / "digits_lt"])
    return distributed.fit(train_loop, job, params.distributed, name, storage)


def load_munit(path: str | Path) -> MUNIT:
    """The generator saved by the munit stage, in eval mode."""
    return load_model(path, "munit").networks()["munit"]


def tail_classes(labels: np.ndarray, threshold: int) -> list[int]:
    """Classes with fewer than ``threshold`` training images; one-line errors when that is none or all."""
    classes, counts = np.unique(labels, return_counts=True)
    tail = [int(c) for c, n in zip(classes, counts) if n < threshold]
    if not tail:
        raise UserError(
            f"augment.threshold={threshold} is at or below every class size (smallest {counts.min()}): no tail class to augment"
        )
    if len(tail) == len(classes):
        raise UserError(
            f"augment.threshold={threshold} is above every class size (largest {counts.max()}): every class would be tail"
        )
    return tail


@torch.no_grad()
def augment_records(model: MUNIT, data_root: str | Path, threshold: int, per_image: int, seed: int) -> list[Record]:
    """``per_image`` restyled copies of every training image of every tail class, with provenance.

    Each record keeps the label, the source image (``source`` and ``transform.source_row``) and
    the seed of its N(0, I) style (``transform_seed``), from which it can be regenerated.
    """
    x, labels, sources = load_digits(data_root, "train")
    records = []
    for c in tail_classes(labels, threshold):
        for row in np.flatnonzero(labels == c):
            content, _ = model.encode(x[row : row + 1])
            for k in range(per_image):
                style_seed = int(np.random.default_rng([seed, int(row), k]).integers(0, 2**31 - 1))
                style = torch.randn(1, model.style_dim, generator=torch.Generator().manual_seed(style_seed))
                img = to_uint8(model.decode(content, style)[0])
                records.append(Record(img, "munit", "train", sources[row], int(c), None,
                                      {"model": "munit", "source_row": int(row), "style": k}, style_seed))  # fmt: skip
    return records
