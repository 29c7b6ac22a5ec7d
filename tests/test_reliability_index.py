"""Hostile input to an index: a changed embeddings file, a degenerate attribute space, a collapsed model.

The calls that once crashed the process (scikit-learn's t-SNE on identical points) run in a subprocess, so
that a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from profashion.data.splits import load_dataset
from profashion.models.base import build_model, save_checkpoint
from profashion.retrieval.index import GalleryIndex, GalleryIndexError, build_index
from profashion.retrieval.projection import (
    DegenerateSpaceError,
    attribute_projection,
    collapsed_attributes,
    disentanglement_table,
)

TINY = {"image_size": 48, "resize": 48}
COLLAPSED = "the model's space collapsed in training"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def indexes(tiny_synth, tmp_path_factory):
    """A sound index and the index of the same model with its trainable weights (not biases) zeroed: every
    image gets the same embedding, as when training collapses."""
    ds = load_dataset(tiny_synth)
    root = tmp_path_factory.mktemp("reliability")
    torch.manual_seed(0)
    model = build_model("asen", "demo", ds.schema.num_values, **TINY)
    sound = save_checkpoint(model, root / "asen")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.ndim > 1:
                p.zero_()
    collapsed = save_checkpoint(model, root / "asen-collapsed")
    return {name: build_index(ckpt, ds, root / f"ix-{name}", batch_size=32, backend="fp32")
            for name, ckpt in (("sound", sound), ("collapsed", collapsed))}


def test_a_changed_embeddings_file_is_refused_when_first_read(indexes, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(indexes["sound"], bad)
    emb = np.load(bad / "embeddings.npy")
    np.save(bad / "embeddings.npy", emb[::-1].copy())  # a valid file of the right shape, other content
    ix = GalleryIndex.load(bad)  # the big file is checked lazily: search does not need it
    assert ix.search_vectors(emb[0, 0], 0, k=3)[1].shape == (1, 3)
    with pytest.raises(GalleryIndexError, match=r"embeddings.npy is corrupt or was changed after the index was "
                                                r"built .*; rebuild the index with `profashion index --overwrite`"):
        _ = ix.embeddings
    assert np.array_equal(GalleryIndex.load(bad, verify=False).embeddings, emb[::-1])
    assert np.array_equal(GalleryIndex.load(indexes["sound"]).embeddings, emb)

    # a manifest that leaves out the checksum of a served file is refused at load
    for name in ("embeddings.npy", "attr_01.faiss"):
        manifest = json.loads((indexes["sound"] / "manifest.json").read_text())
        del manifest["files"][name]
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(GalleryIndexError, match=f"records no checksum of {name}.*rebuild the index"):
            GalleryIndex.load(bad)


def test_degenerate_spaces_are_refused_without_crashing_the_process():
    code = """
import numpy as np
from profashion.retrieval.projection import DegenerateSpaceError, project_2d

rng = np.random.default_rng(0)
v = rng.normal(size=64)
one = np.tile(v / np.linalg.norm(v), (1000, 1))
two = one.copy()
two[::2] = rng.normal(size=64)
nan = one + rng.normal(size=one.shape) * 0.1
nan[7] = np.nan
cases = {"identical": one, "noise 1e-12": one + rng.normal(size=one.shape) * 1e-12, "zero": one * 0,
         "two points": two, "nan": nan}
for method in ("tsne", "umap"):
    for name, x in cases.items():
        try:
            project_2d(x, method)
            print(method, name, "projected")
        except DegenerateSpaceError as exc:
            print(method, name, "refused:", exc)
"""
    r = run_python(code)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == 10 and all("refused: the embeddings " in line for line in lines), r.stdout
    assert lines[0].startswith("tsne identical refused: the embeddings are all (nearly) identical (spread 0.0e+00): "
                               + COLLAPSED)
    assert "fall on only 2 distinct points among 1000 items: " + COLLAPSED in lines[3]
    assert "hold NaN or infinite values (1 of 1000 items)" in lines[4]


def test_a_collapsed_model_is_reported_not_projected(indexes):
    code = f"""
from profashion.retrieval.index import GalleryIndex
from profashion.retrieval.projection import DegenerateSpaceError, attribute_projection

ix = GalleryIndex.load({str(indexes["collapsed"])!r})
for method in ("tsne", "umap"):
    try:
        attribute_projection(ix, "colour", method, cache=False)
        print("projected")
    except DegenerateSpaceError as exc:
        print("refused:", exc)
"""
    r = run_python(code)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused: the 'colour' embeddings of model asen (checkpoint "
                                                   "asen-collapsed) are all (nearly) identical") for line in lines)
    assert all(COLLAPSED in line and "--warmup-steps" in line for line in lines), r.stdout

    ix = GalleryIndex.load(indexes["collapsed"])
    table = disentanglement_table(ix)
    assert set(table) == set(ix.schema.names) and json.loads(json.dumps(table)) == table
    for name, row in table.items():
        assert row["collapsed"] and COLLAPSED in row["defect"] and f"{name!r} embeddings" in row["defect"]
        assert row["knn_accuracy"] is None and row["chance"] is None and row["silhouette"] is None
    assert list(collapsed_attributes(ix)) == list(ix.schema.names)
    with pytest.raises(DegenerateSpaceError):  # in-process too: it is refused before t-SNE runs
        attribute_projection(ix, "colour", "tsne", cache=False)

    sound = GalleryIndex.load(indexes["sound"])
    assert collapsed_attributes(sound) == {}
    row = disentanglement_table(sound)["colour"]
    assert not row["collapsed"] and row["defect"] is None and 0 <= row["knn_accuracy"] <= 100


def test_a_cached_projection_that_does_not_fit_the_index_is_recomputed(indexes, tmp_path):
    root = tmp_path / "ix"
    shutil.copytree(indexes["sound"], root)
    p = attribute_projection(GalleryIndex.load(root), "colour", "tsne")
    cache = next((root / "projections").glob("tsne-colour-*.npz"))
    with np.load(cache) as z:
        fields = dict(z)
    for bad in ({"xy": np.full_like(p.xy, np.nan)}, {"items": p.items + len(p.items) * 1000}):
        np.savez(cache, **{**fields, **bad})
        redo = attribute_projection(GalleryIndex.load(root), "colour", "tsne")
        assert not redo.cached and np.isfinite(redo.xy).all() and np.array_equal(redo.items, p.items)
