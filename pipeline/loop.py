"""The one scaffold every training loop runs on; each method keeps its own step explicit.

It owns what every loop would otherwise repeat: resume from the last checkpoint (epoch,
history, the epoch each attempt started at), the per-rank per-epoch random state, per-step
scalars kept on the device with one host sync per epoch, the epoch timer, and the rank-0
checkpoint and report, and on a GPU every rank's utilisation and memory (:mod:`pipeline.monitor`).
:class:`Schedule` is the one learning-rate schedule of all loops.

    w = session.worker(cpus)                       # in loop(job, session)
    run = TrainingRun(w, epochs=E, name="simsiam")
    run.restore(model=model, optimizer=opt)           # no-op on a fresh start
    for epoch in run.epochs():
        gen = run.generator(seed, epoch)               # this rank's torch.Generator on its device
        for step in range(steps):
            with run.data():                           # timed as data (profiled runs only)
                x = make_batch(..., gen)
            loss = ...; opt.step()
            run.meter.add(loss=loss)                   # stays on the device
        row = run.summary(epoch, images=steps * batch) # means, lr, images/s: one host sync
        run.report(row, model=core, optimizer=opt)     # rank 0 checkpoints, every rank reports
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline import collectives, distributed
from pipeline.monitor import gpu_monitor


@dataclass(frozen=True)
class Schedule:
    """Learning rate by step: linear warm-up over ``warmup`` steps, then ``kind``:

    - ``constant``: ``base``;
    - ``cosine``: cosine decay from ``base`` to 0 at ``total`` (SimSiam, SwAV);
    - ``linear``: ``base`` until ``hold``, then linear towards 0 (pix2pix / CycleGAN:
      ``1 - (t - hold) / (total - hold + 1)``);
    - ``step``: ``base * gamma ** (number of milestones passed)`` (ResNet classifiers, MUNIT).

    Loops that change the rate once per epoch pass epochs as steps.
    """

    base: float
    total: int = 1
    warmup: int = 0
    kind: str = "constant"
    hold: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    KINDS = ("constant", "cosine", "linear", "step")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown schedule '{self.kind}' (allowed: {', '.join(self.KINDS)})")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base * (step + 1) / self.warmup
        if self.kind == "cosine":
            progress = (step - self.warmup) / max(1, self.total - self.warmup)
            return self.base * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return self.base * (1.0 if step < self.hold else 1.0 - (step - self.hold) / (self.total - self.hold + 1))
        if self.kind == "step":
            return self.base * self.gamma ** sum(step >= m for m in self.milestones)
        return self.base

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every param group's lr (times its ``lr_mult``, default 1; a group with ``fixed_lr``
        keeps ``base``); return the scheduled lr."""
        lr = self(step)
        for g in optimizer.param_groups:
            g["lr"] = self.base if g.get("fixed_lr") else lr * g.get("lr_mult", 1.0)
        return lr


class Bundle:
    """Several stateful objects (models, optimizers) saved under one checkpoint key as {name: state_dict}."""

    def __init__(self, objects: Mapping[str, Any]) -> None:
        self.objects = dict(objects)

    def state_dict(self) -> dict[str, Any]:
        return {k: o.state_dict() for k, o in self.objects.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, o in self.objects.items():
            o.load_state_dict(state[k])


class Meter:
    """Per-step scalars of one epoch, kept where they were computed (no host sync per step).

    ``add(loss=t, ...)`` takes 0-d tensors or numbers; ``means()`` / ``totals()`` bring them to the
    host once, as float64 (the same values ``float(t)`` per step would have given).
    """

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}

    def add(self, values: Mapping[str, torch.Tensor | float] | None = None, **kw: torch.Tensor | float) -> None:
        for k, v in {**(values or {}), **kw}.items():
            self.values.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))

    def _host(self) -> dict[str, np.ndarray]:
        return {
            k: torch.stack([t.reshape(()).to(v[0].device) for t in v]).double().cpu().numpy()
            for k, v in self.values.items()
        }

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(a)) for k, a in self._host().items()}

    def totals(self) -> dict[str, float]:
        return {k: float(np.sum(a)) for k, a in self._host().items()}


