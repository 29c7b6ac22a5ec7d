"""The Gradio Blocks of ProFashion Explorer: Retrieve, Explore, Embeddings, Fine-tune and Results tabs.

``build_demo(catalog, jobs=None)`` lays out whatever models the catalog loaded (no model is named here), and wires
every compute event to a named API endpoint (``/retrieve``, ``/explore``, ``/embeddings``,
``/neighbours``, ``/results``, and for fine-tuning ``/launch_job``, ``/job_status``, ``/stop_job``,
``/resume_job``, ``/list_jobs``); events that only move things around in the page are private. A bad
request raises ``gr.Error`` with one sentence (a toast in the browser, ``AppError`` in gradio_client)
and the app keeps serving.

The page shows a Retrieve as one HTML grid (:func:`comparison_html`: the query pinned at the left, one row per
model), its images served by Gradio's own file route from the gallery folder; ``/retrieve`` still returns a
gallery, a table and a status for API clients. The views follow the query: a change of query, attribute or
models recomputes the open tab's view and marks the others out of date until their tab is opened.
"""

from __future__ import annotations

import logging
import os
from html import escape as html_escape

import gradio as gr
import pandas as pd

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explain.render import strip
from profashion.explain.scatter import scatter_svg
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.catalog import MAX_UPLOAD_BYTES, Catalog
from profashion.ui.jobs import TRAINING_OFF, JobError, JobManager, default_data_roots, default_jobs_root

log = logging.getLogger(__name__)

K = 5
QUEUE_SIZE = 16  # requests waiting beyond the running ones; PROFASHION_QUEUE_SIZE overrides it


def queue_size() -> int:
    try:
        return max(1, int(os.environ.get("PROFASHION_QUEUE_SIZE", QUEUE_SIZE)))
    except ValueError:
        return QUEUE_SIZE
METHOD_CHOICES = [("t-SNE", "tsne"), ("UMAP", "umap")]

NOTES = {
    "retrieve": (
        "**How to read this.** The query is at the left; each row is one model's top-5 for it (the model's name and "
        "hit count at the row's start), ranked by cosine similarity (score) in the space of the chosen attribute. "
        "Beside each result: ✓ hit (green frame) when it has the query's value of that attribute, ✗ miss (red) "
        "when it has another, ? (grey) when the query's value is unknown (an uploaded image); then its value, "
        "its rank and score. The table below repeats every hit. Click a result to make it the next query."
    ),
    "explore": (
        "**How to read this.** For the query and attribute, each model's maps of where it looks, as colour "
        "overlays (red = high): a spatial attention, a cross-attention, a correlation or OT map, "
        "superpixels (yellow boundaries) and the ones selected for the attribute, transport plans as "
        "matrices (rows = attributes, the queried one framed in red). On gallery images the green outline is "
        "the ground-truth region of the attribute and each map gets a localisation score: the share of its "
        "mass inside that region, to compare with the region's share of the image (what a uniform map "
        "scores). A heatmap shows where a model's evidence comes from, not why: a map can sit on the right "
        "region and the embedding still be wrong, and coarse maps (e.g. 6x6) are upsampled."
    ),
    "embeddings": (
        "**How to read this.** Each point is a gallery image in one model's embedding space of the chosen "
        "attribute, projected to 2-D with t-SNE or UMAP and coloured by its true value. A disentangled model "
        "forms one cluster per value. The projection distorts distances (cluster sizes and gaps between "
        "clusters mean little), so judge by the numbers, measured in the full space: kNN accuracy (5 "
        "nearest neighbours, leave-one-out) against chance (the most common value's share) and the "
        "silhouette (-1..1, higher = better separated). Click a point (hover shows its item id and value) to "
        "see that image and its nearest neighbours in both models' original, unprojected spaces."
    ),
    "finetune": (
        "**How to use this.** Choose a model, a dataset inside the allowed data roots and a schedule, then "
        "launch: the job trains in a separate process (the app keeps answering), its progress, curves and log "
        "update every few seconds, and it survives a page reload. Stop sends it SIGTERM; Resume continues "
        "from its last finished epoch. When it finishes, its best checkpoint (by validation mAP) is indexed "
        "against the gallery and becomes selectable in every tab under the job's name. Only checkpoints "
        "trained on the gallery's attributes (a synthetic dataset) can serve the gallery. One job at a time: "
        "a launch while a job trains is refused."
    ),
    "results": (
        "**How to read this.** Measured: retrieval mAP (%) per attribute on the embedded gallery's test split "
        "with the exact protocol of the papers (docs/PROTOCOL.md), beside a random embedding on the same split, and "
        "below it each value's 95% bootstrap interval over the test queries. "
        "Published: the overall numbers of the papers on the real benchmarks (224 px, ImageNet-pretrained "
        "backbones, GPU training). The embedded models are small heads on a frozen ImageNet EfficientNet-Lite0 at "
        "160 px, trained on synthetic garments on a CPU: compare models with each other and with random, not "
        "with the published values."
    ),
}


def _intervals_markdown(measured: dict[str, dict], attrs: list[str]) -> str:
    """The 95% bootstrap intervals of each measured result (``MAPResult.to_json``), as a Markdown table."""
    def cell(ci) -> str:
        return f"{ci[0]:.1f}-{ci[1]:.1f}" if ci else "no query"

    lines = ["**95% intervals** (bootstrap over the test queries, resampled within each attribute, 2000 "
             "resamples, seed 0: the range the mAP could take with other queries of the same kind). With a "
             "few queries per attribute they are wide. Overlapping intervals do not settle whether two models "
             "differ: `profashion compare` tests the difference query by query.", "",
             "| model | " + " | ".join(attrs) + " | overall |", "|---" * (len(attrs) + 2) + "|"]
    for name, r in measured.items():
        per = r.get("per_attribute_ci95")
        if per is None or "ci95" not in r:
            lines.append(f"| {name} | " + " | ".join("" for _ in attrs)
                         + " | measured before intervals existed: delete the app cache's results/ to re-measure |")
            continue
        lines.append(f"| {name} | " + " | ".join(cell(per.get(a)) for a in attrs) + f" | {cell(r['ci95'])} |")
    return "\n".join(lines)


