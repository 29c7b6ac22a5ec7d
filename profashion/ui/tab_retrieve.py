"""The Retrieve tab: each model's top-k for the query and attribute, shown as one comparison grid.

Handlers: :func:`retrieve` (``/retrieve``: gallery, table, status and the grid's HTML), :func:`pick_result` and
:func:`pick_example` (a click on a result or a curated example makes it the query).
"""

from __future__ import annotations

from html import escape as html_escape
from types import SimpleNamespace

import gradio as gr

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explorer.catalog import WARMING, Catalog
from profashion.explorer.public import PUBLIC, escape_markdown
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.common import ITEM_CLICK_JS, K, comparison_rows, df, event_data, file_url, guard, path_of
from profashion.ui.tabs import Page, Tab, View, Wired, query_keys

NOTE = (
    "**How to read this.** The query is at the rows' left; each row is one model's top-5 for it (the model's name and "
    "hit count at the row's start), ranked by cosine similarity (score) in the space of the chosen attribute. "
    "Beside each result: ✓ hit (green frame) when it has the query's value of that attribute, ✗ miss (red) "
    "when it has another, ? (grey) when the query's value is unknown (an uploaded image); then its value, "
    "its rank and score. The table below repeats every hit. Click a result to make it the next query."
)
ERRORS = (QueryError, GalleryIndexError, ImageError, DatasetError)
MARKS = {True: ("hit", "✓ hit"), False: ("miss", "✗ miss"), None: ("unknown", "? unknown")}


def comparison_html(query: dict, rows: list[dict]) -> str:
    """The Retrieve comparison: the query pinned at the left (top on a phone), then one row per model, its name and
    hit count at the row's start and its top-k beside it, each with its thumbnail (at most its native size), its
    value, rank and score written under or beside it and hit/miss in words as well as in the frame's colour.
    ``query``: url, who, attribute, value; ``rows``: name, label, summary, error, hits (item, rank, score, value,
    match, url)."""
    e = html_escape
    compact = len(rows) > 5  # six or more models: smaller thumbnails, text beside them, all rows in one screen
    out = [f'<p class="pf-warning" role="status">⚠️ {e(query["warning"])}</p>'] if query.get("warning") else []
    out += [f'<div class="pf-cmp{" pf-compact" if compact else ""}" data-models="{len(rows)}">',
           f'<figure class="pf-query"><img src="{e(query["url"])}" alt="the query image">'
           f'<figcaption><b>Query</b> {e(query["who"])}<br>{e(query["attribute"].replace("_", " "))}: '
           f'<b>{e(query["value"] or "unknown")}</b></figcaption></figure>', '<div class="pf-rows">']
    def tip(r, h, mark):
        return (f'{r["label"]}, rank {h["rank"]}: item {h["item"]}, {query["attribute"]} = {h["value"] or "?"}, '
                f'score {h["score"]:.4f}, {mark[2:]}; click to query it')

    out += comparison_rows(rows, MARKS, tip, titled=True)
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


# -- handlers ------------------------------------------------------------------------------------------


