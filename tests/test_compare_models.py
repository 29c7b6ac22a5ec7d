"""benchmarks/compare_models.py: every model's mAP with its interval and the papers' claim pairs as paired tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from profashion.data.splits import load_dataset
from profashion.models.base import build_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare_models():
    spec = importlib.util.spec_from_file_location("compare_models", REPO / "benchmarks" / "compare_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def two_checkpoints(tiny_synth, tmp_path_factory):
    """Untrained tiny triplet and ASEN models (48 px) saved as checkpoints of the tiny dataset."""
    ds = load_dataset(tiny_synth)
    root = tmp_path_factory.mktemp("ckpts")
    out = []
    for name in ("triplet", "asen"):
        model = build_model(name, "demo", num_values=ds.schema.num_values, image_size=48, resize=48)
        out.append(save_checkpoint(model, root / name,
                                   extra={"dataset": {"attributes": list(ds.schema.names)}}))
    (root / "notes").mkdir()  # not a checkpoint: skipped
    return root


def test_claim_pairs_with_intervals_and_p_values(compare_models, tiny_synth, two_checkpoints, tmp_path, capsys):
    argv = ["--dataset", str(tiny_synth), "--split", "test", "--results", str(tmp_path / "res"),
            "--checkpoints", *map(str, sorted(two_checkpoints.iterdir())), "--resamples", "200",
            "--permutations", "500", "--device", "cpu"]
    assert compare_models.main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # stdout is one JSON object (the eval tables went to stderr)
    assert set(report["models"]) == {"triplet", "asen", "random"}
    for label, m in report["models"].items():
        lo, hi = m["ci95"]
        assert lo <= m["overall"] <= hi, label
    assert report["split"] == "test" and report["layout"] == "asen"
    assert report["n_queries"] == sum(report["models"]["asen"]["n_queries"].values())
    [pair] = report["pairs"]
    assert (pair["claim"], pair["a"], pair["b"]) == ("conditional beats unconditional", "triplet", "asen")
    m = report["models"]
    assert pair["diff"] == pytest.approx(m["asen"]["overall"] - m["triplet"]["overall"], abs=1e-5)  # APs: 8 decimals
    assert pair["ci95"][0] <= pair["diff"] <= pair["ci95"][1] and 0 < pair["p_value"] <= 1
    assert pair["significant_5pct"] == (pair["p_value"] < 0.05)
    assert set(pair["per_attribute"]) == set(load_dataset(tiny_synth).schema.names)
    skipped = {(s["a"], s["b"]) for s in report["skipped_pairs"]}
    assert ("cca1", "cca2") in skipped and ("asen", "profashion") in skipped and ("triplet", "csn") in skipped
    assert len(skipped) + 1 == len(compare_models.CLAIMS)
    assert not m["asen"]["reused"]
    # a second run reuses the per-model result files (no re-embedding) and gives the same numbers
    assert compare_models.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["models"]["asen"]["reused"] and again["pairs"] == report["pairs"]


def test_bad_input_is_one_line(compare_models, tmp_path, capsys):
    assert compare_models.main(["--dataset", str(tmp_path), "--checkpoints", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
