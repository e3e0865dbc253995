"""Typed parameters: one pydantic model per section of ``params.yaml``, validated at load.

``params.yaml`` is the only home of the values: these models declare each key's type and bounds,
not a default, so a key missing from the file is an error as much as an unknown one.

An unknown key, a wrong type or an out-of-range value raises :class:`~pipeline.errors.UserError`
with one line naming the key and what is allowed, before any stage does work.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import UserError

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]  # loss weights, decays
Fraction = Annotated[float, Field(gt=0, le=1)]
UnitInterval = Annotated[float, Field(ge=0, le=1)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]


class Section(BaseModel):
    """Base of every params section: unknown keys and silent type coercions are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_range(name: str, pair: list[float], low: float, high: float) -> None:
    lo, hi = pair
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{name} must be [low, high] with {low} <= low <= high <= {high}, got {pair}")


class PhotosParams(Section):
    source: Literal["embedded", "folder", "cyclegan", "cifar10", "cifar100"]
    path: str | None
    download: bool
    test_sources: list[str]
    test_fraction: Annotated[float, Field(gt=0, lt=1)]
    max_side: Annotated[int, Field(ge=32, le=4096)]
    patch_size: Annotated[int, Field(ge=8, le=512)]
    patches_per_image: PosInt
    scale: Pair

    @model_validator(mode="after")
    def _ranges(self) -> PhotosParams:
        _check_range("scale", self.scale, 1e-3, 1.0)
        if self.source in ("folder", "cyclegan") and not self.path:
            raise ValueError(f"source '{self.source}' needs 'path' (a folder)")
        return self


class PaintingParams(Section):
    kuwahara_radius: Annotated[int, Field(ge=1, le=8)]
    stroke_length: Annotated[int, Field(ge=0, le=16)]
    saturation: Annotated[float, Field(ge=0, le=4)]
    levels: Annotated[int, Field(ge=2, le=64)]
    edge_darkening: UnitInterval
    region_split: Annotated[float, Field(gt=0.1, lt=0.9)]


class ProbeParams(Section):
    kind: Literal["textures", "photos"]
    per_class: Annotated[int, Field(ge=4)]


class DigitsParams(Section):
    size: Annotated[int, Field(ge=8, le=128)]
    profile: Literal["zipf", "exp"]
    n_max: PosInt
    n_min: PosInt
    zipf_a: PosFloat
    test_per_class: PosInt
    transform: Literal["rot", "bg", "dil"]

    @model_validator(mode="after")
    def _counts(self) -> DigitsParams:
        if self.n_min > self.n_max:
            raise ValueError(f"n_min ({self.n_min}) must be <= n_max ({self.n_max})")
        return self


class SimganDigitsParams(Section):
    """SimGAN's data (seed 003): synthetic digits rendered from matplotlib's fonts, and a class-balanced
    split of the real scikit-learn digits."""

    size: Annotated[int, Field(ge=8, le=128)]
    synthetic_per_class: PosInt
    real_train_per_class: PosInt
    real_test_per_class: PosInt

    @model_validator(mode="after")
    def _counts(self) -> SimganDigitsParams:
        if self.real_train_per_class + self.real_test_per_class > 174:  # the smallest class of the scikit-learn digits
            raise ValueError(
                f"real_train_per_class + real_test_per_class must be <= 174 (the scikit-learn digits' smallest class), "
                f"got {self.real_train_per_class + self.real_test_per_class}"
            )
        return self


class PrepareParams(Section):
    seed: NonNegInt
    on_bad_image: Literal["skip", "fail"]
    photos: PhotosParams
    painting: PaintingParams
    probe: ProbeParams
    digits_lt: DigitsParams
    simgan_digits: SimganDigitsParams


class DistributedParams(Section):
    num_workers: PosInt
    use_gpu: bool
    cpus_per_worker: PosFloat
    max_failures: NonNegInt
    keep_checkpoints: PosInt
    mixed_precision: bool