def _path_of(value) -> str | None:
    """The file path of an image input given raw (preprocess=False): a FileData dict, a path or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("path")
    if isinstance(value, str):
        return value
    return getattr(value, "path", None)


def _error(exc: Exception) -> gr.Error:
    msg = str(exc).strip() or type(exc).__name__
    return gr.Error(msg[0].upper() + msg[1:] if msg else msg, print_exception=False)


def _df(rows: list[list], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


# A click on a point of an SVG scatter (event delegation: survives every re-render) -> a "click" event whose
# data carries the point's gallery item id.
POINT_CLICK_JS = """
element.addEventListener('click', (e) => {
  const c = e.target.closest('circle[data-item]');
  if (c) { trigger('click', {item: parseInt(c.dataset.item, 10), plot: c.dataset.plot}); }
});
"""

# A click on a result of the comparison grid or on a curated example -> a "click" event with its item id or the
# example's index (event delegation: survives every re-render of the HTML).
ITEM_CLICK_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-item],[data-example]');
  if (!b) return;
  if (b.dataset.example !== undefined) { trigger('click', {example: parseInt(b.dataset.example, 10)}); }
  else { trigger('click', {item: parseInt(b.dataset.item, 10)}); }
});
"""

STALE = {
    "retrieve": "⚠️ **Out of date**: these results are for an earlier query, attribute or model choice; they refresh "
                "when this tab is open (or press Retrieve).",
    "explore": "⚠️ **Out of date**: these maps are for an earlier query, attribute or model choice; they refresh "
               "when this tab is open (or press the button).",
    "embeddings": "⚠️ **Out of date**: these plots are for an earlier attribute or model; they refresh when this "
                  "tab is open (or press the button).",
}
MARKS = {True: ("hit", "✓ hit"), False: ("miss", "✗ miss"), None: ("unknown", "? unknown")}


def file_url(path) -> str:
    """The URL under which Gradio itself serves a file it may serve (the gallery folder given to
    ``set_static_paths``/``allowed_paths``, its upload cache): the form gr.Gallery and gr.Image use, relative to
    the page so that it holds under a proxy's root path too."""
    from gradio_client.utils import encode_file_path

    return "gradio_api/file=" + encode_file_path(str(path))


def comparison_html(query: dict, rows: list[dict]) -> str:
    """The Retrieve comparison: the query pinned at the left (top on a phone), then one row per model, its name and
    hit count at the row's start and its top-k beside it, each with its thumbnail (at most its native size), its
    value, rank and score written under or beside it and hit/miss in words as well as in the frame's colour.
    ``query``: url, who, attribute, value; ``rows``: name, label, summary, error, hits (item, rank, score, value,
    match, url)."""
    e = html_escape
    compact = len(rows) > 5  # six or more models: smaller thumbnails, text beside them, all rows in one screen
    out = [f'<div class="pf-cmp{" pf-compact" if compact else ""}" data-models="{len(rows)}">',
           f'<figure class="pf-query"><img src="{e(query["url"])}" alt="the query image">'
           f'<figcaption><b>Query</b> {e(query["who"])}<br>{e(query["attribute"].replace("_", " "))}: '
           f'<b>{e(query["value"] or "unknown")}</b></figcaption></figure>', '<div class="pf-rows">']
    for r in rows:
        out.append(f'<div class="pf-row" data-model="{e(r["name"])}"><div class="pf-name"><b>{e(r["label"])}</b>'
                   f'<span>{e(r["summary"])}</span></div>')
        if r.get("error"):
            out.append(f'<div class="pf-error">{e(r["error"])}</div>')
        for h in r.get("hits", []):
            cls, mark = MARKS[h["match"]]
            tip = (f'{r["label"]}, rank {h["rank"]}: item {h["item"]}, {query["attribute"]} = {h["value"] or "?"}, '
                   f'score {h["score"]:.4f}, {mark[2:]}; click to query it')
            out.append(f'<button type="button" class="pf-item pf-{cls}" data-item="{int(h["item"])}" title="{e(tip)}" '
                       f'aria-label="{e(tip)}"><span class="pf-img"><img src="{e(h["url"])}" alt=""></span>'
                       f'<span class="pf-txt"><span class="pf-mark">{mark}</span>'
                       f'<span class="pf-val">{e(h["value"] or "?")}</span>'
                       f'<span class="pf-score">#{h["rank"]} · {h["score"]:.3f}</span></span></button>')
        out.append("</div>")
    out.append("</div></div>")
    return "".join(out)


def examples_html(examples) -> str:
    """The curated examples as buttons (image, attribute, value on two short lines), in the catalog's order."""
    e = html_escape
    out = ['<div class="pf-examples">']
    for i, ex in enumerate(examples):
        attr, _, value = ex.caption.partition(": ")
        out.append(f'<button type="button" class="pf-ex" data-example="{i}" title="{e(ex.caption)} (item {ex.item})" '
                   f'aria-label="Example {i + 1}: {e(ex.caption)}"><img src="{e(file_url(ex.path))}" alt="">'
                   f'<span class="pf-ex-attr">{e(attr)}</span><span class="pf-ex-val">{e(value)}</span></button>')
    out.append("</div>")
    return "".join(out)


# --------------------------------------------------------------------------------------------------


def _job_manager(catalog: Catalog, jobs: JobManager | None) -> JobManager:
    """The app's job manager (jobs root and data roots by default from the environment and the cache); a
    finished job's best checkpoint is indexed in the background and joins the catalog under the job's id."""
    import threading

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


def _curves(records: list[dict]):
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


