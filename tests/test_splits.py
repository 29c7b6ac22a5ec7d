"""Reading the ASEN split format as published, and clear errors for what is malformed."""

import json

import numpy as np
import pytest
from PIL import Image

from profashion.data.images import Preprocess
from profashion.data.loading import SplitImages
from profashion.data.splits import (
    AttributeSchema,
    DatasetError,
    all_attributes_query_split,
    eval_query_split,
    load_dataset,
    query_candidate_split,
)


def test_official_fashionai_darn_deepfashion_load(asen_splits):
    meta = json.loads((asen_splits / "meta.json").read_text())
    for name in ("FashionAI", "DARN", "DeepFashion"):
        ds = load_dataset(asen_splits / name)
        assert list(ds.schema.names) == meta[name]["ATTRIBUTES"]
        assert ds.schema.num_values == [meta[name]["ATTRIBUTES_NUM"][a] for a in meta[name]["ATTRIBUTES"]]
        for split in ("valid", "test"):
            s = ds.split(split)
            # each image of the split is in exactly one of query / candidate
            fids = np.concatenate([s.queries[:, 0], s.candidates[:, 0]])
            assert len(np.unique(fids)) == len(fids)
            assert fids.max() < s.num_images
    fa = load_dataset(asen_splits / "FashionAI")
    assert fa.schema.values[0][0] == "Invisible"  # value names from values.json
    assert fa.split("train").filenames is None  # not published, labels still read
    assert len(fa.split("train").labels) == 144335
    assert len(fa.split("test").queries) == 3600 and len(fa.split("test").candidates) == 14400
    # CRLF endings are gone from the paths
    assert not any("\r" in f for f in fa.split("test").filenames)


def _write(tmp_path, files: dict[str, str], meta=None):
    root = tmp_path / "ds"
    root.mkdir()
    meta = meta or {"ATTRIBUTES": ["a", "b"], "ATTRIBUTES_NUM": {"a": 2, "b": 3}}
    (root / "meta.json").write_text(json.dumps(meta))
    for name, text in files.items():
        (root / name).write_bytes(text.encode())
    return root


