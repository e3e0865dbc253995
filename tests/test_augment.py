"""Batched device augmentation against per-image references (PIL, scipy, torchvision functionals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from skimage import data as skdata

from pipeline.data import augment as A
from pipeline.data.transforms import apply_nuisance, draw_nuisance


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def photos() -> list[np.ndarray]:
    return [skdata.astronaut()[::4, ::4], skdata.coffee()[::4, ::3], skdata.chelsea()[::3, ::4]]


def digits(n: int = 6) -> np.ndarray:
    from sklearn.datasets import load_digits

    d = (load_digits().images[:n] / 16 * 255).astype(np.uint8)
    return np.stack([np.kron(im, np.ones((4, 4))) for im in d]).astype(np.uint8)  # (n, 32, 32), black background


def test_crop_resize_matches_pil_box_resize_per_image():
    bank = A.PhotoBank(photos(), torch.device("cpu"))
    k, squares = A.random_squares(bank.sizes, 12, (0.3, 0.9), gen())
    boxes = A.random_resized_boxes(squares, (0.2, 1.0), gen(1))
    out = A.crop_resize(bank.images, k, boxes, 24)
    for i in range(12):
        x0, y0, x1, y1 = boxes[i].long().tolist()
        h, w = bank.sizes[k[i]].tolist()
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h  # inside the photo, not the padding
        sx0, sy0, sx1, sy1 = squares[i].long().tolist()
        assert sx0 <= x0 and sy0 <= y0 and x1 <= sx1 and y1 <= sy1  # inside its instance square
        ref = Image.fromarray(photos()[int(k[i])]).resize((24, 24), Image.BOX, box=(x0, y0, x1, y1))
        ref = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float() / 255
        assert (out[i] - ref).abs().mean() < 0.03, i


def test_crop_areas_and_aspects_follow_their_ranges():
    sizes = torch.tensor([[200, 300]])
    k, squares = A.random_squares(sizes, 4000, (0.5, 0.5), gen())
    assert torch.all(squares[:, 2] - squares[:, 0] == 100)
    boxes = A.random_resized_boxes(squares, (0.1, 0.5), gen(1))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 100**2
    aspect = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    assert 0.08 < area.min() and area.max() < 0.53 and abs(float(area.mean()) - 0.3) < 0.02
    assert 0.7 < aspect.min() and aspect.max() < 1.43


def test_color_jitter_matches_torchvision_functionals_per_image():
    x = A.crop_resize(
        A.PhotoBank(photos(), torch.device("cpu")).images, torch.arange(3), torch.tensor([[0.0, 0, 80, 80]] * 3), 16
    )
    ones, no_hue = torch.ones(3, 1, 1, 1), torch.zeros(3)
    factors = torch.tensor([0.7, 1.0, 1.3]).view(3, 1, 1, 1)  # a factor per image, the others left at 1
    for i, ref in enumerate((TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)):
        args = [ones, ones, ones]
        args[i] = factors
        out = A.adjust_colors(x, *args, no_hue)
        for k in range(3):
            assert torch.allclose(out[k], ref(x[k], float(factors[k])), atol=2e-3), (ref.__name__, k)
    # the three in torchvision's order, then the hue rotation that color_jitter draws
    both = A.adjust_colors(x, factors, factors.flip(0), factors, torch.tensor([0.0, 0.3, -0.2]))
    expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[0], 0.7), 1.3), 0.7)
    assert torch.allclose(both[0], expected, atol=2e-3)
    assert torch.allclose(both[1:], A.rotate_hue(A.adjust_colors(x[1:], factors[1:], factors.flip(0)[1:], factors[1:], no_hue[1:]),
                                                 torch.tensor([0.3, -0.2])), atol=1e-6)  # fmt: skip
    y = A.color_jitter(x, gen(), jitter=0.4, grayscale_p=1.0)
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])  # all grey
    assert torch.allclose(A.color_jitter(x, gen(), jitter=0.0, grayscale_p=0.0), x, atol=1e-5)  # factors 1, hue 0


def test_hue_rotation_matches_a_per_image_yiq_rotation():
    rgb = torch.rand(4, 3, 5, 5, generator=gen())
    angles = torch.tensor([0.0, 0.5, -1.0, 3.0])
    out = A.rotate_hue(rgb, angles)
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    for i, a in enumerate(angles.tolist()):
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ref = np.einsum("ij,jhw->ihw", np.linalg.inv(m) @ rot @ m, rgb[i].numpy()).clip(0, 1)
        assert np.allclose(out[i].numpy(), ref, atol=1e-5)


def test_crop_flip_is_a_crop_or_its_mirror():
    x = torch.rand(16, 3, 10, 12, generator=gen())
    out = A.crop_flip(x, 8, gen(1))
    for i in range(16):
        views = [x[i, :, r : r + 8, c : c + 8] for r in range(3) for c in range(5)]
        assert any(torch.equal(out[i], v) or torch.equal(out[i], v.flip(-1)) for v in views)
    assert torch.equal(A.crop_flip(x, 8, gen(1)), out) and not torch.equal(A.crop_flip(x, 8, gen(2)), out)


@pytest.mark.parametrize("name", ["rot", "bg", "dil"])
def test_batched_nuisances_match_the_per_image_transform(name):
    images = digits()
    x = torch.from_numpy(images).float()[:, None] / 255
    params = A.draw_nuisances(name, len(images), gen())
    out = (A.apply_nuisances(x, name, params)[:, 0] * 255).numpy()
    for i, im in enumerate(images):
        if name == "rot":
            ref = apply_nuisance(im, {"name": "rot", "angle": float(params["angle"][i])})
            assert np.abs(out[i] - ref).mean() < 2.5, i  # bilinear kernels differ at edges: ~1 grey level on average
        elif name == "bg":
            ref = apply_nuisance(im, {"name": "bg", "level": int(params["level"][i])})
            assert np.array_equal(out[i].round(), ref), i
        else:
            op = "dilate" if bool(params["dilate"][i]) else "erode"
            ref = apply_nuisance(im, {"name": "dil", "op": op, "size": int(params["size"][i])})
            assert np.array_equal(out[i].round(), ref), (i, op)


@pytest.mark.parametrize("name", ["rot", "bg", "dil"])
def test_batched_nuisance_draws_follow_the_per_image_distribution(name):
    params = A.draw_nuisances(name, 6000, gen())
    rng = np.random.default_rng(0)
    ref = [draw_nuisance(name, rng) for _ in range(6000)]
    if name == "rot":
        assert abs(float(params["angle"].mean())) < 6 and params["angle"].abs().max() <= 180
        assert abs(float(params["angle"].std()) - np.std([r["angle"] for r in ref])) < 4
    elif name == "bg":
        assert set(params["level"].tolist()) == set(range(100))
    else:
        ours = {(bool(d), int(s)) for d, s in zip(params["dilate"].tolist(), params["size"].tolist())}
        assert ours == {(r["op"] == "dilate", r["size"]) for r in ref} == set(A.DIL_WINDOWS)
        assert abs(float(params["dilate"].float().mean()) - 0.6) < 0.03


def test_balanced_draw_is_class_balanced_and_seeded():
    labels = torch.tensor([0] * 100 + [1] * 10 + [2] * 2)
    picks = A.balanced_draw(labels, 3000, gen())
    counts = torch.bincount(labels[picks], minlength=3).float() / 3000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.04)
    assert set(picks[labels[picks] == 2].tolist()) == {110, 111}
    assert torch.equal(A.balanced_draw(labels, 50, gen(3)), A.balanced_draw(labels, 50, gen(3)))
