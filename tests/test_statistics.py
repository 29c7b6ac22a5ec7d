"""Bootstrap intervals of mAP and the paired test between models (profashion.evaluation.statistics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from profashion.cli import main
from profashion.data.splits import AttributeSchema, load_dataset
from profashion.evaluation.retrieval_map import MAPResult, evaluate_random, mean_average_precision
from profashion.evaluation.statistics import (
    ComparisonError,
    bootstrap_intervals,
    compare_result_files,
    paired_test,
    sign_flip_p_value,
)

# --------------------------------------------------------------------------------------------------
# A known synthetic ranking: fixed candidates of two attributes, queries drawn from the same process


N_CAND, N_VALUES, DIM = 200, 4, 16


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, N_VALUES, DIM))

    def draw(attr, n, r, signal=0.6):
        v = r.integers(0, N_VALUES, n)
        x = signal * centres[attr, v] + r.standard_normal((n, DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True), v

    cands = [draw(a, N_CAND, rng) for a in (0, 1)]
    cand = (np.concatenate([c[0] for c in cands]), np.repeat([0, 1], N_CAND), np.concatenate([c[1] for c in cands]))
    return draw, cand


def _map(q, qa, qv, cand):
    return mean_average_precision(q, qa, qv, cand[0], cand[1], cand[2], 2)


def test_interval_covers_the_true_map_about_95_percent_of_the_time(world):
    """Calibration: a population of 20,000 queries per attribute fixes the true mAP; 400 seeded samples of
    60 + 40 queries each get a bootstrap interval, which should cover the truth ~95% of the time."""
    draw, cand = world
    rng = np.random.default_rng(1)
    pop = [_map(*(lambda e, v: (e, np.full(20000, a), v))(*draw(a, 20000, rng)), cand).query_ap for a in (0, 1)]
    n = (60, 40)
    true = [100 * p.mean() for p in pop]
    true_overall = (n[0] * true[0] + n[1] * true[1]) / sum(n)
    reps, hits, widths = 400, np.zeros(3), []
    for k in range(reps):
        r = np.random.default_rng(1000 + k)
        ap = np.concatenate([pop[a][r.integers(0, len(pop[a]), n[a])] for a in (0, 1)])
        iv = bootstrap_intervals(ap, np.repeat([0, 1], n), 2, n_resamples=1000, seed=k)
        hits[0] += iv.overall[0] <= true_overall <= iv.overall[1]
        for a in (0, 1):
            hits[1 + a] += iv.per_attribute[a][0] <= true[a] <= iv.per_attribute[a][1]
        widths.append(iv.overall[1] - iv.overall[0])
    coverage = hits / reps
    # percentile bootstrap: slightly below 95% at n = 40-60 (measured 0.94 / 0.93 / 0.94)
    assert 0.91 <= coverage[0] <= 0.98, coverage
    assert (0.89 <= coverage[1:]).all() and (coverage[1:] <= 0.98).all(), coverage
    # the width matches the normal approximation 2 * 1.96 * sd / sqrt(n) of the overall mean
    sd = math.sqrt(sum((n[a] / sum(n)) ** 2 * pop[a].var() / n[a] for a in (0, 1))) * 100
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sd, rel=0.1)


def test_bootstrap_is_seeded_stratified_and_skips_empty_attributes():
    rng = np.random.default_rng(0)
    ap = rng.random(30)
    attr = np.array([0] * 20 + [2] * 10)
    a = bootstrap_intervals(ap, attr, 3, n_resamples=500, seed=4)
    b = bootstrap_intervals(ap, attr, 3, n_resamples=500, seed=4)
    c = bootstrap_intervals(ap, attr, 3, n_resamples=500, seed=5)
    assert a == b and a != c
    assert a.per_attribute[1] is None  # no query: no interval, not 0 or nan
    for i, idx in ((0, attr == 0), (2, attr == 2)):
        lo, hi = a.per_attribute[i]
        assert lo < 100 * ap[idx].mean() < hi
    assert a.overall[0] < 100 * ap.mean() < a.overall[1]
    # constant APs: a zero-width interval; one query: its own AP
    one = bootstrap_intervals([0.25, 0.5, 0.5], [0, 1, 1], 2, n_resamples=50)
    assert one.per_attribute == [(25.0, 25.0), (50.0, 50.0)]
    with pytest.raises(ValueError, match="query attributes"):
        bootstrap_intervals([0.1], [3], 2)


# --------------------------------------------------------------------------------------------------
# The paired test


def test_sign_flip_p_value_exact_and_monte_carlo():
    rng = np.random.default_rng(0)
    # exact: 3 positive differences -> 2 of the 8 sign patterns are as extreme (+++ and ---)
    assert sign_flip_p_value(np.array([0.1, 0.1, 0.1]), 10000, rng) == pytest.approx(0.25)
    assert sign_flip_p_value(np.zeros(50), 1000, rng) == 1.0  # identical models
    big = np.full(200, 0.05) + rng.normal(0, 0.01, 200)
    assert sign_flip_p_value(big, 2000, rng) == pytest.approx(1 / 2001)
    noise = rng.normal(0, 0.1, 400)
    assert sign_flip_p_value(noise, 2000, rng) > 0.01


def _noisy_queries(world, seed, n=(60, 40), noise=0.5):
    """The same model's query embeddings twice, each with its own noise (candidates unchanged)."""
    draw, cand = world
    rng = np.random.default_rng(seed)
    parts = [draw(a, k, rng) for a, k in zip((0, 1), n)]
    q = np.concatenate([p[0] for p in parts])
    qv = np.concatenate([p[1] for p in parts])
    qa = np.repeat([0, 1], n)
    runs = []
    for _ in range(2):
        x = q + noise * rng.standard_normal(q.shape) / math.sqrt(DIM)
        runs.append(_map(x / np.linalg.norm(x, axis=1, keepdims=True), qa, qv, cand).query_ap)
    return runs, qa, qv


