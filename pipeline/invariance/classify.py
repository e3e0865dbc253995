"""Generative invariance transfer, part 2: four classifiers on the long-tailed set and their scores.

All four share the model (ResNet-20), the SGD loop (warm-up, step decay) and the seeds:
- ``erm``: cross-entropy on the training set as stored (one fixed nuisance draw per image);
- ``drs``: deferred re-sampling: class-balanced sampling from the first lr decay on;
- ``git``: from the first lr decay, a fraction ``gen_frac`` of every batch is replaced by MUNIT
  samples of the tail classes, read from the ``augment`` shards (fixed, inspectable samples);
- ``oracle``: the true nuisance, re-drawn online for every use of every training image.

Images are (N, 1, H, W) in [0, 1] here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed, storage
from pipeline.config import ClassifyParams, Params
from pipeline.data.augment import apply_nuisances, balanced_draw, draw_nuisances
from pipeline.data.shards import decode_png, read_images, read_table
from pipeline.data.transforms import apply_nuisance, draw_nuisance, to_tensor
from pipeline.errors import UserError
from pipeline.fingerprint import run_name
from pipeline.loop import Schedule, TrainingRun, seed_for
from pipeline.metrics.invariance import balanced_accuracy, ekld_by_class
from pipeline.models import evaluating, in_chunks
from pipeline.models.classifier import ResNet20

METHODS = ("erm", "drs", "git", "oracle")
NUM_CLASSES = 10


def schedule(cp: ClassifyParams, steps: int) -> Schedule:
    """Linear warm-up over ``warmup_epochs``, then x ``decay`` at each of ``decay_epochs`` (by step)."""
    return Schedule(cp.lr, cp.epochs * steps, cp.warmup_epochs * steps, "step", milestones=tuple(d * steps for d in cp.decay_epochs),
                    gamma=cp.decay)  # fmt: skip


def check_classes(labels: np.ndarray, where: str) -> None:
    """Every class 0..9 must keep at least one image."""
    present = set(np.unique(labels).tolist())
    empty = [c for c in range(NUM_CLASSES) if c not in present]
    if empty:
        raise UserError(f"{where}: class {empty[0]} has no images (every class needs at least one)")


def load_train(data_root: str | Path) -> dict[str, Any]:
    """Stored train images (fixed draws), their clean originals (for the oracle), labels."""
    table = read_table(storage.join(data_root, "digits_lt"), "train", columns=["image", "clean", "label"])
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
    check_classes(labels, f"{Path(data_root) / 'digits_lt'} train split")
    clean = table.column("clean").to_pylist()
    if any(b is None for b in clean):
        raise UserError(
            f"{Path(data_root) / 'digits_lt'} train split: images without their clean original (rerun `dvc repro prepare`)"
        )
    return {
        "x": to_tensor([decode_png(b) for b in table.column("image").to_pylist()], channels=1),
        "clean": to_tensor([decode_png(b) for b in clean], channels=1),
        "y": torch.from_numpy(labels),
    }


def load_augmented(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MUNIT samples written by the augment stage: (N, 1, H, W) in [0, 1], labels (N,)."""
    if not storage.is_uri(path) and not sorted(Path(path).glob("train-*.parquet")):
        raise UserError(f"no MUNIT samples in {path}: run `dvc repro augment` first")
    images, labels, _ = read_images(path, "train")
    return to_tensor(images, channels=1), torch.from_numpy(labels)


def epoch_order(labels: torch.Tensor, balanced: bool, g: torch.Generator) -> torch.Tensor:
    """A permutation of the training set, or (``balanced``) as many class-balanced draws."""
    return (
        balanced_draw(labels, len(labels), g) if balanced else torch.randperm(len(labels), generator=g, device=g.device)
    )


