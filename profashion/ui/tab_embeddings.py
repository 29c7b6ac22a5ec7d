"""The Embeddings tab: two models' embedding spaces of an attribute, projected to 2-D and explored in the page
(``/embeddings``), and an item's nearest neighbours in both original spaces (``/neighbours``, or a click).

``/embeddings`` returns the explorer's data (a JSON object, :func:`explorer_data`), not a picture: the page
draws it with :mod:`profashion.ui.embeddings_js` (a ``gr.HTML`` component with ``js_on_load``). Hover, click
highlight, box and lasso selection, colour by any attribute and zoom then run in the browser without a request,
because the data carries, for every point, its item's values of every attribute, its image's URL (Gradio's file
route into the gallery folder, never the image itself) and its ``K`` nearest neighbours in the model's full
embedding space (cosine, the same search ``/neighbours`` and Retrieve make).

:func:`warm_projections` computes (and caches on disk, through ``Catalog.projection``) every model x attribute
projection, so that a switch of model pair or attribute only reads caches.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import json
import math
import os
import threading
import time
import weakref
from html import escape as html_escape
from types import SimpleNamespace

import gradio as gr
import numpy as np

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explain.scatter import colour_lists
from profashion.explorer.catalog import GALLERY_SPLIT, Catalog
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.common import (
    K,
    bounded,
    comparison_rows,
    event_data,
    file_url,
    guard,
    model_choices,
    path_of,
)
from profashion.ui.embeddings_js import EXPLORER_CSS, EXPLORER_HTML, EXPLORER_JS, NEIGHBOUR_CLICK_JS
from profashion.ui.tabs import Page, Tab, View, Wired

NOTE = (
    "**How to read this.** Each point is a gallery image in one model's embedding space of the chosen "
    "attribute, projected to 2-D with t-SNE or UMAP and coloured by its true value (or by any other attribute: "
    "*Colour by*). A disentangled model forms one cluster per value. The projection distorts distances (cluster "
    "sizes and gaps between clusters mean little), so judge by the numbers, measured in the full space: kNN "
    "accuracy (5 nearest neighbours, leave-one-out) against chance (the most common value's share) and the "
    "silhouette (-1..1, higher = better separated).\n\n"
    "**Explore.** Hover a point to see its image, value and id. Click it: it and its 5 nearest neighbours in "
    "each model's full, unprojected space are highlighted in both plots (lines join it to them), and its "
    "neighbours are listed below. Drag a box (or a lasso) to select points: the selection is shown in both "
    "plots and as a grid, with its purity (the share of its most common value). Ctrl + wheel, the +/- buttons "
    "or *Zoom box* zoom; *Reset zoom* shows everything again."
)
METHOD_CHOICES = [("t-SNE", "tsne"), ("UMAP", "umap")]
METHOD_LABELS = dict((v, k) for k, v in METHOD_CHOICES)
ERRORS = (QueryError, GalleryIndexError, DatasetError)
NEIGHBOUR_ERRORS = (QueryError, GalleryIndexError, DatasetError, ImageError)
MARKS = {True: ("hit", "✓ same"), False: ("miss", "✗ other"), None: ("unknown", "? unknown")}
# The progress bar of the request this thread serves (set by the button's event, see :func:`reporting`): the
# handler keeps the plain signature the views and the gallery routing of ``common.guard`` call it with.
_PROGRESS = threading.local()
# In memory, what every request would compute again: each model x attribute x method plot (a bounded LRU, filled
# by warm_projections too) and each catalog's gallery (image URLs, values, colours). A switch then only looks up.
PLOT_CACHE_SIZE = 320  # every model x attribute x method of both shipped galleries (8 x (10 + 7) x 2 = 272)
_plots: collections.OrderedDict = collections.OrderedDict()
_galleries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


# -- the explorer's data ---------------------------------------------------------------------------------


def _percent(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def projection_markdown(catalog: Catalog, name: str, proj) -> str:
    """One model's line of numbers: kNN accuracy against chance, silhouette, points (and whether cached)."""
    sil = "n/a" if proj.silhouette is None else f"{proj.silhouette:.3f}"
    return (f"**{catalog.models[name].label}**, {proj.attribute}, {proj.method}: kNN accuracy "
            f"**{_percent(proj.knn_accuracy)}** (chance {_percent(proj.chance)}), silhouette **{sil}**, "
            f"{len(proj.items)} points" + (" (cached)" if proj.cached else ""))


