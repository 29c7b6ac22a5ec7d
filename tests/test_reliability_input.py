"""Hostile input, as issue 14's probe sent it: images whose decode or resize would explode, model configs and
job settings that would allocate gigabytes or fail late, a ``pretrained`` path used as a file-existence oracle,
and app inputs that used to raise a generic error. Each must be one sentence, at once, in bounded memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from profashion.data.images import MAX_ASPECT, ImageError, Preprocess, load_image
from profashion.data.synth import SYNTH_SCHEMA
from profashion.explorer.jobs import JobError, JobManager
from profashion.models.base import ModelError, build_model, load_model, save_checkpoint
from profashion.train.limits import MAX_EPOCHS, max_batch_size
from profashion.train.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]

# -- images -------------------------------------------------------------------------------------------------


def _peak_mb(code: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; (peak resident memory it added in MB, its stdout)."""
    prog = textwrap.dedent("""
        def _hwm():
            return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024
        import numpy, PIL.Image, torch, profashion.data.images  # noqa: the imports are not the attack's cost
        _base = _hwm()
    """) + textwrap.dedent(code) + "\nprint('PEAK', _hwm() - _base)\n"
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak = float(out.stdout.rsplit("PEAK", 1)[1])
    return peak, out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_wide_strip_is_refused_before_any_resize(tmp_path):
    """100000 x 1 px (300 KB) used to be scaled to 160 px on its short side first: +3.3 GB per model."""
    path = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(0).random((1, 100_000, 3)) * 255).astype("uint8")).save(path)
    peak, out = _peak_mb(f"""
        from profashion.data.images import ImageError, Preprocess
        try:
            Preprocess(160, 160).to_tensor({str(path)!r})
        except ImageError as exc:
            print('REFUSED', exc)
    """)
    assert "REFUSED" in out and "aspect ratio" in out and f"{MAX_ASPECT}:1" in out
    assert peak < 50, f"refusing a 300 KB strip cost {peak:.0f} MB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_large_16_bit_image_is_read_in_bounded_memory(tmp_path):
    """A 6000 x 6000 16-bit PNG: decoded in its mode, reduced to 4096 px before any conversion, no float copy."""
    path = tmp_path / "deep.png"
    ramp = (np.arange(6000, dtype=np.uint32)[None, :] * 10 + np.arange(6000)[:, None]) % 65536
    Image.fromarray(ramp.astype(np.uint16)).save(path)
    peak, out = _peak_mb(f"""
        from profashion.data.images import load_image, Preprocess
        img = load_image({str(path)!r})
        x = Preprocess(160, 160).to_tensor(img)
        print('SIZE', img.size, img.mode, tuple(x.shape))
    """)
    assert "SIZE (3000, 3000) RGB (3, 160, 160)" in out
    assert peak < 300, f"a 72 MB decode peaked at +{peak:.0f} MB"


def test_the_resize_reads_only_the_cropped_region_and_matches_the_full_resize():
    rng = np.random.default_rng(0)
    small = (rng.random((30, 90, 3)) * 255).astype("uint8")
    img = Image.fromarray(small).resize((1800, 600), Image.BILINEAR)  # smooth, 3:1
    pre = Preprocess(160, 160)
    nw, nh, left, top = pre._box(*img.size)
    full = img.resize((nw, nh), Image.BILINEAR).crop((left, top, left + 160, top + 160))
    diff = np.abs(np.asarray(pre.geometry(img), dtype=int) - np.asarray(full, dtype=int))
    assert diff.max() <= 1
    mask = np.zeros((600, 1800), bool)
    mask[200:400, 800:1000] = True
    assert pre.geometry_mask(mask).shape == (160, 160) and pre.geometry_mask(mask).any()


@pytest.mark.parametrize("shape", [(1, 21), (21, 1), (5, 2000)])
def test_thin_images_are_refused_from_every_source(shape, tmp_path):
    h, w = shape
    arr = np.zeros((h, w, 3), np.uint8)
    path = tmp_path / "thin.png"
    Image.fromarray(arr).save(path)
    for source in (arr, Image.fromarray(arr), path, path.read_bytes()):
        with pytest.raises(ImageError, match="aspect ratio"):
            load_image(source)
    assert load_image(np.zeros((1, MAX_ASPECT, 3), np.uint8)).size == (MAX_ASPECT, 1)


