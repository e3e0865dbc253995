"""ACE training: the Auto-Contrastive-Encoder (Xu et al.), zero-shot image translation on a frozen encoder.

The frozen encoder is our SSL backbone at one pyramid level (the paper's VGG cannot be
downloaded here; the paper notes any encoder fits). On its feature map f (N, F, h, w):

- content encoder C: 1x1 conv + residual blocks with BatchNorm -> content code (N, D, h, w),
  with a SimSiam predictor P (1x1 convs, bottleneck, BatchNorm between);
- style encoder S: global mean and std pooling + 1x1 conv -> (N, style_dim), plus a learnable
  domain style code (paper section 4.1);
- decoder: MUNIT's AdaIN residual blocks + upsampling convs (no instance or batch norm), its
  AdaIN parameters from an MLP of the style code;
- discriminator: PatchGAN with spectral norm, LSGAN.

Training on ONE domain (photos), each step: (1) contrastive: two Adaptive-Instance-Augmentation
views of the batch (its content decoded with random N(0, 1) AdaIN parameters) are encoded, and
their content codes pulled together by the SimSiam loss with stop-gradient; only C and P learn
from it. (2) auto-encoder, with C frozen (paper section 3.5): reconstruction, content and style
latent consistency of the image decoded with another image's style, GAN. (3) discriminator.
Fine-tuning (paper section 4.5) on a target domain keeps only the latent-consistency and GAN
losses: content from source images, style from target images.

Images are (N, 3, H, W) RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pipeline import distributed, storage
from pipeline.collectives import average_gradients
from pipeline.config import AceFinetuneParams, AceParams, Params
from pipeline.data.augment import crop_flip
from pipeline.data.shards import read_images
from pipeline.data.sources import BadImages, load_folder
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError
from pipeline.fingerprint import run_name
from pipeline.loop import Bundle, TrainingRun, seed_for
from pipeline.metrics.image import l1
from pipeline.model_files import load_model, save_model
from pipeline.models import evaluating, in_chunks
from pipeline.models.ace import ACE, build
from pipeline.models.gan import adversarial_loss
from pipeline.models.resnet import ResNet
from pipeline.ssl.simsiam import simsiam_loss

VAL_SIZE = 64


def frozen_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its weights held fixed: gradients reach ``x`` only and its buffers (BatchNorm
    running statistics) are left untouched."""
    state = {k: v.detach() for k, v in module.named_parameters()} | {k: v.clone() for k, v in module.named_buffers()}
    return functional_call(module, state, (x,))


