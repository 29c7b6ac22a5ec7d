"""The app's galleries: the shipped real-photo gallery, loading several galleries (a broken one is skipped with its
reason), routing every query to the gallery it names, and the warning for an upload unlike the gallery."""

from __future__ import annotations

import collections
import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_GALLERY, save_app_checkpoints

from profashion.data.splits import DatasetError, load_dataset
from profashion.explorer.catalog import Catalog, GallerySpec
from profashion.explorer.galleries import Galleries, GalleryDef, default_galleries
from profashion.retrieval.search import QueryError

REPO = Path(__file__).resolve().parents[1]
PRODUCTS = REPO / "galleries" / "products"


# -- the shipped real-photo gallery ------------------------------------------------------------------------


def test_the_shipped_real_photo_gallery_is_small_labelled_and_has_its_notice():
    files = sorted((PRODUCTS / "images").iterdir())
    assert 1000 <= len(files) <= 3000
    assert sum(f.stat().st_size for f in PRODUCTS.rglob("*") if f.is_file()) <= 10 * 10**6
    notice = (PRODUCTS / "NOTICE").read_text()
    assert "Fashion Product Images" in notice and "research and teaching" in notice
    ds = load_dataset(PRODUCTS)
    s = ds.split("test")
    assert s.num_images == len(files) and not ds.missing_images("test")
    known = s.known_values(ds.schema.num_attributes)
    for a, name in enumerate(ds.schema.names):  # every value shown has enough images to retrieve
        counts = collections.Counter(int(v) for v in known[:, a] if v >= 0)
        assert counts and min(counts.values()) >= 8, name
    queries = collections.Counter(int(a) for a in s.queries[:, 1])
    assert min(queries[a] for a in range(ds.schema.num_attributes)) >= 50  # Results mean something per attribute


def test_the_real_photo_checkpoints_share_the_gallery_schema():
    from profashion.models.base import read_checkpoint_config

    schema = load_dataset(PRODUCTS).schema
    folders = [d for d in (REPO / "checkpoints" / "products").iterdir() if (d / "config.json").is_file()]
    assert len(folders) == 8
    for d in folders:
        cfg = read_checkpoint_config(d)
        assert cfg["dataset"]["name"] == "products12k", d.name
        assert cfg["dataset"]["attributes"] == list(schema.names), d.name
        assert [len(v) for v in cfg["dataset"]["values"]] == list(schema.num_values), d.name


def test_curation_keeps_only_images_whose_every_value_has_enough_images():
    sys.path.insert(0, str(REPO / "scripts"))
    from make_gallery import curate

    labels = [{0: 0, 1: 0}] * 5 + [{0: 0, 1: 1}] + [{0: 1}] * 2 + [{1: 0}] * 3
    kept = curate(labels, 3)
    count = collections.Counter((a, v) for i in kept for a, v in labels[i].items())
    assert min(count.values()) >= 3
    assert 5 not in kept and 6 not in kept and 7 not in kept  # a rare value drops its image
    assert set(range(5)) <= set(kept)


# -- several galleries ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    ckpt = save_app_checkpoints(tmp_path_factory.mktemp("ckpt"), ["csn", "triplet"])
    return ckpt, tmp_path_factory.mktemp("cache")


def _synthetic(roots, name="synthetic"):
    return GalleryDef(name, f"{name} title", "drawn garments", TINY_GALLERY, roots[0])


