"""The Fine-tune tab: launch, follow, stop, resume and publish training jobs (``/launch_job``, ``/job_status``,
``/stop_job``, ``/resume_job``, ``/list_jobs``, ``/publish_job``).

The form lists the datasets of the allowed data roots (dataset folders and CSV catalogues; a CSV's columns are
read so that its image and attribute columns are picked, and the job imports it), offers the presets and two
schedules (the preset's own and a quick one), and says how long the chosen schedule takes on this machine from
seconds per step measured here (:data:`STEP_SECONDS`). While a job runs, its status and curve follow the
trainer's progress record (the warm-up counts); when it finishes, its owner sees its test mAP against random
embeddings, and its model joins every visitor's model lists only when the owner presses Publish (under a
readable name, not ticked for anyone).

Jobs belong to the browser that launched them: each browser keeps a random owner token in a ``gr.BrowserState``
(it survives reloads), passed as the last input of every job event; the job list shows this browser's jobs only,
and another browser's job is refused with the sentence an unknown id gets. API clients pass their own token as the
endpoints' last argument; without one they reach no job (anonymous callers would all be one owner). The browser
state's key is kept in the cache (:func:`profashion.explorer.public.browser_secret`), so a token survives a restart."""

from __future__ import annotations

import inspect
import re
import secrets
import threading
from types import SimpleNamespace

import gradio as gr

from profashion.explorer.catalog import Catalog
from profashion.explorer.jobs import (
    ACTIVE,
    MIN_VAL_QUERIES,
    TRAINING_OFF,
    JobError,
    JobManager,
    default_data_roots,
    default_jobs_root,
    private_folders,
)
from profashion.explorer.public import escape_markdown
from profashion.retrieval.search import QueryError
from profashion.ui.common import model_choices, to_error
from profashion.ui.tabs import Tab, Wired

OWNER_KEY = "profashion-job-owner"  # the localStorage key of the browser's owner token
TOKEN = re.compile(r"[A-Za-z0-9_-]{22,128}")

NOTE = (
    "**How to use this.** Choose a model, a dataset from the allowed data roots (a dataset folder, or a CSV "
    "catalogue: pick its image column and attribute columns, it is imported into the job) and a schedule; the "
    "form says how long it will take here. Launch: the job trains in a separate process (the app keeps "
    "answering), its progress (the warm-up too), curves and log update every few seconds, and it survives a page "
    "reload. Stop sends it SIGTERM; Resume continues from its last finished epoch (offered once one finished). "
    "When it finishes, its best checkpoint (by validation mAP) is tested on the dataset's test split against "
    "random embeddings; Publish then makes it a model of every visitor, under a readable name. A job belongs to "
    "this browser: only it sees, stops, resumes and publishes the job. Only checkpoints trained on the gallery's "
    "attributes can serve the gallery. One job at a time: a launch while a job trains is refused."
)
NO_JOB = "_No job chosen: launch one, or pick one from the list._"

# Seconds per step of the demo presets on this machine (2 shared CPU cores, batch 64, 160 px, trunk features
# read from the cache): (a warm-up step, a triplet step with the epoch's validation included), measured from the
# shipped checkpoints' own runs (runs/demo-checkpoints, `make checkpoints`) by
#   python benchmarks/finetune_step_seconds.py
# A job's own status then says the time left from the seconds per step measured in that job (its progress record).
STEP_SECONDS = {"asen": (0.066, 0.123), "cca1": (0.216, 0.644), "cca2": (0.215, 0.657), "csn": (0.042, 0.114),
                "profashion": (0.105, 0.335), "tf-asen": (0.381, 1.182), "tf-csn": (0.384, 1.169),
                "triplet": (0.039, 0.115)}
STEP_BATCH = 64
# Caching a training image's frozen-trunk features, both orientations, the first time a dataset is used:
# 995 s for the 8,400 training images of data/products12k (real photos, 96 px; runs/products12k-ckpt/manifest.json,
# "trunk_cache_seconds"), about 0.12 s an image; read back from disk in seconds afterwards.
CACHE_SECONDS_PER_IMAGE = 0.12
# The schedules the form offers: the preset's own, and a quick one (the fastest that trains every part: a
# warm-up of a third, one epoch of half the triplets).
SCHEDULES = {"preset": None, "quick": {"epochs": 1, "triplets_per_epoch": 4096, "warmup_steps": 1000}}
SCHEDULE_LABELS = [("the preset's own", "preset"), ("quick (1 epoch x 4,096 triplets, 1,000 warm-up steps)", "quick")]
IMPORT_SHARE_TRAIN = 0.7  # a CSV import's training share (valid 0.1, test 0.2)


# The tab's handlers take the app's catalog: one Catalog, or the app's Galleries (every gallery's catalog). A published
# model joins the gallery whose attributes it was trained on (Galleries.for_checkpoint); the model lists show the
# chosen gallery's models.


