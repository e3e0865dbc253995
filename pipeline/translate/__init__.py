"""Downstream translation with the transplanted backbone: colorization (pix2pix cGAN or CycleGAN
grey <-> colour, in Lab) and style transfer (CycleGAN photo <-> painting, in RGB).

- ``data``: the domains, the train/validation split, the test photos and their painted twins;
- ``pix2pix`` / ``cyclegan``: one training step each;
- ``training``: the Ray Train loop on the transplanted backbone and its driver (:func:`train`);
- ``evaluate``: scores on the held-out test photos beside the trivial baselines.
This package's namespace carries what the stages call.

Domains (all tensors (N, 3, H, W) in [-1, 1]):
- colorize: X = grey Lab (L / 50 - 1, 0, 0), Y = colour Lab (L / 50 - 1, a / 110, b / 110).
  G: X -> Y predicts ab and keeps the input L; F: Y -> X (CycleGAN only) predicts L, ab = 0.
- stylize: X = photos, Y = paintings, both RGB * 2 - 1.
"""

from pipeline.translate.data import painted_twins
from pipeline.translate.evaluate import (
    check_stylizer,
    evaluate_colorization,
    evaluate_painter,
    evaluate_stylization,
    sample_rows,
    score_paintings,
    score_seeds,
)
from pipeline.translate.training import (
    ENCODERS,
    GANS,
    TranslateJob,
    check_inputs,
    encoder_backbone,
    generators_from_state,
    job_config,
    served_weights,
    train,
    train_loop,
)

__all__ = ["ENCODERS", "GANS", "TranslateJob", "check_inputs", "check_stylizer", "encoder_backbone", "evaluate_colorization", "evaluate_painter", "evaluate_stylization", "generators_from_state",
           "job_config", "painted_twins", "sample_rows", "score_paintings", "score_seeds", "served_weights", "train", "train_loop"]  # fmt: skip