def retrieve(catalog: Catalog, query, attribute, models):
    """``/retrieve``: (every hit as a dict: model, label, rank, item, score, value, hit (true, false or null when the
    query's value is unknown) and image (its URL relative to the app's); the table of every hit; the status
    markdown; {"hits": item ids, "html": the comparison grid}). Raises the library's errors for a bad request.

    The hits are JSON, not a ``gr.Gallery`` of files: Gradio checks and registers each file of an output (40
    for 8 models, about 2 ms each on 2 cores, for a gallery the page does not show), which was half of a
    Retrieve's time outside the models (``benchmarks/bench_app.py``)."""
    path = path_of(query)
    results, item = catalog.search(path, attribute, models, k=K)
    a = catalog.attribute_index(attribute)
    qv = catalog.query_value(item, a)
    found, rows, hits, lines, grid_rows = [], [], [], [], []
    for name, r in results.items():
        entry = catalog.entry(name)
        label, about = (entry.label, entry.about) if entry is not None else (name, "")
        if r.error:
            lines.append(f"- **{escape_markdown(label)}**: {escape_markdown(r.error)}")
            summary = "warming up" if r.error.startswith(WARMING) else "failed"
            grid_rows.append({"name": name, "label": label, "about": about, "summary": summary, "error": r.error,
                              "hits": []})
            continue
        cells = []
        for h in r.hits:
            mark = {True: "✓", False: "✗", None: "?"}[h.match]
            # the gallery's own image (its frame is the page's CSS: nothing drawn), as its mirror in Gradio's folder:
            # Gradio then neither hashes nor copies it again for the API's gallery (benchmarks/bench_app.py)
            url = file_url(PUBLIC.path(catalog.item_path(h.item)))
            found.append({"model": name, "label": label, "rank": h.rank, "item": int(h.item),
                          "score": round(float(h.score), 4), "value": h.value, "hit": h.match, "image": url})
            rows.append([label, h.rank, round(h.score, 4), h.value or "", mark, h.item])
            hits.append(h.item)
            cells.append({"item": int(h.item), "rank": h.rank, "score": float(h.score), "value": h.value,
                          "match": h.match, "url": url})
        known = [h.match for h in r.hits if h.match is not None]
        hit_s = f"{sum(known)}/{len(known)} hits" if known else "hits unknown"
        lines.append(f"- **{escape_markdown(label)}**: {hit_s}, query embedded in {r.embed_ms:.0f} ms, searched in "
                     f"{r.search_ms:.1f} ms")
        grid_rows.append({"name": name, "label": label, "about": about, "summary": hit_s, "hits": cells})
    who = f"gallery item #{item}" if item is not None else "an uploaded image"
    value = f", whose {attribute} is **{qv}**" if qv else " (its value is unknown, so hits are not marked)"
    status = f"Query: {who}{value}.\n\n" + "\n".join(lines)
    warning = ""
    if item is None and (warning := catalog.unfamiliar_warning(catalog.decode_query(path)[1])):
        status = f"⚠️ {warning}\n\n{status}"
    table = df(rows, ["model", "rank", "score", "value", "hit", "item"])
    grid = comparison_html({"url": file_url(path), "who": f"#{item}" if item is not None else "(upload)",
                            "attribute": attribute, "value": qv, "warning": warning}, grid_rows)
    return found, table, status, {"hits": hits, "html": grid}


def pick_result(catalog: Catalog, data: dict):
    """A click on a result (``data["item"]``): (its image path as the next query, a line of its values)."""
    if data.get("item") is None:
        raise QueryError("click on a result to make it the next query")
    item = int(data["item"])
    if not (0 <= item < catalog.num_items):
        raise QueryError("that result is no longer available; run the search again")
    vals = catalog.item_values(item)
    text = f"**Item #{item}** (now the query): " + ", ".join(f"{k}: {v}" for k, v in vals.items())
    return catalog.item_path(item), text


def pick_example(catalog: Catalog, data: dict):
    """A click on a curated example (``data["example"]``): (its image path, the attribute it illustrates)."""
    i = data.get("example")
    if i is None or not (0 <= int(i) < len(catalog.examples)):
        raise QueryError("unknown example")
    ex = catalog.examples[int(i)]
    return ex.path, ex.attribute


def disagreement(catalog: Catalog):
    """The landing page's "where do the models disagree?": of the curated examples (each with its attribute), the
    one whose hit counts differ most between the loaded models (then the fewest hits of the worst); (its image as
    the query, its attribute, a line naming the best and the worst model). Kept per catalog and model set."""
    names = catalog.check_models(catalog.names)
    key = tuple(names)
    cached = catalog.__dict__.setdefault("_disagreement", {})
    if key not in cached:
        best = None
        for ex in catalog.examples:
            results, _ = catalog.search(ex.path, ex.attribute, names, k=K)
            hits = {n: sum(1 for h in r.hits if h.match) for n, r in results.items() if not r.error}
            if len(hits) < 2:
                continue
            score = (max(hits.values()) - min(hits.values()), -min(hits.values()))
            if best is None or score > best[0]:
                best = (score, ex, hits)
        if best is None:
            raise QueryError("the models agree on every example (or fewer than two models are loaded)")
        _, ex, hits = best
        top, low = max(hits, key=hits.get), min(hits, key=hits.get)
        label = lambda n: catalog.models[n].label  # noqa: E731
        line = (f"**Where the models disagree**: on this {ex.caption} example, {label(top)} finds {hits[top]}/{K} "
                f"items of the same {ex.attribute.replace('_', ' ')} and {label(low)} {hits[low]}/{K}. Compare their "
                "rows, then see where each looks in Explore.")
        cached[key] = (ex.path, ex.attribute, line)
    return cached[key]


