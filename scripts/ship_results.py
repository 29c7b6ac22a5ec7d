"""Measure every checkpoint of a folder on one dataset split and ship the numbers beside the checkpoints.

    python scripts/ship_results.py --checkpoints checkpoints --dataset data/synth160-test3000 --split test \\
        [--recipe "how to regenerate the dataset"] [--force] [--quiet]

Every sub-folder of ``--checkpoints`` holding ``config.json`` and ``model.safetensors`` is a model, named by its
folder (as the app names it). Each is evaluated with the protocol of docs/PROTOCOL.md on the query/candidate
files of ``--split`` (any layout, any dataset folder in the split format), beside random embeddings (seed 0),
and the numbers go to ``<checkpoints>/results.json``, written atomically (a reader never sees half a file).
The app's Results tab shows these numbers at once for every loaded checkpoint whose weights fingerprint
(:func:`~profashion.retrieval.index.checkpoint_fingerprint`) matches the one recorded here, instead of
measuring it on the first click.

The file records, per model: its method, weights fingerprint, overall and per-attribute mAP (percent), the
95% bootstrap intervals (overall and per attribute) and the seconds it took; once: the dataset (folder name,
name, split, eval layout, images, queries per attribute, the split's fingerprint, the generator's or
importer's provenance from meta.json and the command that regenerates it), the random row and how the
intervals were computed. A synthetic dataset's regeneration command is worked out from its meta.json;
another dataset's is ``--recipe``.

results.json has no checksum of its own, so its sha256 is recorded in the checkpoints' ``manifest.json`` (the
entry ``"results.json"``, beside the models' provenance that ``scripts/demo_checkpoints.py`` writes there, under the
same lock) each time it is written: the app shows shipped numbers only when the file's sha256 is the recorded one,
and measures the models on demand otherwise.

A model already in the file with the same fingerprint on the same split is kept as it is (``--force``
measures it again); a folder that cannot be evaluated on the dataset (other attributes, corrupt files) is
listed under ``skipped`` with the reason, and the others are measured. Run it under ``nice`` beside a
training: it uses the CPU threads torch is given (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without an installed package too

from profashion.data.loading import SplitImages  # noqa: E402
from profashion.data.splits import DatasetError, SplitDataset, load_dataset  # noqa: E402
from profashion.evaluation.evaluate import evaluate_model  # noqa: E402
from profashion.evaluation.retrieval_map import MAPResult, eval_rows, evaluate_random  # noqa: E402
from profashion.io import atomic_write_json, atomic_write_text  # noqa: E402
from profashion.models.base import ModelError, load_model, read_checkpoint_config  # noqa: E402
from profashion.retrieval.index import GalleryIndexError, checkpoint_fingerprint  # noqa: E402
from profashion.train.trainer import FrozenTrunk  # noqa: E402

FORMAT = "profashion-results/1"
RESULTS_NAME = "results.json"
MANIFEST_NAME = "manifest.json"  # its entry RESULTS_NAME records results.json's sha256 (read by the app's Results tab)


def checkpoint_folders(root: Path) -> list[Path]:
    """The model folders of ``root`` (config.json + model.safetensors), by name, as the app discovers them."""
    if not root.is_dir():
        raise SystemExit(f"ship_results: {root} is not a folder")
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and (d / "config.json").is_file() and (d / "model.safetensors").is_file())


def read_meta(root: Path) -> dict:
    """The dataset folder's own meta.json (empty for the official layout, whose meta.json is shared)."""
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def regenerate_command(ds: SplitDataset, meta: dict, folder: str) -> str | None:
    """The ``profashion generate synth`` command that writes this synthetic dataset again, byte for byte (from
    meta.json's GENERATOR and the split sizes), or None for a dataset that was not generated."""
    gen = meta.get("GENERATOR")
    if not isinstance(gen, dict):
        return None
    n = {s: ds.split(s).num_images for s in ("train", "valid", "test")}
    cmd = (f"profashion generate synth --out data/{folder} --train {n['train']} --valid {n['valid']} "
           f"--test {n['test']} --size {gen['size']} --seed {gen['seed']}")
    if ds.eval_layout != "asen":
        cmd += f" --eval-layout {ds.eval_layout}"
    return cmd + f"  # generator version {gen.get('version')}"