def build_demo(catalog: Catalog, jobs: JobManager | None = None) -> gr.Blocks:
    """The app for a loaded (or not yet loaded) catalog; ``jobs`` runs the fine-tuning tab's jobs."""
    from profashion.models.base import available_models
    from profashion.train.config import preset_schedule as schedule

    if catalog.dataset is None:
        catalog.load()
    jobs = _job_manager(catalog, jobs)
    gr.set_static_paths([str(catalog.gallery_root)])  # gallery images are served as they are, not copied
    names = catalog.names
    labels = [(catalog.models[n].label, n) for n in names]
    attrs = catalog.attributes
    first_example = catalog.examples[0].path if catalog.examples else None
    # the landing page queries the first example for the attribute it illustrates
    default_attr = (catalog.examples[0].attribute if catalog.examples else
                    "colour" if "colour" in attrs else (attrs[0] if attrs else None))
    empty = catalog.empty_message()

    # -- event functions -------------------------------------------------------------------------------
    def retrieve(query, attribute, models):
        path = _path_of(query)
        try:
            results, item = catalog.search(path, attribute, models, k=K)
        except (QueryError, GalleryIndexError, ImageError, DatasetError) as exc:
            raise _error(exc) from None
        a = catalog.attribute_index(attribute)
        qv = catalog.query_value(item, a)
        gallery, rows, hits, lines, grid_rows = [], [], [], [], []
        for name, r in results.items():
            label = catalog.models[name].label if name in catalog.models else name
            if r.error:
                lines.append(f"- **{name}**: {r.error}")
                grid_rows.append({"name": name, "label": label, "summary": "failed", "error": r.error, "hits": []})
                continue
            cells = []
            for h in r.hits:
                mark = {True: "✓", False: "✗", None: "?"}[h.match]
                thumb = catalog.thumbnail(h.item, h.match)
                gallery.append((thumb, f"{name} #{h.rank} {h.score:.3f} {h.value or '?'} {mark}"))
                rows.append([name, h.rank, round(h.score, 4), h.value or "", mark, h.item])
                hits.append(h.item)
                cells.append({"item": int(h.item), "rank": h.rank, "score": float(h.score), "value": h.value,
                              "match": h.match, "url": file_url(thumb)})
            known = [h.match for h in r.hits if h.match is not None]
            hit_s = f"{sum(known)}/{len(known)} hits" if known else "hits unknown"
            lines.append(f"- **{name}**: {hit_s}, query embedded in {r.embed_ms:.0f} ms, searched in {r.search_ms:.1f} ms")
            grid_rows.append({"name": name, "label": label, "summary": hit_s, "hits": cells})
        who = f"gallery item #{item}" if item is not None else "an uploaded image"
        value = f", whose {attribute} is **{qv}**" if qv else " (its value is unknown, so hits are not marked)"
        status = f"Query: {who}{value}.\n\n" + "\n".join(lines)
        table = _df(rows, ["model", "rank", "score", "value", "hit", "item"])
        grid = comparison_html({"url": file_url(path), "who": f"#{item}" if item is not None else "(upload)",
                                "attribute": attribute, "value": qv}, grid_rows)
        return gallery, table, status, {"hits": hits, "html": grid}

    def pick_result(evt: gr.EventData):
        data = evt._data if isinstance(evt._data, dict) else {}
        if data.get("item") is None:
            raise gr.Error("click on a result to make it the next query")
        item = int(data["item"])
        if not (0 <= item < catalog.num_items):
            raise gr.Error("that result is no longer available; run the search again")
        vals = catalog.item_values(item)
        text = f"**Item #{item}** (now the query): " + ", ".join(f"{k}: {v}" for k, v in vals.items())
        return catalog.item_path(item), text

    def pick_example(evt: gr.EventData):
        data = evt._data if isinstance(evt._data, dict) else {}
        i = data.get("example")
        if i is None or not (0 <= int(i) < len(catalog.examples)):
            raise gr.Error("unknown example")
        ex = catalog.examples[int(i)]
        return ex.path, ex.attribute

    def explore(query, attribute, models):
        path = _path_of(query)
        try:
            models = catalog.check_models(models)
            catalog.attribute_index(attribute)
            p, img = catalog.decode_query(path)  # decoded once for every model
        except (QueryError, ImageError, DatasetError) as exc:
            raise _error(exc) from None
        item = catalog.identify(p)
        strips, rows, lines = [], [], []
        share = None
        for name in models:
            try:
                ex = catalog.explain(name, str(p), attribute, item, image=img)
            except (ValueError, RuntimeError, QueryError) as exc:
                lines.append(f"- **{name}**: its maps could not be computed ({exc})")
                continue
            share = ex.mask_share if ex.mask_share is not None else share
            label = catalog.models[name].label
            strips.append((strip(ex.panels, title=label), label))
            for pnl in ex.panels:
                if pnl.localisation is not None:
                    rows.append([name, pnl.key, round(pnl.localisation, 1), round(ex.mask_share, 1),
                                 "yes" if pnl.pointing else "no"])
            if ex.numbers:
                lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v:.3g}" for k, v in ex.numbers.items()))
            meanings = [f"  - *{pnl.key}*: {pnl.about}" for pnl in ex.panels
                        if pnl.about and pnl.kind not in ("image", "mask", "selection")]
            if meanings:  # each map's kind and sentence come from the model's Explanation
                lines.append(f"- **{name}**, what its maps show:\n" + "\n".join(meanings))
            if ex.note and ex.note not in "\n".join(lines):
                lines.insert(0, f"_{ex.note[0].upper() + ex.note[1:]}._")
        who = f"gallery item #{item}" if item is not None else "an uploaded image"
        head = f"Query: {who}, attribute **{attribute}**."
        if share is not None:
            head += f" The ground-truth region covers {share:.1f}% of the model input (what a uniform map scores)."
        table = _df(rows, ["model", "map", "in region %", "uniform %", "max inside"])
        return strips, table, head + "\n\n" + "\n".join(lines)

    def _projection(name, attribute, method, plot_id):
        if not name:
            return "", "_no model chosen_"
        proj = catalog.projection(name, attribute, method)
        label = "t-SNE" if method == "tsne" else "UMAP"
        svg = scatter_svg(proj.xy, proj.values, proj.value_names, proj.items,
                          title=f"{catalog.models[name].label}: {proj.attribute} ({label})", plot_id=plot_id)
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}%"  # noqa: E731
        sil = "n/a" if proj.silhouette is None else f"{proj.silhouette:.3f}"
        md = (f"**{catalog.models[name].label}**, {proj.attribute}, {method}: kNN accuracy **{fmt(proj.knn_accuracy)}** "
              f"(chance {fmt(proj.chance)}), silhouette **{sil}**, {len(proj.items)} points"
              + (" (cached)" if proj.cached else ""))
        return svg, md

    def embeddings(model_a, model_b, attribute, method):
        try:
            catalog.check_models([m for m in (model_a, model_b) if m] or [None])
            pa, ma = _projection(model_a, attribute, method, "a")
            pb, mb = _projection(model_b, attribute, method, "b")
        except (QueryError, GalleryIndexError, DatasetError) as exc:
            raise _error(exc) from None
        return pa, ma, pb, mb

    def neighbours(model_a, model_b, attribute, item):
        try:
            chosen = catalog.check_models([m for m in (model_a, model_b) if m] or [None])
            if item is None:
                raise QueryError("no item id: click a point of a plot or type a gallery item id")
            item = int(item)
            a = catalog.attribute_index(attribute)
            out, lines = [], []
            for name in dict.fromkeys(chosen):
                nn = catalog.neighbours(name, attribute, item, K)
                qv = catalog.query_value(item, a)
                same = 0
                for rank, (j, s) in enumerate(nn, start=1):
                    v = catalog.query_value(j, a)
                    match = None if v is None or qv is None else v == qv
                    same += bool(match)
                    out.append((catalog.thumbnail(j, match), f"{name} #{rank} item {j} {s:.3f} {v or '?'}"))
                lines.append(f"- **{name}**: {same}/{len(nn)} neighbours share the value")
        except (QueryError, GalleryIndexError, DatasetError, ImageError, ValueError, TypeError) as exc:
            raise _error(exc) from None
        vals = catalog.item_values(item)
        head = f"**Item #{item}**: {attribute} = {vals.get(attribute, 'unknown')}\n\n" + "\n".join(lines)
        return catalog.item_path(item), out, head

    def results(models):
        from profashion.evaluation.retrieval_map import evaluate_random

        try:
            chosen = catalog.check_models(models)
        except QueryError as exc:
            raise _error(exc) from None
        rows, measured = [], {}
        for name in chosen:
            r = measured[name] = catalog.measured(name)
            rows.append([name] + [round(r["per_attribute"][a], 2) if a in r["per_attribute"] else None for a in attrs]
                        + [round(r["overall"], 2)])
        rnd = measured["random (seed 0)"] = evaluate_random(catalog.dataset, split="test", seed=0).to_json(
            catalog.dataset.schema)
        rows.append(["random (seed 0)"] + [round(rnd["per_attribute"][a], 2) if a in rnd["per_attribute"] else None
                                           for a in attrs] + [round(rnd["overall"], 2)])
        table = _df(rows, ["model", *attrs, "overall"])
        nq = rnd["n_queries"]
        md = (f"Test split of the embedded gallery (`{catalog.dataset.root.name}`), "
              f"{sum(nq.values())} queries ({', '.join(f'{a} {n}' for a, n in nq.items())}).")
        return table, md + "\n\n" + _intervals_markdown(measured, attrs)

    # -- fine-tuning -------------------------------------------------------------------------------------
    def _model_choices():
        return [(e.label, n) for n, e in catalog.models.items()]

    def _job_choices():
        return [(f"{j['id']} ({j['status']})", j["id"]) for j in jobs.list()]

    def _job_view(job_id, plot: bool = True):
        """(record, status markdown, log tail, loss curve, mAP curve) of a job; empty when none is chosen."""
        if not job_id:
            return {}, "_No job chosen: launch one, or pick one from the list._", "", _curves([]) if plot else None
        job = jobs.get(job_id)
        records = jobs.metrics(job_id)
        done = len(records)
        total = jobs.total_epochs(job)
        status = job["status"] + (f" ({job['reason']})" if job.get("reason") else "")
        lines = [f"**Job {job_id}**: {job['model']} on `{jobs.public(job['dataset'])}`, preset {job['preset']}",
                 f"**Status: {status}**; epochs done {done}" + (f"/{total}" if total else "")]
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
        record = {**jobs.public_json(job), "epochs_done": done, "epochs_total": total, "metrics": records,
                  "checkpoint_model": job_id if job_id in catalog.models else None}
        return (record, "\n\n".join(lines), jobs.public(jobs.log(job_id)), _curves(records) if plot else None)

    def _guard(fn, *args):
        try:
            return fn(*args)
        except (JobError, QueryError) as exc:
            raise _error(JobError(jobs.public(str(exc)))) from None

    def launch_job(model, dataset, preset, epochs, triplets, batch, warmup, attributes, frozen, model_config):
        job = _guard(jobs.launch, model, dataset, preset or "demo", epochs, triplets, batch, warmup, attributes,
                     bool(frozen), model_config)
        return (gr.update(choices=_job_choices(), value=job["id"]), *_guard(_job_view, job["id"]))

    def job_status(job_id):
        return _guard(_job_view, job_id)

    def stop_job(job_id):
        _guard(jobs.stop, job_id)
        return _guard(_job_view, job_id)

    def resume_job(job_id):
        _guard(jobs.resume, job_id)
        return _guard(_job_view, job_id)

    def list_jobs():
        return [{k: j.get(k) for k in ("id", "model", "dataset", "preset", "status", "reason", "created")}
                for j in jobs.list()]

    def tick(job_id, seen, ticked):
        """The timer: the job list, the chosen job's view, and the model choices when the catalog changed."""
        seen = dict(seen or {})
        choices = _job_choices()
        ids = [c[1] for c in choices]
        if job_id not in ids:
            job_id = ids[0] if ids else None
        job_update = gr.update(choices=choices, value=job_id) if (choices != seen.get("jobs")
                                                                   or job_id != seen.get("job")) else gr.skip()
        try:
            view = _job_view(job_id, plot=False)
        except JobError:
            view = ({}, "_That job is gone; pick another._", "", None)
        n = len((view[0] or {}).get("metrics") or [])
        key = (job_id, view[1], view[2], n)
        if key == tuple(seen.get("view") or ()):
            view_out = tuple(gr.skip() for _ in view)
        else:  # the figure is drawn only when the epochs changed
            same_curve = (job_id, n) == tuple((seen.get("view") or [None] * 4)[::3])
            view_out = (*view[:3], gr.skip() if same_curve else _curves((view[0] or {}).get("metrics") or []))
        names_now = list(catalog.models)
        if names_now != seen.get("names"):
            mc = _model_choices()
            new = [n for n in names_now if n not in (seen.get("names") or [])]  # a new model is ticked at once
            value = [n for n in dict.fromkeys([*(ticked or []), *new]) if n in names_now]
            models_out = (gr.update(choices=mc, value=value), gr.update(choices=mc), gr.update(choices=mc))
        else:
            models_out = (gr.skip(), gr.skip(), gr.skip())
        seen.update(jobs=choices, job=job_id, view=list(key), names=names_now)
        return (job_update, *view_out, *models_out, seen)

    def on_preset(preset, model):
        p = schedule(model, preset)
        return p["epochs"], p["triplets_per_epoch"], p["batch_size"], p["warmup_steps"]

    # -- layout ------------------------------------------------------------------------------------------
    from profashion.evaluation.retrieval_map import PUBLISHED, PUBLISHED_NOTES, PUBLISHED_SOURCES

    loaded_as: dict[str, list[str]] = {}
    for n, e in catalog.models.items():
        if e.published_name:
            loaded_as.setdefault(e.published_name, []).append(n)
    datasets = ["FashionAI", "DARN", "DeepFashion", "Zappos50K"]
    published = _df([[m] + [PUBLISHED[m].get(d) for d in datasets] + [", ".join(loaded_as.get(m, []))]
                     for m in PUBLISHED], ["method", *datasets[:3], "Zappos50K (triplet acc.)", "loaded here as"])
    sources = ("**Sources.** " + "; ".join(f"{k}: {v}" for k, v in PUBLISHED_SOURCES.items())
               + ". Compiled in docs/PROTOCOL.md (overall test mAP, %). " + " ".join(PUBLISHED_NOTES))
    model_lines = [f"- **{e.label}**: {e.describe()}" for e in catalog.models.values()]
    model_lines += [f"- ~~{e.name}~~: {e.error}" for e in catalog.skipped]

    with gr.Blocks(title="ProFashion Explorer") as demo:
        gr.Markdown("# ProFashion Explorer\nAttribute-specific fashion retrieval: pick a query and an attribute, "
                    "and see what each model retrieves, where it looks, and how its embedding space is organised.")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                query = gr.Image(value=first_example, type="filepath", label="Query image (upload or pick an example)",
                                 elem_id="query-upload", sources=["upload", "clipboard"], height=240)
            with gr.Column(scale=3):
                gr.Markdown("**Examples** from the synthetic gallery, each for the attribute it shows: click one to "
                            "query it with that attribute.")
                examples = gr.HTML(examples_html(catalog.examples), js_on_load=ITEM_CLICK_JS, elem_id="examples")
                with gr.Row():
                    attribute = gr.Dropdown(attrs, value=default_attr, label="Attribute", elem_id="attribute")
                    models = gr.CheckboxGroup(labels, value=names, label="Models", elem_id="models")
        with gr.Tabs():
            with gr.Tab("Retrieve", id="retrieve") as retrieve_tab:
                if empty:
                    gr.Markdown(f"### No model to show\n{empty}", elem_id="no-models")
                gr.Markdown(NOTES["retrieve"])
                retrieve_btn = gr.Button("Retrieve", variant="primary")
                retrieve_stale = gr.Markdown(elem_id="retrieve-stale")
                grid = gr.HTML("", js_on_load=ITEM_CLICK_JS, elem_id="retrieve-grid", min_height=0)
                inspect = gr.Markdown()
                status = gr.Markdown(elem_id="retrieve-status")
                # the API's outputs (gr.Gallery of framed thumbnails with captions); the page shows the grid
                result_gallery = gr.Gallery(label="Top-5 per model", columns=K, height="auto", allow_preview=False,
                                            elem_id="results", visible=False)
                result_table = gr.Dataframe(label="Every hit", interactive=False, elem_id="results-table")
                hits_state = gr.State({"hits": [], "html": ""})
            with gr.Tab("Explore", id="explore") as explore_tab:
                gr.Markdown(NOTES["explore"])
                explore_btn = gr.Button("Explain the query", variant="primary")
                explore_stale = gr.Markdown(elem_id="explore-stale")
                explore_md = gr.Markdown()
                strips = gr.Gallery(label="Maps per model", columns=1, height="auto", object_fit="contain",
                                    elem_id="explore-maps")
                loc_table = gr.Dataframe(label="Localisation against the ground-truth region", interactive=False)
            with gr.Tab("Embeddings", id="embeddings") as embeddings_tab:
                gr.Markdown(NOTES["embeddings"])
                with gr.Row():
                    model_a = gr.Dropdown(labels, value=names[0] if names else None, label="Model A",
                                          allow_custom_value=True)  # fine-tuned models join later
                    model_b = gr.Dropdown(labels, value=names[-1] if names else None, label="Model B",
                                          allow_custom_value=True)
                    method = gr.Radio(METHOD_CHOICES, value="tsne", label="Projection")
                embed_btn = gr.Button("Project the gallery", variant="primary")
                embed_stale = gr.Markdown(elem_id="embeddings-stale")
                with gr.Row():
                    with gr.Column():
                        plot_a = gr.HTML("", js_on_load=POINT_CLICK_JS, elem_id="scatter-a", min_height=200)
                        md_a = gr.Markdown()
                    with gr.Column():
                        plot_b = gr.HTML("", js_on_load=POINT_CLICK_JS, elem_id="scatter-b", min_height=200)
                        md_b = gr.Markdown()
                with gr.Row():
                    item_box = gr.Number(value=catalog.examples[0][0] if catalog.examples else 0, precision=0,
                                         minimum=0, maximum=max(0, catalog.num_items - 1), label="Gallery item id")
                    nn_btn = gr.Button("Show its nearest neighbours")
                with gr.Row():
                    item_image = gr.Image(label="Item", height=200, interactive=False)
                    with gr.Column(scale=3):
                        nn_md = gr.Markdown()
                        nn_gallery = gr.Gallery(label="Nearest neighbours (model A, then model B)", columns=K,
                                                height="auto", allow_preview=False)
            with gr.Tab("Fine-tune", id="finetune") as finetune_tab:
                gr.Markdown(NOTES["finetune"])
                hw = ("**This machine has a GPU**: the paper presets (pretrained backbones, ~100k triplets per "
                      "epoch) are offered beside the demo preset." if jobs.gpu else
                      "**This machine has no GPU**: only the demo preset (small heads on a frozen, cached ImageNet "
                      "EfficientNet-Lite0, minutes on a CPU) is offered, and frozen-trunk training for the ViT "
                      "models (cca1, cca2, tf-csn, tf-asen: the trunk's features are computed once and only the "
                      "head trains).")
                roots = ", ".join(f"`{jobs.public(str(r))}`" for r in jobs.data_roots)
                gr.Markdown(f"{hw} Datasets are taken from the allowed data roots only: {roots}.")
                if not jobs.enabled:
                    gr.Markdown(f"**{TRAINING_OFF[0].upper() + TRAINING_OFF[1:]}.**", elem_id="training-off")
                datasets = jobs.datasets()
                all_models = available_models()
                demo_p = schedule("asen" if "asen" in all_models else all_models[0], "demo")
                with gr.Row():
                    ft_model = gr.Dropdown(all_models, value="asen" if "asen" in all_models else all_models[0],
                                           label="Model", elem_id="ft-model")
                    ft_dataset = gr.Dropdown(datasets, value=datasets[0][1] if datasets else None,
                                             allow_custom_value=True, label="Dataset folder (pick or type a path)",
                                             elem_id="ft-dataset", scale=2)
                    ft_preset = gr.Dropdown(jobs.presets(), value="demo", label="Preset", elem_id="ft-preset")
                with gr.Row():
                    ft_epochs = gr.Number(demo_p["epochs"], precision=0, minimum=1, label="Epochs",
                                          elem_id="ft-epochs")
                    ft_triplets = gr.Number(demo_p["triplets_per_epoch"], precision=0, minimum=1,
                                            label="Triplets per epoch", elem_id="ft-triplets")
                    ft_batch = gr.Number(demo_p["batch_size"], precision=0, minimum=1, label="Batch size",
                                         elem_id="ft-batch")
                    ft_warmup = gr.Number(demo_p["warmup_steps"], precision=0, minimum=0, label="Warm-up steps",
                                          elem_id="ft-warmup")
                with gr.Row():
                    ft_attrs = gr.Textbox(label="Attributes (comma-separated; empty = all)", elem_id="ft-attrs")
                    ft_config = gr.Textbox(label="Model config overrides (JSON, optional)",
                                           placeholder='{"image_size": 48, "resize": 48}', elem_id="ft-config")
                    ft_frozen = gr.Checkbox(False, label="Frozen trunk (ViT models)", elem_id="ft-frozen")
                launch_btn = gr.Button("Launch the job", variant="primary", elem_id="launch-job", interactive=jobs.enabled)
                with gr.Row():
                    job_choices = _job_choices()
                    job_dd = gr.Dropdown(job_choices, value=job_choices[0][1] if job_choices else None,
                                         label="Jobs (newest first)", elem_id="job-list", scale=3,
                                         allow_custom_value=True)
                    refresh_btn = gr.Button("Refresh", elem_id="job-refresh")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="job-stop", interactive=jobs.enabled)
                    resume_btn = gr.Button("Resume", elem_id="job-resume", interactive=jobs.enabled)
                job_md = gr.Markdown(elem_id="job-status")
                curve_plot = gr.Plot(label="Training loss and validation mAP per epoch", elem_id="job-curves")
                job_log = gr.Textbox(label="Log (last 40 lines)", lines=12, max_lines=12, interactive=False,
                                     autoscroll=True, elem_id="job-log")
                job_json = gr.JSON(visible=False)
            with gr.Tab("Results", id="results") as results_tab:
                gr.Markdown(NOTES["results"])
                results_btn = gr.Button("Measure mAP of the selected models", variant="primary")
                results_md = gr.Markdown()
                measured = gr.Dataframe(label="Measured mAP (%) on the embedded gallery", interactive=False)
                gr.Dataframe(value=published, label="Published overall mAP (%) on the real benchmarks",
                             interactive=False)
                gr.Markdown(sources)
                gr.Markdown("**Models loaded** (from `" + str(catalog.checkpoints_root) + "`)\n\n"
                            + ("\n".join(model_lines) or "_none_"))

        # outside the tabs: an inactive tab is not rendered, and the timer must tick on every tab (model lists)
        seen_state = gr.State({"names": names})
        view_state = gr.State({"tab": "retrieve", "shown": {}})
        timer = gr.Timer(2.0)

        # -- events ------------------------------------------------------------------------------------
        q_inputs = [query, attribute, models]
        r_outputs = [result_gallery, result_table, status, hits_state]
        retrieve_ev = retrieve_btn.click(retrieve, q_inputs, r_outputs, api_name="retrieve", preprocess=False,
                                         concurrency_id="query", concurrency_limit=2)
        explore_ev = explore_btn.click(explore, q_inputs, [strips, loc_table, explore_md], api_name="explore", preprocess=False,
                          concurrency_id="query", concurrency_limit=2)
        embed_ev = embed_btn.click(embeddings, [model_a, model_b, attribute, method], [plot_a, md_a, plot_b, md_b],
                                   api_name="embeddings", concurrency_id="heavy", concurrency_limit=1)
        nn_btn.click(neighbours, [model_a, model_b, attribute, item_box], [item_image, nn_gallery, nn_md],
                     api_name="neighbours", concurrency_id="query", concurrency_limit=2)

        def on_point(model_a, model_b, attribute, evt: gr.EventData):
            item = evt._data.get("item") if isinstance(evt._data, dict) else None
            if item is None:
                raise gr.Error("click on a point of a plot to see that image and its nearest neighbours")
            return (int(item), *neighbours(model_a, model_b, attribute, int(item)))

        for plot in (plot_a, plot_b):
            plot.click(on_point, [model_a, model_b, attribute], [item_box, item_image, nn_gallery, nn_md],
                       api_visibility="private", concurrency_id="query")
        results_btn.click(results, [models], [measured, results_md], api_name="results", concurrency_id="heavy",
                          concurrency_limit=1)
        # fine-tuning
        view_out = [job_json, job_md, job_log, curve_plot]
        launch_btn.click(launch_job, [ft_model, ft_dataset, ft_preset, ft_epochs, ft_triplets, ft_batch, ft_warmup,
                                      ft_attrs, ft_frozen, ft_config], [job_dd, *view_out], api_name="launch_job",
                         concurrency_id="jobs", concurrency_limit=1, preprocess=False)  # jobs.launch checks the raw values
        refresh_btn.click(job_status, [job_dd], view_out, api_name="job_status", concurrency_id="tick",
                          concurrency_limit=4)
        stop_btn.click(stop_job, [job_dd], view_out, api_name="stop_job", concurrency_id="jobs")
        resume_btn.click(resume_job, [job_dd], view_out, api_name="resume_job", concurrency_id="jobs")
        gr.Button(visible=False).click(list_jobs, None, gr.JSON(visible=False), api_name="list_jobs",
                                       concurrency_id="tick")
        # private events after the public ones, which keep their api_names
        timer.tick(tick, [job_dd, seen_state, models], [job_dd, *view_out, models, model_a, model_b, seen_state],
                   api_visibility="private", concurrency_id="tick", show_progress="hidden")
        job_dd.input(job_status, [job_dd], view_out, api_visibility="private", concurrency_id="tick")
        for chooser in (ft_preset, ft_model):  # the schedule shown is the chosen model's preset record
            chooser.input(on_preset, [ft_preset, ft_model], [ft_epochs, ft_triplets, ft_batch, ft_warmup],
                          api_visibility="private")
        # Views follow the query: each tab remembers the choices its view was computed for (view_state["shown"]).
        # A change of query, attribute or models (or of Embeddings' own choices) first marks every view computed
        # for other choices "out of date" with a banner, then recomputes the open tab's view (which clears its
        # banner); opening a tab whose view is out of date recomputes it. Views never computed show no banner.
        v_inputs = [view_state, query, attribute, models, model_a, model_b, method]
        banners = [retrieve_stale, explore_stale, embed_stale]
        v_outputs = [view_state, *r_outputs, grid, strips, loc_table, explore_md, plot_a, md_a, plot_b, md_b,
                     *banners]

        def _keys(query, attribute, models, model_a, model_b, method) -> dict:
            q = [_path_of(query), attribute, list(models or [])]
            return {"retrieve": q, "explore": q, "embeddings": [attribute, model_a, model_b, method]}

        def _banners(view, keys) -> tuple:
            shown = (view or {}).get("shown") or {}
            return tuple(STALE[t] if shown.get(t) is not None and shown[t] != keys[t] else ""
                         for t in ("retrieve", "explore", "embeddings"))

        def mark_stale(view, *choices):
            return _banners(view, _keys(*choices))

        def refresh(view, tab, query, attribute, models, model_a, model_b, method):
            view = dict(view or {})
            shown = dict(view.get("shown") or {})
            cur = view["tab"] = tab or view.get("tab") or "retrieve"
            keys = _keys(query, attribute, models, model_a, model_b, method)
            r_out, e_out, b_out = (gr.skip(),) * 5, (gr.skip(),) * 3, (gr.skip(),) * 4
            if cur in keys and shown.get(cur) != keys[cur] and (cur == "embeddings" or _path_of(query)) and names:
                if cur == "retrieve":
                    g, t, st, hs = retrieve(query, attribute, models)
                    r_out = (g, t, st, hs, hs["html"])
                elif cur == "explore":
                    e_out = explore(query, attribute, models)
                else:
                    b_out = embeddings(model_a, model_b, attribute, method)
                shown[cur] = keys[cur]
            view["shown"] = shown
            return (view, *r_out, *e_out, *b_out, *_banners(view, keys))

        def shown_now(tab):
            """After a button's public event: its view is now the one of the current choices."""
            def done(view, hits, *choices):
                keys = _keys(*choices)
                view = {**(view or {}), "shown": {**((view or {}).get("shown") or {}), tab: keys[tab]}}
                html = (hits or {}).get("html", "") if tab == "retrieve" else gr.skip()
                return (view, html, *_banners(view, keys))
            return done

        after = [view_state, grid, *banners]
        retrieve_ev.then(shown_now("retrieve"), [view_state, hits_state, *v_inputs[1:]], after,
                         api_visibility="private", preprocess=False)
        explore_ev.then(shown_now("explore"), [view_state, hits_state, *v_inputs[1:]], after,
                        api_visibility="private", preprocess=False)
        embed_ev.then(shown_now("embeddings"), [view_state, hits_state, *v_inputs[1:]], after,
                      api_visibility="private", preprocess=False)
        gr.on([query.change, attribute.change, models.change, model_a.change, model_b.change, method.change],
              mark_stale, v_inputs, banners, api_visibility="private", preprocess=False, queue=False,
              show_progress="hidden").then(
            lambda view, *choices: refresh(view, None, *choices), v_inputs, v_outputs, api_visibility="private",
            preprocess=False, concurrency_id="query", trigger_mode="always_last")
        for tab, name in ((retrieve_tab, "retrieve"), (explore_tab, "explore"), (embeddings_tab, "embeddings"),
                          (finetune_tab, "finetune"), (results_tab, "results")):
            tab.select(lambda view, *choices, _name=name: refresh(view, _name, *choices), v_inputs, v_outputs,
                       api_visibility="private", preprocess=False, concurrency_id="query")
        grid.click(pick_result, None, [query, inspect], api_visibility="private")  # the query's change searches it
        examples.click(pick_example, None, [query, attribute], api_visibility="private")
        if names and first_example:
            demo.load(lambda view, *choices: refresh(view, "retrieve", *choices), v_inputs, v_outputs,
                      api_visibility="private", preprocess=False, concurrency_id="query")
    # A full queue refuses at once ("Queue is full") rather than keeping a visitor a minute: a Retrieve with
    # all eight models costs ~0.6 s of this 2-core machine's CPU, and 2 workers serve no faster than 1 here
    # (benchmarks/load_test.py), so QUEUE_SIZE waiting requests are ~10 s of work.
    demo.queue(max_size=queue_size())
    return demo


