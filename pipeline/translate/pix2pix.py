"""pix2pix (Isola et al.): one conditional-GAN step for paired translation (colorization)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ColorizeParams
from pipeline.models import frozen
from pipeline.models.gan import adversarial_loss


def cgan_step(
    m: dict[str, nn.Module], opts: tuple, x: torch.Tensor, y: torch.Tensor, p: ColorizeParams, ab_only: bool = True
) -> dict[str, torch.Tensor]:
    """pix2pix: D on (input L, ab) pairs, then G with ``gan_weight`` * cGAN + ``lambda_l1`` * L1 (of the ab
    channels when ``ab_only``; x, y: (N, 3, H, W))."""
    opt_g, opt_d = opts
    fake = m["G"](x)
    scores = m["D"](torch.cat([y, fake.detach()]))
    real_s, fake_s = scores[: len(y)], scores[len(y) :]
    loss_d = 0.5 * (adversarial_loss(real_s, True, "bce") + adversarial_loss(fake_s, False, "bce"))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with frozen(m["D"]) as d:
        loss_gan = adversarial_loss(d(fake), True, "bce")
    loss_l1 = F.l1_loss(fake[:, 1:], y[:, 1:]) if ab_only else F.l1_loss(fake, y)
    loss_g = p.gan_weight * loss_gan + p.lambda_l1 * loss_l1
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {
        k: v.detach() for k, v in (("loss_d", loss_d), ("loss_g", loss_g), ("loss_gan", loss_gan), ("loss_l1", loss_l1))
    }
