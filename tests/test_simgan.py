"""SimGAN (seed 003): synthetic digits, the refiner's losses, the history buffer, the guard against
trivial refiners, and a resumable in-process run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import distributed
from pipeline.config import parse_params
from pipeline.data.synthetic import FONTS, render_digits
from pipeline.errors import UserError
from pipeline.models.simgan import HistoryBuffer
from pipeline.simgan import check_refiner, discriminator_loss, refiner_figures, refiner_losses
from pipeline.simgan import training as S

from .conftest import tiny_raw


def test_synthetic_digits_are_seeded_labelled_and_bright_ink_on_black():
    x, y, fonts = render_digits(3, 32, seed=1)
    again, _, _ = render_digits(3, 32, seed=1)
    assert x.shape == (30, 32, 32) and x.dtype == np.uint8 and np.array_equal(x, again)
    assert np.array_equal(y, np.repeat(np.arange(10), 3)) and set(fonts) <= set(FONTS)
    assert not np.array_equal(x, render_digits(3, 32, seed=2)[0])
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], 1)
    assert border.mean() < 30 < x[:, 8:24, 8:24].mean()  # ink in the middle, black around it


def test_refiner_losses_match_hand_computed_values():
    synthetic = torch.zeros(2, 1, 2, 2)
    refined = torch.full((2, 1, 2, 2), 0.5)
    scores = torch.zeros(2, 1, 1, 1)  # the discriminator undecided on every patch: BCE = log 2
    losses = refiner_losses(refined, synthetic, scores, lambda_reg=0.1)
    assert float(losses["loss_adv"]) == pytest.approx(math.log(2))
    assert float(losses["loss_reg"]) == pytest.approx(0.5)
    assert float(losses["loss_r"]) == pytest.approx(math.log(2) + 0.05)
    # a patch scored 2 (real) costs log(1 + e^-2) in the refiner's loss
    two = refiner_losses(refined, synthetic, torch.full((2, 1, 1, 1), 2.0), 0.0)["loss_r"]
    assert float(two) == pytest.approx(math.log1p(math.exp(-2)))
    real, fake = torch.full((1, 1, 2, 2), 20.0), torch.full((1, 1, 2, 2), -20.0)
    assert float(discriminator_loss(real, fake)) == pytest.approx(0.0, abs=1e-8)  # both right
    assert float(discriminator_loss(fake, real)) == pytest.approx(20.0, rel=1e-6)  # both wrong: 0.5 x (20 + 20)


def test_history_buffer_serves_half_of_each_batch_from_past_refined_images():
    buffer = HistoryBuffer(size=8, seed=0)
    served = [buffer.mix(torch.full((4, 1, 2, 2), float(step))) for step in range(6)]
    assert torch.equal(served[0], torch.zeros(4, 1, 2, 2))  # empty buffer: the batch as it is
    for step, batch in enumerate(served[1:], start=1):
        values = batch.flatten(1)[:, 0].tolist()
        assert values[:2] == [step, step]  # the current half
        assert all(v < step for v in values[2:])  # the other half from earlier batches
    assert buffer.history_share == pytest.approx(10 / 24)  # 2 of 4 in each batch after the first
    state = buffer.state_dict()
    twin = HistoryBuffer(8, seed=5)
    twin.load_state_dict(state)
    batch = torch.full((4, 1, 2, 2), 9.0)
    assert torch.equal(twin.mix(batch), buffer.mix(batch))  # the checkpointed buffer carries on identically
    assert torch.equal(HistoryBuffer(0).mix(batch), batch)  # size 0: no history


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Dim(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # on [-1, 1]: 0.8 x the ink, a little lighter
        return 0.8 * x + 0.1


class _Constant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_the_guard_stops_an_identity_or_collapsed_refiner_with_one_line():
    x = torch.from_numpy(render_digits(2, 16, seed=0)[0]).float().div(255)[:, None]
    identity = refiner_figures(_Identity(), x)
    assert identity["moved"] == pytest.approx(0.0, abs=1e-7) and identity["spread_ratio"] == pytest.approx(1.0)
    with pytest.raises(UserError, match=r"^simgan: the refiner returns its input \(mean \|R\(x\) - x\| = .* < 0.001\)"):
        check_refiner(identity)
    collapsed = refiner_figures(_Constant(), x)
    with pytest.raises(
        UserError, match=r"^simgan: the refined images collapsed \(their spread is 0.00 of the synthetic"
    ):
        check_refiner(collapsed)
    dimmer = refiner_figures(_Dim(), x)  # greys the ink: moves every image, keeps 0.8 of the spread
    assert dimmer["spread_ratio"] == pytest.approx(0.8, rel=1e-3)
    check_refiner(dimmer)


@pytest.fixture(scope="module")
def simgan_params():
    return parse_params(tiny_raw())


def test_a_tiny_run_trains_and_a_resumed_run_repeats_it(tiny_data, simgan_params):
    job = S.job_config(simgan_params, tiny_data)
    session = distributed.PlainSession(keep_all=True)
    full = distributed.run_plain(S.train_loop, job, session=session)
    history = full["history"]
    assert len(history) == job.simgan.epochs and all(math.isfinite(r["loss_r"]) for r in history)
    assert history[-1]["history_share"] > 0 and history[-1]["moved"] > 0
    resumed = distributed.run_plain(S.train_loop, job, session=distributed.PlainSession(session.states[0]))
    assert resumed["starts"] == [0, 1]
    for k in ("R", "D"):
        assert all(torch.equal(v, resumed["models"][k][n]) for n, v in full["models"][k].items()), k
    assert [r["loss_d"] for r in resumed["history"]] == [r["loss_d"] for r in history]


def test_a_missing_class_or_set_is_one_line(tiny_data, tmp_path, simgan_params):
    from pipeline.data.shards import Record, write_set

    with pytest.raises(UserError, match="synthetic_digits"):
        S.job_config(simgan_params, tmp_path)
    write_set(
        tmp_path / "synthetic_digits",
        [Record(np.zeros((16, 16), np.uint8), "synthetic", "train", f"s{i}", i % 9) for i in range(18)],
    )
    with pytest.raises(UserError, match=r"synthetic_digits train split: class 9 has no images"):
        S.job_config(simgan_params, tmp_path)
