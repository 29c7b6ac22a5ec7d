"""One damaged file costs only what it describes (issue items 8 and 12): a checkpoint's config.json with a malformed
field skips that model, a damaged or edited results.json costs its numbers (measured on demand instead), gallery
thumbnails follow their image's content, and only the allowed image formats are ever decoded."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_GALLERY, load_script, save_app_checkpoints
from PIL import EpsImagePlugin, Image

from profashion.data.images import ImageError, load_image
from profashion.data.masks import load_attribute_masks

pytest.importorskip("gradio")
from profashion.explorer import Catalog  # noqa: E402
from profashion.explorer import results as numbers  # noqa: E402
from profashion.explorer.catalog import ModelEntry  # noqa: E402
from profashion.ui import build_demo, tab_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("asen", "triplet")
ALLOWED = "PNG, JPEG, WebP, BMP, GIF or TIFF"


ship_results = load_script("scripts/ship_results.py")


def _rows(html: str, split: str) -> list[str]:
    """The models with a row in ``split``'s group ("pending": not measured yet), random left out."""
    return [n for n in re.findall(rf'data-model="([^"]+)" data-split="{split}"', html) if n != tab_results.RANDOM]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, tiny_synth, cache_root):
    """Two tiny checkpoints with their numbers shipped (results.json and its digest in manifest.json)."""
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    ship_results.ship(root, tiny_synth, "test", log=lambda m: None)
    catalog = Catalog(root, cache_root, gallery=TINY_GALLERY, max_points=60).load()
    return SimpleNamespace(root=root, catalog=catalog, good=(root / "results.json").read_text(),
                           base=str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def damaged_config(tmp_path_factory, cache_root):
    """asen and triplet, triplet's config.json saying ``"trainer": {"epoch": "abc"}``."""
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints-bad"), MODELS)
    cfg_path = root / "triplet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["trainer"] = {"epoch": "abc", "best": 12.5}
    cfg_path.write_text(json.dumps(cfg))
    return root


# --- item 8: a malformed field of a checkpoint's config.json -------------------------------------------------------

def test_a_malformed_trainer_epoch_skips_that_model_only_and_the_app_builds(damaged_config, cache_root,
                                                                           tmp_path_factory):
    catalog = Catalog(damaged_config, cache_root, gallery=TINY_GALLERY, max_points=60).load()
    assert list(catalog.models) == ["asen"]
    [skipped] = catalog.skipped
    assert skipped.name == "triplet"
    assert skipped.error == ("checkpoint 'triplet' is skipped: its config.json is damaged (trainer.epoch must be a "
                             "whole number from 0 to 1,000,000); copy or train the checkpoint again")
    md = tab_results.models_markdown(catalog)
    shown = re.sub(r"\\(.)", r"\1", md)  # Markdown's escapes undone: the text a visitor reads
    assert f"- ~~triplet~~: {skipped.error}" in shown
    assert str(tmp_path_factory.getbasetemp()) not in md
    demo = build_demo(catalog)  # raised ValueError (int("abc")) while the Results tab was built
    assert demo is not None


@pytest.mark.parametrize(("config", "described", "problem"), [
    ({"model": "asen", "config": {"preset": "demo", "backbone": "effnet", "image_size": 48},
      "dataset": {"name": "synth"}, "trainer": {"epoch": 2, "best": 41.236}},
     "method asen, preset demo, backbone effnet, 48 px, trained on synth, epoch 3, best valid mAP 41.24", None),
    ({"model": "asen", "config": {"preset": "demo"}, "trainer": {"epoch": "abc", "best": 3}},
     "method asen, preset demo", "trainer.epoch must be a whole number from 0 to 1,000,000"),
    ({"model": "csn", "config": {"image_size": "48"}, "trainer": {"epoch": 1.5}},
     "method csn", "config.image_size must be a whole number"),
    ({"model": "csn", "config": {}, "trainer": {"epoch": 10**12}}, "method csn",
     "trainer.epoch must be a whole number from 0 to 1,000,000"),
    ({"model": "csn", "config": {}, "trainer": {"epoch": True}}, "method csn",
     "trainer.epoch must be a whole number from 0 to 1,000,000"),
    ({"model": "csn", "config": {}, "trainer": {"epoch": 0, "best": "x"}}, "method csn, epoch 1",
     "trainer.best must be a number"),
    # a run whose first epoch was NaN records best = -Infinity: not damage, and not shown
    ({"model": "csn", "config": {}, "trainer": {"epoch": 0, "best": float("-inf")}}, "method csn, epoch 1", None),
    ({"model": "csn", "config": {}, "trainer": [1, 2]}, "method csn", "'trainer' must be an object"),
    ({"model": "csn", "config": {}, "dataset": {"name": {"x": 1}}}, "method csn",
     "dataset.name must be text of at most 200 characters"),
    ({"model": "csn", "config": [1]}, "method csn", "'config' must be an object"),
    ({"model": "csn", "config": {"backbone": None}, "dataset": None, "trainer": None}, "method csn", None),
])
def test_describe_never_raises_and_a_damaged_field_is_the_reason(config, described, problem):
    entry = ModelEntry("m", Path("m"), config)
    assert entry.describe() == described
    if problem is None:
        assert entry.error is None
    else:
        assert entry.error == (f"checkpoint 'm' is skipped: its config.json is damaged ({problem}); copy or train "
                               "the checkpoint again")


# --- item 8: results.json damaged, or edited after shipping -------------------------------------------------------

def _ship_edited(shipped, edit) -> None:
    """results.json with ``edit(data)`` applied, shipped so (its digest recorded in manifest.json)."""
    data = json.loads(shipped.good)
    edit(data)
    ship_results.record_digest(shipped.root / "results.json", json.dumps(data, indent=2) + "\n")


@pytest.mark.parametrize(("edit", "why"), [
    (lambda d: d["models"]["asen"].__setitem__("ci95", ["low", "high"]),
     "ci95 must be a pair of finite numbers from 0 to 100, the lower first"),
    (lambda d: d["models"]["asen"]["n_queries"].__setitem__("colour", "many"),
     "n_queries must give each attribute a positive whole number of queries"),
    (lambda d: d["models"]["asen"].__setitem__("overall", float("nan")),
     "overall must be a mAP: a finite number from 0 to 100"),
])
def test_a_damaged_model_row_costs_only_its_numbers(shipped, edit, why):
    catalog = shipped.catalog
    try:
        _ship_edited(shipped, edit)
        html, data, intervals = tab_results.results_view(catalog)
        assert _rows(html, "shipped") == ["triplet"]
        assert _rows(html, "pending") == ["asen"]
        assert unescape(html).count(f"The shipped numbers of ASEN are not shown ({why}): it is measured on the "
                                    "gallery's own test split on demand.") == 1
        assert shipped.base not in html and str(shipped.root) not in html and str(catalog.cache_root) not in html
        rows = {r["model"]: r for r in data.to_dict("records")}
        assert rows["ASEN"]["measured on"] == "not measured" and rows["Triplet"]["measured on"] == "shipped"
        assert "| ASEN (shipped) |" not in intervals and "| Triplet (shipped) |" in intervals
    finally:
        ship_results.record_digest(shipped.root / "results.json", shipped.good)


def test_the_app_builds_with_damaged_shipped_numbers(shipped):
    try:
        _ship_edited(shipped, lambda d: d["models"]["asen"].__setitem__("ci95", ["low", "high"]))
        assert build_demo(shipped.catalog) is not None  # raised ValueError ("low":.1f) while the tab was built
    finally:
        ship_results.record_digest(shipped.root / "results.json", shipped.good)


def test_results_edited_after_shipping_are_not_shown_as_shipped(shipped):
    catalog, path = shipped.catalog, shipped.root / "results.json"
    assert _rows(tab_results.results_view(catalog)[0], "shipped") == list(MODELS)  # as shipped: shown
    data = json.loads(shipped.good)
    data["models"]["asen"]["overall"] = 99.0  # well formed, but not what was measured
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
        assert numbers.shipped_results(catalog) is None
        html = tab_results.results_view(catalog)[0]
        assert 'data-split="shipped"' not in html and _rows(html, "pending") == list(MODELS)
        assert "99.00" not in html
        assert ("The numbers shipped with the checkpoints are not shown (results.json is not the file whose sha256 "
                "manifest.json records (it changed after it was shipped)): every model is measured on the "
                "gallery's own test split on demand.") in unescape(html)
        assert shipped.base not in html
        # no digest recorded at all: not shown either
        manifest = json.loads((shipped.root / "manifest.json").read_text())
        del manifest["results.json"]
        path.write_text(shipped.good)
        (shipped.root / "manifest.json").write_text(json.dumps(manifest))
        assert numbers.read_shipped(catalog).problem == "manifest.json records no sha256 of results.json"
    finally:
        ship_results.record_digest(path, shipped.good)
    assert _rows(tab_results.results_view(catalog)[0], "shipped") == list(MODELS)


@pytest.mark.parametrize("folder", ["checkpoints", "checkpoints/products"])
def test_the_shipped_results_match_the_digest_their_manifest_records(folder):
    root = REPO / folder
    raw = (root / "results.json").read_bytes()
    entry = json.loads((root / "manifest.json").read_text())["results.json"]
    assert entry == {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    checked = numbers.read_shipped(SimpleNamespace(checkpoints_root=root))
    assert checked.problem is None and checked.damaged == []
    assert checked.data["models"] == json.loads(raw)["models"] and checked.data["models"]


# --- item 12: image formats ------------------------------------------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"


@pytest.fixture
def no_ghostscript(monkeypatch):
    import subprocess

    from PIL import EpsImagePlugin

    def called(*args, **kwargs):
        pytest.fail("Ghostscript (or a subprocess) was run to decode an image")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", called)
    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, called)


def test_an_eps_file_is_refused_without_running_ghostscript(tmp_path, no_ghostscript):
    path = tmp_path / "garment.eps"
    path.write_bytes(EPS + b"0 0 moveto\n%%EOF\n")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert str(exc.value) == f"{path} is an EPS image; use {ALLOWED}"
    with pytest.raises(ImageError) as exc:
        load_image(path.read_bytes())
    assert str(exc.value) == f"the upload is an EPS image; use {ALLOWED}"
    with pytest.raises(ImageError, match=f"the image is an EPS image; use {ALLOWED}"):
        load_image(EpsImagePlugin.EpsImageFile(path))  # opened elsewhere by its plugin: refused before its pixels load


@pytest.mark.parametrize(("header", "fmt"), [(b"8BPS\x00\x01" + b"\x00" * 40, "a PSD"),
                                             (b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 40, "an ICO")])
def test_other_formats_pillow_knows_are_refused_by_name(header, fmt, no_ghostscript):
    with pytest.raises(ImageError) as exc:
        load_image(header)
    assert str(exc.value) == f"the upload is {fmt} image; use {ALLOWED}"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_the_allowed_formats_still_load(fmt, tmp_path, no_ghostscript):
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    path = tmp_path / f"x.{fmt.lower()}"
    picture.save(path, format=fmt)
    for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        img = load_image(source)
        assert img.mode == "RGB" and img.size == (30, 20)


def test_masks_open_png_only(tmp_path):
    bits = (np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) % 4)
    png = tmp_path / "m.png"
    Image.fromarray(bits).save(png, format="PNG")
    assert load_attribute_masks(png, 2).shape == (2, 48, 48)
    tiff = tmp_path / "t.png"  # a TIFF named .png: another decoder, refused
    Image.fromarray(bits).save(tiff, format="TIFF")
    with pytest.raises(OSError):
        load_attribute_masks(tiff, 2)


