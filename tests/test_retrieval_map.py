"""The ASEN retrieval mAP protocol: published random baselines, exact cases, a slow reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from profashion.data.splits import AttributeSchema, load_dataset
from profashion.evaluation.retrieval_map import (
    PUBLISHED,
    PUBLISHED_RANDOM_PER_ATTRIBUTE,
    PUBLISHED_SOURCES,
    MAPResult,
    evaluate_random,
    mean_average_precision,
    published_random,
    random_embeddings,
    write_result_json,
)


@pytest.fixture(scope="module")
def fashionai(asen_splits):
    return load_dataset(asen_splits / "FashionAI")


def _perfect(rows: np.ndarray, num_values: list[int]) -> np.ndarray:
    """One-hot of the value inside a block per attribute: same attribute and value <=> similarity 1."""
    offsets = np.concatenate([[0], np.cumsum(num_values)])
    emb = np.zeros((len(rows), offsets[-1]), dtype=np.float32)
    emb[np.arange(len(rows)), offsets[rows[:, 1]] + rows[:, 2]] = 1.0
    return emb


def _sklearn_reference(q, qa, qv, c, ca, cv, num_attributes):
    """Slow reference: one sklearn average_precision_score per query (ties-free data only)."""
    aps = np.zeros(len(q))
    for i in range(len(q)):
        mask = ca == qa[i]
        y = cv[mask] == qv[i]
        if y.any():
            aps[i] = average_precision_score(y, c[mask] @ q[i])
    per = [100 * aps[qa == a].mean() if np.any(qa == a) else math.nan for a in range(num_attributes)]
    return 100 * aps.mean(), per


# --------------------------------------------------------------------------------------------------
# The published random baseline (all 10 seeds 0..9 were checked to pass; three are tested)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_baseline_reproduces_published_fashionai_row(fashionai, seed):
    result = evaluate_random(fashionai, "test", seed=seed)
    published = PUBLISHED_RANDOM_PER_ATTRIBUTE["FashionAI"]
    print(f"\nseed {seed}\n" + result.format_table(fashionai.schema, published_random("FashionAI")))
    assert result.overall == pytest.approx(PUBLISHED["Random"]["FashionAI"], abs=0.3)
    assert list(published) == list(fashionai.schema.names)
    for name, ours in zip(fashionai.schema.names, result.per_attribute):
        assert ours == pytest.approx(published[name], abs=0.3), name
    assert sum(result.n_queries) == 3600
    assert fashionai.eval_layout == "asen"  # the official splits: one attribute per image


def test_per_query_aps_are_kept_in_query_order(fashionai):
    result = evaluate_random(fashionai, "test", seed=0)
    q = fashionai.split("test").queries
    assert np.array_equal(result.queries, q) and np.array_equal(result.query_attr, q[:, 1])
    assert 100 * result.query_ap.mean() == pytest.approx(result.overall)
    for a, value in enumerate(result.per_attribute):
        assert 100 * result.query_ap[q[:, 1] == a].mean() == pytest.approx(value)
    assert result.fingerprint == evaluate_random(fashionai, "test", seed=5).fingerprint
    assert result.fingerprint != evaluate_random(fashionai, "valid", seed=0).fingerprint


def test_random_is_seeded(fashionai):
    a = evaluate_random(fashionai, "test", seed=3)
    b = evaluate_random(fashionai, "test", seed=3)
    c = evaluate_random(fashionai, "test", seed=4)
    assert a == b
    assert a.per_attribute != c.per_attribute


@pytest.mark.parametrize("name", ["DARN", "DeepFashion"])
def test_random_darn_deepfashion_evaluate(asen_splits, name):
    ds = load_dataset(asen_splits / name)
    result = evaluate_random(ds, "test", seed=0)
    print(f"\n{name}\n" + result.format_table(ds.schema, {"overall": PUBLISHED["Random"][name]}))
    assert math.isfinite(result.overall)
    assert all(math.isfinite(v) for v in result.per_attribute)
    assert sum(result.n_queries) == len(ds.split("test").queries)
    # Measured: DeepFashion 3.38 (published 3.38); DARN 31.25 (published 32.26: these split files give
    # about one point less for every seed, a gap far beyond the seed-to-seed spread of ~0.02).
    tolerance = {"DARN": 1.5, "DeepFashion": 0.3}[name]
    assert result.overall == pytest.approx(PUBLISHED["Random"][name], abs=tolerance)


# --------------------------------------------------------------------------------------------------
# Exact cases


def test_perfect_embeddings_give_100(fashionai):
    s = fashionai.split("test")
    nv = fashionai.schema.num_values
    r = mean_average_precision(_perfect(s.queries, nv), s.queries[:, 1], s.queries[:, 2],
                               _perfect(s.candidates, nv), s.candidates[:, 1], s.candidates[:, 2],
                               fashionai.schema.num_attributes)
    assert r.overall == 100.0
    assert r.per_attribute == [100.0] * 8


def test_perfect_embeddings_count_queries_without_relevant_candidate(asen_splits):
    # DeepFashion's test split has 23 queries whose value no candidate has: AP 0, still counted.
    ds = load_dataset(asen_splits / "DeepFashion")
    s = ds.split("test")
    nv = ds.schema.num_values
    r = mean_average_precision(_perfect(s.queries, nv), s.queries[:, 1], s.queries[:, 2],
                               _perfect(s.candidates, nv), s.candidates[:, 1], s.candidates[:, 2],
                               ds.schema.num_attributes)
    cand = {(a, v) for _, a, v in s.candidates}
    orphans = sum((int(a), int(v)) not in cand for _, a, v in s.queries)
    assert orphans > 0
    assert r.overall == pytest.approx(100.0 * (len(s.queries) - orphans) / len(s.queries), abs=1e-9)


def test_zero_relevant_query_has_ap_zero_and_counts():
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    # query 0 (value 0) finds its relevant candidate first: AP 1; query 1 (value 5) has none: AP 0.
    r = mean_average_precision(q, [0, 0], [0, 5], c, [0, 0], [0, 1], num_attributes=1)
    assert r.per_attribute == [50.0]
    assert r.overall == 50.0
    assert r.n_queries == [2]


def test_overall_is_query_weighted_not_plain_mean():
    # attribute 0: three queries with AP 1; attribute 1: one query with AP 1/2.
    q = np.array([[1.0, 0.0]] * 3 + [[1.0, 0.0]])
    qa, qv = [0, 0, 0, 1], [0, 0, 0, 0]
    c = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    ca, cv = [0, 0, 1, 1], [0, 1, 1, 0]
    r = mean_average_precision(q, qa, qv, c, ca, cv, num_attributes=2)
    assert r.per_attribute == [100.0, 50.0]
    assert r.overall == pytest.approx(100.0 * (3 * 1.0 + 0.5) / 4)
    assert r.overall != pytest.approx(75.0)


def test_known_ap_by_hand():
    # Ranking by similarity: c0 (rel), c1, c2 (rel), c3 -> AP = (1/1 + 2/3) / 2.
    q = np.array([[1.0, 0.0]])
    c = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    r = mean_average_precision(q, [0], [7], c, [0, 0, 0, 0], [7, 1, 7, 2], num_attributes=1)
    assert r.overall == pytest.approx(100 * (1 + 2 / 3) / 2, abs=1e-12)


def test_candidates_of_other_attributes_are_not_ranked():
    q = np.array([[1.0, 0.0]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    # the identical candidate belongs to attribute 1; within attribute 0 the relevant one is the only one
    r = mean_average_precision(q, [0], [0], c, [1, 0], [1, 0], num_attributes=2)
    assert r.overall == 100.0
    assert r.n_queries == [1, 0]
    assert math.isnan(r.per_attribute[1])


def test_ties_keep_candidate_file_order():
    q = np.ones((1, 2)) / np.sqrt(2)
    c = np.ones((4, 2)) / np.sqrt(2)  # all tied: ranking = file order
    r = mean_average_precision(q, [0], [1], c, [0] * 4, [0, 1, 0, 1], num_attributes=1)
    assert r.overall == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)


def test_agrees_with_sklearn_reference():
    rng = np.random.default_rng(7)
    num_attributes, num_values = 3, [4, 2, 6]
    nq, nc, dim = 60, 240, 16
    qa, ca = rng.integers(0, num_attributes, nq), rng.integers(0, num_attributes, nc)
    qv = np.array([rng.integers(0, num_values[a]) for a in qa])
    cv = np.array([rng.integers(0, num_values[a]) for a in ca])
    q, c = random_embeddings(nq, dim, seed=1).astype(np.float64), random_embeddings(nc, dim, seed=2).astype(np.float64)
    sims = q @ c.T
    assert len(np.unique(np.round(sims, 12))) == sims.size  # ties-free
    ours = mean_average_precision(q, qa, qv, c, ca, cv, num_attributes, chunk=7)
    ref_overall, ref_per = _sklearn_reference(q, qa, qv, c, ca, cv, num_attributes)
    assert ours.overall == pytest.approx(ref_overall, abs=1e-9)
    assert ours.per_attribute == pytest.approx(ref_per, abs=1e-9)


def test_chunking_and_tensor_input_do_not_change_the_result(fashionai):
    s = fashionai.split("test")
    emb = random_embeddings(s.num_images, 32, seed=5)
    args = (s.queries[:, 1], s.queries[:, 2])
    cargs = (s.candidates[:, 1], s.candidates[:, 2])
    a = mean_average_precision(emb[s.queries[:, 0]], *args, emb[s.candidates[:, 0]], *cargs, 8, chunk=4096)
    b = mean_average_precision(torch.from_numpy(emb[s.queries[:, 0]]), *args,
                               torch.from_numpy(emb[s.candidates[:, 0]]), *cargs, 8, chunk=97)
    assert a.overall == pytest.approx(b.overall, abs=1e-12)
    assert a.per_attribute == pytest.approx(b.per_attribute, abs=1e-12)


def test_bad_inputs_raise():
    q, c = np.eye(2), np.eye(2)
    with pytest.raises(ValueError, match="query_attr must lie"):
        mean_average_precision(q, [0, 3], [0, 0], c, [0, 0], [0, 0], num_attributes=2)
    with pytest.raises(ValueError, match="dimensions"):
        mean_average_precision(q, [0, 0], [0, 0], np.eye(3), [0, 0, 0], [0, 0, 0], num_attributes=1)
    with pytest.raises(ValueError, match="entries"):
        mean_average_precision(q, [0], [0, 0], c, [0, 0], [0, 0], num_attributes=1)


def test_random_embeddings_are_unit_and_seeded():
    e = random_embeddings(10, 8, seed=0)
    assert e.shape == (10, 8)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(e, random_embeddings(10, 8, seed=0))
    assert not np.array_equal(e, random_embeddings(10, 8, seed=1))


# --------------------------------------------------------------------------------------------------
# Reporting


def test_to_json_format_table_and_write(tmp_path):
    schema = AttributeSchema(("a", "b", "c"), (("x", "y"), ("x",), ("x", "y")))
    r = MAPResult(overall=40.0, per_attribute=[50.0, math.nan, 10.0], n_queries=[3, 0, 1])
    js = r.to_json(schema)
    # without per-query APs (a result built by hand): no intervals; the attribute without a query is named
    assert js == {"overall": 40.0, "per_attribute": {"a": 50.0, "c": 10.0}, "n_queries": {"a": 3, "c": 1},
                  "no_queries": ["b"]}
    table = r.format_table(schema, {"overall": 41.0, "per_attribute": {"a": 49.5}})
    lines = table.splitlines()
    assert lines[-1].split()[:3] == ["overall", "4", "40.00"]
    assert "published" in lines[0] and "-1.00" in lines[-1] and "+0.50" in table
    assert [ln for ln in lines if ln.startswith("b ")][0].split()[1:] == ["0", "no", "query"]
    plain = r.format_table(schema)
    assert "published" not in plain and "50.00" in plain and "95% CI" not in plain
    path = tmp_path / "out" / "map.json"
    write_result_json(r, schema, path)
    assert json.loads(path.read_text()) == js
    assert [p.name for p in path.parent.iterdir()] == ["map.json"]


def test_published_table_is_complete():
    assert set(PUBLISHED_SOURCES) == {"CCA", "ProFashion"}
    assert PUBLISHED["ProFashion"]["FashionAI"] == 74.26
    assert PUBLISHED["CCA Type-2"]["DARN"] == 68.09
    for method, row in PUBLISHED.items():
        assert {"FashionAI", "DARN", "DeepFashion"} <= set(row), method
    row = PUBLISHED_RANDOM_PER_ATTRIBUTE["FashionAI"]
    assert list(row.values()) == [17.20, 12.50, 13.35, 17.45, 22.36, 21.63, 11.09, 21.19]
