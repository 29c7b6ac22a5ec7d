"""Tabs that declare themselves: each tab module exports one :class:`Tab` (id, label, build, wire), and the page
(``demo.py``), the views that follow the query (``views.py``) and the share link (its ``tab`` value) loop over one
list of them, :data:`profashion.ui.demo.TABS`. Adding a tab is one new module and one entry in that list.

- ``build(page)`` lays out the tab's components inside its ``gr.Tab`` and returns them (a namespace);
- ``wire(page, c)`` wires its events after every tab is built (so it may use another tab's components through
  ``page.built``) and returns a :class:`Wired`: the :class:`View` it keeps following the shared choices, and
  what it changes when the visitor picks another gallery, each optional.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from profashion.ui.common import path_of


@dataclasses.dataclass(frozen=True)
class Choices:
    """The shared choices a view is computed for, as the page sends them: the query image (raw, a FileData dict or
    a path), the attribute, the ticked models and the gallery's name."""

    query: Any
    attribute: Any
    models: Any
    gallery: Any

    def values(self) -> tuple:
        return self.query, self.attribute, self.models, self.gallery


def query_keys(choices: Choices, own: tuple = ()) -> list:
    """What a view of the query depends on: the query image's path, the attribute, the models, the gallery."""
    return [path_of(choices.query), choices.attribute, list(choices.models or []), choices.gallery]


@dataclasses.dataclass
class View:
    """A tab whose content follows the shared choices (:mod:`profashion.ui.views`).

    ``outputs``: the components a refresh sets, ``compute(choices, own)`` their values (``own``: the values of
    ``inputs``, the tab's own choices that the view also depends on); ``keys(choices, own)``: what the view depends
    on (a view computed for other keys is out of date); ``banner``: the Markdown that then shows ``stale``;
    ``needs_query``: computed only with a query image; ``event``: the tab's public event, whose answer is the view
    (marked shown after it); ``shown``: (a State the event sets, an output, the function from one to the other),
    for an output the public event cannot set itself (it would change the API)."""

    outputs: Sequence
    compute: Callable[[Choices, tuple], tuple]
    keys: Callable[[Choices, tuple], list]
    banner: Any
    stale: str
    inputs: Sequence = ()
    needs_query: bool = True
    event: Any = None
    shown: tuple | None = None


@dataclasses.dataclass
class Wired:
    """What a tab's ``wire`` returns: its :class:`View` (None: it does not follow the query), and what it changes
    when another gallery is picked or a link opens one: ``on_gallery = (outputs, fn)`` with ``fn(catalog)`` giving
    their values."""

    view: View | None = None
    on_gallery: tuple[Sequence, Callable] | None = None


@dataclasses.dataclass
class Page:
    """What every tab builds and wires on: the galleries (the default one first), the fine-tuning jobs, the
    choices every tab shares (``choices``: gallery, query, attribute, models as components), the page's Blocks,
    its timer, each tab's ``gr.Tab`` (``tabs``) and the components each tab built (``built``: tab id -> namespace).
    """

    galleries: Any
    jobs: Any
    choices: SimpleNamespace
    demo: Any = None
    timer: Any = None
    tabs: dict = dataclasses.field(default_factory=dict)
    built: dict = dataclasses.field(default_factory=dict)

    @property
    def catalog(self):
        return self.galleries.default

    @property
    def inputs(self) -> list:
        """The shared choices as an event's inputs, in :class:`Choices`' order (the gallery last)."""
        c = self.choices
        return [c.query, c.attribute, c.models, c.gallery]


@dataclasses.dataclass(frozen=True)
class Tab:
    """One tab of the page: ``id`` (the link's ``tab`` value), ``label`` (its title), ``build(page)`` and
    ``wire(page, c) -> Wired | None``."""

    id: str
    label: str
    build: Callable[[Page], SimpleNamespace]
    wire: Callable[[Page, SimpleNamespace], Wired | None]
