"""The one interface every retrieval model implements, the registry, and checkpoints.

Every method (triplet, csn, asen, and later cca1/cca2/tf-csn/tf-asen/profashion) is a
:class:`RetrievalModel`:

- ``embed(images, attribute_ids) -> (B, D)``: each image conditioned on its own attribute, L2-normalised;
- ``embed_all(images) -> (B, A, D)``: every attribute at once, sharing whatever does not depend on it;
- ``explain(image, attribute_id) -> Explanation``: maps of the method at work, each with its kind and a
  sentence on what it means (:mod:`profashion.explain.explanation`); its ``heatmap`` (H x W floats in [0, 1]
  at the input image's resolution) is always present.

:class:`RetrievalModel` declares every hook the trainer, the index and the app call, with the behaviour a model
gets when it does not override it; adding a model is one file in this package (its class and its
``@register(...)`` preset records), which ``profashion.models`` imports by itself.

A model is built from a name, a preset and its dataset's value counts; its whole configuration is a
JSON-serialisable dataclass, so a checkpoint (``config.json`` + ``model.safetensors``) rebuilds it
without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from profashion.data.images import Preprocess
from profashion.explain.explanation import Explanation
from profashion.io import (
    MAX_JSON_DEPTH,
    JSONLimitError,
    atomic_folder,
    atomic_write_json,
    read_json,
    recover_folder,
    sha256_file,
)
from profashion.models.errors import ModelError  # also importable from here, its old home

if typing.TYPE_CHECKING:
    from profashion.models.backbones import Backbone

CHECKPOINT_FORMAT = 1
INPUT_NORMS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
               "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


@dataclasses.dataclass
class ModelConfig:
    """Fields shared by every method; methods subclass it with their own fields."""

    num_values: list[int]
    preset: str = "demo"
    embed_dim: int = 64
    backbone: str = "small_cnn"
    pretrained: str | None = None  # None, a hub tag, or a local file (see backbones.py)
    image_size: int = 96
    resize: int = 96
    frozen_stages: int = 0  # first trunk stages kept frozen (and cached in training); efficientnet_lite0 only
    adapter: int = 0  # channels of a trainable 1x1 conv + BN + ReLU on the frozen map (efficientnet_lite0 only)
    input_norm: str = "imagenet"  # "imagenet" mean/std, or "inception" (mean 0.5, std 0.5: TF-trained weights)

    # The inclusive range of every numeric setting and the choices of the closed string ones; a method's config
    # extends them for its own fields. Checked when a config is made (``__post_init__``), so a config.json or a
    # --model-config with ``embed_dim`` 10**9 is one sentence before anything is built or allocated.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "embed_dim": (1, 4096), "image_size": (16, 1024), "resize": (16, 1024), "frozen_stages": (0, 7),
        "adapter": (0, 4096)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"input_norm": tuple(INPUT_NORMS)}
    MAX_ATTRIBUTES: ClassVar[int] = 256
    MAX_VALUES: ClassVar[int] = 100_000

    def __post_init__(self):
        check_config(self)

    @property
    def num_attributes(self) -> int:
        return len(self.num_values)

    def preprocess(self) -> Preprocess:
        return Preprocess(self.resize, self.image_size, *INPUT_NORMS[self.input_norm])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_problem(value, kind) -> str | None:
    """What ``value`` should have been to be of the annotated ``kind`` (None: it is)."""
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "a whole number"
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if kind in (str, bool):
        return None if isinstance(value, kind) else ("text" if kind is str else "true or false")
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        problem = _type_problem(value, inner)
        return None if problem is None else f"{problem} or null"
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            return "a list"
        problems = [_type_problem(v, args[0]) for v in value]
        bad = next((p for p in problems if p), None)
        return None if bad is None else f"a list of {bad.removeprefix('a ')}s"
    return None


def check_config(config: ModelConfig) -> None:
    """Types, ranges and choices of every setting of ``config``; one ModelError naming the first wrong one."""
    hints = _field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = _type_problem(value, hints[f.name])
        if problem:
            raise ModelError(f"setting {f.name!r} must be {problem}, got {value!r:.60}")
        if f.name in config.LIMITS:
            lo, hi = config.LIMITS[f.name]
            if not lo <= value <= hi:
                raise ModelError(f"setting {f.name!r} must be between {lo:g} and {hi:g}, got {value!r:.60}")
        if f.name in config.CHOICES and value not in config.CHOICES[f.name]:
            raise ModelError(f"setting {f.name!r} must be one of {', '.join(config.CHOICES[f.name])}, "
                             f"got {value!r:.60}")
    n = config.num_values
    if not 1 <= len(n) <= config.MAX_ATTRIBUTES or not all(1 <= v <= config.MAX_VALUES for v in n):
        raise ModelError(f"num_values must list 1 to {config.MAX_ATTRIBUTES} attributes of 1 to "
                         f"{config.MAX_VALUES:,} values each, got {str(n):.60}")


class RetrievalModel(nn.Module):
    """Base class and contract of every method: subclasses set :attr:`backbone`, implement ``embed_all`` (and
    usually ``embed`` more cheaply) and ``explain``, and override the hooks below where their method needs to.

    The trainer, the index and the app call only what is declared here (and :attr:`config`).
    """

    name: str = ""
    """The registered name (set by :func:`register`)."""
    display_name: str = ""
    """The method's name for people ("CCA Type-1"), set by :func:`register`."""
    about: str = ""
    """What the method is, in one sentence, set by :func:`register`."""
    config_class: type[ModelConfig] = ModelConfig
    """The dataclass of the method's settings; a checkpoint's config.json rebuilds it."""
    backbone: Backbone
    """The image trunk (a :class:`~profashion.models.backbones.Backbone`: ``out_channels``, ``forward_frozen`` /
    ``forward_rest``, ``warmup_features``); every method sets it in ``__init__``."""
    find_unused_parameters: bool = False
    """Whether some trainable parameters get no gradient in a step (DistributedDataParallel must then look)."""
    checkpoint_info: Mapping = types.MappingProxyType({})
    """The config.json of the checkpoint the model was loaded from (empty for a freshly built model)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # -- the interface -----------------------------------------------------------------------------
    def embed(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised embeddings of each image under its own attribute."""
        attribute_ids = self.check_attributes(attribute_ids, len(images))
        all_ = self.embed_all(images)
        return all_[torch.arange(len(images), device=all_.device), attribute_ids]

    def embed_all(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, A, D) L2-normalised embeddings of every image under every attribute."""
        raise NotImplementedError

    def explain(self, image: torch.Tensor, attribute_id: int) -> Explanation:
        """The method's maps for one (3, H, W) image and attribute, each with its kind and meaning; its
        ``heatmap`` is (H, W) in [0, 1]."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed` (what the trainer's and DDP's ``net(x, attrs)`` calls)."""
        return self.embed(images, attribute_ids)

    # -- training hooks (the trainer adds them to the triplet loss) --------------------------------------
    def regularization(self) -> torch.Tensor:
        """The method's own penalty added to every training step's loss (CSN: masks' L1, embeddings' L2); 0."""
        return torch.zeros((), device=self.device)

    def auxiliary_loss(self, values: torch.Tensor) -> torch.Tensor:
        """A batch-level loss of the last training forward, given each embedded row's value under its attribute
        (anchors, positives, negatives; -1 unknown), added to the step's loss (ProFashion: cluster losses); 0."""
        return torch.zeros((), device=self.device)

    def warmup_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) what the trainer's backbone warm-up classifies attribute values from: the backbone's own
        :meth:`~profashion.models.backbones.Backbone.warmup_features` (default: the pooled feature map)."""
        return self.backbone.warmup_features(images)

    # -- the trunk / head split (frozen-trunk training) -------------------------------------------------
    # ``embed == embed_from_trunk o trunk_features``: ``trunk_features`` is what does not depend on the
    # attribute and does not train (the frozen pretrained stages), so the trainer may compute it once per
    # image and orientation and train the rest from the cache. Methods built on a feature map implement
    # ``embed_from_map`` / ``embed_all_from_map``; the ViT methods override the three trunk methods.
    def trunk_features(self, images: torch.Tensor, shared: torch.Tensor | None = None):
        """What the frozen part of the model makes of the images: the shared part, then the model's extras
        (a tuple when there are extras). ``shared``: the shared part already computed for these images (by a
        model that freezes the same stages: a Retrieve or an index build of several models runs it once)."""
        extras = tuple(self.trunk_extras(images)) if self.has_trunk_extras() else ()
        shared = self.shared_trunk_features(images) if shared is None else shared
        return (shared, *extras) if extras else shared

    def shared_trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen pretrained stages' output: the same for every model that freezes the same stages."""
        return self.backbone.forward_frozen(images)

    def has_trunk_extras(self) -> bool:
        return False

    def trunk_extras(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Attribute-independent, image-dependent tensors of the method itself (ProFashion: superpixels)."""
        return ()

    def mirror_trunk_extras(self, extras: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        """The extras of the mirrored images from those of the images, when the method knows how (else None:
        they are computed on the mirrored images)."""
        return None

    def embed_from_trunk(self, features, attribute_ids) -> torch.Tensor:
        ids = self.check_attributes(attribute_ids, len(_first(features)))
        return self.embed_from_map(self.backbone.forward_rest(features), ids)

    def embed_all_from_trunk(self, features) -> torch.Tensor:
        return self.embed_all_from_map(self.backbone.forward_rest(features))

    def embed_from_map(self, fmap: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def embed_all_from_map(self, fmap: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def frozen_modules(self) -> dict[str, nn.Module]:
        """``{prefix: module}`` of the frozen pretrained parts (:class:`~profashion.models.backbones.FrozenPretrained`)."""
        return {name: m for name, m in self.named_modules() if getattr(m, "is_frozen_pretrained", False)}

    def trunk_cache_key(self) -> dict | None:
        """What :meth:`trunk_features` depends on besides the images, for a cache kept on disk (None: none).

        ``{"shared": the frozen pretrained parts (weights name, sha256, layer kind, parameter count), "extras": the
        settings the extras depend on, or None}``: every demo preset that freezes the same EfficientNet stages
        reads the same shared cache.
        """
        frozen = self.frozen_modules()
        if not frozen or not all(m.weights_sha256 for m in frozen.values()):
            return None
        return {"shared": sorted((m.weights_name, m.weights_sha256, type(m.layers).__name__,
                                  sum(p.numel() for p in m.parameters())) for m in frozen.values()),
                "extras": None}

    def cacheable_trunk(self) -> bool:
        """Whether :meth:`trunk_features` is worth caching: the model has a frozen pretrained part."""
        return bool(self.frozen_modules())

    # -- helpers shared by the methods ---------------------------------------------------------------
    @property
    def num_attributes(self) -> int:
        return self.config.num_attributes

    @property
    def preprocess(self) -> Preprocess:
        return self.config.preprocess()

    def check_attributes(self, attribute_ids, batch: int) -> torch.Tensor:
        """Attribute ids as a long tensor on the model's device, with one clear error when out of range."""
        ids = torch.as_tensor(attribute_ids, dtype=torch.long)
        if ids.ndim == 0:
            ids = ids.expand(batch)
        if ids.shape != (batch,):
            raise ModelError(f"expected {batch} attribute ids, got shape {tuple(ids.shape)}")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_attributes):
            bad = int(ids[(ids < 0) | (ids >= self.num_attributes)][0])
            raise ModelError(
                f"attribute id {bad} is out of range: this model knows {self.num_attributes} attributes "
                f"(0..{self.num_attributes - 1})"
            )
        return ids.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=1e-12)

    @torch.no_grad()
    def pooled_linear_contribution(self, image: torch.Tensor,
                                   project: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        """Each location's share of an embedding built as ``mean_p project(f_p)`` (GAP, then linear maps).

        Location ``p`` contributes ``project(f_p) . e / |e|`` to the embedding's length; negative shares are
        clipped. Runs the backbone in eval mode (BatchNorm statistics untouched). Returns the (h, w) map and
        the feature-map size.
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ModelError(f"explain expects one (3, H, W) image, got shape {tuple(image.shape)}")
        was_training = self.training
        if was_training:  # eval() walks every module: only when needed (a served model is in eval mode)
            self.eval()
        try:
            fmap = self.backbone(image[None].to(self.device))[0]  # (C, h, w)
            per_location = project(fmap.flatten(1).T)  # (h*w, D)
            direction = self.normalise(per_location.mean(0))
            contribution = (per_location @ direction).clamp_min(0).view(fmap.shape[1:])
        finally:
            if was_training:
                self.train(True)
        return contribution, tuple(fmap.shape[1:])

    @staticmethod
    def upsample_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(h, w) map -> (H, W) at image resolution, rescaled to [0, 1]."""
        m = F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if float(hi - lo) > 1e-12 else torch.zeros_like(m)


def _first(features) -> torch.Tensor:
    return features[0] if isinstance(features, (tuple, list)) else features


# --------------------------------------------------------------------------------------------------
# Registry: name -> builder. Each method file registers itself.

_REGISTRY: dict[str, tuple[type[RetrievalModel], dict[str, dict]]] = {}


def register(name: str, presets: dict[str, dict], display: str | None = None,
             about: str = "") -> Callable[[type[RetrievalModel]], type[RetrievalModel]]:
    """Class decorator: ``@register("csn", presets={"demo": preset(...), "paper": preset(...)}, display="CSN",
    about="CSN: ...")``.

    Each preset is a record (:func:`profashion.models.presets.preset`): the model's settings and its training
    schedule; a plain dict of model settings is taken as a record with the default schedule. ``display`` is the
    method's one name for people (every page, table and export; ``name`` stays the code's), ``about`` what it is in
    one sentence.
    """
    from profashion.models.presets import preset

    records = {k: v if "model" in v else preset(v) for k, v in presets.items()}

    def wrap(cls: type[RetrievalModel]) -> type[RetrievalModel]:
        cls.name = name
        cls.display_name = display or name
        cls.about = about
        _REGISTRY[name] = (cls, records)
        return cls

    return wrap


def display_name(name: str) -> str:
    """A registered method's name for people ("CCA Type-1" for ``cca1``); an unknown name as it is."""
    _ensure_registered()
    return _REGISTRY[name][0].display_name if name in _REGISTRY else str(name)


def method_about(name: str) -> str:
    """What a registered method is, in one sentence ("" for an unknown name)."""
    _ensure_registered()
    return _REGISTRY[name][0].about if name in _REGISTRY else ""


def method_pipeline(name: str) -> str:
    """A registered method's pipeline as its class's docstring says it in its first line ("backbone -> GAP -> FC
    -> L2 norm"; "" for an unknown name)."""
    _ensure_registered()
    doc = (_REGISTRY[name][0].__doc__ or "") if name in _REGISTRY else ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").replace("``", "").strip()


def _ensure_registered() -> None:
    # Importing the package registers every method.
    import profashion.models  # noqa: F401


def available_models() -> list[str]:
    _ensure_registered()
    return sorted(_REGISTRY)


def model_presets(name: str) -> list[str]:
    return sorted(_lookup(name)[1])


def preset_record(name: str, preset: str) -> dict:
    """``{"model": settings, "train": schedule, "about": text}`` of a model's preset (a copy)."""
    import copy

    _, presets = _lookup(name)
    if preset not in presets:
        raise ModelError(f"model {name!r} has no preset {preset!r}; its presets: {', '.join(sorted(presets))}")
    return copy.deepcopy(presets[preset])


def _lookup(name: str):
    _ensure_registered()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; available models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, preset: str = "demo", num_values: list[int] | None = None, **overrides) -> RetrievalModel:
    """Build a fresh model: ``build_model("asen", preset="demo", num_values=[6, 9, 8])``."""
    cls, _ = _lookup(name)
    preset_record(name, preset)  # an unknown preset is named before the value counts are looked at
    if not num_values:
        raise ModelError("num_values is required: the number of values of each attribute, e.g. [6, 9, 8]")
    if any(int(n) < 1 for n in num_values):
        raise ModelError(f"every attribute needs at least one value, got num_values={list(num_values)}")
    return cls(_preset_config(name, preset, [int(n) for n in num_values], overrides))


