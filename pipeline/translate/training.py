"""The translation training loop on the transplanted backbone (Ray Train), and its driver.

:func:`train` checks the inputs, then runs :func:`train_loop` on Ray Train: a pix2pix cGAN or a
CycleGAN (steps in :mod:`pipeline.translate.pix2pix` / :mod:`pipeline.translate.cyclegan`)
whose generators are :class:`pipeline.models.unet.DomainGenerator` on the backbone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline import collectives, distributed, storage
from pipeline.config import ColorizeParams, CycleGanParams, Params, TranslateParams
from pipeline.data.augment import crop_flip
from pipeline.data.shards import read_images
from pipeline.errors import UserError
from pipeline.fingerprint import run_name
from pipeline.loop import Bundle, Schedule, TrainingRun, seed_for
from pipeline.metrics.image import l1
from pipeline.model_files import load_backbone
from pipeline.models import evaluating, in_chunks, recompute_batchnorm
from pipeline.models.gan import ImagePool, PatchDiscriminator
from pipeline.models.resnet import STEM_STRIDES, ResNet
from pipeline.models.unet import DomainGenerator
from pipeline.translate.cyclegan import cyclegan_step
from pipeline.translate.data import load_domains
from pipeline.translate.pix2pix import cgan_step

ENCODERS = ("scratch", "simsiam", "swav")
GANS = ("cgan", "cyclegan")


def encoder_backbone(encoder: str, backbone_path: str | Path | None = None) -> ResNet:
    """The backbone a generator starts from: ``models/backbone_<encoder>.pt`` unless ``backbone_path``.

    ``scratch`` is the untrained backbone at the pretraining's initial weights (stage backbone_scratch).
    """
    if encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{encoder}' (allowed: {', '.join(ENCODERS)})")
    stage = "backbone_scratch" if encoder == "scratch" else f"pretrain@{encoder}"
    return load_backbone(backbone_path or f"models/backbone_{encoder}.pt", stage)


def build_models(config: TranslateJob, backbone: ResNet) -> dict[str, nn.Module]:
    """{'G', 'D'} for cgan; {'G', 'F', 'D_X', 'D_Y'} for cyclegan. Every generator gets its own copy of ``backbone``."""
    tr = config.translate
    torch.manual_seed(config.seed + 1)
    n_layers = 3 if tr.crop_size >= 32 else 2
    fwd, back = ("colorize", "decolorize") if config.task == "colorize" else ("rgb", "rgb")
    models: dict[str, nn.Module] = {"G": DomainGenerator(copy.deepcopy(backbone), fwd, tr.decoder_width)}
    if config.gan == "cgan":
        models["D"] = PatchDiscriminator(3, tr.disc_width, n_layers)
    else:
        models["F"] = DomainGenerator(copy.deepcopy(backbone), back, tr.decoder_width)
        models["D_X"] = PatchDiscriminator(3, tr.disc_width, n_layers)
        models["D_Y"] = PatchDiscriminator(3, tr.disc_width, n_layers)
    return models


def generator_optimizer(gens: list[nn.Module], tr: TranslateParams) -> torch.optim.Adam:
    """Adam over the generators; the transplanted encoders are their own group (frozen / lower lr)."""
    enc, rest = [], []
    for g in gens:
        ids = {id(p) for p in g.unet.encoder.parameters()}
        enc += [p for p in g.parameters() if id(p) in ids]
        rest += [p for p in g.parameters() if id(p) not in ids]
    groups = [{"params": rest, "role": "decoder"}, {"params": enc, "role": "encoder"}]
    return torch.optim.Adam(groups, lr=tr.lr, betas=tuple(tr.betas))


def set_lrs(opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, epoch: int, tr: TranslateParams) -> float:
    """pix2pix / CycleGAN schedule by epoch (constant for the first half, then linear towards 0); the
    transplanted encoder's group is frozen for ``freeze_encoder_epochs``, then at ``encoder_lr_mult``."""
    schedule = Schedule(tr.lr, tr.epochs, kind="linear", hold=tr.epochs // 2)
    for g in opt_g.param_groups:
        if g["role"] == "encoder":
            g["lr_mult"] = 0.0 if epoch < tr.freeze_encoder_epochs else tr.encoder_lr_mult
    schedule.apply(opt_d, epoch)
    return schedule.apply(opt_g, epoch)


def gens_of(models: dict[str, nn.Module]) -> list[str]:
    """The generators' names among ``models`` (G, and F for CycleGAN)."""
    return [k for k in ("G", "F") if k in models]


def weight_averages(gens: dict[str, nn.Module], decay: float) -> dict[str, AveragedModel]:
    """An exponential moving average of each generator's weights (``decay`` per step; BatchNorm
    buffers are not averaged: precise BN sets them). GAN weights oscillate from step to step as
    the discriminators chase them; the average is what the stage scores and saves."""
    return {k: AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(decay)) for k, g in gens.items()}


