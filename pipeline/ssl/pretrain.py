"""SSL pretraining of the ResNet backbone: the per-worker loop and the final probe.

Each epoch draws fresh instances (random squares of the full training photos) and two
augmented views of each (SimSiam), or 2 global + small crops (SwAV multi-crop). Rank 0
probes the backbone with kNN every epoch and checkpoints model, optimiser and history.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import distributed, storage
from pipeline.color import to_gray
from pipeline.config import Params, PretrainParams, SimSiamParams, SwavParams
from pipeline.data import stream
from pipeline.data.augment import PhotoBank, color_jitter, crop_resize, hflip, random_resized_boxes, random_squares
from pipeline.data.shards import read_images, read_table
from pipeline.data.transforms import to_tensor
from pipeline.fingerprint import run_name
from pipeline.loop import Schedule, TrainingRun
from pipeline.metrics.knn import bootstrap_gain, chance_level
from pipeline.models.features import knn_probe
from pipeline.models.resnet import ResNet
from pipeline.ssl.simsiam import SimSiam
from pipeline.ssl.swav import Swav

METHODS = ("simsiam", "swav")


@dataclass(frozen=True)
class PretrainJob:
    """What each SSL worker receives for one seed (it pickles to the workers and names the run)."""

    method: str  # one of METHODS
    data_root: str
    pretrain: PretrainParams  # its ``seed`` is this job's
    method_params: SimSiamParams | SwavParams
    cpus_per_worker: float
    mixed_precision: bool
    stream: bool = False  # photos streamed from the shards (``session.dataset("photos")``), else all in memory
    profile: bool = False  # the step profile's timings (see TrainingRun)


def job_config(params: Params, method: str, data_root: str | Path) -> PretrainJob:
    if method not in METHODS:
        raise ValueError(f"unknown SSL method '{method}' (allowed: {', '.join(METHODS)})")
    return PretrainJob(
        stream=stream.streams(params.pretrain.data, Path(data_root) / "photos_full", "train"),
        method=method,
        data_root=storage.publish_data(data_root, ["photos_full", "probe"]),
        pretrain=params.pretrain,
        method_params=getattr(params, method),
        cpus_per_worker=params.distributed.cpus_per_worker,
        mixed_precision=params.distributed.mixed_precision,
    )


def new_backbone(pre: PretrainParams) -> ResNet:
    """An untrained backbone of the architecture ``pre`` names (depth, stem, width, channels)."""
    return ResNet(pre.width, pre.channels, arch=pre.arch, stem=pre.stem)


def build_model(method: str, pre: PretrainParams, mp: SimSiamParams | SwavParams) -> nn.Module:
    backbone = new_backbone(pre)
    if method == "simsiam":
        return SimSiam(backbone, mp.proj_dim, mp.pred_hidden)
    return Swav(backbone, mp.proj_hidden, mp.proj_dim, mp.n_prototypes, mp.temperature, mp.epsilon, mp.sinkhorn_iters)


def load_probe(data_root: str | Path, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probe bank and query images (N, C, H, W) in [0, 1] with labels (N,)."""
    bank, bank_y, _ = read_images(storage.join(data_root, "probe"), "bank")
    query, query_y, _ = read_images(storage.join(data_root, "probe"), "query")
    return to_tensor(bank, channels), torch.from_numpy(bank_y), to_tensor(query, channels), torch.from_numpy(query_y)


def make_views(
    bank: PhotoBank, n: int, method: str, pre: PretrainParams, mp: SimSiamParams | SwavParams, g: torch.Generator,
    every_photo: bool = False,
) -> list[torch.Tensor]:  # fmt: skip
    """Views of ``n`` fresh instances (random squares of random photos of the bank, or of each of
    its ``n`` photos in turn with ``every_photo``), made on ``g``'s device: [v1, v2] (SimSiam) or
    [g1, g2, s1, ..] (SwAV), each (n, C, h, w) in [0, 1]."""
    k, instances = random_squares(bank.sizes, n, tuple(pre.instance_scale), g, every_photo)

    def view(size: int, scale: list[float]) -> torch.Tensor:
        x = crop_resize(bank.images, k, random_resized_boxes(instances, tuple(scale), g), size)
        x = color_jitter(hflip(x, g), g, pre.color_jitter, pre.grayscale_p)
        return to_gray(x) if pre.channels == 1 else x

    views = [view(pre.crop_size, pre.scale), view(pre.crop_size, pre.scale)]
    if method == "swav":
        views += [view(mp.small_crop_size, mp.small_scale) for _ in range(mp.n_small_crops)]
    return views


def param_groups(model: nn.Module, method: str, mp: SimSiamParams | SwavParams) -> list[dict[str, Any]]:
    """SimSiam keeps the predictor's lr fixed when ``fix_pred_lr``; everything else follows the schedule."""
    if method == "simsiam" and mp.fix_pred_lr:
        pred = list(model.predictor.parameters())
        ids = {id(p) for p in pred}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return [{"params": rest, "fixed_lr": False}, {"params": pred, "fixed_lr": True}]
    return [{"params": list(model.parameters()), "fixed_lr": False}]