def _catalogs(catalog) -> list[Catalog]:
    return list(catalog.catalogs.values()) if hasattr(catalog, "catalogs") else [catalog]


def _serving(catalog, name) -> bool:
    return any(name in c.models for c in _catalogs(catalog))


def _model_error(catalog, name) -> str | None:
    return next((e.error for c in _catalogs(catalog) for e in c.skipped if e.name == name), None)


def _add(catalog, name: str, best) -> None:
    target = catalog.for_checkpoint(best) if hasattr(catalog, "for_checkpoint") else catalog
    target.add_checkpoint(name, best)


def job_manager(catalog, jobs: JobManager | None) -> JobManager:
    """The app's job manager (jobs root and data roots by default from the environment and the cache); the models
    of published jobs join the catalog of their gallery (their indexes are cached). A finished job joins it only
    when published."""
    if jobs is None:
        cache = _catalogs(catalog)[0].cache_root
        jobs = JobManager(default_jobs_root(cache), default_data_roots(cache), private=private_folders(cache))
    for job in jobs.published():
        name = job["published"]["name"]
        best = jobs.best_checkpoint(job["id"])
        if best is not None and not _serving(catalog, name):
            _add(catalog, name, best)
    return jobs


def serve_published(catalog, jobs: JobManager, job: dict) -> None:
    """Index its gallery with a published job's best checkpoint in the background; it joins that gallery."""
    name = job["published"]["name"]
    best = jobs.best_checkpoint(job["id"])
    if best is not None and not _serving(catalog, name):
        threading.Thread(target=_add, args=(catalog, name, best), daemon=True, name=f"index-{job['id']}").start()


def curves(records: list[dict], progress: dict | None = None, meaningful: bool = True):
    """The warm-up's classification loss per step (from the trainer's progress record), then the training loss
    and validation mAP per epoch (two y axes; the mAP only when ``meaningful``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    warm = (progress or {}).get("warmup_history") or []
    fig = Figure(figsize=(7, 2.6), dpi=100, layout="constrained")
    if warm:
        wax, ax = fig.subplots(1, 2, width_ratios=[1, 2])
        wax.plot([h[0] for h in warm], [h[1] for h in warm], "-", color="#9467bd")
        wax.set_xlabel("warm-up step")
        wax.set_ylabel("classification loss", color="#9467bd")
        wax.grid(alpha=0.3)
    else:
        ax = fig.add_subplot()
    ax.set_xlabel("epoch")
    if not records:
        ax.text(0.5, 0.5, "no finished epoch yet", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    ep = [r["epoch"] + 1 for r in records]
    ax.plot(ep, [r["loss"] for r in records], "o-", color="#d62728", label="training loss")
    ax.set_ylabel("training loss", color="#d62728")
    ax.set_xticks(ep if len(ep) <= 12 else ep[:: max(1, len(ep) // 12)])
    vm = [r for r in records if r.get("val_map") is not None] if meaningful else []
    if vm:
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] + 1 for r in vm], [r["val_map"] for r in vm], "s-", color="#1f77b4",
                 label="validation mAP")
        ax2.set_ylabel("validation mAP (%)", color="#1f77b4")
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return fig


# -- handlers ------------------------------------------------------------------------------------------


def job_choices(jobs: JobManager, owner=None) -> list[tuple[str, str]]:
    """The jobs ``owner`` launched (anonymous ones for no owner), newest first."""
    return [(f"{j['id']} ({j['status']})", j["id"]) for j in jobs.list_for(owner)]


NEED_OWNER = ("an owner token is needed for jobs: the page makes one for each browser; an API client passes its own "
              "(22 to 128 letters, digits, '-' or '_', kept secret) as the last argument and keeps it to reach its "
              "jobs later")


def has_owner(token) -> bool:
    """Whether ``token`` is an owner token: the app serves jobs to their owners only, never to anonymous callers
    (who would all be one owner)."""
    return isinstance(token, str) and TOKEN.fullmatch(token) is not None


def new_owner(token) -> str:
    """The browser's owner token: the one it keeps, or a new random one on its first visit."""
    return token if isinstance(token, str) and TOKEN.fullmatch(token) else secrets.token_urlsafe(24)


_VAL_QUERIES: dict[str, int] = {}  # job id -> fewest validation queries of a trained attribute (older jobs)


