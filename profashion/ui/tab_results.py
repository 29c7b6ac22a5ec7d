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
(:func:`~profashion.ui.catalog.numbers_problem`). A file that fails costs its numbers only: its models are measured
on demand as if nothing had been shipped, and the table says why in one sentence (file names, never a path).

Handlers: :func:`results` (``/results``: the table as HTML, the same as data, the per-attribute intervals),
:func:`results_view` (the table without measuring, at load) and :func:`models_markdown`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from html import escape as html_escape
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
from gradio.context import Context

from profashion.data.splits import DatasetError
from profashion.io import JSONLimitError, loads_json, read_bytes_bounded, read_json
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.catalog import GALLERY_SPLIT, Catalog, numbers_problem
from profashion.ui.common import df, guard
from profashion.ui.public import escape_markdown

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
RESULTS_FILE = "results.json"
RESULTS_FORMAT = "profashion-results/1"
MANIFEST_FILE = "manifest.json"  # the checkpoints' provenance; its entry RESULTS_FILE records results.json's sha256
MAX_RESULTS_BYTES = 16 * 2**20
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_TEXT = 200  # characters of a text field of results.json shown in the table (folder, dataset, split, layout)
SHA256 = re.compile(r"[0-9a-f]{64}")
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
# Where each row's numbers come from


@dataclass
class Shipped:
    """What ``results.json`` beside the checkpoints may show: ``data``, the file with only its well-formed model rows
    (None: nothing shipped is shown); ``problem``, why none of it is shown (one clause; None when it is shown or
    there is no file); ``damaged``, the rows left out: (name in the file, its fingerprint when readable, why)."""

    data: dict | None = None
    problem: str | None = None
    damaged: list[tuple[str, str | None, str]] = field(default_factory=list)


def recorded_digest(root: Path) -> str | None:
    """The sha256 of results.json that the checkpoints' manifest.json records (``scripts/ship_results.py`` writes
    it), or None when there is none or the manifest cannot be read."""
    try:
        manifest = read_json(root / MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES)
    except (OSError, ValueError):
        return None
    entry = manifest.get(RESULTS_FILE) if isinstance(manifest, dict) else None
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    return digest if isinstance(digest, str) and SHA256.fullmatch(digest) else None


def _text(v) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10**9


def _file_problem(data) -> str | None:
    """What is malformed in results.json as a whole (its format, its dataset, its random row), or None."""
    if not (isinstance(data, dict) and data.get("format") == RESULTS_FORMAT and isinstance(data.get("models"), dict)
            and isinstance(data.get("dataset"), dict) and isinstance(data.get("random"), dict)):
        return f"results.json is not a {RESULTS_FORMAT} file with a dataset, a random row and models"
    d = data["dataset"]
    for key in ("folder", "name", "split", "layout"):
        if key in d and not _text(d[key]):
            return f"dataset.{key} must be text of at most {MAX_TEXT} characters"
    for key in ("images", "queries"):
        if key in d and not _count(d[key]):
            return f"dataset.{key} must be a positive whole number"
    if not _text(d.get("split_fingerprint")):
        return "dataset.split_fingerprint must be text"
    n = d.get("n_queries")
    if not (isinstance(n, dict) and n and all(isinstance(a, str) and _count(c) for a, c in n.items())):
        return "dataset.n_queries must give each attribute a positive whole number of queries"
    problem = numbers_problem(data["random"])
    if problem is not None:
        return f"random.{problem}"
    if data["random"]["n_queries"] != n:
        return "the random row's n_queries differ from the dataset's"
    return None


def _record_problem(r, dataset: dict) -> str | None:
    """What is malformed in one model's row of results.json, or None."""
    problem = numbers_problem(r)
    if problem is not None:
        return problem
    if not (isinstance(r.get("fingerprint"), str) and SHA256.fullmatch(r["fingerprint"])):
        return "its fingerprint must be a sha256 (64 hex digits)"
    if r.get("split_fingerprint") != dataset["split_fingerprint"] or r["n_queries"] != dataset["n_queries"]:
        return "it was not measured on the split the file describes"
    return None


