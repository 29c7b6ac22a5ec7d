"""Explore's maps as a page a person can read: one row per model, its main map first, every panel the same size.

Pure functions (numpy in, HTML out, no Gradio): :func:`model_view` turns a model's
:class:`~profashion.explain.explanation.Explanation` into a :class:`ModelView` (panels, plans, sentences);
:func:`maps_html` lays the views out. Each panel is a stack of layers the browser blends: the model's input image,
the map's colours (at the map's own resolution: a coarse grid stays a grid), the ground-truth outline on top; the
image and the outline are sent once per page (CSS variables), so that the overlay's opacity and the choice of maps
(:data:`MODE_JS`, :data:`OPACITY_JS`) change in the browser without asking the server.

The main map of a model is its explanation's first map, ``"heatmap"``: by the contract, where the method looked for
the attribute (ASEN's spatial attention, CCA's cross-attention, ProFashion's selected superpixels or transport
weights; for CSN and the triplet network, which have no attention, each location's share of the embedding).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import threading
from collections.abc import Sequence
from html import escape

import numpy as np

from profashion.explain.explanation import Explanation, Map
from profashion.explain.render import (
    _upscale,
    colour_hex,
    colour_layer,
    data_uri,
    gradient_css,
    outline_layer,
    segmentation_overlay,
    to_numpy,
    top_columns,
)
from profashion.explain.scores import localisation_score, pointing_hit

TOP_COLUMNS = 8  # columns of a plan shown: the heaviest of the queried attribute's row
MAX_HEADS = 8  # per-head maps shown of a stack
MODES = ("main map", "all maps")


@dataclasses.dataclass
class PanelView:
    """One picture of a model's maps: layers stacked in the page."""

    title: str
    about: str
    key: str  # the map's name
    base: str  # a CSS variable (the input image) or a data URI (a picture drawn on the image: superpixels)
    heat: str | None = None  # data URI of the map's colours
    coarse: bool = False  # the map is a feature-map grid: drawn as blocks, not smoothed
    box: tuple[float, float, float, float] | None = None  # top, left, height, width in % of the image
    score: float | None = None  # % of the map's mass on the ground-truth region
    peak: bool | None = None  # whether the map's maximum lies on the region


@dataclasses.dataclass
class PlanView:
    """A matrix (transport plan, mask) as a table: its heaviest columns, attribute rows named, the query's marked."""

    name: str
    about: str
    caption: str
    columns: list[str]
    rows: list[tuple[str, bool, list[tuple[str, str, str]]]]  # (label, is the queried row, [(text, bg, fg)])
    corner: str = ""  # what a column is, in a word or two
    cells: list[tuple[int, int]] | None = None  # columns that are patches: each one's (row, column) in ``grid``
    grid: tuple[int, int] | None = None  # the patch grid's (rows, columns)


PATCH = re.compile(r"^(\d{1,4}),(\d{1,4})$")  # a patch column's label (explanation.patch_labels): "y,x"


def patch_cells(labels) -> tuple[list[tuple[int, int]], tuple[int, int]] | None:
    """Every label a patch's "y,x" (0-based): their (y, x) and the grid's (rows, columns); else None."""
    found = [PATCH.match(str(t)) for t in labels or ()]
    if not found or not all(found):
        return None
    cells = [(int(f.group(1)), int(f.group(2))) for f in found]
    return cells, (max(y for y, _ in cells) + 1, max(x for _, x in cells) + 1)


def patch_svg(y: int, x: int, grid: tuple[int, int], cell: int = 4) -> str:
    """A small picture of the patch grid with patch (y, x) filled: where a plan's column is, at a glance."""
    h, w = grid
    return (f'<svg class="pf-cell" width="{w * cell + 1}" height="{h * cell + 1}" role="img" aria-hidden="true">'
            f'<rect x="0.5" y="0.5" width="{w * cell}" height="{h * cell}" fill="#f1f5f9" stroke="#94a3b8"/>'
            f'<rect x="{x * cell + 0.5}" y="{y * cell + 0.5}" width="{cell}" height="{cell}" fill="#1e293b"/></svg>')


