"""The Methods tab: each chosen model taught by its own map. One card per model: its name, what the method is, its
pipeline as the code builds it, and its main map on the current query with the sentence saying what that map
means. The cards follow the query, the attribute and the models like the other views.

This tab was added as a tab is added (``profashion.ui.tabs``): this module and one entry in ``demo.TABS``.
"""

from __future__ import annotations

from html import escape
from types import SimpleNamespace

import gradio as gr

from profashion.data.images import ImageError
from profashion.data.splits import DatasetError
from profashion.explain.explanation import map_title
from profashion.explain.render import data_uri
from profashion.explorer.catalog import Catalog
from profashion.explorer.export import main_panel
from profashion.models.base import method_pipeline
from profashion.retrieval.search import QueryError
from profashion.ui.common import guard, path_of
from profashion.ui.tabs import Page, Tab, View, Wired, query_keys

NOTE = ("**What each model does**, one card per ticked model: the method in a sentence, its pipeline as this "
        "project builds it, and its main map on the query for the chosen attribute (where its evidence comes from: "
        "red is the map's highest weight). Explore shows every map of every model side by side.")
STALE = ("⚠️ **Out of date**: these cards are for an earlier query, attribute or model choice; they refresh when "
         "this tab is open.")
ERRORS = (QueryError, ImageError, DatasetError)
CSS = """
.pf-methods { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px; }
.pf-method { display: flex; gap: 10px; border: 1px solid var(--border-color-primary, #e5e7eb); border-radius: 8px;
  padding: 8px; font-size: 13px; line-height: 1.35; }
.pf-method img { width: 96px; height: auto; image-rendering: auto; border-radius: 4px; flex: none; }
.pf-method .pf-mname { display: block; margin: 0 0 4px; font-size: 14px; font-weight: 700; }
.pf-method code { font-size: 11.5px; white-space: normal; }
.pf-method .pf-map { color: var(--body-text-color-subdued, #6b7280); margin-top: 4px; }
"""


def card_html(label: str, about: str, pipeline: str, panel, error: str = "") -> str:
    """One model's card: name, what the method is, its pipeline, its main map (``panel``: a rendered panel, or
    None with ``error`` saying why)."""
    e = escape
    picture = (f'<img src="{data_uri(panel.image)}" alt="{e(label)}: {e(map_title(panel.key))}">'
               if panel is not None else "")
    what = (f'<div class="pf-map"><b>{e(map_title(panel.key)).capitalize()}</b>: {e(panel.about)}</div>'
            if panel is not None else f'<div class="pf-map">{e(error)}</div>')
    return (f'<div class="pf-method" data-model="{e(label)}">{picture}<div><span class="pf-mname">{e(label)}</span>'
            f'<div>{e(about.split(": ", 1)[-1])}</div><div><code>{e(pipeline)}</code></div>{what}</div></div>')


def methods(catalog: Catalog, query, attribute, models) -> str:
    """The cards for the query and attribute, one per chosen model (a model whose map fails says why in its card);
    a bad query, attribute or model choice raises the library's error."""
    names = catalog.check_models(models)
    a = catalog.attribute_index(attribute)
    p, img = catalog.decode_query(path_of(query))
    item = catalog.identify(p)
    cards = []
    for name in names:
        entry = catalog.models[name]
        try:
            panel, error = main_panel(catalog.explain(name, str(p), catalog.attributes[a], item, image=img).panels), ""
        except (ValueError, RuntimeError, QueryError) as exc:
            panel, error = None, f"its maps could not be computed ({catalog.public(str(exc))})"
        cards.append(card_html(entry.label, entry.about, method_pipeline(entry.method), panel, error))
    return f'<div class="pf-methods">{"".join(cards)}</div>'


def build(page: Page) -> SimpleNamespace:
    c = SimpleNamespace()
    gr.Markdown(NOTE)
    c.stale = gr.Markdown(elem_id="methods-stale")
    c.cards = gr.HTML("", css_template=CSS, elem_id="methods-cards", min_height=0)
    return c


def wire(page: Page, c: SimpleNamespace) -> Wired:
    fn = guard(methods, ERRORS, page.galleries)
    return Wired(View([c.cards], lambda ch, own: (fn(*ch.values()),),
                      query_keys,
                      c.stale, STALE))


TAB = Tab("methods", "Methods", build, wire)
