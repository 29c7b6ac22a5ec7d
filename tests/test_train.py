"""The trainer end to end: metrics, checkpoints, resume after a kill, torchrun, the CLI around it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_TRAIN

from profashion.cli import main
from profashion.data.loading import SplitImages
from profashion.data.splits import load_dataset
from profashion.models.base import build_model, load_model
from profashion.train.trainer import triplet_loss, warmup_backbone

pytestmark = pytest.mark.slow


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_triplet_loss_is_the_cosine_hinge():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0]])  # s(a, p) = 0
    n = torch.tensor([[1.0, 0.0]])  # s(a, n) = 1
    assert triplet_loss(a, p, n, 0.2).item() == pytest.approx(1.2)
    assert triplet_loss(a, n, p, 0.2).item() == pytest.approx(0.0)


@pytest.mark.parametrize("model", ["triplet", "csn", "asen"])
def test_train_writes_metrics_and_checkpoints(tiny_synth, tmp_path, model, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--model", model, "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "2",
               *TINY_TRAIN])
    assert rc == 0
    m = _metrics(run)
    assert [r["epoch"] for r in m] == [0, 1]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_map"] <= 100 for r in m)
    assert set(m[0]["val_per_attribute"]) <= set(json.loads((tiny_synth / "meta.json").read_text())["ATTRIBUTES"])
    best = load_model(run / "best")
    assert best.name == model
    assert (run / "last" / "optimizer.safetensors").is_file()
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", str(tiny_synth), "--split", "test", "--checkpoint", str(run / "best"),
                 "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert {"overall", "per_attribute", "n_queries", "ci95", "queries"} <= set(res)
    assert 0 <= res["overall"] <= 100
    assert sum(res["n_queries"].values()) > 0
    assert "overall" in capsys.readouterr().out.lower()


def test_warmup_teaches_the_backbone_and_leaves_the_heads(tiny_synth):
    ds = load_dataset(tiny_synth)
    torch.manual_seed(0)
    model = build_model("csn", "demo", num_values=ds.schema.num_values, image_size=48, resize=48)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    bb_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    images = SplitImages(ds, "train", model.preprocess)
    info = warmup_backbone(model, images, ds.split("train").known_values(ds.schema.num_attributes), steps=40,
                           batch_size=32, lr=1e-3, seed=0, device=torch.device("cpu"))
    assert info["steps"] == 40 and info["loss_end"] < info["loss_start"]
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in head_before.items())  # only the backbone moved
    assert any(not torch.equal(model.backbone.state_dict()[k], v) for k, v in bb_before.items())


def test_embedding_warmup_teaches_the_conditioning(tiny_synth):
    """The ViT models' demo warm-up (``warmup_target="embedding"``) trains the whole model, the condition
    included; CSN's penalty is consumed by it."""
    ds = load_dataset(tiny_synth)
    known = ds.split("train").known_values(ds.schema.num_attributes)
    for name in ("cca1", "csn"):
        torch.manual_seed(0)
        model = build_model(name, "demo", num_values=ds.schema.num_values, image_size=48, resize=48)
        images = SplitImages(ds, "train", model.preprocess)
        cond = "condition_fc.weight" if name == "cca1" else "masks"
        before = model.state_dict()[cond].clone()
        info = warmup_backbone(model, images, known, steps=40, batch_size=32, lr=1e-3, seed=0,
                               device=torch.device("cpu"), target="embedding")
        assert info["loss_end"] < info["loss_start"]
        assert not torch.equal(model.state_dict()[cond], before)  # the conditioning was trained
        assert not getattr(model, "_pending_norms", [])
    with pytest.raises(ValueError, match="warm-up target"):
        warmup_backbone(model, images, known, 1, 4, 1e-3, 0, torch.device("cpu"), target="head")


def test_first_epoch_records_the_warmup(tiny_synth, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "1",
                 *TINY_TRAIN]) == 0
    assert _metrics(run)[0]["warmup"]["steps"] == 2


