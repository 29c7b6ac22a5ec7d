"""The Fine-tune form and job view as plain handlers (no server, no training): the datasets listed (folders and
CSV catalogues), a CSV without the chosen columns and a dataset too small to validate on refused before any job
exists, the time estimate from measured seconds per step and the machine's limits, the warm-up's progress in
the status and the curve, a failed job's cause and Resume only with a checkpoint, and publishing."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import end_jobs

pytest.importorskip("gradio")

from profashion.explorer.jobs import MIN_VAL_QUERIES, JobError, JobManager, owner_key  # noqa: E402
from profashion.ui import tab_finetune  # noqa: E402

TRAINED = ["colour", "texture"]


def write_catalogue(data: Path, name: str, n: int, seed: int = 2) -> Path:
    """A CSV catalogue ``data/<name>`` of ``n`` synthetic garments (48 px, under ``data/pool-<seed>/``): columns
    image (relative to ``data``), colour, texture and title."""
    from profashion.data.splits import load_dataset
    from profashion.data.synth import generate_synth

    pool = data / f"pool-{seed}"
    if not pool.is_dir():
        generate_synth(pool, n, 4, 4, size=48, seed=seed)
    ds = load_dataset(pool)
    known = ds.split("train").known_values(ds.schema.num_attributes)
    with open(data / name, "w", newline="") as f:
        w = csv.DictWriter(f, ["image", *TRAINED, "title"])
        w.writeheader()
        for fid in range(min(n, len(known))):
            cells = {a: ds.schema.values[i][known[fid, i]] if known[fid, i] >= 0 else ""
                     for i, a in enumerate(ds.schema.names) if a in TRAINED}
            image = Path(ds.image_path("train", fid)).resolve().relative_to(data.resolve())
            w.writerow({"image": image.as_posix(), **cells, "title": f"garment {fid}"})
    return data / name


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    """A data root with a dataset big enough to validate colour and texture on, one too small, and two CSV
    catalogues (1,300 garments: enough validation queries; their first 60: too few)."""
    from profashion.data.synth import generate_synth

    base = tmp_path_factory.mktemp("form")
    data = base / "data"
    synth = generate_synth(data / "synth", 160, 120, 60, size=48, seed=0, eval_layout="all-attributes")
    small = generate_synth(data / "small", 16, 16, 16, size=48, seed=1)
    write_catalogue(data, "garments.csv", 1300)
    write_catalogue(data, "few.csv", 60)
    return {"base": base, "data": data, "synth": synth, "small": small}


@pytest.fixture
def jobs(roots, tmp_path) -> JobManager:
    manager = JobManager(tmp_path / "jobs", [roots["data"]], enabled=True)
    yield manager
    end_jobs(manager)


class FakeCatalog:
    """What the job handlers read of the catalog: its models (listed, entry), the skipped checkpoints,
    add_checkpoint."""

    def __init__(self, names=("asen",)):
        self.models = {n: SimpleNamespace(label=n) for n in names}
        self.skipped = []
        self.added = []
        self.done = threading.Event()

    @property
    def listed(self):  # served or warming up: a fake has no warming models
        return list(self.models)

    def entry(self, name):
        return self.models.get(name)

    def add_checkpoint(self, name, checkpoint):
        self.added.append((name, Path(checkpoint)))
        self.models = {**self.models, name: SimpleNamespace(label=f"{name} (asen)")}
        self.done.set()


def job_dir(jobs: JobManager, name: str, dataset: Path, status: str, owner="mine", **extra) -> Path:
    d = jobs.root / name
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": name, "model": "asen", "dataset": str(dataset), "preset": "demo",
                                            "status": status, "reason": "", "pid": None, "test": True,
                                            "dataset_name": dataset.name, "created": "2026-01-01T00:00:00Z",
                                            "owner": owner_key(owner), **extra}))
    return d


def test_the_form_lists_dataset_folders_and_csv_catalogues_and_a_csvs_columns(jobs, roots):
    listed = dict((path, label) for label, path in jobs.datasets())
    assert {"<data root 1>/synth", "<data root 1>/small", "<data root 1>/garments.csv",
            "<data root 1>/few.csv"} <= set(listed)
    assert "CSV catalogue" in listed["<data root 1>/garments.csv"] and str(roots["data"]) not in str(listed)
    attrs, image, rows = tab_finetune.on_dataset(jobs, "<data root 1>/garments.csv")
    assert image["visible"] and image["value"] == "image" and image["choices"] == ["image", *TRAINED, "title"]
    assert attrs["choices"] == [*TRAINED, "title"] and "CSV" in attrs["label"] and rows["visible"]
    attrs, image, rows = tab_finetune.on_dataset(jobs, "<data root 1>/synth")
    assert "colour" in attrs["choices"] and not image["visible"] and not rows["visible"]
    with pytest.raises(JobError, match="outside the allowed data roots"):
        tab_finetune.on_dataset(jobs, "/etc")
    # the jobs' own folders (the app keeps them under the cache, a data root) are not datasets on offer
    inside = JobManager(roots["data"] / "jobs-here", [roots["data"]], enabled=True)
    (inside.root / "asen-1" / "garments-100").mkdir(parents=True)
    (inside.root / "asen-1" / "catalogue.csv").write_text("image,colour\n")
    assert not any("jobs-here" in path for _, path in inside.datasets())
    shutil.rmtree(inside.root)


def test_a_csv_without_the_chosen_columns_is_refused_in_one_sentence(jobs, roots):
    for attributes, image_column, message in (
            (["colour", "fabric"], "image", "the CSV garments.csv has no column 'fabric'; its columns are image, "
                                            "colour, texture, title"),
            (["colour"], "picture", "the CSV garments.csv has no column 'picture'; its columns are"),
            ([], "image", "choose the attribute columns of garments.csv"),
            (["image"], "image", "the image column 'image' cannot also be an attribute column")):
        with pytest.raises(JobError) as err:
            jobs.launch("asen", "<data root 1>/garments.csv", attributes=attributes, image_column=image_column)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not jobs.root.exists() or jobs.ids() == []  # nothing started, no job folder left


def test_a_dataset_too_small_to_validate_on_is_refused_with_the_reason(jobs, roots, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "_start", lambda job, resume: started.append(job) or job)
    with pytest.raises(JobError) as err:
        jobs.launch("asen", roots["small"], epochs=1)
    text = str(err.value)
    assert "too small to validate on" in text and f"at least {MIN_VAL_QUERIES} queries per trained attribute" in text
    assert "queries for colour" in text and jobs.ids() == [] and started == []
    # a CSV is imported first (into the job's folder), then refused the same way, its folder removed
    with pytest.raises(JobError, match="too small to validate on"):
        jobs.launch("asen", "<data root 1>/few.csv", attributes=TRAINED, image_column="image")
    assert jobs.ids() == [] and started == []
    # the whole catalogue is big enough: imported into the job's folder, the job trains on the import
    job = jobs.launch("asen", "<data root 1>/garments.csv", epochs=1, attributes=TRAINED, image_column="image",
                      rows=1200)
    d = jobs.root / job["id"]
    assert Path(job["dataset"]) == d / "garments-1200" and (d / "garments-1200" / "meta.json").is_file()
    assert json.loads((d / "train.json").read_text())["dataset"] == job["dataset"]
    assert job["val_queries"] >= MIN_VAL_QUERIES and started == [job]
    assert jobs.published_name(job) == f"asen fine-tuned on garments-1200 (job {job['id'][-4:]})"


def test_the_estimate_comes_from_measured_seconds_per_step_and_says_the_limits(jobs, roots):
    w, t = tab_finetune.STEP_SECONDS["asen"]
    text = tab_finetune.estimate(jobs, "asen", "<data root 1>/synth", "demo", 1, 4096, 64, 1000)
    assert f"1,000 warm-up steps x {w:.3f} s" in text and f"1 epoch(s) x 64 steps x {t:.3f} s" in text
    assert "160 training images" in text and text.startswith("**About ")
    doubled = tab_finetune.estimate(jobs, "asen", "<data root 1>/synth", "demo", 1, 4096, 128, 1000)
    assert f"x {2 * w:.3f} s" in doubled  # a step of twice the batch, twice the time
    assert tab_finetune.on_schedule("quick", "demo", "asen") == (1, 4096, 64, 1000)
    assert tab_finetune.on_schedule("preset", "demo", "asen") == tab_finetune.on_preset("demo", "asen")
    for epochs, batch, limit in ((5000, 64, "more than the 1000 a run may have"),
                                 (1, 10**9, "use a batch size of at most")):
        text = tab_finetune.estimate(jobs, "asen", "<data root 1>/synth", "demo", epochs, 4096, batch, 10)
        assert text.startswith("**This schedule would be refused:**") and limit in text
        with pytest.raises(JobError, match=limit):
            jobs.launch("asen", "<data root 1>/synth", epochs=epochs, batch_size=batch, attributes=TRAINED)


def test_the_warm_up_counts_in_the_status_and_the_curve(jobs, roots):
    d = job_dir(jobs, "asen-20260101-000000-aaaa", roots["synth"], "running", val_queries=25)
    (d / "run").mkdir()
    # a live process whose command line names the job's run folder: the job is running
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(d / "run")])
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")  # between fork and exec it still reads as pytest's own
        deadline = time.monotonic() + 30
        while str(d / "run") not in cmdline.read_bytes().decode(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.01)
        job = json.loads((d / "job.json").read_text())
        (d / "job.json").write_text(json.dumps({**job, "pid": proc.pid}))
        (d / "run" / "progress.json").write_text(json.dumps({
            "phase": "warmup", "step": 1200, "steps": 3000, "loss": 1.234, "seconds_per_step": 0.1, "epochs": 3,
            "warmup_history": [[s, 2.0 - s / 1000] for s in range(100, 1300, 100)]}))
        record, md, _, fig = tab_finetune.job_status(FakeCatalog(), jobs, d.name, "mine")
    finally:
        proc.kill()
        proc.wait()
    assert "**Status: running**; warm-up 1,200/3,000 steps; epochs done 0/3" in md
    assert "**Warm-up** step 1,200/3,000 (40%), classification loss 1.234; about 3 min left" in md
    assert record["progress"]["step"] == 1200
    assert [a.get_xlabel() for a in fig.axes][:2] == ["warm-up step", "epoch"]
    assert len(fig.axes[0].lines[0].get_xdata()) == 12


def test_validation_numbers_of_a_tiny_split_are_not_shown(jobs, roots):
    d = job_dir(jobs, "asen-20260101-000000-bbbb", roots["small"], "stopped")
    (d / "run").mkdir()
    (d / "run" / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "loss": 0.2, "val_map": 100.0}) + "\n")
    _, md, _, fig = tab_finetune.job_status(FakeCatalog(), jobs, d.name, "mine")
    assert "100.00" not in md and "validation mAP is not shown" in md
    assert all("validation" not in a.get_ylabel() for a in fig.axes)


def test_a_failed_job_says_its_cause_and_offers_resume_only_with_a_checkpoint(jobs, roots):
    d = job_dir(jobs, "asen-20260101-000000-cccc", roots["synth"], "running")
    (d / "train.log").write_text(
        "decoding train images: 10%\nTraceback (most recent call last):\n"
        f'  File "{Path(sys.executable).parent}/x.py", line 3\n'
        f"error: cannot read image {roots['synth']}/images/0001.png (truncated file)\n")
    job = jobs._ended(json.loads((d / "job.json").read_text()), 2)
    assert job["status"] == "failed"
    assert job["reason"] == "exit code 2: cannot read image <data root 1>/synth/images/0001.png (truncated file)"
    _, md, _, _ = tab_finetune.job_status(FakeCatalog(), jobs, d.name, "mine")
    assert "nothing to resume; launch it again" in md and "Resume continues" not in md
    stop, resume, publish = tab_finetune.buttons(jobs, job)
    assert not stop["interactive"] and not resume["interactive"] and not publish["interactive"]
    with pytest.raises(JobError, match="has nothing to resume"):
        jobs.resume(d.name, "mine")
    (d / "run" / "last").mkdir(parents=True)
    (d / "run" / "last" / "config.json").write_text("{}")
    _, md, _, _ = tab_finetune.job_status(FakeCatalog(), jobs, d.name, "mine")
    assert "Resume continues it from its last finished epoch" in md
    assert tab_finetune.buttons(jobs, job)[1]["interactive"]


def test_a_finished_job_shows_its_test_map_and_joins_every_list_only_when_published(jobs, roots):
    d = job_dir(jobs, "asen-20260101-000000-beef", roots["synth"], "finished", settings={"attributes": TRAINED})
    (d / "run" / "best").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (d / "run" / "best" / name).write_text("{}")
    result = {"per_attribute": {"colour": 40.0, "texture": 30.0, "neck_design": 90.0},
              "n_queries": {"colour": 30, "texture": 10, "neck_design": 5}}
    (d / "test.json").write_text(json.dumps({"overall": 0, **result}))
    (d / "test-random.json").write_text(json.dumps({"overall": 0, **result, "per_attribute": {
        "colour": 20.0, "texture": 24.0, "neck_design": 50.0}}))
    catalog = FakeCatalog()
    record, md, _, _ = tab_finetune.job_status(catalog, jobs, d.name, "mine")
    name = "asen fine-tuned on synth (job beef)"
    # over the trained attributes, weighted by their queries: (40*30 + 30*10) / 40 = 37.5, random 21
    assert "**Test mAP 37.50** against 21.00 for random embeddings (above random) on 40 test queries" in md
    assert f"**Publish** makes it a model of every visitor, as **{name}**" in md
    assert record["checkpoint_model"] is None and catalog.added == []
    assert tab_finetune.buttons(jobs, jobs.get(d.name))[2]["interactive"]
    with pytest.raises(JobError, match="there is no job 'asen-20260101-000000-beef' of this browser"):
        tab_finetune.publish_job(catalog, jobs, d.name, "theirs")
    tab_finetune.publish_job(catalog, jobs, d.name, "mine")
    assert catalog.done.wait(10) and catalog.added == [(name, d / "run" / "best")]
    assert json.loads((d / "job.json").read_text())["published"]["name"] == name
    _, md, _, _ = tab_finetune.job_status(catalog, jobs, d.name, "mine")
    assert f"Published as **{name}**: a model of every visitor" in md
    assert not tab_finetune.buttons(jobs, jobs.get(d.name))[2]["interactive"]
    # every visitor's model list offers it, ticked for no one
    out = tab_finetune.tick(catalog, jobs, None, {"names": ["asen"]}, ["asen"], "someone-else")
    models = out[5]
    assert (f"{name} (asen)", name) in models["choices"] and models["value"] == ["asen"]
    # a restarted app serves the published models (and only those)
    again = FakeCatalog()
    tab_finetune.job_manager(again, jobs)
    assert again.added == [(name, d / "run" / "best")]


def test_a_test_map_not_above_random_is_said_to_be_not_above_it(jobs, roots):
    """The verdict follows the numbers: below random, and level with it, is "not above random". The test mAP is
    (10*30 + 30*10) / 40 = 15 in both; random (20*30 + 24*10) / 40 = 21, then (10*30 + 30*10) / 40 = 15."""
    counts = {"colour": 30, "texture": 10}
    for name, rnd, random_map in (("asen-20260101-000000-f00d", {"colour": 20.0, "texture": 24.0}, "21.00"),
                                  ("asen-20260101-000000-f00e", {"colour": 10.0, "texture": 30.0}, "15.00")):
        d = job_dir(jobs, name, roots["synth"], "finished", settings={"attributes": TRAINED})
        (d / "test.json").write_text(json.dumps({"per_attribute": {"colour": 10.0, "texture": 30.0},
                                                 "n_queries": counts}))
        (d / "test-random.json").write_text(json.dumps({"per_attribute": rnd, "n_queries": counts}))
        _, md, _, _ = tab_finetune.job_status(FakeCatalog(), jobs, d.name, "mine")
        assert (f"**Test mAP 15.00** against {random_map} for random embeddings (not above random) on 40 test "
                "queries") in md