@dataclasses.dataclass
class ModelView:
    """One model's row: its panels (the main map first), plans and what they say in words."""

    name: str
    label: str
    about: str = ""  # what the method is
    panels: list[PanelView] = dataclasses.field(default_factory=list)
    plans: list[PlanView] = dataclasses.field(default_factory=list)
    words: list[str] = dataclasses.field(default_factory=list)  # the main map's localisation, the numbers
    base: str = ""  # the CSS variable of the input image
    outline: str | None = None  # the CSS variable of the ground-truth outline (None: no region)
    share: float | None = None  # % of the input inside the region
    layers: dict[str, str] = dataclasses.field(default_factory=dict)  # CSS variable -> data URI
    error: str | None = None


# -- numbers in words -------------------------------------------------------------------------------


def percent(x: float) -> str:
    """A percentage for a reader: '38%', '0.4%', '<0.1%', 'none'."""
    if x <= 0:
        return "none"
    if x < 0.1:
        return "<0.1%"
    return f"{x:.1f}%" if x < 1 else f"{x:.0f}%"


def localisation_words(score: float, uniform: float, peak: bool | None, region: str) -> str:
    """What a localisation score means: '38% of the map lies on the sleeve length region, where a uniform map
    would put 12%: 3.2 times as much. Its peak is on the region.'"""
    out = f"{percent(score)} of the map lies on the {region}, where a uniform map would put {percent(uniform)}"
    ratio = score / uniform if uniform > 0 else float("inf")
    if ratio >= 1.15:
        out += f": {ratio:.1f} times as much." if np.isfinite(ratio) else "."
    elif ratio <= 0.87:
        out += ": less, it looks mostly elsewhere."
    else:
        out += ": about as much, no preference for the region."
    if peak is not None:
        out += f" Its peak is {'on' if peak else 'off'} the region."
    return out


def number_words(value: float, about: str) -> str:
    """A named number of an explanation in words, from its 'about' sentence: a share as a percentage."""
    text = about.strip().rstrip(".")
    if "share" in text.lower() and 0.0 <= value <= 1.0:
        return f"{text}: {percent(100.0 * value)}."
    return f"{text}: {value:.3g}."


# -- a model's view ---------------------------------------------------------------------------------


def _key(prefix: str, arr: np.ndarray) -> str:
    h = hashlib.blake2b(str(arr.shape).encode(), digest_size=6)
    h.update(np.ascontiguousarray(arr).tobytes())
    return f"--pf-{prefix}-{h.hexdigest()}"


_LAYERS: collections.OrderedDict[str, str] = collections.OrderedDict()  # layer key -> data URI (LRU)
_LAYERS_LOCK = threading.Lock()
LAYER_CACHE = 64  # the query image and its outline, shared by the eight models' rows of an Explore


def _layer(key: str, draw) -> str:
    """The data URI of the layer called ``key`` (its content's hash), drawn by ``draw()`` once for every model's row
    of a request (and the next few requests of the same query), not once per row."""
    with _LAYERS_LOCK:
        uri = _LAYERS.get(key)
        if uri is not None:
            _LAYERS.move_to_end(key)
            return uri
    uri = draw()
    with _LAYERS_LOCK:
        _LAYERS[key] = uri
        while len(_LAYERS) > LAYER_CACHE:
            _LAYERS.popitem(last=False)
    return uri


def _box_percent(box, hw: tuple[int, int]) -> tuple[float, float, float, float]:
    y0, x0, y1, x1 = (float(v) for v in box)
    h, w = hw
    return 100 * y0 / h, 100 * x0 / w, 100 * (y1 - y0) / h, 100 * (x1 - x0) / w


def _heat_panel(m: Map, data: np.ndarray, title: str, base: str, hw, mask) -> PanelView:
    coarse = data.shape != tuple(hw)
    heat = data_uri(colour_layer(data), "png" if coarse else "jpeg", 85)
    p = PanelView(title + (f" ({data.shape[0]}×{data.shape[1]})" if coarse else ""), m.about, m.name, base, heat,
                  coarse)
    if mask is not None and np.isfinite(data).all():
        p.score, p.peak = localisation_score(data, mask), pointing_hit(data, mask)
    return p