def val_queries(jobs: JobManager, job: dict) -> int:
    """The fewest validation queries of one of the job's trained attributes (its record's, else counted on its
    dataset; 0 when it cannot be counted)."""
    if isinstance(job.get("val_queries"), int):
        return job["val_queries"]
    if job["id"] not in _VAL_QUERIES:
        from profashion.data.splits import DatasetError, load_dataset

        try:
            ds = load_dataset(job["dataset"])
            q = ds.split("valid").queries
            names = (job.get("settings") or {}).get("attributes") or list(ds.schema.names)
            _VAL_QUERIES[job["id"]] = min(int((q[:, 1] == ds.schema.names.index(a)).sum()) for a in names)
        except (DatasetError, OSError, KeyError, ValueError, TypeError, AttributeError):
            _VAL_QUERIES[job["id"]] = 0
    return _VAL_QUERIES[job["id"]]


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def progress_line(jobs: JobManager, job: dict, records: list[dict], total: int | None) -> str | None:
    """What a running job is doing now, from the trainer's progress record, with the time left in that phase at
    the seconds per step measured in this job; None when it is not running."""
    if job["status"] not in ACTIVE:
        return None
    if total and len(records) >= total:
        return "**Testing** its best checkpoint on the test split (and random embeddings on the same queries)."
    p = jobs.progress(job["id"])
    phase, step, steps = p.get("phase"), int(p.get("step") or 0), int(p.get("steps") or 0)
    left = ""
    if p.get("seconds_per_step") and steps > step:
        left = (f"; about {_minutes((steps - step) * p['seconds_per_step'])} left in it at "
                f"{p['seconds_per_step']:.3f} s per step measured in this job")
    if phase == "caching":
        return (f"**Preparing**: decoding its {p.get('images', 0):,} training images and caching their frozen-trunk "
                "features (read from disk when an earlier job cached them).")
    if phase == "warmup":
        return (f"**Warm-up** step {step:,}/{steps:,} ({100 * step / max(steps, 1):.0f}%), classification loss "
                f"{p.get('loss', 0):.3f}{left}.")
    if phase == "epoch":
        return f"**Epoch {int(p.get('epoch') or 0) + 1}** step {step:,}/{steps:,}, loss {p.get('loss', 0):.4f}{left}."
    if phase == "validating":
        return f"**Validating** epoch {int(p.get('epoch') or 0) + 1}."
    return "**Starting**: loading the dataset and the model."


def _finished_lines(catalog: Catalog, jobs: JobManager, job: dict) -> list[str]:
    """A finished job: its test mAP against random embeddings, and whether (and as what) it is published."""
    lines = []
    test = jobs.test_result(job["id"])
    if test is not None:
        n = sum(test["n_queries"].values())
        verdict = "above" if test["map"] > test["random"] else "not above"
        lines.append(f"**Test mAP {test['map']:.2f}** against {test['random']:.2f} for random embeddings "
                     f"({verdict} random) on {n:,} test queries: "
                     + ", ".join(f"{a} {v:.1f}" for a, v in test["per_attribute"].items()) + ".")
    elif job.get("test"):
        lines.append("Its test mAP was not measured (the test step did not finish; see the log).")
    else:
        lines.append("Its dataset has no test split with queries: no test mAP.")
    pub = job.get("published")
    if not pub:
        lines.append(f"Only this browser sees it. **Publish** makes it a model of every visitor, as "
                     f"**{jobs.published_name(job)}** (not ticked for anyone).")
        return lines
    name = pub["name"]
    if _serving(catalog, name):
        lines.append(f"Published as **{name}**: a model of every visitor in Retrieve, Explore, Embeddings and "
                     "Results (tick it in Models).")
    else:
        err = _model_error(catalog, name)
        lines.append(f"Published as **{name}**, but it cannot serve the gallery: {escape_markdown(jobs.public(err))}"
                     if err else
                     f"Published as **{name}**: indexing the gallery with it; it becomes selectable in a moment.")
    return lines


def job_status_lines(catalog: Catalog, jobs: JobManager, job_id: str, job: dict, records: list[dict]) -> list[str]:
    """The status markdown of a job, one paragraph per line."""
    total = jobs.total_epochs(job)
    # a reason names folders by public names (<jobs>, <data root N>): escaped, so Markdown shows them as text
    status = job["status"] + (f" ({escape_markdown(jobs.public(job['reason']))})" if job.get("reason") else "")
    p = jobs.progress(job_id) if job["status"] in ACTIVE else {}
    warm = (f"warm-up {int(p.get('step') or 0):,}/{int(p.get('steps') or 0):,} steps; "
            if p.get("phase") == "warmup" else "")
    lines = [f"**Job {job_id}**: {job['model']} on `{jobs.public(job['dataset'])}`, preset {job['preset']}",
             f"**Status: {status}**; {warm}epochs done {len(records)}" + (f"/{total}" if total else "")]
    now = progress_line(jobs, job, records, total)
    if now:
        lines.append(now)
    meaningful = val_queries(jobs, job) >= MIN_VAL_QUERIES
    if records:
        last = records[-1]
        val = f", val mAP {last['val_map']:.2f}" if meaningful and last.get("val_map") is not None else ""
        best = max((r["val_map"] for r in records if r.get("val_map") is not None), default=None)
        lines.append(f"last epoch {last['epoch'] + 1}: loss {last['loss']:.4f}{val}"
                     + (f"; best val mAP {best:.2f}" if meaningful and best is not None else ""))
        if not meaningful and best is not None:
            lines.append(f"_Its validation mAP is not shown: its dataset has fewer than {MIN_VAL_QUERIES} validation "
                         "queries for a trained attribute, too few for the number to mean anything._")
    if job["status"] == "finished":
        lines += _finished_lines(catalog, jobs, job)
    elif job["status"] in ("stopped", "failed"):
        lines.append("Resume continues it from its last finished epoch." if jobs.resumable(job) else
                     "It saved no checkpoint (no epoch finished): nothing to resume; launch it again.")
    times = ", ".join(f"{k} {job[k]}" for k in ("created", "started", "ended") if job.get(k))
    lines.append(f"_{times}; pid {job.get('pid')}; resumed {job.get('resumed', 0)} time(s)_")
    return lines


