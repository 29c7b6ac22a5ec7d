"""Indexes shipped beside the checkpoints (issue 22, item 1): used when they match the checkpoint and the gallery,
refused with one sentence (and the gallery indexed as before) when they do not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_GALLERY, save_app_checkpoints

from profashion.retrieval import shipped
from profashion.retrieval.index import GalleryIndex

pytest.importorskip("gradio")
from profashion.explorer.catalog import GALLERY_SPLIT, Catalog  # noqa: E402

MODELS = ("asen", "triplet")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Two untrained checkpoints, each with its gallery index and its t-SNE projections packed beside it."""
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    source = Catalog(root, tmp_path_factory.mktemp("cache-source"), gallery=TINY_GALLERY, use_shipped=False).load()
    for name, entry in source.models.items():
        projections = [source.projection(name, a, "tsne") for a in source.attributes[:2]]
        shipped.pack(source.engine.index(name), source.dataset, entry.checkpoint / shipped.FOLDER, projections)
    return root, source


def _load(root: Path, cache: Path):
    logs = []
    return Catalog(root, cache, gallery=TINY_GALLERY).load(log=logs.append), logs


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "checkpoints"))


def test_a_matching_shipped_index_is_used_and_answers_as_the_built_one(packed, tmp_path):
    root, source = packed
    catalog, logs = _load(root, tmp_path / "cache")
    assert set(catalog.models) == set(MODELS) and not catalog.skipped
    assert all(e.shipped for e in catalog.models.values())
    assert not any(m.startswith("indexing the gallery") for m in logs), logs  # nothing was embedded
    for name in MODELS:
        built = np.asarray(source.engine.index(name).embeddings)
        served = np.asarray(catalog.engine.index(name).embeddings)
        assert served.dtype == np.float32 and served.shape == built.shape
        assert np.abs(served - built).max() < 2e-3  # float16, renormalised
    query = catalog.item_path(3)
    got, _ = catalog.search(query, "colour", list(MODELS))
    want, _ = source.search(query, "colour", list(MODELS))
    for name in MODELS:
        assert [h.item for h in got[name].hits] == [h.item for h in want[name].hits]
    # the shipped projections are in the cache: the same points, read, not computed
    a = source.attributes[0]
    proj = catalog.projection("asen", a, "tsne")
    assert proj.cached
    np.testing.assert_allclose(proj.xy, source.projection("asen", a, "tsne").xy)


def test_a_projection_not_shipped_is_computed_as_before(packed, tmp_path):
    root, _ = packed
    catalog, _ = _load(root, tmp_path / "cache")
    proj = catalog.projection("asen", catalog.attributes[-1], "tsne")
    assert not proj.cached and len(proj.items) > 0


def _damage_weights(root):
    p = root / "asen" / "config.json"
    cfg = json.loads(p.read_text())
    cfg["note"] = "fine-tuned since"
    p.write_text(json.dumps(cfg))


def _damage_embeddings(root):
    p = root / "asen" / shipped.FOLDER / "embeddings.npy"
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))


def _other_gallery(root):
    p = root / "asen" / shipped.FOLDER / "manifest.json"
    m = json.loads(p.read_text())
    m["dataset"]["images"] = "0" * 64
    p.write_text(json.dumps(m))


def _bad_manifest(root):
    (root / "asen" / shipped.FOLDER / "manifest.json").write_text('{"format": 1, "files": ')


@pytest.mark.parametrize(("damage", "why"), [
    (_damage_weights, "it was made with other weights than the checkpoint's"),
    (_damage_embeddings, "its embeddings.npy is missing or damaged"),
    (_other_gallery, "the gallery's image files differ from the ones it was made of"),
    (_bad_manifest, "its manifest.json cannot be read"),
])
def test_a_shipped_index_that_does_not_match_is_refused_and_the_gallery_indexed(packed, tmp_path, damage, why):
    root = _copy(packed[0], tmp_path)
    damage(root)
    catalog, logs = _load(root, tmp_path / "cache")
    assert set(catalog.models) == set(MODELS)  # served all the same
    assert not catalog.models["asen"].shipped and catalog.models["triplet"].shipped
    refusals = [m for m in logs if "shipped index" in m]
    assert len(refusals) == 1 and why in refusals[0], logs
    assert str(tmp_path) not in refusals[0]  # the log line is public text
    assert any(m.startswith("indexing the gallery with asen") for m in logs), logs
    index = GalleryIndex.load(catalog.models["asen"].index_dir)
    assert "shipped" not in index.manifest  # built from the images


def test_images_digest_sees_a_replaced_image_that_names_and_labels_do_not(packed, tmp_path):
    _, source = packed
    ds = source.dataset
    before = shipped.images_digest(ds, GALLERY_SPLIT)
    img = Path(ds.image_path(GALLERY_SPLIT, 0))
    copy = Path(shutil.copytree(ds.root, tmp_path / "gallery"))
    target = copy / img.relative_to(ds.root)
    target.write_bytes(Path(ds.image_path(GALLERY_SPLIT, 1)).read_bytes())
    from profashion.data.splits import load_dataset

    assert shipped.images_digest(load_dataset(copy), GALLERY_SPLIT) != before


def test_pack_refuses_a_projection_of_a_sample(packed, tmp_path):
    _, source = packed
    sample = Catalog(source.checkpoints_root, source.cache_root, gallery=TINY_GALLERY, max_points=10,
                     use_shipped=False).load()
    proj = sample.projection("asen", sample.attributes[0], "tsne")
    with pytest.raises(shipped.ShippedIndexError, match="sample"):
        shipped.pack(sample.engine.index("asen"), sample.dataset, tmp_path / "out", [proj])
    assert not (tmp_path / "out").exists()


def test_indexing_several_models_runs_their_shared_trunk_once_per_image(packed, tmp_path, monkeypatch):
    """build_indexes: the same embeddings as indexing each model alone, with one trunk pass per image for all."""
    from profashion.models.base import RetrievalModel
    from profashion.retrieval.index import build_index, build_indexes

    root, source = packed
    calls = []
    real = RetrievalModel.shared_trunk_features

    def counted(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(RetrievalModel, "shared_trunk_features", counted)
    outs = [tmp_path / name for name in MODELS]
    build_indexes([root / name for name in MODELS], source.dataset, outs, split=GALLERY_SPLIT, batch_size=16)
    assert sum(calls) == source.num_items  # once per image, not once per image and model
    for name, out in zip(MODELS, outs):
        together = np.asarray(GalleryIndex.load(out, checkpoint=root / name, dataset=source.dataset).embeddings)
        build_index(root / name, source.dataset, tmp_path / f"{name}-alone", split=GALLERY_SPLIT, backend="fp32")
        alone = np.asarray(GalleryIndex.load(tmp_path / f"{name}-alone").embeddings)
        np.testing.assert_allclose(together, alone, atol=1e-5)