class PretrainParams(Section):
    """Shared by every SSL method."""

    seed: NonNegInt
    extra_seeds: list[NonNegInt]  # more pretraining runs, only for the kNN-gain claim's interval over seeds
    arch: Literal["resnet18", "resnet50"]
    stem: Literal["cifar", "imagenet"]  # cifar: 3x3 conv at full resolution; imagenet: 7x7 stride 2 + max-pool
    width: Annotated[int, Field(ge=4, le=128)]
    channels: Literal[1, 3]
    crop_size: Annotated[int, Field(ge=8, le=512)]
    data: Literal["auto", "memory", "stream"]  # photos all in memory, or streamed from the shards (Ray Data)
    instance_scale: Pair
    scale: Pair
    color_jitter: UnitInterval
    grayscale_p: UnitInterval
    epochs: PosInt
    crops_per_epoch: PosInt
    batch_size: Annotated[int, Field(ge=2)]
    warmup_epochs: NonNegInt
    knn_k: PosInt
    knn_temperature: PosFloat
    baseline_seeds: PosInt
    bootstrap: Annotated[int, Field(ge=100)]

    @model_validator(mode="after")
    def _ranges(self) -> PretrainParams:
        _check_range("scale", self.scale, 1e-3, 1.0)
        _check_range("instance_scale", self.instance_scale, 1e-3, 1.0)
        if self.seed in self.extra_seeds or len(set(self.extra_seeds)) != len(self.extra_seeds):
            raise ValueError(f"extra_seeds must be distinct and differ from seed ({self.seed}), got {self.extra_seeds}")
        return self


class SimSiamParams(Section):
    lr: PosFloat
    momentum: UnitInterval
    weight_decay: NonNegFloat
    proj_dim: PosInt
    pred_hidden: PosInt
    fix_pred_lr: bool


class SwavParams(Section):
    lr: PosFloat
    momentum: UnitInterval
    weight_decay: NonNegFloat
    proj_hidden: PosInt
    proj_dim: PosInt
    n_prototypes: Annotated[int, Field(ge=2)]
    temperature: PosFloat
    epsilon: PosFloat
    sinkhorn_iters: PosInt
    n_small_crops: NonNegInt
    small_crop_size: Annotated[int, Field(ge=8, le=512)]
    small_scale: Pair
    freeze_prototypes_epochs: NonNegInt

    @model_validator(mode="after")
    def _ranges(self) -> SwavParams:
        _check_range("small_scale", self.small_scale, 1e-3, 1.0)
        return self


class TranslateParams(Section):
    """Shared by every translation stage (colorize, stylize): the GAN training loop and its scoring."""

    seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    crop_size: Annotated[int, Field(ge=8, le=512)]
    epochs: PosInt
    steps_per_epoch: PosInt
    lr: PosFloat
    betas: Pair
    freeze_encoder_epochs: NonNegInt
    encoder_lr_mult: Annotated[float, Field(gt=0, le=1)]
    decoder_width: Annotated[int, Field(ge=4, le=512)]
    disc_width: Annotated[int, Field(ge=4, le=512)]
    fd_features: Literal["random_resnet", "inception"]
    inception_weights: str | None
    kid_subset_size: Annotated[int, Field(ge=2)]
    kid_subsets: PosInt

    @model_validator(mode="after")
    def _ranges(self) -> TranslateParams:
        _check_range("betas", self.betas, 0.0, 0.9999)
        if self.freeze_encoder_epochs > self.epochs:
            raise ValueError(f"freeze_encoder_epochs ({self.freeze_encoder_epochs}) must be <= epochs ({self.epochs})")
        if self.fd_features == "inception" and not self.inception_weights:
            raise ValueError(
                "fd_features 'inception' needs inception_weights (a local state-dict file; nothing is downloaded)"
            )
        return self