def job_view(catalog: Catalog, jobs: JobManager, job_id, plot: bool = True, owner=None):
    """(record, status markdown, log tail, curves figure) of a job ``owner`` launched; empty when none is chosen.
    Raises ``JobError`` for an unknown job or another owner's."""
    if not job_id:
        return {}, NO_JOB, "", curves([]) if plot else None
    job = jobs.job_for(job_id, owner)
    records = jobs.metrics(job_id)
    lines = job_status_lines(catalog, jobs, job_id, job, records)
    shown = {k: v for k, v in job.items() if k != "owner"}
    published = (job.get("published") or {}).get("name")
    record = {**jobs.public_json(shown), "epochs_done": len(records), "epochs_total": jobs.total_epochs(job),
              "metrics": records, "progress": jobs.progress(job_id), "test": jobs.test_result(job_id),
              "resumable": jobs.resumable(job),
              "checkpoint_model": published if published and _serving(catalog, published) else None}
    fig = curves(records, record["progress"], val_queries(jobs, job) >= MIN_VAL_QUERIES) if plot else None
    return record, "\n\n".join(lines), jobs.public(jobs.log(job_id)), fig


def launch_job(catalog: Catalog, jobs: JobManager, model, dataset, preset, epochs, triplets, batch, warmup,
               attributes, frozen, model_config, image_column=None, rows=None, owner=None):
    """``/launch_job``: (the job list chosen on the new job, *its view). On a CSV catalogue ``attributes`` are the
    columns to import (and train), ``image_column`` its image paths' column, ``rows`` its first rows to import."""
    job = jobs.launch(model, dataset, preset or "demo", epochs, triplets, batch, warmup, attributes,
                      bool(frozen), model_config, image_column, rows, owner=owner)
    return (gr.update(choices=job_choices(jobs, owner), value=job["id"]),
            *job_view(catalog, jobs, job["id"], owner=owner))


def job_status(catalog: Catalog, jobs: JobManager, job_id, owner=None):
    return job_view(catalog, jobs, job_id, owner=owner)


def stop_job(catalog: Catalog, jobs: JobManager, job_id, owner=None):
    jobs.stop(job_id, owner)
    return job_view(catalog, jobs, job_id, owner=owner)


def resume_job(catalog: Catalog, jobs: JobManager, job_id, owner=None):
    jobs.resume(job_id, owner)
    return job_view(catalog, jobs, job_id, owner=owner)


def publish_job(catalog: Catalog, jobs: JobManager, job_id, owner=None):
    """``/publish_job``: the owner makes a finished job's model a model of every visitor (indexed in the
    background, then in every model list, ticked for no one)."""
    serve_published(catalog, jobs, jobs.publish(job_id, owner))
    return job_view(catalog, jobs, job_id, owner=owner)


def list_jobs(jobs: JobManager, owner=None) -> list[dict]:
    """``/list_jobs``: the caller's jobs, their dataset and reason by public names (``<jobs>/...``)."""
    return [jobs.public_json({k: j.get(k) for k in ("id", "model", "dataset", "preset", "status", "reason",
                                                     "created")})
            for j in jobs.list_for(owner)]


def buttons(jobs: JobManager, job: dict | None) -> tuple:
    """(Stop, Resume, Publish) enabled for what the chosen job allows: Stop while it runs, Resume once it saved
    a checkpoint, Publish when it finished and is not published yet."""
    on = jobs.enabled and job is not None
    st = (job or {}).get("status")
    return (gr.update(interactive=bool(on and st in ACTIVE)),
            gr.update(interactive=bool(on and jobs.resumable(job))),
            gr.update(interactive=bool(job is not None and st == "finished" and not job.get("published"))))


