"""The Fine-tune tab's API: tiny training jobs launched, watched, stopped, killed and resumed through
gradio_client, tested against random embeddings, published by their owner and then served by /retrieve;
datasets outside the allowed roots refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import torch
from conftest import TINY_GALLERY, end_jobs, free_port

from profashion.data.synth import SYNTH_SCHEMA
from profashion.models.base import build_model, save_checkpoint

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from profashion.explorer import Catalog  # noqa: E402
from profashion.explorer.jobs import DIED, JobError, JobManager  # noqa: E402
from profashion.ui import build_demo, launch_kwargs  # noqa: E402

TINY_CONFIG = '{"image_size": 48, "resize": 48}'
# (model, dataset, preset, epochs, triplets per epoch, batch size, warm-up steps, attributes, frozen trunk, config)
TINY_JOB = dict(epochs=1, triplets=64, batch=16, warmup=2)
# the attributes of the tiny synthetic dataset with enough validation queries (>= MIN_VAL_QUERIES) to train on
TRAINED = "colour,texture"
OWNER = "owner-of-the-test-client-0123456789"  # an API client's own token (the app serves no anonymous caller)


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    from profashion.data.synth import generate_synth

    base = tmp_path_factory.mktemp("jobs-app")
    data = base / "data"
    # 120 validation images, each a query or candidate under every attribute: colour and texture get >= 20 queries
    synth = generate_synth(data / "synth", 160, 120, 60, size=48, seed=0, eval_layout="all-attributes")
    broken = data / "no-images"  # a dataset whose images are gone: the trainer fails when it decodes them
    shutil.copytree(synth, broken, ignore=shutil.ignore_patterns("images", "masks"))
    ck = base / "checkpoints"
    torch.manual_seed(0)
    save_checkpoint(build_model("csn", "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48), ck / "csn")
    return {"base": base, "data": data, "synth": synth, "broken": broken, "checkpoints": ck,
            "cache": base / "cache", "jobs": base / "jobs"}


@pytest.fixture(scope="module")
def app(roots):
    catalog = Catalog(roots["checkpoints"], roots["cache"], gallery=TINY_GALLERY, max_points=60).load()
    jobs = JobManager(roots["jobs"], [roots["data"], roots["cache"]])
    demo = build_demo(catalog, jobs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(catalog))
    try:
        yield {"client": Client(f"http://127.0.0.1:{port}/", verbose=False), "catalog": catalog, "jobs": jobs}
    finally:
        try:
            end_jobs(jobs)  # a job whose test failed or timed out (its own process group) does not outlive pytest
        finally:
            demo.close()


def launch(client, dataset, model="asen", epochs=1, triplets=64, batch=16, warmup=2, config=TINY_CONFIG,
           attributes=TRAINED):
    _, record, md, log, _ = client.predict(model, str(dataset), "demo", epochs, triplets, batch, warmup, attributes,
                                           False, config, owner=OWNER, api_name="/launch_job")
    assert record["status"] in ("queued", "running", "failed", "finished") and record["id"] in md
    return record["id"]


def status(client, job_id) -> dict:
    return client.predict(job_id, owner=OWNER, api_name="/job_status")[0]


def wait(client, job_id, until, timeout=240.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = status(client, job_id)
        if until(rec):
            return rec
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there in {timeout:.0f}s: {rec['status']}\n"
                         + client.predict(job_id, owner=OWNER, api_name="/job_status")[2])


def test_fine_tune_endpoints_are_named(app):
    info = app["client"].view_api(print_info=False, return_format="dict")
    assert {"/launch_job", "/job_status", "/stop_job", "/resume_job", "/list_jobs",
            "/publish_job"} <= set(info["named_endpoints"])


def test_a_tiny_job_trains_and_its_checkpoint_answers_retrieve(app, roots):
    client, catalog = app["client"], app["catalog"]
    job_id = launch(client, roots["synth"], **TINY_JOB)
    rec = wait(client, job_id, lambda r: r["status"] not in ("queued", "running"))
    assert rec["status"] == "finished", rec
    assert rec["epochs_done"] == 1 and rec["metrics"][0]["val_map"] >= 0
    job_dir = roots["jobs"] / job_id
    assert json.loads((job_dir / "job.json").read_text())["status"] == "finished"
    assert "run finished" in (job_dir / "train.log").read_text()
    # one configuration: the job's train.json, read by `profashion train --config`; the view's epochs from it
    assert json.loads((job_dir / "train.json").read_text())["triplets_per_epoch"] == 64
    assert f"--config {job_dir / 'train.json'}" in (job_dir / "train.log").read_text()
    assert rec["epochs_total"] == 1 and rec["settings"]["epochs"] == 1 and "args" not in rec
    # tested on the test split against random embeddings, over the trained attributes; private until published
    assert set(rec["test"]["n_queries"]) == {"colour", "texture"} and 0 <= rec["test"]["random"] <= 100
    assert (job_dir / "test.json").is_file() and (job_dir / "test-random.json").is_file()
    _, md, _, _ = client.predict(job_id, owner=OWNER, api_name="/job_status")
    assert "Test mAP" in md and "for random embeddings" in md and "Publish" in md
    time.sleep(1)
    assert rec["checkpoint_model"] is None and not any(job_id in n for n in catalog.models)
    rec = client.predict(job_id, owner=OWNER, api_name="/publish_job")[0]
    name = rec["published"]["name"]
    assert name == f"asen fine-tuned on synth (job {job_id[-4:]})"
    rec = wait(client, job_id, lambda r: r["checkpoint_model"] == name, timeout=120)
    assert catalog.models[name].method == "asen"
    _, md, _, _ = client.predict(job_id, owner=OWNER, api_name="/job_status")
    assert f"Published as **{name}**" in md
    # the published model answers /retrieve beside the shipped one
    gallery, table, _ = client.predict(handle_file(catalog.examples[0][1]), "colour", ["csn", name],
                                       api_name="/retrieve")
    rows = table["data"] if isinstance(table, dict) else table
    assert len(gallery) == 10 and sum(r[0] == catalog.models[name].label for r in rows) == 5
    assert catalog.models[name].label == f"{name} (ASEN)"  # its name, and its method's name for people
    assert any(j["id"] == job_id and j["status"] == "finished" for j in client.predict(OWNER, api_name="/list_jobs"))
    # a restarted app finds the published job and serves its checkpoint at once
    again = Catalog(roots["checkpoints"], roots["cache"], gallery=TINY_GALLERY).load()
    build_demo(again, JobManager(roots["jobs"], [roots["data"]]))
    assert name in again.models


def test_datasets_outside_the_allowed_roots_are_refused(app, roots, tmp_path):
    client = app["client"]
    outside = tmp_path / "synth"
    shutil.copytree(roots["synth"], outside)
    with pytest.raises(AppError, match="outside the allowed data roots"):
        launch(client, outside)
    with pytest.raises(AppError, match=r"contains '\.\.'"):
        launch(client, f"{roots['data']}/../../{outside.parent.name}/synth")
    with pytest.raises(AppError, match="does not exist"):
        launch(client, roots["data"] / "nothing-here")
    with pytest.raises(AppError, match="(?i)unknown model|not in the list of choices"):
        launch(client, roots["synth"], model="resnet-9000")
    with pytest.raises(AppError, match="(?i)preset 'paper' is not offered|not in the list of choices|JSON object"):
        client.predict("asen", str(roots["synth"]), "paper" if not torch.cuda.is_available() else "demo", 1, 64, 16,
                       2, "", False, "[1, 2]", owner=OWNER, api_name="/launch_job")
    with pytest.raises(AppError, match="JSON object"):
        launch(client, roots["synth"], config="[1, 2]")
    assert all(j["dataset"] != str(outside) for j in client.predict(OWNER, api_name="/list_jobs"))


def test_a_job_that_crashes_reports_failed_with_its_log(app, roots):
    client = app["client"]
    job_id = launch(client, roots["broken"])
    rec = wait(client, job_id, lambda r: r["status"] not in ("queued", "running"), timeout=120)
    # the cause in one sentence, from the log's last error line, without a server folder
    assert rec["status"] == "failed" and rec["reason"].startswith("exit code 2: "), rec["reason"]
    assert "image" in rec["reason"] and str(roots["data"]) not in rec["reason"] and "\n" not in rec["reason"]
    assert not rec["resumable"]
    _, md, log, _ = client.predict(job_id, owner=OWNER, api_name="/job_status")
    assert "Status: failed" in md and "error:" in log and "train" in log
    assert "nothing to resume" in md and "Resume continues" not in md
    with pytest.raises(AppError, match="has nothing to resume"):
        client.predict(job_id, owner=OWNER, api_name="/resume_job")


def test_stop_kill_and_resume_a_running_job(app, roots):
    client, jobs = app["client"], app["jobs"]
    # enough triplets that an epoch outlasts a status poll (the demo preset trains from a cached trunk)
    job_id = launch(client, roots["synth"], epochs=3, triplets=4096, batch=16, warmup=2)
    # one job at a time: a second launch while it trains is refused
    with pytest.raises(AppError, match="already training"):
        launch(client, roots["synth"])
    # the app keeps answering while the job trains (another process): a second user searches
    other = Client(client.src, verbose=False)
    gallery, _, _ = other.predict(handle_file(app["catalog"].examples[0][1]), "colour", ["csn"], api_name="/retrieve")
    assert len(gallery) == 5 and status(client, job_id)["status"] == "running"
    rec = wait(client, job_id, lambda r: r["epochs_done"] >= 1 or r["status"] != "running", timeout=900)
    pid = rec["pid"]
    os.killpg(pid, signal.SIGSTOP)  # hold it inside its second epoch
    rec = status(client, job_id)
    assert rec["status"] == "running" and rec["epochs_done"] < 3, rec
    done = rec["epochs_done"]
    rec = client.predict(job_id, owner=OWNER, api_name="/stop_job")[0]
    assert rec["status"] == "stopped" and rec["epochs_done"] == done
    assert (roots["jobs"] / job_id / "run" / "last" / "config.json").is_file()
    # resume: continues after the last finished epoch; a SIGKILL makes it failed, and it resumes again
    rec = client.predict(job_id, owner=OWNER, api_name="/resume_job")[0]
    assert rec["status"] == "running" and rec["resumed"] == 1
    os.killpg(rec["pid"], signal.SIGKILL)
    rec = wait(client, job_id, lambda r: r["status"] != "running", timeout=60)
    assert rec["status"] == "failed" and "signal 9" in rec["reason"]
    rec = client.predict(job_id, owner=OWNER, api_name="/resume_job")[0]
    assert rec["resumed"] == 2
    rec = wait(client, job_id, lambda r: r["status"] not in ("queued", "running"), timeout=900)
    assert rec["status"] == "finished", rec
    assert [m["epoch"] for m in rec["metrics"]] == [0, 1, 2]  # every epoch once, nothing lost
    log = (roots["jobs"] / job_id / "train.log").read_text()
    assert log.count("--resume") >= 1
    with pytest.raises(AppError, match="has finished"):
        client.predict(job_id, owner=OWNER, api_name="/resume_job")
    assert jobs.running() is None


def test_a_job_whose_process_vanished_is_failed_and_resumable(roots, tmp_path):
    jobs = JobManager(tmp_path / "jobs", [roots["data"]])
    d = tmp_path / "jobs" / "asen-20260101-000000-abcd"
    d.mkdir(parents=True)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (d / "job.json").write_text(json.dumps({"id": d.name, "model": "asen", "dataset": str(roots["synth"]),
                                            "preset": "demo", "args": [], "status": "running", "pid": dead,
                                            "created": "2026-01-01T00:00:00Z"}))
    job = jobs.get(d.name)
    assert job["status"] == "failed" and job["reason"] == DIED
    assert json.loads((d / "job.json").read_text())["status"] == "failed"
    with pytest.raises(JobError, match="^there is no job '../etc' of this browser"):
        jobs.get("../etc")


def test_a_hand_edited_job_record_is_one_sentence_and_listed_nowhere(roots, tmp_path):
    """job.json without its preset (or with a field of the wrong kind) was a bare "Error" in the job view (second
    hostile probe): it is refused in one sentence, and the job list skips it."""
    jobs = JobManager(tmp_path / "jobs", [roots["data"]])
    good = {"id": "", "model": "asen", "dataset": str(roots["synth"]), "preset": "demo", "status": "stopped",
            "reason": "", "pid": None, "created": "2026-01-01T00:00:00Z", "owner": ""}
    damaged = {"asen-20260101-000000-0001": {k: v for k, v in good.items() if k != "preset"},
               "asen-20260101-000000-0002": {**good, "status": ["running"]},
               "asen-20260101-000000-0003": {**good, "owner": 7},
               "asen-20260101-000000-0004": [1, 2],
               "asen-20260101-000000-0005": {**good, "id": "asen-20260101-000000-9999"}}
    for name, record in damaged.items():
        d = tmp_path / "jobs" / name
        d.mkdir(parents=True)
        if isinstance(record, dict) and record.get("id") == "":
            record = {**record, "id": name}
        (d / "job.json").write_text(json.dumps(record))
        with pytest.raises(JobError, match=r"is damaged \(.*\); remove its folder to forget it$"):
            jobs.get(name)
    ok = tmp_path / "jobs" / "asen-20260101-000000-0006"
    ok.mkdir()
    (ok / "job.json").write_text(json.dumps({**good, "id": ok.name}))
    assert [j["id"] for j in jobs.list()] == [ok.name]


def test_a_job_of_an_older_version_is_shown_and_resumes_from_its_runs_settings(roots, tmp_path, monkeypatch):
    """job.json with the trainer's argv ("args") and no train.json: shown; resumed with its run's args.json as
    the configuration, or refused in one sentence when it has none."""
    from profashion.train.config import TrainConfig

    jobs = JobManager(tmp_path / "jobs", [roots["data"]], enabled=True)
    started = []
    monkeypatch.setattr(jobs, "_start", lambda job, resume: started.append((job, resume)) or job)
    for name, with_args in (("asen-20250101-000000-0001", True), ("asen-20250101-000000-0002", False)):
        d = tmp_path / "jobs" / name
        d.mkdir(parents=True)
        (d / "job.json").write_text(json.dumps({
            "id": name, "model": "asen", "dataset": str(roots["synth"]), "preset": "demo",
            "args": ["--model", "asen", "--dataset", str(roots["synth"]), "--epochs", "2"], "status": "stopped",
            "reason": "", "pid": None, "created": "2025-01-01T00:00:00Z"}))
        if with_args:
            cfg = TrainConfig(model="asen", dataset=str(roots["synth"]), out=str(d / "run"), epochs=2).resolved()
            cfg.save(d / "run" / "args.json")
        (d / "run" / "last").mkdir(parents=True, exist_ok=True)  # an epoch finished: there is something to resume
        (d / "run" / "last" / "config.json").write_text("{}")
    old, bare = jobs.get("asen-20250101-000000-0001"), jobs.get("asen-20250101-000000-0002")
    assert jobs.public_json(old)["args"][3] == "<data root 1>/synth"
    assert jobs.total_epochs(old) == 2 and jobs.total_epochs(bare) == 3  # its run's args.json; else the preset
    jobs.resume(old["id"])
    assert started and started[0][1] is True  # continued from its last checkpoint
    assert TrainConfig.load(tmp_path / "jobs" / old["id"] / "train.json").epochs == 2
    with pytest.raises(JobError, match="older version.*launch a new job"):
        jobs.resume(bare["id"])


def test_the_page_shows_no_server_folder_of_the_jobs_or_data_roots(app, roots):
    """The dataset list, the roots and the job view name folders by public names (``<data root 1>/synth``)."""
    import urllib.request

    client = app["client"]
    page = urllib.request.urlopen(client.src.rstrip("/") + "/config", timeout=30).read().decode()
    assert str(roots["data"]) not in page and str(roots["jobs"]) not in page
    assert "<data root 1>/synth" in page
    job_id = launch(client, "<data root 1>/synth", epochs=1)  # a public name is accepted back
    record, md, log, _ = client.predict(job_id, owner=OWNER, api_name="/job_status")
    shown = json.dumps(record) + md + log
    assert str(roots["data"]) not in shown and str(roots["jobs"]) not in shown
    wait(client, job_id, lambda r: r["status"] not in ("queued", "running"))


def test_hostile_inputs_through_the_api_are_one_sentence_each(app, roots):
    """A 5,000-character job id, a NUL in a dataset path, epochs 'abc' or 1.5: one sentence, not a generic error."""
    client = app["client"]
    for job_id in ("x" * 5000, "../../etc", "\x00"):  # as an unknown id, the id cut short
        with pytest.raises(AppError, match="^There is no job '.{1,60}' of this browser: a job is seen") as err:
            client.predict(job_id, owner=OWNER, api_name="/job_status")
        assert len(str(err.value)) < 300
    with pytest.raises(AppError, match="(?i)not a usable path"):
        launch(client, "\x00")
    for epochs, message in (("abc", "whole number, got 'abc'"), (1.5, "whole number, got 1.5"),
                            (10**9, "more than the 1000 a run may have")):
        with pytest.raises(AppError, match=message):
            launch(client, roots["synth"], epochs=epochs)


def test_a_job_belongs_to_its_owner_no_server(roots, tmp_path, monkeypatch):
    """Owner A's job: B (another browser) and anonymous callers neither list, see, stop nor resume it; A does;
    job.json keeps only the token's SHA-256; a launch while A's job trains names it to A only."""
    import hashlib

    from profashion.explorer.jobs import BUSY, NOT_YOURS

    jobs = JobManager(tmp_path / "jobs", [roots["data"]], enabled=True)
    started = []
    monkeypatch.setattr(jobs, "_start", lambda job, resume: started.append(resume) or job)
    a, b = "token-of-browser-a-0123456789", "token-of-browser-b-0123456789"
    job_id = jobs.launch("asen", roots["synth"], epochs=1, triplets_per_epoch=64, attributes=TRAINED, owner=a)["id"]
    text = (tmp_path / "jobs" / job_id / "job.json").read_text()
    assert a not in text and json.loads(text)["owner"] == hashlib.sha256(a.encode()).hexdigest()
    assert [j["id"] for j in jobs.list_for(a)] == [job_id] and jobs.list_for(b) == jobs.list_for(None) == []
    refused = NOT_YOURS.format(repr(job_id))
    for owner in (b, None, ""):
        for call in (jobs.job_for, jobs.stop, jobs.resume):
            with pytest.raises(JobError) as err:
                call(job_id, owner)
            assert str(err.value) == refused
    assert jobs.job_for(job_id, a)["id"] == job_id  # its process never started: failed, resumable by A only
    with pytest.raises(JobError, match="is not running"):
        jobs.stop(job_id, a)
    with pytest.raises(JobError, match="has nothing to resume"):  # no epoch finished: no checkpoint
        jobs.resume(job_id, a)
    (tmp_path / "jobs" / job_id / "run" / "last").mkdir(parents=True)
    (tmp_path / "jobs" / job_id / "run" / "last" / "config.json").write_text("{}")
    assert jobs.resume(job_id, a)["resumed"] == 1 and started == [False, True]
    with pytest.raises(JobError) as err:  # publishing is the owner's too, and only a finished job's
        jobs.publish(job_id, b)
    assert str(err.value) == refused
    with pytest.raises(JobError, match="has not finished"):
        jobs.publish(job_id, a)
    # one job at a time stays global; only its owner is told which job trains
    monkeypatch.setattr(jobs, "running", lambda: {**jobs.get(job_id), "status": "running"})
    with pytest.raises(JobError) as err:
        jobs.launch("asen", roots["synth"], owner=b)
    assert str(err.value) == BUSY and job_id not in BUSY
    with pytest.raises(JobError, match=f"job {job_id} is already training"):
        jobs.launch("asen", roots["synth"], owner=a)


def test_another_browsers_job_is_refused_through_the_api_owner(app, roots):
    """An owner token as the endpoints' last argument: the job is that client's; a client without it (or with
    another) neither lists, sees, stops nor resumes it."""
    client = app["client"]
    a, b = "api-owner-a-" + "x" * 20, "api-owner-b-" + "y" * 20
    _, record, _, _, _ = client.predict("asen", str(roots["broken"]), "demo", 1, 64, 16, 2, TRAINED, False,
                                        TINY_CONFIG, None, None, a, api_name="/launch_job")
    job_id = record["id"]
    assert "owner" not in record
    deadline = time.time() + 120
    while client.predict(job_id, a, api_name="/job_status")[0]["status"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.3)
    assert [j["id"] for j in client.predict(a, api_name="/list_jobs")] == [job_id]
    assert client.predict(api_name="/list_jobs") == client.predict(b, api_name="/list_jobs") == []
    # another owner is told what an unknown id is told (the refusal never confirms that the job exists)
    for job in (job_id, "asen-20990101-000000-0000"):
        for api, args in (("/job_status", (job, b)), ("/stop_job", (job, b)), ("/resume_job", (job, b)),
                          ("/publish_job", (job, b))):
            with pytest.raises(AppError) as err:
                client.predict(*args, api_name=api)
            assert str(err.value) == f"There is no job {job!r} of this browser: a job is seen, stopped, resumed and " \
                                     "published only by the browser that launched it; pick one from the job list"
    # without an owner token nothing is served: anonymous callers would all be one owner
    for api, args in (("/job_status", (job_id,)), ("/stop_job", (job_id, None)), ("/resume_job", (job_id, "")),
                      ("/launch_job", ("asen", str(roots["broken"]), "demo", 1, 64, 16, 2, TRAINED, False,
                                       TINY_CONFIG, None, None, "short"))):
        with pytest.raises(AppError, match="^An owner token is needed for jobs: the page makes one for each browser"):
            client.predict(*args, api_name=api)