def numbers(result: MAPResult, ds: SplitDataset) -> dict:
    """The shipped part of a result: overall, per attribute, queries and intervals (no per-query rows)."""
    js = result.to_json(ds.schema, per_query=False)
    keep = ("overall", "per_attribute", "n_queries", "no_queries", "ci95", "per_attribute_ci95")
    out = {k: js[k] for k in keep if k in js}
    out["overall"] = round(out["overall"], 4)
    out["per_attribute"] = {a: round(v, 4) for a, v in out["per_attribute"].items()}
    return out


def read_previous(path: Path) -> dict:
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prev if isinstance(prev, dict) and prev.get("format") == FORMAT else {}


def dataset_record(ds: SplitDataset, root: Path, split: str, random: MAPResult, recipe: str | None) -> dict:
    js = random.to_json(ds.schema, per_query=False)
    qs, _ = eval_rows(ds, split)
    meta = read_meta(root)
    source = {k: meta[k] for k in ("GENERATOR", "IMPORT") if k in meta}
    return {
        "folder": root.name, "name": ds.name, "split": split, "layout": ds.eval_layout,
        "images": int(ds.split(split).num_images), "queries": int(len(qs)), "n_queries": js["n_queries"],
        "split_fingerprint": random.fingerprint, "source": source,
        "recipe": recipe or regenerate_command(ds, meta, root.name),
    }


def measure(ckpt: Path, ds: SplitDataset, split: str, images: dict, log, trunk_cache: Path | None = None) -> dict:
    """One checkpoint's shipped numbers on ``split`` (images decoded once per preprocess and shared; with
    ``trunk_cache``, the frozen ImageNet trunk's features too, as the trainer's validation computes them)."""
    t0 = time.perf_counter()
    cfg = read_checkpoint_config(ckpt)
    fp = checkpoint_fingerprint(ckpt)
    model = load_model(ckpt, device="cpu")
    pre = model.preprocess
    key = (pre.resize, pre.crop)
    if key not in images:
        qs, cs = eval_rows(ds, split)
        images[key] = SplitImages(ds, split, pre, fids=np.concatenate([qs[:, 0], cs[:, 0]]))
    trunk = None
    if trunk_cache is not None and model.cacheable_trunk():
        trunk = FrozenTrunk(model, images[key], 64, torch.device("cpu"), flips=False, cache_dir=trunk_cache)
    r = evaluate_model(model, ds, split=split, images=images[key], trunk=trunk)
    out = {"model": str(cfg.get("model", "?")), "fingerprint": fp, **numbers(r, ds),
           "split_fingerprint": r.fingerprint, "seconds": round(time.perf_counter() - t0, 1),
           "embedded": "from the frozen trunk's cached features (float16)" if trunk is not None else "from the images"}
    log(f"{ckpt.name}: overall {out['overall']:.2f} [{out['ci95'][0]:.1f}, {out['ci95'][1]:.1f}] "
        f"in {out['seconds']} s")
    return out