def tick(catalog, jobs: JobManager, job_id, seen, ticked, owner=None, gallery=None):
    """The timer: the job list, the chosen job's view, the model choices when the catalog changed (a new model is
    offered, ticked for no one), and the job buttons; what did not change since ``seen`` (the last tick's state)
    is skipped. Only ``owner``'s jobs are listed, none before the page has its owner token (the anonymous jobs
    are the API's, not a browser's)."""
    seen = dict(seen or {})
    choices = job_choices(jobs, owner) if owner else []
    ids = [c[1] for c in choices]
    if job_id not in ids:
        job_id = ids[0] if ids else None
    job_update = gr.update(choices=choices, value=job_id) if (choices != seen.get("jobs")
                                                               or job_id != seen.get("job")) else gr.skip()
    try:
        view = job_view(catalog, jobs, job_id, plot=False, owner=owner)
    except JobError:
        view = ({}, "_That job is gone; pick another._", "", None)
    rec = view[0] or {}
    n = len(rec.get("metrics") or [])
    warm = len((rec.get("progress") or {}).get("warmup_history") or [])
    key = (job_id, view[1], view[2], n, warm)
    if key == tuple(seen.get("view") or ()):
        view_out = tuple(gr.skip() for _ in view)
    else:  # the figure is drawn only when the epochs or the warm-up curve changed
        old = seen.get("view") or [None] * 5
        same_curve = (job_id, n, warm) == (old[0], old[3], old[4] if len(old) > 4 else None)
        meaningful = bool(rec) and val_queries(jobs, jobs.get(job_id)) >= MIN_VAL_QUERIES
        view_out = (*view[:3], gr.skip() if same_curve else curves(rec.get("metrics") or [], rec.get("progress"),
                                                                     meaningful))
    shown = catalog.get(gallery) if hasattr(catalog, "catalogs") else catalog  # the chosen gallery's models
    names_now = shown.listed  # served or warming up (a model failing to warm up leaves the lists)
    if names_now != seen.get("names"):
        mc = model_choices(shown)
        value = [n for n in (ticked or []) if n in names_now]  # a published model is offered, not ticked
        models_out = (gr.update(choices=mc, value=value), gr.update(choices=mc), gr.update(choices=mc))
    else:
        models_out = (gr.skip(), gr.skip(), gr.skip())
    state = (rec.get("status"), bool(rec.get("resumable")), bool(rec.get("published")))
    buttons_out = (buttons(jobs, rec or None) if list(state) != seen.get("buttons") else
                   (gr.skip(), gr.skip(), gr.skip()))
    seen.update(jobs=choices, job=job_id, view=list(key), names=names_now, buttons=list(state))
    return (job_update, *view_out, *models_out, *buttons_out, seen)


def on_preset(preset, model):
    """The schedule of a model's preset: (epochs, triplets per epoch, batch size, warm-up steps)."""
    from profashion.train.config import preset_schedule

    p = preset_schedule(model, preset)
    return p["epochs"], p["triplets_per_epoch"], p["batch_size"], p["warmup_steps"]


def on_schedule(schedule, preset, model):
    """The numbers of a schedule: the preset's own, or the quick one (the preset's batch size)."""
    epochs, triplets, batch, warmup = on_preset(preset, model)
    quick = SCHEDULES.get(schedule)
    if quick:
        epochs, triplets, warmup = quick["epochs"], quick["triplets_per_epoch"], quick["warmup_steps"]
    return epochs, triplets, batch, warmup


def on_dataset(jobs: JobManager, dataset):
    """The form for the chosen dataset: (attributes: a dataset's to train, or a CSV's columns to import; the
    image column, shown for a CSV; the rows to import, shown for a CSV)."""
    if not dataset:
        return gr.update(choices=[], value=[]), gr.update(visible=False), gr.update(visible=False)
    kind, columns = jobs.columns(dataset)
    if kind == "folder":
        return (gr.update(choices=columns, value=[], label="Attributes to train (none chosen = all)"),
                gr.update(visible=False, choices=[], value=None), gr.update(visible=False))
    image = "image" if "image" in columns else columns[0]
    return (gr.update(choices=[c for c in columns if c != image], value=[],
                      label="Attribute columns of the CSV to import and train (choose at least one)"),
            gr.update(visible=True, choices=columns, value=image), gr.update(visible=True))


def training_images(jobs: JobManager, dataset, rows=None) -> int | None:
    """How many training images a job on ``dataset`` decodes: a folder's train split, a CSV's (first ``rows``)
    rows times the import's training share; None when unknown."""
    try:
        ds = jobs.resolve_dataset(dataset)
        if ds.is_dir():
            with open(ds / "filenames_train.txt", "rb") as f:
                return sum(1 for ln in f if ln.strip())
        with open(ds, "rb") as f:
            n = max(0, sum(1 for ln in f if ln.strip()) - 1)
        r = int(rows) if rows not in (None, "") else 0
        return int((min(n, r) if r > 0 else n) * IMPORT_SHARE_TRAIN)
    except (JobError, OSError, ValueError, TypeError, OverflowError):
        return None


