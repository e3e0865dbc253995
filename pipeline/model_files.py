"""The one home of model files: every network a stage keeps under ``models/`` is written by
:func:`save_model` and read by :func:`load_model`, and :data:`KINDS` is the one registry from a
file's kind to the stage that writes it, the networks it rebuilds and the modules that serve them.

A file is a dict of tensors and plain types (it loads under ``torch.load(weights_only=True)``)::

    {"kind": <one of KINDS>, "format_version": FORMAT_VERSION,
     "meta": {what rebuilds the networks, and what they were trained as},
     "seeds": {training seed: {network name: state dict}}}

=============  ==============================  ==========================================  ==============================
kind           written by                      meta                                        networks per seed -> served as
=============  ==============================  ==========================================  ==============================
backbone       pretrain@*, backbone_scratch    ``spec``, ``method``                        backbone -> embed
colorizer      colorize@*                      ``task``, ``gan``, ``encoder``,             G -> colorize
                                               ``decoder_width``, ``crop_size``,
                                               ``backbone_spec``
stylizer       stylize@*                       as colorizer                                G, F -> stylize, unstylize
munit          munit                           ``munit`` (its params section)              munit -> restyle
classifier     classify@*                      ``width``, ``num_classes``, ``method``      classifier -> classify
ace            ace, ace_finetune               ``ace`` (its params section),               ace -> stylize_like
                                               ``backbone_spec``, ``encoder``, ``mode``
refiner        simgan                          ``simgan`` (its params section)             refiner -> refine
=============  ==============================  ==========================================  ==============================

The serving modules take and return images as the user sees them: RGB (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.color import grey_of, lab_to_net, lab_to_rgb, net_to_lab, rgb_to_lab, to_gray
from pipeline.config import AceParams, MunitParams, SimganParams
from pipeline.errors import UserError
from pipeline.io import load_torch, save_torch
from pipeline.models.ace import build as build_ace
from pipeline.models.classifier import ResNet20
from pipeline.models.munit import MUNIT
from pipeline.models.resnet import ARCHS, STEMS, ResNet
from pipeline.models.simgan import Refiner
from pipeline.models.unet import DomainGenerator

FORMAT_VERSION = 2
#: the generator directions of a translator file, as the CycleGAN paper names them
DIRECTIONS = {"G": "forward", "F": "backward"}
Weights = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- serving modules


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


class Refine(nn.Module):
    """SimGAN: forward(grey (N, 1, H, W) in [0, 1]) -> the refined image (N, 1, H, W) in [0, 1]."""

    def __init__(self, refiner: nn.Module) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        return (self.refiner(grey * 2 - 1) + 1) / 2


class Embed(nn.Module):
    """Backbone: forward(rgb (N, 3, H, W) in [0, 1]) -> features (N, 8 * width), the pooled last level."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.backbone(rgb)[-1].mean(dim=(2, 3))


# ----------------------------------------------------------------------------- the registry


def _backbone(spec: dict[str, Any]) -> ResNet:
    try:
        return ResNet.from_spec(spec)
    except ValueError:
        known = ", ".join(f"{a}_{s}" for a in ARCHS for s in STEMS)
        raise UserError(f"backbone architecture '{spec.get('arch')}' is unknown (allowed: {known})") from None


def _translators(meta: dict[str, Any]) -> dict[str, nn.Module]:
    fwd, back = ("colorize", "decolorize") if meta["task"] == "colorize" else ("rgb", "rgb")
    modes = {"G": fwd, **({"F": back} if meta["gan"] == "cyclegan" else {})}
    return {
        k: DomainGenerator(_backbone(meta["backbone_spec"]), mode, meta["decoder_width"]) for k, mode in modes.items()
    }


def _refiner(meta: dict[str, Any]) -> dict[str, nn.Module]:
    sp = SimganParams.model_validate(meta["simgan"])
    return {"refiner": Refiner(1, sp.width, sp.blocks)}


