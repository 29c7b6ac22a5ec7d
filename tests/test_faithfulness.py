"""Faithfulness: deletion / insertion curves of a map, against random and inverse orders, with ROAD removal.

The metric must be shown to measure something: on a toy model whose embedding depends on one known region only,
a map on that region must be clearly more faithful than the random order, a map elsewhere and the inverse map must
not, and a random map must land inside the random order's interval.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import spsolve

from profashion.cli import main
from profashion.data.images import Preprocess
from profashion.evaluation.faithfulness import (
    ROAD_WEIGHTS,
    MapCurves,
    check_settings,
    forward_passes,
    map_units,
    pair_curves,
    query_faithfulness,
    road_impute,
    step_keeps,
    summarise,
    top_matches,
    unit_orders,
)
from profashion.explain.explanation import Explanation, Map

SIZE = 32
REGION = (slice(4, 16), slice(4, 16))  # the only pixels the toy embedding reads (14% of the image)


class RegionModel(torch.nn.Module):
    """An embedding of the REGION pixels only (4x4-pooled, 48-D, L2-normalised); counts the images it embeds."""

    name = "region"

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls, self.images = 0, 0
        self.preprocess = Preprocess(SIZE, SIZE)

    @property
    def device(self):
        return self.anchor.device

    def embed(self, x, attribute_ids):
        self.calls += 1
        self.images += len(x)
        patch = x[:, :, REGION[0], REGION[1]]
        return F.normalize(F.adaptive_avg_pool2d(patch, 4).flatten(1), dim=1)

    def explain(self, image, attribute_id):
        return Explanation((Map("heatmap", "heatmap", region_map(), "the region the embedding reads"),))


def region_map(inside: float = 1.0, outside: float = 0.0) -> torch.Tensor:
    m = torch.full((SIZE, SIZE), outside)
    m[REGION] = inside
    return m


def textures(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images: structure at several scales, so imputation cannot restore a removed region."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 3, SIZE, SIZE)
    for s in (8, 16, 32):
        out += F.interpolate(torch.randn(n, 3, s, s, generator=g), size=(SIZE, SIZE), mode="bilinear")
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tests' small tensors run several times faster so on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    """The model, 12 query images and a gallery: 40 unrelated images, and for each query 3 that share its region
    (slightly changed) in other surroundings, its true matches."""
    model = RegionModel()
    queries = textures(12, seed=2)
    similar = textures(36, seed=3)
    similar[:, :, REGION[0], REGION[1]] = (queries.repeat_interleave(3, 0)[:, :, REGION[0], REGION[1]]
                                           + 0.3 * textures(36, seed=4)[:, :, REGION[0], REGION[1]])
    pictures = torch.cat([textures(40, seed=1), similar])
    return model, queries, model.embed(pictures, torch.zeros(len(pictures), dtype=torch.long))


def curves_of(toy, heat: torch.Tensor, seed: int = 0) -> list[MapCurves]:
    model, images, gallery = toy
    out = []
    for i, x in enumerate(images):
        targets = top_matches(model.embed(x[None], torch.zeros(1, dtype=torch.long))[0], gallery, k=3)
        (c,) = pair_curves(model, x, 0, targets, [Map("m", "heatmap", heat, "a map")], steps=10, grid=8,
                           seed=seed + i)
        out.append(c)
    return out


def test_a_map_on_the_region_the_embedding_reads_is_faithful_and_one_elsewhere_is_not(toy):
    good = summarise(curves_of(toy, region_map()), [0] * 12, 1, n_resamples=500)
    assert good.n == 12
    # removing the region first takes the match away far faster than random, inserting it brings it back faster
    assert good.auc["deletion map"] < good.auc["deletion random"] - 25
    assert good.ci95["deletion map - random"][1] < 0
    assert good.auc["insertion map"] > good.auc["insertion random"] + 10
    assert good.ci95["insertion map - random"][0] > 0
    # the inverse order (least important first) behaves the reverse way
    assert good.auc["deletion inverse"] > good.auc["deletion random"] + 10
    other = torch.zeros(SIZE, SIZE)
    other[18:30, 18:30] = 1.0  # as large as the region, where the embedding does not look
    elsewhere = summarise(curves_of(toy, other), [0] * 12, 1, n_resamples=500)
    assert elsewhere.ci95["deletion map - random"][1] > 0  # not more faithful than random
    assert elsewhere.auc["deletion map"] > good.auc["deletion map"] + 25


def test_a_random_map_falls_within_the_random_orders_interval_and_the_inverse_map_scores_worse(toy):
    noise = torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    rand = summarise(curves_of(toy, noise, seed=100), [0] * 12, 1, n_resamples=500)
    lo, hi = rand.ci95["deletion random"]
    assert lo - 5 <= rand.auc["deletion map"] <= hi + 5  # within the baseline's interval (5 points of slack)
    lo, hi = rand.ci95["deletion map - random"]
    assert lo < 0 < hi or abs(rand.auc["deletion map - random"]) < 5
    inverse = summarise(curves_of(toy, 1.0 - region_map()), [0] * 12, 1, n_resamples=500)
    assert inverse.ci95["deletion map - random"][0] > 0  # the inverse of a faithful map is worse than random


def test_insertion_is_deletion_in_the_reverse_order_and_curves_run_from_1_to_0(toy):
    (c, *_) = curves_of(toy, region_map())
    for order in ("map", "random", "inverse"):
        curve = c.curve(order)
        assert curve[0] == pytest.approx(1.0) and curve[-1] == pytest.approx(0.0)
        assert c.x[order][0] == 0.0 and c.x[order][-1] == 1.0 and np.all(np.diff(c.x[order]) >= 0)
    assert c.insertion_auc("map") == c.deletion_auc("inverse")
    assert c.insertion_auc("inverse") == c.deletion_auc("map")
    assert c.drop_at("map", 0.2) > c.drop_at("random", 0.2) + 0.2
    assert c.sentence().startswith(f"removing this map's top 20% (area) takes away {100 * c.drop_at('map', 0.2):.0f}%")


def test_forward_passes_are_bounded_and_batched(toy):
    model, images, gallery = toy
    maps = [Map("a", "heatmap", region_map(), "a"), Map("b", "heatmap", torch.rand(8, 8), "b"),
            Map("sp", "labels", torch.arange(SIZE * SIZE).reshape(SIZE, SIZE) // 128, "superpixels",
                selection=((0, 0.9), (3, 0.5)))]
    model.calls = model.images = 0
    curves = pair_curves(model, images[0], 0, gallery[:3], maps, steps=8, grid=8, batch=64)
    assert len(curves) == 3
    assert model.images == forward_passes(3, 1, steps=8) == 2 + 7 * (1 + 1 + 6)
    assert model.calls == math.ceil(model.images / 64)
    model.calls = model.images = 0
    pair_curves(model, images[0], 0, gallery[:3], maps[:1], steps=10, grid=8, batch=64)
    assert (model.images, model.calls) == (forward_passes(1, 0, 10), 1) == (29, 1)


def test_superpixel_maps_remove_whole_superpixels_in_weight_order():
    labels = torch.arange(16 * 16).reshape(16, 16) // 32  # 8 bands of 2 rows
    m = Map("superpixels", "labels", labels, "bands", selection=((5, 0.9), (2, 0.4)))
    units = map_units(m, (16, 16))
    assert units.kind == "superpixel" and len(units.sizes) == 8
    order = unit_orders(units, np.random.default_rng(0))["map"]
    assert list(order[:2]) == [5, 2]
    keeps, x = step_keeps(units, order, 4)
    for k in keeps:  # every superpixel is kept or removed whole
        for u in range(8):
            assert len(set(k[units.ids == u].tolist())) == 1
    band = labels.numpy()
    assert not keeps[1][(band == 5) | (band == 2)].any() and keeps[1][(band != 5) & (band != 2)].all()  # 1/4: 2 bands
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def _direct_solve(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """ROAD's imputation as its reference implementation poses it, solved exactly (scipy)."""
    h, w = keep.shape
    miss = np.flatnonzero(~keep.ravel())
    vid = np.full(h * w, -1)
    vid[miss] = np.arange(len(miss))
    flat = img.reshape(img.shape[0], -1)
    a = sp.lil_matrix((len(miss), len(miss)))
    b = np.zeros((len(miss), img.shape[0]))
    wts = ROAD_WEIGHTS.numpy()
    for r, p in enumerate(miss):
        y, x = divmod(p, w)
        total = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy or dx) and 0 <= yy < h and 0 <= xx < w:
                    q, wt = yy * w + xx, wts[dy + 1, dx + 1]
                    total += wt
                    if keep.ravel()[q]:
                        b[r] -= wt * flat[:, q]
                    else:
                        a[r, vid[q]] = wt
        a[r, r] = -total
    out = flat.copy()
    out[:, miss] = spsolve(sp.csc_matrix(a), b).T
    return out.reshape(img.shape)


