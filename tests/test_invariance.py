import numpy as np
import pytest
import torch

from pipeline.data.transforms import to_tensor
from pipeline.metrics.invariance import balanced_accuracy, ekld_by_class, kl_divergence


def test_kl_is_zero_for_identical_and_nonnegative():
    torch.manual_seed(0)
    a, b = torch.randn(64, 10), torch.randn(64, 10)
    assert torch.all(kl_divergence(a, a).abs() < 1e-12)
    assert torch.all(kl_divergence(a, b) >= 0) and kl_divergence(a, b).mean() > 0
    assert torch.allclose(kl_divergence(a, a + 3.0), torch.zeros(64, dtype=torch.float64), atol=1e-12)  # softmax shift


def _disk(radius: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return ((yy**2 + xx**2) <= radius**2).astype(np.uint8) * 255


def test_ekld_of_identical_predictions_is_zero():
    images = [_disk(4), _disk(9), _disk(6)]

    def constant(x):
        return torch.tensor([[2.0, -1.0, 0.5]]).repeat(len(x), 1)

    out = ekld_by_class(constant, images, np.array([0, 0, 1]), "rot", 5, np.random.default_rng(0))
    assert out == {0: pytest.approx(0.0, abs=1e-12), 1: pytest.approx(0.0, abs=1e-12)}


def test_ekld_pairs_each_image_with_its_own_transformed_copy():
    # A rotation-invariant predictor (it reads the mass of a centred disk) is invariant:
    # paired with itself the eKLD is ~0, although the two images of class 0 differ a lot.
    images = [_disk(3), _disk(12)]

    def mass(x):
        return torch.stack([x.sum(dim=(1, 2, 3)) / 50.0, torch.zeros(len(x))], dim=1)

    same = ekld_by_class(mass, images, np.array([0, 0]), "rot", 8, np.random.default_rng(1))
    assert same[0] < 1e-2
    cross = kl_divergence(mass(to_tensor(images[:1], channels=1)), mass(to_tensor(images[1:], channels=1)))
    assert cross.item() > 10 * same[0] + 0.1


def test_ekld_sees_a_predictor_that_is_not_invariant():
    img = np.zeros((32, 32), np.uint8)
    img[4:10, 4:28] = 255  # a bar: rotation moves its mass between the halves

    def top_half(x):
        return torch.stack([x[:, :, :16].sum(dim=(1, 2, 3)) / 20.0, x[:, :, 16:].sum(dim=(1, 2, 3)) / 20.0], 1)

    out = ekld_by_class(top_half, [img], np.array([3]), "rot", 8, np.random.default_rng(0))
    assert out[3] > 0.1
    with pytest.raises(ValueError, match="draws must be >= 1"):
        ekld_by_class(top_half, [img], np.array([3]), "rot", 0, np.random.default_rng(0))


def test_balanced_accuracy_is_mean_of_per_class_recall():
    y = np.array([0, 0, 0, 0, 1])
    assert balanced_accuracy(y, np.array([0, 0, 0, 0, 0])) == pytest.approx(0.5)
    assert balanced_accuracy(y, y) == 1.0