def make_batch(
    idx: torch.Tensor, data: dict[str, Any], method: str, mixing: bool, cp: ClassifyParams, transform: str,
    aug: tuple[torch.Tensor, torch.Tensor] | None, g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Images (B, 1, H, W) and labels (B,) of one (per-worker) batch for ``method``, on the data's device;
    ``g`` (on that device) draws the oracle's nuisances and GIT's slots."""
    if method == "oracle":
        x = apply_nuisances(data["clean"][idx], transform, draw_nuisances(transform, len(idx), g))
    else:
        x = data["x"][idx]
    y = data["y"][idx]
    if method == "git" and mixing and aug is not None and len(aug[0]):
        n_gen = int(round(cp.gen_frac * len(idx)))
        slots = torch.randperm(len(idx), generator=g, device=g.device)[:n_gen]
        picks = torch.randint(len(aug[0]), (n_gen,), generator=g, device=g.device)
        x[slots], y[slots] = aug[0][picks], aug[1][picks]
    return x, y


def fresh_nuisance_accuracy(model: torch.nn.Module, data: dict[str, Any], transform: str, seed: int) -> float:
    """Balanced accuracy on the training images under one fresh nuisance draw each: the sweep's
    validation score (a tail class of 5 images has none to hold out; the test split stays unseen)."""
    clean = data["clean"]
    g = torch.Generator(clean.device).manual_seed(seed_for(seed, 777))
    x = apply_nuisances(clean, transform, draw_nuisances(transform, len(clean), g))
    with evaluating(model):
        pred = in_chunks(lambda c: model(c).argmax(1), x, 256).cpu().numpy()
    return balanced_accuracy(data["y"].cpu().numpy(), pred)


def train_loop(config: ClassifyJob, session: distributed.Session) -> None:
    """Per-worker loop: one classifier per seed, one after the other (the run's epochs are the
    seeds' epochs end to end); checkpoints every ``checkpoint_every`` epochs and at the end of
    each seed, and resumes from the last one."""
    cp, method = config.classify, config.method
    w = session.worker(config.cpus_per_worker)
    data = {k: v.to(w.device) for k, v in load_train(config.data_root).items()}
    aug = tuple(t.to(w.device) for t in load_augmented(config.augment_root)) if method == "git" else None
    labels = data["y"].cpu()
    steps = max(1, len(labels) // cp.batch_size)  # full batches only: every rank takes every step
    per_worker = max(1, cp.batch_size // w.world_size)
    sched = schedule(cp, steps)

    epochs = cp.epochs
    run = TrainingRun(w, len(cp.seeds) * epochs, f"classify@{method}", profile=config.profile)
    done = dict(run.state["done"]) if run.resumed else {}
    model = opt = wrapped = core = None
    for run_epoch in run.epochs():
        si, epoch = divmod(run_epoch, epochs)
        seed = cp.seeds[si]
        if epoch == 0 or model is None:
            torch.manual_seed(seed)
            model = ResNet20(NUM_CLASSES, 1, cp.width)
            opt = torch.optim.SGD(model.parameters(), lr=cp.lr, momentum=cp.momentum, weight_decay=cp.weight_decay)
            if epoch > 0:  # resumed in the middle of this seed
                run.restore(model=model, optimizer=opt)
            wrapped = distributed.prepare_model(model, w)
            core = distributed.unwrap(wrapped)
        late = epoch >= cp.decay_epochs[0]
        order = epoch_order(
            labels, method == "drs" and late, torch.Generator().manual_seed(seed_for(seed, epoch))
        )  # same on every rank
        g = run.generator(seed, epoch)
        wrapped.train()
        for step in range(steps):
            lr = sched.apply(opt, epoch * steps + step)
            with run.data():
                chunk = order[step * cp.batch_size : (step + 1) * cp.batch_size]
                mine = chunk[w.rank :: w.world_size][:per_worker].to(w.device)
                x, y = make_batch(mine, data, method, late, cp, config.transform, aug, g)
            with distributed.autocast(w, config.mixed_precision):
                logits = wrapped(x)
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.meter.add(loss=loss, correct=(logits.argmax(1) == y).sum(), seen=len(y))
        totals = run.meter.totals()
        row = run.summary(epoch, steps, int(totals["seen"]), lr=lr, seed=seed, step=run_epoch)
        row["train_acc"] = totals["correct"] / max(1, totals["seen"])
        del row["correct"], row["seen"]
        last = epoch == epochs - 1
        if w.is_main and last:
            done[str(seed)] = {k: v.detach().cpu() for k, v in core.state_dict().items()}
            print(
                f"[classify@{method}] seed {seed} done: loss {row['loss']:.3f} train_acc {row['train_acc']:.3f}",
                flush=True,
            )
        if not last and (epoch + 1) % cp.checkpoint_every:
            run.log(row)  # an epoch takes well under a second here; a checkpoint costs more than that
            continue
        if w.is_main:  # convergence on what the nuisance can do, beside the training accuracy
            row["val_balanced_acc"] = fresh_nuisance_accuracy(core, data, config.transform, seed)
        run.report(row, ("loss", "train_acc"), extra={"done": done}, model=core, optimizer=opt)


@dataclass(frozen=True)
class ClassifyJob:
    """What each classifier worker receives: one classifier per seed of ``classify.seeds``."""

    method: str  # one of METHODS
    data_root: str
    augment_root: str  # GIT's MUNIT samples
    transform: str  # the nuisance of digits_lt
    classify: ClassifyParams
    cpus_per_worker: float
    mixed_precision: bool
    profile: bool = False  # the step profile's timings (see TrainingRun)


def job_config(params: Params, method: str, data_root: str | Path, augment_root: str | Path) -> ClassifyJob:
    """The classifier job of ``method`` (after one-line checks of the inputs, not in a worker)."""
    if method not in METHODS:
        raise UserError(f"unknown classifier '{method}' (allowed: {', '.join(METHODS)})")
    load_train(data_root)
    if method == "git":
        load_augmented(augment_root)
    augment = Path(augment_root)
    return ClassifyJob(
        method=method,
        data_root=storage.publish_data(data_root, ["digits_lt"]),
        augment_root=str(storage.join(storage.publish_data(augment.parent, [augment.name]), augment.name)),
        transform=params.prepare.digits_lt.transform,
        classify=params.classify,
        cpus_per_worker=params.distributed.cpus_per_worker,
        mixed_precision=params.distributed.mixed_precision,
    )


def train(
    params: Params, method: str, data_root: str | Path, augment_root: str | Path, storage: str | Path
) -> dict[str, Any]:
    """Train ``classify.seeds`` classifiers of ``method`` through Ray Train; returns the final state."""
    job = job_config(params, method, data_root, augment_root)
    inputs = [Path(data_root) / "digits_lt", *([Path(augment_root)] if method == "git" else [])]
    name = run_name(f"classify_{method}", job, train_loop, inputs)
    return distributed.fit(train_loop, job, params.distributed, name, storage)


def evaluate(
    models: dict[int, torch.nn.Module],
    data_root: str | Path,
    transform: str,
    draws: int,
    class_sizes: dict[int, int],
    threshold: int,
) -> dict[str, Any]:
    """Balanced accuracy on freshly transformed test images and per-class eKLD (x = clean test image,
    x' ~ T(.|x), ``draws`` per image), per seed and as mean / std over seeds."""
    images, labels, _ = read_images(Path(data_root) / "digits_lt", "test")
    check_classes(labels, f"{Path(data_root) / 'digits_lt'} test split")
    rng = np.random.default_rng(12345)
    moved = to_tensor([apply_nuisance(im, draw_nuisance(transform, rng)) for im in images], channels=1)
    per_seed = []
    for seed, model in sorted(models.items()):
        with torch.no_grad():
            pred = model(moved).argmax(1).numpy()
        ekld = ekld_by_class(lambda x: model(x), images, labels, transform, draws, np.random.default_rng([seed, 99]))  # noqa: B023
        per_seed.append({"seed": seed, "balanced_acc": balanced_accuracy(labels, pred), "ekld_by_class": ekld})
    classes = sorted(class_sizes)
    tail = [c for c in classes if class_sizes[c] < threshold]
    head = [c for c in classes if class_sizes[c] >= threshold]
    from scipy.stats import spearmanr  # here, not at the top: the training workers import this module

    ek = np.array([[r["ekld_by_class"][c] for c in classes] for r in per_seed])  # (seeds, classes)
    sizes = [class_sizes[c] for c in classes]

    def stat(values: np.ndarray) -> tuple[float, float]:
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    acc = np.array([r["balanced_acc"] for r in per_seed])
    head_ek, tail_ek = (ek[:, [classes.index(c) for c in group]].mean(1) for group in (head, tail))
    rhos = [spearmanr(sizes, row) for row in ek]
    out: dict[str, Any] = {
        "balanced_acc": stat(acc)[0], "balanced_acc_std": stat(acc)[1],
        "ekld_mean": stat(ek.mean(1))[0], "ekld_mean_std": stat(ek.mean(1))[1],
        "ekld_head": stat(head_ek)[0], "ekld_head_std": stat(head_ek)[1],
        "ekld_tail": stat(tail_ek)[0], "ekld_tail_std": stat(tail_ek)[1],
        "ekld_by_class": {str(c): float(ek[:, i].mean()) for i, c in enumerate(classes)},
        "ekld_by_class_std": {str(c): float(ek[:, i].std(ddof=1)) if len(ek) > 1 else 0.0 for i, c in enumerate(classes)},
        "class_sizes": {str(c): class_sizes[c] for c in classes},
        "spearman_size_ekld": float(spearmanr(sizes, ek.mean(0)).statistic),
        "spearman_size_ekld_per_seed": [float(r.statistic) for r in rhos],
        "spearman_p_per_seed": [float(r.pvalue) for r in rhos],
        "seeds": [r["seed"] for r in per_seed],
        "balanced_acc_per_seed": acc.tolist(),
        "ekld_mean_per_seed": ek.mean(1).tolist(), "ekld_head_per_seed": head_ek.tolist(), "ekld_tail_per_seed": tail_ek.tolist(),
    }  # fmt: skip
    return out