def check_settings(name: str, preset: str = "demo", **overrides) -> ModelConfig:
    """The config ``build_model(name, preset, ...)`` would use with ``overrides``, checked (unknown keys, types,
    ranges) without building anything; the attributes' value counts are placeholders."""
    overrides.pop("num_values", None)
    return _preset_config(name, preset, [2], overrides)


def _preset_config(name: str, preset: str, num_values: list[int], overrides: dict) -> ModelConfig:
    """The preset's model settings with ``overrides`` (known keys only), checked as the config is made."""
    cls, _ = _lookup(name)
    record = preset_record(name, preset)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise ModelError(f"unknown setting(s) for {name!r}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(fields))}")
    return cls.config_class(**{**record["model"], **overrides, "num_values": num_values, "preset": preset})


# --------------------------------------------------------------------------------------------------
# Checkpoints: a folder with config.json and model.safetensors, written atomically.


def save_checkpoint(model: RetrievalModel, out_dir: str | os.PathLike, extra: dict | None = None,
                    extra_writer: Callable[[Path], None] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``out_dir`` atomically (temp folder + rename).

    ``extra`` entries go into config.json; ``extra_writer(folder)`` may add files (the trainer's
    optimizer state) before the folder is renamed into place.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:  # a previous out_dir waits as .NAME.old until the new one is in place
        # frozen parts with installed, named weights are referenced (name + sha256), not stored again
        referenced = {p: m for p, m in model.frozen_modules().items() if m.weights_sha256}
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
                 if not any(k.startswith(p + ".") for p in referenced)}
        save_file(state, str(tmp / "model.safetensors"))
        cfg = {
            "format": CHECKPOINT_FORMAT,
            "model": model.name,
            "config": model.config.to_json(),
            "preprocess": model.preprocess.to_json(),
            "weights_sha256": sha256_file(tmp / "model.safetensors"),
            **({"frozen_weights": [{"module": p, "name": m.weights_name, "sha256": m.weights_sha256}
                                   for p, m in referenced.items()]} if referenced else {}),
            **(extra or {}),
        }
        atomic_write_json(tmp / "config.json", cfg)
        if extra_writer is not None:
            extra_writer(tmp)
    return out_dir


