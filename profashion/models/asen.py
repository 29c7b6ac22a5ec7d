"""ASEN: Attribute-Specific Embedding Network.

Ma, Dong, Zhang, Long, He, Xue & Ji, "Fine-Grained Fashion Similarity Learning by Attribute-Specific
Embedding Network", AAAI 2020 (code: Maryeon/asen; the ASEN++ code, Maryeon/asenpp, keeps the same
global branch). Given a feature map ``I`` (C x h x w) and an attribute ``a``:

1. attribute embedding ``t = E[a]`` (an ``nn.Embedding`` over the attributes);
2. Attribute-aware Spatial Attention (ASA): ``s = tanh(Conv1x1(I)) * tanh(W_s t)`` in a common space,
   a 1x1 conv to one channel, softmax over the h*w positions -> attention map ``alpha``; the attended
   feature is ``x = sum_p alpha_p I_p`` (C-dim);
3. Attribute-aware Channel Attention (ACA): ``g = sigmoid(FC(ReLU(FC([x, ReLU(W_c t)]))))`` gates the
   channels of ``x``;
4. embedding ``FC(g * x)`` (D-dim), L2-normalised.

Choices where the authors' code has variants: the score is the 1x1 conv of the first release
(``ASENet``) without the extra tanh it applied to the logits (that tanh bounds the logits to [-1, 1] and
so caps how peaked the softmax can be; the later ``ASENet_V2`` / ASEN++ drop it too, scoring with a
scaled dot product); the channel branch transforms the attribute embedding by FC + ReLU before the
concatenation and reduces by 2 in the bottleneck, as in ASEN++ (``attr_transform2``, reduction rate 2).

Presets:

- ``demo``: ``small_cnn`` (192 channels, 12 x 12 at 96 px), 64-D embedding, 64-D attribute and common
  spaces; trains on 2 CPU cores in minutes.
- ``paper``: ResNet-50 cut after layer3 (1024 channels, 14 x 14 at 224 px), 224 px (Resize(224) +
  CenterCrop(224)), attribute embedding 512, common space 512, channel bottleneck 512, embedding 1024
  (``--dim_embed 1024`` in the authors' code). The paper starts from ImageNet weights: pass
  ``pretrained="tv_in1k"`` (torchvision's, which the authors load) from the local hub cache, or a local
  file; the default ``None`` trains from scratch.

``embed_all`` runs the backbone once and both attention modules for all attributes as batched matrix
products; ``embed`` computes only the requested attribute per image.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from profashion.explain.explanation import Explanation, Map
from profashion.models.backbones import config_backbone
from profashion.models.base import ModelConfig, ModelError, RetrievalModel, register
from profashion.models.presets import DEMO_SCHEDULE, DEMO_TRUNK, SCRATCH_SCHEDULE, preset


@dataclasses.dataclass
class ASENConfig(ModelConfig):
    attr_dim: int = 512  # attribute embedding size
    common_dim: int = 512  # ASA: common space of image and attribute
    channel_reduction: int = 2  # ACA: bottleneck = channels // channel_reduction

    LIMITS = {**ModelConfig.LIMITS, "attr_dim": (1, 4096), "common_dim": (1, 4096), "channel_reduction": (1, 1024)}


@register(
    "asen",
    display='ASEN',
    about='ASEN: the attribute guides a spatial attention over the image, then a channel attention.',
    presets={
        "demo": preset({**DEMO_TRUNK, "attr_dim": 64, "common_dim": 64, "channel_reduction": 2}, DEMO_SCHEDULE,
                       "frozen ImageNet EfficientNet-Lite0 (stride 16) at 160 px, 64-D"),
        "scratch": preset({"backbone": "small_cnn", "image_size": 96, "resize": 96, "embed_dim": 64,
                           "attr_dim": 64, "common_dim": 64, "channel_reduction": 2},
                          SCRATCH_SCHEDULE, "small CNN from scratch at 96 px (the demo preset before ImageNet)"),
        "paper": preset({"backbone": "resnet50_layer3", "image_size": 224, "resize": 224, "embed_dim": 1024,
                         "attr_dim": 512, "common_dim": 512, "channel_reduction": 2},
                        about="ResNet-50 cut after layer3 at 224 px, 1024-D (the paper)"),
    },
)
class ASEN(RetrievalModel):
    """backbone -> attribute-aware spatial attention -> attribute-aware channel attention -> FC -> L2 norm."""

    config_class = ASENConfig

    build_backbone = staticmethod(config_backbone)  # the feature extractor (a subclass swaps it: TF-ASEN's ViT)

    def __init__(self, config: ASENConfig):
        super().__init__(config)
        self.backbone = self.build_backbone(config)
        c = self.backbone.out_channels
        self.attribute_embedding = nn.Embedding(config.num_attributes, config.attr_dim)
        # Attribute-aware spatial attention
        self.spatial_image = nn.Conv2d(c, config.common_dim, kernel_size=1)
        self.spatial_attribute = nn.Linear(config.attr_dim, config.common_dim)
        self.spatial_score = nn.Conv2d(config.common_dim, 1, kernel_size=1)
        # Attribute-aware channel attention
        self.channel_attribute = nn.Linear(config.attr_dim, config.attr_dim)
        self.channel_fc1 = nn.Linear(c + config.attr_dim, c // config.channel_reduction)
        self.channel_fc2 = nn.Linear(c // config.channel_reduction, c)
        self.fc = nn.Linear(c, config.embed_dim)
        self.register_buffer("num_values", torch.tensor(config.num_values, dtype=torch.long))

    def _attend(self, fmap: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both attention modules for K attributes per image.

        fmap: (B, C, h, w); attrs: (B or 1, K, attr_dim) attribute embeddings.
        Returns the L2-normalised embeddings (B, K, D) and the spatial attention (B, K, h, w).
        """
        b, _, h, w = fmap.shape
        # ASA. The 1x1 score conv is linear, so fold its weight into the attribute side: one batched
        # matrix product scores every (attribute, position) pair without a (B, K, common, h*w) tensor.
        image = torch.tanh(self.spatial_image(fmap)).flatten(2)  # (B, common, h*w)
        query = torch.tanh(self.spatial_attribute(attrs)) * self.spatial_score.weight.view(1, 1, -1)
        attention = torch.softmax(query @ image + self.spatial_score.bias, dim=-1)  # (B, K, h*w)
        attended = attention @ fmap.flatten(2).transpose(1, 2)  # (B, K, C)
        # ACA (the attribute side is computed once per attribute, then broadcast over the batch)
        attribute = F.relu(self.channel_attribute(attrs)).expand(b, -1, -1)
        gate_in = torch.cat([attended, attribute], dim=-1)
        gate = torch.sigmoid(self.channel_fc2(F.relu(self.channel_fc1(gate_in))))
        out = self.normalise(self.fc(attended * gate))
        return out, attention.view(b, -1, h, w)

    def embed_from_map(self, fmap: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self._attend(fmap, self.attribute_embedding(ids)[:, None])[0][:, 0]

    def embed_all_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._attend(fmap, self.attribute_embedding.weight[None])[0]

    def embed(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        ids = self.check_attributes(attribute_ids, len(images))
        return self.embed_from_map(self.backbone(images), ids)

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_all_from_map(self.backbone(images))

    @torch.no_grad()
    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """The attribute's spatial attention: ``"attention"`` at feature resolution (sums to 1), ``"heatmap"``
        upsampled to the image and rescaled to [0, 1]."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ModelError(f"explain expects one (3, H, W) image, got shape {tuple(image.shape)}")
        ids = self.check_attributes(attribute_id, 1)
        was_training = self.training
        if was_training:  # eval() walks every module: only when needed (a served model is in eval mode)
            self.eval()
        try:
            fmap = self.backbone(image[None].to(self.device))
            _, attention = self._attend(fmap, self.attribute_embedding(ids)[:, None])
        finally:
            if was_training:
                self.train(True)
        attention = attention[0, 0]
        return Explanation((
            Map("heatmap", "heatmap", self.upsample_map(attention, tuple(image.shape[1:])).cpu(),
                "The attribute's spatial attention, upsampled to the image and rescaled to [0, 1]."),
            Map("attention", "heatmap", attention.cpu(),
                "The attribute's spatial attention over the feature map (softmax weights, summing to 1)."),
        ), feature_map_size=tuple(attention.shape))
