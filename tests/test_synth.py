"""The synthetic garment dataset: format, determinism, masks, value statistics, atomic writing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from profashion.data import synth
from profashion.data.splits import DatasetError, SplitDataset, load_dataset
from profashion.data.synth import (
    SYNTH_SCHEMA,
    attribute_mask,
    generate_synth,
    image_rng,
    load_attribute_masks,
    render_garment,
)

A = SYNTH_SCHEMA.num_attributes
LOCAL = [a for a, n in enumerate(SYNTH_SCHEMA.names) if synth.ATTRIBUTE_KIND[n] == "local"]
GLOBAL = [a for a, n in enumerate(SYNTH_SCHEMA.names) if synth.ATTRIBUTE_KIND[n] == "global"]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _values(ds, split: str) -> np.ndarray:
    return ds.split(split).known_values(A)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 images at 64 px: big enough for every value to occur, small enough to be quick."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_synth(out, 200, 50, 50, size=64, seed=3)
    return load_dataset(out)


# --------------------------------------------------------------------------------------------------
# Schema and format


def test_schema_order_and_invisible_values():
    assert SYNTH_SCHEMA.names == (
        "skirt_length", "sleeve_length", "coat_length", "pant_length", "collar_design", "lapel_design",
        "neckline_design", "neck_design", "texture", "colour")
    for a in LOCAL:
        assert SYNTH_SCHEMA.values[a][0] == "Invisible"
        assert 4 <= SYNTH_SCHEMA.num_values[a] <= 8
    for a in GLOBAL:
        assert "Invisible" not in SYNTH_SCHEMA.values[a]


def test_loads_with_the_schema_images_and_masks(dataset):
    assert dataset.schema == SYNTH_SCHEMA
    assert dataset.name == "synth"
    assert dataset.image_root == dataset.root / "images" and dataset.mask_root == dataset.root / "masks"
    meta = __import__("json").loads((dataset.root / "meta.json").read_text())
    assert meta["ATTRIBUTE_KIND"]["colour"] == "global" and meta["ATTRIBUTE_KIND"]["neck_design"] == "local"
    assert meta["GENERATOR"] == {"seed": 3, "size": 64, "version": synth.GENERATOR_VERSION}
    for split, n in (("train", 200), ("valid", 50), ("test", 50)):
        s = dataset.split(split)
        assert s.filenames == [f"{split}/{i:06d}.png" for i in range(n)]
        dataset.check_images(split)
        assert dataset.mask_path(split, n - 1).is_file()
    with Image.open(dataset.image_path("valid", 0)) as im:
        assert (im.mode, im.size) == ("RGB", (64, 64))
    with Image.open(dataset.mask_path("valid", 0)) as m:
        assert (m.mode, m.size) == ("I;16", (64, 64))
    assert not list(dataset.root.parent.glob(".ds.*")), "a temporary folder was left behind"


def test_labels_hold_every_attribute_of_every_image(dataset):
    for split in ("train", "valid", "test"):
        s = dataset.split(split)
        assert len(s.labels) == s.num_images * A
        vals = _values(dataset, split)
        assert (vals >= 0).all()
    # the files agree with the generator
    for i in (0, 7):
        assert tuple(_values(dataset, "valid")[i]) == render_garment(image_rng(3, "valid", i), 64).values


def test_each_eval_image_is_in_exactly_one_of_query_and_candidate(dataset):
    for split in ("valid", "test"):
        s = dataset.split(split)
        fids = np.concatenate([s.queries[:, 0], s.candidates[:, 0]])
        assert sorted(fids.tolist()) == list(range(s.num_images))
        known = _values(dataset, split)
        for rows in (s.queries, s.candidates):
            assert (known[rows[:, 0], rows[:, 1]] == rows[:, 2]).all()
        assert len(s.queries) > 0


def test_eval_images_are_mostly_judged_on_a_part_they_show(dataset):
    """"Invisible" is the majority of all local labels but a minority of the eval assignment."""
    rows = np.concatenate([np.concatenate([dataset.split(x).queries, dataset.split(x).candidates])
                           for x in ("valid", "test")])
    local = rows[rows[:, 1] < 8]
    assert 0 < np.mean(local[:, 2] == 0) < 0.3
    all_local = np.concatenate([_values(dataset, x)[:, :8] for x in ("valid", "test")])
    assert np.mean(all_local == 0) > 0.4


def test_every_value_of_every_attribute_occurs(dataset):
    vals = np.concatenate([_values(dataset, s) for s in ("train", "valid", "test")])
    assert len(vals) == 300
    for a in range(A):
        counts = np.bincount(vals[:, a], minlength=SYNTH_SCHEMA.num_values[a])
        missing = [SYNTH_SCHEMA.values[a][v] for v in np.flatnonzero(counts == 0)]
        assert not missing, f"{SYNTH_SCHEMA.names[a]}: never drawn: {missing}"


# --------------------------------------------------------------------------------------------------
# Masks


def test_masks_are_empty_exactly_for_invisible_values(dataset):
    root_sizes = []
    for split in ("valid", "test"):
        vals = _values(dataset, split)
        for fid in range(dataset.split(split).num_images):
            masks = load_attribute_masks(dataset.mask_path(split, fid))
            assert masks.shape == (A, 64, 64) and masks.dtype == bool
            for a in LOCAL:
                assert masks[a].any() == (vals[fid, a] != 0), (split, fid, SYNTH_SCHEMA.names[a], vals[fid, a])
            for a in GLOBAL:
                assert masks[a].any()
            colour = masks[SYNTH_SCHEMA.attribute_index("colour")]
            # garment parts lie on the garment; local regions are smaller than the whole outfit
            for name in ("skirt_length", "coat_length", "pant_length", "collar_design", "neck_design"):
                m = masks[SYNTH_SCHEMA.attribute_index(name)]
                assert not (m & ~colour).any(), name
            root_sizes.append(colour.sum())
    assert min(root_sizes) > 0


def test_attribute_mask_reads_one_attribute(dataset):
    vals = _values(dataset, "valid")
    fid = int(np.flatnonzero(vals[:, SYNTH_SCHEMA.attribute_index("sleeve_length")] > 0)[0])
    m = attribute_mask(dataset, "valid", fid, "sleeve_length")
    assert m.shape == (64, 64) and m.dtype == bool and m.any()
    all_masks = load_attribute_masks(dataset.mask_path("valid", fid))
    assert (attribute_mask(dataset, "valid", fid, 9) == all_masks[9]).all()
    with pytest.raises(DatasetError, match="unknown attribute"):
        attribute_mask(dataset, "valid", fid, "heel_height")
    no_masks = SplitDataset(root=dataset.root, name="x", schema=dataset.schema, image_root=dataset.image_root,
                            splits=dataset.splits, mask_root=None)
    with pytest.raises(DatasetError, match="no attribute masks"):
        attribute_mask(no_masks, "valid", fid, "sleeve_length")


# --------------------------------------------------------------------------------------------------
# Statistics: values are (nearly) independent


def _cramers_v(x: np.ndarray, y: np.ndarray) -> float:
    xi, yi = np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1]
    table = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(table, (xi, yi), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))


def test_attribute_values_are_not_strongly_dependent():
    vals = np.array([render_garment(image_rng(11, "train", i), 48).values for i in range(600)])
    idx = SYNTH_SCHEMA.attribute_index
    pairs = [("sleeve_length", "neckline_design"), ("skirt_length", "sleeve_length"),
             ("coat_length", "sleeve_length"), ("colour", "texture"), ("colour", "sleeve_length")]
    for a_name, b_name in pairs:
        a, b = idx(a_name), idx(b_name)
        visible = np.ones(len(vals), bool)
        for c in (a, b):
            if c in LOCAL:
                visible &= vals[:, c] > 0  # independence holds among images where both are shown
        assert visible.sum() > 100
        v = _cramers_v(vals[visible, a], vals[visible, b])
        assert v < 0.3, f"{a_name} vs {b_name}: Cramer's V {v:.2f}"
    # the check does detect dependence: an attribute against itself
    assert _cramers_v(vals[:, idx("colour")], vals[:, idx("colour")]) > 0.99


# --------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
    a = generate_synth(tmp_path / "a", 5, 3, 3, size=48, seed=7)
    b = generate_synth(tmp_path / "b", 5, 3, 3, size=48, seed=7)
    c = generate_synth(tmp_path / "c", 5, 3, 3, size=48, seed=8)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert len(ha) == 2 * 11 + 11 and ha == hb  # images + masks, 10 split files + meta.json
    images = [k for k in ha if k.startswith("images/")]
    assert all(ha[k] != hc[k] for k in images)


def test_worker_processes_give_the_same_files(tmp_path):
    one = generate_synth(tmp_path / "one", 70, 2, 2, size=40, seed=1)
    two = generate_synth(tmp_path / "two", 70, 2, 2, size=40, seed=1, workers=2)
    assert _hashes(one) == _hashes(two)


@pytest.mark.parametrize("size", [32, 64, 160])
def test_other_sizes(size):
    sample = render_garment(image_rng(0, "test", 5), size)
    assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (size, size) and sample.mask.dtype == np.uint16
    assert sample.mask.any()
    # the same image at another size has the same labels (drawn in figure coordinates)
    assert sample.values == render_garment(image_rng(0, "test", 5), 112).values


def test_a_dataset_at_another_size_loads(tmp_path):
    ds = load_dataset(generate_synth(tmp_path / "d", 2, 1, 1, size=160))
    with Image.open(ds.image_path("train", 1)) as im:
        assert im.size == (160, 160)
    assert attribute_mask(ds, "test", 0, "colour").shape == (160, 160)


# --------------------------------------------------------------------------------------------------
# Writing: refusing, replacing, failing cleanly, argument errors


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate_synth(out, 2, 1, 1)
    with pytest.raises(DatasetError, match="does not look like a dataset"):
        generate_synth(out, 2, 1, 1, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_folder_is_used_and_overwrite_replaces_a_dataset(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    generate_synth(out, 2, 1, 1, size=40, seed=0)
    first = _hashes(out)
    generate_synth(out, 3, 1, 1, size=40, seed=1, overwrite=True)
    second = _hashes(out)
    assert first != second and "images/train/000002.png" in second
    assert load_dataset(out).split("train").num_images == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth.render_garment

    def flaky(rng, size=112):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("drawing failed")
        return real(rng, size)

    monkeypatch.setattr(synth, "render_garment", flaky)
    with pytest.raises(RuntimeError, match="drawing failed"):
        generate_synth(tmp_path / "out", 10, 2, 2, size=40)
    assert calls["n"] == 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": -1}, "n_train must be >= 0"),
    ({"n_valid": 0}, "n_valid must be >= 1"),
    ({"n_test": 0}, "n_test must be >= 1"),
    ({"size": 31}, "size must be between 32 and 1024"),
    ({"size": 2048}, "size must be between 32 and 1024"),
    ({"size": 64.0}, "size must be an integer"),
    ({"n_train": True}, "n_train must be an integer"),
    ({"seed": -3}, "seed must be >= 0"),
    ({"workers": 0}, "workers must be >= 1"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    args = {"n_train": 2, "n_valid": 1, "n_test": 1, **kwargs}
    with pytest.raises(DatasetError, match=message):
        generate_synth(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_not_a_folder(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        generate_synth(f, 2, 1, 1)


def test_missing_mask_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="mask not found"):
        load_attribute_masks(tmp_path / "nope.png")


# sha256 (first 16 hex digits) of the tiny dataset of tests/conftest.py (160/48/48 images, 48 px, seed 0)
# as written before the eval layouts existed: the default ASEN layout must stay byte-identical.
TINY_SYNTH_SHA256 = {
    "query_valid.txt": "0873671ab8c61eb4",
    "candidate_valid.txt": "0d1309fe37aa16bc",
    "query_test.txt": "eccdcaf92a9197f0",
    "candidate_test.txt": "3534785a2b79baf9",
    "label_test.txt": "b9149d1f379565ec",
}


def test_default_layout_is_byte_identical_to_before(tiny_synth):
    got = {n: hashlib.sha256((tiny_synth / n).read_bytes()).hexdigest()[:16] for n in TINY_SYNTH_SHA256}
    assert got == TINY_SYNTH_SHA256
    assert load_dataset(tiny_synth).eval_layout == "asen"


def test_all_attributes_layout(tmp_path):
    asen = load_dataset(generate_synth(tmp_path / "asen", 0, 20, 100, size=32, seed=5))
    every = load_dataset(generate_synth(tmp_path / "all", 0, 20, 100, size=32, seed=5,
                                        eval_layout="all-attributes"))
    assert every.eval_layout == "all-attributes"
    for name in ("images/test/000007.png", "label_test.txt", "filenames_test.txt"):  # same images and labels
        assert (tmp_path / "asen" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    s = every.split("test")
    n_all = np.bincount(s.queries[:, 1], minlength=10)
    n_asen = np.bincount(asen.split("test").queries[:, 1], minlength=10)
    assert n_all.sum() > 3 * n_asen.sum() and (n_all >= 3).all()
    served = np.concatenate([s.queries, s.candidates])
    keys = served[:, 0] * 10 + served[:, 1]
    assert len(np.unique(keys)) == len(keys)  # an image serves at most once per attribute
    assert len(np.unique(served[:, 0])) == 100  # every test image serves
    truth = s.known_values(10)
    assert (truth[served[:, 0], served[:, 1]] == served[:, 2]).all()
    # "Invisible" of a local part is thinned as in the ASEN layout: a minority of the served labels
    local = served[served[:, 1] < 8]
    assert np.mean(local[:, 2] == 0) < 0.3
    with pytest.raises(DatasetError, match="unknown eval layout"):
        generate_synth(tmp_path / "bad", 0, 2, 2, size=32, eval_layout="each")