def test_road_imputation_matches_the_direct_solve_within_its_noise():
    img = textures(1, seed=7)[0]
    keep = np.ones((SIZE, SIZE), bool)
    keep[6:26, 3:20] = False  # a large hole
    keep[::5, 25:] = False  # and scattered rows
    exact = _direct_solve(img.double().numpy(), keep)
    got = road_impute(img[None], torch.from_numpy(keep)[None], noise=0.0)[0].double().numpy()
    assert np.array_equal(got[:, keep], img.double().numpy()[:, keep])  # kept pixels untouched
    assert np.abs(got - exact)[:, ~keep].mean() < 0.01  # ROAD adds noise of std 0.01 on top
    noisy = road_impute(img[None], torch.from_numpy(keep)[None], generator=torch.Generator().manual_seed(0))[0]
    assert 0.005 < float((noisy.double().numpy() - got)[:, ~keep].std()) < 0.02
    empty = road_impute(img[None], torch.zeros(1, SIZE, SIZE, dtype=torch.bool), noise=0.0)
    assert torch.all(empty == 0)  # nothing to impute from: the normalisation's mean colour


def test_query_faithfulness_answers_one_query_for_several_models_with_a_sentence(toy):
    model, images, gallery = toy
    img = (images[0].permute(1, 2, 0).numpy() * 0.229 + 0.45).clip(0, 1)
    out = query_faithfulness({"one": model, "two": model}, (img * 255).astype(np.uint8), 0,
                             {"one": gallery, "two": gallery}, k=3, steps=10)
    assert set(out) == {"one", "two"}
    (c,) = out["one"]
    assert c.map == "heatmap" and c.valid and c.deletion_auc("map") < c.deletion_auc("random")
    assert "takes away" in c.sentence()
    with pytest.raises(ValueError, match="no gallery embeddings"):
        query_faithfulness({"three": model}, (img * 255).astype(np.uint8), 0, {}, k=3)


