"""The Explore tab: each model's maps of where it looks for the query and attribute (``/explore``).

One row per model, its main map first (the explanation's ``"heatmap"``: where the method looked for the attribute),
every panel the same size with the ground-truth outline on it, a colour bar, and what the maps say in words
(:mod:`profashion.ui.explore_maps`). The map choice ("main map" / "all maps") and the overlay's opacity are
changed in the browser (js-only events): the page holds every layer once, so nothing is computed again.
"""

from __future__ import annotations

import collections
import threading
from types import SimpleNamespace

import gradio as gr
import numpy as np

from profashion.data.images import ImageError
from profashion.data.masks import load_attribute_masks
from profashion.data.splits import DatasetError
from profashion.explain.explanation import map_title
from profashion.explorer.catalog import GALLERY_SPLIT, Catalog
from profashion.models.backbones import shared_frozen_outputs
from profashion.retrieval.accel import one_thread
from profashion.retrieval.search import QueryError, query_key
from profashion.ui.common import df, guard, path_of
from profashion.ui.explore_maps import (
    CSS,
    MODE_JS,
    MODES,
    OPACITY_JS,
    TABLE_JS,
    ModelView,
    maps_html,
    model_view,
)
from profashion.ui.tabs import Page, Tab, View, Wired, query_keys

NOTE = (
    "**How to read this.** One row per model, its name at the row's start and its *main map* first: where it looks "
    "for the attribute (ASEN's spatial attention, CCA's cross-attention, ProFashion's selected superpixels or "
    "transport weights; CSN and the triplet network have no attention: each location's share of their embedding). "
    "Colours follow the bar (blue = the map's lowest weight, red = its highest), blended over the image at the "
    "opacity you choose; on gallery images the white line is the attribute's ground-truth region, and each map's "
    "share of mass on it is said beside it next to what a uniform map would put there. \"All maps\" adds every "
    "other map and the plans (rows = attributes, the queried one marked, the heaviest columns only); hover a "
    "panel for what it shows. A map shows where a model's evidence comes from, not why: it can sit on the "
    "right region and the embedding still be wrong."
)
ERRORS = (QueryError, ImageError, DatasetError)
TABLE_HEADERS = ["model", "map", "% on region", "% uniform", "peak on region"]

_CACHE: collections.OrderedDict = collections.OrderedDict()  # (catalog, model, query, attribute, item) -> view
_CACHE_SIZE = 64
_LOCK = threading.Lock()


def _masks(catalog: Catalog, item: int | None, a: int) -> tuple[np.ndarray | None, str]:
    """(the query's ground-truth mask of attribute ``a`` at the image's size, or None; the one note saying why
    there is none)."""
    attr = catalog.attributes[a].replace("_", " ")
    if item is None:
        return None, ("An uploaded image has no ground-truth region: the maps carry no outline and no localisation "
                      "score. Pick a gallery example to see them.")
    path = catalog.dataset.mask_path(GALLERY_SPLIT, item)
    if path is None:
        return None, "This gallery has no ground-truth regions: the maps carry no outline and no localisation score."
    mask = load_attribute_masks(path, catalog.dataset.schema.num_attributes)[a]
    if not mask.any():
        return None, f"The {attr} is not visible in this image: there is no region to localise, so no outline."
    return mask, ""


def model_maps(catalog: Catalog, name: str, img, a: int, item: int | None, mask: np.ndarray | None) -> ModelView:
    """One model's :class:`~profashion.ui.explore_maps.ModelView` for the decoded query ``img`` and attribute
    ``a`` (``mask``: the region at the image's size), kept for the next ask of the same query."""
    entry = catalog.models[name]
    qk = query_key(img)
    key = (id(catalog), name, entry.fingerprint, qk, a, item)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    model = catalog.engine.model(name)
    pre = model.preprocess
    with one_thread():  # one image: see accel.one_thread
        # one input tensor for every model with this preprocessing: their frozen trunk runs once (explore)
        explanation = model.explain(catalog.engine.model_input(model, img, qk)[0], a)
    shown = np.asarray(pre.geometry(img))
    region = pre.geometry_mask(mask) if mask is not None else None
    view = model_view(name, entry.label, explanation.to("cpu"), shown, region, catalog.attributes[a],
                      catalog.attributes, about=getattr(entry, "about", ""))
    with _LOCK:
        _CACHE[key] = view
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return view


