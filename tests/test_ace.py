"""ACE: shapes, Adaptive Instance Augmentation, the frozen content encoder, monitors, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline import ace
from pipeline.config import parse_params
from pipeline.errors import UserError
from pipeline.io import save_torch
from pipeline.model_files import save_model
from pipeline.models.ace import ContentEncoder
from pipeline.models.resnet import ResNet
from pipeline.translate import encoder_backbone

from .conftest import tiny_raw

AC = parse_params(tiny_raw(ace={"level": 2, "content_dim": 16, "n_res": 2, "style_dim": 4, "mlp_dim": 16, "disc_width": 8,
                                "recon": 10.0, "content": 1.0, "style": 1.0, "gan": 1.0})).ace  # fmt: skip


def _model(level: int = 2) -> tuple[ace.ACE, torch.nn.Module]:
    torch.manual_seed(0)
    return ace.build(AC.model_copy(update={"level": level}), ResNet(8, 3))


@pytest.mark.parametrize("level,hw", [(0, 32), (1, 32), (2, 16), (3, 8)])
def test_shapes_at_every_level(level, hw):
    model, disc = _model(level)
    x = torch.rand(4, 3, 32, 32)
    c, s = model.content(x), model.style(x)
    assert c.shape == (4, 16, hw, hw) and s.shape == (4, 4)
    assert model.predictor(c).shape == c.shape
    out = model.decode(c, s)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert model.augment(c).shape == x.shape
    assert disc(out).shape[:2] == (4, 1)
    assert all(hasattr(m, "parametrizations") for m in disc.net if isinstance(m, torch.nn.Conv2d))  # spectral norm


@pytest.mark.parametrize("level,hw", [(0, 16), (1, 8), (3, 2)])
def test_on_the_imagenet_stem_the_decoder_upsamples_from_each_levels_stride(level, hw):
    torch.manual_seed(0)
    model = ace.build(AC.model_copy(update={"level": level}), ResNet(8, 3, arch="resnet50", stem="imagenet"))[0]
    x = torch.rand(2, 3, 32, 32)
    c = model.content(x)
    assert c.shape == (2, 16, hw, hw) and model.decode(c, model.style(x)).shape == x.shape


def test_adaptive_instance_augmentation_changes_style_not_layout():
    torch.manual_seed(0)
    h = torch.randn(2, 8, 16, 16) * 3 + 1
    g = torch.Generator().manual_seed(0)
    a, b = ace.adaptive_instance_augmentation(h, g), ace.adaptive_instance_augmentation(h, g)
    # style statistics (per-channel mean and std) differ between the views and from the input ...
    for u, v in ((a, b), (a, h)):
        assert (u.mean(dim=(2, 3)) - v.mean(dim=(2, 3))).abs().mean() > 0.3
        assert (u.std(dim=(2, 3)) - v.std(dim=(2, 3))).abs().mean() > 0.3

    # ... while every channel's spatial pattern is the same: |correlation| with the input is 1
    def corr(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u, v = u.flatten(2) - u.flatten(2).mean(2, keepdim=True), v.flatten(2) - v.flatten(2).mean(2, keepdim=True)
        return (u * v).sum(2) / (u.norm(dim=2) * v.norm(dim=2))

    assert torch.allclose(corr(a, h).abs(), torch.ones(2, 8), atol=1e-4)
    # the decoder-level version (random AdaIN parameters) keeps the content code, changes the image
    model, _ = _model()
    c = model.content(torch.rand(3, 3, 32, 32))
    v1, v2 = model.augment(c, torch.Generator().manual_seed(1)), model.augment(c, torch.Generator().manual_seed(2))
    assert (v1 - v2).abs().mean() > 1e-3


def test_autoencoder_step_leaves_the_content_encoder_unchanged():
    model, disc = _model()
    x = torch.rand(4, 3, 32, 32)
    opts = (torch.optim.Adam(model.autoencoder_parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3))
    before_c = {k: v.clone() for k, v in model.content_encoder.state_dict().items()}
    before_d = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    before_e = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    row = ace.autoencoder_step(model, disc, opts, x, AC)
    assert all(np.isfinite(v) for v in row.values())
    assert all(
        torch.equal(before_c[k], v) for k, v in model.content_encoder.state_dict().items()
    )  # weights and BN statistics
    assert all(torch.equal(before_e[k], v) for k, v in model.encoder.state_dict().items())  # the frozen backbone
    assert any(not torch.equal(before_d[k], v) for k, v in model.decoder.state_dict().items())  # the decoder did learn
    # and the contrastive step trains the content encoder (only it and the predictor)
    opt_c = torch.optim.Adam(model.contrastive_parameters(), 1e-3)
    before_s = {k: v.clone() for k, v in model.style_encoder.state_dict().items()}
    ace.contrastive_step(model, opt_c, x, 1.0, torch.Generator().manual_seed(0))
    assert any(not torch.equal(before_c[k], v) for k, v in model.content_encoder.state_dict().items())
    assert all(torch.equal(before_s[k], v) for k, v in model.style_encoder.state_dict().items())


def test_training_steps_cut_the_losses_on_a_fixed_batch():
    model, disc = _model()
    x = F.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="bilinear")  # smooth images a 16 x 16 code can carry
    opt_c = torch.optim.Adam(model.contrastive_parameters(), 2e-3)
    opts = (torch.optim.Adam(model.autoencoder_parameters(), 2e-3), torch.optim.Adam(disc.parameters(), 2e-4))
    g = torch.Generator().manual_seed(0)
    rows = [
        ace.contrastive_step(model, opt_c, x, 1.0, g) | ace.autoencoder_step(model, disc, opts, x, AC)
        for _ in range(40)
    ]
    assert np.mean([r["loss_recon"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss_recon"] for r in rows[:5]])
    assert np.mean([r["loss_contrastive"] for r in rows[-5:]]) < np.mean([r["loss_contrastive"] for r in rows[:5]])


def test_finetune_reconstruction_anchor_is_off_by_default_and_cuts_reconstruction_when_on():
    model, disc = _model()
    x = F.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="bilinear")
    y = F.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="bilinear")
    opts = (torch.optim.Adam(model.autoencoder_parameters(), 2e-3), torch.optim.Adam(disc.parameters(), 2e-4))
    assert "loss_recon" not in ace.finetune_step(model, disc, opts, x, y, AC)  # the paper's recipe
    rows = [ace.finetune_step(model, disc, opts, x, y, AC, recon=10.0) for _ in range(30)]
    assert np.mean([r["loss_recon"] for r in rows[-5:]]) < 0.7 * np.mean([r["loss_recon"] for r in rows[:5]])


def test_monitors_detect_collapse_and_ignored_style():
    z = torch.randn(16, 32, 4, 4)
    assert ace.content_std(z) > 0.5
    assert ace.content_std(z[:1].expand(16, -1, -1, -1).clone()) < 1e-3
    model, _ = _model()
    x = torch.rand(4, 3, 32, 32)
    styles = torch.randn(3, 4) * 3
    assert ace.style_diversity(model, x, styles) > 0
    assert ace.style_diversity(model, x, styles[:1].expand(3, -1)) == pytest.approx(0.0, abs=1e-7)
    own, others = ace.content_similarity(model, x, x)
    assert own == pytest.approx(1.0, abs=1e-5) and others < own


def test_adain_baseline_moves_feature_statistics_towards_the_exemplars():
    model, _ = _model()
    x, ex = torch.rand(4, 3, 32, 32) * 0.5, torch.rand(6, 3, 32, 32) * 0.5 + 0.5
    out = ace.adain_transfer(model, x, ex, steps=30, lr=0.05)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    mu_ex = model.features(ex).mean(dim=(0, 2, 3))

    def gap(imgs: torch.Tensor) -> float:
        return float((model.features(imgs).mean(dim=(0, 2, 3)) - mu_ex).abs().mean())

    with torch.no_grad():
        assert gap(out) < 0.7 * gap(x)


def test_style_exemplar_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="style exemplar folder not found"):
        ace.load_exemplars(tmp_path / "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"style exemplar folder {empty} is empty"):
        ace.load_exemplars(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"bad image .*a.png"):
        ace.load_exemplars(bad)
    good = tmp_path / "good"
    good.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(good / f"{i}.png")
    assert ace.load_exemplars(good).shape == (2, 3, 32, 32)


def test_backbone_of_the_wrong_architecture_is_one_line(tmp_path):
    path = tmp_path / "backbone.pt"
    save_model(path, "backbone", {"spec": {"arch": "vgg19"}, "method": "x"}, {0: {"backbone": {}}})
    with pytest.raises(UserError, match=r"architecture 'vgg19' is unknown \(allowed: resnet18_cifar"):
        encoder_backbone("simsiam", path)
    spec = {"arch": "resnet18_cifar", "width": 8, "in_channels": 3}
    save_model(path, "backbone", {"spec": spec, "method": "x"}, {0: {"backbone": {"w": torch.zeros(1)}}})
    with pytest.raises(UserError, match="weights do not match its meta"):
        encoder_backbone("simsiam", path)


def test_frozen_call_passes_gradients_to_the_input_only():
    enc = ContentEncoder(4, 8, 1)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    F.l1_loss(ace.frozen_call(enc, x), torch.zeros(2, 8, 5, 5)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_floor_fits_each_images_style_code_to_its_own_target():
    model, _ = _model()
    model.eval()  # targets made with the content codes the floor sees (BatchNorm in eval mode)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        codes = torch.randn(4, 4) * 2  # a different style per image: no single code reaches them all
        target = model.decode(model.content(x), codes)
    start = torch.zeros(4)
    with torch.no_grad():
        start_l1 = (model.decode(model.content(x), start.expand(4, -1)) - target).abs().mean(dim=(1, 2, 3))
    floor = ace.best_style_per_image(model, x, target, start, steps=60, lr=0.1)
    floor_l1 = (floor - target).abs().mean(dim=(1, 2, 3))
    assert (floor_l1 < 0.5 * start_l1).all()  # every image got closer with its own code


def test_ace_file_holds_one_model_per_seed_and_loads_weights_only(tmp_path):
    from pipeline.config import parse_params

    from .conftest import tiny_raw

    params = parse_params(tiny_raw(ace={"seeds": [3, 5]}))
    backbone = ResNet(params.pretrain.width, 3)
    states = {}
    for seed in params.ace.seeds:
        torch.manual_seed(seed)
        states[seed] = {"ace": ace.build(params.ace, backbone)[0].state_dict()}
    ace.save_ace(tmp_path / "ace.pt", params, backbone, states, "pretrain")
    models = ace.load_ace(tmp_path / "ace.pt")
    assert sorted(models) == [3, 5]
    for seed, model in models.items():
        assert all(torch.equal(v, states[seed]["ace"][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(a, b) for a, b in zip(models[3].state_dict().values(), models[5].state_dict().values()))
    save_torch(tmp_path / "old.pt", {"seeds": {}, "ace": {}})  # the layout before format 2
    with pytest.raises(UserError, match=r"a model file of an older format: rerun `dvc repro ace`"):
        ace.load_ace(tmp_path / "old.pt")