def test_auxiliary_loss_gets_each_rows_value(tiny_synth, tmp_path, monkeypatch):
    """A method's batch-level loss (ProFashion's cluster losses) sees anchors, positives, negatives' values."""
    from profashion.models.triplet import TripletNet

    seen = []

    def auxiliary_loss(self, values):
        seen.append(values.clone())
        return values.float().sum() * 0.0 + 1.0  # constant: shifts the loss without changing the gradients

    monkeypatch.setattr(TripletNet, "auxiliary_loss", auxiliary_loss, raising=False)
    run = tmp_path / "run"
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "1",
                 *TINY_TRAIN]) == 0
    assert len(seen) == 4  # 64 triplets / batch 16
    for values in seen:
        a, p, n = values.split(16)
        assert (a >= 0).all() and torch.equal(a, p) and (a != n).all()
    assert _metrics(run)[0]["loss"] >= 1.0


def test_training_on_a_subset_of_attributes(tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "asen", "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "1",
                 "--attributes", "colour,Sleeve Length", *TINY_TRAIN]) == 0
    assert "training on sleeve_length, colour only" in capsys.readouterr().err
    assert json.loads((run / "args.json").read_text())["attributes"] == ["colour", "Sleeve Length"]
    assert main(["train", "--model", "asen", "--dataset", str(tiny_synth), "--out", str(tmp_path / "r2"),
                 "--attributes", "hat", *TINY_TRAIN]) == 2
    assert "unknown attribute 'hat'" in capsys.readouterr().err


def test_resume_continues_exactly(tiny_synth, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    args = ["train", "--model", "csn", "--dataset", str(tiny_synth), *TINY_TRAIN]
    assert main([*args, "--out", str(full), "--epochs", "2"]) == 0
    assert main([*args, "--out", str(split), "--epochs", "1"]) == 0
    assert main(["train", "--model", "csn", "--dataset", str(tiny_synth), "--out", str(split), "--resume",
                 "--epochs", "2", "--quiet"]) == 0
    a, b = _metrics(full), _metrics(split)
    assert [r["epoch"] for r in b] == [0, 1]
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=1e-5, abs=1e-6)
    assert b[1]["val_map"] == pytest.approx(a[1]["val_map"], abs=1e-4)


def test_an_existing_run_is_not_overwritten(tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "1",
            *TINY_TRAIN]
    assert main(args) == 0
    before = (run / "metrics.jsonl").read_text()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before


def test_killed_job_resumes_from_its_last_checkpoint(tiny_synth, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "profashion", "train", "--model", "triplet", "--dataset", str(tiny_synth),
           "--out", str(run), "--epochs", "30", *TINY_TRAIN]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (run / "metrics.jsonl").is_file() and len(_metrics(run)) >= 2
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_metrics(run))
    assert 2 <= done < 30, "the job should have been killed mid-run"
    cfg = json.loads((run / "last" / "config.json").read_text())
    assert cfg["trainer"]["epoch"] == done - 1
    load_model(run / "last")  # the checkpoint survived the kill intact
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--resume",
                 "--epochs", str(done + 1), "--quiet"]) == 0
    assert [r["epoch"] for r in _metrics(run)] == list(range(done + 1))
    assert not list(run.glob(".*.tmp"))


def test_torchrun_two_processes(tiny_synth, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "profashion", "train", "--model", "asen", "--dataset", str(tiny_synth), "--out", str(run),
           "--epochs", "2", "--device", "cpu", *TINY_TRAIN]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = _metrics(run)
    assert [x["epoch"] for x in m] == [0, 1]
    assert all(x["processes"] == 2 and x["triplets"] == 64 for x in m)
    model = load_model(run / "best")
    assert model.name == "asen"


