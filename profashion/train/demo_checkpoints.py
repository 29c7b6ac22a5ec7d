"""``make checkpoints``: train every registered model with its demo preset and ship its best checkpoint.

    python -m profashion.train.demo_checkpoints [--models a,b] [--resume] [--out checkpoints]
        [--data data/synth] [--runs runs/demo-checkpoints] [--epochs N --triplets-per-epoch N ...]

1. generates the synthetic training set when it is missing (``data/synth``: the gallery's generator,
   6000/800/2000 images at 112 px, seed 0, as in the README);
2. trains each model (``available_models()`` unless ``--models``) with ``profashion train --preset demo``
   in its own process (a crash of one does not stop the others), in ``<runs>/<model>``; with ``--resume``
   an unfinished run continues after its last finished epoch and a finished one is not trained again;
3. copies each run's ``best/`` into ``<out>/<model>/`` atomically (a temporary folder renamed into place:
   the app never sees half a checkpoint), prints the time per model, and records the provenance in
   ``<out>/manifest.json`` (model, command, seconds, validation mAP, epochs, dataset), rewritten atomically.

The schedule options (``--epochs``, ``--triplets-per-epoch``, ``--batch-size``, ``--warmup-steps``,
``--model-config``) override the preset, e.g. for a quick check of the whole pipeline.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from profashion.data.splits import atomic_write_text, move_folder_into_place
from profashion.train.trainer import planned_epochs

REPO = Path(__file__).resolve().parents[2]
SYNTH = {"train": 6000, "valid": 800, "test": 2000, "size": 112, "seed": 0}


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


def train_one(model: str, data: Path, run: Path, schedule: list[str], resume: bool) -> tuple[list[str], float]:
    """Train ``model`` into ``run`` (a subprocess); returns the command and the seconds it took."""
    cmd = [sys.executable, "-m", "profashion.cli", "train", "--model", model, "--dataset", str(data),
           "--preset", "demo", "--out", str(run), *schedule]
    if run.exists() and any(run.iterdir()):
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
    print(f"{model}: $ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=str(REPO))
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"training {model} failed (exit code {rc}) after {seconds:.0f}s")
    return cmd, seconds


def install(best: Path, dest: Path) -> None:
    """Copy ``best`` to ``dest`` atomically: a temporary sibling folder renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for f in best.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint folder is shared like any other
        move_folder_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    from profashion.models.base import available_models, read_checkpoint_config

    p = argparse.ArgumentParser(prog="python -m profashion.train.demo_checkpoints", description=__doc__.split("\n")[0])
    p.add_argument("--models", help="comma-separated models (default: every registered model)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs, skip finished ones")
    p.add_argument("--out", default=str(REPO / "checkpoints"), help="checkpoints root (default: checkpoints/)")
    p.add_argument("--data", default=str(REPO / "data" / "synth"), help="training set (generated when missing)")
    p.add_argument("--runs", default=str(REPO / "runs" / "demo-checkpoints"), help="where the runs are trained")
    p.add_argument("--epochs", type=int)
    p.add_argument("--triplets-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--model-config", help="JSON overrides of the model preset")
    args = p.parse_args(argv)

    known = available_models()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else known
    unknown = [m for m in models if m not in known]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; available models: {', '.join(known)}", file=sys.stderr)
        return 2
    schedule = []
    for flag in ("epochs", "triplets_per_epoch", "batch_size", "warmup_steps", "model_config"):
        v = getattr(args, flag)
        if v is not None:
            schedule += [f"--{flag.replace('_', '-')}", str(v)]
    data = ensure_dataset(Path(args.data))
    out, runs = Path(args.out), Path(args.runs)
    manifest_path = out / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    failed, times = [], {}
    for model in models:
        run = runs / model
        try:
            cmd, seconds = train_one(model, data, run, schedule, args.resume)
        except RuntimeError as exc:
            print(f"{model}: {exc}", file=sys.stderr, flush=True)
            failed.append(model)
            continue
        best = run / "best"
        info = read_checkpoint_config(best).get("trainer", {})
        install(best, out / model)
        done, total = _run_state(run)
        previous = manifest.get(model, {})
        command = _portable(shlex.join(["python", *cmd[1:]]))
        manifest[model] = {
            "model": model, "command": command if seconds or not previous else previous.get("command"),
            "dataset": _portable(str(data)), "run": _portable(str(run)),
            "seconds": round(seconds, 1) if seconds else previous.get("seconds"),
            "val_map": info.get("score") if isinstance(info.get("score"), (int, float)) else None,
            "best_epoch": info.get("epoch"), "epochs": done, "checkpoint": _portable(str(out / model)),
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        times[model] = seconds
        vm = manifest[model]["val_map"]
        print(f"{model}: {seconds:.0f}s, best val mAP {vm:.2f}" if vm is not None else f"{model}: {seconds:.0f}s",
              f"-> {out / model}", flush=True)
    print("time per model: " + ", ".join(f"{m} {s:.0f}s" for m, s in times.items()), flush=True)
    if failed:
        print(f"error: {len(failed)} model(s) failed to train: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
