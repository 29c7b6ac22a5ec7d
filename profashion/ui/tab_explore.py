"""The Explore tab: each model's maps of where it looks for the query and attribute (``/explore``)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explain.render import strip
from profashion.retrieval.search import QueryError
from profashion.ui.catalog import Catalog
from profashion.ui.common import df, guard, path_of

NOTE = (
    "**How to read this.** For the query and attribute, each model's maps of where it looks, as colour "
    "overlays (red = high): a spatial attention, a cross-attention, a correlation or OT map, "
    "superpixels (yellow boundaries) and the ones selected for the attribute, transport plans as "
    "matrices (rows = attributes, the queried one framed in red). On gallery images the green outline is "
    "the ground-truth region of the attribute and each map gets a localisation score: the share of its "
    "mass inside that region, to compare with the region's share of the image (what a uniform map "
    "scores). A heatmap shows where a model's evidence comes from, not why: a map can sit on the right "
    "region and the embedding still be wrong, and coarse maps (e.g. 6x6) are upsampled."
)
ERRORS = (QueryError, ImageError, DatasetError)


def explore(catalog: Catalog, query, attribute, models):
    """``/explore``: (one strip of maps per model, the localisation table, the markdown around them). A model
    whose maps fail gets a line; a bad query, attribute or model choice raises the library's error."""
    path = path_of(query)
    models = catalog.check_models(models)
    catalog.attribute_index(attribute)
    p, img = catalog.decode_query(path)  # decoded once for every model
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
    table = df(rows, ["model", "map", "in region %", "uniform %", "max inside"])
    return strips, table, head + "\n\n" + "\n".join(lines)


def build() -> SimpleNamespace:
    """The tab's components (inside ``gr.Tab("Explore")``)."""
    gr.Markdown(NOTE)
    c = SimpleNamespace()
    c.button = gr.Button("Explain the query", variant="primary")
    c.stale = gr.Markdown(elem_id="explore-stale")
    c.md = gr.Markdown()
    c.strips = gr.Gallery(label="Maps per model", columns=1, height="auto", object_fit="contain",
                          elem_id="explore-maps")
    c.table = gr.Dataframe(label="Localisation against the ground-truth region", interactive=False)
    c.outputs = [c.strips, c.table, c.md]
    return c


def wire(catalog: Catalog, c: SimpleNamespace, q_inputs: list):
    """The public ``/explore`` event; returns (the event, the guarded handler the views recompute with)."""
    fn = guard(explore, ERRORS, catalog)
    ev = c.button.click(fn, q_inputs, c.outputs, api_name="explore", preprocess=False,
                        concurrency_id="query", concurrency_limit=2)
    return ev, fn
