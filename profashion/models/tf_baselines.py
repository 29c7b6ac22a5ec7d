"""TF-CSN and TF-ASEN: the conditional heads of CSN and ASEN on a ViT, the ablation of the CCA paper.

Song et al., "Conditional Cross Attention Network for Multi-Space Embedding without Entanglement in Only
a SINGLE Network", ICCV 2023, compare CCA with CSN (Veit et al., CVPR 2017) and ASEN (Ma et al., AAAI
2020) moved onto the same transformer trunk ("TF-CSN", "TF-ASEN"), so that the comparison isolates the
conditioning mechanism from the backbone. Here both use the whole ViT (all L ordinary blocks and the final
LayerNorm, :mod:`profashion.models.vit`) of the CCA presets:

- ``tf-csn``: the [CLS] token -> FC -> ``ReLU(m_a) *`` -> L2 norm, with CSN's mask initialisation and
  regularisation (:class:`~profashion.models.csn.CSN`);
- ``tf-asen``: the patch tokens reshaped to the (h, w) grid -> ASEN's attribute-aware spatial and channel
  attention -> FC -> L2 norm (:class:`~profashion.models.asen.ASEN`).

Both run the trunk once for every attribute (``embed_all``) and support the frozen-trunk fine-tuning mode
(``trunk_features`` / ``embed_from_trunk``): the trunk's tokens do not depend on the attribute.

Presets as CCA's: ``demo`` (``vit_demo_hybrid`` at 64 px, embedding warm-up) and ``paper`` (R50+ViT-B/16 hybrid at 224 px,
``pretrained="orig_in21k"`` from the local hub cache or a local file).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from profashion.explain.explanation import Explanation, Map, attribute_labels
from profashion.models.asen import ASEN, ASENConfig
from profashion.models.base import ModelError, register
from profashion.models.csn import CSN, CSNConfig
from profashion.models.presets import DEMO_VIT, DEMO_VIT_SCHEDULE, preset
from profashion.models.vit import (
    VIT_PAPER_PRESET,
    VIT_SCRATCH_PRESET,
    VIT_SCRATCH_SCHEDULE,
    ViTTrunk,
    ViTTrunkFeatures,
    create_vit_trunk,
)


def _trunk(config) -> ViTTrunk:
    trunk, _, _ = create_vit_trunk(config.backbone, config.image_size, config.pretrained, final_norm=True,
                                   frozen_stages=config.frozen_stages)
    return trunk


@dataclasses.dataclass
class TFCSNConfig(CSNConfig):
    backbone: str = "vit_demo_hybrid"


@register(
    "tf-csn",
    display='TF-CSN',
    about="TF-CSN: CSN's masks on a vision transformer's [CLS] token (the CCA paper's ablation).",
    presets={
        "demo": preset(DEMO_VIT, DEMO_VIT_SCHEDULE, "CSN's masks on the [CLS] of the frozen-EfficientNet hybrid ViT, 160 px"),
        "scratch": preset(VIT_SCRATCH_PRESET, VIT_SCRATCH_SCHEDULE,
                          "small hybrid ViT from scratch at 64 px (the demo preset before ImageNet)"),
        "paper": preset(VIT_PAPER_PRESET, about="R50+ViT-B/16 hybrid at 224 px, 1024-D"),
    },
)
class TFCSN(ViTTrunkFeatures, CSN):
    """ViT -> [CLS] -> FC -> (ReLU(mask_a) * .) -> L2 norm."""

    config_class = TFCSNConfig

    build_backbone = staticmethod(_trunk)  # CSN's layers on the ViT trunk

    def _from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.fc(tokens[:, 0])
        if self.training and torch.is_grad_enabled():
            self._pending_norms.append(e.pow(2).sum(1).mean().sqrt())
            del self._pending_norms[: -self._MAX_PENDING]
        return e

    def _general_embedding(self, images: torch.Tensor) -> torch.Tensor:
        return self._from_tokens(self.backbone.forward_tokens(images))

    def embed_from_trunk(self, features: torch.Tensor, attribute_ids) -> torch.Tensor:
        tokens = self.trunk_tokens(features)
        ids = self.check_attributes(attribute_ids, len(tokens))
        return self.normalise(self._from_tokens(tokens) * F.relu(self.masks[ids]))

    def embed_all_from_trunk(self, features: torch.Tensor) -> torch.Tensor:
        e = self._from_tokens(self.trunk_tokens(features))
        return self.normalise(e[:, None, :] * F.relu(self.masks)[None])

    @torch.no_grad()
    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """The [CLS] token's attention over the patches in the last block (per head and mean), and the mask.

        CSN's mask acts on embedding dimensions, not on places: the map is the same for every attribute,
        which is the point the CCA paper makes against it.
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ModelError(f"explain expects one (3, H, W) image, got shape {tuple(image.shape)}")
        a = int(self.check_attributes(attribute_id, 1)[0])
        grid = self.backbone.grid_size(image.shape[1], image.shape[2])
        was_training = self.training
        if was_training:  # eval() walks every module: only when needed (a served model is in eval mode)
            self.eval()
        try:
            attn = last_block_cls_attention(self.backbone, image[None].to(self.device))[0]  # (H, T)
        finally:
            if was_training:
                self.train(True)
        maps = self.backbone.attention_maps(attn, grid, tuple(image.shape[1:]),
                                            query="the [CLS] token in the last block (the same for every attribute)")
        mask = Map("mask", "matrix", F.relu(self.masks[a]).detach().cpu(),
                   "The attribute's mask over the embedding dimensions (ReLU of the learned mask): which dimensions "
                   "count for it.", rows="attribute", columns="embedding dimension",
                   row_labels=attribute_labels([a]), row_attributes=(a,), highlight_row=0)
        return Explanation((*maps, mask), feature_map_size=grid)


