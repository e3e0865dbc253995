"""SimGAN's test (seed 003): ResNet-20 classifiers trained on raw synthetic, on refined synthetic
and on real digits, each over ``simgan.classify_seeds``, all tested on the real test split; and
how many refined images a classifier of real digits still reads as their source digit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed, storage
from pipeline.config import Params, SimganParams
from pipeline.fingerprint import run_name
from pipeline.invariance.classify import NUM_CLASSES
from pipeline.loop import Schedule, TrainingRun, seed_for
from pipeline.metrics.invariance import balanced_accuracy
from pipeline.metrics.seeds import t_interval
from pipeline.models import in_chunks
from pipeline.models.classifier import ResNet20
from pipeline.simgan.training import load_split

#: the classifiers' training sets: (set folder, split)
TRAIN_SETS = {
    "synthetic": ("synthetic_digits", "train"),
    "refined": ("refined_digits", "train"),
    "real": ("real_digits", "train"),
}


@dataclass(frozen=True)
class ClassifierJob:
    """One classifier: ``train_set`` (a key of TRAIN_SETS) and ``seed``; the folders it reads."""

    train_set: str
    seed: int
    data_roots: dict[str, str]  # set folder -> where the workers read it
    simgan: SimganParams
    cpus_per_worker: float
    mixed_precision: bool
    profile: bool = False


def train_loop(config: ClassifierJob, session: distributed.Session) -> None:
    """Per-worker: one ResNet-20 on ``config.train_set`` for ``simgan.classify_steps`` SGD steps (cosine
    schedule) whatever the set's size, so that the small real set trains as long as the synthetic
    ones: passes over the set in a fresh order each, checkpointed after each pass."""
    sp, folder_split = config.simgan, TRAIN_SETS[config.train_set]
    w = session.worker(config.cpus_per_worker)
    x, y = load_split(config.data_roots[folder_split[0]], *folder_split)
    x, y = x.to(w.device), y.to(w.device)
    torch.manual_seed(config.seed)
    model = ResNet20(NUM_CLASSES, 1, sp.classify_width)
    per_pass = max(1, len(y) // sp.classify_batch_size)
    schedule = Schedule(sp.classify_lr, sp.classify_steps, per_pass, "cosine")
    opt = torch.optim.SGD(model.parameters(), lr=sp.classify_lr, momentum=0.9, weight_decay=5e-4)
    passes = math.ceil(sp.classify_steps / per_pass)
    run = TrainingRun(w, passes, f"simgan classify@{config.train_set} seed {config.seed}", profile=config.profile)
    run.restore(model=model, optimizer=opt)
    wrapped = distributed.prepare_model(model, w)
    per_worker = max(1, sp.classify_batch_size // w.world_size)
    for epoch in run.epochs():
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed_for(config.seed, epoch))).to(
            w.device
        )
        wrapped.train()
        steps = min(per_pass, sp.classify_steps - epoch * per_pass)
        for step in range(steps):
            lr = schedule.apply(opt, epoch * per_pass + step)
            mine = order[step * sp.classify_batch_size : (step + 1) * sp.classify_batch_size][w.rank :: w.world_size][
                :per_worker
            ]
            with distributed.autocast(w, config.mixed_precision):
                logits = wrapped(x[mine])
                loss = F.cross_entropy(logits.float(), y[mine])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.meter.add(loss=loss, correct=(logits.argmax(1) == y[mine]).sum(), seen=len(mine))
        totals = run.meter.totals()
        row = run.summary(epoch, steps, int(totals["seen"]), lr=lr)
        row["train_acc"] = totals["correct"] / max(1, totals["seen"])
        del row["correct"], row["seen"]
        run.report(row, ("loss", "train_acc"), model=distributed.unwrap(wrapped), optimizer=opt)


def train_classifiers(
    params: Params, data_root: str | Path, refined_root: str | Path, storage_path: str | Path
) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (training set, seed) classifier through Ray Train, one after the other in one resumable
    run; returns {(set, seed): final state}."""
    sp = params.simgan
    roots = {"synthetic_digits": storage.publish_data(data_root, ["synthetic_digits"]),
             "real_digits": storage.publish_data(data_root, ["real_digits"]),
             "refined_digits": storage.publish_data(refined_root, ["refined_digits"])}  # fmt: skip
    jobs = [ClassifierJob(name, seed, roots, sp, params.distributed.cpus_per_worker, params.distributed.mixed_precision)
            for name in TRAIN_SETS for seed in sp.classify_seeds]  # fmt: skip
    inputs = [
        Path(data_root) / "synthetic_digits",
        Path(data_root) / "real_digits",
        Path(refined_root) / "refined_digits",
    ]
    name = run_name("simgan_classify", {"jobs": jobs}, train_loop, inputs)
    states = distributed.fit_seeds(train_loop, jobs, params.distributed, name, storage_path)
    return {(j.train_set, j.seed): st for j, st in zip(jobs, states)}


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return in_chunks(lambda c: model(c).argmax(1), x, 256).numpy()


def score(
    states: dict[tuple[str, int], dict[str, Any]], params: Params, data_root: str | Path, refined_root: str | Path
) -> dict[str, Any]:
    """Balanced accuracy on the real test split per training set and seed, the refined-minus-raw gain
    per seed, and the label-keeping shares: of the refined and of the raw synthetic images, the
    share that a classifier trained on real digits labels as their source digit (per seed)."""
    sp = params.simgan
    test_x, test_y = load_split(data_root, "real_digits", "test")
    syn_x, syn_y = load_split(data_root, "synthetic_digits", "train")
    ref_x, ref_y = load_split(refined_root, "refined_digits", "train")
    acc: dict[str, dict[str, float]] = {name: {} for name in TRAIN_SETS}
    kept: dict[str, dict[str, float]] = {"refined": {}, "synthetic": {}}
    for (name, seed), state in sorted(states.items()):
        model = ResNet20(NUM_CLASSES, 1, sp.classify_width)
        model.load_state_dict(state["model"])
        acc[name][str(seed)] = balanced_accuracy(test_y.numpy(), predict(model, test_x))
        if name == "real":
            kept["refined"][str(seed)] = float((predict(model, ref_x) == ref_y.numpy()).mean())
            kept["synthetic"][str(seed)] = float((predict(model, syn_x) == syn_y.numpy()).mean())
    seeds = [str(s) for s in sp.classify_seeds]
    summary = {name: {"mean": float(np.mean(list(v.values()))), "ci95": list(t_interval(list(v.values()))[1:]) if len(v) > 1 else None,
                      "per_seed": v} for name, v in acc.items()}  # fmt: skip
    gains = {s: acc["refined"][s] - acc["synthetic"][s] for s in seeds}
    keep_gap = {s: kept["refined"][s] - kept["synthetic"][s] for s in seeds}
    return {"balanced_acc": summary, "refined_minus_synthetic": gains, "label_kept": kept,
            "label_kept_refined_minus_synthetic": keep_gap, "test_images": int(len(test_y))}  # fmt: skip