def _recover(ckpt_dir: Path) -> None:
    """A save killed between its two renames leaves ``.NAME.old`` and no ``NAME``: put the old one back."""

    recover_folder(ckpt_dir)


MAX_CHECKPOINT_CONFIG_BYTES = 4 << 20  # a checkpoint's config.json: 3-5 KB for the shipped ones


def read_checkpoint_config(ckpt_dir: str | os.PathLike) -> dict:
    ckpt_dir = Path(ckpt_dir)
    _recover(ckpt_dir)
    cfg_path = ckpt_dir / "config.json"
    if not ckpt_dir.is_dir():
        raise ModelError(f"checkpoint folder not found: {ckpt_dir}")
    if not cfg_path.is_file():
        raise ModelError(f"{ckpt_dir} is not a checkpoint: it has no config.json")
    try:  # bounded: a config.json is a few KB (its dataset's value names included)
        cfg = read_json(cfg_path, max_bytes=MAX_CHECKPOINT_CONFIG_BYTES, max_depth=MAX_JSON_DEPTH,
                        what=str(cfg_path))
    except FileNotFoundError:
        raise ModelError(f"{ckpt_dir} is not a checkpoint: it has no config.json") from None
    except JSONLimitError as exc:
        raise ModelError(f"{cfg_path} is corrupt: it {exc.problem}; save or download the "
                         "checkpoint again") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "config" not in cfg:
        raise ModelError(f"{cfg_path} is not a profashion checkpoint config (no 'model'/'config' entries)")
    return cfg


