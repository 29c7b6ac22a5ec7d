"""Gallery indexes and search: what is indexed, what is refused, what a bad query gets."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from profashion.cli import main
from profashion.data.loading import SplitImages, to_model_input
from profashion.data.splits import load_dataset
from profashion.models.base import build_model, save_checkpoint
from profashion.retrieval import index as index_mod
from profashion.retrieval.index import GalleryIndex, GalleryIndexError, build_index, gallery_items
from profashion.retrieval.search import QueryError, RetrievalEngine

TINY = {"image_size": 48, "resize": 48}


@pytest.fixture(scope="module")
def ckpts(tiny_synth, tmp_path_factory):
    ds = load_dataset(tiny_synth)
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    out = {}
    for name in ("asen", "csn"):
        out[name] = save_checkpoint(build_model(name, "demo", ds.schema.num_values, **TINY), root / name)
    return out


@pytest.fixture(scope="module")
def asen_index(tiny_synth, ckpts, tmp_path_factory):
    return build_index(ckpts["asen"], tiny_synth, tmp_path_factory.mktemp("ix") / "asen", batch_size=16, backend="fp32")


def test_index_holds_the_models_embeddings_of_every_image(tiny_synth, ckpts, asen_index):
    from profashion.models.base import load_model

    ds = load_dataset(tiny_synth)
    ix = GalleryIndex.load(asen_index, checkpoint=ckpts["asen"], dataset=ds)
    n = ds.split("test").num_images
    assert len(ix) == n and ix.schema.names == ds.schema.names
    assert ix.values.shape == (n, ds.schema.num_attributes)
    assert np.array_equal(ix.values, ds.split("test").known_values(ds.schema.num_attributes))
    model = load_model(ckpts["asen"]).eval()
    images = SplitImages(ds, "test", model.preprocess)
    with torch.no_grad():
        expected = model.embed_all(to_model_input(images.get(np.arange(n)), model.preprocess)).numpy()
    np.testing.assert_allclose(ix.embeddings, expected, atol=1e-5)
    # every attribute's faiss index returns the exact inner-product ranking
    for a in (0, 9):
        scores, ids = ix.search_vectors(expected[:3, a], a, k=4)
        sims = expected[:3, a] @ expected[:, a].T
        np.testing.assert_array_equal(ids, np.argsort(-sims, axis=1, kind="stable")[:, :4])
        np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :4], atol=1e-5)
    manifest = json.loads((asen_index / "manifest.json").read_text())
    assert manifest["model"] == "asen" and manifest["items"] == n and manifest["dim"] == 64


def test_search_returns_ranked_hits_with_values_and_leaves_the_query_out(tiny_synth, asen_index):
    ds = load_dataset(tiny_synth)
    engine = RetrievalEngine()
    engine.add("asen", asen_index, backend="fp32")
    query = ds.image_path("test", 3)
    colour = ds.schema.attribute_index("colour")
    r = engine.search("asen", query, "colour", k=5)
    assert r.attribute == "colour" and len(r.hits) == 5 and r.error is None
    assert [h.rank for h in r.hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(r.hits, r.hits[1:]))
    assert 3 not in [h.item for h in r.hits]  # the query itself is not its own result
    qv = ds.split("test").known_values(10)[3, colour]
    assert r.query_value == ds.schema.values[colour][qv]
    for h in r.hits:
        assert h.value == h.values["colour"] and h.match == (h.value == r.query_value)
    self_hit = engine.search("asen", query, "colour", k=1, exclude_query=False)
    assert self_hit.hits[0].item == 3 and self_hit.hits[0].score == pytest.approx(1.0, abs=1e-4)
    # an uploaded copy of the same image finds the same neighbours (bytes, not a gallery path)
    up = engine.search("asen", query.read_bytes(), "colour", k=6)
    assert up.query_value is None and up.hits[0].item == 3
    assert [h.item for h in up.hits[1:]] == [h.item for h in r.hits]


def test_several_models_answer_the_same_query(tiny_synth, ckpts, asen_index, tmp_path):
    csn = build_index(ckpts["csn"], tiny_synth, tmp_path / "csn", batch_size=64, backend="fp32")
    engine = RetrievalEngine()
    engine.add("asen", asen_index, backend="fp32")
    engine.add("csn", csn, backend="fp32")
    query = load_dataset(tiny_synth).image_path("test", 0)
    out = engine.search_all(query, "sleeve_length", k=3)
    assert list(out) == ["asen", "csn"]
    assert {r.method for r in out.values()} == {"asen", "csn"}
    assert all(len(r.hits) == 3 and r.error is None for r in out.values())
    with pytest.raises(QueryError, match="unknown model"):
        engine.search("nope", query, "colour")
    # the two demo models share their frozen trunk: search_all runs it once, and answers as each model alone
    assert len(engine.shared_trunks(["asen", "csn"], engine.load_query(query))) == 1
    for name, r in out.items():
        alone = engine.search(name, query, "sleeve_length", k=3)
        assert [h.item for h in alone.hits] == [h.item for h in r.hits]
        np.testing.assert_allclose([h.score for h in alone.hits], [h.score for h in r.hits], atol=1e-5)
    # the next queries too (the shared trunk once ran on the input kept under the trunk's key, i.e. the FIRST query
    # ever: every later Retrieve of the app showed that query's neighbours, the query itself first at score 1.0)
    singles = {n: RetrievalEngine() for n in out}
    singles["asen"].add("asen", asen_index, backend="fp32")
    singles["csn"].add("csn", csn, backend="fp32")
    for i in (1, 2):
        other = load_dataset(tiny_synth).image_path("test", i)
        both = engine.search_all(other, "sleeve_length", k=3, exclude_query=False)
        for name, r in both.items():
            alone = singles[name].search(name, other, "sleeve_length", k=3, exclude_query=False)
            assert r.hits[0].item == i and [h.item for h in alone.hits] == [h.item for h in r.hits]
            np.testing.assert_allclose([h.score for h in alone.hits], [h.score for h in r.hits], atol=1e-5)


@pytest.mark.parametrize("name", ["asen", "csn", "triplet", "cca1", "tf-asen", "profashion"])
def test_the_embedding_from_a_shared_trunk_is_the_models_embedding(name):
    """What search_all relies on: the trunk computed by one model, the rest by another of the same trunk."""
    torch.manual_seed(0)
    model = build_model(name, "demo", [3, 4, 5], **TINY).eval()
    other = build_model("asen", "demo", [2], **TINY).eval()  # another model on the same frozen trunk
    x = torch.randn(2, 3, 48, 48)
    ids = torch.tensor([1, 2])
    with torch.no_grad():
        shared = other.shared_trunk_features(x)
        extras = tuple(model.trunk_extras(x)) if model.has_trunk_extras() else ()
        got = model.embed_from_trunk((shared, *extras) if extras else shared, ids)
        torch.testing.assert_close(got, model.embed(x, ids), atol=1e-5, rtol=0)


def test_bad_queries_get_one_clear_error_and_the_engine_keeps_serving(tiny_synth, asen_index):
    engine = RetrievalEngine()
    engine.add("asen", asen_index, backend="fp32")
    with pytest.raises(QueryError, match="not an image|cannot be read|cannot identify"):
        engine.search("asen", b"this is not an image", "colour")
    with pytest.raises(QueryError):
        engine.search("asen", b"", "colour")
    with pytest.raises(QueryError, match="no query image"):
        engine.search("asen", None, "colour")
    with pytest.raises(QueryError, match="unknown attribute 'hat'"):
        engine.search("asen", load_dataset(tiny_synth).image_path("test", 0), "hat")
    with pytest.raises(QueryError, match="positive integer"):
        engine.search("asen", load_dataset(tiny_synth).image_path("test", 0), "colour", k=0)
    with pytest.raises(QueryError, match="not found"):
        engine.search_all("/no/such/image.png", "colour")
    bomb = io.BytesIO()
    Image.new("L", (9000, 8000)).save(bomb, "PNG")
    with pytest.raises(QueryError, match="pixels"):
        engine.search("asen", bomb.getvalue(), "colour")
    # odd but valid images are answered
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), "RGBA")
    gray = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L")
    deep = Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16))
    exif = io.BytesIO()
    img = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    ex = img.getexif()
    ex[0x0112] = 6
    img.save(exif, "JPEG", exif=ex)
    for q in (rgba, gray, deep, exif.getvalue(), np.zeros((20, 20, 3), np.uint8)):
        r = engine.search("asen", q, "colour", k=2)
        assert len(r.hits) == 2 and np.isfinite([h.score for h in r.hits]).all()


def test_an_index_from_another_checkpoint_or_dataset_is_refused(tiny_synth, ckpts, asen_index, tmp_path):
    with pytest.raises(GalleryIndexError, match="another checkpoint"):
        GalleryIndex.load(asen_index, checkpoint=ckpts["csn"])
    engine = RetrievalEngine()
    with pytest.raises(GalleryIndexError, match="another checkpoint"):
        engine.add("x", asen_index, checkpoint=ckpts["csn"], backend="fp32")
    ds = load_dataset(tiny_synth)
    other = dataclasses.replace(ds, splits={**ds.splits, "test": ds.splits["valid"]})
    with pytest.raises(GalleryIndexError, match="another dataset"):
        GalleryIndex.load(asen_index, dataset=other)


def test_corrupt_or_missing_index_files_are_refused(asen_index, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(asen_index, bad)
    with open(bad / "attr_03.faiss", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    with pytest.raises(GalleryIndexError, match="attr_03.faiss is corrupt"):
        GalleryIndex.load(bad)
    (bad / "attr_03.faiss").unlink()
    with pytest.raises(GalleryIndexError, match="missing"):
        GalleryIndex.load(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(GalleryIndexError, match="corrupt"):
        GalleryIndex.load(bad)
    with pytest.raises(GalleryIndexError, match="not an index folder"):
        GalleryIndex.load(tmp_path / "nowhere")


def test_existing_index_needs_overwrite_and_empty_gallery_is_refused(tiny_synth, ckpts, asen_index):
    with pytest.raises(GalleryIndexError, match="--overwrite"):
        build_index(ckpts["asen"], tiny_synth, asen_index, backend="fp32")
    ds = load_dataset(tiny_synth)
    empty = dataclasses.replace(ds.splits["test"], filenames=[], labels=np.zeros((0, 3), np.int64),
                                queries=None, candidates=None)
    with pytest.raises(GalleryIndexError, match="nothing to index"):
        gallery_items(dataclasses.replace(ds, splits={**ds.splits, "test": empty}), "test")
    with pytest.raises(GalleryIndexError, match="unknown index kind"):
        build_index(ckpts["asen"], tiny_synth, asen_index.parent / "x", kind="lsh", backend="fp32")


def test_indexing_resumes_after_an_interruption(tiny_synth, ckpts, tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "CHUNK", 16)
    calls = []
    real = index_mod.embed_images
    monkeypatch.setattr(index_mod, "embed_images", lambda *a, **k: calls.append(1) or real(*a, **k))

    def stop_after_two(c, n):
        if c == 1:
            raise KeyboardInterrupt

    out = tmp_path / "ix"
    with pytest.raises(KeyboardInterrupt):
        build_index(ckpts["asen"], tiny_synth, out, on_chunk=stop_after_two, backend="fp32")
    assert not out.exists() and len(list((tmp_path / "ix.partial").glob("chunk_*.npy"))) == 2
    calls.clear()
    build_index(ckpts["asen"], tiny_synth, out, backend="fp32")
    n = load_dataset(tiny_synth).split("test").num_images
    assert len(calls) == -(-n // 16) - 2  # only the chunks not done before
    assert not (tmp_path / "ix.partial").exists()
    ref = build_index(ckpts["asen"], tiny_synth, tmp_path / "ref", backend="fp32")
    np.testing.assert_allclose(GalleryIndex.load(out).embeddings, GalleryIndex.load(ref).embeddings, atol=1e-6)


@pytest.mark.parametrize("kind,storage", [("hnsw", "fp32"), ("ivf", "sq8"), ("flat", "fp16")])
def test_approximate_indexes_record_their_recall(tiny_synth, ckpts, tmp_path, kind, storage):
    out = build_index(ckpts["asen"], tiny_synth, tmp_path / kind, kind=kind, storage=storage, backend="fp32")
    ix = GalleryIndex.load(out)
    recall = ix.manifest["index"]["recall_at_5"]
    assert set(recall) == set(ix.schema.names) and all(0 <= v <= 100 for v in recall.values())
    assert min(recall.values()) >= 60.0  # 48 gallery images: every kind finds most true neighbours
    scores, ids = ix.search_vectors(np.asarray(ix.embeddings[:2, 0]), 0, k=5)
    assert ids.shape == (2, 5) and (ids >= 0).all()


def test_index_and_search_commands(tiny_synth, ckpts, tmp_path, capsys):
    out = tmp_path / "ix"
    assert main(["index", "--checkpoint", str(ckpts["asen"]), "--dataset", str(tiny_synth), "--out", str(out),
                 "--quiet"]) == 0
    assert "indexed 48 images x 10 attributes" in capsys.readouterr().out
    query = load_dataset(tiny_synth).image_path("test", 5)
    js = tmp_path / "r.json"
    assert main(["search", "--index", str(out), "--image", str(query), "--attribute", "Sleeve Length", "-k", "3",
                 "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    hits = res["results"][0]["hits"]
    assert res["results"][0]["attribute"] == "sleeve_length" and [h["rank"] for h in hits] == [1, 2, 3]
    assert main(["search", "--index", str(out), "--image", str(tmp_path / "r.json"), "--attribute", "colour"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["index", "--checkpoint", str(ckpts["asen"]), "--dataset", str(tiny_synth), "--out", str(out),
                 "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_projections_are_seeded_cached_and_scored(asen_index, tmp_path):
    import shutil

    from profashion.retrieval.projection import attribute_projection, disentanglement, disentanglement_table

    root = tmp_path / "ix"
    shutil.copytree(asen_index, root)
    ix = GalleryIndex.load(root)
    p = attribute_projection(ix, "colour", "tsne", seed=0)
    labelled = np.flatnonzero(ix.values[:, ix.schema.attribute_index("colour")] >= 0)
    assert np.array_equal(p.items, labelled) and p.xy.shape == (len(labelled), 2) and np.isfinite(p.xy).all()
    assert not p.cached and 0 <= p.knn_accuracy <= 100 and -1 <= p.silhouette <= 1
    again = attribute_projection(GalleryIndex.load(root), "colour", "tsne", seed=0)
    assert again.cached and np.array_equal(again.xy, p.xy) and again.knn_accuracy == p.knn_accuracy
    cache = next((root / "projections").glob("tsne-colour-*.npz"))
    cache.write_bytes(b"damaged")
    redo = attribute_projection(GalleryIndex.load(root), "colour", "tsne", seed=0)
    assert not redo.cached and np.allclose(redo.xy, p.xy, atol=1e-4)
    u = attribute_projection(ix, "colour", "umap", seed=0, max_points=20, cache=False)
    assert u.xy.shape == (20, 2) and np.isfinite(u.xy).all()
    with pytest.raises(GalleryIndexError, match="unknown projection"):
        attribute_projection(ix, "colour", "pca")
    table = disentanglement_table(ix)
    assert set(table) == set(ix.schema.names)
    # the measure itself: separated clusters score 100 and 1, shuffled labels score near chance
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    centres = np.eye(8)[:3] * 5
    x = centres[y] + rng.normal(size=(90, 8)) * 0.1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    good = disentanglement(x, y)
    assert good["knn_accuracy"] == 100.0 and good["silhouette"] > 0.9 and good["chance"] == pytest.approx(100 / 3)
    bad = disentanglement(x, rng.permutation(y))
    assert bad["knn_accuracy"] < 60 and bad["silhouette"] < 0.1


def test_onnx_runtime_backend_matches_pytorch(tiny_synth, ckpts, asen_index, tmp_path):
    from profashion.models.base import load_model
    from profashion.retrieval.accel import Embedder

    out = build_index(ckpts["asen"], tiny_synth, tmp_path / "onnx", backend="onnx")
    ix = GalleryIndex.load(out)
    assert ix.manifest["backend"]["used"] == "onnx"
    np.testing.assert_allclose(ix.embeddings, GalleryIndex.load(asen_index).embeddings, atol=1e-5)
    graphs = list((out / "accel").glob("*.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    engine = RetrievalEngine()
    engine.add("asen", out, backend="auto")  # reuses the graph exported while indexing
    assert engine.model("asen").backend == "onnx" and graphs[0].stat().st_mtime_ns == stamp
    query = load_dataset(tiny_synth).image_path("test", 7)
    ref = RetrievalEngine()
    ref.add("asen", asen_index, backend="fp32")
    assert [h.item for h in engine.search("asen", query, "colour").hits] == \
        [h.item for h in ref.search("asen", query, "colour").hits]
    model = load_model(ckpts["asen"])
    x = torch.randn(4, 3, 48, 48)
    bf = Embedder(model, "bf16")
    assert bf.backend == "bf16" and torch.allclose(bf.embed_all(x), model.embed_all(x), atol=2e-2)
    with pytest.raises(ValueError, match="unknown inference backend"):
        Embedder(model, "tpu")


def test_project_command(asen_index, tmp_path, capsys):
    import shutil

    root = tmp_path / "ix"
    shutil.copytree(asen_index, root)
    out = tmp_path / "p.json"
    assert main(["project", "--index", str(root), "--attribute", "colour,texture", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kNN acc %" in text and "colour" in text and "texture" in text
    res = json.loads(out.read_text())["attributes"]
    assert set(res) == {"colour", "texture"} and len(res["colour"]["xy"]) == len(res["colour"]["items"])
    assert main(["project", "--index", str(root), "--attribute", "hat"]) == 2


def test_a_query_is_embedded_once_per_model_and_asked_many_times(tiny_synth, ckpts, asen_index):
    """Embed once, ask many: another attribute, another k or the same picture uploaded again runs no model."""
    engine = RetrievalEngine()
    engine.add("asen", asen_index, backend="fp32")
    calls = []
    model = engine.entry("asen").model.model
    original = model.embed_all
    model.embed_all = lambda x: calls.append(1) or original(x)
    path = load_dataset(tiny_synth).image_path("test", 3)
    first = engine.search_all(path, "sleeve_length", k=3)["asen"]
    again = engine.search_all(path.read_bytes(), "colour", k=5)["asen"]  # same content, another attribute
    same = engine.search_all(path, "sleeve_length", k=3)["asen"]
    assert len(calls) == 1
    assert [h.item for h in same.hits] == [h.item for h in first.hits] and len(again.hits) == 5
    # the cached answer is the model's own embedding of that attribute
    x = engine.entry("asen").model.preprocess.to_tensor(engine.load_query(path))[None]
    with torch.no_grad():
        direct = original(x)[0, load_dataset(tiny_synth).schema.attribute_index("colour")].numpy()
    np.testing.assert_allclose(engine.embed_query("asen", path, "colour"), direct, atol=1e-6)
    assert len(calls) == 1