def estimate(jobs: JobManager, model, dataset, preset, epochs, triplets, batch, warmup, config=None, rows=None) -> str:
    """How long the schedule takes on this machine (markdown), from the measured seconds per step; a schedule
    beyond the machine's limits is refused here already, naming the limit."""
    from profashion.train.config import TrainConfig

    if not all(isinstance(x, str) or x is None for x in (model, dataset, preset)):
        return "_The time estimate needs a model, a dataset and a preset chosen from the lists._"
    try:
        e, t, b, w = (int(float(x)) for x in (epochs, triplets, batch, warmup))
    except (TypeError, ValueError, OverflowError):  # "inf" is a float, not a whole number
        return "_The time estimate needs whole numbers of epochs, triplets, batch and warm-up steps._"
    try:
        overrides = jobs._model_config(config)
        TrainConfig(model=model, dataset="-", preset=preset or "demo", epochs=e, triplets_per_epoch=t,
                    batch_size=b, warmup_steps=w, model_overrides=overrides).resolved()
    except (ValueError, JobError) as exc:
        return f"**This schedule would be refused:** {escape_markdown(jobs.public(str(exc)))}."
    if preset != "demo" or model not in STEP_SECONDS:
        return ("_No seconds per step were measured here for this preset; a job's status says the time left "
                "from its own steps once it runs._")
    ws, ts = (x * b / STEP_BATCH for x in STEP_SECONDS[model])
    steps = max(1, t // b)
    total = w * ws + e * steps * ts
    text = (f"**About {_minutes(total)}** of training here: {w:,} warm-up steps x {ws:.3f} s and {e} epoch(s) x "
            f"{steps:,} steps x {ts:.3f} s (seconds per step measured on this machine for {model}'s demo preset, "
            f"scaled to a batch of {b})")
    n = training_images(jobs, dataset, rows)
    if n:
        text += (f", plus up to {_minutes(n * CACHE_SECONDS_PER_IMAGE)} the first time the frozen trunk's features "
                 f"of its {n:,} training images are cached (read from disk by later jobs), and the test evaluation")
    return text + "."


def job_guard(fn, catalog: Catalog, jobs: JobManager):
    """``fn(catalog, jobs, *inputs)`` for an event: a refused request becomes one ``gr.Error`` sentence, its paths
    as the visitor may see them. The event's signature is ``fn``'s less (catalog, jobs), so an API client sees
    the parameters' names; a call without a valid trailing ``owner`` is refused (:data:`NEED_OWNER`)."""

    params = list(inspect.signature(fn).parameters.values())[2:]

    def event(*inputs):
        try:
            owner = inputs[len(params) - 1] if len(inputs) == len(params) else None
            if not has_owner(owner):
                raise JobError(NEED_OWNER)
            return fn(catalog, jobs, *inputs)
        except (JobError, QueryError) as exc:
            raise to_error(JobError(jobs.public(str(exc)))) from None

    event.__name__ = fn.__name__
    event.__signature__ = inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in params])
    return event


# -- layout and events ---------------------------------------------------------------------------------


def hardware_markdown(jobs: JobManager) -> str:
    hw = ("**This machine has a GPU**: the paper presets (pretrained backbones, ~100k triplets per "
          "epoch) are offered beside the demo preset." if jobs.gpu else
          "**This machine has no GPU**: only the demo preset (small heads on a frozen, cached ImageNet "
          "EfficientNet-Lite0, minutes on a CPU) is offered, and frozen-trunk training for the ViT "
          "models (CCA Type-1, CCA Type-2, TF-CSN, TF-ASEN: the trunk's features are computed once and only the "
          "head trains).")
    roots = ", ".join(f"`{jobs.public(str(r))}`" for r in jobs.data_roots)
    return (f"{hw} Datasets are taken from the allowed data roots only: {roots}; one needs at least "
            f"{MIN_VAL_QUERIES} validation queries per trained attribute.")


def _fields(update: dict) -> dict:
    """The settings of a ``gr.update`` (for a component's constructor)."""
    return {k: v for k, v in update.items() if k != "__type__"}