def _munit(meta: dict[str, Any]) -> dict[str, nn.Module]:
    mp = MunitParams.model_validate(meta["munit"])
    return {"munit": MUNIT(1, mp.dim, mp.style_dim, mp.n_down, mp.n_res, mp.mlp_dim)}


@dataclass(frozen=True)
class Kind:
    """A kind of model file: the stage that writes it, the untrained networks of one seed its
    ``meta`` rebuilds ({name: module}), and its serving modules built from the trained ones."""

    stage: str
    build: Callable[[dict[str, Any]], dict[str, nn.Module]]
    serve: Callable[[dict[str, nn.Module]], dict[str, nn.Module]]


KINDS: dict[str, Kind] = {
    "backbone": Kind("pretrain@<method>", lambda m: {"backbone": _backbone(m["spec"])},
                     lambda n: {"embed": Embed(n["backbone"])}),
    "colorizer": Kind("colorize@<encoder>-<gan>", _translators, lambda n: {"colorize": Colorize(n["G"])}),
    "stylizer": Kind("stylize@<encoder>", _translators,
                     lambda n: {"stylize": Stylize(n["G"]), **({"unstylize": Stylize(n["F"])} if "F" in n else {})}),
    "munit": Kind("munit", _munit, lambda n: {"restyle": Restyle(n["munit"])}),
    "classifier": Kind("classify@<method>", lambda m: {"classifier": ResNet20(m["num_classes"], 1, m["width"])},
                       lambda n: {"classify": Classify(n["classifier"])}),
    "refiner": Kind("simgan", _refiner, lambda n: {"refine": Refine(n["refiner"])}),
    "ace": Kind("ace", lambda m: {"ace": build_ace(AceParams.model_validate(m["ace"]), _backbone(m["backbone_spec"]))[0]},
                lambda n: {"stylize_like": StylizeLike(n["ace"])}),
}  # fmt: skip
TASK_KINDS = {"colorize": "colorizer", "stylize": "stylizer"}


# ----------------------------------------------------------------------------- files