def unit_square(xy: np.ndarray) -> np.ndarray:
    """``xy`` (n, 2) scaled into [0, 1]² with one factor for both axes (no stretch), centred."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if not len(xy):
        return xy
    lo, hi = xy.min(0), xy.max(0)
    span = float((hi - lo).max())
    if span <= 1e-12:
        return np.full_like(xy, 0.5)
    return (xy - (lo + hi) / 2) / span + 0.5


def point_neighbours(catalog: Catalog, name: str, a: int, items: np.ndarray, k: int = K):
    """(ids (n, k), cosine scores (n, k)) of each item's ``k`` nearest gallery items in model ``name``'s space of
    attribute ``a`` (the item itself left out; -1 and NaN pad a gallery of fewer than k + 1 items)."""
    index = catalog.engine.index(name)
    vec = np.asarray(index.embeddings[np.asarray(items, dtype=np.int64), a], dtype=np.float32)
    ids = np.full((len(items), k), -1, np.int64)
    sims = np.full((len(items), k), np.nan, np.float32)
    if not len(items):
        return ids, sims
    s, i = index.search_vectors(vec, a, k + 1)
    for r, item in enumerate(items):
        keep = [(j, x) for j, x in zip(i[r].tolist(), s[r].tolist()) if j >= 0 and j != int(item)][:k]
        ids[r, :len(keep)] = [j for j, _ in keep]
        sims[r, :len(keep)] = [x for _, x in keep]
    return ids, sims


def plot_data(catalog: Catalog, name: str, attribute, method: str, key: str) -> tuple[dict, str]:
    """(one model's plot for the explorer, its markdown): the projection's points (item ids, x, y in [0, 1]),
    each point's ``K`` nearest neighbours in the full space (ids and cosine scores) and the disentanglement
    numbers. Kept in memory (``PLOT_CACHE_SIZE`` plots) per checkpoint, gallery index, attribute and method."""
    a = catalog.attribute_index(attribute)
    catalog.check_models([name])
    entry = catalog.models[name]
    ck = (name, entry.fingerprint, str(entry.index_dir), a, method, catalog.max_points)
    with _cache_lock:
        hit = _plots.get(ck)
        if hit is not None:
            _plots.move_to_end(ck)
    if hit is not None:
        plot, numbers = hit
        return {**plot, "key": key, "cached": True}, projection_markdown(catalog, name, numbers)
    plot, proj = _plot(catalog, name, a, method)
    numbers = SimpleNamespace(attribute=proj.attribute, method=proj.method, knn_accuracy=proj.knn_accuracy,
                              chance=proj.chance, silhouette=proj.silhouette, items=proj.items, cached=True)
    with _cache_lock:
        _plots[ck] = (plot, numbers)
        while len(_plots) > PLOT_CACHE_SIZE:
            _plots.popitem(last=False)
    return {**plot, "key": key}, projection_markdown(catalog, name, proj)


def _plot(catalog: Catalog, name: str, a: int, method: str):
    """(the plot of :func:`plot_data` without its key, the projection), computed."""
    proj = catalog.projection(name, catalog.attributes[a], method)
    items = np.asarray(proj.items, dtype=np.int64)
    ids, sims = point_neighbours(catalog, name, a, items)
    xy = unit_square(proj.xy)
    label = catalog.models[name].label
    plot = {"model": name, "label": label,
            "title": f"{label}: {proj.attribute} ({METHOD_LABELS.get(method, method)})",
            "items": items.tolist(), "x": np.round(xy[:, 0], 4).tolist(), "y": np.round(xy[:, 1], 4).tolist(),
            "nn": ids.tolist(), "sim": [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in sims],
            "knn_accuracy": proj.knn_accuracy, "chance": proj.chance, "silhouette": proj.silhouette,
            "cached": bool(proj.cached)}
    return plot, proj


def _gallery(catalog: Catalog) -> dict:
    """A catalog's gallery as the explorer shows it, computed once: every item's image URL and values, every
    attribute's value names and colours."""
    with _cache_lock:
        hit = _galleries.get(catalog)
    if hit is not None and hit["dataset"]() is catalog.dataset:
        return hit
    schema = catalog.dataset.schema
    colours = [colour_lists(list(v)) for v in schema.values]
    g = {"dataset": weakref.ref(catalog.dataset),
         "urls": [file_url(catalog.item_path(i)) for i in range(catalog.num_items)],
         "values": catalog.dataset.split(GALLERY_SPLIT).known_values(schema.num_attributes),
         "table": {"attributes": list(schema.names), "value_names": [list(v) for v in schema.values],
                   "fills": [c[0] for c in colours], "strokes": [c[1] for c in colours]}}
    with _cache_lock:
        _galleries[catalog] = g
    return g


def gallery_table(catalog: Catalog, items) -> dict:
    """What the explorer shows of gallery items: every attribute's names, values and colours, and per item
    (``items``) its values (value index per attribute, -1 unknown) and image URL (a common prefix + its tail)."""
    g = _gallery(catalog)
    items = sorted({int(i) for i in items if int(i) >= 0})
    urls = [g["urls"][i] for i in items]
    prefix = os.path.commonprefix(urls) if len(urls) > 1 else ""
    return {**g["table"], "url_prefix": prefix,
            "items": {str(i): {"u": u[len(prefix):], "v": g["values"][i].tolist()} for i, u in zip(items, urls)}}


def agreement(plots: list[dict], k: int = K) -> str:
    """How alike two models' neighbourhoods are: the mean number of each item's ``k`` nearest neighbours both
    share, against what two random neighbour sets would share."""
    if len(plots) < 2:
        return ""
    a, b = plots
    nn_b = {i: set(n) - {-1} for i, n in zip(b["items"], b["nn"])}
    shared = [len((set(n) - {-1}) & nn_b[i]) for i, n in zip(a["items"], a["nn"]) if i in nn_b]
    if not shared:
        return ""
    n = len(a["items"])
    chance = k * k / max(1, n - 1)
    return (f"**Neighbourhoods:** an item's {k} nearest neighbours in {a['label']} and in {b['label']} have "
            f"**{np.mean(shared):.2f}** of {k} in common on average (two random sets of {k}: {chance:.2f}); "
            f"{sum(s == k for s in shared)} of {len(shared)} items have the same {k} in both.")


def explorer_data(catalog: Catalog, model_a, model_b, attribute, method, progress=None) -> tuple:
    """(the explorer's data, model A's markdown, model B's markdown, the neighbourhoods' agreement)."""
    chosen = [(m, key) for m, key in ((model_a, "a"), (model_b, "b")) if m]
    catalog.check_models([m for m, _ in chosen] or [None])
    a = catalog.attribute_index(attribute)
    plots, mds = [], {"a": "_no model chosen_", "b": "_no model chosen_"}
    for step, (name, key) in enumerate(chosen):
        if progress is not None:
            progress(step / len(chosen), desc=f"projecting {name}'s {attribute} space ({method})")
        plot, mds[key] = plot_data(catalog, name, attribute, method, key)
        plots.append(plot)
    shown = {i for p in plots for i in p["items"]} | {j for p in plots for row in p["nn"] for j in row}
    data = {"attribute": catalog.attributes[a], "method": method, "k": K, "plots": plots,
            **gallery_table(catalog, shown)}
    return data, mds["a"], mds["b"], agreement(plots)


@contextlib.contextmanager
def reporting(progress):
    """Within it, :func:`embeddings` reports each model's projection to ``progress`` (a ``gr.Progress``)."""
    _PROGRESS.fn = progress
    try:
        yield
    finally:
        _PROGRESS.fn = None


def embeddings(catalog: Catalog, model_a, model_b, attribute, method):
    """``/embeddings``: (the explorer's data as JSON text, model A's markdown, model B's markdown, the agreement
    markdown); a projection not cached yet reports its progress (:func:`reporting`).

    The data goes as one string, which the explorer's script parses: as a dict, Gradio walks it twice per answer
    looking for files (its 2 x 2,302 points, their neighbours and every item's values: 100,000 values), which
    took 0.1-1.5 s of an answer for the product photos (``benchmarks/bench_app.py``); the string is walked once."""
    data, md_a, md_b, agree = explorer_data(catalog, model_a, model_b, attribute, method,
                                            getattr(_PROGRESS, "fn", None))
    return json_text(data), md_a, md_b, agree


def json_text(data) -> str:
    """``data`` as compact JSON text that a browser's ``JSON.parse`` reads: a non-finite number is null."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity somewhere (rare): replaced, as Gradio's own serialiser would
        return json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def warm_projections(catalog: Catalog, methods=("tsne",), log=None) -> dict:
    """Compute (or find cached) every model x attribute x method projection of the catalog and its plot, so the
    tab only reads caches later (the projections on disk, the plots in memory); meant for a background thread at
    start-up. A space that cannot be projected (collapsed,
    no labelled item) is skipped with its reason. Returns counts, seconds and the failures by key."""
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    done = cached = 0
    failed: dict[str, str] = {}
    _gallery(catalog)  # every item's URL and values: 2.3 s for the 2,302 product photos, not the first visitor's wait
    for name in list(catalog.models):
        for attribute in catalog.attributes:
            for method in methods:
                try:
                    plot, md = plot_data(catalog, name, attribute, method, "a")
                except (GalleryIndexError, QueryError, DatasetError, ValueError) as exc:
                    failed[f"{name}/{attribute}/{method}"] = str(exc)
                    log(f"projection {name}/{attribute}/{method} skipped: {exc}")
                    continue
                done += 1
                cached += md.endswith("(cached)")
    seconds = round(time.perf_counter() - t0, 2)
    log(f"projections ready: {done} ({cached} already cached) in {seconds} s, {len(failed)} skipped")
    return {"projections": done, "cached": cached, "computed": done - cached, "failed": failed, "seconds": seconds}


# -- the neighbours panel --------------------------------------------------------------------------------


def neighbours_html(query: dict, rows: list[dict]) -> str:
    """The clicked (or typed) item pinned at the left, then one row per model: its name, how many neighbours
    share the value, and the ``K`` nearest neighbours (thumbnail, same/other value in words, value, rank, cosine
    score), in the Retrieve grid's style. A click on a neighbour makes it the clicked item."""
    e = html_escape
    out = [f'<div class="pf-cmp" data-models="{len(rows)}">',
           f'<figure class="pf-query" data-item="{int(query["item"])}"><img src="{e(query["url"])}" alt="the chosen item">'
           f'<figcaption><b>Item #{int(query["item"])}</b><br>{e(query["attribute"].replace("_", " "))}: '
           f'<b>{e(query["value"] or "unknown")}</b></figcaption></figure>', '<div class="pf-rows">']
    def tip(r, h, mark):
        return (f'{r["label"]}, neighbour {h["rank"]}: item {h["item"]}, {query["attribute"]} = '
                f'{h["value"] or "?"}, cosine {h["score"]:.4f}; click to explore it')

    out += comparison_rows(rows, MARKS, tip)
    out.append("</div></div>")
    return "".join(out)


def item_id(catalog: Catalog, item) -> int:
    """A gallery item id as sent (a whole number, or its digits as text), or one sentence: never Python's own
    message, which would echo the value."""
    if isinstance(item, float) and item.is_integer():
        item = int(item)
    elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit() and len(item.strip()) <= 9:
        item = int(item.strip())
    if isinstance(item, bool) or not isinstance(item, int):
        raise QueryError(f"the item is a gallery item id: a whole number from 0 to {catalog.num_items - 1}")
    return item


def neighbours(catalog: Catalog, model_a, model_b, attribute, item):
    """``/neighbours``: (the item and its ``K`` nearest neighbours in each chosen model as HTML, a markdown
    summary)."""
    chosen = catalog.check_models([m for m in (model_a, model_b) if m] or [None])
    if item is None or item == "":
        raise QueryError("no item id: click a point of a plot or type a gallery item id")
    item = item_id(catalog, item)
    a = catalog.attribute_index(attribute)
    qv = catalog.query_value(item, a) if 0 <= item < catalog.num_items else None
    rows, lines = [], []
    for name in dict.fromkeys(chosen):
        nn = catalog.neighbours(name, attribute, item, K)
        hits = []
        for rank, (j, s) in enumerate(nn, start=1):
            v = catalog.query_value(j, a)
            hits.append({"item": j, "rank": rank, "score": s, "value": v,
                         "match": None if v is None or qv is None else v == qv,
                         "url": file_url(catalog.item_path(j))})
        same = sum(bool(h["match"]) for h in hits)
        summary = f"{same}/{len(hits)} share the value"
        rows.append({"name": name, "label": catalog.models[name].label, "summary": summary, "hits": hits})
        lines.append(f"- **{catalog.models[name].label}**: {same}/{len(hits)} neighbours share the value")
    name = catalog.attributes[a]
    query = {"item": item, "url": file_url(catalog.item_path(item)), "attribute": name, "value": qv}
    head = f"**Item #{item}**: {name} = {qv or 'unknown'}\n\n" + "\n".join(lines)
    return neighbours_html(query, rows), head


def clicked_item(data: dict) -> int:
    """The gallery item id a click on a scatter point (or on a neighbour) sent."""
    item = data.get("item")
    if item is None:
        raise QueryError("click on a point of a plot to see that image and its nearest neighbours")
    return int(item)


def default_gallery(event) -> str | None:
    """The default of a routed event's ``gallery`` parameter (:func:`~profashion.ui.common.guard`)."""
    param = inspect.signature(event).parameters.get("gallery")
    return None if param is None else param.default


# -- the tab -----------------------------------------------------------------------------------------------


STALE = ("⚠️ **Out of date**: these plots are for an earlier attribute or model; they refresh when this tab is "
         "open (or press the button).")


def build(page: Page) -> SimpleNamespace:
    """The tab's components (inside its ``gr.Tab``)."""
    catalog, labels = page.catalog, model_choices(page.catalog)
    gr.Markdown(NOTE)
    c = SimpleNamespace()
    with gr.Row():
        pair = catalog.default_pair()
        c.model_a = gr.Dropdown(labels, value=pair[0], label="Model A",
                                allow_custom_value=True)  # fine-tuned models join later
        c.model_b = gr.Dropdown(labels, value=pair[1], label="Model B",
                                allow_custom_value=True)
        c.method = gr.Radio(METHOD_CHOICES, value="tsne", label="Projection")
    c.button = gr.Button("Project the gallery", variant="primary")
    c.stale = gr.Markdown(elem_id="embeddings-stale")
    c.plot = gr.HTML(None, html_template=EXPLORER_HTML, css_template=EXPLORER_CSS, js_on_load=EXPLORER_JS,
                     elem_id="embeddings-explorer", min_height=120, apply_default_css=False)
    with gr.Row():
        c.md_a = gr.Markdown(elem_id="embeddings-md-a")
        c.md_b = gr.Markdown(elem_id="embeddings-md-b")
    c.md_agree = gr.Markdown(elem_id="embeddings-agreement")
    with gr.Row(equal_height=True):
        c.item_box = gr.Number(value=catalog.examples[0][0] if catalog.examples else 0, precision=0,
                               minimum=0, maximum=max(0, catalog.num_items - 1), label="Gallery item id", scale=1)
        c.nn_button = gr.Button("Show its nearest neighbours", scale=1)
    c.nn_md = gr.Markdown(elem_id="neighbours-md")
    c.nn_html = gr.HTML("", js_on_load=NEIGHBOUR_CLICK_JS, elem_id="neighbours-grid")
    c.outputs = [c.plot, c.md_a, c.md_b, c.md_agree]
    return c


def wire(page: Page, c: SimpleNamespace) -> Wired:
    """``/embeddings`` (its answer is the view: the attribute and gallery shared, the pair and method its own),
    ``/neighbours`` and the private clicks (a point, a neighbour); a new gallery resets the pair and the item box."""
    attribute, gallery = page.choices.attribute, page.choices.gallery
    fn = guard(embeddings, ERRORS, page.galleries)
    default = default_gallery(fn)

    def project(model_a, model_b, attribute, method, gallery=default, progress=gr.Progress()):  # noqa: B008
        with reporting(progress):
            return fn(model_a, model_b, attribute, method, gallery)

    ev = c.button.click(project, [c.model_a, c.model_b, attribute, c.method, gallery], c.outputs,
                        api_name="embeddings", concurrency_id="heavy", concurrency_limit=1,
                        preprocess=False)  # the values as sent: checked against the named gallery, not the default
    nn_fn = guard(neighbours, NEIGHBOUR_ERRORS, page.galleries)
    nn_out = [c.nn_html, c.nn_md]
    c.nn_button.click(nn_fn, [c.model_a, c.model_b, attribute, c.item_box, gallery], nn_out,
                      api_name="neighbours", concurrency_id="query", concurrency_limit=2, preprocess=False)

    def on_point(model_a, model_b, attribute, gallery, evt: gr.EventData):
        try:
            item = clicked_item(event_data(evt))
        except QueryError as exc:
            raise gr.Error(str(exc)) from None
        return (item, *nn_fn(model_a, model_b, attribute, item, gallery))

    for source in (c.plot, c.nn_html):
        source.click(on_point, [c.model_a, c.model_b, attribute, gallery], [c.item_box, *nn_out],
                     api_visibility="private", concurrency_id="query", show_progress="hidden")

    def compute(ch, own):
        model_a, model_b, method = own
        return fn(model_a, model_b, ch.attribute, method, ch.gallery)

    def keys(ch, own):
        return [ch.attribute, own[0], own[1], own[2], ch.gallery]

    # the item box follows the query when it is a gallery item (an upload leaves it as it is)
    page.choices.query.change(bounded(follow_query(page.galleries), busy=gr.skip), [page.choices.query, gallery],
                              c.item_box, api_visibility="private", preprocess=False, queue=False,
                              show_progress="hidden")
    view = View(c.outputs, compute, keys, c.stale, STALE, inputs=[c.model_a, c.model_b, c.method],
                needs_query=False, event=ev)
    return Wired(view, on_gallery=([c.model_a, c.model_b, c.item_box], gallery_values))


def gallery_values(catalog: Catalog) -> tuple:
    """What a new gallery sets here: model A and B (its default pair) and the item box (its first example)."""
    labels, pair = model_choices(catalog), catalog.default_pair()
    ex = catalog.examples[0] if catalog.examples else None
    return (gr.update(choices=labels, value=pair[0]), gr.update(choices=labels, value=pair[1]),
            gr.update(maximum=max(0, catalog.num_items - 1), value=ex.item if ex else 0))


def follow_query(galleries):
    """The item box's value for a new query: its gallery item, or no change (an upload)."""

    def follow(query, gallery):
        try:
            item = galleries.get(gallery).identify(path_of(query))
        except QueryError:
            return gr.skip()
        return gr.skip() if item is None else item

    return follow


TAB = Tab("embeddings", "Embeddings", build, wire)
