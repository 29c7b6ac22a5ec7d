"""The Results tab: one table of every loaded model's mAP, overall first and per attribute after, the best of
each column marked, its 95% bootstrap interval and the published overall of its paper beside it.

Where the numbers come from: ``results.json`` beside the checkpoints (``scripts/ship_results.py``), measured
once on a test split with at least 50 queries per attribute, is shown at load for every model whose weights
fingerprint matches the recorded one; any other loaded model (a fine-tuned one) is measured on demand on the
embedded gallery's own test split (``/results``, with progress; cached per checkpoint by
:meth:`Catalog.measured`). Each group of rows says which split it was measured on, with its number of test
queries per attribute, and a random embedding on the same split.

Shipped numbers are shown only as they were shipped (:func:`read_shipped`): the sha256 of ``results.json`` must be
the one the checkpoints' ``manifest.json`` records, and every number must be well formed
(:func:`~profashion.explorer.catalog.numbers_problem`). A file that fails costs its numbers only: its models are measured
on demand as if nothing had been shipped, and the table says why in one sentence (file names, never a path).

Handlers: :func:`results` (``/results``: the table as HTML, the same as data, the per-attribute intervals),
:func:`results_view` (the table without measuring, at load) and :func:`models_markdown`.
"""

from __future__ import annotations

import math
from html import escape as html_escape
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from profashion.data.splits import DatasetError
from profashion.explorer.catalog import GALLERY_SPLIT, Catalog
from profashion.explorer.public import escape_markdown
from profashion.explorer.results import Group, collect
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.common import df, guard
from profashion.ui.tabs import Tab, Wired

NOTE = (
    "**How to read this.** Retrieval mAP (%) with the exact protocol of the papers (docs/PROTOCOL.md): each test "
    "query ranks the candidates of its attribute; overall is the mean over all queries. Overall comes first "
    "with its 95% bootstrap interval (the range it could take with other queries of the same kind); the "
    "best of each column among the models measured on the same split is **bold** with ▲. Each group of rows "
    "says which test split it was measured on and how many queries each attribute has, beside a random "
    "embedding on the same split. Published: the overall numbers of the papers on the real benchmarks (224 px, "
    "ImageNet-pretrained backbones, GPU training). The embedded models are small heads on a frozen ImageNet "
    "EfficientNet-Lite0 at low resolution, trained on a CPU on the gallery's own kind of images: compare models "
    "with each other and with random, not with the published values."
)
ERRORS = (QueryError, GalleryIndexError, DatasetError)
DATASETS = ["FashionAI", "DARN", "DeepFashion", "Zappos50K"]
PUBLISHED_COLUMNS = ("FashionAI", "DARN", "DeepFashion")
RANDOM = "random (seed 0)"
BEST = "▲"

# The table's style, scoped to its component: fixed layout on the box's width, short headers that wrap.
CSS = """
.pf-res { font-size: 13px; line-height: 1.3; }
.pf-res table { width: 100%; table-layout: fixed; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.pf-res th, .pf-res td { padding: 3px 4px; border-bottom: 1px solid var(--border-color-primary, #e5e7eb);
  overflow-wrap: anywhere; vertical-align: top; }
.pf-res thead th { font-weight: 600; font-size: 12px; text-align: right; vertical-align: bottom; }
.pf-res thead th.pf-res-model, .pf-res tbody th { text-align: left; }
.pf-res td { text-align: right; }
.pf-res col.pf-res-c-model { width: 11%; }
.pf-res col.pf-res-c-overall { width: 8%; }
.pf-res col.pf-res-c-pub { width: 6.5%; }
.pf-res .pf-res-span { text-align: center; border-bottom: 2px solid var(--border-color-primary, #d1d5db); }
.pf-res .pf-res-pub { color: var(--body-text-color-subdued, #6b7280); }
.pf-res small { display: block; font-weight: 400; color: var(--body-text-color-subdued, #6b7280); }
.pf-res .pf-res-group th { text-align: left; font-weight: 600; padding-top: 10px;
  background: var(--background-fill-secondary, #f3f4f6); }
.pf-res .pf-res-n td, .pf-res .pf-res-n th { color: var(--body-text-color-subdued, #6b7280); font-weight: 400; }
.pf-res .pf-res-random th, .pf-res .pf-res-random td { font-style: italic; }
.pf-res .pf-best { font-weight: 700; background: rgba(34, 197, 94, 0.14); }
.pf-res .pf-res-pending td { text-align: left; color: var(--body-text-color-subdued, #6b7280); }
.pf-res .pf-res-legend { margin: 6px 0 0; color: var(--body-text-color-subdued, #6b7280); }
.pf-res .pf-res-note { color: var(--body-text-color, #111827); }
"""