def config_from_json(cls: type[RetrievalModel], raw, where: str) -> ModelConfig:
    """``cls``'s config from the JSON object ``raw`` (read from ``where``): known keys only, every setting checked
    (:func:`check_config`) before anything is built."""
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: 'config' must be a JSON object of settings, got {type(raw).__name__}")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ModelError(f"{where} does not match model {cls.name!r}: unknown setting(s) {', '.join(unknown)}"[:300])
    try:
        return cls.config_class(**raw)
    except TypeError as exc:  # a required setting is missing
        raise ModelError(f"{where} does not match model {cls.name!r}: {exc}") from None
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None


def load_model(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu",
               expect_model: str | None = None) -> RetrievalModel:
    """Rebuild a model from a checkpoint folder; the model's ``preprocess`` is its image transform."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    cfg = read_checkpoint_config(ckpt_dir)
    name = cfg["model"]
    if expect_model is not None and name != expect_model:
        raise ModelError(f"{ckpt_dir} holds a {name!r} model, not {expect_model!r}")
    cls, _ = _lookup(name)
    config = config_from_json(cls, cfg["config"], f"{ckpt_dir}/config.json")
    # The weights come from the checkpoint: do not load the backbone's pretrained weights again, except the
    # frozen parts the checkpoint refers to (installed weights, checked by sha256 below).
    refs = cfg.get("frozen_weights") or []
    if not isinstance(refs, list) or not all(isinstance(r, dict) and {"module", "name", "sha256"} <= r.keys()
                                             for r in refs):
        raise ModelError(f"{ckpt_dir}/config.json has a malformed 'frozen_weights' entry")
    try:
        model = cls(config if refs else dataclasses.replace(config, pretrained=None))
    except ModelError as exc:
        raise ModelError(f"{ckpt_dir}: {exc}") from exc
    model.config = config
    frozen = model.frozen_modules()
    for ref in refs:
        part = frozen.get(ref["module"])
        if part is None or part.weights_name != ref["name"] or part.weights_sha256 != ref["sha256"]:
            have = f"{part.weights_name} sha256 {str(part.weights_sha256)[:12]}..." if part is not None else "nothing"
            raise ModelError(f"{ckpt_dir} was trained on {ref['name']} weights with sha256 {ref['sha256'][:12]}... "
                             f"but {ref['module']} here holds {have}: install the weights it was trained with")
    weights = ckpt_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{ckpt_dir} has no model.safetensors")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights} is corrupt or truncated ({exc}); retrain or copy the checkpoint again") from exc
    recorded_sha = cfg.get("weights_sha256")  # absent in checkpoints written before it was recorded
    if recorded_sha is not None and sha256_file(weights) != recorded_sha:
        raise ModelError(f"{weights} is not the file its config.json was saved with (its sha256 differs): it was "
                         "changed or damaged after saving; retrain or copy the checkpoint again")
    recorded = state.get("num_values")  # models that record their value counts are checked against config.json
    if recorded is not None and recorded.tolist() != [int(n) for n in config.num_values]:
        raise ModelError(f"{weights} was trained with num_values={recorded.tolist()} but its config.json says "
                         f"{list(config.num_values)}: the two files come from different checkpoints")
    own = model.state_dict()
    referenced = tuple(r["module"] + "." for r in refs)
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(referenced))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch for {k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} expected")
        raise ModelError(f"{weights} does not match its config.json ({name!r}): " + "; ".join(parts))
    model.load_state_dict(state, strict=not referenced)
    model.checkpoint_info = cfg
    return model.to(device).eval()
