"""What the tabs of the app share: the number of results, the input and error helpers, the click scripts.

Handlers of the tabs (``tab_*.py``) are plain functions over the catalog: they raise the library's own errors,
and :func:`guard` turns the ones a visitor can cause into one ``gr.Error`` sentence at the event's edge.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from html import escape as html_escape

import gradio as gr
import pandas as pd

from profashion.retrieval.search import QueryError

log = logging.getLogger(__name__)

K = 5
MAX_ERROR_CHARS = 400  # an error echoes at most this much (a 10 MB attribute name gives a short sentence)
BUSY = "the app is busy right now; try again in a moment"

# A click on a point of an SVG scatter (event delegation: survives every re-render) -> a "click" event whose
# data carries the point's gallery item id.
POINT_CLICK_JS = """
element.addEventListener('click', (e) => {
  const c = e.target.closest('circle[data-item]');
  if (c) { trigger('click', {item: parseInt(c.dataset.item, 10), plot: c.dataset.plot}); }
});
"""

# A click on a result of the comparison grid or on a curated example -> a "click" event with its item id or the
# example's index (event delegation: survives every re-render of the HTML).
ITEM_CLICK_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-item],[data-example]');
  if (!b) return;
  if (b.dataset.example !== undefined) { trigger('click', {example: parseInt(b.dataset.example, 10)}); }
  else { trigger('click', {item: parseInt(b.dataset.item, 10)}); }
});
"""


def path_of(value) -> str | None:
    """The file path of an image input given raw (preprocess=False): a FileData dict, a path or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("path")
    if isinstance(value, str):
        return value
    return getattr(value, "path", None)


def model_choices(catalog) -> list[tuple[str, str]]:
    """(label, name) of every model a visitor can choose in ``catalog``: served, or still warming up (a query
    waits for it)."""
    return [(e.label, n) for n in catalog.listed if (e := catalog.entry(n)) is not None]


def to_error(exc: Exception) -> gr.Error:
    """One sentence for the visitor (a toast in the browser, ``AppError`` in gradio_client)."""
    from profashion.explorer.public import public_text

    msg = public_text(str(exc)).strip() or type(exc).__name__  # no server path reaches a visitor
    if len(msg) > MAX_ERROR_CHARS:  # cut in the middle: the end of a sentence says what to do
        half = (MAX_ERROR_CHARS - 3) // 2
        msg = msg[:half] + " … " + msg[-half:]
    return gr.Error(msg[0].upper() + msg[1:] if msg else msg, print_exception=False)


def bounded(fn, limit: int = 4, busy=None):
    """``fn`` for an event that runs outside Gradio's queue (its answer must come at once: the page's load, the
    gallery switch, the share link): at most ``limit`` calls run at a time, and one more is refused at once, so a
    flood of calls cannot take the machine from the queued work. The refusal is one sentence (:data:`BUSY`), or,
    with ``busy``, ``busy()``'s value (e.g. ``gr.skip()`` for an output that may stay as it is a moment longer)."""
    slots = threading.BoundedSemaphore(limit)

    @functools.wraps(fn)
    def event(*args, **kwargs):
        if not slots.acquire(blocking=False):
            if busy is not None:
                return busy()
            raise gr.Error(BUSY[0].upper() + BUSY[1:], print_exception=False)
        try:
            return fn(*args, **kwargs)
        finally:
            slots.release()

    return event


def guard(fn, errors: tuple[type[Exception], ...], *bound):
    """``fn(*bound, *inputs)`` for an event: ``errors`` raised by it become a ``gr.Error``.

    When the first bound object is the app's :class:`~profashion.explorer.galleries.Galleries`, the event's last input
    is the gallery's name (a parameter called ``gallery``, optional for an API client: the default gallery) and
    ``fn`` gets that gallery's catalog in its place; an unknown gallery is refused in one sentence."""
    from profashion.explorer.galleries import Galleries

    routed = bool(bound) and isinstance(bound[0], Galleries)
    errors = (*errors, QueryError) if routed else errors

    @functools.wraps(fn)
    def event(*inputs):
        try:
            if routed:
                *inputs, gallery = inputs if inputs else (None,)
                return fn(bound[0].get(gallery), *bound[1:], *inputs)
            return fn(*bound, *inputs)
        except errors as exc:
            raise to_error(exc) from None

    del event.__wrapped__  # Gradio reads the signature: the event takes the inputs only
    params = [p.replace(annotation=inspect.Parameter.empty)
              for p in list(inspect.signature(fn).parameters.values())[len(bound):]]
    if routed:  # the API names the parameters, the gallery last and optional
        event.__signature__ = inspect.Signature(
            [*params, inspect.Parameter("gallery", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=bound[0].default.name)])
    return event


def event_data(evt) -> dict:
    """The data a ``trigger('click', {...})`` of a click script sent (an empty dict for anything else)."""
    data = getattr(evt, "_data", None)
    return data if isinstance(data, dict) else {}