def plan_view(m: Map, data: np.ndarray, attribute_names: Sequence[str] | None, k: int = TOP_COLUMNS) -> PlanView:
    """A matrix map as a table: the ``k`` heaviest columns of the queried row (of the column sums without one),
    attribute rows by name, each cell its share of the row's mass (its value when the row has negative values)."""
    data = np.atleast_2d(data.astype(np.float64))
    cols = top_columns(data, m.highlight_row, k)
    if m.row_attributes is not None and attribute_names is not None \
            and all(0 <= i < len(attribute_names) for i in m.row_attributes):
        labels = [str(attribute_names[i]).replace("_", " ") for i in m.row_attributes]
    else:
        labels = list(m.row_labels) if m.row_labels is not None else [str(i) for i in range(data.shape[0])]
    col_names = [str(m.col_labels[c]) if m.col_labels is not None else str(c) for c in cols]
    patches = patch_cells(m.col_labels)  # the grid's size is that of all the columns, not only the ones shown
    places = grid = None
    if patches is not None:
        grid = patches[1]
        places = [patches[0][c] for c in cols]
        col_names = [f"row {y + 1}, column {x + 1}" for y, x in places]
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    rows = []
    for r in range(data.shape[0]):
        total = float(data[r].sum())
        shares = data[r].min() >= 0 and total > 0
        cells = []
        for c in cols:
            v = float(data[r, c])
            t = (v - lo) / (hi - lo) if hi - lo > 1e-12 else 0.0
            text = percent(100 * v / total) if shares else f"{v:.2g}"
            cells.append((text, colour_hex(t), "#fff" if t < 0.3 or t > 0.8 else "#000"))
        rows.append((labels[r], r == m.highlight_row and data.shape[0] > 1, cells))
    what_cols = m.columns or "column"
    shown = (f"the {len(cols)} heaviest of {data.shape[1]} ({what_cols})" if len(cols) < data.shape[1]
             else f"{what_cols}")
    by = " for the queried attribute" if m.highlight_row is not None and len(cols) < data.shape[1] else ""
    caption = (f"{m.title}: rows = {m.rows or 'row'}, columns = {shown}{by}; "
               + ("each cell = its share of the row's mass." if data.min() >= 0 else "each cell = its value."))
    return PlanView(m.name, m.about, caption, col_names, rows, (m.columns or "").split(" (")[0], places, grid)


def model_view(name: str, label: str, explanation: Explanation, shown, mask: np.ndarray | None = None,
               attribute: str = "", attribute_names: Sequence[str] | None = None, about: str = "") -> ModelView:
    """A model's row: every map of ``explanation`` drawn by its kind on ``shown`` (the model's input image) as
    panels of layers, matrices as :class:`PlanView` tables, and the main map's localisation in words when a
    ground-truth ``mask`` (same size as the image) is given."""
    shown = np.ascontiguousarray(np.asarray(shown, dtype=np.uint8))
    hw = shown.shape[:2]
    base = _key("b", shown)
    view = ModelView(name, label, about, base=base, layers={base: _layer(base, lambda: data_uri(shown, "jpeg", 90))})
    if mask is not None and np.asarray(mask).any():
        mask = np.asarray(mask, dtype=bool)
        view.outline = _key("g", np.asarray([*hw], dtype=np.int64)) + _key("", mask)
        view.layers[view.outline] = _layer(view.outline, lambda: data_uri(outline_layer(mask, (2 * hw[0], 2 * hw[1]),
                                                                                         width=4)))
        view.share = 100.0 * float(mask.mean())
    else:
        mask = None
    big = None  # the image at twice its size, for pictures drawn on it (superpixel boundaries)
    for m in explanation.maps:
        if m.kind == "box":
            view.panels.append(PanelView(m.title, m.about, m.name, base, box=_box_percent(m.data, hw)))
            continue
        data = to_numpy(m.data)
        if data is None or data.size == 0:
            continue
        if m.kind == "heatmap":
            view.panels.append(_heat_panel(m, data.astype(np.float32), m.title, base, hw, mask))
        elif m.kind == "heatmaps":
            for i, t in enumerate(data[:MAX_HEADS].astype(np.float32)):
                view.panels.append(_heat_panel(m, t, f"{m.title} {i + 1}/{len(data)}", base, hw, None))
        elif m.kind == "labels":
            big = _upscale(shown, 2 * max(hw)) if big is None else big
            n = len(np.unique(data))
            view.panels.append(PanelView(f"{m.title} ({n})", m.about, m.name,
                                         data_uri(segmentation_overlay(big, data), "jpeg", 85)))
            if m.selection:
                ids = [i for i, _ in m.selection]
                view.panels.append(PanelView(
                    f"selected {m.title} ({len(ids)})", f"The {len(ids)} region(s) the method picked, the rest "
                    "darkened.", m.name, data_uri(segmentation_overlay(big, data, selected=ids), "jpeg", 85)))
        elif m.kind == "matrix":
            view.plans.append(plan_view(m, data, attribute_names))
    main = view.panels[0] if view.panels else None
    region = f"{attribute.replace('_', ' ')} region" if attribute else "ground-truth region"
    if main is not None and main.score is not None:
        view.words.append(localisation_words(main.score, view.share, main.peak, region))
    for k, v in explanation.numbers.items():
        view.words.append(number_words(float(v), explanation.number_about.get(k, k)))
    return view


