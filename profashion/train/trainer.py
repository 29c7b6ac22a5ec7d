"""Conditioned triplet training (PROTOCOL.md), the same code on CPU, one GPU, or several under torchrun.

A run folder holds::

    RUN/args.json        the resolved training settings (what `--resume` continues with; a TrainConfig file:
                         `profashion train --config RUN/args.json --out OTHER` trains the same run again)
    RUN/metrics.jsonl    one JSON object per finished epoch (loss, validation mAP, lr, seconds)
    RUN/progress.json    where the run is now (phase, step of steps, recent loss), rewritten every few seconds
    RUN/last/            checkpoint after the last finished epoch + optimizer state (resume point)
    RUN/best/            checkpoint with the best validation overall mAP (model selection)

Every checkpoint folder is written to a temporary name and renamed into place, so a job killed at any
moment leaves the previous ``last/`` and ``best/`` intact; ``--resume`` restarts at the epoch after
``last/``. Triplets and flips of epoch ``e`` are drawn from ``(seed, e)``, so a resumed run draws what the
uninterrupted run would have drawn.

Under ``torchrun --nproc_per_node N`` (gloo on CPU, nccl on GPU) ``--batch-size`` stays the GLOBAL
batch: each rank takes its slice of every batch of the same triplet list, DDP averages the gradients,
so a step is the same mean loss over the same triplets as in one process (BatchNorm statistics are
per rank, as in ordinary DDP). Rank 0 validates and writes; the others wait.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from profashion.data.loading import SplitImages, to_model_input
from profashion.data.sampler import TripletSampler
from profashion.data.splits import DatasetError, load_dataset
from profashion.device import resolve_device
from profashion.evaluation.evaluate import evaluate_model
from profashion.io import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    loads_json,
    read_bytes_bounded,
    read_json,
)
from profashion.models.base import (
    ModelError,
    RetrievalModel,
    build_model,
    load_model,
    read_checkpoint_config,
    save_checkpoint,
)
from profashion.paths import cache_root
from profashion.train.config import TrainConfig, planned_epochs

__all__ = ["TrainConfig", "planned_epochs", "resolve_device", "train", "run_started", "triplet_loss",
           "warmup_backbone", "FrozenTrunk", "trunk_cache_dir"]

MAX_OPTIMIZER_JSON_BYTES = 16 << 20  # last/optimizer.json: the optimizer's settings and scalars (a few KB)
MAX_METRICS_BYTES = 64 << 20  # metrics.jsonl: a line of a few hundred bytes per epoch, at most MAX_EPOCHS epochs


# --------------------------------------------------------------------------------------------------
# Loss


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 0.2) -> torch.Tensor:
    """max(0, s(a, n) - s(a, p) + margin) with cosine similarity s, averaged over the batch."""
    s_ap = F.cosine_similarity(anchor, positive, dim=-1)
    s_an = F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(s_an - s_ap + margin).mean()


def warmup_backbone(model: RetrievalModel, images: SplitImages, known: np.ndarray, steps: int, batch_size: int,
                    lr: float, seed: int, device: torch.device, progress: bool = False,
                    target: str = "backbone", frozen: FrozenTrunk | None = None,
                    record: ProgressRecord | None = None) -> dict:
    """Warm the backbone up by classifying every known attribute value (then drop the classifiers).

    The published methods all start from ImageNet weights; a backbone trained from scratch with the
    conditioned triplet loss alone on many attributes collapses (every embedding alike, loss = margin)
    before it learns to see anything, because for the attributes it cannot tell apart yet the hinge is
    smallest when all similarities are equal. A few hundred steps of multi-attribute classification on
    the training labels stand in for that pre-training in the demo presets (off in the paper presets,
    which take ``pretrained=...`` instead). ``target="backbone"`` (the CNN models) trains the backbone on
    its pooled features; ``target="embedding"`` (the ViT models' demo preset, see profashion.models.vit) trains
    the whole model, each attribute's value classified from the model's own embedding under that attribute,
    so the conditioning learns too.
    ``known`` is (num_images, A) with -1 where a value is unknown. With ``frozen`` (a cache of the frozen
    trunk) the warm-up reads the cache and trains what the triplet epochs train (``target="embedding"`` only).
    ``record`` (the run's :class:`ProgressRecord`) is told every step.
    """
    backbone = model.backbone
    if target not in ("backbone", "embedding"):
        raise ValueError(f"unknown warm-up target {target!r}: 'backbone' or 'embedding'")
    if frozen is not None and target != "embedding":
        raise ModelError("a warm-up on a cached frozen trunk trains the embedding: use --warmup-target embedding")
    width = backbone.out_channels if target == "backbone" else model.config.embed_dim
    heads = torch.nn.ModuleList(torch.nn.Linear(width, n) for n in model.config.num_values)
    heads.to(device)
    trained = backbone if target == "backbone" else model
    opt = torch.optim.Adam([*(p for p in trained.parameters() if p.requires_grad), *heads.parameters()], lr=lr)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3A7]))
    fids = images.fids[(known[images.fids] >= 0).any(1)]
    trained.train()
    losses, t0 = [], time.perf_counter()
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"{target} warm-up", unit="step", leave=False, file=sys.stderr,
                  mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for _ in it:
        idx = fids[rng.integers(0, len(fids), size=batch_size)]
        flip = torch.as_tensor(rng.random(len(idx)) < 0.5)
        x = _batch_input(images, frozen, idx, flip, device)
        # a backbone may say what to classify from (ViT trunks: [CLS] and patches); else the pooled map
        if target == "embedding":  # each attribute's value from its own unit embedding (scaled: softmax needs range)
            emb = (model.embed_all_from_trunk(x) if frozen is not None else model.embed_all(x)) * 16.0
            feats = [emb[:, a] for a in range(len(heads))]
        else:
            f = model.warmup_features(x)
            feats = [f] * len(heads)
        labels = torch.as_tensor(known[idx], device=device)
        loss = sum(F.cross_entropy(h(feats[a]), labels[:, a], ignore_index=-1)
                   for a, h in enumerate(heads) if (labels[:, a] >= 0).any()) / len(heads)
        if target == "embedding":  # the model's own penalty, as in its triplet training (CSN: it consumes the norms)
            loss = loss + model.regularization()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if record is not None:
            record.step("warmup", len(losses), steps, losses)
    k = max(1, min(20, len(losses) // 5))
    return {"steps": steps, "loss_start": float(np.mean(losses[:k])), "loss_end": float(np.mean(losses[-k:])),
            "seconds": round(time.perf_counter() - t0, 2)}


# --------------------------------------------------------------------------------------------------
# Frozen-trunk fine-tuning


class FrozenTrunk:
    """Frozen-trunk training: what the frozen part of the model makes of every training image, computed once
    for each image and each orientation (the random horizontal flip), then only the rest is trained.

    A model supports it through its trunk / head split (``trunk_features`` / ``embed_from_trunk`` /
    ``embed_all_from_trunk``, with ``embed == embed_from_trunk o trunk_features``, see
    :class:`~profashion.models.base.RetrievalModel`). Its features are a SHARED part (the output of the frozen
    pretrained stages, ``shared_trunk_features``) and the model's own EXTRAS (``trunk_extras``: ProFashion's
    superpixels). The demo presets all freeze the same stages of the ImageNet EfficientNet-Lite0, so with a
    ``cache_dir`` the shared part is computed once and kept on disk for every model trained on the same images
    (under a file lock: runs started together compute it once); extras are kept under the model's own key.
    ``--frozen-trunk`` on a ViT model without a frozen stem freezes and caches its whole trunk (CCA: the tokens
    after blocks 1..L-1), so only the conditional head trains.

    Features are computed in eval mode and kept on the CPU (floating point as float16, labels as small
    integers); batches move to the training device as float32. Every process under torchrun computes or reads
    the same cache (the triplets of a rank may touch any image).
    """

    def __init__(self, model: RetrievalModel, images: SplitImages, batch_size: int, device: torch.device,
                 progress: bool = False, flips: bool = True, cache_dir: str | os.PathLike | None = None):
        self.check(model)
        t0 = time.perf_counter()
        if not model.frozen_modules():  # --frozen-trunk on a ViT: its whole trunk is frozen
            model.backbone.requires_grad_(False)
        self.fids = np.asarray(images.fids)
        self.flips = bool(flips)
        sides = 2 if self.flips else 1
        key = model.trunk_cache_key()
        paths = [None, None]
        if cache_dir is not None and key is not None:
            base = self._images_key(images)
            paths = [Path(cache_dir) / f"{_digest({'shared': key['shared'], 'images': base})}.safetensors",
                     Path(cache_dir) / f"{_digest({'extras': key['extras'], 'images': base})}.safetensors"
                     if key.get("extras") is not None else None]
        self.from_disk = []
        parts: list[list[tuple[torch.Tensor, ...]] | None] = [None, None]
        for k, (what, path) in enumerate(zip(("shared", "extras"), paths)):
            if what == "extras" and not model.has_trunk_extras():
                parts[k] = [() for _ in range(sides)]
                continue
            with _file_lock(path):  # runs started together: one computes, the others then read its file
                parts[k] = _load_parts(path, sides, len(self.fids)) if path is not None else None
                self.from_disk.append(parts[k] is not None)
                if parts[k] is None:
                    parts[k] = self._compute(model, images, batch_size, device, progress, what)
                    if path is not None:
                        _save_parts(path, parts[k])
        self.tuple = model.has_trunk_extras()
        self.features = [(*parts[0][side], *parts[1][side]) for side in range(sides)]
        nbytes = sum(t.numel() * t.element_size() for side in self.features for t in side)
        self.info = {"images": len(self.fids), "orientations": sides,
                     "feature_shape": [list(t.shape[1:]) for t in self.features[0]],
                     "megabytes": round(nbytes / 2**20, 1), "seconds": round(time.perf_counter() - t0, 2),
                     "from_disk": bool(self.from_disk) and all(self.from_disk),
                     "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    @staticmethod
    def _images_key(images: SplitImages) -> dict:
        """The images and how they were prepared: paths, sizes and modification times, the preprocessing."""
        import hashlib

        h = hashlib.sha256()
        for fid in np.asarray(images.fids):
            p = Path(images.dataset.image_path(images.split, int(fid)))
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"files": h.hexdigest(), "preprocess": images.preprocess.to_json(), "format": 2}

    def _compute(self, model: RetrievalModel, images: SplitImages, batch_size: int, device: torch.device,
                 progress: bool, what: str) -> list[tuple[torch.Tensor, ...]]:
        """``[plain, mirrored]`` tuples of the shared part or of the extras for every image."""
        was_training = model.training
        model.eval()
        sides = 2 if self.flips else 1
        chunks: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(sides)]
        it = range(0, len(self.fids), batch_size)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"caching trunk features ({what})", unit="batch", leave=False, file=sys.stderr,
                      mininterval=1.0 if sys.stderr.isatty() else 30.0)
        with torch.no_grad():
            for lo in it:
                x = to_model_input(images.get(self.fids[lo:lo + batch_size]), images.preprocess, device=device)
                if what == "shared":
                    out = [(model.shared_trunk_features(x),)]
                    if self.flips:
                        out.append((model.shared_trunk_features(x.flip(-1)),))
                else:
                    plain = tuple(model.trunk_extras(x))
                    out = [plain]
                    if self.flips:
                        mirrored = model.mirror_trunk_extras(plain)
                        out.append(tuple(mirrored) if mirrored is not None else tuple(model.trunk_extras(x.flip(-1))))
                for side in range(sides):
                    chunks[side].append(tuple(_store(t) for t in out[side]))
        model.train(was_training)
        return [tuple(torch.cat(parts) for parts in zip(*side)) for side in chunks]

    @staticmethod
    def check(model: RetrievalModel) -> None:
        """One clear error for a model without a cacheable trunk."""
        if not model.cacheable_trunk():
            raise ModelError(f"model {model.name!r} has no frozen trunk to cache: use a preset with frozen_stages "
                             "(the demo presets), a ViT model (cca1, cca2, tf-csn, tf-asen), or train without "
                             "--frozen-trunk")

    def get(self, fids: np.ndarray, device: torch.device, flip: torch.Tensor | None = None):
        """Cached features of the given image ids (mirrored where ``flip`` is true), on ``device``."""
        rows = torch.as_tensor(np.searchsorted(self.fids, fids))
        out = []
        for k, plain in enumerate(self.features[0]):
            t = plain[rows]
            if flip is not None and self.flips and bool(flip.any()):
                t[flip] = self.features[1][k][rows[flip]]
            t = t.to(device, non_blocking=True)
            out.append(t.float() if t.dtype == torch.float16 else t)
        return tuple(out) if self.tuple else out[0]


def _digest(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def _load_parts(path: Path, sides: int, count: int) -> list[tuple[torch.Tensor, ...]] | None:
    """A cache file's ``[plain, mirrored]`` tuples, or None when it is missing, damaged or of other images."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        data = load_file(str(path))
        n = int(data["__count__"].item())
        parts = [tuple(data[f"{side}.{k}"] for k in range(n)) for side in range(sides)]
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None  # recomputed (and rewritten)
    return parts if all(len(t) == count for side in parts for t in side) else None


def _save_parts(path: Path, parts: list[tuple[torch.Tensor, ...]]) -> None:
    from safetensors.torch import save_file

    data = {f"{side}.{k}": t.contiguous() for side, ts in enumerate(parts) for k, t in enumerate(ts)}
    data["__count__"] = torch.tensor(len(parts[0]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(data, str(tmp))
    except OSError:  # a full or read-only disk only costs the computation next time
        pass


@contextlib.contextmanager
def _file_lock(path: Path | None):
    """An exclusive lock on ``path`` + ``.lock`` (POSIX flock; nothing where it is unavailable or path is None)."""
    if path is None:
        yield
        return
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path.with_name(path.name + ".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _store(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return t.half() if t.is_floating_point() else t


def trunk_cache_dir() -> Path:
    """Where cached frozen-trunk features are kept: ``trunk-features`` in :func:`profashion.paths.cache_root`."""
    return cache_root() / "trunk-features"


class FrozenTrunkHead(torch.nn.Module):
    """``forward(features, attribute_ids)`` through the model's head only (what DDP wraps in frozen mode)."""

    def __init__(self, model: RetrievalModel):
        super().__init__()
        self.model = model

    def forward(self, features, attribute_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_from_trunk(features, attribute_ids)


# --------------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, resolve_device(device))
    dev = resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


# --------------------------------------------------------------------------------------------------
# Optimizer state <-> safetensors + JSON (no pickles)


def _optimizer_to_files(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}))


def _optimizer_from_files(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    meta = read_json(folder / "optimizer.json", max_bytes=MAX_OPTIMIZER_JSON_BYTES, max_depth=MAX_JSON_DEPTH,
                     what=str(folder / "optimizer.json"), fix="resume from another run, or start this one again")
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars"), dict) or "param_groups" not in meta:
        raise ModelError(f"{folder / 'optimizer.json'} is not an optimizer state (no param_groups and scalars); "
                         "resume from another run, or start this one again")
    tensors = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --------------------------------------------------------------------------------------------------
# The trainer


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (one JSON object per finished epoch, each with its ``epoch``), read
    in bounded memory; ValueError (one sentence naming the file and line) for a damaged one."""
    fix = "remove the damaged line, or start the run again in another --out"
    data = read_bytes_bounded(path, MAX_METRICS_BYTES, str(path), fix)
    history = []
    for i, ln in enumerate(data.splitlines(), start=1):
        if not ln.strip():
            continue
        h = loads_json(ln, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH, what=f"line {i} of {path}", fix=fix)
        if not isinstance(h, dict) or isinstance(h.get("epoch"), bool) or not isinstance(h.get("epoch"), int):
            raise ValueError(f"line {i} of {path} is not an epoch's record (a JSON object with its epoch); {fix}")
        history.append(h)
    return history


def _log(msg: str, d: Dist) -> None:
    if d.main:
        print(msg, file=sys.stderr, flush=True)


# What a run writes before its first checkpoint: args.json, progress.json, and the temporary files of a write or
# a checkpoint save killed half-way (atomic_write_text, save_checkpoint)
_BEFORE_FIRST_EPOCH = re.compile(r"(args|progress)\.json|\.(args\.json|progress\.json|metrics\.jsonl|last|best)\..+\.tmp")


class ProgressRecord:
    """Where a run is now, in ``RUN/progress.json`` for whoever follows it (the app's jobs): the phase
    (``caching``, ``warmup``, ``epoch``), its step of steps, the mean loss of the last 50 steps, the seconds a
    step took so far in this phase, and the warm-up's loss curve (``warmup_history``: [step, loss] pairs, at
    most ~200). Rewritten atomically at most every ``every`` seconds and at a phase's last step; a failed
    write is ignored (it is only a view)."""

    def __init__(self, path: Path | None, epochs: int, every: float = 2.0):
        self.path, self.epochs, self.every = path, epochs, every
        self._key, self._t0, self._last = None, 0.0, -math.inf
        self.warmup_history: list[list[float]] = []

    def step(self, phase: str, done: int, total: int, losses: list[float], epoch: int | None = None) -> None:
        now = time.perf_counter()
        if (phase, epoch) != self._key:
            self._key, self._t0, self._last = (phase, epoch), now - 1e-9, -math.inf
        if self.path is None or (done < total and now - self._last < self.every):
            return
        self._last = now
        loss = float(np.mean(losses[-50:]))
        if phase == "warmup":
            self.warmup_history.append([done, round(loss, 5)])
            if len(self.warmup_history) > 200:  # thinned, the last point kept
                self.warmup_history = [*self.warmup_history[:-1:2], self.warmup_history[-1]]
        self.write(phase=phase, step=done, steps=total, epoch=epoch, loss=loss,
                   seconds_per_step=round((now - self._t0) / max(done, 1), 4))

    def write(self, **fields) -> None:
        if self.path is None:
            return
        try:
            atomic_write_json(self.path, {**fields, "epochs": self.epochs, "warmup_history": self.warmup_history,
                                          "time": time.time()}, indent=None)
        except OSError:
            pass


def run_started(out: Path) -> bool:
    """Whether the run folder ``out`` holds more than a run writes before its first checkpoint, i.e. whether
    a fresh start there would overwrite work (a run stopped before its first epoch ended would not)."""
    out = Path(out)
    return out.is_dir() and any(not _BEFORE_FIRST_EPOCH.fullmatch(p.name) for p in out.iterdir())


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the run folder (``best/`` is the selected model). Every
    setting is checked first (:meth:`TrainConfig.resolved`, the device included), before anything is read or
    written; a resumed run's own settings are checked as soon as they are read."""
    if not resume:
        cfg = cfg.resolved()
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, resume, progress, d)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """What the steps of a run share: its settings, data, model and state."""

    cfg: TrainConfig
    out: Path
    d: Dist
    progress: bool
    resume: bool
    ds: object = None
    chosen: list[int] = field(default_factory=list)
    train_labels: np.ndarray | None = None
    sampler: TripletSampler | None = None
    known: np.ndarray | None = None  # (images, A) values, -1 where unknown
    has_valid: bool = False
    model: RetrievalModel | None = None
    start_epoch: int = 0
    best: float = -math.inf
    history: list[dict] = field(default_factory=list)
    images: SplitImages | None = None
    val_images: SplitImages | None = None
    frozen: FrozenTrunk | None = None
    val_trunk: FrozenTrunk | None = None
    warmup: dict | None = None
    record: ProgressRecord | None = None
    net: torch.nn.Module | None = None
    opt: torch.optim.Optimizer | None = None

    @property
    def shows_progress(self) -> bool:
        return self.progress and self.d.main


def _train(cfg: TrainConfig, resume: bool, progress: bool, d: Dist) -> Path:
    cfg, resume = _settings(cfg, resume, d)
    r = _Run(cfg, Path(cfg.out), d, progress, resume)
    _setup_data(r)
    _setup_model(r)
    _prepare_folder(r)
    r.record = ProgressRecord(r.out / "progress.json" if d.main else None, cfg.total_epochs)
    _setup_images_and_trunk(r)
    _setup_optimizer(r)
    steps = max(1, cfg.triplets_per_epoch // cfg.batch_size)
    for epoch in range(r.start_epoch, cfg.total_epochs):
        t0 = time.perf_counter()
        mean_loss, lr = _train_epoch(r, epoch, steps)
        if d.main:
            _validate_and_save(r, epoch, steps, mean_loss, lr, t0)
        if d.world > 1:
            dist.barrier()
    return r.out


# -- setup --------------------------------------------------------------------------------------------------


def _settings(cfg: TrainConfig, resume: bool, d: Dist) -> tuple[TrainConfig, bool]:
    """The run's resolved settings and whether it resumes: ``--resume`` continues with the run's own
    ``args.json`` (only the epoch count may be extended and the device changed); a run stopped before its
    first epoch ended starts again."""
    out = Path(cfg.out)
    args_path = out / "args.json"
    if resume:
        try:
            read_checkpoint_config(out / "last")  # also recovers a save killed between its renames
        except ModelError:
            pass
        restart = not (out / "last" / "config.json").is_file()  # stopped before its first epoch ended
        if restart and run_started(out):
            raise ModelError(f"nothing to resume in {out}: it has no last/ checkpoint but holds more than a run "
                             "stopped before its first epoch; choose another --out")
        if restart and not args_path.is_file():
            raise ModelError(f"nothing to resume in {out}: it has no last/ checkpoint; start without --resume")
        saved = TrainConfig.load(args_path)
        # the run's own settings win; only the epoch count may be extended and the device changed
        saved.epochs = cfg.epochs if cfg.epochs is not None else saved.epochs
        saved.device = cfg.device
        saved.out = str(out)
        cfg = saved
        if restart:
            _log(f"{out} was stopped before its first epoch ended: starting it again from epoch 1 with its saved "
                 "settings", d)
            resume = False
    elif run_started(out):
        raise ModelError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    return cfg.resolved(), resume


def _setup_data(r: _Run) -> None:
    """The dataset, the trained attributes, the triplet sampler (no image decoded yet)."""
    cfg = r.cfg
    r.ds = ds = load_dataset(cfg.dataset, cfg.image_root)
    train_split = ds.split("train")
    if len(train_split.labels) == 0:
        raise DatasetError(f"{cfg.dataset}: the train split has no labels (label_train.txt)")
    schema = ds.schema
    r.train_labels = train_split.labels
    r.chosen = list(range(schema.num_attributes))
    if cfg.attributes:
        r.chosen = sorted({schema.attribute_index(a) for a in cfg.attributes})
        r.train_labels = r.train_labels[np.isin(r.train_labels[:, 1], r.chosen)]
        _log("training on " + ", ".join(schema.names[a] for a in r.chosen) + " only", r.d)
    r.sampler = TripletSampler(r.train_labels, schema.num_values)
    skipped = [a for a in r.sampler.skipped_attributes if a in r.chosen]
    if skipped:
        _log("attributes without a usable (anchor, positive, negative) triple are not trained: "
             + ", ".join(schema.names[a] for a in skipped), r.d)
    valid = ds.splits.get("valid")
    r.has_valid = valid is not None and valid.queries is not None and len(valid.queries) > 0  # else: lowest loss
    r.known = train_split.known_values(schema.num_attributes)


def _setup_model(r: _Run) -> None:
    """A fresh model, or the resumed run's ``last/`` with its epoch, best score and history."""
    cfg, out = r.cfg, r.out
    torch.manual_seed(cfg.seed)
    if r.resume:
        r.model = load_model(out / "last", device="cpu", expect_model=cfg.model)
        info = read_checkpoint_config(out / "last")["trainer"]
        r.start_epoch, r.best = int(info["epoch"]) + 1, float(info["best"])
        if (out / "metrics.jsonl").is_file():
            r.history = [h for h in read_metrics(out / "metrics.jsonl") if h["epoch"] < r.start_epoch]
    else:
        r.model = build_model(cfg.model, preset=cfg.preset, num_values=r.ds.schema.num_values, **cfg.model_overrides)
    r.model.to(r.d.device).train()
    if cfg.frozen_trunk:
        FrozenTrunk.check(r.model)  # before any image is decoded


def _prepare_folder(r: _Run) -> None:
    """The run folder without the leftovers of writes killed half-way, and the run's ``args.json``."""
    if not r.d.main:
        return
    r.out.mkdir(parents=True, exist_ok=True)
    for p in r.out.iterdir():  # leftovers of writes killed half-way: nothing else writes into the folder
        if p.name != "args.json" and _BEFORE_FIRST_EPOCH.fullmatch(p.name):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    r.cfg.save(r.out / "args.json")


def _setup_images_and_trunk(r: _Run) -> None:
    """The decoded training (and validation) images, the frozen trunk's cache, and the warm-up."""
    cfg, d, model, schema = r.cfg, r.d, r.model, r.ds.schema
    pre = model.preprocess
    r.record.write(phase="caching", images=int(len(np.unique(r.train_labels[:, 0]))))
    r.images = SplitImages(r.ds, "train", pre, fids=np.unique(r.train_labels[:, 0]), progress=r.shows_progress)
    if r.has_valid and d.main:
        v = r.ds.split("valid")
        r.val_images = SplitImages(r.ds, "valid", pre, fids=np.concatenate([v.queries[:, 0], v.candidates[:, 0]]),
                                   progress=r.shows_progress)
    # a model with frozen pretrained stages always trains from their cache; --frozen-trunk on a ViT model
    # freezes its whole trunk after the warm-up (the warm-up trains it)
    cache_first = model.cacheable_trunk() and bool(model.frozen_modules())
    if cache_first:  # shared on disk by every run whose frozen stages and images are the same
        r.frozen = FrozenTrunk(model, r.images, cfg.eval_batch_size, d.device, progress=r.shows_progress,
                               cache_dir=trunk_cache_dir())
    if not r.resume and cfg.warmup_steps:
        # every rank runs the same seeded warm-up (DDP then starts from identical weights anyway)
        trained = r.known.copy()
        trained[:, np.setdiff1d(np.arange(schema.num_attributes), r.chosen)] = -1  # warm up on what is trained
        w = r.warmup = warmup_backbone(model, r.images, trained, cfg.warmup_steps, cfg.batch_size, cfg.lr, cfg.seed,
                                       d.device, progress=r.shows_progress, target=cfg.warmup_target, frozen=r.frozen,
                                       record=r.record)
        _log(f"{cfg.warmup_target} warm-up: {w['steps']} steps, classification loss {w['loss_start']:.3f} -> "
             f"{w['loss_end']:.3f} in {w['seconds']:.0f}s", d)
    if cfg.frozen_trunk and r.frozen is None:
        r.frozen = FrozenTrunk(model, r.images, cfg.eval_batch_size, d.device, progress=r.shows_progress)
    if cache_first and r.val_images is not None:  # validation from the cache too (one orientation)
        r.val_trunk = FrozenTrunk(model, r.val_images, cfg.eval_batch_size, d.device, progress=r.shows_progress,
                                  flips=False, cache_dir=trunk_cache_dir())
    f = r.frozen
    if f is not None:
        _log(f"frozen trunk: cached {f.info['images']} images x {f.info['orientations']} orientations x "
             f"{f.info['feature_shape']} ({f.info['megabytes']:.0f} MB) in {f.info['seconds']:.0f}s"
             f"{' (read from disk)' if f.info.get('from_disk') else ''}; "
             f"{f.info['trainable_parameters']:,} parameters trained", d)


def _setup_optimizer(r: _Run) -> None:
    """The trained module (the head alone on a frozen trunk; DDP-wrapped under torchrun) and its optimizer."""
    cfg, d, model = r.cfg, r.d, r.model
    net: torch.nn.Module = model if r.frozen is None else FrozenTrunkHead(model)
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=model.find_unused_parameters)
    r.net = net
    r.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    if r.resume:
        _optimizer_from_files(r.opt, r.out / "last")
    for g in r.opt.param_groups:
        g["lr"] = cfg.lr_at(r.start_epoch)
    if cfg.batch_size % d.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({d.world})")


def _batch_input(images: SplitImages, frozen: FrozenTrunk | None, fids: np.ndarray, flip: torch.Tensor,
                 device: torch.device):
    """The model's input for ``fids`` (mirrored where ``flip``): cached trunk features, or decoded images."""
    if frozen is not None:
        return frozen.get(fids, device, flip)
    return to_model_input(images.get(fids), images.preprocess, flip=flip, device=device)


# -- an epoch -----------------------------------------------------------------------------------------------


def _train_epoch(r: _Run, epoch: int, steps: int) -> tuple[float, float]:
    """One epoch of triplets drawn from ``(seed, epoch)``; (mean loss over every process, learning rate)."""
    cfg, d, model = r.cfg, r.d, r.model
    lr = cfg.lr_at(epoch)
    for g in r.opt.param_groups:
        g["lr"] = lr
    per_rank = cfg.batch_size // d.world
    triplets = r.sampler.sample(steps * cfg.batch_size, cfg.seed, epoch)
    flips = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    flip_all = torch.rand(len(triplets), 3, generator=flips) < 0.5
    model.train()
    losses = []
    it = range(steps)
    bar = None
    if r.shows_progress:
        from tqdm import tqdm

        bar = tqdm(it, desc=f"epoch {epoch + 1}/{cfg.total_epochs}", unit="step", leave=False, file=sys.stderr,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        it = bar
    for s in it:
        lo = s * cfg.batch_size + d.rank * per_rank
        rows = triplets[lo:lo + per_rank]
        fl = flip_all[lo:lo + per_rank]
        fids = np.concatenate([rows[:, 0], rows[:, 1], rows[:, 2]])
        x = _batch_input(r.images, r.frozen, fids, torch.cat([fl[:, 0], fl[:, 1], fl[:, 2]]), d.device)
        attrs = torch.as_tensor(np.tile(rows[:, 3], 3), device=d.device)
        a, p, n = r.net(x, attrs).split(len(rows))
        loss = triplet_loss(a, p, n, cfg.margin)
        # the method's own penalty (CSN) and batch-level losses (ProFashion's clusters), which get each row's
        # value under its attribute: anchors, positives, then negatives
        values = torch.as_tensor(r.known[fids, np.tile(rows[:, 3], 3)], device=d.device)
        loss = loss + model.regularization() + model.auxiliary_loss(values)
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        r.opt.step()
        losses.append(float(loss.detach()))
        r.record.step("epoch", s + 1, steps, losses, epoch)
        if bar is not None and s % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    if bar is not None:
        bar.close()
    mean_loss = float(np.mean(losses))
    if d.world > 1:
        t = torch.tensor([mean_loss], device=d.device)
        dist.all_reduce(t)
        mean_loss = float(t) / d.world
    return mean_loss, lr


def _validate_and_save(r: _Run, epoch: int, steps: int, mean_loss: float, lr: float, t0: float) -> None:
    """Rank 0 after an epoch: validation mAP (else the loss) selects ``best/``; ``last/`` and metrics.jsonl."""
    cfg, out, schema = r.cfg, r.out, r.ds.schema
    record = {"epoch": epoch, "stage": 1 if epoch < cfg.epochs else 2, "loss": mean_loss, "lr": lr,
              "triplets": steps * cfg.batch_size, "processes": r.d.world}
    if r.warmup is not None and epoch == r.start_epoch:
        record["warmup"] = r.warmup
    if r.frozen is not None and epoch == r.start_epoch:
        record["frozen_trunk"] = r.frozen.info
    if r.val_images is not None:
        r.record.write(phase="validating", epoch=epoch)
        res = evaluate_model(r.model, r.ds, "valid", cfg.eval_batch_size, images=r.val_images, trunk=r.val_trunk)
        record["val_map"] = res.overall
        record["val_per_attribute"] = res.to_json(schema, per_query=False)["per_attribute"]
        score = res.overall
    else:
        score = -mean_loss  # no validation split: keep the lowest training loss
    record["seconds"] = round(time.perf_counter() - t0, 2)
    improved = score > r.best
    if improved:
        r.best = score
    record["best"] = improved
    state = {"trainer": {"epoch": epoch, "best": r.best, "score": score},
             "dataset": {"name": r.ds.name, "attributes": list(schema.names),
                         "values": [list(v) for v in schema.values]}}
    if improved:
        save_checkpoint(r.model, out / "best", extra=state)
    ckpt = save_checkpoint(r.model, out / "last", extra=state,
                           extra_writer=lambda folder: _optimizer_to_files(r.opt, folder))
    assert ckpt.exists()
    r.history.append(record)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in r.history))
    val = f"  val mAP {record['val_map']:.2f}" if "val_map" in record else ""
    _log(f"epoch {epoch + 1}/{cfg.total_epochs}  loss {mean_loss:.4f}{val}  lr {lr:.2e}  "
         f"{record['seconds']:.1f}s{'  *best*' if improved else ''}", r.d)