# -- layout and events ---------------------------------------------------------------------------------


STALE = ("⚠️ **Out of date**: these results are for an earlier query, attribute or model choice; they refresh "
         "when this tab is open (or press Retrieve).")


def build(page: Page) -> SimpleNamespace:
    """The tab's components (inside its ``gr.Tab``)."""
    empty = page.catalog.empty_message()
    if empty:
        gr.Markdown(f"### No model to show\n{escape_markdown(empty)}", elem_id="no-models")
    c = SimpleNamespace()
    # the answer first: the disagreement's line, the out-of-date banner, the rows; the rest under them
    c.inspect = gr.Markdown(elem_id="retrieve-inspect")
    c.stale = gr.Markdown(elem_id="retrieve-stale")
    c.grid = gr.HTML("", js_on_load=ITEM_CLICK_JS, elem_id="retrieve-grid", min_height=0)
    with gr.Row(equal_height=False):
        c.status = gr.Markdown(elem_id="retrieve-status")
        c.button = gr.Button("Retrieve", variant="secondary", size="sm", scale=0, min_width=120)
    gr.Markdown(NOTE)
    # the API's outputs (every hit as JSON, its image's URL in it); the page shows the grid
    c.gallery = gr.JSON(label="Top-5 per model", elem_id="results", visible=False)
    c.table = gr.Dataframe(label="Every hit", interactive=False, elem_id="results-table")
    c.hits = gr.State({"hits": [], "html": ""})
    c.outputs = [c.gallery, c.table, c.status, c.hits]
    return c


def wire(page: Page, c: SimpleNamespace) -> Wired:
    """The public ``/retrieve`` event (its answer is the view; the grid follows from the hits' State) and the
    clicks on a result or an example."""
    fn = guard(retrieve, ERRORS, page.galleries)
    ev = c.button.click(fn, page.inputs, c.outputs, api_name="retrieve", preprocess=False,
                        concurrency_id="query", concurrency_limit=2)
    wire_clicks(page.galleries, c, page.choices.query, page.choices.attribute, page.choices.examples,
                page.choices.gallery)

    def compute(choices, own):
        found, table, status, hits = fn(*choices.values())
        return found, table, status, hits, hits["html"]

    return Wired(View([*c.outputs, c.grid], compute, query_keys, c.stale, STALE, event=ev, shown=(c.hits, c.grid, lambda hits: (hits or {}).get("html", ""))))


def wire_clicks(galleries, c: SimpleNamespace, query, attribute, examples, gallery) -> None:
    """Private events: a click on a result or an example makes it the query (the query's change searches it);
    ``galleries`` gives the catalog of the gallery chosen in ``gallery``."""

    def pick_result_event(name, evt: gr.EventData):
        try:
            return pick_result(galleries.get(name), event_data(evt))
        except QueryError as exc:
            raise gr.Error(str(exc)) from None

    def pick_example_event(name, evt: gr.EventData):
        try:
            return pick_example(galleries.get(name), event_data(evt))
        except QueryError as exc:
            raise gr.Error(str(exc)) from None

    pick_result_event.__name__, pick_example_event.__name__ = "pick_result", "pick_example"
    c.grid.click(pick_result_event, [gallery], [query, c.inspect], api_visibility="private")
    examples.click(pick_example_event, [gallery], [query, attribute], api_visibility="private")


TAB = Tab("retrieve", "Retrieve", build, wire)
