"""``make checkpoints``: train every registered model with its demo preset and ship its best checkpoint.

    python scripts/demo_checkpoints.py [--models a,b] [--resume] [--out checkpoints]
        [--data data/synth160] [--runs runs/demo-checkpoints] [--epochs N --triplets-per-epoch N ...]
    python scripts/demo_checkpoints.py --products [--resume] ...   # the real-photo gallery's checkpoints

With ``--products`` the training set is the real-photo catalogue's first 12,000 rows (``data/products12k``,
imported from ../shared/data when missing, the all-attributes layout), the images 96 px, the runs in
``runs/products12k`` and the checkpoints installed into ``checkpoints/products/`` (the app's second gallery,
``galleries/products``, is the test split of that import: ``scripts/make_gallery.py``).

1. generates the synthetic training set when it is missing (``data/synth160``: the gallery's generator,
   6000/800/2000 images at 160 px, seed 0, as in the README);
2. computes the frozen trunk's features of the training images once, with every CPU thread (the demo presets
   all freeze the same ImageNet EfficientNet-Lite0 stages and read the same cache, see
   :class:`profashion.train.trainer.FrozenTrunk`);
3. trains each model (``available_models()`` unless ``--models``) in its own process (a crash of one does not
   stop the others): its training configuration (the demo preset, the schedule options below) is written to
   ``<runs>/<model>.train.json`` and trained with ``profashion train --config <runs>/<model>.train.json --out
   <runs>/<model>``; with ``--resume`` an unfinished run continues after its last finished epoch and a finished
   one is not trained again;
4. copies each run's ``best/`` into ``<out>/<model>/`` atomically (a temporary folder renamed into place:
   the app never sees half a checkpoint), prints the time per model, and records the provenance in
   ``<out>/manifest.json`` (model, command, seconds, validation mAP, epochs, dataset), rewritten atomically.
   The same manifest's ``"results.json"`` entry is the sha256 of the numbers shipped beside the checkpoints
   (written by ``scripts/ship_results.py`` under the same lock, kept here as it is): the app shows those numbers
   only while the file matches it.

``--jobs N`` trains N models at a time, each process with its share of the CPU threads (on 2 cores,
two one-thread runs finish about 15% sooner than one two-thread run after the other); each finished
model is installed as soon as it is done, and the manifest is updated under a lock, re-read first, so
concurrent invocations never lose each other's entries.

The schedule options (``--epochs``, ``--triplets-per-epoch``, ``--batch-size``, ``--warmup-steps``,
``--model-config``) override the preset, e.g. for a quick check of the whole pipeline. The repository's
folders (the defaults of ``--out``, ``--data``, ``--runs``) are worked out here, from this file's place.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without an installed package too

from profashion.io import atomic_folder, atomic_write_json  # noqa: E402
from profashion.train.config import TrainConfig, planned_epochs  # noqa: E402
from profashion.train.trainer import run_started  # noqa: E402

SYNTH = {"train": 6000, "valid": 800, "test": 2000, "size": 160, "seed": 0}


def _portable(text: str) -> str:
    """Paths inside the repository written relative to it, so the shipped manifest reads the same anywhere."""
    return text.replace(str(REPO.resolve()) + "/", "")


def ensure_dataset(root: Path) -> Path:
    from profashion.data.synth import generate_synth

    if (root / "meta.json").is_file():
        return root
    t0 = time.perf_counter()
    print(f"generating the synthetic training set in {root} ({SYNTH['train']}/{SYNTH['valid']}/{SYNTH['test']} "
          f"images, {SYNTH['size']} px, seed {SYNTH['seed']})", flush=True)
    generate_synth(root, SYNTH["train"], SYNTH["valid"], SYNTH["test"], size=SYNTH["size"], seed=SYNTH["seed"])
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    return root


PRODUCTS = {  # the real-photo set: the first 12,000 rows of the catalogue, imported as data/products12k
    "csv": REPO.parent / "shared" / "data" / "fashion-product-small" / "labels.csv", "rows": 12000,
    "attributes": ["masterCategory", "subCategory", "articleType", "baseColour", "usage", "gender", "season"],
    "model_config": {"image_size": 96, "resize": 96},  # the photos are 60x80
}


def ensure_products(root: Path) -> Path:
    """The real-photo training set (``--products``): imported from ../shared/data when missing (its first
    ``PRODUCTS["rows"]`` rows, the all-attributes evaluation layout, seed 0)."""
    from profashion.data.csv_import import import_csv
    from profashion.io import atomic_write_text

    if (root / "meta.json").is_file():
        return root
    src = PRODUCTS["csv"]
    if not src.is_file():
        raise SystemExit(f"error: the catalogue {src} is missing: --products needs ../shared/data beside the repository")
    lines = src.read_text().splitlines(keepends=True)
    csv = root.parent / f"{root.name}.csv"
    atomic_write_text(csv, "".join(lines[:PRODUCTS["rows"] + 1]))
    print(f"importing {PRODUCTS['rows']} catalogue rows into {root}", flush=True)
    import_csv(csv, src.parent, PRODUCTS["attributes"], root, seed=0, eval_layout="all-attributes")
    return root


def _run_state(run: Path) -> tuple[int, int | None]:
    """(epochs finished, epochs planned) of a run folder."""
    try:
        done = sum(1 for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip())
    except OSError:
        done = 0
    try:
        total = planned_epochs(json.loads((run / "args.json").read_text()))
    except (OSError, ValueError, KeyError):
        total = None
    return done, total


def warm_trunk_cache(data: Path, models: list[str], overrides: dict | None = None) -> float:
    """Compute the shared frozen-trunk cache of the training images (all threads) before the parallel runs,
    which then read it; returns the seconds it took (about 0 when it is already on disk)."""
    import numpy as np
    import torch

    from profashion.data.loading import SplitImages
    from profashion.data.splits import load_dataset
    from profashion.models.base import build_model
    from profashion.train.trainer import FrozenTrunk, trunk_cache_dir

    t0 = time.perf_counter()
    ds = load_dataset(data)
    fids = np.unique(ds.split("train").labels[:, 0])
    seen = set()
    for name in models:
        model = build_model(name, "demo", ds.schema.num_values, **(overrides or {}))
        key = model.trunk_cache_key()
        ident = json.dumps({"shared": key and key["shared"], "preprocess": model.preprocess.to_json()})
        if key is None or ident in seen:
            continue
        seen.add(ident)
        images = SplitImages(ds, "train", model.preprocess, fids=fids, progress=True)
        model.has_trunk_extras = lambda: False  # the shared part only: a model's extras come with its run
        cache = FrozenTrunk(model, images, 256, torch.device("cpu"), progress=True, cache_dir=trunk_cache_dir())
        print(f"trunk cache of {name}'s demo preset: {cache.info['images']} images x {cache.info['orientations']} "
              f"orientations, {cache.info['megabytes']:.0f} MB, {cache.info['seconds']:.0f}s"
              f"{' (read from disk)' if cache.info['from_disk'] else ''}", flush=True)
    return time.perf_counter() - t0


def config_path(run: Path) -> Path:
    """Where the training configuration of the run folder ``run`` is written: beside it (a file inside a fresh
    run folder would count as a started run)."""
    return run.parent / f"{run.name}.train.json"


def train_one(model: str, data: Path, run: Path, settings: dict, resume: bool,
              threads: int | None = None, quiet: bool = False) -> tuple[list[str], float]:
    """Train ``model`` into ``run`` with the demo preset overridden by ``settings`` (TrainConfig fields: epochs,
    model_overrides, ...), in a subprocess (``threads`` CPU threads when given); returns the command and the
    seconds it took."""
    cfg = TrainConfig.from_json({"model": model, "dataset": str(data), "preset": "demo", "out": str(run),
                                 **settings})
    cmd = [sys.executable, "-m", "profashion.cli", "train", "--config", str(config_path(run)), "--out", str(run),
           *(["--quiet"] if quiet else [])]
    if run_started(run):  # a run stopped before its first epoch ended is simply started again
        if not resume:
            raise SystemExit(f"error: {run} already holds a run; pass --resume to continue it or remove it")
        done, total = _run_state(run)
        if total is not None and done >= total and (run / "best" / "config.json").is_file():
            print(f"{model}: its run in {run} has finished ({done} epochs); not training it again", flush=True)
            return cmd, 0.0
        if (run / "last" / "config.json").is_file():
            cmd.append("--resume")
        else:
            shutil.rmtree(run)  # no epoch finished: start over
    cfg.save(config_path(run))
    print(f"{model}: $ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    env = None
    if threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    rc = subprocess.call(cmd, cwd=str(REPO), env=env)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"training {model} failed (exit code {rc}) after {seconds:.0f}s")
    return cmd, seconds


def install(best: Path, dest: Path) -> None:
    """Copy ``best`` to ``dest`` atomically: a temporary sibling folder renamed into place."""
    with atomic_folder(dest) as tmp:
        for f in best.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def update_manifest(path: Path, model: str, entry_for) -> dict:
    """Set ``manifest[model] = entry_for(previous entry)`` in ``path``: re-read and rewritten atomically under
    an exclusive lock, so entries written meanwhile (another model, another invocation, the sha256 of results.json
    that ``scripts/ship_results.py`` records under the same lock) are kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest, dict):
                manifest = {}
        except (OSError, ValueError):
            manifest = {}
        manifest[model] = entry_for(manifest.get(model, {}))
        atomic_write_json(path, manifest)
        return manifest[model]