class ColorizeParams(Section):
    train_fraction: Fraction
    batch_size: Annotated[int, Field(ge=2)]  # cGAN; CycleGAN variants use cyclegan.batch_size
    lambda_l1: NonNegFloat
    gan_weight: NonNegFloat


class CycleGanParams(Section):
    cycle: NonNegFloat
    identity: NonNegFloat  # times cycle, as in the reference code
    gan_weight: NonNegFloat
    pool_size: NonNegInt
    batch_size: Annotated[int, Field(ge=2)]


class StylizeParams(Section):
    train_fraction: Fraction
    steps_per_epoch: PosInt | None  # None = translate.steps_per_epoch
    batch_size: PosInt | None  # None = cyclegan.batch_size
    precise_bn: bool  # BatchNorm running statistics recomputed over each generator's training domain every epoch
    # generators scored and saved as this moving average of their weights (0 = the last weights)
    ema_decay: Annotated[float, Field(ge=0, lt=1)]


class MunitParams(Section):
    """MUNIT on digits_lt as one domain (seed 000): its style space should learn the nuisance."""

    seed: NonNegInt
    dim: Annotated[int, Field(ge=4, le=256)]
    style_dim: PosInt
    n_down: Annotated[int, Field(ge=1, le=4)]
    n_res: PosInt
    mlp_dim: PosInt
    disc_width: Annotated[int, Field(ge=4, le=256)]
    batch_size: Annotated[int, Field(ge=2)]
    epochs: PosInt
    steps_per_epoch: PosInt
    lr: PosFloat
    betas: Pair
    weight_decay: NonNegFloat
    gan: NonNegFloat
    recon_x: NonNegFloat
    recon_s: NonNegFloat
    recon_c: NonNegFloat
    cycle: NonNegFloat
    diversity_styles: Annotated[int, Field(ge=2)]

    @model_validator(mode="after")
    def _ranges(self) -> MunitParams:
        _check_range("betas", self.betas, 0.0, 0.9999)
        return self


class AugmentParams(Section):
    seed: NonNegInt
    threshold: PosInt  # classes with fewer training images than this are the tail
    per_image: PosInt  # generated samples per real tail image
    style_guard: bool  # stop when MUNIT's style is dead (pipeline.invariance.munit.check_style_alive)


class ClassifyParams(Section):
    seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    width: Annotated[int, Field(ge=2, le=128)]
    epochs: PosInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: PosFloat
    momentum: UnitInterval
    weight_decay: NonNegFloat
    warmup_epochs: NonNegInt
    decay_epochs: list[PosInt]
    decay: Annotated[float, Field(gt=0, lt=1)]
    gen_frac: UnitInterval  # git: share of each batch replaced by MUNIT samples
    ekld_draws: PosInt
    checkpoint_every: PosInt

    @model_validator(mode="after")
    def _schedule(self) -> ClassifyParams:
        if (
            not self.decay_epochs
            or sorted(self.decay_epochs) != self.decay_epochs
            or self.decay_epochs[-1] >= self.epochs
        ):
            raise ValueError(
                f"decay_epochs must be increasing and below epochs ({self.epochs}), got {self.decay_epochs}"
            )
        if self.warmup_epochs >= self.decay_epochs[0]:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must end before the first decay ({self.decay_epochs[0]})"
            )
        return self


class TrackingParams(Section):
    experiment: Annotated[str, Field(min_length=1)]
    profile: Annotated[str, Field(min_length=1)]
    log_models: bool


class SimganParams(Section):
    """SimGAN (stage ``simgan``): the refiner, its local discriminator and history buffer, the guard
    against trivial refiners, and the classifiers that test the refined digits on real ones."""

    seed: NonNegInt
    width: Annotated[int, Field(ge=4, le=256)]
    blocks: PosInt
    disc_width: Annotated[int, Field(ge=4, le=256)]
    disc_layers: Annotated[int, Field(ge=1, le=4)]
    lambda_reg: NonNegFloat
    lr: PosFloat
    batch_size: Annotated[int, Field(ge=2)]
    epochs: PosInt
    steps_per_epoch: PosInt
    refiner_steps: PosInt
    pretrain_steps: NonNegInt
    pretrain_disc_steps: NonNegInt
    buffer_size: NonNegInt
    min_moved: NonNegFloat
    min_spread: UnitInterval
    classify_seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    classify_width: Annotated[int, Field(ge=2, le=128)]
    classify_steps: PosInt
    classify_batch_size: Annotated[int, Field(ge=2)]
    classify_lr: PosFloat


