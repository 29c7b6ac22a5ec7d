"""One training configuration: :class:`TrainConfig`, read from and written to JSON.

A configuration file is a JSON object of :class:`TrainConfig` fields, e.g.::

    {"model": "asen", "dataset": "data/synth160", "preset": "demo", "epochs": 5,
     "model_overrides": {"embed_dim": 32}}

Settings left out (or null) come from the model's preset record (:func:`profashion.models.base.preset_record`).
``profashion train --config FILE`` reads one (its flags override single settings); a run's own ``args.json``
is such a file, with every setting resolved; the app's jobs write one per job. Nothing here imports the
trainer or torch, so the CLI and the app read and check configurations without loading either.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from profashion.io import MAX_JSON_DEPTH, atomic_write_json, read_json

REQUIRED = ("model", "dataset")
MAX_CONFIG_BYTES = 1 << 20  # a configuration file (a run's args.json is about 1 KB)
MAX_SEED = 2**32 - 1
MAX_LR = 10.0  # far above any working learning rate (the presets use 1e-5 to 1e-3)
MAX_MARGIN = 2.0  # the loss compares cosine similarities, which differ by at most 2
MAX_WORKERS = 64
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")
# settings that have a flag of their own on `profashion train` (errors name the flag; the others by their key)
_FLAGGED = ("model", "dataset", "out", "preset", "image_root", "epochs", "lr", "lr_step", "lr_gamma", "stage2_epochs",
            "stage2_lr", "stage2_gamma", "batch_size", "triplets_per_epoch", "warmup_steps", "warmup_target",
            "attributes", "seed", "device", "frozen_trunk")
SCHEDULE = ("epochs", "lr", "lr_step", "lr_gamma", "stage2_epochs", "stage2_lr", "stage2_gamma", "batch_size",
            "triplets_per_epoch", "warmup_steps", "warmup_target")


# The schedule of a run comes from its model's preset record (profashion.models.presets: model settings and
# training schedule together); a configuration file or the command line overrides single entries.
@dataclass
class TrainConfig:
    model: str
    dataset: str
    out: str = ""
    preset: str = "demo"
    image_root: str | None = None
    epochs: int | None = None
    lr: float | None = None
    lr_step: int | None = None
    lr_gamma: float | None = None
    stage2_epochs: int | None = None
    stage2_lr: float | None = None
    stage2_gamma: float | None = None
    batch_size: int | None = None
    triplets_per_epoch: int | None = None
    warmup_steps: int | None = None  # backbone warm-up by attribute classification (see warmup_backbone)
    warmup_target: str | None = None  # "backbone" (its features) or "embedding" (each attribute's embedding)
    attributes: list[str] | None = None  # train on these attributes only (default: all)
    margin: float = 0.2
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    num_workers: int = 0
    model_overrides: dict = field(default_factory=dict)
    frozen_trunk: bool = False  # cache the trunk's features once, train only the head (see FrozenTrunk)

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data, where: str = "the training configuration") -> TrainConfig:
        """A configuration from a JSON object; unknown keys, wrong types and missing model/dataset are refused
        (ValueError, one sentence naming ``where``)."""
        data = check_settings_json(data, where)
        missing = [k for k in REQUIRED if data.get(k) in (None, "")]
        if missing:
            raise ValueError(f"{where} names no {' and no '.join(missing)}: give "
                             + " and ".join(f"--{k}" for k in missing) + " or set it in the configuration file")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.from_json(read_config(path), str(path))

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_json(path, self.to_json())
        return Path(path)

    # -- the schedule ----------------------------------------------------------------------------------------
    def with_preset(self) -> TrainConfig:
        """Every setting left out filled from the model's preset record (no other check); an unknown model or
        preset fails here, with the list of models or of the model's presets."""
        from profashion.models.base import preset_record

        d = dataclasses.asdict(self)
        for k, v in preset_record(self.model, self.preset)["train"].items():
            if d[k] is None:
                d[k] = v
        return TrainConfig(**d)

    def resolved(self) -> TrainConfig:
        """:meth:`with_preset`, then every setting checked (type and range, :func:`check_values`), the model's
        settings and the run's size: a bad setting fails here, in one sentence, before any work starts."""
        from profashion.models.base import check_settings
        from profashion.train.limits import check_eval_batch_size, check_run_size

        check_settings_json(self.to_json(), "the training configuration")  # types (a TrainConfig built in code)
        cfg = self.with_preset()
        check_values(cfg)
        settings = check_settings(cfg.model, cfg.preset, **cfg.model_overrides)
        check_run_size(int(cfg.epochs), int(cfg.batch_size), int(cfg.triplets_per_epoch), int(cfg.warmup_steps),
                       int(cfg.stage2_epochs), settings.image_size)
        check_eval_batch_size(int(cfg.eval_batch_size), settings.image_size)
        return cfg

    @property
    def total_epochs(self) -> int:
        """Epochs the run plans: stage 1 plus any second stage (the preset's where left out)."""
        cfg = self if self.epochs is not None and self.stage2_epochs is not None else self.with_preset()
        return int(cfg.epochs) + int(cfg.stage2_epochs or 0)

    def lr_at(self, epoch: int) -> float:
        """Stage 1: ``lr`` decayed by ``lr_gamma`` every ``lr_step`` epochs; stage 2 (after ``epochs``):
        ``stage2_lr`` decayed by ``stage2_gamma`` every epoch."""
        if epoch < self.epochs:
            return self.lr * self.lr_gamma ** (epoch // self.lr_step)
        return self.stage2_lr * self.stage2_gamma ** (epoch - self.epochs)


def planned_epochs(settings: dict) -> int:
    """Epochs a configuration (a run's ``args.json``, a job's file) plans: stage 1 plus any second stage."""
    return TrainConfig.from_json(settings).total_epochs


# --------------------------------------------------------------------------------------------------
# Reading and checking


def _kind(tp) -> tuple[type, ...]:
    """The JSON types a field of annotation ``tp`` (a string under ``from __future__ import annotations``) takes."""
    text = str(tp).replace(" | None", "")
    for name, kinds in (("list", (list,)), ("dict", (dict,)), ("bool", (bool,)), ("float", (float, int)),
                        ("int", (int,)), ("str", (str,))):
        if text.startswith(name):
            return kinds
    return (object,)


_FIELDS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def check_settings_json(data, where: str = "the training configuration") -> dict:
    """``data`` checked as (part of) a configuration: a JSON object of known settings of the right types."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object of training settings, e.g. "
                         '{"model": "asen", "dataset": "data/synth160"}')
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown setting(s) {', '.join(map(repr, unknown))}; known: "
                         + ", ".join(_FIELDS))
    for name, value in data.items():
        if value is None and "None" in str(_FIELDS[name]):
            continue
        kinds = _kind(_FIELDS[name])
        wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if name == "attributes" and not wrong:
            wrong = not all(isinstance(a, str) for a in value)
        if wrong:
            want = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
                    list: "a list of names", dict: "a JSON object"}[kinds[0]]
            raise ValueError(f"{where}: {name!r} must be {want}, got {json.dumps(value)[:40]}")
    return dict(data)


def _setting(name: str) -> str:
    return f"--{name.replace('_', '-')}" if name in _FLAGGED else f"the setting {name!r}"


def check_values(cfg: TrainConfig) -> None:
    """ValueError, one sentence naming the first setting of ``cfg`` (its preset applied: no schedule entry left
    None) whose value is out of range; the types are :func:`check_settings_json`'s, the run's size
    :func:`~profashion.train.limits.check_run_size`'s."""

    def need(name: str, ok: bool, want: str) -> None:
        if not ok:
            raise ValueError(f"{_setting(name)} must be {want}, got {json.dumps(getattr(cfg, name))[:40]}")

    def number(name: str, lo: float, hi: float, lo_open: bool = True) -> None:
        v = getattr(cfg, name)
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
        need(name, ok, f"a number {'above' if lo_open else 'from'} {lo:g} {'up ' if lo_open else ''}to {hi:g}")

    need("model", bool(cfg.model), "a model name (see `profashion models`)")
    need("dataset", bool(cfg.dataset), "a dataset folder or CSV file")
    need("image_root", cfg.image_root is None or bool(cfg.image_root), "a folder (or left out)")
    for name in ("epochs", "lr_step", "batch_size", "triplets_per_epoch", "eval_batch_size"):
        need(name, getattr(cfg, name) >= 1, "at least 1")
    for name in ("stage2_epochs", "warmup_steps"):
        need(name, getattr(cfg, name) >= 0, "0 or more")
    number("lr", 0, MAX_LR)
    number("stage2_lr", 0, MAX_LR)
    number("lr_gamma", 0, 1)
    number("stage2_gamma", 0, 1)
    number("margin", 0, MAX_MARGIN, lo_open=False)
    need("warmup_target", cfg.warmup_target in ("backbone", "embedding"), "'backbone' or 'embedding'")
    need("attributes", cfg.attributes is None or all(a.strip() for a in cfg.attributes),
         "a list of attribute names (or left out for all)")
    need("seed", 0 <= cfg.seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}")
    need("device", DEVICE.fullmatch(cfg.device) is not None, "auto, cpu, cuda, cuda:N or mps")
    need("num_workers", 0 <= cfg.num_workers <= MAX_WORKERS, f"a whole number from 0 to {MAX_WORKERS}")


def read_config(path: str | os.PathLike) -> dict:
    """The settings of a configuration file, checked (:func:`check_settings_json`); the file is read in bounded
    memory (at most :data:`MAX_CONFIG_BYTES`, nested at most ``MAX_JSON_DEPTH`` levels) and any problem is one
    sentence naming it."""
    path = Path(path)
    try:
        data = read_json(path, max_bytes=MAX_CONFIG_BYTES, max_depth=MAX_JSON_DEPTH,
                         what=f"the configuration file {path}",
                         fix='give a JSON object of training settings, e.g. {"model": "asen", "dataset": "data"}')
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    return check_settings_json(data, str(path))


# --------------------------------------------------------------------------------------------------
# Presets on offer


def preset_schedule(model: str | None, preset: str | None) -> dict:
    """The training schedule of a model's preset record (the demo preset's of asen when either is unknown)."""
    from profashion.models.base import ModelError, preset_record

    try:
        return preset_record(model or "asen", preset or "demo")["train"]
    except ModelError:
        return preset_record("asen", "demo")["train"]


def offered_presets(gpu: bool) -> list[str]:
    """The presets worth training on this hardware: demo on a CPU, demo and paper on a GPU."""
    return ["demo", "paper"] if gpu else ["demo"]