@pytest.fixture(scope="module")
def galleries(roots, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken")
    (broken / "meta.json").write_text("{not json")
    defs = [_synthetic(roots),
            GalleryDef("missing", "Missing", "", tmp_path_factory.mktemp("x") / "nowhere", roots[0]),
            GalleryDef("broken", "Broken", "", broken, roots[0]),
            _synthetic(roots, "again")]
    return Galleries.load(defs, cache_root=roots[1], max_points=60)


def test_a_missing_or_corrupt_gallery_is_skipped_with_its_reason_and_the_others_load(galleries):
    assert galleries.names == ["synthetic", "again"]
    assert galleries.default.name == "synthetic"
    reasons = {s.name: s.error for s in galleries.skipped}
    assert set(reasons) == {"missing", "broken"}
    assert "not available" in reasons["missing"] and "nowhere" not in reasons["missing"]
    assert "meta.json" in reasons["broken"]
    with pytest.raises(QueryError, match="missing gallery is not available.*available galleries: synthetic, again"):
        galleries.get("missing")


def test_an_unknown_gallery_is_refused_with_the_names_there_are(galleries):
    with pytest.raises(QueryError, match="unknown gallery 'nope'; available galleries: synthetic, again"):
        galleries.get("nope")
    assert galleries.get(None) is galleries.default and galleries.get("") is galleries.default


def test_galleries_describe_themselves_for_the_api(galleries):
    info = galleries.describe()
    json.dumps(info)  # the /galleries endpoint returns it as JSON
    first = info[0]
    assert first["name"] == "synthetic" and first["available"] and first["ground_truth_regions"]
    assert first["attributes"] == galleries.default.attributes
    assert {m["name"] for m in first["models"]} == {"csn", "triplet"}
    assert all(m["about"] for m in first["models"])
    assert [g["name"] for g in info if not g["available"]] == ["missing", "broken"]


def test_the_default_galleries_of_a_checkout():
    defs = default_galleries(REPO)
    assert [d.name for d in defs] == ["synthetic", "products"]
    assert defs[0].gallery == GallerySpec() and defs[0].checkpoints == REPO / "checkpoints"
    assert defs[1].gallery == PRODUCTS and defs[1].checkpoints == REPO / "checkpoints" / "products"
    assert "{n} real e-commerce product photos" in defs[1].description


def _gallery_file(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": "profashion-gallery/1", "name": folder.name, "title": folder.name.title(),
              "description": "d", "images": ".", "checkpoints": folder.name, **fields}
    (folder / "gallery.json").write_text(json.dumps({k: v for k, v in record.items() if v is not None}))
    return folder


def test_galleries_are_found_by_their_gallery_json_in_its_order(tmp_path):
    """A new gallery is a folder with a gallery.json: no code names it (issue 26)."""
    _gallery_file(tmp_path / "galleries" / "zeta", order=0)
    _gallery_file(tmp_path / "galleries" / "alpha", order=5, images={"generate": {"n_test": 30, "size": 48}})
    _gallery_file(tmp_path / "galleries" / "beta", order=5, checkpoints="shared/beta")
    (tmp_path / "galleries" / "no-description").mkdir()  # a folder without the file is not a gallery
    defs = default_galleries(tmp_path, tmp_path / "ck")
    assert [d.name for d in defs] == ["zeta", "alpha", "beta"]
    assert defs[0].gallery == tmp_path / "galleries" / "zeta" and defs[0].checkpoints == tmp_path / "ck" / "zeta"
    assert defs[1].gallery == GallerySpec(n_test=30, size=48)
    assert defs[2].checkpoints == tmp_path / "ck" / "shared" / "beta"


@pytest.mark.parametrize(("fields", "says"), [
    ({"format": "other/1"}, "is not a gallery description"),
    ({"name": "../etc"}, "must be 1-40 letters"),
    ({"name": None}, "'name' must be a string"),
    ({"checkpoints": "../../etc"}, "under the checkpoints root"),
    ({"checkpoints": "/etc"}, "under the checkpoints root"),
    ({"images": "/etc"}, "'images' must be"),
    ({"images": {"generate": {"n_test": "many"}}}, "whole numbers"),
    ({"images": {"generate": {"rm_rf": 1}}}, "whole numbers"),
    ({"order": "first"}, "'order' must be a number"),
])
def test_a_damaged_gallery_json_is_one_sentence_naming_its_field(tmp_path, fields, says):
    _gallery_file(tmp_path / "galleries" / "g", **fields)
    with pytest.raises(DatasetError, match=re.escape(says)) as err:
        default_galleries(tmp_path)
    assert str(err.value).startswith("g/gallery.json") and str(tmp_path) not in str(err.value)


def test_a_gallery_json_that_is_not_json_or_huge_or_a_name_twice_is_refused(tmp_path):
    folder = _gallery_file(tmp_path / "galleries" / "g")
    (folder / "gallery.json").write_text("{" * 100_000)
    with pytest.raises(DatasetError, match="g/gallery.json cannot be read"):
        default_galleries(tmp_path)
    (folder / "gallery.json").write_bytes(b" " * (65 * 1024))
    with pytest.raises(DatasetError, match="g/gallery.json cannot be read"):
        default_galleries(tmp_path)
    _gallery_file(folder)
    _gallery_file(tmp_path / "galleries" / "h", name="g")
    with pytest.raises(DatasetError, match="two galleries are called 'g'"):
        default_galleries(tmp_path)


def test_a_shipped_gallery_folder_is_never_written_to(roots, tmp_path):
    folder = tmp_path / "shipped"
    shutil.copytree(PRODUCTS, folder, ignore=lambda d, names: [n for n in names if n.endswith(".jpg")][20:])
    # keep only the first images: the loader must say the others are missing
    with pytest.raises(Exception, match="lacks its images"):
        Catalog(tmp_path / "none", roots[1], gallery=folder, name="p").load()


def test_a_checkpoint_of_another_gallery_is_listed_with_its_reason(roots, tmp_path):
    c = Catalog(REPO / "checkpoints" / "products", roots[1], gallery=TINY_GALLERY, name="s", max_points=60)
    c.discover = lambda: [e for e in Catalog.discover(c) if e.name == "csn"]  # one is enough
    c.load()
    assert not c.models and c.skipped and "cannot serve the gallery" in c.skipped[0].error


# -- routing by gallery --------------------------------------------------------------------------------------


def test_events_route_to_the_named_gallery_and_name_their_parameters(galleries):
    import gradio as gr

    from profashion.ui.common import guard

    seen = []

    def handler(catalog, query, attribute):
        seen.append(catalog.name)
        return attribute

    event = guard(handler, (QueryError,), galleries)
    params = inspect.signature(event).parameters
    assert list(params) == ["query", "attribute", "gallery"] and params["gallery"].default == "synthetic"
    assert event("q", "colour", "again") == "colour" and seen == ["again"]
    with pytest.raises(gr.Error, match="Unknown gallery"):
        event("q", "colour", "nope")


def test_switching_gallery_updates_examples_attributes_and_models(galleries):
    from profashion.ui.demo import switch_gallery
    from profashion.ui.tab_embeddings import gallery_values

    about, query, examples, attribute, models, _, model_a, model_b, item_box = switch_gallery(
        galleries, "again", [((), gallery_values)])
    cat = galleries.get("again")
    assert "again title" in about and query == cat.examples[0].path
    assert attribute["value"] == cat.examples[0].attribute and attribute["choices"]
    assert models["value"] == cat.names and model_a["value"] == cat.names[0]
    assert item_box["maximum"] == cat.num_items - 1 and item_box["value"] == cat.examples[0].item


# -- an upload unlike the gallery --------------------------------------------------------------------------


def test_an_upload_unlike_the_gallery_is_flagged_in_retrieve_and_a_gallery_image_is_not(galleries, tmp_path):
    from PIL import Image

    from profashion.ui import tab_retrieve

    cat = galleries.default
    assert cat.unfamiliar_warning(Image.new("RGB", (64, 64))) == ""  # no check made yet: no warning
    check = cat.ensure_familiarity()
    assert check is not None and check.fingerprint and len(check.features) == cat.num_items
    kept = list((cat.cache_root / "familiar").glob(f"{cat.name}-*.npz"))
    assert len(kept) == 1
    cat.familiarity = None
    assert cat.ensure_familiarity().threshold == pytest.approx(check.threshold, abs=1e-3)  # read back, not made
    yy = np.linspace(0, 1, 240)[:, None, None]
    gradient = tmp_path / "landscape.png"
    Image.fromarray((np.array([30, 160, 60]) + (np.array([200, 230, 255]) - [30, 160, 60]) * yy
                     * np.ones((1, 320, 1))).astype(np.uint8)).save(gradient)
    _, _, status, hits = tab_retrieve.retrieve(cat, str(gradient), "colour", cat.names)
    assert "looks unlike the" in status and "pf-warning" in hits["html"]
    garment = tmp_path / "garment.png"  # a gallery image, uploaded under another name: its own gallery's kind
    shutil.copy(cat.item_path(3), garment)
    Image.open(garment).convert("RGB").resize((150, 150)).save(garment)  # other bytes: not identified as item 3
    _, _, status, hits = tab_retrieve.retrieve(cat, str(garment), "colour", cat.names)
    assert "an uploaded image" in status and "looks unlike" not in status and "pf-warning" not in hits["html"]


# -- a case you can share -------------------------------------------------------------------------------------


def test_a_link_reopens_the_case_it_was_made_for(galleries, tmp_path):
    from urllib.parse import parse_qsl

    from profashion.explorer.share import UploadStore, link_query, read_link

    uploads = UploadStore(tmp_path / "uploads")
    cat = galleries.get("again")
    item = 7
    tabs = ("retrieve", "explore")
    q = link_query(cat, cat.item_path(item), "colour", ["triplet"], "explore", uploads, tabs)
    assert "tab=" not in link_query(cat, cat.item_path(item), "colour", ["triplet"], "explore", uploads, ())
    state = read_link(galleries, dict(parse_qsl(q)), uploads, tabs)
    assert (state.gallery, state.attribute, state.models, state.tab) == ("again", "colour", ["triplet"], "explore")
    assert state.query == cat.item_path(item) and not state.ignored and state.note() == ""
    assert "/" not in q.replace("%2F", "/").split("item=")[0]  # no server path in the link

    # an upload is kept by content: the link names its hash, and reopens a copy of it
    upload = tmp_path / "mine.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(upload)
    q = link_query(cat, str(upload), "colour", [], "retrieve", uploads)
    params = dict(parse_qsl(q))
    assert len(params["upload"]) == 64 and str(tmp_path) not in q
    state = read_link(galleries, params, uploads)
    assert Path(state.query).read_bytes() == upload.read_bytes()


def test_a_link_naming_what_does_not_exist_opens_the_default_and_says_what_was_ignored(galleries, tmp_path):
    from profashion.explorer.share import UploadStore, read_link

    uploads = UploadStore(tmp_path / "uploads")
    state = read_link(galleries, {"gallery": "nope", "item": "99999", "attribute": "wingspan",
                                  "models": "triplet,ghost", "tab": "secret"}, uploads, ("retrieve",))
    assert state.gallery is None and state.query is None and state.attribute is None and state.tab is None
    assert state.models == ["triplet"]
    note = state.note()
    for word in ("gallery 'nope'", "item '99999'", "attribute 'wingspan'", "model 'ghost'", "tab 'secret'"):
        assert word in note, word
    state = read_link(galleries, {"upload": "../../etc/passwd"}, uploads)  # never a path: a hash or nothing
    assert state.query is None and "no longer kept" in state.note()
    assert read_link(galleries, {"upload": "a" * 64}, uploads).query is None


def test_the_upload_store_is_bounded(tmp_path):
    from PIL import Image

    from profashion.explorer.share import UploadStore

    store = UploadStore(tmp_path / "u", max_files=3)
    digests = []
    for i in range(5):
        f = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(f)
        digests.append(store.keep(f))
        os.utime(store.find(digests[-1]), (1000 + i, 1000 + i))
    assert len(list((tmp_path / "u").iterdir())) == 3
    assert store.find(digests[0]) is None and store.find(digests[-1]) is not None
    assert store.keep(tmp_path / "missing.png") is None


def test_export_writes_the_comparison_as_png_and_json_without_server_paths(galleries, tmp_path):
    from PIL import Image

    from profashion.explorer.export import export_case

    cat = galleries.default
    ex = cat.examples[0]
    png, js = export_case(cat, ex.path, ex.attribute, cat.names, tmp_path / "exports")
    record = json.loads(js.read_text())
    assert record["gallery"] == "synthetic" and record["attribute"] == ex.attribute
    assert record["query"] == {"item": ex.item, "value": cat.query_value(ex.item, cat.attribute_index(ex.attribute))}
    assert set(record["models"]) == set(cat.names)
    for m in record["models"].values():
        assert [h["rank"] for h in m["hits"]] == [1, 2, 3, 4, 5]
        assert m["hit_count"] == sum(1 for h in m["hits"] if h["hit"])
        assert "main_map" in m
    text = js.read_text()
    assert str(tmp_path) not in text and str(cat.cache_root) not in text and "/" not in record["gallery_title"]
    with Image.open(png) as im:
        assert im.width > 500 and im.height > 150 * len(cat.names)
    with pytest.raises(QueryError, match="pick a query"):
        export_case(cat, None, ex.attribute, cat.names, tmp_path / "exports")


def test_a_published_model_joins_the_gallery_it_was_trained_for(galleries, roots):
    from profashion.ui import tab_finetune

    assert galleries.for_checkpoint(roots[0] / "csn") is galleries.default  # synthetic attributes
    products_ckpt = REPO / "checkpoints" / "products" / "csn"
    assert galleries.for_checkpoint(products_ckpt) is galleries.default  # no products gallery here: the default
    assert galleries.for_checkpoint(roots[0] / "nowhere") is galleries.default
    # the Fine-tune tab's model lists are the chosen gallery's
    again = galleries.get("again")
    tab_finetune._add(galleries, "csn (fine-tuned)", roots[0] / "csn")
    assert "csn (fine-tuned)" in galleries.default.models and "csn (fine-tuned)" not in again.models
    assert tab_finetune._serving(galleries, "csn (fine-tuned)")
    from profashion.explorer.jobs import JobManager

    jobs = JobManager(roots[1] / "jobs", [roots[1]])
    seen = tab_finetune.tick(galleries, jobs, None, {}, [], None, "again")[-1]
    assert seen["names"] == list(again.models)
    seen = tab_finetune.tick(galleries, jobs, None, {}, [], None, "synthetic")[-1]
    assert "csn (fine-tuned)" in seen["names"]


def test_the_landing_page_finds_where_the_models_disagree(galleries):
    from profashion.ui.tab_retrieve import disagreement

    cat = galleries.get("again")
    path, attribute, line = disagreement(cat)
    ex = next(e for e in cat.examples if e.path == path)
    assert attribute == ex.attribute and "Where the models disagree" in line and "/5" in line
    assert disagreement(cat) == (path, attribute, line)  # kept: the second click runs nothing


def test_the_upload_store_is_bounded_in_bytes_too(tmp_path, monkeypatch):
    from profashion.explorer import share

    monkeypatch.setattr(share, "MAX_UPLOAD_STORE_BYTES", 2500)
    store = share.UploadStore(tmp_path / "u", max_files=100)
    kept = []
    for i in range(4):
        f = tmp_path / f"{i}.bin.png"
        f.write_bytes(bytes([i]) * 1000)
        kept.append(store.keep(f))
        os.utime(store.find(kept[-1]), (1000 + i, 1000 + i))
    assert sum(f.stat().st_size for f in (tmp_path / "u").iterdir()) <= 2500
    assert store.find(kept[-1]) is not None and store.find(kept[0]) is None


def test_the_cli_exports_a_case_from_the_galleries_the_app_serves(tmp_path, monkeypatch, capsys):
    """``profashion galleries`` and ``profashion export`` stand on the same objects as the app (issue 26): a
    checkout's galleries with their models, and the app's export."""
    from profashion import cli

    repo = tmp_path / "repo"
    spec = {k: getattr(TINY_GALLERY, k) for k in ("n_train", "n_valid", "n_test", "size", "seed")}
    _gallery_file(repo / "galleries" / "tiny", images={"generate": spec}, checkpoints=".")
    save_app_checkpoints(repo / "checkpoints", ("asen", "csn"))
    monkeypatch.delenv("PROFASHION_CHECKPOINTS", raising=False)
    assert cli.main(["galleries", "--repo", str(repo)]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("tiny: Tiny, 60 images; attributes ") and "asen" in listed and "csn" in listed
    out = tmp_path / "out"
    assert cli.main(["export", "--repo", str(repo), "--item", "7", "--attribute", "colour", "--models", "csn",
                     "--out", str(out)]) == 0
    png, js = sorted(out.glob("*/profashion-tiny-colour.*"))[::-1]
    record = json.loads(js.read_text())
    assert record["query"]["item"] == 7 and list(record["models"]) == ["csn"] and record["gallery"] == "tiny"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad input: one line, exit status 2
    for argv, says in ((["--item", "60"], "--item must be from 0 to 59"), ([], "--image FILE or as --item N"),
                       (["--item", "1", "--gallery", "nope"], "unknown gallery 'nope'; the galleries are tiny"),
                       (["--image", str(tmp_path / "none.png")], "no image file")):
        code = cli.main(["export", "--repo", str(repo), "--attribute", "colour", "--out", str(out), *argv])
        err = capsys.readouterr().err
        assert code == 2 and says in err and err.count("\n") == 1, (argv, err)