def test_a_model_against_itself_under_resampled_noise_is_not_significant(world):
    (a, b), qa, _ = _noisy_queries(world, seed=7)
    assert not np.allclose(a, b)
    cmp = paired_test(a, b, qa, ["x", "y"], n_permutations=5000, seed=0)
    assert cmp.overall.p_value > 0.05
    assert cmp.overall.ci95[0] < 0 < cmp.overall.ci95[1]
    # and the false-positive rate is about the 5% level over many such pairs
    rejected = 0
    for seed in range(100):
        (a, b), qa, _ = _noisy_queries(world, seed=100 + seed)
        rejected += paired_test(a, b, qa, ["x", "y"], n_resamples=10, n_permutations=1000,
                                seed=seed).overall.p_value < 0.05
    assert rejected <= 12, rejected


def test_perfect_against_random_embeddings_is_significant(world):
    _, cand = world
    rng = np.random.default_rng(3)
    qa = np.repeat([0, 1], (60, 40))
    qv = rng.integers(0, N_VALUES, 100)
    onehot = np.eye(2 * N_VALUES)
    perfect_q, perfect_c = onehot[qa * N_VALUES + qv], onehot[cand[1] * N_VALUES + cand[2]]
    ap_perfect = mean_average_precision(perfect_q, qa, qv, perfect_c, cand[1], cand[2], 2).query_ap
    assert np.allclose(ap_perfect, 1.0)
    rq = rng.standard_normal((100, DIM))
    rc = rng.standard_normal((len(cand[0]), DIM))
    ap_random = mean_average_precision(rq, qa, qv, rc, cand[1], cand[2], 2).query_ap
    cmp = paired_test(ap_random, ap_perfect, qa, ["x", "y"], label_a="random", label_b="perfect")
    assert cmp.overall.p_value < 0.01 and cmp.overall.significant()
    assert cmp.overall.diff == pytest.approx(100 * (1 - ap_random.mean()))
    assert cmp.overall.ci95[0] > 50
    assert all(r.p_value < 0.01 for r in cmp.per_attribute)
    table = cmp.format_table()
    assert "perfect" in table and "*" in table.splitlines()[-2]


def test_attribute_without_queries_is_reported_as_such():
    cmp = paired_test([0.5, 0.2], [0.6, 0.1], [0, 0], ["shape", "colour"], n_permutations=100)
    assert cmp.per_attribute[1].n_queries == 0
    assert cmp.to_json()["per_attribute"]["colour"] == {"n_queries": 0, "status": "no query"}
    line = [ln for ln in cmp.format_table().splitlines() if ln.startswith("colour")][0]
    assert "no query" in line and "nan" not in line and "0.00" not in line


# --------------------------------------------------------------------------------------------------
# Result files and the commands


def test_map_result_json_keeps_intervals_and_per_query_aps(asen_splits):
    ds = load_dataset(asen_splits / "FashionAI")
    r = evaluate_random(ds, "test", seed=0)
    js = r.to_json(ds.schema)
    q = js["queries"]
    assert len(q["ap"]) == len(q["fid"]) == sum(js["n_queries"].values()) == 3600
    assert 100 * np.mean(q["ap"]) == pytest.approx(js["overall"], abs=1e-5)
    lo, hi = js["ci95"]
    assert lo < js["overall"] < hi and hi - lo < 0.5
    # the published random row lies inside our intervals (ASEN layout, FashionAI)
    assert lo <= 15.79 <= hi
    for name, (lo, hi) in js["per_attribute_ci95"].items():
        assert lo < js["per_attribute"][name] < hi


def test_no_query_attribute_in_table_and_json():
    schema = AttributeSchema(("a", "b"), (("x", "y"), ("x", "y")))
    r = mean_average_precision(np.eye(2)[[0, 1, 0]], [0, 0, 0], [0, 1, 0], np.eye(2), [0, 0], [0, 1], 2)
    js = r.to_json(schema)
    assert js["no_queries"] == ["b"] and "b" not in js["per_attribute_ci95"]
    table = r.format_table(schema)
    line = [ln for ln in table.splitlines() if ln.startswith("b ")][0]
    assert "no query" in line and "nan" not in table
    assert isinstance(r, MAPResult) and js["ci95"] == [100.0, 100.0]


