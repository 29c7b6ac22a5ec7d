"""Seconds per training step of the demo presets on this machine, from the shipped checkpoints' own runs.

Reads ``runs/demo-checkpoints/<model>/metrics.jsonl`` (the runs ``make checkpoints`` trains: the demo preset,
batch 64, 160 px, trunk features read from the cache) and prints, per model, a warm-up step's seconds (the
warm-up's seconds / its steps) and a triplet step's (the fastest epoch's seconds / its steps, the epoch's
validation included), as JSON. The Fine-tune tab's time estimate (``tab_finetune.STEP_SECONDS``) is this
output; run it again after the checkpoints are retrained on other hardware::

    python benchmarks/finetune_step_seconds.py [--runs runs/demo-checkpoints]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def step_seconds(runs: Path) -> dict:
    out = {}
    for metrics in sorted(runs.glob("*/metrics.jsonl")):
        records = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
        args = json.loads((metrics.parent / "args.json").read_text())
        warm = records[0].get("warmup") or {}
        steps = max(1, args["triplets_per_epoch"] // args["batch_size"])
        out[args["model"]] = {
            "warmup_step_s": round(warm["seconds"] / warm["steps"], 3) if warm.get("steps") else None,
            "triplet_step_s": round(min(r["seconds"] for r in records) / steps, 3),
            "batch_size": args["batch_size"], "image_size": (args.get("model_overrides") or {}).get("image_size", 160),
            "run": str(metrics.parent.relative_to(REPO)) if metrics.is_relative_to(REPO) else str(metrics.parent),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(REPO / "runs" / "demo-checkpoints"))
    print(json.dumps(step_seconds(Path(ap.parse_args().runs)), indent=2))


if __name__ == "__main__":
    main()
