"""ACE, the Auto-Contrastive-Encoder (Xu et al.): zero-shot image translation on a frozen encoder.

- ``training``: the steps (contrastive, auto-encoder, fine-tuning), the Ray Train loop and its
  driver (:func:`train`), model files;
- ``evaluate``: photo -> painting on the test photos beside the identity, AdaIN, the CycleGAN
  stylizer, the fine-tuned ACE and the floor.
This package's namespace carries what the stages call.
"""

from pipeline.ace.evaluate import evaluate_zero_shot, labels, markdown
from pipeline.ace.training import (
    ACE,
    adain_transfer,
    adaptive_instance_augmentation,
    autoencoder_step,
    best_style_per_image,
    build,
    content_similarity,
    content_std,
    contrastive_step,
    domain_style,
    finetune_step,
    frozen_call,
    job_config,
    load_ace,
    load_exemplars,
    pick_exemplars,
    reconstruct,
    save_ace,
    style_diversity,
    train,
    train_loop,
    translate,
)

__all__ = ["ACE", "adain_transfer", "adaptive_instance_augmentation", "autoencoder_step", "best_style_per_image", "build",
           "content_similarity", "content_std", "contrastive_step", "domain_style", "evaluate_zero_shot", "finetune_step", "frozen_call",
           "job_config", "labels", "load_ace", "load_exemplars", "markdown", "pick_exemplars", "reconstruct", "save_ace", "style_diversity",
           "train", "train_loop", "translate"]  # fmt: skip