def _labels_only_dataset(root, seed=0, layout="all-attributes", n=120):
    """A labels-only dataset folder (no images: enough for --embeddings random) in our own format."""
    from profashion.data.splits import eval_query_split, write_meta, write_split_files

    rng = np.random.default_rng(seed)
    schema = AttributeSchema(("shape", "colour", "size"), (("a", "b", "c"), ("r", "g"), ("s", "m", "l")))
    root.mkdir(parents=True)
    for split in ("valid", "test"):
        vals = rng.integers(0, 2, (n, 3))
        labels = [[(a, int(v)) for a, v in enumerate(row)] for row in vals]
        rows = np.array([(f, a, v) for f, pairs in enumerate(labels) for a, v in pairs])
        q, c = eval_query_split(rows, 3, rng, layout)
        write_split_files(root, split, [f"{split}/{i}.png" for i in range(n)], labels, q, c)
    write_meta(root, schema, root.name, extra={"EVAL_LAYOUT": layout} if layout != "asen" else None)
    return root


def test_compare_command_and_its_refusals(tmp_path, capsys):
    d1 = _labels_only_dataset(tmp_path / "d1")
    d2 = _labels_only_dataset(tmp_path / "d2", seed=1)
    out = {}
    for name, ds, seed in (("a", d1, 0), ("b", d1, 1), ("other", d2, 0)):
        out[name] = tmp_path / f"{name}.json"
        assert main(["eval", "--dataset", str(ds), "--split", "test", "--embeddings", "random", "--seed", str(seed),
                     "--json", str(out[name]), "--resamples", "300"]) == 0
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "all-attributes layout" in printed
    res = json.loads(out["a"].read_text())
    assert res["layout"] == "all-attributes" and res["split"] == "test" and res["bootstrap"]["resamples"] == 300
    assert len(res["ci95"]) == 2 and set(res["per_attribute_ci95"]) == set(res["per_attribute"])

    cmp_json = tmp_path / "cmp.json"
    assert main(["compare", str(out["a"]), str(out["b"]), "--permutations", "500", "--json", str(cmp_json)]) == 0
    printed = capsys.readouterr().out
    assert "B - A" in printed and "overall" in printed
    cmp = json.loads(cmp_json.read_text())
    assert cmp["overall"]["n_queries"] == sum(res["n_queries"].values())
    assert cmp["overall"]["diff"] == pytest.approx(json.loads(out["b"].read_text())["overall"] - res["overall"])
    assert 0 < cmp["overall"]["p_value"] <= 1 and set(cmp["per_attribute"]) == {"shape", "colour", "size"}
    # the same result against itself: no difference, p = 1
    same = compare_result_files(out["a"], out["a"], n_permutations=200)
    assert same.overall.diff == 0 and same.overall.p_value == 1.0

    # refusals: one sentence each, no traceback
    assert main(["compare", str(out["a"]), str(out["other"])]) == 2
    err = capsys.readouterr().err
    assert "different query sets" in err and "same dataset and split" in err and err.count("\n") == 1
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in res.items() if k != "queries"}))
    assert main(["compare", str(old), str(out["a"])]) == 2
    err = capsys.readouterr().err
    assert "no per-query APs" in err and "profashion eval" in err and err.count("\n") == 1
    # same queries, other candidates: refused by the split fingerprint
    moved = json.loads(out["b"].read_text())
    moved["split_fingerprint"] = "0" * 16
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    with pytest.raises(ComparisonError, match="different candidates"):
        compare_result_files(out["a"], tmp_path / "moved.json")
    assert main(["compare", str(out["a"]), str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_app_results_show_the_same_intervals():
    """The Results tab's interval table is built from the result JSON (the same bootstrap as eval)."""
    from profashion.ui.tab_results import intervals_markdown as _intervals_markdown

    schema = AttributeSchema(("shape", "colour"), (("a", "b"), ("r", "g")))
    r = mean_average_precision(np.eye(2)[[0, 1, 0, 1]] + 0.1, [0, 0, 0, 0], [0, 1, 1, 0], np.eye(2), [0, 0], [0, 1], 2)
    js = r.to_json(schema)
    md = _intervals_markdown({"asen": js, "old": {"overall": 1.0, "per_attribute": {}}}, ["shape", "colour"])
    lo, hi = js["ci95"]
    row = [ln for ln in md.splitlines() if ln.startswith("| asen")][0]
    assert row == f"| asen | {lo:.1f}-{hi:.1f} | no query | {lo:.1f}-{hi:.1f} |" and lo < hi
    assert "measured before intervals existed" in [ln for ln in md.splitlines() if ln.startswith("| old")][0]
