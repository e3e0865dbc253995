"""Downstream translation with the transplanted backbone: colorization (pix2pix cGAN or CycleGAN
grey <-> colour, in Lab) and style transfer (CycleGAN photo <-> painting, in RGB).

Driver side: :func:`train` checks the inputs, then runs :func:`train_loop` on Ray Train;
:func:`evaluate_colorization` / :func:`evaluate_stylization` score the final generator on the
held-out test photos beside the trivial baselines.

Domains (all tensors (N, 3, H, W) in [-1, 1]):
- colorize: X = grey Lab (L / 50 - 1, 0, 0), Y = colour Lab (L / 50 - 1, a / 110, b / 110).
  G: X -> Y predicts ab and keeps the input L; F: Y -> X (CycleGAN only) predicts L, ab = 0.
- stylize: X = photos, Y = paintings, both RGB * 2 - 1.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import distributed
from pipeline.color import grey_of, lab_to_net, lab_to_rgb, net_to_lab, rgb_to_lab
from pipeline.config import Params
from pipeline.data.augment import crop_flip
from pipeline.data.shards import read_images
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError
from pipeline.io import state_digest
from pipeline.loop import Bundle, Schedule, TrainingRun, seed_for
from pipeline.metrics.image import feature_net, image_scores, l1
from pipeline.models import evaluating
from pipeline.models.gan import ImagePool, PatchDiscriminator, adversarial_loss
from pipeline.models.resnet import ResNet18
from pipeline.models.unet import ResNetUNet, load_backbone
from pipeline.plots import rgb_images

ENCODERS = ("scratch", "simsiam", "swav")
GANS = ("cgan", "cyclegan")
VAL_SIZE = 64


# ----------------------------------------------------------------------------- models


class DomainGenerator(nn.Module):
    """A ResNet U-Net mapping one domain's images to the other's, (N, 3, H, W) -> (N, 3, H, W).

    ``mode`` 'colorize': change ab, keep the input L; 'decolorize': change L, ab = 0;
    'rgb': change the image. The U-Net predicts a residual whose last layer starts at zero, so
    every generator starts as the trivial baseline of its task (ab = 0 for a grey input; the
    identity for style transfer) and training is a measured move away from it.
    """

    MODES = {"colorize": ("lab", 2), "decolorize": ("lab", 1), "rgb": ("rgb", 3)}

    def __init__(self, backbone: ResNet18, mode: str, decoder_width: int) -> None:
        super().__init__()
        space, out_channels = self.MODES[mode]
        self.mode = mode
        self.unet = ResNetUNet(backbone, space, out_channels, decoder_width)
        last = self.unet.out[-2]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.unet(x)
        if self.mode == "colorize":
            return torch.cat([x[:, :1], x[:, 1:] + delta], 1)
        if self.mode == "decolorize":
            return torch.cat([x[:, :1] + delta, torch.zeros_like(x[:, 1:])], 1)
        return x + delta


def encoder_backbone(encoder: str, backbone_path: str | Path | None = None) -> ResNet18:
    """The backbone a generator starts from: ``models/backbone_<encoder>.pt`` unless ``backbone_path``.

    ``scratch`` is the untrained backbone at the pretraining's initial weights (stage backbone_scratch).
    """
    if encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{encoder}' (allowed: {', '.join(ENCODERS)})")
    stage = "backbone_scratch" if encoder == "scratch" else f"pretrain@{encoder}"
    return load_backbone(backbone_path or f"models/backbone_{encoder}.pt", stage)


def build_models(config: dict[str, Any], backbone: ResNet18) -> dict[str, nn.Module]:
    """{'G', 'D'} for cgan; {'G', 'F', 'D_X', 'D_Y'} for cyclegan. Every generator gets its own copy of ``backbone``."""
    tr = config["translate"]
    torch.manual_seed(tr["seed"] + 1)
    n_layers = 3 if tr["crop_size"] >= 32 else 2
    fwd, back = ("colorize", "decolorize") if config["task"] == "colorize" else ("rgb", "rgb")
    models: dict[str, nn.Module] = {"G": DomainGenerator(copy.deepcopy(backbone), fwd, tr["decoder_width"])}
    if config["gan"] == "cgan":
        models["D"] = PatchDiscriminator(3, tr["disc_width"], n_layers)
    else:
        models["F"] = DomainGenerator(copy.deepcopy(backbone), back, tr["decoder_width"])
        models["D_X"] = PatchDiscriminator(3, tr["disc_width"], n_layers)
        models["D_Y"] = PatchDiscriminator(3, tr["disc_width"], n_layers)
    return models


# ----------------------------------------------------------------------------- data


def photo_to_domain(rgb: torch.Tensor, task: str) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> the network-scale image of the task's colour/photo domain."""
    return lab_to_net(rgb_to_lab(rgb)) if task == "colorize" else rgb * 2 - 1