def z_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor: std over the batch of l2-normalised z, averaged over dims (healthy ~ 1/sqrt(d)); 0-d tensor."""
    return nn.functional.normalize(z, dim=1).std(dim=0).mean()


def train_loop(config: PretrainJob, session: distributed.Session) -> None:
    """Per-worker SSL loop (runs under Ray Train); resumes from the last checkpoint."""
    method, pre, mp = config.method, config.pretrain, config.method_params
    w = session.worker(config.cpus_per_worker)
    torch.manual_seed(pre.seed)  # identical init on every rank
    model = build_model(method, pre, mp)
    batch = pre.batch_size // w.world_size
    steps = max(1, pre.crops_per_epoch // pre.batch_size)
    base_lr = mp.lr * pre.batch_size / 256
    schedule = Schedule(base_lr, steps * pre.epochs, pre.warmup_epochs * steps, "cosine")
    opt = torch.optim.SGD(
        param_groups(model, method, mp), lr=base_lr, momentum=mp.momentum, weight_decay=mp.weight_decay
    )

    run = TrainingRun(w, pre.epochs, method, profile=config.profile)
    run.restore(model=model, optimizer=opt)
    model = distributed.prepare_model(model, w)
    core = distributed.unwrap(model)

    if config.stream:
        shard = session.dataset("photos")
    else:
        photos, _, _ = read_images(storage.join(config.data_root, "photos_full"), "train")
        bank = PhotoBank(photos, w.device)
    probe = load_probe(config.data_root, pre.channels) if w.is_main else None

    for epoch in run.epochs():
        g = run.generator(pre.seed, epoch)
        batches = stream.photo_batches(shard, batch, pre.seed, epoch) if config.stream else None
        model.train()
        for step in range(steps):
            lr = schedule.apply(opt, epoch * steps + step)
            with run.data():
                if batches is None:
                    views = make_views(bank, batch, method, pre, mp, g)
                else:  # this batch's photos alone, each once
                    views = make_views(PhotoBank(next(batches), w.device), batch, method, pre, mp, g, every_photo=True)
            with distributed.autocast(w, config.mixed_precision):
                loss, z = model(*views) if method == "simsiam" else model(views)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if method == "swav" and epoch < mp.freeze_prototypes_epochs:
                core.prototypes.weight.grad = None
            opt.step()
            if method == "swav":
                core.normalize_prototypes()
            run.meter.add(loss=loss, z_std=z_std(z.float()))
        row = run.summary(epoch, steps, steps * batch, lr=lr)
        if w.is_main:
            # probe a CPU copy: moving the live (DDP-wrapped) module off its device is unsafe
            row["knn_top1"] = knn_probe(
                copy.deepcopy(core.backbone).cpu(),
                *probe[:2],
                *probe[2:],
                k=pre.knn_k,
                temperature=pre.knn_temperature,
            ).top1
        run.report(row, ("loss", "z_std", "knn_top1"), model=core, optimizer=opt)


def pretrain(params: Params, method: str, data_root: str | Path, storage_path: str | Path) -> list[dict[str, Any]]:
    """Train ``method`` through Ray Train from ``pretrain.seed`` and then each of
    ``pretrain.extra_seeds``, one after the other in one resumable run; return their final states
    (model, history, starts, ...) in that order."""
    for name, split in (("photos_full", "train"), ("probe", "bank"), ("probe", "query")):
        read_table(Path(data_root) / name, split, columns=["label"])  # fail here, with one line, not in a worker
    seeds = [params.pretrain.seed, *params.pretrain.extra_seeds]
    base = job_config(params, method, data_root)
    jobs = [replace(base, pretrain=params.pretrain.model_copy(update={"seed": s})) for s in seeds]
    name = run_name(method, {"seeds": jobs}, train_loop, [Path(data_root) / "photos_full", Path(data_root) / "probe"])
    datasets = (
        {"photos": stream.photo_dataset(storage.join(base.data_root, "photos_full"), "train")} if base.stream else None
    )
    return distributed.fit_seeds(train_loop, jobs, params.distributed, name, storage_path, datasets)


def backbone_from_state(state: dict[str, Any], pre: PretrainParams) -> ResNet:
    backbone = new_backbone(pre)
    prefix = "backbone."
    backbone.load_state_dict({k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)})
    return backbone


def evaluate_backbone(backbone: ResNet, params: Params, data_root: str | Path) -> dict[str, Any]:
    """Final kNN probe of ``backbone`` beside the fair untrained baseline (several init seeds).

    Both go through the same protocol (BN statistics recomputed on the bank). The gain is
    reported with a paired bootstrap interval over queries (against init seed 0) and the
    spread of the baseline over init seeds.
    """
    pre = params.pretrain
    bx, by, qx, qy = load_probe(data_root, pre.channels)
    trained = knn_probe(backbone, bx, by, qx, qy, pre.knn_k, pre.knn_temperature)
    untrained = []
    for s in range(pre.baseline_seeds):
        torch.manual_seed(1000 + s)
        untrained.append(knn_probe(new_backbone(pre), bx, by, qx, qy, pre.knn_k, pre.knn_temperature))
    base = np.array([u.top1 for u in untrained])
    gain, lo, hi = bootstrap_gain(trained.correct, untrained[0].correct, pre.bootstrap, seed=pre.seed)
    gains = trained.top1 - base
    return {
        "knn_top1": trained.top1,
        "knn_chance": chance_level(qy),
        "knn_top1_untrained": float(base.mean()),
        "knn_top1_untrained_std": float(base.std(ddof=1)) if len(base) > 1 else 0.0,
        "knn_gain": float(gains.mean()),
        "knn_gain_std_over_init_seeds": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
        "knn_gain_ci95_vs_seed0": [lo, hi],
        "knn_gain_vs_seed0": gain,
        "probe_queries": int(len(qy)),
    }