# ------------------------------------------------------------------------------------------------------
# The table


def short_name(attribute: str) -> str:
    """A column header: ``skirt_length`` -> ``skirt``, ``neckline_design`` -> ``neckline``, ``baseColour`` ->
    ``base Colour`` (a place to wrap)."""
    s = attribute.removesuffix("_length").removesuffix("_design").replace("_", " ")
    return "".join(f" {c}" if c.isupper() and i and s[i - 1].islower() else c for i, c in enumerate(s))


def _published(catalog: Catalog, name: str | None) -> dict[str, float | None]:
    from profashion.evaluation.retrieval_map import PUBLISHED

    if name is None:
        method = "Random"
    else:
        method = catalog.models[name].published_name if name in catalog.models else None
    row = PUBLISHED.get(method or "", {})
    return {d: row.get(d) for d in PUBLISHED_COLUMNS}


def _value(r: dict | None, attribute: str | None) -> float | None:
    if not r:
        return None
    v = r.get("overall") if attribute is None else (r.get("per_attribute") or {}).get(attribute)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _best(group: Group, columns: list[str | None]) -> dict[str | None, float]:
    """Per column (None: overall), the best value among the group's models (random left out; none for a group
    of one model, which has nothing to be best of)."""
    best = {}
    if len(group.rows) < 2:
        return best
    for a in columns:
        vals = [v for _, r in group.rows if (v := _value(r, a)) is not None]
        if vals:
            best[a] = round(max(vals), 2)
    return best


def _cell(r: dict | None, a: str | None, best: dict, n: int | None) -> str:
    v = _value(r, a)
    if v is None:
        return '<td title="no query of this attribute in the split">–</td>'
    ci = r.get("ci95") if a is None else (r.get("per_attribute_ci95") or {}).get(a)
    tip = f"95% interval {ci[0]:.1f}–{ci[1]:.1f}" if ci else "no interval (measured without per-query APs)"
    if n is not None:
        tip += f", {n} test queries"
    is_best = a in best and round(v, 2) == best[a]
    text = f"{v:.2f}"
    if is_best:
        tip += "; best of this column"
        text = f"{BEST}&#8239;{text}"
    sub = f"<small>{ci[0]:.1f}–{ci[1]:.1f}</small>" if a is None and ci else ""
    cls = ' class="pf-best"' if is_best else ""
    return f'<td{cls} title="{html_escape(tip)}">{text}{sub}</td>'


def _published_cells(values: dict[str, float | None]) -> str:
    return "".join(f'<td class="pf-res-pub">{v:.2f}</td>' if v is not None else '<td class="pf-res-pub">–</td>'
                   for v in values.values())


