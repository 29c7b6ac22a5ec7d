"""ProFashion (profashion.models.profashion): interface, explain, bad input, checkpoints, training, ablations.

Tiny models on 32-48 px images; the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN

from profashion.cli import main
from profashion.models import ModelError, build_model, load_model, save_checkpoint
from profashion.models.profashion import ProFashion, grid_superpixels

NUM_VALUES = [3, 4, 2]
TRANSPORTS = ["ot", "ot_literal", "attention"]


def _superpixels() -> str:
    """The paper's density superpixels when the package is there, else the regular grid."""
    try:
        from profashion.superpixels import density_superpixels  # noqa: F401
    except ImportError:
        return "grid"
    return "density"


def images(n: int, h: int = 48, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def tiny(**overrides) -> ProFashion:
    torch.manual_seed(0)
    cfg = {"image_size": 48, "resize": 48, "superpixels": _superpixels(), "n_segments": 16, **overrides}
    return build_model("profashion", "scratch", NUM_VALUES, **cfg).eval()


@pytest.fixture(scope="module", params=TRANSPORTS)
def model(request):
    return tiny(transport=request.param)


def test_embed_all_matches_embed(model):
    x = images(3)
    ids = torch.tensor([0, 2, 1])
    with torch.no_grad():
        all_ = model.embed_all(x)
        one = model.embed(x, ids)
    assert all_.shape == (3, 3, 64) and one.shape == (3, 64)
    torch.testing.assert_close(all_.norm(dim=-1), torch.ones(3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(one, all_[torch.arange(3), ids], atol=1e-4, rtol=0)
    assert (all_[:, 0] - all_[:, 1]).abs().max() > 1e-4  # the attribute matters


def test_explain_keys_shapes_and_ranges(model):
    img = images(1, 40, 56)[0]
    out = model.explain(img, 1)
    for key in ("heatmap", "correlation", "ot_map", "superpixel_map"):
        m = out[key]
        assert m.shape == (40, 56), key
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, key
    h, w = out.feature_map_size
    assert out["ot_weights"].shape == (h, w)
    assert abs(out["ot_weights"].sum().item() - 1) < 1e-3
    plan = out["ot_plan"]
    if model.config.transport == "ot":
        assert plan.shape == (len(NUM_VALUES), h * w)  # every attribute against every patch
        torch.testing.assert_close(plan.sum(1), torch.full((3,), 1 / 3), atol=1e-3, rtol=0)
        torch.testing.assert_close(plan.sum(0), torch.full((h * w,), 1 / (h * w)), atol=1e-3, rtol=0)
    elif model.config.transport == "ot_literal":
        assert plan.shape == (h, w) and abs(plan.sum().item() - 1) < 1e-3
    y0, x0, y1, x1 = out["crop_box"]
    assert 0 <= y0 < y1 <= 40 and 0 <= x0 < x1 <= 56
    sp = out["superpixels"]
    assert sp.shape == (40, 56) and sp.dtype == torch.int32 and sp.min() == 0
    assert out.map("superpixels").kind == "labels" and out.map("crop_box").kind == "box"
    chosen = out.map("superpixels").selection
    assert chosen and all(0 <= i <= int(sp.max()) for i, _ in chosen)
    assert all(math.isfinite(wt) for _, wt in chosen)
    assert [wt for _, wt in chosen] == sorted((wt for _, wt in chosen), reverse=True)
    # the superpixel map is non-zero exactly on the selected superpixels
    ids = torch.tensor([i for i, _ in chosen])
    on = (sp[..., None] == ids).any(-1)
    assert (out["superpixel_map"][~on] == 0).all()


def test_explain_errors_and_training_state():
    m = tiny()
    with pytest.raises(ModelError, match="out of range"):
        m.explain(images(1)[0], 3)
    with pytest.raises(ModelError, match=r"\(3, H, W\)"):
        m.explain(images(2), 0)
    m.train()
    m.explain(images(1)[0], 0)
    assert m.training


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_degenerate_inputs_never_give_nan(transport):
    m = tiny(transport=transport)
    cases = {
        "constant image": torch.zeros(2, 3, 48, 48),
        "nan image": torch.full((2, 3, 48, 48), float("nan")),
        "inf image": torch.full((2, 3, 48, 48), float("inf")),
        "smaller than the superpixel window": images(2, 5, 5),
    }
    for name, x in cases.items():
        with torch.no_grad():
            e = m.embed_all(x)
        assert torch.isfinite(e).all(), name
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(2, 3), atol=1e-4, rtol=0, msg=name)
        out = m.explain(x[0], 0)
        assert torch.isfinite(out["heatmap"]).all(), name


def test_all_equal_cost_gives_uniform_weights():
    m = tiny()
    corr = torch.zeros(2, 3, 16)
    weights, plan = m.transport(corr, (4, 4))
    torch.testing.assert_close(weights, torch.full((2, 3, 16), 1 / 16))
    torch.testing.assert_close(plan, torch.full((2, 3, 16), 1 / 48))


def test_a_crop_that_selects_no_superpixel_falls_back_to_the_best_one():
    # one superpixel covering the left half, one the right; the crop is one cell in the middle row
    overlap = torch.zeros(1, 2, 16)
    grid = torch.arange(16).view(4, 4)
    overlap[0, 0, grid[:, :2].flatten()] = 4
    overlap[0, 1, grid[:, 2:].flatten()] = 4
    weights = torch.full((1, 1, 16), 0.5 / 14)
    weights[0, 0, 6] = 0.25
    weights[0, 0, 7] = 0.25
    crop = torch.zeros(1, 1, 16, dtype=torch.bool)
    crop[0, 0, 6] = True  # 1 of the 8 cells of superpixel 1: not "inside"
    mean_w, selected = ProFashion.select_superpixels(None, overlap, weights, crop)
    assert selected.tolist() == [[[False, True]]]
    assert mean_w[0, 0, 1] > mean_w[0, 0, 0]


def test_an_attribute_with_one_value_trains():
    torch.manual_seed(0)
    m = build_model("profashion", "scratch", [1, 3], image_size=32, resize=32, superpixels="grid").train()
    e = m(images(6, 32, 32), torch.zeros(6, dtype=torch.long))
    loss = e.sum() + m.auxiliary_loss(torch.zeros(6, dtype=torch.long))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_grid_superpixels():
    lab = grid_superpixels(10, 7, 16)
    assert lab.shape == (10, 7) and lab.dtype == np.int32
    assert set(np.unique(lab)) == set(range(16))
    assert grid_superpixels(2, 3, 64).max() < 6


# -- checkpoints, settings -------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    m = tiny(transport="ot_literal", use_ln=False)
    ckpt = save_checkpoint(m, tmp_path / "ckpt")
    back = load_model(ckpt, expect_model="profashion")
    assert back.config == m.config
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(back.embed_all(x), m.embed_all(x), atol=1e-6, rtol=0)
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model"] == "profashion" and cfg["config"]["transport"] == "ot_literal"


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ModelError, match="'transport' must be one of"):
        tiny(transport="sinkhorn")
    with pytest.raises(ModelError, match="'superpixels' must be one of"):
        tiny(superpixels="slic")
    with pytest.raises(ModelError, match="attribute_prompts"):
        tiny(attribute_embedding="clip", backbone="openclip:ViT-B-32")


@pytest.mark.parametrize("switch", [{"use_rp": False}, {"use_ps": False}, {"use_lp": False},
                                    {"use_ln": False}, {"use_lp": False, "use_ln": False},
                                    {"transport": "attention"}])
def test_ablation_switches_build_and_train(switch):
    m = tiny(**switch).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x, ids = images(12, 32, 32, seed=1), torch.arange(12) % 3
    e = m(x, ids)
    aux = m.auxiliary_loss(torch.arange(12) % 2)
    loss = e.sum() * 0.01 + aux
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    if not (m.config.use_lp or m.config.use_ln):
        assert aux == 0
    with torch.no_grad():
        assert torch.isfinite(m.eval().embed_all(x)).all()
    if not m.config.use_rp:
        w, _ = m.transport(torch.randn(1, 3, 16), (4, 4))
        torch.testing.assert_close(w, torch.full((1, 3, 16), 1 / 16))


def test_cluster_losses_reach_the_features():
    m = tiny().train()
    e = m(images(12, 32, 32), torch.arange(12) % 3)
    aux = m.auxiliary_loss(torch.arange(12) % 2)
    assert aux > 0
    aux.backward(retain_graph=True)
    assert m.backbone.stem[0].weight.grad.abs().sum() > 0
    assert all(enc[0].weight.grad is not None for enc in m.aggregation.encoders.encoders)
    assert m.auxiliary_loss(torch.zeros(12)) == 0  # consumed: nothing stored any more
    e.sum().backward()


def test_paper_preset_builds_with_two_clip_trunks():
    m = build_model("profashion", "paper", NUM_VALUES, superpixels="grid").eval()
    assert m.ps_backbone is not None
    assert m.preprocess.crop == 224 and m.preprocess.mean[0] == pytest.approx(0.4815, abs=1e-4)
    with torch.no_grad():
        out = m.embed_all(images(1, 224, 224))
    assert out.shape == (1, 3, 1024) and torch.isfinite(out).all()


# -- training through the command line --------------------------------------------------------------


def test_tiny_training_run(tiny_synth, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = json.dumps({"image_size": 48, "resize": 48, "superpixels": _superpixels(), "n_segments": 16})
    args = [a if a != '{"image_size": 48, "resize": 48}' else cfg for a in TINY_TRAIN]
    rc = main(["train", "--model", "profashion", "--dataset", str(tiny_synth), "--out", str(out),
               "--epochs", "1", "--stage2-epochs", "1", *args])
    assert rc == 0
    rec = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rec] == [1, 2]  # ProFashion's two-stage schedule
    assert rec[1]["lr"] == pytest.approx(1e-4)  # the demo preset's stage-2 rate
    assert all(math.isfinite(r["loss"]) and 0 <= r["val_map"] <= 100 for r in rec)
    m = load_model(out / "best")
    assert m.name == "profashion" and m.config.superpixels == _superpixels()