# The Explore maps are wide strips, one per model: the gallery's square cells would letterbox and clip them;
# the query image (160 px gallery images) is shown at the size of its box, not at its pixel size.
CSS = """
#explore-maps .grid-container { grid-template-rows: none; grid-auto-rows: auto; }
#explore-maps .thumbnail-item { aspect-ratio: auto; height: auto; }
#explore-maps .thumbnail-lg > img { height: auto; }
#explore-maps .grid-wrap { overflow-y: visible; height: auto !important; max-height: none !important; }
#explore-maps { height: auto !important; max-height: none !important; }
#query-upload img { width: 100%; height: 100%; max-height: 200px; object-fit: contain; }
.pf-cmp, .pf-examples { --t: 128px; font-size: 13px; line-height: 1.25; }
:where(.pf-cmp, .pf-examples) button { all: unset; box-sizing: border-box; cursor: pointer; }
.pf-cmp button:focus-visible, .pf-examples button:focus-visible { outline: 2px solid #2563eb; }
.pf-cmp { display: flex; gap: 12px; align-items: flex-start; }
.pf-cmp.pf-compact { --t: 96px; }
.pf-query { flex: 0 0 132px; margin: 0; position: sticky; top: 8px; }
.pf-query img { display: block; width: 128px; height: 128px; object-fit: contain; border: 3px solid #2563eb;
  box-sizing: border-box; }
.pf-query figcaption { margin-top: 4px; }
.pf-rows { flex: 1; min-width: 0; display: flex; flex-direction: column; gap: 4px; }
.pf-row { display: flex; gap: 8px; align-items: flex-start; padding-top: 4px;
  border-top: 1px solid var(--border-color-primary, #e5e7eb); }
.pf-name { flex: 0 0 104px; display: flex; flex-direction: column; overflow-wrap: anywhere; }
.pf-name b { font-size: 14px; }
.pf-item { display: flex; flex-direction: column; width: var(--t); }
.pf-img { display: flex; width: var(--t); height: var(--t); align-items: center; justify-content: center; }
.pf-img img { max-width: var(--t); max-height: var(--t); width: auto; height: auto; }
.pf-txt { display: flex; flex-direction: column; padding: 2px 0 0 2px; overflow-wrap: anywhere; }
.pf-compact .pf-item { flex-direction: row; width: calc(var(--t) + 86px); }
.pf-compact .pf-txt { width: 82px; padding: 0 0 0 4px; }
.pf-mark { font-weight: 700; }
.pf-hit .pf-mark { color: #15803d; }
.pf-miss .pf-mark { color: #b91c1c; }
.pf-unknown .pf-mark { color: #64748b; }
.pf-score { color: var(--body-text-color-subdued, #6b7280); font-variant-numeric: tabular-nums; }
.pf-error { color: #b91c1c; }
.pf-examples { display: grid; grid-template-columns: repeat(8, minmax(0, 1fr)); gap: 6px; }
.pf-ex { display: flex; flex-direction: column; align-items: center; text-align: center; font-size: 12px;
  padding: 2px; border-radius: 4px; }
.pf-ex:hover, .pf-item:hover { background: var(--background-fill-secondary, #f3f4f6); }
.pf-ex img { width: 88px; height: 88px; object-fit: contain; }
.pf-ex-attr { color: var(--body-text-color-subdued, #6b7280); }
@media (max-width: 720px) {
  .pf-cmp, .pf-cmp.pf-compact { --t: 62px; flex-direction: column; font-size: 11px; }
  .pf-query { position: static; display: flex; gap: 8px; align-items: center; flex: none; }
  .pf-query img { width: 96px; height: 96px; }
  .pf-rows { width: 100%; }
  .pf-row { flex-wrap: wrap; gap: 4px 0; }
  .pf-name { flex: 0 0 100%; flex-direction: row; gap: 8px; }
  .pf-item, .pf-compact .pf-item { flex-direction: column; width: 20%; }
  .pf-compact .pf-txt { width: auto; padding: 2px 0 0 0; }
  .pf-img { width: 100%; box-sizing: border-box; padding: 0 3px; }
  .pf-img img { max-width: 100%; }
  .pf-examples { grid-template-columns: repeat(4, minmax(0, 1fr)); }
  .pf-ex img { width: 64px; height: 64px; }
}
"""


def launch_kwargs(catalog: Catalog) -> dict:
    """What ``demo.launch`` needs beside host and port: the gallery folder may be served, uploads capped, and
    the page's few style rules (Gradio 6 takes ``css`` at launch)."""
    return {"allowed_paths": [str(catalog.gallery_root)], "max_file_size": MAX_UPLOAD_BYTES, "css": CSS}