def read_shipped(catalog: Catalog) -> Shipped:
    """``results.json`` beside the catalog's checkpoints, checked before anything of it is shown: its sha256 against
    the one manifest.json records (changed numbers are not shown as shipped), its size, its JSON, then every field
    the table shows (types, finiteness, mAPs from 0 to 100, intervals as pairs, query counts positive). A damaged
    file costs its numbers, a damaged model row that model's numbers: they are measured on demand instead."""
    root = Path(catalog.checkpoints_root)
    path = root / RESULTS_FILE
    if not path.is_file():
        return Shipped()
    try:
        raw = read_bytes_bounded(path, MAX_RESULTS_BYTES, RESULTS_FILE)
    except JSONLimitError as exc:
        return Shipped(problem=f"{RESULTS_FILE} {exc.problem}")
    except OSError:
        return Shipped(problem="results.json cannot be read")
    recorded = recorded_digest(root)
    if recorded is None:
        return Shipped(problem="manifest.json records no sha256 of results.json")
    if hashlib.sha256(raw).hexdigest() != recorded:
        return Shipped(problem="results.json is not the file whose sha256 manifest.json records (it changed after "
                               "it was shipped)")
    try:
        data = loads_json(raw, max_bytes=MAX_RESULTS_BYTES)
    except JSONLimitError:
        return Shipped(problem="results.json is not valid JSON")
    problem = _file_problem(data)
    if problem is not None:
        return Shipped(problem=problem)
    models, damaged = {}, []
    for name, r in data["models"].items():
        why = _record_problem(r, data["dataset"])
        if why is None:
            models[name] = r
        else:
            fp = r.get("fingerprint") if isinstance(r, dict) else None
            damaged.append((name, fp if isinstance(fp, str) and SHA256.fullmatch(fp) else None, why))
    return Shipped({**data, "models": models}, None, damaged)


def shipped_results(catalog: Catalog) -> dict | None:
    """``results.json`` beside the catalog's checkpoints (``scripts/ship_results.py``) as :func:`read_shipped` lets it
    be shown, or None when there is none or none of it can be shown (then every model is measured on the gallery,
    as if nothing had been shipped)."""
    return read_shipped(catalog).data


def shipped_notes(shipped: Shipped, catalog: Catalog, own: dict[str, dict | None]) -> list[str]:
    """One sentence per shipped number not shown: the whole file's, or each loaded model's whose row is damaged
    (matched by its weights' fingerprint, else by its name)."""
    where = f"measured on the gallery's own {GALLERY_SPLIT} split on demand"
    if shipped.problem is not None:
        return [f"The numbers shipped with the checkpoints are not shown ({shipped.problem}): every model is {where}."]
    notes = []
    for name, entry in catalog.models.items():
        if own.get(name) is not None:
            continue
        why = next((w for n, fp, w in shipped.damaged if (fp is not None and fp == entry.fingerprint)
                    or (fp is None and n == name)), None)
        if why is not None:
            notes.append(f"The shipped numbers of {entry.label} are not shown ({why}): it is {where}.")
    return notes


def shipped_for(shipped: dict | None, name: str, fingerprint: str) -> dict | None:
    """The shipped numbers of the checkpoint with this weights fingerprint (its own name first, then any other
    folder name with the same weights), or None: a checkpoint changed since the numbers were measured, or never
    measured, gets none."""
    if not shipped or not fingerprint:
        return None
    models = shipped["models"]
    candidates = [models.get(name)] + [r for n, r in models.items() if n != name]
    return next((r for r in candidates if isinstance(r, dict) and r.get("fingerprint") == fingerprint), None)


@dataclass
class Group:
    """Rows measured on one split: a sentence saying which, its queries per attribute, the rows, random."""

    key: str
    title: str
    n_queries: dict[str, int]
    rows: list[tuple[str, dict]] = field(default_factory=list)
    random: dict | None = None


def _gallery_group(catalog: Catalog) -> Group:
    from profashion.evaluation.retrieval_map import evaluate_random

    rnd = evaluate_random(catalog.dataset, split=GALLERY_SPLIT, seed=0).to_json(catalog.dataset.schema,
                                                                               per_query=False)
    n = rnd["n_queries"]
    title = (f"Measured here, on the gallery's own {GALLERY_SPLIT} split ({catalog.num_items} images, "
             f"{sum(n.values())} queries): few queries per attribute, wide intervals")
    return Group("gallery", title, n, random=rnd)