def adaptive_instance_augmentation(h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """AdaIN with N(0, 1) parameters: instance-normalise (N, C, H, W) and apply a random per-sample,
    per-channel scale (1 + N(0, 1), as the decoder's AdaIN parametrises it) and shift (N(0, 1)).
    The channel statistics (style) change; each channel's spatial pattern is kept up to an affine map."""
    scale = 1 + torch.randn(h.shape[:2], generator=generator).to(h.device)
    shift = torch.randn(h.shape[:2], generator=generator).to(h.device)
    return F.instance_norm(h) * scale[:, :, None, None] + shift[:, :, None, None]


# ----------------------------------------------------------------------------- steps


def contrastive_step(
    ace: ACE, opt: torch.optim.Optimizer, x: torch.Tensor, weight: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """SimSiam on two Adaptive-Instance-Augmentation views of ``x``; updates C and P only."""
    with torch.no_grad():
        c = ace.content(x)
        views = [ace.augment(c, generator), ace.augment(c, generator)]
    z1, z2 = ace.content(views[0]), ace.content(views[1])
    p1, p2 = ace.predictor(z1), ace.predictor(z2)

    def flat(t: torch.Tensor) -> torch.Tensor:  # every location is a sample: (N, D, h, w) -> (N h w, D)
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

    loss = simsiam_loss(flat(p1), flat(p2), flat(z1), flat(z2))
    opt.zero_grad(set_to_none=True)
    (weight * loss).backward()
    average_gradients(ace.contrastive_parameters())
    opt.step()
    return {"loss_contrastive": loss.detach(), "content_std": content_std(z1.detach())}


def content_std(z: torch.Tensor) -> torch.Tensor:
    """SimSiam's collapse monitor on content codes (0-d): std over the batch of the l2-normalised, pooled
    code, times sqrt(D): about 1 for spread codes, 0 when every image gets the same code."""
    v = F.normalize(z.mean(dim=(2, 3)), dim=1)
    return v.std(dim=0).mean() * v.shape[1] ** 0.5


def latent_losses(ace: ACE, out: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Content and style consistency of a decoded image ``out`` = decode(c, s); C is called frozen."""
    f = ace.features(out)
    return F.l1_loss(frozen_call(ace.content_encoder, f), c), F.l1_loss(ace.style_of(f), s)


def generator_update(ace: ACE, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(ace.autoencoder_parameters())
    opt.step()


def discriminator_update(
    disc: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    loss = 0.5 * (adversarial_loss(disc(real), True, "lsgan") + adversarial_loss(disc(fake.detach()), False, "lsgan"))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(disc.parameters())
    opt.step()
    return loss.detach()


def own_codes(ace: ACE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Content code (N, D, h, w; C frozen, no gradient) and style code (N, style_dim) of each image
    of ``x`` (N, 3, H, W), from one pass of the frozen backbone."""
    f = ace.features(x)
    with torch.no_grad():
        c = frozen_call(ace.content_encoder, f)
    return c, ace.style_of(f)


def autoencoder_step(ace: ACE, disc: nn.Module, opts: tuple, x: torch.Tensor, w: AceParams) -> dict[str, torch.Tensor]:
    """Reconstruction + latent consistency of x decoded with another image's style + GAN, C frozen."""
    opt_ae, opt_d = opts
    c, s = own_codes(ace, x)
    s_other = s.roll(1, dims=0).detach()
    rec, swap = ace.decode(c, s), ace.decode(c, s_other)
    l_rec = F.l1_loss(rec, x)
    l_content, l_style = latent_losses(ace, swap, c, s_other)
    fakes = torch.cat([rec, swap])
    l_gan = adversarial_loss(disc(fakes), True, "lsgan")
    loss = w.recon * l_rec + w.content * l_content + w.style * l_style + w.gan * l_gan
    generator_update(ace, opt_ae, loss)
    l_d = discriminator_update(disc, opt_d, x, fakes)
    return {
        k: v.detach()
        for k, v in (
            ("loss_recon", l_rec),
            ("loss_content", l_content),
            ("loss_style", l_style),
            ("loss_gan", l_gan),
            ("loss_d", l_d),
        )
    }


def finetune_step(
    ace: ACE, disc: nn.Module, opts: tuple, x: torch.Tensor, y: torch.Tensor, w: AceParams, recon: float = 0.0
) -> dict[str, torch.Tensor]:
    """Paper section 4.5: content of source ``x``, style of target ``y``; latent consistency + GAN only.

    ``recon`` > 0 adds a reconstruction anchor on both domains (not in the paper): each image of
    ``x`` and ``y`` decoded from its own content and style code, L1 to itself."""
    opt_ae, opt_d = opts
    with torch.no_grad():
        c = frozen_call(ace.content_encoder, ace.features(x))
    s = ace.style(y)
    out = ace.decode(c, s)
    l_content, l_style = latent_losses(ace, out, c, s.detach())
    l_gan = adversarial_loss(disc(out), True, "lsgan")
    loss = w.content * l_content + w.style * l_style + w.gan * l_gan
    row = {}
    if recon > 0:
        both = torch.cat([x, y])
        l_rec = F.l1_loss(ace.decode(*own_codes(ace, both)), both)
        loss = loss + recon * l_rec
        row["loss_recon"] = l_rec.detach()
    generator_update(ace, opt_ae, loss)
    l_d = discriminator_update(disc, opt_d, y, out)
    return {
        "loss_content": l_content.detach(),
        "loss_style": l_style.detach(),
        "loss_gan": l_gan.detach(),
        "loss_d": l_d,
        **row,
    }


# ----------------------------------------------------------------------------- monitors


@torch.no_grad()
def style_diversity(ace: ACE, x: torch.Tensor, styles: torch.Tensor) -> float:
    """Mean L1 between decodes of the same contents under different style codes (0 = style ignored).
    x: (N, 3, H, W); styles: (K, style_dim)."""
    c = ace.content(x)
    outs = [ace.decode(c, s.expand(len(c), -1)) for s in styles]
    pairs = [(i, j) for i in range(len(outs)) for j in range(i + 1, len(outs))]
    return float(np.mean([l1(outs[i], outs[j]) for i, j in pairs])) if pairs else 0.0


@torch.no_grad()
def content_similarity(ace: ACE, outputs: torch.Tensor, contents: torch.Tensor) -> tuple[float, float]:
    """Cosine similarity of the instance-normalised backbone features of each output to its own content
    image, and (the chance level) to the other content images. outputs, contents: (N, 3, H, W)."""

    def code(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.instance_norm(ace.features(x)).flatten(1), dim=1)

    sim = code(outputs) @ code(contents).T  # (N, N)
    own = sim.diagonal()
    others = (sim.sum() - own.sum()) / max(1, sim.numel() - len(own))
    return float(own.mean()), float(others)


def translate(ace: ACE, x: torch.Tensor, style: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Decode the contents of ``x`` (N, 3, H, W) with one style code (style_dim,)."""
    with evaluating(ace):
        return in_chunks(lambda c: ace.decode(ace.content(c), style.expand(len(c), -1)), x, batch)


def reconstruct(ace: ACE, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Decode every image of ``x`` (N, 3, H, W) with its own content and its own style code."""
    with evaluating(ace):
        return in_chunks(lambda c: ace.decode(*own_codes(ace, c)), x, batch)


def domain_style(ace: ACE, exemplars: torch.Tensor) -> torch.Tensor:
    """The mean style code (style_dim,) of the exemplar images (K, 3, H, W)."""
    with evaluating(ace):
        return ace.style(exemplars).mean(0)


def best_style_per_image(
    ace: ACE, x: torch.Tensor, target: torch.Tensor, start: torch.Tensor, steps: int, lr: float
) -> torch.Tensor:
    """The floor of any choice of style: each image of ``x`` (N, 3, H, W) decoded with its content and
    a style code optimised (Adam, from ``start`` (style_dim,)) to minimise its L1 to ``target``.
    Returns the decoded images. No translator picking one style per image can get closer."""
    with evaluating(ace):
        content = ace.content(x)
    codes = start.detach().expand(len(x), -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([codes], lr=lr)
    was, trainable = ace.training, [p for p in ace.parameters() if p.requires_grad]
    ace.eval()
    for p in trainable:  # the model stays fixed: gradients reach the codes only
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = (
                (ace.decode(content, codes) - target).abs().mean(dim=(1, 2, 3)).sum()
            )  # a sum over images: each code its own problem
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in trainable:
            p.requires_grad_(True)
        ace.train(was)
    with evaluating(ace):
        return ace.decode(content, codes)


def adain_transfer(encoder: ACE, x: torch.Tensor, exemplars: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Classic AdaIN feature-statistics transfer with no trained network: the backbone features of
    each photo get the exemplars' channel mean / std, and an image is optimised (Adam, from the photo)
    until its features match them. Only ``encoder.features`` (the frozen backbone) is used."""
    with torch.no_grad():
        fe = encoder.features(exemplars)
        mu_t, sd_t = fe.mean(dim=(0, 2, 3)), fe.std(dim=(0, 2, 3))
        f = encoder.features(x)
        target = F.instance_norm(f) * sd_t[None, :, None, None] + mu_t[None, :, None, None]
    img = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=lr)
    for _ in range(steps):
        loss = F.mse_loss(encoder.features(img), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
    return img.detach()


# ----------------------------------------------------------------------------- data


def load_photos(data_root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Photo train patches: (train, val) tensors; the last ``VAL_SIZE`` (by a fixed permutation) are held out."""
    images, _, _ = read_images(storage.join(data_root, "photos"), "train")
    x = to_tensor(images)
    order = np.random.default_rng(0).permutation(len(x))
    n_val = min(VAL_SIZE, len(x) // 4)
    return x[order[n_val:]], x[order[:n_val]]


def pick_exemplars(exemplars: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The ``n`` exemplars (n, 3, H, W) of (K, 3, H, W) whose mean style code is the target style:
    a random pick seeded by ``seed`` (``ace.seed``)."""
    return exemplars[np.random.default_rng(seed).permutation(len(exemplars))[:n]]


def load_exemplars(path: str | Path, split: str = "train") -> torch.Tensor:
    """Style exemplars (K, 3, H, W): a prepared set's shards (``split``) or a folder of image files.
    One-line errors for a missing or empty folder and for a file that is not an image."""
    if storage.is_uri(path):  # a prepared set a Ray worker reads from the storage URI
        return to_tensor(read_images(path, split)[0])
    path = Path(path)
    if not path.exists():
        raise UserError(f"style exemplar folder not found: {path}")
    if sorted(path.glob("*.parquet")):
        images, _, _ = read_images(path, split)
        if not images:
            raise UserError(f"no style exemplars in {path} ({split} split is empty)")
        return to_tensor(images)
    if not any(p.is_file() and not p.name.startswith(".") for p in path.iterdir()):
        raise UserError(f"style exemplar folder {path} is empty")
    named = load_folder(path, BadImages("fail"), labeled=False)
    sizes = {im.image.shape[:2] for im in named}
    if len(sizes) > 1:
        raise UserError(f"style exemplars in {path} differ in size ({sorted(sizes)[:2]}...): give images of one size")
    return to_tensor([im.image for im in named])


# ----------------------------------------------------------------------------- Ray Train loop


def train_loop(config: AceJob, session: distributed.Session) -> None:
    """Per-worker loop (Ray Train) of ``ace`` (mode pretrain) or ``ace_finetune`` (mode finetune);
    checkpoints every epoch and resumes from the last."""
    ac, mode, seed = config.ace, config.mode, config.seed
    budget = ac if mode == "pretrain" else config.finetune  # batch_size, epochs, steps_per_epoch, lr
    w = session.worker(config.cpus_per_worker)
    backbone = ResNet.from_spec(config.backbone_spec)
    backbone.load_state_dict(config.backbone_state)
    torch.manual_seed(seed)  # every rank builds the same initial weights (gradients are averaged, not DDP-broadcast)
    ace, disc = build(ac, backbone)
    if mode == "finetune":
        ace.load_state_dict(config.init_state)
    ace, disc = ace.to(w.device), disc.to(w.device)
    betas = tuple(ac.betas)
    opt_c = torch.optim.Adam(ace.contrastive_parameters(), lr=budget.lr, betas=betas)
    opt_ae = torch.optim.Adam(ace.autoencoder_parameters(), lr=budget.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=budget.lr, betas=betas)
    opts = Bundle({"c": opt_c, "ae": opt_ae, "d": opt_d})
    run = TrainingRun(w, budget.epochs, f"ace {mode}", profile=config.profile)
    run.restore(ace=ace, disc=disc, opts=opts)

    x_train, x_val = load_photos(config.data_root)
    x_train = x_train.to(w.device)
    y_train = load_exemplars(storage.join(config.data_root, "painting")).to(w.device) if mode == "finetune" else None
    batch = max(2, budget.batch_size // w.world_size)
    crop = ac.crop_size
    for epoch in run.epochs():
        g = run.generator(seed, epoch, mode == "finetune")
        torch.manual_seed(seed_for(seed, epoch, mode == "finetune", w.rank))
        ace.train()
        disc.train()
        for _ in range(budget.steps_per_epoch):
            with run.data():
                x = crop_flip(x_train[torch.randint(len(x_train), (batch,), generator=g, device=w.device)], crop, g)
                if mode == "finetune":
                    y = crop_flip(y_train[torch.randint(len(y_train), (batch,), generator=g, device=w.device)], crop, g)
            if mode == "pretrain":
                run.meter.add(contrastive_step(ace, opt_c, x, ac.contrastive, g))
                run.meter.add(autoencoder_step(ace, disc, (opt_ae, opt_d), x, ac))
            else:
                run.meter.add(finetune_step(ace, disc, (opt_ae, opt_d), x, y, ac, config.finetune.recon))
        row = run.summary(epoch, budget.steps_per_epoch, budget.steps_per_epoch * batch)
        if w.is_main:
            cpu = build(ac, ResNet.from_spec(config.backbone_spec))[0]
            cpu.load_state_dict({k: v.detach().cpu() for k, v in ace.state_dict().items()})
            cpu.eval()
            val = x_val[:32]
            with torch.no_grad():
                row["val_recon_l1"] = l1(cpu.decode(cpu.content(val), cpu.style(val)), val)
                row["val_content_std"] = float(content_std(cpu.content(val)))
                styles = cpu.style(val[: ac.diversity_styles])
            row["style_diversity"] = style_diversity(cpu, val[:16], styles)
        run.report(row, tuple(k for k in row if k.startswith(("loss", "val", "style"))), ace=ace, disc=disc, opts=opts)


# ----------------------------------------------------------------------------- driver side


@dataclass(frozen=True)
class AceJob:
    """What each ACE worker receives for one seed; the weights travel in it (no shared disk needed)."""

    mode: str  # pretrain (stage ace) | finetune (stage ace_finetune)
    data_root: str
    seed: int
    ace: AceParams
    finetune: AceFinetuneParams  # the fine-tuning's budget and weights (mode finetune)
    backbone_spec: dict[str, Any]
    backbone_state: dict[str, torch.Tensor]
    init_state: dict[str, torch.Tensor] | None  # the pretrained ACE a fine-tuning starts from
    cpus_per_worker: float
    profile: bool = False  # the step profile's timings (see TrainingRun)


def job_config(
    params: Params,
    mode: str,
    data_root: str | Path,
    backbone: ResNet,
    init_state: dict[str, Any] | None = None,
    seed: int | None = None,
) -> AceJob:
    """The job of one seed (default: the first of ``ace.seeds``), after one-line checks of the data."""
    photos, _, _ = read_images(Path(data_root) / "photos", "train")
    if min(min(p.shape[:2]) for p in photos) < params.ace.crop_size:
        raise UserError(f"ace.crop_size={params.ace.crop_size} is larger than the photo patches: lower it")
    if mode == "finetune":
        load_exemplars(Path(data_root) / "painting")
    return AceJob(
        mode=mode,
        data_root=storage.publish_data(data_root, ["photos", "painting"] if mode == "finetune" else ["photos"]),
        seed=params.ace.seeds[0] if seed is None else seed,
        ace=params.ace,
        finetune=params.ace_finetune,
        backbone_spec=backbone.spec(),
        backbone_state=backbone.state_dict(),
        init_state=init_state,
        cpus_per_worker=params.distributed.cpus_per_worker,
    )


def train(
    params: Params,
    mode: str,
    data_root: str | Path,
    backbone: ResNet,
    storage: str | Path,
    init_states: dict[int, dict[str, Any]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Train ACE (or fine-tune the model of each seed in ``init_states``) through Ray Train, once per
    seed of ``ace.seeds``, the seeds one after the other in one resumable run; returns {seed: final state}."""
    sets = ["photos", "painting"] if mode == "finetune" else ["photos"]
    missing = sorted(set(params.ace.seeds) - set(init_states)) if init_states is not None else []
    if missing:
        raise UserError(
            f"ace_finetune: the ACE to start from has no model of seed {missing[0]} (it has {sorted(init_states)}): rerun `dvc repro ace`"
        )
    jobs = [
        job_config(params, mode, data_root, backbone, None if init_states is None else init_states[seed], seed)
        for seed in params.ace.seeds
    ]
    name = run_name(f"ace_{mode}", {"seeds": jobs}, train_loop, [Path(data_root) / s for s in sets])
    return dict(zip(params.ace.seeds, distributed.fit_seeds(train_loop, jobs, params.distributed, name, storage)))


def save_ace(path: str | Path, params: Params, backbone: ResNet, states: dict[int, dict[str, Any]], mode: str) -> None:
    """One model file for the ACE of every seed (``states``: {seed: final state})."""
    meta = {
        "ace": params.ace.model_dump(),
        "backbone_spec": backbone.spec(),
        "encoder": params.ace.encoder,
        "mode": mode,
    }
    save_model(path, "ace", meta, {seed: {"ace": st["ace"]} for seed, st in states.items()})


def load_ace(path: str | Path) -> dict[int, ACE]:
    """The ACE models {seed: model} saved by the ace / ace_finetune stage, in eval mode."""
    model = load_model(path, "ace", "ace_finetune" if "finetune" in Path(path).name else "ace")
    return {seed: model.networks(seed)["ace"] for seed in model.seeds}
