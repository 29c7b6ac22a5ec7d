"""The Embeddings tab: two models' embedding spaces of an attribute, projected to 2-D (``/embeddings``), and an
item's nearest neighbours in both original spaces (``/neighbours``, or a click on a point)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explain.scatter import scatter_svg
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.catalog import Catalog
from profashion.ui.common import POINT_CLICK_JS, K, event_data, guard

NOTE = (
    "**How to read this.** Each point is a gallery image in one model's embedding space of the chosen "
    "attribute, projected to 2-D with t-SNE or UMAP and coloured by its true value. A disentangled model "
    "forms one cluster per value. The projection distorts distances (cluster sizes and gaps between "
    "clusters mean little), so judge by the numbers, measured in the full space: kNN accuracy (5 "
    "nearest neighbours, leave-one-out) against chance (the most common value's share) and the "
    "silhouette (-1..1, higher = better separated). Click a point (hover shows its item id and value) to "
    "see that image and its nearest neighbours in both models' original, unprojected spaces."
)
METHOD_CHOICES = [("t-SNE", "tsne"), ("UMAP", "umap")]
ERRORS = (QueryError, GalleryIndexError, DatasetError)
NEIGHBOUR_ERRORS = (QueryError, GalleryIndexError, DatasetError, ImageError, ValueError, TypeError)


def projection(catalog: Catalog, name, attribute, method, plot_id):
    """(the scatter's SVG, its markdown: kNN accuracy, chance, silhouette) of one model; empty without one."""
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


def embeddings(catalog: Catalog, model_a, model_b, attribute, method):
    """``/embeddings``: (scatter A, its markdown, scatter B, its markdown)."""
    catalog.check_models([m for m in (model_a, model_b) if m] or [None])
    pa, ma = projection(catalog, model_a, attribute, method, "a")
    pb, mb = projection(catalog, model_b, attribute, method, "b")
    return pa, ma, pb, mb


def neighbours(catalog: Catalog, model_a, model_b, attribute, item):
    """``/neighbours``: (the item's image, its K nearest neighbours in each chosen model, a markdown summary)."""
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
    vals = catalog.item_values(item)
    head = f"**Item #{item}**: {attribute} = {vals.get(attribute, 'unknown')}\n\n" + "\n".join(lines)
    return catalog.item_path(item), out, head


def clicked_item(data: dict) -> int:
    """The gallery item id a click on a scatter point sent."""
    item = data.get("item")
    if item is None:
        raise QueryError("click on a point of a plot to see that image and its nearest neighbours")
    return int(item)


def build(catalog: Catalog, labels: list, names: list[str]) -> SimpleNamespace:
    """The tab's components (inside ``gr.Tab("Embeddings")``)."""
    gr.Markdown(NOTE)
    c = SimpleNamespace()
    with gr.Row():
        c.model_a = gr.Dropdown(labels, value=names[0] if names else None, label="Model A",
                                allow_custom_value=True)  # fine-tuned models join later
        c.model_b = gr.Dropdown(labels, value=names[-1] if names else None, label="Model B",
                                allow_custom_value=True)
        c.method = gr.Radio(METHOD_CHOICES, value="tsne", label="Projection")
    c.button = gr.Button("Project the gallery", variant="primary")
    c.stale = gr.Markdown(elem_id="embeddings-stale")
    with gr.Row():
        with gr.Column():
            c.plot_a = gr.HTML("", js_on_load=POINT_CLICK_JS, elem_id="scatter-a", min_height=200)
            c.md_a = gr.Markdown()
        with gr.Column():
            c.plot_b = gr.HTML("", js_on_load=POINT_CLICK_JS, elem_id="scatter-b", min_height=200)
            c.md_b = gr.Markdown()
    with gr.Row():
        c.item_box = gr.Number(value=catalog.examples[0][0] if catalog.examples else 0, precision=0,
                               minimum=0, maximum=max(0, catalog.num_items - 1), label="Gallery item id")
        c.nn_button = gr.Button("Show its nearest neighbours")
    with gr.Row():
        c.item_image = gr.Image(label="Item", height=200, interactive=False)
        with gr.Column(scale=3):
            c.nn_md = gr.Markdown()
            c.nn_gallery = gr.Gallery(label="Nearest neighbours (model A, then model B)", columns=K,
                                      height="auto", allow_preview=False)
    c.outputs = [c.plot_a, c.md_a, c.plot_b, c.md_b]
    return c


def wire(catalog: Catalog, c: SimpleNamespace, attribute):
    """``/embeddings``, ``/neighbours`` and the private click on a point; returns (the ``/embeddings`` event, the
    guarded handler the views recompute with)."""
    fn = guard(embeddings, ERRORS, catalog)
    ev = c.button.click(fn, [c.model_a, c.model_b, attribute, c.method], c.outputs,
                        api_name="embeddings", concurrency_id="heavy", concurrency_limit=1)
    nn_fn = guard(neighbours, NEIGHBOUR_ERRORS, catalog)
    nn_out = [c.item_image, c.nn_gallery, c.nn_md]
    c.nn_button.click(nn_fn, [c.model_a, c.model_b, attribute, c.item_box], nn_out,
                      api_name="neighbours", concurrency_id="query", concurrency_limit=2)

    def on_point(model_a, model_b, attribute, evt: gr.EventData):
        try:
            item = clicked_item(event_data(evt))
        except QueryError as exc:
            raise gr.Error(str(exc)) from None
        return (item, *nn_fn(model_a, model_b, attribute, item))

    for plot in (c.plot_a, c.plot_b):
        plot.click(on_point, [c.model_a, c.model_b, attribute], [c.item_box, *nn_out],
                   api_visibility="private", concurrency_id="query")
    return ev, fn