def main(argv: list[str] | None = None) -> int:
    from profashion.models.base import available_models, read_checkpoint_config

    p = argparse.ArgumentParser(prog="python scripts/demo_checkpoints.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", help="comma-separated models (default: every registered model)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs, skip finished ones")
    p.add_argument("--out", default=str(REPO / "checkpoints"), help="checkpoints root (default: checkpoints/)")
    p.add_argument("--data", default=str(REPO / "data" / "synth160"), help="training set (generated when missing)")
    p.add_argument("--runs", default=str(REPO / "runs" / "demo-checkpoints"), help="where the runs are trained")
    p.add_argument("--jobs", type=int, default=1, help="train this many models at a time (threads are split)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--triplets-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--model-config", help="JSON overrides of the model preset")
    p.add_argument("--products", action="store_true",
                   help="the real-photo set instead: --data data/products12k (imported from ../shared/data when "
                        "missing), --runs runs/products12k, --out checkpoints/products, 96 px")
    args = p.parse_args(argv)
    if args.products:
        args.data = args.data if args.data != p.get_default("data") else str(REPO / "data" / "products12k")
        args.runs = args.runs if args.runs != p.get_default("runs") else str(REPO / "runs" / "products12k")
        args.out = args.out if args.out != p.get_default("out") else str(REPO / "checkpoints" / "products")
        args.model_config = args.model_config or json.dumps(PRODUCTS["model_config"])

    known = available_models()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else known
    unknown = [m for m in models if m not in known]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; available models: {', '.join(known)}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = json.loads(args.model_config) if args.model_config else {}
        if not isinstance(overrides, dict):
            raise ValueError
    except ValueError:
        print(f"error: --model-config is not a JSON object: {args.model_config}", file=sys.stderr)
        return 2
    settings = {k: getattr(args, k) for k in ("epochs", "triplets_per_epoch", "batch_size", "warmup_steps")
                if getattr(args, k) is not None}
    if overrides:
        settings["model_overrides"] = overrides
    data = ensure_products(Path(args.data)) if args.products else ensure_dataset(Path(args.data))
    cache_seconds = warm_trunk_cache(data, models, overrides)
    out, runs = Path(args.out), Path(args.runs)
    manifest_path = out / "manifest.json"
    jobs = min(args.jobs, len(models))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    failed, times = [], {}
    print_lock = threading.Lock()

    def finish(model: str, cmd: list[str], seconds: float) -> None:
        run = runs / model
        best = run / "best"
        info = read_checkpoint_config(best).get("trainer", {})
        install(best, out / model)
        done, _ = _run_state(run)
        command = _portable(shlex.join(["python", *cmd[1:]]))
        try:  # the training configuration the command read, as shipped provenance
            config = json.loads(_portable(config_path(run).read_text()))
        except (OSError, ValueError):
            config = None

        def entry(previous: dict) -> dict:
            return {
                "model": model, "command": command if seconds or not previous else previous.get("command"),
                "config": config if seconds or not previous else previous.get("config"),
                "dataset": _portable(str(data)), "run": _portable(str(run)),
                "seconds": round(seconds, 1) if seconds else previous.get("seconds"),
                "minutes": round(seconds / 60, 1) if seconds else previous.get("minutes"),
                # computed once before the runs and shared by them (not in "seconds")
                "trunk_cache_seconds": round(cache_seconds, 1) if seconds else previous.get("trunk_cache_seconds"),
                "threads": threads if seconds else previous.get("threads"),
                "val_map": info.get("score") if isinstance(info.get("score"), (int, float)) else None,
                "best_epoch": info.get("epoch"), "epochs": done, "checkpoint": _portable(str(out / model)),
                "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }

        vm = update_manifest(manifest_path, model, entry)["val_map"]
        times[model] = seconds
        with print_lock:
            print(f"{model}: {seconds:.0f}s, best val mAP {vm:.2f}" if vm is not None else f"{model}: {seconds:.0f}s",
                  f"-> {out / model}", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        quiet = jobs > 1  # interleaved progress bars are unreadable: epoch lines only
        futures = {pool.submit(train_one, m, data, runs / m, settings, args.resume, threads, quiet): m
                   for m in models}
        for fut in as_completed(futures):
            model = futures[fut]
            try:
                finish(model, *fut.result())
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"{model}: {exc}", file=sys.stderr, flush=True)
                failed.append(model)
    print("time per model: " + ", ".join(f"{m} {s:.0f}s" for m, s in times.items()), flush=True)
    if failed:
        print(f"error: {len(failed)} model(s) failed to train: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