class AceParams(Section):
    """ACE (stage ``ace``): trained on the photos train split only."""

    seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    encoder: Literal["scratch", "simsiam", "swav"]
    level: Annotated[int, Field(ge=0, le=4)]
    content_dim: PosInt
    n_res: PosInt
    style_dim: PosInt
    mlp_dim: PosInt
    disc_width: PosInt
    crop_size: Annotated[int, Field(ge=8)]
    batch_size: Annotated[int, Field(ge=4)]
    epochs: PosInt
    steps_per_epoch: PosInt
    lr: PosFloat
    betas: Pair
    contrastive: NonNegFloat
    content: NonNegFloat
    style: NonNegFloat
    recon: NonNegFloat
    gan: NonNegFloat
    diversity_styles: Annotated[int, Field(ge=2)]
    eval_exemplars: PosInt
    adain_steps: NonNegInt
    adain_lr: PosFloat
    floor_steps: PosInt
    floor_lr: PosFloat
    grid_contents: PosInt
    grid_styles: PosInt

    @model_validator(mode="after")
    def _ranges(self) -> AceParams:
        _check_range("betas", self.betas, 0.0, 0.9999)
        return self


class AceFinetuneParams(Section):
    """ACE fine-tuning on the painting train split (stage ``ace_finetune``): latent consistency + GAN."""

    batch_size: Annotated[int, Field(ge=4)]
    epochs: PosInt
    steps_per_epoch: PosInt
    lr: PosFloat
    # reconstruction anchor on both domains (not in the paper): 0 = the paper's recipe
    recon: NonNegFloat