def test_crlf_missing_final_newline_and_several_pairs(tmp_path):
    root = _write(tmp_path, {
        "filenames_train.txt": "x.jpg\r\ny.jpg\r\nz.jpg",
        "label_train.txt": "0 0 1 1 2\r\n1 1 0\r\n2 0 0",
        "filenames_test.txt": "p.jpg\nq.jpg\n\n",
        "query_test.txt": "0 1 2",
        "candidate_test.txt": "1 1 2\n",
    })
    ds = load_dataset(root)
    assert ds.split("train").filenames == ["x.jpg", "y.jpg", "z.jpg"]
    assert ds.split("train").labels.tolist() == [[0, 0, 1], [0, 1, 2], [1, 1, 0], [2, 0, 0]]
    assert ds.split("test").queries.tolist() == [[0, 1, 2]]
    known = ds.split("train").known_values(2)
    assert known.tolist() == [[1, 2], [-1, 0], [0, -1]]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("query_test.txt", "0 1\n", "query_test.txt, line 1: expected 'fid attribute value'"),
    ("query_test.txt", "0 1 2\n1 x 0\n", "query_test.txt, line 2: expected three integers"),
    ("query_test.txt", "0 5 0\n", "line 1: attribute 5 is out of range"),
    ("query_test.txt", "0 0 2\n", "value 2 is out of range for attribute 'a'"),
    ("query_test.txt", "7 0 0\n", "image id 7 is out of range (the split has 2 images)"),
    ("label_train.txt", "0 0 1 1\n", "label_train.txt, line 1: expected 'fid a1 v1 [a2 v2 ...]'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, text, message):
    files = {"filenames_test.txt": "p.jpg\nq.jpg\n", "query_test.txt": "0 0 0\n", "candidate_test.txt": "1 0 0\n",
             "filenames_train.txt": "x.jpg\n", "label_train.txt": "0 0 0\n"}
    files[name] = text
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        load_dataset(_write(tmp_path, files))


def test_meta_problems(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no meta.json"):
        load_dataset(tmp_path / "empty")
    root = _write(tmp_path, {"query_test.txt": "0 0 0"}, meta={"ATTRIBUTES": ["a"]})
    with pytest.raises(DatasetError, match="neither a value count nor value names"):
        load_dataset(root)


def test_query_without_candidates_is_refused(tmp_path):
    root = _write(tmp_path, {"filenames_test.txt": "p.jpg\n", "query_test.txt": "0 0 0\n"})
    with pytest.raises(DatasetError, match="not both"):
        load_dataset(root)


def test_unknown_attribute_names_the_known_ones():
    schema = AttributeSchema(("sleeve_length", "colour"), (("short", "long"), ("red", "blue")))
    assert schema.attribute_index("Sleeve Length") == 0
    assert schema.attribute_index(1) == 1
    with pytest.raises(DatasetError, match="unknown attribute 'hat'; known attributes: sleeve_length, colour"):
        schema.attribute_index("hat")
    with pytest.raises(DatasetError, match="out of range"):
        schema.attribute_index(2)


def test_missing_images_are_counted_and_listed(tmp_path):
    root = _write(tmp_path, {"filenames_train.txt": "a.png\nb.png\nc.png\n", "label_train.txt": "0 0 0\n"})
    (root / "img").mkdir()
    Image.new("RGB", (8, 8)).save(root / "img" / "a.png")
    ds = load_dataset(root, image_root=root / "img")
    with pytest.raises(DatasetError, match=r"2 image\(s\) of the train split are missing .*b\.png"):
        SplitImages(ds, "train", Preprocess(8, 8))


def test_a_non_image_file_is_a_clear_error(tmp_path):
    root = _write(tmp_path, {"filenames_train.txt": "a.png\n", "label_train.txt": "0 0 0\n"})
    (root / "img").mkdir()
    (root / "img" / "a.png").write_text("this is not a picture")
    ds = load_dataset(root, image_root=root / "img")
    with pytest.raises(DatasetError, match="train image 0 cannot be read: .*not an image we can read"):
        SplitImages(ds, "train", Preprocess(8, 8))


def test_query_candidate_split_is_stratified_and_seeded():
    rng = np.random.default_rng(0)
    labels = np.array([(f, a, int(rng.integers(0, 3))) for f in range(300) for a in range(2)])
    q, c = query_candidate_split(labels, 2, np.random.default_rng(1))
    q2, c2 = query_candidate_split(labels, 2, np.random.default_rng(1))
    assert np.array_equal(q, q2) and np.array_equal(c, c2)
    fids = np.concatenate([q[:, 0], c[:, 0]])
    assert sorted(fids.tolist()) == list(range(300))
    assert 0.15 < len(q) / 300 < 0.25
    for a in range(2):  # attributes balanced, every value with queries has candidates
        assert 120 <= np.sum(np.concatenate([q, c])[:, 1] == a) <= 180
        for v in np.unique(q[q[:, 1] == a, 2]):
            assert ((c[:, 1] == a) & (c[:, 2] == v)).any()


def test_all_attributes_query_split_serves_every_label_once():
    rng = np.random.default_rng(0)
    # 300 images, 3 attributes; attribute 2 known for a third of the images only
    labels = np.array([(f, a, int(rng.integers(0, 3))) for f in range(300) for a in range(3) if a < 2 or f % 3 == 0])
    q, c = all_attributes_query_split(labels, 3, np.random.default_rng(1))
    q2, c2 = eval_query_split(labels, 3, np.random.default_rng(1), "all-attributes")
    assert np.array_equal(q, q2) and np.array_equal(c, c2)
    both = np.concatenate([q, c])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, labels.tolist()))  # each label once
    for a, n in ((0, 300), (1, 300), (2, 100)):
        share = np.sum(q[:, 1] == a) / n
        assert 0.17 <= share <= 0.23, (a, share)
        for v in range(3):  # stratified by value, and every value with a query keeps candidates
            nv = np.sum((labels[:, 1] == a) & (labels[:, 2] == v))
            qv = np.sum((q[:, 1] == a) & (q[:, 2] == v))
            assert abs(qv - 0.2 * nv) <= 1 and np.sum((c[:, 1] == a) & (c[:, 2] == v)) > 0
    # images serve under several attributes, as query under one and candidate under another
    fid_q = set(q[:, 0].tolist())
    assert len(fid_q & set(c[:, 0].tolist())) > 100
    assert np.array_equal(np.lexsort((q[:, 1], q[:, 0])), np.arange(len(q)))
    # a value with one image is a candidate only; against the ASEN layout: one query per 5 labels, not per
    # 5 images (2.33 labels per image here)
    q1, c1 = all_attributes_query_split(np.array([[0, 0, 1], [1, 0, 0], [2, 0, 0]]), 1, np.random.default_rng(0))
    assert q1.tolist() == [[1, 0, 0]] or q1.tolist() == [[2, 0, 0]]
    assert [0, 0, 1] in c1.tolist()
    qa, _ = query_candidate_split(labels, 3, np.random.default_rng(1))
    assert len(q) > 2.2 * len(qa)
    with pytest.raises(DatasetError, match="unknown eval layout 'every'"):
        eval_query_split(labels, 3, np.random.default_rng(1), "every")
    with pytest.raises(DatasetError, match="labelled twice"):
        all_attributes_query_split(np.array([[0, 0, 1], [0, 0, 2]]), 1, np.random.default_rng(0))


def test_eval_layout_is_read_from_meta(tmp_path):
    from profashion.data.splits import write_meta, write_split_files

    schema = AttributeSchema(("a",), (("x", "y"),))
    write_split_files(tmp_path, "test", ["0.png", "1.png"], [[(0, 0)], [(0, 0)]], np.array([[0, 0, 0]]),
                      np.array([[1, 0, 0]]))
    write_meta(tmp_path, schema, "d")
    assert load_dataset(tmp_path).eval_layout == "asen"
    write_meta(tmp_path, schema, "d", extra={"EVAL_LAYOUT": "all-attributes"})
    assert load_dataset(tmp_path).eval_layout == "all-attributes"
    write_meta(tmp_path, schema, "d", extra={"EVAL_LAYOUT": "sometimes"})
    with pytest.raises(DatasetError, match="unknown EVAL_LAYOUT 'sometimes'"):
        load_dataset(tmp_path)
