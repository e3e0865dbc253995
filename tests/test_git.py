"""Generative invariance transfer: MUNIT training pieces, tail augmentation, the four classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import parse_params
from pipeline.data.shards import read_table
from pipeline.errors import UserError
from pipeline.invariance import classify as C
from pipeline.invariance import munit as G
from pipeline.models.classifier import ResNet20
from pipeline.models.munit import MunitPass

from .conftest import tiny_raw

MP = parse_params(tiny_raw(munit={"seed": 0, "dim": 8, "style_dim": 4, "n_down": 2, "n_res": 1, "mlp_dim": 16, "disc_width": 8,
                                 "gan": 1.0, "recon_x": 10.0, "recon_s": 1.0, "recon_c": 1.0, "cycle": 0.0})).munit  # fmt: skip


def test_munit_step_reduces_reconstruction_on_a_fixed_batch(tiny_data):
    model, disc = G.build_munit(MP)
    x, _, _ = G.load_digits(tiny_data, "train")
    x = x[:8]
    assert x.min() >= -1 and x.max() <= 1 and x.shape[1:] == (1, 16, 16)
    opt_g = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    before = G.reconstruction_l1(model, x)
    for _ in range(15):
        row = G.munit_step(
            MunitPass(model, True), disc, (opt_g, opt_d), x, MP.model_copy(update={"cycle": 1.0}), model.style_dim
        )
    assert {"loss_gan", "loss_recon_x", "loss_recon_c", "loss_recon_s", "loss_cycle", "loss_d"} <= set(row)
    assert G.reconstruction_l1(model, x) < 0.8 * before


def test_munit_discriminator_loss_is_weighted_by_gan_as_the_generators():
    """NVlabs/MUNIT scales the discriminator's loss by gan_w too; at gan 0.5 the discriminator's
    gradients are half those at 1.0 (same weights, same batch)."""
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    grads = {}
    for gan in (1.0, 0.5):
        torch.manual_seed(0)
        model, disc = G.build_munit(MP)
        opt_d = torch.optim.SGD(disc.parameters(), lr=0.0)  # keeps the grads of the step for reading
        opt_g = torch.optim.SGD(model.parameters(), lr=0.0)
        opt_d.zero_grad = lambda set_to_none=True: None  # the grads of the step stay readable
        torch.manual_seed(1)
        row = G.munit_step(
            MunitPass(model, True), disc, (opt_g, opt_d), x, MP.model_copy(update={"gan": gan}), model.style_dim
        )
        grads[gan] = torch.cat([p.grad.flatten() for p in disc.parameters()])
        assert float(row["loss_d"]) > 0
    torch.testing.assert_close(grads[0.5], 0.5 * grads[1.0])


def test_style_diversity_sees_collapse():
    model, _ = G.build_munit(MP)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert G.style_diversity(model, x, 3) > 0
    with torch.no_grad():
        model.decoder.mlp[-1].weight.zero_()  # AdaIN parameters no longer depend on the style
    assert G.style_diversity(model, x, 3) == pytest.approx(0.0, abs=1e-7)


def test_augment_guard_stops_on_a_collapsed_munit():
    model, _ = G.build_munit(MP)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        model.decoder.mlp[-1].weight.zero_()  # collapsed: every style decodes to the same image
    figures = G.style_figures(model, x, 4)
    assert figures["style_diversity"] < 1e-6 < figures["recon_l1"] and len(figures["style_margin_per_image"]) == 8
    with pytest.raises(
        UserError,
        match=r"augment: MUNIT's style is dead: random styles move the image by 0.0000 \(L1\), less than its reconstruction error",
    ):
        G.check_style_alive(figures)
    with torch.no_grad():  # a style encoder that sees nothing: its error is exactly that of predicting 0
        model.style_encoder.net[-1].weight.zero_()
        model.style_encoder.net[-1].bias.zero_()
    blind = G.style_figures(model, x, 4)
    assert blind["recon_s"] == pytest.approx(blind["recon_s_unrecovered"]) and blind[
        "recon_s_gain_ci95"
    ] == pytest.approx([0.0, 0.0])
    alive = {**blind, "style_diversity": 2 * blind["recon_l1"]}  # restyles move the image; only the read-back fails
    with pytest.raises(
        UserError, match=r"its style encoder recovers a random style to L1 0\.\d+, not clearly below predicting 0"
    ):
        G.check_style_alive(alive)
    G.check_style_alive({**alive, "recon_s_gain_ci95": [0.02, 0.2]})  # read back better than predicting 0: no error


def test_tail_classes_and_threshold_errors():
    labels = np.repeat(np.arange(3), [50, 20, 5])
    assert G.tail_classes(labels, 21) == [1, 2]
    with pytest.raises(UserError, match="augment.threshold=60 is above every class size \\(largest 50\\)"):
        G.tail_classes(labels, 60)
    with pytest.raises(UserError, match="at or below every class size"):
        G.tail_classes(labels, 5)


def test_augment_records_keep_label_and_provenance(tiny_data):
    model, _ = G.build_munit(MP)
    labels = read_table(tiny_data / "digits_lt", "train", columns=["label"]).column("label").to_numpy()
    counts = np.bincount(labels)
    threshold = 5  # tiny counts are 20, 7, 3, 2, ..., 2
    recs = G.augment_records(model.eval(), tiny_data, threshold, 2, seed=0)
    tail = {c for c in range(10) if counts[c] < threshold}
    assert {r.label for r in recs} == tail and len(recs) == 2 * sum(counts[c] for c in tail)
    r = recs[0]
    assert r.image.dtype == np.uint8 and r.image.shape == (16, 16) and r.transform["model"] == "munit"
    assert labels[r.transform["source_row"]] == r.label and isinstance(r.transform_seed, int)
    again = G.augment_records(model.eval(), tiny_data, threshold, 2, seed=0)
    assert np.array_equal(again[0].image, r.image)  # regenerable from the recorded seed


def test_lr_schedule_warms_up_then_steps_down():
    cp = parse_params(
        tiny_raw(classify={"lr": 0.1, "epochs": 10, "warmup_epochs": 2, "decay_epochs": [5, 8], "decay": 0.1})
    ).classify
    lr = C.schedule(cp, steps=10)
    assert lr(0) == pytest.approx(0.005)
    assert lr(19) == pytest.approx(0.1)
    assert lr(40) == pytest.approx(0.1)
    assert lr(50) == pytest.approx(0.01)
    assert lr(90) == pytest.approx(0.001)


def test_drs_order_is_balanced_and_erm_order_is_a_permutation():
    labels = torch.from_numpy(np.repeat(np.arange(4), [100, 50, 10, 4]))
    g = torch.Generator().manual_seed(0)
    perm = C.epoch_order(labels, False, g)
    assert sorted(perm.tolist()) == list(range(len(labels)))
    drs = C.epoch_order(labels, True, g)
    assert len(drs) == len(labels) and abs(float((labels[drs] == 3).float().mean()) - 0.25) < 0.08


def test_batches_per_method(tiny_data):
    params = parse_params(tiny_raw())
    cp = params.classify
    data = C.load_train(tiny_data)
    idx = torch.arange(8)

    def g() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    erm_x, erm_y = C.make_batch(idx, data, "erm", True, cp, "rot", None, g())
    assert torch.equal(erm_x, data["x"][idx]) and torch.equal(erm_y, data["y"][idx])
    oracle_x, _ = C.make_batch(idx, data, "oracle", False, cp, "rot", None, g())
    assert not torch.equal(oracle_x, erm_x)  # a fresh draw, not the stored one
    aug = (torch.full((5, 1, 16, 16), 0.5), torch.full((5,), 9))
    git_x, git_y = C.make_batch(idx, data, "git", True, cp.model_copy(update={"gen_frac": 0.5}), "rot", aug, g())
    assert int((git_y == 9).sum()) >= 4 and int((git_x.flatten(1) == 0.5).all(1).sum()) == 4
    early_x, _ = C.make_batch(idx, data, "git", False, cp.model_copy(update={"gen_frac": 0.5}), "rot", aug, g())
    assert torch.equal(early_x, erm_x)  # no mixing before the first decay


def test_empty_class_is_one_line():
    with pytest.raises(UserError, match="class 3 has no images"):
        C.check_classes(np.array([0, 1, 2, 4, 5, 6, 7, 8, 9]), "train")


def test_evaluate_reports_seed_means_and_spearman(tiny_data):
    torch.manual_seed(0)
    models = {s: ResNet20(10, 1, 4).eval() for s in (0, 1)}
    sizes = {c: 2 + c for c in range(10)}
    out = C.evaluate(models, tiny_data, "rot", 2, sizes, threshold=6)
    assert 0 <= out["balanced_acc"] <= 1 and len(out["balanced_acc_per_seed"]) == 2
    assert set(out["ekld_by_class"]) == {str(c) for c in range(10)} and all(
        v >= 0 for v in out["ekld_by_class"].values()
    )
    assert -1 <= out["spearman_size_ekld"] <= 1 and out["ekld_tail"] >= 0 and out["ekld_head"] >= 0
