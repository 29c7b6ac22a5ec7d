"""CSV catalogues -> ASEN split folders: the real 44k catalogue and small hand-made ones."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from profashion.data.csv_import import import_csv, stratified_split
from profashion.data.splits import SPLITS, DatasetError, load_dataset

FP_ATTRIBUTES = ["masterCategory", "subCategory", "articleType", "baseColour", "usage", "gender", "season"]
SPLIT_FILES = [f"{kind}_{s}.txt" for s in SPLITS for kind in ("filenames", "label")] + [
    f"{kind}_{s}.txt" for s in ("valid", "test") for kind in ("query", "candidate")
]


def _all_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _value_counts(ds) -> list[Counter]:
    """Images per value name of each attribute, over all splits (from the label files)."""
    counts = [Counter() for _ in ds.schema.names]
    for s in ds.splits.values():
        for _, a, v in s.labels:
            counts[a][ds.schema.value_name(a, v)] += 1
    return counts


# --------------------------------------------------------------------------------------------------
# The real catalogue


@pytest.fixture(scope="module")
def fp_import(fashion_product, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp") / "fashion-product"
    t = time.perf_counter()
    import_csv(fashion_product / "labels.csv", fashion_product, FP_ATTRIBUTES, out, seed=0)
    print(f"\nimport_csv of {fashion_product / 'labels.csv'}: {time.perf_counter() - t:.2f} s")
    return out


def test_real_catalogue_imports_and_loads(fp_import, fashion_product):
    ds = load_dataset(fp_import)
    assert ds.schema.names == tuple(FP_ATTRIBUTES)
    assert ds.schema.num_values == [7, 45, 141, 46, 8, 2, 4]
    assert ds.schema.values[5] == ("Men", "Women")
    assert list(ds.schema.values[2]) == sorted(ds.schema.values[2])
    assert ds.image_root.resolve() == fashion_product.resolve()
    meta = json.loads((fp_import / "meta.json").read_text())
    assert not os.path.isabs(meta["IMAGE_ROOT"])
    sizes = {name: s.num_images for name, s in ds.splits.items()}
    assert sum(sizes.values()) == 44072
    assert sizes["test"] == pytest.approx(0.2 * 44072, abs=1)
    assert sizes["valid"] == pytest.approx(0.1 * 44072, abs=2)
    for split in ("valid", "test"):
        ds.check_images(split, range(0, ds.split(split).num_images, 500))


def test_real_catalogue_value_counts_match_csv(fp_import, fashion_product):
    with open(fashion_product / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = [Counter(r[a].strip() for r in rows if r[a].strip()) for a in FP_ATTRIBUTES]
    assert _value_counts(load_dataset(fp_import)) == expected


def test_real_catalogue_eval_images_are_query_xor_candidate(fp_import):
    ds = load_dataset(fp_import)
    for split in ("valid", "test"):
        s = ds.split(split)
        known = s.known_values(ds.schema.num_attributes)
        fids = np.concatenate([s.queries[:, 0], s.candidates[:, 0]])
        assert np.array_equal(np.sort(fids), np.arange(s.num_images))  # each image exactly once
        for rows in (s.queries, s.candidates):
            assert np.array_equal(known[rows[:, 0], rows[:, 1]], rows[:, 2])  # a known label of that image
        # queries are ~20% of each attribute, and every attribute is used
        q_per = np.bincount(s.queries[:, 1], minlength=7)
        all_per = q_per + np.bincount(s.candidates[:, 1], minlength=7)
        assert np.all(np.abs(q_per / all_per - 0.2) < 0.03)


def test_real_catalogue_same_seed_same_files_other_seed_differs(fp_import, fashion_product, tmp_path):
    again = import_csv(fashion_product / "labels.csv", fashion_product, FP_ATTRIBUTES,
                       tmp_path / "a" / "fashion-product", seed=0)
    other = import_csv(fashion_product / "labels.csv", fashion_product, FP_ATTRIBUTES, tmp_path / "b", seed=1,
                       check_images=False)
    ref = _all_files(fp_import)
    assert set(ref) == set(SPLIT_FILES) | {"meta.json"}
    same = _all_files(again)
    meta, ref_meta = json.loads(same.pop("meta.json")), json.loads(ref.pop("meta.json"))
    assert same == ref
    # IMAGE_ROOT is relative to each folder (at different depths here): compare where it points
    assert (again / meta.pop("IMAGE_ROOT")).resolve() == (fp_import / ref_meta.pop("IMAGE_ROOT")).resolve()
    assert meta == ref_meta
    diff = _all_files(other)
    assert diff["filenames_test.txt"] != ref["filenames_test.txt"]
    assert diff["query_test.txt"] != ref["query_test.txt"]


# --------------------------------------------------------------------------------------------------
# A small hand-made catalogue


def _write_png(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def small(tmp_path):
    """40 images: colour always known, style unknown for every 4th, 'Gold' colour on one image only,
    and one row with no known value at all."""
    images = tmp_path / "shop" / "pics"
    rows = []
    colours = ["Red", "Blue", "Green"]
    for i in range(40):
        name = f"img/{i:03d}.png"
        _write_png(images / name, (i * 5, 0, 0))
        colour = "Gold" if i == 7 else colours[i % 3]
        style = "" if i % 4 == 0 else ("casual" if i % 2 else "formal ")
        rows.append([name, colour, style, f"title {i}"])
    _write_png(images / "img/none.png", (0, 0, 0))
    rows.append(["img/none.png", "", "  ", "nothing known"])
    csv_path = _write_csv(tmp_path / "shop" / "catalogue.csv", ["image", "colour", "style", "title"], rows)
    return csv_path, images


def test_small_catalogue(small, tmp_path):
    csv_path, images = small
    out = import_csv(csv_path, images, ["colour", "style"], tmp_path / "data" / "shop", seed=3)
    ds = load_dataset(out)
    assert ds.schema.values == (("Blue", "Gold", "Green", "Red"), ("casual", "formal"))
    assert sum(s.num_images for s in ds.splits.values()) == 40  # the row without labels is skipped
    meta = json.loads((out / "meta.json").read_text())
    assert meta["IMAGE_ROOT"] == "../../shop/pics"
    assert meta["IMPORT"]["skipped_rows_without_labels"] == 1
    counts = _value_counts(ds)
    assert counts[0]["Gold"] == 1 and counts[1] == Counter(casual=20, formal=10)
    # empty cells stay unknown: images with no style have exactly one label
    for s in ds.splits.values():
        known = s.known_values(2)
        for fid, name in enumerate(s.filenames):
            i = int(Path(name).stem)
            assert (known[fid, 1] >= 0) == (i % 4 != 0)
            assert ds.image_path(s.name, fid).is_file()
    for split in ("valid", "test"):
        s = ds.split(split)
        assert len(s.queries) + len(s.candidates) == s.num_images
    assert [p.name for p in out.parent.iterdir()] == ["shop"]  # no temporary folder left


def test_stratified_split_shares_every_stratum():
    rng = np.random.default_rng(0)
    codes = np.concatenate([np.full(50, 0), np.full(30, 1), np.full(20, 2), np.full(7, 3)])[:, None]
    split = stratified_split(codes, 0.1, 0.2, rng)
    assert np.sum(split == 2) in (21, 22) and np.sum(split == 1) in (10, 11)
    for v, n in [(0, 50), (1, 30), (2, 20), (3, 7)]:
        test = np.sum(split[codes[:, 0] == v] == 2)
        assert abs(test - 0.2 * n) <= 1


def test_error_csv_missing(tmp_path):
    with pytest.raises(DatasetError, match="CSV file not found"):
        import_csv(tmp_path / "nope.csv", tmp_path, ["colour"], tmp_path / "out")


def test_error_attribute_columns_absent(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match=r"no column\(s\) 'size', 'fit'; available columns: image, colour"):
        import_csv(csv_path, images, ["colour", "size", "fit"], tmp_path / "out")


def test_error_image_column_absent(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match="no image column 'path'"):
        import_csv(csv_path, images, ["colour"], tmp_path / "out", image_column="path")


def test_error_no_rows(tmp_path):
    csv_path = _write_csv(tmp_path / "c.csv", ["image", "colour"], [])
    with pytest.raises(DatasetError, match="no rows"):
        import_csv(csv_path, tmp_path, ["colour"], tmp_path / "out")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        import_csv(tmp_path / "empty.csv", tmp_path, ["colour"], tmp_path / "out")


def test_error_attribute_without_known_value(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match="attribute 'title' has no known value"):
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        blank = _write_csv(tmp_path / "b.csv", rows[0], [r[:3] + [""] for r in rows[1:]])
        import_csv(blank, images, ["colour", "title"], tmp_path / "out")


def test_error_missing_images(small, tmp_path):
    csv_path, images = small
    for i in (3, 11, 12, 30):
        (images / f"img/{i:03d}.png").unlink()
    with pytest.raises(DatasetError, match=r"4 of 40 image files .* missing .*first: img/003.png, img/011.png, img/012.png\)"):
        import_csv(csv_path, images, ["colour", "style"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # seed 1: with seed 0 the 4-image valid split of this tiny catalogue has no query and is refused
    out = import_csv(csv_path, images, ["colour", "style"], tmp_path / "out", check_images=False, seed=1)
    assert load_dataset(out).schema.num_attributes == 2


def test_error_out_not_empty_and_overwrite(small, tmp_path):
    csv_path, images = small
    out = tmp_path / "out"
    out.mkdir()
    import_csv(csv_path, images, ["colour"], out)  # an empty folder is fine
    before = _all_files(out)
    with pytest.raises(DatasetError, match="exists and is not empty; pass overwrite=True"):
        import_csv(csv_path, images, ["colour", "style"], out)
    assert _all_files(out) == before
    import_csv(csv_path, images, ["colour", "style"], out, overwrite=True, seed=1)  # seed 0: valid has no query
    assert load_dataset(out).schema.names == ("colour", "style")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shop"]


def test_overwrite_never_replaces_inputs_or_other_folders(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match="would contain the input"):
        import_csv(csv_path, images, ["colour"], images.parent, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="holds no meta.json"):
        import_csv(csv_path, images, ["colour"], other, overwrite=True)
    assert (other / "todo.txt").read_text() == "keep me"
    assert (images / "img/000.png").is_file()


def test_failure_while_writing_leaves_nothing(small, tmp_path, monkeypatch):
    csv_path, images = small
    out = tmp_path / "out"
    import_csv(csv_path, images, ["colour"], out)
    before = _all_files(out)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("profashion.data.csv_import.write_meta", boom)
    with pytest.raises(OSError, match="disk full"):
        import_csv(csv_path, images, ["colour", "style"], out, overwrite=True, seed=1)
    assert _all_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shop"]


def test_error_duplicate_image_and_ragged_row(tmp_path):
    _write_png(tmp_path / "a.png", (1, 2, 3))
    dup = _write_csv(tmp_path / "d.csv", ["image", "colour"], [["a.png", "Red"], ["a.png", "Blue"]])
    with pytest.raises(DatasetError, match="line 3: image 'a.png' is already listed on line 2"):
        import_csv(dup, tmp_path, ["colour"], tmp_path / "out")
    ragged = tmp_path / "r.csv"
    ragged.write_text("image,colour\na.png,Red,extra\n")
    with pytest.raises(DatasetError, match="line 2: 3 fields where the header has 2"):
        import_csv(ragged, tmp_path, ["colour"], tmp_path / "out")


def test_bad_fractions(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match="leave some images for training"):
        import_csv(csv_path, images, ["colour"], tmp_path / "out", valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DatasetError, match="query_fraction"):
        import_csv(csv_path, images, ["colour"], tmp_path / "out", query_fraction=0)


# --------------------------------------------------------------------------------------------------
# Eval layouts and small catalogues (issue 16)

# sha256 (first 16 hex digits) of the default import of the 44k catalogue, seed 0, as written before the
# eval layouts existed: the ASEN layout must stay byte-identical.
DEFAULT_IMPORT_SHA256 = {
    "candidate_test.txt": "76415c7c3ec91716",
    "candidate_valid.txt": "512f0a538b6001ac",
    "filenames_test.txt": "f24c2f96301f9ef9",
    "filenames_train.txt": "3408fae8ba5b9064",
    "filenames_valid.txt": "8805d1022ae9730b",
    "label_test.txt": "300fd36dd2393f04",
    "label_train.txt": "31643ba671bc77b2",
    "label_valid.txt": "2da7c9b057448863",
    "query_test.txt": "503a4158a1ab686e",
    "query_valid.txt": "7a3b3d7f7f09ac92",
}


def test_default_layout_is_byte_identical_to_before(fp_import):
    import hashlib

    got = {n: hashlib.sha256((fp_import / n).read_bytes()).hexdigest()[:16] for n in DEFAULT_IMPORT_SHA256}
    assert got == DEFAULT_IMPORT_SHA256
    meta = json.loads((fp_import / "meta.json").read_text())
    assert "EVAL_LAYOUT" not in meta and load_dataset(fp_import).eval_layout == "asen"


@pytest.fixture(scope="module")
def catalogue_2000(fashion_product, tmp_path_factory):
    """The first 2,000 rows of the real catalogue with gender and season known, plus an 8th attribute
    (brand = the title's first word): a 2,000-image, 8-attribute catalogue."""
    with open(fashion_product / "labels.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["gender"].strip() and r["season"].strip()][:2000]
    header = ["image", *FP_ATTRIBUTES, "brand"]
    out = [[r["image"], *(r[a] for a in FP_ATTRIBUTES), r["title"].split()[0]] for r in rows]
    return _write_csv(tmp_path_factory.mktemp("cat2000") / "catalogue.csv", header, out)


def test_all_attributes_layout_gives_50_test_queries_per_attribute(catalogue_2000, fashion_product, tmp_path):
    attrs = [*FP_ATTRIBUTES, "brand"]
    asen = load_dataset(import_csv(catalogue_2000, fashion_product, attrs, tmp_path / "asen"))
    every = load_dataset(import_csv(catalogue_2000, fashion_product, attrs, tmp_path / "all",
                                    eval_layout="all-attributes"))
    assert every.eval_layout == "all-attributes" and asen.eval_layout == "asen"
    n_asen = np.bincount(asen.split("test").queries[:, 1], minlength=8)
    n_all = np.bincount(every.split("test").queries[:, 1], minlength=8)
    print(f"\ntest queries per attribute: ASEN layout {n_asen.tolist()}, all-attributes {n_all.tolist()}")
    assert n_asen.max() <= 15  # the problem: ~10 per attribute
    assert n_all.min() >= 50 and n_all.sum() > 5 * n_asen.sum()
    # the same images in the same splits; only the query/candidate files differ
    for split in ("train", "valid", "test"):
        assert asen.split(split).filenames == every.split(split).filenames
    for split in ("valid", "test"):
        s = every.split(split)
        q, c = s.queries, s.candidates
        # every known (image, attribute) label serves exactly once, as query or as candidate
        served = np.concatenate([q, c])
        assert sorted(map(tuple, served.tolist())) == sorted(map(tuple, s.labels.tolist()))
        # about 20% of each attribute's labelled images are queries; every query has a relevant candidate
        for a in range(8):
            share = (q[:, 1] == a).sum() / (served[:, 1] == a).sum()
            assert 0.15 < share < 0.3, (split, a, share)
        cand = set(map(tuple, c[:, 1:].tolist()))
        assert all((a, v) in cand for a, v in q[:, 1:].tolist())
        assert np.array_equal(np.lexsort((q[:, 1], q[:, 0])), np.arange(len(q)))  # sorted by fid, attribute
    again = import_csv(catalogue_2000, fashion_product, attrs, tmp_path / "again", eval_layout="all-attributes")
    assert _all_files(again)["query_test.txt"] == _all_files(tmp_path / "all")["query_test.txt"]


def test_a_catalogue_too_small_for_its_fractions_names_the_smallest_that_works(small, tmp_path):
    csv_path, images = small
    with pytest.raises(DatasetError, match=r"too small for the requested fractions: test_fraction 0\.02 gives the test "
                                           r"split 1 image\(s\) and no query .*smallest test fraction that gives one "
                                           r"with seed 3 is (0\.\d+)") as err:
        import_csv(csv_path, images, ["colour", "style"], tmp_path / "out", seed=3, test_fraction=0.02)
    message = err.value.args[0]
    assert not (tmp_path / "out").exists()
    # the advice is a set of flags that works
    advice = message.rsplit(": use ", 1)[1].split()
    fixes = {advice[i].lstrip("-").split("-")[0] + "_fraction": float(advice[i + 1]) for i in range(0, len(advice), 2)}
    assert "test_fraction" in fixes
    out = import_csv(csv_path, images, ["colour", "style"], tmp_path / "out", seed=3, **fixes)
    ds = load_dataset(out)
    assert len(ds.split("test").queries) > 0 and len(ds.split("valid").queries) > 0
    # and a test fraction just below the advice does not work
    below = {**fixes, "test_fraction": round(fixes["test_fraction"] - 0.01, 2)}
    with pytest.raises(DatasetError, match="test_fraction"):
        import_csv(csv_path, images, ["colour", "style"], tmp_path / "below", seed=3, **below)
    with pytest.raises(DatasetError, match="valid_fraction 0.01 gives the valid split"):
        import_csv(csv_path, images, ["colour", "style"], tmp_path / "v", seed=3, valid_fraction=0.01)
    tiny = _write_csv(tmp_path / "tiny.csv", ["image", "colour", "style", "title"],
                      [["img/000.png", "Red", "a", ""], ["img/001.png", "Blue", "b", ""], ["img/002.png", "Gold", "c", ""]])
    with pytest.raises(DatasetError, match="no test fraction below .* gives one.*: add images"):
        import_csv(tiny, images, ["colour", "style"], tmp_path / "t")


def test_cli_fractions_and_layout(small, tmp_path, capsys):
    from profashion.cli import main

    csv_path, images = small
    out = tmp_path / "cli"
    assert main(["import-csv", str(csv_path), "--image-root", str(images), "--attributes", "colour,style",
                 "--out", str(out), "--test-fraction", "0.3", "--valid-fraction", "0.2",
                 "--eval-layout", "all-attributes"]) == 0
    printed = capsys.readouterr().out
    assert "test: 12 images" in printed and "all-attributes layout" in printed and "queries per attribute" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["EVAL_LAYOUT"] == "all-attributes" and meta["IMPORT"]["test_fraction"] == 0.3
    assert main(["import-csv", str(csv_path), "--image-root", str(images), "--attributes", "colour",
                 "--out", str(tmp_path / "bad"), "--test-fraction", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--test-fraction" in err and err.count("\n") == 1
    with pytest.raises(DatasetError, match="unknown eval layout"):
        import_csv(csv_path, images, ["colour"], tmp_path / "x", eval_layout="every")