def explore(catalog: Catalog, query, attribute, models):
    """``/explore``: (the maps' HTML, the localisation table (empty without a region: the page hides it), the
    markdown above them). A model whose maps fail gets a line in its row; a bad query, attribute or model choice raises the
    library's error."""
    path = path_of(query)
    asked = catalog.asked(models)
    failed = {n: why for n in asked if n not in catalog.models and (why := catalog.failure(n))}
    models = catalog.check_models([n for n in asked if n not in failed] or asked)
    a = catalog.attribute_index(attribute)
    p, img = catalog.decode_query(path)  # decoded once for every model
    item = catalog.identify(p)
    mask, note = _masks(catalog, item, a)
    views, rows = [], []
    with shared_frozen_outputs():
        for name in models:
            label = catalog.models[name].label
            try:
                v = model_maps(catalog, name, img, a, item, mask)
            except (ValueError, RuntimeError, QueryError) as exc:
                views.append(ModelView(name, label, error=f"its maps could not be computed ({catalog.public(str(exc))})"))
                continue
            views.append(v)
            rows += [[label, map_title(pnl.key), round(pnl.score, 1), round(v.share, 1), "yes" if pnl.peak else "no"]
                     for pnl in v.panels if pnl.score is not None]
    views += [ModelView(n, catalog.label_of(n), error=why) for n, why in failed.items()]  # failed warming up
    who = f"gallery item #{item}" if item is not None else "an uploaded image"
    value = catalog.query_value(item, a)
    head = f"Query: {who}, attribute **{attribute}**" + (f" (*{value}*)" if value else "") + "."
    share = next((v.share for v in views if v.share is not None), None)
    if share is not None:
        head += (f" The ground-truth region covers {share:.1f}% of the model input: what a map spread evenly "
                 "would put on it.")
    md = head + (f"\n\n_{note}_" if note else "")
    html = maps_html({"who": f"#{item}" if item is not None else "(upload)", "attribute": attribute, "value": value},
                     views)
    return html, df(rows, TABLE_HEADERS), md


STALE = ("⚠️ **Out of date**: these maps are for an earlier query, attribute or model choice; they refresh when "
         "this tab is open (or press the button).")


def build(page: Page) -> SimpleNamespace:
    """The tab's components (inside its ``gr.Tab``)."""
    c = SimpleNamespace()
    with gr.Row(equal_height=True):
        c.button = gr.Button("Explain the query", variant="secondary", size="sm", scale=1, min_width=160)
        c.mode = gr.Radio(list(MODES), value=MODES[0], label="Maps", elem_id="explore-mode", scale=2)
        c.opacity = gr.Slider(0, 100, value=50, step=5, label="Overlay opacity (%)", elem_id="explore-opacity",
                              scale=2)
    c.stale = gr.Markdown(elem_id="explore-stale")
    c.md = gr.Markdown(elem_id="explore-head")
    c.maps = gr.HTML("", css_template=CSS, js_on_load=None, elem_id="explore-maps", min_height=0)
    c.table = gr.Dataframe(headers=TABLE_HEADERS, label="Localisation against the ground-truth region",
                           interactive=False, elem_id="explore-table")
    gr.Markdown(NOTE)  # under the maps: the first screen is the answer's
    c.outputs = [c.maps, c.table, c.md]
    return c


def wire(page: Page, c: SimpleNamespace) -> Wired:
    """The public ``/explore`` event (its answer is the view), and the events that only restyle the page (no server
    call): the map choice, the opacity, the table shown only with rows."""
    fn = guard(explore, ERRORS, page.galleries)
    ev = c.button.click(fn, page.inputs, c.outputs, api_name="explore", preprocess=False,
                        concurrency_id="query", concurrency_limit=2)
    c.mode.change(None, c.mode, None, js=MODE_JS, api_visibility="private", queue=False)
    c.table.change(None, c.table, None, js=TABLE_JS, api_visibility="private", queue=False)
    gr.on([c.opacity.input, c.opacity.change], None, c.opacity, None, js=OPACITY_JS, api_visibility="private",
          queue=False)
    return Wired(View(c.outputs, lambda ch, own: fn(*ch.values()),
                      query_keys,
                      c.stale, STALE, event=ev))


TAB = Tab("explore", "Explore", build, wire)
