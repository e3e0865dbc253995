"""Trained networks a user takes away: the model files under ``models/`` and the image-in,
image-out modules that serve them.

Every model file is a dict of tensors and plain types that rebuilds its networks under
``torch.load(weights_only=True)``; :func:`load_model` reads any of them and tells its kind by
the keys its stage writes:

=============  ==================================  ===========================================
kind           written by                          keys
=============  ==================================  ===========================================
backbone       pretrain@*, backbone_scratch        ``state_dict``, ``spec``, ``method``
colorizer      colorize@*                          ``translator`` (task colorize), ``seeds``
stylizer       stylize@*                           ``translator`` (task stylize), ``seeds``
munit          munit                               ``state_dict``, ``munit``
classifier     classify@*                          ``seeds``, ``width``, ``method``
ace            ace, ace_finetune                   ``seeds``, ``ace``, ``backbone_spec``
=============  ==================================  ===========================================

Files with ``seeds`` hold one network per training seed; :func:`serving_module` serves one.
The serving modules take and return images as the user sees them: RGB (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.color import grey_of, lab_to_net, lab_to_rgb, net_to_lab, rgb_to_lab, to_gray
from pipeline.config import AceParams
from pipeline.errors import UserError
from pipeline.io import load_torch, save_torch
from pipeline.models.ace import build as build_ace
from pipeline.models.classifier import ResNet20
from pipeline.models.munit import MUNIT
from pipeline.models.resnet import ResNet18
from pipeline.models.unet import DomainGenerator

KINDS = ("backbone", "colorizer", "stylizer", "munit", "classifier", "ace")
TASK_KINDS = {"colorize": "colorizer", "stylize": "stylizer"}
#: the generator directions of a translator file, as the CycleGAN paper names them
DIRECTIONS = {"G": "forward", "F": "backward"}


@dataclass
class ModelFile:
    """A loaded model file: its ``kind``, what it was trained as (``meta``) and its weights per seed."""

    path: Path
    kind: str
    meta: dict[str, Any]
    ckpt: dict[str, Any]

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.ckpt["seeds"]) if "seeds" in self.ckpt else [0]


def kind_of(ckpt: dict[str, Any]) -> str | None:
    """The kind of a model file's dict (see the module docstring), or None."""
    if "translator" in ckpt:
        return TASK_KINDS.get(ckpt["translator"].get("task"))
    if "munit" in ckpt and "state_dict" in ckpt:
        return "munit"
    if "ace" in ckpt and "seeds" in ckpt:
        return "ace"
    if {"seeds", "width", "method"} <= set(ckpt):
        return "classifier"
    if "spec" in ckpt and ckpt.get("spec", {}).get("arch") == "resnet18_cifar":
        return "backbone"
    return None


def save_translator(path: str | Path, runs: list[tuple[Any, dict[str, Any]]], encoder: str) -> None:
    """One file for the generators of every seed of a translation stage (``train``'s
    [(job, state)]): {seed: {'G': weights[, 'F': weights]}} and what rebuilds them."""
    job = runs[0][0]
    spec = {"task": job.task, "gan": job.gan, "encoder": encoder, "decoder_width": job.translate.decoder_width,
            "crop_size": job.translate.crop_size, "backbone_spec": job.backbone_spec}  # fmt: skip
    seeds = {job.seed: {k: st["models"][k] for k in DIRECTIONS if k in st["models"]} for job, st in runs}
    save_torch(path, {"translator": spec, "seeds": seeds})


def load_model(path: str | Path) -> ModelFile:
    """Read a model file (``weights_only``); one-line errors for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        ckpt = load_torch(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"{path}: not a model file of this pipeline ({type(exc).__name__})") from None
    kind = kind_of(ckpt) if isinstance(ckpt, dict) else None
    if kind is None:
        raise UserError(f"{path}: not a model file of this pipeline (kinds: {', '.join(KINDS)})")
    meta = {k: v for k, v in ckpt.items() if k not in ("seeds", "state_dict")}
    return ModelFile(path, kind, meta, ckpt)


def _backbone(spec: dict[str, Any]) -> ResNet18:
    return ResNet18(spec["width"], spec["in_channels"])


def networks(model: ModelFile, seed: int | None = None) -> dict[str, nn.Module]:
    """The trained networks of one seed (default: the first), in eval mode, by name:
    backbone {'backbone'}; colorizer / stylizer {'G'[, 'F']}; munit {'munit'}; classifier {'classifier'}; ace {'ace'}."""
    seeds = model.seeds
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise UserError(f"{model.path}: no model of seed {seed} (it has seeds {seeds})")
    ckpt = model.ckpt
    if model.kind == "backbone":
        net = _backbone(ckpt["spec"])
        net.load_state_dict(ckpt["state_dict"])
        return {"backbone": net.eval()}
    if model.kind == "munit":
        mp = ckpt["munit"]
        net = MUNIT(1, mp["dim"], mp["style_dim"], mp["n_down"], mp["n_res"], mp["mlp_dim"])
        net.load_state_dict(ckpt["state_dict"])
        return {"munit": net.eval()}
    weights = {int(s): w for s, w in ckpt["seeds"].items()}[seed]
    if model.kind == "classifier":
        net = ResNet20(weights["head.weight"].shape[0], 1, ckpt["width"])
        net.load_state_dict(weights)
        return {"classifier": net.eval()}
    if model.kind == "ace":
        net, _ = build_ace(AceParams.model_validate(ckpt["ace"]), _backbone(ckpt["backbone_spec"]))
        net.load_state_dict(weights)
        return {"ace": net.eval()}
    spec = ckpt["translator"]
    fwd, back = ("colorize", "decolorize") if spec["task"] == "colorize" else ("rgb", "rgb")
    out = {}
    for name, mode in (("G", fwd), ("F", back)):
        if name in weights:
            gen = DomainGenerator(_backbone(spec["backbone_spec"]), mode, spec["decoder_width"])
            gen.load_state_dict(weights[name])
            out[name] = gen.eval()
    return out


class Colorize(nn.Module):
    """forward(rgb (N, 3, H, W) in [0, 1]) -> colour RGB (N, 3, H, W): the L channel of the input,
    ab from the colorizer. H and W divisible by 8."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return lab_to_rgb(net_to_lab(self.generator(grey_of(lab_to_net(rgb_to_lab(rgb))))))


