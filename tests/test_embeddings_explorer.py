"""The Embeddings tab's handlers (the explorer's data, the neighbours panel, the projections' warm-up), called
directly on a catalog, without launching Gradio."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import TINY_GALLERY, save_app_checkpoints

from profashion.retrieval.search import QueryError

gr = pytest.importorskip("gradio")

from profashion.explorer import Catalog  # noqa: E402
from profashion.ui import tab_embeddings  # noqa: E402
from profashion.ui.common import K, file_url  # noqa: E402

MODELS = ("asen", "triplet")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    return Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY, max_points=60).load()


def test_warm_projections_computes_every_model_and_attribute_then_finds_them_cached(catalog, monkeypatch):
    said = []
    first = tab_embeddings.warm_projections(catalog, log=said.append)
    n = len(MODELS) * len(catalog.attributes)
    assert first["projections"] + len(first["failed"]) == n and first["computed"] == first["projections"] > 0
    assert said and said[-1].startswith(f"projections ready: {first['projections']}")
    again = tab_embeddings.warm_projections(catalog)
    assert again["cached"] == again["projections"] == first["projections"] and again["computed"] == 0
    assert catalog.projection("asen", "colour", "tsne").cached

    def projected_again(*args, **kwargs):
        raise AssertionError("a warmed plot is projected again")

    monkeypatch.setattr(catalog, "projection", projected_again)  # the plots are in memory now
    plot, md = tab_embeddings.plot_data(catalog, "triplet", "texture", "tsne", "b")
    assert plot["key"] == "b" and plot["model"] == "triplet" and len(plot["items"]) == 60
    assert md.startswith("**Triplet**, texture, tsne: kNN accuracy") and md.endswith("(cached)")


def test_explorer_data_carries_points_neighbours_values_and_urls(catalog):
    steps = []
    with tab_embeddings.reporting(lambda f, desc="": steps.append((f, desc))):
        text, md_a, md_b, agree = tab_embeddings.embeddings(catalog, "asen", "triplet", "colour", "tsne")
    data = json.loads(text)  # JSON text: one string for Gradio to pass on, the explorer's script parses it
    assert [p["model"] for p in data["plots"]] == list(MODELS) and [p["key"] for p in data["plots"]] == ["a", "b"]
    assert [f for f, _ in steps] == [0.0, 0.5] and "asen" in steps[0][1]
    assert data["attribute"] == "colour" and data["k"] == K and data["attributes"] == catalog.attributes
    a = catalog.attribute_index("colour")
    for p, md in zip(data["plots"], (md_a, md_b)):
        proj = catalog.projection(p["model"], "colour", "tsne")
        assert p["items"] == proj.items.tolist() and len(p["x"]) == len(p["y"]) == len(p["items"])
        assert min(p["x"] + p["y"]) >= 0 and max(p["x"] + p["y"]) <= 1
        assert f"**{catalog.models[p['model']].label}**, colour, tsne: kNN accuracy" in md and "(cached)" in md
        # each point's neighbours are the ones /neighbours finds (the full space, the whole gallery)
        for i in (0, 7, len(p["items"]) - 1):
            expected = catalog.neighbours(p["model"], "colour", p["items"][i], K)
            assert p["nn"][i] == [j for j, _ in expected]
            assert p["sim"][i] == pytest.approx([s for _, s in expected], abs=1e-3)
            assert p["items"][i] not in p["nn"][i]
    # every item shown (a point or a neighbour) has its values of every attribute and its image's URL
    shown = {i for p in data["plots"] for i in p["items"]} | {j for p in data["plots"] for r in p["nn"] for j in r}
    assert {int(i) for i in data["items"]} == shown
    for item in (0, 5, max(shown)):
        entry = data["items"][str(item)]
        assert data["url_prefix"] + entry["u"] == file_url(catalog.item_path(item))
        names = {data["attributes"][x]: data["value_names"][x][v] for x, v in enumerate(entry["v"]) if v >= 0}
        assert names == catalog.item_values(item)
    assert data["url_prefix"].startswith("gradio_api/file=")  # Gradio's file route: a URL, never the image
    assert all(len(data["fills"][x]) == len(data["value_names"][x]) == len(data["strokes"][x])
               for x in range(len(data["attributes"])))
    assert data["fills"][a][data["value_names"][a].index("red")].startswith("#ff")
    m = re.search(r"have \*\*([\d.]+)\*\* of 5 in common on average \(two random sets of 5: ([\d.]+)\)", agree)
    assert m and 0 <= float(m.group(1)) <= 5 and float(m.group(2)) == pytest.approx(25 / 59, abs=0.01)


def test_one_model_draws_one_plot(catalog):
    text, md_a, md_b, agree = tab_embeddings.embeddings(catalog, None, "triplet", "texture", "tsne")
    data = json.loads(text)
    assert [p["key"] for p in data["plots"]] == ["b"] and data["attribute"] == "texture"
    assert md_a == "_no model chosen_" and "Triplet" in md_b and agree == ""


def test_the_explorers_json_text_has_no_number_a_browser_cannot_parse():
    text = tab_embeddings.json_text({"x": [0.5, float("nan")], "s": {"a": float("inf"), "b": (1, -float("inf"))}})
    assert json.loads(text) == {"x": [0.5, None], "s": {"a": None, "b": [1, None]}} and "NaN" not in text


def test_agreement_counts_shared_neighbours():
    p = {"label": "A", "items": [1, 2], "nn": [[2, 3, 4], [1, 3, 5]]}
    q = {"label": "B", "items": [1, 2], "nn": [[2, 3, 9], [7, 8, 9]]}
    assert "**3.00** of 3 in common" in tab_embeddings.agreement([p, p], k=3)
    md = tab_embeddings.agreement([p, q], k=3)
    assert "**1.00** of 3 in common" in md and "0 of 2 items have the same 3 in both" in md
    assert tab_embeddings.agreement([p], k=3) == ""


def test_unit_square_keeps_the_aspect():
    xy = tab_embeddings.unit_square(np.array([[0.0, 0.0], [4.0, 1.0], [2.0, 0.5]]))
    assert xy[:, 0].min() == 0 and xy[:, 0].max() == 1
    assert xy[1, 1] - xy[0, 1] == pytest.approx(0.25)  # one factor for both axes
    assert tab_embeddings.unit_square(np.ones((3, 2))).tolist() == [[0.5, 0.5]] * 3


def test_bad_choices_are_one_sentence(catalog):
    with pytest.raises(QueryError, match="no model selected"):
        tab_embeddings.embeddings(catalog, None, None, "colour", "tsne")
    with pytest.raises(QueryError, match="unknown model 'nope'"):
        tab_embeddings.embeddings(catalog, "nope", "asen", "colour", "tsne")
    with pytest.raises(QueryError, match="no attribute chosen"):
        tab_embeddings.embeddings(catalog, "asen", None, "", "tsne")
    with pytest.raises(QueryError, match="unknown projection 'pca'"):
        tab_embeddings.embeddings(catalog, "asen", None, "colour", "pca")


def test_neighbours_panel_pins_the_item_and_lists_k_per_model(catalog):
    html, md = tab_embeddings.neighbours(catalog, "asen", "triplet", "colour", 4)
    value = catalog.item_values(4)["colour"]
    assert md.startswith(f"**Item #4**: colour = {value}") and md.count("neighbours share the value") == 2
    assert '<figure class="pf-query" data-item="4">' in html and f"<b>{value}</b>" in html
    rows = re.findall(r'<div class="pf-row" data-model="([^"]+)"', html)
    assert rows == list(MODELS)
    items = [int(i) for i in re.findall(r'<button type="button" class="pf-item pf-\w+" data-item="(\d+)"', html)]
    assert items == [j for m in MODELS for j, _ in catalog.neighbours(m, "colour", 4, K)]
    for m in MODELS:  # the summary counts the same-value neighbours the marks show
        row = html.split(f'data-model="{m}"')[1].split('<div class="pf-row"')[0]
        same = row.count("✓ same")
        assert f"{same}/{K} share the value" in row
    assert file_url(catalog.item_path(4)) in html
    with pytest.raises(QueryError, match="no item id"):
        tab_embeddings.neighbours(catalog, "asen", None, "colour", None)
    with pytest.raises(QueryError, match="item must be a gallery item id between 0 and 59"):
        tab_embeddings.neighbours(catalog, "asen", None, "colour", 60)


def test_a_click_names_its_item():
    assert tab_embeddings.clicked_item({"item": 7, "plot": "a"}) == 7
    with pytest.raises(QueryError, match="click on a point"):
        tab_embeddings.clicked_item({})