# -- the page ---------------------------------------------------------------------------------------


def _panel_html(p: PanelView, outline: str | None, extra: bool) -> str:
    e = escape
    base = f"var({p.base})" if p.base.startswith("--") else f"url('{p.base}')"
    layers = [f'<span class="pf-l pf-base" style="background-image:{base}"></span>']
    if p.heat:
        layers.append(f'<span class="pf-l pf-heat{" pf-px" if p.coarse else ""}" '
                      f'style="background-image:url(\'{p.heat}\')"></span>')
    if p.box:
        t, left, h, w = p.box
        layers.append(f'<span class="pf-box" style="top:{t:.1f}%;left:{left:.1f}%;height:{h:.1f}%;width:{w:.1f}%">'
                      '</span>')
    if outline:
        layers.append(f'<span class="pf-l pf-gt" style="background-image:var({outline})"></span>')
    score = ""
    if p.score is not None:
        score = f'<span class="pf-score">{percent(p.score)} on region, peak {"on" if p.peak else "off"} it</span>'
    return (f'<figure class="pf-p{" pf-extra" if extra else ""}" data-map="{e(p.key)}" title="{e(p.about)}">'
            f'<div class="pf-s">{"".join(layers)}</div><figcaption class="pf-cap"><b>{e(p.title)}</b>{score}'
            '</figcaption></figure>')


def _plan_html(pl: PlanView) -> str:
    e = escape
    if pl.cells and pl.grid:  # a patch column: its place drawn on the grid, in words on hover
        where = f" of the {pl.grid[0]}×{pl.grid[1]} patch grid"
        head = "".join(f'<th title="{e(c + where)}" aria-label="{e(c + where)}">{patch_svg(y, x, pl.grid)}</th>'
                       for c, (y, x) in zip(pl.columns, pl.cells))
    else:
        head = "".join(f"<th>{e(c)}</th>" for c in pl.columns)
    body = []
    for label, mine, cells in pl.rows:
        tds = "".join(f'<td style="background:{bg};color:{fg}">{e(t)}</td>' for t, bg, fg in cells)
        body.append(f'<tr{" class=pf-q" if mine else ""}><th>{e(label)}{" ◀ queried" if mine else ""}</th>{tds}</tr>')
    return (f'<figure class="pf-plan pf-extra" data-map="{e(pl.name)}" title="{e(pl.about)}">'
            f'<figcaption>{e(pl.caption)}</figcaption><table><thead><tr><th>{e(pl.corner)}</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></figure>')


def legend_html(outline: bool, attribute: str) -> str:
    """The colour bar (what blue and red mean) and, with a region, what the outline is."""
    out = ['<div class="pf-legend"><span class="pf-cbar-l">low</span>'
           f'<span class="pf-cbar" style="background:{gradient_css()}"><i>0</i><i>0.5</i><i>1</i></span>'
           '<span class="pf-cbar-l">high</span><span class="pf-legend-t">Each map is scaled to its own range: '
           'dark blue = its lowest weight (0), red = its highest (1).</span>']
    if outline:
        out.append(f'<span class="pf-legend-t"><span class="pf-swatch"></span> white line = the ground-truth region '
                   f'of {escape(attribute.replace("_", " "))}.</span>')
    out.append("</div>")
    return "".join(out)