def save_model(path: str | Path, kind: str, meta: dict[str, Any], seeds: dict[int, dict[str, Weights]]) -> None:
    """Write a model file of ``kind`` (atomically): ``seeds`` maps each training seed to its
    networks' weights {name: state dict}; ``meta`` is what :data:`KINDS` rebuilds them from."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind '{kind}' (allowed: {', '.join(KINDS)})")
    save_torch(path, {"kind": kind, "format_version": FORMAT_VERSION, "meta": meta,
                      "seeds": {int(s): nets for s, nets in seeds.items()}})  # fmt: skip


@dataclass
class ModelFile:
    """A loaded model file: its ``kind``, what it was trained as (``meta``) and its weights per seed."""

    path: Path
    kind: str
    meta: dict[str, Any]
    weights: dict[int, dict[str, Weights]]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.weights)

    def networks(self, seed: int | None = None) -> dict[str, nn.Module]:
        """The trained networks of one seed (default: the first), in eval mode, by name (see :data:`KINDS`)."""
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.weights:
            raise UserError(f"{self.path}: no model of seed {seed} (it has seeds {self.seeds})")
        try:
            nets = KINDS[self.kind].build(self.meta)
            for name, weights in self.weights[seed].items():
                nets[name].load_state_dict(weights)
        except UserError as exc:
            raise UserError(f"{self.path}: {exc}") from None
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.path}: weights do not match its meta: {str(exc).splitlines()[0]}") from None
        return {name: nets[name].eval() for name in self.weights[seed]}

    def serving_modules(self, seed: int | None = None) -> dict[str, nn.Module]:
        """{name: module} in eval mode for every network of one seed that a user can apply to images:
        'colorize', 'stylize' (a translator's G) and 'unstylize' (its F, stylizers only), 'stylize_like'
        (ACE), 'classify', 'restyle' (MUNIT), 'embed' (backbone)."""
        return {k: m.eval() for k, m in KINDS[self.kind].serve(self.networks(seed)).items()}


def load_model(path: str | Path, kind: str | None = None, stage: str | None = None) -> ModelFile:
    """Read a model file (``weights_only``), of ``kind`` when given; one-line errors for a missing
    file (naming ``stage``, default the kind's, to rerun), an unreadable or foreign one, one of an
    older format and one of another kind."""
    path = Path(path)
    rerun = stage or (KINDS[kind].stage if kind else None)
    if not path.is_file():
        raise UserError(f"model file not found: {path}" + (f": run `dvc repro {rerun}` first" if rerun else ""))
    try:
        ckpt = load_torch(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"{path}: not a model file of this pipeline ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        if isinstance(ckpt, dict) and ("state_dict" in ckpt or "seeds" in ckpt):
            raise UserError(f"{path}: a model file of an older format: rerun `dvc repro {rerun or 'its stage'}`")
        raise UserError(f"{path}: not a model file of this pipeline (kinds: {', '.join(KINDS)})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: model file format {ckpt.get('format_version')}, this pipeline reads {FORMAT_VERSION}: "
                        f"rerun `dvc repro {rerun or KINDS[ckpt['kind']].stage}`")  # fmt: skip
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"{path} is a {ckpt['kind']} model, not a {kind} model")
    return ModelFile(path, ckpt["kind"], ckpt["meta"], {int(s): nets for s, nets in ckpt["seeds"].items()})


def save_translator(path: str | Path, runs: list[tuple[Any, dict[str, Any]]], encoder: str) -> None:
    """The file of a translation stage, from ``train``'s [(job, final state)]: its generators per seed."""
    job = runs[0][0]
    meta = {"task": job.task, "gan": job.gan, "encoder": encoder, "decoder_width": job.translate.decoder_width,
            "crop_size": job.translate.crop_size, "backbone_spec": job.backbone_spec}  # fmt: skip
    seeds = {job.seed: {k: st["models"][k] for k in DIRECTIONS if k in st["models"]} for job, st in runs}
    save_model(path, TASK_KINDS[job.task], meta, seeds)


def save_backbone(path: str | Path, backbone: ResNet, method: str, seed: int) -> None:
    save_model(
        path, "backbone", {"spec": backbone.spec(), "method": method}, {seed: {"backbone": backbone.state_dict()}}
    )


def load_backbone(path: str | Path, stage: str) -> ResNet:
    """The backbone of a ``backbone`` file (its first seed); one-line errors as :func:`load_model`'s."""
    return load_model(path, "backbone", stage).networks()["backbone"]


# ----------------------------------------------------------------------------- MLflow


def example_inputs(model: ModelFile, name: str, size: int = 32, n: int = 2) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the right shapes for ``model.serving_modules()[name]`` (MLflow's input example)."""
    g = torch.Generator().manual_seed(0)
    if name == "refine":
        return (torch.rand(n, 1, size, size, generator=g),)
    if name == "restyle":
        return torch.rand(n, 1, size, size, generator=g), torch.randn(n, model.meta["munit"]["style_dim"], generator=g)
    if name == "stylize_like":  # any number of exemplars
        return torch.rand(n, 3, size, size, generator=g), torch.rand(n + 1, 3, size, size, generator=g)
    return (torch.rand(n, 3, size, size, generator=g),)


def servables(path: str | Path) -> tuple[dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]], dict[str, Any]]:
    """What MLflow logs of a model file: {name: (serving module, example inputs)} of its first seed,
    and metadata {kind, seed, seeds}."""
    model = load_model(path)
    modules = model.serving_modules()
    return {name: (m, example_inputs(model, name)) for name, m in modules.items()}, {
        "kind": model.kind,
        "seed": model.seeds[0],
        "seeds": model.seeds,
    }