def df(rows: list[list], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def file_url(path) -> str:
    """The URL under which the page shows a server file (a gallery image, a thumbnail): its mirror in Gradio's
    upload folder (:mod:`profashion.explorer.public`), so that no URL names the folder the file lies in; relative to
    the page so that it holds under a proxy's root path too."""
    from profashion.explorer.public import PUBLIC

    return PUBLIC.url(path)


def hit_button(h: dict, cls: str, mark: str, tip: str) -> str:
    """One result of a comparison grid (Retrieve's hits, Embeddings' neighbours) as a button: its thumbnail, the
    ``mark`` in words (hit / miss, same / other), its value, rank and score; ``tip`` its title; ``cls`` its frame
    (``hit``, ``miss``, ``unknown``). A click on it picks ``h["item"]`` (:data:`ITEM_CLICK_JS`)."""
    e = html_escape
    return (f'<button type="button" class="pf-item pf-{cls}" data-item="{int(h["item"])}" title="{e(tip)}" '
            f'aria-label="{e(tip)}"><span class="pf-img"><img src="{e(h["url"])}" alt=""></span>'
            f'<span class="pf-txt"><span class="pf-mark">{mark}</span>'
            f'<span class="pf-val">{e(h["value"] or "?")}</span>'
            f'<span class="pf-score">#{h["rank"]} · {h["score"]:.3f}</span></span></button>')


def comparison_rows(rows: list[dict], marks: dict, tip, titled: bool = False) -> list[str]:
    """The rows of a comparison grid (Retrieve, Embeddings' neighbours), one per model: its label and summary
    (with its ``about`` as the label's title when ``titled``), its error if any, then its hits as
    :func:`hit_button` s; ``marks[match]`` is a hit's (frame, mark in words), ``tip(row, hit, mark)`` its title."""
    e = html_escape
    out = []
    for r in rows:
        title = f' title="{e(r.get("about", ""))}"' if titled else ""
        out.append(f'<div class="pf-row" data-model="{e(r["name"])}"><div class="pf-name"{title}><b>{e(r["label"])}</b>'
                   f'<span>{e(r["summary"])}</span></div>')
        if r.get("error"):
            out.append(f'<div class="pf-error">{e(r["error"])}</div>')
        for h in r.get("hits", []):
            cls, mark = marks[h["match"]]
            out.append(hit_button(h, cls, mark, tip(r, h, mark)))
        out.append("</div>")
    return out


# What Gradio's own handling of an event's inputs refuses (before any handler of ours runs), in the words a caller
# gets instead of Gradio's: its choice check echoes the value whole, and its file and number checks answer a bare
# "Error". Only an API caller can send these values; the page offers none of them.
REFUSED_INPUT = {
    "choice": "is not one of its choices",
    "file": "names a file not uploaded to this app (upload it first: POST /gradio_api/upload, then send the path "
            "it returns)",
    "number": "is not a number in its range",
    "other": "is not of the kind this input takes",
}


def refused_input(label: str | None, kind: str) -> gr.Error:
    """One sentence for an input Gradio refused: which input (by its label), why, and what to send instead."""
    what = f"The value sent for “{html_escape(label[:80])}”" if label else "A value in this request"
    return gr.Error(f"{what} {REFUSED_INPUT.get(kind, REFUSED_INPUT['other'])}. Send the values the page offers "
                    "(each input's kind and choices are listed in the app's API page).", print_exception=False)


def _refusal_kind(exc: BaseException) -> str:
    from gradio.exceptions import InvalidPathError

    if isinstance(exc, InvalidPathError) or "file" in type(exc).__name__.lower():
        return "file"
    text = str(exc)  # the value comes first in Gradio's messages: its kind is told by the words after it
    if "list of choices" in text:
        return "choice"
    if "number" in text.lower() or "minimum value" in text or "maximum value" in text:
        return "number"
    return "other"


def _failing_input(block_fn, inputs) -> str | None:
    """The label of the first input whose value alone fails Gradio's checks (only on the failure path)."""
    from gradio import processing_utils

    for i, block in enumerate(block_fn.inputs):
        if getattr(block, "stateful", False) or i >= len(inputs):
            continue
        try:
            value = processing_utils.move_files_to_cache(inputs[i], block, check_in_upload_folder=True)
            model = getattr(block, "data_model", None)
            if model is not None and value is not None:
                value = model.model_validate(value, context={"validate_meta": True})
            if block_fn.preprocess:
                block.preprocess(value)
        except Exception:  # noqa: BLE001 - any refusal names this input
            return getattr(block, "label", None) or type(block).__name__
    return None


FAILED = ("This request could not be answered: one of its values is not of the kind the page sends. Reload the "
          "page and try again (an API caller: send the values listed in the app's API page).")


def shield_inputs(blocks: gr.Blocks) -> gr.Blocks:
    """Every event of ``blocks`` answers in one sentence of ours, never Gradio's echo of a value or a bare "Error":

    - a value Gradio refuses before our handlers run (a choice not offered, a file outside its upload folder, a
      non-number for a number, a wrong count of inputs): :func:`refused_input`, naming the input;
    - a handler that fails on a value no check foresaw (a list where a name goes, on a private event as on a
      public one): :data:`FAILED`, and the failure in the log. The handlers' own errors (``gr.Error``) pass as
      they are."""
    original = blocks.preprocess_data
    call = blocks.call_function

    async def preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await original(block_fn, inputs, state, explicit_call)
        except Exception as exc:  # noqa: BLE001 - Gradio's refusals have several types
            try:
                label = _failing_input(block_fn, list(inputs or ()))
            except Exception:  # noqa: BLE001
                label = None
            raise refused_input(label, _refusal_kind(exc)) from None

    async def call_function(block_fn, *args, **kwargs):
        try:
            return await call(block_fn, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a value nobody foresaw makes a handler raise
            if type(exc).__module__.split(".")[0] in ("gradio", "gradio_client"):
                raise  # Gradio's own control flow (its errors, a cancelled generator)
            name = getattr(block_fn, "name", None) or getattr(block_fn, "api_name", None)
            log.warning("event %s failed on its inputs: %s: %s", name, type(exc).__name__, str(exc)[:300],
                        exc_info=True)
            raise gr.Error(FAILED, print_exception=False) from None

    blocks.preprocess_data = preprocess_data
    blocks.call_function = call_function
    return blocks