class Stylize(nn.Module):
    """forward(rgb (N, 3, H, W) in [0, 1]) -> the other domain's RGB (N, 3, H, W) in [0, 1]. H and W divisible by 8."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return ((self.generator(rgb * 2 - 1) + 1) / 2).clamp(0, 1)


class StylizeLike(nn.Module):
    """ACE zero-shot: forward(rgb (N, 3, H, W), exemplars (K, 3, h, w), both in [0, 1]) -> (N, 3, H, W):
    the contents of ``rgb`` decoded with the mean style code of the exemplars."""

    def __init__(self, ace: nn.Module) -> None:
        super().__init__()
        self.ace = ace

    def forward(self, rgb: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
        style = self.ace.style(exemplars).mean(0, keepdim=True)
        return self.ace.decode(self.ace.content(rgb), style.expand(rgb.shape[0], -1))


class Classify(nn.Module):
    """forward(rgb (N, 3, H, W) in [0, 1]) -> class probabilities (N, num_classes); the classifier sees luminance."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.classifier(to_gray(rgb)).softmax(1)


class Restyle(nn.Module):
    """MUNIT: forward(grey (N, 1, H, W) in [0, 1], style (N, style_dim)) -> (N, 1, H, W): the content of each image with the given style."""

    def __init__(self, munit: nn.Module) -> None:
        super().__init__()
        self.munit = munit

    def forward(self, grey: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content, _ = self.munit.encode(grey)
        return self.munit.decode(content, style)


class Embed(nn.Module):
    """Backbone: forward(rgb (N, 3, H, W) in [0, 1]) -> features (N, 8 * width), the pooled last level."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.backbone(rgb)[-1].mean(dim=(2, 3))


def serving_modules(model: ModelFile, seed: int | None = None) -> dict[str, nn.Module]:
    """{name: module} in eval mode for every network of one seed that a user can apply to images:
    'colorize', 'stylize' (a translator's G) and 'unstylize' (its F, stylizers only), 'stylize_like'
    (ACE), 'classify', 'restyle' (MUNIT), 'embed' (backbone)."""
    nets = networks(model, seed)
    if model.kind == "colorizer":
        out = {"colorize": Colorize(nets["G"])}
    elif model.kind == "stylizer":
        out = {"stylize": Stylize(nets["G"]), **({"unstylize": Stylize(nets["F"])} if "F" in nets else {})}
    elif model.kind == "ace":
        out = {"stylize_like": StylizeLike(nets["ace"])}
    elif model.kind == "classifier":
        out = {"classify": Classify(nets["classifier"])}
    elif model.kind == "munit":
        out = {"restyle": Restyle(nets["munit"])}
    else:
        out = {"embed": Embed(nets["backbone"])}
    return {k: m.eval() for k, m in out.items()}


def example_inputs(model: ModelFile, name: str, size: int = 32, n: int = 2) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the right shapes for ``serving_modules(model)[name]`` (MLflow's input example)."""
    g = torch.Generator().manual_seed(0)
    if name == "restyle":
        return torch.rand(n, 1, size, size, generator=g), torch.randn(n, model.ckpt["munit"]["style_dim"], generator=g)
    if name == "stylize_like":
        return torch.rand(n, 3, size, size, generator=g), torch.rand(
            n + 1, 3, size, size, generator=g
        )  # any number of exemplars
    return (torch.rand(n, 3, size, size, generator=g),)


def servables(path: str | Path) -> tuple[dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]], dict[str, Any]]:
    """What MLflow logs of a model file: {name: (serving module, example inputs)} of its first seed,
    and metadata {kind, seed, seeds}."""
    model = load_model(path)
    modules = serving_modules(model)
    return {name: (m, example_inputs(model, name)) for name, m in modules.items()}, {
        "kind": model.kind,
        "seed": model.seeds[0],
        "seeds": model.seeds,
    }
