"""Typed parameters: one pydantic model per section of ``params.yaml``, validated at load.

An unknown key, a wrong type or an out-of-range value raises :class:`~pipeline.errors.UserError`
with one line naming the key and what is allowed, before any stage does work.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import UserError

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
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
    source: Literal["embedded", "folder", "cyclegan", "cifar10", "cifar100"] = "embedded"
    path: str | None = None
    download: bool = False
    test_sources: list[str] = ["coffee", "chelsea"]
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    max_side: Annotated[int, Field(ge=32, le=4096)] = 256
    patch_size: Annotated[int, Field(ge=8, le=512)] = 32
    patches_per_image: PosInt = 96
    scale: Pair = [0.1, 0.5]

    @model_validator(mode="after")
    def _ranges(self) -> PhotosParams:
        _check_range("scale", self.scale, 1e-3, 1.0)
        if self.source in ("folder", "cyclegan") and not self.path:
            raise ValueError(f"source '{self.source}' needs 'path' (a folder)")
        return self


class PaintingParams(Section):
    kuwahara_radius: Annotated[int, Field(ge=1, le=8)] = 2
    stroke_length: Annotated[int, Field(ge=0, le=16)] = 3
    saturation: Annotated[float, Field(ge=0, le=4)] = 1.6
    levels: Annotated[int, Field(ge=2, le=64)] = 6
    edge_darkening: UnitInterval = 0.7
    region_split: Annotated[float, Field(gt=0.1, lt=0.9)] = 0.5


class ProbeParams(Section):
    kind: Literal["textures", "photos"] = "textures"
    per_class: Annotated[int, Field(ge=4)] = 40


class DigitsParams(Section):
    size: Annotated[int, Field(ge=8, le=128)] = 32
    profile: Literal["zipf", "exp"] = "zipf"
    n_max: PosInt = 150
    n_min: PosInt = 5
    zipf_a: PosFloat = 1.5
    test_per_class: PosInt = 24
    transform: Literal["rot", "bg", "dil"] = "rot"

    @model_validator(mode="after")
    def _counts(self) -> DigitsParams:
        if self.n_min > self.n_max:
            raise ValueError(f"n_min ({self.n_min}) must be <= n_max ({self.n_max})")
        return self


class PrepareParams(Section):
    seed: NonNegInt = 0
    on_bad_image: Literal["skip", "fail"] = "skip"
    photos: PhotosParams = PhotosParams()
    painting: PaintingParams = PaintingParams()
    probe: ProbeParams = ProbeParams()
    digits_lt: DigitsParams = DigitsParams()


class DistributedParams(Section):
    num_workers: PosInt = 2
    use_gpu: bool = False
    cpus_per_worker: PosFloat = 1.0
    max_failures: NonNegInt = 2
    keep_checkpoints: PosInt = 2
    mixed_precision: bool = True


class PretrainParams(Section):
    """Shared by every SSL method."""

    seed: NonNegInt = 0
    extra_seeds: list[NonNegInt] = []  # more pretraining runs, only for the kNN-gain claim's interval over seeds
    width: Annotated[int, Field(ge=4, le=128)] = 32
    channels: Literal[1, 3] = 3
    crop_size: Annotated[int, Field(ge=8, le=512)] = 32
    instance_scale: Pair = [0.1, 0.5]
    scale: Pair = [0.08, 1.0]
    color_jitter: UnitInterval = 0.4
    grayscale_p: UnitInterval = 0.2
    epochs: PosInt = 8
    crops_per_epoch: PosInt = 1280
    batch_size: Annotated[int, Field(ge=2)] = 128
    warmup_epochs: NonNegInt = 1
    knn_k: PosInt = 20
    knn_temperature: PosFloat = 0.07
    baseline_seeds: PosInt = 3
    bootstrap: Annotated[int, Field(ge=100)] = 1000

    @model_validator(mode="after")
    def _ranges(self) -> PretrainParams:
        _check_range("scale", self.scale, 1e-3, 1.0)
        _check_range("instance_scale", self.instance_scale, 1e-3, 1.0)
        if self.seed in self.extra_seeds or len(set(self.extra_seeds)) != len(self.extra_seeds):
            raise ValueError(f"extra_seeds must be distinct and differ from seed ({self.seed}), got {self.extra_seeds}")
        return self


class SimSiamParams(Section):
    lr: PosFloat = 0.06
    momentum: UnitInterval = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    proj_dim: PosInt = 512
    pred_hidden: PosInt = 128
    fix_pred_lr: bool = True


class SwavParams(Section):
    lr: PosFloat = 0.06
    momentum: UnitInterval = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    proj_hidden: PosInt = 512
    proj_dim: PosInt = 128
    n_prototypes: Annotated[int, Field(ge=2)] = 30
    temperature: PosFloat = 0.1
    epsilon: PosFloat = 0.05
    sinkhorn_iters: PosInt = 3
    n_small_crops: NonNegInt = 2
    small_crop_size: Annotated[int, Field(ge=8, le=512)] = 16
    small_scale: Pair = [0.05, 0.3]
    freeze_prototypes_epochs: NonNegInt = 1

    @model_validator(mode="after")
    def _ranges(self) -> SwavParams:
        _check_range("small_scale", self.small_scale, 1e-3, 1.0)
        return self


class TranslateParams(Section):
    """Shared by every translation stage (colorize, stylize): the GAN training loop and its scoring."""

    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = [0, 1, 2]
    crop_size: Annotated[int, Field(ge=8, le=512)] = 32
    epochs: PosInt = 4
    steps_per_epoch: PosInt = 25
    lr: PosFloat = 2e-4
    betas: Pair = [0.5, 0.999]
    freeze_encoder_epochs: NonNegInt = 0
    encoder_lr_mult: Annotated[float, Field(gt=0, le=1)] = 1.0
    decoder_width: Annotated[int, Field(ge=4, le=512)] = 32
    disc_width: Annotated[int, Field(ge=4, le=512)] = 32
    fd_features: Literal["random_resnet", "inception"] = "random_resnet"
    inception_weights: str | None = None
    kid_subset_size: Annotated[int, Field(ge=2)] = 64
    kid_subsets: PosInt = 50

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
    train_fraction: Fraction = 0.1
    batch_size: Annotated[int, Field(ge=2)] = 16  # cGAN; CycleGAN variants use cyclegan.batch_size
    lambda_l1: Annotated[float, Field(ge=0)] = 100.0
    gan_weight: Annotated[float, Field(ge=0)] = 1.0


class CycleGanParams(Section):
    cycle: Annotated[float, Field(ge=0)] = 10.0
    identity: Annotated[float, Field(ge=0)] = 0.5  # times cycle, as in the reference code
    gan_weight: Annotated[float, Field(ge=0)] = 1.0
    pool_size: NonNegInt = 50
    batch_size: Annotated[int, Field(ge=2)] = 2


class StylizeParams(Section):
    train_fraction: Fraction = 1.0
    steps_per_epoch: PosInt | None = 50  # None = translate.steps_per_epoch
    batch_size: PosInt | None = 4  # None = cyclegan.batch_size
    precise_bn: bool = True  # BatchNorm running statistics recomputed over each generator's training domain every epoch
    # generators scored and saved as this moving average of their weights (0 = the last weights)
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.98


class MunitParams(Section):
    """MUNIT on digits_lt as one domain (seed 000): its style space should learn the nuisance."""

    seed: NonNegInt = 0
    dim: Annotated[int, Field(ge=4, le=256)] = 16
    style_dim: PosInt = 8
    n_down: Annotated[int, Field(ge=1, le=4)] = 2
    n_res: PosInt = 2
    mlp_dim: PosInt = 64
    disc_width: Annotated[int, Field(ge=4, le=256)] = 16
    batch_size: Annotated[int, Field(ge=2)] = 16
    epochs: PosInt = 25
    steps_per_epoch: PosInt = 60
    lr: PosFloat = 1e-4
    betas: Pair = [0.5, 0.999]
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    gan: Annotated[float, Field(ge=0)] = 1.0
    recon_x: Annotated[float, Field(ge=0)] = 10.0
    recon_s: Annotated[float, Field(ge=0)] = 1.0
    recon_c: Annotated[float, Field(ge=0)] = 1.0
    cycle: Annotated[float, Field(ge=0)] = 0.0
    diversity_styles: Annotated[int, Field(ge=2)] = 4

    @model_validator(mode="after")
    def _ranges(self) -> MunitParams:
        _check_range("betas", self.betas, 0.0, 0.9999)
        return self


class AugmentParams(Section):
    seed: NonNegInt = 0
    threshold: PosInt = 20  # classes with fewer training images than this are the tail
    per_image: PosInt = 4  # generated samples per real tail image
    style_guard: bool = True  # stop when MUNIT's style is dead (pipeline.invariance.munit.check_style_alive)


class ClassifyParams(Section):
    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = [0, 1, 2, 3, 4]
    width: Annotated[int, Field(ge=2, le=128)] = 8
    epochs: PosInt = 150
    batch_size: Annotated[int, Field(ge=2)] = 32
    lr: PosFloat = 0.1
    momentum: UnitInterval = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 2e-4
    warmup_epochs: NonNegInt = 3
    decay_epochs: list[PosInt] = [100, 130]
    decay: Annotated[float, Field(gt=0, lt=1)] = 0.1
    gen_frac: UnitInterval = 0.5  # git: share of each batch replaced by MUNIT samples
    ekld_draws: PosInt = 4
    checkpoint_every: PosInt = 25

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
    experiment: Annotated[str, Field(min_length=1)] = "ssl-i2i"
    profile: Annotated[str, Field(min_length=1)] = "default"
    log_models: bool = True


class AceParams(Section):
    """ACE (stage ``ace``): trained on the photos train split only."""

    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = [0, 1, 2]
    encoder: Literal["scratch", "simsiam", "swav"] = "simsiam"
    level: Annotated[int, Field(ge=0, le=4)] = 2
    content_dim: PosInt = 64
    n_res: PosInt = 4
    style_dim: PosInt = 8
    mlp_dim: PosInt = 64
    disc_width: PosInt = 32
    crop_size: Annotated[int, Field(ge=8)] = 32
    batch_size: Annotated[int, Field(ge=4)] = 16
    epochs: PosInt = 6
    steps_per_epoch: PosInt = 40
    lr: PosFloat = 0.0002
    betas: Pair = [0.5, 0.999]
    contrastive: Annotated[float, Field(ge=0)] = 1.0
    content: Annotated[float, Field(ge=0)] = 1.0
    style: Annotated[float, Field(ge=0)] = 1.0
    recon: Annotated[float, Field(ge=0)] = 10.0
    gan: Annotated[float, Field(ge=0)] = 1.0
    diversity_styles: Annotated[int, Field(ge=2)] = 4
    eval_exemplars: PosInt = 16
    adain_steps: NonNegInt = 40
    adain_lr: PosFloat = 0.05
    floor_steps: PosInt = 100
    floor_lr: PosFloat = 0.05
    grid_contents: PosInt = 4
    grid_styles: PosInt = 5

    @model_validator(mode="after")
    def _ranges(self) -> AceParams:
        _check_range("betas", self.betas, 0.0, 0.9999)
        return self


class AceFinetuneParams(Section):
    """ACE fine-tuning on the painting train split (stage ``ace_finetune``): latent consistency + GAN."""

    batch_size: Annotated[int, Field(ge=4)] = 16
    epochs: PosInt = 3
    steps_per_epoch: PosInt = 40
    lr: PosFloat = 0.0001
    # reconstruction anchor on both domains (not in the paper): 0 = the paper's recipe
    recon: Annotated[float, Field(ge=0)] = 0.0


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

    seed: NonNegInt = 0
    num_samples: PosInt = 8  # trials, the first one at the current params
    max_concurrent: PosInt = 1  # trials at once (1 keeps ASHA's decisions reproducible)
    grace_period: PosInt = 1  # reports before ASHA may stop a trial
    reduction_factor: Annotated[int, Field(ge=2)] = 2
    trial_cpus: Annotated[float, Field(ge=0)] = 1.0  # the trial's driver (it builds the TorchTrainer)
    workers_per_trial: PosInt = 2  # Ray Train workers of each trial
    cpus_per_worker: PosFloat = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0, le=8)] = 0.0  # 0 = CPU; a fraction shares a GPU
    encoder: Literal["scratch", "simsiam", "swav"] = "simsiam"  # backbone of the colorize / cyclegan sweeps
    space: dict[str, dict[str, SweepDimension]] = {}

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
    tracking: TrackingParams = TrackingParams()
    prepare: PrepareParams = PrepareParams()
    distributed: DistributedParams = DistributedParams()
    pretrain: PretrainParams = PretrainParams()
    simsiam: SimSiamParams = SimSiamParams()
    swav: SwavParams = SwavParams()
    translate: TranslateParams = TranslateParams()
    colorize: ColorizeParams = ColorizeParams()
    cyclegan: CycleGanParams = CycleGanParams()
    stylize: StylizeParams = StylizeParams()
    munit: MunitParams = MunitParams()
    augment: AugmentParams = AugmentParams()
    classify: ClassifyParams = ClassifyParams()
    ace: AceParams = AceParams()
    ace_finetune: AceFinetuneParams = AceFinetuneParams()
    sweep: SweepParams = SweepParams()


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
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"-S {item}: not a YAML value: {str(exc).splitlines()[0]}") from None
    return out


def load_params(path: str | Path = "params.yaml", assignments: list[str] = ()) -> Params:
    """Read and validate ``params.yaml``, with ``section.key=value`` ``assignments`` (:func:`set_values`) applied."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    source = str(path) + "".join(f" -S {a}" for a in assignments)
    return parse_params(set_values(raw, list(assignments)) if assignments else raw, source)
