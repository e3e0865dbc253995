"""Experiment: stylizer designs in one process (run_plain), seed from argv."""

import copy
import json
import sys
import time

import torch
from torch import nn

from pipeline import distributed
from pipeline.config import load_params
from pipeline.models import unet as U
from pipeline.translate import training as T
from pipeline.translate.evaluate import evaluate_stylization

design, seed, enc = sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "scratch"
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
torch.set_num_threads(1)
orig_init = U.DomainGenerator.__init__


def init(self, backbone, mode, decoder_width):
    orig_init(self, backbone, mode, decoder_width)
    if mode == "rgb" and design == "affine":
        d = decoder_width
        self.unet.out = nn.Sequential(nn.Conv2d(d + 3, d, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(d, 12, 1))
        nn.init.normal_(self.unet.out[-1].weight, 0.0, extra.get("head_std", 0.02))
        nn.init.zeros_(self.unet.out[-1].bias)
    if mode == "rgb" and design == "skip":
        self.skip = nn.Conv2d(3, 3, 1)
        if extra.get("skip_init") == "eye_noise":
            nn.init.eye_(self.skip.weight[:, :, 0, 0])
            self.skip.weight.data += 0.1 * torch.randn_like(self.skip.weight)
    if mode == "rgb" and design == "res":
        nn.init.normal_(self.unet.out[-2].weight, 0.0, extra.get("head_std", 0.02))


orig_fwd = U.DomainGenerator.forward


def fwd(self, x):
    if self.mode != "rgb" or design == "base":
        return orig_fwd(self, x)
    if design == "skip":
        u = self.unet
        h = torch.cat([u.features(x)[-1], x], 1)
        return torch.tanh(u.out[:-1](h) + self.skip(x))
    out = self.unet(x)
    if design == "res":
        return x + out
    n, _, h, w = x.shape
    c = out.view(n, 3, 4, h, w)
    return torch.einsum("nijhw,njhw->nihw", c[:, :, :3], x) + x + c[:, :, 3]


U.DomainGenerator.__init__ = init

EMA = {}
orig_step = T.cyclegan_step


def step(m, opts, x, y, cfg, pools):
    out = orig_step(m, opts, x, y, cfg, pools)
    if "ema" in extra:
        g = distributed.unwrap(m["G"])
        if "G" not in EMA:
            EMA["G"] = copy.deepcopy(g)
        else:
            with torch.no_grad():
                for pe, p in zip(EMA["G"].parameters(), g.parameters()):
                    pe.lerp_(p, 1 - extra["ema"])
    return out


T.cyclegan_step = step
U.DomainGenerator.forward = fwd

p = load_params("params.yaml")
for k, v in extra.get("params", {}).items():
    sec, key = k.split(".")
    setattr(getattr(p, sec), key, v)
bb = T.encoder_backbone(enc)
cfg = T.job_config(p, "stylize", enc, "cyclegan", "data/prepared", bb, seed)
t = time.time()
state = distributed.run_plain(T.train_loop, cfg, threads=1)
models = T.generators_from_state(cfg, state)
if "ema" in extra:
    from pipeline.models import recompute_batchnorm
    from pipeline.translate.data import load_domains

    models["G"].load_state_dict(
        {
            **models["G"].state_dict(),
            **{k: v for k, v in EMA["G"].state_dict().items() if "running" not in k and "num_batches" not in k},
        }
    )
    recompute_batchnorm(models["G"], load_domains(cfg.data_root, cfg.task, cfg.train_fraction, cfg.seed)["X"])
    models["G"].eval()
s = evaluate_stylization(models, p, "data/prepared")
print(
    json.dumps(
        {
            "design": design,
            "seed": seed,
            "enc": enc,
            "extra": extra,
            "s": round(time.time() - t),
            **{k: round(float(s[k]), 4) for k in ("l1_rgb", "l1_luma", "l1_chroma", "kid", "moved", "cycle_l1")},
        }
    ),
    flush=True,
)
