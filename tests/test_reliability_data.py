"""Issue 14, hostile input (6, 7): a run stopped before its first epoch restarts; a dataset that cannot be
evaluated is refused at import and at eval; image paths never lead out of the image root."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_TRAIN
from PIL import Image

from profashion.cli import main
from profashion.data.csv_import import import_csv
from profashion.data.splits import AttributeSchema, DatasetError, load_dataset, write_meta, write_split_files

SCHEMA = AttributeSchema(("colour",), (("red", "blue"),))


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, err
    return err


def _dataset(root: Path, filenames: dict[str, list[str]], image_root: str = "images",
             queries: dict[str, np.ndarray] | None = None) -> Path:
    """A dataset folder: ``filenames`` per split, image i labelled ``colour = i % 2``; eval splits get every
    image as a candidate and the given ``queries`` (default: none)."""
    for split, names in filenames.items():
        rows = np.array([(i, 0, i % 2) for i in range(len(names))], dtype=np.int64).reshape(-1, 3)
        q = c = None
        if split != "train":
            q = (queries or {}).get(split, np.zeros((0, 3), np.int64))
            c = rows[~np.isin(rows[:, 0], q[:, 0])]
        write_split_files(root, split, names, [[(0, i % 2)] for i in range(len(names))], q, c)
    write_meta(root, SCHEMA, root.name, image_root=image_root)
    return root


# --------------------------------------------------------------------------------------------------
# (6) a run stopped before its first epoch ended


def _tiny_args(dataset: Path, run: Path) -> list[str]:
    return ["train", "--model", "triplet", "--dataset", str(dataset), "--out", str(run), "--epochs", "1",
            *TINY_TRAIN]


def _stopped_before_first_epoch(dataset: Path, run: Path) -> dict:
    """What a run killed while decoding its images leaves: args.json (resolved settings), and the
    temporary files of writes killed half-way."""
    from profashion.train.trainer import TrainConfig

    cfg = TrainConfig(model="triplet", dataset=str(dataset), out=str(run), preset="scratch", epochs=1,
                      batch_size=16, triplets_per_epoch=32, warmup_steps=2,
                      model_overrides={"image_size": 48, "resize": 48}).resolved()
    saved = dataclasses.asdict(cfg)
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps(saved, indent=2) + "\n")
    (run / ".args.json.k3j1.tmp").write_text("{")
    (run / ".last.x8a0.tmp").mkdir()
    (run / ".last.x8a0.tmp" / "model.safetensors").write_bytes(b"half")
    return saved


def _epochs(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_starts_again_without_resume(tiny_synth, tmp_path):
    run = tmp_path / "run"
    _stopped_before_first_epoch(tiny_synth, run)
    assert main(_tiny_args(tiny_synth, run)) == 0
    assert [r["epoch"] for r in _epochs(run)] == [0] and (run / "best" / "config.json").is_file()
    assert json.loads((run / "args.json").read_text())["triplets_per_epoch"] == 64  # this start's settings
    assert not list(run.glob(".*.tmp"))  # the leftovers of the killed run are gone


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_resumes_from_epoch_1_with_its_settings(tiny_synth, tmp_path,
                                                                                    capsys):
    run = tmp_path / "run"
    saved = _stopped_before_first_epoch(tiny_synth, run)
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(run), "--resume",
                 "--quiet"]) == 0
    assert "stopped before its first epoch ended: starting it again from epoch 1" in capsys.readouterr().err
    assert [(r["epoch"], r["triplets"]) for r in _epochs(run)] == [(0, 32)]  # the saved settings
    assert "warmup" in _epochs(run)[0]  # a fresh start: warm-up included
    assert json.loads((run / "args.json").read_text()) == saved
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_a_cli_run_killed_before_its_first_epoch_can_be_started_again(tiny_synth, tmp_path):
    """The report: ``profashion train ... --out R & sleep 10; kill -TERM $!``, then train into R again."""
    run = tmp_path / "run"
    # epochs of 200,000 triplets: the first cannot end before the kill
    cmd = [sys.executable, "-m", "profashion", "train", "--model", "triplet", "--dataset", str(tiny_synth),
           "--out", str(run), *TINY_TRAIN, "--triplets-per-epoch", "200000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "args.json").is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert (run / "args.json").is_file() and not (run / "last").exists()
    assert main(_tiny_args(tiny_synth, run)) == 0
    assert [r["epoch"] for r in _epochs(run)] == [0]


def test_a_folder_with_other_content_or_a_finished_epoch_is_still_refused(tiny_synth, tmp_path, capsys):
    from profashion.train.trainer import run_started

    assert not run_started(tmp_path / "missing") and not run_started(tmp_path)
    other = tmp_path / "other"
    _stopped_before_first_epoch(tiny_synth, other)
    assert not run_started(other)
    (other / "notes.txt").write_text("mine")
    assert run_started(other)
    assert main(_tiny_args(tiny_synth, other)) == 2
    _one_line_error(capsys, "already holds a run")
    assert main([*_tiny_args(tiny_synth, other), "--resume"]) == 2
    _one_line_error(capsys, "nothing to resume", "holds more than a run stopped before its first epoch")
    assert (other / "notes.txt").read_text() == "mine"
    finished = tmp_path / "finished"  # killed between the first epoch's best/ and last/
    _stopped_before_first_epoch(tiny_synth, finished)
    (finished / "best").mkdir()
    assert run_started(finished)
    assert main(_tiny_args(tiny_synth, finished)) == 2
    _one_line_error(capsys, "already holds a run")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*_tiny_args(tiny_synth, empty), "--resume"]) == 2
    _one_line_error(capsys, "nothing to resume", "start without --resume")


def _demo_checkpoints():
    """scripts/demo_checkpoints.py (``make checkpoints``), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_checkpoints", REPO / "scripts" / "demo_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_checkpoints_starts_a_run_stopped_before_its_first_epoch_again(tiny_synth, tmp_path, monkeypatch):
    demo_checkpoints = _demo_checkpoints()
    calls = []
    monkeypatch.setattr(demo_checkpoints.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    run = tmp_path / "runs" / "triplet"
    _stopped_before_first_epoch(tiny_synth, run)
    demo_checkpoints.train_one("triplet", tiny_synth, run, {"epochs": 1}, resume=False)
    assert len(calls) == 1 and "--resume" not in calls[0]
    config = calls[0][calls[0].index("--config") + 1]  # the run's settings, in a file beside the run folder
    assert json.loads(Path(config).read_text())["epochs"] == 1 and not Path(config).is_relative_to(run)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already holds a run"):
        demo_checkpoints.train_one("triplet", tiny_synth, run, {"epochs": 1}, resume=False)


# --------------------------------------------------------------------------------------------------
# (7) datasets that cannot be evaluated


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(path)


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["image", "colour"], *rows])
    return path


