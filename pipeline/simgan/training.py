"""SimGAN's refiner training (Ray Train) and its driver.

Per step the refiner takes ``refiner_steps`` updates on the local adversarial loss (the patch
discriminator, its weights frozen) plus ``lambda_reg`` times the self-regularisation L1 to its
synthetic input; then the discriminator takes one update on real digits against refined ones, half
of them from the history buffer. Before that the refiner is pretrained on the self-regularisation
alone for ``pretrain_steps`` (it starts at the identity) and the discriminator for
``pretrain_disc_steps``, as in the paper. Images are (N, 1, H, W) in [-1, 1] inside the loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import collectives, distributed, storage
from pipeline.config import Params, SimganParams
from pipeline.data.shards import read_images
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError
from pipeline.fingerprint import run_name
from pipeline.invariance.classify import check_classes
from pipeline.loop import Bundle, TrainingRun, seed_for
from pipeline.models import frozen, in_chunks
from pipeline.models.gan import PatchDiscriminator, adversarial_loss
from pipeline.models.simgan import HistoryBuffer, Refiner

SETS = ("synthetic_digits", "real_digits")


def load_split(data_root: str | Path, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of a prepared digits set: images (N, 1, H, W) in [0, 1], labels (N,)."""
    images, labels, _ = read_images(storage.join(data_root, name), split)
    if not len(images):
        raise UserError(f"{Path(data_root) / name}: the {split} split is empty: rerun `dvc repro prepare`")
    check_classes(labels, f"{Path(data_root) / name} {split} split")
    return to_tensor(images, channels=1), torch.from_numpy(labels)


def build(sp: SimganParams) -> tuple[Refiner, PatchDiscriminator]:
    """The refiner and its local discriminator (logits per patch of 2**disc_layers px)."""
    torch.manual_seed(sp.seed)
    return Refiner(1, sp.width, sp.blocks), PatchDiscriminator(1, sp.disc_width, sp.disc_layers)


def refiner_losses(
    refined: torch.Tensor, synthetic: torch.Tensor, scores: torch.Tensor, lambda_reg: float
) -> dict[str, torch.Tensor]:
    """The refiner's loss: the local adversarial term (every patch of ``refined`` scored real, logits
    ``scores``) plus ``lambda_reg`` x the self-regularisation L1 between ``refined`` and its input."""
    adv = adversarial_loss(scores, True, "bce")
    reg = F.l1_loss(refined, synthetic)
    return {"loss_r": adv + lambda_reg * reg, "loss_adv": adv, "loss_reg": reg}


def discriminator_loss(real_scores: torch.Tensor, refined_scores: torch.Tensor) -> torch.Tensor:
    """Local adversarial loss of the discriminator: every patch of a real image real, of a refined one fake."""
    return 0.5 * (adversarial_loss(real_scores, True, "bce") + adversarial_loss(refined_scores, False, "bce"))


def refiner_step(refiner: nn.Module, disc: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, sp: SimganParams,
                 adversarial: bool = True) -> dict[str, torch.Tensor]:  # fmt: skip
    refined = refiner(x)
    if adversarial:
        with frozen(disc) as d:
            losses = refiner_losses(refined, x, d(refined), sp.lambda_reg)
    else:  # pretraining: the self-regularisation alone
        reg = F.l1_loss(refined, x)
        losses = {"loss_r": reg, "loss_reg": reg}
    opt.zero_grad(set_to_none=True)
    losses["loss_r"].backward()
    opt.step()
    return {k: v.detach() for k, v in losses.items()}


def discriminator_step(refiner: nn.Module, disc: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                       real: torch.Tensor, buffer: HistoryBuffer) -> dict[str, torch.Tensor]:  # fmt: skip
    with torch.no_grad():
        refined = buffer.mix(refiner(x))
    scores = disc(torch.cat([real, refined]))
    loss = discriminator_loss(scores[: len(real)], scores[len(real) :])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    acc = 0.5 * ((scores[: len(real)] > 0).float().mean() + (scores[len(real) :] < 0).float().mean())
    return {"loss_d": loss.detach(), "d_acc": acc.detach()}


@torch.no_grad()
def refiner_figures(refiner: nn.Module, synthetic: torch.Tensor) -> dict[str, float]:
    """What the trivial-solution guard reads, on [0, 1] images (N, 1, H, W): ``moved``, the mean
    |R(x) - x|, and ``spread_ratio``, the refined images' mean distance to each other over the
    synthetic ones' (1 keeps their diversity, 0 is one image for all)."""
    refined = (refiner(synthetic * 2 - 1) + 1) / 2
    n = len(synthetic)
    shift = torch.roll(torch.arange(n), 1)
    spread = lambda t: float((t - t[shift]).abs().mean())  # noqa: E731 - distance to a neighbour in a fixed pairing
    return {
        "moved": float((refined - synthetic).abs().mean()),
        "spread_ratio": spread(refined) / max(spread(synthetic), 1e-12),
    }


def check_refiner(
    figures: dict[str, float], min_moved: float = 1e-3, min_spread: float = 0.2, name: str = "simgan"
) -> None:
    """One-line errors for the trivial solutions: a refiner that returns its input, or one whose
    outputs collapse towards one image."""
    if figures["moved"] < min_moved:
        raise UserError(f"{name}: the refiner returns its input (mean |R(x) - x| = {figures['moved']:.1e} < {min_moved}); "
                        "lower simgan.lambda_reg or train longer")  # fmt: skip
    if figures["spread_ratio"] < min_spread:
        raise UserError(f"{name}: the refined images collapsed (their spread is {figures['spread_ratio']:.2f} of the "
                        f"synthetic ones' < {min_spread}); raise simgan.lambda_reg")  # fmt: skip