def build(page) -> SimpleNamespace:
    """The tab's components (inside its ``gr.Tab``)."""
    from profashion.models.base import available_models, display_name
    from profashion.train.config import preset_schedule

    jobs = page.jobs
    gr.Markdown(NOTE)
    gr.Markdown(hardware_markdown(jobs))
    if not jobs.enabled:
        gr.Markdown(f"**{TRAINING_OFF[0].upper() + TRAINING_OFF[1:]}.**", elem_id="training-off")
    datasets = jobs.datasets()
    all_models = available_models()
    first = "asen" if "asen" in all_models else all_models[0]
    demo_p = preset_schedule(first, "demo")
    start = datasets[0][1] if datasets else None
    try:  # the form as the first dataset wants it (a CSV: its columns)
        attrs, image_col, rows = on_dataset(jobs, start)
    except JobError:
        attrs, image_col, rows = on_dataset(jobs, None)
    c = SimpleNamespace()
    with gr.Row():
        c.model = gr.Dropdown([(display_name(n), n) for n in all_models], value=first, label="Model",
                              elem_id="ft-model")  # the methods by their names for people, the API by their ids
        c.dataset = gr.Dropdown(datasets, value=start, label="Dataset",
                                elem_id="ft-dataset", scale=2)
        c.preset = gr.Dropdown(jobs.presets(), value="demo", label="Preset", elem_id="ft-preset")
        c.schedule = gr.Dropdown(SCHEDULE_LABELS, value="preset", label="Schedule", elem_id="ft-schedule")
    with gr.Row():
        c.attrs = gr.Dropdown(**{"choices": [], "value": [], "label": "Attributes to train (none chosen = all)",
                                 **_fields(attrs)}, multiselect=True, elem_id="ft-attrs", scale=3)
        c.image_column = gr.Dropdown(**{"choices": [], "value": None, "visible": False, **_fields(image_col)},
                                     label="Image column of the CSV", elem_id="ft-image-column")
        c.rows = gr.Number(None, precision=0, minimum=0, label="Rows to import (the first N; 0 = all)",
                           visible=_fields(rows).get("visible", False), elem_id="ft-rows")
    with gr.Row():
        c.epochs = gr.Number(demo_p["epochs"], precision=0, minimum=1, label="Epochs", elem_id="ft-epochs")
        c.triplets = gr.Number(demo_p["triplets_per_epoch"], precision=0, minimum=1, label="Triplets per epoch",
                               elem_id="ft-triplets")
        c.batch = gr.Number(demo_p["batch_size"], precision=0, minimum=1, label="Batch size", elem_id="ft-batch")
        c.warmup = gr.Number(demo_p["warmup_steps"], precision=0, minimum=0, label="Warm-up steps",
                             elem_id="ft-warmup")
    with gr.Row():
        c.config = gr.Textbox(label="Model config overrides (JSON, optional)",
                              placeholder='{"image_size": 96, "resize": 96}', elem_id="ft-config", scale=3)
        c.frozen = gr.Checkbox(False, label="Frozen trunk (ViT models)", elem_id="ft-frozen")
    c.estimate = gr.Markdown(estimate(jobs, first, start, "demo", demo_p["epochs"], demo_p["triplets_per_epoch"],
                                      demo_p["batch_size"], demo_p["warmup_steps"]), elem_id="ft-estimate")
    c.launch = gr.Button("Launch the job", variant="primary", elem_id="launch-job", interactive=jobs.enabled)
    with gr.Row():  # filled by the timer with this browser's jobs (its owner token is known in the page only)
        c.job = gr.Dropdown([], value=None, label="Jobs of this browser (newest first)",
                            elem_id="job-list", scale=3, allow_custom_value=True)
        c.refresh = gr.Button("Refresh", elem_id="job-refresh")
        c.stop = gr.Button("Stop", variant="stop", elem_id="job-stop", interactive=False)
        c.resume = gr.Button("Resume", elem_id="job-resume", interactive=False)
        c.publish = gr.Button("Publish", elem_id="job-publish", interactive=False)
    c.md = gr.Markdown(elem_id="job-status")
    c.curves = gr.Plot(label="Warm-up loss per step; training loss and validation mAP per epoch", elem_id="job-curves")
    c.log = gr.Textbox(label="Log (last 40 lines)", lines=12, max_lines=12, interactive=False, autoscroll=True,
                       elem_id="job-log")
    c.json = gr.JSON(visible=False)
    c.view = [c.json, c.md, c.log, c.curves]
    return c


def wire(page, c: SimpleNamespace) -> Wired:
    """The public job events (the ones a client calls, in their order), then the private ones: the timer's tick
    (which also offers a published job's model in the shared models and in Embeddings' pair), the form, and the
    browser's owner token at the page's load."""
    seen_state = gr.State({"names": page.catalog.listed})  # what the last tick showed
    emb = page.built["embeddings"]
    wire_public(page.galleries, page.jobs, c)
    wire_private(page.galleries, page.jobs, c, page.timer, seen_state, page.choices.models, emb.model_a,
                 emb.model_b, page.choices.gallery)
    wire_owner(page.demo, c)
    return Wired()


