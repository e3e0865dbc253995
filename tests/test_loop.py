"""The training-loop scaffold: schedules, on-device metrics, resume bookkeeping, the plain runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import distributed
from pipeline.loop import Meter, Schedule, TrainingRun, seed_for


def test_schedules_by_kind():
    cos = Schedule(1.0, total=100, warmup=10, kind="cosine")
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0) and cos(10) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.5) and cos(99) < 0.01
    lin = Schedule(2.0, total=10, kind="linear", hold=5)  # pix2pix: 1 - (t - hold) / (total - hold + 1)
    assert [lin(t) for t in (0, 4, 5, 9)] == pytest.approx([2.0, 2.0, 2.0, 2.0 * (1 - 4 / 6)])
    step = Schedule(0.1, total=10, kind="step", milestones=(3, 6), gamma=0.5)
    assert [step(t) for t in (2, 3, 6)] == pytest.approx([0.1, 0.05, 0.025])
    assert Schedule(0.3)(1000) == 0.3
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        Schedule(1.0, kind="exp")


def test_schedule_sets_groups_with_their_multiplier_or_fixed_rate():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_mult": 0.1}, {"params": [c], "fixed_lr": True}], lr=1.0)
    lr = Schedule(1.0, total=10, kind="cosine").apply(opt, 5)
    assert lr == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, 0.1 * lr, 1.0])


def test_meter_means_equal_the_per_step_floats():
    values = torch.rand(50, dtype=torch.float32)
    meter = Meter()
    for v in values:
        meter.add(loss=v * 3, seen=4)
    assert meter.means()["loss"] == float(np.mean([float(v * 3) for v in values]))
    assert meter.totals()["seen"] == 200.0


def test_seeds_differ_by_every_part_of_the_key():
    assert seed_for(0, 1, 0) == seed_for(0, 1, 0)
    assert len({seed_for(0, 1, 0), seed_for(0, 1, 1), seed_for(0, 2, 0), seed_for(1, 1, 0)}) == 4


def _toy_loop(config: dict, session: distributed.Session) -> None:
    """A regression on a fixed batch through the scaffold: the plain runner must return its checkpoint."""
    w = session.worker()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = TrainingRun(w, config["epochs"], "toy")
    run.restore(model=model, optimizer=opt)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    for epoch in run.epochs():
        for _ in range(20):
            with run.data():
                batch = x
            loss = torch.nn.functional.mse_loss(model(batch).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.meter.add(loss=loss)
        run.report(run.summary(epoch, 20, 20 * len(x)), ("loss",), model=model, optimizer=opt)


def test_plain_runner_runs_a_loop_without_ray_and_returns_its_checkpoint():
    state = distributed.run_plain(_toy_loop, {"epochs": 3})
    losses = [r["loss"] for r in state["history"]]
    assert [r["epoch"] for r in state["history"]] == [0, 1, 2] and state["starts"] == [0] and state["world_size"] == 1
    assert losses[2] < losses[0] / 10  # it trained
    assert set(state) >= {"model", "optimizer"} and state["history"][0]["images_per_s"] > 0