def table_html(catalog: Catalog, groups: list[Group], pending: list[str], notes=()) -> str:
    """The one table: a row per model (grouped by the split it was measured on), overall first then each
    attribute, the best of each column bold with ▲, the published overall of the model's paper beside it;
    ``notes`` (why shipped numbers are not shown) under it."""
    e = html_escape
    attrs = catalog.attributes
    ncol = 2 + len(attrs) + len(PUBLISHED_COLUMNS)
    out = ['<div class="pf-res"><table><colgroup><col class="pf-res-c-model"><col class="pf-res-c-overall">',
           "<col>" * len(attrs), '<col class="pf-res-c-pub">' * len(PUBLISHED_COLUMNS), "</colgroup><thead><tr>",
           '<th rowspan="2" class="pf-res-model" scope="col">model</th>',
           '<th rowspan="2" scope="col" title="mean AP over all test queries, with its 95% bootstrap interval">'
           "overall<small>95% interval</small></th>",
           f'<th colspan="{len(attrs)}" class="pf-res-span" scope="colgroup">mAP (%) per attribute</th>',
           f'<th colspan="{len(PUBLISHED_COLUMNS)}" class="pf-res-span pf-res-pub" scope="colgroup">'
           "published overall (paper, real photos)</th></tr><tr>"]
    out += [f'<th scope="col" title="{e(a)}">{e(short_name(a))}</th>' for a in attrs]
    out += [f'<th scope="col" class="pf-res-pub" title="{e(d)}">{e(d).replace("Deep", "Deep<wbr>").replace("Fashion", "Fashion<wbr>")}</th>'
            for d in PUBLISHED_COLUMNS]
    out.append("</tr></thead><tbody>")
    for g in groups:
        best = _best(g, [None, *attrs])
        out.append(f'<tr class="pf-res-group" data-split="{g.key}"><th colspan="{ncol}" scope="rowgroup">'
                   f"{e(g.title)}</th></tr>")
        out.append('<tr class="pf-res-n"><th scope="row">test queries</th>'
                   f"<td>{sum(g.n_queries.values())}</td>"
                   + "".join(f"<td>{g.n_queries.get(a, 0)}</td>" for a in attrs) + f'<td colspan="{len(PUBLISHED_COLUMNS)}"></td></tr>')
        for name, r in g.rows:
            entry = catalog.models[name]
            out.append(f'<tr data-model="{e(name)}" data-split="{g.key}"><th scope="row" title="{e(entry.describe())}">'
                       f"{e(entry.label)}</th>"
                       + _cell(r, None, best, sum(g.n_queries.values()))
                       + "".join(_cell(r, a, best, g.n_queries.get(a)) for a in attrs)
                       + _published_cells(_published(catalog, name)) + "</tr>")
        if g.random:
            out.append(f'<tr class="pf-res-random" data-model="{RANDOM}" data-split="{g.key}"><th scope="row">'
                       f"random<small>seed 0</small></th>" + _cell(g.random, None, {}, None)
                       + "".join(_cell(g.random, a, {}, g.n_queries.get(a)) for a in attrs)
                       + _published_cells(_published(catalog, None)) + "</tr>")
    if pending:
        out.append(f'<tr class="pf-res-group" data-split="pending"><th colspan="{ncol}" scope="rowgroup">Not measured '
                   "yet (no shipped numbers for these weights): press Measure</th></tr>")
        for name in pending:
            out.append(f'<tr class="pf-res-pending" data-model="{e(name)}" data-split="pending"><th scope="row">'
                       f'{e(name)}<small>{e(catalog.models[name].method)}</small></th><td colspan="{ncol - 1}">'
                       f"measured on the gallery's own {GALLERY_SPLIT} split on demand</td></tr>")
    if not groups and not pending:
        out.append(f'<tr><td colspan="{ncol}">{e(catalog.empty_message() or "no model loaded")}</td></tr>')
    out.append("</tbody></table>")
    out += [f'<p class="pf-res-legend pf-res-note">{e(note)}</p>' for note in notes]
    out.append(f'<p class="pf-res-legend">{BEST} <b>bold</b>: the best of its column among the '
               "models measured on the same split (random left out). Hover a number for its 95% interval and its "
               "number of queries.</p></div>")
    return "".join(out)


def table_data(catalog: Catalog, groups: list[Group], pending: list[str]):
    """The same table as data (one row per model and per random row; pending models with empty numbers)."""
    attrs = catalog.attributes
    rows = []

    def row(label, split, r, pub):
        ci = (r or {}).get("ci95") or [None, None]
        return ([label, split, _value(r, None), ci[0], ci[1]] + [_value(r, a) for a in attrs]
                + [pub.get(d) for d in PUBLISHED_COLUMNS])

    for g in groups:
        split = "shipped" if g.key == "shipped" else f"gallery {GALLERY_SPLIT}"
        rows += [row(catalog.models[name].label, split, r, _published(catalog, name)) for name, r in g.rows]
        if g.random:
            rows.append(row(RANDOM, split, g.random, _published(catalog, None)))
    rows += [row(catalog.label_of(name), "not measured", None, _published(catalog, name)) for name in pending]
    return df(rows, ["model", "measured on", "overall", "ci95 low", "ci95 high", *attrs,
                     *(f"published {d}" for d in PUBLISHED_COLUMNS)])


def intervals_markdown(measured: dict[str, dict], attrs: list[str]) -> str:
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


def _outputs(catalog: Catalog, groups: list[Group], pending: list[str], notes=()):
    measured = {}
    for g in groups:
        where = "shipped" if g.key == "shipped" else "gallery"
        measured.update({f"{catalog.models[n].label} ({where})": r for n, r in g.rows})
        if g.random:
            measured[f"{RANDOM} ({where})"] = g.random
    return (table_html(catalog, groups, pending, notes), table_data(catalog, groups, pending),
            intervals_markdown(measured, catalog.attributes))


def results(catalog: Catalog, progress=None):
    """``/results``: every loaded model's numbers (shipped, or measured on the gallery's test split), after
    measuring the models that have none yet; (the table as HTML, the same as data, the per-attribute 95% intervals
    as Markdown). ``progress(fraction, desc=...)`` hears of each model being measured."""
    if not catalog.models:
        raise QueryError(catalog.empty_message())
    return _outputs(catalog, *collect(catalog, list(catalog.models), progress))