def wire_public(catalog, jobs: JobManager, c: SimpleNamespace) -> None:
    """The public job events (the ones a client calls), in their order; ``c.owner`` (the browser's owner token,
    created here outside the tabs) is every event's last input."""
    from profashion.explorer.public import browser_secret

    cache_root = getattr(catalog, "default", catalog).cache_root
    c.owner = gr.BrowserState("", storage_key=OWNER_KEY, secret=browser_secret(cache_root))
    schedule = [c.epochs, c.triplets, c.batch, c.warmup]
    c.launch.click(job_guard(launch_job, catalog, jobs),
                   [c.model, c.dataset, c.preset, *schedule, c.attrs, c.frozen, c.config, c.image_column, c.rows,
                    c.owner],
                   [c.job, *c.view],
                   api_name="launch_job", concurrency_id="jobs", concurrency_limit=1,
                   preprocess=False)  # jobs.launch checks the raw values
    c.refresh.click(job_guard(job_status, catalog, jobs), [c.job, c.owner], c.view, api_name="job_status",
                    concurrency_id="tick", concurrency_limit=4)
    c.stop.click(job_guard(stop_job, catalog, jobs), [c.job, c.owner], c.view, api_name="stop_job",
                 concurrency_id="jobs")
    c.resume.click(job_guard(resume_job, catalog, jobs), [c.job, c.owner], c.view, api_name="resume_job",
                   concurrency_id="jobs")

    def list_jobs_event(owner=None):
        return list_jobs(jobs, owner) if has_owner(owner) else []

    list_jobs_event.__name__ = "list_jobs"
    gr.Button(visible=False).click(list_jobs_event, [c.owner], gr.JSON(visible=False), api_name="list_jobs",
                                   concurrency_id="tick")
    c.publish.click(job_guard(publish_job, catalog, jobs), [c.job, c.owner], c.view, api_name="publish_job",
                    concurrency_id="jobs")


def wire_owner(demo: gr.Blocks, c: SimpleNamespace) -> None:
    """The page's load gives a browser on its first visit a random owner token (kept in its localStorage)."""
    demo.load(new_owner, c.owner, c.owner, api_visibility="private", show_progress="hidden")


def wire_private(catalog, jobs: JobManager, c: SimpleNamespace, timer, seen_state, models, model_a,
                 model_b, gallery=None) -> None:
    """The private job events: the timer's tick (this browser's jobs, the model lists, the job buttons), a job
    picked, a dataset, preset, schedule or model chosen (the form follows; the time estimate too)."""
    def tick_event(job_id, seen, ticked, owner=None, gallery_name=None):
        try:
            return tick(catalog, jobs, job_id, seen, ticked, owner, gallery_name)
        except QueryError as exc:  # a gallery name the app does not have
            raise to_error(exc) from None

    tick_event.__name__ = "tick"
    timer.tick(tick_event, [c.job, seen_state, models, c.owner, *([gallery] if gallery is not None else [])],
               [c.job, *c.view, models, model_a, model_b, c.stop, c.resume, c.publish, seen_state],
               api_visibility="private", concurrency_id="tick", show_progress="hidden",
               preprocess=False)  # the ticked models as sent: a gallery switch may be changing their choices
    c.job.input(job_guard(job_status, catalog, jobs), [c.job, c.owner], c.view, api_visibility="private",
                concurrency_id="tick")
    numbers = [c.epochs, c.triplets, c.batch, c.warmup]
    for chooser in (c.preset, c.model, c.schedule):  # the schedule shown is the chosen model's preset record
        chooser.input(on_schedule, [c.schedule, c.preset, c.model], numbers, api_visibility="private")

    def dataset_event(dataset):
        if not isinstance(dataset, str) and dataset is not None:
            raise to_error(JobError("choose the dataset from the list"))
        try:
            return on_dataset(jobs, dataset)
        except JobError as exc:
            raise to_error(JobError(jobs.public(str(exc)))) from None

    # preprocess=False here and below: a value the page never sends (a 2,000-character dataset, epochs "inf") is
    # one short sentence of ours, not Gradio's bare "Error" or its whole echo (second hostile probe)
    c.dataset.change(dataset_event, c.dataset, [c.attrs, c.image_column, c.rows], api_visibility="private",
                     show_progress="hidden", preprocess=False)

    def estimate_event(model, dataset, preset, epochs, triplets, batch, warmup, config, rows):
        return estimate(jobs, model, dataset, preset, epochs, triplets, batch, warmup, config, rows)

    est_inputs = [c.model, c.dataset, c.preset, *numbers, c.config, c.rows]
    for comp in (c.model, c.dataset, c.preset, *numbers, c.config, c.rows):
        comp.change(estimate_event, est_inputs, c.estimate, api_visibility="private", show_progress="hidden",
                    preprocess=False)


TAB = Tab("finetune", "Fine-tune", build, wire)