@dataclass(frozen=True)
class SimganJob:
    """What each refiner worker receives."""

    data_root: str
    simgan: SimganParams
    cpus_per_worker: float
    mixed_precision: bool
    profile: bool = False  # the step profile's timings (see TrainingRun)


def train_loop(config: SimganJob, session: distributed.Session) -> None:
    """Per-worker SimGAN loop (Ray Train); checkpoints every epoch and resumes from the last."""
    sp = config.simgan
    w = session.worker(config.cpus_per_worker)
    refiner, disc = build(sp)
    opt_r = torch.optim.Adam(refiner.parameters(), lr=sp.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=sp.lr, betas=(0.5, 0.999))
    run = TrainingRun(w, sp.epochs, "simgan", profile=config.profile)
    run.restore(models=Bundle({"R": refiner, "D": disc}), opt_r=opt_r, opt_d=opt_d)
    buffer = HistoryBuffer(sp.buffer_size, seed=seed_for(sp.seed, w.rank, 3))
    saved = run.state.get("buffers") if run.resumed else None
    if saved and w.rank < len(saved):
        buffer.load_state_dict(saved[w.rank])
    buffer.to(w.device)
    wrapped_r, wrapped_d = distributed.prepare_model(refiner, w), distributed.prepare_model(disc, w)
    core_r = distributed.unwrap(wrapped_r)

    synthetic = load_split(config.data_root, "synthetic_digits", "train")[0].to(w.device) * 2 - 1
    real = load_split(config.data_root, "real_digits", "train")[0].to(w.device) * 2 - 1
    monitor = (
        synthetic[torch.randperm(len(synthetic), generator=torch.Generator().manual_seed(sp.seed))[:64].to(w.device)]
        + 1
    ) / 2
    batch = max(2, sp.batch_size // w.world_size)
    if not run.resumed:  # the paper's warm start: R towards the identity, then D on real against R's output
        g = torch.Generator(w.device).manual_seed(seed_for(sp.seed, w.rank, 5))
        for _ in range(sp.pretrain_steps):
            refiner_step(
                wrapped_r,
                wrapped_d,
                opt_r,
                synthetic[torch.randint(len(synthetic), (batch,), generator=g, device=w.device)],
                sp,
                False,
            )
        for _ in range(sp.pretrain_disc_steps):
            x = synthetic[torch.randint(len(synthetic), (batch,), generator=g, device=w.device)]
            y = real[torch.randint(len(real), (batch,), generator=g, device=w.device)]
            discriminator_step(wrapped_r, wrapped_d, opt_d, x, y, buffer)
    for epoch in run.epochs():
        g = run.generator(sp.seed, epoch)
        torch.manual_seed(seed_for(sp.seed, epoch, w.rank, 1))
        for _ in range(sp.steps_per_epoch):
            with distributed.autocast(w, config.mixed_precision):
                for _ in range(sp.refiner_steps):
                    with run.data():
                        x = synthetic[torch.randint(len(synthetic), (batch,), generator=g, device=w.device)]
                    run.meter.add(refiner_step(wrapped_r, wrapped_d, opt_r, x, sp))
                with run.data():
                    x = synthetic[torch.randint(len(synthetic), (batch,), generator=g, device=w.device)]
                    y = real[torch.randint(len(real), (batch,), generator=g, device=w.device)]
                run.meter.add(discriminator_step(wrapped_r, wrapped_d, opt_d, x, y, buffer))
        row = run.summary(epoch, sp.steps_per_epoch, sp.steps_per_epoch * batch * (sp.refiner_steps + 1))
        row["history_share"] = buffer.history_share  # rank 0's, over the run
        buffers = collectives.all_gather_object(buffer.state_dict())
        if w.is_main:
            row.update(refiner_figures(copy.deepcopy(core_r).cpu().eval(), monitor.cpu()))
        run.report(row, ("loss_adv", "loss_reg", "loss_d", "d_acc", "moved"), models=Bundle({"R": core_r, "D": distributed.unwrap(wrapped_d)}),
                   opt_r=opt_r, opt_d=opt_d, extra={"buffers": buffers})  # fmt: skip


def job_config(params: Params, data_root: str | Path) -> SimganJob:
    """The refiner job (after one-line checks of the data, not in a worker)."""
    for name, split in (("synthetic_digits", "train"), ("real_digits", "train"), ("real_digits", "test")):
        load_split(data_root, name, split)
    return SimganJob(
        data_root=storage.publish_data(data_root, list(SETS)),
        simgan=params.simgan,
        cpus_per_worker=params.distributed.cpus_per_worker,
        mixed_precision=params.distributed.mixed_precision,
    )


def train(params: Params, data_root: str | Path, storage: str | Path) -> dict[str, Any]:
    """Train the refiner through Ray Train; returns the final state (models, history, buffers, ...)."""
    job = job_config(params, data_root)
    name = run_name("simgan", job, train_loop, [Path(data_root) / s for s in SETS])
    return distributed.fit(train_loop, job, params.distributed, name, storage)


def refiner_from_state(state: dict[str, Any], sp: SimganParams) -> Refiner:
    refiner, _ = build(sp)
    refiner.load_state_dict(state["models"]["R"])
    return refiner.eval()


@torch.no_grad()
def refine(refiner: nn.Module, synthetic: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Refined digits as uint8 (N, H, W) from synthetic ones (N, 1, H, W) in [0, 1]."""
    out = in_chunks(lambda s: (refiner(s * 2 - 1) + 1) / 2, synthetic, batch)
    return (out[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