@torch.no_grad()
def last_block_cls_attention(trunk: ViTTrunk, images: torch.Tensor) -> torch.Tensor:
    """(B, H, T): the softmax attention of the [CLS] query in the trunk's last block."""
    x = trunk.patch_embed(images)
    x = trunk.norm_pre(trunk._pos_embed(x))
    for blk in list(trunk.blocks)[:-1]:
        x = blk(x)
    blk = trunk.blocks[-1]
    attn = blk.attn
    b, t, c = x.shape
    h = attn.num_heads
    qkv = attn.qkv(blk.norm1(x)).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return torch.softmax((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1), dim=-1)[:, :, 0]


@dataclasses.dataclass
class TFASENConfig(ASENConfig):
    backbone: str = "vit_demo_hybrid"


@register(
    "tf-asen",
    display='TF-ASEN',
    about="TF-ASEN: ASEN's attention on a vision transformer's patch grid (the CCA paper's ablation).",
    presets={
        "demo": preset({**DEMO_VIT, "attr_dim": 64, "common_dim": 64, "channel_reduction": 2}, DEMO_VIT_SCHEDULE,
                       "ASEN's attention on the patch grid of the frozen-EfficientNet hybrid ViT, 160 px"),
        "scratch": preset({**VIT_SCRATCH_PRESET, "attr_dim": 64, "common_dim": 64, "channel_reduction": 2},
                          VIT_SCRATCH_SCHEDULE, "small hybrid ViT from scratch at 64 px (the demo preset before ImageNet)"),
        "paper": preset({**VIT_PAPER_PRESET, "attr_dim": 512, "common_dim": 512, "channel_reduction": 2},
                        about="R50+ViT-B/16 hybrid at 224 px, 1024-D"),
    },
)
class TFASEN(ViTTrunkFeatures, ASEN):
    """ViT patch tokens as a grid -> ASEN's spatial and channel attention -> FC -> L2 norm.

    ``self.backbone`` is the ViT trunk, whose ``forward`` is the (B, C, h, w) patch-token grid, so ASEN's
    ``embed``, ``embed_all`` and ``explain`` apply unchanged.
    """

    config_class = TFASENConfig

    build_backbone = staticmethod(_trunk)  # ASEN's attention on the ViT trunk's patch grid

    def embed_from_trunk(self, features: torch.Tensor, attribute_ids) -> torch.Tensor:
        tokens = self.trunk_tokens(features)
        ids = self.check_attributes(attribute_ids, len(tokens))
        return self.embed_from_map(self.backbone.patch_grid(tokens), ids)

    def embed_all_from_trunk(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed_all_from_map(self.backbone.patch_grid(self.trunk_tokens(features)))