# -- model configs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"embed_dim": 10**9}, "'embed_dim' must be between 1 and 4096"),
    ({"embed_dim": 10**7}, "'embed_dim' must be between"),
    ({"embed_dim": -1}, "'embed_dim' must be between"),
    ({"embed_dim": "abc"}, "'embed_dim' must be a whole number"),
    ({"image_size": 3000}, "'image_size' must be between 16 and 1024"),
    ({"num_values": [2] * 1000}, "num_values must list 1 to 256 attributes"),
    ({"mask_init_std": float("inf")}, None),  # JSON writes Infinity; not a finite number
    ({"surprise": 1}, "unknown setting"),
])
def test_a_checkpoint_config_is_checked_before_the_model_is_built(tmp_path, change, message):
    ckpt = save_checkpoint(build_model("csn", "scratch", SYNTH_SCHEMA.num_values, image_size=32, resize=32),
                           tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["config"].update(change)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=message or "must be a finite number") as err:
        load_model(ckpt)
    assert str(ckpt / "config.json") in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_config_that_is_not_an_object_is_one_sentence(tmp_path):
    ckpt = save_checkpoint(build_model("triplet", "scratch", [2, 3], image_size=32, resize=32), tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["config"] = []
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="'config' must be a JSON object"):
        load_model(ckpt)


@pytest.mark.parametrize("override, message", [
    ({"image_size": "big"}, "'image_size' must be a whole number"),
    ({"embed_dim": -3}, "'embed_dim' must be between"),
    ({"image_size": 3000, "resize": 3000}, "'image_size' must be between"),
    ({"transport": "sinkhorn"}, "'transport' must be one of"),
])
def test_train_settings_are_checked_before_anything_is_read(override, message):
    cfg = TrainConfig(model="profashion", dataset="/nonexistent", out="/nonexistent/run", model_overrides=override)
    with pytest.raises(ModelError, match=message):
        cfg.resolved()


def test_the_cli_answers_a_bad_model_config_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "profashion.cli", "train", "--model", "asen", "--dataset",
                          str(tmp_path), "--out", str(tmp_path / "run"), "--model-config", '{"embed_dim": -3}'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "'embed_dim' must be between 1 and 4096" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [
    ({"batch_size": 10**9}, "use a batch size of at most"),
    ({"triplets_per_epoch": 10**12}, "triplets per epoch would not fit"),
    ({"epochs": 10**9}, f"more than the {MAX_EPOCHS} a run may have"),
    ({"warmup_steps": 10**9}, "warm-up steps is more than"),
])
def test_a_run_too_big_for_this_machine_is_refused_with_its_bound(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model="asen", dataset="d", out="o", **setting).resolved()
    assert max_batch_size(160) >= 64  # the demo preset's batch fits any machine that runs the tests


# -- jobs -------------------------------------------------------------------------------------------------------


@pytest.fixture()
def manager(tmp_path, tiny_synth) -> JobManager:
    return JobManager(tmp_path / "jobs", [tiny_synth.parent])


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 1.5}, "epochs must be a whole number, got 1.5"),
    ({"epochs": "abc"}, "epochs must be a whole number, got 'abc'"),
    ({"epochs": 1e30}, "epochs is more than the"),
    ({"epochs": 10**9}, "epochs is more than the"),
    ({"batch_size": 10**9}, "use a batch size of at most"),
    ({"triplets_per_epoch": 10**12}, "triplets per epoch would not fit"),
    ({"batch_size": True}, "batch size must be a whole number"),
    ({"model_config": '{"image_size": 3000, "resize": 3000}'}, "'image_size' must be between 16 and 1024"),
    ({"model_config": '{"embed_dim": "abc"}'}, "'embed_dim' must be a whole number"),
])
def test_job_settings_are_checked_before_a_job_starts(manager, tiny_synth, kwargs, message):
    with pytest.raises(JobError, match=message):
        manager.launch("asen", tiny_synth, **kwargs)
    assert manager.ids() == []


@pytest.mark.parametrize("pretrained", ["/etc/passwd", "/nonexistent/weights.safetensors", "../weights.pth",
                                        "/root", "weights.safetensors"])
def test_a_pretrained_path_outside_the_data_roots_is_refused_without_looking_at_it(manager, tiny_synth,
                                                                                  pretrained):
    """The job log used to say "not found" or "unsupported weights file": an oracle for any server path."""
    with pytest.raises(JobError) as err:
        manager.launch("asen", tiny_synth, model_config=json.dumps({"pretrained": pretrained}))
    msg = str(err.value).replace(pretrained, "P")
    assert "outside the allowed data roots" in msg or "contains '..'" in msg
    assert "not found" not in msg and "exist" not in msg  # the same sentence whether the path exists or not
    assert manager.ids() == []


def test_a_pretrained_file_inside_the_data_roots_or_a_named_weight_set_is_accepted(manager, tiny_synth):
    assert manager._pretrained("imagenet") == "imagenet"
    assert manager._pretrained(None) is None
    weights = tiny_synth.parent / "w.safetensors"
    weights.write_bytes(b"x")
    assert manager._pretrained(str(weights)) == str(weights.resolve())
    with pytest.raises(JobError, match="does not exist in the data roots"):
        manager._pretrained(str(tiny_synth.parent / "missing.safetensors"))


