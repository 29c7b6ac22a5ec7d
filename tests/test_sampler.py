import numpy as np
import pytest

from profashion.data.sampler import TripletSampler
from profashion.data.splits import DatasetError


def _labels():
    rows = []
    # attribute 0: values 0 (5 images), 1 (4 images), 2 (1 image: cannot be an anchor's value)
    for f in range(5):
        rows.append((f, 0, 0))
    for f in range(5, 9):
        rows.append((f, 0, 1))
    rows.append((9, 0, 2))
    # attribute 1: only value 0 has images -> no negative possible -> attribute skipped
    for f in range(3):
        rows.append((f, 1, 0))
    # attribute 2: images 10..15, two values of three images each (images may carry several attributes)
    for f in range(10, 16):
        rows.append((f, 2, f % 2))
    return np.array(rows)


def test_triplets_follow_the_protocol():
    labels = _labels()
    s = TripletSampler(labels, [3, 2, 2])
    t = s.sample(5000, seed=1, epoch=0)
    value = {(f, a): v for f, a, v in labels}
    assert set(np.unique(t[:, 3])) == {0, 2}
    assert s.skipped_attributes == [1]
    for a_, p, n, attr in t:
        assert a_ != p
        assert value[(a_, attr)] == value[(p, attr)]
        assert value[(n, attr)] != value[(a_, attr)]
        assert value[(a_, attr)] != 2 or attr != 0  # a single-image value is never the anchor's value
    # the single-image value still serves as a negative
    assert ((t[:, 3] == 0) & (t[:, 2] == 9)).any()


def test_sampling_is_seeded_per_epoch():
    s = TripletSampler(_labels(), [3, 2, 2])
    np.testing.assert_array_equal(s.sample(100, 3, 2), s.sample(100, 3, 2))
    assert not np.array_equal(s.sample(100, 3, 2), s.sample(100, 3, 3))
    assert not np.array_equal(s.sample(100, 3, 2), s.sample(100, 4, 2))


def test_attributes_roughly_uniform():
    t = TripletSampler(_labels(), [3, 2, 2]).sample(20000, 0)
    frac = np.mean(t[:, 3] == 0)
    assert 0.47 < frac < 0.53


def test_no_usable_attribute_is_a_clear_error():
    with pytest.raises(DatasetError, match="no attribute can give a triplet"):
        TripletSampler(np.array([[0, 0, 0], [1, 0, 1]]), [2])
