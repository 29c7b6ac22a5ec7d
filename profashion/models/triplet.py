"""Triplet network: one embedding for every attribute, the unconditional baseline.

Hoffer & Ailon, "Deep metric learning using Triplet network", SIMBAD 2015; used as the "Triplet
Network" baseline of CSN (Veit et al., CVPR 2017) and ASEN (Ma et al., AAAI 2020). The network ignores
the attribute: backbone -> global average pooling -> FC -> L2 norm, and the same vector answers every
attribute, which is exactly what the conditional methods are measured against.

Presets:

- ``demo``: ``small_cnn`` at 96 px, 64-D; trains from scratch on 2 CPU cores in minutes.
- ``paper``: timm ResNet-50 (all four stages, 2048 channels, 7 x 7 at 224 px) at 224 px, 1024-D, the
  ASEN comparison setting (Resize(224) + CenterCrop(224), ImageNet statistics), so the three baselines
  differ only in their heads. The published runs start from ImageNet weights: pass
  ``pretrained="tv_in1k"`` (torchvision's weights, from the local hub cache) or a local file; the
  default ``None`` trains from scratch.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from profashion.explain.explanation import Explanation, Map
from profashion.models.backbones import config_backbone
from profashion.models.base import ModelConfig, RetrievalModel, register
from profashion.models.presets import global_cnn_presets


@dataclasses.dataclass
class TripletConfig(ModelConfig):
    """No fields beyond :class:`ModelConfig`: the embedding does not depend on the attribute."""


@register(
    "triplet",
    display='Triplet',
    about='Triplet network: one embedding for every attribute, no condition (the baseline).',
    presets=global_cnn_presets(),
)
class TripletNet(RetrievalModel):
    """backbone -> GAP -> FC -> L2 norm; ``embed_all`` repeats the one vector for every attribute."""

    config_class = TripletConfig

    def __init__(self, config: TripletConfig):
        super().__init__(config)
        self.backbone = config_backbone(config)
        self.fc = nn.Linear(self.backbone.out_channels, config.embed_dim)
        # Recorded so a checkpoint whose config.json names other attributes is refused on load.
        self.register_buffer("num_values", torch.tensor(config.num_values, dtype=torch.long))

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised embeddings, the same for every attribute."""
        return self._pool(self.backbone(images))

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.fc(fmap.mean(dim=(2, 3))))

    def embed_from_map(self, fmap: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self._pool(fmap)

    def embed_all_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._pool(fmap)[:, None].repeat(1, self.num_attributes, 1)

    def embed(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        self.check_attributes(attribute_ids, len(images))
        return self._embed(images)

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed(images)[:, None].repeat(1, self.num_attributes, 1)

    @torch.no_grad()
    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """Where the embedding comes from: each location's share of the final vector.

        GAP and FC are linear, so ``e = mean_p (W f_p + b)``; location ``p`` contributes
        ``(W f_p + b) . e / |e|`` to the embedding's length. Negative contributions are clipped.
        """
        self.check_attributes(attribute_id, 1)
        contribution, size = self.pooled_linear_contribution(image, self.fc)
        return Explanation((
            Map("heatmap", "heatmap", self.upsample_map(contribution, tuple(image.shape[1:])).cpu(),
                "Each location's share of the embedding, upsampled to the image and rescaled to [0, 1]; the "
                "same for every attribute (the triplet network is not conditioned)."),
            Map("contribution", "heatmap", contribution.cpu(),
                "Each feature-map location's share of the embedding's length, (W f_p + b) . e / |e|, negatives "
                "clipped."),
        ), feature_map_size=size)
