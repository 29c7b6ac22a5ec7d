"""The Fine-tune tab: launch, follow, stop and resume training jobs (``/launch_job``, ``/job_status``,
``/stop_job``, ``/resume_job``, ``/list_jobs``); a finished job's best checkpoint joins the catalog.

Jobs belong to the browser that launched them: each browser keeps a random owner token in a ``gr.BrowserState``
(it survives reloads), passed as the last input of every job event; the job list shows this browser's jobs only,
and another browser's job is refused in one sentence. API clients may pass their own token as the endpoints'
last (optional) argument; without one they are anonymous and see and control anonymous jobs only."""

from __future__ import annotations

import inspect
import re
import secrets
import threading
from types import SimpleNamespace

import gradio as gr

from profashion.retrieval.search import QueryError
from profashion.ui.catalog import Catalog
from profashion.ui.common import to_error
from profashion.ui.jobs import TRAINING_OFF, JobError, JobManager, default_data_roots, default_jobs_root

OWNER_KEY = "profashion-job-owner"  # the localStorage key of the browser's owner token
TOKEN = re.compile(r"[A-Za-z0-9_-]{22,128}")

NOTE = (
    "**How to use this.** Choose a model, a dataset inside the allowed data roots and a schedule, then "
    "launch: the job trains in a separate process (the app keeps answering), its progress, curves and log "
    "update every few seconds, and it survives a page reload. Stop sends it SIGTERM; Resume continues "
    "from its last finished epoch. When it finishes, its best checkpoint (by validation mAP) is indexed "
    "against the gallery and becomes selectable in every tab under the job's name. A job belongs to this "
    "browser: only it sees, stops and resumes the job. Only checkpoints "
    "trained on the gallery's attributes (a synthetic dataset) can serve the gallery. One job at a time: "
    "a launch while a job trains is refused."
)
NO_JOB = "_No job chosen: launch one, or pick one from the list._"


def job_manager(catalog: Catalog, jobs: JobManager | None) -> JobManager:
    """The app's job manager (jobs root and data roots by default from the environment and the cache); a
    finished job's best checkpoint is indexed in the background and joins the catalog under the job's id."""
    if jobs is None:
        jobs = JobManager(default_jobs_root(catalog.cache_root), default_data_roots(catalog.cache_root))

    def register(job):
        best = jobs.best_checkpoint(job["id"])
        if best is not None and job["id"] not in catalog.models:
            threading.Thread(target=catalog.add_checkpoint, args=(job["id"], best), daemon=True,
                             name=f"index-{job['id']}").start()

    jobs.on_finished = register
    for job in jobs.list():  # jobs that finished before this start (the indexes are cached)
        best = jobs.best_checkpoint(job["id"])
        if job["status"] == "finished" and best is not None and job["id"] not in catalog.models:
            catalog.add_checkpoint(job["id"], best)
    return jobs


def curves(records: list[dict]):
    """The training loss and validation mAP per epoch, one figure with two y axes (markers: one epoch shows)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.6), dpi=100, layout="constrained")
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
    vm = [r for r in records if r.get("val_map") is not None]
    if vm:
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] + 1 for r in vm], [r["val_map"] for r in vm], "s-", color="#1f77b4",
                 label="validation mAP")
        ax2.set_ylabel("validation mAP (%)", color="#1f77b4")
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return fig


# -- handlers ------------------------------------------------------------------------------------------


def model_choices(catalog: Catalog) -> list[tuple[str, str]]:
    return [(e.label, n) for n, e in catalog.models.items()]


def job_choices(jobs: JobManager, owner=None) -> list[tuple[str, str]]:
    """The jobs ``owner`` launched (anonymous ones for no owner), newest first."""
    return [(f"{j['id']} ({j['status']})", j["id"]) for j in jobs.list_for(owner)]


def new_owner(token) -> str:
    """The browser's owner token: the one it keeps, or a new random one on its first visit."""
    return token if isinstance(token, str) and TOKEN.fullmatch(token) else secrets.token_urlsafe(24)


def job_status_lines(catalog: Catalog, jobs: JobManager, job_id: str, job: dict, records: list[dict]) -> list[str]:
    """The status markdown of a job, one paragraph per line."""
    total = jobs.total_epochs(job)
    status = job["status"] + (f" ({job['reason']})" if job.get("reason") else "")
    lines = [f"**Job {job_id}**: {job['model']} on `{jobs.public(job['dataset'])}`, preset {job['preset']}",
             f"**Status: {status}**; epochs done {len(records)}" + (f"/{total}" if total else "")]
    if records:
        last = records[-1]
        val = f", val mAP {last['val_map']:.2f}" if last.get("val_map") is not None else ""
        best = max((r["val_map"] for r in records if r.get("val_map") is not None), default=None)
        lines.append(f"last epoch {last['epoch'] + 1}: loss {last['loss']:.4f}{val}"
                     + (f"; best val mAP {best:.2f}" if best is not None else ""))
    if job["status"] == "finished":
        if job_id in catalog.models:
            lines.append(f"Its best checkpoint is selectable as **{job_id}** in Retrieve, Explore, "
                         "Embeddings and Results.")
        else:
            err = next((e.error for e in catalog.skipped if e.name == job_id), None)
            lines.append(f"Its checkpoint cannot serve the gallery: {err}" if err else
                         "Indexing the gallery with its best checkpoint; it becomes selectable in a moment.")
    elif job["status"] in ("stopped", "failed"):
        lines.append("Resume continues it from its last finished epoch.")
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
    record = {**jobs.public_json(shown), "epochs_done": len(records), "epochs_total": jobs.total_epochs(job),
              "metrics": records, "checkpoint_model": job_id if job_id in catalog.models else None}
    return (record, "\n\n".join(lines), jobs.public(jobs.log(job_id)), curves(records) if plot else None)


