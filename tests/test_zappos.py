"""CSN's Zappos50K triplet lists (layout of andreasveit/conditional-similarity-networks) and accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from profashion.data.splits import DatasetError
from profashion.data.zappos import CONDITIONS, load_zappos_triplets, triplet_list_path
from profashion.evaluation.triplet_accuracy import triplet_accuracy

FILENAMES = [f"Shoes/Sneakers/{i}.jpg" for i in range(6)]

# per condition: (anchor, far, close) lines of the test split
TEST_LISTS = {
    "class": "0 1 2\n3 4 5\n",
    "closure": "0 2 1\r\n\r\n",  # CRLF and a blank line
    "gender": "5 4 3",  # no final newline
    "heel": "1 0 2\n2 0 1\n4 3 5\n",
}


def _make_root(tmp_path, lists=TEST_LISTS, split="test", filenames_text=None):
    root = tmp_path / "data"
    (root / "tripletlists").mkdir(parents=True)
    (root / "filenames.json").write_text(
        filenames_text if filenames_text is not None else "\n".join(FILENAMES) + "\n", encoding="utf-8"
    )
    for cond, text in lists.items():
        triplet_list_path(root, cond, split).write_text(text, encoding="utf-8", newline="")
    return root


def test_layout_is_csns():
    assert CONDITIONS == ("class", "closure", "gender", "heel")
    assert triplet_list_path("data", "heel", "val").as_posix() == "data/tripletlists/heel_tripletlist_val.txt"


def test_load_test_split(tmp_path):
    root = _make_root(tmp_path)
    (root / "ut-zap50k-images").mkdir()
    t = load_zappos_triplets(root, "test")
    assert t.filenames == FILENAMES
    assert t.conditions == list(CONDITIONS)
    assert t.triplets.dtype == np.int64
    assert t.triplets.tolist() == [
        [0, 1, 2, 0], [3, 4, 5, 0], [0, 2, 1, 1], [5, 4, 3, 2], [1, 0, 2, 3], [2, 0, 1, 3], [4, 3, 5, 3],
    ]
    assert len(t) == 7
    assert t.image_path(3) == root / "ut-zap50k-images" / "Shoes/Sneakers/3.jpg"


def test_valid_alias_and_condition_subset(tmp_path):
    root = _make_root(tmp_path, split="val")
    t = load_zappos_triplets(root, "valid", conditions=["heel", "class"])
    assert t.conditions == ["heel", "class"]
    assert t.triplets[:, 3].tolist() == [0, 0, 0, 1, 1]
    assert t.image_root is None


def test_filenames_as_json_list(tmp_path):
    root = _make_root(tmp_path, filenames_text=json.dumps(FILENAMES))
    assert load_zappos_triplets(root, "test").filenames == FILENAMES


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 1 2\n0 1\n", r"class_tripletlist_test.txt, line 2: expected three image indices"),
        ("0 1 2\n\n0 1 x\n", r"class_tripletlist_test.txt, line 3: expected three integers"),
        ("0 1 2 3\n", r"class_tripletlist_test.txt, line 1: expected three image indices"),
        ("0 1 6\n", r"class_tripletlist_test.txt, line 1: image index 6 is out of range \(the filenames list has 6"),
        ("-1 1 2\n", r"line 1: image index -1 is out of range"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, message):
    root = _make_root(tmp_path, lists={**TEST_LISTS, "class": text})
    with pytest.raises(DatasetError, match=message):
        load_zappos_triplets(root, "test")


def test_missing_pieces(tmp_path):
    root = _make_root(tmp_path, lists={k: v for k, v in TEST_LISTS.items() if k != "gender"})
    with pytest.raises(DatasetError, match="missing triplet list: .*gender_tripletlist_test.txt"):
        load_zappos_triplets(root, "test")
    with pytest.raises(DatasetError, match="unknown Zappos split 'dev'"):
        load_zappos_triplets(root, "dev")
    with pytest.raises(DatasetError, match="unknown condition"):
        load_zappos_triplets(root, "test", conditions=["colour"])
    with pytest.raises(DatasetError, match="Zappos folder not found"):
        load_zappos_triplets(tmp_path / "nowhere", "test")
    (root / "filenames.json").unlink()
    with pytest.raises(DatasetError, match="no filenames.json"):
        load_zappos_triplets(root, "test")


def test_blank_line_inside_filenames_is_an_error(tmp_path):
    root = _make_root(tmp_path, filenames_text="a.jpg\n\nb.jpg\n")
    with pytest.raises(DatasetError, match="filenames.json, line 2: empty image path"):
        load_zappos_triplets(root, "test")


# --------------------------------------------------------------------------------------------------
# Accuracy


def _line_embeddings(positions) -> np.ndarray:
    """2-D unit vectors at the given angles (degrees): cosine order = angular distance order."""
    rad = np.deg2rad(np.asarray(positions, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_triplet_accuracy_per_condition(tmp_path):
    t = load_zappos_triplets(_make_root(tmp_path), "test")
    good = _line_embeddings([0, 10, 25, 30, 45, 50])  # image i at that angle (degrees)
    # class: 0 1 2 (a=0: b at 10, c at 25) wrong; 3 4 5 (a=30: b 15 away, c 20 away) wrong.
    # closure: 0 2 1 right. gender: 5 4 3 wrong. heel: 1 0 2 wrong; 2 0 1 right; 4 3 5 right.
    per_cond = np.stack([good] * 4)
    overall, per = triplet_accuracy(per_cond, t)
    assert per == {"class": 0.0, "closure": 100.0, "gender": 0.0, "heel": pytest.approx(200 / 3)}
    assert overall == pytest.approx(100 * 3 / 7)
    # a different embedding per condition: for "class" this one gets both triplets right
    for_class = _line_embeddings([0, 90, 10, 30, 90, 40])
    ours = {0: for_class, 1: good, 2: good, 3: good}
    overall, per = triplet_accuracy(ours, t)
    assert per["class"] == 100.0 and overall == pytest.approx(100 * 5 / 7)
    # same numbers from a list, and from a function called per condition with only the used ids
    calls = []

    def embed_fn(idx, k):
        calls.append((k, idx.tolist()))
        return torch.from_numpy(ours[k][idx] * 3.0)  # not normalised: accuracy normalises

    assert triplet_accuracy([for_class, good, good, good], t) == (overall, per)
    assert triplet_accuracy(embed_fn, t) == (overall, per)
    assert calls[0] == (0, [0, 1, 2, 3, 4, 5]) and calls[1] == (1, [0, 1, 2])


def test_tie_counts_as_wrong():
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    overall, per = triplet_accuracy(emb, np.array([[0, 1, 2, 0], [0, 2, 1, 0]]))
    assert overall == 0.0 and per == {0: 0.0}


def test_triplet_accuracy_on_plain_array_and_shared_embedding():
    rows = np.array([[0, 1, 2, 0], [0, 2, 1, 1]])
    emb = _line_embeddings([0, 90, 10])
    overall, per = triplet_accuracy(emb, rows)
    assert per == {0: 100.0, 1: 0.0} and overall == 50.0
    overall, per = triplet_accuracy(emb, rows, condition_names=["class", "closure"])
    assert per == {"class": 100.0, "closure": 0.0}


def test_random_embeddings_give_about_50_percent():
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 500, (4000, 3)), rng.integers(0, 4, (4000, 1))], axis=1)
    emb = rng.standard_normal((4, 500, 16))
    overall, per = triplet_accuracy(emb, rows, condition_names=CONDITIONS)
    assert overall == pytest.approx(50, abs=3)
    assert set(per) == set(CONDITIONS)


def test_triplet_accuracy_bad_input():
    with pytest.raises(ValueError, match="no triplets"):
        triplet_accuracy(np.eye(3), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        triplet_accuracy(np.eye(3), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="embeddings must be"):
        triplet_accuracy("nope", np.zeros((1, 4), dtype=int))
