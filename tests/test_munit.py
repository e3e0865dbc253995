import pytest
import torch

from pipeline.models.gan import PatchDiscriminator
from pipeline.models.munit import MUNIT, AdaIN


def test_munit_shapes():
    model = MUNIT(channels=1, dim=8, style_dim=8, n_down=2, n_res=2, mlp_dim=16)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    content, style = model.encode(x)
    assert content.shape == (3, 32, 8, 8) and style.shape == (3, 8)
    out = model.decode(content, torch.randn(3, 8))
    assert out.shape == x.shape and out.abs().max() <= 1
    assert PatchDiscriminator(1, dim=8, n_layers=3)(x).shape == (3, 1, 4, 4)


def test_style_changes_the_output_and_adain_needs_parameters():
    torch.manual_seed(0)
    model = MUNIT(channels=1, dim=8, n_res=2, mlp_dim=16)
    content, _ = model.encode(torch.rand(2, 1, 16, 16))
    a = model.decode(content, torch.randn(2, 8))
    b = model.decode(content, torch.randn(2, 8))
    assert (a - b).abs().mean() > 1e-4
    with pytest.raises(RuntimeError, match="AdaIN parameters are unset"):
        AdaIN(4)(torch.rand(1, 4, 2, 2))


def test_decode_of_encode_learns_to_reconstruct_a_fixed_batch():
    torch.manual_seed(0)
    model = MUNIT(channels=1, dim=8, n_res=2, mlp_dim=32)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = (model.decode(*model.encode(x)) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
