import math

import numpy as np
import pytest
import torch

from pipeline.config import PretrainParams, parse_params
from pipeline.data.augment import PhotoBank
from pipeline.metrics.knn import bootstrap_gain, chance_level, knn_predict
from pipeline.models.features import knn_probe, with_data_statistics
from pipeline.models.resnet import ResNet
from pipeline.ssl.pretrain import make_views, z_std
from pipeline.ssl.simsiam import SimSiam, negative_cosine, simsiam_loss
from pipeline.ssl.swav import Swav, sinkhorn, swapped_prediction_loss

from .conftest import tiny_raw


@pytest.mark.parametrize(("size", "channels"), [(32, 3), (16, 1)])
def test_resnet_pyramid_shapes(size, channels):
    net = ResNet(width=8, in_channels=channels)
    feats = net(torch.randn(2, channels, size, size))
    assert [tuple(f.shape) for f in feats] == [
        (2, 8, size, size), (2, 8, size, size), (2, 16, size // 2, size // 2),
        (2, 32, size // 4, size // 4), (2, 64, size // 8, size // 8),
    ]  # fmt: skip
    assert net.pyramid_channels == [8, 8, 16, 32, 64]
    assert net.embed(torch.randn(3, channels, size, size)).shape == (3, 64)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_stem_pyramid_halves_five_times_and_resnet50_widens_by_four(arch):
    net = ResNet(width=8, arch=arch, stem="imagenet")
    feats = net(torch.randn(2, 3, 64, 64))
    wide = 4 if arch == "resnet50" else 1
    assert [tuple(f.shape) for f in feats] == [
        (2, 8, 32, 32), (2, 8 * wide, 16, 16), (2, 16 * wide, 8, 8), (2, 32 * wide, 4, 4), (2, 64 * wide, 2, 2),
    ]  # fmt: skip
    assert net.reduction == 32 and net.embed(torch.randn(1, 3, 64, 64)).shape == (1, net.out_dim)
    assert torch.equal(net.level(torch.ones(1, 3, 64, 64), 2), net(torch.ones(1, 3, 64, 64))[2])


def test_resnet50_imagenet_is_torchvisions_network_without_its_classifier():
    import torchvision

    ours = ResNet(64, 3, arch="resnet50", stem="imagenet")
    theirs = {n: p.shape for n, p in torchvision.models.resnet50().state_dict().items() if not n.startswith("fc.")}
    renamed = {n.replace("stem.0.", "conv1.").replace("stem.1.", "bn1."): p.shape for n, p in ours.state_dict().items()}
    assert renamed == theirs


def test_simsiam_loss_of_identical_views_is_minus_one():
    z = torch.randn(16, 32)
    assert simsiam_loss(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert simsiam_loss(z, z, -z, -z).item() == pytest.approx(1.0, abs=1e-6)  # opposite views


def test_simsiam_stop_gradient():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    negative_cosine(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_simsiam_model_trains_a_step():
    torch.manual_seed(0)
    model = SimSiam(ResNet(width=4), proj_dim=16, pred_hidden=8)
    x1, x2 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    loss, z = model(x1, x2)
    assert -1 <= loss.item() <= 1 and z.shape == (8, 16)
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_simsiam_normalises_each_view_by_its_own_batch_statistics():
    """As both references: one pass per view, so in training mode the first view's projection does
    not depend on the second view (a joint pass over both views shares BatchNorm statistics)."""
    torch.manual_seed(0)
    model = SimSiam(ResNet(4, 3), 16, 8).train()
    x1, x2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    _, z1 = model(x1, x2)
    _, z1_other = model(x1, torch.rand(4, 3, 16, 16) * 3)
    torch.testing.assert_close(z1, z1_other, rtol=0, atol=0)


def test_sinkhorn_marginals():
    scores = 0.3 * torch.randn(64, 10)  # cosine-like scores
    q = sinkhorn(scores, epsilon=0.05, iters=300)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(q.sum(dim=0), torch.full((10,), 6.4), rtol=1e-3, atol=1e-3)
    # the default three iterations: every code is still a distribution over prototypes
    q3 = sinkhorn(scores, epsilon=0.05, iters=3)
    torch.testing.assert_close(q3.sum(dim=1), torch.ones(64))
    assert torch.all(q3 >= 0)


def test_swav_loss_and_frozen_prototypes():
    torch.manual_seed(0)
    model = Swav(ResNet(width=4), hidden=16, dim=8, n_prototypes=6, temperature=0.1, epsilon=0.05, iters=3)
    crops = [torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16), torch.rand(8, 3, 8, 8)]
    loss, z = model(crops)
    assert math.isfinite(loss.item()) and loss.item() > 0 and z.shape == (8, 8)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(6))
    scores = [torch.zeros(4, 6)] * 3
    # uniform scores: the cross-entropy against uniform codes is ln(K), SwAV's collapse level
    assert swapped_prediction_loss(scores, 2, 0.1, 0.05, 3).item() == pytest.approx(math.log(6), rel=1e-5)


def test_knn_probe_on_separable_features():
    bank = torch.nn.functional.normalize(torch.eye(3).repeat(4, 1) + 0.01 * torch.randn(12, 3), dim=1)
    labels = torch.arange(3).repeat(4)
    query = torch.nn.functional.normalize(torch.eye(3) + 0.01 * torch.randn(3, 3), dim=1)
    assert knn_predict(bank, labels, query, k=4, temperature=0.1, num_classes=3).tolist() == [0, 1, 2]
    assert chance_level(torch.tensor([0, 0, 0, 1])) == 0.75


def test_recompute_batchnorm_matches_data_statistics():
    torch.manual_seed(0)
    net = ResNet(width=4)
    x = torch.rand(20, 3, 8, 8) * 5 + 3
    fixed = with_data_statistics(net, x, batch=10)
    stem_bn = fixed.stem[1]
    pre = net.stem[0](x)
    torch.testing.assert_close(stem_bn.running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert torch.all(net.stem[1].running_mean == 0)  # the original is untouched


def test_knn_probe_and_bootstrap():
    torch.manual_seed(0)
    x = torch.rand(40, 3, 8, 8)
    y = torch.arange(4).repeat(10)
    x += y.view(-1, 1, 1, 1).float()  # classes differ by brightness
    res = knn_probe(ResNet(width=4), x[:20], y[:20], x[20:], y[20:], k=3)
    assert res.top1 > 0.5 and res.correct.shape == (20,)
    gain, lo, hi = bootstrap_gain(np.ones(50, bool), np.zeros(50, bool), 200)
    assert (gain, lo, hi) == (1.0, 1.0, 1.0)
    gain, lo, hi = bootstrap_gain(np.arange(100) % 2 == 0, np.zeros(100, bool), 500)
    assert lo < gain < hi and gain == 0.5


def test_views_are_fresh_and_seeded():
    photos = [np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8) for i in range(3)]
    bank = PhotoBank(photos, torch.device("cpu"))
    params = parse_params(tiny_raw(pretrain={"instance_scale": [0.2, 0.5], "crop_size": 16, "scale": [0.2, 1.0]},
                                   swav={"small_crop_size": 8, "small_scale": [0.05, 0.3], "n_small_crops": 2}))  # fmt: skip
    pre, swav = params.pretrain, params.swav

    def views(seed: int, method: str = "swav", p: PretrainParams = pre) -> list[torch.Tensor]:
        return make_views(bank, 5, method, p, swav, torch.Generator().manual_seed(seed))

    a, b, c = views(0), views(0), views(1)
    assert [tuple(v.shape) for v in a] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 2
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])  # fresh per draw, two different views
    assert all(0 <= v.min() and v.max() <= 1 for v in a)
    grey = views(0, "simsiam", pre.model_copy(update={"channels": 1}))
    assert [tuple(v.shape) for v in grey] == [(5, 1, 16, 16)] * 2


def test_collapse_monitor():
    assert z_std(torch.ones(8, 16)) == pytest.approx(0.0)
    assert z_std(torch.randn(4096, 64)) == pytest.approx(1 / math.sqrt(64), rel=0.05)


@pytest.mark.parametrize("method", ["simsiam", "swav"])
def test_pretraining_trains_a_resnet50_on_the_imagenet_stem_and_probes_it(method, tiny_params, tiny_data):
    from pipeline import distributed
    from pipeline.ssl.pretrain import backbone_from_state, job_config, train_loop

    pre = tiny_params.pretrain.model_copy(update={"arch": "resnet50", "stem": "imagenet", "crop_size": 32, "epochs": 1})
    job = job_config(tiny_params.model_copy(update={"pretrain": pre}), method, tiny_data)
    state = distributed.run_plain(train_loop, job)
    [row] = state["history"]
    assert math.isfinite(row["loss"]) and 0 <= row["knn_top1"] <= 1
    backbone = backbone_from_state(state, pre)
    assert backbone.spec()["arch"] == "resnet50_imagenet" and backbone.out_dim == 32 * pre.width
