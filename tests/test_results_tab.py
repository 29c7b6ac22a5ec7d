"""The Results tab's handlers and the script that ships the numbers, called directly (no Gradio app launched)."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
import torch
from conftest import TINY_GALLERY, load_script, save_app_checkpoints

from profashion.data.splits import load_dataset
from profashion.data.synth import SYNTH_SCHEMA
from profashion.evaluation.retrieval_map import PUBLISHED
from profashion.models.base import build_model, save_checkpoint
from profashion.retrieval.search import QueryError

pytest.importorskip("gradio")
from profashion.explorer import Catalog  # noqa: E402
from profashion.explorer import results as numbers  # noqa: E402
from profashion.ui import tab_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("asen", "triplet")


ship_results = load_script("scripts/ship_results.py")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, tiny_synth):
    """Two tiny checkpoints with their numbers shipped on the tiny synthetic test split, and a catalog of them."""
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    logs = []
    payload = ship_results.ship(root, tiny_synth, "test", log=logs.append)
    catalog = Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY, max_points=60).load()
    return {"root": root, "payload": payload, "catalog": catalog, "logs": logs, "data": tiny_synth}


def test_ship_results_writes_every_checkpoint_with_its_fingerprint_intervals_and_dataset(shipped):
    from profashion.retrieval.index import checkpoint_fingerprint

    root, payload = shipped["root"], shipped["payload"]
    on_disk = json.loads((root / "results.json").read_text())
    assert on_disk == payload and not list(root.glob(".*tmp"))  # written atomically, nothing left behind
    assert set(payload["models"]) == set(MODELS)
    ds = load_dataset(shipped["data"])
    d = payload["dataset"]
    assert d["split"] == "test" and d["images"] == ds.split("test").num_images == 48
    assert sum(d["n_queries"].values()) == d["queries"] == len(ds.split("test").queries)
    # the command that regenerates the synthetic dataset, from its meta.json
    assert d["recipe"].startswith("profashion generate synth --out data/synth --train 160 --valid 48 --test 48 "
                                  "--size 48 --seed 0")
    for name, r in payload["models"].items():
        assert r["fingerprint"] == checkpoint_fingerprint(root / name) and r["model"] == name
        lo, hi = r["ci95"]
        assert lo <= r["overall"] <= hi and 0 <= lo and hi <= 100
        assert set(r["per_attribute"]) == set(d["n_queries"]) == set(r["per_attribute_ci95"])
        assert r["split_fingerprint"] == d["split_fingerprint"] and "queries" not in r  # no per-query rows
    assert payload["random"]["seed"] == 0 and "ci95" in payload["random"]
    # a second run keeps the unchanged checkpoints without measuring them again
    logs = []
    again = ship_results.ship(root, shipped["data"], "test", log=logs.append)
    assert again["models"] == payload["models"] and all("unchanged" in m for m in logs)


def test_ship_results_lists_a_checkpoint_it_cannot_evaluate_and_measures_the_others(tmp_path, tiny_synth):
    root = save_app_checkpoints(tmp_path / "ck", ("csn",))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "broken" / "model.safetensors").write_bytes(b"\0" * 10)
    out = ship_results.ship(root, tiny_synth, "test", log=lambda m: None)
    assert list(out["models"]) == ["csn"] and "broken" in out["skipped"]
    assert "cannot be evaluated on synth" in out["skipped"]["broken"]
    assert ship_results.main(["--checkpoints", str(root), "--dataset", str(tmp_path / "nowhere"), "--quiet"]) == 2
    # the frozen trunk's features computed once (float16, as the trainer's validation): the same numbers, nearly
    fast = ship_results.ship(root, tiny_synth, "test", force=True, log=lambda m: None, trunk_cache=tmp_path / "trunk")
    assert out["models"]["csn"]["embedded"] == "from the images" and "trunk" in fast["models"]["csn"]["embedded"]
    assert list((tmp_path / "trunk").glob("*.safetensors"))
    assert fast["models"]["csn"]["overall"] == pytest.approx(out["models"]["csn"]["overall"], abs=1.0)


def _rows(html: str, split: str) -> list[str]:
    return re.findall(rf'<tr data-model="([^"]+)" data-split="{split}">', html)


def test_the_table_shows_the_shipped_numbers_at_load_with_best_marked_and_published_beside(shipped):
    catalog, payload = shipped["catalog"], shipped["payload"]
    html, data, intervals = tab_results.results_view(catalog)
    assert _rows(html, "shipped") == list(MODELS) and "pending" not in html
    assert 'data-model="random (seed 0)" data-split="shipped"' in html
    assert f'{payload["dataset"]["images"]} images, {payload["dataset"]["queries"]} queries' in html
    # overall first, then every attribute (short headers), then the published overall of the papers
    heads = [re.sub("<[^>]+>", "", h) for h in re.findall(r'<th scope="col"[^>]*>(.*?)</th>', html)]
    assert heads == [tab_results.short_name(a) for a in catalog.attributes] + ["FashionAI", "DARN", "DeepFashion"]
    assert heads[:2] == ["skirt", "sleeve"]
    # the queries per attribute row
    nrow = re.search(r'<tr class="pf-res-n"><th scope="row">test queries</th>(.*?)</tr>', html).group(1)
    counts = [int(x) for x in re.findall(r"<td>(\d+)</td>", nrow)]
    assert counts == [payload["dataset"]["queries"]] + [payload["dataset"]["n_queries"].get(a, 0)
                                                        for a in catalog.attributes]
    # the data: every model's numbers as shipped, the published overall of its paper beside
    rows = {r["model"]: r for r in data.to_dict("records")}  # by the models' names for people
    for name in MODELS:
        r, s = rows[catalog.models[name].label], payload["models"][name]
        assert r["measured on"] == "shipped" and r["overall"] == pytest.approx(s["overall"])
        assert [r["ci95 low"], r["ci95 high"]] == pytest.approx(s["ci95"])
        assert r["published FashionAI"] == PUBLISHED[catalog.models[name].published_name]["FashionAI"]
    assert rows["random (seed 0)"]["published DARN"] == PUBLISHED["Random"]["DARN"]
    # the best of each column is marked, and it is the maximum of the models (random left out)
    best = max(payload["models"].values(), key=lambda r: r["overall"])
    first = re.search(r'data-split="shipped"><th scope="row"[^>]*>.*?</th>(<td[^>]*>.*?</td>)', html).group(1)
    assert html.count('class="pf-best"') >= 1 + len(payload["dataset"]["n_queries"])
    overall_cells = re.findall(r'<tr data-model="([^"]+)" data-split="shipped"><th[^>]*>.*?</th><td( class="pf-best")?',
                               html)
    assert [n for n, b in overall_cells if b] == [n for n, r in payload["models"].items()
                                                  if round(r["overall"], 2) == round(best["overall"], 2)]
    assert "95% interval" in first and f'{best["overall"]:.2f}' in html
    assert "| ASEN (shipped) |" in intervals


def test_a_model_without_shipped_numbers_is_listed_then_measured_on_the_gallery_with_progress(shipped, tmp_path):
    catalog = shipped["catalog"]
    torch.manual_seed(7)  # other weights: its fingerprint matches nothing shipped
    ft = tmp_path / "ft"
    save_checkpoint(build_model("csn", "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48), ft)
    assert tab_results.measure_button(catalog)["visible"] is False  # every model has numbers: no button
    catalog.add_checkpoint("ft-csn", ft)
    try:
        assert tab_results.measure_button(catalog)["visible"] is True
        html, data, _ = tab_results.results_view(catalog)
        assert _rows(html, "shipped") == list(MODELS)
        assert 'data-model="ft-csn" data-split="pending"' in html and "press Measure" in html
        assert data.to_dict("records")[-1]["model"] == "ft-csn (CSN)"
        calls = []
        html, data, intervals = tab_results.results(catalog, lambda f, desc: calls.append((f, desc)))
        assert calls == [(0.0, "measuring ft-csn on the gallery's test split (1 of 1)")]  # asen was shipped
        assert _rows(html, "gallery") == ["ft-csn"] and "pending" not in html
        assert tab_results.measure_button(catalog)["visible"] is False
        gallery_rows = html[html.index('data-split="gallery"'):]
        assert "pf-best" not in gallery_rows  # a model alone on its split is the best of nothing
        assert f"gallery's own test split ({catalog.num_items} images" in unescape(html)
        row = next(r for r in data.to_dict("records") if r["model"] == "ft-csn (CSN)")
        assert row["measured on"] == "gallery test" and row["overall"] == pytest.approx(
            catalog.measured("ft-csn")["overall"]) and row["published FashionAI"] == PUBLISHED["CSN"]["FashionAI"]
        assert [r["model"] for r in data.to_dict("records") if r["measured on"] == "gallery test"] == [
            "ft-csn (CSN)", "random (seed 0)"]
        assert "| ft-csn (CSN) (gallery) |" in intervals
        # measured once: the next view (a page load) shows it without measuring
        assert _rows(tab_results.results_view(catalog)[0], "gallery") == ["ft-csn"]
    finally:
        catalog.models = {n: e for n, e in catalog.models.items() if n != "ft-csn"}


def test_changed_weights_or_an_unreadable_file_are_never_shown_as_shipped(shipped, tmp_path):
    catalog = shipped["catalog"]
    results = shipped["root"] / "results.json"
    good = results.read_text()
    try:
        data = json.loads(good)
        data["models"]["asen"]["fingerprint"] = "0" * 64
        ship_results.record_digest(results, json.dumps(data))  # shipped so, with its digest
        html = tab_results.results_view(catalog)[0]
        assert _rows(html, "shipped") == ["triplet"] and 'data-model="asen" data-split="pending"' in html
        ship_results.record_digest(results, "{half a fi")
        assert numbers.shipped_results(catalog) is None
        assert 'data-split="shipped"' not in tab_results.results_view(catalog)[0]
    finally:
        ship_results.record_digest(results, good)
    # a renamed folder with the same weights keeps its numbers (matched by fingerprint)
    assert numbers.shipped_for(json.loads(good), "asen-copy", catalog.models["asen"].fingerprint) == \
        json.loads(good)["models"]["asen"]


def test_no_model_and_the_models_list(shipped, tmp_path):
    catalog = shipped["catalog"]
    md = tab_results.models_markdown(catalog)
    assert str(catalog.checkpoints_root) not in md and f"`{catalog.checkpoints_root.name}`" in md
    assert all(f"**{catalog.models[n].label}**" in md for n in MODELS)
    empty = Catalog(tmp_path / "none", catalog.cache_root, gallery=TINY_GALLERY).load()
    assert "make checkpoints" in tab_results.results_view(empty)[0]
    with pytest.raises(QueryError, match="No trained model checkpoint was found"):
        tab_results.results(empty)


def test_short_names_wrap_and_stay_readable():
    assert [tab_results.short_name(a) for a in ("skirt_length", "neckline_design", "colour", "baseColour",
                                                "masterCategory")] == ["skirt", "neckline", "colour",
                                                                       "base Colour", "master Category"]
