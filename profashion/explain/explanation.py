"""What ``model.explain(image, attribute_id)`` returns: a typed :class:`Explanation`.

An explanation is a list of :class:`Map` s, each with its ``kind`` (how to read and draw it) and one sentence
``about`` what it means, plus named numbers. The renderer (:mod:`profashion.explain.render`) and the
localisation scores (:mod:`profashion.explain.scores`) go by the kind, never by the map's name.

The kinds (:data:`KINDS`):

- ``"heatmap"``: a 2-D float map over the image (the image's aspect ratio; at the image's resolution or at
  the feature map's), larger = more important; drawn as a colour overlay and scored for localisation.
- ``"heatmaps"``: a stack of such maps, (N, h, w), e.g. one per attention head; drawn as a montage.
- ``"labels"``: a label map, (H, W) integer region ids (superpixels); drawn as region boundaries. Its
  ``selection`` lists the ``(region id, weight)`` of the regions the method picked, heaviest first.
- ``"matrix"``: a matrix (a vector is one row), e.g. a transport plan; drawn as a grid, with ``rows`` /
  ``columns`` saying what its axes are, optional tick labels, and ``row_attributes`` (the attribute id of each
  row, when rows are attributes: the renderer names them) and ``highlight_row`` (the queried attribute's row).
- ``"box"``: ``(y0, x0, y1, x1)`` in the input image's pixels; drawn on the image.

``Explanation.heatmap`` (the map named ``"heatmap"``, first in ``maps``) is always there: (H, W) at the input
image's resolution, in [0, 1]. ``explanation["name"]`` is a map's data or a number, for short reading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Kind = Literal["heatmap", "heatmaps", "labels", "matrix", "box"]
KINDS: dict[str, str] = {
    "heatmap": "a 2-D float map over the image (larger = more important), drawn as a colour overlay and scored "
               "for localisation",
    "heatmaps": "a stack (N, h, w) of spatial maps, e.g. one per attention head, drawn as a montage",
    "labels": "a (H, W) map of integer region ids (superpixels), drawn as boundaries; its selection marks the "
              "regions the method picked",
    "matrix": "a matrix (a vector is one row), e.g. a transport plan, drawn as a grid with its row and column "
              "labels",
    "box": "a (y0, x0, y1, x1) box in the input image's pixels, drawn on the image",
}


def _shape(data) -> tuple[int, ...]:
    shape = getattr(data, "shape", None)
    return tuple(int(s) for s in (shape if shape is not None else np.shape(data)))


def _is_float(data) -> bool:
    dtype = getattr(data, "dtype", None)
    if hasattr(dtype, "is_floating_point"):  # torch
        return bool(dtype.is_floating_point)
    return bool(np.issubdtype(np.asarray(data).dtype, np.floating))


def _is_integer(data) -> bool:
    dtype = getattr(data, "dtype", None)
    if hasattr(dtype, "is_floating_point"):  # torch
        return not dtype.is_floating_point and not dtype.is_complex and str(dtype) != "torch.bool"
    return bool(np.issubdtype(np.asarray(data).dtype, np.integer))


@dataclasses.dataclass(frozen=True)
class Map:
    """One map of an explanation: its ``name`` (the key a table or a test finds it by; :attr:`title` is what people
    read), ``kind`` (see :data:`KINDS`), ``data`` and ``about``, one sentence on what it shows; the other fields
    only apply to some kinds."""

    name: str
    kind: Kind
    data: Any  # a torch tensor / numpy array; a 4-tuple for a box
    about: str
    rows: str = ""  # matrix: what a row is ("attribute", "feature-map row")
    columns: str = ""  # matrix: what a column is ("patch, row-major over the 6 x 6 grid")
    row_labels: tuple[str, ...] | None = None  # matrix: one tick label per row
    col_labels: tuple[str, ...] | None = None  # matrix: one tick label per column
    row_attributes: tuple[int, ...] | None = None  # matrix: the attribute id of each row, when rows are attributes
    highlight_row: int | None = None  # matrix: the row of the queried attribute
    selection: tuple[tuple[int, float], ...] | None = None  # labels: (region id, weight) picked, heaviest first

    @property
    def title(self) -> str:
        """The map's name in words ("transport weights" for ``ot_weights``)."""
        return map_title(self.name)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"map {self.name!r}: unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if not self.about.strip():
            raise ValueError(f"map {self.name!r} needs an 'about' sentence")
        if self.kind == "box":
            box = tuple(float(v) for v in self.data)
            if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise ValueError(f"map {self.name!r}: a box is (y0, x0, y1, x1) with y1 > y0 and x1 > x0, got {box}")
            return
        shape = _shape(self.data)
        want = {"heatmap": (2,), "heatmaps": (3,), "labels": (2,), "matrix": (1, 2)}[self.kind]
        if len(shape) not in want:
            raise ValueError(f"map {self.name!r} of kind {self.kind!r} must have {' or '.join(map(str, want))} "
                             f"dimensions, got shape {shape}")
        if self.kind == "labels" and not _is_integer(self.data):
            raise ValueError(f"map {self.name!r}: a label map holds integer region ids")
        if self.kind in ("heatmap", "heatmaps") and not _is_float(self.data):
            raise ValueError(f"map {self.name!r}: a {self.kind} holds floats")
        if self.kind == "matrix":
            r, c = (1, *shape) if len(shape) == 1 else shape
            for what, labels, n in (("row_labels", self.row_labels, r), ("col_labels", self.col_labels, c),
                                    ("row_attributes", self.row_attributes, r)):
                if labels is not None and len(labels) != n:
                    raise ValueError(f"map {self.name!r}: {len(labels)} {what} for {n}")
            if self.highlight_row is not None and not 0 <= self.highlight_row < r:
                raise ValueError(f"map {self.name!r}: highlight_row {self.highlight_row} outside 0..{r - 1}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (4,) if self.kind == "box" else _shape(self.data)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Maps of a method at work on one image and attribute; ``maps[0]`` is the ``"heatmap"`` (H, W) in [0, 1].

    ``numbers`` are named scalars (e.g. CCA's share of attention on the [CLS] token), each explained in
    ``number_about``; ``feature_map_size`` is the (h, w) grid the maps were computed on (None: not a grid).
    """

    maps: tuple[Map, ...]
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)
    number_about: dict[str, str] = dataclasses.field(default_factory=dict)
    feature_map_size: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "maps", tuple(self.maps))
        names = [m.name for m in self.maps]
        if len(set(names)) != len(names):
            raise ValueError(f"explanation map names must be unique, got {names}")
        if not self.maps or self.maps[0].name != "heatmap" or self.maps[0].kind != "heatmap":
            raise ValueError("an explanation's first map is its 'heatmap', of kind 'heatmap'")
        clash = set(names) & set(self.numbers)
        if clash:
            raise ValueError(f"names used by both a map and a number: {sorted(clash)}")
        missing = set(self.numbers) - set(self.number_about)
        if missing:
            raise ValueError(f"numbers without an 'about' sentence: {sorted(missing)}")
        if self.feature_map_size is not None:
            object.__setattr__(self, "feature_map_size", tuple(int(v) for v in self.feature_map_size))

    @property
    def heatmap(self):
        """(H, W) at the input image's resolution, in [0, 1]: where the method looked for the attribute."""
        return self.maps[0].data

    def map(self, name: str) -> Map:
        """The map called ``name`` (KeyError naming the maps there are)."""
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(f"no {name!r} map; its maps: {', '.join(m.name for m in self.maps)}")

    def of_kind(self, *kinds: str) -> list[Map]:
        return [m for m in self.maps if m.kind in kinds]

    def names(self) -> list[str]:
        return [m.name for m in self.maps] + list(self.numbers)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __getitem__(self, name: str):
        """A map's data or a number, by name (short reading; draw and score through :attr:`maps`)."""
        if name in self.numbers:
            return self.numbers[name]
        return self.map(name).data

    def to(self, device: str = "cpu") -> Explanation:
        """A copy with every tensor moved (``"cpu"`` for drawing)."""
        def move(m: Map) -> Map:
            return dataclasses.replace(m, data=m.data.to(device)) if hasattr(m.data, "to") else m
        return dataclasses.replace(self, maps=tuple(move(m) for m in self.maps))


# Map keys (what the models name their maps) in words, for every title people read; an unknown key reads as its
# words ("my_map" -> "my map").
MAP_TITLES = {
    "ot_map": "transport map", "ot_weights": "transport weights", "ot_plan": "transport plan",
    "superpixel_map": "superpixel weights", "superpixels": "superpixels", "crop_box": "crop box",
    "attention": "attention", "attention_heads": "attention per head", "contribution": "contribution",
    "heatmap": "heatmap", "mask": "attribute mask", "correlation": "correlation",
}


def map_title(name: str) -> str:
    """A map key in words (:data:`MAP_TITLES`)."""
    return MAP_TITLES.get(name, str(name).replace("_", " "))


def patch_labels(grid: Sequence[int]) -> tuple[str, ...]:
    """``"y,x"`` of every cell of an (h, w) grid, row-major: the column labels of a plan over patches."""
    h, w = (int(v) for v in grid)
    return tuple(f"{y},{x}" for y in range(h) for x in range(w))


def attribute_labels(ids: Sequence[int]) -> tuple[str, ...]:
    """Row labels of attribute rows when the names are unknown (the renderer puts the names in)."""
    return tuple(f"attribute {int(i)}" for i in ids)