def test_a_one_row_csv_is_refused_whatever_the_fractions(tmp_path, capsys):
    _png(tmp_path / "img" / "a.png")
    one = _csv(tmp_path / "one.csv", [["a.png", "Red"]])
    base = ["import-csv", str(one), "--image-root", str(tmp_path / "img"), "--attributes", "colour",
            "--out", str(tmp_path / "ds")]
    assert main(base) == 2
    _one_line_error(capsys, "(1 labelled images) is too small", "add images")
    assert main([*base, "--valid-fraction", "0", "--test-fraction", "0"]) == 2
    _one_line_error(capsys, "valid_fraction and test_fraction are both 0", "no valid or test query",
                    "--test-fraction 0.2")
    assert not (tmp_path / "ds").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["img", "one.csv"]


def test_eval_of_a_split_without_query_is_refused(tmp_path, capsys):
    from profashion.evaluation.evaluate import evaluate_model
    from profashion.evaluation.retrieval_map import mean_average_precision

    root = _dataset(tmp_path / "ds", {"train": ["t0.png", "t1.png"], "valid": ["v0.png", "v1.png", "v2.png"],
                                      "test": ["e0.png", "e1.png"]},
                    queries={"valid": np.array([[0, 0, 0]])})
    assert main(["eval", "--dataset", str(root), "--embeddings", "random"]) == 2
    _one_line_error(capsys, f"{root}: the test split has no query, so it has no mAP to measure")
    assert main(["eval", "--dataset", str(root), "--embeddings", "random", "--split", "valid"]) == 0
    assert "nan" not in capsys.readouterr().out
    with pytest.raises(DatasetError, match="the test split has no query"):
        evaluate_model(None, load_dataset(root), "test")  # refused before any model or image is touched
    with pytest.raises(ValueError, match="no query"):
        mean_average_precision(np.zeros((0, 4)), [], [], np.ones((2, 4)), [0, 0], [0, 1], num_attributes=1)


@pytest.mark.slow
def test_training_without_valid_queries_keeps_the_lowest_loss(tiny_synth, tmp_path):
    """A valid split without a query gives no validation mAP: the model of the lowest loss is kept."""
    ds = tmp_path / "synth-novalid"
    shutil.copytree(tiny_synth, ds, ignore=shutil.ignore_patterns("images", "masks"))
    meta = json.loads((ds / "meta.json").read_text())
    meta.pop("MASK_ROOT", None)
    (ds / "meta.json").write_text(json.dumps({**meta, "IMAGE_ROOT": str(tiny_synth / meta["IMAGE_ROOT"])}))
    (ds / "query_valid.txt").write_text("")
    run = tmp_path / "run"
    assert main(_tiny_args(ds, run)) == 0
    assert "val_map" not in _epochs(run)[0] and (run / "best" / "config.json").is_file()


