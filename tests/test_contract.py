"""The model contract (profashion.models.base.RetrievalModel) and the typed Explanation, checked on every
registered model through what the contract declares alone; and the renderer drawing maps by kind."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from profashion.explain.explanation import KINDS, Explanation, Map
from profashion.models.backbones import Backbone, create_backbone
from profashion.models.base import (
    _REGISTRY,
    ModelConfig,
    ModelError,
    RetrievalModel,
    available_models,
    build_model,
    preset_record,
    register,
)
from profashion.models.presets import preset

NUM_VALUES = [3, 4, 2]
SIZE = 48
ROOT = Path(__file__).resolve().parents[1]


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=available_models())
def model(request) -> RetrievalModel:
    torch.manual_seed(0)
    return build_model(request.param, "scratch", NUM_VALUES, image_size=SIZE, resize=SIZE).eval()


# -- the contract, on every registered model ---------------------------------------------------------


def check_contract(model: RetrievalModel) -> None:
    """Everything the trainer, the index and the app call, through the declared names only."""
    A, B = len(NUM_VALUES), 3
    assert isinstance(model, RetrievalModel) and model.name in available_models() + ["toy"]
    assert isinstance(model.config, model.config_class) and model.num_attributes == A
    assert isinstance(model.backbone, Backbone) and model.backbone.out_channels > 0
    assert model.config_class(**model.config.to_json()) == model.config  # a checkpoint's config.json rebuilds it
    assert model.preprocess.crop == SIZE
    x, ids = images(B), torch.tensor([0, 2, 1])
    with torch.no_grad():
        all_ = model.embed_all(x)
        one = model.embed(x, ids)
        fwd = model(x, ids)
        D = model.config.embed_dim
        assert all_.shape == (B, A, D) and one.shape == (B, D)
        torch.testing.assert_close(all_.norm(dim=-1), torch.ones(B, A), atol=1e-4, rtol=0)
        torch.testing.assert_close(one, all_[torch.arange(B), ids], atol=1e-4, rtol=0)
        torch.testing.assert_close(fwd, one)
        # the trunk / head split: embed == embed_from_trunk o trunk_features
        trunk = model.trunk_features(x)
        torch.testing.assert_close(model.embed_from_trunk(trunk, ids), one, atol=1e-4, rtol=0)
        torch.testing.assert_close(model.embed_all_from_trunk(trunk), all_, atol=1e-4, rtol=0)
        extras = model.trunk_extras(x) if model.has_trunk_extras() else ()
        assert isinstance(model.has_trunk_extras(), bool)
        mirrored = model.mirror_trunk_extras(tuple(extras))
        assert mirrored is None or len(mirrored) == len(extras)
        shared = model.shared_trunk_features(x)
        assert torch.equal(shared, trunk[0] if isinstance(trunk, tuple) else trunk)
        warm = model.warmup_features(x)
        assert warm.shape == (B, model.backbone.out_channels)
    with pytest.raises(ModelError, match="out of range"):
        model.embed(x, torch.tensor([0, 1, A]))
    # index / cache hooks
    assert isinstance(model.cacheable_trunk(), bool) and isinstance(model.frozen_modules(), dict)
    key = model.trunk_cache_key()
    assert key is None or {"shared", "extras"} <= set(key)
    # training hooks: declared, callable, a finite scalar the trainer adds to the loss
    assert isinstance(model.find_unused_parameters, bool)
    assert isinstance(model.checkpoint_info, Mapping)
    model.train()
    try:
        emb = model(x.repeat(3, 1, 1, 1), ids.repeat(3))
        reg = model.regularization()
        aux = model.auxiliary_loss(torch.zeros(len(emb), dtype=torch.long))
        for term in (reg, aux):
            assert torch.is_tensor(term) and term.ndim == 0 and torch.isfinite(term)
        (emb.sum() + reg + aux).backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    check_explanation(model, images(1, seed=1)[0])


def check_explanation(model: RetrievalModel, image: torch.Tensor) -> None:
    H, W = image.shape[1:]
    for a in range(model.num_attributes):
        ex = model.explain(image, a)
        assert isinstance(ex, Explanation), type(ex)
        assert ex.maps[0].name == "heatmap" and ex.heatmap.shape == (H, W)
        assert torch.isfinite(ex.heatmap).all() and 0 <= float(ex.heatmap.min()) and float(ex.heatmap.max()) <= 1
        if ex.feature_map_size is not None:
            assert len(ex.feature_map_size) == 2 and all(v >= 1 for v in ex.feature_map_size)
        for m in ex.maps:
            assert m.kind in KINDS and len(m.about.split()) >= 4, m  # a sentence on what it means
            if m.kind == "heatmap":
                assert m.data.ndim == 2 and torch.isfinite(m.data).all()
                h, w = m.data.shape  # at the image's resolution or at the feature map's
                assert (h, w) == (H, W) or (h, w) == ex.feature_map_size
            elif m.kind == "heatmaps":
                assert m.data.ndim == 3 and tuple(m.data.shape[1:]) == ex.feature_map_size
            elif m.kind == "labels":
                assert tuple(m.data.shape) == (H, W) and not m.data.dtype.is_floating_point
                for i, _ in m.selection or ():
                    assert 0 <= i <= int(m.data.max())
            elif m.kind == "box":
                y0, x0, y1, x1 = m.data
                assert 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W
            elif m.kind == "matrix":
                rows = 1 if m.data.ndim == 1 else m.data.shape[0]
                assert m.rows and m.columns  # what its axes are
                if m.row_attributes is not None:
                    assert all(0 <= i < model.num_attributes for i in m.row_attributes)
                    assert m.highlight_row is not None and m.row_attributes[m.highlight_row] == a
                assert m.row_labels is None or len(m.row_labels) == rows
        for name, v in ex.numbers.items():
            assert np.isfinite(v) and ex.number_about[name]


def test_every_registered_model_keeps_the_contract(model):
    check_contract(model)


def test_adding_a_model_is_one_class_and_its_preset_record():
    """A method written against the contract alone (what a new file in profashion/models holds) builds,
    trains, explains and is drawn like the others."""

    @dataclasses.dataclass
    class ToyConfig(ModelConfig):
        backbone: str = "small_cnn"

    class Toy(RetrievalModel):
        config_class = ToyConfig

        def __init__(self, config):
            super().__init__(config)
            self.backbone = create_backbone(config.backbone, None, image_size=config.image_size)
            self.heads = torch.nn.Linear(self.backbone.out_channels, config.num_attributes * config.embed_dim)

        def embed_all_from_map(self, fmap):
            e = self.heads(fmap.mean(dim=(2, 3))).view(len(fmap), self.num_attributes, -1)
            return self.normalise(e)

        def embed_from_map(self, fmap, ids):
            return self.embed_all_from_map(fmap)[torch.arange(len(fmap)), ids]

        def embed_all(self, images):
            return self.embed_all_from_map(self.backbone(images))

        def explain(self, image, attribute_id):
            self.check_attributes(attribute_id, 1)
            contribution, size = self.pooled_linear_contribution(image, self.heads)
            return Explanation((Map("heatmap", "heatmap", self.upsample_map(contribution, tuple(image.shape[1:])),
                                    "Each location's share of the embeddings, rescaled to [0, 1]."),),
                               feature_map_size=size)

    try:
        register("toy", presets={"scratch": preset({"image_size": 96}, about="a toy")})(Toy)
        assert "toy" in available_models() and preset_record("toy", "scratch")["about"] == "a toy"
        check_contract(build_model("toy", "scratch", NUM_VALUES, image_size=SIZE, resize=SIZE).eval())
    finally:
        _REGISTRY.pop("toy", None)


def test_every_hook_looked_up_by_name_is_declared():
    """The trainer, index, app and benchmarks find optional hooks with getattr / hasattr: each of them must be
    declared on RetrievalModel (the model's) or Backbone (the trunk's), so the defaults are written down."""
    found = set()
    for path in [*(ROOT / "profashion").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        if path.parent.name == "models":
            continue
        text = path.read_text(encoding="utf-8")
        for owner, name in re.findall(r"(?:getattr|hasattr)\((\w*model|backbone), \"(\w+)\"", text):
            found.add((owner, name))
    assert found  # the scan sees lookups (cli.py reads model.checkpoint_info this way)
    for owner, name in found:
        cls = Backbone if owner == "backbone" else RetrievalModel
        assert hasattr(cls, name) or name in cls.__annotations__, f"{cls.__name__} does not declare {name!r}"
        doc = getattr(getattr(cls, name, None), "__doc__", None)
        assert name in cls.__annotations__ or (doc and doc != type(getattr(cls, name)).__doc__), \
            f"{cls.__name__}.{name} has no docstring"


def test_default_hooks_change_nothing():
    model = build_model("triplet", "scratch", NUM_VALUES, image_size=SIZE, resize=SIZE)
    assert type(model).regularization is RetrievalModel.regularization
    assert float(model.regularization()) == 0.0 and float(model.auxiliary_loss(torch.zeros(6))) == 0.0
    assert model.find_unused_parameters is False and dict(model.checkpoint_info) == {}
    torch.testing.assert_close(model.warmup_features(images(2)), model.backbone(images(2)).mean(dim=(2, 3)))


# -- the Explanation type -----------------------------------------------------------------------------


def test_explanation_checks_its_maps():
    heat = torch.rand(8, 8)
    with pytest.raises(ValueError, match="unknown kind"):
        Map("x", "plan", heat, "a plan")
    with pytest.raises(ValueError, match="about"):
        Map("x", "heatmap", heat, " ")
    with pytest.raises(ValueError, match="integer region ids"):
        Map("x", "labels", heat, "regions")
    with pytest.raises(ValueError, match="2 dimensions"):
        Map("x", "heatmap", torch.rand(2, 8, 8), "maps")
    with pytest.raises(ValueError, match="y1 > y0"):
        Map("x", "box", (4, 4, 2, 8), "a box")
    with pytest.raises(ValueError, match="2 row_labels for 3"):
        Map("x", "matrix", torch.rand(3, 5), "a plan", row_labels=("a", "b"))
    with pytest.raises(ValueError, match="first map is its 'heatmap'"):
        Explanation((Map("other", "heatmap", heat, "a heatmap"),))
    with pytest.raises(ValueError, match="without an 'about'"):
        Explanation((Map("heatmap", "heatmap", heat, "a heatmap"),), numbers={"n": 1.0})
    ex = Explanation((Map("heatmap", "heatmap", heat, "a heatmap"), Map("plan", "matrix", torch.rand(3, 5), "a plan")),
                     numbers={"n": 0.5}, number_about={"n": "a number"}, feature_map_size=(8, 8))
    assert ex["heatmap"] is heat and ex["n"] == 0.5 and "plan" in ex and "nope" not in ex
    assert [m.name for m in ex.of_kind("matrix")] == ["plan"] and ex.names() == ["heatmap", "plan", "n"]
    with pytest.raises(KeyError, match="its maps: heatmap, plan"):
        ex.map("nope")


def test_renderer_draws_by_kind_not_by_name():
    from profashion.explain.render import explain_panels

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    ex = Explanation((
        Map("heatmap", "heatmap", torch.rand(32, 32), "where the model looked"),
        Map("plan_size", "heatmap", torch.rand(4, 4), "a coarse map whose name says plan and size"),
        Map("heads", "heatmaps", torch.rand(3, 4, 4), "one map per head"),
        Map("regions", "labels", torch.randint(0, 5, (32, 32), dtype=torch.int32), "regions",
            selection=((1, 0.6), (3, 0.2))),
        Map("feature_map_size", "box", (2, 2, 30, 20), "a box named like a size"),
        Map("weights", "matrix", torch.rand(3, 16), "a plan of attributes against patches", rows="attribute",
            columns="patch", row_labels=("attribute 0", "attribute 1", "attribute 2"), row_attributes=(0, 1, 2),
            highlight_row=2),
    ), numbers={"share": 0.25}, number_about={"share": "a number"})
    rendered, numbers = explain_panels(image, ex, mask, attribute=2, attribute_names=["colour", "sleeve", "collar"])
    kinds = [(r.key, r.kind) for r in rendered]
    assert kinds == [("ground_truth", "mask"), ("heatmap", "map"), ("plan_size", "map"), ("heads", "maps"),
                     ("regions", "segments"), ("regions", "selection"), ("feature_map_size", "box"),
                     ("weights", "matrix")]
    assert numbers == {"share": 0.25}
    coarse = rendered[2]
    assert coarse.title.startswith("plan size (4x4): ") and coarse.localisation is not None  # the key in words
    assert all(r.about for r in rendered) and rendered[1].about == "where the model looked"
    assert all(r.image.dtype == np.uint8 and r.image.ndim == 3 for r in rendered)


def test_a_free_form_dict_is_refused():
    """The old dict contract is gone: the renderer draws a typed Explanation only, and says so."""
    from profashion.explain.render import explain_panels

    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(TypeError, match="draws an Explanation"):
        explain_panels(image, {"heatmap": torch.rand(32, 32)}, attribute=1, attribute_names=["a", "b", "c"])


def test_explanations_render_for_every_model(model):
    from profashion.explain.render import explain_panels

    x = images(1, seed=2)[0]
    ex = model.explain(x, 1)
    shown = (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:30, 12:36] = True
    rendered, _ = explain_panels(shown, ex, mask, 1, ["colour", "sleeve", "collar"])
    drawn = {r.key for r in rendered}
    assert {m.name for m in ex.maps} <= drawn  # every map is drawn
    assert any(r.key == "heatmap" and r.localisation is not None for r in rendered)