def test_cli_errors_are_one_line(tiny_synth, tmp_path, capsys):
    assert main(["train", "--model", "nope", "--dataset", str(tiny_synth), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'") and "asen" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    assert main(["eval", "--dataset", str(tmp_path / "missing"), "--embeddings", "random"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad_ckpt"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert main(["eval", "--dataset", str(tiny_synth), "--checkpoint", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_second_stage_schedule(tiny_synth, tmp_path):
    """ProFashion's two-stage schedule: stage 2 runs after --epochs at its own rate, decayed every epoch."""
    from profashion.train.trainer import TrainConfig

    run = tmp_path / "run"
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--epochs", "2",
                 "--lr", "1e-3", "--lr-step", "1", "--lr-gamma", "0.5", "--stage2-epochs", "2", "--stage2-lr", "1e-4",
                 "--stage2-gamma", "0.5", *TINY_TRAIN]) == 0
    m = _metrics(run)
    assert [r["stage"] for r in m] == [1, 1, 2, 2]
    assert [r["lr"] for r in m] == pytest.approx([1e-3, 5e-4, 1e-4, 5e-5])
    # the model's class sets its own default second stage; plain models have none
    pf = TrainConfig(model="profashion", dataset="d", out="o", preset="paper").resolved()
    assert (pf.epochs, pf.stage2_epochs, pf.stage2_lr, pf.stage2_gamma) == (50, 50, 1e-5, 0.95)
    assert pf.lr_at(49) == pytest.approx(1e-4 * 0.3 ** 16) and pf.lr_at(52) == pytest.approx(1e-5 * 0.95 ** 2)
    assert TrainConfig(model="asen", dataset="d", out="o").resolved().stage2_epochs == 0
    with pytest.raises(ValueError, match="stage2"):
        TrainConfig(model="asen", dataset="d", out="o", stage2_epochs=-1).resolved()


def _demo_checkpoints():
    """scripts/demo_checkpoints.py (``make checkpoints``), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_checkpoints", REPO / "scripts" / "demo_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_checkpoints_trains_two_at_a_time_and_keeps_the_manifest(tiny_synth, tmp_path, capsys, monkeypatch):
    """``make checkpoints`` (scripts/demo_checkpoints.py --jobs 2): both models installed, an entry written by another
    invocation meanwhile is kept, and a second --resume run skips the finished models."""
    demo_checkpoints = _demo_checkpoints()
    monkeypatch.setenv("PROFASHION_CACHE", str(tmp_path / "cache"))  # the shared trunk cache, computed once
    out, runs = tmp_path / "ck", tmp_path / "runs"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"asen": {"model": "asen", "seconds": 1.0}}))
    tiny = ["--epochs", "1", "--triplets-per-epoch", "64", "--batch-size", "16", "--warmup-steps", "2",
            "--model-config", '{"image_size": 48, "resize": 48}']
    argv = ["--models", "triplet,csn", "--jobs", "2", "--out", str(out), "--runs", str(runs),
            "--data", str(tiny_synth), *tiny]
    assert demo_checkpoints.main([*argv, "--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"asen", "triplet", "csn"}
    for m in ("triplet", "csn"):
        assert manifest[m]["threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert manifest[m]["seconds"] > 0 and manifest[m]["epochs"] == 1
        assert manifest[m]["config"]["epochs"] == 1 and "--config" in manifest[m]["command"]
        assert manifest[m]["minutes"] == round(manifest[m]["seconds"] / 60, 1) and manifest[m]["trunk_cache_seconds"] > 0
        load_model(out / m)  # an installed, loadable checkpoint
    assert not list(out.glob(".*.tmp"))
    # one shared cache of the training images and one of the validation images, for both models
    assert len(list((tmp_path / "cache" / "trunk-features").glob("*.safetensors"))) == 2
    capsys.readouterr()
    assert demo_checkpoints.main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.count("not training it again") == 2
    again = json.loads((out / "manifest.json").read_text())
    assert again["csn"]["seconds"] == manifest["csn"]["seconds"]  # the measured time is kept
    assert demo_checkpoints.main(["--models", "nope", "--out", str(out)]) == 2
