"""CCA: Conditional Cross Attention network (Type-1 ``cca1`` and Type-2 ``cca2``).

Song, Hwang, Yoon, Choi & Gu, "Conditional Cross Attention Network for Multi-Space Embedding without
Entanglement in Only a SINGLE Network", ICCV 2023 (arXiv 2307.13254). A ViT whose blocks 1..L-1 are the
ordinary self-attention blocks and whose last block is a cross-attention: the QUERY comes from the
condition (the attribute), the keys and values from the image tokens. One network, one embedding space
per attribute, without the entanglement of a shared embedding.

- Conditional token embedding (Sec. 3.2): **Type-1** ``c = FC(one-hot(a))``; **Type-2**
  ``c = FC(ReLU(M[a]))`` with a learnable mask table ``M`` (K x D), initialised like CSN's masks
  (N(0.9, 0.7)). The condition vector is repeated to the token count and is the query of every position.
- Conditional cross-attention block (Sec. 3.3), pre-norm like the ViT block it replaces (its weights are
  the ViT's last block, so a pretrained trunk starts from its own last block):
  ``y = x + Proj(softmax(Q K^T / sqrt(d)) V)`` with ``Q = W_q LN1(c)``, ``K = W_k LN1(x)``,
  ``V = W_v LN1(x)``; ``z = y + MLP(LN2(y))``.
- Output: the [CLS] token of ``z`` -> the ViT's final LayerNorm -> FC -> L2 norm; conditioned triplet loss
  with cosine distance, margin 0.2 (the trainer's loss).

Inference, further than the paper's "blocks 1..L-1 run once": the query is the same vector at every
position and only the [CLS] output is used, so (i) the keys and values of the image tokens do not depend on
the condition and are computed once for all K attributes, and (ii) every position receives the same
attention output, so the [CLS] output is ``x_cls + Proj(attn(q_a))`` followed by the MLP of ONE token.
Each extra attribute costs one query's attention over the T tokens plus one token's MLP.
:meth:`CCA.embed_all_reference` is the straightforward computation (the whole last block on all tokens,
once per attribute); the tests hold the two equal within 1e-5.

Presets:

- ``demo``: our small hybrid ViT (``vit_demo_hybrid``: the small CNN as patch embedding, 128-D, 4 blocks,
  4 heads) at 64 px, 64-D embedding, warmed up on each attribute's embedding (1000 steps) before the
  triplet epochs: with the backbone-only warm-up it did not learn (see :mod:`profashion.models.vit`).
- ``paper``: R50+ViT-B/16 hybrid at 224 px as in the paper (timm ``vit_base_r50_s16_224``; pass
  ``pretrained="orig_in21k"`` from the local hub cache or a local file), 1024-D embedding.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from profashion.explain.explanation import Explanation
from profashion.models.base import ModelConfig, ModelError, RetrievalModel, register
from profashion.models.presets import DEMO_VIT, DEMO_VIT_SCHEDULE, preset
from profashion.models.vit import (
    VIT_PAPER_PRESET,
    VIT_SCRATCH_PRESET,
    VIT_SCRATCH_SCHEDULE,
    ViTTrunk,
    ViTTrunkFeatures,
    create_vit_trunk,
)


@dataclasses.dataclass
class CCAConfig(ModelConfig):
    backbone: str = "vit_demo_hybrid"  # a ViT architecture (see profashion.models.vit.VIT_ARCHS)
    mask_init_mean: float = 0.9  # Type-2: M ~ N(0.9, 0.7), as CSN's masks
    mask_init_std: float = 0.7

    LIMITS = {**ModelConfig.LIMITS, "mask_init_mean": (-100, 100), "mask_init_std": (0, 100)}


class ConditionalCrossAttention(nn.Module):
    """A timm ViT ``Block`` turned into the conditional cross-attention block (query = condition).

    The block's own parameters are used unchanged: ``attn.qkv`` is split into the query projection (applied
    to the condition) and the key/value projections (applied to the image tokens).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.num_heads = int(block.attn.num_heads)

    def _projections(self):
        w = self.block.attn.qkv.weight
        b = self.block.attn.qkv.bias
        wq, wk, wv = w.chunk(3)
        bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
        return (wq, bq), (wk, bk), (wv, bv)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(..., N, C) -> (..., H, N, C / H)."""
        *lead, n, c = t.shape
        return t.reshape(*lead, n, self.num_heads, c // self.num_heads).transpose(-3, -2)

    def keys_values(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) image tokens -> keys and values (B, H, T, d); independent of the condition."""
        _, (wk, bk), (wv, bv) = self._projections()
        x = self.block.norm1(tokens)
        k = self.block.attn.k_norm(self._heads(F.linear(x, wk, bk)))
        v = self._heads(F.linear(x, wv, bv))
        return k, v

    def queries(self, conditions: torch.Tensor) -> torch.Tensor:
        """(..., K, C) condition vectors -> queries (..., H, K, d)."""
        (wq, bq), _, _ = self._projections()
        return self.block.attn.q_norm(self._heads(F.linear(self.block.norm1(conditions), wq, bq)))

    def cls_output(self, cls: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's [CLS] output for K conditions at once.

        cls: (B, C) input [CLS] token; k, v: (B, H, T, d); q: (B or 1, H, K, d).
        Returns (B, K, C) and the attention (B, H, K, T).
        """
        attn = torch.softmax((q * self.block.attn.scale) @ k.transpose(-2, -1), dim=-1)  # (B, H, K, T)
        o = (attn @ v).transpose(1, 2).flatten(2)  # (B, K, C)
        o = self.block.attn.proj(self.block.attn.norm(o))
        y = cls[:, None] + self.block.drop_path1(self.block.ls1(o))
        z = y + self.block.drop_path2(self.block.ls2(self.block.mlp(self.block.norm2(y))))
        return z, attn

    def forward_full(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The straightforward block: condition (B, C) repeated to all T positions as queries, every token
        through attention, residual and MLP; returns all (B, T, C) output tokens. Reference only."""
        b, t, _ = tokens.shape
        (wq, bq), (wk, bk), (wv, bv) = self._projections()
        x = self.block.norm1(tokens)
        query = self.block.norm1(condition[:, None].expand(b, t, -1))
        q = self.block.attn.q_norm(self._heads(F.linear(query, wq, bq)))
        k = self.block.attn.k_norm(self._heads(F.linear(x, wk, bk)))
        v = self._heads(F.linear(x, wv, bv))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        y = tokens + self.block.ls1(self.block.attn.proj(self.block.attn.norm(o)))
        return y + self.block.ls2(self.block.mlp(self.block.norm2(y)))


class CCA(ViTTrunkFeatures, RetrievalModel):
    """ViT blocks 1..L-1 -> conditional cross-attention block -> [CLS] -> LN -> FC -> L2 norm."""

    config_class = CCAConfig
    condition_type = 1

    def __init__(self, config: CCAConfig):
        super().__init__(config)
        trunk, rest, norm = create_vit_trunk(config.backbone, config.image_size, config.pretrained,
                                             trunk_blocks=-1, final_norm=False, frozen_stages=config.frozen_stages)
        if len(rest) != 1:
            raise ModelError(f"ViT '{config.backbone}' needs at least 2 blocks for CCA")
        self.backbone: ViTTrunk = trunk  # blocks 1..L-1: what the trainer's warm-up and frozen trunk use
        width = trunk.out_channels
        self.cross = ConditionalCrossAttention(rest[0])
        self.norm = norm
        k = config.num_attributes
        if self.condition_type == 1:
            self.condition_fc = nn.Linear(k, width)  # FC(one-hot(a))
        else:
            self.masks = nn.Parameter(torch.empty(k, width).normal_(config.mask_init_mean, config.mask_init_std))
            self.condition_fc = nn.Linear(width, width)  # FC(ReLU(M[a]))
        self.fc = nn.Linear(width, config.embed_dim)
        self.register_buffer("num_values", torch.tensor(config.num_values, dtype=torch.long))

    # -- the condition -------------------------------------------------------------------------------
    def condition_tokens(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(K, C) condition vectors of the given attribute ids (default: all attributes)."""
        k = self.num_attributes
        if self.condition_type == 1:
            one_hot = torch.eye(k, device=self.condition_fc.weight.device) if ids is None else \
                F.one_hot(ids, k).to(self.condition_fc.weight.dtype)
            return self.condition_fc(one_hot)
        masks = self.masks if ids is None else self.masks[ids]
        return self.condition_fc(F.relu(masks))

    # -- the trunk and the head ----------------------------------------------------------------------
    def _head(self, tokens: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross.keys_values(tokens)
        z, attn = self.cross.cls_output(tokens[:, 0], k, v, q)
        return self.normalise(self.fc(self.norm(z))), attn

    def embed_from_trunk(self, features: torch.Tensor, attribute_ids) -> torch.Tensor:
        """(B, D) embeddings from cached :meth:`trunk_features`, each image under its own attribute."""
        tokens = self.trunk_tokens(features)
        ids = self.check_attributes(attribute_ids, len(tokens))
        q = self.cross.queries(self.condition_tokens(ids)[:, None])  # (B, H, 1, d)
        return self._head(tokens, q)[0][:, 0]

    def embed_all_from_trunk(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk_tokens(features)
        q = self.cross.queries(self.condition_tokens())[None]  # (1, H, K, d)
        return self._head(tokens, q)[0]

    # -- the interface -------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        ids = self.check_attributes(attribute_ids, len(images))
        return self.embed_from_trunk(self.trunk_features(images), ids)

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, D): blocks 1..L-1 once, keys/values once, then one query + one token's MLP per attribute."""
        return self.embed_all_from_trunk(self.trunk_features(images))

    def embed_all_reference(self, images: torch.Tensor) -> torch.Tensor:
        """The straightforward computation: the whole last block on all tokens, once per attribute."""
        tokens = self.backbone.forward_tokens(images)
        conds = self.condition_tokens()
        out = [self.fc(self.norm(self.cross.forward_full(tokens, conds[a].expand(len(tokens), -1))[:, 0]))
               for a in range(self.num_attributes)]
        return self.normalise(torch.stack(out, dim=1))

    @torch.no_grad()
    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """The condition query's attention over the patches in the conditional block.

        ``"attention_heads"`` (H, h, w) and ``"attention"`` (h, w, mean over heads) are the softmax weights
        on the patch tokens (the rest, ``"prefix_attention"``, goes to the [CLS] token); ``"heatmap"`` is the
        head-mean upsampled to the image and rescaled to [0, 1].
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ModelError(f"explain expects one (3, H, W) image, got shape {tuple(image.shape)}")
        ids = self.check_attributes(attribute_id, 1)
        grid = self.backbone.grid_size(image.shape[1], image.shape[2])
        was_training = self.training
        if was_training:  # eval() walks every module: only when needed (a served model is in eval mode)
            self.eval()
        try:
            tokens = self.backbone.forward_tokens(image[None].to(self.device))
            q = self.cross.queries(self.condition_tokens(ids)[:, None])
            _, attn = self._head(tokens, q)
        finally:
            if was_training:
                self.train(True)
        attn = attn[0, :, 0]  # (H, T)
        p = self.backbone.num_prefix_tokens
        maps = self.backbone.attention_maps(attn, grid, tuple(image.shape[1:]),
                                            query="the attribute's condition query in the conditional block")
        return Explanation(maps, numbers={"prefix_attention": float(attn[:, :p].sum(-1).mean())},
                           number_about={"prefix_attention": "The share of the condition query's attention that "
                                         "goes to the [CLS] token rather than the patches (mean over heads)."},
                           feature_map_size=grid)


PRESETS_CCA = {
    "demo": preset(DEMO_VIT, DEMO_VIT_SCHEDULE, "frozen ImageNet EfficientNet-Lite0 hypercolumn as patch embedding, 2 blocks "
                   "of 128-D, 160 px"),
    "scratch": preset(VIT_SCRATCH_PRESET, VIT_SCRATCH_SCHEDULE,
                      "small hybrid ViT from scratch at 64 px (the demo preset before ImageNet)"),
    "paper": preset(VIT_PAPER_PRESET, about="R50+ViT-B/16 hybrid at 224 px, 1024-D (the paper)"),
}


@register("cca1", presets=PRESETS_CCA, display='CCA Type-1',
          about='CCA Type-1: a vision transformer whose last block cross-attends from the attribute (a one-hot query).')
class CCAType1(CCA):
    """CCA with the Type-1 condition embedding FC(one-hot(a))."""

    condition_type = 1


@register("cca2", presets=PRESETS_CCA, display='CCA Type-2',
          about="CCA Type-2: as Type-1, the attribute's query made from a learned mask per attribute.")
class CCAType2(CCA):
    """CCA with the Type-2 condition embedding FC(ReLU(M[a])), M a learnable K x D mask table."""

    condition_type = 2