def domain_to_rgb(x: torch.Tensor, task: str) -> torch.Tensor:
    """Inverse of :func:`photo_to_domain` (clamped to [0, 1])."""
    return lab_to_rgb(net_to_lab(x)) if task == "colorize" else ((x + 1) / 2).clamp(0, 1)


def train_subset(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded ``fraction`` of n items for training, and up to VAL_SIZE of the rest for validation."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, math.ceil(fraction * n))
    return np.sort(perm[:k]), np.sort(perm[k : k + VAL_SIZE])


def load_domains(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """{'X', 'Y'} training images of both domains and {'val_X', 'val_Y'} (paired when the task allows)."""
    root, task = Path(config["data_root"]), config["task"]
    photos, _, _ = read_images(root / "photos", "train")
    rgb = to_tensor(photos)
    train_idx, val_idx = train_subset(len(rgb), config["train_fraction"], config["translate"]["seed"])
    if task == "colorize":
        lab = photo_to_domain(rgb, task)
        val = lab[val_idx] if len(val_idx) else lab[train_idx][:VAL_SIZE]
        return {"X": grey_of(lab[train_idx]), "Y": lab[train_idx], "val_X": grey_of(val), "val_Y": val}
    paintings, _, _ = read_images(root / "painting", "train")
    x = photo_to_domain(rgb, task)
    val = x[val_idx] if len(val_idx) else x[train_idx][:VAL_SIZE]
    return {"X": x[train_idx], "Y": photo_to_domain(to_tensor(paintings), task), "val_X": val, "val_Y": val}


# ----------------------------------------------------------------------------- worker loop


def generator_optimizer(gens: list[nn.Module], tr: dict[str, Any]) -> torch.optim.Adam:
    """Adam over the generators; the transplanted encoders are their own group (frozen / lower lr)."""
    enc, rest = [], []
    for g in gens:
        ids = {id(p) for p in g.unet.encoder.parameters()}
        enc += [p for p in g.parameters() if id(p) in ids]
        rest += [p for p in g.parameters() if id(p) not in ids]
    groups = [{"params": rest, "role": "decoder"}, {"params": enc, "role": "encoder"}]
    return torch.optim.Adam(groups, lr=tr["lr"], betas=tuple(tr["betas"]))


def set_lrs(opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, epoch: int, tr: dict[str, Any]) -> float:
    """pix2pix / CycleGAN schedule by epoch (constant for the first half, then linear towards 0); the
    transplanted encoder's group is frozen for ``freeze_encoder_epochs``, then at ``encoder_lr_mult``."""
    schedule = Schedule(tr["lr"], tr["epochs"], kind="linear", hold=tr["epochs"] // 2)
    for g in opt_g.param_groups:
        if g["role"] == "encoder":
            g["lr_mult"] = 0.0 if epoch < tr["freeze_encoder_epochs"] else tr["encoder_lr_mult"]
    schedule.apply(opt_d, epoch)
    return schedule.apply(opt_g, epoch)


def cgan_step(m: dict[str, nn.Module], opts: tuple, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """pix2pix: D on (input L, ab) pairs, then G with cGAN + lambda_l1 * L1(ab)."""
    opt_g, opt_d = opts
    fake = m["G"](x)
    scores = m["D"](torch.cat([y, fake.detach()]))
    real_s, fake_s = scores[: len(y)], scores[len(y) :]
    loss_d = 0.5 * (adversarial_loss(real_s, True, "bce") + adversarial_loss(fake_s, False, "bce"))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    loss_gan = adversarial_loss(m["D"](fake), True, "bce")
    loss_l1 = F.l1_loss(fake[:, 1:], y[:, 1:]) if cfg["task"] == "colorize" else F.l1_loss(fake, y)
    loss_g = cfg["colorize"]["gan_weight"] * loss_gan + cfg["colorize"]["lambda_l1"] * loss_l1
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {k: v.detach() for k, v in (("loss_d", loss_d), ("loss_g", loss_g), ("loss_gan", loss_gan), ("loss_l1", loss_l1))}


def cyclegan_step(
    m: dict[str, nn.Module], opts: tuple, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any], pools: dict[str, ImagePool]
) -> dict[str, torch.Tensor]:
    """CycleGAN: G and F with LSGAN + cycle + identity, then both discriminators on pooled fakes."""
    opt_g, opt_d = opts
    cg = cfg["cyclegan"]
    fake_y, fake_x = m["G"](x), m["F"](y)
    rec_x, rec_y = m["F"](fake_y), m["G"](fake_x)
    loss_gan = adversarial_loss(m["D_Y"](fake_y), True, "lsgan") + adversarial_loss(m["D_X"](fake_x), True, "lsgan")
    loss_cycle = F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y)
    loss_idt = F.l1_loss(m["G"](y), y) + F.l1_loss(m["F"](x), x) if cg["identity"] > 0 else torch.zeros(())
    loss_g = cg["gan_weight"] * loss_gan + cg["cycle"] * loss_cycle + cg["identity"] * cg["cycle"] * loss_idt
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    loss_d = torch.zeros(())
    for d_name, real, fake, pool in (("D_Y", y, fake_y, pools["Y"]), ("D_X", x, fake_x, pools["X"])):
        scores = m[d_name](torch.cat([real, pool.query(fake.detach())]))
        loss_d = loss_d + 0.5 * (adversarial_loss(scores[: len(real)], True, "lsgan") + adversarial_loss(scores[len(real) :], False, "lsgan"))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    losses = {"loss_d": loss_d, "loss_g": loss_g, "loss_gan": loss_gan, "loss_cycle": loss_cycle, "loss_idt": loss_idt}
    return {k: v.detach() for k, v in losses.items()}


def translate_batched(gen: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Run a generator in eval mode over (N, 3, H, W) in chunks."""
    with evaluating(gen):
        return torch.cat([gen(x[i : i + batch]) for i in range(0, len(x), batch)])


def validation_metric(m: dict[str, nn.Module], data: dict[str, torch.Tensor], task: str) -> float:
    """Per-epoch validation score (lower is better): ab L1 (ab / 110 scale) on held-out train patches
    for colorization; the photo cycle error |F(G(x)) - x| for style transfer (no paired truth in train)."""
    if task == "colorize":
        pred = translate_batched(m["G"], data["val_X"])
        return l1(pred[:, 1:], data["val_Y"][:, 1:])
    back = translate_batched(m["F"], translate_batched(m["G"], data["val_X"]))
    return l1(back, data["val_X"]) / 2  # RGB [0, 1] scale


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker GAN loop (runs under Ray Train); checkpoints every epoch and resumes from the last."""
    tr, task, gan = config["translate"], config["task"], config["gan"]
    w = distributed.worker(config["cpus_per_worker"])
    backbone = ResNet18(config["backbone_spec"]["width"], config["backbone_spec"]["in_channels"])
    backbone.load_state_dict(config["backbone_state"])
    models = build_models(config, backbone)
    gens = [models[k] for k in ("G", "F") if k in models]
    discs = [v for k, v in models.items() if k.startswith("D")]
    opt_g = generator_optimizer(gens, tr)
    opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=tr["lr"], betas=tuple(tr["betas"]))

    run = TrainingRun(w, tr["epochs"], config["variant"], profile=config.get("profile", False))
    run.restore(models=Bundle(models), opt_g=opt_g, opt_d=opt_d)
    wrapped = {k: distributed.prepare_model(mod, w) for k, mod in models.items()}
    cores = {k: distributed.unwrap(mod) for k, mod in wrapped.items()}

    data = load_domains(config)
    train_x, train_y = data["X"].to(w.device), data["Y"].to(w.device)
    global_batch = config["colorize"]["batch_size"] if gan == "cgan" else config["cyclegan"]["batch_size"]
    batch = max(1, global_batch // w.world_size)
    for epoch in run.epochs():
        g = run.generator(tr["seed"], epoch)
        torch.manual_seed(seed_for(tr["seed"], epoch, w.rank, 1))
        # pools restart every epoch from a seeded state so a resumed run repeats the uninterrupted one
        pools = {d: ImagePool(config["cyclegan"]["pool_size"], seed=seed_for(tr["seed"], epoch, w.rank, 2 + i)) for i, d in enumerate("XY")}
        lr = set_lrs(opt_g, opt_d, epoch, tr)
        for mod in wrapped.values():
            mod.train()
        for _ in range(tr["steps_per_epoch"]):
            with run.data():
                ix = torch.randint(len(train_x), (batch,), generator=g, device=w.device)
                if gan == "cgan":  # paired: the same crop of x and y
                    xy = crop_flip(torch.cat([train_x[ix], train_y[ix]], 1), tr["crop_size"], g)
                    x, y = xy[:, :3], xy[:, 3:]
                else:
                    iy = torch.randint(len(train_y), (batch,), generator=g, device=w.device)
                    x, y = crop_flip(train_x[ix], tr["crop_size"], g), crop_flip(train_y[iy], tr["crop_size"], g)
            with distributed.autocast(w, config["mixed_precision"]):
                if gan == "cgan":
                    run.meter.add(cgan_step(wrapped, (opt_g, opt_d), x, y, config))
                else:
                    run.meter.add(cyclegan_step(wrapped, (opt_g, opt_d), x, y, config, pools))
        row = run.summary(epoch, tr["steps_per_epoch"], tr["steps_per_epoch"] * batch, lr=lr)
        if w.is_main:
            cpu = {k: copy.deepcopy(v).cpu() for k, v in cores.items()}
            row["val_l1"] = validation_metric(cpu, data, task)
            if task == "colorize":
                row["val_l1_ab0"] = l1(torch.zeros_like(data["val_Y"][:, 1:]), data["val_Y"][:, 1:])
        run.report(row, ("loss_g", "loss_d", "val_l1"), models=Bundle(cores), opt_g=opt_g, opt_d=opt_d)


# ----------------------------------------------------------------------------- driver side


def check_inputs(params: Params, task: str, data_root: str | Path) -> None:
    """One-line errors before any worker starts: missing sets, grey-only colour source, crop too large."""
    root = Path(data_root)
    photos, _, _ = read_images(root / "photos", "train")
    if task == "stylize":
        read_images(root / "painting", "train")
    smallest = min(min(p.shape[:2]) for p in photos)
    if params.translate.crop_size > smallest:
        raise UserError(f"translate.crop_size={params.translate.crop_size} is larger than the images ({smallest} px): lower it")
    if params.translate.crop_size % 8:
        raise UserError(f"translate.crop_size={params.translate.crop_size} must be a multiple of 8 (the U-Net downsamples 3 times)")
    if task == "colorize" and all(p.ndim == 2 or (np.ptp(p.astype(np.int16), axis=-1) == 0).all() for p in photos):
        raise UserError(f"{root / 'photos'}: the train split holds only grey images; colorization needs colour photos")


def job_config(params: Params, task: str, encoder: str, gan: str, data_root: str | Path, backbone: ResNet18) -> dict[str, Any]:
    """The dict each worker receives; the backbone weights travel in it (no shared disk needed)."""
    if task not in ("colorize", "stylize"):
        raise ValueError(f"unknown translation task '{task}'")
    if encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{encoder}' (allowed: {', '.join(ENCODERS)})")
    if gan not in GANS:
        raise UserError(f"unknown GAN '{gan}' (allowed: {', '.join(GANS)})")
    fraction = params.colorize.train_fraction if task == "colorize" else params.stylize.train_fraction
    return {
        "task": task,
        "gan": gan,
        "variant": f"{task}@{encoder}-{gan}" if task == "colorize" else f"{task}@{encoder}",
        "data_root": str(Path(data_root).resolve()),
        "train_fraction": fraction,
        "translate": params.translate.model_dump(),
        "colorize": params.colorize.model_dump(),
        "cyclegan": params.cyclegan.model_dump(),
        "backbone_spec": backbone.spec(),
        "backbone_state": backbone.state_dict(),
        "cpus_per_worker": params.distributed.cpus_per_worker,
        "mixed_precision": params.distributed.mixed_precision,
    }


def run_key(config: dict[str, Any]) -> dict[str, Any]:
    """What names a run: the config with the weights replaced by their digest."""
    return {**{k: v for k, v in config.items() if k != "backbone_state"}, "backbone_sha": state_digest(config["backbone_state"])}


def train(
    params: Params, task: str, encoder: str, gan: str, data_root: str | Path, storage: str | Path, backbone_path: str | Path | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one variant through Ray Train; returns (config, final state)."""
    check_inputs(params, task, data_root)
    backbone = encoder_backbone(encoder, backbone_path)
    config = job_config(params, task, encoder, gan, data_root, backbone)
    sets = ["photos", "painting"] if task == "stylize" else ["photos"]
    name = distributed.run_name(config["variant"].replace("@", "_"), run_key(config), train_loop, [Path(data_root) / s for s in sets])
    state = distributed.fit(train_loop, config, params.distributed, name, storage)
    return config, state


def generators_from_state(config: dict[str, Any], state: dict[str, Any]) -> dict[str, nn.Module]:
    backbone = ResNet18(config["backbone_spec"]["width"], config["backbone_spec"]["in_channels"])
    models = build_models(config, backbone)
    for k, mod in models.items():
        mod.load_state_dict(state["models"][k])
        mod.eval()
    return models


def load_test(data_root: str | Path, name: str) -> tuple[torch.Tensor, list[str]]:
    images, _, src = read_images(Path(data_root) / name, "test")
    return to_tensor(images), src


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
    scores = {"l1_ab": l1(pred[:, 1:], lab[:, 1:]), **image_scores(pred_rgb, rgb, feats, tr.kid_subset_size, tr.kid_subsets)}
    photos = sorted({s.split(":")[0] for s in src})
    scores["l1_ab_by_photo"] = {
        p: l1(pred[idx, 1:], lab[idx, 1:]) for p in photos for idx in [[i for i, s in enumerate(src) if s.split(":")[0] == p]]
    }
    scores["samples"] = (x, pred, lab)
    return scores


def painted_twins(data_root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Test photos (N, 3, H, W) in [0, 1] and their exact painted twins, in the same order."""
    rgb, src = load_test(data_root, "photos")
    target_rgb, target_src = load_test(data_root, "painting")
    order = {s: i for i, s in enumerate(target_src)}
    missing = [s for s in src if s not in order]
    if missing:
        raise UserError(f"{Path(data_root) / 'painting'}: no painted twin for test photo patch {missing[0]}")
    return rgb, target_rgb[[order[s] for s in src]]


def score_paintings(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, params: Params) -> dict[str, float]:
    """L1, PSNR, SSIM, FD, KID of translated test photos against their painted twins."""
    tr = params.translate
    feats = feature_net(tr.fd_features, target_rgb, tr.inception_weights)
    return image_scores(pred_rgb, target_rgb, feats, tr.kid_subset_size, tr.kid_subsets)


def evaluate_stylization(models: dict[str, nn.Module] | None, params: Params, data_root: str | Path) -> dict[str, Any]:
    """Photo -> painting on the test photos against their exact painted twins; ``None`` = identity baseline."""
    rgb, target_rgb = painted_twins(data_root)
    x = photo_to_domain(rgb, "stylize")
    pred = x if models is None else translate_batched(models["G"], x)
    pred_rgb = domain_to_rgb(pred, "stylize")
    scores: dict[str, Any] = score_paintings(pred_rgb, target_rgb, params)
    if models is not None:
        back = domain_to_rgb(translate_batched(models["F"], pred), "stylize")
        scores["cycle_l1"] = l1(back, rgb)
    scores["samples"] = (x, pred, photo_to_domain(target_rgb, "stylize"))
    return scores


def sample_rows(samples: tuple[torch.Tensor, ...], task: str, n: int = 8) -> dict[str, list[np.ndarray]]:
    """input | output | target rows of uint8 images for :func:`pipeline.plots.image_grid`."""
    names = ("input", "output", "target")

    return {name: rgb_images(domain_to_rgb(x[:n], task)) for name, x in zip(names, samples)}


