"""Conditional Similarity Networks (CSN): one embedding, a learned mask per attribute.

Veit, Belongie & Karaletsos, "Conditional Similarity Networks", CVPR 2017 (code:
andreasveit/conditional-similarity-networks). An image is embedded once (backbone -> GAP -> FC) and
each attribute ("notion of similarity") selects the dimensions it cares about through a learned,
non-negative mask: ``e_a = ReLU(m_a) * e``, then L2-normalised (our interface; CSN compared raw masked
embeddings with Euclidean distance).

Regularisation, as in CSN's training script, is added by the trainer through :meth:`regularization`:
``embed_l2_weight * ||e||`` (root mean square over the images embedded since the last call, before the
mask) ``+ mask_l1_weight * ||ReLU(m)||_1`` (mean over attributes; CSN took the mean over a batch's
conditions, the same in expectation when attributes are sampled uniformly). CSN's weights, 5e-3 and
5e-4, were tuned for its 64-D embedding; we divide the L1 by ``D / 64`` and the norm by ``sqrt(D / 64)``
so the same weights mean the same at any ``embed_dim``.

Presets:

- ``demo``: ``small_cnn`` at 96 px, 64-D (CSN's embedding size); trains on 2 CPU cores in minutes.
- ``paper``: timm ResNet-50 (2048 channels) at 224 px, 1024-D: the setting in which ASEN (AAAI 2020)
  and later work compare CSN on FashionAI / DARN / DeepFashion. Pass ``pretrained="tv_in1k"`` or a
  local file for the published ImageNet start; the default ``None`` trains from scratch.
- ``zappos``: CSN's own Zappos50K setting: ResNet-18 at 112 px, 64-D.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from profashion.explain.explanation import Explanation, Map, attribute_labels
from profashion.models.backbones import config_backbone
from profashion.models.base import ModelConfig, RetrievalModel, register
from profashion.models.presets import global_cnn_presets, preset


@dataclasses.dataclass
class CSNConfig(ModelConfig):
    mask_init_mean: float = 0.9  # CSN: masks ~ N(0.9, 0.7), then ReLU
    mask_init_std: float = 0.7
    embed_l2_weight: float = 5e-3  # CSN's --embed_loss
    mask_l1_weight: float = 5e-4  # CSN's --mask_loss

    LIMITS = {**ModelConfig.LIMITS, "mask_init_mean": (-100, 100), "mask_init_std": (0, 100),
              "embed_l2_weight": (0, 1e6), "mask_l1_weight": (0, 1e6)}


@register(
    "csn",
    display='CSN',
    about='CSN: one embedding and a learned mask per attribute that keeps the dimensions of that attribute.',
    presets={
        **global_cnn_presets(),
        "zappos": preset({"backbone": "timm:resnet18", "image_size": 112, "resize": 112, "embed_dim": 64},
                         about="CSN's own Zappos50K setting: ResNet-18 at 112 px, 64-D"),
    },
)
class CSN(RetrievalModel):
    """backbone -> GAP -> FC -> (ReLU(mask_a) * .) -> L2 norm."""

    config_class = CSNConfig
    _MAX_PENDING = 8  # embedding norms kept for regularization() (bounded if the trainer never asks)

    build_backbone = staticmethod(config_backbone)  # the feature extractor (a subclass swaps it: TF-CSN's ViT)

    def __init__(self, config: CSNConfig):
        super().__init__(config)
        self.backbone = self.build_backbone(config)
        self.fc = nn.Linear(self.backbone.out_channels, config.embed_dim)
        self.masks = nn.Parameter(
            torch.empty(config.num_attributes, config.embed_dim).normal_(config.mask_init_mean, config.mask_init_std)
        )
        self.register_buffer("num_values", torch.tensor(config.num_values, dtype=torch.long))
        self._pending_norms: list[torch.Tensor] = []

    def _general_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) unmasked, unnormalised embedding; remembers its norm for :meth:`regularization` when training."""
        return self._general_from_map(self.backbone(images))

    def _general_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        e = self.fc(fmap.mean(dim=(2, 3)))
        if self.training and torch.is_grad_enabled():
            self._pending_norms.append(e.pow(2).sum(1).mean().sqrt())
            del self._pending_norms[: -self._MAX_PENDING]
        return e

    def embed(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        ids = self.check_attributes(attribute_ids, len(images))
        return self.normalise(self._general_embedding(images) * F.relu(self.masks[ids]))

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        e = self._general_embedding(images)
        return self.normalise(e[:, None, :] * F.relu(self.masks)[None])

    def embed_from_map(self, fmap: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.normalise(self._general_from_map(fmap) * F.relu(self.masks[ids]))

    def embed_all_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.normalise(self._general_from_map(fmap)[:, None, :] * F.relu(self.masks)[None])

    def regularization(self) -> torch.Tensor:
        """CSN's penalty: L2 of the embeddings (since the last call) and L1 of the masks, scaled to 64-D."""
        scale = self.config.embed_dim / 64
        reg = self.config.mask_l1_weight * F.relu(self.masks).sum(1).mean() / scale
        if self._pending_norms:
            reg = reg + self.config.embed_l2_weight * torch.stack(self._pending_norms).mean() / math.sqrt(scale)
            self._pending_norms = []
        return reg

    @torch.no_grad()
    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """Each location's share of the attribute's masked embedding, and the mask itself.

        ``e_a = mean_p m_a * (W f_p + b)``, so location ``p`` contributes ``(m_a * (W f_p + b)) . e_a / |e_a|``;
        negative contributions are clipped. CSN's mask acts on channels, not places: the heatmap only
        changes with the attribute through which embedding dimensions count.
        """
        a = int(self.check_attributes(attribute_id, 1)[0])
        mask = F.relu(self.masks[a]).detach()
        contribution, size = self.pooled_linear_contribution(image, lambda f: self.fc(f) * mask)
        return Explanation((
            Map("heatmap", "heatmap", self.upsample_map(contribution, tuple(image.shape[1:])).cpu(),
                "Each location's share of the attribute's masked embedding, upsampled to the image and rescaled "
                "to [0, 1]."),
            Map("contribution", "heatmap", contribution.cpu(),
                "Each feature-map location's share of the masked embedding's length, negatives clipped."),
            Map("mask", "matrix", mask.cpu(),
                "The attribute's mask over the embedding dimensions (ReLU of the learned mask): which dimensions "
                "count for it.", rows="attribute", columns="embedding dimension",
                row_labels=attribute_labels([a]), row_attributes=(a,), highlight_row=0),
        ), feature_map_size=size)