def ship(checkpoints: Path, dataset: Path, split: str, recipe: str | None = None, force: bool = False,
         log=print, trunk_cache: Path | None = None) -> dict:
    """Measure every checkpoint folder of ``checkpoints`` on ``dataset``'s ``split`` and write
    ``<checkpoints>/results.json`` (again after each model: an interrupted run keeps what it measured, and the
    next run goes on from there); returns what was written."""
    ds = load_dataset(dataset)
    random = evaluate_random(ds, split=split, seed=0)
    path = checkpoints / RESULTS_NAME
    prev = read_previous(path)
    prev_models = prev.get("models", {}) if prev.get("dataset", {}).get("split_fingerprint") == random.fingerprint \
        else {}
    iv = random.intervals()
    payload = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python scripts/ship_results.py", "--checkpoints", shlex.quote(str(checkpoints)),
                             "--dataset", shlex.quote(str(dataset)), "--split", split]),
        "protocol": "docs/PROTOCOL.md: retrieval mAP (%), each query ranks the candidates of its attribute",
        "bootstrap": {"method": "percentile bootstrap over queries, resampled within each attribute",
                      "resamples": iv.n_resamples, "seed": iv.seed, "level": iv.level},
        "dataset": dataset_record(ds, dataset, split, random, recipe),
        "random": {"seed": 0, **numbers(random, ds)},
        "models": {},
    }
    folders = checkpoint_folders(checkpoints)
    # what is still valid from the last run first, so that an interruption loses nothing measured
    for ckpt in folders:
        old = prev_models.get(ckpt.name)
        if not force and old and old.get("fingerprint") == _fingerprint_or_none(ckpt):
            payload["models"][ckpt.name] = old
            log(f"{ckpt.name}: unchanged since the last run, kept")
    images: dict = {}
    for ckpt in folders:
        if ckpt.name in payload["models"]:
            continue
        try:
            payload["models"][ckpt.name] = measure(ckpt, ds, split, images, log, trunk_cache)
        except (ModelError, GalleryIndexError, DatasetError, RuntimeError, OSError, KeyError, ValueError) as exc:
            payload.setdefault("skipped", {})[ckpt.name] = f"cannot be evaluated on {dataset.name}: {exc}"
            log(f"{ckpt.name}: skipped: {exc}")
        _write(path, payload, folders)
    _write(path, payload, folders)
    return payload


def _fingerprint_or_none(ckpt: Path) -> str | None:
    try:
        return checkpoint_fingerprint(ckpt)
    except (GalleryIndexError, OSError):
        return None


def _write(path: Path, payload: dict, folders: list[Path]) -> None:
    """results.json with the models in the folders' order (the order the app lists them in), and its sha256 in the
    manifest beside it (:func:`record_digest`)."""
    order = [f.name for f in folders]
    payload["models"] = {n: payload["models"][n] for n in order if n in payload["models"]}
    record_digest(path, json.dumps(payload, indent=2) + "\n")


def record_digest(path: Path, text: str | None = None) -> dict:
    """Write ``text`` to results.json at ``path`` (None: keep the file as it is) and set the ``"results.json"`` entry
    of the manifest beside it to the file's sha256 and size. Both happen under the lock ``scripts/demo_checkpoints.py``
    takes to update the manifest (re-read first, rewritten atomically), so its models' entries are kept and two runs
    never leave the digest of one beside the file of the other."""
    manifest_path = path.parent / MANIFEST_NAME
    with open(path.parent / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if text is not None:
            atomic_write_text(path, text)
        written = path.read_bytes()
        entry = {"sha256": hashlib.sha256(written).hexdigest(), "bytes": len(written)}
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                manifest = {}
        except (OSError, ValueError):
            manifest = {}
        manifest[RESULTS_NAME] = entry
        atomic_write_json(manifest_path, manifest)
    return entry


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints",
                   help="folder of checkpoint folders; results.json is written there")
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder in the split format")
    p.add_argument("--split", default="test", help="the split whose query/candidate files are measured")
    p.add_argument("--recipe", help="how to regenerate the dataset (worked out for a synthetic one)")
    p.add_argument("--force", action="store_true", help="measure again the models already in results.json")
    p.add_argument("--trunk-cache", type=Path, default=REPO / "runs" / "ship-results-trunk",
                   help="where the frozen trunk's features of the split are kept, computed once for every model "
                        "that freezes the same trunk (the demo presets); 'none' embeds every model from the images")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    log = (lambda msg: None) if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        trunk = None if str(a.trunk_cache).lower() == "none" else a.trunk_cache
        out = ship(a.checkpoints, a.dataset, a.split, recipe=a.recipe, force=a.force, log=log, trunk_cache=trunk)
    except DatasetError as exc:
        print(f"ship_results: {exc}", file=sys.stderr)
        return 2
    d = out["dataset"]
    log(f"wrote {a.checkpoints / RESULTS_NAME}: {len(out['models'])} models on {d['folder']} {d['split']} "
        f"({d['queries']} queries, {min(d['n_queries'].values())}-{max(d['n_queries'].values())} per attribute)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