def launch_job(catalog: Catalog, jobs: JobManager, model, dataset, preset, epochs, triplets, batch, warmup,
               attributes, frozen, model_config, owner=None):
    """``/launch_job``: (the job list chosen on the new job, *its view)."""
    job = jobs.launch(model, dataset, preset or "demo", epochs, triplets, batch, warmup, attributes,
                      bool(frozen), model_config, owner=owner)
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


def list_jobs(jobs: JobManager, owner=None) -> list[dict]:
    return [{k: j.get(k) for k in ("id", "model", "dataset", "preset", "status", "reason", "created")}
            for j in jobs.list_for(owner)]


def tick(catalog: Catalog, jobs: JobManager, job_id, seen, ticked, owner=None):
    """The timer: the job list, the chosen job's view, and the model choices when the catalog changed; what did
    not change since ``seen`` (the last tick's state) is skipped. Only ``owner``'s jobs are listed, none before
    the page has its owner token (the anonymous jobs are the API's, not a browser's)."""
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
    n = len((view[0] or {}).get("metrics") or [])
    key = (job_id, view[1], view[2], n)
    if key == tuple(seen.get("view") or ()):
        view_out = tuple(gr.skip() for _ in view)
    else:  # the figure is drawn only when the epochs changed
        same_curve = (job_id, n) == tuple((seen.get("view") or [None] * 4)[::3])
        view_out = (*view[:3], gr.skip() if same_curve else curves((view[0] or {}).get("metrics") or []))
    names_now = list(catalog.models)
    if names_now != seen.get("names"):
        mc = model_choices(catalog)
        new = [n for n in names_now if n not in (seen.get("names") or [])]  # a new model is ticked at once
        value = [n for n in dict.fromkeys([*(ticked or []), *new]) if n in names_now]
        models_out = (gr.update(choices=mc, value=value), gr.update(choices=mc), gr.update(choices=mc))
    else:
        models_out = (gr.skip(), gr.skip(), gr.skip())
    seen.update(jobs=choices, job=job_id, view=list(key), names=names_now)
    return (job_update, *view_out, *models_out, seen)


def on_preset(preset, model):
    """The schedule of a model's preset: (epochs, triplets per epoch, batch size, warm-up steps)."""
    from profashion.train.config import preset_schedule

    p = preset_schedule(model, preset)
    return p["epochs"], p["triplets_per_epoch"], p["batch_size"], p["warmup_steps"]


def job_guard(fn, catalog: Catalog, jobs: JobManager):
    """``fn(catalog, jobs, *inputs)`` for an event: a refused request becomes one ``gr.Error`` sentence, its paths
    as the visitor may see them. The event's signature is ``fn``'s less (catalog, jobs), so an API client sees
    the parameters' names and may leave out the trailing ``owner`` (then it is anonymous)."""

    def event(*inputs):
        try:
            return fn(catalog, jobs, *inputs)
        except (JobError, QueryError) as exc:
            raise to_error(JobError(jobs.public(str(exc)))) from None

    event.__name__ = fn.__name__
    params = list(inspect.signature(fn).parameters.values())[2:]
    event.__signature__ = inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in params])
    return event


# -- layout and events ---------------------------------------------------------------------------------


def hardware_markdown(jobs: JobManager) -> str:
    hw = ("**This machine has a GPU**: the paper presets (pretrained backbones, ~100k triplets per "
          "epoch) are offered beside the demo preset." if jobs.gpu else
          "**This machine has no GPU**: only the demo preset (small heads on a frozen, cached ImageNet "
          "EfficientNet-Lite0, minutes on a CPU) is offered, and frozen-trunk training for the ViT "
          "models (cca1, cca2, tf-csn, tf-asen: the trunk's features are computed once and only the "
          "head trains).")
    roots = ", ".join(f"`{jobs.public(str(r))}`" for r in jobs.data_roots)
    return f"{hw} Datasets are taken from the allowed data roots only: {roots}."


