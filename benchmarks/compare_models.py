"""The papers' claims as paired tests on one split; prints ONE JSON object.

For each checkpoint folder, ``profashion eval --json`` (per-query APs, 95% bootstrap interval) on the
given dataset and split, plus random embeddings (seed 0) as a reference; then, for every claim pair of
the papers whose two checkpoints are present, the paired test of ``profashion compare`` (difference of
overall mAP B - A in points, its 95% paired-bootstrap interval, the sign-flip p-value, per attribute
and overall):

- conditional beats unconditional: every conditional model (csn, asen, cca1, cca2, tf-csn, tf-asen,
  profashion) against ``triplet``;
- CCA Type-2 beats Type-1: ``cca2`` against ``cca1``;
- CCA beats its TF baselines: ``cca1`` and ``cca2`` against ``tf-csn`` and ``tf-asen``;
- ProFashion beats ASEN: ``profashion`` against ``asen``.

A pair is identified by the checkpoints' model names (``config.json``); a pair with a missing model is
listed under ``skipped_pairs``. With ``--results DIR`` each model's result file is kept as
``DIR/<label>.json`` and reused on the next run when its checkpoint has not changed (same
``model.safetensors`` size and mtime), so re-running for another pair does not re-embed.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_models.py --dataset data/synth --split test \\
        --checkpoints checkpoints/* --results runs/compare-synth > compare-synth.json

Every eval table goes to stderr; stdout holds only the JSON object. A difference is significant at 5%
when its p-value is below 0.05 (``significant_5pct``). The interval and the test account for the
choice of queries only, not for the training seed: a significant difference says these two trained
models differ on this split, not that their methods would over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profashion.cli import main as profashion_main  # noqa: E402
from profashion.evaluation.statistics import (  # noqa: E402
    DEFAULT_PERMUTATIONS,
    DEFAULT_RESAMPLES,
    compare_results,
    load_result,
)

CONDITIONAL = ("csn", "asen", "cca1", "cca2", "tf-csn", "tf-asen", "profashion")
CLAIMS: list[tuple[str, str, str]] = (
    [("conditional beats unconditional", "triplet", m) for m in CONDITIONAL]
    + [("CCA Type-2 beats Type-1", "cca1", "cca2")]
    + [("CCA beats its TF baselines", tf, cca) for cca in ("cca1", "cca2") for tf in ("tf-csn", "tf-asen")]
    + [("ProFashion beats ASEN", "asen", "profashion")]
)
"""(claim, A, B): the paper claims B > A."""


class CompareError(RuntimeError):
    pass


def _model_name(ckpt: Path) -> str:
    try:
        return str(json.loads((ckpt / "config.json").read_text(encoding="utf-8"))["model"])
    except (OSError, ValueError, KeyError) as exc:
        raise CompareError(f"{ckpt} is not a checkpoint folder (no readable config.json with a 'model')") from exc


def _stamp(ckpt: Path) -> dict:
    st = (ckpt / "model.safetensors").stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _eval(args_eval: list[str], out: Path) -> None:
    with contextlib.redirect_stdout(sys.stderr):
        rc = profashion_main([*args_eval, "--json", str(out)])
    if rc != 0:
        raise CompareError(f"profashion {' '.join(args_eval)} failed (exit status {rc}); see the error above")


def evaluate_all(dataset: str, split: str, checkpoints: list[Path], results: Path, device: str = "auto",
                 batch_size: int = 256, resamples: int = DEFAULT_RESAMPLES) -> tuple[dict, dict]:
    """({label: loaded result}, {label: info}) for every checkpoint and ``random`` (seed 0)."""
    results.mkdir(parents=True, exist_ok=True)
    common = ["eval", "--dataset", dataset, "--split", split, "--resamples", str(resamples)]
    loaded, info = {}, {}
    labels: dict[str, Path] = {}
    for ckpt in checkpoints:
        label = ckpt.name
        if label in labels:
            raise CompareError(f"two checkpoint folders are named {label!r} ({labels[label]} and {ckpt}): "
                               "give each model its own folder name")
        labels[label] = ckpt
    for label, ckpt in labels.items():
        name = _model_name(ckpt)
        out = results / f"{label}.json"
        stamp_file = results / f"{label}.stamp.json"
        key = {"checkpoint": str(ckpt.resolve()), **_stamp(ckpt), "dataset": str(Path(dataset).resolve()),
               "split": split, "resamples": resamples}
        t = time.perf_counter()
        reused = out.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == key
        if not reused:
            print(f"evaluating {label} ({name}) from {ckpt}", file=sys.stderr, flush=True)
            _eval([*common, "--checkpoint", str(ckpt), "--device", device, "--batch-size", str(batch_size),
                   "--quiet"], out)
            stamp_file.write_text(json.dumps(key) + "\n")
        loaded[label] = load_result(out)
        info[label] = {"model": name, "checkpoint": str(ckpt), "result_file": str(out), "reused": reused,
                       "seconds": round(time.perf_counter() - t, 1)}
    out = results / "random.json"
    _eval([*common, "--embeddings", "random", "--seed", "0"], out)
    loaded["random"] = load_result(out)
    info["random"] = {"model": "random (seed 0)", "result_file": str(out)}
    return loaded, info


def _summary(res: dict) -> dict:
    return {k: res.get(k) for k in ("overall", "ci95", "per_attribute", "per_attribute_ci95", "n_queries",
                                    "no_queries") if res.get(k) is not None}


def compare_models(dataset: str, split: str, checkpoints: list[Path], results: Path, device: str = "auto",
                   batch_size: int = 256, resamples: int = DEFAULT_RESAMPLES,
                   permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> dict:
    loaded, info = evaluate_all(dataset, split, checkpoints, results, device, batch_size, resamples)
    by_model: dict[str, list[str]] = {}
    for label, i in info.items():
        if label != "random":
            by_model.setdefault(i["model"], []).append(label)
    first = next(iter(loaded.values()))
    report = {
        "dataset": first.get("dataset"), "split": split, "layout": first.get("layout"),
        "n_queries": len(first["_ap"]),
        "method": {"ci95": f"percentile bootstrap over queries within each attribute, {resamples} resamples",
                   "pairs": f"difference B - A of overall mAP (points) on the same queries; 95% paired bootstrap "
                            f"({resamples} resamples); two-sided sign-flip permutation test "
                            f"({permutations} permutations), seed {seed}; significant_5pct = p < 0.05"},
        "models": {label: {**info[label], **_summary(res)} for label, res in loaded.items()},
        "pairs": [], "skipped_pairs": [],
    }
    for claim, a, b in CLAIMS:
        missing = [m for m in (a, b) if m not in by_model]
        if missing:
            report["skipped_pairs"].append({"claim": claim, "a": a, "b": b,
                                            "why": f"no checkpoint of {' and '.join(missing)}"})
            continue
        for la in by_model[a]:
            for lb in by_model[b]:
                cmp = compare_results(loaded[la], loaded[lb], n_resamples=resamples, n_permutations=permutations,
                                      seed=seed)
                js = cmp.to_json()
                report["pairs"].append({
                    "claim": claim, "a": la, "b": lb, **js["overall"],
                    "per_attribute": js["per_attribute"],
                })
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--checkpoints", nargs="+", required=True, type=Path,
                   help="checkpoint folders (config.json + model.safetensors); folders without config.json are "
                        "skipped, so checkpoints/* works")
    p.add_argument("--results", type=Path, default=Path("runs/compare-models"),
                   help="folder for each model's eval --json (reused when the checkpoint is unchanged)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    p.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ckpts = [c for c in args.checkpoints if (c / "config.json").is_file()]
    if not ckpts:
        print("error: none of the --checkpoints folders holds a config.json", file=sys.stderr)
        return 2
    try:
        report = compare_models(args.dataset, args.split, ckpts, args.results, args.device, args.batch_size,
                                args.resamples, args.permutations, args.seed)
    except (CompareError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
