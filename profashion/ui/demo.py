"""The Gradio Blocks of ProFashion Explorer: Retrieve, Explore, Embeddings and Results tabs.

``build_demo(catalog)`` lays out whatever models the catalog loaded (no model is named here), and wires
every compute event to a named API endpoint (``/retrieve``, ``/explore``, ``/embeddings``,
``/neighbours``, ``/results``); events that only move things around in the page are private. A bad
request raises ``gr.Error`` with one sentence (a toast in the browser, ``AppError`` in gradio_client)
and the app keeps serving.
"""

from __future__ import annotations

import logging

import gradio as gr
import numpy as np
import pandas as pd

from profashion.data.images import ImageError, load_image
from profashion.data.splits import DatasetError
from profashion.explain.render import hit_thumbnail, strip
from profashion.explain.scatter import scatter_svg
from profashion.retrieval.index import GalleryIndexError
from profashion.retrieval.search import QueryError
from profashion.ui.catalog import MAX_UPLOAD_BYTES, Catalog

log = logging.getLogger(__name__)

K = 5
METHOD_CHOICES = [("t-SNE", "tsne"), ("UMAP", "umap")]

NOTES = {
    "retrieve": (
        "**How to read this.** Each row is one model's top-5 for the same query, ranked by cosine similarity "
        "(score) in the space of the chosen attribute. A green frame (✓) means the retrieved item has the "
        "query's value of that attribute, red (✗) that it has another; grey means the query's value is "
        "unknown (an uploaded image). The table repeats every hit, since captions are cut short. Click a "
        "result to make it the next query."
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
    "results": (
        "**How to read this.** Measured: retrieval mAP (%) per attribute on the embedded gallery's test split "
        "with the exact protocol of the papers (PROTOCOL.md), beside a random embedding on the same split. "
        "Published: the overall numbers of the papers on the real benchmarks (224 px, ImageNet-pretrained "
        "backbones, GPU training). The embedded models are small, trained from scratch on synthetic garments "
        "on a CPU: compare models with each other and with random, not with the published values."
    ),
}


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


# --------------------------------------------------------------------------------------------------


def build_demo(catalog: Catalog) -> gr.Blocks:
    """The app for a loaded (or not yet loaded) catalog."""
    if catalog.dataset is None:
        catalog.load()
    gr.set_static_paths([str(catalog.gallery_root)])  # gallery images are served as they are, not copied
    names = catalog.names
    labels = [(catalog.models[n].label, n) for n in names]
    attrs = catalog.attributes
    default_attr = "colour" if "colour" in attrs else (attrs[0] if attrs else None)
    first_example = catalog.examples[0][1] if catalog.examples else None
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
        gallery, rows, hits, lines = [], [], [], []
        for name, r in results.items():
            if r.error:
                lines.append(f"- **{name}**: {r.error}")
                continue
            for h in r.hits:
                mark = {True: "✓", False: "✗", None: "?"}[h.match]
                try:
                    thumb = hit_thumbnail(load_image(h.path), h.match)
                except ImageError:
                    thumb = np.zeros((64, 64, 3), np.uint8)
                gallery.append((thumb, f"{name} #{h.rank} {h.score:.3f} {h.value or '?'} {mark}"))
                rows.append([name, h.rank, round(h.score, 4), h.value or "", mark, h.item])
                hits.append(h.item)
            known = [h.match for h in r.hits if h.match is not None]
            hit_s = f"{sum(known)}/{len(known)} hits" if known else "hits unknown"
            lines.append(f"- **{name}**: {hit_s}, query embedded in {r.embed_ms:.0f} ms, searched in {r.search_ms:.1f} ms")
        who = f"gallery item #{item}" if item is not None else "an uploaded image"
        value = f", whose {attribute} is **{qv}**" if qv else " (its value is unknown, so hits are not marked)"
        status = f"Query: {who}{value}.\n\n" + "\n".join(lines)
        table = _df(rows, ["model", "rank", "score", "value", "hit", "item"])
        return gallery, table, status, hits

    def pick_result(hits, evt: gr.SelectData):
        if not hits or evt.index is None or not (0 <= int(evt.index) < len(hits)):
            raise gr.Error("that result is no longer available; run the search again")
        item = int(hits[int(evt.index)])
        vals = catalog.item_values(item)
        text = f"**Item #{item}** (now the query): " + ", ".join(f"{k}: {v}" for k, v in vals.items())
        return catalog.item_path(item), text

    def pick_example(evt: gr.SelectData):
        i = int(evt.index)
        if not (0 <= i < len(catalog.examples)):
            raise gr.Error("unknown example")
        return catalog.examples[i][1]

    def explore(query, attribute, models):
        path = _path_of(query)
        try:
            models = catalog.check_models(models)
            catalog.attribute_index(attribute)
            p = catalog.check_query(path)
        except (QueryError, ImageError, DatasetError) as exc:
            raise _error(exc) from None
        item = catalog.identify(p)
        strips, rows, lines = [], [], []
        share = None
        for name in models:
            try:
                ex = catalog.explain(name, str(p), attribute, item)
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
                    out.append((hit_thumbnail(load_image(catalog.item_path(j)), match),
                                f"{name} #{rank} item {j} {s:.3f} {v or '?'}"))
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
        rows = []
        for name in chosen:
            r = catalog.measured(name)
            rows.append([name] + [round(r["per_attribute"][a], 2) if a in r["per_attribute"] else None for a in attrs]
                        + [round(r["overall"], 2)])
        rnd = evaluate_random(catalog.dataset, split="test", seed=0).to_json(catalog.dataset.schema)
        rows.append(["random (seed 0)"] + [round(rnd["per_attribute"][a], 2) if a in rnd["per_attribute"] else None
                                           for a in attrs] + [round(rnd["overall"], 2)])
        table = _df(rows, ["model", *attrs, "overall"])
        nq = rnd["n_queries"]
        md = (f"Test split of the embedded gallery (`{catalog.dataset.root.name}`), "
              f"{sum(nq.values())} queries ({', '.join(f'{a} {n}' for a, n in nq.items())}).")
        return table, md

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
               + ". Compiled in PROTOCOL.md (overall test mAP, %). " + " ".join(PUBLISHED_NOTES))
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
                examples = gr.Gallery(value=[(p, c) for _, p, c in catalog.examples], label="Examples from the "
                                      "synthetic gallery: click one to query it", columns=8, height=170,
                                      allow_preview=False, elem_id="examples")
                with gr.Row():
                    attribute = gr.Dropdown(attrs, value=default_attr, label="Attribute", elem_id="attribute")
                    models = gr.CheckboxGroup(labels, value=names, label="Models", elem_id="models")
        with gr.Tabs():
            with gr.Tab("Retrieve", id="retrieve"):
                if empty:
                    gr.Markdown(f"### No model to show\n{empty}", elem_id="no-models")
                gr.Markdown(NOTES["retrieve"])
                retrieve_btn = gr.Button("Retrieve", variant="primary")
                status = gr.Markdown()
                result_gallery = gr.Gallery(label="Top-5 per model (one row per model)", columns=K, height="auto",
                                            allow_preview=False, elem_id="results")
                inspect = gr.Markdown()
                result_table = gr.Dataframe(label="Every hit", interactive=False, elem_id="results-table")
                hits_state = gr.State([])
            with gr.Tab("Explore", id="explore") as explore_tab:
                gr.Markdown(NOTES["explore"])
                explore_btn = gr.Button("Explain the query", variant="primary")
                explore_md = gr.Markdown()
                strips = gr.Gallery(label="Maps per model", columns=1, height="auto", object_fit="contain",
                                    elem_id="explore-maps")
                loc_table = gr.Dataframe(label="Localisation against the ground-truth region", interactive=False)
            with gr.Tab("Embeddings", id="embeddings") as embeddings_tab:
                gr.Markdown(NOTES["embeddings"])
                with gr.Row():
                    model_a = gr.Dropdown(labels, value=names[0] if names else None, label="Model A")
                    model_b = gr.Dropdown(labels, value=names[-1] if names else None, label="Model B")
                    method = gr.Radio(METHOD_CHOICES, value="tsne", label="Projection")
                embed_btn = gr.Button("Project the gallery", variant="primary")
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
            with gr.Tab("Results", id="results"):
                gr.Markdown(NOTES["results"])
                results_btn = gr.Button("Measure mAP of the selected models", variant="primary")
                results_md = gr.Markdown()
                measured = gr.Dataframe(label="Measured mAP (%) on the embedded gallery", interactive=False)
                gr.Dataframe(value=published, label="Published overall mAP (%) on the real benchmarks",
                             interactive=False)
                gr.Markdown(sources)
                gr.Markdown("**Models loaded** (from `" + str(catalog.checkpoints_root) + "`)\n\n"
                            + ("\n".join(model_lines) or "_none_"))

        # -- events ------------------------------------------------------------------------------------
        q_inputs = [query, attribute, models]
        r_outputs = [result_gallery, result_table, status, hits_state]
        retrieve_btn.click(retrieve, q_inputs, r_outputs, api_name="retrieve", preprocess=False,
                           concurrency_id="query", concurrency_limit=2)
        result_gallery.select(pick_result, [hits_state], [query, inspect], api_visibility="private").success(
            retrieve, q_inputs, r_outputs, api_visibility="private", preprocess=False, concurrency_id="query")
        examples.select(pick_example, None, [query], api_visibility="private").success(
            retrieve, q_inputs, r_outputs, api_visibility="private", preprocess=False, concurrency_id="query")
        explore_btn.click(explore, q_inputs, [strips, loc_table, explore_md], api_name="explore", preprocess=False,
                          concurrency_id="query", concurrency_limit=2)
        embed_btn.click(embeddings, [model_a, model_b, attribute, method], [plot_a, md_a, plot_b, md_b],
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
        # private events after the public ones, which keep their api_names
        if names:  # opening a tab shows its view for the current choices at once
            explore_tab.select(explore, q_inputs, [strips, loc_table, explore_md], api_visibility="private",
                               preprocess=False, concurrency_id="query")
            embeddings_tab.select(embeddings, [model_a, model_b, attribute, method], [plot_a, md_a, plot_b, md_b],
                                  api_visibility="private", concurrency_id="heavy")
        if names and first_example:
            demo.load(retrieve, q_inputs, r_outputs, api_visibility="private", preprocess=False,
                      concurrency_id="query")
    return demo


def launch_kwargs(catalog: Catalog) -> dict:
    """What ``demo.launch`` needs beside host and port: the gallery folder may be served, uploads capped."""
    return {"allowed_paths": [str(catalog.gallery_root)], "max_file_size": MAX_UPLOAD_BYTES}
