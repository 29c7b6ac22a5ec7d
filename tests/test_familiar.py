"""The "looks unlike the gallery" check (profashion.retrieval.familiar): on whole-image ImageNet features, with the
gallery as its own reference; kept on disk under its fingerprint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from profashion.data.synth import render_garment
from profashion.explorer.catalog import Catalog
from profashion.retrieval.familiar import FamiliarityCheck, image_features

REPO = Path(__file__).resolve().parents[1]


def _garments(seed: int, n: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(render_garment(rng, size=160).image) for _ in range(n)]


def _not_garments() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    yy = np.linspace(0, 1, 240)[:, None, None] * np.ones((1, 320, 1))
    text = Image.new("RGB", (320, 240), "white")
    d = ImageDraw.Draw(text)
    for line in range(8):
        d.text((10, 10 + 28 * line), "attribute specific fashion retrieval", fill="black")
    shapes = Image.new("RGB", (240, 240), (40, 90, 200))
    ImageDraw.Draw(shapes).ellipse((40, 40, 160, 150), fill=(250, 200, 0))
    return {"gradient": Image.fromarray((np.array([30, 160, 60]) + np.array([170, 70, 195]) * yy).astype(np.uint8)),
            "text": text, "noise": Image.fromarray(rng.integers(0, 256, (240, 320, 3)).astype(np.uint8)),
            "shapes": shapes}


@pytest.fixture(scope="module")
def checks():
    products = sorted((REPO / "galleries" / "products" / "images").glob("*.jpg"))[:64]
    return {"garments": FamiliarityCheck.from_images(_garments(1, 64), fingerprint="g"),
            "products": FamiliarityCheck.from_images([Image.open(p) for p in products], fingerprint="p")}


def test_the_threshold_is_the_galleries_own_leave_one_out_quantile():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    feats = centre + 0.3 * rng.normal(size=(200, 32))
    check = FamiliarityCheck(feats, k=5, quantile=0.05, margin=0.0)
    loo = check.leave_one_out()
    assert np.mean(loo < check.threshold) == pytest.approx(0.05, abs=0.01)
    assert not check.unfamiliar(centre[None])[0]  # the cluster's middle
    assert check.unfamiliar(-centre[None])[0]  # the opposite direction
    lenient = FamiliarityCheck(feats, k=5, quantile=0.05, margin=0.1)  # the margin lowers the threshold
    assert lenient.threshold == pytest.approx(check.threshold - 0.1)
    with pytest.raises(ValueError, match="at least two"):
        FamiliarityCheck(feats[:1])


def test_images_that_are_not_garments_are_flagged_and_unseen_garments_are_not(checks):
    garments = checks["garments"]
    others = _not_garments()
    flagged = garments.unfamiliar(image_features(others.values()))
    assert flagged.all(), dict(zip(others, flagged))
    unseen = garments.unfamiliar(image_features(_garments(2, 16)))  # the generator, another seed
    assert unseen.sum() <= 1, unseen
    # and a product photo is unlike the drawn garments, but like the product photos
    photo = Image.open(sorted((REPO / "galleries" / "products" / "images").glob("*.jpg"))[200])
    f = image_features([photo])
    assert garments.unfamiliar(f)[0] and not checks["products"].unfamiliar(f)[0]


def test_the_warning_names_the_other_gallery_when_the_image_looks_like_it(checks):
    products = SimpleNamespace(title="Real product photos", familiarity=checks["products"])
    garments = SimpleNamespace(title="Synthetic garments", familiarity=checks["garments"], siblings=[products])
    products.siblings = [garments]
    photo = Image.open(sorted((REPO / "galleries" / "products" / "images").glob("*.jpg"))[200])
    warning = Catalog.unfamiliar_warning(garments, photo)
    assert "unlike the synthetic garments gallery" in warning and "real product photos one: try" in warning
    assert Catalog.unfamiliar_warning(products, photo) == ""
    gradient = _not_garments()["gradient"]
    warning = Catalog.unfamiliar_warning(garments, gradient)
    assert "unlike every gallery here" in warning


def test_a_kept_check_is_read_back_only_for_its_own_gallery(checks, tmp_path):
    path = tmp_path / "g.npz"
    checks["garments"].save(path)
    again = FamiliarityCheck.load(path, "g", 64)
    assert again is not None and again.threshold == pytest.approx(checks["garments"].threshold, abs=1e-3)
    assert FamiliarityCheck.load(path, "other gallery", 64) is None
    assert FamiliarityCheck.load(path, "g", 65) is None  # another number of images
    path.write_bytes(b"PK\x03\x04 not a zip")
    assert FamiliarityCheck.load(path, "g", 64) is None
    assert FamiliarityCheck.load(tmp_path / "missing.npz", "g", 64) is None


def test_a_querys_features_are_computed_once_per_content(monkeypatch):
    import profashion.retrieval.familiar as familiar

    calls = []
    real = familiar.image_features
    monkeypatch.setattr(familiar, "image_features", lambda imgs: calls.append(1) or real(imgs))
    img = _not_garments()["shapes"]
    first = familiar.query_features(img)
    again = familiar.query_features(img.copy())  # the same picture, another object: no second forward pass
    assert calls == [1] and np.array_equal(first, again) and first.shape == (1, 1280)
    familiar.query_features(_not_garments()["text"])
    assert calls == [1, 1]
