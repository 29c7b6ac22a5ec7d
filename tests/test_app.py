"""The Gradio app driven like a user through its API (gradio_client against a launched app)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GALLERY, free_port, save_app_checkpoints
from PIL import Image

from profashion.data.synth import SYNTH_SCHEMA

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from profashion.explorer import Catalog  # noqa: E402
from profashion.models import display_name  # noqa: E402
from profashion.ui import build_demo, launch_kwargs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("asen", "csn", "triplet")


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    (root / "not-a-model").mkdir()  # a folder without config.json + model.safetensors is not a model
    return root


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def catalog(ckpt_root, cache_root) -> Catalog:
    return Catalog(ckpt_root, cache_root, gallery=TINY_GALLERY, max_points=60).load()


def _launch(catalog):
    demo = build_demo(catalog)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(catalog))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def client(catalog):
    demo, url = _launch(catalog)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def _rows(table) -> list[list]:
    return table["data"] if isinstance(table, dict) else table


def test_catalog_discovers_every_checkpoint_folder(catalog, ckpt_root):
    assert catalog.names == sorted(MODELS)
    assert not catalog.skipped
    assert catalog.models["asen"].method == "asen" and "48 px" in catalog.models["asen"].describe()
    assert len(catalog.examples) == 8 and len({e[0] for e in catalog.examples}) == 8
    _examples_show_their_attribute(catalog)
    # the gallery is reused and the indexes are loaded from the cache the second time
    again = Catalog(ckpt_root, catalog.cache_root, gallery=TINY_GALLERY).load()
    assert again.names == catalog.names
    assert all(again.models[n].index_dir == catalog.models[n].index_dir for n in MODELS)


def _examples_show_their_attribute(catalog):
    """Each curated example carries its attribute, in the catalog's order; its value is known (not 'Invisible')
    and its ground-truth region of that attribute has pixels; captions are short: 'attribute: value'."""
    from profashion.data.masks import load_attribute_masks
    from profashion.explorer.catalog import EXAMPLE_ATTRIBUTES

    schema = catalog.dataset.schema
    assert [e.attribute for e in catalog.examples] == list(EXAMPLE_ATTRIBUTES)
    for e in catalog.examples:
        a = schema.attribute_index(e.attribute)
        value = catalog.item_values(e.item)[e.attribute]
        assert value != "Invisible" and e.caption == f"{e.attribute.replace('_', ' ')}: {value}"
        masks = load_attribute_masks(catalog.dataset.mask_path("test", e.item), schema.num_attributes)
        assert masks[a].any()


def test_every_compute_event_is_named_and_page_events_are_private(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert {"/retrieve", "/explore", "/embeddings", "/neighbours", "/results", "/galleries", "/launch_job",
            "/job_status", "/stop_job", "/resume_job", "/list_jobs"} <= set(info["named_endpoints"])
    # every query endpoint takes the gallery by name, last and optional
    for name in ("/retrieve", "/explore"):
        last = info["named_endpoints"][name]["parameters"][-1]
        assert last["parameter_name"] == "gallery" and last["parameter_has_default"]
    assert not info["unnamed_endpoints"]


def test_retrieve_returns_the_top5_of_every_model(client, catalog):
    item, path = catalog.examples[0][:2]
    found, table, status = client.predict(handle_file(path), "colour", list(MODELS), api_name="/retrieve")
    rows = _rows(table)
    assert len(found) == 3 * 5 and len(rows) == 3 * 5
    # every hit as JSON, its image a URL the app serves (the gallery image's bytes)
    first = found[0]
    assert set(first) == {"model", "label", "rank", "item", "score", "value", "hit", "image"}
    assert [(h["label"], h["rank"], h["item"]) for h in found] == [(r[0], r[1], r[5]) for r in rows]
    with urllib.request.urlopen(client.src + first["image"], timeout=30) as r:
        assert r.read() == Path(catalog.item_path(first["item"])).read_bytes()
    colour = SYNTH_SCHEMA.attribute_index("colour")
    query_value = catalog.query_value(item, colour)
    assert f"gallery item #{item}" in status and query_value in status  # an upload of a gallery image is recognised
    for name in MODELS:
        mine = [r for r in rows if r[0] == display_name(name)]  # the model's one name for people ("ASEN")
        assert [r[1] for r in mine] == [1, 2, 3, 4, 5]
        scores = [r[2] for r in mine]
        assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
        for r in mine:
            assert r[3] in SYNTH_SCHEMA.values[colour]
            assert r[4] == ("✓" if r[3] == query_value else "✗")
            assert r[5] != item  # the query is not its own result
    assert found[0]["label"] == "ASEN" and found[0]["rank"] == 1
    assert [h["hit"] for h in found] == [r[4] == "✓" for r in rows]
    with urllib.request.urlopen(client.src + found[-1]["image"], timeout=30) as r, Image.open(io.BytesIO(r.read())) as im:
        assert im.size[0] > 40 and im.mode in ("RGB", "RGBA")


def test_explore_draws_every_models_maps_with_localisation(client, catalog, tmp_path):
    # an example chosen for a visible local attribute: its ground-truth region exists
    item, path, _, attribute = catalog.examples[0]
    html, table, md = client.predict(handle_file(path), attribute, list(MODELS), api_name="/explore")
    # one row per model (its main map first, every panel with the ground-truth outline), in the page's HTML
    assert re.findall(r'<div class="pf-xrow" data-model="([\w-]+)"', html) == list(MODELS)
    panels = len(re.findall(r'<figure class="pf-p[ "]', html))
    assert panels >= 1 + 2 * len(MODELS) and html.count('class="pf-l pf-gt"') == panels
    rows = _rows(table)
    assert {r[0] for r in rows} == {display_name(n) for n in MODELS}
    assert {r[1] for r in rows} >= {"heatmap"}
    for r in rows:
        assert 0.0 <= r[2] <= 100.0 and 0.0 < r[3] < 100.0 and r[4] in ("yes", "no")
    assert "ground-truth region covers" in md
    # an upload that is not a gallery image: the maps, but no region to score
    upload = tmp_path / "mirrored.jpg"
    with Image.open(path) as im:
        im.transpose(Image.FLIP_LEFT_RIGHT).convert("RGB").save(upload, quality=90)
    html, table, md = client.predict(handle_file(str(upload)), attribute, ["asen"], api_name="/explore")
    assert html.count('<div class="pf-xrow"') == 1 and "pf-gt" not in html and not _rows(table)
    assert md.count("no ground-truth region") == 1


def test_embeddings_projects_two_models_with_disentanglement_numbers(client, catalog):
    text, md_a, md_b, agree = client.predict("asen", "csn", "colour", "tsne", api_name="/embeddings")
    assert isinstance(text, str)  # JSON text, as the HTML component's API says (a string)
    data = json.loads(text)
    assert [p["model"] for p in data["plots"]] == ["asen", "csn"] and "in common on average" in agree
    for plot, md, name in zip(data["plots"], (md_a, md_b), ("asen", "csn")):
        assert display_name(name) in md
        knn, chance = (float(x) for x in re.search(r"kNN accuracy \*\*([\d.]+)%\*\* \(chance ([\d.]+)%\)", md).groups())
        sil = float(re.search(r"silhouette \*\*(-?[\d.]+)\*\*", md).group(1))
        assert 0 <= knn <= 100 and 0 < chance <= 100 and -1 <= sil <= 1
        assert sorted(plot["items"]) == list(range(catalog.num_items))  # every item knows its colour
        assert len(plot["x"]) == catalog.num_items and all(len(nn) == 5 for nn in plot["nn"])
    # the second call is served from the projection cache
    _, md_a2, _, _ = client.predict("asen", "csn", "colour", "tsne", api_name="/embeddings")
    assert "(cached)" in md_a2
    html, md = client.predict("asen", "csn", "colour", 3, api_name="/neighbours")
    assert html.count('class="pf-item') == 10 and 'data-item="3"' in html and "Item #3" in md


def test_results_measures_map_beside_random(client):
    html, table, intervals = client.predict(api_name="/results")
    rows = _rows(table)
    assert [r[0] for r in rows] == [*map(display_name, MODELS), "random (seed 0)"]
    for r in rows:
        assert r[1] == "gallery test" and r[3] <= r[2] <= r[4] and 0.0 <= r[2] <= 100.0
        assert len(r) == 5 + SYNTH_SCHEMA.num_attributes + 3
    assert 'data-split="gallery"' in html and "| ASEN (gallery) |" in intervals


def test_bad_requests_get_one_clear_message_and_the_app_keeps_serving(client, catalog, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a picture")
    with pytest.raises(AppError, match="not an image we can read"):
        client.predict(handle_file(str(fake)), "colour", list(MODELS), api_name="/retrieve")
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 8000)).save(huge, "PNG")
    with pytest.raises(AppError, match="9000x8000 pixels"):
        client.predict(handle_file(str(huge)), "colour", list(MODELS), api_name="/retrieve")
    with pytest.raises(AppError, match="not an image we can read"):
        client.predict(handle_file(str(fake)), "colour", list(MODELS), api_name="/explore")
    path = catalog.examples[1][1]
    with pytest.raises(AppError, match="(?i)no model selected"):
        client.predict(handle_file(path), "colour", [], api_name="/retrieve")
    with pytest.raises(AppError, match="hat"):
        client.predict(handle_file(path), "hat", list(MODELS), api_name="/retrieve")
    with pytest.raises(AppError, match="(?i)greater than maximum|item must be"):
        client.predict("asen", "csn", "colour", 10_000, api_name="/neighbours")
    gallery, _, _ = client.predict(handle_file(path), "colour", ["csn"], api_name="/retrieve")
    assert len(gallery) == 5


def test_a_query_naming_a_server_file_is_refused_alike_whether_it_exists_or_not(client, catalog, tmp_path):
    """A query is a JSON path the caller chose (its events skip Gradio's preprocessing, and Gradio checks only
    files with its "meta"): a file outside what the app serves is never read, kept, linked or told apart from a
    missing one (second hostile probe: /etc/passwd was kept by the share link and served back to anyone)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(secret)  # a readable image: only its place refuses it
    missing = tmp_path / "missing.png"
    uploads = catalog.cache_root / "uploads"
    before = sorted(uploads.glob("*")) if uploads.is_dir() else []
    answers = {dict: [], str: []}  # a bare string is refused by Gradio itself, before the handler: alike too
    for path in (str(secret), str(missing), "/etc/passwd", str(secret.parent / ".." / secret.parent.name / "secret.png")):
        for query in ({"path": path}, path):
            for api in ("/retrieve", "/explore", "/export"):
                args = (query, "colour", list(MODELS)) if api != "/export" else (query, "colour", ["csn"])
                with pytest.raises(AppError) as err:
                    client.predict(*args, api_name=api)
                answers[type(query)].append(str(err.value))
    assert len(set(answers[dict])) == 1 and "not an image this app was given" in answers[dict][0], set(answers[dict])
    assert len(set(answers[str])) == 1, set(answers[str])
    # the share link, called directly as the page calls it (an unqueued event): no upload kept, no item named
    config = json.loads(urllib.request.urlopen(client.src + "config", timeout=30).read())
    fn = {d.get("api_name"): d["id"] for d in config["dependencies"]}

    def direct(name, data, query=""):
        body = {"fn_index": fn[name], "data": data, "session_hash": "probe"}
        req = urllib.request.Request(client.src + "gradio_api/run/predict" + query, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["data"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{name}: {exc.code} {exc.read()[:300]!r}") from None

    direct("open_link", [], "?attribute=colour")  # the page's load: this session's view is ready, as a page's is
    for query in ({"path": str(secret)}, {"path": "/etc/passwd"}, {"path": str(missing)}):
        link = direct("make_link", [catalog.name, query, "colour", ["csn"], None])[0]
        assert isinstance(link, str) and "attribute=colour" in link, link
        assert "upload=" not in link and "item=" not in link, link
    with pytest.raises(AssertionError, match="make_link: 500"):  # a bare string: Gradio refuses it before us
        direct("make_link", [catalog.name, "/etc/passwd", "colour", ["csn"], None])
    assert (sorted(uploads.glob("*")) if uploads.is_dir() else []) == before
    # a gallery example as its path still works (the app serves the gallery)
    assert len(client.predict({"path": catalog.examples[0][1]}, "colour", ["csn"], api_name="/retrieve")[0]) == 5


def test_an_app_without_checkpoints_starts_and_says_how_to_get_them(tmp_path, cache_root):
    empty = Catalog(tmp_path / "checkpoints", cache_root, gallery=TINY_GALLERY).load()
    assert empty.names == [] and "make checkpoints" in empty.empty_message()
    demo, url = _launch(empty)
    try:
        config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
        assert "No trained model checkpoint was found" in json.dumps(config)
        c = Client(url, verbose=False)
        with pytest.raises(AppError, match="make checkpoints"):
            c.predict(handle_file(empty.examples[0][1]), "colour", [], api_name="/retrieve")
    finally:
        demo.close()


def test_app_py_listens_on_port(tmp_path, cache_root):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PROFASHION_CHECKPOINTS": str(tmp_path / "none"),
           "PROFASHION_CACHE": str(tmp_path / "cache"), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("SPACE_ID", None)
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        info = None
        while time.time() < deadline and proc.poll() is None:
            try:
                info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=5).read())
                break
            except OSError:
                time.sleep(0.5)
        assert info is not None, proc.stdout.read().decode(errors="replace") if proc.poll() is not None else "timeout"
        assert {"/retrieve", "/explore", "/embeddings", "/results"} <= set(info["named_endpoints"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_explain_pictures_are_generic():
    from profashion.explain.explanation import Explanation, Map
    from profashion.explain.render import explain_panels

    rng = np.random.default_rng(0)

    def explanation(heatmap) -> Explanation:
        return Explanation((
            Map("heatmap", "heatmap", heatmap, "where the model looked"),
            Map("attention_heads", "heatmaps", torch.rand(4, 4, 4), "one map per head"),
            Map("ot_plan", "matrix", torch.rand(10, 16), "a plan"),
            Map("superpixels", "labels", torch.randint(0, 6, (32, 32), dtype=torch.int32), "regions",
                selection=((2, 0.7), (4, 0.2))),
            Map("crop_box", "box", (4, 4, 20, 24), "a box"),
        ), numbers={"prefix_attention": 0.25}, number_about={"prefix_attention": "a number"})

    maps = explanation(torch.rand(32, 32))
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    rendered, numbers = explain_panels(image, maps, mask, attribute=3, attribute_names=[f"a{i}" for i in range(10)])
    assert [r.kind for r in rendered][:2] == ["mask", "map"] and numbers == {"prefix_attention": 0.25}
    assert any(r.kind == "selection" for r in rendered)
    assert sum(r.key == "heatmap" for r in rendered) == 1
    # a map whose maximum lies inside the mask points into it; moved outside, it does not; the localisation is the
    # map's share of mass in the mask, computed here from the map itself
    inside = np.full((32, 32), 0.1, np.float32)
    inside[10, 12] = 1.0  # in mask[8:16, 8:16]
    outside = inside.copy()
    outside[10, 12], outside[30, 2] = 0.1, 1.0
    for heatmap, pointing in ((inside, True), (outside, False)):
        scored, _ = explain_panels(image, explanation(torch.from_numpy(heatmap)), mask, attribute=3,
                                   attribute_names=[f"a{i}" for i in range(10)])
        heat = next(r for r in scored if r.key == "heatmap")
        assert heat.pointing is pointing
        assert heat.localisation == pytest.approx(100 * heatmap[mask].sum() / heatmap.sum(), abs=1e-3)
        assert heat.title.endswith(f": {heat.localisation:.0f}% in mask")
    assert all(r.image.dtype == np.uint8 and r.image.ndim == 3 for r in rendered)
    buf = io.BytesIO()
    Image.fromarray(rendered[0].image).save(buf, "PNG")


def test_embedding_colours_follow_colour_names():
    """A value named after a colour is drawn in it (teaching: "red" must not be green), distinct per value."""
    from matplotlib.colors import to_rgb

    from profashion.explain.scatter import scatter_svg, value_colours

    synth = value_colours(["black", "white", "red", "yellow", "green", "blue"])
    r, g, b = to_rgb(synth["red"])
    assert r > 0.7 and g < 0.3 and b < 0.3
    r, g, b = to_rgb(synth["green"])
    assert g > r and g > b
    catalogue = ["Green", "Fluorescent Green", "Grey", "Grey Melange", "Navy Blue", "Blue", "Multi", "Mustard"]
    colours = value_colours(sorted(catalogue))
    assert len(set(colours.values())) == len(catalogue)  # every value its own colour
    assert colours["Green"] == "#008000" and colours["Navy Blue"] == "#000080"
    fg = to_rgb(colours["Fluorescent Green"])
    assert fg[1] > fg[0] and fg[1] > fg[2]  # a shade of green beside "Green"
    assert value_colours(["short", "long"]) == {"short": "#1f77b4", "long": "#ff7f0e"}  # no colour names
    svg = scatter_svg(np.array([[0, 0], [1, 1]]), [0, 1], ["white", "red"], [5, 6])
    assert 'fill="#ffffff" fill-opacity="0.85" stroke="#555"' in svg  # white shows on the white page