@pytest.mark.parametrize("steps, grid, k, word", [(3, 16, 5, "steps"), (21, 16, 5, "steps"), (10, 2, 5, "grid"),
                                                  (10, 16, 0, "k"), (True, 16, 5, "steps")])
def test_out_of_range_settings_are_one_sentence(steps, grid, k, word):
    with pytest.raises(ValueError, match=f"^{word} must be a whole number"):
        check_settings(steps, grid, k)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from profashion.data.synth import generate_synth

    return generate_synth(tmp_path_factory.mktemp("faith") / "synth", 0, 1, 10, size=48, seed=0)


def test_cli_scores_a_shipped_checkpoint_and_writes_json(tiny_data, tmp_path, capsys):
    out = tmp_path / "f.json"
    assert main(["faithfulness", "--checkpoint", "checkpoints/asen", "--dataset", str(tiny_data), "--map", "heatmap",
                 "--max-pairs", "2", "--steps", "4", "--resamples", "20", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "deletion: map" in text and "11 forward passes a pair" in text
    res = json.loads(out.read_text())
    assert res["model"] == "asen" and res["settings"]["pairs"] == 2 and len(res["pairs"]) == 2
    (s,) = res["maps"]
    assert s["map"] == "heatmap" and s["pairs"] + s["flat_pairs"] == 2
    curve = res["pairs"][0]["maps"][0]
    assert len(curve["similarity"]["map"]) == 5 and curve["removed_fraction"]["random"][-1] == 1.0


@pytest.mark.parametrize("flags, expected", [
    (["--steps", "30"], "steps must be a whole number from 4 to 20"),
    (["--max-pairs", "0"], "--max-pairs must be at least 1"),
    (["--resamples", "0"], "--resamples must be a whole number"),
    (["--checkpoint", "nowhere/ckpt"], "checkpoint folder not found: nowhere/ckpt"),
    (["--map", "no_such_map", "--max-pairs", "1"], "no map 'no_such_map' to score"),
])
def test_cli_refuses_bad_arguments_in_one_sentence(tiny_data, capsys, flags, expected):
    args = ["faithfulness", "--checkpoint", "checkpoints/asen", "--dataset", str(tiny_data), "--quiet"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_cli_refuses_a_missing_dataset(tmp_path, capsys):
    assert main(["faithfulness", "--checkpoint", "checkpoints/asen", "--dataset", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
