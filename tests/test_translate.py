"""Translation library: Lab, the transplanted U-Net, the GAN pieces, image metrics, input checks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from pipeline import distributed
from pipeline.color import grey_of, lab_to_net, lab_to_rgb, net_to_lab, rgb_to_lab, to_gray
from pipeline.config import parse_params
from pipeline.data.painting import palette_rgb
from pipeline.errors import UserError
from pipeline.io import save_torch
from pipeline.metrics.image import frechet_distance, kernel_inception_distance, l1, l1_luma_chroma, psnr, ssim
from pipeline.model_files import load_backbone, load_model, save_backbone, save_model
from pipeline.models import evaluating, recompute_batchnorm
from pipeline.models.gan import ImagePool, PatchDiscriminator, adversarial_loss
from pipeline.models.resnet import ResNet
from pipeline.models.unet import DomainGenerator, ResNetUNet
from pipeline.translate import check_stylizer, evaluate_painter, evaluate_stylization
from pipeline.translate import data as D
from pipeline.translate import training as T
from pipeline.translate.cyclegan import cyclegan_step
from pipeline.translate.pix2pix import cgan_step

from .conftest import tiny_raw


def test_lab_matches_skimage_and_round_trips():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(x)
    ref = rgb2lab(x.permute(0, 2, 3, 1).numpy())
    assert np.abs(lab.permute(0, 2, 3, 1).numpy() - ref).max() < 0.01
    assert (lab_to_rgb(lab) - x).abs().max() < 1e-6
    assert (net_to_lab(lab_to_net(lab)) - lab).abs().max() < 1e-9
    assert lab_to_net(lab)[:, 0].min() >= -1 and lab_to_net(lab)[:, 0].max() <= 1
    grey = lab_to_rgb(net_to_lab(grey_of(lab_to_net(lab))))  # ab = 0 is grey: R = G = B
    assert (grey[:, 0] - grey[:, 1]).abs().max() < 1e-3 and (grey[:, 1] - grey[:, 2]).abs().max() < 1e-3


@pytest.mark.parametrize("space,c_in,c_out", [("lab", 1, 2), ("lab", 3, 2), ("rgb", 3, 3)])
def test_unet_shapes_at_every_pyramid_level(space, c_in, c_out):
    width, d = 8, 6
    net = ResNetUNet(ResNet(width, 3), space, c_out, decoder_width=d)
    x = torch.rand(2, c_in, 16, 24) * 2 - 1
    pyramid = net.encoder(net.encoder_input(x))
    assert [tuple(p.shape) for p in pyramid] == [
        (2, 8, 16, 24),
        (2, 8, 16, 24),
        (2, 16, 8, 12),
        (2, 32, 4, 6),
        (2, 64, 2, 3),
    ]
    assert [tuple(f.shape) for f in net.features(x)] == [(2, 4 * d, 4, 6), (2, 2 * d, 8, 12), (2, d, 16, 24)]
    out = net(x)
    assert out.shape == (2, c_out, 16, 24) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, c_in, 12, 12))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_unet_on_the_imagenet_stem_decodes_two_more_levels_back_to_full_size(arch):
    d = 4
    net = DomainGenerator(ResNet(4, 3, arch=arch, stem="imagenet"), "colorize", d)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    sides = [tuple(f.shape[1:]) for f in net.unet.features(x)]
    assert sides == [(4 * d, 4, 6), (2 * d, 8, 12), (d, 16, 24), (d, 32, 48), (d, 64, 96)]
    out = net(x)
    assert out.shape == x.shape and torch.equal(out[:, :1], x[:, :1])  # the input's L kept
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.zeros(1, 3, 48, 48))


def test_backbone_sees_rgb_in_unit_range_whatever_the_input_space():
    net = ResNetUNet(ResNet(4, 3), "lab", 2)
    grey_l = torch.full((1, 1, 8, 8), 0.0)  # L = 50
    rgb = net.encoder_input(grey_l)
    assert (
        rgb.shape == (1, 3, 8, 8) and torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-4) and 0.4 < float(rgb.mean()) < 0.5
    )
    one_channel = ResNetUNet(ResNet(4, 1), "rgb", 3)
    assert one_channel.encoder_input(torch.zeros(1, 3, 8, 8)).shape == (1, 1, 8, 8)


def test_load_backbone_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match=r"run `dvc repro pretrain@swav` first"):
        load_backbone(tmp_path / "missing.pt", "pretrain@swav")
    bb = ResNet(4, 3)
    weights = {0: {"backbone": bb.state_dict()}}
    save_model(tmp_path / "other.pt", "backbone", {"spec": {**bb.spec(), "arch": "vgg16"}, "method": "x"}, weights)
    with pytest.raises(
        UserError, match=r"architecture 'vgg16' is unknown \(allowed: resnet18_cifar, resnet18_imagenet, resnet50_cifar"
    ):
        load_backbone(tmp_path / "other.pt", "x")
    save_model(tmp_path / "wrong.pt", "backbone", {"spec": {**bb.spec(), "width": 8}, "method": "x"}, weights)
    with pytest.raises(UserError, match="weights do not match"):
        load_backbone(tmp_path / "wrong.pt", "x")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a model file of this pipeline"):
        load_backbone(tmp_path / "junk.pt", "x")
    save_torch(tmp_path / "old.pt", {"state_dict": bb.state_dict(), "spec": bb.spec(), "method": "x"})
    with pytest.raises(UserError, match=r"a model file of an older format: rerun `dvc repro x`"):
        load_backbone(tmp_path / "old.pt", "x")
    save_torch(tmp_path / "new.pt", {"kind": "backbone", "format_version": 3, "meta": {}, "seeds": {}})
    with pytest.raises(UserError, match=r"model file format 3, this pipeline reads 2: rerun `dvc repro x`"):
        load_backbone(tmp_path / "new.pt", "x")
    save_backbone(tmp_path / "ok.pt", bb, "x", 0)
    with pytest.raises(UserError, match="is a backbone model, not a munit model"):
        load_model(tmp_path / "ok.pt", "munit")
    assert all(
        torch.equal(v, bb.state_dict()[k]) for k, v in load_backbone(tmp_path / "ok.pt", "x").state_dict().items()
    )


def test_image_pool_stores_then_swaps_past_fakes():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as is
    second = torch.arange(10.0, 18.0).view(8, 1, 1, 1)
    out = pool.query(second)
    old = set(first.flatten().tolist())
    returned = out.flatten().tolist()
    assert out.shape == second.shape
    assert any(v in old for v in returned) and any(v >= 10 for v in returned)  # a mix of past and new fakes
    assert len(pool.images) == 4
    again = ImagePool(4, seed=0)
    again.query(first)
    assert torch.equal(again.query(second), out)  # seeded
    assert torch.equal(ImagePool(0).query(second), second)


def test_evaluating_runs_in_eval_mode_without_grad_and_restores_the_mode():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    x = torch.ones(4, 2)
    with evaluating(net):
        assert not net.training
        assert torch.equal(net(x), net(x))  # dropout off
        assert not net(x).requires_grad
    assert net.training
    net.eval()
    with pytest.raises(RuntimeError), evaluating(net):
        raise RuntimeError("boom")
    assert not net.training  # an eval-mode module stays in eval mode, even after an error


def test_recompute_batchnorm_sets_the_running_statistics_of_the_images_it_sees():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 2, 1),
        torch.nn.BatchNorm2d(2),
    )
    with torch.no_grad():
        for _ in range(5):  # running stats of another distribution, as training leaves them
            net(torch.randn(2, 3, 8, 8) * 0.1)
    net.eval()
    images = torch.randn(96, 3, 8, 8) * 2 + 3
    with torch.no_grad():
        conv = net[0](images)
    recompute_batchnorm(net, images, batch=32)
    bn = net[1]
    chunks = [
        net[0](images[i : i + 32]).detach() for i in range(0, 96, 32)
    ]  # equal chunks: the average of the chunk statistics
    assert torch.allclose(bn.running_mean, conv.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([c.var((0, 2, 3)) for c in chunks]).mean(0), atol=1e-4)
    assert not net.training and bn.momentum == 0.1 and net[4].num_batches_tracked == 3


def test_adversarial_losses():
    s = torch.tensor([[2.0, -1.0]])
    assert float(adversarial_loss(torch.ones(3), True, "lsgan")) == 0.0
    assert float(adversarial_loss(s, True, "bce")) == pytest.approx(float(torch.nn.functional.softplus(-s).mean()))
    assert float(adversarial_loss(s, False, "bce")) == pytest.approx(float(torch.nn.functional.softplus(s).mean()))
    assert float(adversarial_loss(s, False, "lsgan")) == pytest.approx((4.0 + 1.0) / 2)
    with pytest.raises(ValueError):
        adversarial_loss(s, True, "wgan")
    assert PatchDiscriminator(3, 8, 3)(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 4, 4)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 0.5) == pytest.approx(16 * 0.25, rel=1e-3)
    assert frechet_distance(a, a * 2) > frechet_distance(a, a * 1.2) > 0


def test_kid_sign():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kernel_inception_distance(a, b, 64, 50)
    shifted, _ = kernel_inception_distance(a, b + 1.0, 64, 50)
    assert shifted > 0 and abs(same) < shifted / 20


def test_psnr_and_ssim_reference_points():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x) == pytest.approx(1.0)
    assert psnr((x + 0.1).clamp(0, 1), x) < psnr((x + 0.01).clamp(0, 1), x)
    half = x.clone()
    half[0] = 1 - x[0]
    assert psnr(half, x) == pytest.approx(
        (100 + 10 * math.log10(1 / ((1 - 2 * x[0]) ** 2).mean().item())) / 2, rel=1e-6
    )
    assert psnr(torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.6)) == pytest.approx(20.0)  # MSE 0.01


def test_l1_split_puts_brightness_in_luma_and_hue_in_chroma():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    assert l1_luma_chroma(x + 0.1, x) == pytest.approx((0.1, 0.0), abs=1e-6)  # brighter, same colours
    grey = to_gray(x).expand(-1, 3, -1, -1)
    luma, chroma = l1_luma_chroma(grey, x)  # same brightness, colours gone
    assert luma == pytest.approx(0.0, abs=1e-6) and chroma == pytest.approx(l1(grey, x))
    redder = x + torch.tensor([0.1, 0.0, 0.0]).view(1, 3, 1, 1)  # luminance rises by 0.299 x 0.1, the rest is colour
    assert l1_luma_chroma(redder, x) == pytest.approx((0.0299, (0.0701 + 0.0299 + 0.0299) / 3), abs=1e-6)


def _tiny_config(task: str, gan: str, tiny_data, **over):
    params = parse_params(tiny_raw(translate={"crop_size": 16, "decoder_width": 4, "disc_width": 4, **over}))
    return params, T.job_config(params, task, "scratch", gan, tiny_data, ResNet(params.pretrain.width, 3))


def test_cgan_steps_fit_a_fixed_batch(tiny_data):
    _, cfg = _tiny_config("colorize", "cgan", tiny_data, lr=1e-3)
    torch.manual_seed(0)
    m = T.build_models(cfg, ResNet(4, 3))
    opt_g = T.generator_optimizer([m["G"]], cfg.translate)
    opt_d = torch.optim.Adam(m["D"].parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = D.load_domains(cfg.data_root, cfg.task, cfg.train_fraction, cfg.seed)
    x, y = data["X"][:4], data["Y"][:4]
    assert torch.equal(x[:, 0], y[:, 0]) and float(x[:, 1:].abs().max()) == 0  # grey input, same L
    losses = [cgan_step(m, (opt_g, opt_d), x, y, cfg.colorize)["loss_l1"] for _ in range(40)]
    assert losses[-1] < 0.75 * losses[0]
    out = m["G"](x)
    assert torch.equal(out[:, :1], x[:, :1])  # the colorizer keeps L


def test_cyclegan_step_updates_both_generators_and_frozen_encoder_stays(tiny_data):
    _, cfg = _tiny_config("stylize", "cyclegan", tiny_data, freeze_encoder_epochs=1)
    m = T.build_models(cfg, ResNet(4, 3))
    opt_g = T.generator_optimizer([m["G"], m["F"]], cfg.translate)
    opt_d = torch.optim.Adam([p for k in ("D_X", "D_Y") for p in m[k].parameters()], lr=2e-4)
    T.set_lrs(opt_g, opt_d, 0, cfg.translate)
    enc_before = [p.clone() for p in m["G"].unet.encoder.parameters()]
    dec_before = [p.clone() for p in m["F"].unet.out.parameters()]
    data = D.load_domains(cfg.data_root, cfg.task, cfg.train_fraction, cfg.seed)
    pools = {"X": ImagePool(2), "Y": ImagePool(2)}
    row = cyclegan_step(m, (opt_g, opt_d), data["X"][:2], data["Y"][:2], cfg.cyclegan, pools)
    assert {"loss_cycle", "loss_idt", "loss_gan", "loss_d"} <= set(row)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, m["G"].unet.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, m["F"].unet.out.parameters()))
    T.set_lrs(opt_g, opt_d, 1, cfg.translate)  # after the freeze the encoder trains
    assert {g["role"]: g["lr"] for g in opt_g.param_groups}["encoder"] > 0


def test_generator_steps_compute_no_discriminator_gradient(tiny_data):
    """The generator's loss goes through the discriminators with their weights frozen: each
    discriminator weight gets one gradient per step (its own step), not a second one from G's that
    would be thrown away (and, under DDP, all-reduced first)."""
    for gan, discs in (("cgan", ("D",)), ("cyclegan", ("D_X", "D_Y"))):
        _, cfg = _tiny_config("colorize", gan, tiny_data)
        m = T.build_models(cfg, ResNet(4, 3))
        gens = [m[k] for k in ("G", "F") if k in m]
        opt_g = T.generator_optimizer(gens, cfg.translate)
        opt_d = torch.optim.Adam([p for k in discs for p in m[k].parameters()], lr=2e-4)
        grads = {}
        for k in discs:
            for i, p in enumerate(m[k].parameters()):
                p.register_hook(lambda g, key=(k, i), seen=grads: seen.__setitem__(key, seen.get(key, 0) + 1))
        data = D.load_domains(cfg.data_root, cfg.task, cfg.train_fraction, cfg.seed)
        x, y = data["X"][:2], data["Y"][:2]
        for _ in range(2):
            if gan == "cgan":
                cgan_step(m, (opt_g, opt_d), x, y, cfg.colorize)
            else:
                cyclegan_step(m, (opt_g, opt_d), x, y, cfg.cyclegan, {"X": ImagePool(2), "Y": ImagePool(2)})
        assert grads and set(grads.values()) == {2}, (gan, grads)
        assert all(p.requires_grad for k in discs for p in m[k].parameters())  # trainable again after G's step


def test_the_cyclegan_pool_lives_for_the_run_and_a_resumed_run_repeats_it(tiny_data):
    """At the default length (4 epochs x 25 steps of one image per worker, a pool of 50) a pool made
    anew each epoch never filled, and the discriminators never saw a past fake (share 0.000); kept
    for the run it serves about a quarter from its history. Every rank's pool is in the checkpoint,
    so a run resumed after epoch 2 ends bit for bit as the uninterrupted one."""
    _, cfg = _tiny_config("colorize", "cyclegan", tiny_data, epochs=4, steps_per_epoch=25)
    cfg = dataclasses.replace(cfg, cyclegan=cfg.cyclegan.model_copy(update={"batch_size": 1}))
    assert cfg.cyclegan.pool_size == 50
    session = distributed.PlainSession(keep_all=True)
    full = distributed.run_plain(T.train_loop, cfg, session=session)
    shares = [row["pool_history_share"] for row in full["history"]]
    assert shares[:2] == [0.0, 0.0] and 0.15 < shares[-1] < 0.35, shares  # fills over 50 images, then swaps half
    assert [len(p["X"]["images"]) for p in full["pools"]] == [50]
    resumed = distributed.run_plain(T.train_loop, cfg, session=distributed.PlainSession(session.states[1]))
    assert resumed["starts"] == [0, 2] and [r["pool_history_share"] for r in resumed["history"]] == shares
    for k, weights in full["models"].items():
        assert all(torch.equal(v, resumed["models"][k][n]) for n, v in weights.items()), k


def test_stylizers_are_served_as_the_moving_average_of_their_weights_and_a_resumed_run_repeats_it(tiny_data):
    _, cfg = _tiny_config("stylize", "cyclegan", tiny_data, epochs=2)
    assert cfg.ema_decay == 0.98
    session = distributed.PlainSession(keep_all=True)
    full = distributed.run_plain(T.train_loop, cfg, session=session)
    served = T.served_weights(full)
    trained = full["models"]
    assert int(full["averages"]["G"]["n_averaged"]) == 4  # 2 epochs x 2 steps
    for k in ("G", "F"):
        moved = [
            name
            for name, v in trained[k].items()
            if v.is_floating_point() and "running" not in name and not torch.equal(v, served[k][name])
        ]
        assert moved, f"{k}: the served weights are the trained ones"
    assert all(torch.equal(v, served["D_X"][n]) for n, v in trained["D_X"].items())  # discriminators as trained
    g = T.generators_from_state(cfg, full)["G"]
    assert all(torch.equal(v, served["G"][n]) for n, v in g.state_dict().items())
    # resumed after epoch 1 from its checkpoint: the same average at the end, bit for bit
    resumed = distributed.run_plain(T.train_loop, cfg, session=distributed.PlainSession(session.states[0]))
    assert resumed["starts"] == [0, 1]
    assert all(torch.equal(v, T.served_weights(resumed)["G"][n]) for n, v in served["G"].items())
    no_average = T.job_config(
        parse_params(tiny_raw(stylize={"ema_decay": 0})), "stylize", "scratch", "cyclegan", tiny_data, ResNet(4, 3)
    )
    assert no_average.ema_decay == 0


def test_train_subset_is_seeded_and_disjoint_from_validation():
    train, val = D.train_subset(100, 0.1, seed=3)
    assert len(train) == 10 and len(val) == 64 and not set(train) & set(val)
    assert np.array_equal(train, D.train_subset(100, 0.1, seed=3)[0])


def test_check_inputs_refuses_large_crops_and_grey_photos(tiny_data, tmp_path):
    params = parse_params(tiny_raw(translate={"crop_size": 64}))
    with pytest.raises(UserError, match=r"translate.crop_size=64 is larger than the images \(16 px\)"):
        T.check_inputs(params, "colorize", tiny_data)
    from pipeline.data.shards import Record, write_set

    grey = np.full((16, 16), 128, np.uint8)
    write_set(tmp_path / "photos", [Record(grey, "photo", s, f"g{s}") for s in ("train", "test")])
    with pytest.raises(UserError, match="holds only grey images; colorization needs colour photos"):
        T.check_inputs(parse_params(tiny_raw(translate={"crop_size": 16})), "colorize", tmp_path)


def test_unknown_encoder_is_one_line():
    with pytest.raises(UserError, match=r"unknown encoder 'vgg' \(allowed: scratch, simsiam, swav\)"):
        T.encoder_backbone("vgg")


def test_colorizers_start_near_ab0_and_stylizers_far_from_the_identity(tiny_data):
    _, cfg = _tiny_config("colorize", "cyclegan", tiny_data)
    m = T.build_models(cfg, ResNet(4, 3))
    data = D.load_domains(cfg.data_root, cfg.task, cfg.train_fraction, cfg.seed)
    x = data["X"][:3]
    with torch.no_grad():
        assert torch.equal(m["G"](x)[:, :1], x[:, :1])  # the colorizer keeps L ...
        assert 0 < float(m["G"](x)[:, 1:].abs().mean()) < 0.05  # ... and starts near ab = 0 (no colour), not at it
    _, cfg = _tiny_config("stylize", "cyclegan", tiny_data)
    g = T.build_models(cfg, ResNet(4, 3))["G"]
    with torch.no_grad():
        assert (
            float((g(x) - x).abs().mean()) > 0.1
        )  # a random image, as CycleGAN starts: not the identity, a lasso trap
    assert cfg.translate.steps_per_epoch == 2  # stylize.steps_per_epoch overrides the shared budget


def test_the_palette_oracle_beats_the_identity_and_neutral_settings_are_the_identity(tiny_data, tiny_params):
    """The renderer's colour step alone brings a photo closer to its painted twin than the photo is
    (the colours are part of the style); at saturation 1 and 256 levels it changes nothing."""
    pp = tiny_params.prepare.painting
    identity = evaluate_painter(lambda rgb: rgb, tiny_params, tiny_data)
    oracle = evaluate_painter(lambda rgb: palette_rgb(rgb, pp.saturation, pp.levels), tiny_params, tiny_data)
    assert identity["moved"] == 0 and identity["l1_rgb"] == pytest.approx(
        evaluate_stylization(None, tiny_params, tiny_data)["l1_rgb"]
    )
    assert oracle["l1_rgb"] < 0.8 * identity["l1_rgb"] and oracle["moved"] > 0.01
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(palette_rgb(rgb, 1.0, 256), rgb, atol=0.5 / 255 + 1e-6)


def test_job_config_carries_one_seed():
    params = parse_params(tiny_raw())
    bb = ResNet(params.pretrain.width, 3)
    assert T.job_config(params, "colorize", "scratch", "cgan", "data", bb).seed == 0
    cfg = T.job_config(params, "colorize", "scratch", "cgan", "data", bb, seed=1)
    assert cfg.seed == 1 and cfg.translate.steps_per_epoch == params.translate.steps_per_epoch


def test_stylize_overrides_the_cyclegan_batch_and_steps_colorize_keeps_them():
    raw = tiny_raw()
    raw["stylize"] = {**raw.get("stylize", {}), "batch_size": 6, "steps_per_epoch": 3}
    params = parse_params(raw)
    bb = ResNet(params.pretrain.width, 3)
    sty = T.job_config(params, "stylize", "scratch", "cyclegan", "data", bb)
    col = T.job_config(params, "colorize", "scratch", "cyclegan", "data", bb)
    assert (sty.batch_size, sty.cyclegan.batch_size, sty.translate.steps_per_epoch) == (6, 6, 3)
    assert (col.cyclegan.batch_size, col.translate.steps_per_epoch) == (
        params.cyclegan.batch_size,
        params.translate.steps_per_epoch,
    )
    assert params.cyclegan.batch_size != 6 and params.translate.steps_per_epoch != 3
    assert sty.precise_bn and not col.precise_bn  # colorize keeps the momentum estimate


def test_stylizer_guard_stops_a_generator_that_returns_its_input(tiny_data):
    params, cfg = _tiny_config("stylize", "cyclegan", tiny_data)
    models = T.build_models(cfg, ResNet(4, 3))
    history = [{"loss_d_x": 0.12, "loss_d_y": 0.15}]
    moved = evaluate_stylization(models, params, tiny_data)
    check_stylizer(moved, history, "stylize@scratch")  # a fresh generator already moves: no error

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    stuck = evaluate_stylization({"G": Identity(), "F": Identity()}, params, tiny_data)
    assert stuck["moved"] < 1e-6  # float round trip of the domain scaling only
    with pytest.raises(
        UserError, match=r"stylize@scratch: the stylizer returns its input \(mean \|G\(x\) - x\| = .*e-0\d < 0.001\)"
    ):
        check_stylizer(stuck, history, "stylize@scratch")
    with pytest.raises(UserError, match="both discriminators stayed at chance .*0.251 and 0.250"):
        check_stylizer(moved, [{"loss_d_x": 0.251, "loss_d_y": 0.250}], "stylize@scratch")
    check_stylizer(moved, [{"loss_d_x": 0.251, "loss_d_y": 0.20}], "stylize@scratch")  # one D that separates suffices
    check_stylizer(
        moved, [{"loss_d_x": 0.45, "loss_d_y": 0.5}], "stylize@scratch"
    )  # untrained, not blind: a few steps in


def test_user_supplied_inception_weights_give_2048_d_features(tmp_path):
    from torchvision.models import inception_v3

    from pipeline.models.features import feature_net

    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "inception.pt")
    net = feature_net("inception", torch.rand(2, 3, 32, 32), str(tmp_path / "inception.pt"))
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 2048)
    with pytest.raises(UserError, match="file not found"):
        feature_net("inception", torch.rand(1, 3, 8, 8), str(tmp_path / "missing.pt"))
    params_err = tiny_raw(translate={"fd_features": "inception"})
    with pytest.raises(UserError, match="needs inception_weights"):
        parse_params(params_err)
