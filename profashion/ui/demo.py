"""The Gradio Blocks of ProFashion Explorer: the shared choices beside the tabs of :data:`TABS`.

This module assembles the page; each tab is a module (``tab_retrieve``, ``tab_explore``, ``tab_embeddings``,
``tab_finetune``, ``tab_results``, ``tab_methods``) of plain handler functions over the explorer's services
(tested without Gradio) and one :class:`~profashion.ui.tabs.Tab` that lays out its components and wires its
events; ``views`` keeps the views following the query, ``common`` holds what the tabs share.

``build_demo(catalog, jobs=None)`` lays out whatever models the catalog loaded (no model is named here), and wires
every compute event to a named API endpoint (``/retrieve``, ``/explore``, ``/embeddings``,
``/neighbours``, ``/results``, and for fine-tuning ``/launch_job``, ``/job_status``, ``/stop_job``,
``/resume_job``, ``/list_jobs``); events that only move things around in the page are private. A bad
request raises ``gr.Error`` with one sentence (a toast in the browser, ``AppError`` in gradio_client)
and the app keeps serving.

The page shows a Retrieve as one HTML grid (:func:`comparison_html`: the query pinned at the left, one row per
model), its images served by Gradio's own file route from the gallery folder; ``/retrieve`` also returns the
hits as JSON, a table and a status for API clients. The views follow the query: a change of query, attribute or
models recomputes the open tab's view and marks the others out of date until their tab is opened.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from types import SimpleNamespace

import gradio as gr
from starlette.middleware import Middleware

from profashion.data.images import ImageError, restrict_pillow
from profashion.data.splits import DatasetError
from profashion.explorer.catalog import MAX_UPLOAD_BYTES, Catalog
from profashion.explorer.export import export_case
from profashion.explorer.galleries import Galleries
from profashion.explorer.jobs import JobManager
from profashion.explorer.public import PUBLIC, upload_folder
from profashion.explorer.share import UploadStore, link_query, read_link
from profashion.retrieval.search import QueryError
from profashion.ui import (
    tab_embeddings,
    tab_explore,
    tab_finetune,
    tab_methods,
    tab_results,
    tab_retrieve,
    views,
)
from profashion.ui.common import ITEM_CLICK_JS, bounded, guard, model_choices, shield_inputs
from profashion.ui.common import path_of as _path_of
from profashion.ui.serving import DirectCallLimit, bound_gradio_cache, gradio_cache_bytes
from profashion.ui.tab_retrieve import examples_html
from profashion.ui.tabs import Page, Wired

# The page's tabs, in their order: each module declares its own (profashion.ui.tabs.Tab). A new tab is a module
# and an entry here.
TABS = [tab_retrieve.TAB, tab_explore.TAB, tab_embeddings.TAB, tab_finetune.TAB, tab_results.TAB, tab_methods.TAB]
TAB_IDS = tuple(t.id for t in TABS)

log = logging.getLogger(__name__)

DELETE_CACHE = (600, 3600)  # Gradio's (frequency, age) in seconds: its files older than an hour go
QUEUE_SIZE = 16  # requests waiting beyond the running ones; PROFASHION_QUEUE_SIZE overrides it


def queue_size() -> int:
    try:
        return max(1, int(os.environ.get("PROFASHION_QUEUE_SIZE", QUEUE_SIZE)))
    except ValueError:
        return QUEUE_SIZE


TITLE_HTML = ('<header class="pf-title"><h1>ProFashion Explorer</h1><span>attribute-specific fashion retrieval: '
              'which images share the query\'s value of one attribute, model by model</span></header>')
INTRO = (
    "**Attribute-specific fashion retrieval**: given a query image and one attribute (sleeve length, colour...), "
    "find the images that share the query's value of *that* attribute, whatever their other attributes. Each "
    "model below answers; compare their top-5, see where each looks (Explore) and how it organises the "
    "attribute's space (Embeddings).")


def models_html(catalog: Catalog) -> str:
    """The loaded models of a gallery, one line each (what the method is), for the landing page."""
    from html import escape

    rows = [f"<li><b>{escape(e.label)}</b>{' <i>(warming up)</i>' if n in catalog.warming else ''}: "
            f"{escape(e.about.split(': ', 1)[-1])}</li>" for n in catalog.listed if (e := catalog.entry(n))]
    note = catalog.warming_note()
    return (f'<ul class="pf-about">{"".join(rows)}</ul>' + (f"<p>{escape(note)}</p>" if note else "")
            if rows else "")


def gallery_markdown(catalog: Catalog) -> str:
    regions = ("ground-truth regions: yes" if catalog.has_regions else
               "no ground-truth regions (Explore shows maps without scores)")
    return f"**{catalog.title}**: {catalog.description} _{catalog.num_items:,} images, {regions}._"


def _query_row(galleries: Galleries):
    """The header and the choices every tab shares: (gallery, its description, query image, examples, attribute,
    models, the models' one-line descriptions)."""
    catalog = galleries.default
    attrs = catalog.attributes
    first_example = catalog.examples[0].path if catalog.examples else None
    # the landing page queries the first example for the attribute it illustrates
    default_attr = (catalog.examples[0].attribute if catalog.examples else
                    "colour" if "colour" in attrs else (attrs[0] if attrs else None))
    # the choices every tab shares, in one column beside the views (a phone puts it under them: the CSS' order)
    gallery = gr.Radio(galleries.choices(), value=catalog.name, label="Gallery", elem_id="gallery")
    query = gr.Image(value=first_example, type="filepath", label="Query image (upload or pick an example)",
                     elem_id="query-upload", sources=["upload", "clipboard"], height=180)
    gr.Markdown("**Examples**, each for the attribute it shows: click one to query it.", elem_id="examples-title")
    examples = gr.HTML(examples_html(catalog.examples), js_on_load=ITEM_CLICK_JS, elem_id="examples")
    attribute = gr.Dropdown(attrs, value=default_attr, label="Attribute", elem_id="attribute")
    surprise = gr.Button("Where do the models disagree?", size="sm", elem_id="disagree")
    models = gr.CheckboxGroup(model_choices(catalog), value=catalog.listed, label="Models", elem_id="models")
    about = gr.Markdown(gallery_markdown(catalog), elem_id="gallery-about")
    with gr.Accordion("What are these models?", open=False, elem_id="models-about"):
        models_about = gr.HTML(models_html(catalog))
    with gr.Accordion("Share this case", open=False, elem_id="share"):
        link = gr.Textbox(label="Link (the gallery, query, attribute, models and tab; also in the address bar)",
                          buttons=["copy"], interactive=False, elem_id="share-link")
        export = gr.Button("Export the comparison (PNG + JSON)", size="sm", elem_id="export")
        exported = gr.File(label="Exported files", file_count="multiple", interactive=False, elem_id="export-files")
    with gr.Accordion("What is this?", open=False, elem_id="intro"):
        gr.Markdown(INTRO)
    return SimpleNamespace(gallery=gallery, about=about, query=query, examples=examples, attribute=attribute,
                           models=models, models_about=models_about, link=link, export=export,
                           exported=exported, surprise=surprise)


def _head_outputs(head: SimpleNamespace) -> list:
    """The shared choices a new gallery changes (:func:`switch_gallery`'s first values, in order)."""
    return [head.about, head.query, head.examples, head.attribute, head.models, head.models_about]


def switch_gallery(galleries: Galleries, name, follows=()) -> tuple:
    """A new gallery: (its description, first example as the query, examples, attribute choices, models, model
    descriptions, then what each tab that follows the gallery changes: ``follows``, (outputs, fn) pairs)."""
    catalog = galleries.get(name)
    attrs = catalog.attributes
    ex = catalog.examples[0] if catalog.examples else None
    head = (gallery_markdown(catalog), ex.path if ex else None, examples_html(catalog.examples),
            gr.update(choices=attrs, value=ex.attribute if ex else (attrs[0] if attrs else None)),
            gr.update(choices=model_choices(catalog), value=catalog.listed), models_html(catalog))
    return head + tuple(v for _, fn in follows for v in fn(catalog))


def build_demo(catalog: Catalog | Galleries, jobs: JobManager | None = None) -> gr.Blocks:
    """The app for loaded galleries (or one catalog, loaded or not); ``jobs`` runs the fine-tuning tab's jobs."""
    restrict_pillow()  # Gradio opens an image upload itself: only the allowed formats' decoders remain for it
    if isinstance(catalog, Catalog):
        if catalog.dataset is None:
            catalog.load()
        galleries = Galleries([catalog])
    else:
        galleries = catalog
    catalog = galleries.default
    jobs = tab_finetune.job_manager(galleries, jobs)
    has_models = bool(catalog.listed)  # served or warming up: the page answers while the models load

    # Gradio's upload folder is bounded: its files (uploads, outputs) older than an hour are removed every ten
    # minutes, and the oldest beyond GRADIO_CACHE_BYTES in all every minute (serving.bound_gradio_cache)
    with gr.Blocks(title="ProFashion Explorer", delete_cache=DELETE_CACHE, fill_width=True) as demo:
        gr.HTML(TITLE_HTML, elem_id="title")
        with gr.Row(equal_height=False, elem_id="pf-layout"):
            with gr.Column(scale=0, min_width=320, elem_id="pf-controls"):
                head = _query_row(galleries)
            views_column = gr.Column(scale=1, min_width=340, elem_id="pf-views")
        page = Page(galleries, jobs, head, demo)
        with views_column:
            link_note = gr.Markdown(elem_id="link-note")
            # "wrap": every tab one tap away on a phone (the default "menu" hides the last ones behind a button)
            with gr.Tabs(overflow_behavior="wrap", elem_id="pf-tabs") as tab_group:
                for tab in TABS:
                    with gr.Tab(tab.label, id=tab.id) as page.tabs[tab.id]:
                        page.built[tab.id] = tab.build(page)

        # outside the tabs: an inactive tab is not rendered, and the timer must tick on every tab (model lists)
        page.timer = gr.Timer(2.0)
        # not "ready" until the page's load has set the link's state: a tab's select fires as the page mounts, with
        # the default choices, and its answer could land after the link's (the link's query then lost)
        view_state = gr.State(views.MOUNTING)

        # each tab's events (the public ones keep their api_names), then the page's own
        wired = {tab.id: tab.wire(page, page.built[tab.id]) or Wired() for tab in TABS}
        specs = {t: w.view for t, w in wired.items() if w.view is not None}
        follows = [w.on_gallery for w in wired.values() if w.on_gallery is not None]
        gallery_outputs = [o for outputs, _ in follows for o in outputs]
        gr.api(galleries_api(galleries), api_name="galleries")
        head.export.click(guard(export_files, (QueryError, ImageError, DatasetError), galleries),
                          page.inputs, head.exported, api_name="export", preprocess=False,
                          concurrency_id="query", concurrency_limit=2)

        def gallery_switch(name):
            return switch_gallery(galleries, name, follows)

        head.gallery.input(bounded(guard(gallery_switch, (QueryError,))), [head.gallery],
                           [*_head_outputs(head), *gallery_outputs], api_visibility="private", queue=False)
        views.wire(page, specs, page.tabs, view_state, has_models)
        head.surprise.click(guard(tab_retrieve.disagreement, tab_retrieve.ERRORS, galleries), [head.gallery],
                            [head.query, head.attribute, page.built["retrieve"].inspect], api_visibility="private",
                            concurrency_id="query")
        uploads = UploadStore(catalog.cache_root / "uploads")
        # a query is a path the caller sends (the query's events skip Gradio's preprocessing, and Gradio checks only
        # files that carry its "meta"): each gallery reads queries from what the app serves, nothing else
        roots = [upload_folder(), *galleries.served_paths(), *(c.cache_root / "uploads" for c in galleries.catalogs.values())]
        for c in galleries.catalogs.values():
            c.confine_queries(roots)
        opener = link_opener(galleries, uploads, follows)
        opened = demo.load(bounded(opener, busy=opener.refused), None,
                           [head.gallery, *_head_outputs(head), *gallery_outputs, tab_group, view_state, link_note],
                           api_visibility="private", queue=False)
        if has_models and catalog.examples:
            v_inputs, v_outputs = views.inputs_outputs(page, specs, view_state)
            opened.then(views.refresher(specs, None, has_models), v_inputs, v_outputs,
                        api_visibility="private", preprocess=False, concurrency_id="query")
        wire_link(galleries, uploads, head, page.tabs, view_state, head.link)
    # A full queue refuses at once ("Queue is full") rather than keeping a visitor a minute: a Retrieve with
    # all eight models costs ~0.6 s of this 2-core machine's CPU, and 2 workers serve no faster than 1 here
    # (benchmarks/load_test.py), so QUEUE_SIZE waiting requests are ~10 s of work.
    demo.queue(max_size=queue_size(), api_open=False)  # queued events only through the queue, from anywhere
    start_cache_bound(demo)
    return shield_inputs(demo)  # a value Gradio refuses is one sentence of ours, not its echo or a bare "Error"


# The link's query string in the address bar (without reloading) and as a full link in the box.
SHOW_LINK_JS = """(query) => {
  if (!query) return query;
  const url = window.location.origin + window.location.pathname + '?' + query;
  window.history.replaceState(null, '', url);
  return url;
}"""


def link_opener(galleries: Galleries, uploads: UploadStore, follows=()):
    """The page's load: the state the page's link asks for (:func:`share.read_link`), or the defaults; one line
    says what was ignored. Its ``refused()`` is the answer when the server is busy (see :func:`common.bounded`):
    the defaults, and one line saying so."""
    skips = (gr.skip(),) * (1 + 6 + sum(len(outputs) for outputs, _ in follows) + 1)  # gallery, head, tabs', tab

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        state = read_link(galleries, params, uploads, TAB_IDS)
        if not any(params.get(k) for k in ("gallery", "item", "upload", "attribute", "models", "tab")):
            return (*skips, views.ready("retrieve"), "")
        catalog = galleries.get(state.gallery)
        about, query, examples, attribute, models, models_about, *followed = switch_gallery(
            galleries, catalog.name, follows)
        if state.attribute:
            attribute = gr.update(choices=catalog.attributes, value=state.attribute)
        if state.models:
            models = gr.update(choices=model_choices(catalog), value=state.models)
        tab = state.tab or "retrieve"
        return (catalog.name, about, state.query or query, examples, attribute, models, models_about, *followed,
                gr.Tabs(selected=tab), views.ready(tab), state.note_markdown())

    def refused():
        note = "⚠️ The server was busy: this page shows the defaults, not its link's case. Reload the page to open it."
        return (*skips, views.ready("retrieve"), note)

    open_link.refused = refused
    return open_link


def wire_link(galleries: Galleries, uploads: UploadStore, head: SimpleNamespace, tabs: dict, view_state,
              link) -> None:
    """The link box and the address bar follow the gallery, query, attribute, models and open tab."""

    def make_link(gallery, query, attribute, models, view, tab=None):
        if not views.is_ready(view):  # the page is mounting: its choices are the defaults, not the link's
            return gr.skip()
        try:
            catalog = galleries.get(gallery)
        except QueryError:
            return ""
        return link_query(catalog, _path_of(query), attribute, models, tab or (view or {}).get("tab"), uploads,
                          TAB_IDS)

    inputs = [head.gallery, head.query, head.attribute, head.models, view_state]
    common = {"api_visibility": "private", "preprocess": False, "queue": False, "show_progress": "hidden"}
    make_link = bounded(make_link, busy=gr.skip)  # the link box may lag a moment; no toast for it
    gr.on([head.query.change, head.attribute.change, head.models.change], make_link, inputs,
          link, **common).then(None, link, link, js=SHOW_LINK_JS, **common)
    for name, tab in tabs.items():
        tab.select(lambda *a, t=name: make_link(*a, tab=t), inputs, link, **common).then(
            None, link, link, js=SHOW_LINK_JS, **common)


def export_files(catalog: Catalog, query, attribute, models) -> list[str]:
    """``/export``: the current comparison as [PNG, JSON] (:mod:`profashion.explorer.export`)."""
    png, js = export_case(catalog, _path_of(query), attribute, models, catalog.cache_root / "exports")
    return [str(png), str(js)]


def galleries_api(galleries: Galleries):
    """``/galleries``: every gallery (name, title, description, items, attributes, ground-truth regions, models
    with what each is, models that cannot serve it with why) and the unavailable ones with why."""

    def list_galleries() -> list[dict]:
        return galleries.describe()

    return list_galleries


# The page's style rules (each tab's HTML brings its own): the query image (160 px gallery images) is shown at the
# size of its box, not at its pixel size; the comparison grid and the examples.
CSS = """
.pf-title { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0 12px; }
.pf-title h1 { margin: 0; font-size: 22px; }
.pf-title span { color: var(--body-text-color-subdued, #6b7280); font-size: 14px; }
#pf-controls { max-width: 340px; }
/* an empty line (no disagreement, nothing out of date, no link note) takes no room: the rows start under the tabs */
:is(#link-note, #retrieve-inspect, #retrieve-stale, #explore-stale, #embeddings-stale):has(span.md:empty) {
  display: none; }
#pf-controls .pf-examples { grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 4px; }
#pf-controls .pf-ex img { width: 64px; height: 64px; }
#gallery-about { font-size: 13px; }
#query-upload img { width: 100%; height: 100%; max-height: 180px; object-fit: contain; }
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
.pf-img img { max-width: var(--t); max-height: var(--t); width: auto; height: auto; box-sizing: border-box;
  border: 4px solid #94a3b8; }
.pf-hit .pf-img img { border-color: #16a34a; }
.pf-miss .pf-img img { border-color: #dc2626; }
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
.pf-about { margin: 0; padding-left: 18px; font-size: 13px; }
.pf-warning { margin: 0 0 8px; padding: 6px 10px; border-radius: 4px; background: #fef3c7; color: #78350f; }
.pf-ex-attr { color: var(--body-text-color-subdued, #6b7280); }
@media (min-width: 721px) and (max-width: 1700px) {  /* the eight rows of a Retrieve in one 1000 px screen */
  .pf-cmp.pf-compact { --t: 76px; gap: 8px; }
  .pf-compact .pf-query { flex: 0 0 92px; }
  .pf-compact .pf-query img { width: 88px; height: 88px; }
  .pf-compact .pf-name { flex: 0 0 90px; overflow-wrap: normal; }
  .pf-compact .pf-name b { font-size: 13px; }
  .pf-compact .pf-item { width: calc(var(--t) + 78px); }
  .pf-compact .pf-txt { width: 74px; }
}
@media (max-width: 720px) {
  #pf-layout { flex-direction: column; }
  #pf-layout > .column { width: 100%; max-width: 100%; align-self: stretch; }
  #pf-views { order: -1; }  /* a phone sees the answer first, the choices under it */
  .pf-title span { display: none; }
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


def launch_kwargs(catalog: Catalog | Galleries) -> dict:
    """What ``demo.launch`` needs beside host and port: the folders whose files the app returns to Gradio
    components (the galleries' images and thumbnails, the cache's kept uploads and exports: Gradio copies each
    into its upload folder before serving it, so no URL names them), uploads capped, and the page's few style
    rules (Gradio 6 takes ``css`` at launch)."""
    galleries = catalog if isinstance(catalog, Galleries) else Galleries([catalog])
    caches = dict.fromkeys(c.cache_root for c in galleries.catalogs.values())
    # the mirror first: Gradio checks a returned file against these in order (each check resolves both paths), and
    # the files the app returns most (the 40 hits of a Retrieve) are mirrors
    paths = [str(PUBLIC.root), *galleries.served_paths(),
             *(str(c / sub) for c in caches for sub in ("uploads", "exports"))]
    # direct calls beyond DirectCallLimit's bound are refused before Gradio reads them (benchmarks/load_test.py)
    return {"allowed_paths": paths, "max_file_size": MAX_UPLOAD_BYTES, "css": CSS,
            "app_kwargs": {"middleware": [Middleware(DirectCallLimit)]}}


def start_cache_bound(demo: gr.Blocks, every: float = 60.0) -> threading.Thread:
    """A daemon thread that keeps Gradio's upload folder under ``GRADIO_CACHE_BYTES`` (the oldest files Gradio
    made for uploads and outputs go first; the page's own defaults stay) while ``demo`` exists."""
    ref = weakref.ref(demo)

    def loop():
        while True:
            time.sleep(every)
            blocks = ref()
            if blocks is None:
                return
            try:
                bound_gradio_cache(blocks)
                PUBLIC.trim(gradio_cache_bytes())  # the mirrors of served files, bounded the same way
            except Exception:  # noqa: BLE001 (a sweep that fails is retried at the next tick)
                log.exception("bounding Gradio's upload folder failed")
            del blocks

    thread = threading.Thread(target=loop, daemon=True, name="bound-gradio-cache")
    thread.start()
    return thread
