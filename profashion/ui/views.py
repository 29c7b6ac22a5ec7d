"""The views follow the query: each tab remembers the choices its view was computed for (``view["shown"]``).

A change of query, attribute or models (or of Embeddings' own choices) first marks every view computed for other
choices "out of date" with a banner, then recomputes the open tab's view (which clears its banner); opening a tab
whose view is out of date recomputes it. Views never computed show no banner.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from profashion.ui.common import path_of

STALE = {
    "retrieve": "⚠️ **Out of date**: these results are for an earlier query, attribute or model choice; they refresh "
                "when this tab is open (or press Retrieve).",
    "explore": "⚠️ **Out of date**: these maps are for an earlier query, attribute or model choice; they refresh "
               "when this tab is open (or press the button).",
    "embeddings": "⚠️ **Out of date**: these plots are for an earlier attribute or model; they refresh when this "
                  "tab is open (or press the button).",
}
VIEWS = ("retrieve", "explore", "embeddings")
MOUNTING = {"tab": "retrieve", "shown": {}, "ready": False}  # the page's view state until its load has answered


def ready(tab: str) -> dict:
    """The view state the page's load sets: ``tab`` open, no view computed yet, the choices now the page's own."""
    return {"tab": tab, "shown": {}, "ready": True}


def is_ready(view) -> bool:
    """Whether the page's load has answered (a state without the flag, e.g. an API caller's, is ready)."""
    return (view or {}).get("ready", True) is not False


def view_keys(query, attribute, models, model_a, model_b, method, gallery=None) -> dict:
    """The choices each view depends on."""
    q = [path_of(query), attribute, list(models or []), gallery]
    return {"retrieve": q, "explore": q, "embeddings": [attribute, model_a, model_b, method, gallery]}


def banners(view, keys) -> tuple[str, str, str]:
    """The out-of-date banner of each view: shown when it was computed for other choices than ``keys``."""
    shown = (view or {}).get("shown") or {}
    return tuple(STALE[t] if shown.get(t) is not None and shown[t] != keys[t] else "" for t in VIEWS)


def refresh(view, tab, choices: tuple, compute: dict, has_models: bool) -> tuple:
    """(new view state, retrieve's 4 outputs and grid, explore's 3, embeddings' 4, the 3 banners): the open tab's
    view is recomputed (``compute[tab]``) when it is out of date, every other output is skipped."""
    if not is_ready(view):  # a tab's select as the page mounts: the load's choices are still on their way
        return (gr.skip(),) * 16
    if tab is not None and tab == (view or {}).get("tab"):
        # a select of the tab already open: the mount's select, queued, can run after the load answered, with the
        # default choices it captured at mount (State is read on the server, the choices were sent by the page);
        # the open tab's view already follows every change of choices
        return (gr.skip(),) * 16
    query, attribute, models, model_a, model_b, method, gallery = choices
    view = dict(view or {})
    shown = dict(view.get("shown") or {})
    cur = view["tab"] = tab or view.get("tab") or "retrieve"
    keys = view_keys(*choices)
    r_out, e_out, b_out = (gr.skip(),) * 5, (gr.skip(),) * 3, (gr.skip(),) * 4
    if cur in keys and shown.get(cur) != keys[cur] and (cur == "embeddings" or path_of(query)) and has_models:
        if cur == "retrieve":
            g, t, st, hs = compute["retrieve"](query, attribute, models, gallery)
            r_out = (g, t, st, hs, hs["html"])
        elif cur == "explore":
            e_out = compute["explore"](query, attribute, models, gallery)
        else:
            b_out = compute["embeddings"](model_a, model_b, attribute, method, gallery)
        shown[cur] = keys[cur]
    view["shown"] = shown
    return (view, *r_out, *e_out, *b_out, *banners(view, keys))


def shown_now(tab: str):
    """After a button's public event: its view is now the one of the current choices."""

    def done(view, hits, *choices):
        keys = view_keys(*choices)
        view = {**(view or {}), "shown": {**((view or {}).get("shown") or {}), tab: keys[tab]}}
        html = (hits or {}).get("html", "") if tab == "retrieve" else gr.skip()
        return (view, html, *banners(view, keys))

    return done


def inputs_outputs(q: SimpleNamespace, r: SimpleNamespace, e: SimpleNamespace, b: SimpleNamespace,
                   view_state) -> tuple[list, list]:
    """The inputs of a refresh (the view state and the seven choices) and its outputs (see :func:`refresh`)."""
    v_inputs = [view_state, q.query, q.attribute, q.models, b.model_a, b.model_b, b.method, q.gallery]
    v_outputs = [view_state, *r.outputs, r.grid, *e.outputs, *b.outputs, r.stale, e.stale, b.stale]
    return v_inputs, v_outputs


def refresher(tab, compute: dict, has_models: bool):
    """The event function that refreshes the views for ``tab`` (None: the open one)."""
    return lambda view, *choices: refresh(view, tab, choices, compute, has_models)


def wire(q: SimpleNamespace, r: SimpleNamespace, e: SimpleNamespace, b: SimpleNamespace, tabs: dict,
         events: dict, compute: dict, view_state, has_models: bool) -> None:
    """The private events that keep the views following the query. ``q``: query, attribute, models; ``r``, ``e``,
    ``b``: the Retrieve, Explore and Embeddings components (``q.gallery``: the gallery's name); ``tabs``: name ->
    gr.Tab; ``events``: the public events of the three views; ``compute``: their guarded handlers."""
    v_inputs, v_outputs = inputs_outputs(q, r, e, b, view_state)
    stale = [r.stale, e.stale, b.stale]
    after = [view_state, r.grid, *stale]

    def mark_stale(view, *choices):
        return banners(view, view_keys(*choices))

    for name in VIEWS:
        events[name].then(shown_now(name), [view_state, r.hits, *v_inputs[1:]], after,
                          api_visibility="private", preprocess=False)
    gr.on([q.query.change, q.attribute.change, q.models.change, b.model_a.change, b.model_b.change,
           b.method.change], mark_stale, v_inputs, stale, api_visibility="private", preprocess=False, queue=False,
          show_progress="hidden").then(
        refresher(None, compute, has_models), v_inputs, v_outputs, api_visibility="private", preprocess=False,
        concurrency_id="query", trigger_mode="always_last")
    for name, tab in tabs.items():
        tab.select(refresher(name, compute, has_models), v_inputs, v_outputs, api_visibility="private",
                   preprocess=False, concurrency_id="query")