class SweepDimension(Section):
    """One search dimension: exactly one of ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``choice: [...]``."""

    uniform: Pair | None = None
    loguniform: Pair | None = None
    choice: Annotated[list[float], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> SweepDimension:
        given = [k for k in ("uniform", "loguniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, choice (got {', '.join(given) or 'none'})")
        if self.uniform is not None and not self.uniform[0] < self.uniform[1]:
            raise ValueError(f"uniform must be [low, high] with low < high, got {self.uniform}")
        if self.loguniform is not None and not 0 < self.loguniform[0] < self.loguniform[1]:
            raise ValueError(f"loguniform must be [low, high] with 0 < low < high, got {self.loguniform}")
        return self


SWEEPABLE = ("colorize", "cyclegan", "munit", "classify")  # sweep stages; each sweeps keys of its own params section
_SECTIONS: dict[str, type[Section]] = {
    "colorize": ColorizeParams,
    "cyclegan": CycleGanParams,
    "munit": MunitParams,
    "classify": ClassifyParams,
}


class SweepParams(Section):
    """Ray Tune sweeps (``python -m stages.sweep --stage <name>``): ASHA over loss weights."""

    seed: NonNegInt
    num_samples: PosInt  # trials, the first one at the current params
    max_concurrent: PosInt  # trials at once (1 keeps ASHA's decisions reproducible)
    grace_period: PosInt  # reports before ASHA may stop a trial
    reduction_factor: Annotated[int, Field(ge=2)]
    trial_cpus: NonNegFloat  # the trial's driver (it builds the TorchTrainer)
    workers_per_trial: PosInt  # Ray Train workers of each trial
    cpus_per_worker: PosFloat
    gpus_per_worker: Annotated[float, Field(ge=0, le=8)]  # 0 = CPU; a fraction shares a GPU
    encoder: Literal["scratch", "simsiam", "swav"]  # backbone of the colorize / cyclegan sweeps
    space: dict[str, dict[str, SweepDimension]]

    @model_validator(mode="after")
    def _gpus(self) -> SweepParams:
        g = self.gpus_per_worker
        if 0 < g < 1 and self.workers_per_trial > 1:
            raise ValueError(
                f"gpus_per_worker {g:g} puts {self.workers_per_trial} workers of a trial on one GPU, which NCCL refuses:"
                " a fractional GPU needs workers_per_trial: 1"
            )
        if g > 1 and g != int(g):
            raise ValueError(f"gpus_per_worker above 1 must be a whole number of GPUs, got {g:g}")
        return self

    @model_validator(mode="after")
    def _space(self) -> SweepParams:
        for stage, dims in self.space.items():
            if stage not in SWEEPABLE:
                raise ValueError(f"unknown sweep stage '{stage}' (allowed: {', '.join(SWEEPABLE)})")
            fields = {k for k, f in _SECTIONS[stage].model_fields.items() if f.annotation is float}
            for name in dims:
                if name not in fields:
                    raise ValueError(
                        f"{stage}: '{name}' is not a sweepable parameter (allowed: {', '.join(sorted(fields))})"
                    )
        return self


class Params(Section):
    tracking: TrackingParams
    prepare: PrepareParams
    distributed: DistributedParams
    pretrain: PretrainParams
    simsiam: SimSiamParams
    swav: SwavParams
    translate: TranslateParams
    colorize: ColorizeParams
    cyclegan: CycleGanParams
    stylize: StylizeParams
    munit: MunitParams
    augment: AugmentParams
    classify: ClassifyParams
    simgan: SimganParams
    ace: AceParams
    ace_finetune: AceFinetuneParams
    sweep: SweepParams


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that ``loc`` (minus its last element) points into."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def describe_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error of ``exc`` as one line: ``<source>: <dotted.key>: <what is allowed>``."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not isinstance(p, int) or err["type"] != "extra_forbidden")
    key = ".".join(str(p) for p in loc) or "<root>"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, loc))
        return f"{source}: {key}: unknown key (allowed: {allowed})"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return f"{source}: {key}: {msg}"


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise UserError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, Params, source)) from None


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``1e-06`` is a float, not a string.

    DVC writes params.yaml with ruamel, which dumps ``-S swav.weight_decay=0.000001`` as ``1e-06``;
    PyYAML's YAML 1.1 rules need a dot in the mantissa and would read it as text."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)  # fmt: skip


def read_yaml(text: str) -> Any:
    """``text`` parsed with :class:`ParamsLoader` (yaml.YAMLError when it is not YAML)."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 -- a SafeLoader subclass


def set_values(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``raw`` with each ``section.key=value`` of ``assignments`` set (``dvc exp run -S`` syntax: the
    value is read as YAML); a one-line error for a malformed assignment or a key params.yaml lacks."""
    out = copy.deepcopy(raw)
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"-S {item}: expected section.key=value")
        *parents, leaf = key.strip().split(".")
        node = out
        for i, part in enumerate(parents):
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise UserError(f"-S {item}: {'.'.join(parents[: i + 1])} is not a section of the params")
        if leaf not in node:
            raise UserError(f"-S {item}: unknown key {key.strip()} (allowed: {', '.join(sorted(node))})")
        try:
            node[leaf] = read_yaml(text)
        except yaml.YAMLError as exc:
            raise UserError(f"-S {item}: not a YAML value: {str(exc).splitlines()[0]}") from None
    return out


def load_params(path: str | Path = "params.yaml", assignments: list[str] = ()) -> Params:
    """Read and validate ``params.yaml``, with ``section.key=value`` ``assignments`` (:func:`set_values`) applied."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file not found: {path}")
    try:
        raw = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    source = str(path) + "".join(f" -S {a}" for a in assignments)
    return parse_params(set_values(raw, list(assignments)) if assignments else raw, source)
