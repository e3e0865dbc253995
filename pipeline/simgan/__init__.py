"""SimGAN (seed 003; Shrivastava et al. 2017): refine synthetic digits towards real ones.

- ``training``: the refiner's losses and steps, the Ray Train loop and its driver, the guard
  against trivial refiners;
- ``evaluate``: classifiers trained on raw synthetic, refined and real digits, tested on real ones.
"""

from pipeline.simgan.evaluate import score, train_classifiers
from pipeline.simgan.training import (
    SimganJob,
    check_refiner,
    discriminator_loss,
    load_split,
    refine,
    refiner_figures,
    refiner_from_state,
    refiner_losses,
    train,
    train_loop,
)

__all__ = ["SimganJob", "check_refiner", "discriminator_loss", "load_split", "refine", "refiner_figures", "refiner_from_state",
           "refiner_losses", "score", "train", "train_classifiers", "train_loop"]  # fmt: skip