def seed_for(*key: int) -> int:
    """A 63-bit seed from an integer key (seed, epoch, rank, ...), independent for every key."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class TrainingRun:
    """Resume, epochs, metrics, timing and checkpoints of one worker's training loop.

    ``epochs`` is the run's length; ``name`` prefixes the rank-0 progress line.
    ``profile=True`` (the step profile) synchronises the device around :meth:`data` blocks
    so that data and model time can be told apart, and counts FLOPs in the first epoch.
    """

    def __init__(self, w: distributed.Worker, epochs: int, name: str, profile: bool = False) -> None:
        self.w, self.total, self.name, self.profile = w, epochs, name, profile
        self.state = w.session.load_state()
        self.start_epoch = 0 if self.state is None else self.state["epoch"] + 1
        self.history: list[dict[str, Any]] = [] if self.state is None else list(self.state["history"])
        self.starts: list[int] = [*([] if self.state is None else self.state["starts"]), self.start_epoch]
        self.reports = 0 if self.state is None else self.state.get("reports", 0)  # so far, over restarts
        self.meter = Meter()
        self.epoch = self.start_epoch
        self._t0 = 0.0
        self._data_s = 0.0
        self._flops: torch.utils.flop_counter.FlopCounterMode | None = None
        self.gpu = gpu_monitor(w.device)

    @property
    def resumed(self) -> bool:
        return self.state is not None

    def restore(self, **objects: Any) -> None:
        """Load each object's saved state (``load_state_dict``) when resuming; nothing on a fresh start."""
        if self.state is not None:
            for key, obj in objects.items():
                obj.load_state_dict(self.state[key])

    def generator(self, *key: int) -> torch.Generator:
        """A torch.Generator on this worker's device, seeded by ``key`` and the rank."""
        return torch.Generator(self.w.device).manual_seed(seed_for(*key, self.w.rank))

    def epochs(self) -> Iterator[int]:
        """The epochs left to run; each starts a fresh meter and timer."""
        for epoch in range(self.start_epoch, self.total):
            self.epoch, self.meter, self._data_s = epoch, Meter(), 0.0
            counting = self.profile and epoch == self.start_epoch
            with self._counting_flops() if counting else contextlib.nullcontext():
                self._sync()
                self._t0 = time.perf_counter()
                yield epoch

    @contextlib.contextmanager
    def _counting_flops(self) -> Iterator[None]:
        from torch.utils.flop_counter import FlopCounterMode

        self._flops = FlopCounterMode(display=False)
        with self._flops:
            yield

    def _sync(self) -> None:
        if self.profile and self.w.device.type == "cuda":
            torch.cuda.synchronize(self.w.device)

    @contextlib.contextmanager
    def data(self) -> Iterator[None]:
        """Mark the making of a batch (its time is reported as ``data_s`` in profiled runs)."""
        self._sync()
        t0 = time.perf_counter()
        yield
        self._sync()
        self._data_s += time.perf_counter() - t0

    def summary(self, epoch: int, steps: int, images: int, lr: float | None = None, **extra: Any) -> dict[str, Any]:
        """The epoch's row: its ``extra`` keys, ``lr``, the meter's means, throughput; one host sync.

        ``steps`` and ``images`` count this worker's work in the epoch; images/s is over all workers.
        """
        means = self.meter.means()
        self._sync()
        elapsed = time.perf_counter() - self._t0
        row: dict[str, Any] = {"epoch": epoch, **extra}
        if lr is not None:
            row["lr"] = lr
        row.update(means)
        row["steps_per_s"] = steps / elapsed
        row["images_per_s"] = images * self.w.world_size / elapsed
        if self.w.device.type == "cuda":  # every rank's GPU use, in rank 0's row (what the run logs)
            for rank, gpu in enumerate(collectives.all_gather_object(self.gpu.epoch() if self.gpu else {})):
                row |= {f"{k}_rank{rank}": v for k, v in gpu.items()}
        if self.profile:
            row["data_s"] = self._data_s / steps
            row["model_s"] = (elapsed - self._data_s) / steps
            if self._flops is not None:
                row["flops_per_step"] = self._flops.get_total_flops() / steps
                self._flops = None
        return row

    def log(self, row: dict[str, Any]) -> None:
        """Keep ``row`` in the history (rank 0) without reporting or checkpointing this epoch."""
        if self.w.is_main:
            self.history.append(row)

    def report(
        self, row: dict[str, Any], show: tuple[str, ...] = (), extra: dict[str, Any] | None = None, **objects: Any
    ) -> None:
        """Keep ``row`` in the history, print it (rank 0) and report it from every rank; rank 0
        checkpoints each object's ``state_dict()`` (models, optimizers), the ``extra`` entries and the
        run's bookkeeping (epoch, history, starts, world size, reports).

        The reported metrics also carry ``report``, this report's number counted over restarts
        (a Tune trial that resumes its run goes on from there, as ASHA's clock)."""
        self.log(row)
        self.reports += 1
        state = None
        if self.w.is_main:
            shown = " ".join(f"{k} {row[k]:.4f}" for k in show if k in row)
            print(
                f"[{self.name}] epoch {self.epoch + 1}/{self.total} {shown} {row['images_per_s']:.0f} img/s", flush=True
            )
            state = {k: o.state_dict() for k, o in objects.items()} | (extra or {})
            state |= {"epoch": self.epoch, "history": list(self.history), "starts": self.starts, "world_size": self.w.world_size,
                      "reports": self.reports}  # fmt: skip
        self.w.session.report({**row, "report": self.reports}, state, self.w)