def maps_html(query: dict, views: list[ModelView]) -> str:
    """The page: the legend, the query (with its ground-truth outline) pinned at the left, one row per model
    (its name at the row's start, its main map, what it says in words; its other maps and plans marked
    ``pf-extra``, shown by the "all maps" mode). ``query``: who, attribute, value."""
    e = escape
    first = next((v for v in views if not v.error), None)
    layers: dict[str, str] = {}
    for v in views:
        layers.update(v.layers)
    style = ";".join(f"{k}:url('{u}')" for k, u in layers.items())
    outline = first.outline if first is not None else None
    out = [f'<div class="pf-x" data-models="{len(views)}" style="{style}">', legend_html(bool(outline),
                                                                                       query["attribute"])]
    out.append('<div class="pf-xbody">')
    if first is not None:
        q = PanelView("query", "The query as the models see it.", "query", first.base)
        cap = (f'<b>Query</b> {e(query["who"])}<br>{e(query["attribute"].replace("_", " "))}: '
               f'<b>{e(query.get("value") or "unknown")}</b>')
        if first.share is not None:
            cap += f"<br>region: {percent(first.share)} of the image"
        out.append(f'<figure class="pf-xq">{_panel_html(q, outline, False)}<figcaption>{cap}</figcaption></figure>')
    out.append('<div class="pf-xrows">')
    for v in views:
        if v.error:
            out.append(f'<div class="pf-xrow pf-xerr" data-model="{e(v.name)}"><div class="pf-xname"><b>'
                       f'{e(v.label)}</b></div><div class="pf-xwords">{e(v.error)}</div></div>')
            continue
        main = v.panels[0] if v.panels else None
        summary = (f"{percent(main.score)} on region" if main is not None and main.score is not None
                   else "main map" if main is not None else "no map")
        out.append(f'<div class="pf-xrow" data-model="{e(v.name)}"><div class="pf-xname" title="{e(v.about)}">'
                   f'<b>{e(v.label)}</b><span>{e(summary)}</span></div><div class="pf-xmaps">')
        out.extend(_panel_html(p, v.outline, i > 0) for i, p in enumerate(v.panels))
        out.extend(_plan_html(pl) for pl in v.plans)
        words = "".join(f"<p>{e(w)}</p>" for w in v.words)
        about = f'<p class="pf-about">{e(v.panels[0].about)}</p>' if v.panels else "<p>This model has no map.</p>"
        out.append(f'</div><div class="pf-xwords">{words}{about}</div></div>')
    out.append("</div></div></div>")
    return "".join(out)


# -- the browser's side: style, and the two controls that never ask the server ------------------------