# --------------------------------------------------------------------------------------------------
# (7) image paths that lead out of the image root


@pytest.mark.parametrize("bad", ["../secret.png", "img/../../secret.png", "/etc/hostname"])
def test_import_refuses_a_path_out_of_the_image_root(tmp_path, capsys, bad):
    _png(tmp_path / "secret.png")
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "shop" / "img" / name)
    rows = [["img/a.png", "Red"], ["img/b.png", "Red"], [bad, "Red"], ["img/c.png", "Blue"]]
    cat = _csv(tmp_path / "shop" / "c.csv", rows)
    with pytest.raises(DatasetError, match=rf"c\.csv, line 4: image path '{bad}' leads out of the image root "
                                           rf".*shop; image paths must be relative to it and stay inside it"):
        import_csv(cat, tmp_path / "shop", ["colour"], tmp_path / "out")
    assert main(["import-csv", str(cat), "--image-root", str(tmp_path / "shop"), "--attributes", "colour",
                 "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "line 4", "leads out of the image root")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["../secret.png", "a/../../secret.png", "/etc/hostname"])
def test_loading_refuses_a_split_file_path_out_of_the_image_root(tmp_path, capsys, bad):
    root = _dataset(tmp_path / "ds", {"train": ["a.png", bad], "test": ["t.png"]})
    with pytest.raises(DatasetError, match=rf"filenames_train\.txt, line 2: image path '{bad}' leads out of the "
                                           r"image root .*images; image paths must be relative"):
        load_dataset(root)
    # labels only (no image root): still refused
    (root / "meta.json").write_text(json.dumps({**json.loads((root / "meta.json").read_text()), "IMAGE_ROOT": ""}))
    with pytest.raises(DatasetError, match="line 2: .* leads out of the image root; "):
        load_dataset(root)
    # the trainer never gets to open it, and writes nothing
    assert main(["train", "--model", "triplet", "--dataset", str(root), "--image-root", str(tmp_path),
                 "--out", str(tmp_path / "run"), *TINY_TRAIN]) == 2
    _one_line_error(capsys, "filenames_train.txt, line 2", "leads out of the image root")
    assert not (tmp_path / "run").exists()


def test_symlinks_are_resolved_and_a_symlinked_root_still_works(tmp_path):
    store = tmp_path / "store"
    for name in ("a.png", "sub/b.png"):
        _png(store / name)
    _png(tmp_path / "secret.png")
    (tmp_path / "root").symlink_to(store)  # the image root itself is a symlink: fine
    (store / "up").symlink_to(tmp_path)  # a link inside the root to outside it: refused when opened
    root = _dataset(tmp_path / "ds", {"train": ["a.png", "sub/../sub/b.png", "up/secret.png", "sub/../up/x.png"]},
                    image_root=str(tmp_path / "root"))
    ds = load_dataset(root)
    assert ds.image_path("train", 0).is_file() and ds.image_path("train", 1).is_file()
    for fid in (2, 3):
        with pytest.raises(DatasetError, match=rf"filenames_train\.txt, line {fid + 1}: .* leads out of the "
                                               rf"image root {re.escape(str(tmp_path / 'root'))};"):
            ds.image_path("train", fid)


def test_the_real_datasets_still_load(shared_data, tmp_path):
    for name in ("FashionAI", "DARN", "DeepFashion"):
        assert load_dataset(shared_data / "asen-splits" / name).split("test").num_images > 0
    fp = shared_data / "fashion-product-small"  # the catalogue's paths have a subfolder
    with open(fp / "labels.csv", newline="", encoding="utf-8") as f:
        paths = [r["image"] for _, r in zip(range(20), csv.DictReader(f))]
    ds = load_dataset(_dataset(tmp_path / "fp", {"train": paths}, image_root=str(fp)))
    assert all(ds.image_path("train", i).is_file() for i in range(20))


def test_a_zappos_filename_leading_out_of_its_image_root_is_refused(tmp_path):
    import numpy as np

    from profashion.data.zappos import ZapposTriplets

    (tmp_path / "images").mkdir()
    t = ZapposTriplets(["ok/a.jpg", "../../etc/passwd", "/etc/passwd"], ["class"],
                       np.zeros((1, 4), np.int64), image_root=tmp_path / "images")
    assert t.image_path(0) == tmp_path / "images" / "ok" / "a.jpg"
    for i in (1, 2):
        with pytest.raises(DatasetError, match="leads out of the image root"):
            t.image_path(i)