def served_weights(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The weights a run's final state serves: the generators' moving averages where the run kept
    them (``averages``), else the trained weights; the discriminators as trained."""
    served = dict(state["models"])
    for k, avg in state.get("averages", {}).items():
        served[k] = {name.removeprefix("module."): v for name, v in avg.items() if name.startswith("module.")}
    return served


def translate_batched(gen: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Run a generator in eval mode over (N, 3, H, W) in chunks."""
    with evaluating(gen):
        return in_chunks(gen, x, batch)


def validation_metric(m: dict[str, nn.Module], data: dict[str, torch.Tensor], task: str) -> float:
    """Per-epoch validation score (lower is better): ab L1 (ab / 110 scale) on held-out train patches
    for colorization; the photo cycle error |F(G(x)) - x| for style transfer (no paired truth in train)."""
    if task == "colorize":
        pred = translate_batched(m["G"], data["val_X"])
        return l1(pred[:, 1:], data["val_Y"][:, 1:])
    back = translate_batched(m["F"], translate_batched(m["G"], data["val_X"]))
    return l1(back, data["val_X"]) / 2  # RGB [0, 1] scale


def train_loop(config: TranslateJob, session: distributed.Session) -> None:
    """Per-worker GAN loop (runs under Ray Train); checkpoints every epoch and resumes from the last."""
    tr, task, gan, seed = config.translate, config.task, config.gan, config.seed
    w = session.worker(config.cpus_per_worker)
    backbone = ResNet.from_spec(config.backbone_spec)
    backbone.load_state_dict(config.backbone_state)
    models = build_models(config, backbone)
    gens = [models[k] for k in gens_of(models)]
    discs = [v for k, v in models.items() if k.startswith("D")]
    opt_g = generator_optimizer(gens, tr)
    opt_d = torch.optim.Adam([p for d in discs for p in d.parameters()], lr=tr.lr, betas=tuple(tr.betas))

    averages = weight_averages({k: models[k] for k in gens_of(models)}, config.ema_decay) if config.ema_decay else {}
    run = TrainingRun(w, tr.epochs, config.variant, profile=config.profile)
    run.restore(models=Bundle(models), opt_g=opt_g, opt_d=opt_d, **({"averages": Bundle(averages)} if averages else {}))
    for avg in averages.values():
        avg.to(w.device)
    wrapped = {k: distributed.prepare_model(mod, w) for k, mod in models.items()}
    cores = {k: distributed.unwrap(mod) for k, mod in wrapped.items()}

    data = load_domains(config.data_root, task, config.train_fraction, seed)
    train_x, train_y = data["X"].to(w.device), data["Y"].to(w.device)
    batch = max(1, config.batch_size // w.world_size)
    # CycleGAN's history of fakes lives for the whole run, as in the reference; every rank's pools are
    # in the checkpoint, so a resumed run repeats the uninterrupted one
    pools = {d: ImagePool(config.cyclegan.pool_size, seed=seed_for(seed, w.rank, 2 + i)) for i, d in enumerate("XY")}
    saved_pools = run.state.get("pools") if run.resumed else None
    if saved_pools and w.rank < len(saved_pools):
        Bundle(pools).load_state_dict(saved_pools[w.rank])
    for pool in pools.values():
        pool.to(w.device)
    for epoch in run.epochs():
        g = run.generator(seed, epoch)
        torch.manual_seed(seed_for(seed, epoch, w.rank, 1))
        lr = set_lrs(opt_g, opt_d, epoch, tr)
        for mod in wrapped.values():
            mod.train()
        for _ in range(tr.steps_per_epoch):
            with run.data():
                ix = torch.randint(len(train_x), (batch,), generator=g, device=w.device)
                if gan == "cgan":  # paired: the same crop of x and y
                    xy = crop_flip(torch.cat([train_x[ix], train_y[ix]], 1), tr.crop_size, g)
                    x, y = xy[:, :3], xy[:, 3:]
                else:
                    iy = torch.randint(len(train_y), (batch,), generator=g, device=w.device)
                    x, y = crop_flip(train_x[ix], tr.crop_size, g), crop_flip(train_y[iy], tr.crop_size, g)
            with distributed.autocast(w, config.mixed_precision):
                if gan == "cgan":
                    run.meter.add(cgan_step(wrapped, (opt_g, opt_d), x, y, config.colorize, ab_only=task == "colorize"))
                else:
                    run.meter.add(cyclegan_step(wrapped, (opt_g, opt_d), x, y, config.cyclegan, pools))
            for k, avg in averages.items():
                avg.update_parameters(cores[k])
        row = run.summary(epoch, tr.steps_per_epoch, tr.steps_per_epoch * batch, lr=lr)
        if gan == "cyclegan":
            row["pool_history_share"] = float(
                np.mean([p.history_share for p in pools.values()])
            )  # rank 0's, over the run
            pool_states = collectives.all_gather_object({k: p.state_dict() for k, p in pools.items()})
        served = {**cores, **{k: avg.module for k, avg in averages.items()}}
        if config.precise_bn:  # on every rank: SyncBatchNorm (GPU) all-reduces its statistics
            for k, images in (("G", train_x), ("F", train_y)):
                if k in served:
                    recompute_batchnorm(served[k], images)
        if w.is_main:
            cpu = {k: copy.deepcopy(v).cpu() for k, v in served.items()}
            row["val_l1"] = validation_metric(cpu, data, task)
            if task == "colorize":
                row["val_l1_ab0"] = l1(torch.zeros_like(data["val_Y"][:, 1:]), data["val_Y"][:, 1:])
        run.report(
            row,
            ("loss_g", "loss_d", "val_l1"),
            models=Bundle(cores),
            opt_g=opt_g,
            opt_d=opt_d,
            extra={"pools": pool_states} if gan == "cyclegan" else None,
            **({"averages": Bundle(averages)} if averages else {}),
        )


# ----------------------------------------------------------------------------- driver side


def check_inputs(params: Params, task: str, data_root: str | Path) -> None:
    """One-line errors before any worker starts: missing sets, grey-only colour source, crop too large."""
    root = Path(data_root)
    photos, _, _ = read_images(root / "photos", "train")
    if task == "stylize":
        read_images(root / "painting", "train")
    smallest = min(min(p.shape[:2]) for p in photos)
    if params.translate.crop_size > smallest:
        raise UserError(
            f"translate.crop_size={params.translate.crop_size} is larger than the images ({smallest} px): lower it"
        )
    multiple = STEM_STRIDES[params.pretrain.stem][-1]
    if params.translate.crop_size % multiple:
        raise UserError(
            f"translate.crop_size={params.translate.crop_size} must be a multiple of {multiple}"
            f" (the U-Net on the {params.pretrain.stem} stem's backbone downsamples by {multiple})"
        )
    if task == "colorize" and all(p.ndim == 2 or (np.ptp(p.astype(np.int16), axis=-1) == 0).all() for p in photos):
        raise UserError(f"{root / 'photos'}: the train split holds only grey images; colorization needs colour photos")


@dataclass(frozen=True)
class TranslateJob:
    """What each translation worker receives for one seed; the backbone's weights travel in it (no
    shared disk needed). The stylize overrides are resolved here, once (:func:`job_config`)."""

    task: str  # colorize | stylize
    gan: str  # one of GANS
    variant: str  # the stage's name: colorize@<encoder>-<gan> or stylize@<encoder>
    data_root: str
    seed: int
    train_fraction: float
    translate: TranslateParams  # steps_per_epoch: stylize.steps_per_epoch for stylize, where set
    colorize: ColorizeParams
    cyclegan: CycleGanParams  # batch_size: stylize.batch_size for stylize, where set
    precise_bn: bool  # BatchNorm statistics recomputed over each generator's training domain every epoch
    ema_decay: float  # served generators are this moving average of their weights; 0 = the last weights
    backbone_spec: dict[str, Any]
    backbone_state: dict[str, torch.Tensor]
    cpus_per_worker: float
    mixed_precision: bool
    profile: bool = False  # the step profile's timings (see TrainingRun)

    @property
    def batch_size(self) -> int:
        """The global batch: ``colorize.batch_size`` for the cGAN, ``cyclegan.batch_size`` for CycleGAN."""
        return self.colorize.batch_size if self.gan == "cgan" else self.cyclegan.batch_size


def job_config(
    params: Params,
    task: str,
    encoder: str,
    gan: str,
    data_root: str | Path,
    backbone: ResNet,
    seed: int | None = None,
) -> TranslateJob:
    """The job of one seed (default: the first of ``translate.seeds``)."""
    if task not in ("colorize", "stylize"):
        raise ValueError(f"unknown translation task '{task}'")
    if encoder not in ENCODERS:
        raise UserError(f"unknown encoder '{encoder}' (allowed: {', '.join(ENCODERS)})")
    if gan not in GANS:
        raise UserError(f"unknown GAN '{gan}' (allowed: {', '.join(GANS)})")
    st = params.stylize
    stylize = task == "stylize"
    tr, cg = params.translate, params.cyclegan
    if stylize and st.steps_per_epoch:
        tr = tr.model_copy(update={"steps_per_epoch": st.steps_per_epoch})
    if stylize and st.batch_size:
        cg = cg.model_copy(update={"batch_size": st.batch_size})
    return TranslateJob(
        task=task,
        gan=gan,
        variant=f"{task}@{encoder}" if stylize else f"{task}@{encoder}-{gan}",
        data_root=storage.publish_data(data_root, ["photos", "painting"] if stylize else ["photos"]),
        seed=params.translate.seeds[0] if seed is None else seed,
        train_fraction=st.train_fraction if stylize else params.colorize.train_fraction,
        translate=tr,
        colorize=params.colorize,
        cyclegan=cg,
        precise_bn=stylize and st.precise_bn,
        ema_decay=st.ema_decay if stylize else 0.0,
        backbone_spec=backbone.spec(),
        backbone_state=backbone.state_dict(),
        cpus_per_worker=params.distributed.cpus_per_worker,
        mixed_precision=params.distributed.mixed_precision,
    )


def train(
    params: Params,
    task: str,
    encoder: str,
    gan: str,
    data_root: str | Path,
    storage: str | Path,
    backbone_path: str | Path | None = None,
) -> list[tuple[TranslateJob, dict[str, Any]]]:
    """Train one variant through Ray Train once per seed of ``translate.seeds``, the seeds one after
    the other in one resumable run; returns [(config, final state)] in seed order."""
    check_inputs(params, task, data_root)
    backbone = encoder_backbone(encoder, backbone_path)
    sets = ["photos", "painting"] if task == "stylize" else ["photos"]
    jobs = [job_config(params, task, encoder, gan, data_root, backbone, seed) for seed in params.translate.seeds]
    name = run_name(jobs[0].variant.replace("@", "_"), {"seeds": jobs}, train_loop, [Path(data_root) / s for s in sets])
    return list(zip(jobs, distributed.fit_seeds(train_loop, jobs, params.distributed, name, storage)))


def generators_from_state(config: TranslateJob, state: dict[str, Any]) -> dict[str, nn.Module]:
    backbone = ResNet.from_spec(config.backbone_spec)
    models = build_models(config, backbone)
    weights = served_weights(state)
    for k, mod in models.items():
        mod.load_state_dict(weights[k])
        mod.eval()
    return models