# Gradio scopes a gr.HTML's css_template under its root (CSS nesting); no "${" or backticks in here.
CSS = """
.pf-x { --pf-s: 120px; font-size: 13px; line-height: 1.3; }
.pf-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; margin: 2px 0 8px; }
.pf-cbar { position: relative; display: inline-block; width: 180px; height: 14px; border: 1px solid #555;
  margin-bottom: 14px; }  /* room for its 0 / 0.5 / 1 under it */
.pf-cbar i { position: absolute; top: 15px; font-style: normal; font-size: 11px; transform: translateX(-50%); }
.pf-cbar i:nth-child(1) { left: 0; } .pf-cbar i:nth-child(2) { left: 50%; } .pf-cbar i:nth-child(3) { left: 100%; }
.pf-cbar-l { font-weight: 600; }
.pf-legend-t { margin-left: 8px; }
.pf-swatch { display: inline-block; width: 18px; height: 4px; background: #fff; outline: 1px solid #000;
  vertical-align: middle; }
.pf-xbody { display: flex; gap: 12px; align-items: flex-start; margin-top: 14px; }
.pf-xq { flex: 0 0 var(--pf-s); margin: 0; position: sticky; top: 8px; }
.pf-xq > figcaption { margin-top: 4px; }
.pf-xrows { flex: 1; min-width: 0; display: flex; flex-direction: column; gap: 6px; }
.pf-xrow { display: grid; grid-template-columns: 112px auto minmax(0, 1fr); gap: 10px; align-items: start;
  padding-top: 6px; border-top: 1px solid var(--border-color-primary, #e5e7eb); }
.pf-xname { display: flex; flex-direction: column; overflow-wrap: anywhere; }
.pf-xname b { font-size: 14px; }
.pf-xname span, .pf-about { color: var(--body-text-color-subdued, #6b7280); }
.pf-xmaps { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.pf-xwords p { margin: 0 0 4px; }
.pf-xerr .pf-xwords { color: #b91c1c; grid-column: 2 / -1; }
.pf-p { margin: 0; width: var(--pf-s); display: flex; flex-direction: column; }
.pf-s { position: relative; width: var(--pf-s); height: var(--pf-s); background: #fff; }
.pf-l { position: absolute; inset: 0; background-size: 100% 100%; background-repeat: no-repeat; }
.pf-heat { opacity: var(--pf-alpha, 0.5); }
.pf-px { image-rendering: pixelated; }
.pf-box { position: absolute; border: 2px solid #f0f; box-sizing: border-box; }
.pf-cap { display: none; flex-direction: column; font-size: 12px; overflow-wrap: anywhere; }
.pf-score { color: var(--body-text-color-subdued, #6b7280); }
.pf-xq .pf-cap { display: none !important; }
.pf-extra { display: none; }
.pf-plan { margin: 0; max-width: 100%; overflow-x: auto; }
.pf-plan figcaption { font-size: 12px; max-width: 520px; margin-bottom: 2px; }
.pf-plan table { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
.pf-plan th, .pf-plan td { padding: 2px 5px; border: 1px solid #ddd; text-align: right; white-space: nowrap; }
.pf-plan tbody th { text-align: left; font-weight: 400; }
.pf-plan tr.pf-q th { font-weight: 700; }
.pf-plan tr.pf-q td, .pf-plan tr.pf-q th { border-top: 2px solid #dc2626; border-bottom: 2px solid #dc2626; }
@media (max-width: 720px) {
  .pf-x { --pf-s: 104px; }
  .pf-xbody { flex-direction: column; }
  .pf-xq { position: static; display: flex; gap: 8px; align-items: center; flex: none; }
  .pf-xrow { grid-template-columns: minmax(0, 1fr); }
  .pf-xbody, .pf-xrows { min-width: 0; max-width: 100%; }
  .pf-xname { flex-direction: row; gap: 8px; }
}
"""

# The "all maps" mode: every panel and plan shown, captions under the panels, the words under the row.
ALL_MAPS_CSS = ("#explore-maps .pf-extra { display: flex !important; } "
                "#explore-maps .pf-plan.pf-extra { display: block !important; } "
                "#explore-maps .pf-xrows .pf-cap { display: flex !important; } "
                "#explore-maps .pf-xrow { grid-template-columns: 112px minmax(0, 1fr) !important; } "
                "#explore-maps .pf-xwords { grid-column: 2 !important; }")


def _style_js(style_id: str, body: str) -> str:
    """A js-only event function: the page's ``<style id=style_id>`` gets ``body`` (JS expression of ``v``)."""
    return ("(v) => { let s = document.getElementById('" + style_id + "'); if (!s) { s = document.createElement("
            "'style'); s.id = '" + style_id + "'; document.head.appendChild(s); } s.textContent = " + body
            + "; return v; }")


MODE_JS = _style_js("pf-explore-mode", "v === 'all maps' ? " + repr(ALL_MAPS_CSS) + " : ''")
OPACITY_JS = _style_js("pf-explore-opacity", "'#explore-maps { --pf-alpha: ' + (Number(v) / 100) + '; }'")
# The localisation table shows only with rows in it (an upload has no region to score): the API keeps a plain table.
TABLE_JS = _style_js("pf-explore-table", "(v && v.data && v.data.some(r => r.some(x => x !== '' && x !== null))) ? '' "
                     ": '#explore-table { display: none !important; }'")