def _shipped_group(shipped: dict) -> Group:
    d = shipped["dataset"]
    n = {k: int(v) for k, v in (d.get("n_queries") or {}).items()}
    title = (f"Shipped with the checkpoints: measured on {d.get('folder', d.get('name', '?'))}, {d.get('split')} split "
             f"({d.get('images')} images, {d.get('queries', sum(n.values()))} queries, {d.get('layout', 'asen')} "
             "layout)")
    return Group("shipped", title, n, random=shipped.get("random"))


def collect(catalog: Catalog, measure=(), progress=None) -> tuple[list[Group], list[str], list[str]]:
    """(the groups of measured rows, the loaded models with no numbers yet, why shipped numbers are not shown);
    every loaded model is in one of the first two. The models of ``measure`` that have no numbers yet are measured
    on the gallery's test split first, one after the other, each announced to ``progress(fraction, desc)``."""
    checked = read_shipped(catalog)
    shipped = checked.data
    models = catalog.models
    own = {n: shipped_for(shipped, n, e.fingerprint) for n, e in models.items()}
    todo = [n for n in measure if n in models and own[n] is None and catalog.measured(n, compute=False) is None]
    for i, name in enumerate(todo):
        if progress is not None:
            progress(i / len(todo), desc=f"measuring {name} on the gallery's {GALLERY_SPLIT} split "
                                         f"({i + 1} of {len(todo)})")
        catalog.measured(name)
    groups: dict[str, Group] = {}
    pending = []
    for name in models:
        if own[name] is not None:
            g = groups.get("shipped") or groups.setdefault("shipped", _shipped_group(shipped))
            g.rows.append((name, own[name]))
            continue
        r = catalog.measured(name, compute=False)
        if r is None:
            pending.append(name)
            continue
        g = groups.get("gallery") or groups.setdefault("gallery", _gallery_group(catalog))
        g.rows.append((name, r))
    order = [groups[k] for k in ("shipped", "gallery") if k in groups]
    return order, pending, shipped_notes(checked, catalog, own)


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


def build(catalog: Catalog) -> SimpleNamespace:
    """The tab's components (inside ``gr.Tab("Results")``); the table is in the page from the start (shipped and
    cached numbers, nothing measured) and listed again at each page load (:func:`wire`)."""
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


def wire(catalog: Catalog, c: SimpleNamespace, models, gallery=None) -> None:
    """``/results`` on the button (every loaded model without numbers measured, with a progress bar: one step per
    model), and the table listed again at each page load and when the models change (a fine-tuned one added).
    ``gallery``: the gallery switch, when ``catalog`` is the app's galleries and :func:`~profashion.ui.common.guard` routes each event to the chosen gallery's catalog by
    the event's last input."""
    fn = guard(results, ERRORS, catalog)
    refresh = guard(lambda cat, _models: (*results_view(cat), models_markdown(cat), measure_button(cat)), ERRORS,
                    catalog)
    button = guard(lambda cat: measure_button(cat), ERRORS, catalog)
    outputs = [c.table, c.data, c.intervals]
    if gallery is None:
        def measure(progress=gr.Progress()):  # noqa: B008 - how Gradio hands an event its progress bar
            return fn(progress)

        inputs, m_inputs = [models], []
    else:
        def measure(gallery, progress=gr.Progress()):  # noqa: B008
            return fn(progress, gallery)

        inputs, m_inputs = [models, gallery], [gallery]
        gallery.change(refresh, inputs, [*outputs, c.models_md, c.button], api_visibility="private",
                       show_progress="hidden", preprocess=False)
    # preprocess=False: the gallery's name reaches the handler as sent, and an unknown one is one short sentence
    # (Gradio's own check of the choices echoed a 1 MB name whole: second hostile probe)
    c.button.click(measure, m_inputs, outputs, api_name="results", concurrency_id="heavy", concurrency_limit=1,
                   preprocess=False).then(
        button, m_inputs, c.button, api_visibility="private", show_progress="hidden", preprocess=False)
    # a model added since the page was built or while it is open (a fine-tuning job's checkpoint) is listed at the
    # next page load and as soon as the models change
    models.change(refresh, inputs, [*outputs, c.models_md, c.button], api_visibility="private",
                  show_progress="hidden", preprocess=False)
    page = Context.root_block
    if page is not None:
        page.load(refresh, inputs, [*outputs, c.models_md, c.button], api_visibility="private",
                  show_progress="hidden", preprocess=False)
