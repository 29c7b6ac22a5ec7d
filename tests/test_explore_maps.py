"""Explore's readable maps: one row per model, its main map first, layers blended in the page, the ground-truth
outline on every panel, plans cut to their heaviest columns, numbers in words; the handler without Gradio."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from conftest import TINY_GALLERY, save_app_checkpoints
from PIL import Image

from profashion.evaluation.localisation import localisation_score
from profashion.explain.explanation import Explanation, Map, patch_labels
from profashion.explain.render import CMAP, colour_hex, colour_layer, gradient_css, outline_layer, top_columns
from profashion.retrieval.search import QueryError
from profashion.ui.explore_maps import (
    MODE_JS,
    OPACITY_JS,
    TABLE_JS,
    localisation_words,
    maps_html,
    model_view,
    number_words,
    percent,
    plan_view,
)

gr = pytest.importorskip("gradio")
from profashion.explorer import Catalog  # noqa: E402
from profashion.ui import tab_explore  # noqa: E402

ATTRS = ["sleeve_length", "colour", "collar_design"]


def decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def explanation(h: int = 32) -> Explanation:
    """Every kind of map once: a full-size heatmap peaked at the top-left, a coarse 4x4 copy, two heads, labels with
    a selection, a 3 x 16 plan whose queried row (1) is heaviest at columns 5 and 9, a box, and a share."""
    yy, xx = np.mgrid[0:h, 0:h]
    heat = np.exp(-((yy - 4) ** 2 + (xx - 4) ** 2) / 20.0).astype(np.float32)
    coarse = heat.reshape(4, h // 4, 4, h // 4).mean((1, 3))
    plan = np.full((3, 16), 0.01, np.float32)
    plan[1, 5], plan[1, 9] = 0.5, 0.3
    labels = (yy // (h // 2) * 2 + xx // (h // 2)).astype(np.int32)
    return Explanation((
        Map("heatmap", "heatmap", heat, "where it looked"),
        Map("attention", "heatmap", coarse, "the coarse attention"),
        Map("heads", "heatmaps", np.stack([coarse, coarse.T]), "one map per head"),
        Map("superpixels", "labels", labels, "the regions", selection=((0, 0.9), (3, 0.1))),
        Map("plan", "matrix", plan, "the transport plan", rows="attribute", columns="patch (row-major, 4 x 4)",
            row_labels=tuple(f"attribute {i}" for i in range(3)), col_labels=patch_labels((4, 4)),
            row_attributes=(0, 1, 2), highlight_row=1),
        Map("crop", "box", (0, 0, h // 2, h // 2), "the crop"),
    ), numbers={"prefix_attention": 5.1e-14}, number_about={"prefix_attention": "The share of attention on [CLS]."})


def image(h: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, h, 3), dtype=np.uint8)


def test_a_models_view_puts_its_main_map_first_and_scores_it_in_words():
    mask = np.zeros((32, 32), bool)
    mask[:8, :8] = True  # the top-left corner: where the heatmap peaks
    ex = explanation()
    v = model_view("m", "m (asen)", ex, image(), mask, "sleeve_length", ATTRS, about="ASEN: ...")
    assert v.panels[0].key == "heatmap" and v.panels[0].heat.startswith("data:image/jpeg")
    assert v.panels[0].score == pytest.approx(localisation_score(ex.heatmap, mask)) and v.panels[0].peak is True
    assert v.share == pytest.approx(100 * 64 / 1024)
    coarse = next(p for p in v.panels if p.key == "attention")
    assert coarse.coarse and coarse.title == "attention (4×4)" and decode(coarse.heat).size == (4, 4)  # a grid
    assert [p.title for p in v.panels if p.key == "heads"] == ["heads 1/2 (4×4)", "heads 2/2 (4×4)"]
    assert [p.title for p in v.panels if p.key == "superpixels"] == ["superpixels (4)", "selected superpixels (2)"]
    crop = next(p for p in v.panels if p.key == "crop")
    assert crop.box == pytest.approx((0, 0, 50, 50))
    assert v.words[0].startswith(f"{percent(v.panels[0].score)} of the map lies on the sleeve length region, "
                                 "where a uniform map would put 6%: ")
    assert v.words[0].endswith("Its peak is on the region.")
    assert v.words[1] == "The share of attention on [CLS]: <0.1%."  # not "5.1e-14"
    assert not any("e-" in w for w in v.words)


def test_the_page_has_the_outline_on_every_panel_and_sends_each_layer_once():
    mask = np.zeros((32, 32), bool)
    mask[:8, :8] = True
    views = [model_view(n, n, explanation(), image(), mask, "sleeve_length", ATTRS) for n in ("a", "b")]
    html = maps_html({"who": "#3", "attribute": "sleeve_length", "value": "Long Sleeves"}, views)
    panels = len(re.findall(r'<figure class="pf-p[ "]', html))
    assert panels == 1 + 2 * len(views[0].panels)  # the query, then each model's panels
    assert html.count('class="pf-l pf-gt"') == panels  # the ground truth on every one of them
    assert html.count(views[0].layers[views[0].base]) == 1  # the image once (a CSS variable), not per panel
    assert html.count(views[0].layers[views[0].outline]) == 1
    assert len(re.findall(r'<div class="pf-xrow" data-model="(\w)"', html)) == 2
    # in "main map" mode only each row's first panel shows; every other panel and plan is "pf-extra"
    assert html.count('class="pf-p pf-extra"') == 2 * (len(views[0].panels) - 1)
    assert html.count('class="pf-plan pf-extra"') == 2
    assert "white line = the ground-truth region of sleeve length" in html and "linear-gradient" in html
    # no region: no outline anywhere, no localisation sentence
    bare = model_view("a", "a", explanation(), image(), None, "sleeve_length", ATTRS)
    html = maps_html({"who": "(upload)", "attribute": "sleeve_length", "value": None}, [bare])
    assert "pf-gt" not in html and "white line" not in html and "lies on" not in html
    assert bare.panels[0].score is None and bare.share is None


def test_a_plan_shows_its_heaviest_columns_for_the_queried_attribute_by_name():
    m = explanation().map("plan")
    pv = plan_view(m, np.asarray(m.data), ATTRS, k=4)
    # columns 5 and 9 of the 4 x 4 grid, heaviest first, said in words and drawn on the grid
    assert pv.columns[:2] == ["row 2, column 2", "row 3, column 2"] and pv.grid == (4, 4)
    assert pv.cells[:2] == [(1, 1), (2, 1)]
    assert len(pv.columns) == 4 and [r[0] for r in pv.rows] == ["sleeve length", "colour", "collar design"]
    assert [r[1] for r in pv.rows] == [False, True, False]  # the queried row marked
    assert pv.rows[1][2][0][0] == percent(100 * 0.5 / (0.5 + 0.3 + 14 * 0.01))  # its share of the row's mass
    assert "the 4 heaviest of 16" in pv.caption and "for the queried attribute" in pv.caption
    html = maps_html({"who": "#1", "attribute": "colour", "value": None},
                     [model_view("a", "a", explanation(), image(), None, "colour", ATTRS)])
    assert "<tr class=pf-q><th>colour ◀ queried</th>" in html
    assert 'title="row 2, column 2 of the 4×4 patch grid"' in html and html.count('class="pf-cell"') == 8  # two plans
    assert '<rect x="4.5" y="4.5" width="4" height="4"' in html  # patch (1, 1) filled, 4 px cells
    assert top_columns(np.arange(5.0), None, 8) == [0, 1, 2, 3, 4]  # few columns: all, in order


def test_colours_outline_and_words():
    ramp = np.linspace(0, 1, 11, dtype=np.float32)[None]
    layer = colour_layer(ramp * 7 + 3)  # min-max normalised
    assert layer.shape == (1, 11, 3) and layer.dtype == np.uint8
    assert "#{:02x}{:02x}{:02x}".format(*layer[0, 0]) == colour_hex(0.0) and tuple(layer[0, -1]) != tuple(layer[0, 0])
    assert layer[0, 0, 2] > layer[0, 0, 0] and layer[0, -1, 0] > layer[0, -1, 2]  # jet: blue low, red high
    assert CMAP == "jet" and gradient_css().startswith(f"linear-gradient(to right, {colour_hex(0.0)} 0%")
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    out = outline_layer(mask, (16, 16), width=2)
    assert out.shape == (16, 16, 4) and out[..., 3].any() and out[0, 0, 3] == 0 and out[8, 8, 3] == 0
    assert percent(0) == "none" and percent(0.04) == "<0.1%" and percent(0.42) == "0.4%" and percent(37.6) == "38%"
    assert localisation_words(10.0, 20.0, False, "x region").endswith("less, it looks mostly elsewhere. "
                                                                      "Its peak is off the region.")
    assert "about as much" in localisation_words(20.0, 19.0, None, "x region")
    assert number_words(2.5, "The temperature.") == "The temperature: 2.5."
    # the two controls restyle the page in the browser: a style element of their own, the maps' element
    assert "pf-explore-mode" in MODE_JS and "pf-extra" in MODE_JS and "'all maps'" in MODE_JS
    assert "pf-explore-opacity" in OPACITY_JS and "--pf-alpha" in OPACITY_JS
    assert "#explore-table { display: none" in TABLE_JS


# -- the handler, over a catalog of tiny untrained models (no Gradio server) --------------------------------

MODELS = ("asen", "triplet", "profashion")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    return Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY, max_points=60).load()


def test_explore_handler_one_row_per_model_and_the_table_for_a_gallery_item(catalog):
    ex = catalog.examples[0]  # chosen for a visible attribute: it has a region
    html, table, md = tab_explore.explore(catalog, {"path": ex.path}, ex.attribute, list(MODELS))
    assert re.findall(r'<div class="pf-xrow" data-model="([\w-]+)"', html) == list(MODELS)
    panels = len(re.findall(r'<figure class="pf-p[ "]', html))
    assert panels > 1 + len(MODELS) and html.count('class="pf-l pf-gt"') == panels
    assert html.count("of the map lies on the") == len(MODELS)
    # the table reads as the page does: the models' display names and the maps' titles in words
    assert list(table.columns) == tab_explore.TABLE_HEADERS and set(table["model"]) == {"ASEN", "Triplet", "ProFashion"}
    assert "_" not in "".join(table["map"]) and "transport map" in set(table["map"]), set(table["map"])
    assert all(0 <= r[2] <= 100 and 0 < r[3] < 100 and r[4] in ("yes", "no") for r in table.values.tolist())
    assert md.startswith(f"Query: gallery item #{ex.item}, attribute **{ex.attribute}**")
    assert "ground-truth region covers" in md
    # the same query again: every model's view comes from the cache
    n = len(tab_explore._CACHE)
    again, _, _ = tab_explore.explore(catalog, ex.path, ex.attribute, list(MODELS))
    assert again == html and len(tab_explore._CACHE) == n


def test_explore_handler_an_upload_gets_one_note_and_no_table(catalog, tmp_path):
    ex = catalog.examples[0]
    upload = tmp_path / "mirrored.png"
    with Image.open(ex.path) as im:
        im.transpose(Image.FLIP_LEFT_RIGHT).convert("RGB").save(upload)
    html, table, md = tab_explore.explore(catalog, str(upload), ex.attribute, list(MODELS))
    assert md.count("no ground-truth region") == 1 and "Query: an uploaded image" in md
    assert table.empty  # the page hides an empty table (TABLE_JS)
    assert "pf-gt" not in html and "lies on the" not in html and html.count('<div class="pf-xrow"') == len(MODELS)
    with pytest.raises(QueryError, match="(?i)no model selected"):
        tab_explore.explore(catalog, ex.path, ex.attribute, [])
    with pytest.raises(QueryError, match="hat"):
        tab_explore.explore(catalog, ex.path, "hat", list(MODELS))


def test_inner_boundaries_are_skimages_find_boundaries_inner():
    """Explore draws superpixel edges and region outlines with a four-comparison boundary (a tenth of skimage's
    time); it must mark exactly the pixels skimage's ``find_boundaries(mode="inner")`` marks."""
    from skimage.segmentation import find_boundaries

    from profashion.explain.render import inner_boundaries, segmentation_overlay

    rng = np.random.default_rng(0)
    for trial in range(100):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        lab = rng.integers(0, int(rng.integers(1, 6)), (h, w)).astype(np.int32)
        if trial % 3 == 0:  # blocky segments, as superpixels are
            lab = np.kron(rng.integers(0, 9, (6, 6)), np.ones((4, 4), int)).astype(np.int32)
        assert np.array_equal(inner_boundaries(lab), find_boundaries(lab, mode="inner")), trial
        assert np.array_equal(inner_boundaries((lab > 1).astype(np.uint8)), find_boundaries(lab > 1, mode="inner"))
    img = np.full((4, 4, 3), 200, np.uint8)
    lab = np.array([[1, 1, 2, 2]] * 4)
    out = segmentation_overlay(img, lab, selected=[1])
    assert out[0, 0].tolist() == [200, 200, 200] and out[0, 1].tolist() == [255, 235, 0]  # an edge of segment 1
    assert out[0, 3].tolist() == [60, 60, 60]  # segment 2, not selected: dimmed to 30%