# --- item 12: thumbnails keyed by content ------------------------------------------------------------------------

def test_a_thumbnail_follows_its_image_changed_in_place_with_the_same_size_and_times(shipped, monkeypatch):
    import profashion.explorer.public as public_module

    catalog = shipped.catalog
    item = 3
    src = Path(catalog.item_path(item))
    original, st0 = src.read_bytes(), src.stat()
    picture = np.asarray(Image.open(src).convert("RGB"))
    try:
        Image.fromarray(picture).save(src, format="PNG", compress_level=0)  # stored: its size depends on w x h only
        before = src.stat()
        hashed = []
        real = public_module.sha256_file
        monkeypatch.setattr(public_module, "sha256_file", lambda p: hashed.append(p) or real(p))
        hit = catalog.thumbnail(item, True)
        miss = catalog.thumbnail(item, False)
        assert catalog.thumbnail(item, True) == hit and len(hashed) == 1  # hashed once while the file is unchanged
        old_pixels = np.asarray(Image.open(hit))

        Image.fromarray(255 - picture).save(src, format="PNG", compress_level=0)  # another picture, same bytes count
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = src.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

        new = catalog.thumbnail(item, True)
        assert new != hit and Path(new).is_file()
        assert not np.array_equal(np.asarray(Image.open(new)), old_pixels)
        assert not Path(hit).exists() and not Path(miss).exists()  # the former content's thumbnails are gone
        assert sorted(p.name for p in Path(new).parent.glob(f"{item}-*.png")) == [Path(new).name]
    finally:
        src.write_bytes(original)
        os.utime(src, ns=(st0.st_atime_ns, st0.st_mtime_ns))