@pytest.mark.parametrize("job_id", ["x" * 5000, "../etc", "a/b", "\x00", ".hidden", "a b"])
def test_hostile_job_ids_are_one_sentence(manager, job_id):
    for action in (manager.get, manager.stop, manager.resume):
        with pytest.raises(JobError, match="^there is no job .{1,62} of this browser: a job is seen"):
            action(job_id)


@pytest.mark.parametrize("path", ["\x00", "x" * 5000, "data\nset"])
def test_hostile_dataset_paths_are_one_sentence(manager, path):
    with pytest.raises(JobError, match="not a usable path"):
        manager.launch("asen", path)


# -- a public Space ---------------------------------------------------------------------------------------------


def test_training_is_off_on_a_space_unless_its_owner_enables_it(monkeypatch, tmp_path, tiny_synth):
    from profashion.explorer.jobs import training_enabled

    monkeypatch.delenv("PROFASHION_TRAINING", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/profashion-explorer")
    assert not training_enabled()
    manager = JobManager(tmp_path / "jobs", [tiny_synth.parent])
    for action, args in ((manager.launch, ("asen", tiny_synth)), (manager.stop, ("x",)), (manager.resume, ("x",))):
        with pytest.raises(JobError, match="training is off on this public Space.*PROFASHION_TRAINING=1"):
            action(*args)
    monkeypatch.setenv("PROFASHION_TRAINING", "1")
    assert training_enabled()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("PROFASHION_TRAINING", "0")
    assert not training_enabled()


def test_server_folders_are_shown_by_their_public_names(tmp_path, tiny_synth):
    manager = JobManager(tmp_path / "jobs", [REPO / "data", REPO.parent / "shared" / "data", tiny_synth.parent],
                         home=REPO)
    text = manager.public(f"ran {sys.executable} on {tiny_synth} into {tmp_path / 'jobs' / 'j1'} from {REPO}")
    assert str(tmp_path) not in text and str(REPO) not in text and str(tiny_synth.parent) not in text
    assert text == "ran python on <data root 3>/synth into <jobs>/j1 from ."
    assert manager.public(str(REPO / "data" / "synth160")) == "data/synth160"
    assert manager.public(str(REPO.parent / "shared" / "data" / "x")) == "../shared/data/x"
    # a public name given back (the dataset list's values) is the server folder again, still confined
    assert manager.resolve_dataset("<data root 3>/synth") == tiny_synth.resolve()
    with pytest.raises(JobError, match="contains '..'"):
        manager.resolve_dataset("<data root 3>/../x")
    assert all(not path.startswith("/") for _, path in manager.datasets())


def test_a_data_root_reached_through_a_symlink_keeps_its_public_name(tmp_path, tiny_synth):
    """CI clones the repository beside a ``shared`` that is a symlink to the data elsewhere."""
    home, elsewhere = tmp_path / "work" / "repo", tmp_path / "elsewhere"
    (home / "data").mkdir(parents=True)
    (elsewhere / "data").mkdir(parents=True)
    shutil.copytree(tiny_synth, elsewhere / "data" / "synth")
    (tmp_path / "work" / "shared").symlink_to(elsewhere, target_is_directory=True)
    shared = home.parent / "shared" / "data"
    manager = JobManager(tmp_path / "jobs", [home / "data", shared], home=home)
    assert manager.public(str(shared / "synth")) == "../shared/data/synth"
    assert manager.public(str(elsewhere / "data" / "synth")) == "../shared/data/synth"  # the resolved path too
    assert [path for _, path in manager.datasets()] == ["../shared/data/synth"]
    assert manager.resolve_dataset("../shared/data/synth") == (elsewhere / "data" / "synth").resolve()


def test_a_checkpoint_whose_weights_changed_after_saving_is_refused(tmp_path):
    """The weights file keeps a valid header (safetensors would load it): only its recorded sha256 catches it."""
    ckpt = save_checkpoint(build_model("triplet", "scratch", [2, 3], image_size=32, resize=32), tmp_path / "c")
    assert len(json.loads((ckpt / "config.json").read_text())["weights_sha256"]) == 64
    load_model(ckpt)
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # a bit of the last tensor
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="not the file its config.json was saved with"):
        load_model(ckpt)


def test_every_shipped_checkpoint_records_and_matches_its_weights_checksum():
    from profashion.models.pretrained import file_sha256
    configs = sorted((REPO / "checkpoints").glob("*/config.json"))
    assert configs
    for cfg in configs:
        assert json.loads(cfg.read_text())["weights_sha256"] == file_sha256(cfg.parent / "model.safetensors")
