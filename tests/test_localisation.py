"""Localisation scores: a map's mass inside the queried attribute's ground-truth region."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from profashion.cli import main
from profashion.data.images import Preprocess
from profashion.data.splits import DatasetError, load_dataset
from profashion.data.synth import load_attribute_masks
from profashion.evaluation.localisation import (
    evaluate_localisation,
    localisation_pairs,
    localisation_score,
    pointing_hit,
)
from profashion.explain.explanation import Explanation, Map
from profashion.models.base import build_model, save_checkpoint


def test_score_is_the_share_of_mass_inside_the_mask():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert localisation_score(mask.astype(float), mask) == pytest.approx(100.0)
    assert localisation_score(~mask * 1.0, mask) == pytest.approx(0.0)
    assert localisation_score(np.ones((10, 10)), mask) == pytest.approx(50.0)  # uniform = area share
    assert localisation_score(np.zeros((10, 10)), mask) == pytest.approx(50.0)  # no mass counts as uniform
    h = np.ones((10, 10))
    h[:5] = 3.0
    assert localisation_score(torch.tensor(h), mask) == pytest.approx(75.0)
    assert localisation_score(-np.ones((10, 10)) + 2 * mask, mask) == pytest.approx(100.0)  # negatives clipped


def test_a_map_at_another_resolution_is_resized():
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True
    small = np.zeros((4, 4))
    small[:, :2] = 1.0
    assert localisation_score(small, mask) > 90.0
    assert pointing_hit(small, mask) and not pointing_hit(small[:, ::-1], mask)


def test_bad_maps_are_refused():
    mask = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="NaN"):
        localisation_score(np.full((4, 4), np.nan), mask)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        localisation_score(np.ones((2, 4, 4)), mask)


def test_mask_geometry_matches_the_image_geometry():
    # a red square on white at a known place; after resize + crop the mask must cover the red pixels
    img = np.full((60, 90, 3), 255, np.uint8)
    img[20:40, 50:70] = (255, 0, 0)
    mask = np.zeros((60, 90), bool)
    mask[20:40, 50:70] = True
    pre = Preprocess(32, 32)
    out = np.asarray(pre.geometry(Image.fromarray(img))).astype(int)
    red = (out[..., 0] > 200) & (out[..., 1] < 60)
    m = pre.geometry_mask(mask)
    assert m.shape == (32, 32) and red.any()
    assert (red & m).sum() / red.sum() > 0.95 and (m & ~red).sum() <= 0.3 * m.sum()


def test_an_oracle_map_scores_100_and_a_uniform_map_its_area(tiny_synth, monkeypatch):
    ds = load_dataset(tiny_synth)
    pre = Preprocess(48, 48)
    pairs = localisation_pairs(ds, "test")
    assert len(pairs) == len(np.unique(pairs, axis=0)) and len(pairs) > 0

    class Oracle:
        name = "oracle"
        preprocess = pre

        def explain(self, image, attribute_id):
            # find the image by its pixels: the evaluator passes images in pair order
            fid = int(order.pop(0))
            m = load_attribute_masks(ds.mask_path("test", fid), ds.schema.num_attributes)[attribute_id]
            return Explanation((Map("heatmap", "heatmap", pre.geometry_mask(m).astype(float), "the mask itself"),
                                Map("flat", "heatmap", np.ones((48, 48)), "uniform"),
                                Map("plan", "matrix", np.ones((3, 4)), "not a heatmap")))

    visible = [(f, a) for f, a in pairs
               if pre.geometry_mask(load_attribute_masks(ds.mask_path("test", f), ds.schema.num_attributes)[a]).any()]
    order = [f for f, _ in visible]
    res = evaluate_localisation(Oracle(), ds, "test")
    assert res.n == len(visible) and res.overall == pytest.approx(100.0) and res.pointing == pytest.approx(100.0)
    assert 0 < res.uniform < 100
    order = [f for f, _ in visible]
    flat = evaluate_localisation(Oracle(), ds, "test", key="flat")
    assert flat.overall == pytest.approx(flat.uniform)
    with pytest.raises(ValueError, match="no 'nope' map"):
        order = [f for f, _ in visible]
        evaluate_localisation(Oracle(), ds, "test", key="nope")
    with pytest.raises(ValueError, match="a matrix, not a heatmap"):
        order = [f for f, _ in visible]
        evaluate_localisation(Oracle(), ds, "test", key="plan")


def test_localise_command(tiny_synth, tmp_path, capsys):
    ds = load_dataset(tiny_synth)
    model = build_model("asen", "demo", ds.schema.num_values, image_size=48, resize=48)
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "loc.json"
    assert main(["localise", "--checkpoint", str(ckpt), "--dataset", str(tiny_synth), "--max-pairs", "12",
                 "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "in-mask %" in text and "overall" in text
    res = json.loads(out.read_text())
    assert res["model"] == "asen" and 0 < res["n"] <= 12 and 0.0 <= res["overall"] <= 100.0


def test_localisation_needs_masks(asen_splits, tiny_synth, tmp_path, capsys):
    ds = load_dataset(tiny_synth)
    ckpt = save_checkpoint(build_model("triplet", "demo", ds.schema.num_values), tmp_path / "ckpt")
    assert main(["localise", "--checkpoint", str(ckpt), "--dataset", str(asen_splits / "FashionAI")]) == 2
    assert "no attribute masks" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="synthetic"):
        evaluate_localisation(build_model("triplet", "demo", ds.schema.num_values), load_dataset(asen_splits / "FashionAI"))
