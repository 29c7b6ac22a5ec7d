"""The views follow the query: each tab that declares a :class:`~profashion.ui.tabs.View` remembers the choices
its view was computed for (``view["shown"]``).

A change of query, attribute or models (or of a view's own choices) first marks every view computed for other
choices "out of date" with its banner, then recomputes the open tab's view (which clears its banner); opening a
tab whose view is out of date recomputes it. Views never computed show no banner. Nothing here names a tab: the
views come as ``{tab id: View}`` in the page's order.
"""

from __future__ import annotations

import gradio as gr

from profashion.ui.common import path_of
from profashion.ui.tabs import Choices, Page, View

MOUNTING = {"tab": "retrieve", "shown": {}, "ready": False}  # the page's view state until its load has answered


def ready(tab: str) -> dict:
    """The view state the page's load sets: ``tab`` open, no view computed yet, the choices now the page's own."""
    return {"tab": tab, "shown": {}, "ready": True}


def is_ready(view) -> bool:
    """Whether the page's load has answered (a state without the flag, e.g. an API caller's, is ready)."""
    return (view or {}).get("ready", True) is not False


def split(specs: dict[str, View], values: tuple) -> tuple[Choices, dict[str, tuple]]:
    """The shared choices and each view's own values, from a refresh's inputs (:func:`inputs_outputs`)."""
    choices, rest, own = Choices(*values[:4]), values[4:], {}
    for tab, v in specs.items():
        own[tab], rest = tuple(rest[:len(v.inputs)]), rest[len(v.inputs):]
    return choices, own


def keys_of(specs: dict[str, View], choices: Choices, own: dict[str, tuple]) -> dict[str, list]:
    """What each view depends on now."""
    return {tab: v.keys(choices, own[tab]) for tab, v in specs.items()}


def banners(specs: dict[str, View], view, keys: dict[str, list]) -> tuple:
    """The out-of-date banner of each view: shown when it was computed for other choices than ``keys``."""
    shown = (view or {}).get("shown") or {}
    return tuple(v.stale if shown.get(t) is not None and shown[t] != keys[t] else "" for t, v in specs.items())


def refresh(specs: dict[str, View], view, tab, values: tuple, has_models: bool) -> tuple:
    """(new view state, every view's outputs in order, every banner): the open tab's view is recomputed when it is
    out of date, every other output is skipped."""
    skip_all = (gr.skip(),) * (1 + sum(len(v.outputs) for v in specs.values()) + len(specs))
    if not is_ready(view):  # a tab's select as the page mounts: the load's choices are still on their way
        return skip_all
    if tab is not None and tab == (view or {}).get("tab"):
        # a select of the tab already open: the mount's select, queued, can run after the load answered, with the
        # default choices it captured at mount (State is read on the server, the choices were sent by the page);
        # the open tab's view already follows every change of choices
        return skip_all
    choices, own = split(specs, values)
    view = dict(view or {})
    shown = dict(view.get("shown") or {})
    cur = view["tab"] = tab or view.get("tab") or "retrieve"
    keys = keys_of(specs, choices, own)
    out = []
    for t, v in specs.items():
        due = (t == cur and shown.get(t) != keys[t] and has_models
               and (not v.needs_query or path_of(choices.query)))
        out += list(v.compute(choices, own[t])) if due else [gr.skip()] * len(v.outputs)
        if due:
            shown[t] = keys[t]
    view["shown"] = shown
    return (view, *out, *banners(specs, view, keys))


def shown_now(specs: dict[str, View], tab: str):
    """After a tab's public event: its view is now the one of the current choices (and an output it sets through a
    State, :attr:`View.shown`, follows)."""
    spec = specs[tab]

    def done(view, *values):
        held = values[:1] if spec.shown else ()
        choices, own = split(specs, values[len(held):])
        keys = keys_of(specs, choices, own)
        view = {**(view or {}), "shown": {**((view or {}).get("shown") or {}), tab: keys[tab]}}
        extra = (spec.shown[2](held[0]),) if spec.shown else ()
        return (view, *extra, *banners(specs, view, keys))

    return done


def inputs_outputs(page: Page, specs: dict[str, View], view_state) -> tuple[list, list]:
    """The inputs of a refresh (the view state, the shared choices, every view's own inputs) and its outputs (see
    :func:`refresh`)."""
    v_inputs = [view_state, *page.inputs, *(i for v in specs.values() for i in v.inputs)]
    v_outputs = [view_state, *(o for v in specs.values() for o in v.outputs), *(v.banner for v in specs.values())]
    return v_inputs, v_outputs


def refresher(specs: dict[str, View], tab, has_models: bool):
    """The event function that refreshes the views for ``tab`` (None: the open one)."""
    return lambda view, *values: refresh(specs, view, tab, values, has_models)


def wire(page: Page, specs: dict[str, View], tabs: dict, view_state, has_models: bool) -> None:
    """The private events that keep the views following the query: ``specs``, the views by tab id; ``tabs``: tab
    id -> gr.Tab (every tab: opening one that has no view still records which tab is open)."""
    v_inputs, v_outputs = inputs_outputs(page, specs, view_state)
    stale = [v.banner for v in specs.values()]

    def mark_stale(view, *values):
        choices, own = split(specs, values)
        return banners(specs, view, keys_of(specs, choices, own))

    for name, v in specs.items():
        if v.event is None:
            continue
        held = [v.shown[0]] if v.shown else []
        after = [view_state, *([v.shown[1]] if v.shown else []), *stale]
        v.event.then(shown_now(specs, name), [view_state, *held, *v_inputs[1:]], after,
                     api_visibility="private", preprocess=False)
    c = page.choices
    triggers = [c.query.change, c.attribute.change, c.models.change,
                *(i.change for v in specs.values() for i in v.inputs)]
    gr.on(triggers, mark_stale, v_inputs, stale, api_visibility="private", preprocess=False, queue=False,
          show_progress="hidden").then(
        refresher(specs, None, has_models), v_inputs, v_outputs, api_visibility="private", preprocess=False,
        concurrency_id="query", trigger_mode="always_last")
    for name, tab in tabs.items():
        tab.select(refresher(specs, name, has_models), v_inputs, v_outputs, api_visibility="private",
                   preprocess=False, concurrency_id="query")
