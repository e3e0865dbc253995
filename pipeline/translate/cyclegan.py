"""CycleGAN (Zhu et al.): one step for unpaired translation, both generators and both discriminators."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import CycleGanParams
from pipeline.models import frozen
from pipeline.models.gan import ImagePool, adversarial_loss


def cyclegan_step(
    m: dict[str, nn.Module],
    opts: tuple,
    x: torch.Tensor,
    y: torch.Tensor,
    cg: CycleGanParams,
    pools: dict[str, ImagePool],
) -> dict[str, torch.Tensor]:
    """CycleGAN: G and F with LSGAN + cycle + identity, then both discriminators on pooled fakes
    (x, y: (N, 3, H, W) of the two domains)."""
    opt_g, opt_d = opts
    fake_y, fake_x = m["G"](x), m["F"](y)
    rec_x, rec_y = m["F"](fake_y), m["G"](fake_x)
    with frozen(m["D_Y"]) as d_y, frozen(m["D_X"]) as d_x:
        loss_gan = adversarial_loss(d_y(fake_y), True, "lsgan") + adversarial_loss(d_x(fake_x), True, "lsgan")
    loss_cycle = F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y)
    loss_idt = F.l1_loss(m["G"](y), y) + F.l1_loss(m["F"](x), x) if cg.identity > 0 else torch.zeros(())
    loss_g = cg.gan_weight * loss_gan + cg.cycle * loss_cycle + cg.identity * cg.cycle * loss_idt
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    per_d = {}
    for d_name, real, fake, pool in (("D_Y", y, fake_y, pools["Y"]), ("D_X", x, fake_x, pools["X"])):
        scores = m[d_name](torch.cat([real, pool.query(fake.detach())]))
        per_d[d_name] = 0.5 * (
            adversarial_loss(scores[: len(real)], True, "lsgan") + adversarial_loss(scores[len(real) :], False, "lsgan")
        )
    loss_d = per_d["D_X"] + per_d["D_Y"]
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    losses = {"loss_d": loss_d, "loss_d_x": per_d["D_X"], "loss_d_y": per_d["D_Y"], "loss_g": loss_g, "loss_gan": loss_gan,
              "loss_cycle": loss_cycle, "loss_idt": loss_idt}  # fmt: skip
    return {k: v.detach() for k, v in losses.items()}
