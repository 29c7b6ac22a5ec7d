"""The baseline models (triplet, CSN, ASEN), the checkpoint contract they share, and the backbones.

Demo presets run on tiny 48 px images; the paper presets build once each and run one 224 px forward.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from profashion.models import ModelError, build_model, load_model, save_checkpoint
from profashion.models.backbones import create_backbone

NUM_VALUES = [3, 4, 2]
METHODS = ["triplet", "csn", "asen"]
CONDITIONAL = ["csn", "asen"]


def images(n: int, h: int = 48, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=METHODS)
def demo(request):
    torch.manual_seed(0)
    return build_model(request.param, "demo", NUM_VALUES).eval()


# -- the interface ---------------------------------------------------------------------------------


def test_embed_all_shapes_norms_and_embed_slices(demo):
    x = images(4)
    with torch.no_grad():
        all_ = demo.embed_all(x)
        ids = torch.tensor([0, 1, 2, 1])
        one = demo.embed(x, ids)
        same = demo.embed(x, 2)  # one id for the whole batch
    assert all_.shape == (4, 3, demo.config.embed_dim)
    assert one.shape == (4, demo.config.embed_dim)
    torch.testing.assert_close(all_.norm(dim=-1), torch.ones(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(one.norm(dim=-1), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(one, all_[torch.arange(4), ids], atol=1e-5, rtol=0)
    torch.testing.assert_close(same, all_[:, 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(demo(x, ids), one, atol=1e-6, rtol=0)


def test_only_conditional_models_depend_on_the_attribute(demo):
    with torch.no_grad():
        all_ = demo.embed_all(images(2))
    gap = (all_[:, 0] - all_[:, 1]).abs().max().item()
    if demo.name in CONDITIONAL:
        assert gap > 1e-3
    else:
        assert gap == 0.0


def test_explain_heatmap_at_input_resolution(demo):
    img = images(1, 40, 56)[0]  # not square: the heatmap must follow H and W
    for a in range(len(NUM_VALUES)):
        out = demo.explain(img, a)
        heat = out["heatmap"]
        assert heat.shape == (40, 56)
        assert torch.isfinite(heat).all()
        assert heat.min() >= 0 and heat.max() <= 1
        assert len(out.feature_map_size) == 2
    if demo.name == "asen":
        assert out["attention"].shape == out.feature_map_size
        assert abs(out["attention"].sum().item() - 1) < 1e-4


def test_explain_leaves_training_state_alone(demo):
    bn = next(m for m in demo.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    demo.train()
    try:
        demo.explain(images(1)[0], 0)
        assert demo.training
        assert torch.equal(bn.running_mean, before)
    finally:
        demo.eval()


def test_attribute_out_of_range_is_a_clear_error(demo):
    x = images(2)
    with pytest.raises(ModelError, match="out of range"):
        demo.embed(x, torch.tensor([0, 3]))
    with pytest.raises(ModelError, match="out of range"):
        demo.embed(x, -1)
    with pytest.raises(ModelError, match="out of range"):
        demo.explain(x[0], 7)
    with pytest.raises(ModelError, match="expected 2 attribute ids"):
        demo.embed(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ModelError, match=r"\(3, H, W\)"):
        demo.explain(x, 0)


# -- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_round_trip(demo, tmp_path):
    ckpt = save_checkpoint(demo, tmp_path / "ckpt")
    back = load_model(ckpt, expect_model=demo.name)
    x = images(3)
    with torch.no_grad():
        assert torch.equal(back.embed_all(x), demo.embed_all(x))
    assert back.config == demo.config


def test_corrupt_weights_are_refused(demo, tmp_path):
    ckpt = save_checkpoint(demo, tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(ckpt)
    weights.write_bytes(b"\x00" * 7)
    with pytest.raises(ModelError):
        load_model(ckpt)


@pytest.mark.parametrize("change", ["other_model", "more_attributes", "other_values"])
def test_config_that_does_not_match_the_weights_is_refused(demo, tmp_path, change):
    ckpt = save_checkpoint(demo, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    if change == "other_model":
        cfg["model"] = METHODS[(METHODS.index(demo.name) + 1) % len(METHODS)]
    elif change == "more_attributes":
        cfg["config"]["num_values"] = NUM_VALUES + [5]
    else:
        cfg["config"]["num_values"] = [3, 4, 3]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="does not match|num_values"):
        load_model(ckpt)


def test_load_model_does_not_fetch_pretrained_weights_again(tmp_path):
    weights = tmp_path / "cnn.safetensors"
    from safetensors.torch import save_file

    save_file(create_backbone("small_cnn").state_dict(), str(weights))
    model = build_model("triplet", "scratch", NUM_VALUES, pretrained=str(weights)).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    weights.unlink()  # the checkpoint alone must be enough
    back = load_model(ckpt)
    assert back.config.pretrained == str(weights)
    with torch.no_grad():
        assert torch.equal(back.embed_all(images(2)), model.embed_all(images(2)))


def test_unknown_model_or_preset():
    with pytest.raises(ModelError, match="unknown model"):
        build_model("no-such-model", "demo", NUM_VALUES)
    with pytest.raises(ModelError, match="no preset"):
        build_model("asen", "no-such-preset", NUM_VALUES)
    with pytest.raises(ModelError, match="unknown setting"):
        build_model("csn", "demo", NUM_VALUES, not_a_field=1)


# -- paper presets and training --------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_paper_preset_builds_and_runs(method):
    model = build_model(method, "paper", NUM_VALUES).eval()
    assert model.preprocess.crop == 224
    with torch.no_grad():
        out = model.embed_all(images(1, 224, 224))
        one = model.embed(images(1, 224, 224), 1)
    assert out.shape == (1, 3, 1024)
    torch.testing.assert_close(one, out[:, 1], atol=1e-5, rtol=0)


def test_csn_zappos_preset_and_asen_on_a_vit_backbone():
    csn = build_model("csn", "zappos", NUM_VALUES).eval()
    with torch.no_grad():
        assert csn.embed_all(images(1, 112, 112)).shape == (1, 3, 64)
    asen = build_model("asen", "scratch", NUM_VALUES, backbone="timm:vit_tiny_patch16_224", image_size=64, resize=64)
    out = asen.eval().explain(images(1, 64, 64)[0], 2)
    assert out.feature_map_size == (4, 4)
    assert out["heatmap"].shape == (64, 64)


def cosine_triplet_loss(a, p, n, margin=0.2):
    return F.relu(margin + (1 - (a * p).sum(-1)) - (1 - (a * n).sum(-1))).mean()


@pytest.mark.parametrize("method", METHODS)
def test_a_few_steps_reduce_the_triplet_loss(method):
    torch.manual_seed(0)
    model = build_model(method, "demo", NUM_VALUES).train()
    x, ids = images(3 * 8, 32, 32, seed=1), torch.arange(8) % len(NUM_VALUES)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        a, p, n = model(x, ids.repeat(3)).split(8)
        loss = cosine_triplet_loss(a, p, n)
        losses.append(loss.item())
        reg = getattr(model, "regularization", None)
        if reg is not None:
            loss = loss + reg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_csn_regularization_follows_csn():
    torch.manual_seed(0)
    model = build_model("csn", "demo", NUM_VALUES).train()
    only_masks = model.regularization()
    expected = 5e-4 * F.relu(model.masks).sum(1).mean()  # 64-D: CSN's own scale
    torch.testing.assert_close(only_masks, expected)
    e = model.embed(images(4, 32, 32), 0)
    assert e.requires_grad
    with_norms = model.regularization()
    assert with_norms > only_masks
    with_norms.backward()
    assert model.masks.grad is not None and model.fc.weight.grad is not None
    torch.testing.assert_close(model.regularization(), expected)  # consumed


# -- backbones -------------------------------------------------------------------------------------


def test_backbone_shapes():
    cnn = create_backbone("small_cnn")
    assert (cnn.out_channels, cnn.stride) == (192, 8)
    assert cnn(images(2, 96, 96)).shape == (2, 192, 12, 12)
    layer3 = create_backbone("resnet50_layer3")
    assert (layer3.out_channels, layer3.stride) == (1024, 16)
    r18 = create_backbone("timm:resnet18")
    assert (r18.out_channels, r18.stride) == (512, 32)
    clip = create_backbone("openclip:ViT-B-32", image_size=96)
    assert (clip.out_channels, clip.stride) == (768, 32)
    with torch.no_grad():
        assert clip(images(1, 96, 96)).shape == (1, 768, 3, 3)
    with pytest.raises(ModelError, match="unknown backbone"):
        create_backbone("no_such_backbone")


@pytest.fixture
def empty_hub_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at empty folders."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield
    torch.hub.set_dir(old)


@pytest.mark.parametrize("name,tag", [("timm:resnet18", "a1_in1k"), ("resnet50_layer3", "tv_in1k"),
                                      ("openclip:ViT-B-32", "openai")])
def test_pretrained_tag_not_in_cache_fails_fast(empty_hub_caches, name, tag):
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=f"pretrained weights '{tag}' for backbone '{name}' are not available offline"):
        create_backbone(name, pretrained=tag)
    assert time.perf_counter() - t0 < 30


def test_unknown_pretrained_tag():
    with pytest.raises(ModelError, match="unknown pretrained tag"):
        create_backbone("timm:resnet18", pretrained="no_such_tag")
    with pytest.raises(ModelError, match="no hub weights"):
        create_backbone("small_cnn", pretrained="imagenet")


def test_local_weight_files_round_trip(tmp_path):
    from safetensors.torch import save_file

    src = create_backbone("small_cnn")
    for p in src.parameters():
        torch.nn.init.normal_(p)
    save_file(src.state_dict(), str(tmp_path / "cnn.safetensors"))
    torch.save(src.state_dict(), tmp_path / "cnn.pth")
    for f in ("cnn.safetensors", "cnn.pth"):
        dst = create_backbone("small_cnn", pretrained=str(tmp_path / f))
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), (f, k)
    # a whole model's weights (keys under "backbone.") initialise the backbone too
    model = build_model("asen", "scratch", NUM_VALUES)
    save_file(dict(model.state_dict()), str(tmp_path / "asen.safetensors"))
    dst = create_backbone("small_cnn", pretrained=str(tmp_path / "asen.safetensors"))
    assert torch.equal(dst.stem[0].weight, model.backbone.stem[0].weight)


class NotATensor:
    pass


def test_local_weight_file_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ModelError, match="not found"):
        create_backbone("small_cnn", pretrained=str(tmp_path / "missing.safetensors"))
    save_file({"foo.weight": torch.zeros(3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ModelError, match="tensors are missing"):
        create_backbone("small_cnn", pretrained=str(tmp_path / "wrong.safetensors"))
    state = create_backbone("small_cnn").state_dict()
    state["stem.0.weight"] = torch.zeros(16, 3, 3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ModelError, match="shape mismatch for stem.0.weight"):
        create_backbone("small_cnn", pretrained=str(tmp_path / "shape.safetensors"))
    torch.save({"stem.0.weight": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(ModelError, match="never unpickle"):
        create_backbone("small_cnn", pretrained=str(tmp_path / "code.pth"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        create_backbone("small_cnn", pretrained=str(tmp_path / "broken.safetensors"))