def results_view(catalog: Catalog):
    """The table without measuring anything (shown at load): shipped numbers, cached measurements, and the
    models still to measure."""
    return _outputs(catalog, *collect(catalog))


def measure_button(catalog: Catalog):
    """The measure button, shown only while some loaded model has no numbers yet (shipped, cached or measured)."""
    return gr.update(visible=bool(collect(catalog)[1]))


def sources_markdown() -> str:
    from profashion.evaluation.retrieval_map import PUBLISHED_NOTES, PUBLISHED_SOURCES

    return ("**Sources** of the published numbers: " + "; ".join(f"{k}: {v}" for k, v in PUBLISHED_SOURCES.items())
            + ". Compiled in docs/PROTOCOL.md (overall test mAP, %). " + " ".join(PUBLISHED_NOTES))


def models_markdown(catalog: Catalog) -> str:
    """The models loaded (with what they are) and the folders skipped (with why); folder names only, never a path
    of the server."""
    md = escape_markdown  # names, descriptions and reasons come from files: shown as text
    model_lines = [f"- **{md(e.label)}**: {md(e.describe())}" for e in catalog.models.values()]
    model_lines += [f"- **{md(e.label)}** _(warming up: indexing the gallery)_: {md(e.describe())}"
                    for e in catalog.warming.values()]
    model_lines += [f"- ~~{md(e.name)}~~: {md(e.error or '')}" for e in catalog.skipped]
    return (f"**Models loaded** (from the folder `{Path(catalog.checkpoints_root).name}`)\n\n"
            + ("\n".join(model_lines) or "_none_"))


def build(page) -> SimpleNamespace:
    """The tab's components (inside its ``gr.Tab``); the table is in the page from the start (shipped and cached
    numbers, nothing measured) and listed again at each page load (:func:`wire`)."""
    catalog = page.catalog
    html, data, intervals = guard(results_view, ERRORS, catalog)()
    c = SimpleNamespace()
    gr.Markdown(NOTE)
    c.button = gr.Button("Measure the models that have no numbers yet", variant="primary",
                         elem_id="results-measure", visible=bool(collect(catalog)[1]))
    c.table = gr.HTML(html, css_template=CSS, js_on_load=None, elem_id="results-map")
    gr.Markdown(sources_markdown())
    with gr.Accordion("95% intervals per attribute", open=False):
        c.intervals = gr.Markdown(intervals)
    with gr.Accordion("The table as data (copy or export)", open=False):
        c.data = gr.Dataframe(data, interactive=False, wrap=True, elem_id="results-data")
    c.models_md = gr.Markdown(guard(models_markdown, ERRORS, catalog)(), elem_id="results-models")
    return c


def results_now(catalog: Catalog):
    """The Results table of the gallery's loaded models as they are now (no measuring)."""
    return (*results_view(catalog), models_markdown(catalog), measure_button(catalog))


def wire(page, c: SimpleNamespace) -> Wired:
    """``/results`` on the button (every loaded model without numbers measured, with a progress bar: one step per
    model), and the table listed again at each page load, when the tab opens and when the models change (a
    fine-tuned one added); each event names the gallery (its last input)."""
    models, gallery = page.choices.models, page.choices.gallery
    fn = guard(results, ERRORS, page.galleries)
    refresh = guard(lambda cat, _models: results_now(cat), ERRORS, page.galleries)
    button = guard(lambda cat: measure_button(cat), ERRORS, page.galleries)
    outputs = [c.table, c.data, c.intervals]
    shown = [*outputs, c.models_md, c.button]
    common = {"api_visibility": "private", "show_progress": "hidden", "preprocess": False}

    def measure(gallery, progress=gr.Progress()):  # noqa: B008 - how Gradio hands an event its progress bar
        return fn(progress, gallery)

    # preprocess=False: the gallery's name reaches the handler as sent, and an unknown one is one short sentence
    # (Gradio's own check of the choices echoed a 1 MB name whole: second hostile probe)
    c.button.click(measure, [gallery], outputs, api_name="results", concurrency_id="heavy", concurrency_limit=1,
                   preprocess=False).then(button, [gallery], c.button, **common)
    # a model added since the page was built or while it is open (a fine-tuning job's checkpoint) is listed at the
    # next page load, when the tab opens and as soon as the models change
    for trigger in (gallery.change, models.change):
        trigger(refresh, [models, gallery], shown, **common)
    page.demo.load(refresh, [models, gallery], shown, **common)
    page.tabs["results"].select(guard(results_now, ERRORS, page.galleries), [gallery], shown,
                                api_visibility="private", show_progress="hidden")
    return Wired()


TAB = Tab("results", "Results", build, wire)