def build(jobs: JobManager) -> SimpleNamespace:
    """The tab's components (inside ``gr.Tab("Fine-tune")``)."""
    from profashion.models.base import available_models
    from profashion.train.config import preset_schedule

    gr.Markdown(NOTE)
    gr.Markdown(hardware_markdown(jobs))
    if not jobs.enabled:
        gr.Markdown(f"**{TRAINING_OFF[0].upper() + TRAINING_OFF[1:]}.**", elem_id="training-off")
    datasets = jobs.datasets()
    all_models = available_models()
    first = "asen" if "asen" in all_models else all_models[0]
    demo_p = preset_schedule(first, "demo")
    c = SimpleNamespace()
    with gr.Row():
        c.model = gr.Dropdown(all_models, value=first, label="Model", elem_id="ft-model")
        c.dataset = gr.Dropdown(datasets, value=datasets[0][1] if datasets else None, allow_custom_value=True,
                                label="Dataset folder (pick or type a path)", elem_id="ft-dataset", scale=2)
        c.preset = gr.Dropdown(jobs.presets(), value="demo", label="Preset", elem_id="ft-preset")
    with gr.Row():
        c.epochs = gr.Number(demo_p["epochs"], precision=0, minimum=1, label="Epochs", elem_id="ft-epochs")
        c.triplets = gr.Number(demo_p["triplets_per_epoch"], precision=0, minimum=1, label="Triplets per epoch",
                               elem_id="ft-triplets")
        c.batch = gr.Number(demo_p["batch_size"], precision=0, minimum=1, label="Batch size", elem_id="ft-batch")
        c.warmup = gr.Number(demo_p["warmup_steps"], precision=0, minimum=0, label="Warm-up steps",
                             elem_id="ft-warmup")
    with gr.Row():
        c.attrs = gr.Textbox(label="Attributes (comma-separated; empty = all)", elem_id="ft-attrs")
        c.config = gr.Textbox(label="Model config overrides (JSON, optional)",
                              placeholder='{"image_size": 48, "resize": 48}', elem_id="ft-config")
        c.frozen = gr.Checkbox(False, label="Frozen trunk (ViT models)", elem_id="ft-frozen")
    c.launch = gr.Button("Launch the job", variant="primary", elem_id="launch-job", interactive=jobs.enabled)
    with gr.Row():  # filled by the timer with this browser's jobs (its owner token is known in the page only)
        c.job = gr.Dropdown([], value=None, label="Jobs of this browser (newest first)",
                            elem_id="job-list", scale=3, allow_custom_value=True)
        c.refresh = gr.Button("Refresh", elem_id="job-refresh")
        c.stop = gr.Button("Stop", variant="stop", elem_id="job-stop", interactive=jobs.enabled)
        c.resume = gr.Button("Resume", elem_id="job-resume", interactive=jobs.enabled)
    c.md = gr.Markdown(elem_id="job-status")
    c.curves = gr.Plot(label="Training loss and validation mAP per epoch", elem_id="job-curves")
    c.log = gr.Textbox(label="Log (last 40 lines)", lines=12, max_lines=12, interactive=False, autoscroll=True,
                       elem_id="job-log")
    c.json = gr.JSON(visible=False)
    c.view = [c.json, c.md, c.log, c.curves]
    return c


def wire(catalog: Catalog, jobs: JobManager, c: SimpleNamespace) -> None:
    """The public job events (the ones a client calls), in their order; ``c.owner`` (the browser's owner token,
    created here outside the tabs) is every event's last input."""
    c.owner = gr.BrowserState("", storage_key=OWNER_KEY)
    schedule = [c.epochs, c.triplets, c.batch, c.warmup]
    c.launch.click(job_guard(launch_job, catalog, jobs),
                   [c.model, c.dataset, c.preset, *schedule, c.attrs, c.frozen, c.config, c.owner],
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
        return list_jobs(jobs, owner)

    list_jobs_event.__name__ = "list_jobs"
    gr.Button(visible=False).click(list_jobs_event, [c.owner], gr.JSON(visible=False), api_name="list_jobs",
                                   concurrency_id="tick")


def wire_owner(demo: gr.Blocks, c: SimpleNamespace) -> None:
    """The page's load gives a browser on its first visit a random owner token (kept in its localStorage)."""
    demo.load(new_owner, c.owner, c.owner, api_visibility="private", show_progress="hidden")


def wire_private(catalog: Catalog, jobs: JobManager, c: SimpleNamespace, timer, seen_state, models, model_a,
                 model_b) -> None:
    """The private job events: the timer's tick (this browser's jobs and the model lists), a job picked, a preset
    or model chosen."""
    def tick_event(job_id, seen, ticked, owner=None):
        return tick(catalog, jobs, job_id, seen, ticked, owner)

    tick_event.__name__ = "tick"
    timer.tick(tick_event, [c.job, seen_state, models, c.owner],
               [c.job, *c.view, models, model_a, model_b, seen_state],
               api_visibility="private", concurrency_id="tick", show_progress="hidden")
    c.job.input(job_guard(job_status, catalog, jobs), [c.job, c.owner], c.view, api_visibility="private",
                concurrency_id="tick")
    for chooser in (c.preset, c.model):  # the schedule shown is the chosen model's preset record
        chooser.input(on_preset, [c.preset, c.model], [c.epochs, c.triplets, c.batch, c.warmup],
                      api_visibility="private")

