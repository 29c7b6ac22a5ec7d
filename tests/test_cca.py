"""CCA (Type-1/Type-2), TF-CSN and TF-ASEN on the shared ViT trunk, and frozen-trunk fine-tuning.

Demo presets on tiny 32-48 px images; the paper preset (R50+ViT-B/16 hybrid) builds once and runs one
224 px forward.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN

from profashion.cli import main
from profashion.models import ModelError, build_model, load_model, save_checkpoint
from profashion.models.cca import CCA

NUM_VALUES = [3, 4, 2, 5]
VIT_MODELS = ["cca1", "cca2", "tf-csn", "tf-asen"]
SIZE = 48


def images(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _build(name: str, size: int = SIZE, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name, "scratch", NUM_VALUES, image_size=size, resize=size).eval()
    if isinstance(model, CCA):  # a from-scratch FC(one-hot) barely separates the conditions: make them differ
        with torch.no_grad():
            model.condition_fc.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module", params=VIT_MODELS)
def vit_model(request):
    return _build(request.param)


# -- the interface ---------------------------------------------------------------------------------


def test_embed_all_equals_embed_per_attribute(vit_model):
    x = images(3)
    with torch.no_grad():
        all_ = vit_model.embed_all(x)
        per = torch.stack([vit_model.embed(x, torch.full((3,), a)) for a in range(len(NUM_VALUES))], dim=1)
        mixed = vit_model.embed(x, torch.tensor([3, 0, 2]))
    assert all_.shape == (3, len(NUM_VALUES), vit_model.config.embed_dim)
    torch.testing.assert_close(all_.norm(dim=-1), torch.ones(3, len(NUM_VALUES)), atol=1e-5, rtol=0)
    torch.testing.assert_close(per, all_, atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed, all_[torch.arange(3), torch.tensor([3, 0, 2])], atol=1e-5, rtol=0)
    # conditional: the attribute changes the embedding (float noise is ~1e-7; an ignored condition gives 0)
    assert (all_[:, 0] - all_[:, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["cca1", "cca2"])
def test_shared_keys_values_equal_the_straightforward_block(name):
    model = _build(name)
    x = images(4, seed=1)
    with torch.no_grad():
        fast = model.embed_all(x)
        reference = model.embed_all_reference(x)  # the whole last block on all tokens, once per attribute
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    assert (reference[:, 0] - reference[:, 2]).abs().max() > 1e-4  # float noise ~1e-7; an ignored condition gives 0


def test_type2_condition_is_fc_of_relu_mask():
    model = _build("cca2")
    with torch.no_grad():
        model.masks[1] = -1.0  # ReLU(M[1]) = 0: the condition is the FC's bias alone
        torch.testing.assert_close(model.condition_tokens(torch.tensor([1]))[0], model.condition_fc.bias)
    t1 = _build("cca1")
    torch.testing.assert_close(t1.condition_tokens(torch.tensor([2]))[0],
                               t1.condition_fc.weight[:, 2] + t1.condition_fc.bias)


def test_condition_out_of_range_is_a_clear_error(vit_model):
    with pytest.raises(ModelError, match="attribute id 4 is out of range"):
        vit_model.embed(images(2), torch.tensor([0, 4]))
    with pytest.raises(ModelError, match="out of range"):
        vit_model.explain(images(1)[0], -1)


def test_explain_maps(vit_model):
    x = images(1, size=SIZE, seed=2)[0]
    maps = [vit_model.explain(x, a) for a in range(len(NUM_VALUES))]
    for m in maps:
        h = m["heatmap"]
        assert h.shape == (SIZE, SIZE) and float(h.min()) >= 0 and float(h.max()) <= 1 and float(h.max()) > 0
        assert m.feature_map_size == (SIZE // 8, SIZE // 8)
    if vit_model.name != "tf-asen":
        heads = maps[0]["attention_heads"]
        assert heads.shape == (vit_model.backbone.num_heads, SIZE // 8, SIZE // 8)
        torch.testing.assert_close(maps[0]["attention"], heads.mean(0))
        assert float(heads.sum(dim=(1, 2)).max()) <= 1 + 1e-5  # softmax weights on the patches (rest on [CLS])
    if vit_model.name.startswith("cca"):
        total = maps[0]["attention_heads"].sum(dim=(1, 2)).mean() + maps[0]["prefix_attention"]
        assert float(total) == pytest.approx(1.0, abs=1e-5)
    gap = (maps[0]["heatmap"] - maps[1]["heatmap"]).abs().max()
    assert gap == 0 if vit_model.name == "tf-csn" else gap > 1e-4  # CSN's mask does not act on places


def test_position_embedding_is_interpolated_for_other_sizes(vit_model):
    from timm.layers import resample_abs_pos_embed

    x = images(2, size=64, seed=3)
    with torch.no_grad():
        out = vit_model.embed_all(x)  # built at 48 px (6 x 6), run at 64 px (8 x 8)
    # the same weights with the position embedding resampled once, in a model built at 64 px
    big = build_model(vit_model.name, "scratch", NUM_VALUES, image_size=64, resize=64).eval()
    state = dict(vit_model.state_dict())
    state["backbone.pos_embed"] = resample_abs_pos_embed(state["backbone.pos_embed"], (8, 8), (6, 6),
                                                         num_prefix_tokens=1)
    big.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(out, big.embed_all(x), atol=1e-5, rtol=0)
    assert vit_model.explain(x[0], 1)["heatmap"].shape == (64, 64)
    with pytest.raises(ModelError, match="multiple of this ViT's patch stride"):
        vit_model.embed_all(images(1, size=50))


# -- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_other_model_types(vit_model, tmp_path):
    ckpt = save_checkpoint(vit_model, tmp_path / "ckpt")
    loaded = load_model(ckpt, expect_model=vit_model.name)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_all(x), vit_model.embed_all(x), atol=1e-6, rtol=0)
    other = "cca2" if vit_model.name != "cca2" else "cca1"
    with pytest.raises(ModelError, match=f"holds a '{vit_model.name}' model, not '{other}'"):
        load_model(ckpt, expect_model=other)
    # config.json relabelled as another model type: the weights do not fit, one clear error
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"] = other
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="does not match (its config.json|model)"):
        load_model(ckpt)


def test_paper_preset_is_the_r50_vit_b16_hybrid():
    torch.manual_seed(0)
    model = build_model("cca2", "paper", NUM_VALUES).eval()
    assert model.config.image_size == 224 and model.backbone.stride == 16
    assert len(model.backbone.blocks) == 11 and model.backbone.out_channels == 768
    assert type(model.backbone.patch_embed).__name__ == "HybridEmbed"
    with torch.no_grad():
        out = model.embed_all(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, len(NUM_VALUES), 1024) and torch.isfinite(out).all()


def test_missing_pretrained_file_is_one_sentence():
    with pytest.raises(ModelError, match="pretrained weights file not found"):
        build_model("cca1", "scratch", NUM_VALUES, pretrained="/nonexistent/vit.safetensors")


def test_local_vit_weights_are_resampled_to_the_model_size(tmp_path):
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    from profashion.models.vit import VIT_ARCHS

    torch.manual_seed(1)
    vit = VisionTransformer(img_size=96, num_classes=5, **VIT_ARCHS["vit_demo"])  # a whole network, with a head
    save_file({f"module.{k}": v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = build_model("tf-csn", "scratch", NUM_VALUES, image_size=SIZE, resize=SIZE, backbone="vit_demo",
                        pretrained=str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert model.backbone.pos_embed.shape == (1, 1 + 36, 128)


# -- training --------------------------------------------------------------------------------------


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("model", "frozen"), [("cca2", False), ("tf-asen", True)], ids=["full", "frozen-trunk"])
def test_tiny_train_and_resume(tiny_synth, tmp_path, model, frozen):
    extra = ["--frozen-trunk"] if frozen else []
    args = ["train", "--model", model, "--dataset", str(tiny_synth), *TINY_TRAIN, *extra]
    full, split = tmp_path / "full", tmp_path / "split"
    assert main([*args, "--out", str(full), "--epochs", "2"]) == 0
    assert main([*args, "--out", str(split), "--epochs", "1"]) == 0
    before = load_model(split / "last")
    assert main(["train", "--model", model, "--dataset", str(tiny_synth), "--out", str(split), "--resume",
                 "--epochs", "2", "--quiet"]) == 0
    a, b = _metrics(full), _metrics(split)
    assert [r["epoch"] for r in b] == [0, 1]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_map"] <= 100 for r in a)
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=1e-5, abs=1e-6)
    assert b[1]["val_map"] == pytest.approx(a[1]["val_map"], abs=1e-4)
    assert json.loads((full / "args.json").read_text())["frozen_trunk"] == frozen
    assert load_model(full / "best").name == model
    after = load_model(split / "last").state_dict()
    trunk = [k for k in after if k.startswith("backbone.")]
    assert all(torch.equal(after[k], before.state_dict()[k]) for k in trunk) == frozen  # the trunk moved iff full
    assert not torch.equal(after["fc.weight"], before.state_dict()["fc.weight"])  # the head always
    if frozen:
        info = a[0]["frozen_trunk"]
        assert info["images"] > 0 and info["feature_shape"] == [[1 + 36, 128]] and info["orientations"] == 2
        assert info["trainable_parameters"] == sum(v.numel() for k, v in before.named_parameters()
                                                   if not k.startswith("backbone."))
    else:
        assert "frozen_trunk" not in a[0]


def test_frozen_trunk_needs_a_vit_model(tiny_synth, tmp_path, capsys):
    assert main(["train", "--model", "csn", "--dataset", str(tiny_synth), "--out", str(tmp_path / "r"),
                 *TINY_TRAIN, "--frozen-trunk"]) == 2
    assert "has no frozen trunk to cache" in capsys.readouterr().err


def test_warmup_trains_blocks_before_the_conditional_one(tiny_synth):
    from profashion.data.loading import SplitImages
    from profashion.data.splits import load_dataset
    from profashion.train.trainer import warmup_backbone

    ds = load_dataset(tiny_synth)
    torch.manual_seed(0)
    model = build_model("cca1", "scratch", ds.schema.num_values, image_size=48, resize=48)
    cross = {k: v.clone() for k, v in model.cross.state_dict().items()}
    info = warmup_backbone(model, SplitImages(ds, "train", model.preprocess),
                           ds.split("train").known_values(ds.schema.num_attributes), steps=5, batch_size=16,
                           lr=1e-3, seed=0, device=torch.device("cpu"))
    assert info["steps"] == 5
    assert all(torch.equal(model.cross.state_dict()[k], v) for k, v in cross.items())  # last block untouched


def test_warmup_classifies_from_the_cls_token_and_the_patches():
    """The [CLS] stream that CCA reads must be trained by the warm-up, not only the patch average."""
    model = build_model("cca2", "scratch", [3, 4], image_size=48, resize=48).eval()
    x = torch.randn(2, 3, 48, 48)
    t = model.backbone.forward_tokens(x)
    feat = model.backbone.warmup_features(x)
    p = model.backbone.num_prefix_tokens
    assert torch.allclose(feat, 0.5 * (t[:, 0] + t[:, p:].mean(1)), atol=1e-6)
    feat.sum().backward()
    assert model.backbone.cls_token.grad is not None and model.backbone.cls_token.grad.abs().sum() > 0


@pytest.mark.slow
def test_frozen_trunk_under_torchrun(tiny_synth, tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "profashion", "train", "--model", "cca1", "--dataset", str(tiny_synth), "--out", str(run),
           "--epochs", "1", "--device", "cpu", "--frozen-trunk", *TINY_TRAIN]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = _metrics(run)
    assert m[0]["processes"] == 2 and "frozen_trunk" in m[0] and np.isfinite(m[0]["loss"])
    assert load_model(run / "best").name == "cca1"


def test_a_trunk_that_is_not_a_vit_is_refused():
    with pytest.raises(ModelError, match="'resnet18' is not a ViT"):
        build_model("cca2", "scratch", NUM_VALUES, backbone="resnet18")
    with pytest.raises(ModelError, match="has no hub weights"):
        build_model("tf-csn", "scratch", NUM_VALUES, pretrained="orig_in21k")
